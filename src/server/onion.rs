//! The onion service listener: the server published as a Tor onion service through arti.
//!
//! The service key lives in arti's keystore in the state directory, so the address stays the same
//! across restarts. Streams to any port but the advertised one are refused. Against denial of
//! service ([`OnionSettings`]): a per-circuit stream limit (a circuit that opens more streams is
//! closed), a rate limit at the introduction points, a bound on rendezvous circuits being set up
//! at once, optional proof-of-work; and every circuit is one [`Source`] for the server's fair store
//! admission, however many streams it opens.

use super::rend_queue::{RendQueue, REND_MAX_WAIT, REND_QUEUE_CAPACITY};
use super::{Server, Source};
use crate::store::BucketStore;
use crate::tor::Tor;
use futures::StreamExt;
use safelog::DisplayRedacted;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::config::restricted_discovery::DirectoryKeyProviderBuilder;
use tor_hsservice::config::{OnionServiceConfigBuilder, TokenBucketConfig};
use tor_hsservice::status::State;
use tor_hsservice::{RendRequest, RunningOnionService};
use tor_proto::stream::IncomingStreamRequest;

/// How the onion service is published and defended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnionSettings {
    /// The service's nickname in arti's keystore. Default: `rdv`.
    pub nickname: String,
    /// The virtual port served. Default: 7625.
    pub port: u16,
    /// Streams one circuit may have open at once; a circuit that opens more is closed (C tor's
    /// `HiddenServiceMaxStreams` with `HiddenServiceMaxStreamsCloseCircuit 1`). An honest client
    /// uses one stream per circuit. Default: 16; at least 1.
    pub max_streams_per_circuit: u32,
    /// Introductions per second the introduction points let through, and their burst (C tor's
    /// `HiddenServiceEnableIntroDoSRatePerSec` / `BurstPerSec`). `None`: the network's defaults.
    /// Default: 25/s, burst 200.
    pub intro_rate: Option<(u32, u32)>,
    /// Introduction points. Default: 3; from 3 to 20.
    pub intro_points: u8,
    /// Rendezvous circuits being built at once; more introductions wait (at most 1024, none
    /// longer than 12 s: [`super::rend_queue`]). Default: 64; at least 1.
    pub max_rendezvous_in_flight: usize,
    /// Require proof-of-work from clients when the service is under load (arti's experimental
    /// `hs-pow-full`; needs the `pow` cargo feature). Default: off.
    pub pow: bool,
    /// Restricted discovery: publish the descriptor only to the clients whose keys are in these
    /// directories (`NAME.auth` files, see [`crate::tor::auth`]); nobody else can even find the
    /// service. Checked at launch: every `.auth` file must be valid, and there must be at least
    /// one in all. Changes take effect when the service restarts. Default: empty, anyone
    /// who knows the address can connect.
    pub authorized_clients: Vec<std::path::PathBuf>,
}

impl Default for OnionSettings {
    fn default() -> Self {
        OnionSettings {
            nickname: "rdv".into(),
            port: 7625,
            max_streams_per_circuit: 16,
            intro_rate: Some((25, 200)),
            intro_points: 3,
            max_rendezvous_in_flight: 64,
            pow: false,
            authorized_clients: Vec::new(),
        }
    }
}

impl OnionSettings {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.max_streams_per_circuit == 0 {
            return Err(ConfigError::new(
                "max_streams_per_circuit",
                "must be at least 1",
            ));
        }
        if !(3..=20).contains(&self.intro_points) {
            return Err(ConfigError::new("intro_points", "must be from 3 to 20"));
        }
        if self.max_rendezvous_in_flight == 0 {
            return Err(ConfigError::new(
                "max_rendezvous_in_flight",
                "must be at least 1",
            ));
        }
        if let Some((rate, burst)) = self.intro_rate {
            let max = i32::MAX as u32;
            if rate == 0 || burst == 0 || rate > max || burst > max || burst < rate {
                return Err(ConfigError::new(
                    "intro_rate",
                    "rate and burst must be from 1 to 2147483647, burst at least the rate",
                ));
            }
        }
        if self.pow && !cfg!(feature = "pow") {
            return Err(ConfigError::new(
                "pow",
                "this rdv is built without proof-of-work (cargo feature `pow`)",
            ));
        }
        Ok(())
    }
}

/// A launched onion service.
pub struct OnionListener {
    service: Arc<RunningOnionService>,
    requests: futures::stream::BoxStream<'static, RendRequest>,
    /// The service's address, `….onion`.
    pub address: String,
    settings: OnionSettings,
}

