//! Tor transport: every connection goes through embedded arti on its own isolated circuit.
//!
//! Attempts are bounded and retried as [`super::retry`] describes. What cannot succeed is not
//! retried: an onion address whose version or checksum is wrong (checked locally, before anything
//! is sent), a service that refuses the port, a missing or wrong client key. Errors name the
//! stage that failed.

use super::retry::{connect_with_retries, Absence, Failure, Patience};
use super::{ConnectError, ConnectStage, Connector, Stream};
use crate::proto::ServerAddr;
use crate::tor::Tor;
use arti_client::{ErrorKind, HasKind};
use futures::future::BoxFuture;
use std::str::FromStr;
use std::time::Duration;

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
            connect_with_retries(&name, patience, || {
                let isolated = self.tor.isolated_client();
                let target = target.clone();
                Box::pin(async move {
                    match isolated.connect((target.0.as_str(), target.1)).await {
                        Ok(s) => Ok(Box::new(s) as Box<dyn Stream>),
                        Err(e) => {
                            let (stage, retryable) = classify(&e);
                            Err(Failure {
                                stage,
                                retryable,
                                absence: service_absent(&e),
                                most_attempts: None,
                                error: Box::new(e),
                            })
                        }
                    }
                })
            })
            .await
        })
    }
}
