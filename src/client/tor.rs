//! Tor transport: every connection goes through embedded arti on its own isolated circuit.
//!
//! Attempts are bounded and retried as [`super::retry`] describes. What cannot succeed is not
//! retried: an onion address whose version or checksum is wrong (checked locally, before anything
//! is sent), a service that refuses the port, a missing or wrong client key. Errors name the
//! stage that failed.
//!
//! Spares ([`Connector::warm`]): an isolated client that connected once, sent nothing and
//! closed that circuit keeps the service's descriptor (arti keeps it per isolation, and keeps it
//! when the circuit is gone), so the one operation that later takes it builds a fresh
//! introduction and rendezvous circuit without downloading the descriptor again.

use super::retry::{connect_with_retries, Absence, Failure, Patience};
use super::spares::Spares;
use super::{ConnectError, ConnectStage, Connector, SpareCounts, Stream};
use crate::proto::ServerAddr;
use crate::tor::Tor;
use arti_client::{DataStream, ErrorKind, HasKind};
use futures::future::BoxFuture;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tor_proto::client::stream::ClientStreamCtrl;

/// A spare: an isolated client, and the circuit its warm-up used (closed since).
struct Spare {
    client: Tor,
    circuit: Option<String>,
}

/// The spares of one connector and its clones, and what was done with them.
#[derive(Default)]
struct SparePool {
    spares: Spares<Spare>,
    made: u64,
    taken: u64,
    failed: u64,
}

impl SparePool {
    /// Count what became of a spare or a warm-up.
    fn count(pool: &Mutex<SparePool>, f: impl FnOnce(&mut SparePool)) {
        if let Ok(mut p) = pool.lock() {
            f(&mut p);
        }
    }
}

/// Connects through Tor. Each connection uses a fresh isolation group, so the server (and the
/// network) cannot link two operations by their circuit.
#[derive(Clone)]
pub struct TorConnector {
    tor: Tor,
    /// Longest single connection attempt. Default: 30 s.
    pub attempt_timeout: Duration,
    /// Longest time for all attempts together. Default: 120 s.
    pub budget: Duration,
    /// How long "no directory has a descriptor" may last before the service is taken to be
    /// absent. Default: 20 s. (A benchmark that measures a service, not the client's patience,
    /// sets it to the budget.)
    pub absent_grace: Duration,
    spares: Arc<Mutex<SparePool>>,
}

impl TorConnector {
    /// A connector over a bootstrapped Tor client, with the default timeouts.
    pub fn new(tor: Tor) -> Self {
        TorConnector {
            tor,
            attempt_timeout: Duration::from_secs(30),
            budget: Duration::from_secs(120),
            absent_grace: Duration::from_secs(20),
            spares: Arc::default(),
        }
    }

    fn take_spare(&self, server: &str) -> Option<Spare> {
        let mut pool = self.spares.lock().ok()?;
        pool.spares.take(server, Instant::now(), rand::random())
    }

