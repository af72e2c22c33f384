//! The rendezvous server: one connection handler over any byte stream, limits, listeners.
//!
//! [`Server::serve_stream`] runs the protocol on one stream (TCP connection, Tor stream, in-memory
//! duplex). Listeners ([`tcp`], [`onion`]) only accept streams and hand them over.

pub mod adversary;
mod conn;
mod handle;
pub mod health;
mod limits;
pub mod metrics;

pub use limits::Source;
#[cfg(feature = "tor")]
pub mod onion;
pub mod rend_queue;
mod session;
pub mod tcp;

use crate::clock::{Clock, ExpiryTime, TimeGuard};
use crate::proto::wire::DEFAULT_MAX_FRAME;
use crate::proto::{Locator, SealedLink};
use crate::store::{BucketStore, StoreError};
use crate::ConfigError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Server limits and housekeeping settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once. When all are taken, newcomers get in line (first come,
    /// first served) and take the slot of a holder that has had its own for 10 s and is between
    /// requests, or of one that does not read its answers; one still in line after 45 s is
    /// answered `Busy`. Default: 256; at most [`ServerConfig::MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Connections that have not completed their first request yet, held apart so that silent
    /// sockets never take a slot; when full, the oldest of them is closed for a newcomer.
    /// Default: 8192 (each is an idle socket and a small task; a big room gives a connection that
    /// speaks at once plenty of time to do so while silent ones churn); at least 1 and at most
    /// [`ServerConfig::MAX_CONNECTIONS`].
    pub waiting_room: usize,
    /// A connection that sends no complete frame for this long is closed. Default: 30 s; at
    /// least 1 s.
    pub idle_timeout: Duration,
    /// Largest request frame accepted, bytes. Default: 20 480 (what a full bucket needs, with room).
    pub max_frame: u32,
    /// Sustained requests per second per connection. Default: 20; at least 1.
    pub rate_per_sec: u32,
    /// Burst of requests per connection. Default: 40; at least 1.
    pub rate_burst: u32,
    /// How often expired buckets are collected. Default: 60 s; at least 1 s.
    pub gc_interval: Duration,
    /// Buckets removed per GC transaction (GC yields to stores between transactions). Default:
    /// 1000; at least 1.
    pub gc_batch: usize,
    /// How long shutdown waits for open connections. Default: 5 s.
    pub shutdown_grace: Duration,
    /// **Testing only**: misbehave on purpose (see [`adversary`]). Default: `None`.
    pub adversary: Option<adversary::Adversary>,
    /// **Testing only**: how many of an adversarial server's fake entries around each victim get
    /// valid stamps, paid with real work (`isolate` adds them to the victim's own bucket,
    /// `dummies` stamps that many of its dummies). Default: 0.
    pub adversary_stamp_budget: usize,
    /// The effort a challenge asks for (protocol version 3): a stamp takes about this many
    /// Equi-X solutions, some 3 ms each. Default: 64 (about 0.2 s); from 1 to
    /// [`ServerConfig::MAX_EFFORT`].
    pub stamp_effort: u32,
    /// Refuse stores without a stamp (every version-1 and version-2 client), so that every
    /// store costs its client the work of a stamp. Default: `false`.
    pub require_stamps: bool,
    /// Take the wall clock at the start as it is for expiry, even far past the store's last
    /// expiry time (after a long downtime the operator knows of). Default: `false`: expiry
    /// resumes from the store's mark ([`crate::clock::TimeGuard::resume`]), so that a clock that
    /// is ahead at boot cannot collect links early.
    pub trust_clock: bool,
    /// Values of each anonymity histogram of the metrics released together
    /// ([`metrics::Metrics::with_batch`]), so that two scrapes around one request do not show
    /// its values. Default: 8; from 1 (each at once: for a lab) to 10 000.
    pub metrics_batch: usize,
}

impl ServerConfig {
    /// The largest accepted `max_connections` (tokio's semaphore holds fewer than 2^61 permits;
    /// file descriptors run out long before this).
    pub const MAX_CONNECTIONS: usize = 1 << 20;
    /// The largest accepted `rate_per_sec` and `rate_burst`.
    pub const MAX_RATE: u32 = 1_000_000;
    /// The largest accepted `stamp_effort` (hours of work per stamp).
    pub const MAX_EFFORT: u32 = 1 << 20;

