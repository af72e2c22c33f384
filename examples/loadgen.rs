//! Load generator: concurrent clients against a real `rdv serve` process over loopback TCP.
//!
//! Every operation opens its own TCP connection (over Tor every operation gets its own circuit),
//! sends `Hello`, then one request, exactly like the library client. Every measurement is bounded
//! by `--ops` and `--duration`; the servers it starts are its own child processes (`rdv serve
//! --no-onion --listen 127.0.0.1:0`), stopped with SIGTERM by PID at the end. Key derivation is
//! excluded: a rendezvous uses a random precomputed `LinkKey`, so the numbers are the server's and
//! the protocol's, not Argon2id's (`cargo bench --bench micro` measures the KDF).
//!
//! Subcommands (see `--help` of each):
//! - `load`: store / fetch / rendezvous / mixed load against one server; one table row per mode.
//! - `group-commit`: the same concurrent store load against a default server and a
//!   `--commit-per-store` server, durable stores/s of both and their ratio.
//! - `scale`: bulk-load 10^4 / 10^6 / 10^7 links into data directories (through
//!   `DiskStore::bulk_store`, the same on-disk format), start a server on each, measure fetch
//!   latency of random existing buckets in interleaved rounds, RSS, and restart time after SIGTERM
//!   and after SIGKILL.
//! - `gc`: fetch and store latency while the server garbage-collects millions of expired links,
//!   against the same load on the same data with nothing expired; `--lib-gc-batches` repeats the
//!   GC phase with the library's server at other GC transaction sizes.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/loadgen load --modes store,fetch,rendezvous,mix
//! ```

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdv::clock::{Clock, SystemClock};
use rdv::io::{read_msg, write_msg};
use rdv::proto::seal;
use rdv::proto::wire::DEFAULT_MAX_FRAME;
use rdv::proto::{
    BucketId, DeleteCheck, LinkKey, Locator, Request, Response, SealedLink, MAX_LINKS_PER_BUCKET,
    PROTOCOL_VERSION, SEALED_LINK_LEN,
};
use rdv::server::{Server, ServerConfig};
use rdv::store::{BucketStore, DiskStore, DiskStoreConfig, StoreParams};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One operation may take at most this long; a slower one counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Buckets per second of bucket IDs: the allocator's sequence numbers are 16 bits.
const SEQS_PER_SECOND: u64 = 1 << 16;
/// On-disk bytes per link, roughly (for the free-space check).
const DISK_BYTES_PER_LINK: u64 = 600;

#[derive(Parser)]
#[command(about = "Load generator for `rdv serve` over loopback TCP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Store / fetch / rendezvous / mixed load against one server, one row per mode.
    Load(LoadArgs),
    /// Durable stores/s with group commit against `--commit-per-store`, in one run.
    GroupCommit(GroupCommitArgs),
    /// Fetch latency, RSS and restart time with 10^4 .. 10^7 preloaded links.
    Scale(ScaleArgs),
    /// Fetch and store latency while garbage collection removes millions of expired links.
    Gc(GcArgs),
    /// (Internal) the library's server with settable GC batch and accept backlog, for
    /// `gc --lib-gc-batches` and `load --lib-backlog`.
    #[command(hide = true)]
    LibServe(LibServeArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The rdv binary.
    #[arg(long = "bin", default_value = "target/release/rdv")]
    bin: PathBuf,
    /// Where data directories are created (deleted again at the end).
    #[arg(long, default_value = "/tmp")]
    data_root: PathBuf,
    /// Concurrent clients (tokio tasks), each op on its own connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// At most this many operations per measurement.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// At most this long per measurement.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep the data directories.
    #[arg(long)]
    keep: bool,
    /// Echo the servers' log lines.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Modes to run one after another on the same server: store, fetch, rendezvous, mix.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "store,fetch,rendezvous,mix"
    )]
    modes: Vec<Mode>,
    /// Weights store:fetch:rendezvous of the `mix` mode.
    #[arg(long, default_value = "1:8:1")]
    mix: String,
    /// Links bulk-loaded into the data directory before the server starts (fetch targets).
    #[arg(long, default_value_t = 100_000)]
    preload: u64,
    /// Serve with the library's server (like `rdv serve`) listening with this TCP accept
    /// backlog instead of `rdv serve` (whose tokio listener has mio's fixed 128).
    #[arg(long)]
    lib_backlog: Option<u32>,
}

#[derive(Args)]
struct GroupCommitArgs {
    #[command(flatten)]
    common: Common,
    /// Measurements per server, alternating between the two.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Connection modes to measure: `op` (a new connection per store, as over Tor) and/or
    /// `client` (one long-lived connection per client: storage-bound, no TCP setup per store).
    #[arg(long, value_delimiter = ',', default_value = "op,client")]
    connections: Vec<String>,
}

