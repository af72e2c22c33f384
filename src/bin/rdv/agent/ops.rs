//! The agent's work: the operations of the API, the offers it looks after, the later deletes
//! and the cover traffic. The process around it (socket, connections, start-up) is `mod.rs`.

use crate::error::CliError;
use crate::transport::Session;
use anyhow::{Context, Result};
use rdv::agent::api::{self, event, ApiError, Request};
use rdv::agent::schedule::{delete_at, late_delete_at, pick, Cover, Decoy};
use rdv::agent::state::{new_id, LaterDelete, StateDir, Undelivered};
use rdv::client::{CollectError, ErrorKind, PendingAnswer};
use rdv::proto::schedule::LookSchedule;
use rdv::proto::{kdf, DeleteToken, KdfLimits, Locator, Passphrase, RdvLink, ServerAddr};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

/// A bucket the agent knows, for decoy fetches, until it expires (unix seconds, local clock).
#[derive(Clone)]
pub(super) struct Known {
    server: ServerAddr,
    locator: Locator,
    until: u64,
}

/// The running agent.
pub(super) struct Agent {
    pub(super) client: Session,
    pub(super) state: StateDir,
    pub(super) schedule: LookSchedule,
    /// Event lines for subscribers.
    pub(super) events: broadcast::Sender<String>,
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
    /// How long after its close an offer's answer is looked for (`--look-for`).
    pub(super) look_for_secs: u64,
    pub(super) transport: &'static str,
    pub(super) cover: Cover,
    pub(super) started: std::time::Instant,
}

fn now() -> u64 {
    rdv::clock::Clock::now(&rdv::clock::SystemClock)
}

/// An offer whose looks ended while the agent was not running gets its last look within this
/// many seconds of the start, at a moment of its own.
const LAST_LOOK_WITHIN_SECS: u64 = 600;
/// How long a start waits before it ends anything for good on its wall clock's word alone
/// (forgets an offer whose looks are over, gives up a delete): a clock wrong at boot (a laptop
/// before its clock is set) is corrected by then, and the decision is taken again.
const SETTLE: Duration = Duration::from_secs(600);

/// Looks tried past an offer's last moment when they fail (not when they find no answer), each
/// a look pause after the previous one, before the offer is forgotten.
const LAST_LOOK_TRIES: u32 = 3;

/// Within how long of a start the links an earlier run never handed over are taken back.
const TAKE_BACK_WITHIN_SECS: u64 = 60;

/// How long after a failed save of an answer it is saved again.
const ANSWER_SAVE_RETRY: Duration = Duration::from_secs(30);

/// How far ahead a later delete is drawn by default, seconds.
const DELETE_WITHIN_SECS: u64 = 3600;

