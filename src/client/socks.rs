//! SOCKS5 transport: through a tor that is already running (Tor Browser's, a system tor).
//!
//! Every connection sends fresh random SOCKS credentials: tor's `IsolateSOCKSAuth` (on by default
//! for every SocksPort) then gives it a circuit of its own, as the embedded transport does. Host
//! names, `.onion` addresses included, are resolved by tor, never locally.
//!
//! tor tries every directory and introduction point itself before it refuses; rdv still tries
//! again, within the budget, what can change in seconds (see [`super::retry`]): a descriptor no
//! directory had (the service may publish it now, and a tor that has just started learns which
//! directories to ask), a lost rendezvous; "introduction failed" three times at most, and
//! "general failure" (all a SocksPort without `ExtendedErrors` ever says) twice. A refused port,
//! a missing client key, a bad address or a proxy that cannot do the request are not retried.

use super::retry::{connect_with_retries, Absence, Failure, Patience};
use super::{ConnectError, ConnectStage, Connector, Stream};
use crate::proto::ServerAddr;
use futures::future::BoxFuture;
use rand::RngCore;
use std::time::Duration;
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
    /// Longest time for all attempts together (one attempt may take all of it: tor keeps
    /// trying inside it). Default: 120 s.
    pub budget: Duration,
    /// How long "no directory has a descriptor" may last before the service is taken to be
    /// absent. Default: 20 s.
    pub absent_grace: Duration,
}

impl SocksConnector {
    /// A connector through `proxy`.
    pub fn new(proxy: impl Into<String>) -> Self {
        SocksConnector {
            proxy: proxy.into(),
            budget: Duration::from_secs(120),
            absent_grace: Duration::from_secs(20),
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

/// How to treat one refusal code.
struct Refusal {
    stage: ConnectStage,
    retryable: bool,
    absence: Option<Absence>,
    most_attempts: Option<u32>,
}

/// Where a refusal code puts the failure, whether retrying can help, and whether it says the
/// service is not there.
fn refusal(status: SocksStatus) -> Refusal {
    let r = |stage, retryable, absence, most_attempts| Refusal {
        stage,
        retryable,
        absence,
        most_attempts,
    };
    match status {
        SocksStatus::HS_DESC_NOT_FOUND => r(
            ConnectStage::Descriptor,
            true,
            Some(Absence::NoDescriptor),
            None,
        ),
        SocksStatus::HS_DESC_INVALID => r(ConnectStage::Descriptor, true, None, None),
        SocksStatus::HS_MISSING_CLIENT_AUTH | SocksStatus::HS_WRONG_CLIENT_AUTH => {
            r(ConnectStage::Descriptor, false, None, None)
        }
        // Every introduction point of the descriptor failed (unknown to it, unreachable, or
        // refusing): tor has already refetched the descriptor and tried them all, and it
        // remembers the failed ones for a while. A few more tries, for a service that is
        // publishing anew.
        SocksStatus::HS_INTRO_FAILED => r(ConnectStage::Introduction, true, None, Some(3)),
        SocksStatus::HS_INTRO_TIMEOUT => r(ConnectStage::Introduction, true, None, None),
        SocksStatus::HS_REND_FAILED => r(ConnectStage::Rendezvous, true, None, None),
        SocksStatus::HS_BAD_ADDRESS => r(ConnectStage::Address, false, None, None),
        SocksStatus::CONNECTION_REFUSED | SocksStatus::NOT_ALLOWED => {
            r(ConnectStage::Stream, false, None, None)
        }
        // Not a tor SOCKS port (or not one that speaks this): no try will change it.
        SocksStatus::COMMAND_NOT_SUPPORTED | SocksStatus::ADDRTYPE_NOT_SUPPORTED => {
            r(ConnectStage::Socks, false, None, None)
        }
        // Without the ExtendedErrors flag every onion failure is this, a missing client key and
        // a service that does not exist included: one more try, not the whole budget.
        SocksStatus::GENERAL_FAILURE => r(ConnectStage::Stream, true, None, Some(2)),
        _ => r(ConnectStage::Stream, true, None, None),
    }
}

impl Connector for SocksConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let patience = Patience {
                attempt_timeout: self.budget,
                budget: self.budget,
                absent_grace: self.absent_grace,
            };
            connect_with_retries(&addr.to_string(), patience, || {
                Box::pin(attempt(self.proxy.clone(), addr.clone()))
            })
            .await
        })
    }
}

