//! SOCKS5 transport: through a tor that is already running (Tor Browser's, a system tor).
//!
//! Every connection sends fresh random SOCKS credentials: tor's `IsolateSOCKSAuth` (on by default
//! for every SocksPort) then gives it a circuit of its own, as the embedded transport does. Host
//! names, `.onion` addresses included, are resolved by tor, never locally.

use super::{ConnectError, ConnectStage, Connector, Stream};
use crate::proto::ServerAddr;
use futures::future::BoxFuture;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tor_socksproto::{
    Buffer, Handshake as _, NextStep, SocksAddr, SocksAuth, SocksClientHandshake, SocksCmd,
    SocksHostname, SocksRequest, SocksStatus, SocksVersion,
};

/// Connects through a SOCKS5 proxy (a tor client's SocksPort).
#[derive(Clone, Debug)]
pub struct SocksConnector {
    /// The proxy, `HOST:PORT` (normally `127.0.0.1:9050`, or Tor Browser's `127.0.0.1:9150`).
    pub proxy: String,
}

impl SocksConnector {
    /// A connector through `proxy`.
    pub fn new(proxy: impl Into<String>) -> Self {
        SocksConnector {
            proxy: proxy.into(),
        }
    }
}

/// The proxy answered, but not with success.
#[derive(Debug, thiserror::Error)]
#[error("the SOCKS proxy refused: {0}{hint}", hint = hint(*.0))]
struct Refused(SocksStatus);

/// C tor says why an onion service connection failed (no descriptor, a missing client key, a
/// bad address…) only on a SocksPort with the `ExtendedErrors` flag; otherwise "general failure".
fn hint(status: SocksStatus) -> &'static str {
    if status == SocksStatus::GENERAL_FAILURE {
        " (for the reason, add ExtendedErrors to the tor client's SocksPort line, e.g. `SocksPort 9050 ExtendedErrors`)"
    } else {
        ""
    }
}

/// Where a refusal code puts the failure, and whether retrying can help.
fn stage_of(status: SocksStatus) -> (ConnectStage, bool) {
    match status {
        SocksStatus::HS_DESC_NOT_FOUND | SocksStatus::HS_DESC_INVALID => {
            (ConnectStage::Descriptor, true)
        }
        SocksStatus::HS_MISSING_CLIENT_AUTH | SocksStatus::HS_WRONG_CLIENT_AUTH => {
            (ConnectStage::Descriptor, false)
        }
        SocksStatus::HS_INTRO_FAILED | SocksStatus::HS_INTRO_TIMEOUT => {
            (ConnectStage::Introduction, true)
        }
        SocksStatus::HS_REND_FAILED => (ConnectStage::Rendezvous, true),
        SocksStatus::HS_BAD_ADDRESS => (ConnectStage::Address, false),
        SocksStatus::CONNECTION_REFUSED | SocksStatus::NOT_ALLOWED => (ConnectStage::Stream, false),
        _ => (ConnectStage::Stream, true),
    }
}

impl Connector for SocksConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let name = addr.to_string();
            let fail = |stage, retryable, e: Box<dyn std::error::Error + Send + Sync>| {
                ConnectError::new(name.clone(), stage, retryable, e)
            };
            let mut sock = TcpStream::connect(&self.proxy).await.map_err(|e| {
                let retryable = e.kind() != std::io::ErrorKind::ConnectionRefused;
                fail(ConnectStage::Socks, retryable, Box::new(e))
            })?;
            let _ = sock.set_nodelay(true);
            // Fresh credentials per connection: tor's IsolateSOCKSAuth gives it its own circuit.
            let mut cred = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut cred);
            let user = format!("rdv-{}", hex(&cred[..8]));
            let pass = hex(&cred[8..]);
            let host = SocksHostname::try_from(addr.host.clone())
                .map_err(|e| fail(ConnectStage::Address, false, Box::new(e)))?;
            let req = SocksRequest::new(
                SocksVersion::V5,
                SocksCmd::CONNECT,
                SocksAddr::Hostname(host),
                addr.port,
                SocksAuth::Username(user.into_bytes(), pass.into_bytes()),
            )
            .map_err(|e| fail(ConnectStage::Socks, false, Box::new(e)))?;
            let mut hs = SocksClientHandshake::new(req);
            // Precise reads: nothing after the proxy's reply is consumed, the stream stays clean.
            let mut buf = Buffer::new_precise();
            let proto = |e: tor_socksproto::Error| fail(ConnectStage::Socks, false, Box::new(e));
            let io = |e: std::io::Error| fail(ConnectStage::Socks, true, Box::new(e));
            let reply = loop {
                match hs.step(&mut buf).map_err(proto)? {
                    NextStep::Send(data) => sock.write_all(&data).await.map_err(io)?,
                    NextStep::Recv(mut recv) => {
                        let n = sock.read(recv.buf()).await.map_err(io)?;
                        recv.note_received(n).map_err(proto)?;
                    }
                    NextStep::Finished(done) => {
                        break done
                            .into_output()
                            .map_err(|b| proto(tor_socksproto::Error::from(b)))?
                    }
                }
            };
            if reply.status() != SocksStatus::SUCCEEDED {
                let (stage, retryable) = stage_of(reply.status());
                return Err(fail(stage, retryable, Box::new(Refused(reply.status()))));
            }
            Ok(Box::new(sock) as Box<dyn Stream>)
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A SOCKS5 proxy on loopback that takes one username/password handshake and answers the
    /// request with `code`.
    async fn refusing_proxy(code: u8) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = [0u8; 2];
            s.read_exact(&mut head).await.unwrap();
            let mut methods = vec![0u8; usize::from(head[1])];
            s.read_exact(&mut methods).await.unwrap();
            assert!(methods.contains(&2), "fresh credentials for isolation");
            s.write_all(&[5, 2]).await.unwrap();
            let mut v = [0u8; 2];
            s.read_exact(&mut v).await.unwrap();
            let mut user = vec![0u8; usize::from(v[1])];
            s.read_exact(&mut user).await.unwrap();
            let mut plen = [0u8; 1];
            s.read_exact(&mut plen).await.unwrap();
            let mut pass = vec![0u8; usize::from(plen[0])];
            s.read_exact(&mut pass).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            assert_eq!(req[3], 3, "a host name, resolved by the proxy");
            let mut rest = vec![0u8; usize::from(req[4]) + 2];
            s.read_exact(&mut rest).await.unwrap();
            s.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
                .await
                .unwrap();
        });
        addr
    }

    fn target() -> ServerAddr {
        ServerAddr::parse("2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:7625")
            .unwrap()
    }

    #[tokio::test]
    async fn a_general_failure_says_how_to_learn_the_reason() {
        let c = SocksConnector::new(refusing_proxy(1).await);
        let Err(e) = c.connect(&target()).await else {
            panic!("the proxy refused")
        };
        let text = crate::config::report(&e).to_string();
        assert!(text.contains("ExtendedErrors"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_client_key_is_not_retried() {
        let c = SocksConnector::new(refusing_proxy(0xF4).await);
        let Err(e) = c.connect(&target()).await else {
            panic!("the proxy refused")
        };
        assert_eq!(e.stage, ConnectStage::Descriptor);
        assert!(!e.retryable);
        assert!(!crate::config::report(&e)
            .to_string()
            .contains("ExtendedErrors"));
    }
}
