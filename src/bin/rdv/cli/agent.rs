//! `rdv agent`'s flags, and the flag by which the other commands use a running agent.

use super::TransportArgs;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct AgentArgs {
    /// The API socket [default: $XDG_RUNTIME_DIR/rdv/agent.sock, or
    /// ~/.local/state/rdv/agent.sock]. Its directory is made private (0700), the socket 0600.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Where the agent keeps the offers it looks after, their secrets and their answers, and
    /// the deletes it carries out later [default: $XDG_STATE_HOME/rdv/agent, or
    /// ~/.local/state/rdv/agent]. Created 0700; a directory others can read is refused.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Check that Tor (or --direct/--socks) is reachable, the state directory usable and the
    /// socket free, then exit (0 when all is well).
    #[arg(long)]
    pub(crate) check: bool,
    /// Show what the agent running at --socket looks after, then exit: the offers waiting for
    /// their answers, the looks at answered multi-server offers' other copies and any copy
    /// found holding another answer (someone else holds that link), and state files it cannot
    /// use. With --json, its status object (docs/AGENT.md, `status`).
    #[arg(long, conflicts_with = "check")]
    pub(crate) status: bool,
    /// Have the agent running at --socket forget the warning it keeps for offer OFFER (a copy
    /// of its link found holding another answer, which --status shows until then), then exit.
    /// The offer itself, if still kept, is left alone.
    #[arg(long, value_name = "OFFER", conflicts_with_all = ["check", "status"])]
    pub(crate) forget_warning: Option<String>,
    /// Mean pause between two looks for an offer's answer (and after a held bucket's close).
    /// Random (exponential) pauses, each look a fresh circuit.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = super::parse_poll)]
    pub(crate) poll_every: Duration,
    /// Tolerated clock difference with a server (as `rdv offer --max-skew`): bucket IDs dated
    /// further from this machine's clock are refused, and a bucket counts as closed to every
    /// client this long after the longest open window (--max-window; held offers and the first
    /// looks wait for that).
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = super::parse_span)]
    pub(crate) max_skew: Duration,
    /// Longest open window accepted from a server (as `rdv offer --max-window`). A bucket counts
    /// as closed to every client this long (plus --max-skew) after its creation, whatever window
    /// the server advertises: it could advertise each connection a window of its own.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::parse_span)]
    pub(crate) max_window: Duration,
    /// Refuse bucket IDs with a higher sequence number (as `rdv offer --max-seq`).
    #[arg(long, default_value_t = rdv::proto::ClientPolicy::default().max_seq)]
    pub(crate) max_seq: u16,
    #[command(flatten)]
    pub(crate) stamps: super::StampArgs,
    /// How long after its bucket's close the agent looks for an offer's answer, when none comes:
    /// the same span for every offer, not the lifetime the server advertises (which it could set
    /// per connection, to recognise each mailbox by its last look); the last look is the first
    /// past that end, a random look pause later (at the end itself it would show the server
    /// this machine's clock error). An answer that comes later is missed; one to a link of a
    /// server keeping buckets for less is not coming.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = super::parse_span)]
    pub(crate) look_for: Duration,
    /// Cover traffic: decoy mailboxes started per hour, at random moments, on the servers the
    /// agent knows. Each is a mailbox nobody uses, looked into as a waiting initiator looks into
    /// its own (every --poll-every on average) for some ten minutes (docs/ANONYMITY.md).
    #[arg(long, value_name = "PER_HOUR", default_value_t = 0.0, value_parser = per_hour, help_heading = "Cover traffic")]
    pub(crate) cover_mailboxes: f64,
    /// Cover traffic: decoy fetches of buckets the agent knows, per hour, at random moments.
    /// They hide when the real accepts come.
    #[arg(long, value_name = "PER_HOUR", default_value_t = 0.0, value_parser = per_hour, help_heading = "Cover traffic")]
    pub(crate) cover_fetches: f64,
    /// Spares kept for each server the agent knows; default 0 (none). A spare is a connection
    /// made ahead with nothing sent and its circuit closed at once: Tor keeps the onion
    /// service's descriptor with it, so an operation that takes it builds its circuits without
    /// downloading the descriptor again (some 80 ms less over Tor; embedded Tor only). It costs
    /// anonymity: a server that publishes a new descriptor every few minutes sees from each
    /// introduction which one the client holds, so it dates each spare and tells operations on
    /// spares from all others (docs/AGENT.md, "Spares").
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=64), help_heading = "Spares")]
    pub(crate) spares: u16,
    /// The mean pause between two warm-ups (each makes one spare for a known server drawn at
    /// random; a full pool drops its oldest). Random (exponential) pauses that run whatever the
    /// agent does, so that a warm-up's moment says nothing about any operation. At least 1s; at
    /// most as many warm-ups at once as spares kept per server (a tick that finds them all on
    /// their way is skipped).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = super::parse_poll, help_heading = "Spares")]
    pub(crate) spare_every: Duration,
    /// For a link on several servers: the mean of a random pause (exponential) before storing or
    /// counting each further copy, and before answering a further copy (when the one before did
    /// not take it, or with --answer-every-copy), so that servers comparing notes cannot chain
    /// one link's copies by their times (docs/THREAT-MODEL.md); a take-back deletes each copy
    /// but one within it. An offer takes that much longer; 0s: one right after another. A held
    /// offer's stores go 2 min apart unless --spread is given (as rdv offer --hold). Deletes
    /// need none: each copy has a moment of its own (a delete asked for now: one copy now, the
    /// others within ten minutes).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = super::parse_span)]
    pub(crate) spread: Duration,
    /// For an accept of a link on several servers: leave the answer on every server, a --spread
    /// pause apart, so that it survives the server that took it going down before the
    /// initiator looks. It costs anonymity: servers comparing notes pair the copies by the
    /// answers' times far above chance (docs/ANONYMITY.md). Default: only on the server the
    /// link was fetched from, and on the next only if that one does not take it.
    #[arg(long)]
    pub(crate) answer_every_copy: bool,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

/// A cover rate: 0 to 3600 an hour.
fn per_hour(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=3600.0).contains(&v) {
        return Err("must be from 0 to 3600 an hour".into());
    }
    Ok(v)
}

/// Use a running `rdv agent` instead of a client of this process's own.
#[derive(Args, Clone)]
pub(crate) struct UseAgent {
    /// Send the operation to a running `rdv agent` (its Tor is warm, and it looks after the
    /// offer's answer and later deletes): at its socket PATH, or without a value at RDV_AGENT's
    /// (if set) or the default socket. RDV_AGENT alone does the same. The agent's own transport
    /// and policy apply; transport flags are refused.
    // Parsed as text: clap's path parser refuses the empty value that stands for the default.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "", env = "RDV_AGENT", hide_env_values = true, value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from), help_heading = "Agent")]
    pub(crate) agent: Option<PathBuf>,
}