/// Errors launching the onion service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnionError {
    /// The settings are unusable.
    #[error("invalid onion service settings")]
    Settings(#[from] crate::ConfigError),
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
    /// The authorized-clients directory is unusable.
    #[error("restricted discovery")]
    AuthorizedClients(#[from] crate::tor::auth::AuthKeyError),
    /// The keystore gave no address.
    #[error("the onion service has no address (keystore problem?)")]
    NoAddress,
}

/// Launch the onion service on `tor`.
pub fn launch(tor: &Tor, settings: &OnionSettings) -> Result<OnionListener, OnionError> {
    settings.validate()?;
    let nick = settings
        .nickname
        .parse()
        .map_err(|e| OnionError::Nickname(settings.nickname.clone(), e))?;
    let mut b = OnionServiceConfigBuilder::default();
    b.nickname(nick)
        .num_intro_points(settings.intro_points)
        .max_concurrent_streams_per_circuit(settings.max_streams_per_circuit)
        .enable_pow(settings.pow);
    if let Some((rate, burst)) = settings.intro_rate {
        b.rate_limit_at_intro(TokenBucketConfig::new(rate, burst));
    }
    if !settings.authorized_clients.is_empty() {
        let rd = b.restricted_discovery();
        rd.enabled(true);
        let mut clients = 0;
        for dir in &settings.authorized_clients {
            clients += crate::tor::auth::check_authorized_clients(dir)?.len();
            let mut keys = DirectoryKeyProviderBuilder::default();
            keys.path(arti_client::config::CfgPath::new_literal(dir));
            rd.key_dirs().access().push(keys);
        }
        if clients == 0 {
            return Err(crate::tor::auth::AuthKeyError::NoClients(
                settings.authorized_clients.clone(),
            )
            .into());
        }
        tracing::info!(
            clients,
            "restricted discovery: only authorized clients can find the service"
        );
    }
    let config = b.build().map_err(OnionError::Config)?;
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
        requests: rend.boxed(),
        address,
        settings: settings.clone(),
    })
}

/// A service state's name for logs.
fn state_name(state: State) -> &'static str {
    match state {
        State::Shutdown => "shutdown",
        State::Bootstrapping => "bootstrapping",
        State::DegradedReachable => "degraded (reachable)",
        State::DegradedUnreachable => "degraded (unreachable)",
        State::Running => "running",
        State::Recovering => "recovering",
        State::Broken => "broken",
        _ => "unknown",
    }
}

impl OnionListener {
    /// The virtual port served.
    pub fn onion_port(&self) -> u16 {
        self.settings.port
    }

