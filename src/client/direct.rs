//! Direct TCP transport: for local testing only, it bypasses Tor and shows the server your address.

use super::{ConnectError, ConnectStage, Connector, Stream};
use crate::proto::ServerAddr;
use futures::future::BoxFuture;
use tokio::net::TcpStream;

/// Connects over plain TCP, to a fixed address if one is given, else to the link's host.
#[derive(Clone, Debug, Default)]
pub struct DirectConnector {
    /// Connect here instead of the link's host.
    pub target: Option<String>,
}

impl DirectConnector {
    /// Connect to `target` whatever the link says.
    pub fn to(target: impl Into<String>) -> Self {
        DirectConnector {
            target: Some(target.into()),
        }
    }
}

impl Connector for DirectConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let target = self.target.clone().unwrap_or_else(|| addr.to_string());
            let s = TcpStream::connect(&target).await.map_err(|e| {
                // Nobody listens there: trying again at once will not change that.
                let retryable = e.kind() != std::io::ErrorKind::ConnectionRefused;
                ConnectError::new(target.clone(), ConnectStage::Tcp, retryable, e)
            })?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}