#[derive(Args)]
struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// Numbers of links to preload, one data directory and server each.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000,10000000")]
    sizes: Vec<u64>,
    /// Measurement rounds; each round measures every size once, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Links per bulk_store call while preloading.
    #[arg(long, default_value_t = 100_000)]
    chunk: usize,
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    common: Common,
    /// Expired links to preload (GC removes them).
    #[arg(long, default_value_t = 2_000_000)]
    links: u64,
    /// Concurrent store clients next to the fetch clients.
    #[arg(long, default_value_t = 4)]
    store_clients: usize,
    /// Links per bulk_store call while preloading.
    #[arg(long, default_value_t = 100_000)]
    chunk: usize,
    /// Also run the GC phase with the library's server at these `ServerConfig::gc_batch` values
    /// (buckets per GC transaction), each on a fresh preload; e.g. `10000,1000`.
    #[arg(long, value_delimiter = ',')]
    lib_gc_batches: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Store,
    Fetch,
    Rendezvous,
    Mix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OpKind {
    Store,
    Fetch,
    Rendezvous,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Store => "store",
            OpKind::Fetch => "fetch",
            OpKind::Rendezvous => "rendezvous",
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Load(a) => load(a).await,
            Cmd::GroupCommit(a) => group_commit(a).await,
            Cmd::Scale(a) => scale(a).await,
            Cmd::Gc(a) => gc(a).await,
            Cmd::LibServe(a) => lib_serve(a).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The server process.

/// CPU time and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct ProcStats {
    cpu_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start with field 3, `state`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // utime is field 14, stime field 15 (1-based): indices 11 and 12 after `state`.
    let cpu_secs = (ticks(11)? + ticks(12)?) / clock_ticks_per_sec();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_secs,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

type LogLines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A `rdv serve` child process on 127.0.0.1.
struct ServerProc {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// From spawn to the `listening on` line.
    startup: Duration,
    spawned: Instant,
    log: LogLines,
}

impl ServerProc {
    /// `rdv serve` on 127.0.0.1 with limits out of the way, plus `extra` options.
    fn spawn(name: &str, bin: &Path, data: &Path, extra: &[&str], verbose: bool) -> Result<Self> {
        ensure!(
            bin.exists(),
            "{} not found: build it with `cargo build --release` or pass --bin",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--no-onion", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--rate", "1000000", "--max-connections", "4096"])
            .args(extra);
        Self::spawn_cmd(name, cmd, verbose)
    }

    /// Any command that prints `listening on ADDR` on standard output once it serves.
    fn spawn_cmd(name: &str, mut cmd: Command, verbose: bool) -> Result<Self> {
        let spawned = Instant::now();
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((Instant::now(), addr.trim().to_string()));
                    }
                }
            }
        });
        let log: LogLines = Arc::default();
        let log2 = log.clone();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[{tag}] {line}");
                }
                if let Ok(mut l) = log2.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
        let mut me = ServerProc {
            name: name.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            startup: Duration::ZERO,
            spawned,
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((at, addr)) => {
                me.startup = at - spawned;
                me.addr = addr.parse().context("parsing the listen address")?;
                Ok(me)
            }
            Err(_) => {
                let lines = me.log_lines();
                bail!(
                    "server {name} did not print `listening on` within {START_TIMEOUT:?}; log:\n{}",
                    lines.join("\n")
                )
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stats(&self) -> ProcStats {
        proc_stats(self.pid()).unwrap_or_default()
    }

    fn log_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    /// When a log line containing `needle` appeared, if it did.
    fn log_time(&self, needle: &str) -> Option<(Instant, String)> {
        self.log
            .lock()
            .ok()?
            .iter()
            .find(|(_, l)| l.contains(needle))
            .cloned()
    }

    /// SIGTERM by PID, wait for the exit (SIGKILL by PID after 20 s). Returns the stop time.
    fn stop(mut self) -> Result<Duration> {
        let t0 = Instant::now();
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        while t0.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait()?.is_some() {
                return Ok(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "server {} did not stop after SIGTERM; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(t0.elapsed())
    }
}

impl ServerProc {
    /// SIGKILL by PID: a crash.
    fn kill_hard(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol operations, each on its own connection.

/// A new connection after the version exchange.
async fn connect_hello(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let hello = Request::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
    };
    write_msg(&mut s, &hello, DEFAULT_MAX_FRAME).await?;
    match read_msg::<Response, _>(&mut s, DEFAULT_MAX_FRAME).await? {
        Response::Hello { .. } => Ok(s),
        r => bail!("unexpected answer to Hello: {}", short(&r)),
    }
}

async fn call(addr: SocketAddr, req: &Request) -> Result<Response> {
    let mut s = connect_hello(addr).await?;
    write_msg(&mut s, req, DEFAULT_MAX_FRAME).await?;
    Ok(read_msg::<Response, _>(&mut s, DEFAULT_MAX_FRAME).await?)
}

fn short(r: &Response) -> String {
    match r {
        Response::Error { code, message } => format!("error {code:?}: {message}"),
        Response::Hello { .. } => "Hello".into(),
        Response::Info(_) => "Info".into(),
        Response::Stored { .. } => "Stored".into(),
        Response::Bucket { .. } => "Bucket".into(),
        Response::Deleted => "Deleted".into(),
    }
}

async fn store(addr: SocketAddr, link: SealedLink, check: DeleteCheck) -> Result<BucketId> {
    match call(
        addr,
        &Request::Store {
            link,
            delete_check: check,
        },
    )
    .await?
    {
        Response::Stored { id } => Ok(id),
        r => bail!("store: {}", short(&r)),
    }
}

async fn fetch(addr: SocketAddr, locator: Locator) -> Result<Vec<SealedLink>> {
    match call(addr, &Request::Fetch { locator }).await? {
        Response::Bucket { links } if links.len() == MAX_LINKS_PER_BUCKET => Ok(links),
        Response::Bucket { links } => bail!("fetch: {} links, not a full bucket", links.len()),
        r => bail!("fetch: {}", short(&r)),
    }
}

fn random_link(rng: &mut StdRng) -> (SealedLink, DeleteCheck) {
    let mut b = [0u8; SEALED_LINK_LEN];
    rng.fill_bytes(&mut b);
    (SealedLink(b), DeleteCheck(rng.gen()))
}

// ---------------------------------------------------------------------------------------------
// The load runner.

/// Which buckets fetches go to.
#[derive(Clone)]
enum Targets {
    /// None (fetch ops are not used).
    None,
    /// The buckets a preload created: IDs `first.created + k / 65536`, seq `k % 65536`.
    Preloaded { first_created: u64, buckets: u64 },
    /// Always this one bucket.
    Fixed(Locator),
}

impl Targets {
    fn pick(&self, rng: &mut StdRng) -> Option<Locator> {
        match self {
            Targets::None => None,
            Targets::Preloaded {
                first_created,
                buckets,
            } => Some(preloaded_id(*first_created, rng.gen_range(0..*buckets)).locator()),
            Targets::Fixed(l) => Some(*l),
        }
    }
}

/// The ID of the `k`-th bucket of a preload into an empty store at a fixed time: the allocator
/// counts seq up within the second and moves on to the next second after seq 65535.
fn preloaded_id(first_created: u64, k: u64) -> BucketId {
    BucketId {
        created: first_created + k / SEQS_PER_SECOND,
        seq: (k % SEQS_PER_SECOND) as u16,
    }
}

#[derive(Clone)]
struct LoadSpec {
    /// Stores reuse one connection per client (isolates the storage engine from TCP setup).
    persistent: bool,
    clients: usize,
    ops: u64,
    duration: Duration,
    /// Weights of store, fetch, rendezvous.
    mix: [u32; 3],
    targets: Targets,
}

struct Sample {
    kind: OpKind,
    end: Instant,
    latency: Duration,
    ok: bool,
}

struct LoadResult {
    samples: Vec<Sample>,
    elapsed: Duration,
    errors: BTreeMap<String, u64>,
}

async fn run_load(addr: SocketAddr, spec: LoadSpec) -> LoadResult {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..spec.clients {
        let (spec, issued) = (spec.clone(), issued.clone());
        set.spawn(client_task(addr, spec, issued, deadline));
    }
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((s, e)) => {
                samples.extend(s);
                for (k, n) in e {
                    *errors.entry(k).or_insert(0) += n;
                }
            }
            Err(e) => *errors.entry(format!("client task: {e}")).or_insert(0) += 1,
        }
    }
    let elapsed = samples
        .iter()
        .map(|s| s.end)
        .max()
        .map_or(Duration::ZERO, |e| e - start);
    LoadResult {
        samples,
        elapsed,
        errors,
    }
}

async fn client_task(
    addr: SocketAddr,
    spec: LoadSpec,
    issued: Arc<AtomicU64>,
    deadline: Instant,
) -> (Vec<Sample>, BTreeMap<String, u64>) {
    let mut rng = StdRng::from_entropy();
    let mut conn: Option<TcpStream> = None;
    let total: u32 = spec.mix.iter().sum();
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < spec.ops {
        let mut r = rng.gen_range(0..total.max(1));
        let kind = if r < spec.mix[0] {
            OpKind::Store
        } else {
            r -= spec.mix[0];
            if r < spec.mix[1] {
                OpKind::Fetch
            } else {
                OpKind::Rendezvous
            }
        };
        let t0 = Instant::now();
        let op = async {
            if spec.persistent && kind == OpKind::Store {
                store_persistent(addr, &mut conn, &mut rng).await
            } else {
                one_op(addr, kind, &spec, &mut rng).await
            }
        };
        let res = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("timed out after {OP_TIMEOUT:?}")),
        };
        let end = Instant::now();
        if let Err(e) = &res {
            let msg: String = format!("{}: {e:#}", kind.name())
                .chars()
                .take(120)
                .collect();
            *errors.entry(msg).or_insert(0) += 1;
        }
        samples.push(Sample {
            kind,
            end,
            latency: end - t0,
            ok: res.is_ok(),
        });
    }
    (samples, errors)
}