fn random_id() -> String {
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    new_id(random)
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
    fn event(&self, name: &str, mut fields: Map<String, Value>) {
        fields.insert("event".into(), Value::String(name.into()));
        // Nobody listening is fine.
        let _ = self.events.send(Value::Object(fields).to_string());
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

    /// Look after offer `id` until its answer comes or `--look-for` after its close.
    pub(super) fn look_after(self: &Arc<Self>, id: String, pending: PendingAnswer) {
        let me = self.clone();
        let key = id.clone();
        // The same span after the close for every offer: nothing the server advertised (its
        // TTL, per connection if it likes) decides when the last look comes.
        let last = pending.polls_from().saturating_add(self.look_for_secs);
        let task = tokio::spawn(async move {
            // An offer whose looks ended while the agent was not running gets its one last
            // look at a moment of its own, not at once together with every other such offer,
            // and not before the start has settled: a clock set ahead at the start (by more
            // than --look-for) would have had every offer forgotten at once, for good (a
            // helper's attack: 2 of 20 lost with the clock corrected a minute after the
            // start). The end is decided again after the look, on the clock of then.
            if now() >= last {
                let pause = rand::random::<f64>() * LAST_LOOK_WITHIN_SECS as f64;
                tokio::time::sleep(SETTLE + Duration::from_secs_f64(pause)).await;
            }
            // Failed looks past the last moment: a few are tried again (a Tor circuit that
            // failed once must not lose an answer waiting in the mailbox), then the offer ends.
            let mut late_failures = 0;
            loop {
                // To the last moment on the wall clock with its fraction of a second: in whole
                // seconds the last look would come at that fraction of the second this loop
                // began in (right after the store), and name the store to the server.
                let from = rdv::clock::Clock::now_precise(&rdv::clock::SystemClock)
                    .max(Duration::from_secs(pending.polls_from()));
                let wait = Duration::from_secs(last).saturating_sub(from);
                match me
                    .client
                    .collect_scheduled(&pending, me.schedule, wait)
                    .await
                {
                    Ok(answer) => {
                        let saved = me.state.save_answer(&id, &answer);
                        // A forget that came while the answer was on its way (its abort cannot
                        // stop this task here) leaves no answer behind.
                        if !me.state.has(&id) {
                            let _ = me.state.forget(&id);
                            break;
                        }
                        if let Err(e) = saved {
                            // A full disk: held in memory for `collect`, and saved later by a
                            // task of its own (a collect ends the looks, not the saving).
                            tracing::error!(error = %rdv::config::report(&e), "keeping an answer in the state directory failed; it is held in memory for collect, and saving is tried again every 30 s");
                            if let Ok(mut u) = me.unsaved.lock() {
                                u.insert(id.clone(), zeroize::Zeroizing::new(answer.to_vec()));
                            }
                            tokio::spawn(me.clone().save_answer_later(id.clone()));
                        }
                        let mut f = Map::new();
                        f.insert("offer".into(), json!(id));
                        api::put_bytes(&mut f, "answer", &answer);
                        me.event(event::ANSWERED, f);
                        break;
                    }
                    // The last look is over, whatever it found after a few tries: a server that
                    // is gone, or that answers every look with an error, does not keep it
                    // looking for good.
                    Err(e)
                        if now() >= last
                            && (matches!(e, CollectError::NoAnswerYet)
                                || late_failures + 1 >= LAST_LOOK_TRIES) =>
                    {
                        if !matches!(e, CollectError::NoAnswerYet) {
                            tracing::info!(error = %rdv::config::report(&e), "the last look for an answer failed; the offer is forgotten");
                        }
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
                        if now() >= last {
                            late_failures += 1;
                        }
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

    /// Save the answer to offer `id` held in memory, every 30 s until it works, or until it
    /// was collected or forgotten meanwhile (a restart before then looks for it again: the
    /// mailbox keeps it until the link expires).
    async fn save_answer_later(self: Arc<Self>, id: String) {
        loop {
            tokio::time::sleep(ANSWER_SAVE_RETRY).await;
            let Some(answer) = self.unsaved.lock().ok().and_then(|u| u.get(&id).cloned()) else {
                return;
            };
            // Forgotten while its answer came in: nothing to keep.
            if !self.state.has(&id) {
                if let Ok(mut u) = self.unsaved.lock() {
                    u.remove(&id);
                }
                return;
            }
            // The write and its syncs, off the lock and off the runtime's threads: a slow disk
            // holds up neither collect nor status.
            let me = self.clone();
            let key = id.clone();
            let saved =
                tokio::task::spawn_blocking(move || me.state.save_answer(&key, &answer)).await;
            match saved {
                Ok(Ok(())) => {
                    // A collect or a forget that came during the write removed the answer from
                    // memory first and the files after: what was written after them goes too.
                    let still_held = self
                        .unsaved
                        .lock()
                        .ok()
                        .is_some_and(|mut u| u.remove(&id).is_some());
                    if !still_held || !self.state.has(&id) {
                        let _ = self.state.forget(&id);
                    }
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %rdv::config::report(&e), "keeping an answer failed again; trying again in 30 s")
                }
                Err(e) => {
                    tracing::error!(error = %e, "keeping an answer failed; trying again in 30 s")
                }
            }
        }
    }

    /// A link stored by an earlier run and never handed over (record `id`): nobody received
    /// it, so it is deleted now (a failure is tried again as a later delete's is); its record
    /// goes once that is done. What was kept for its offer the start has forgotten before it
    /// resumed anything.
    pub(super) fn take_back_kept(self: &Arc<Self>, id: String, u: Undelivered) {
        // Within a minute, each at a moment of its own, not in one burst with the looks the
        // start resumes.
        let d = LaterDelete {
            at: now() + (rand::random::<f64>() * TAKE_BACK_WITHIN_SECS as f64) as u64,
            link: u.link,
            token: u.token,
        };
        self.delete_task(id, d, DeleteFile::Undelivered);
    }

    /// Later delete `id` is over (`Some(true)` deleted, `Some(false)` nothing was there, `None`
    /// given up): forget it and say so.
    fn delete_done(&self, id: &str, deleted: Option<bool>, file: DeleteFile) {
        let _ = file.forget(&self.state, id);
        if let Ok(mut d) = self.deleters.lock() {
            d.remove(id);
        }
        let mut f = Map::new();
        f.insert("delete".into(), json!(id));
        f.insert("deleted".into(), json!(deleted == Some(true)));
        self.event(event::DELETED, f);
    }

    /// Carry out the later delete `id` at its moment, then forget it. A failure that may pass
    /// (Tor, the server) is tried again at a fresh moment of its own, 5 to 60 minutes later
    /// ([`late_delete_at`]), until the link has surely expired. A delete kept from an earlier
    /// run whose moment passed while the agent was not running comes at a moment of its own
    /// too ([`Agent::wait_for_delete`]); its record keeps the moment decided at the offer (one
    /// rewritten from a clock wrong at the start stayed wrong after the correction).
    pub(super) fn delete_later(self: &Arc<Self>, id: String, d: LaterDelete) {
        self.delete_task(id, d, DeleteFile::Later)
    }

    /// The task of a delete kept in `file` under `id`.
    fn delete_task(self: &Arc<Self>, id: String, d: LaterDelete, file: DeleteFile) {
        let me = self.clone();
        let key = id.clone();
        let task = tokio::spawn(async move {
            if !me.wait_for_delete(d.at).await {
                return me.delete_done(&id, None, file);
            }
            let parsed = RdvLink::parse(d.link.trim())
                .ok()
                .zip(DeleteToken::parse(d.token.trim()));
            let Some((link, token)) = parsed else {
                let _ = file.forget(&me.state, &id);
                if let Ok(mut d) = me.deleters.lock() {
                    d.remove(&id);
                }
                return;
            };
            // Given up a day after the moment: the link expired long before and nothing is
            // left to delete. A failure is tried again at a moment of its own (deletes that
            // failed during one outage would otherwise all come when it ends).
            let deleted = loop {
                match me.client.delete(&link, &token).await {
                    Ok(()) => break Some(true),
                    Err(rdv::client::DeleteError::NothingToDelete) => break Some(false),
                    Err(e) => match late_delete_at(now(), d.at, rand::random()) {
                        Some(t) => {
                            tracing::info!(error = %rdv::config::report(&e), "a later delete failed; trying again at a moment of its own, 5 to 60 minutes from now");
                            rdv::client::wake::until_wall(
                                &rdv::clock::SystemClock,
                                Duration::from_secs(t),
                            )
                            .await;
                        }
                        None => break None,
                    },
                }
            };
            me.delete_done(&id, deleted, file);
        });
        if let Ok(mut d) = self.deleters.lock() {
            if let Some(old) = d.insert(key, task) {
                old.abort();
            }
        }
    }

    /// Wait for a delete's moment `at` on the wall clock, read again every few seconds (an
    /// agent started with its clock behind deleted an offset late after the clock was
    /// corrected). A moment found passed by more than a few seconds (the agent was not running,
    /// was stopped, or the clock was set ahead) gets a fresh moment of its own, 5 to 60 minutes
    /// on ([`late_delete_at`]): deletes due meanwhile would otherwise all go in the same instant
    /// (a helper's attack saw six at once after a SIGCONT), and tie their links together. After
    /// that the clock is asked again: one set back meanwhile, corrected, waits for the moment
    /// again rather than delete early. `false`: the link has surely expired (a day past its
    /// moment), found so twice ten minutes apart (a clock wrong at the start is corrected by
    /// then), and the delete is given up.
    async fn wait_for_delete(&self, at: u64) -> bool {
        use rdv::client::wake::until_wall;
        let clock = rdv::clock::SystemClock;
        let mut doubted = false;
        // Passed already (a kept delete missed while the agent was not running): late.
        let mut missed = now() > at;
        loop {
            if !std::mem::take(&mut missed) && !until_wall(&clock, Duration::from_secs(at)).await {
                // On time by the clock, or by the time it said was left: only the clock's
                // word that the moment has passed carries a delete out.
                if now() >= at {
                    return true;
                }
                continue;
            }
            match late_delete_at(now(), at, rand::random()) {
                Some(t) => {
                    doubted = false;
                    until_wall(&clock, Duration::from_secs(t)).await;
                }
                None if doubted => return false,
                None => {
                    doubted = true;
                    tokio::time::sleep(SETTLE).await;
                    continue;
                }
            }
            if now() >= at {
                return true;
            }
        }
    }

    fn stop_looking(&self, id: &str) {
        if let Some(t) = self.lookers.lock().ok().and_then(|mut l| l.remove(id)) {
            t.abort();
        }
    }

    /// Send cover traffic until the process ends.
    pub(super) async fn cover(self: Arc<Self>) {
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
            // Late (the process was stopped): a fresh pause, as a real mailbox's look takes;
            // at once, the decoys alone would come together and stand out.
            if rdv::client::wake::until_instant(next).await {
                tokio::time::sleep(self.schedule.next_look_in(rand::random())).await;
            }
        }
    }

    fn known_bucket(&self) -> Option<Known> {
        let k = self.known.lock().ok()?;
        let now = now();
        let live: Vec<&Known> = k.iter().filter(|b| b.until > now).collect();
        pick(live.len(), rand::random()).map(|i| live[i].clone())
    }

    /// Carry out one request: its result, and for a stored offer what takes it back if the
    /// reply cannot be delivered.
    pub(super) async fn handle(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(Value, Option<AfterReply>)> {
        match request {
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
            Request::Collect { offer } => {
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
                if let Some(answer) =
                    unsaved.map_or_else(|| self.state.answer(&offer), |a| Ok(Some(a)))?
                {
                    self.stop_looking(&offer);
                    let mut f = Map::new();
                    f.insert("offer".into(), json!(offer));
                    api::put_bytes(&mut f, "answer", &answer);
                    // Forgotten once the reply is delivered, not before: a client gone
                    // meanwhile would lose the answer. The mark stays until then.
                    mark.keep();
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
            Request::Forget { offer } => {
                if !self.state.has(&offer) {
                    return Err(no_such_offer(&offer));
                }
                self.stop_looking(&offer);
                if let Ok(mut u) = self.unsaved.lock() {
                    u.remove(&offer);
                }
                self.state.forget(&offer)?;
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
                if !later {
                    self.client.delete(&parsed, &parsed_token).await?;
                    return Ok((json!({ "deleted": true }), None));
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
                let (link, token) = kept_text(&parsed, &parsed_token);
                let d = LaterDelete { at, link, token };
                self.state.save_delete(&id, &d)?;
                self.delete_later(id.clone(), d);
                Ok((json!({ "delete": id, "at": at, "deleted": false }), None))
            }
            // Handled by the connection.
            Request::Subscribe {} => Ok((json!({ "subscribed": true }), None)),
        }
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
        let pending: Vec<Value> = pending
            .into_iter()
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
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "transport": self.transport,
            "uptime_secs": self.started.elapsed().as_secs(),
            "state_dir": self.state.path().display().to_string(),
            "cover_mailboxes_per_hour": self.cover.mailboxes_per_hour,
            "cover_fetches_per_hour": self.cover.fetches_per_hour,
            "pending": pending,
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
        let Some(key) = self.offers.note(Stored::of(&offer)) else {
            // The stop has taken back what was stored before: this one takes itself back.
            let what = self.take_back_link(Stored::of(&offer)).await;
            return Err(stopping().context(what));
        };
        let back = TakeBack { key };
        // Until its reply goes out, the link is recorded as handed to nobody: after a crash the
        // next start takes it back. The IDs of what is kept for it are drawn now, so that the
        // record names them.
        let ids = Ids {
            offer: random_id(),
            delete: random_id(),
        };
        let record = random_id();
        let (link, token) = kept_text(&offer.link, &offer.delete_token);
        let u = Undelivered {
            link,
            token,
            offer: pending.as_ref().map(|_| ids.offer.clone()),
            delete: r.delete_after_close_secs.map(|_| ids.delete.clone()),
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

    /// Claim an offer's link for its reply, before the reply is sent: `Ok(false)` if a stop
    /// took the link back already (the reply must then say so, not hand over a deleted link).
    /// Claimed, a stop leaves it to the reply's delivery, and its record as undelivered goes
    /// (from here on a crash leaves the link on the server rather than take back a link its
    /// caller may hold). An error if that record cannot be removed: the reply must not go out.
    pub(super) fn claim(&self, back: &TakeBack) -> Result<bool> {
        let Some(record) = self.offers.claim(back.key) else {
            return Ok(false);
        };
        if let Some(record) = record {
            self.state.forget_undelivered(&record)?;
        }
        Ok(true)
    }

    /// A collected answer's reply was delivered: the offer's secrets and its answer go.
    pub(super) fn collected(&self, offer: &str) {
        if let Ok(mut u) = self.unsaved.lock() {
            u.remove(offer);
        }
        if let Err(e) = self.state.forget(offer) {
            tracing::warn!(
                "a collected answer's files could not be removed: {}",
                rdv::config::report(&e)
            );
        }
        self.collect_ended(offer);
    }

    /// A collect of `offer` is over (its reply delivered, failed, or without an answer): the
    /// next one may have the answer, if it is still kept.
    pub(super) fn collect_ended(&self, offer: &str) {
        if let Ok(mut c) = self.collecting.lock() {
            c.remove(offer);
        }
    }

    /// An offer's reply was delivered: its link is somebody's now.
    pub(super) fn handed_over(&self, back: TakeBack) {
        self.offers.settle(back.key);
    }

    /// Take back an offer whose link was handed to nobody: what was kept for it is forgotten,
    /// its later delete dropped, and the link deleted from the server. Says what happened.
    pub(super) async fn take_back(&self, back: TakeBack) -> &'static str {
        match self.offers.settle(back.key) {
            Some(s) => self.take_back_link(s).await,
            None => "nothing was handed over, and the link was taken back",
        }
    }

    /// The agent is stopping: refuse new offers, wake those held for their bucket's close (they
    /// take their links back), and wait for the offers in flight to deliver their replies or
    /// take their links back, for two thirds of `within`; then take back every stored offer
    /// whose reply has not been claimed, and wait for the rest until `within` (an offer whose
    /// store finishes now takes itself back). Returns how many links were taken back since the
    /// stop began, and how many could not be (their records stay: the next start tries again).
    pub(super) async fn stop_offers(&self, within: Duration) -> (usize, usize) {
        let start = tokio::time::Instant::now();
        self.offers.stopping.send_replace(true);
        let all_settled = || {
            tokio::time::timeout_at(
                start + within,
                self.offers
                    .in_flight
                    .clone()
                    .acquire_many_owned(OFFER_PERMITS),
            )
        };
        let settle_by = start + within * 2 / 3;
        let _ = tokio::time::timeout_at(settle_by, all_settled()).await;
        let left = self.offers.drain();
        let mut cut = left.len();
        for s in left {
            if tokio::time::timeout_at(start + within, self.take_back_link(s))
                .await
                .is_err()
            {
                break;
            }
            cut -= 1;
        }
        let _ = all_settled().await;
        (
            self.offers.taken_back.load(Ordering::Relaxed),
            self.offers.lost.load(Ordering::Relaxed) + cut,
        )
    }

    async fn take_back_link(&self, s: Stored) -> &'static str {
        let Stored {
            link, token, kept, ..
        } = s;
        let record = kept.record.clone();
        if let Some(id) = &kept.offer {
            self.stop_looking(id);
            let _ = self.state.forget(id);
        }
        if let Some(id) = &kept.delete {
            if let Some(t) = self.deleters.lock().ok().and_then(|mut d| d.remove(id)) {
                t.abort();
            }
            let _ = self.state.forget_delete(id);
        }
        let deleted = self.client.delete(&link, &token).await.is_ok();
        // A link that could not be deleted keeps its record (written again if a claim removed
        // it already): the next start tries again.
        if let Some(record) = &record {
            let kept = match deleted {
                true => self.state.forget_undelivered(record),
                false => {
                    let (link, token) = kept_text(&link, &token);
                    let u = Undelivered {
                        link,
                        token,
                        offer: None,
                        delete: None,
                    };
                    self.state.save_undelivered(record, &u)
                }
            };
            if let Err(e) = kept {
                tracing::warn!(error = %rdv::config::report(&e), "the record of a link taken back could not be kept up to date");
            }
        }
        if self.offers.is_stopping() {
            let count = match deleted {
                true => &self.offers.taken_back,
                false => &self.offers.lost,
            };
            count.fetch_add(1, Ordering::Relaxed);
        }
        match deleted {
            true => "nothing was handed over, and the link was deleted from the server",
            false => "nothing was handed over; the link could not be deleted now (the next start of the agent tries again; it expires by itself otherwise)",
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
        // When the link has expired everywhere, on this machine's clock too.
        let expires = offer.expires_at;
        for (server, locator) in offer.link.servers() {
            self.remember(server, locator, self.known_until(closes_at));
        }
        // A delete decided at the offer, at a fixed time after the close: it follows no fetch
        // and no answer (docs/ANONYMITY.md: every link deleted 3 h after its close keeps the
        // set). Past the link's expiry there is nothing left to delete.
        let mut scheduled_delete = None;
        if let Some(after) = r.delete_after_close_secs {
            let at = closes_at.saturating_add(after);
            if at < expires {
                let id = ids.delete.clone();
                let (link, token) = kept_text(&offer.link, &offer.delete_token);
                let d = LaterDelete { at, link, token };
                self.state.save_delete(&id, &d)?;
                if !self.offers.keep(key, |k| k.delete = Some(id.clone())) {
                    // A stop took the link back meanwhile, without this file.
                    let _ = self.state.forget_delete(&id);
                    return Err(stopping());
                }
                self.delete_later(id.clone(), d);
                scheduled_delete = Some((id, at));
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
            // As `rdv offer --hold`: past the close by a random pause, then one fetch.
            // To the close with its fraction of a second, as the looks (see `look_after`).
            let to_close = Duration::from_secs(closes_at)
                .saturating_sub(rdv::clock::Clock::now_precise(&rdv::clock::SystemClock));
            let pause = self.schedule.next_look_in(rand::random());
            let mut stop = self.offers.stopping.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(to_close + pause) => {}
                // The agent is stopping: nobody is to get the link (the caller takes it back).
                _ = stop.wait_for(|s| *s) => return Err(stopping()),
            }
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
        if let Some(why) =
            min_k.and_then(|min| crate::offer::short_of_min_k(found.links_verified, min))
        {
            return Err(crate::accept::too_few_links(why));
        }
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

/// What a request leaves to the delivery of its reply.
pub(super) enum AfterReply {
    /// An offer's stored link.
    Offer(TakeBack),
    /// The answer to this offer went out in the reply: forgotten once delivered, kept for the
    /// next `collect` if not.
    Collected(String),
}

/// A stored offer whose reply is on its way: hand it to [`Agent::handed_over`] once delivered,
/// or to [`Agent::take_back`].
pub(super) struct TakeBack {
    key: u64,
}

/// A stored offer without a delivered reply: everything to take it back.
pub(super) struct Stored {
    link: RdvLink,
    token: DeleteToken,
    kept: Kept,
    /// Its reply is being delivered (a stop leaves it alone).
    claimed: bool,
}

impl Stored {
    fn of(offer: &rdv::client::Offer) -> Self {
        Stored {
            link: offer.link.clone(),
            token: offer.delete_token.clone(),
            kept: Kept::default(),
            claimed: false,
        }
    }
}

/// The stored offers without a delivered reply, by a random key.
#[derive(Default)]
struct Ledger {
    stored: HashMap<u64, Stored>,
    /// A stop has taken back what was unclaimed: later stores take themselves back.
    drained: bool,
}

/// More offers than can ever be in flight at once: a stop takes them all to know none is left.
const OFFER_PERMITS: u32 = 1 << 20;

/// The offers between their request and the delivery of their reply.
pub(super) struct Offers {
    /// Each stored offer whose reply has not been delivered.
    ledger: Mutex<Ledger>,
    /// One permit per offer in flight.
    in_flight: Arc<Semaphore>,
    /// Set when the agent begins to stop.
    stopping: watch::Sender<bool>,
    /// Links taken back since the stop began.
    taken_back: AtomicUsize,
    /// Links the stop tried to take back and could not delete.
    lost: AtomicUsize,
}

impl Offers {
    pub(super) fn new() -> Self {
        Offers {
            ledger: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(OFFER_PERMITS as usize)),
            stopping: watch::Sender::new(false),
            taken_back: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
        }
    }

    /// An offer request's place in flight, from before it is carried out until its reply is
    /// delivered (or its link taken back): a stop waits for it. None once the agent is
    /// stopping (the offer is then refused).
    pub(super) fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if self.is_stopping() {
            return None;
        }
        self.in_flight.clone().try_acquire_owned().ok()
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note a stored offer; its key. None once a stop has taken back the unclaimed ones: the
    /// caller takes this one back itself.
    fn note(&self, stored: Stored) -> Option<u64> {
        let mut l = self.ledger();
        if l.drained {
            return None;
        }
        let key = rand::random::<u64>();
        l.stored.insert(key, stored);
        Some(key)
    }

    /// Note what was kept for stored offer `key`; `false` if a stop took it back meanwhile.
    fn keep(&self, key: u64, f: impl FnOnce(&mut Kept)) -> bool {
        match self.ledger().stored.get_mut(&key) {
            Some(s) => {
                f(&mut s.kept);
                true
            }
            None => false,
        }
    }

    /// Claim stored offer `key` for its reply: its record as undelivered, if it has one;
    /// `None` if a stop took it back.
    fn claim(&self, key: u64) -> Option<Option<String>> {
        let mut l = self.ledger();
        let s = l.stored.get_mut(&key)?;
        s.claimed = true;
        Some(s.kept.record.clone())
    }

    /// Stored offer `key` is settled (delivered or to be taken back): what takes it back, unless
    /// it was settled before (a stop took it back).
    fn settle(&self, key: u64) -> Option<Stored> {
        self.ledger().stored.remove(&key)
    }

    /// For a stop: every stored offer whose reply has not been claimed, removed; later stores
    /// are not noted any more.
    fn drain(&self) -> Vec<Stored> {
        let mut l = self.ledger();
        l.drained = true;
        let keys: Vec<u64> = l
            .stored
            .iter()
            .filter(|(_, s)| !s.claimed)
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| l.stored.remove(k)).collect()
    }
}

/// The requests other than offers being carried out, counted so that a stop lets them finish:
/// a delete (a command taking back a link it could not hand over), an accept's answer, a
/// collect. Unlike offers they are still taken while the agent stops.
pub(super) struct Requests(watch::Sender<usize>);

/// One request counted in [`Requests`] until dropped.
pub(super) struct InFlight(watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Requests {
    pub(super) fn new() -> Self {
        Requests(watch::Sender::new(0))
    }

    pub(super) fn enter(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(self.0.clone())
    }

    /// Wait until no request is in flight, or until `deadline`; how many are left.
    pub(super) async fn settle(&self, deadline: tokio::time::Instant) -> usize {
        let mut n = self.0.subscribe();
        let _ = tokio::time::timeout_at(deadline, n.wait_for(|n| *n == 0)).await;
        let left = *n.borrow();
        left
    }
}

pub(super) fn stopping() -> anyhow::Error {
    CliError::new(
        "agent_stopping",
        ErrorKind::Transient,
        "the agent is stopping; an offer not yet handed over is taken back",
    )
    .into()
}

/// What the agent kept for an offer, to forget if the offer cannot be finished.
#[derive(Default, Clone)]
struct Kept {
    offer: Option<String>,
    delete: Option<String>,
    /// Its record as undelivered (`undelivered/ID`).
    record: Option<String>,
}

/// Where a delete is kept: a later delete's file, or the record of an undelivered link.
#[derive(Clone, Copy)]
enum DeleteFile {
    Later,
    Undelivered,
}

impl DeleteFile {
    /// The delete `id` is over: its file goes.
    fn forget(self, state: &StateDir, id: &str) -> Result<(), rdv::agent::state::StateError> {
        match self {
            DeleteFile::Later => state.forget_delete(id),
            DeleteFile::Undelivered => state.forget_undelivered(id),
        }
    }
}

/// A link without its passphrase and its deletion token, as kept in the state directory (a
/// copy of the directory must not open the link).
fn kept_text(
    link: &RdvLink,
    token: &DeleteToken,
) -> (zeroize::Zeroizing<String>, zeroize::Zeroizing<String>) {
    (
        zeroize::Zeroizing::new(link.without_passphrase().to_uri().to_string()),
        zeroize::Zeroizing::new(token.to_text().to_string()),
    )
}

/// The IDs an offer's state and its later delete are kept under, drawn before either is saved.
struct Ids {
    offer: String,
    delete: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        let link = RdvLink::parse(&format!(
            "rdv1:127.0.0.1:7625?l={}&s={}&k=test",
            "A".repeat(43),
            "A".repeat(22)
        ))
        .unwrap();
        Stored {
            link,
            token: DeleteToken::from_bytes([1; 32]),
            kept: Kept::default(),
            claimed: false,
        }
    }

    /// What a stop takes back: every stored offer whose reply was not claimed; a claimed one
    /// is left to its delivery, a reply not yet claimed cannot claim any more (its link is
    /// gone), and an offer stored after the stop's sweep is not noted (it takes itself back).
    #[test]
    fn a_stop_takes_back_the_unclaimed_and_nothing_is_claimed_after_it() {
        let o = Offers::new();
        let (delivering, waiting, kept) = (
            o.note(stored()).unwrap(),
            o.note(stored()).unwrap(),
            o.note(stored()).unwrap(),
        );
        assert!(o.keep(kept, |k| k.offer = Some("o1".into())));
        assert!(o.claim(delivering).is_some());
        let swept = o.drain();
        assert_eq!(swept.len(), 2);
        assert!(swept.iter().any(|s| s.kept.offer.as_deref() == Some("o1")));
        assert!(
            o.claim(waiting).is_none(),
            "a swept link was claimed for a reply"
        );
        assert!(!o.keep(kept, |_| {}));
        assert!(
            o.note(stored()).is_none(),
            "a store after the sweep was noted"
        );
        assert!(o.settle(delivering).is_some(), "the claimed one was swept");
    }
}
