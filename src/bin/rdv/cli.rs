//! The command line's schema: clap derives only, no behaviour.

use clap::{Args, Parser, Subcommand};
use rdv::proto::ClientPolicy;
use std::path::PathBuf;
use std::time::Duration;

/// Default port of an rdv server (TCP and onion virtual port).
pub(crate) const DEFAULT_PORT: u16 = 7625;

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
pub(crate) struct ServeArgs {
    /// Data directory: the database and the onion service's keys (the address stays stable).
    #[arg(long)]
    pub(crate) data: PathBuf,
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
    /// How long a bucket accepts new links (e.g. 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) open_window: Duration,
    /// How long buckets are kept (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,
    /// Most links stored at once; further stores are refused until buckets expire. Default: half
    /// of the free disk space at start, at 1 KiB per link.
    #[arg(long)]
    pub(crate) max_links: Option<u64>,
    /// Connections served at once. When all are taken, the one idle the longest is closed for a
    /// newcomer; only when all are executing a request is a newcomer told Busy.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_connections: usize,
    /// Connections that have not completed a first request yet, held apart so that silent
    /// sockets never take a slot; when full, the oldest of them is closed for a newcomer.
    /// Lowered automatically to what the open-files limit allows.
    #[arg(long, default_value_t = 8192)]
    pub(crate) waiting_room: usize,
    /// Close connections idle this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Requests per second allowed on one connection (burst: twice that).
    #[arg(long, default_value_t = 20)]
    pub(crate) rate: u32,
    /// How often expired buckets are garbage-collected.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) gc_interval: Duration,
    /// Expired buckets removed per GC transaction; stores wait at most one such transaction.
    #[arg(long, default_value_t = 1000)]
    pub(crate) gc_batch: usize,
    /// Commit every store separately instead of grouping commits (benchmark comparison only).
    #[arg(long)]
    pub(crate) commit_per_store: bool,
    /// Give up if Tor has not bootstrapped after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) bootstrap_timeout: Duration,
}

#[derive(Args, Clone)]
pub(crate) struct TransportArgs {
    /// Connect over plain TCP, BYPASSING TOR: the server sees your IP. Local testing only. Without
    /// a value, to the server named in the link (or on the command line).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "")]
    pub(crate) direct: Option<String>,
    /// arti TOML configuration (e.g. a private Tor network's); default: the public Tor network.
    #[arg(long, value_name = "FILE")]
    pub(crate) tor_config: Option<PathBuf>,
    /// arti state and cache directory [default: ~/.local/share/rdv/arti]. Concurrent clients need different ones.
    #[arg(long, value_name = "DIR")]
    pub(crate) tor_dir: Option<PathBuf>,
    /// Timeout for Tor bootstrap.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub(crate) bootstrap_timeout: Duration,
    /// Timeout for reaching the server (descriptor lookup, circuits, connect).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,
}

#[derive(Args)]
pub(crate) struct OfferArgs {
    /// The rendezvous server, HOST:PORT (an .onion address normally).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) server: Option<String>,
    /// The payload (your connection link). Default: read from --payload-file or standard input.
    #[arg(long, conflicts_with = "payload_file")]
    pub(crate) payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) payload_file: Option<PathBuf>,
    /// Passphrase; default: a generated one of five words (80 bits). Also read from RDV_PASSPHRASE,
    /// which keeps it out of the process list.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    pub(crate) passphrase: Option<String>,
    /// Two-channel mode: print the link without the passphrase, and the passphrase separately.
    #[arg(long)]
    pub(crate) two_channel: bool,
    /// KDF profile: default (64 MiB, t=3, p=4), moderate, test (weak, tests only), or argon2id:m=KIB,t=T,p=P.
    #[arg(long, default_value = "default")]
    pub(crate) kdf: String,
    /// Refuse bucket IDs with a higher sequence number.
    #[arg(long, default_value_t = ClientPolicy::default().max_seq)]
    pub(crate) max_seq: u16,
    /// Tolerated clock difference with the server.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) max_skew: Duration,
    /// Longest open window accepted from a server.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) max_window: Duration,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct AcceptArgs {
    /// The rdv1: link.
    pub(crate) link: String,
    /// Passphrase, if the link has none (two-channel mode). Also read from RDV_PASSPHRASE or asked
    /// for on a terminal, which keep it out of the process list.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    pub(crate) passphrase: Option<String>,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// The rdv1: link.
    pub(crate) link: String,
    /// The deletion token printed by `rdv offer`.
    #[arg(long)]
    pub(crate) token: String,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// The server, HOST:PORT.
    pub(crate) server: String,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}
