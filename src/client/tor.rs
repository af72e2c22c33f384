//! Tor transport: every connection goes through embedded arti on its own isolated circuit.
//!
//! Each attempt is bounded on its own ([`TorConnector::attempt_timeout`], 30 s by default), and
//! attempts are retried within the overall budget ([`TorConnector::budget`]) when retrying can
//! help: one lost rendezvous costs one attempt, not the whole budget. What cannot succeed is not
//! retried: an onion address whose version or checksum is wrong (checked locally, before anything
//! is sent), a service that refuses the port, a missing or wrong client key. A service that is
//! not there fails in seconds rather than after the whole budget: every introduction point
//! answering that it does not know the service ends the attempts at the second such answer (a
//! second after the first, for a service that has just restarted); no directory having its
//! descriptor ends them once that has lasted [`TorConnector::absent_grace`] (20 s: a service
//! publishes some seconds after it starts, and directories change hands at the end of each time
//! period). Errors name the stage that failed.

use super::{ConnectError, ConnectStage, Connector, Stream};
use crate::proto::ServerAddr;
use crate::tor::Tor;
use arti_client::{ErrorKind, HasKind};
use futures::future::BoxFuture;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

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
}

impl TorConnector {
    /// A connector over a bootstrapped Tor client, with the default timeouts.
    pub fn new(tor: Tor) -> Self {
        TorConnector {
            tor,
            attempt_timeout: Duration::from_secs(30),
            budget: Duration::from_secs(120),
            absent_grace: Duration::from_secs(20),
        }
    }
}

/// How many attempts a service whose introduction points do not know it gets: the second, a
/// second after the first, finds a service that has just restarted and published anew.
const UNKNOWN_ATTEMPTS: u32 = 2;

/// An attempt ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {} (the descriptor, introduction or rendezvous did not complete; {attempts} attempt{})", humantime::format_duration(*.per_attempt), if *.attempts == 1 { "" } else { "s" })]
struct AttemptTimedOut {
    per_attempt: Duration,
    attempts: u32,
}

/// The last attempt's error, with how many attempts there were.
#[derive(Debug, thiserror::Error)]
#[error("after {attempts} attempt{}", if *.attempts == 1 { "" } else { "s" })]
struct Attempts {
    attempts: u32,
    #[source]
    last: arti_client::Error,
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

/// How the network says the onion service is not there (not a lost circuit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Absence {
    /// Every directory asked answered that it has no descriptor.
    NoDescriptor,
    /// Every introduction point tried answered that it does not know the service.
    Unknown,
}

impl Absence {
    fn why(self) -> &'static str {
        match self {
            Absence::NoDescriptor => "no directory has a descriptor for this onion service: it does not exist, has not published yet, or has been offline for hours",
            Absence::Unknown => "the onion service's introduction points do not know it: it is down (or restarted and has not published its new descriptor yet)",
        }
    }
}

/// Whether `e` says the onion service is not there ([`Absence`]).
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

/// The service is not there (see [`service_absent`]).
#[derive(Debug, thiserror::Error)]
#[error("{why} ({attempts} attempts)")]
struct Absent {
    why: &'static str,
    attempts: u32,
    #[source]
    last: arti_client::Error,
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
            let deadline = Instant::now() + self.budget;
            let mut attempt = 0u32;
            let mut unknown = 0u32;
            let mut no_descriptor_since: Option<Instant> = None;
            loop {
                attempt += 1;
                let left = deadline.saturating_duration_since(Instant::now());
                let limit = self.attempt_timeout.min(left);
                let isolated = self.tor.isolated_client();
                let r =
                    tokio::time::timeout(limit, isolated.connect((addr.host.as_str(), addr.port)))
                        .await;
                let (stage, retryable, err): (_, _, Box<dyn std::error::Error + Send + Sync>) =
                    match r {
                        Ok(Ok(s)) => return Ok(Box::new(s) as Box<dyn Stream>),
                        Ok(Err(e)) => {
                            let (stage, retryable) = classify(&e);
                            let absence = service_absent(&e);
                            let gone = match absence {
                                Some(Absence::Unknown) => {
                                    unknown += 1;
                                    unknown >= UNKNOWN_ATTEMPTS
                                }
                                Some(Absence::NoDescriptor) => {
                                    let since =
                                        *no_descriptor_since.get_or_insert_with(Instant::now);
                                    since.elapsed() >= self.absent_grace
                                }
                                None => {
                                    no_descriptor_since = None;
                                    false
                                }
                            };
                            if let Some(why) = absence.filter(|_| gone).map(Absence::why) {
                                // Transient: the service may come back, but not in this
                                // operation's budget as far as anyone can tell.
                                return Err(ConnectError::new(
                                    name,
                                    stage,
                                    true,
                                    Absent {
                                        why,
                                        attempts: attempt,
                                        last: e,
                                    },
                                ));
                            }
                            (
                                stage,
                                retryable,
                                Box::new(Attempts {
                                    attempts: attempt,
                                    last: e,
                                }),
                            )
                        }
                        Err(_) => (
                            ConnectStage::Rendezvous,
                            true,
                            Box::new(AttemptTimedOut {
                                per_attempt: limit,
                                attempts: attempt,
                            }),
                        ),
                    };
                // A short pause, growing, before the next attempt: right after a service
                // restarts, directories may still serve its previous descriptor.
                let pause = Duration::from_secs(u64::from(attempt.min(5)));
                if !retryable || Instant::now() + pause + Duration::from_secs(1) >= deadline {
                    return Err(ConnectError::new(name, stage, retryable, err));
                }
                tracing::info!(attempt, stage = %stage, error = %crate::config::report(&*err), "connecting over Tor failed; retrying");
                tokio::time::sleep(pause).await;
            }
        })
    }
}
