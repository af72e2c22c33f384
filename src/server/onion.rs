//! The onion service listener: the server published as a Tor onion service through arti.
//!
//! The service key lives in arti's keystore in the state directory, so the address stays the same
//! across restarts. Streams to any port but the advertised one are refused.

use super::Server;
use crate::store::BucketStore;
use crate::tor::Tor;
use futures::StreamExt;
use safelog::DisplayRedacted;
use std::sync::Arc;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::status::State;
use tor_hsservice::{handle_rend_requests, RunningOnionService};
use tor_proto::stream::IncomingStreamRequest;

/// A launched onion service.
pub struct OnionListener {
    service: Arc<RunningOnionService>,
    requests: futures::stream::BoxStream<'static, tor_hsservice::StreamRequest>,
    /// The service's address, `….onion`.
    pub address: String,
    port: u16,
}

/// Errors launching the onion service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnionError {
    /// The nickname is not one arti accepts.
    #[error("bad onion service nickname {0:?}")]
    Nickname(String, #[source] tor_hsservice::InvalidNickname),
    /// The service configuration does not build.
    #[error("invalid onion service configuration")]
    Config(#[source] tor_config::ConfigBuildError),
    /// arti could not launch the service.
    #[error("cannot launch the onion service")]
    Launch(#[source] arti_client::Error),
    /// arti's configuration disables onion services.
    #[error("the onion service is disabled in the arti configuration")]
    Disabled,
    /// The keystore gave no address.
    #[error("the onion service has no address (keystore problem?)")]
    NoAddress,
}

/// Launch the onion service `nickname` on `tor`, serving virtual port `port`.
pub fn launch(tor: &Tor, nickname: &str, port: u16) -> Result<OnionListener, OnionError> {
    let nick = nickname
        .parse()
        .map_err(|e| OnionError::Nickname(nickname.to_string(), e))?;
    let config = OnionServiceConfigBuilder::default()
        .nickname(nick)
        .build()
        .map_err(OnionError::Config)?;
    let (service, rend) = tor
        .launch_onion_service(config)
        .map_err(OnionError::Launch)?
        .ok_or(OnionError::Disabled)?;
    let address = service
        .onion_address()
        .ok_or(OnionError::NoAddress)?
        .display_unredacted()
        .to_string();
    Ok(OnionListener {
        service,
        requests: handle_rend_requests(rend).boxed(),
        address,
        port,
    })
}

impl OnionListener {
    /// The virtual port served.
    pub fn onion_port(&self) -> u16 {
        self.port
    }

    /// Log the service's status changes until it shuts down.
    pub fn spawn_status_logger(&self) -> tokio::task::JoinHandle<()> {
        let mut events = self.service.status_events();
        tokio::spawn(async move {
            let mut last: Option<State> = None;
            while let Some(status) = events.next().await {
                let state = status.state();
                if last != Some(state) {
                    let problem = status.current_problem().map(|p| format!("{p:?}"));
                    let name = match state {
                        State::Shutdown => "shutdown",
                        State::Bootstrapping => "bootstrapping",
                        State::DegradedReachable => "degraded (reachable)",
                        State::DegradedUnreachable => "degraded (unreachable)",
                        State::Running => "running",
                        State::Recovering => "recovering",
                        State::Broken => "broken",
                        _ => "unknown",
                    };
                    match problem {
                        Some(p) => {
                            tracing::info!(state = name, problem = %p, "onion service status")
                        }
                        None => tracing::info!(state = name, "onion service status"),
                    }
                    last = Some(state);
                }
            }
        })
    }

    /// Serve incoming streams until shutdown.
    pub async fn run<S: BucketStore>(mut self, server: Arc<Server<S>>) {
        loop {
            let next = tokio::select! {
                n = self.requests.next() => n,
                _ = server.shutdown_requested() => return,
            };
            let Some(req) = next else {
                tracing::warn!("onion service request stream ended");
                return;
            };
            let wanted =
                matches!(req.request(), IncomingStreamRequest::Begin(b) if b.port() == self.port);
            let server = server.clone();
            tokio::spawn(async move {
                if !wanted {
                    let _ = req
                        .reject(End::new_with_reason(EndReason::EXITPOLICY))
                        .await;
                    return;
                }
                match req.accept(Connected::new_empty()).await {
                    Ok(stream) => server.serve_stream(stream).await,
                    Err(e) => tracing::debug!(error = %e, "could not accept an onion stream"),
                }
            });
        }
    }
}
