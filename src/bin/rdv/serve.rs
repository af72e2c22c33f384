//! `rdv serve`: flags → library settings (checked by the library), the store, the listeners and
//! the onion service.

use crate::cli::ServeArgs;
use crate::term::progress_printer;
use anyhow::{bail, Context, Result};
use rdv::client::tor::TorConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::SystemClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::ServerAddr;
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig, StoreParams};
use rdv::tor::{self, TorSettings};
use rdv::ConfigError;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// A duration setting in whole seconds; a fraction would be silently cut otherwise.
fn whole_secs(key: &'static str, d: Duration) -> Result<u64, ConfigError> {
    if d.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            key,
            format!(
                "{} is not a whole number of seconds",
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(d.as_secs())
}

/// The store and server settings the flags ask for.
fn settings(a: &ServeArgs) -> Result<(DiskStoreConfig, ServerConfig), ConfigError> {
    let params = StoreParams {
        open_window_secs: whole_secs("open_window", a.open_window)?,
        ttl_secs: whole_secs("ttl", a.ttl)?,
        max_links: a.max_links,
        ..Default::default()
    };
    let store = DiskStoreConfig {
        params,
        commit_per_store: a.commit_per_store,
        ..Default::default()
    };
    store.validate()?;
    let server = ServerConfig {
        max_connections: a.max_connections,
        waiting_room: a.waiting_room,
        idle_timeout: a.idle_timeout,
        rate_per_sec: a.rate,
        rate_burst: a.rate.saturating_mul(2),
        gc_interval: a.gc_interval,
        gc_batch: a.gc_batch,
        ..Default::default()
    };
    server.validate()?;
    Ok((store, server))
}

/// Bytes of disk a stored link is counted as for the default quota (a link takes about 600 on
/// disk; the rest is room for the database's own overhead and growth).
const QUOTA_BYTES_PER_LINK: u64 = 1024;

/// The default storage quota: half of the free space under `dir` at start, at
/// [`QUOTA_BYTES_PER_LINK`] per link, so that anonymous clients cannot fill the disk.
fn default_quota(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(dir).ok()?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        Some((free / 2 / QUOTA_BYTES_PER_LINK).max(1))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// File descriptors kept for everything but connections (database, logs, Tor).
const SPARE_FILES: usize = 256;

/// Raise the open-files limit to what the system allows (every connection, waiting or holding a
/// slot, is a file descriptor, and the usual soft limit of 1024 is below what the defaults need),
/// then shrink the waiting room to fit if even that is not enough.
fn fit_file_limit(config: &mut ServerConfig) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: lim.maximum,
                    maximum: lim.maximum,
                },
            );
        }
        let Some(limit) = getrlimit(Resource::Nofile).current else {
            return;
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let room = limit.saturating_sub(config.max_connections + SPARE_FILES);
        if room < config.waiting_room {
            tracing::warn!(
                limit,
                waiting_room = room.max(1),
                "the open-files limit is low: the waiting room is reduced to fit (raise the limit with ulimit -n or LimitNOFILE=)"
            );
            config.waiting_room = room.max(1);
        }
    }
    #[cfg(not(unix))]
    let _ = config;
}

/// Run the server until SIGINT or SIGTERM.
pub(crate) async fn run(a: ServeArgs) -> Result<()> {
    if a.no_onion && a.listen.is_empty() {
        bail!("--no-onion needs at least one --listen ADDR:PORT, or the server would not be reachable at all");
    }
    let (mut store_config, mut config) = settings(&a).map_err(crate::error::flag)?;
    fit_file_limit(&mut config);
    if store_config.params.max_links.is_none() {
        std::fs::create_dir_all(&a.data)
            .with_context(|| format!("creating the data directory {}", a.data.display()))?;
        store_config.params.max_links = default_quota(&a.data);
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let store = DiskStore::open(&a.data, store_config, FillerSecret::from_bytes(seed))
        .with_context(|| format!("opening the store in {}", a.data.display()))?;
    zeroize::Zeroize::zeroize(&mut seed);
    let server = Server::new(store, config, Arc::new(SystemClock)).map_err(crate::error::flag)?;
    tracing::info!(
        links = server.store().link_count(),
        quota = server.store().params().max_links,
        "store opened"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for addr in &a.listen {
        let listener = rdv::server::tcp::bind(addr, a.max_connections.max(1024))
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        println!("listening on {local}");
        tasks.spawn(server.clone().run_tcp(listener));
    }
    let _ = std::io::stdout().flush();
    tasks.spawn(server.clone().run_gc());
    if !a.no_onion {
        let settings = TorSettings {
            config_file: a.tor_config.clone(),
            state_dir: a.data.join("arti").join("state"),
            cache_dir: a.data.join("arti").join("cache"),
            bootstrap_timeout: a.bootstrap_timeout,
        };
        let onion = start_onion(settings, a.nickname.clone(), a.onion_port, server.clone());
        if a.listen.is_empty() {
            // The onion service is the only way in: failing to start it is fatal.
            tokio::select! {
                r = onion => r?,
                _ = wait_for_signal() => return Ok(()),
            }
        } else {
            // TCP is already being served; keep serving it whatever happens to Tor.
            tasks.spawn(async move {
                if let Err(e) = onion.await {
                    eprintln!("error: the onion service is not running ({e:#}); still serving the TCP listeners");
                }
            });
        }
    }
    wait_for_signal().await;
    eprintln!("shutting down: no new connections, finishing open ones");
    server.shutdown();
    server.drain().await;
    tasks.abort_all();
    Ok(())
}

/// Bootstrap Tor, launch the onion service and serve it (on spawned tasks).
async fn start_onion(
    settings: TorSettings,
    nickname: String,
    port: u16,
    server: Arc<Server<DiskStore>>,
) -> Result<()> {
    let tor = tor::bootstrap(&settings, progress_printer("Tor bootstrap")).await?;
    let listener = rdv::server::onion::launch(&tor, &nickname, port)?;
    let address = format!("{}:{}", listener.address, listener.onion_port());
    println!("onion address: {address}");
    let _ = std::io::stdout().flush();
    // The status logger ends with the service.
    drop(listener.spawn_status_logger());
    tokio::spawn(listener.run(server));
    tokio::spawn(self_check(tor, address));
    Ok(())
}

/// Connect to our own onion service through a separate circuit until it answers, then say so.
async fn self_check(tor: tor::Tor, address: String) {
    let Ok(addr) = ServerAddr::parse(&address) else {
        return;
    };
    let client = Client::new(
        Arc::new(TorConnector::new(tor)),
        ClientConfig {
            connect_timeout: Duration::from_secs(30),
            ..Default::default()
        },
        Arc::new(SystemClock),
    );
    let start = std::time::Instant::now();
    loop {
        match client.info(&addr).await {
            Ok(_) => {
                println!(
                    "onion service reachable: {address} (after {:.1} s)",
                    start.elapsed().as_secs_f64()
                );
                let _ = std::io::stdout().flush();
                return;
            }
            Err(e) => tracing::debug!(error = %e, "onion self-check not yet successful"),
        }
        if start.elapsed() > Duration::from_secs(900) {
            tracing::warn!("the onion service is still not reachable through Tor after 15 minutes");
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
