//! Tor transport: every connection goes through embedded arti on its own isolated circuit.

use super::{ClientError, Connector, Stream};
use crate::proto::ServerAddr;
use crate::tor::Tor;
use futures::future::BoxFuture;

/// Connects through Tor. Each connection uses a fresh isolation group, so the server (and the
/// network) cannot link two operations by their circuit.
#[derive(Clone)]
pub struct TorConnector {
    tor: Tor,
}

impl TorConnector {
    /// A connector over a bootstrapped Tor client.
    pub fn new(tor: Tor) -> Self {
        TorConnector { tor }
    }
}

impl Connector for TorConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ClientError>> {
        Box::pin(async move {
            let isolated = self.tor.isolated_client();
            let s = isolated
                .connect((addr.host.as_str(), addr.port))
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.to_string(),
                    detail: format!("over Tor: {e}"),
                })?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}
