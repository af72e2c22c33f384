//! `rdv agent`: the long-running client. One client (Tor bootstrapped once), the offers waiting
//! for answers kept in a state directory and looked after on the answer flow's schedule, cover
//! traffic if asked for, and the local API on a Unix socket (docs/AGENT.md). The API's messages,
//! the state directory and the scheduling decisions are the library's (`rdv::agent`); this file
//! is the process around them.

use crate::cli::AgentArgs;
use crate::error::CliError;
use crate::out::note;
use crate::transport::{make_client, Session};
use anyhow::{anyhow, bail, Context, Result};
use rdv::agent::api::{self, event, ApiError, Reply, Request};
use rdv::agent::schedule::{delete_at, pick, Cover, Decoy};
use rdv::agent::state::{new_id, LaterDelete, StateDir};
use rdv::client::{CollectError, ErrorKind, PendingAnswer};
use rdv::proto::schedule::LookSchedule;
use rdv::proto::{
    kdf, ClientPolicy, DeleteToken, KdfLimits, KdfProfile, Locator, Passphrase, RdvLink, ServerAddr,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
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

/// A bucket the agent knows, for decoy fetches, until it expires (unix seconds, local clock).
#[derive(Clone)]
struct Known {
    server: ServerAddr,
    locator: Locator,
    until: u64,
}

/// The running agent.
struct Agent {
    client: Session,
    state: StateDir,
    schedule: LookSchedule,
    /// Event lines for subscribers.
    events: broadcast::Sender<String>,
    /// The look task of each offer waiting for its answer.
    lookers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Buckets for decoy fetches.
    known: Mutex<Vec<Known>>,
    transport: &'static str,
    cover: Cover,
    started: std::time::Instant,
}

fn now() -> u64 {
    rdv::clock::Clock::now(&rdv::clock::SystemClock)
}

/// How long after its link expired the agent still looks for an answer: an accepter that fetched
/// the link just before then answers a moment later.
const ANSWER_GRACE_SECS: u64 = 600;

/// How far ahead a later delete is drawn by default, seconds.
const DELETE_WITHIN_SECS: u64 = 3600;

fn random_id() -> String {
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    new_id(random)
}

/// An API error from a command-line error, with the command line's stable code.
fn api_error(e: &anyhow::Error) -> ApiError {
    let (code, kind) = crate::error::code(e);
    ApiError {
        code: code.into(),
        kind: kind.as_str().into(),
        message: format!("{e:#}"),
    }
}

fn bad_input(message: impl Into<String>) -> anyhow::Error {
    CliError::new("invalid_input", ErrorKind::BadInput, message).into()
}

impl Agent {
    fn event(&self, name: &str, mut fields: Map<String, Value>) {
        fields.insert("event".into(), Value::String(name.into()));
        // Nobody listening is fine.
        let _ = self.events.send(Value::Object(fields).to_string());
    }

    fn remember(&self, server: ServerAddr, locator: Locator, until: u64) {
        if let Ok(mut k) = self.known.lock() {
            let now = now();
            k.retain(|b| b.until > now);
            if !k.iter().any(|b| b.locator == locator) && k.len() < 1024 {
                k.push(Known {
                    server,
                    locator,
                    until,
                });
            }
        }
    }

    /// Look after offer `id` until its answer comes or its link expires.
    fn look_after(self: &Arc<Self>, id: String, pending: PendingAnswer) {
        let me = self.clone();
        let key = id.clone();
        let task = tokio::spawn(async move {
            loop {
                // Until the link expires (no accepter can fetch it after that), and a little
                // longer for an answer sent just before.
                let last = pending.link_expires().saturating_add(ANSWER_GRACE_SECS);
                let wait =
                    Duration::from_secs(last.saturating_sub(now().max(pending.polls_from())));
                match me
                    .client
                    .collect_scheduled(&pending, me.schedule, wait)
                    .await
                {
                    Ok(answer) => {
                        if let Err(e) = me.state.save_answer(&id, &answer) {
                            tracing::error!(error = %rdv::config::report(&e), "keeping an answer failed; it is lost");
                        }
                        let mut f = Map::new();
                        f.insert("offer".into(), json!(id));
                        api::put_bytes(&mut f, "answer", &answer);
                        me.event(event::ANSWERED, f);
                        break;
                    }
                    Err(CollectError::NoAnswerYet) if now() >= last => {
                        let _ = me.state.forget(&id);
                        me.event(event::EXPIRED, {
                            let mut f = Map::new();
                            f.insert("offer".into(), json!(id));
                            f
                        });
                        break;
                    }
                    Err(e) => {
                        // Tor down, the servers unreachable: keep trying, on the schedule.
                        tracing::info!(error = %rdv::config::report(&e), "looking for an answer failed; trying again later");
                        tokio::time::sleep(me.schedule.next_look_in(rand::random())).await;
                    }
                }
            }
            if let Ok(mut l) = me.lookers.lock() {
                l.remove(&id);
            }
        });
        if let Ok(mut l) = self.lookers.lock() {
            if let Some(old) = l.insert(key, task) {
                old.abort();
            }
        }
    }

    /// Carry out the later delete `id` at its moment, then forget it. Failures that may pass
    /// (Tor, the server) are retried after a pause, until the link has surely expired.
    fn delete_later(self: &Arc<Self>, id: String, d: LaterDelete) {
        let me = self.clone();
        tokio::spawn(async move {
            let wait = d.at.saturating_sub(now());
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let parsed = RdvLink::parse(d.link.trim())
                .ok()
                .zip(DeleteToken::parse(d.token.trim()));
            let Some((link, token)) = parsed else {
                let _ = me.state.forget_delete(&id);
                return;
            };
            // Give up a day after the moment: the link expired long before (the TTL is at most
            // a day by default) and nothing is left to delete.
            let give_up = d.at.saturating_add(86_400);
            let deleted = loop {
                match me.client.delete(&link, &token).await {
                    Ok(()) => break Some(true),
                    Err(rdv::client::DeleteError::NothingToDelete) => break Some(false),
                    Err(e) if now() < give_up => {
                        tracing::info!(error = %rdv::config::report(&e), "a later delete failed; trying again");
                        tokio::time::sleep(me.schedule.next_look_in(rand::random())).await;
                    }
                    Err(_) => break None,
                }
            };
            let _ = me.state.forget_delete(&id);
            let mut f = Map::new();
            f.insert("delete".into(), json!(id));
            f.insert("deleted".into(), json!(deleted == Some(true)));
            me.event(event::DELETED, f);
        });
    }

    fn stop_looking(&self, id: &str) {
        if let Some(t) = self.lookers.lock().ok().and_then(|mut l| l.remove(id)) {
            t.abort();
        }
    }

    /// Send cover traffic until the process ends.
    async fn cover(self: Arc<Self>) {
        loop {
            let Some((pause, kind)) = self.cover.next(rand::random(), rand::random()) else {
                return;
            };
            tokio::time::sleep(pause).await;
            match kind {
                Decoy::Mailbox => {
                    // A mailbox nobody uses, on a server the agent knows, looked into for a
                    // while as a waiting initiator would.
                    if let Some(server) = self.known_bucket().map(|k| k.server) {
                        tokio::spawn(self.clone().decoy_mailbox(server));
                    }
                }
                Decoy::Fetch => {
                    if let Some(k) = self.known_bucket() {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _ = me.client.decoy_fetch(&k.server, k.locator).await;
                        });
                    }
                }
            }
        }
    }

    /// Look into a mailbox nobody uses on the look schedule, for a random lifetime.
    async fn decoy_mailbox(self: Arc<Self>, server: ServerAddr) {
        use rand::RngCore;
        let mut mailbox = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut mailbox);
        let until = tokio::time::Instant::now() + Cover::mailbox_lifetime(rand::random());
        loop {
            let _ = self
                .client
                .decoy_look(&server, rdv::proto::MailboxAddr(mailbox))
                .await;
            let next = tokio::time::Instant::now() + self.schedule.next_look_in(rand::random());
            if next > until {
                return;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    fn known_bucket(&self) -> Option<Known> {
        let k = self.known.lock().ok()?;
        let now = now();
        let live: Vec<&Known> = k.iter().filter(|b| b.until > now).collect();
        pick(live.len(), rand::random()).map(|i| live[i].clone())
    }

    async fn handle(self: &Arc<Self>, request: Request) -> Result<Value> {
        match request {
            Request::Status {} => Ok(self.status()),
            Request::Offer {
                servers,
                payload,
                payload_base64,
                passphrase,
                kdf,
                two_channel,
                expect_answer,
                hold,
                delete_after_close_secs,
            } => {
                let payload = api::bytes_of(&payload, &payload_base64)
                    .map_err(|e| bad_input(format!("payload: {e}")))?
                    .ok_or_else(|| {
                        bad_input("the payload is missing (payload or payload_base64)")
                    })?;
                self.offer(OfferRequest {
                    servers,
                    payload: zeroize::Zeroizing::new(payload),
                    passphrase: passphrase.map(zeroize::Zeroizing::new),
                    kdf,
                    two_channel,
                    expect_answer,
                    hold,
                    delete_after_close_secs,
                })
                .await
            }
            Request::Accept {
                link,
                passphrase,
                answer,
                answer_base64,
            } => {
                let answer = api::bytes_of(&answer, &answer_base64)
                    .map_err(|e| bad_input(format!("answer: {e}")))?;
                self.accept(&link, passphrase, answer).await
            }
            Request::Collect { offer } => {
                if let Some(answer) = self.state.answer(&offer)? {
                    self.stop_looking(&offer);
                    self.state.forget(&offer)?;
                    let mut f = Map::new();
                    f.insert("offer".into(), json!(offer));
                    api::put_bytes(&mut f, "answer", &answer);
                    return Ok(Value::Object(f));
                }
                if self.state.has(&offer) {
                    return Err(CliError::new(
                        "no_answer_yet",
                        ErrorKind::Transient,
                        "no answer yet; the agent keeps looking",
                    )
                    .into());
                }
                Err(CliError::new(
                    "no_such_offer",
                    ErrorKind::BadInput,
                    format!("the agent keeps no offer {offer:?} (collected, forgotten or expired)"),
                )
                .into())
            }
            Request::Forget { offer } => {
                self.stop_looking(&offer);
                self.state.forget(&offer)?;
                Ok(json!({ "offer": offer, "forgotten": true }))
            }
            Request::Delete {
                link,
                token,
                later,
                within_secs,
            } => {
                let link = zeroize::Zeroizing::new(link);
                let token = zeroize::Zeroizing::new(token);
                let parsed = RdvLink::parse(link.trim()).context("invalid link")?;
                let parsed_token = DeleteToken::parse(token.trim())
                    .ok_or_else(|| bad_input("the deletion token does not parse"))?;
                if !later {
                    self.client.delete(&parsed, &parsed_token).await?;
                    return Ok(json!({ "deleted": true }));
                }
                let now = now();
                // The link's expiry is not in the link: a day bounds it by default.
                let at = delete_at(
                    now,
                    within_secs.unwrap_or(DELETE_WITHIN_SECS),
                    now + 86_400,
                    rand::random(),
                );
                let id = random_id();
                // Kept without the passphrase: a delete needs the server, the locator and the
                // token, and a copy of the state directory must not open the link.
                let link =
                    zeroize::Zeroizing::new(parsed.without_passphrase().to_uri().to_string());
                let d = LaterDelete { at, link, token };
                self.state.save_delete(&id, &d)?;
                self.delete_later(id.clone(), d);
                Ok(json!({ "delete": id, "at": at, "deleted": false }))
            }
            // Handled by the connection.
            Request::Subscribe {} => Ok(json!({ "subscribed": true })),
        }
    }

    fn status(&self) -> Value {
        let pending: Vec<Value> = self
            .state
            .pending()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, p)| {
                json!({
                    "offer": id,
                    "servers": p.servers().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "looks_from": p.polls_from(),
                    "link_expires": p.link_expires(),
                    "answered": self.state.answer(&id).ok().flatten().is_some(),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "transport": self.transport,
            "uptime_secs": self.started.elapsed().as_secs(),
            "state_dir": self.state.path().display().to_string(),
            "cover_mailboxes_per_hour": self.cover.mailboxes_per_hour,
            "cover_fetches_per_hour": self.cover.fetches_per_hour,
            "pending": pending,
        })
    }

    async fn offer(self: &Arc<Self>, r: OfferRequest) -> Result<Value> {
        if r.servers.is_empty() {
            return Err(bad_input("give at least one server"));
        }
        let servers = r
            .servers
            .iter()
            .map(|t| ServerAddr::parse(t).with_context(|| format!("server {t:?}")))
            .collect::<Result<Vec<_>>>()?;
        let kdf = KdfProfile::parse(r.kdf.as_deref().unwrap_or("default")).context("kdf")?;
        kdf::check_profile(kdf, &KdfLimits::default()).context("kdf")?;
        let passphrase = match r.passphrase.as_deref() {
            Some(p) if p.is_empty() => return Err(bad_input("the passphrase is empty")),
            Some(p) => Passphrase::new(p.as_str()),
            None => rdv::client::generate_passphrase(),
        };
        let (offer, pending) = if r.expect_answer {
            let (o, p) = self
                .client
                .offer_to_all_expecting_answer(&servers, &r.payload, passphrase, kdf)
                .await?;
            (o, Some(p))
        } else {
            (
                self.client
                    .offer_to_all(&servers, &r.payload, passphrase, kdf)
                    .await?,
                None,
            )
        };
        let mut kept = Kept::default();
        match self.after_store(&r, &offer, pending, &mut kept).await {
            Ok(v) => Ok(v),
            Err(e) => {
                // Nothing was handed over: the link comes back off the server, and what was kept
                // for it goes (as `rdv offer` does when it cannot finish).
                if let Some(id) = &kept.offer {
                    self.stop_looking(id);
                    let _ = self.state.forget(id);
                }
                if let Some(id) = &kept.delete {
                    let _ = self.state.forget_delete(id);
                }
                let what = match self.client.delete(&offer.link, &offer.delete_token).await {
                    Ok(()) => "nothing was handed over, and the link was deleted from the server",
                    Err(_) => "nothing was handed over; the link could not be deleted and expires by itself",
                };
                Err(e.context(what))
            }
        }
    }

    /// An offer's stored link made ready to hand over: its later delete and its answer
    /// looked after (noted in `kept` as they are saved), with `hold` the close waited for.
    async fn after_store(
        self: &Arc<Self>,
        r: &OfferRequest,
        offer: &rdv::client::Offer,
        pending: Option<PendingAnswer>,
        kept: &mut Kept,
    ) -> Result<Value> {
        let info = offer.server_info;
        let closes_at = offer.bucket.created.saturating_add(info.open_window_secs);
        let expires = now().saturating_add(
            offer
                .bucket
                .created
                .saturating_add(info.ttl_secs)
                .saturating_sub(info.server_time),
        );
        for (server, locator) in offer.link.servers() {
            self.remember(server, locator, expires);
        }
        // A delete decided at the offer, at a fixed time after the close: it follows no fetch
        // and no answer (docs/ANONYMITY.md: every link deleted 3 h after its close keeps the
        // set). Past the link's expiry there is nothing left to delete.
        let mut scheduled_delete = None;
        if let Some(after) = r.delete_after_close_secs {
            let close_here = now().saturating_add(closes_at.saturating_sub(info.server_time));
            let at = close_here.saturating_add(after);
            if at < expires {
                let id = random_id();
                let d = LaterDelete {
                    at,
                    link: zeroize::Zeroizing::new(
                        offer.link.without_passphrase().to_uri().to_string(),
                    ),
                    token: zeroize::Zeroizing::new(offer.delete_token.to_text().to_string()),
                };
                self.state.save_delete(&id, &d)?;
                kept.delete = Some(id.clone());
                self.delete_later(id.clone(), d);
                scheduled_delete = Some((id, at));
            }
        }
        let id = match pending {
            Some(p) => {
                let id = random_id();
                self.state.save_pending(&id, &p)?;
                kept.offer = Some(id.clone());
                self.look_after(id.clone(), p);
                Some(id)
            }
            None => None,
        };
        let servers: Vec<String> = offer
            .link
            .servers()
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        let mut f = Map::new();
        if let Some(id) = &id {
            f.insert("offer".into(), json!(id));
        }
        f.insert("servers".into(), json!(servers));
        f.insert("bucket_closes_at".into(), json!(closes_at));
        self.event(event::STORED, f);
        let mut verified = None;
        if r.hold {
            // As `rdv offer --hold`: past the close by a random pause, then one fetch.
            let closes_in = closes_at.saturating_sub(info.server_time);
            let pause = self.schedule.next_look_in(rand::random());
            tokio::time::sleep(Duration::from_secs(closes_in + 1) + pause).await;
            verified = Some(self.client.verified_links(&offer.link).await?);
        }
        let link = if r.two_channel {
            offer.link.without_passphrase().to_uri()
        } else {
            offer.link.to_uri()
        };
        let mut f = Map::new();
        f.insert("link".into(), json!(&*link));
        if r.two_channel {
            let p = offer
                .link
                .passphrase
                .as_ref()
                .map(|p| p.expose().to_string());
            f.insert("passphrase".into(), json!(p));
        }
        f.insert("delete_token".into(), json!(&*offer.delete_token.to_text()));
        f.insert("bucket_closes_at".into(), json!(closes_at));
        f.insert("servers".into(), json!(servers));
        f.insert("held".into(), json!(r.hold));
        f.insert("two_channel".into(), json!(r.two_channel));
        f.insert("bucket_seq".into(), json!(offer.bucket.seq));
        f.insert("answer_expected".into(), json!(r.expect_answer));
        if let Some(id) = id {
            f.insert("offer".into(), json!(id));
        }
        if let Some(k) = verified {
            f.insert("links_verified".into(), json!(k));
        }
        if let Some((id, at)) = scheduled_delete {
            f.insert("delete".into(), json!(id));
            f.insert("delete_at".into(), json!(at));
        }
        Ok(Value::Object(f))
    }

    async fn accept(
        self: &Arc<Self>,
        link: &str,
        passphrase: Option<String>,
        answer: Option<Vec<u8>>,
    ) -> Result<Value> {
        let link = RdvLink::parse(link.trim()).context("invalid link")?;
        kdf::check_profile(link.kdf, &KdfLimits::default()).context("the link's KDF profile")?;
        let answer = answer.map(zeroize::Zeroizing::new);
        if let Some(a) = &answer {
            if a.is_empty() || a.len() > rdv::proto::answer::MAX_ANSWER {
                return Err(CliError::new(
                    "answer_invalid",
                    ErrorKind::BadInput,
                    format!(
                        "the answer is {} bytes, an answer holds 1 to {}",
                        a.len(),
                        rdv::proto::answer::MAX_ANSWER
                    ),
                )
                .into());
            }
        }
        let passphrase = passphrase.map(|p| Passphrase::new(zeroize::Zeroizing::new(p).as_str()));
        let found = self.client.accept(&link, passphrase).await?;
        let answered = match (&found.reply, &answer) {
            (Some(reply), Some(a)) => {
                self.client.answer(reply, a).await?;
                true
            }
            (None, Some(_)) => {
                return Err(CliError::new(
                    "no_answer_expected",
                    ErrorKind::BadInput,
                    "this link does not expect an answer; the answer was not sent",
                )
                .into())
            }
            _ => false,
        };
        for (server, locator) in link.servers() {
            // The bucket lives at most a TTL; a day is enough for decoy fetches of it.
            self.remember(server, locator, now() + 86_400);
        }
        let mut f = Map::new();
        f.insert("index".into(), json!(found.index));
        f.insert("tried".into(), json!(found.tried));
        f.insert("links_verified".into(), json!(found.links_verified));
        f.insert("answer_expected".into(), json!(found.reply.is_some()));
        f.insert("answered".into(), json!(answered));
        api::put_bytes(&mut f, "payload", &found.payload);
        Ok(Value::Object(f))
    }
}

/// What the agent kept for an offer, to forget if the offer cannot be finished.
#[derive(Default)]
struct Kept {
    offer: Option<String>,
    delete: Option<String>,
}

struct OfferRequest {
    servers: Vec<String>,
    payload: zeroize::Zeroizing<Vec<u8>>,
    passphrase: Option<zeroize::Zeroizing<String>>,
    kdf: Option<String>,
    two_channel: bool,
    expect_answer: bool,
    hold: bool,
    delete_after_close_secs: Option<u64>,
}

/// Serve one API connection: requests run concurrently, replies and events go out as lines.
async fn connection(agent: Arc<Agent>, stream: tokio::net::UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if wr.write_all(line.as_bytes()).await.is_err() || wr.write_all(b"\n").await.is_err() {
                return;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(rd).lines();
    let mut subscribed = false;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => break,
        };
        if line.len() > api::MAX_LINE {
            let _ = tx
                .send(reply_error(
                    Value::Null,
                    "invalid_input",
                    "bad-input",
                    "request line too long",
                ))
                .await;
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (id, request) = match api::parse_line(&line) {
            Ok(r) => r,
            Err((id, why)) => {
                let _ = tx
                    .send(reply_error(id, "invalid_input", "bad-input", &why))
                    .await;
                continue;
            }
        };
        tracing::debug!(op = request.op(), "API request");
        if matches!(request, Request::Subscribe {}) && !subscribed {
            subscribed = true;
            let mut events = agent.events.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(line) => {
                            if tx.send(line).await.is_err() {
                                return;
                            }
                        }
                        // A subscriber that fell behind misses the oldest events, not the rest.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        let (agent, tx) = (agent.clone(), tx.clone());
        tokio::spawn(async move {
            let reply = match agent.handle(request).await {
                Ok(result) => Reply {
                    id,
                    ok: true,
                    result: Some(result),
                    error: None,
                },
                Err(e) => Reply {
                    id,
                    ok: false,
                    result: None,
                    error: Some(api_error(&e)),
                },
            };
            let _ = tx
                .send(serde_json::to_string(&reply).unwrap_or_default())
                .await;
        });
    }
    drop(tx);
    let _ = writer.await;
}

fn reply_error(id: Value, code: &str, kind: &str, message: &str) -> String {
    serde_json::to_string(&Reply {
        id,
        ok: false,
        result: None,
        error: Some(ApiError {
            code: code.into(),
            kind: kind.into(),
            message: message.into(),
        }),
    })
    .unwrap_or_default()
}

/// Bind the socket: its directory made private (0700), a stale socket of a dead agent removed,
/// a live agent's left alone, the socket itself 0600.
async fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            rdv::agent::state::create_private_dir(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
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
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another agent answers on {} already (a second one needs --socket PATH and --state-dir DIR of its own)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
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

/// Run `rdv agent`.
pub(crate) async fn run(a: AgentArgs) -> Result<()> {
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => default_socket()?,
    };
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => state_home()?.join("agent"),
    };
    let state = StateDir::open(&state_dir)?;
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
    let client = make_client(&a.transport, None, ClientPolicy::default()).await?;
    note!(
        "agent: {transport} ready after {:.1} s; state in {}",
        started.elapsed().as_secs_f64(),
        state.path().display()
    );
    if a.check {
        // The socket's directory must be usable too.
        let listener = bind(&socket).await?;
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        println!(
            "ok: {transport} ready, state directory {}, socket {} usable",
            state.path().display(),
            socket.display()
        );
        return Ok(());
    }
    let listener = bind(&socket).await?;
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
        known: Mutex::default(),
        transport,
        cover: Cover {
            mailboxes_per_hour: a.cover_mailboxes,
            fetches_per_hour: a.cover_fetches,
        },
        started,
    });
    // The offers of an earlier run: look after those still waiting for their answer.
    let mut resumed = 0;
    for (id, pending) in agent.state.pending()? {
        if agent.state.answer(&id)?.is_none() {
            for (server, locator) in pending
                .copies()
                .iter()
                .map(|c| (c.server.clone(), c.locator))
            {
                agent.remember(server, locator, pending.link_expires());
            }
            agent.look_after(id, pending);
            resumed += 1;
        }
    }
    if resumed > 0 {
        note!("agent: looking after {resumed} offer(s) kept from an earlier run");
    }
    for (id, d) in agent.state.deletes_kept()? {
        agent.delete_later(id, d);
    }
    if agent.cover.any() {
        tokio::spawn(agent.clone().cover());
    }
    println!("agent listening on {}", socket.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let stop = crate::serve::signal_listener();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(agent.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    note!("agent: stopped; the offers it looks after are kept in its state directory");
    Ok(())
}
