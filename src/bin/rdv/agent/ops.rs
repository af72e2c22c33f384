//! The agent's work: the operations of the API. Their timed work (the looks of the offers it
//! looks after, the later deletes, cover traffic) is `timers.rs`, the offers between request
//! and delivered reply `ledger.rs`; the process around it (socket, connections, start-up)
//! `mod.rs`.

use super::ledger::{kept_text, stopping, AfterReply, Offers, Requests, Stored, TakeBack};
use crate::error::CliError;
use crate::transport::Session;
use anyhow::{Context, Result};
use rdv::agent::api::{self, event, ApiError, Request};
use rdv::agent::schedule::{delete_at, scheduled_delete_at, Cover, Warming};
use rdv::agent::state::{new_id, LaterDelete, StateDir, Undelivered};
use rdv::client::{ErrorKind, PendingAnswer};
use rdv::proto::schedule::LookSchedule;
use rdv::proto::{kdf, DeleteToken, KdfLimits, Locator, Passphrase, RdvLink, ServerAddr};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// A bucket the agent knows, for decoy fetches, until it expires (unix seconds, local clock).
#[derive(Clone)]
pub(super) struct Known {
    pub(super) server: ServerAddr,
    pub(super) locator: Locator,
    pub(super) until: u64,
}

/// The running agent.
pub(super) struct Agent {
    pub(super) client: Session,
    pub(super) state: StateDir,
    pub(super) schedule: LookSchedule,
    /// Event lines for subscribers.
    pub(super) events: broadcast::Sender<(Option<String>, String)>,
    /// The look task of each offer waiting for its answer.
    pub(super) lookers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The task of each later delete.
    pub(super) deleters: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Offers from their request until their reply is delivered.
    pub(super) offers: Offers,
    /// Every other request until its reply is written: a stop waits for them.
    pub(super) requests: Requests,
    /// Buckets for decoy fetches.
    pub(super) known: Mutex<Vec<Known>>,
    /// Answers that came and could not be written to the state directory yet (a full disk),
    /// by offer: `collect` takes them from here while saving is tried again.
    pub(super) unsaved: Mutex<HashMap<String, zeroize::Zeroizing<Vec<u8>>>>,
    /// Offers whose answer is on its way to a `collect` (from the request until its reply is
    /// delivered or fails): another `collect` meanwhile is told so, so that an answer reaches
    /// one caller only.
    pub(super) collecting: Mutex<std::collections::HashSet<String>>,
    /// Offers whose answer reached a `collect` but whose files could not be removed (a
    /// read-only or failing disk): gone for the API (`collect` says `no_such_offer`, `status`
    /// leaves them out) while the removal is tried again. Before, every later `collect` got the
    /// same answer again (a helper's attack, 2026-12-06).
    pub(super) delivered: Mutex<std::collections::HashSet<String>>,
    /// The answered multi-server offers whose other copies are looked at (a trail), or were in
    /// the last hour, with the servers whose copy was found holding another answer: `status`
    /// lists them (`trails`), so that a caller that missed the events, or came after the end,
    /// learns what they found.
    pub(super) trails: Mutex<HashMap<String, Trail>>,
    /// How long after its close an offer's answer is looked for (`--look-for`).
    pub(super) look_for_secs: u64,
    pub(super) transport: &'static str,
    pub(super) cover: Cover,
    pub(super) warming: Warming,
    pub(super) started: std::time::Instant,
    /// The status, computed for many callers at once ([`Agent::status_shared`]).
    pub(super) status_share: StatusShare,
}

/// One status computation at a time, off the runtime's threads, its text shared by every
/// caller that asked before it started: a status reads every state file, and a client asking
/// for it 32 at a time on many connections, or never reading the replies, made the agent hold
/// a copy per request (a helper's attack, 2026-12-07: 1.1 GB, other requests waiting 17 s).
#[derive(Default)]
pub(super) struct StatusShare {
    turn: tokio::sync::Mutex<()>,
    /// How many computations have started.
    started: std::sync::atomic::AtomicU64,
    /// The latest: its number (counted from 1) and its text.
    latest: Mutex<Option<(u64, Arc<str>)>>,
}