    /// Check the settings ([`Server::new`] does).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=Self::MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "max_connections",
                format!("must be from 1 to {}", Self::MAX_CONNECTIONS),
            ));
        }
        if !(1..=Self::MAX_CONNECTIONS).contains(&self.waiting_room) {
            return Err(ConfigError::new(
                "waiting_room",
                format!("must be from 1 to {}", Self::MAX_CONNECTIONS),
            ));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new("idle_timeout", "must be at least 1 s"));
        }
        if self.max_frame < MIN_MAX_FRAME {
            return Err(ConfigError::new(
                "max_frame",
                format!("must be at least {MIN_MAX_FRAME} bytes (a Store request)"),
            ));
        }
        if !(1..=Self::MAX_RATE).contains(&self.rate_per_sec) {
            return Err(ConfigError::new(
                "rate",
                format!("must be from 1 to {} requests/s", Self::MAX_RATE),
            ));
        }
        if !(1..=2 * Self::MAX_RATE).contains(&self.rate_burst) {
            return Err(ConfigError::new(
                "rate_burst",
                format!("must be from 1 to {}", 2 * Self::MAX_RATE),
            ));
        }
        if self.gc_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("gc_interval", "must be at least 1 s"));
        }
        if self.gc_batch == 0 {
            return Err(ConfigError::new("gc_batch", "must be at least 1"));
        }
        if !(1..=Self::MAX_EFFORT).contains(&self.stamp_effort) {
            return Err(ConfigError::new(
                "stamp_effort",
                format!("must be from 1 to {}", Self::MAX_EFFORT),
            ));
        }
        if !(1..=10_000).contains(&self.metrics_batch) {
            return Err(ConfigError::new("metrics_batch", "must be from 1 to 10000"));
        }
        Ok(())
    }
}

/// The smallest request limit that still admits every request.
const MIN_MAX_FRAME: u32 = 512;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            waiting_room: 8192,
            idle_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            rate_per_sec: 20,
            rate_burst: 40,
            gc_interval: Duration::from_secs(60),
            gc_batch: 1_000,
            shutdown_grace: Duration::from_secs(5),
            adversary: None,
            adversary_stamp_budget: 0,
            stamp_effort: crate::proto::stamp::DEFAULT_EFFORT,
            require_stamps: false,
            trust_clock: false,
            metrics_batch: metrics::DEFAULT_BATCH,
        }
    }
}

/// The most answers stored per second: as many as links can be (`max_seq + 1` buckets a
/// second, each full).
pub(crate) fn answers_per_second(p: &crate::store::StoreParams) -> u32 {
    (u32::from(p.max_seq) + 1) * crate::proto::MAX_LINKS_PER_BUCKET as u32
}

/// A server over a store.
pub struct Server<S: BucketStore> {
    pub(crate) store: S,
    pub(crate) config: ServerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) slots: limits::Slots,
    pub(crate) store_gate: limits::StoreGate,
    /// Answers stored per second, capped at the rate new links can be stored (one second's
    /// buckets, each full): answers share the quota, and must not fill it faster than links.
    pub(crate) answer_rate: std::sync::Mutex<limits::RateLimiter>,
    pub(crate) metrics: metrics::Metrics,
    /// Expiry never runs ahead of elapsed time since the start.
    guard: TimeGuard,
    /// The wall clock was last seen this far ahead of elapsed time (for one warning per jump).
    jump_seen: std::sync::atomic::AtomicU64,
    /// The wall clock was last seen behind the elapsed-time line (for one warning per period).
    behind_seen: std::sync::atomic::AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    pub(crate) shutdown_rx: watch::Receiver<bool>,
}

