//! The rendezvous server: one connection handler over any byte stream, limits, listeners.
//!
//! [`Server::serve_stream`] runs the protocol on one stream (TCP connection, Tor stream, in-memory
//! duplex). Listeners ([`tcp`], [`onion`]) only accept streams and hand them over.

mod conn;
mod handle;
mod limits;
#[cfg(feature = "tor")]
pub mod onion;
mod session;
pub mod tcp;

use crate::clock::Clock;
use crate::proto::wire::DEFAULT_MAX_FRAME;
use crate::proto::{Locator, SealedLink};
use crate::store::BucketStore;
use crate::ConfigError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Server limits and housekeeping settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; more are answered `Busy` and closed. Default: 256; at most
    /// [`ServerConfig::MAX_CONNECTIONS`].
    pub max_connections: usize,
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
}

impl ServerConfig {
    /// The largest accepted `max_connections` (tokio's semaphore holds fewer than 2^61 permits;
    /// file descriptors run out long before this).
    pub const MAX_CONNECTIONS: usize = 1 << 20;
    /// The largest accepted `rate_per_sec` and `rate_burst`.
    pub const MAX_RATE: u32 = 1_000_000;

    /// Check the settings ([`Server::new`] does).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=Self::MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "max_connections",
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
        Ok(())
    }
}

/// The smallest request limit that still admits every request.
const MIN_MAX_FRAME: u32 = 512;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            rate_per_sec: 20,
            rate_burst: 40,
            gc_interval: Duration::from_secs(60),
            gc_batch: 1_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A server over a store.
pub struct Server<S: BucketStore> {
    pub(crate) store: S,
    pub(crate) config: ServerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) permits: Arc<Semaphore>,
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
        Ok(Arc::new(Server {
            permits: Arc::new(Semaphore::new(config.max_connections)),
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

    /// Connections being served now.
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.permits.available_permits()
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

    /// Collect expired buckets every `gc_interval` until shutdown, in batches so stores keep
    /// being served between them.
    pub async fn run_gc(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.gc_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown_requested() => return,
            }
            let mut total = 0;
            loop {
                match self
                    .store
                    .collect_garbage(self.clock.now(), self.config.gc_batch)
                    .await
                {
                    Ok(n) => {
                        total += n;
                        if n < self.config.gc_batch {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::config::report(&e), "garbage collection failed");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(buckets = total, "expired buckets collected");
            }
        }
    }

    /// Filler for a fetch answer (see [`crate::proto::padding::filler`]).
    pub(crate) fn filler(&self, locator: &Locator, have: usize) -> Vec<SealedLink> {
        crate::proto::padding::filler(self.store.filler_secret(), locator, have)
    }
}
