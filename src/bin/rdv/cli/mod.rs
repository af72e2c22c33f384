//! The command line's schema: clap derives only, no behaviour.

mod agent;
mod serve;

pub(crate) use agent::{AgentArgs, UseAgent};
pub(crate) use serve::{parse_vanguards, ServeArgs};

use clap::{Args, Parser, Subcommand};
use rdv::proto::ClientPolicy;
use std::path::PathBuf;
use std::time::Duration;

/// Default port of an rdv server (TCP and onion virtual port).
pub(crate) const DEFAULT_PORT: u16 = 7625;

/// `rdv --version`: ours and the arti we are built with.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (arti-client ",
    env!("RDV_ARTI_CLIENT_VERSION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "rdv",
    version = VERSION,
    about = "Private rendezvous over Tor: hand someone a connection link without revealing where it leads",
    long_about = "rdv stores a fixed-size encrypted connection link in a shared bucket on a rendezvous \
server reached over Tor. The initiator (`rdv offer`) gets back an rdv1: link and a passphrase to hand \
over, in one or two channels; the accepter (`rdv accept`) fetches the bucket and trial-decrypts it. \
The server never sees client IPs, cannot open links, and cannot guess passphrases offline.\n\n\
Try `rdv demo` for a complete run on loopback."
)]
pub(crate) struct Cli {
    /// Print one JSON object on standard output (the result, or the error with a stable code;
    /// see docs/JSON.md) and no progress. For scripts and programs that call rdv.
    #[arg(long, global = true, help_heading = "Output")]
    pub(crate) json: bool,
    /// No progress and no notes on standard error; warnings and errors still appear.
    #[arg(long, short, global = true, help_heading = "Output")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run a rendezvous server: an arti onion service by default, and/or plain TCP listeners.
    Serve(ServeArgs),
    /// Seal a payload, store it on a server, and print the link (and passphrase) to hand over.
    Offer(OfferArgs),
    /// Fetch the bucket a link points to, open the payload with the passphrase, answer if asked.
    Accept(AcceptArgs),
    /// Collect the answer to an offer made with --expect-answer --state FILE.
    Collect(CollectArgs),
    /// Delete a link you offered, with the deletion token `rdv offer` printed.
    Delete(DeleteArgs),
    /// Show a server's advertised parameters.
    Info(InfoArgs),
    /// Run the agent: a long-running client with Tor kept warm, a local API for applications
    /// and the other commands (--agent), and a scheduler for looks, later deletes and cover
    /// traffic (docs/AGENT.md).
    Agent(AgentArgs),
    /// Run a complete rendezvous on loopback: server, other initiators, offer, accept, answer.
    Demo,
    /// Make a client key for a server in restricted discovery mode (`serve --authorized-clients`).
    Keygen(KeygenArgs),
    /// Print the effective client settings (server, KDF profile, Tor) and where each comes
    /// from: $XDG_CONFIG_HOME/rdv/config.toml (~/.config/rdv/config.toml, or the file RDV_CONFIG
    /// names), RDV_SERVER, or the defaults. Flags of a command win over all of them.
    Config,
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions(CompletionsArgs),
    /// Print a manual page (roff; e.g. `rdv man > rdv.1`, then `man ./rdv.1`): rdv(1), or with a
    /// command's name its own page (`rdv man offer` is rdv-offer(1)); or write them all into a
    /// directory (`rdv man --dir /usr/local/share/man/man1`).
    Man(ManArgs),
}

#[derive(Args)]
pub(crate) struct ManArgs {
    /// The command whose page to print (offer, accept, serve, …); without it, rdv(1).
    #[arg(value_name = "COMMAND", conflicts_with = "dir")]
    pub(crate) command: Option<String>,
    /// Write rdv.1 and one rdv-COMMAND.1 per command into this directory (it must exist;
    /// existing pages are replaced), and list the files written.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct KeygenArgs {
    /// The onion service the key is for (its .onion address; a port is ignored).
    #[arg(long, value_name = "ONION")]
    pub(crate) server: String,
    /// Write the secret key to FILE (created with mode 0600, never overwritten); pass it to
    /// offer, accept, delete, info, collect and agent with --client-key FILE. It is in C tor's
    /// ClientOnionAuthDir format, so a C tor client can use it too.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    pub(crate) shell: clap_complete::Shell,
}