impl<S: BucketStore> Server<S> {
    /// A server over `store`, after checking its settings and the store's.
    pub fn new(
        store: S,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        store.params().validate()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let p = store.params();
        let mark = store.expiry_mark().filter(|_| !config.trust_clock);
        let wall = clock.now();
        let guard = TimeGuard::resume(wall, clock.elapsed(), mark);
        if wall
            > guard
                .anchor()
                .saturating_add(crate::clock::JUMP_TOLERANCE.as_secs())
        {
            tracing::warn!(
                ahead_secs = wall - guard.anchor(),
                "the wall clock is far ahead of the store's last expiry time: expiry resumes from that time, so no link is collected early; time the server was down does not count toward the TTL (links live that much longer). If the clock is right and the server was down that long, start once with --trust-clock"
            );
        }
        Ok(Arc::new(Server {
            metrics: metrics::Metrics::new(p.open_window_secs, p.ttl_secs)
                .with_batch(config.metrics_batch),
            slots: limits::Slots::new(config.max_connections, config.waiting_room),
            store_gate: limits::StoreGate::new(),
            answer_rate: std::sync::Mutex::new(limits::RateLimiter::new(
                answers_per_second(&p),
                answers_per_second(&p),
                tokio::time::Instant::now(),
            )),
            guard,
            jump_seen: std::sync::atomic::AtomicU64::new(0),
            behind_seen: std::sync::atomic::AtomicBool::new(false),
            store,
            config,
            clock,
            shutdown_tx,
            shutdown_rx,
        }))
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Connections open now (waiting for their first request, or holding a slot).
    pub fn open_connections(&self) -> usize {
        self.slots.len()
    }

    /// Connections holding a slot now.
    pub fn slot_holders(&self) -> usize {
        self.slots.holders()
    }

    /// The metrics in Prometheus' text format (aggregates only: see [`metrics`]).
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(
            self.clock.now(),
            self.open_connections(),
            self.slot_holders(),
            self.store.link_count(),
            self.store.mark_count(),
            self.store.params().max_links,
        )
    }

    /// Bring the metrics up to date with the store: note the buckets its handle opened, and
    /// count the links of each whose open window has ended, read from the store (so that on a
    /// cluster the count holds every frontend's links, and only the frontend that opened a
    /// bucket reports it). The metrics endpoint runs this every second and before each scrape;
    /// a caller of [`Server::metrics_text`] without one runs it first.
    pub async fn refresh_metrics(&self) {
        for id in self.store.take_opened() {
            self.metrics.opened(id);
        }
        self.hear_fetches();
        let now = self.clock.now();
        let mut after = None;
        while let Some(w) = self.metrics.window_due(now, after) {
            after = Some(w);
            match self.store.fetch_entries(w.1, self.expiry_now()).await {
                Ok(found) => self
                    .metrics
                    .window_counted(w, found.map(|(_, entries)| entries.len())),
                // The store is failing: this and the rest are read at a later refresh.
                Err(StoreError::Backend(_) | StoreError::Closed) => break,
                // A damaged bucket: not counted.
                Err(_) => self.metrics.window_counted(w, None),
            }
        }
    }

    /// The latest fetch of the bucket at `locator` the metrics know of, this server's or one
    /// another frontend of its cluster told of (for tests; never in the metrics' text).
    #[doc(hidden)]
    pub fn latest_fetch_known(&self, locator: &Locator) -> Option<u64> {
        self.hear_fetches();
        self.metrics.latest_fetch(locator)
    }

    /// Note the fetches other frontends of a cluster served (for delete-after-fetch).
    fn hear_fetches(&self) {
        let heard = self.store.take_heard_fetches();
        if heard.is_empty() {
            return;
        }
        let now = self.clock.now();
        for (id, at) in heard {
            self.metrics.heard_fetch(id, at, now);
        }
    }