    /// One warm-up ([`Connector::warm`]).
    async fn warm_once(&self, addr: &ServerAddr, keep: usize) -> Result<bool, ConnectError> {
        // Only an onion service has a descriptor to keep; a name reached through an exit
        // has nothing to make ahead.
        if keep == 0 || !addr.is_onion() {
            return Ok(false);
        }
        let name = addr.to_string();
        if let Err(e) = tor_hsservice::HsId::from_str(&addr.host) {
            return Err(ConnectError::new(name, ConnectStage::Address, false, e));
        }
        let isolated = self.tor.isolated_client();
        let stream = match tokio::time::timeout(
            self.attempt_timeout,
            isolated.connect((addr.host.as_str(), addr.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let (stage, retryable) = classify(&e);
                return Err(ConnectError::new(name, stage, retryable, e));
            }
            Err(_) => {
                let e = format!(
                    "no connection within {}",
                    humantime::format_duration(self.attempt_timeout)
                );
                return Err(ConnectError::new(name, ConnectStage::Rendezvous, true, e));
            }
        };
        // Nothing is sent: the circuit closes with the stream unused, and the descriptor
        // stays with the isolation. Kept only once the circuit is closed: the operation
        // that takes the spare must not find it still open and ride it.
        let circuit = circuit_of(&stream);
        let tunnel = stream.client_stream_ctrl().and_then(|c| c.tunnel());
        drop(stream);
        let Some(tunnel) = tunnel else {
            return Err(ConnectError::new(
                name,
                ConnectStage::Stream,
                true,
                "the warm-up's stream has no circuit to close",
            ));
        };
        tunnel.terminate();
        if tokio::time::timeout(CLOSE_WAIT, tunnel.wait_for_close())
            .await
            .is_err()
        {
            return Err(ConnectError::new(
                name,
                ConnectStage::Stream,
                true,
                "the warm-up's circuit did not close",
            ));
        }
        let spare = Spare {
            client: isolated,
            circuit,
        };
        if let Ok(mut pool) = self.spares.lock() {
            pool.spares.put(&name, spare, Instant::now(), keep);
            pool.made += 1;
        }
        Ok(true)
    }
}

/// How long a warm-up waits for its circuit to close before the spare is given up.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The circuit `stream` runs on, as arti names it within this process.
fn circuit_of(stream: &DataStream) -> Option<String> {
    let tunnel = stream.client_stream_ctrl()?.tunnel()?;
    Some(tunnel.unique_id().to_string())
}

/// Close the circuit `stream` runs on (and the stream with it), sending nothing on the stream.
fn close_circuit(stream: &DataStream) {
    if let Some(tunnel) = stream.client_stream_ctrl().and_then(|c| c.tunnel()) {
        tunnel.terminate();
    }
}

/// A connection to `target` on a fresh isolation.
async fn connect_fresh(tor: &Tor, target: &(String, u16)) -> Result<Box<dyn Stream>, Failure> {
    let s = tor
        .isolated_client()
        .connect((target.0.as_str(), target.1))
        .await
        .map_err(failure)?;
    Ok(Box::new(s))
}

/// An arti failure to connect to `name` as a [`Failure`] for the retry loop.
fn failure(e: arti_client::Error) -> Failure {
    let (stage, retryable) = classify(&e);
    Failure {
        stage,
        retryable,
        absence: service_absent(&e),
        most_attempts: None,
        error: Box::new(e),
    }
}

/// The stage an arti connection error happened at, and whether retrying can help.
fn classify(e: &arti_client::Error) -> (ConnectStage, bool) {
    use ConnectStage::*;
    let hs_stage = hs_stage(e);
    match e.kind() {
        ErrorKind::InvalidStreamTarget | ErrorKind::ForbiddenStreamTarget => (Address, false),
        ErrorKind::BootstrapRequired
        | ErrorKind::TorDirectoryUnusable
        | ErrorKind::DirectoryExpired => (Bootstrap, true),
        ErrorKind::OnionServiceNotFound => (Descriptor, true),
        ErrorKind::OnionServiceMissingClientAuth | ErrorKind::OnionServiceWrongClientAuth => {
            (ClientAuth, false)
        }
        ErrorKind::OnionServiceProtocolViolation => (hs_stage.unwrap_or(Descriptor), true),
        ErrorKind::OnionServiceConnectionFailed => (Introduction, true),
        ErrorKind::TorNetworkTimeout | ErrorKind::RemoteNetworkTimeout => {
            (hs_stage.unwrap_or(Stream), true)
        }
        // The service refuses this port: asking again will not change that. (A stream closed
        // before it opened is how a C tor onion service refuses a port it does not serve: END
        // with reason DONE.)
        ErrorKind::ExitPolicyRejected
        | ErrorKind::RemoteConnectionRefused
        | ErrorKind::RemoteStreamClosed => (Stream, false),
        _ => (hs_stage.unwrap_or(Stream), true),
    }
}

/// Whether `e` says the onion service is not there.
fn service_absent(e: &arti_client::Error) -> Option<Absence> {
    use tor_hsclient::{ConnError, DescriptorErrorDetail, FailedAttemptError};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<ConnError>() {
            return match c {
                ConnError::DescriptorDownload(tries) => {
                    let mut all = tries.sources().peekable();
                    let none = all.peek().is_some()
                        && all.all(|t| {
                            matches!(
                                &t.0.error,
                                DescriptorErrorDetail::Directory(
                                    tor_dirclient::RequestError::HttpStatus(404, _)
                                )
                            )
                        });
                    none.then_some(Absence::NoDescriptor)
                }
                ConnError::Failed(tries) => {
                    let mut all = tries.sources().peekable();
                    let gone = all.peek().is_some()
                        && all.all(|t| {
                            matches!(
                                t,
                                FailedAttemptError::IntroductionFailed { status, .. }
                                    if *status == tor_cell::relaycell::hs::IntroduceAckStatus::NOT_RECOGNIZED
                            )
                        });
                    gone.then_some(Absence::Unknown)
                }
                _ => None,
            };
        }
        cur = err.source();
    }
    None
}

