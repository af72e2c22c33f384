//! `rdv serve`: flags → library settings (checked by the library), the store, the listeners and
//! the onion service.

mod check;

use crate::cli::ServeArgs;
use crate::config::Origins;
use crate::error::CliError;
use crate::store::StoreChoice;
use crate::term::progress_printer;
use anyhow::{bail, Context, Result};
use rdv::client::tor::TorConnector;
use rdv::client::{Client, ClientConfig};
use rdv::clock::Clock;
use rdv::clock::SystemClock;
use rdv::proto::padding::FillerSecret;
use rdv::proto::ServerAddr;
use rdv::server::health::{Health, HealthEvent, HealthPolicy};
use rdv::server::onion::OnionSettings;
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, DiskStore, PgStore, StoreParams};
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
pub(crate) fn settings(a: &ServeArgs) -> Result<(StoreChoice, ServerConfig), ConfigError> {
    let params = StoreParams {
        open_window_secs: whole_secs("open_window", a.open_window)?,
        ttl_secs: whole_secs("ttl", a.ttl)?,
        max_links: a.max_links,
        max_seq: a.max_seq,
        unstamped_share: a.unstamped_share,
        answer_share: a.answer_share,
    };
    let store = crate::store::choose(a, params)?;
    let server = ServerConfig {
        max_connections: a.max_connections,
        waiting_room: a.waiting_room,
        idle_timeout: a.idle_timeout,
        rate_per_sec: a.rate,
        rate_burst: a.rate.saturating_mul(2),
        gc_interval: a.gc_interval,
        gc_batch: a.gc_batch,
        stamp_effort: a.stamp_effort,
        require_stamps: a.require_stamps,
        trust_clock: a.trust_clock,
        metrics_batch: a.metrics_batch,
        adversary_stamp_budget: a.adversary_stamp_budget,
        ..Default::default()
    };
    server.validate()?;
    Ok((store, server))
}

/// Bytes of disk a stored link is counted as for the default quota (a link takes about 600 on
/// disk; the rest is room for the database's own overhead and growth).
const QUOTA_BYTES_PER_LINK: u64 = 1024;