/// The most files `status` names as unusable (each named at the agent's start).
const UNREADABLE_LISTED: usize = 100;

/// The looks at an answered multi-server offer's other copies.
pub(super) struct Trail {
    /// How many copies are looked at.
    pub(super) copies: usize,
    /// The servers of those found holding another answer so far.
    pub(super) differing: Vec<String>,
    /// When the looks ended, if they did: kept for [`TRAIL_KEPT`] after, so that a collect
    /// that comes after the end still learns what they found.
    pub(super) ended: Option<std::time::Instant>,
}

impl Trail {
    /// Whether `status` still lists it: going on, ended within [`TRAIL_KEPT`], or ended
    /// having found a copy holding another answer (kept in `warnings/ID` too, until that
    /// warning is forgotten).
    pub(super) fn shown(&self) -> bool {
        self.ended.is_none_or(|e| e.elapsed() < TRAIL_KEPT) || !self.differing.is_empty()
    }
}

/// How long the agent remembers what an ended trail found when every copy held the same
/// answer (in memory only: no secret).
pub(super) const TRAIL_KEPT: Duration = Duration::from_secs(3600);

pub(super) fn now() -> u64 {
    rdv::clock::Clock::now(&rdv::clock::SystemClock)
}

/// How far ahead a later delete is drawn by default, seconds.
const DELETE_WITHIN_SECS: u64 = 3600;

/// Within how long the other copies of a multi-server link whose delete is asked for now are
/// deleted, each at a moment of its own (as `rdv delete`'s default `--spread`), seconds.
const NOW_DELETE_WITHIN_SECS: u64 = 600;

fn random_id() -> String {
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    new_id(random)
}

/// Of the deletes scheduled for a link's copies (`delete`, `server`, `at`), the one a reply
/// names as `delete` and `delete_at`/`at`, as for a link on one server: the last, after which
/// the link is gone from every server.
fn last_delete(scheduled: &[Value]) -> Option<&Value> {
    scheduled.iter().max_by_key(|d| d["at"].as_u64())
}

/// A failure's reply: its error, and what the request got before it failed, if anything (an
/// accept whose answer was not sent: the accept's result).
pub(super) fn failure(id: Value, e: &anyhow::Error) -> api::Reply {
    let mut reply = api::Reply::failure(id, api_error(e));
    reply.result = crate::error::partial(e).map(|f| Value::Object(f.clone()));
    reply
}

/// An API error from a command-line error, with the command line's stable code.
pub(super) fn api_error(e: &anyhow::Error) -> ApiError {
    let (code, kind) = crate::error::code(e);
    ApiError {
        code: code.into(),
        kind: kind.as_str().into(),
        message: format!("{e:#}"),
    }
}

fn no_such_offer(offer: &str) -> anyhow::Error {
    CliError::new(
        "no_such_offer",
        ErrorKind::BadInput,
        format!("the agent keeps no offer {offer:?} (collected, forgotten or expired)"),
    )
    .into()
}

fn bad_input(message: impl Into<String>) -> anyhow::Error {
    CliError::new("invalid_input", ErrorKind::BadInput, message).into()
}

impl Agent {
    pub(super) fn event(&self, name: &str, mut fields: Map<String, Value>) {
        fields.insert("event".into(), Value::String(name.into()));
        // Nobody listening is fine.
        let offer = fields
            .get("offer")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let _ = self.events.send((offer, Value::Object(fields).to_string()));
    }

