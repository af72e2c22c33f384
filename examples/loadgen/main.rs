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
//! - `cluster`: the PostgreSQL store against redb (capacity with the admission cap lifted, and at
//!   the cap), fetches/s through one against three frontends on one database, and the time a
//!   SIGKILLed frontend's clients need to succeed elsewhere; starts its own PostgreSQL server.
//! - `tor`: over the private Tor network (scripts/tornet.sh, needs Debian's `tor`): concurrent
//!   accepts and offers/s through the embedded arti onion service against a C tor onion service
//!   in front of `rdv serve --listen`, with server CPU.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/loadgen load --modes store,fetch,rendezvous,mix
//! ```

mod data;
mod lib_serve;
mod ops;
mod report;
mod runner;
mod scenario;
mod server_proc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// One operation may take at most this long; a slower one counts as an error.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to print `listening on`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Buckets per second of bucket IDs: the allocator's sequence numbers are 16 bits.
pub(crate) const SEQS_PER_SECOND: u64 = 1 << 16;
/// On-disk bytes per link, roughly (for the free-space check).
pub(crate) const DISK_BYTES_PER_LINK: u64 = 600;

#[derive(Parser)]
#[command(about = "Load generator for `rdv serve` over loopback TCP")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Store / fetch / rendezvous / mixed load against one server, one row per mode.
    Load(LoadArgs),
    /// Durable stores/s with group commit against `--commit-per-store`, in one run.
    GroupCommit(GroupCommitArgs),
    /// Fetch latency, RSS and restart time with 10^4 .. 10^7 preloaded links.
    Scale(ScaleArgs),
    /// Fetch and store latency while garbage collection removes millions of expired links.
    Gc(GcArgs),
    /// Over the private Tor network: arti onion service against C tor onion service, same run.
    Tor(TorArgs),
    /// PostgreSQL against redb; one against three frontends on one database; failover.
    Cluster(ClusterArgs),
    /// Over the private Tor network: offer and accept through `rdv agent` against a fresh
    /// `rdv` process and against `--socks` (a running C tor), same run; then many at once.
    Agent(AgentArgs),
    /// (Internal) the library's server with settable GC batch and accept backlog, for
    /// `gc --lib-gc-batches` and `load --lib-backlog`.
    #[command(hide = true)]
    LibServe(lib_serve::LibServeArgs),
}

#[derive(Args, Clone)]
pub(crate) struct Common {
    /// The rdv binary.
    #[arg(long = "bin", default_value = "target/release/rdv")]
    pub(crate) bin: PathBuf,
    /// Where data directories are created (deleted again at the end).
    #[arg(long, default_value = "/tmp")]
    pub(crate) data_root: PathBuf,
    /// Concurrent clients (tokio tasks), each op on its own connection.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// At most this many operations per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) ops: u64,
    /// At most this long per measurement.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Keep the data directories.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Echo the servers' log lines.
    #[arg(long)]
    pub(crate) verbose: bool,
}

#[derive(Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run one after another on the same server: store, fetch, rendezvous, mix.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "store,fetch,rendezvous,mix"
    )]
    pub(crate) modes: Vec<Mode>,
    /// Weights store:fetch:rendezvous of the `mix` mode.
    #[arg(long, default_value = "1:8:1")]
    pub(crate) mix: String,
    /// Links bulk-loaded into the data directory before the server starts (fetch targets).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) preload: u64,
    /// Serve with the library's server (like `rdv serve`) listening with this TCP accept
    /// backlog instead of `rdv serve` (whose tokio listener has mio's fixed 128).
    #[arg(long)]
    pub(crate) lib_backlog: Option<u32>,
}

#[derive(Args)]
pub(crate) struct GroupCommitArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Measurements per server, alternating between the two.
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// Connection modes to measure: `op` (a new connection per store, as over Tor) and/or
    /// `client` (one long-lived connection per client: storage-bound, no TCP setup per store).
    #[arg(long, value_delimiter = ',', default_value = "op,client")]
    pub(crate) connections: Vec<String>,
}

#[derive(Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Numbers of links to preload, one data directory and server each.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000,10000000")]
    pub(crate) sizes: Vec<u64>,
    /// Measurement rounds; each round measures every size once, in turn.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Links per bulk_store call while preloading.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) chunk: usize,
}

#[derive(Args)]
pub(crate) struct TorArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Concurrency levels: that many accepts at once, and offers that many at a time.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    pub(crate) concurrency: Vec<usize>,
    /// Seconds of offers at each concurrency level.
    #[arg(long, default_value_t = 20)]
    pub(crate) offer_secs: u64,
    /// The arti services' rendezvous bounds (`rdv serve --max-rendezvous`): one service each.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub(crate) arti_max_rendezvous: Vec<usize>,
    /// First port of the private network (it uses this and the next 300).
    #[arg(long, default_value_t = 17000)]
    pub(crate) base_port: u16,
}

#[derive(Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rounds of one offer and one accept per way of running the client.
    #[arg(long, default_value_t = 10)]
    pub(crate) rounds: usize,
    /// Operations at once through one agent (and, for comparison, through `--socks`).
    #[arg(long, default_value_t = 32)]
    pub(crate) at_once: usize,
    /// First port of the private network (it uses this and the next 300).
    #[arg(long, default_value_t = 18000)]
    pub(crate) base_port: u16,
}

#[derive(Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Measurement rounds, alternating between the servers compared.
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// Links preloaded for the fetch measurement.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) preload: u64,
}

#[derive(Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Expired links to preload (GC removes them).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) links: u64,
    /// Concurrent store clients next to the fetch clients.
    #[arg(long, default_value_t = 4)]
    pub(crate) store_clients: usize,
    /// Links per bulk_store call while preloading.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) chunk: usize,
    /// Also run the GC phase with the library's server at these `ServerConfig::gc_batch` values
    /// (buckets per GC transaction), each on a fresh preload; e.g. `10000,1000`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) lib_gc_batches: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    Store,
    Fetch,
    Rendezvous,
    Mix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum OpKind {
    Store,
    Fetch,
    Rendezvous,
}

impl OpKind {
    pub(crate) fn name(self) -> &'static str {
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
            Cmd::Load(a) => scenario::load::run(a).await,
            Cmd::GroupCommit(a) => scenario::group_commit::run(a).await,
            Cmd::Scale(a) => scenario::scale::run(a).await,
            Cmd::Gc(a) => scenario::gc::run(a).await,
            Cmd::Tor(a) => scenario::tor::run(a).await,
            Cmd::Cluster(a) => scenario::cluster::run(a).await,
            Cmd::Agent(a) => scenario::agent::run(a).await,
            Cmd::LibServe(a) => lib_serve::run(a).await,
        }
    })
}
