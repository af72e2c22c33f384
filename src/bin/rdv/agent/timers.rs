//! The agent's timed work: the looks of each offer waiting for its answer, the later deletes,
//! and cover traffic, each at moments of its own.

use super::ops::{now, Agent, Known};
use rdv::agent::api::{self, event};
use rdv::agent::schedule::{late_delete_at, pick, Cover, Decoy};
use rdv::agent::state::{new_id, DecoyKept, LaterDelete, StateDir, Undelivered};
use rdv::client::{CollectError, PendingAnswer};
use rdv::proto::{DeleteToken, RdvLink, ServerAddr};
use serde_json::{json, Map};
use std::sync::Arc;
use std::time::Duration;

/// An offer whose looks ended while the agent was not running gets its last look within this
/// many seconds of the start (plus a look pause: the first look of a wait comes one pause after
/// its start), at a moment of its own.
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

impl Agent {
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
                // seconds the wait would end at that fraction of the second this loop began in
                // (right after the store), and its last look, a pause past it, would carry it.
                let from = wall_now().max(Duration::from_secs(pending.polls_from()));
                let wait = Duration::from_secs(last).saturating_sub(from);
                match me
                    .client
                    .collect_scheduled(&pending, me.schedule, wait)
                    .await
                {
                    Ok(found) => {
                        let answer = found.answer;
                        // A forget that came while the answer was on its way (its abort cannot
                        // stop this task here) leaves no answer behind, and no trail.
                        if !me.state.has(&id) {
                            let _ = me.state.forget(&id);
                            break;
                        }
                        // The other copies of a multi-server link go on looking until each
                        // finds an answer of its own or a random end (PROTOCOL.md §15.7):
                        // stopped now, they would end together with this one (and answers left
                        // on every copy would stay where they are). Started before the event
                        // goes out (a caller that reads it and asks `status` at once finds the
                        // looks that go on), on a task of its own, which a collect or a forget
                        // of the offer does not stop (they end its looks, not these). Its file
                        // is written before the answer's: a crash between the two then leaves
                        // the trail and no answer, and the next start looks for the answer
                        // again (the mailbox keeps it) besides resuming the trail; the other
                        // way round, the trail was lost.
                        if pending.copies().len() > 1 {
                            let plan = me.client.trail_plan(&pending, me.schedule, found.copy);
                            let first = rdv::client::AnswerDigest::of(&answer);
                            me.trail(id.clone(), pending, plan, first, Vec::new());
                        }
                        let saved = me.state.save_answer(&id, &answer);
                        // A forget that came during the write.
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
                        // The next try's first look comes a look pause after this (the looks
                        // begin each wait with one), no sooner.
                        tracing::info!(error = %rdv::config::report(&e), "looking for an answer failed; trying again later");
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

    /// Look at the other copies of offer `id` as `plan` says ([`rdv::client::Client::trail_plan`]),
    /// on a task of its own, which a collect or a forget of the offer does not stop (they end
    /// its looks, not these): stopped at the first answer, the copies' looks would end together
    /// (and answers left on every copy would stay where they are) (PROTOCOL.md §15.7). A copy
    /// holding another answer than the one of digest `first` is told at once (event and log),
    /// the end too (`trail_ended`), and the kept trail file goes then; what it found (with
    /// `differing`, the servers found so before a restart) is kept as a warning file if a copy
    /// held another answer.
    pub(super) fn trail(
        self: &Arc<Self>,
        id: String,
        pending: PendingAnswer,
        plan: Vec<(usize, Duration)>,
        first: rdv::client::AnswerDigest,
        differing: Vec<String>,
    ) {
        let me = self.clone();
        let mut differing = differing;
        // Every other copy of the link, resumed or not.
        let copies = pending.copies().len().saturating_sub(1);
        if let Ok(mut t) = me.trails.lock() {
            t.retain(|_, t| t.shown());
            // One trail per offer: an answer looked for again after a restart (it was held in
            // memory only, a full disk) finds the resumed trail already going.
            if t.get(&id).is_some_and(|t| t.ended.is_none()) {
                return;
            }
            // What an ended trail of this offer found stays named (a trail resumed after a
            // crash may end before the answer is found again and another starts).
            if let Some(old) = t.get(&id) {
                for s in &old.differing {
                    if !differing.contains(s) {
                        differing.push(s.clone());
                    }
                }
            }
            t.insert(
                id.clone(),
                super::ops::Trail {
                    copies,
                    differing: differing.clone(),
                    ended: None,
                },
            );
        }
        // Kept until the looks end, each copy's end as a moment (not after the link
        // expires), and rewritten as copies end, so that a restart resumes only the copies
        // still looked at, each to its own end: stopped with the agent, they ended together,
        // and resumed all, copies whose looks had ended would start again together.
        let at = wall_now();
        let until: Vec<(usize, u64)> = plan
            .iter()
            .map(|&(j, wait)| {
                let end = at.saturating_add(wait).as_secs().saturating_add(1);
                (j, end.min(pending.link_expires()))
            })
            .collect();
        if let Err(e) = me
            .state
            .save_trail(&id, &first, &until, &differing, &pending)
        {
            tracing::warn!(error = %rdv::config::report(&e), "keeping the looks at the other copies in the state directory failed; they go on, but a restart ends them");
        }
        let left = std::sync::Mutex::new(until);
        // Kept in the trail file as found, so that a restart still names them.
        let found = std::sync::Mutex::new(differing);
        tokio::spawn(async move {
            // Told to the application too, and in the moment it is found (the trail may go
            // on for an hour): a log line alone reached nobody who could act on it.
            let trailed = me
                .client
                .trail_planned(
                    &pending,
                    me.schedule,
                    &plan,
                    &first,
                    |server| {
                        tracing::warn!(%server, "another copy of this offer's link holds a different answer: someone else holds the link and its passphrase");
                        if let (Ok(left), Ok(mut found)) = (left.lock(), found.lock()) {
                            if !found.contains(&server.to_string()) {
                                found.push(server.to_string());
                            }
                            if let Err(e) = me.state.save_trail(&id, &first, &left, &found, &pending) {
                                tracing::warn!(error = %rdv::config::report(&e), "updating a trail file failed; a restart would not name this server");
                            }
                        }
                        if let Ok(mut t) = me.trails.lock() {
                            if let Some(trail) = t.get_mut(&id) {
                                if !trail.differing.contains(&server.to_string()) {
                                    trail.differing.push(server.to_string());
                                }
                            }
                        }
                        me.event(event::DIFFERENT_ANSWER, {
                            let mut f = Map::new();
                            f.insert("offer".into(), json!(id));
                            f.insert("server".into(), json!(server.to_string()));
                            f
                        });
                    },
                    |copy| {
                        let Ok(mut left) = left.lock() else { return };
                        left.retain(|(j, _)| *j != copy);
                        let Ok(found) = found.lock() else { return };
                        if !left.is_empty() {
                            if let Err(e) = me.state.save_trail(&id, &first, &left, &found, &pending) {
                                tracing::warn!(error = %rdv::config::report(&e), "updating a trail file failed; a restart would look at an ended copy again");
                            }
                        }
                    },
                )
                .await;
            // What it found (before a restart too) outlives the trail.
            let found = found.into_inner().unwrap_or_default();
            me.trail_ended(&id, copies, &found);
            me.event(event::TRAIL_ENDED, {
                let mut f = Map::new();
                f.insert("offer".into(), json!(id));
                f.insert("opened".into(), json!(trailed.opened));
                f.insert("different_answers".into(), json!(found));
                f
            });
        });
    }

    /// Resume a trail kept by an earlier run: each copy looked at until its own end, and a
    /// copy whose end passed while the agent was not running until an end of its own within
    /// [`LAST_LOOK_WITHIN_SECS`] after [`SETTLE`] (at the start, or at their old ends, every
    /// such copy's looks would end together).
    pub(super) fn resume_trail(self: &Arc<Self>, id: String, kept: rdv::agent::state::TrailKept) {
        let from = wall_now();
        // Never past the link's expiry (a clock that was far ahead when the ends were
        // written, a file edited): nothing is left to look at then.
        let expires = Duration::from_secs(kept.pending.link_expires());
        let plan: Vec<(usize, Duration)> = kept
            .until
            .iter()
            .filter(|_| from < expires)
            .map(|&(j, until)| {
                let left = Duration::from_secs(until).min(expires).saturating_sub(from);
                if left.is_zero() {
                    let pause = rand::random::<f64>() * LAST_LOOK_WITHIN_SECS as f64;
                    (j, SETTLE + Duration::from_secs_f64(pause))
                } else {
                    (j, left)
                }
            })
            .collect();
        if plan.is_empty() {
            // Over (the link expired meanwhile, or no copy was left): what it found is kept
            // all the same, not dropped with the file.
            let copies = kept.pending.copies().len().saturating_sub(1);
            self.trail_ended(&id, copies, &kept.differing);
            return;
        }
        self.trail(id, kept.pending, plan, kept.first, kept.differing);
    }

    /// The trail of offer `id` over `copies` other copies ended having found `differing`:
    /// a warning kept if any (`warnings/ID`, written before the trail file goes: a crash in
    /// between resumes the trail, which ends here again), the end marked, the trail file
    /// removed. The warning's write and the mark under the trail table's lock, as a forget of
    /// the warning ([`Agent::forget_warning`]): one comes wholly before the other.
    pub(super) fn trail_ended(&self, id: &str, copies: usize, differing: &[String]) {
        if let Ok(mut t) = self.trails.lock() {
            if !differing.is_empty() {
                let warning = rdv::agent::state::TrailWarning {
                    copies,
                    ended_at: super::ops::now(),
                    differing: differing.to_vec(),
                };
                if let Err(e) = self.state.save_warning(id, &warning) {
                    tracing::warn!(error = %rdv::config::report(&e), "keeping what the looks at the other copies found failed; status shows it until the agent stops");
                }
            }
            // A trail that found nothing and was never listed (ended at the start) stays so.
            if differing.is_empty() && !t.contains_key(id) {
                return self.forget_trail_file(id);
            }
            let trail = t.entry(id.to_owned()).or_insert(super::ops::Trail {
                copies,
                differing: Vec::new(),
                ended: None,
            });
            for s in differing {
                if !trail.differing.contains(s) {
                    trail.differing.push(s.clone());
                }
            }
            trail.ended = Some(std::time::Instant::now());
        }
        self.forget_trail_file(id);
    }

    fn forget_trail_file(&self, id: &str) {
        if let Err(e) = self.state.forget_trail(id) {
            tracing::warn!(error = %rdv::config::report(&e), "removing a trail file failed");
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
            let deleted = 'tries: loop {
                match me.client.delete(&link, &token).await {
                    Ok(()) => break Some(true),
                    Err(rdv::client::DeleteError::NothingToDelete) => break Some(false),
                    Err(e) => {
                        tracing::info!(error = %rdv::config::report(&e), "a later delete failed; trying again at a moment of its own, 5 to 60 minutes from now");
                        // A moment of its own, and another if a stop passed it (all the retries
                        // it passed would go in one instant).
                        loop {
                            let Some(t) = late_delete_at(now(), d.at, rand::random()) else {
                                break 'tries None;
                            };
                            if !rdv::client::wake::until_wall(
                                &rdv::clock::SystemClock,
                                with_fraction(t),
                            )
                            .await
                            {
                                break;
                            }
                        }
                    }
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
            if !std::mem::take(&mut missed) && !until_wall(&clock, with_fraction(at)).await {
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
                    // Passed by a stop too: a moment of its own again.
                    if until_wall(&clock, with_fraction(t)).await {
                        missed = true;
                        continue;
                    }
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

    pub(super) fn stop_looking(&self, id: &str) {
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
            // A decoy whose moment a stop passed is dropped (the next is drawn from now): all
            // of them would otherwise start in one instant.
            if rdv::client::wake::until_instant(tokio::time::Instant::now() + pause).await {
                continue;
            }
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

    /// Make spares for the servers the agent knows until the process ends, at moments of their
    /// own (`Warming`).
    pub(super) async fn warm_spares(self: Arc<Self>) {
        // At most as many warm-ups on their way as spares kept per server: with Tor down each
        // takes its whole attempt, and they must not pile up.
        let on_way = Arc::new(tokio::sync::Semaphore::new(self.warming.keep.max(1)));
        loop {
            let Some(pause) = self.warming.next(rand::random()) else {
                return;
            };
            // A moment a stop passed is dropped, as cover's: the next is drawn from now.
            if rdv::client::wake::until_instant(tokio::time::Instant::now() + pause).await {
                continue;
            }
            let Some(server) = self.known_server() else {
                continue;
            };
            let Ok(place) = on_way.clone().try_acquire_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.client.warm(&server, me.warming.keep).await {
                    tracing::debug!(error = %rdv::config::report(&e), "making a spare failed");
                }
                drop(place);
            });
        }
    }

    /// One of the servers the agent knows, each as likely whatever number of its buckets it
    /// knows.
    fn known_server(&self) -> Option<ServerAddr> {
        let k = self.known.lock().ok()?;
        let now = now();
        let mut servers: Vec<&ServerAddr> = k
            .iter()
            .filter(|b| b.until > now)
            .map(|b| &b.server)
            .collect();
        servers.sort_by_key(|s| s.to_string());
        servers.dedup();
        pick(servers.len(), rand::random()).map(|i| servers[i].clone())
    }

    /// Look into a mailbox nobody uses on the look schedule, for a random lifetime: the first
    /// look at once, the last the first at or past its end. Kept in the state directory until
    /// then, so that a restart resumes it ([`Agent::resume_decoy`]).
    async fn decoy_mailbox(self: Arc<Self>, server: ServerAddr) {
        use rand::RngCore;
        let mut mailbox = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut mailbox);
        let lifetime = Cover::mailbox_lifetime(rand::random());
        let id = new_id(rand::random());
        let kept = DecoyKept {
            server: server.to_string(),
            mailbox,
            until: wall_now().saturating_add(lifetime).as_secs(),
        };
        // Off the runtime's threads: a file and a directory synced for every decoy.
        let me = self.clone();
        let (key, file) = (id.clone(), kept.clone());
        let saved = tokio::task::spawn_blocking(move || me.state.save_decoy(&key, &file)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %rdv::config::report(&e), "keeping a decoy mailbox failed; a restart of the agent ends its looks");
        }
        let until = tokio::time::Instant::now() + lifetime;
        self.decoy_looks(id, server, mailbox, Duration::ZERO, DecoyEnd::At(until))
            .await;
    }

    /// Resume decoy mailbox `id`, kept by an earlier run, as an offer's looks resume
    /// ([`Agent::look_after`]): a live one from a look pause after the start to its end; one
    /// whose end passed while the agent was not running with a last look within
    /// [`LAST_LOOK_WITHIN_SECS`] after [`SETTLE`] and a look pause, its end decided again on
    /// the wall clock of then (a clock set ahead at the start, corrected meanwhile, must not
    /// end the decoys and not the offers).
    pub(super) fn resume_decoy(self: &Arc<Self>, id: String, kept: DecoyKept) {
        let Ok(server) = ServerAddr::parse(&kept.server) else {
            // `decoys_kept` reads only servers that parse.
            let _ = self.state.forget_decoy(&id);
            return;
        };
        let ended = Duration::from_secs(kept.until) <= wall_now();
        let first = if ended {
            let pause = rand::random::<f64>() * LAST_LOOK_WITHIN_SECS as f64;
            SETTLE + Duration::from_secs_f64(pause) + self.schedule.next_look_in(rand::random())
        } else {
            self.schedule.next_look_in(rand::random())
        };
        tokio::spawn(self.clone().decoy_looks(
            id,
            server,
            kept.mailbox,
            first,
            DecoyEnd::Wall(kept.until),
        ));
    }

    /// The looks into decoy mailbox `id`: the first `first` from now, then on the look
    /// schedule, the last the first due at or past the end, as a real mailbox's
    /// (`Client::collect_scheduled`); a last look that fails is tried again, a look pause
    /// later, up to [`LAST_LOOK_TRIES`] times, as an offer's is. Then its file goes.
    async fn decoy_looks(
        self: Arc<Self>,
        id: String,
        server: ServerAddr,
        mailbox: [u8; 32],
        first: Duration,
        end: DecoyEnd,
    ) {
        let mut next = tokio::time::Instant::now() + first;
        let mut until = None;
        let mut late_failures = 0;
        loop {
            // Late (the process was stopped): a fresh pause, as a real mailbox's look takes;
            // at once, the decoys alone would come together and stand out.
            if rdv::client::wake::until_instant(next).await {
                rdv::client::wake::pause(self.schedule.mean).await;
            }
            // A kept end becomes a monotonic one at the first look, on the wall clock of then,
            // counted from that look's moment (an end that has passed makes it the last, as an
            // ended offer's one look); never longer than a decoy lives: a file written under a
            // clock far ahead, or edited, must not make it look for days.
            let until = *until.get_or_insert_with(|| match end {
                DecoyEnd::At(t) => t,
                DecoyEnd::Wall(secs) => {
                    kept_end(next, secs, wall_now(), Cover::mailbox_lifetime(1.0))
                }
            });
            let last = next >= until;
            let looked = self
                .client
                .decoy_look(&server, rdv::proto::MailboxAddr(mailbox))
                .await;
            if last {
                late_failures += u32::from(looked.is_err());
                if looked.is_ok() || late_failures >= LAST_LOOK_TRIES {
                    break;
                }
            }
            next = tokio::time::Instant::now() + self.schedule.next_look_in(rand::random());
        }
        let me = self.clone();
        let forgotten = tokio::task::spawn_blocking(move || me.state.forget_decoy(&id)).await;
        if let Ok(Err(e)) = forgotten {
            tracing::warn!(error = %rdv::config::report(&e), "forgetting an ended decoy mailbox failed; a restart looks into it once more");
        }
    }

    fn known_bucket(&self) -> Option<Known> {
        let k = self.known.lock().ok()?;
        let now = now();
        let live: Vec<&Known> = k.iter().filter(|b| b.until > now).collect();
        pick(live.len(), rand::random()).map(|i| live[i].clone())
    }
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

/// The wall-clock moment `secs` (whole seconds) plus a random fraction of a second. Waited for
/// to the whole second, every scheduled delete came at a whole second and a few milliseconds,
/// which marked it as an agent's (a command's delete comes at any fraction of a second) and,
/// among the deletes so marked, let servers comparing notes pair a link's copies by their
/// times (a helper's measurement, 2026-12-06: 63 % of later-delete pairs, 28 % by chance
/// within the mark).
fn with_fraction(secs: u64) -> Duration {
    Duration::from_secs(secs) + Duration::from_secs_f64(rand::random::<f64>())
}

/// When a decoy mailbox's looks end: a monotonic moment (a decoy of this run), or a wall-clock
/// one (unix seconds; a decoy kept by an earlier run), read at its first look.
#[derive(Clone, Copy)]
enum DecoyEnd {
    At(tokio::time::Instant),
    Wall(u64),
}

/// The monotonic end of a decoy kept with the wall-clock end `until` (unix seconds), for its
/// first look due at `next` while the wall clock reads `wall`: as far after `next` as `until`
/// is after `wall`, at most `longest`. An end that has passed makes that look the last.
fn kept_end(
    next: tokio::time::Instant,
    until: u64,
    wall: Duration,
    longest: Duration,
) -> tokio::time::Instant {
    next + Duration::from_secs(until).saturating_sub(wall).min(longest)
}

/// This machine's wall clock, with its fraction of a second.
fn wall_now() -> Duration {
    rdv::clock::Clock::now_precise(&rdv::clock::SystemClock)
}

#[cfg(test)]
mod tests {
    use super::kept_end;
    use std::time::Duration;

    /// A resumed decoy whose end passed makes one look, its first (as an ended offer does);
    /// a live one looks until its end; an end absurdly far is cut to a decoy's longest life.
    #[test]
    fn a_kept_decoy_end_counts_from_its_first_look() {
        let next = tokio::time::Instant::now();
        let longest = Duration::from_secs(7200);
        let wall = Duration::new(1_000, 400_000_000);
        let ended = kept_end(next, 990, wall, longest);
        assert!(next >= ended, "the first look is the last");
        assert_eq!(kept_end(next, 1_000, wall, longest), next);
        assert_eq!(
            kept_end(next, 1_600, wall, longest),
            next + Duration::new(599, 600_000_000)
        );
        assert_eq!(kept_end(next, u64::MAX, wall, longest), next + longest);
    }
}