    /// Ask every listener and connection to stop.
    pub fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// Resolves once shutdown is asked for.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown_rx.clone();
        // An error means the sender is gone, which only happens when the server is dropped.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// After [`Server::shutdown`]: wait until open connections are done, at most the grace time.
    pub async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Collect expired buckets every `gc_interval` until shutdown.
    pub async fn run_gc(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.gc_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown_requested() => return,
            }
            match self.collect_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(buckets = n, "expired buckets collected"),
                Err(e) => {
                    tracing::warn!(error = %crate::config::report(&e), "garbage collection failed")
                }
            }
        }
    }

    /// One garbage-collection pass: every bucket expired by [`Server`]'s expiry time (the wall
    /// clock, never ahead of elapsed time), in transactions of `gc_batch` buckets so that stores
    /// are served between them. Returns how many buckets were removed.
    pub async fn collect_expired(&self) -> Result<usize, crate::store::StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .store
                .collect_garbage(self.expiry_now(), self.config.gc_batch)
                .await?;
            total += n;
            if n < self.config.gc_batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// The time for expiry decisions: the wall clock, bounded by the elapsed time since start.
    /// A jump ahead is logged once.
    pub(crate) fn expiry_now(&self) -> u64 {
        self.expiry_at(self.clock.now())
    }

    /// [`Self::expiry_now`] for a wall-clock reading `wall` taken by the caller (one reading
    /// for a request's every decision).
    pub(crate) fn expiry_at(&self, wall: u64) -> u64 {
        let ExpiryTime { now, wall_ahead } = self.guard.expiry_now(wall, self.clock.elapsed());
        let seen = self
            .jump_seen
            .swap(wall_ahead, std::sync::atomic::Ordering::Relaxed);
        if wall_ahead > 0 && seen == 0 {
            tracing::warn!(
                ahead_secs = wall_ahead,
                "the wall clock jumped ahead of the time elapsed since start: expiry and garbage collection follow the elapsed time (restart the server to accept the new time)"
            );
        } else if wall_ahead == 0 && seen > 0 {
            tracing::info!("the wall clock is back in line with the elapsed time");
        }
        now
    }

    /// Before anything is created (a bucket, a link, an answer) while the wall clock runs behind
    /// the elapsed-time line by more than [`crate::clock::JUMP_TOLERANCE`]: make sure the store
    /// holds what is created now for that much longer ([`crate::store::hold`]), so that it keeps
    /// its whole TTL once the clock is corrected. Nothing is stored unless the hold is durable.
    /// `wall` is the reading the caller then creates with: read once, so that a clock stepped
    /// back between the check and the store cannot date a link early without a hold.
    pub(crate) async fn hold_if_behind(&self, wall: u64) -> Result<(), StoreError> {
        use crate::store::ExpiryHold;
        const STEP: u64 = 600;
        let behind = self.guard.behind(wall, self.clock.elapsed());
        let tolerance = crate::clock::JUMP_TOLERANCE.as_secs();
        let was = self
            .behind_seen
            .swap(behind > tolerance, std::sync::atomic::Ordering::Relaxed);
        if behind <= tolerance {
            if was {
                tracing::info!("the wall clock is no longer behind the elapsed time");
            }
            return Ok(());
        }
        let from = wall.saturating_sub(self.store.params().open_window_secs);
        let need = ExpiryHold::new(from, wall, behind + tolerance);
        if self.store.expiry_hold().is_some_and(|h| h.covers(&need)) {
            return Ok(());
        }
        if !was {
            tracing::warn!(
                behind_secs = behind,
                "the wall clock is behind the time elapsed since start (or since the store's last expiry time): what is stored now is dated early, and is kept that much longer so that it loses nothing of its TTL once the clock is corrected; clients with a correct clock refuse the early bucket IDs (check the system clock)"
            );
        }
        // A step ahead in time and in credit, so that the hold is written about once an hour.
        let credit = (behind + tolerance).div_ceil(STEP) * STEP + STEP;
        self.store
            .hold_expiry(ExpiryHold::new(from, wall.saturating_add(6 * STEP), credit))
            .await
    }

    /// Filler for a fetch answer (see [`crate::proto::padding::filler`]).
    pub(crate) fn filler(&self, locator: &Locator, have: usize) -> Vec<SealedLink> {
        crate::proto::padding::filler(self.store.filler_secret(), locator, have)
    }

    /// The stamp seed of bucket `id`.
    pub(crate) fn seed(&self, id: crate::proto::BucketId) -> crate::proto::StampSeed {
        crate::proto::stamp::bucket_seed(self.store.filler_secret(), id)
    }
}
