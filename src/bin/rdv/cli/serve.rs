//! `rdv serve`'s flags. Every one of them can also come from the configuration file
//! (`--config`, see `crate::config`); a flag given on the command line wins.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::DEFAULT_PORT;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file (see rdv.example.toml); flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective settings (file and flags together) as a configuration file, and exit
    /// (non-zero, with every problem listed, if they would not run).
    #[arg(long, conflicts_with = "check_config")]
    pub(crate) print_config: bool,
    /// Check the settings (file and flags together, the --tor-config file and the authorized
    /// clients included) without starting anything: every problem listed, exit non-zero if any.
    #[arg(long)]
    pub(crate) check_config: bool,
    /// Data directory: the database and the onion service's keys (the address stays stable).
    /// Required, here or in the configuration file.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Also listen on this TCP address (repeatable). For C tor's HiddenServicePort and tests.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Vec<String>,
    /// Do not publish the arti onion service (then at least one --listen is needed).
    #[arg(long)]
    pub(crate) no_onion: bool,
    /// Virtual port of the onion service.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub(crate) onion_port: u16,
    /// Nickname of the onion service in arti's keystore.
    #[arg(long, default_value = "rdv")]
    pub(crate) nickname: String,
    /// arti TOML configuration (e.g. a private Tor network's); default: the public Tor network.
    #[arg(long, value_name = "FILE")]
    pub(crate) tor_config: Option<PathBuf>,
    /// Where buckets are stored: redb (a database file in the data directory), or a PostgreSQL
    /// connection string (postgres://USER@HOST:PORT/DB) for a database several frontends share.
    /// A password goes in the config file or in PGPASSWORD, never on the command line.
    #[arg(long, value_name = "BACKEND", default_value = "redb")]
    pub(crate) store: crate::store::Backend,
    /// How long a bucket accepts new links (e.g. 10m).
    #[arg(long, default_value = "10m", value_parser = super::parse_span)]
    pub(crate) open_window: Duration,
    /// How long buckets are kept (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = super::parse_span)]
    pub(crate) ttl: Duration,
    /// Most links stored at once; further stores are refused until buckets expire. Default: half
    /// of the space the store can use (free disk space plus its own files), at 1 KiB per link,
    /// derived again every --gc-interval.
    #[arg(long)]
    pub(crate) max_links: Option<u64>,
    /// Percent of --max-links that answers may fill: past it new answers are refused as over
    /// quota while links go on being stored, so an answer flood cannot fill the quota (100: no
    /// limit of their own). Answers without a stamp (clients older than protocol version 4)
    /// may fill only a quarter of this share.
    #[arg(long, value_name = "PERCENT", default_value_t = 25, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) answer_share: u8,
    /// Connections served at once. When all are taken, newcomers get in line (first come, first
    /// served) and take the slot of a holder that has had its own for 10 s and is between
    /// requests, or of one that does not read its answers; one still in line after 45 s is told
    /// Busy.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_connections: usize,
    /// Connections that have not completed a first request yet, held apart so that silent
    /// sockets never take a slot; when full, the oldest of them is closed for a newcomer.
    /// Lowered automatically to what the open-files limit allows.
    #[arg(long, default_value_t = 8192)]
    pub(crate) waiting_room: usize,
    /// Close connections idle this long.
    #[arg(long, default_value = "30s", value_parser = super::parse_span)]
    pub(crate) idle_timeout: Duration,
    /// Requests per second allowed on one connection (burst: twice that).
    #[arg(long, default_value_t = 20)]
    pub(crate) rate: u32,
    /// How often expired buckets are garbage-collected.
    #[arg(long, default_value = "60s", value_parser = super::parse_span)]
    pub(crate) gc_interval: Duration,
    /// Expired buckets removed per GC transaction; stores wait at most one such transaction.
    #[arg(long, default_value_t = 1000)]
    pub(crate) gc_batch: usize,
    /// Commit every store separately instead of grouping commits (benchmark comparison only).
    #[arg(long)]
    pub(crate) commit_per_store: bool,
    /// Highest bucket sequence number handed out in one second. Clients with the default policy
    /// refuse buckets above 32, so only benchmarks of the store's own capacity raise it.
    #[arg(long, default_value_t = 32, hide = true)]
    pub(crate) max_seq: u16,
    /// Give up if Tor has not bootstrapped after this long.
    #[arg(long, default_value = "5m", value_parser = super::parse_span)]
    pub(crate) bootstrap_timeout: Duration,
    /// Streams one Tor circuit may have open at once; a circuit that opens more is closed (an
    /// honest client uses one per circuit).
    #[arg(long, default_value_t = 16, help_heading = "Onion service")]
    pub(crate) max_streams_per_circuit: u32,
    /// Introductions per second the introduction points let through (0: the network's default).
    #[arg(long, default_value_t = 25, help_heading = "Onion service")]
    pub(crate) intro_rate: u32,
    /// Burst of introductions the introduction points let through.
    #[arg(long, default_value_t = 200, help_heading = "Onion service")]
    pub(crate) intro_burst: u32,
    /// Introduction points (3 to 20).
    #[arg(long, default_value_t = 3, help_heading = "Onion service")]
    pub(crate) intro_points: u8,
    /// Rendezvous circuits being built at once; further introductions wait, first come, first
    /// served (at most 1024 waiting, none longer than 12 s). 64: at 128 introductions at once,
    /// 16 made the median wait 1.2-43 s, 64 keeps it near C tor's; see BENCHMARKS.md.
    #[arg(long, default_value_t = 64, help_heading = "Onion service")]
    pub(crate) max_rendezvous: usize,
    /// Vanguards for onion circuits: lite (default), full (stronger against guard discovery,
    /// slower), or disabled.
    #[arg(long, default_value = "lite", value_parser = parse_vanguards, help_heading = "Onion service")]
    pub(crate) vanguards: rdv::tor::Vanguards,
    /// Require proof-of-work from clients when the service is under load. Experimental in arti
    /// 0.47; needs rdv built with `--features pow`.
    #[arg(long, help_heading = "Onion service")]
    pub(crate) pow: bool,
    /// Restricted discovery: only clients whose keys are in DIR (NAME.auth files holding the
    /// descriptor:x25519:... line `rdv keygen` prints) can find the service. Restart after
    /// changing the directory.
    #[arg(long, value_name = "DIR", help_heading = "Onion service")]
    pub(crate) authorized_clients: Option<PathBuf>,
    /// Serve Prometheus metrics (aggregates only: bucket sizes at close and at fetch, delays,
    /// counts by outcome; never an ID, a locator or a time of a request) over HTTP at
    /// ADDR:PORT/metrics. Loopback only unless --metrics-allow-remote.
    #[arg(long, value_name = "ADDR:PORT", help_heading = "Metrics")]
    pub(crate) metrics: Option<String>,
    /// Values of each anonymity histogram (bucket sizes at close and at fetch, delete delays)
    /// released together, so that two scrapes around one request do not show its values; 1
    /// releases each at once (for a lab that compares exact figures).
    #[arg(long, default_value_t = rdv::server::metrics::DEFAULT_BATCH, value_name = "N")]
    pub(crate) metrics_batch: usize,
    /// Allow --metrics on an address that is not loopback (put it behind a firewall).
    #[arg(long, help_heading = "Metrics")]
    pub(crate) metrics_allow_remote: bool,
    /// The effort a stamp must show (protocol version 3; answers' stamps too, version 4): about
    /// this many Equi-X solutions, some 3 ms of one core each, paid by every client per offer
    /// and per answer (and by a server per fake entry it would pass off as real). Clients refuse more than 1024 by default, and count
    /// entries below 64 as unproven.
    #[arg(long, value_name = "EFFORT", default_value_t = rdv::proto::stamp::DEFAULT_EFFORT, help_heading = "Stamps")]
    pub(crate) stamp_effort: u32,
    /// Refuse links without a stamp (from clients older than protocol version 3) and answers
    /// without one (older than version 4), so that every store and answer costs its client the
    /// work of a stamp: a flood gets expensive.
    #[arg(long, help_heading = "Stamps")]
    pub(crate) require_stamps: bool,
    /// Percent of --max-links that links without a stamp may fill (links and answers counted
    /// together): past it only stamped links are stored, so a flood of free stores cannot fill
    /// the quota, and the rest costs a stamp per link (100: no reserve).
    #[arg(long, value_name = "PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100), help_heading = "Stamps")]
    pub(crate) unstamped_share: u8,
    /// Take this start's wall clock as right for expiry even when it is far ahead of the store's
    /// last expiry time. Without it, expiry resumes from that time (plus 10 minutes), so that a
    /// clock that is ahead at boot cannot collect links early, and time the server was down does
    /// not count toward the TTL. For once, after a long downtime you know of.
    #[arg(long)]
    pub(crate) trust_clock: bool,
    /// TESTING ONLY: misbehave on purpose, to test clients: isolate (a bucket per link),
    /// future-ids, stale-ids, seq-inflation, dummies (buckets filled with dummy links), truncate
    /// (63-entry fetch answers), vary-effort (a different stamp effort per challenge), vary-seed
    /// (a seed of its own per challenge). Needs --testing-only too; never for real users.
    #[arg(long, value_name = "MODE", value_parser = parse_adversary, help_heading = "Testing")]
    pub(crate) adversary: Option<rdv::server::adversary::Adversary>,
    /// Confirm that this server is for testing clients (required by --adversary).
    #[arg(long, help_heading = "Testing")]
    pub(crate) testing_only: bool,
    /// TESTING ONLY, with --adversary isolate or dummies: give this many fake entries around
    /// each victim valid stamps, computed for real, to measure what deceiving a client costs.
    /// Default: none (the fakes carry no valid stamp and clients see through them).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "adversary",
        help_heading = "Testing"
    )]
    pub(crate) adversary_stamp_budget: usize,
    /// How often the server checks, through Tor on a circuit of its own, that its onion service
    /// answers (once it has answered; before that, every 10 s).
    #[arg(long, default_value = "5m", value_parser = super::parse_span, help_heading = "Health")]
    pub(crate) probe_interval: Duration,
    /// Log a warning when the onion service has been unreachable this long (repeated as long as
    /// it stays so).
    #[arg(long, default_value = "5m", value_parser = super::parse_span, help_heading = "Health")]
    pub(crate) warn_unreachable_after: Duration,
    /// Exit with an error when the onion service has been unreachable this long (since the start
    /// or the last success), so that a supervisor restarts the server. Default: keep running.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_span, help_heading = "Health")]
    pub(crate) exit_when_unreachable: Option<Duration>,
}

/// `lite`, `full` or `disabled`.
pub(crate) fn parse_vanguards(s: &str) -> Result<rdv::tor::Vanguards, String> {
    use rdv::tor::Vanguards;
    match s {
        "lite" => Ok(Vanguards::Lite),
        "full" => Ok(Vanguards::Full),
        "disabled" => Ok(Vanguards::Disabled),
        _ => Err("expected lite, full or disabled".into()),
    }
}

/// An adversary mode's name.
fn parse_adversary(s: &str) -> Result<rdv::server::adversary::Adversary, String> {
    use rdv::server::adversary::Adversary;
    Adversary::parse(s).ok_or_else(|| {
        let names: Vec<_> = Adversary::ALL.iter().map(|a| a.as_str()).collect();
        format!("expected one of {}", names.join(", "))
    })
}