/// The default storage quota: half of the space the store can use under `dir` (the free space
/// plus what the data directory's files take already), at [`QUOTA_BYTES_PER_LINK`] per link, so
/// that anonymous clients cannot fill the disk. Counting the store's own files keeps a restart on
/// a full disk from deriving a quota of almost nothing; the server derives it again every
/// garbage-collection interval, so that it follows the disk as space comes and goes.
pub(crate) fn default_quota(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(dir).ok()?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let own: u64 = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        Some((free.saturating_add(own) / 2 / QUOTA_BYTES_PER_LINK).max(1))
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
        let Some(limit) = raise_file_limit() else {
            return;
        };
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

/// Raise the open-files soft limit to the hard one (the usual soft limit of 1024 is below what
/// a server's connections, or an agent's requests in flight, need); the limit then, `None` if
/// unlimited.
pub(crate) fn raise_file_limit() -> Option<usize> {
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
        let limit = getrlimit(Resource::Nofile).current?;
        Some(usize::try_from(limit).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    None
}

/// The onion service and health settings the flags ask for.
pub(crate) fn onion_settings(a: &ServeArgs) -> Result<(OnionSettings, HealthPolicy), ConfigError> {
    let onion = OnionSettings {
        nickname: a.nickname.clone(),
        port: a.onion_port,
        max_streams_per_circuit: a.max_streams_per_circuit,
        intro_rate: (a.intro_rate > 0).then_some((a.intro_rate, a.intro_burst)),
        intro_points: a.intro_points,
        max_rendezvous_in_flight: a.max_rendezvous,
        pow: a.pow,
        authorized_clients: a.authorized_clients.iter().cloned().collect(),
    };
    onion.validate()?;
    let health = HealthPolicy {
        probe_interval: a.probe_interval,
        warn_after: a.warn_unreachable_after,
        exit_after: a.exit_when_unreachable,
        ..Default::default()
    };
    health.validate()?;
    Ok((onion, health))
}

/// A settings error, named as the user wrote the setting: its flag, or its key in the file.
fn setting_error(e: ConfigError, origins: &Origins) -> anyhow::Error {
    // The library's names where the flag is spelled differently.
    let id = match e.key {
        "max_rendezvous_in_flight" => "max_rendezvous",
        "rate_burst" => "rate",
        "bucket_capacity" => "adversary",
        k => k,
    };
    anyhow::Error::new(CliError::new(
        "invalid_setting",
        rdv::client::ErrorKind::BadInput,
        format!("{}: {}", origins.name(id), e.reason),
    ))
}

/// Run the server until SIGINT or SIGTERM (or, with `--exit-when-unreachable`, until its onion
/// service has been unreachable too long).
pub(crate) async fn run(a: ServeArgs, origins: Origins) -> Result<()> {
    crate::store::refuse_password_in_argv(&a, &origins)?;
    let warn = || {
        for w in check::refused_by_default_clients(&a, &origins) {
            eprintln!("WARNING: {w}");
        }
    };
    if a.check_config || a.print_config {
        // Every problem at once, each named by its flag or by file and key; nothing starts.
        check::refuse_problems(&a, &origins).await?;
        warn();
        if a.print_config {
            print!("{}", crate::config::effective_text(&a)?);
        } else {
            println!(
                "the settings are fine{}",
                origins
                    .file()
                    .map(|f| format!(" ({} and the command line)", f.display()))
                    .unwrap_or_default()
            );
        }
        return Ok(());
    }
    let (mut store_config, mut config) = settings(&a).map_err(|e| setting_error(e, &origins))?;
    let (mut onion, health) = onion_settings(&a).map_err(|e| setting_error(e, &origins))?;
    warn();
    if let Some(mode) = a.adversary {
        if !a.testing_only {
            bail!("--adversary {mode} makes the server attack its clients; it runs only with --testing-only as well, and never for real users");
        }
        eprintln!("WARNING: ADVERSARIAL SERVER ({mode}): this server misbehaves on purpose to test clients. Never use it for real rendezvous.");
        config.adversary = Some(mode);
        store_config.set_bucket_capacity(mode.bucket_capacity(a.adversary_stamp_budget));
    }

    let Some(data) = a.data.clone() else {
        bail!("give the data directory with --data DIR or `data = \"DIR\"` in the --config file");
    };
    // Usage errors first: a command that is refused leaves no directory behind.
    if a.no_onion && a.listen.is_empty() {
        bail!("--no-onion (onion.enabled = false) needs at least one --listen ADDR:PORT, or the server would not be reachable at all");
    }
    if a.no_onion && a.authorized_clients.is_some() {
        bail!("--authorized-clients restricts the onion service, and the onion service is off (--no-onion)");
    }
    // Addresses too: found after the database was opened and "listening on" printed, a bad
    // one stopped a server a supervisor had seen start (a helper's review).
    for addr in &a.listen {
        check::listen_address(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{} {addr:?}: {e}", origins.name("listen")))?;
    }
    if let Some(m) = &a.metrics {
        metrics_address(m, a.metrics_allow_remote, &origins)?;
    }
    if let (false, Some(dir)) = (a.no_onion, &a.authorized_clients) {
        // Before Tor starts: a server meant to be private never runs open by mistake, and a
        // malformed key file is an error, not a client silently locked out.
        let clients = rdv::tor::auth::check_authorized_clients(dir)
            .with_context(|| origins.name("authorized_clients"))?;
        if clients.is_empty() {
            eprintln!(
                "WARNING: {} holds no client key yet: nobody can reach the service (its own health probe aside) until NAME.auth files are added there (from rdv keygen) and the server restarts",
                dir.display()
            );
        }
    }
    // Before anything is written there: rdv makes it 0700, so it must be rdv's own.
    rdv::store::db::claim_private_dir(&data).with_context(|| origins.name("data"))?;
    // A restricted service answers only authorized clients, its own health probe included:
    // the probe gets a key of its own, fresh at every start.
    let probe_key = match (a.no_onion, &a.authorized_clients) {
        (false, Some(_)) => {
            let mut random = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
            let key = rdv::tor::auth::ProbeKey::create(&data.join("health-probe"), random)
                .context("creating the health probe's client key")?;
            zeroize::Zeroize::zeroize(&mut random);
            onion.authorized_clients.push(key.authorized_dir());
            Some(key)
        }
        _ => None,
    };
    let tor_settings = tor_settings(&a, &data, probe_key.as_ref().map(|k| k.client_dir()));
    if !a.no_onion {
        // A broken Tor configuration stops the server before anything starts: it never runs
        // without the onion service it was asked for.
        tor::load_config(&tor_settings)?;
    }
    fit_file_limit(&mut config);
    let run = Prepared {
        a,
        origins,
        config,
        tor_settings,
        onion,
        health,
        probe_key,
    };
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let filler = FillerSecret::from_bytes(seed);
    zeroize::Zeroize::zeroize(&mut seed);
    match store_config {
        StoreChoice::Redb(mut c) => {
            let derived = c.params.max_links.is_none();
            if derived {
                std::fs::create_dir_all(&data)
                    .with_context(|| format!("creating the data directory {}", data.display()))?;
                c.params.max_links = default_quota(&data);
            }
            let store = DiskStore::open(&data, c, filler)
                .with_context(|| format!("opening the store in {}", data.display()))?;
            if derived {
                // Derived from the disk, derived again as the disk changes (never frozen at the
                // moment of a start on a full disk).
                let (store, data, every) = (store.clone(), data.clone(), run.config.gc_interval);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let q = default_quota(&data);
                        let old = store.quota();
                        if q != old {
                            // Logged when it moves by a tenth or more (a disk filling up or
                            // freed), not at every small change of the free space.
                            let (a, b) = (q.unwrap_or(u64::MAX), old.unwrap_or(u64::MAX));
                            if a.abs_diff(b) >= b / 10 {
                                tracing::info!(
                                    links = q,
                                    "storage quota derived again from the free disk space"
                                );
                            } else {
                                tracing::debug!(links = q, "storage quota derived again");
                            }
                            store.set_quota(q);
                        }
                    }
                });
            }
            let place = format!("redb in {}", data.display());
            run.serve(store, place).await
        }
        StoreChoice::Postgres(mut c) => {
            if c.params.max_links.is_none() {
                c.params.max_links = Some(crate::store::PG_DEFAULT_QUOTA);
            }
            let place = c.describe();
            let store = PgStore::open(*c, filler)
                .await
                .map_err(|e| match e {
                    rdv::store::StoreError::Config(c) => setting_error(c, &run.origins),
                    e => anyhow::Error::new(e),
                })
                .context("opening the PostgreSQL store")?;
            run.serve(store, place).await
        }
    }
}

