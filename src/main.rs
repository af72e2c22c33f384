//! The `rdv` command line: a thin layer over the library.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use rdv::client::direct::DirectConnector;
use rdv::client::tor::TorConnector;
use rdv::client::{generate_passphrase, Client, ClientConfig, Connector};
use rdv::clock::SystemClock;
use rdv::proto::{ClientPolicy, DeleteToken, KdfProfile, Passphrase, RdvLink, ServerAddr};
use rdv::server::{Server, ServerConfig};
use rdv::store::{DiskStore, DiskStoreConfig, StoreParams};
use rdv::tor::{self, TorSettings};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod demo;

/// Default port of an rdv server (TCP and onion virtual port).
const DEFAULT_PORT: u16 = 7625;

#[derive(Parser)]
#[command(
    name = "rdv",
    version,
    about = "Private rendezvous over Tor: hand someone a connection link without revealing where it leads",
    long_about = "rdv stores a fixed-size encrypted connection link in a shared bucket on a rendezvous \
server reached over Tor. The initiator (`rdv offer`) gets back an rdv1: link and a passphrase to hand \
over, in one or two channels; the accepter (`rdv accept`) fetches the bucket and trial-decrypts it. \
The server never sees client IPs, cannot open links, and cannot guess passphrases offline.\n\n\
Try `rdv demo` for a complete run on loopback."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a rendezvous server: an arti onion service by default, and/or plain TCP listeners.
    Serve(ServeArgs),
    /// Seal a payload, store it on a server, and print the link (and passphrase) to hand over.
    Offer(OfferArgs),
    /// Fetch the bucket a link points to and open the payload with the passphrase.
    Accept(AcceptArgs),
    /// Delete a link you offered, with the deletion token `rdv offer` printed.
    Delete(DeleteArgs),
    /// Show a server's advertised parameters.
    Info(InfoArgs),
    /// Run a complete rendezvous on loopback: server, other initiators, offer, accept.
    Demo,
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory: the database and the onion service's keys (the address stays stable).
    #[arg(long)]
    data: PathBuf,
    /// Also listen on this TCP address (repeatable). For C tor's HiddenServicePort and tests.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Do not publish the arti onion service (then at least one --listen is needed).
    #[arg(long)]
    no_onion: bool,
    /// Virtual port of the onion service.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    onion_port: u16,
    /// Nickname of the onion service in arti's keystore.
    #[arg(long, default_value = "rdv")]
    nickname: String,
    /// arti TOML configuration (e.g. a private Tor network's); default: the public Tor network.
    #[arg(long, value_name = "FILE")]
    tor_config: Option<PathBuf>,
    /// How long a bucket accepts new links (e.g. 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    open_window: Duration,
    /// How long buckets are kept (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Most links stored at once; further stores are refused until buckets expire.
    #[arg(long)]
    max_links: Option<u64>,
    /// Connections served at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Close connections idle this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Requests per second allowed on one connection (burst: twice that).
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// How often expired buckets are garbage-collected.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// Expired buckets removed per GC transaction; stores wait at most one such transaction.
    #[arg(long, default_value_t = 1000)]
    gc_batch: usize,
    /// Commit every store separately instead of grouping commits (benchmark comparison only).
    #[arg(long)]
    commit_per_store: bool,
    /// Give up if Tor has not bootstrapped after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    bootstrap_timeout: Duration,
}

#[derive(Args, Clone)]
struct TransportArgs {
    /// Connect over plain TCP, BYPASSING TOR: the server sees your IP. Local testing only. Without
    /// a value, to the server named in the link (or on the command line).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "")]
    direct: Option<String>,
    /// arti TOML configuration (e.g. a private Tor network's); default: the public Tor network.
    #[arg(long, value_name = "FILE")]
    tor_config: Option<PathBuf>,
    /// arti state and cache directory [default: ~/.local/share/rdv/arti]. Concurrent clients need different ones.
    #[arg(long, value_name = "DIR")]
    tor_dir: Option<PathBuf>,
    /// Timeout for Tor bootstrap.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    bootstrap_timeout: Duration,
    /// Timeout for reaching the server (descriptor lookup, circuits, connect).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

#[derive(Args)]
struct OfferArgs {
    /// The rendezvous server, HOST:PORT (an .onion address normally).
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// The payload (your connection link). Default: read from --payload-file or standard input.
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// Passphrase; default: a generated one of five words (80 bits). Also read from RDV_PASSPHRASE,
    /// which keeps it out of the process list.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    /// Two-channel mode: print the link without the passphrase, and the passphrase separately.
    #[arg(long)]
    two_channel: bool,
    /// KDF profile: default (64 MiB, t=3, p=4), moderate, test (weak, tests only), or argon2id:m=KIB,t=T,p=P.
    #[arg(long, default_value = "default")]
    kdf: String,
    /// Refuse bucket IDs with a higher sequence number.
    #[arg(long, default_value_t = ClientPolicy::default().max_seq)]
    max_seq: u16,
    /// Tolerated clock difference with the server.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    max_skew: Duration,
    /// Longest open window accepted from a server.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    max_window: Duration,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Args)]
struct AcceptArgs {
    /// The rdv1: link.
    link: String,
    /// Passphrase, if the link has none (two-channel mode). Also read from RDV_PASSPHRASE or asked
    /// for on a terminal, which keep it out of the process list.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Args)]
struct DeleteArgs {
    /// The rdv1: link.
    link: String,
    /// The deletion token printed by `rdv offer`.
    #[arg(long)]
    token: String,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Args)]
struct InfoArgs {
    /// The server, HOST:PORT.
    server: String,
    #[command(flatten)]
    transport: TransportArgs,
}

fn main() -> std::process::ExitCode {
    tor::install_crypto_provider();
    init_logging();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve(a).await,
            Cmd::Offer(a) => offer(a).await,
            Cmd::Accept(a) => accept(a).await,
            Cmd::Delete(a) => delete(a).await,
            Cmd::Info(a) => info(a).await,
            Cmd::Demo => demo::run().await,
        }
    });
    // arti keeps background tasks; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,arti_client=warn,tor_=warn,tor_guardmgr=error,tor_relay_selection=error,tor_circmgr=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

