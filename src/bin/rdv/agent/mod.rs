//! `rdv agent`: the long-running client. One client (Tor bootstrapped once), the offers waiting
//! for answers kept in a state directory and looked after on the answer flow's schedule, cover
//! traffic if asked for, and the local API on a Unix socket (docs/AGENT.md). The API's messages,
//! the state directory and the scheduling decisions are the library's (`rdv::agent`); the
//! operations are `ops.rs`, their timed work (looks, later deletes, cover) `timers.rs`, and
//! the offers between request and delivered reply `ledger.rs`; this file is the process around
//! them: socket, connections, start.

mod ledger;
mod ops;
mod timers;

use crate::cli::AgentArgs;
use crate::error::CliError;
use crate::out::note;
use crate::transport::make_client;
use anyhow::{anyhow, bail, Context, Result};
pub(crate) use ledger::kept_text;
use ledger::AfterReply;
use ops::{api_error, Agent};
use rdv::agent::api::{self, Reply, Request};
use rdv::agent::schedule::{Cover, Warming};
use rdv::agent::state::StateDir;
use rdv::client::ErrorKind;
use rdv::proto::schedule::LookSchedule;
use rdv::proto::ClientPolicy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// The agent's socket when `--socket` is not given: `$XDG_RUNTIME_DIR/rdv/agent.sock`, or
/// `~/.local/state/rdv/agent.sock`.
pub(crate) fn default_socket() -> Result<PathBuf> {
    if let Some(d) = absolute_env("XDG_RUNTIME_DIR") {
        return Ok(d.join("rdv").join("agent.sock"));
    }
    Ok(state_home()?.join("agent.sock"))
}

/// An environment variable naming a directory, if it is an absolute path: an empty or relative one
/// is to be ignored (XDG Base Directory specification), never taken relative to the working
/// directory.
fn absolute_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// `$XDG_STATE_HOME/rdv` or `~/.local/state/rdv`.
fn state_home() -> Result<PathBuf> {
    if let Some(d) = absolute_env("XDG_STATE_HOME") {
        return Ok(d.join("rdv"));
    }
    let home = absolute_env("HOME").ok_or_else(|| {
        anyhow!("neither HOME nor XDG_STATE_HOME is set to an absolute path: pass --state-dir")
    })?;
    Ok(home.join(".local").join("state").join("rdv"))
}

/// How many requests of one connection run at once. A client that sends more waits: its next
/// request is read once one of these has been answered, so one that never reads its replies
/// stops being read instead of growing the agent's memory.
const MAX_IN_FLIGHT: usize = 32;
/// How long a line may wait to go out to a client whose socket takes nothing (it stopped
/// reading: a suspended process, a stuck loop). Then the connection is closed, and its replies
/// not delivered count as such: an offer's link is taken back, an answer stays for the next
/// collect (before, one such client kept that answer from every other collect for as long as
/// it lived).
const WRITE_PATIENCE: Duration = Duration::from_secs(20);
/// How many API connections are served at once; one more is told `agent_busy` and closed.
const MAX_CONNECTIONS: usize = 256;
/// How long a stop waits for the offers in flight and takes back the links of those that
/// reached nobody.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A line for the connection's writer; with `delivered`, the writer says whether it reached
/// the socket.
struct Out {
    line: String,
    /// Text shared with other lines (a status): the line is `line`, this, and `}`.
    shared: Option<Arc<str>>,
    delivered: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Out {
    fn plain(line: String) -> Self {
        Out {
            line,
            shared: None,
            delivered: None,
        }
    }

    /// The reply to request `id` whose result is the JSON text `result`, shared (as a
    /// [`Reply`] line: `id`, `ok`, `result`).
    fn shared_result(id: &Value, result: Arc<str>) -> Self {
        Out {
            line: format!("{{\"id\":{id},\"ok\":true,\"result\":"),
            shared: Some(result),
            delivered: None,
        }
    }
}

/// What reading one request line gave.
enum Line {
    /// A line (in the buffer, without its newline).
    Read,
    /// A line longer than [`api::MAX_LINE`] bytes: not read further.
    TooLong,
    /// The end of the connection, or a read that failed.
    End,
}

/// Read one request line of at most [`api::MAX_LINE`] bytes into `buf`.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Line {
    use tokio::io::AsyncReadExt;
    buf.clear();
    let limit = api::MAX_LINE as u64 + 1;
    match r.take(limit).read_until(b'\n', buf).await {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if buf.last() == Some(&b'\n') => {
            buf.pop();
            Line::Read
        }
        Ok(_) if buf.len() > api::MAX_LINE => Line::TooLong,
        Ok(_) => Line::Read,
    }
}