/// Everything `serve` needs once its settings are checked, but the store.
struct Prepared {
    a: ServeArgs,
    origins: Origins,
    config: ServerConfig,
    tor_settings: TorSettings,
    onion: OnionSettings,
    health: HealthPolicy,
    probe_key: Option<rdv::tor::auth::ProbeKey>,
}

impl Prepared {
    /// Serve over `store` (`place` says where it is, for the summary) until a signal.
    async fn serve<S: BucketStore>(self, store: S, place: String) -> Result<()> {
        let Prepared {
            a,
            origins,
            config,
            tor_settings,
            onion,
            health,
            probe_key,
        } = self;
        let summary = summary(
            &a,
            &config,
            store.params(),
            (store.link_count(), store.mark_count()),
            &place,
        );
        let server =
            Server::new(store, config, Arc::new(SystemClock)).map_err(crate::error::flag)?;
        println!("{summary}");
        // Listening for SIGINT/SIGTERM before anything is announced: a supervisor that stops the
        // server right after "listening on" gets the graceful shutdown.
        let mut signalled = signal_listener();
        let mut tasks = tokio::task::JoinSet::new();
        for addr in &a.listen {
            let listener = rdv::server::tcp::bind(addr, a.max_connections.max(1024))
                .await
                .with_context(|| {
                    format!("{} {addr:?}: cannot listen there", origins.name("listen"))
                })?;
            let local = listener.local_addr()?;
            println!("listening on {local}");
            tasks.spawn(server.clone().run_tcp(listener));
        }
        if let Some(addr) = &a.metrics {
            let listener = bind_metrics(addr, a.metrics_allow_remote, &origins).await?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            tasks.spawn(server.clone().run_metrics(listener));
        }
        let _ = std::io::stdout().flush();
        tasks.spawn(server.clone().run_gc());
        let (give_up_tx, mut give_up) = tokio::sync::mpsc::channel::<String>(1);
        if !a.no_onion {
            tokio::select! {
                r = start_onion(tor_settings, onion, health, probe_key, server.clone(), give_up_tx) => r?,
                _ = &mut signalled => return Ok(()),
            }
        }
        let reason = tokio::select! {
            _ = &mut signalled => None,
            r = give_up.recv() => r,
        };
        eprintln!("shutting down: no new connections, finishing open ones");
        server.shutdown();
        server.drain().await;
        tasks.abort_all();
        match reason {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }
}

/// Bootstrap Tor, launch the onion service and serve it (on spawned tasks), with its health probe.
async fn start_onion<S: BucketStore>(
    settings: TorSettings,
    onion: OnionSettings,
    health: HealthPolicy,
    probe_key: Option<rdv::tor::auth::ProbeKey>,
    server: Arc<Server<S>>,
    give_up: tokio::sync::mpsc::Sender<String>,
) -> Result<()> {
    let tor = tor::bootstrap(&settings, progress_printer("Tor bootstrap")).await?;
    let listener = rdv::server::onion::launch(&tor, &onion)?;
    if let Some(key) = &probe_key {
        key.activate(&listener.address)
            .context("installing the health probe's client key")?;
    }
    let address = format!("{}:{}", listener.address, listener.onion_port());
    println!("onion address: {address}");
    let _ = std::io::stdout().flush();
    // The status logger ends with the service.
    drop(listener.spawn_status_logger());
    let state = listener.state_reader();
    tokio::spawn(listener.run(server));
    tokio::spawn(probe(tor, address, health, state, give_up));
    Ok(())
}

/// The health probe: connect to our own onion service through a circuit of its own, as a client
/// would, and report what [`Health`] makes of it. The first success is printed on standard
/// output (`onion service reachable: …`); losses and recoveries are logged with arti's view of
/// the service; a long outage is a warning and, with `--exit-when-unreachable`, the end.
async fn probe(
    tor: tor::Tor,
    address: String,
    policy: HealthPolicy,
    state: impl Fn() -> &'static str,
    give_up: tokio::sync::mpsc::Sender<String>,
) {
    let Ok(addr) = ServerAddr::parse(&address) else {
        return;
    };
    let budget = policy.probe_budget();
    let mut connector = TorConnector::new(tor);
    connector.budget = budget;
    connector.attempt_timeout = connector.attempt_timeout.min(budget);
    let client = Client::new(
        Arc::new(connector),
        ClientConfig {
            connect_timeout: budget + Duration::from_secs(10),
            request_timeout: budget.min(Duration::from_secs(30)),
            retry_budget: Duration::ZERO,
            ..Default::default()
        },
        Arc::new(SystemClock),
    );
    let clock = SystemClock;
    let mut health = Health::new(policy, clock.elapsed());
    loop {
        let started = clock.elapsed();
        let probe = async {
            let result = client.info(&addr).await;
            if let Err(e) = &result {
                tracing::debug!(error = %rdv::config::report(e), "onion health probe failed");
            }
            result.is_ok()
        };
        // While unreachable, a warning or the exit comes when it is due, not when a probe
        // that hangs ends.
        let events = match health.due_in(started) {
            Some(due) => tokio::select! {
                ok = probe => health.observe(ok, started, clock.elapsed()),
                () = tokio::time::sleep(due) => health.tick(clock.elapsed()),
            },
            None => {
                let ok = probe.await;
                health.observe(ok, started, clock.elapsed())
            }
        };
        for event in events {
            let fmt = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
            match event {
                HealthEvent::FirstReachable(after) => {
                    println!(
                        "onion service reachable: {address} (after {:.1} s)",
                        after.as_secs_f64()
                    );
                    let _ = std::io::stdout().flush();
                }
                HealthEvent::Lost => tracing::info!(
                    service_state = state(),
                    "onion service not reachable through Tor any more"
                ),
                HealthEvent::Recovered(after) => tracing::info!(
                    service_state = state(),
                    down = %fmt(after),
                    "onion service reachable again"
                ),
                HealthEvent::StillUnreachable(down) => tracing::warn!(
                    service_state = state(),
                    down = %fmt(down),
                    "the onion service is NOT reachable through Tor"
                ),
                HealthEvent::GiveUp(down) => {
                    let _ = give_up
                        .send(format!(
                            "the onion service was unreachable for {} (--exit-when-unreachable)",
                            fmt(down)
                        ))
                        .await;
                    return;
                }
            }
        }
        tokio::time::sleep(health.next_probe_in()).await;
    }
}

/// A future that resolves on SIGINT or SIGTERM, listening from the moment it is made (not
/// from its first poll), so that a signal right after a message announcing it is not missed.
pub(crate) fn signal_listener() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
        }
    }
    Box::pin(wait_for_signal())
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