async fn serve(a: ServeArgs) -> Result<()> {
    if a.no_onion && a.listen.is_empty() {
        bail!("--no-onion needs at least one --listen ADDR:PORT, or the server would not be reachable at all");
    }
    let params = StoreParams {
        open_window_secs: a.open_window.as_secs().max(1),
        ttl_secs: a.ttl.as_secs().max(1),
        max_links: a.max_links,
    };
    if params.open_window_secs > params.ttl_secs {
        bail!(
            "--open-window ({:?}) must not be longer than --ttl ({:?})",
            a.open_window,
            a.ttl
        );
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let store_config = DiskStoreConfig {
        params,
        commit_per_store: a.commit_per_store,
        ..Default::default()
    };
    let store = DiskStore::open(&a.data, store_config, seed)
        .with_context(|| format!("opening the store in {}", a.data.display()))?;
    let config = ServerConfig {
        max_connections: a.max_connections.max(1),
        idle_timeout: a.idle_timeout,
        rate_per_sec: a.rate.max(1),
        rate_burst: a.rate.max(1) * 2,
        gc_interval: a.gc_interval.max(Duration::from_secs(1)),
        gc_batch: a.gc_batch.max(1),
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(SystemClock));
    tracing::info!(
        links = rdv::store::BucketStore::link_count(server.store()),
        "store opened"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for addr in &a.listen {
        let listener = rdv::server::tcp::bind(addr, a.max_connections)
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

async fn wait_for_signal() {
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

fn progress_printer(what: &'static str) -> impl Fn(f32, &str) + Send + 'static {
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(String::new());
    move |frac, desc| {
        // arti's description already starts with the percentage.
        let line = format!("{what}: {desc}");
        let Ok(mut last) = last.lock() else { return };
        if *last == line {
            return;
        }
        if tty {
            eprint!("\r{line:<100.100}");
            if frac >= 1.0 {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
        *last = line;
    }
}

/// Build a client for `server` according to the transport flags.
async fn make_client(
    t: &TransportArgs,
    server: &ServerAddr,
    policy: ClientPolicy,
) -> Result<Client> {
    let connector: Arc<dyn Connector> = match &t.direct {
        Some(target) => {
            let target = if target.is_empty() {
                server.to_string()
            } else {
                target.clone()
            };
            eprintln!("WARNING: --direct bypasses Tor: the server at {target} sees your IP address. Use it for local testing only.");
            Arc::new(DirectConnector::to(target))
        }
        None => {
            let dir = match &t.tor_dir {
                Some(d) => d.clone(),
                None => default_tor_dir()?,
            };
            let settings = TorSettings {
                config_file: t.tor_config.clone(),
                state_dir: dir.join("state"),
                cache_dir: dir.join("cache"),
                bootstrap_timeout: t.bootstrap_timeout,
            };
            if !server.is_onion() {
                eprintln!(
                    "note: {} is not an onion address; connecting through a Tor exit",
                    server.host
                );
            }
            let tor = tor::bootstrap(&settings, progress_printer("Tor bootstrap")).await?;
            Arc::new(TorConnector::new(tor))
        }
    };
    let config = ClientConfig {
        policy,
        connect_timeout: t.connect_timeout,
        ..Default::default()
    };
    Ok(Client::new(connector, config, Arc::new(SystemClock)))
}

fn default_tor_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("rdv").join("arti"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("neither HOME nor XDG_DATA_HOME is set: pass --tor-dir"))?;
    Ok(PathBuf::from(home)
        .join(".local")
        .join("share")
        .join("rdv")
        .join("arti"))
}

fn read_payload(a: &OfferArgs) -> Result<Vec<u8>> {
    let mut p = if let Some(p) = &a.payload {
        p.as_bytes().to_vec()
    } else if let Some(f) = &a.payload_file {
        std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
    } else {
        if std::io::stdin().is_terminal() {
            eprintln!("Type or paste the payload (your connection link), then press Ctrl-D:");
        }
        let mut v = Vec::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_end(&mut v)
            .context("reading the payload from standard input")?;
        v
    };
    while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        p.pop();
    }
    if p.is_empty() {
        bail!("the payload is empty: give it with --payload, --payload-file or on standard input");
    }
    Ok(p)
}

async fn offer(a: OfferArgs) -> Result<()> {
    let server_text = a
        .server
        .clone()
        .or_else(|| a.transport.direct.clone().filter(|d| !d.is_empty()))
        .ok_or_else(|| {
            anyhow!(
                "give the server with --server HOST:PORT (or --direct HOST:PORT for local tests)"
            )
        })?;
    let server =
        ServerAddr::parse(&server_text).with_context(|| format!("--server {server_text:?}"))?;
    let kdf = KdfProfile::parse(&a.kdf)?;
    if kdf == KdfProfile::Test {
        eprintln!("WARNING: the 'test' KDF profile makes passphrase guessing cheap; use it for tests only.");
    }
    let payload = read_payload(&a)?;
    let passphrase = match &a.passphrase {
        Some(p) if p.is_empty() => bail!("the passphrase is empty"),
        Some(p) => {
            let p = Passphrase::new(p.clone());
            if p.estimated_bits() < 50.0 {
                eprintln!("WARNING: this passphrase looks weak (about {:.0} bits); whoever sees the link can guess it offline. Omit --passphrase to get a generated one.", p.estimated_bits());
            }
            p
        }
        None => generate_passphrase(),
    };
    let policy = ClientPolicy {
        max_skew_secs: a.max_skew.as_secs(),
        max_open_window_secs: a.max_window.as_secs(),
        max_seq: a.max_seq,
    };
    let client = make_client(&a.transport, &server, policy).await?;
    let offer = client.offer(&server, &payload, passphrase, kdf).await?;
    // The bucket ID is not printed: its hash is the locator.
    eprintln!(
        "stored; the bucket passed the anti-fingerprinting check (fresh, sequence number {} <= {})",
        offer.bucket.seq, a.max_seq
    );
    let token = URL_SAFE_NO_PAD.encode(offer.delete_token.0);
    let mut out = std::io::stdout().lock();
    if a.two_channel {
        let pass = offer
            .link
            .passphrase
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        writeln!(out, "link: {}", &*offer.link.without_passphrase().to_uri())?;
        writeln!(out, "passphrase: {pass}")?;
        eprintln!("Send the link and the passphrase through two different channels.");
    } else {
        writeln!(out, "link: {}", &*offer.link.to_uri())?;
        eprintln!("The link contains the passphrase: whoever sees it can open it. Use --two-channel to split them.");
    }
    writeln!(out, "delete-token: {token}")?;
    eprintln!("Keep the delete token to remove the link later: rdv delete LINK --token TOKEN");
    Ok(())
}

fn read_passphrase_interactive() -> Result<Option<Passphrase>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("Passphrase: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    Ok((!p.is_empty()).then(|| Passphrase::new(p)))
}

async fn accept(a: AcceptArgs) -> Result<()> {
    let link = RdvLink::parse(a.link.trim()).context("invalid link")?;
    let passphrase = match (&link.passphrase, &a.passphrase) {
        (Some(_), Some(_)) => {
            eprintln!("note: the link carries its own passphrase; --passphrase is ignored");
            None
        }
        (Some(_), None) => None,
        (None, Some(p)) => Some(Passphrase::new(p.clone())),
        (None, None) => read_passphrase_interactive()?,
    };
    if link.passphrase.is_none() && passphrase.is_none() {
        bail!("this link carries no passphrase (two-channel mode): give it with --passphrase or RDV_PASSPHRASE");
    }
    let client = make_client(&a.transport, &link.server, ClientPolicy::default()).await?;
    let found = client.accept(&link, passphrase).await?;
    eprintln!(
        "opened link {} of {} in the bucket",
        found.index + 1,
        found.tried
    );
    let mut out = std::io::stdout().lock();
    out.write_all(&found.payload)?;
    out.write_all(b"\n")?;
    Ok(())
}

async fn delete(a: DeleteArgs) -> Result<()> {
    let link = RdvLink::parse(a.link.trim()).context("invalid link")?;
    let raw = URL_SAFE_NO_PAD
        .decode(a.token.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| {
            anyhow!("--token must be the 43-character delete token printed by rdv offer")
        })?;
    let client = make_client(&a.transport, &link.server, ClientPolicy::default()).await?;
    client.delete(&link, &DeleteToken(raw)).await?;
    println!("deleted");
    Ok(())
}

async fn info(a: InfoArgs) -> Result<()> {
    let server = ServerAddr::parse(&a.server).with_context(|| format!("server {:?}", a.server))?;
    let client = make_client(&a.transport, &server, ClientPolicy::default()).await?;
    let i = client.info(&server).await?;
    println!("protocol version: {}", i.version);
    println!("links per bucket: {}", i.max_links_per_bucket);
    println!(
        "open window: {}",
        humantime::format_duration(Duration::from_secs(i.open_window_secs))
    );
    println!(
        "ttl: {}",
        humantime::format_duration(Duration::from_secs(i.ttl_secs))
    );
    println!("server time: {}", i.server_time);
    Ok(())
}
