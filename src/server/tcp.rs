//! The plain TCP listener (for loopback, tests, and C tor's `HiddenServicePort`).

use super::Server;
use crate::store::BucketStore;
use std::sync::Arc;
use tokio::net::TcpListener;

impl<S: BucketStore> Server<S> {
    /// Accept TCP connections until shutdown; each is served on its own task.
    pub async fn run_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = self.shutdown_requested() => return,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    // The peer address is deliberately not logged.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(self.clone().serve_stream(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