impl TransportArgs {
    /// `rdv accept --direct LINK`: clap takes the link as `--direct`'s value. A value that is an
    /// `rdv1:` link is not an address: give it back as the link, and connect to the server the
    /// link names.
    ///
    /// Without a link, a value that is no HOST:PORT either (`--direct https://…`) is refused
    /// with what clap did to it, instead of a later "no link given".
    pub(crate) fn take_link_from_direct(
        &mut self,
        link: &mut Option<String>,
    ) -> Result<(), crate::error::CliError> {
        if link.is_some() {
            return Ok(());
        }
        match self.direct.as_mut() {
            Some(d) if d.starts_with("rdv1:") => *link = Some(std::mem::take(d)),
            Some(d) if !d.is_empty() && !is_host_port(d) => {
                return Err(crate::error::CliError::new(
                    "invalid_input",
                    rdv::client::ErrorKind::BadInput,
                    format!(
                        "--direct took {} as the server's HOST:PORT, and it is not one (nor an rdv1: link); \
                         write --direct=HOST:PORT, or --direct alone after the link",
                        crate::term::escape_for_terminal(d.as_bytes()).0
                    ),
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `s` has the form HOST:PORT (a host without `/`, spaces or `@`, a port number).
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && !host.contains(|c: char| c == '/' || c == '@' || c.is_whitespace())
    })
}

#[derive(Args, Clone)]
pub(crate) struct TransportArgs {
    /// Connect over plain TCP, BYPASSING TOR: the server sees your IP. Local testing only. Without
    /// a value, to each server at the address this command names it by.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "", conflicts_with = "socks")]
    pub(crate) direct: Option<String>,
    /// Use a tor that is already running, through its SOCKS port (e.g. 127.0.0.1:9050, Tor
    /// Browser's 127.0.0.1:9150), instead of the embedded one. Each operation gets its own
    /// circuit (fresh SOCKS credentials, tor's IsolateSOCKSAuth).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) socks: Option<String>,
    /// arti TOML configuration (e.g. a private Tor network's); default: the public Tor network.
    #[arg(long, value_name = "FILE")]
    pub(crate) tor_config: Option<PathBuf>,
    /// The client key for a server in restricted discovery mode (made with `rdv keygen`).
    #[arg(long, value_name = "FILE", conflicts_with = "direct")]
    pub(crate) client_key: Option<PathBuf>,
    /// arti state and cache directory [default: ~/.local/share/rdv/arti]. Concurrent clients need different ones.
    #[arg(long, value_name = "DIR")]
    pub(crate) tor_dir: Option<PathBuf>,
    /// Timeout for Tor bootstrap.
    #[arg(long, default_value = "3m", value_parser = parse_span)]
    pub(crate) bootstrap_timeout: Duration,
    /// Timeout for reaching the server, all attempts together (descriptor lookup, circuits,
    /// connect).
    #[arg(long, default_value = "2m", value_parser = parse_span)]
    pub(crate) connect_timeout: Duration,
    /// Timeout of one connection attempt over the embedded Tor; a lost rendezvous is retried
    /// within --connect-timeout.
    #[arg(long, default_value = "30s", value_parser = parse_span)]
    pub(crate) attempt_timeout: Duration,
}

impl TransportArgs {
    /// The transport flags given, as words to repeat in a command this one suggests (`rdv
    /// collect --state F` after an offer), so that the suggestion goes the same way: without
    /// them it would start Tor after an offer made with `--direct`, or lack the client key of
    /// a restricted server. Each value as a shell word ([`crate::term::shell_word`]).
    pub(crate) fn repeated(&self) -> String {
        let word = crate::term::shell_word;
        let mut s = String::new();
        match (&self.direct, &self.socks) {
            (Some(d), _) if d.is_empty() => s.push_str(" --direct"),
            (Some(d), _) => s.push_str(&format!(" --direct {}", word(d))),
            (None, Some(p)) => s.push_str(&format!(" --socks {}", word(p))),
            (None, None) => {}
        }
        for (flag, path) in [
            ("--tor-config", &self.tor_config),
            ("--client-key", &self.client_key),
            ("--tor-dir", &self.tor_dir),
        ] {
            if let Some(p) = path {
                s.push_str(&format!(" {flag} {}", word(&p.to_string_lossy())));
            }
        }
        s
    }
}

#[derive(Args)]
pub(crate) struct OfferArgs {
    /// The rendezvous server, HOST:PORT (an .onion address normally). Repeat it (up to 5) for
    /// a multi-server link: a copy on each, and the accepter needs only one of them to answer.
    /// Default: RDV_SERVER, or `server` in the client configuration (see rdv config).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) server: Vec<String>,
    /// With several --server: the mean of a random pause (exponential) before storing each
    /// further copy of a link, so that servers comparing notes cannot chain one link's copies by
    /// their times (docs/THREAT-MODEL.md). The offer takes that much longer; 0s stores them one
    /// right after another. With --hold and no --spread, the stores go 2 min apart on average
    /// (the hold waits for the buckets' closes anyway). With --wait, once an answer is in,
    /// the other copies go on looking until each finds an answer of its own or a random while
    /// ends (mean six times the sum of --poll-every and this per further copy).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_span)]
    pub(crate) spread: Duration,
    /// The payload (your connection link). Default: read from --payload-file or standard input.
    #[arg(long, conflicts_with = "payload_file")]
    pub(crate) payload: Option<String>,
    /// Read the payload from this file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub(crate) payload_file: Option<PathBuf>,
    /// Passphrase; default: a generated one of five words (80 bits). Also read from RDV_PASSPHRASE,
    /// which keeps it out of the process list.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    pub(crate) passphrase: Option<String>,
    /// Two-channel mode: print the link without the passphrase, and the passphrase separately.
    #[arg(long)]
    pub(crate) two_channel: bool,
    /// Wait until the bucket is closed to every client (its creation plus --max-window plus
    /// --max-skew) before printing the link: handed over after that, the accepter's fetch hides
    /// among every link the bucket got (see docs/ANONYMITY.md).
    /// The link comes a random pause (mean --poll-every) after the close, with the count of
    /// verified links from one fetch of the bucket: a fetch right at every held bucket's close
    /// would tell the server which buckets hold a waiting initiator's link.
    #[arg(long)]
    pub(crate) hold: bool,
    /// Also show the link (and, with --two-channel, the passphrase separately) as QR codes on
    /// the terminal, for a phone's camera. Drawn for a dark terminal background (light modules
    /// as blocks); --qr-invert for a light one.
    #[arg(long, help_heading = "QR codes")]
    pub(crate) qr: bool,
    /// Draw the terminal QR codes for a light background.
    #[arg(long, requires = "qr", help_heading = "QR codes")]
    pub(crate) qr_invert: bool,
    /// Write the link's QR code to FILE as a PNG image (created new, never overwritten). With
    /// --two-channel, only the link (without the passphrase) goes in the image.
    #[arg(long, value_name = "FILE", help_heading = "QR codes")]
    pub(crate) qr_png: Option<PathBuf>,
    /// KDF profile: default (64 MiB, t=3, p=4), moderate, test (weak, tests only), or argon2id:m=KIB,t=T,p=P.
    #[arg(long, default_value = "default")]
    pub(crate) kdf: String,
    /// Refuse bucket IDs with a higher sequence number.
    #[arg(long, default_value_t = ClientPolicy::default().max_seq)]
    pub(crate) max_seq: u16,
    /// Tolerated clock difference with the server: bucket IDs dated further from this
    /// machine's clock are refused. Also the margin after the longest open window (--max-window)
    /// before a bucket counts as closed to every client (other clients may still store into it
    /// until then): --hold and the first look for an answer wait for that, whatever time the
    /// server claims.
    #[arg(long, default_value = "2m", value_parser = parse_span)]
    pub(crate) max_skew: Duration,
    /// Longest open window accepted from a server. A bucket counts as closed to every client this
    /// long (plus --max-skew) after its creation, whatever window the server advertises (it
    /// could advertise each connection a window of its own): --hold and the first look for an
    /// answer wait for that.
    #[arg(long, default_value = "10m", value_parser = parse_span)]
    pub(crate) max_window: Duration,
    #[command(flatten)]
    pub(crate) stamps: StampArgs,
    /// With --hold: count the verified links in the bucket once it closed (one fetch, timed
    /// like an accept), and refuse to hand the link over, deleting it, when fewer than N carry a
    /// valid stamp (the link itself included). Against a server without stamps the count is
    /// unknown and the link is refused too.
    #[arg(long, value_name = "N", requires = "hold", help_heading = "Stamps")]
    pub(crate) min_k: Option<usize>,
    /// Ask the accepter for an answer (say, its own connection link), sealed so that only you can
    /// open it, and forward-secret: the link carries a fresh X25519 key whose secret stays with
    /// you until the answer is collected. Needs --wait or --state; the payload may then be at
    /// most 181 bytes. With several --server, each copy has a mailbox of its own, the accepter
    /// answers the copy it fetched (another only when that server does not take it; every copy
    /// with rdv accept --answer-every-copy), and the answer is looked for on every server.
    #[arg(long, help_heading = "Answer")]
    pub(crate) expect_answer: bool,
    /// Write what collecting the answer needs to FILE (created with mode 0600, never
    /// overwritten; it holds secrets), for `rdv collect --state FILE` later.
    #[arg(
        long,
        value_name = "FILE",
        requires = "expect_answer",
        help_heading = "Answer"
    )]
    pub(crate) state: Option<PathBuf>,
    /// Look for the answer for up to this long once the bucket has closed, and print it (escaped,
    /// on an `answer:` line). No look comes before the bucket closes: the first look at a new
    /// mailbox would tell the server which link is yours. The last look is the first past the
    /// wait's end, a random pause later (of mean --poll-every): one at the end itself would show
    /// the server your clock's error. With --state too, the state file's keys
    /// are replaced by a one-line note saying when the answer was collected once it is in.
    #[arg(long, value_name = "DURATION", value_parser = parse_span, requires = "expect_answer", help_heading = "Answer")]
    pub(crate) wait: Option<Duration>,
    #[command(flatten)]
    pub(crate) look: LookArgs,
    /// With --agent: the agent deletes the link this long after its bucket closes, whatever
    /// happens to it (each copy of a multi-server link this long after its own bucket closes),
    /// plus a random share of a tenth of it (at most ten minutes), which hides your clock's
    /// error. Decided now, the delete's time tells the server nothing about the
    /// accepter's fetch or answer (a delete after the answer does; docs/ANONYMITY.md).
    #[arg(long, value_name = "DURATION", value_parser = parse_span, requires = "agent", help_heading = "Agent")]
    pub(crate) delete_after_close: Option<Duration>,
    #[command(flatten)]
    pub(crate) agent: UseAgent,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

/// How much work stamps may cost and must show (protocol version 3, PROTOCOL.md §16).
#[derive(Args, Clone)]
pub(crate) struct StampArgs {
    /// Count a link as real only if its stamp shows at least this effort (an entry without
    /// one could be a fake the server made for free); your own stamps show at least as much
    /// (more work than the server asks, when it asks less).
    #[arg(long, value_name = "EFFORT", default_value_t = ClientPolicy::default().min_effort, help_heading = "Stamps")]
    pub(crate) min_effort: u32,
    /// Refuse a server that asks for a stamp of more effort than this (about 3 ms of one core
    /// per unit, 1024 being some 3 s); nothing is stored then.
    #[arg(long, value_name = "EFFORT", default_value_t = ClientPolicy::default().max_effort, help_heading = "Stamps")]
    pub(crate) max_effort: u32,
}

/// How the initiator looks for the answer, and what becomes of the link once it is in
/// (PROTOCOL.md §15.4; what each choice costs: docs/ANONYMITY.md).
#[derive(Args, Clone)]
pub(crate) struct LookArgs {
    /// Mean pause between two looks for the answer while waiting, and of the first look after the
    /// bucket's close. The pauses are random (exponential), so that looks keep no beat the server
    /// could tie together; each look is a fresh circuit. Under 10s warns.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_poll, help_heading = "Answer")]
    pub(crate) poll_every: Duration,
    /// Look before the bucket closes. COSTS ANONYMITY: the first look at a new mailbox, seconds
    /// after your store, tells the server which link the mailbox belongs to, and the accepter's
    /// answer then tells it which fetch accepted your link.
    #[arg(long, help_heading = "Answer")]
    pub(crate) early: bool,
    /// Delete the link from the server as soon as the answer is in. COSTS ANONYMITY: the delete
    /// names your link, and coming right after the accepter's answer it tells the server which
    /// fetch accepted it. By default the link is left to expire (the mailbox takes one answer
    /// only, so it cannot be answered twice).
    #[arg(long, help_heading = "Answer")]
    pub(crate) delete_now: bool,
    /// Leave the link on the server once the answer is in: the default (kept for scripts that
    /// pass it).
    #[arg(long, hide = true, conflicts_with = "delete_now")]
    pub(crate) keep_link: bool,
}

/// A duration of at most ten years (`rdv::proto::schedule::MAX_SPAN`): no wait, window or
/// pause of rdv's needs more, and time arithmetic past it could overflow.
pub(crate) fn parse_span(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > rdv::proto::schedule::MAX_SPAN {
        return Err("must be at most ten years".into());
    }
    Ok(d)
}

/// A poll interval: at least one second.
pub(crate) fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

#[derive(Args)]
pub(crate) struct CollectArgs {
    /// The state file `rdv offer --expect-answer --state FILE` wrote. Once the answer is in, its
    /// keys (what makes the answer readable) are replaced by a one-line note saying when it was
    /// collected; the file stays, holding no secret.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "offer",
        conflicts_with = "offer"
    )]
    pub(crate) state: Option<PathBuf>,
    /// With --agent: the offer's ID, as `rdv offer --agent --expect-answer` printed it. The
    /// agent keeps looking by itself; this takes the answer once it is in.
    #[arg(long, value_name = "ID", requires = "agent")]
    pub(crate) offer: Option<String>,
    /// Look for the answer for up to this long (from when the bucket closes, if it has not yet);
    /// the last look is the first past the end, a random pause (of mean --poll-every) later.
    /// Default: look once, now (refused before the bucket closes, unless --early).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) wait: Option<Duration>,
    #[command(flatten)]
    pub(crate) look: LookArgs,
    /// For a multi-server link: the mean of a random pause (exponential) between the looks at
    /// its copies in a one-time collect, and (with --delete-now) before deleting each further
    /// copy, as `rdv delete --spread`. Once an answer is in, the other copies go on looking until
    /// each finds an answer of its own or a random while ends (mean six times the sum of
    /// --poll-every and this per further copy).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_span)]
    pub(crate) spread: Duration,
    #[command(flatten)]
    pub(crate) agent: UseAgent,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct AcceptArgs {
    /// The rdv1: link. `-` or nothing: read it from standard input (a one-channel link is a
    /// secret: keep it out of the process list). Also read from RDV_LINK.
    #[arg(env = "RDV_LINK", hide_env_values = true)]
    pub(crate) link: Option<String>,
    /// Passphrase, if the link has none (two-channel mode). Also read from RDV_PASSPHRASE or asked
    /// for on the terminal without echo, which keep it out of the process list. Giving one for a
    /// link that carries its own is an error.
    #[arg(long, env = "RDV_PASSPHRASE", hide_env_values = true)]
    pub(crate) passphrase: Option<String>,
    /// Answer the link (when the initiator asked for an answer): at most 181 bytes, say your own
    /// connection link. Also read from RDV_ANSWER, which keeps it out of the process list.
    #[arg(
        long,
        env = "RDV_ANSWER",
        hide_env_values = true,
        conflicts_with = "answer_file",
        help_heading = "Answer"
    )]
    pub(crate) answer: Option<String>,
    /// Read the answer from this file.
    #[arg(long, value_name = "FILE", help_heading = "Answer")]
    pub(crate) answer_file: Option<PathBuf>,
    /// Count a link as real only if its stamp shows at least this effort (an entry without
    /// one could be a fake the server made for free).
    #[arg(long, value_name = "EFFORT", default_value_t = ClientPolicy::default().min_effort, help_heading = "Stamps")]
    pub(crate) min_effort: u32,
    /// With --answer: refuse a server whose answer challenge asks for more stamp effort than
    /// this (about 3 ms of one core per unit); no answer is sent then (`effort_refused`).
    #[arg(long, value_name = "EFFORT", default_value_t = ClientPolicy::default().max_effort, help_heading = "Stamps")]
    pub(crate) max_effort: u32,
    /// Go on only if the bucket proves at least N real links (valid stamps, this one
    /// included): with fewer, or against a server without stamps, the payload is not shown and
    /// no answer is sent (`too_few_links`). The fetch has happened by then; what is kept back
    /// is your going on with a rendezvous whose server may have isolated you.
    #[arg(long, value_name = "N", help_heading = "Stamps")]
    pub(crate) min_k: Option<usize>,
    /// For a multi-server link: the mean of a random pause (exponential) before leaving the
    /// answer on a further server (each has a mailbox of its own: when the one before did not
    /// take it, or with --answer-every-copy), and before trying the next copy after a fetch
    /// fails, so that servers comparing notes cannot pair them by their times (as `rdv offer
    /// --spread`); 0s does them one right after another.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_span)]
    pub(crate) spread: Duration,
    /// For a multi-server link: leave the answer on every server of the link, a --spread pause
    /// apart, so that it survives the server that took it going down before the initiator
    /// looks. It costs anonymity: servers comparing notes pair the copies by the answers' times
    /// and the looks that find them far above chance (docs/ANONYMITY.md). Default: only on the
    /// server the link was fetched from, and on the next only if that one does not take it.
    #[arg(long, help_heading = "Answer")]
    pub(crate) answer_every_copy: bool,
    #[command(flatten)]
    pub(crate) agent: UseAgent,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// The rdv1: link. `-` or nothing: read it from standard input. Also read from RDV_LINK.
    #[arg(env = "RDV_LINK", hide_env_values = true)]
    pub(crate) link: Option<String>,
    /// The deletion token printed by `rdv offer`. Also read from RDV_DELETE_TOKEN, which keeps it
    /// out of the process list.
    #[arg(
        long,
        env = "RDV_DELETE_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file",
        // One token in 64 starts with `-`: `--token -AbC…` is that token, not a flag.
        allow_hyphen_values = true
    )]
    pub(crate) token: Option<String>,
    /// Read the deletion token from this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// With --agent: the agent deletes the link at a random moment within this long (default
    /// an hour; each copy of a multi-server link at a moment of its own), even across its
    /// restarts. The moment still follows your request: asked right
    /// after an answer, it still points to the answered link (rdv offer --agent
    /// --delete-after-close decides the delete at the offer instead).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "1h", value_parser = parse_span, requires = "agent")]
    pub(crate) later: Option<Duration>,
    /// For a multi-server link: one copy (drawn at random) is deleted at once, each other at a
    /// moment of its own drawn uniformly within this long from now (the command waits for the
    /// last), so that servers comparing
    /// notes cannot pair the copies by their delete times (a delete names its entry, and so its
    /// store time too); 0s deletes them one right after another. `--agent --later` gives each
    /// copy a moment within an hour without waiting here.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_span)]
    pub(crate) spread: Duration,
    #[command(flatten)]
    pub(crate) agent: UseAgent,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// The server, HOST:PORT [default: the --direct HOST:PORT, else RDV_SERVER or the client
    /// configuration's first server].
    pub(crate) server: Option<String>,
    #[command(flatten)]
    pub(crate) transport: TransportArgs,
}

#[cfg(test)]
mod tests {
    use super::{parse_poll, parse_span};
    use std::time::Duration;

    /// Durations past ten years are refused at the flag: `--wait 10000years` was taken, the
    /// link stored, and the command then panicked formatting a date past year 9999.
    #[test]
    fn durations_are_bounded_at_the_flag() {
        assert_eq!(parse_span("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_span("3650days").is_ok());
        for long in ["10000years", "500000000000y", "11years"] {
            let e = parse_span(long).unwrap_err();
            assert!(e.contains("ten years"), "{long}: {e}");
            assert!(parse_poll(long).is_err());
        }
        assert!(parse_poll("500ms").is_err());
    }
}