    pub(super) fn remember(&self, server: ServerAddr, locator: Locator, until: u64) {
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

    /// Until when a bucket that closes at `closes_at` is kept for decoy fetches: as long as an
    /// offer's answer is looked for, not the lifetime the server advertised (which it could set
    /// per connection, and see one agent's decoy fetches of a bucket stop early).
    pub(super) fn known_until(&self, closes_at: u64) -> u64 {
        closes_at.saturating_add(self.look_for_secs)
    }

    /// Carry out one request: its result, and for a stored offer what takes it back if the
    /// reply cannot be delivered.
    pub(super) async fn handle(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(Value, Option<AfterReply>)> {
        match request {
            // Connections take a status to `status_shared` before this (one text for every
            // caller); here for any other caller of `handle`.
            Request::Status {} => Ok((self.status(), None)),
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
                min_k,
            } => {
                let answer = api::bytes_of(&answer, &answer_base64)
                    .map_err(|e| bad_input(format!("answer: {e}")))?;
                Ok((self.accept(&link, passphrase, answer, min_k).await?, None))
            }
            Request::Collect { offer, keep } => {
                if self.was_delivered(&offer) {
                    return Err(no_such_offer(&offer));
                }
                let first = self
                    .collecting
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the agent's collect table is unusable"))?
                    .insert(offer.clone());
                if !first {
                    return Err(CliError::new(
                        "collect_in_progress",
                        ErrorKind::Transient,
                        "another collect of this offer is receiving its answer now; if its reply fails, the answer stays for the next collect",
                    )
                    .into());
                }
                // Marked from here until the reply is delivered or fails (after the reply), or
                // until this request ends without an answer to hand over.
                let mark = CollectMark {
                    agent: self.as_ref(),
                    offer: Some(offer.clone()),
                };
                let unsaved = self
                    .unsaved
                    .lock()
                    .ok()
                    .and_then(|u| u.get(&offer).cloned());
                let answer = unsaved
                    .map_or_else(|| self.state.answer(&offer), |a| Ok(Some(a)))
                    .map_err(|e| match e {
                        rdv::agent::state::StateError::BadId(_) => anyhow::Error::from(e),
                        e => CliError::new(
                            "offer_unreadable",
                            ErrorKind::Local,
                            format!("{}; the answer that came for this offer cannot be read: repair the file, or forget the offer", rdv::config::report(&e)),
                        )
                        .into(),
                    })?;
                if let Some(answer) = answer {
                    self.stop_looking(&offer);
                    let mut f = Map::new();
                    f.insert("offer".into(), json!(offer));
                    api::put_bytes(&mut f, "answer", &answer);
                    // Forgotten once the reply is delivered (with `keep`: once the caller
                    // says it has the answer where it goes), not before: a client gone
                    // meanwhile would lose the answer. The mark stays until then.
                    mark.keep();
                    if keep {
                        return Ok((Value::Object(f), Some(AfterReply::Kept(offer))));
                    }
                    return Ok((Value::Object(f), Some(AfterReply::Collected(offer))));
                }
                if self.state.has(&offer) {
                    // An offer file that cannot be read is looked after by nobody: not "the
                    // agent keeps looking".
                    if let Err(e) = self.state.pending_of(&offer) {
                        return Err(CliError::new(
                            "offer_unreadable",
                            ErrorKind::Local,
                            format!("{}; the agent cannot look for this offer's answer: repair the file, or forget the offer", rdv::config::report(&e)),
                        )
                        .into());
                    }
                    return Err(CliError::new(
                        "no_answer_yet",
                        ErrorKind::Transient,
                        "no answer yet; the agent keeps looking",
                    )
                    .into());
                }
                Err(no_such_offer(&offer))
            }
            Request::Forget {
                offer,
                warning: true,
            } => {
                // What a trail found, kept until a user says it was seen: asked for by name,
                // never as a side effect of forgetting the offer (a command forgets the offer
                // right after its collect, before it shows what the trail found).
                match self.forget_warning(&offer)? {
                    true => Ok((
                        json!({ "offer": offer, "warning": true, "forgotten": true }),
                        None,
                    )),
                    false => Err(CliError::new(
                        "no_such_warning",
                        ErrorKind::BadInput,
                        format!("the agent keeps no warning for offer {offer:?} (none was found, its looks at the other copies go on, or it was forgotten)"),
                    )
                    .into()),
                }
            }
            Request::Forget { offer, .. } => {
                if !self.state.has(&offer) {
                    return Err(no_such_offer(&offer));
                }
                // The files first: a forget that fails (a read-only disk) leaves the offer
                // looked after, as `status` and `collect` go on saying. Before, its looks were
                // stopped first and nobody looked for the answer until a restart (a helper's
                // attack, 2026-12-07). A look that finds the answer meanwhile finds the offer
                // gone and leaves nothing behind.
                self.state.forget(&offer)?;
                self.stop_looking(&offer);
                if let Ok(mut u) = self.unsaved.lock() {
                    u.remove(&offer);
                }
                Ok((json!({ "offer": offer, "forgotten": true }), None))
            }
            Request::Delete {
                link,
                token,
                later,
                within_secs,
            } => {
                let link = zeroize::Zeroizing::new(link);
                let token = zeroize::Zeroizing::new(token);
                if within_secs.is_some() && !later {
                    return Err(bad_input(
                        "within_secs is for a later delete: give later: true too, or leave it out",
                    ));
                }
                let parsed = RdvLink::parse(link.trim()).context("invalid link")?;
                let parsed_token = DeleteToken::parse(token.trim())
                    .ok_or_else(|| bad_input("the deletion token does not parse"))?;
                if !later && parsed.mirrors.is_empty() {
                    self.client.delete(&parsed, &parsed_token).await?;
                    return Ok((json!({ "deleted": true }), None));
                }
                // A multi-server link's delete asked for now: one copy (drawn) now, each other
                // at a moment of its own within ten minutes, kept and carried out as a later
                // delete. Chained a spread pause apart, the copies' deletes (each naming its
                // entry, and so its store time) paired 57-62 % of the copies for servers
                // comparing notes (a helper's attack, 2026-12-06; `rdv delete` without an
                // agent does the same, waiting).
                let copies = parsed.servers().len();
                let mut deleted = false;
                let mut now_done = None;
                if !later {
                    let i = rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..copies);
                    if let Some((copy, copy_token)) =
                        rdv::client::copy_of(&parsed, &parsed_token, i)
                    {
                        match self.client.delete(&copy, &copy_token).await {
                            Ok(()) => (deleted, now_done) = (true, Some(i)),
                            Err(rdv::client::DeleteError::NothingToDelete) => now_done = Some(i),
                            // Tried again at a moment of its own, like the others.
                            Err(e) => {
                                tracing::info!(error = %rdv::config::report(&e), "deleting a copy now failed; it is deleted later, at a moment of its own")
                            }
                        }
                    }
                }
                let within = match later {
                    true => within_secs.unwrap_or(DELETE_WITHIN_SECS),
                    false => NOW_DELETE_WITHIN_SECS,
                };
                let now = now();
                // Each copy of a multi-server link at a moment drawn on its own: one moment
                // for all (with the copies a spread pause apart) put their deletes side by
                // side for servers comparing notes.
                let mut scheduled = Vec::new();
                let mut kept: Vec<(String, LaterDelete)> = Vec::new();
                for i in (0..copies).filter(|i| Some(*i) != now_done) {
                    let Some((copy, copy_token)) = rdv::client::copy_of(&parsed, &parsed_token, i)
                    else {
                        break;
                    };
                    // The link's expiry is not in the link: a day bounds it by default.
                    let at = delete_at(now, within, now + 86_400, rand::random());
                    let id = random_id();
                    // Kept without the passphrase: a delete needs the server, the locator and
                    // the token, and a copy of the state directory must not open the link.
                    let (link, token) = kept_text(&copy, &copy_token);
                    let d = LaterDelete { at, link, token };
                    // All kept or none: a failed request must not leave some copies' deletes.
                    if let Err(e) = self.state.save_delete(&id, &d) {
                        for (id, _) in &kept {
                            let _ = self.state.forget_delete(id);
                        }
                        return Err(e.into());
                    }
                    scheduled
                        .push(json!({ "delete": id, "server": copy.server.to_string(), "at": at }));
                    kept.push((id, d));
                }
                for (id, d) in kept {
                    self.delete_later(id, d);
                }
                let last = last_delete(&scheduled).cloned().unwrap_or_default();
                let reply = json!({ "delete": last["delete"], "at": last["at"],
                    "deletes": scheduled, "deleted": deleted });
                Ok((reply, None))
            }
            // Handled by the connection.
            Request::Subscribe { .. } => Ok((json!({ "subscribed": true }), None)),
        }
    }

