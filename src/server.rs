//! The rendezvous server: one connection handler over any byte stream, limits, listeners.
//!
//! [`Server::serve_stream`] runs the protocol on one stream (TCP connection, Tor stream, in-memory
//! duplex). Listeners ([`tcp`], [`onion`]) only accept streams and hand them over.

pub mod conn;
#[cfg(feature = "tor")]
pub mod onion;
pub mod tcp;

use crate::clock::Clock;
use crate::proto::wire::DEFAULT_MAX_FRAME;
use crate::proto::{Locator, SealedLink};
use crate::store::BucketStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Server limits and housekeeping settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; more are answered `Busy` and closed.
    pub max_connections: usize,
    /// A connection that sends no complete frame for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request frame accepted.
    pub max_frame: u32,
    /// Sustained requests per second per connection.
    pub rate_per_sec: u32,
    /// Burst of requests per connection.
    pub rate_burst: u32,
    /// How often expired buckets are collected.
    pub gc_interval: Duration,
    /// Buckets removed per GC transaction (GC yields to stores between transactions).
    pub gc_batch: usize,
    /// How long shutdown waits for open connections.
    pub shutdown_grace: Duration,
}

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
    /// A server over `store`.
    pub fn new(store: S, config: ServerConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Arc::new(Server {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            store,
            config,
            clock,
            shutdown_tx,
            shutdown_rx,
        })
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
                        tracing::warn!(error = %e, "garbage collection failed");
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
        crate::proto::padding::filler(&self.store.filler_secret(), locator, have)
    }
}