/// Write `out` as one line, made terminal-safe ([`crate::out::terminal_safe`]); its shared
/// text in pieces of at most [`SHARED_PIECE`] bytes. Each piece goes through a buffer made to
/// its size and wiped when dropped (a write given up included): the line may hold a link, a
/// passphrase, a payload or an answer.
async fn write_out(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    out: &mut Out,
) -> std::io::Result<()> {
    async fn piece(
        wr: &mut tokio::net::unix::OwnedWriteHalf,
        text: &str,
        end: &str,
    ) -> std::io::Result<()> {
        let mut safe = zeroize::Zeroizing::new(String::with_capacity(
            crate::out::terminal_safe_len(text) + end.len(),
        ));
        crate::out::terminal_safe_into(text, &mut safe);
        safe.push_str(end);
        wr.write_all(safe.as_bytes()).await
    }
    let Some(shared) = out.shared.take() else {
        return piece(wr, &out.line, "\n").await;
    };
    piece(wr, &out.line, "").await?;
    let mut rest: &str = &shared;
    while !rest.is_empty() {
        let mut end = rest.len().min(SHARED_PIECE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, after) = rest.split_at(end);
        piece(wr, head, "").await?;
        rest = after;
    }
    wr.write_all(b"}\n").await
}

/// The largest piece of a shared text written at once.
const SHARED_PIECE: usize = 16 * 1024;