    /// The service's state as arti sees it (published, introduction points), for health logs.
    pub fn state(&self) -> &'static str {
        state_name(self.service.status().state())
    }

    /// A handle that reads the service's state later.
    pub fn state_reader(&self) -> impl Fn() -> &'static str + Send + Sync + 'static {
        let service = self.service.clone();
        move || state_name(service.status().state())
    }

    /// Log the service's state changes (and whether arti considers it reachable) until it shuts
    /// down: the first time it runs and every time it breaks at INFO, the rest (arti moves
    /// between running, degraded and recovering every half minute or so as it republishes) at
    /// DEBUG. Whether clients can really reach it is the health probe's to say.
    pub fn spawn_status_logger(&self) -> tokio::task::JoinHandle<()> {
        let mut events = self.service.status_events();
        tokio::spawn(async move {
            let mut last: Option<State> = None;
            let mut ran = false;
            while let Some(status) = events.next().await {
                let state = status.state();
                if last == Some(state) {
                    continue;
                }
                last = Some(state);
                let name = state_name(state);
                let reachable = state.is_fully_reachable();
                let problem = status.current_problem().map(|p| format!("{p:?}"));
                let first_run = state == State::Running && !ran;
                ran |= state == State::Running;
                if first_run || state == State::Broken {
                    tracing::info!(
                        state = name,
                        reachable,
                        problem = problem.as_deref(),
                        "onion service status"
                    );
                } else {
                    tracing::debug!(
                        state = name,
                        reachable,
                        problem = problem.as_deref(),
                        "onion service status"
                    );
                }
            }
        })
    }

    /// Serve until shutdown: accept rendezvous requests (at most `max_rendezvous_in_flight`
    /// being set up at once), and serve each circuit's streams as one source. arti's requests
    /// are read as they come, whatever is being set up, by a thread of their own: those beyond
    /// the bound wait in a [`RendQueue`] of rdv's own. arti's hand-over queue holds 32 and drops
    /// the rest unseen, and their clients wait for a rendezvous that never comes; read on the
    /// task that also sets the rendezvous up (each `accept` first decrypts its introduction),
    /// and woken behind arti's own task (tokio runs a task woken from one of its threads next on
    /// that thread, once the waking task yields), the reading fell behind a burst: 28 of 128
    /// dropped at once. With proof-of-work on, arti's own queue orders them by effort, and they
    /// are read here as places free up.
    pub async fn run<S: BucketStore>(self, server: Arc<Server<S>>) {
        let in_flight = self.settings.max_rendezvous_in_flight.max(1);
        let port = self.settings.port;
        let pow = self.settings.pow;
        let queue = Arc::new(std::sync::Mutex::new(RendQueue::<RendRequest>::new(
            REND_QUEUE_CAPACITY,
            REND_MAX_WAIT,
        )));
        let read = Arc::new(tokio::sync::Notify::new());
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut requests = Some(self.requests);
        // (With proof-of-work the stream stays here: it is read in the loop below.)
        let reading = if pow { None } else { requests.take() };
        // Dropped when this returns (a shutdown, the end): the reader then ends too, rather than
        // go on taking requests nobody serves.
        let (_stop_reader, mut stop) = futures::channel::oneshot::channel::<()>();
        if let Some(mut reading) = reading {
            let (queue, read, ended) = (queue.clone(), read.clone(), ended.clone());
            let reader = std::thread::Builder::new()
                .name("rdv-rendezvous".into())
                .spawn(move || {
                    // The end is told however the thread ends, a panic included.
                    let _end = EndTold(ended, read.clone());
                    // Woken directly by arti's sender, on a thread of its own.
                    futures::executor::block_on(async {
                        while let futures::future::Either::Left((Some(rend), _)) =
                            futures::future::select(reading.next(), &mut stop).await
                        {
                            lock_queue(&queue).push(Instant::now(), rend);
                            read.notify_one();
                        }
                    });
                });
            if let Err(e) = reader {
                tracing::error!(error = %e, "starting the thread that reads rendezvous requests failed; the onion service is no longer served");
                return;
            }
        }
        let mut open = true;
        let mut reported = (0, 0);
        let mut last_report = None;
        let mut accepting = futures::stream::FuturesUnordered::new();
        loop {
            // Read before the queue: the reader's last push comes before it tells the end.
            let reader_ended = !pow && ended.load(std::sync::atomic::Ordering::SeqCst);
            let (dropped, empty) = {
                let mut q = lock_queue(&queue);
                while accepting.len() < in_flight {
                    let Some(rend) = q.pop(Instant::now()) else {
                        break;
                    };
                    accepting.push(async move { rend.accept().await });
                }
                ((q.dropped_full, q.dropped_stale), q.is_empty())
            };
            // A flood past the queue, or waits past the clients': counts, at most once a minute.
            if dropped != reported
                && last_report.is_none_or(|t: Instant| t.elapsed() >= REPORT_EVERY)
            {
                if dropped.0 > reported.0 {
                    tracing::warn!(
                        dropped = dropped.0 - reported.0,
                        "introductions dropped: the rendezvous queue was full"
                    );
                }
                if dropped.1 > reported.1 {
                    tracing::warn!(
                        dropped = dropped.1 - reported.1,
                        "introductions dropped: they waited longer than their clients do"
                    );
                }
                reported = dropped;
                last_report = Some(Instant::now());
            }
            if reader_ended {
                open = false;
            }
            if !open && accepting.is_empty() && empty {
                tracing::warn!("onion service request stream ended");
                return;
            }
            // With proof-of-work arti keeps its own queue, ordered by each request's effort (and
            // unbounded by this one): it is read only when a place is free, so that the order
            // stays arti's.
            let read_here = pow && open && accepting.len() < in_flight;
            let next_here = async {
                match requests.as_mut() {
                    Some(r) => r.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = next_here, if read_here => match next {
                    Some(rend) => {
                        lock_queue(&queue).push(Instant::now(), rend);
                    }
                    None => open = false,
                },
                () = read.notified(), if !pow => {}
                Some(done) = accepting.next(), if !accepting.is_empty() => match done {
                    Err(e) => tracing::debug!(error = %e, "a rendezvous failed"),
                    Ok(streams) => {
                        tokio::spawn(serve_circuit(streams, port, server.clone()));
                    }
                },
                _ = server.shutdown_requested() => return,
            }
        }
    }
}

/// The shared queue of rendezvous requests, locked. A poisoned lock leaves the queue whole (each
/// change to it is one push or one pop), so it is taken as it is.
fn lock_queue(
    q: &std::sync::Mutex<RendQueue<RendRequest>>,
) -> std::sync::MutexGuard<'_, RendQueue<RendRequest>> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tells the run loop, when dropped, that the thread reading rendezvous requests has ended.
struct EndTold(Arc<std::sync::atomic::AtomicBool>, Arc<tokio::sync::Notify>);

impl Drop for EndTold {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        self.1.notify_one();
    }
}

/// How often dropped introductions are reported at most.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Serve the streams of one rendezvous circuit, all as one source.
async fn serve_circuit<S: BucketStore>(
    mut streams: impl futures::Stream<Item = tor_hsservice::StreamRequest> + Unpin,
    port: u16,
    server: Arc<Server<S>>,
) {
    let source = Source::new();
    loop {
        let next = tokio::select! {
            n = streams.next() => n,
            _ = server.shutdown_requested() => return,
        };
        let Some(req) = next else { return };
        let wanted = matches!(req.request(), IncomingStreamRequest::Begin(b) if b.port() == port);
        let (server, source) = (server.clone(), source.clone());
        tokio::spawn(async move {
            if !wanted {
                let _ = req
                    .reject(End::new_with_reason(EndReason::EXITPOLICY))
                    .await;
                return;
            }
            match req.accept(Connected::new_empty()).await {
                Ok(stream) => server.serve_stream_from(stream, source).await,
                Err(e) => tracing::debug!(error = %e, "could not accept an onion stream"),
            }
        });
    }
}