    /// Forget what the ended trail of `offer` found, in memory and on disk; `true` if there
    /// was such a warning. Under the trail table's lock, which the trail's end holds while it
    /// writes the warning and marks the end: a forget comes wholly before that end (nothing
    /// to forget yet) or wholly after it. A trail still going keeps what it found.
    fn forget_warning(&self, offer: &str) -> Result<bool> {
        let mut trails = self
            .trails
            .lock()
            .map_err(|_| anyhow::anyhow!("the agent's trail table is unusable"))?;
        if trails.get(offer).is_some_and(|t| t.ended.is_none()) {
            return Ok(false);
        }
        let in_memory = trails.get(offer).is_some_and(|t| !t.differing.is_empty())
            && trails.remove(offer).is_some();
        let on_disk = match self.state.forget_warning(offer) {
            Ok(removed) => removed,
            // Not an ID this agent hands out: nothing of its can be kept under it.
            Err(rdv::agent::state::StateError::BadId(_)) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(in_memory || on_disk)
    }

    /// The status as JSON text, computed after this call began (never older), shared with
    /// every caller waiting for the same computation ([`StatusShare`]).
    pub(super) async fn status_shared(self: &Arc<Self>) -> Result<Arc<str>> {
        use std::sync::atomic::Ordering;
        let share = &self.status_share;
        let asked_after = share.started.load(Ordering::SeqCst);
        let _turn = share.turn.lock().await;
        // One that started after this call began has ended while it waited: as fresh.
        if let Some((n, text)) = share.latest.lock().ok().and_then(|l| l.clone()) {
            if n > asked_after {
                return Ok(text);
            }
        }
        let n = share.started.fetch_add(1, Ordering::SeqCst) + 1;
        let me = self.clone();
        let text: Arc<str> = tokio::task::spawn_blocking(move || me.status().to_string())
            .await
            .map_err(|e| anyhow::anyhow!("computing the status failed: {e}"))?
            .into();
        if let Ok(mut l) = share.latest.lock() {
            *l = Some((n, text.clone()));
        }
        Ok(text)
    }

    fn status(&self) -> Value {
        let report = |e: &rdv::agent::state::StateError| rdv::config::report(e).to_string();
        let offers = self.state.pending();
        let deletes = self.state.deletes_kept();
        // Files that cannot be read, and a directory that cannot be listed.
        let mut unreadable: Vec<String> = Vec::new();
        let mut pending = Vec::new();
        match offers {
            Ok(scan) => {
                unreadable.extend(scan.unreadable.iter().map(report));
                pending = scan.kept;
            }
            Err(e) => unreadable.push(report(&e)),
        }
        for scan in [
            deletes.map(|s| s.unreadable),
            self.state.undelivered_kept().map(|s| s.unreadable),
            self.state.trails_kept().map(|s| s.unreadable),
            self.state.warnings_kept().map(|s| s.unreadable),
            self.state.decoys_kept().map(|s| s.unreadable),
        ] {
            match scan {
                Ok(bad) => unreadable.extend(bad.iter().map(report)),
                Err(e) => unreadable.push(report(&e)),
            }
        }
        let unsaved: Vec<String> = self
            .unsaved
            .lock()
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default();
        let trails: Vec<Value> = self
            .trails
            .lock()
            .map(|mut t| {
                t.retain(|_, t| t.shown());
                let mut t: Vec<_> = t
                    .iter()
                    .map(|(id, t)| {
                        json!({"offer": id, "copies": t.copies,
                            "different_answers": t.differing, "ended": t.ended.is_some()})
                    })
                    .collect();
                t.sort_by(|a, b| a["offer"].as_str().cmp(&b["offer"].as_str()));
                t
            })
            .unwrap_or_default();
        let pending: Vec<Value> = pending
            .into_iter()
            .filter(|(id, _)| !self.was_delivered(id))
            .map(|(id, p)| {
                let answered = match self.state.answer(&id) {
                    Ok(a) => a.is_some() || unsaved.contains(&id),
                    // An answer came, but its file cannot be read: named.
                    Err(e) => {
                        unreadable.push(report(&e));
                        true
                    }
                };
                json!({
                    "offer": id,
                    "servers": p.servers().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "looks_from": p.polls_from(),
                    "link_expires": p.link_expires(),
                    "answered": answered,
                })
            })
            .collect();
        if unreadable.len() > UNREADABLE_LISTED {
            let more = unreadable.len() - UNREADABLE_LISTED;
            unreadable.truncate(UNREADABLE_LISTED);
            unreadable.push(format!(
                "and {more} more files that cannot be used (each named when the agent started)"
            ));
        }
        let spares = self.client.spare_counts();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "transport": self.transport,
            "uptime_secs": self.started.elapsed().as_secs(),
            "state_dir": self.state.path().display().to_string(),
            "cover_mailboxes_per_hour": self.cover.mailboxes_per_hour,
            "cover_fetches_per_hour": self.cover.fetches_per_hour,
            "spares": {
                "per_server": self.warming.keep,
                "every_secs": self.warming.mean.as_secs_f64(),
                "made": spares.made,
                "taken": spares.taken,
                "failed": spares.failed,
                "ready": spares.ready,
            },
            "pending": pending,
            "trails": trails,
            "unreadable": unreadable,
        })
    }

    async fn offer(self: &Arc<Self>, r: OfferRequest) -> Result<(Value, Option<AfterReply>)> {
        if r.servers.is_empty() {
            return Err(bad_input("give at least one server"));
        }
        if r.payload.is_empty() {
            // As the command line: an empty link would reach the accepter as nothing.
            return Err(bad_input("the payload is empty"));
        }
        let servers = r
            .servers
            .iter()
            .map(|t| ServerAddr::parse(t).with_context(|| format!("server {t:?}")))
            .collect::<Result<Vec<_>>>()?;
        let kdf = crate::client_config::check_kdf(r.kdf.as_deref().unwrap_or("default"))
            .context("kdf")?;
        if self.offers.is_stopping() {
            return Err(stopping());
        }
        let passphrase = match r.passphrase.as_deref() {
            Some(p) if p.is_empty() => return Err(bad_input("the passphrase is empty")),
            Some(p) => Passphrase::new(p.as_str()),
            None => rdv::client::generate_passphrase(),
        };
        // A stop that comes while a multi-server offer waits to store its next copy ends
        // the wait: the copies stored are taken back, and the caller told the agent stops.
        let stopped = |e: rdv::client::OfferError| match e {
            rdv::client::OfferError::Interrupted => stopping(),
            e => e.into(),
        };
        // Held, as `rdv offer --hold`: the copies' stores further apart, unless the agent was
        // given --spread.
        let held;
        let client = match crate::offer::held_store_spread(r.hold, servers.len()) {
            Some(spread) => {
                held = self.client.alike_with_store_spread(Some(spread));
                &held
            }
            None => &*self.client,
        };
        let (offer, pending) = if r.expect_answer {
            let (o, p) = client
                .offer_to_all_expecting_answer(&servers, &r.payload, passphrase, kdf)
                .await
                .map_err(stopped)?;
            (o, Some(p))
        } else {
            (
                client
                    .offer_to_all(&servers, &r.payload, passphrase, kdf)
                    .await
                    .map_err(stopped)?,
                None,
            )
        };
        // Logged here, and told to the caller in the result (`clock_off`, `after_store`): the
        // command line prints it as it does without an agent.
        if let Some((copy, ahead)) = offer.clock_off() {
            let server = &offer.link.servers()[copy].0;
            tracing::warn!("{}", crate::offer::clock_warning(server, ahead));
        }
        let Some(key) = self.offers.note(Stored::of(&offer)) else {
            // The stop has taken back what was stored before: this one takes itself back.
            let what = self.take_back_link(Stored::of(&offer)).await;
            return Err(stopping().context(what));
        };
        let back = TakeBack { key };
        // Until its reply goes out, the link is recorded as handed to nobody: after a crash the
        // next start takes it back. The IDs of what is kept for it are drawn now, so that the
        // record names them.
        let copies = offer.copies.len();
        let ids = Ids {
            offer: random_id(),
            deletes: match r.delete_after_close_secs {
                Some(_) => (0..copies).map(|_| random_id()).collect(),
                None => Vec::new(),
            },
        };
        let record = random_id();
        let (link, token) = kept_text(&offer.link, &offer.delete_token);
        let u = Undelivered {
            link,
            token,
            offer: pending.as_ref().map(|_| ids.offer.clone()),
            deletes: ids.deletes.clone(),
        };
        if let Err(e) = self.state.save_undelivered(&record, &u) {
            let what = self.take_back(back).await;
            return Err(anyhow::Error::from(e).context(what));
        }
        if !self.offers.keep(key, |k| k.record = Some(record.clone())) {
            let _ = self.state.forget_undelivered(&record);
            return Err(stopping());
        }
        match self.after_store(&r, &offer, pending, back.key, ids).await {
            Ok(v) => Ok((v, Some(AfterReply::Offer(back)))),
            // Nothing was handed over (as `rdv offer` does when it cannot finish).
            Err(e) => Err(e.context(self.take_back(back).await)),
        }
    }

    /// An offer's stored link made ready to hand over: its later delete and its answer
    /// looked after (noted for stored offer `key` as they are saved), with `hold` the close
    /// waited for.
    async fn after_store(
        self: &Arc<Self>,
        r: &OfferRequest,
        offer: &rdv::client::Offer,
        pending: Option<PendingAnswer>,
        key: u64,
        ids: Ids,
    ) -> Result<Value> {
        // When every copy's bucket is closed to every client, on this machine's clock.
        let closes_at = offer.closes_at;
        for (server, locator) in offer.link.servers() {
            self.remember(server, locator, self.known_until(closes_at));
        }
        // A delete decided at the offer, at a fixed time after the close (spread over a tenth of
        // it, at most ten minutes, so that it does not show this machine's clock error): it
        // follows no fetch and no answer (docs/ANONYMITY.md: every link deleted 3 h after its close keeps the
        // set). Each copy of a multi-server link at that time after its own bucket's close:
        // deleted together at the latest close, a copy's delete told its server when another
        // server's bucket closed, and put the copies' deletes side by side for servers
        // comparing notes. Past a copy's expiry there is nothing left to delete.
        let mut scheduled = Vec::new();
        if let Some(after) = r.delete_after_close_secs {
            for ((i, times), id) in offer.copies.iter().enumerate().zip(&ids.deletes) {
                // Nothing to delete once the copy has expired; a spread that would reach past
                // that is moved earlier, whole (whether a copy gets a delete is not a draw).
                let Some(at) =
                    scheduled_delete_at(times.closes_at, after, times.expires_at, rand::random())
                else {
                    continue;
                };
                let Some((copy, token)) = offer.copy(i) else {
                    continue;
                };
                let server = copy.server.to_string();
                let (link, token) = kept_text(&copy, &token);
                let d = LaterDelete { at, link, token };
                self.state.save_delete(id, &d)?;
                if !self.offers.keep(key, |k| k.deletes.push(id.clone())) {
                    // A stop took the link back meanwhile, without this file.
                    let _ = self.state.forget_delete(id);
                    return Err(stopping());
                }
                self.delete_later(id.clone(), d);
                scheduled.push(json!({ "delete": id, "server": server, "at": at }));
            }
        }
        let id = match pending {
            Some(p) => {
                let id = ids.offer.clone();
                self.state.save_pending(&id, &p)?;
                if !self.offers.keep(key, |k| k.offer = Some(id.clone())) {
                    let _ = self.state.forget(&id);
                    return Err(stopping());
                }
                let looks_from = p.polls_from();
                self.look_after(id.clone(), p);
                Some((id, looks_from))
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
        if let Some((id, _)) = &id {
            f.insert("offer".into(), json!(id));
        }
        f.insert("servers".into(), json!(servers));
        f.insert("bucket_closes_at".into(), json!(closes_at));
        self.event(event::STORED, f);
        let mut verified = None;
        if r.hold {
            // As `rdv offer --hold`: each copy's bucket fetched once, past its own close by a
            // random pause (to the close on the wall clock with its fraction of a second, as
            // the looks; the pause drawn afresh if a stop passes it, as every pause).
            let counted = self.client.verified_after_closes(offer, self.schedule.mean);
            let mut stop = self.offers.on_stop();
            verified = Some(tokio::select! {
                k = counted => k?,
                // The agent is stopping: nobody is to get the link (the caller takes it back).
                _ = stop.wait_for(|s| *s) => return Err(stopping()),
            });
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
        // Counted from the store (0 once a held offer's bucket has closed).
        let closes_in = match r.hold {
            true => 0,
            false => closes_at.saturating_sub(now()),
        };
        f.insert("bucket_closes_in_secs".into(), json!(closes_in));
        f.insert("answer_expected".into(), json!(r.expect_answer));
        if let Some((id, looks_from)) = id {
            f.insert("offer".into(), json!(id));
            f.insert("looks_from".into(), json!(looks_from));
        }
        if let Some(k) = verified {
            f.insert("links_verified".into(), json!(k));
        }
        if let Some((copy, ahead)) = offer.clock_off() {
            let server = offer.link.servers()[copy].0.to_string();
            f.insert(
                "clock_off".into(),
                json!({ "server": server, "ahead_secs": ahead }),
            );
        }
        if let Some(last) = last_delete(&scheduled) {
            f.insert("delete".into(), last["delete"].clone());
            f.insert("delete_at".into(), last["at"].clone());
            f.insert("deletes".into(), json!(scheduled));
        }
        Ok(Value::Object(f))
    }

    async fn accept(
        self: &Arc<Self>,
        link: &str,
        passphrase: Option<String>,
        answer: Option<Vec<u8>>,
        min_k: Option<usize>,
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
        // A bucket accepted from, for decoy fetches, whatever comes after (an answer that
        // cannot be sent, too few links).
        for (server, locator) in link.servers() {
            // The bucket lives at most a TTL; a day is enough for decoy fetches of it.
            self.remember(server, locator, now() + 86_400);
        }
        if let Some(why) =
            min_k.and_then(|min| crate::offer::short_of_min_k(found.links_verified, min))
        {
            return Err(crate::accept::too_few_links(why));
        }
        let result = |answered: bool| {
            let mut f = Map::new();
            f.insert("index".into(), json!(found.index));
            f.insert("tried".into(), json!(found.tried));
            f.insert("links_verified".into(), json!(found.links_verified));
            f.insert("answer_expected".into(), json!(found.reply.is_some()));
            f.insert("answered".into(), json!(answered));
            api::put_bytes(&mut f, "payload", &found.payload);
            f
        };
        // The answer not sent: the reply carries the payload all the same (as `rdv accept
        // --json`), so that the caller need not fetch the bucket a second time.
        let opened = |e: anyhow::Error| crate::accept::not_answered(e, result);
        let answered =
            match (&found.reply, &answer) {
                (Some(reply), Some(a)) => {
                    if let Err(e) = self.client.answer(reply, a).await {
                        return Err(opened(e.into()));
                    }
                    true
                }
                (None, Some(_)) => return Err(opened(
                    CliError::new(
                        "no_answer_expected",
                        ErrorKind::BadInput,
                        "this link does not expect an answer (its initiator did not ask for one)",
                    )
                    .into(),
                )),
                _ => false,
            };
        Ok(Value::Object(result(answered)))
    }
}

/// The IDs an offer's state and its later deletes (one per copy) are kept under, drawn before
/// any is saved.
struct Ids {
    offer: String,
    deletes: Vec<String>,
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

/// The mark of a `collect` in progress: removed when the request ends without handing an
/// answer over, kept (for the reply's delivery to end) otherwise.
struct CollectMark<'a> {
    agent: &'a Agent,
    offer: Option<String>,
}

impl CollectMark<'_> {
    fn keep(mut self) {
        self.offer = None;
    }
}

impl Drop for CollectMark<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.offer.take() {
            self.agent.collect_ended(&o);
        }
    }
}
