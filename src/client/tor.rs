//! Tor transport: every connection goes through embedded arti on its own isolated circuit.

use super::{ConnectError, ConnectStage, Connector, Stream};
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

/// Connection attempts before giving up.
const CONNECT_ATTEMPTS: u32 = 4;

impl Connector for TorConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            // Right after an onion service (re)starts, a directory may still serve its previous
            // descriptor, whose introduction points are gone: a few retries ride that out. The
            // caller's connect timeout bounds the whole.
            let mut attempt = 1;
            loop {
                let isolated = self.tor.isolated_client();
                match isolated.connect((addr.host.as_str(), addr.port)).await {
                    Ok(s) => return Ok(Box::new(s) as Box<dyn Stream>),
                    Err(e) if attempt < CONNECT_ATTEMPTS => {
                        tracing::info!(attempt, error = %e, "connecting over Tor failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(2 * attempt as u64))
                            .await;
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(ConnectError::new(
                            addr.to_string(),
                            ConnectStage::Stream,
                            true,
                            e,
                        ))
                    }
                }
            }
        })
    }
}