/// A store on the client's long-lived connection (opened, with Hello, on first use).
async fn store_persistent(
    addr: SocketAddr,
    conn: &mut Option<TcpStream>,
    rng: &mut StdRng,
) -> Result<()> {
    if conn.is_none() {
        *conn = Some(connect_hello(addr).await?);
    }
    let s = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
    let (link, delete_check) = random_link(rng);
    let r = async {
        write_msg(s, &Request::Store { link, delete_check }, DEFAULT_MAX_FRAME).await?;
        Ok::<_, anyhow::Error>(read_msg::<Response, _>(s, DEFAULT_MAX_FRAME).await?)
    }
    .await;
    match r {
        Ok(Response::Stored { .. }) => Ok(()),
        Ok(r) => bail!("store: {}", short(&r)),
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

async fn one_op(addr: SocketAddr, kind: OpKind, spec: &LoadSpec, rng: &mut StdRng) -> Result<()> {
    match kind {
        OpKind::Store => {
            let (link, check) = random_link(rng);
            store(addr, link, check).await.map(drop)
        }
        OpKind::Fetch => {
            let loc = spec
                .targets
                .pick(rng)
                .ok_or_else(|| anyhow!("no fetch targets"))?;
            fetch(addr, loc).await.map(drop)
        }
        OpKind::Rendezvous => {
            // Initiator: seal and store. Accepter: fetch and trial-decrypt all 64 links. Every
            // rendezvous has its own key (its own salt in real use); the KDF is not run.
            let key = &LinkKey::from_bytes(rng.gen());
            let payload = format!("smp://bench.example/queue/{:016x}", rng.gen::<u64>());
            let link = seal::seal(key, payload.as_bytes(), rng.gen())?;
            let id = store(addr, link, DeleteCheck(rng.gen())).await?;
            let links = fetch(addr, id.locator()).await?;
            match seal::trial_open(key, &links) {
                Some((_, p)) if p[..] == *payload.as_bytes() => Ok(()),
                _ => bail!("own link not found in its bucket"),
            }
        }
    }
}

/// Latency percentiles of the successful samples of one kind.
struct Summary {
    ok: u64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarize<'a>(samples: impl IntoIterator<Item = &'a Sample>, kind: OpKind) -> Summary {
    let mut lat = Vec::new();
    let mut failed = 0;
    for s in samples.into_iter().filter(|s| s.kind == kind) {
        if s.ok {
            lat.push(s.latency);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    // Nearest rank.
    let pct = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1]
    };
    Summary {
        ok: lat.len() as u64,
        failed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn print_errors(errors: &BTreeMap<String, u64>) {
    for (e, n) in errors {
        println!("  errors: {n} × {e}");
    }
}

/// Print a markdown table.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        w.iter()
            .map(|n| format!("{}:", "-".repeat(n + 1)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Data directories and preloading.

fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn remove_dir(dir: &Path, keep: bool) {
    if keep {
        println!("kept {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}

/// Free space under `dir` in bytes, from `df`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse df output: {text}"))?;
    Ok(avail * 1024)
}

fn db_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(rdv::store::db::DB_FILE)).map_or(0, |m| m.len())
}

struct Preloaded {
    links: u64,
    buckets: u64,
    first_created: u64,
    elapsed: Duration,
}

impl Preloaded {
    fn targets(&self) -> Targets {
        Targets::Preloaded {
            first_created: self.first_created,
            buckets: self.buckets,
        }
    }
}

/// Bulk-load `links` random links at the fixed time `now` into the empty store in `dir`, through
/// `DiskStore::bulk_store` (the store's own writer, the same on-disk format as served stores), and
/// check the predicted bucket IDs against what the store holds.
async fn preload(dir: &Path, links: u64, now: u64, chunk: usize) -> Result<Preloaded> {
    let config = DiskStoreConfig {
        // Bigger transactions than a server uses: fewer fsyncs while loading.
        max_batch: 16 * 1024,
        ..Default::default()
    };
    let store = DiskStore::open(dir, config, rand::random())?;
    ensure!(
        store.link_count() == 0,
        "{} is not empty: preloading needs an empty store",
        dir.display()
    );
    let t0 = Instant::now();
    let mut rng = StdRng::from_entropy();
    let mut done = 0u64;
    let mut next_report = links / 10;
    while done < links {
        let n = (chunk as u64).min(links - done);
        let batch: Vec<_> = (0..n).map(|_| random_link(&mut rng)).collect();
        store.bulk_store(batch, now).await?;
        done += n;
        if done >= next_report && links >= 1_000_000 {
            eprintln!(
                "  preload {}: {done} links ({:.0} links/s)",
                dir.display(),
                per_sec(done, t0.elapsed())
            );
            next_report += links / 10;
        }
    }
    let elapsed = t0.elapsed();
    let buckets = links.div_ceil(MAX_LINKS_PER_BUCKET as u64);
    ensure!(store.link_count() == links, "link counter disagrees");
    // The predicted IDs must be the ones the store assigned: the first, the last, a few random
    // ones hold the expected number of links, and the one after the last does not exist.
    let full = MAX_LINKS_PER_BUCKET as u64;
    let mut check = vec![0, buckets / 2, buckets - 1];
    check.extend((0..20).map(|_| rng.gen_range(0..buckets)));
    for k in check {
        let id = preloaded_id(now, k);
        let expect = if k == buckets - 1 {
            links - k * full
        } else {
            full
        };
        let got = store
            .fetch(id.locator(), now)
            .await?
            .map(|l| l.len() as u64);
        ensure!(
            got == Some(expect),
            "bucket {k} ({id}) holds {got:?} links, expected {expect}: the ID prediction is wrong"
        );
    }
    let after = preloaded_id(now, buckets);
    ensure!(
        store.fetch(after.locator(), now).await?.is_none(),
        "bucket {after} exists although the preload should have stopped before it"
    );
    drop(store);
    Ok(Preloaded {
        links,
        buckets,
        first_created: now,
        elapsed,
    })
}

// ---------------------------------------------------------------------------------------------
// Subcommands.

fn parse_mix(s: &str) -> Result<[u32; 3]> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--mix is STORE:FETCH:RENDEZVOUS, e.g. 1:8:1")?;
    ensure!(
        v.len() == 3 && v.iter().sum::<u32>() > 0,
        "--mix needs three weights"
    );
    Ok([v[0], v[1], v[2]])
}

async fn load(a: LoadArgs) -> Result<()> {
    let c = &a.common;
    let mix = parse_mix(&a.mix)?;
    let dir = fresh_dir(&c.data_root, "rdv-loadgen-load")?;
    let now = SystemClock.now();
    let needs_targets = a.modes.iter().any(|m| matches!(m, Mode::Fetch | Mode::Mix));
    let targets = if a.preload > 0 {
        let p = preload(&dir, a.preload, now, 100_000).await?;
        eprintln!(
            "preloaded {} links in {} buckets ({:.1} s)",
            p.links,
            p.buckets,
            p.elapsed.as_secs_f64()
        );
        p.targets()
    } else {
        ensure!(!needs_targets, "fetch and mix modes need --preload > 0");
        Targets::None
    };
    let srv = match a.lib_backlog {
        None => ServerProc::spawn("server", &c.bin, &dir, &[], c.verbose)?,
        Some(b) => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("lib-serve")
                .arg("--data")
                .arg(&dir)
                .args(["--backlog", &b.to_string()]);
            println!("library server with accept backlog {b}");
            ServerProc::spawn_cmd("library server", cmd, c.verbose)?
        }
    };
    println!(
        "server pid {} on {} (started in {}), {} clients, at most {} ops / {:?} per mode",
        srv.pid(),
        srv.addr,
        ms(srv.startup),
        c.clients,
        c.ops,
        c.duration
    );
    let mut rows = Vec::new();
    for mode in &a.modes {
        let (weights, kinds): ([u32; 3], &[OpKind]) = match mode {
            Mode::Store => ([1, 0, 0], &[OpKind::Store]),
            Mode::Fetch => ([0, 1, 0], &[OpKind::Fetch]),
            Mode::Rendezvous => ([0, 0, 1], &[OpKind::Rendezvous]),
            Mode::Mix => (mix, &[OpKind::Store, OpKind::Fetch, OpKind::Rendezvous]),
        };
        let spec = LoadSpec {
            persistent: false,
            clients: c.clients,
            ops: c.ops,
            duration: c.duration,
            mix: weights,
            targets: targets.clone(),
        };
        let s0 = srv.stats();
        let r = run_load(srv.addr, spec).await;
        let s1 = srv.stats();
        let cpu = s1.cpu_secs - s0.cpu_secs;
        let total_ok = r.samples.iter().filter(|s| s.ok).count() as u64;
        for &k in kinds {
            let s = summarize(&r.samples, k);
            let label = if *mode == Mode::Mix {
                format!("mix {} ({}): {}", a.mix, "s:f:r", k.name())
            } else {
                k.name().to_string()
            };
            rows.push(vec![
                label,
                s.ok.to_string(),
                s.failed.to_string(),
                format!("{:.0}", per_sec(s.ok, r.elapsed)),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                format!("{cpu:.2}"),
                format!("{:.0}", cpu * 1e6 / total_ok.max(1) as f64),
                mib(s1.rss_kib),
                mib(s1.hwm_kib),
            ]);
        }
        print_errors(&r.errors);
    }
    println!();
    table(
        &[
            "mode",
            "ok",
            "failed",
            "ops/s",
            "p50",
            "p99",
            "max",
            "server CPU s",
            "CPU µs/op",
            "RSS",
            "peak RSS",
        ],
        &rows,
    );
    println!("(a rendezvous is one store and one fetch connection plus a 64-link trial decryption; KDF excluded)");
    srv.stop()?;
    remove_dir(&dir, c.keep);
    Ok(())
}

async fn group_commit(a: GroupCommitArgs) -> Result<()> {
    let c = &a.common;
    let dir_g = fresh_dir(&c.data_root, "rdv-loadgen-group")?;
    let dir_s = fresh_dir(&c.data_root, "rdv-loadgen-single")?;
    let servers = [
        ServerProc::spawn("group commit", &c.bin, &dir_g, &[], c.verbose)?,
        ServerProc::spawn(
            "commit per store",
            &c.bin,
            &dir_s,
            &["--commit-per-store"],
            c.verbose,
        )?,
    ];
    let modes: Vec<bool> = a
        .connections
        .iter()
        .map(|m| match m.as_str() {
            "op" => Ok(false),
            "client" => Ok(true),
            other => Err(anyhow!(
                "--connections takes op and/or client, not {other:?}"
            )),
        })
        .collect::<Result<_>>()?;
    println!(
        "{} concurrent store clients; at most {} stores / {:?} per measurement; connections: {}",
        c.clients,
        c.ops,
        c.duration,
        a.connections.join(", ")
    );
    let floor_before = fsync_floor(&dir_s, 300)?;
    let mut spec = LoadSpec {
        persistent: false,
        clients: c.clients,
        ops: c.ops,
        duration: c.duration,
        mix: [1, 0, 0],
        targets: Targets::None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // Per server: acknowledged stores, seconds, CPU seconds.
    let mut totals = vec![[(0u64, 0f64, 0f64); 2]; modes.len()];
    let mut rows = Vec::new();
    for (m, &persistent) in modes.iter().enumerate() {
        spec.persistent = persistent;
        for round in 1..=a.rounds {
            for (i, srv) in servers.iter().enumerate() {
                let s0 = srv.stats();
                let me0 = proc_stats(std::process::id())?;
                let r = run_load(srv.addr, spec.clone()).await;
                let me1 = proc_stats(std::process::id())?;
                let s1 = srv.stats();
                let s = summarize(&r.samples, OpKind::Store);
                let cpu = s1.cpu_secs - s0.cpu_secs;
                let own = me1.cpu_secs - me0.cpu_secs;
                let busy = (cpu + own) / (cores * r.elapsed.as_secs_f64().max(1e-9));
                totals[m][i].0 += s.ok;
                totals[m][i].1 += r.elapsed.as_secs_f64();
                totals[m][i].2 += cpu;
                rows.push(vec![
                    srv.name.clone(),
                    (if persistent {
                        "per client"
                    } else {
                        "per store"
                    })
                    .to_string(),
                    round.to_string(),
                    s.ok.to_string(),
                    s.failed.to_string(),
                    format!("{:.0}", per_sec(s.ok, r.elapsed)),
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max),
                    format!("{:.0}", cpu * 1e6 / s.ok.max(1) as f64),
                    format!("{cpu:.2}"),
                    format!("{own:.2}"),
                    format!("{:.0} %", busy * 100.0),
                    mib(s1.hwm_kib),
                ]);
                print_errors(&r.errors);
            }
        }
    }
    let floor_after = fsync_floor(&dir_s, 300)?;
    println!();
    table(
        &[
            "server",
            "connection",
            "round",
            "durable stores",
            "failed",
            "stores/s",
            "p50",
            "p99",
            "max",
            "server CPU µs/store",
            "server CPU s",
            "loadgen CPU s",
            "all cores busy",
            "peak RSS",
        ],
        &rows,
    );
    println!();
    for (when, (p50, p99)) in [("before", floor_before), ("after", floor_after)] {
        println!(
            "disk {when}: 4 KiB write + fdatasync p50 {}, p99 {} (one such flush per commit caps commit-per-store near {:.0}/s)",
            ms(p50),
            ms(p99),
            1.0 / p50.as_secs_f64().max(1e-9)
        );
    }
    let rate = |t: (u64, f64, f64)| t.0 as f64 / t.1.max(1e-9);
    println!();
    for (m, &persistent) in modes.iter().enumerate() {
        let (g, s) = (rate(totals[m][0]), rate(totals[m][1]));
        println!(
            "durable stores/s, {}: group commit {g:.0}, commit per store {s:.0}, ratio {:.1}× (target ≥ 10×: {})",
            if persistent { "one connection per client" } else { "one connection per store" },
            g / s.max(1e-9),
            if g >= 10.0 * s { "met" } else { "MISSED" }
        );
    }
    for srv in servers {
        srv.stop()?;
    }
    remove_dir(&dir_g, c.keep);
    remove_dir(&dir_s, c.keep);
    Ok(())
}

/// The disk's durable-write latency next to the store: `n` × (append 4 KiB, fdatasync); p50, p99.
fn fsync_floor(dir: &Path, n: usize) -> Result<(Duration, Duration)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = [0x5a_u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort_unstable();
    let at = |p: f64| lat[((p * n as f64) as usize).min(n - 1)];
    Ok((at(0.5), at(0.99)))
}

async fn scale(a: ScaleArgs) -> Result<()> {
    let c = &a.common;
    ensure!(!a.sizes.is_empty(), "--sizes is empty");
    std::fs::create_dir_all(&c.data_root)?;
    let need: u64 = a.sizes.iter().map(|n| n * DISK_BYTES_PER_LINK).sum();
    let free = free_bytes(&c.data_root)?;
    ensure!(
        free > need + (2 << 30),
        "{} has {} GiB free, the preloads need about {} GiB",
        c.data_root.display(),
        free >> 30,
        need >> 30
    );
    // Preload every size first.
    let mut sets = Vec::new();
    for &n in &a.sizes {
        let dir = fresh_dir(&c.data_root, &format!("rdv-loadgen-scale-{n}"))?;
        let now = SystemClock.now();
        eprintln!("preloading {n} links into {}", dir.display());
        let p = preload(&dir, n, now, a.chunk).await?;
        eprintln!(
            "  {n} links in {:.1} s ({:.0} links/s), {:.1} MiB on disk",
            p.elapsed.as_secs_f64(),
            per_sec(n, p.elapsed),
            db_bytes(&dir) as f64 / (1 << 20) as f64
        );
        sets.push((n, dir, p));
    }
    // A server on each; the first start after the preload.
    let mut servers = Vec::new();
    for (n, dir, _) in &sets {
        servers.push(ServerProc::spawn(
            &format!("{n} links"),
            &c.bin,
            dir,
            &[],
            c.verbose,
        )?);
    }
    let rss_idle: Vec<ProcStats> = servers.iter().map(ServerProc::stats).collect();
    println!(
        "{} rounds × {} sizes, each measurement: {} fetch clients, at most {} fetches / {:?}, random existing buckets",
        a.rounds,
        a.sizes.len(),
        c.clients,
        c.ops,
        c.duration
    );
    let mut samples: Vec<Vec<Sample>> = sets.iter().map(|_| Vec::new()).collect();
    let mut secs = vec![0f64; sets.len()];
    let mut cpu = vec![0f64; sets.len()];
    for round in 1..=a.rounds {
        for (i, ((n, _, p), srv)) in sets.iter().zip(&servers).enumerate() {
            let spec = LoadSpec {
                persistent: false,
                clients: c.clients,
                ops: c.ops,
                duration: c.duration,
                mix: [0, 1, 0],
                targets: p.targets(),
            };
            let s0 = srv.stats();
            let r = run_load(srv.addr, spec).await;
            let s1 = srv.stats();
            let sm = summarize(&r.samples, OpKind::Fetch);
            eprintln!(
                "  round {round}, {n} links: {:.0} fetches/s, p50 {}, p99 {}",
                per_sec(sm.ok, r.elapsed),
                ms(sm.p50),
                ms(sm.p99)
            );
            print_errors(&r.errors);
            cpu[i] += s1.cpu_secs - s0.cpu_secs;
            secs[i] += r.elapsed.as_secs_f64();
            samples[i].extend(r.samples);
        }
    }
    let after: Vec<ProcStats> = servers.iter().map(ServerProc::stats).collect();
    let first_start: Vec<Duration> = servers.iter().map(|s| s.startup).collect();
    // Restart: stop (SIGTERM) and start again on the same data.
    let mut stop = Vec::new();
    let mut restart = Vec::new();
    let mut restart_rss = Vec::new();
    let mut crash_restart = Vec::new();
    for (srv, (n, dir, p)) in servers.into_iter().zip(&sets) {
        let name = format!("{n} links");
        stop.push(srv.stop()?);
        let srv = ServerProc::spawn(&name, &c.bin, dir, &[], c.verbose)?;
        restart.push(srv.startup);
        // The restarted server still serves the old buckets.
        let mut rng = StdRng::from_entropy();
        let loc = p
            .targets()
            .pick(&mut rng)
            .ok_or_else(|| anyhow!("no targets"))?;
        fetch(srv.addr, loc).await.context("fetch after restart")?;
        restart_rss.push(srv.stats());
        // A crash right after a few acknowledged stores: SIGKILL, then start again.
        for _ in 0..3 {
            let (link, check) = random_link(&mut rng);
            store(srv.addr, link, check).await?;
        }
        srv.kill_hard()?;
        let srv = ServerProc::spawn(&name, &c.bin, dir, &[], c.verbose)?;
        crash_restart.push(srv.startup);
        fetch(srv.addr, loc)
            .await
            .context("fetch after a crash restart")?;
        srv.stop()?;
    }
    let mut rows = Vec::new();
    let mut mem_rows = Vec::new();
    let mut p99s = Vec::new();
    for (i, (n, dir, p)) in sets.iter().enumerate() {
        let s = summarize(&samples[i], OpKind::Fetch);
        p99s.push(s.p99);
        rows.push(vec![
            n.to_string(),
            p.buckets.to_string(),
            format!("{:.0} MiB", db_bytes(dir) as f64 / (1 << 20) as f64),
            format!("{:.1} s", p.elapsed.as_secs_f64()),
            s.ok.to_string(),
            s.failed.to_string(),
            format!("{:.0}", per_sec(s.ok, Duration::from_secs_f64(secs[i]))),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            format!("{:.0}", cpu[i] * 1e6 / s.ok.max(1) as f64),
        ]);
        mem_rows.push(vec![
            n.to_string(),
            mib(rss_idle[i].rss_kib),
            mib(after[i].rss_kib),
            mib(after[i].hwm_kib),
            ms(first_start[i]),
            ms(restart[i]),
            ms(crash_restart[i]),
            mib(restart_rss[i].rss_kib),
        ]);
    }
    println!();
    table(
        &[
            "links",
            "buckets",
            "db file",
            "preload",
            "fetches",
            "failed",
            "fetches/s",
            "p50",
            "p99",
            "max",
            "server CPU µs/fetch",
        ],
        &rows,
    );
    println!();
    table(
        &[
            "links",
            "RSS idle",
            "RSS after load",
            "peak RSS",
            "first start",
            "restart (after SIGTERM)",
            "restart (after SIGKILL)",
            "RSS after restart",
        ],
        &mem_rows,
    );
    println!();
    let base = p99s[0].as_secs_f64().max(1e-9);
    for (i, (n, _, _)) in sets.iter().enumerate().skip(1) {
        let r = p99s[i].as_secs_f64() / base;
        println!(
            "fetch p99 ratio {n} / {} links: {r:.2}× (target ≤ 1.5×: {})",
            sets[0].0,
            if r <= 1.5 { "met" } else { "MISSED" }
        );
    }
    println!(
        "stop (SIGTERM to exit): {}",
        stop.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    for (_, dir, _) in &sets {
        remove_dir(dir, c.keep);
    }
    Ok(())
}
/// The samples that ended before (or after) `at`.
fn split_at(r: &LoadResult, at: Instant, before: bool) -> Vec<&Sample> {
    r.samples
        .iter()
        .filter(|x| (x.end <= at) == before)
        .collect()
}

/// The log line a server writes after a GC pass that removed something.
const GC_DONE: &str = "expired buckets collected";

/// Preload `links` links created two days ago into a fresh directory, plus one fresh bucket;
/// returns the fresh bucket's locator.
async fn prepare_gc_data(dir: &Path, links: u64, chunk: usize) -> Result<Locator> {
    let now = SystemClock.now();
    let old = now - 2 * 86_400;
    eprintln!(
        "preloading {links} links created two days ago into {}",
        dir.display()
    );
    let p = preload(dir, links, old, chunk).await?;
    let store = DiskStore::open(dir, DiskStoreConfig::default(), rand::random())?;
    let mut rng = StdRng::from_entropy();
    let fresh = (0..MAX_LINKS_PER_BUCKET)
        .map(|_| random_link(&mut rng))
        .collect();
    store.bulk_store(fresh, now).await?;
    let id = BucketId {
        created: now,
        seq: 0,
    };
    ensure!(
        store.fetch(id.locator(), now).await?.map(|l| l.len()) == Some(MAX_LINKS_PER_BUCKET),
        "the fresh bucket is not {id}"
    );
    drop(store);
    eprintln!(
        "  {} links in {} buckets ({:.1} s), {:.0} MiB on disk",
        p.links,
        p.buckets,
        p.elapsed.as_secs_f64(),
        db_bytes(dir) as f64 / (1 << 20) as f64
    );
    Ok(id.locator())
}

struct GcPhase {
    name: String,
    fetch: LoadResult,
    store: LoadResult,
    /// When the first GC pass that removed something reported, and its log line.
    gc: Option<(Instant, String)>,
    spawned: Instant,
    stats: ProcStats,
}

/// Fetch and store load against a freshly started server; waits for its GC report if one is due.
async fn gc_phase(
    name: &str,
    srv: ServerProc,
    fetch_spec: &LoadSpec,
    store_spec: &LoadSpec,
    expect_gc: bool,
) -> Result<GcPhase> {
    let (fetch, store) = tokio::join!(
        run_load(srv.addr, fetch_spec.clone()),
        run_load(srv.addr, store_spec.clone())
    );
    print_errors(&fetch.errors);
    print_errors(&store.errors);
    let wait_from = Instant::now();
    while expect_gc
        && srv.log_time(GC_DONE).is_none()
        && wait_from.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gc = srv.log_time(GC_DONE);
    ensure!(
        !expect_gc || gc.is_some(),
        "server {name} never reported a GC pass"
    );
    let (stats, spawned) = (srv.stats(), srv.spawned);
    srv.stop()?;
    Ok(GcPhase {
        name: name.to_string(),
        fetch,
        store,
        gc,
        spawned,
        stats,
    })
}

async fn gc(a: GcArgs) -> Result<()> {
    let c = &a.common;
    std::fs::create_dir_all(&c.data_root)?;
    let free = free_bytes(&c.data_root)?;
    ensure!(
        free > a.links * DISK_BYTES_PER_LINK + (2 << 30),
        "not enough free space under {}",
        c.data_root.display()
    );
    let dir = fresh_dir(&c.data_root, "rdv-loadgen-gc")?;
    let fresh = prepare_gc_data(&dir, a.links, a.chunk).await?;
    let fetch_spec = LoadSpec {
        persistent: false,
        clients: c.clients,
        ops: c.ops,
        duration: c.duration,
        mix: [0, 1, 0],
        targets: Targets::Fixed(fresh),
    };
    let store_spec = LoadSpec {
        persistent: false,
        clients: a.store_clients,
        ops: c.ops,
        duration: c.duration,
        mix: [1, 0, 0],
        targets: Targets::None,
    };
    println!(
        "{} fetch clients (one fresh bucket) and {} store clients, at most {} ops each / {:?} per phase",
        c.clients, a.store_clients, c.ops, c.duration
    );
    // The same data with nothing expired (GC runs every second but finds nothing), then with
    // everything preloaded expired: GC starts right after startup.
    let srv = ServerProc::spawn(
        "no expiry",
        &c.bin,
        &dir,
        &["--ttl", "30d", "--gc-interval", "1s"],
        c.verbose,
    )?;
    let base = gc_phase(
        "no GC (nothing expired)",
        srv,
        &fetch_spec,
        &store_spec,
        false,
    )
    .await?;
    let gc_args = ["--ttl", "1d", "--gc-interval", "1s"];
    let srv = ServerProc::spawn("gc", &c.bin, &dir, &gc_args, c.verbose)?;
    let mut phases = vec![gc_phase("rdv serve", srv, &fetch_spec, &store_spec, true).await?];
    // The same with the library's server and other GC transaction sizes (`rdv serve` has no flag
    // for it): what a smaller `ServerConfig::gc_batch` would do.
    for &batch in &a.lib_gc_batches {
        let dir = fresh_dir(&c.data_root, "rdv-loadgen-gc")?;
        let fresh = prepare_gc_data(&dir, a.links, a.chunk).await?;
        let fetch_spec = LoadSpec {
            targets: Targets::Fixed(fresh),
            ..fetch_spec.clone()
        };
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("lib-serve")
            .arg("--data")
            .arg(&dir)
            .args(gc_args)
            .args(["--gc-batch", &batch.to_string()]);
        let name = format!("library server, gc_batch {batch}");
        let srv = ServerProc::spawn_cmd(&name, cmd, c.verbose)?;
        phases.push(gc_phase(&name, srv, &fetch_spec, &store_spec, true).await?);
    }

    let row = |name: String, fs: Vec<&Sample>, ss: Vec<&Sample>, stats: ProcStats| {
        let f = summarize(fs, OpKind::Fetch);
        let s = summarize(ss, OpKind::Store);
        vec![
            name,
            (f.ok + f.failed).to_string(),
            f.failed.to_string(),
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            (s.ok + s.failed).to_string(),
            s.failed.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            mib(stats.hwm_kib),
        ]
    };
    let mut rows = vec![row(
        base.name.clone(),
        base.fetch.samples.iter().collect(),
        base.store.samples.iter().collect(),
        base.stats,
    )];
    let base_fetch = summarize(&base.fetch.samples, OpKind::Fetch);
    let base_store = summarize(&base.store.samples, OpKind::Store);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut notes = Vec::new();
    for p in &phases {
        let Some((done, line)) = &p.gc else { continue };
        let during = |r| split_at(r, *done, true);
        let after = |r| split_at(r, *done, false);
        rows.push(row(
            format!("{}: during GC", p.name),
            during(&p.fetch),
            during(&p.store),
            p.stats,
        ));
        rows.push(row(
            format!("{}: after GC", p.name),
            after(&p.fetch),
            after(&p.store),
            p.stats,
        ));
        let gf = summarize(during(&p.fetch), OpKind::Fetch);
        let gs = summarize(during(&p.store), OpKind::Store);
        let what = line.split_once("INFO").map_or(line.as_str(), |(_, r)| r);
        notes.push(format!(
            "{}: GC pass `{}` finished {:.2} s after spawn; p99 during GC / without GC: fetch {:.2}×, store {:.2}×",
            p.name,
            what.trim(),
            (*done - p.spawned).as_secs_f64(),
            ratio(gf.p99, base_fetch.p99),
            ratio(gs.p99, base_store.p99)
        ));
    }
    println!();
    table(
        &[
            "phase",
            "fetches",
            "failed",
            "fetch p50",
            "fetch p99",
            "fetch max",
            "stores",
            "failed",
            "store p50",
            "store p99",
            "store max",
            "server peak RSS",
        ],
        &rows,
    );
    println!();
    for n in notes {
        println!("{n}");
    }
    remove_dir(&dir, c.keep);
    Ok(())
}

#[derive(Args)]
struct LibServeArgs {
    /// Data directory.
    #[arg(long)]
    data: PathBuf,
    /// How long buckets are kept.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How often expired buckets are collected.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// Buckets removed per GC transaction.
    #[arg(long, default_value_t = 10_000)]
    gc_batch: usize,
    /// TCP accept backlog (tokio's `TcpListener::bind` uses 128).
    #[arg(long, default_value_t = 128)]
    backlog: u32,
}

/// The library's server on 127.0.0.1 over a `DiskStore`, like `rdv serve --no-onion` but with
/// `ServerConfig::gc_batch` and the accept backlog settable. Stops on SIGTERM.
async fn lib_serve(a: LibServeArgs) -> Result<()> {
    use std::io::Write;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let params = StoreParams {
        ttl_secs: a.ttl.as_secs().max(1),
        ..Default::default()
    };
    let store = DiskStore::open(
        &a.data,
        DiskStoreConfig {
            params,
            ..Default::default()
        },
        rand::random(),
    )?;
    let config = ServerConfig {
        max_connections: 4096,
        rate_per_sec: 1_000_000,
        rate_burst: 2_000_000,
        gc_interval: a.gc_interval.max(Duration::from_secs(1)),
        gc_batch: a.gc_batch.max(1),
        ..Default::default()
    };
    let server = Server::new(store, config, Arc::new(SystemClock));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(a.backlog)?;
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