/// Descriptor or introduction/rendezvous, from arti's onion-client error in the chain.
fn hs_stage(e: &arti_client::Error) -> Option<ConnectStage> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<tor_hsclient::ConnError>() {
            return Some(match c {
                tor_hsclient::ConnError::DescriptorDownload(_) => ConnectStage::Descriptor,
                tor_hsclient::ConnError::Failed(_) => ConnectStage::Rendezvous,
                _ => ConnectStage::Descriptor,
            });
        }
        cur = err.source();
    }
    None
}

impl Connector for TorConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a ServerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, ConnectError>> {
        Box::pin(async move {
            let name = addr.to_string();
            if addr.is_onion() {
                // Version and checksum are part of a v3 address: check them before any traffic.
                if let Err(e) = tor_hsservice::HsId::from_str(&addr.host) {
                    return Err(ConnectError::new(name, ConnectStage::Address, false, e));
                }
            }
            let patience = Patience {
                attempt_timeout: self.attempt_timeout,
                budget: self.budget,
                absent_grace: self.absent_grace,
            };
            let target = (addr.host.clone(), addr.port);
            // The first attempt on a spare of this server if there is one (each spare serves one
            // operation); every other on a fresh isolation.
            let spare = Mutex::new(self.take_spare(&name));
            connect_with_retries(&name, patience, || {
                let spare = spare.lock().ok().and_then(|mut s| s.take());
                let target = target.clone();
                let tor = self.tor.clone();
                let pool = self.spares.clone();
                Box::pin(async move {
                    let Some(spare) = spare else {
                        return connect_fresh(&tor, &target).await;
                    };
                    let s = match spare.client.connect((target.0.as_str(), target.1)).await {
                        Ok(s) => s,
                        Err(e) => {
                            SparePool::count(&pool, |p| p.failed += 1);
                            return Err(failure(e));
                        }
                    };
                    if spare.circuit.is_some() && circuit_of(&s) == spare.circuit {
                        // The warm-up's circuit is still in use: an operation on it would be
                        // tied to the warm-up. `warm` waits for the close, so never; checked
                        // all the same, and a fresh isolation taken instead.
                        tracing::warn!("a spare's circuit was still open; not used");
                        SparePool::count(&pool, |p| p.failed += 1);
                        close_circuit(&s);
                        return connect_fresh(&tor, &target).await;
                    }
                    SparePool::count(&pool, |p| p.taken += 1);
                    Ok(Box::new(s) as Box<dyn Stream>)
                })
            })
            .await
        })
    }

    fn warm<'a>(
        &'a self,
        addr: &'a ServerAddr,
        keep: usize,
    ) -> BoxFuture<'a, Result<bool, ConnectError>> {
        Box::pin(async move {
            let made = self.warm_once(addr, keep).await;
            if made.is_err() {
                SparePool::count(&self.spares, |p| p.failed += 1);
            }
            made
        })
    }

    fn spare_counts(&self) -> SpareCounts {
        match self.spares.lock() {
            Ok(pool) => SpareCounts {
                made: pool.made,
                taken: pool.taken,
                failed: pool.failed,
                ready: pool.spares.ready(Instant::now()) as u64,
            },
            Err(_) => SpareCounts::default(),
        }
    }
}