/// What the server runs with, in a few lines for the start (no secrets: the settings and counts
/// only).
fn summary(
    a: &ServeArgs,
    c: &ServerConfig,
    p: StoreParams,
    (links, marks): (u64, u64),
    place: &str,
) -> String {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let quota = p
        .max_links
        .map_or("unlimited".to_string(), |m| m.to_string());
    // Marks hold places too: without them, "0 links stored" and stores refused for the quota.
    let held = if marks > 0 {
        format!(" and {marks} places held by deleted links' marks until their buckets expire")
    } else {
        String::new()
    };
    let mut s = format!(
        "settings: store {place}: buckets open {}, kept {}; {links} links stored{held}, quota {quota} links\n\
         settings: {} connections (waiting room {}), idle timeout {}, {} requests/s per connection\n\
         settings: stamps of effort {}, {}\n\
         settings: of the quota, links without a stamp may fill {}%, answers {}%",
        d(Duration::from_secs(p.open_window_secs)),
        d(Duration::from_secs(p.ttl_secs)),
        c.max_connections,
        c.waiting_room,
        d(c.idle_timeout),
        c.rate_per_sec,
        c.stamp_effort,
        if c.require_stamps { "required (links without one are refused)" } else { "optional (links without one are stored, and count for nobody)" },
        p.unstamped_share,
        p.answer_share,
    );
    if a.no_onion {
        s.push_str("\nsettings: no onion service (TCP listeners only)");
    } else {
        let intro = if a.intro_rate > 0 {
            format!("{}/s burst {}", a.intro_rate, a.intro_burst)
        } else {
            "network default".into()
        };
        s.push_str(&format!(
            "\nsettings: onion port {}, {} streams per circuit, introductions {intro}, {} introduction points, {} rendezvous at once, vanguards {}, proof-of-work {}, discovery {}",
            a.onion_port,
            a.max_streams_per_circuit,
            a.intro_points,
            a.max_rendezvous,
            a.vanguards.as_str(),
            if a.pow { "on" } else { "off" },
            if a.authorized_clients.is_some() { "restricted to authorized clients" } else { "open" },
        ));
        s.push_str(&format!(
            "\nsettings: health probe every {}, warning after {} unreachable, {}",
            d(a.probe_interval),
            d(a.warn_unreachable_after),
            match a.exit_when_unreachable {
                Some(x) => format!("exit after {} unreachable", d(x)),
                None => "never exits for being unreachable".into(),
            }
        ));
    }
    s
}

