//! In-memory transport: every connection is a fresh `tokio::io::duplex` pair whose other end goes
//! to a handler in the same process, normally a [`Server`]. No sockets, no real time needed: tests
//! of the protocol, the policy and the limits run on tokio's paused clock with a manual
//! [`crate::clock::Clock`].

use super::{ConnectError, Connector, Stream};
use crate::proto::ServerAddr;
use crate::server::Server;
use crate::store::BucketStore;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::io::DuplexStream;

/// Buffer of each direction of a pipe: a full bucket answer and then some.
const PIPE_BUFFER: usize = 64 * 1024;

type Accept = dyn Fn(DuplexStream) + Send + Sync;

/// Connects to an in-process handler.
#[derive(Clone)]
pub struct PipeConnector {
    accept: Arc<Accept>,
}

impl PipeConnector {
    /// Every connection's server end goes to `accept`, which must not block (spawn a task).
    pub fn new(accept: impl Fn(DuplexStream) + Send + Sync + 'static) -> Self {
        PipeConnector {
            accept: Arc::new(accept),
        }
    }

    /// Connect to `server`: each connection is served on its own task, as a listener would.
    pub fn to_server<S: BucketStore>(server: Arc<Server<S>>) -> Self {
        PipeConnector::new(move |s| {
            tokio::spawn(server.clone().serve_stream(s));
        })
    }
}

impl Connector for PipeConnector {
    fn connect<'a>(
        &'a self,
        _addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(PIPE_BUFFER);
            (self.accept)(server);
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}