/// One connection through the proxy, with fresh credentials.
async fn attempt(proxy: String, addr: ServerAddr) -> Result<Box<dyn Stream>, Failure> {
    let fail = |stage, retryable, e: Box<dyn std::error::Error + Send + Sync>| Failure {
        stage,
        retryable,
        absence: None,
        most_attempts: None,
        error: e,
    };
    let mut sock = TcpStream::connect(&proxy).await.map_err(|e| {
        // Nothing listens there, or `--socks` is not an address: asking again will not help.
        let retryable = !matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::InvalidInput
        );
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
        let r = refusal(reply.status());
        return Err(Failure {
            stage: r.stage,
            retryable: r.retryable,
            absence: r.absence,
            most_attempts: r.most_attempts,
            error: Box::new(Refused(reply.status())),
        });
    }
    Ok(Box::new(sock) as Box<dyn Stream>)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A SOCKS5 proxy on loopback that takes username/password handshakes and answers the
    /// n-th request with `codes[n]` (the last code for every later one); counts the requests.
    async fn scripted_proxy(codes: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let code = codes[n.min(codes.len() - 1)];
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
                // Keep a successful connection open until the client is done with it.
                let _ = s.read(&mut [0u8; 1]).await;
            }
        });
        (addr, served)
    }

    /// A connector through `proxy` that gives up after a few seconds.
    fn impatient(proxy: String) -> SocksConnector {
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(4);
        c.absent_grace = Duration::from_secs(2);
        c
    }

    fn target() -> ServerAddr {
        ServerAddr::parse("2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:7625")
            .unwrap()
    }

    /// Without ExtendedErrors every failure is "general failure": tried twice, not for the
    /// whole budget, and the error says how to learn more.
    #[tokio::test]
    async fn a_general_failure_says_how_to_learn_the_reason() {
        let (proxy, served) = scripted_proxy(vec![1]).await;
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(60);
        let Err(e) = c.connect(&target()).await else {
            panic!("the proxy refused")
        };
        assert_eq!(served.load(Ordering::SeqCst), 2);
        assert!(e.retryable, "transient as far as anyone can tell");
        let text = crate::config::report(&e).to_string();
        assert!(text.contains("ExtendedErrors"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_client_key_is_not_retried() {
        let (proxy, served) = scripted_proxy(vec![0xF4]).await;
        let c = impatient(proxy);
        let Err(e) = c.connect(&target()).await else {
            panic!("the proxy refused")
        };
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert_eq!(e.stage, ConnectStage::Descriptor);
        assert!(!e.retryable);
        assert!(!crate::config::report(&e)
            .to_string()
            .contains("ExtendedErrors"));
    }

    /// A tor that has just started may ask the wrong directories (or ask before the service
    /// published): the descriptor turns up on a later attempt, on a fresh circuit.
    #[tokio::test]
    async fn a_descriptor_not_found_is_asked_for_again() {
        let (proxy, served) = scripted_proxy(vec![0xF0, 0xF0, 0]).await;
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(30);
        c.connect(&target())
            .await
            .expect("the third attempt finds it");
        assert_eq!(served.load(Ordering::SeqCst), 3);
    }

    /// A descriptor still missing after the grace: the service is not there, said plainly, and
    /// long before the budget is spent.
    #[tokio::test]
    async fn a_descriptor_missing_past_the_grace_ends_the_attempts() {
        let (proxy, served) = scripted_proxy(vec![0xF0]).await;
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(60);
        c.absent_grace = Duration::from_secs(2);
        let t = std::time::Instant::now();
        let Err(e) = c.connect(&target()).await else {
            panic!("never found")
        };
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        assert!(served.load(Ordering::SeqCst) >= 2);
        assert_eq!(e.stage, ConnectStage::Descriptor);
        let text = crate::config::report(&e).to_string();
        assert!(text.contains("no directory has a descriptor"), "{text}");
        assert!(text.contains("HS_DESC_NOT_FOUND"), "{text}");
    }

    /// A proxy that is not a tor SOCKS port (it does not do hostname CONNECT): one attempt.
    #[tokio::test]
    async fn a_proxy_that_cannot_do_it_is_not_asked_again() {
        let (proxy, served) = scripted_proxy(vec![8]).await;
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(60);
        let Err(e) = c.connect(&target()).await else {
            panic!("refused")
        };
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert!(!e.retryable);
    }

    /// "Introduction failed" is not taken for "the service is down" at once: three tries.
    #[tokio::test]
    async fn introduction_failures_are_tried_three_times() {
        let (proxy, served) = scripted_proxy(vec![0xF2]).await;
        let mut c = SocksConnector::new(proxy);
        c.budget = Duration::from_secs(60);
        let Err(e) = c.connect(&target()).await else {
            panic!("refused")
        };
        assert_eq!(served.load(Ordering::SeqCst), 3);
        assert_eq!(e.stage, ConnectStage::Introduction);
    }
}
