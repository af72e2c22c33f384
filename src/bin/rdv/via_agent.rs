//! `--agent`: `rdv offer`, `accept`, `collect` and `delete` sent to a running `rdv agent` over
//! its socket (docs/AGENT.md), with the same output as without one.

use crate::cli::{AcceptArgs, CollectArgs, DeleteArgs, OfferArgs, UseAgent};
use crate::error::CliError;
use crate::out::{fields, note};
use anyhow::{bail, Context, Result};
use rdv::agent::api::{self, Reply, Request};
use rdv::client::ErrorKind;
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use zeroize::Zeroizing;

/// The agent's socket, if the command is to use one.
pub(crate) fn socket(u: &UseAgent) -> Result<Option<PathBuf>> {
    match &u.agent {
        None => Ok(None),
        // A bare `--agent`: RDV_AGENT if it names a socket, else the default one.
        Some(p) if p.as_os_str().is_empty() => match std::env::var_os("RDV_AGENT") {
            Some(env) if !env.is_empty() => Ok(Some(PathBuf::from(env))),
            _ => crate::agent::default_socket().map(Some),
        },
        Some(p) => Ok(Some(p.clone())),
    }
}

/// With an agent, the agent's transport applies: a transport flag here would be ignored.
fn refuse_transport() -> Result<()> {
    refuse_flags(
        // Given on the command line: a transport from the client configuration file is not
        // the user's choice for this command (refused, it made every --agent command fail
        // for a user whose file names a Tor setting, which the agent itself reads too).
        &[
            (false, "--direct"),
            (false, "--socks"),
            (false, "--tor-config"),
            (false, "--client-key"),
            (false, "--tor-dir"),
            (false, "--bootstrap-timeout"),
            (false, "--connect-timeout"),
            (false, "--attempt-timeout"),
        ],
        "the agent reaches servers its own way (set it when starting rdv agent)",
    )
}

/// With an agent, the agent's client policy applies (the defaults): a policy flag set to
/// anything else here would be silently ignored, so it is refused.
fn refuse_policy(given: &[(bool, &str)]) -> Result<()> {
    refuse_flags(
        given,
        "the agent applies its own client policy (set when starting rdv agent; leave out --agent to use the flag here)",
    )
}

/// With an agent, the agent looks for answers on its own schedule (`rdv agent --poll-every`),
/// never before the close and never deleting after the answer: the look flags would be
/// silently ignored (after warnings about costs that do not occur), so they are refused.
fn refuse_look(look: &crate::cli::LookArgs) -> Result<()> {
    refuse_flags(
        &[
            (look.early, "--early"),
            (look.delete_now, "--delete-now"),
            (
                look.poll_every != rdv::proto::schedule::LookSchedule::default().mean,
                "--poll-every",
            ),
        ],
        "the agent looks for answers on its own schedule (rdv agent --poll-every), never before the bucket closes, and leaves the link to expire",
    )
}