/// Bind the metrics listener: an IP address and port, loopback unless allowed otherwise.
async fn bind_metrics(
    addr: &str,
    allow_remote: bool,
    origins: &Origins,
) -> Result<tokio::net::TcpListener> {
    let sa = metrics_address(addr, allow_remote, origins)?;
    tokio::net::TcpListener::bind(sa)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))
}

/// arti's settings for the server: its state and cache under `DATA/arti`.
fn tor_settings(
    a: &ServeArgs,
    data: &std::path::Path,
    client_auth_dir: Option<std::path::PathBuf>,
) -> TorSettings {
    TorSettings {
        config_file: a.tor_config.clone(),
        state_dir: data.join("arti").join("state"),
        cache_dir: data.join("arti").join("cache"),
        bootstrap_timeout: a.bootstrap_timeout,
        vanguards: a.vanguards,
        client_auth_dir,
    }
}

/// The metrics address, checked: `IP:PORT`, loopback unless remote is allowed.
fn metrics_address(
    addr: &str,
    allow_remote: bool,
    origins: &Origins,
) -> Result<std::net::SocketAddr> {
    let name = origins.name("metrics");
    let sa: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("{name} {addr:?}: expected IP:PORT, e.g. 127.0.0.1:9464"))?;
    if !sa.ip().is_loopback() && !allow_remote {
        bail!("{name} {addr}: not a loopback address; metrics are for the operator (add --metrics-allow-remote, or metrics.allow_remote = true, to serve them there anyway)");
    }
    Ok(sa)
}
