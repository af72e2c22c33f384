//! The hidden `lib-serve` subcommand: the library server with settable GC batch and backlog.

use anyhow::Result;
use clap::Args;
use rdv::clock::SystemClock;
use rdv::proto::padding::FillerSecret;
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct LibServeArgs {
    /// Data directory.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// How long buckets are kept.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,
    /// How often expired buckets are collected.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) gc_interval: Duration,
    /// Buckets removed per GC transaction.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) gc_batch: usize,
    /// TCP accept backlog (tokio's `TcpListener::bind` uses 128).
    #[arg(long, default_value_t = 128)]
    pub(crate) backlog: u32,
}

/// The library's server on 127.0.0.1 over a `DiskStore`, like `rdv serve --no-onion` but with
/// `ServerConfig::gc_batch` and the accept backlog settable. Stops on SIGTERM.
pub(crate) async fn run(a: LibServeArgs) -> Result<()> {
    use std::io::Write;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let params = StoreParams {
        ttl_secs: a.ttl.as_secs(),
        ..Default::default()
    };
    let store = DiskStore::open(
        &a.data,
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        FillerSecret::from_bytes(rand::random()),
    )?;
    let config = ServerConfig {
        max_connections: 4096,
        rate_per_sec: 1_000_000,
        rate_burst: 2_000_000,
        gc_interval: a.gc_interval,
        gc_batch: a.gc_batch,
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(SystemClock))?;
    let listener = rdv::server::tcp::bind("127.0.0.1:0", a.backlog as usize).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let tcp = tokio::spawn(server.clone().run_tcp(listener));
    let gc = tokio::spawn(server.clone().run_gc());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    server.shutdown();
    server.drain().await;
    tcp.abort();
    gc.abort();
    Ok(())
}