/// The flags given on the command line of this process's command (their clap ids).
static GIVEN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Note which flags of the command `m` were given on its command line, so that a flag given
/// with its default value is refused too: with `--agent` the agent's own value applies, which
/// need not be the default (before, `--spread 30s` went through silently to an agent running
/// another spread).
pub(crate) fn note_given(m: Option<&clap::ArgMatches>) {
    let given = m.map(|m| {
        m.ids()
            .filter(|id| {
                m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.as_str().to_owned())
            .collect()
    });
    let _ = GIVEN.set(given.unwrap_or_default());
}

/// Whether `flag` (`--max-skew`) was given on the command line.
pub(crate) fn given_on_command_line(flag: &str) -> bool {
    let id = flag.trim_start_matches('-').replace('-', "_");
    GIVEN.get().is_some_and(|g| g.contains(&id))
}

/// The first flag that is set (`true`: a value other than the default) or was given on the
/// command line, refused: it has no effect with `--agent`, because `why`.
fn refuse_flags(given: &[(bool, &str)], why: &str) -> Result<()> {
    match given
        .iter()
        .find(|(set, flag)| *set || given_on_command_line(flag))
    {
        Some((_, flag)) => Err(CliError::new(
            "invalid_input",
            ErrorKind::BadInput,
            format!("{flag} has no effect with --agent (or RDV_AGENT): {why}"),
        )
        .into()),
        None => Ok(()),
    }
}

/// A connection to the agent.
struct Agent {
    lines: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    next_id: u64,
    /// Events that came while a reply was awaited.
    events: VecDeque<Value>,
    /// The part of a line read so far: a read given up midway (a wait's timeout) keeps it
    /// here, and the next read goes on from it.
    partial: Zeroizing<Vec<u8>>,
    /// Whether the agent takes `keep` on a collect (an agent from before it refuses the field).
    keeps: bool,
}

/// The command line's error for an error the agent sent, with the agent's code and kind.
fn agent_error(e: api::ApiError) -> anyhow::Error {
    let kind = ErrorKind::from_name(&e.kind).unwrap_or(ErrorKind::Local);
    // The code comes from the agent's own list (docs/JSON.md); this process ends right after
    // reporting it, so leaking its few bytes costs nothing.
    let code: &'static str = Box::leak(e.code.into_boxed_str());
    CliError::new(code, kind, format!("agent: {}", e.message)).into()
}

impl Agent {
    /// A connection to the agent at `path`, for a command that works without one too.
    async fn connect(path: &std::path::Path) -> Result<Self> {
        Self::connect_or(
            path,
            "start one with rdv agent, or leave out --agent and RDV_AGENT",
        )
        .await
    }

    /// A connection to the agent at `path`; `instead`: what to do when none answers.
    async fn connect_or(path: &std::path::Path, instead: &str) -> Result<Self> {
        let s = tokio::net::UnixStream::connect(path).await.map_err(|e| {
            CliError::new(
                "agent_unreachable",
                ErrorKind::Transient,
                format!("no agent answers on {} ({e}); {instead}", path.display()),
            )
        })?;
        // The request carries secrets (passphrase, payload): only to an agent of this user, not
        // to whoever else bound a socket at this path while the agent was down.
        #[cfg(unix)]
        {
            let me = rustix::process::getuid().as_raw();
            let peer = s.peer_cred().map(|c| c.uid()).ok();
            if peer != Some(me) {
                return Err(CliError::new(
                    "agent_unreachable",
                    ErrorKind::BadInput,
                    format!(
                        "the socket {} belongs to another user ({}), not to an agent of yours; nothing was sent",
                        path.display(),
                        peer.map_or("unknown".to_string(), |u| u.to_string())
                    ),
                )
                .into());
            }
        }
        let (rd, wr) = s.into_split();
        Ok(Agent::over(rd, wr))
    }

    fn over(rd: OwnedReadHalf, wr: OwnedWriteHalf) -> Self {
        Agent {
            lines: BufReader::new(rd),
            wr,
            next_id: 1,
            events: VecDeque::new(),
            partial: Zeroizing::new(Vec::new()),
            keeps: true,
        }
    }

    /// The next line from the agent. Only a line with its newline counts: one cut off by the
    /// end of the connection (an agent that gave the connection up mid-line counts that reply
    /// as not delivered, and keeps a collected answer for the next collect) is not taken.
    /// A read cancelled midway loses nothing (what it read waits in `partial`).
    async fn line(&mut self) -> Result<Value> {
        // Replies carry secrets (a payload, an answer).
        self.lines
            .read_until(b'\n', &mut self.partial)
            .await
            .context("reading from the agent")?;
        let mut line = Zeroizing::new(std::mem::take(&mut *self.partial));
        if line.pop() != Some(b'\n') {
            return Err(CliError::new(
                "agent_unreachable",
                ErrorKind::Transient,
                "the agent closed the connection (did it stop?)",
            )
            .into());
        }
        serde_json::from_slice(&line).context("the agent sent something that is not JSON")
    }

    /// Send `request` and wait for its reply: the result, or the agent's error with its code.
    async fn call(&mut self, request: &Request) -> Result<Value> {
        let id = Value::from(self.next_id);
        self.next_id += 1;
        let mut line = Zeroizing::new(api::request_line(&id, request));
        line.push('\n');
        if let Err(e) = self.wr.write_all(line.as_bytes()).await {
            // An agent that turned the connection away said why before it closed it.
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(1), self.line()).await {
                if let Ok(Reply {
                    ok: false,
                    error: Some(e),
                    ..
                }) = serde_json::from_value::<Reply>(v)
                {
                    return Err(agent_error(e));
                }
            }
            return Err(anyhow::Error::new(e).context("writing to the agent"));
        }
        loop {
            let v = self.line().await?;
            if v.get("event").is_some() && v.get("id").is_none() {
                self.events.push_back(v);
                continue;
            }
            let reply: Reply = serde_json::from_value(v).context("a reply of the agent")?;
            // An error without an id is about the connection (turned away, a line refused).
            let about_connection = reply.id.is_null() && !reply.ok;
            if reply.id != id && !about_connection {
                continue;
            }
            if reply.ok {
                return Ok(reply.result.unwrap_or(Value::Null));
            }
            let e = agent_error(reply.error.unwrap_or(api::ApiError {
                code: "agent_error".into(),
                kind: "local".into(),
                message: "the agent failed without saying why".into(),
            }));
            // What the request got before it failed (an accept whose answer was not sent).
            let got = match reply.result {
                Some(Value::Object(got)) => Some(got),
                _ => None,
            };
            return Err(match (e.downcast::<CliError>(), got) {
                (Ok(mut e), got) => {
                    e.got = got;
                    e.into()
                }
                (Err(e), _) => e,
            });
        }
    }

    /// Subscribe to the agent's events, only to those about `offer` if given (an agent from
    /// before the filter refuses the field: then to all, as before). Asked again, it changes the
    /// filter: a command that waits for one offer's answer receives no other offer's answer.
    async fn subscribe_to(&mut self, offer: Option<&str>) -> Result<()> {
        let filtered = Request::Subscribe {
            offer: offer.map(str::to_owned),
        };
        match self.call(&filtered).await {
            Err(e)
                if offer.is_some()
                    && crate::error::code(&e).0 == "invalid_input"
                    && format!("{e:#}").contains("offer") =>
            {
                self.call(&Request::Subscribe { offer: None })
                    .await
                    .map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// The next event pushed by the agent (after a `subscribe`).
    async fn event(&mut self) -> Result<Value> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        loop {
            let v = self.line().await?;
            if v.get("event").is_some() {
                return Ok(v);
            }
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The bytes of `NAME_base64` in a result.
fn bytes_of(v: &Value, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    use base64::Engine;
    let b = v
        .get(format!("{name}_base64"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the agent's result has no {name}"))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .context("the agent's base64")?,
    ))
}

/// `rdv offer --agent`.
pub(crate) async fn offer(mut a: OfferArgs, path: PathBuf) -> Result<()> {
    refuse_transport()?;
    let policy = rdv::proto::ClientPolicy::default();
    refuse_policy(&[
        (a.max_seq != policy.max_seq, "--max-seq"),
        (a.max_skew.as_secs() != policy.max_skew_secs, "--max-skew"),
        (
            a.max_window.as_secs() != policy.max_open_window_secs,
            "--max-window",
        ),
        (a.stamps.min_effort != policy.min_effort, "--min-effort"),
        (a.stamps.max_effort != policy.max_effort, "--max-effort"),
        (a.spread != rdv::client::DEFAULT_COPY_SPREAD, "--spread"),
    ])?;
    if a.server.is_empty() {
        bail!("give the server with --server HOST:PORT");
    }
    if a.state.is_some() {
        bail!("--state has no use with --agent (or RDV_AGENT): the agent keeps the offer's state itself (collect the answer with rdv collect --agent --offer ID)");
    }
    refuse_look(&a.look)?;
    if let Ok(kdf) = rdv::proto::KdfProfile::parse(&a.kdf) {
        crate::offer::warn_if_weak(kdf);
    }
    // Checked before anything is stored, as without an agent.
    if let Some(png) = &a.qr_png {
        crate::offer::check_output("--qr-png", png)?;
    }
    let payload = Zeroizing::new(crate::offer::read_payload(&a)?);
    let given = a.passphrase.take().map(Zeroizing::new);
    let passphrase = crate::offer::choose_passphrase(given.as_deref().map(|s| s.as_str()))?;
    let mut agent = Agent::connect(&path).await?;
    if a.wait.is_some() {
        // Before the offer, so that no event about it is missed; narrowed to it once its ID
        // is known.
        agent.subscribe_to(None).await?;
    }
    let mut put = serde_json::Map::new();
    api::put_bytes(&mut put, "payload", &payload);
    let request = Request::Offer {
        servers: a.server.clone(),
        payload: None,
        payload_base64: put
            .get("payload_base64")
            .and_then(Value::as_str)
            .map(str::to_owned),
        passphrase: Some(passphrase.expose().to_string()),
        kdf: Some(a.kdf.clone()),
        two_channel: a.two_channel,
        expect_answer: a.expect_answer,
        hold: a.hold,
        delete_after_close_secs: a.delete_after_close.map(|d| d.as_secs()),
    };
    if a.hold {
        note!("holding the link until its bucket has closed (the agent holds it)");
    }
    let mut r = agent.call(&request).await?;
    drop(request);
    // A clock far off the server's: warned of on standard error, as without an agent (and not
    // in `--json`'s `stored` event, which has the same fields either way).
    let clock_off = r.as_object_mut().and_then(|f| f.remove("clock_off"));
    if let Some(c) = clock_off {
        let server = c["server"]
            .as_str()
            .and_then(|s| rdv::proto::ServerAddr::parse(s).ok());
        if let (Some(server), Some(ahead)) = (server, c["ahead_secs"].as_i64()) {
            eprintln!("{}", crate::offer::clock_warning(&server, ahead));
        }
    }
    let link = Zeroizing::new(str_of(&r, "link").to_owned());
    let offer_id = r.get("offer").and_then(Value::as_str).map(str::to_owned);
    if let Some(k) = r.get("links_verified") {
        let k = k.as_u64().map(|k| k as usize);
        crate::accept::say_verified(k);
        if let Some(why) = a.min_k.and_then(|min| crate::offer::short_of_min_k(k, min)) {
            return Err(too_few(&mut agent, &r, offer_id, why).await);
        }
    }
    if let Some(png) = &a.qr_png {
        if let Err(e) = crate::qr::write_png(&link, png) {
            let what = take_back(&mut agent, &r, offer_id).await;
            return Err(e.context(format!("--qr-png: {what}")));
        }
    }
    // A link that cannot be written (standard output closed, a full disk under a redirect, a
    // QR code that cannot be drawn) reached nobody: taken back, as a failed --qr-png is.
    // Once the link's line is out, a later failure leaves it (its reader holds it).
    let shown = std::cell::Cell::new(false);
    let hand_over = || -> Result<()> {
        if crate::out::json() {
            // `event` first, as without an agent (docs/JSON.md: keys in the order listed).
            let mut f = fields! { "event" => "stored" };
            if let Some(r) = r.as_object() {
                f.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            return Ok(crate::out::try_emit("offer", f)?);
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "link: {}", link.as_str())?;
        out.flush()?;
        // Out once it can be opened: in two-channel mode, with its passphrase.
        shown.set(!a.two_channel);
        if a.qr {
            writeln!(out, "{}", crate::qr::terminal(&link, a.qr_invert)?)?;
        }
        if a.two_channel {
            writeln!(out, "passphrase: {}", str_of(&r, "passphrase"))?;
            out.flush()?;
            shown.set(true);
        }
        writeln!(out, "delete-token: {}", str_of(&r, "delete_token"))?;
        if let Some(id) = &offer_id {
            writeln!(out, "offer: {id}")?;
        }
        out.flush()?;
        Ok(())
    };
    if let Err(e) = hand_over() {
        if shown.get() {
            return Err(crate::offer::shown_then_failed(e));
        }
        let what = take_back(&mut agent, &r, offer_id).await;
        let why = rdv::config::report(&*e).to_string();
        return Err(CliError::new(
            "io",
            ErrorKind::Local,
            format!("writing the link to standard output: {why}; {what}"),
        )
        .into());
    }
    if !crate::out::json() {
        if let Some(png) = &a.qr_png {
            note!("wrote the link's QR code to {}", png.display());
        }
        if !a.hold {
            if let Some(closes_in) = r.get("bucket_closes_in_secs").and_then(Value::as_u64) {
                let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
                note!(
                    "the bucket closes at {} (in {}); handed over after that, the accepter's fetch hides among all the bucket's links (--hold waits for it)",
                    rdv::clock::rfc3339(now.saturating_add(closes_in)),
                    crate::offer::in_words(closes_in)
                );
            }
        }
        if let (Some(id), None) = (&offer_id, a.wait) {
            note!("the agent looks for the answer; take it with: rdv collect --agent --offer {id}");
        }
        if let Some(at) = r.get("delete_at").and_then(Value::as_u64) {
            let lines = delete_lines(
                &r,
                at,
                |when| {
                    format!("the agent deletes the link at {when} (a fixed time after its bucket's close)")
                },
                "the agent deletes each copy a fixed time after its own bucket's close:",
            );
            for line in lines {
                note!("{line}");
            }
            note!("note: give every offer the same --delete-after-close, those without --expect-answer too: deletes at a fixed time after the close of only the links that expect an answer (or only of some other kind) tell the server which links those are (docs/ANONYMITY.md)");
        } else if a.delete_after_close.is_some() {
            note!("no delete scheduled: the link expires before that time");
        }
    }
    let (Some(id), Some(wait)) = (offer_id, a.wait) else {
        return Ok(());
    };
    let from = r.get("looks_from").and_then(Value::as_u64);
    agent.subscribe_to(Some(&id)).await?;
    emit_waiting("offer", from, wait)?;
    let answer = wait_for(&mut agent, &id, from, wait).await?;
    if crate::out::json() {
        let mut f = fields! { "event" => "answer", "offer" => &id, "link_kept" => true };
        crate::out::bytes_fields(&mut f, "answer", &answer);
        crate::out::emit("offer", f)?;
    } else {
        let (shown, _) = crate::term::escape_for_terminal(&answer);
        let mut out = std::io::stdout().lock();
        writeln!(out, "answer: {shown}")
            .and_then(|()| out.flush())
            .context("writing the answer to standard output")?;
    }
    forget(&mut agent, &id).await;
    follow_trail(&mut agent, &id, "offer", true).await
}

/// The looks at the other copies of offer `id` that go on in the agent after its answer
/// (`trails` in its status). With `--wait` (`follow`) they are followed until they end, as the
/// same command without an agent stays for them: a copy found holding another answer is a
/// warning on standard error in the moment the agent tells it (someone else holds the link).
/// Standard output is closed first, so that a program reading it to its end goes on (a shell's
/// `$(…)` waits for the command's end: `read -r answer < <(rdv …)` does not); Ctrl-C ends only
/// this wait (the agent's looks go on), and so does an agent that stops meanwhile (its next
/// start resumes the looks): the answer is out, so the command succeeds. A one-time collect
/// (`follow` false) says what the looks found so far and that they go on, and ends. Before,
/// through an agent the warning reached only its log and its subscribers.
async fn follow_trail(agent: &mut Agent, id: &str, command: &str, follow: bool) -> Result<()> {
    /// The offer's entry in the agent's `trails` list: its looks go on, or ended in the last
    /// hour.
    fn trailing(status: &Value, id: &str) -> Option<Value> {
        status
            .get("trails")?
            .as_array()?
            .iter()
            .find(|t| t.get("offer").and_then(Value::as_str) == Some(id))
            .cloned()
    }
    fn tell(told: &mut Vec<String>, server: &str) {
        if !told.iter().any(|t| t == server) {
            crate::answer::warn_different_answer(server);
            told.push(server.to_owned());
        }
    }
    fn servers(v: &Value, key: &str) -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
    let ended = |e: &Value| e.get("ended") == Some(&Value::Bool(true));
    // The agent gone (stopped, restarted): this ends, the answer being out already.
    let gone = |e: anyhow::Error| {
        note!(
            "the agent went away ({}); its next start resumes the looks at the other copies",
            rdv::config::report(&*e)
        );
    };
    let mut told = Vec::new();
    // Subscribed before the status is asked: an end between the two is then an event.
    if follow {
        if let Err(e) = agent.subscribe_to(Some(id)).await {
            gone(e);
            return Ok(());
        }
    }
    let status = match agent.call(&Request::Status {}).await {
        Ok(s) => s,
        Err(e) => {
            gone(e);
            return Ok(());
        }
    };
    // An agent from before trails are listed has no `trails`: nothing to follow.
    let Some(entry) = trailing(&status, id) else {
        return Ok(());
    };
    for server in servers(&entry, "different_answers") {
        tell(&mut told, &server);
    }
    if ended(&entry) {
        // Over before this command came to it: only what they found.
        return Ok(());
    }
    let others = entry.get("copies").and_then(Value::as_u64).unwrap_or(0);
    if !follow {
        note!("the agent goes on looking at the link's {others} other cop{} for a while (a server must not see its copy's looks end when another's answer came); a copy found holding another answer is a warning in its log, a different_answer event and in rdv agent --status (rdv collect --agent --wait stays to tell it here)", if others == 1 { "y" } else { "ies" });
        return Ok(());
    }
    if crate::out::json() {
        crate::out::emit(
            command,
            fields! { "event" => "trailing", "copies" => others },
        )?;
    }
    note!(
        "the agent looks at the link's {others} other cop{} until each finds an answer of its own or a random while ends (a server must not see its copy's looks end when another's answer came); this command stays to tell you if one holds another answer; standard output is closed now; Ctrl-C ends this wait (not the agent's looks)",
        if others == 1 { "y" } else { "ies" }
    );
    let mut stop = crate::interrupt::scope();
    crate::answer::release_stdout();
    loop {
        let e = tokio::select! {
            e = tokio::time::timeout(RECOLLECT, agent.event()) => e,
            () = stop.signalled() => {
                note!("interrupted: the agent goes on looking at the other copies (a different answer is a warning in its log and a different_answer event)");
                return Ok(());
            }
        };
        // None for a while (`Err`): asked again below.
        if let Ok(e) = e {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    gone(e);
                    return Ok(());
                }
            };
            let name = str_of(&e, "event");
            if name == api::event::DIFFERENT_ANSWER && str_of(&e, "offer") == id {
                tell(&mut told, str_of(&e, "server"));
                continue;
            }
            if name == api::event::TRAIL_ENDED && str_of(&e, "offer") == id {
                for server in servers(&e, "different_answers") {
                    tell(&mut told, &server);
                }
                let opened = e.get("opened").and_then(Value::as_u64).unwrap_or(0);
                note!("the other copies' looks ended; {opened} of {others} held an answer too (an accepter answers one copy unless it answers every one)");
                return Ok(());
            }
            if name != api::event::LAGGED {
                continue;
            }
        }
        // Events missed, or none for a while: asked again (an end whose event was missed).
        let status = match agent.call(&Request::Status {}).await {
            Ok(s) => s,
            Err(e) => {
                gone(e);
                return Ok(());
            }
        };
        let entry = trailing(&status, id);
        if let Some(entry) = &entry {
            for server in servers(entry, "different_answers") {
                tell(&mut told, &server);
            }
        }
        if entry.as_ref().is_none_or(ended) {
            note!("the other copies' looks ended");
            return Ok(());
        }
    }
}

/// `--min-k` not met: the link is not handed over, the agent deletes it now and forgets the
/// offer (as `rdv offer --hold --min-k` does without an agent).
async fn too_few(
    agent: &mut Agent,
    r: &Value,
    offer: Option<String>,
    why: String,
) -> anyhow::Error {
    let what = take_back(agent, r, offer).await;
    CliError::new(
        "too_few_links",
        ErrorKind::ServerMisbehaved,
        format!("{why}: {what}"),
    )
    .into()
}

/// An offer the command cannot hand over: the agent deletes its link now and forgets the
/// offer. Says what happened.
async fn take_back(agent: &mut Agent, r: &Value, offer: Option<String>) -> String {
    let delete = Request::Delete {
        link: str_of(r, "link").to_owned(),
        token: str_of(r, "delete_token").to_owned(),
        later: false,
        within_secs: None,
    };
    let deleted = agent.call(&delete).await;
    drop(delete);
    if let Some(offer) = offer {
        // Nothing to look for: the link was never handed over.
        let _ = agent
            .call(&Request::Forget {
                offer,
                warning: false,
            })
            .await;
    }
    match deleted {
        Ok(_) => "the link was not handed over and was deleted from the server".to_string(),
        Err(e) => format!(
            "the link was not handed over, and could NOT be deleted ({e:#}); it expires by itself"
        ),
    }
}

/// How often a wait for an answer through the agent asks for it again, whatever the events say
/// (a question to the local agent, which tells no server anything).
const RECOLLECT: std::time::Duration = std::time::Duration::from_secs(10);

/// With `--json`, the `waiting` line of a command's `--wait` through the agent, as without
/// one: looking from `from` (the offer's first look, when the agent said; else now) until the
/// wait after it, when this command stops waiting (the agent's own looks go on).
fn emit_waiting(command: &str, from: Option<u64>, wait: std::time::Duration) -> Result<()> {
    let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
    let from = from.unwrap_or(now).max(now);
    let until = from.saturating_add(wait.min(rdv::proto::schedule::MAX_SPAN).as_secs());
    crate::answer::emit_waiting(command, from, until)
}

/// Take the answer to offer `id` from the agent, waiting for it to come up to `wait` from its
/// first look (`from`, unix seconds: the bucket's close), as `--wait` does without an agent (the
/// agent must have been subscribed to on this connection).
async fn wait_for(
    agent: &mut Agent,
    id: &str,
    from: Option<u64>,
    wait: std::time::Duration,
) -> Result<Zeroizing<Vec<u8>>> {
    let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
    let before_first_look =
        std::time::Duration::from_secs(from.map_or(0, |f| f.saturating_sub(now)));
    let span = rdv::proto::schedule::MAX_SPAN;
    let until = tokio::time::Instant::now() + before_first_look.min(span) + wait.min(span);
    loop {
        match take_answer(agent, id).await {
            Ok(r) => return bytes_of(&r, "answer"),
            // Not yet, or another collect of it is receiving it now (if that reply fails, the
            // answer stays for this one).
            Err(e)
                if matches!(
                    crate::error::code(&e).0,
                    "no_answer_yet" | "collect_in_progress"
                ) => {}
            Err(e) => return Err(e),
        }
        // Until an event says the answer came (or the offer expired, or events were missed), or
        // the wait ends; and asked again every RECOLLECT whatever the events say: an event
        // missed (this process stopped while the agent's buffer for it overflowed) must not
        // leave an answer that is in uncollected until the wait ends.
        let outcome = tokio::time::timeout_at(until, async {
            let next = tokio::time::Instant::now() + RECOLLECT;
            loop {
                let e = match tokio::time::timeout_at(next, agent.event()).await {
                    Ok(e) => e?,
                    Err(_) => return Ok(api::event::LAGGED.to_owned()),
                };
                let name = str_of(&e, "event");
                if str_of(&e, "offer") == id || name == api::event::LAGGED {
                    return Ok::<_, anyhow::Error>(name.to_owned());
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(name)) if name == api::event::ANSWERED || name == api::event::LAGGED => {}
            Ok(Ok(name)) if name == api::event::EXPIRED => {
                return Err(CliError::new(
                    "no_answer_yet",
                    ErrorKind::Transient,
                    "no answer came while the agent looked for it (rdv agent --look-for after the bucket's close); the agent forgot the offer",
                )
                .into())
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(CliError::new(
                    "no_answer_yet",
                    ErrorKind::Transient,
                    format!(
                        "no answer yet; the agent keeps looking (rdv collect --agent --offer {id})"
                    ),
                )
                .into())
            }
        }
    }
}

/// `rdv accept --agent`.
pub(crate) async fn accept(mut a: AcceptArgs, path: PathBuf) -> Result<()> {
    refuse_transport()?;
    refuse_policy(&[
        (
            a.min_effort != rdv::proto::ClientPolicy::default().min_effort,
            "--min-effort",
        ),
        (
            a.max_effort != rdv::proto::ClientPolicy::default().max_effort,
            "--max-effort",
        ),
        (a.spread != rdv::client::DEFAULT_COPY_SPREAD, "--spread"),
        (a.answer_every_copy, "--answer-every-copy"),
    ])?;
    let link = crate::accept::read_link(a.link.take())?;
    let answer = crate::answer::read_answer_arg(a.answer.take(), a.answer_file.as_deref())?;
    let passphrase = match (&link.passphrase, a.passphrase.take()) {
        (_, Some(p)) => Some(Zeroizing::new(p)),
        (Some(_), None) => None,
        (None, None) => crate::term::read_passphrase_interactive()?
            .map(|p| Zeroizing::new(p.expose().to_string())),
    };
    let mut put = serde_json::Map::new();
    if let Some(a) = &answer {
        api::put_bytes(&mut put, "answer", a);
    }
    let request = Request::Accept {
        link: link.to_uri().to_string(),
        passphrase: passphrase.as_ref().map(|p| p.to_string()),
        answer: None,
        answer_base64: put
            .get("answer_base64")
            .and_then(Value::as_str)
            .map(str::to_owned),
        min_k: a.min_k,
    };
    let mut agent = Agent::connect(&path).await?;
    let r = agent.call(&request).await;
    drop(request);
    // The link opened but the answer was not sent: the payload is shown all the same, as
    // without the agent (with --json it is in the error's result).
    if let (Err(e), false) = (&r, crate::out::json()) {
        if let Some(got) = crate::error::partial(e) {
            let mut got = Value::Object(got.clone());
            let payload = bytes_of(&got, "payload");
            crate::out::wipe(&mut got);
            if let Ok(payload) = payload {
                crate::accept::show_payload(&payload)?;
            }
        }
    }
    let r = r?;
    let payload = bytes_of(&r, "payload")?;
    note!(
        "opened link {} of {} in the bucket",
        r.get("index").and_then(Value::as_u64).unwrap_or(0) + 1,
        r.get("tried").and_then(Value::as_u64).unwrap_or(0)
    );
    crate::accept::say_verified(
        r.get("links_verified")
            .and_then(Value::as_u64)
            .map(|k| k as usize),
    );
    if crate::out::json() {
        crate::out::emit("accept", r.as_object().cloned().unwrap_or_default())?;
        return Ok(());
    }
    crate::accept::show_payload(&payload)?;
    if r.get("answered") == Some(&Value::Bool(true)) {
        note!("answered: the initiator can now collect the answer");
    } else if r.get("answer_expected") == Some(&Value::Bool(true)) {
        note!("note: the initiator asks for an answer; to give one, run rdv accept again with --answer TEXT (or RDV_ANSWER, or --answer-file)");
    }
    Ok(())
}

/// `rdv collect --agent --offer ID`.
pub(crate) async fn collect(a: CollectArgs, path: PathBuf) -> Result<()> {
    refuse_transport()?;
    refuse_look(&a.look)?;
    refuse_policy(&[(a.spread != rdv::client::DEFAULT_COPY_SPREAD, "--spread")])?;
    let Some(id) = a.offer.clone() else {
        bail!("with --agent (or RDV_AGENT), name the offer with --offer ID (rdv offer --agent printed it)");
    };
    let mut agent = Agent::connect(&path).await?;
    let answer = match a.wait {
        Some(wait) => {
            agent.subscribe_to(Some(&id)).await?;
            // From the offer's first look, as without an agent: the agent knows when that is.
            let status = agent.call(&Request::Status {}).await?;
            let from = status
                .get("pending")
                .and_then(Value::as_array)
                .and_then(|p| {
                    p.iter()
                        .find(|o| o.get("offer").and_then(Value::as_str) == Some(id.as_str()))
                })
                .and_then(|o| o.get("looks_from"))
                .and_then(Value::as_u64);
            emit_waiting("collect", from, wait)?;
            wait_for(&mut agent, &id, from, wait).await?
        }
        None => bytes_of(&take_answer(&mut agent, &id).await?, "answer")?,
    };
    if crate::out::json() {
        let mut f = fields! { "event" => "answer", "link_kept" => true };
        crate::out::bytes_fields(&mut f, "answer", &answer);
        crate::out::emit("collect", f)?;
    } else {
        crate::answer::print_answer(&answer)?;
    }
    forget(&mut agent, &id).await;
    follow_trail(&mut agent, &id, "collect", a.wait.is_some()).await
}

/// Ask the agent for the answer to offer `id`, with `keep`: the agent forgets the offer when
/// [`forget`] says the answer is written, so that one that cannot be written is not lost. An
/// agent from before `keep` refuses the field: asked again without it (it then forgets the
/// offer once the reply is delivered, as it always did).
async fn take_answer(agent: &mut Agent, id: &str) -> Result<Value> {
    if agent.keeps {
        let keep = Request::Collect {
            offer: id.to_owned(),
            keep: true,
        };
        match agent.call(&keep).await {
            Err(e)
                if crate::error::code(&e).0 == "invalid_input"
                    && format!("{e:#}").contains("keep") =>
            {
                agent.keeps = false;
            }
            r => return r,
        }
    }
    let plain = Request::Collect {
        offer: id.to_owned(),
        keep: false,
    };
    agent.call(&plain).await
}

/// The answer to offer `id` is written: the agent may forget the offer now (it kept it, so that
/// an answer that could not be written is not lost).
async fn forget(agent: &mut Agent, id: &str) {
    if !agent.keeps {
        return;
    }
    let request = Request::Forget {
        offer: id.to_owned(),
        warning: false,
    };
    if let Err(e) = agent.call(&request).await {
        eprintln!(
            "warning: the agent could not forget the answered offer ({}): it keeps the answer, and the next collect of {id} gets it again",
            rdv::config::report(&*e)
        );
    }
}

/// What a reply's scheduled deletes say, line by line: `one` of the moment `at` for a link on
/// one server; for a multi-server link (`deletes`: one per copy), `many` and a line per copy
/// with its server (cleaned of control characters: it came from the agent) and its moment.
fn delete_lines(r: &Value, at: u64, one: impl Fn(String) -> String, many: &str) -> Vec<String> {
    let copies: Vec<String> = r
        .get("deletes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let server = d.get("server")?.as_str()?;
            let at = d.get("at")?.as_u64()?;
            let (server, _) = crate::term::escape_for_terminal(server.as_bytes());
            Some(format!("  {server}: {}", rdv::clock::rfc3339(at)))
        })
        .collect();
    if copies.len() < 2 {
        return vec![one(rdv::clock::rfc3339(at))];
    }
    std::iter::once(many.to_owned()).chain(copies).collect()
}

/// What to do when `rdv agent --status` or `--forget-warning` finds no agent (leaving out
/// `--agent`, the advice for other commands, does not apply to them).
const AGENT_COMMAND_NEEDS_ONE: &str =
    "start one with rdv agent, or name the running one's socket with --socket (default: $XDG_RUNTIME_DIR/rdv/agent.sock, else ~/.local/state/rdv/agent.sock)";

/// `rdv agent --forget-warning OFFER`: the agent at `path` forgets the warning it keeps for
/// `offer` (a copy of its link found holding another answer), and nothing else.
pub(crate) async fn forget_warning(path: PathBuf, offer: String) -> Result<()> {
    let mut agent = Agent::connect_or(&path, AGENT_COMMAND_NEEDS_ONE).await?;
    let r = agent
        .call(&Request::Forget {
            offer,
            warning: true,
        })
        .await?;
    if crate::out::json() {
        return crate::out::emit("agent", r.as_object().cloned().unwrap_or_default());
    }
    let shown = crate::term::escape_for_terminal(r["offer"].as_str().unwrap_or("?").as_bytes()).0;
    println!("warning forgotten: {shown}");
    Ok(())
}

/// `rdv agent --status`: what the agent at `path` looks after, for a person (or its status
/// object with `--json`).
pub(crate) async fn status(path: PathBuf) -> Result<()> {
    let mut agent = Agent::connect_or(&path, AGENT_COMMAND_NEEDS_ONE).await?;
    let s = agent.call(&Request::Status {}).await?;
    if crate::out::json() {
        return crate::out::emit("agent", s.as_object().cloned().unwrap_or_default());
    }
    let shown =
        |v: &Value| crate::term::escape_for_terminal(v.as_str().unwrap_or("?").as_bytes()).0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "agent {} ({}), up {}, state directory {}",
        shown(&s["version"]),
        shown(&s["transport"]),
        humantime::format_duration(Duration::from_secs(s["uptime_secs"].as_u64().unwrap_or(0))),
        shown(&s["state_dir"])
    )?;
    let list = |key: &str| s[key].as_array().cloned().unwrap_or_default();
    let pending = list("pending");
    writeln!(out, "offers looked after: {}", pending.len())?;
    for p in &pending {
        let servers: Vec<String> = p["servers"]
            .as_array()
            .map(|a| a.iter().map(shown).collect())
            .unwrap_or_default();
        let state = match p["answered"].as_bool() {
            Some(true) => "answered, not collected yet".to_owned(),
            _ => format!(
                "waiting (looks from {})",
                rdv::clock::rfc3339(p["looks_from"].as_u64().unwrap_or(0))
            ),
        };
        writeln!(
            out,
            "  {} on {}: {state}",
            shown(&p["offer"]),
            servers.join(", ")
        )?;
    }
    for t in list("trails") {
        let differing: Vec<String> = t["different_answers"]
            .as_array()
            .map(|a| a.iter().map(shown).collect())
            .unwrap_or_default();
        let going = match t["ended"].as_bool() {
            Some(true) => "ended",
            _ => "going on",
        };
        writeln!(
            out,
            "  {}: looks at its {} other cop{} {going}",
            shown(&t["offer"]),
            t["copies"].as_u64().unwrap_or(0),
            if t["copies"].as_u64() == Some(1) {
                "y"
            } else {
                "ies"
            }
        )?;
        if !differing.is_empty() {
            writeln!(out, "  WARNING: the copy on {} held a different answer: someone else answered it first, so someone else holds that link and its passphrase", differing.join(", "))?;
            if t["ended"].as_bool() == Some(true) {
                writeln!(
                    out,
                    "  (shown until rdv agent --forget-warning {})",
                    shown(&t["offer"])
                )?;
            }
        }
    }
    for u in list("unreadable") {
        writeln!(out, "cannot use: {}", shown(&u))?;
    }
    out.flush()?;
    Ok(())
}

/// `rdv delete --agent [--later]`.
pub(crate) async fn delete(mut a: DeleteArgs, path: PathBuf) -> Result<()> {
    refuse_transport()?;
    // Its default (ten minutes) is not the agent's spread: refused only when given.
    refuse_policy(&[(false, "--spread")])?;
    let link = crate::accept::read_link(a.link.take())?;
    let token = crate::accept::read_token(&mut a)?;
    let request = Request::Delete {
        link: link.to_uri().to_string(),
        token: token.to_text().to_string(),
        later: a.later.is_some(),
        within_secs: a.later.map(|d| d.as_secs()),
    };
    let mut agent = Agent::connect(&path).await?;
    let r = agent.call(&request).await?;
    drop(request);
    if crate::out::json() {
        crate::out::emit("delete", r.as_object().cloned().unwrap_or_default())?;
    } else if let Some(at) = r.get("at").and_then(Value::as_u64) {
        // Asked for now, a multi-server link: one copy now, the others scheduled.
        if r.get("deleted") == Some(&Value::Bool(true)) {
            println!("deleted one copy now");
        }
        let lines = delete_lines(
            &r,
            at,
            |when| format!("delete scheduled for {when} (the agent carries it out, even across restarts)"),
            "deletes scheduled, each copy at a moment of its own (the agent carries them out, even across restarts):",
        );
        for line in lines {
            println!("{line}");
        }
    } else {
        println!("deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply cut off by the end of the connection (the agent gave the connection up in the
    /// middle of writing it, and counts it as not delivered) is not taken: taken, an answer
    /// would go to this collect and stay for the next one too.
    #[tokio::test]
    async fn a_reply_without_its_newline_is_not_taken() {
        for (sent, whole) in [(&b"{\"ok\":true}\n"[..], true), (b"{\"ok\":true}", false)] {
            let (mut agent_end, ours) = tokio::net::UnixStream::pair().unwrap();
            agent_end.write_all(sent).await.unwrap();
            drop(agent_end);
            let (rd, wr) = ours.into_split();
            let mut agent = Agent::over(rd, wr);
            assert_eq!(agent.line().await.is_ok(), whole, "{sent:?}");
        }
    }

    /// A read given up midway (a wait's timeout) loses nothing: the next read goes on from the
    /// bytes it had read.
    #[tokio::test]
    async fn a_line_read_in_pieces_survives_a_cancelled_read() {
        let (mut agent_end, ours) = tokio::net::UnixStream::pair().unwrap();
        let (rd, wr) = ours.into_split();
        let mut agent = Agent::over(rd, wr);
        agent_end.write_all(b"{\"event\":").await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(200), agent.line()).await;
        assert!(cut.is_err(), "no whole line yet");
        agent_end.write_all(b"\"answered\"}\n").await.unwrap();
        let v = agent.line().await.unwrap();
        assert_eq!(v["event"], "answered");
    }

    /// A stand-in for the agent: answers each `collect` with `no_answer_yet` the first time and
    /// the answer after, sending `after_first` (an event line) right after the first reply, and
    /// never an `answered` event. Returns how many requests it answered.
    fn fake_agent(
        agent_end: tokio::net::UnixStream,
        after_first: Option<&'static str>,
    ) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let (rd, mut wr) = agent_end.into_split();
            let mut lines = BufReader::new(rd).lines();
            let mut n = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                n += 1;
                let reply = if n == 1 {
                    serde_json::json!({"id": v["id"], "ok": false, "error": {"code": "no_answer_yet",
                        "kind": "transient", "message": "no answer yet"}})
                } else {
                    serde_json::json!({"id": v["id"], "ok": true, "result": {"offer": "o",
                        "answer": "hi", "answer_base64": "aGk="}})
                };
                wr.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
                if let (1, Some(e)) = (n, after_first) {
                    wr.write_all(format!("{e}\n").as_bytes()).await.unwrap();
                }
            }
            n
        })
    }

    /// An answer whose `answered` event this process missed (it was stopped while the agent's
    /// buffer for it overflowed) is collected when the agent says events were missed, and
    /// within [`RECOLLECT`] when nothing at all comes; before, the wait ran to its end (an hour
    /// here) with the answer in.
    #[tokio::test(start_paused = true)]
    async fn a_missed_answer_event_does_not_hold_up_the_wait() {
        for (event, within) in [
            (Some(r#"{"event":"lagged","missed":300}"#), Duration::ZERO),
            (None, RECOLLECT),
        ] {
            let (agent_end, ours) = tokio::net::UnixStream::pair().unwrap();
            let fake = fake_agent(agent_end, event);
            let (rd, wr) = ours.into_split();
            let mut agent = Agent::over(rd, wr);
            let t = tokio::time::Instant::now();
            let answer = wait_for(&mut agent, "o", None, Duration::from_secs(3600))
                .await
                .unwrap();
            assert_eq!(&answer[..], b"hi");
            assert!(t.elapsed() <= within, "{event:?}: {:?}", t.elapsed());
            drop(agent);
            assert_eq!(fake.await.unwrap(), 2, "{event:?}");
        }
    }
}
