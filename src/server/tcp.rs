//! The plain TCP listener (for loopback, tests, and C tor's `HiddenServicePort`).

use super::Server;
use crate::store::BucketStore;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};

/// Bind a listener with an accept backlog of `backlog` (the std/tokio default of 128 overflows
/// when many clients, or C tor's per-stream connections, arrive at once: `rdv serve` asks for at
/// least 1024).
pub async fn bind(addr: &str, backlog: usize) -> std::io::Result<TcpListener> {
    let mut last = None;
    for sa in tokio::net::lookup_host(addr).await? {
        let socket = if sa.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(e) = socket.bind(sa) {
            last = Some(e);
            continue;
        }
        return socket.listen(u32::try_from(backlog.max(1)).unwrap_or(u32::MAX));
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolves to nothing",
        )
    }))
}

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