/// Serve one API connection: requests run concurrently (at most [`MAX_IN_FLIGHT`]), replies
/// and events go out as lines. An offer whose reply cannot be written (the client is gone, or
/// took nothing for [`WRITE_PATIENCE`]) is taken back.
async fn connection(agent: Arc<Agent>, stream: tokio::net::UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(async move {
        while let Some(mut out) = rx.recv().await {
            // Peers' text (payloads, answers) with nothing a terminal or a line splitter acts on
            // (U+2028, U+0085, bidi controls escaped as in the commands' JSON); then wiped, as
            // the line held it. A shared text is written piece by piece: a copy of it per
            // writer would be as many copies as clients that read slowly.
            let written = tokio::time::timeout(WRITE_PATIENCE, write_out(&mut wr, &mut out))
                .await
                .map_or_else(
                    |_| {
                        tracing::info!(
                            "an API client took no line for {} s; its connection is closed",
                            WRITE_PATIENCE.as_secs()
                        );
                        false
                    },
                    |r| r.is_ok(),
                );
            zeroize::Zeroize::zeroize(&mut out.line);
            if let Some(d) = out.delivered {
                let _ = d.send(written);
            }
            if !written {
                // The client is gone, or reads nothing: every later line fails to send (an
                // offer's reply then counts as not delivered, and its link is taken back), and
                // no more of its requests are read.
                break;
            }
        }
    });
    let mut reader = tokio::io::BufReader::new(rd);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = Vec::new();
    let mut events_task: Option<tokio::task::JoinHandle<()>> = None;
    // The offer whose events alone this connection receives, if it said one (`subscribe`).
    let filter: Arc<Mutex<Option<String>>> = Arc::default();
    // The offers whose answers this connection took with `keep` and has not forgotten yet.
    let kept: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    loop {
        let turn = tokio::select! {
            turn = in_flight.clone().acquire_owned() => turn,
            // Given up while all its requests were in flight.
            () = tx.closed() => break,
        };
        // Never closed.
        let Ok(turn) = turn else {
            break;
        };
        let read = tokio::select! {
            read = read_line(&mut reader, &mut buf) => read,
            // The writer gave up on this client: nothing it asks for now could be answered,
            // and the connection's place goes to another.
            () = tx.closed() => break,
        };
        let line = match read {
            Line::Read => buf.as_slice(),
            Line::End => break,
            Line::TooLong => {
                let _ = tx
                    .send(bad_line(Value::Null, "request line too long"))
                    .await;
                break;
            }
        };
        let Ok(line) = std::str::from_utf8(line) else {
            let id = api::id_of_refused(&String::from_utf8_lossy(line));
            let _ = tx.send(bad_line(id, "the line is not UTF-8")).await;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let (id, request) = match api::parse_line(line) {
            Ok(r) => r,
            Err((id, why)) => {
                let _ = tx.send(bad_line(id, &why)).await;
                continue;
            }
        };
        tracing::debug!(op = request.op(), "API request");
        // This connection has the answer where it goes: the offer is forgotten as a delivered
        // answer is (files removed, or retried; gone for collect and status meanwhile).
        if let Request::Forget {
            offer,
            warning: false,
        } = &request
        {
            if kept.lock().is_ok_and(|mut k| k.remove(offer)) {
                agent.collected(offer);
                let done = serde_json::json!({ "offer": offer, "forgotten": true });
                let _ = tx.send(Out::plain(Reply::success(id, done).line())).await;
                continue;
            }
        }
        if let Request::Subscribe { offer: Some(o) } = &request {
            // A filter that can name no offer would receive nothing, silently.
            if !rdv::agent::state::is_offer_id(o) {
                let _ = tx
                    .send(bad_line(
                        id,
                        "subscribe: offer is not an offer ID (o and 16 hex digits)",
                    ))
                    .await;
                continue;
            }
        }
        if let Request::Subscribe { offer } = &request {
            // The filter, set or changed by every subscribe of this connection.
            if let Ok(mut f) = filter.lock() {
                f.clone_from(offer);
            }
        }
        if matches!(request, Request::Subscribe { .. }) && events_task.is_none() {
            let mut events = agent.events.subscribe();
            let tx = tx.clone();
            let filter = filter.clone();
            events_task = Some(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok((about, line)) => {
                            let wanted = filter
                                .lock()
                                .map(|f| f.is_none() || *f == about)
                                .unwrap_or(true);
                            if wanted && tx.send(Out::plain(line)).await.is_err() {
                                return;
                            }
                        }
                        // A subscriber that fell behind misses the oldest events, not the rest,
                        // and is told so: one waiting for an answer whose event it missed asks
                        // again (before, it waited out its whole wait with the answer in).
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let line = serde_json::json!({
                                "event": api::event::LAGGED,
                                "missed": missed,
                            })
                            .to_string();
                            if tx.send(Out::plain(line)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        let (agent, tx, kept) = (agent.clone(), tx.clone(), kept.clone());
        // An offer counts as in flight until its reply is delivered: a stop waits for it.
        // Any other request counts until its reply is written: a stop lets it finish.
        let (flight, request_in_flight) = match request {
            Request::Offer { .. } => (agent.offers.enter(), None),
            _ => (None, Some(agent.requests.enter())),
        };
        tokio::spawn(async move {
            // A status: one text for every caller asking at the same time (`status_shared`).
            if let Request::Status {} = request {
                let out = match agent.status_shared().await {
                    Ok(text) => Out::shared_result(&id, text),
                    Err(e) => Out::plain(ops::failure(id, &e).line()),
                };
                let _ = tx.send(out).await;
                drop(request_in_flight);
                drop(turn);
                return;
            }
            let (reply, after) = match agent.handle(request).await {
                Ok((result, Some(AfterReply::Offer(back)))) => match agent.claim(&back) {
                    Ok(true) => (Reply::success(id, result), Some(AfterReply::Offer(back))),
                    // A stop took the link back before its reply went out: say so.
                    Ok(false) => (Reply::failure(id, api_error(&ledger::stopping())), None),
                    // Its delivery cannot be recorded: it is not delivered.
                    Err(e) => {
                        let what = agent.take_back(back).await;
                        (Reply::failure(id, api_error(&e.context(what))), None)
                    }
                },
                Ok((result, after)) => (Reply::success(id, result), after),
                Err(e) => (ops::failure(id, &e), None),
            };
            // Listed before the reply goes out: the caller's `forget` may come right after it.
            if let (Some(AfterReply::Kept(offer)), Ok(mut k)) = (&after, kept.lock()) {
                k.insert(offer.clone());
            }
            let (ack, delivered) = tokio::sync::oneshot::channel();
            let out = Out {
                line: reply.line(),
                shared: None,
                delivered: Some(ack),
            };
            drop(reply);
            let delivered = tx.send(out).await.is_ok() && delivered.await.unwrap_or(false);
            match (delivered, after) {
                (true, Some(AfterReply::Offer(back))) => agent.handed_over(back),
                (false, Some(AfterReply::Offer(back))) => {
                    // Its link reached nobody: it must not stay in the bucket.
                    let what = agent.take_back(back).await;
                    tracing::info!(
                        "an offer's reply could not be delivered (its client is gone): {what}"
                    );
                }
                (true, Some(AfterReply::Collected(offer))) => agent.collected(&offer),
                (false, Some(AfterReply::Collected(offer) | AfterReply::Kept(offer))) => {
                    if let Ok(mut k) = kept.lock() {
                        k.remove(&offer);
                    }
                    agent.collect_ended(&offer);
                    tracing::info!(
                        "a collected answer's reply could not be delivered (its client is gone); the answer is kept for the next collect"
                    )
                }
                // Forgotten when the caller says so, or kept when its connection ends.
                (true, Some(AfterReply::Kept(_))) => {}
                (_, None) => {}
            }
            drop(flight);
            drop(request_in_flight);
            drop(turn);
        });
    }
    // The client closed its side: no more events for it (its task would hold the connection,
    // and its place among the agent's connections, until the next event). Replies to requests
    // in flight still go out.
    if let Some(t) = events_task {
        t.abort();
    }
    drop(tx);
    let _ = writer.await;
    // Answers taken with `keep` and never forgotten: their caller may not have them (it ended
    // before saying so), so they stay for the next collect. The writer is done, so every
    // request's task has sent its reply (and listed what it kept) by now.
    let left: Vec<String> = kept
        .lock()
        .map(|mut k| k.drain().collect())
        .unwrap_or_default();
    for offer in left {
        agent.collect_ended(&offer);
    }
}

/// Tell a connection beyond [`MAX_CONNECTIONS`] why it is closed (bounded: a client that does
/// not read cannot hold the task).
async fn turn_away(mut stream: tokio::net::UnixStream) {
    let busy = CliError::new(
        "agent_busy",
        ErrorKind::Transient,
        format!(
            "the agent serves at most {MAX_CONNECTIONS} connections at once; close one and try again"
        ),
    );
    let mut line = Reply::failure(Value::Null, api_error(&busy.into())).line();
    line.push('\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
}

/// The reply to a line that is no request.
fn bad_line(id: Value, why: &str) -> Out {
    let e = CliError::new("invalid_input", ErrorKind::BadInput, why);
    Out::plain(Reply::failure(id, api_error(&e.into())).line())
}

/// Bind the socket: its directory made private (0700), a stale socket of a dead agent removed,
/// a live agent's left alone, the socket itself 0600.
async fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            rdv::agent::state::create_private_dir(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // A directory others may enter or write to would let them at the socket in the moment
        // before it is made 0600, or replace it: refused, not changed (it may not be ours).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir_shown = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let mode = std::fs::metadata(dir_shown)
                .with_context(|| format!("reading {}", dir_shown.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "the socket's directory {} is open to others (mode {:o}); give --socket a path in a private directory (chmod 700), or one that does not exist yet (it is then created private)",
                    dir_shown.display(),
                    mode & 0o777
                );
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        #[cfg(unix)]
        let socket = std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type());
        #[cfg(not(unix))]
        let socket = false;
        if !socket {
            bail!(
                "{} exists and is not a socket; the agent replaces only a socket an agent left behind (choose another --socket, or remove it yourself)",
                path.display()
            );
        }
        // Only a socket nobody listens on is stale: refused. A live agent whose queue of
        // connections is full (it is stopped, or busy) answers EAGAIN, and was taken for a dead
        // one, its socket replaced and the agent left unreachable (a helper's attack).
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => bail!(
                "another agent answers on {} already (a second one needs --socket PATH and --state-dir DIR of its own)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!(
                "cannot tell whether an agent listens on {} ({e}; one that is stopped or overloaded answers so): it is left alone; stop that agent, or give this one another --socket",
                path.display()
            ),
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::new(e)
                    .context(format!("removing the stale socket {}", path.display())))
            }
            _ => {}
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(listener)
}

/// The device and inode of the file at `path` (not following a link), if there is one.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// For `rdv agent --check`: reach what the transport needs besides the embedded Tor (which
/// `make_client` bootstrapped): the SOCKS proxy (its SOCKS5 greeting answered), or the
/// `--direct` server (an `Info` request answered). What the "ok" line says of it.
async fn check_transport(
    t: &crate::cli::TransportArgs,
    client: &rdv::client::Client,
) -> Result<String> {
    use tokio::io::AsyncReadExt;
    if let Some(proxy) = &t.socks {
        let greet = async {
            let mut s = tokio::net::TcpStream::connect(proxy.as_str()).await?;
            // SOCKS5, the two methods the client offers: none, and a user name and password
            // (what isolates its circuits on a tor).
            s.write_all(&[5, 2, 0, 2]).await?;
            let mut reply = [0u8; 2];
            s.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        return match tokio::time::timeout(t.connect_timeout, greet).await {
            Ok(Ok([5, 0 | 2])) => Ok(format!(" (the SOCKS proxy at {proxy} answers)")),
            Ok(Ok(r)) => bail!("--socks {proxy}: not a SOCKS5 proxy that takes this client (its greeting was answered with {r:?})"),
            Ok(Err(e)) => bail!("--socks {proxy}: the SOCKS proxy cannot be reached: {e}"),
            Err(_) => bail!("--socks {proxy}: the SOCKS proxy did not answer within {} (--connect-timeout)", humantime::format_duration(t.connect_timeout)),
        };
    }
    match t.direct.as_deref() {
        Some("") => Ok(" (each server is reached when a request names it: none to check)".into()),
        Some(target) => {
            let addr = rdv::proto::ServerAddr::parse(target)
                .map_err(|e| anyhow::anyhow!("--direct {target}: {e}"))?;
            client
                .info(&addr)
                .await
                .with_context(|| format!("--direct {target}: the server cannot be reached"))?;
            Ok(format!(" (the server at {target} answers)"))
        }
        None => Ok(String::new()),
    }
}

/// Run `rdv agent`.
pub(crate) async fn run(a: AgentArgs) -> Result<()> {
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => default_socket()?,
    };
    if a.status {
        return crate::via_agent::status(socket).await;
    }
    if let Some(offer) = a.forget_warning {
        return crate::via_agent::forget_warning(socket, offer).await;
    }
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => state_home()?.join("agent"),
    };
    let state = StateDir::open(&state_dir)?;
    // Every request in flight may hold a connection to a server (a helper's attack: 40 API
    // connections of 32 accepts each used up a soft limit of 1024, and every look failed with
    // "Too many open files" for a minute).
    crate::serve::raise_file_limit();
    let transport = if a.transport.direct.is_some() {
        "direct"
    } else if a.transport.socks.is_some() {
        "socks"
    } else {
        "tor"
    };
    // The agent serves any server: the onion note and the client key's server check use the
    // key's own server, or none.
    let started = std::time::Instant::now();
    let policy = ClientPolicy {
        max_skew_secs: a.max_skew.as_secs(),
        max_open_window_secs: a.max_window.as_secs(),
        max_seq: a.max_seq,
        min_effort: a.stamps.min_effort,
        max_effort: a.stamps.max_effort,
    };
    let client = make_client(&a.transport, &[], policy)
        .await?
        .with_copy_spread(a.spread)
        .with_answer_every_copy(a.answer_every_copy);
    note!(
        "agent: {transport} ready after {:.1} s; state in {}",
        started.elapsed().as_secs_f64(),
        state.path().display()
    );
    // Links stored and never handed over (the agent was killed before their replies went out):
    // taken back below; what was kept for their offers is forgotten first, so that it is not
    // looked after. Nothing is written for it: a start on a full disk works.
    if !a.check {
        // What a crash left behind and nothing reads (temporary files, answers of forgotten
        // offers).
        for e in state.sweep() {
            note!(
                "agent: cannot remove {}; left in place",
                rdv::config::report(&e)
            );
        }
    }
    let records = state.undelivered_kept()?;
    if !a.check {
        for (_, u) in &records.kept {
            if let Some(o) = &u.offer {
                let _ = state.forget(o);
            }
            for l in &u.deletes {
                let _ = state.forget_delete(l);
            }
        }
    }
    // What the state directory holds; a file that cannot be read is named and left in place
    // (it may be the only copy of an offer's secrets), the rest is looked after.
    let offers = state.pending()?;
    let deletes = state.deletes_kept()?;
    let trails = state.trails_kept()?;
    let warnings = state.warnings_kept()?;
    let decoys = state.decoys_kept()?;
    // An answer that came and cannot be read is not looked for again (it came): named, as
    // every other file that cannot be used. Before, only `status` listed it.
    let answers_unreadable: Vec<_> = offers
        .kept
        .iter()
        .filter_map(|(id, _)| state.answer(id).err())
        .collect();
    let unreadable: Vec<String> = offers
        .unreadable
        .iter()
        .chain(&answers_unreadable)
        .chain(&deletes.unreadable)
        .chain(&records.unreadable)
        .chain(&trails.unreadable)
        .chain(&warnings.unreadable)
        .map(|e| rdv::config::report(e).to_string())
        .collect();
    for e in &unreadable {
        note!("agent: cannot use {e}; the file is left in place and skipped");
    }
    // A decoy file holds nothing worth keeping: one that cannot be read goes (named), rather
    // than fail every --check until someone removes it by hand.
    for e in &decoys.unreadable {
        match e {
            rdv::agent::state::StateError::BadDecoy { path } if !a.check => {
                match std::fs::remove_file(path) {
                    Ok(()) => note!(
                        "agent: removed {}: not a decoy file of this agent (decoys hold nothing of value)",
                        path.display()
                    ),
                    Err(err) => note!(
                        "agent: cannot use {} and cannot remove it ({err}); skipped",
                        path.display()
                    ),
                }
            }
            _ => note!(
                "agent: cannot use {}; {}",
                rdv::config::report(e),
                if a.check { "a start removes a decoy file that does not parse" } else { "skipped" }
            ),
        }
    }
    if a.check {
        if !unreadable.is_empty() {
            bail!(
                "{} file(s) of the state directory {} cannot be used (named above): move them away or repair them",
                unreadable.len(),
                state.path().display()
            );
        }
        // The socket's directory must be usable too.
        let listener = bind(&socket).await?;
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        // What the transport reaches: the embedded Tor bootstrapped above; a SOCKS proxy or a
        // --direct server is asked here (before, "ok" came without contacting either).
        let reached = check_transport(&a.transport, &client).await?;
        println!(
            "ok: {transport} ready{reached}, state directory {}, socket {} usable",
            state.path().display(),
            socket.display()
        );
        return Ok(());
    }
    let listener = bind(&socket).await?;
    // What this agent bound, to remove at its stop only that (not a socket another agent put
    // at the path after this one's was removed).
    let bound = socket_identity(&socket);
    let (events, _) = broadcast::channel(256);
    let agent = Arc::new(Agent {
        client,
        state,
        schedule: LookSchedule {
            mean: a.poll_every,
            early: false,
        },
        events,
        lookers: Mutex::default(),
        trails: Mutex::default(),
        deleters: Mutex::default(),
        offers: ledger::Offers::new(),
        requests: ledger::Requests::new(),
        known: Mutex::default(),
        unsaved: Mutex::default(),
        collecting: Mutex::default(),
        delivered: Mutex::default(),
        look_for_secs: a.look_for.as_secs(),
        transport,
        cover: Cover {
            mailboxes_per_hour: a.cover_mailboxes,
            fetches_per_hour: a.cover_fetches,
        },
        warming: Warming {
            keep: usize::from(a.spares),
            mean: a.spare_every,
        },
        started,
        status_share: ops::StatusShare::default(),
    });
    // The offers of an earlier run: look after those still waiting for their answer.
    let mut resumed = 0;
    for (id, pending) in offers.kept {
        // An answer file that cannot be read is still an answer that came: not looked for again.
        if matches!(agent.state.answer(&id), Ok(None)) {
            for (server, locator) in pending
                .copies()
                .iter()
                .map(|c| (c.server.clone(), c.locator))
            {
                agent.remember(server, locator, agent.known_until(pending.polls_from()));
            }
            agent.look_after(id, pending);
            resumed += 1;
        }
    }
    if resumed > 0 {
        note!("agent: looking after {resumed} offer(s) kept from an earlier run");
    }
    if !trails.kept.is_empty() {
        note!(
            "agent: looking at the other copies of {} answered offer(s) again, as an earlier run did",
            trails.kept.len()
        );
    }
    // What ended trails found, for `status` until the warning is forgotten (nothing on a clock
    // removes it: a clock ahead at the start must not wipe what a user has not seen).
    for (id, w) in warnings.kept {
        note!(
            "agent: WARNING: offer {id}: a copy of its link held a different answer (on {}); someone else holds the link and its passphrase (rdv agent --forget-warning {id} once seen)",
            w.differing.join(", ")
        );
        if let Ok(mut t) = agent.trails.lock() {
            t.insert(
                id,
                ops::Trail {
                    copies: w.copies,
                    differing: w.differing,
                    ended: Some(std::time::Instant::now()),
                },
            );
        }
    }
    for (id, kept) in trails.kept {
        agent.resume_trail(id, kept);
    }
    // Decoy mailboxes go on as the offers do, whether or not this run sends cover: ended at a
    // restart, they stood out among the mailboxes whose looks went on.
    for (id, kept) in decoys.kept {
        agent.resume_decoy(id, kept);
    }
    if !records.kept.is_empty() {
        note!(
            "agent: taking back {} link(s) stored by an earlier run and never handed over",
            records.kept.len()
        );
    }
    // Take-backs now; the other deletes at their moments.
    for (id, u) in records.kept {
        agent.take_back_kept(id, u);
    }
    for (id, d) in deletes.kept {
        agent.delete_later(id, d);
    }
    if agent.cover.any() {
        tokio::spawn(agent.clone().cover());
    }
    if agent.warming.is_on() && (a.transport.direct.is_some() || a.transport.socks.is_some()) {
        note!("note: --spares has no effect with --direct or --socks (embedded Tor only)");
    } else if agent.warming.is_on() {
        eprintln!(
            "WARNING: --spares costs anonymity: a server that publishes a new descriptor every few minutes dates each spare from the introduction and tells operations on spares from all others (docs/AGENT.md, \"Spares\")"
        );
        tokio::spawn(agent.clone().warm_spares());
    }
    println!("agent listening on {}", socket.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let stop = crate::serve::signal_listener();
    tokio::pin!(stop);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match connections.clone().try_acquire_owned() {
                    Ok(place) => {
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            connection(agent, stream).await;
                            drop(place);
                        });
                    }
                    // Told why, and closed: the agent's memory and descriptors stay bounded
                    // whatever its user's programs do.
                    Err(_) => {
                        tokio::spawn(turn_away(stream));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    if bound.is_some() && socket_identity(&socket) == bound {
        let _ = std::fs::remove_file(&socket);
    }
    // An offer's link reaches nobody once the agent is gone: offers in flight finish (their
    // replies delivered), held ones and those whose reply finds nobody are taken back. Bounded,
    // so that a server that does not answer cannot keep the agent from stopping.
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    let (taken, unfinished) = agent.stop_offers(STOP_WITHIN).await;
    // The other requests in flight (a command's delete of a link it could not hand over, an
    // accept's answer) finish too, within the same bound; the connections stay served.
    let requests_left = agent.requests.settle(deadline).await;
    if taken > 0 {
        note!("agent: took back {taken} offer(s) whose link had not been handed over");
    }
    if unfinished > 0 {
        note!("agent: {unfinished} offer(s) not handed over could not be taken back (the server did not answer within {} s); the next start takes them back", STOP_WITHIN.as_secs());
    }
    if requests_left > 0 {
        note!(
            "agent: {requests_left} request(s) did not finish within {} s and were cut off",
            STOP_WITHIN.as_secs()
        );
    }
    note!("agent: stopped; the offers it looks after are kept in its state directory");
    Ok(())
}
