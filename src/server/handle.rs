//! Executing one request after the version exchange: the bucket and mailbox operations.

use super::limits::{Source, STORE_RETRY, STORE_WAIT};
use super::session::error;
use super::Server;
use crate::proto::answer_stamp::{self, AnswerChallenge};
use crate::proto::stamp::{self, Challenge, ServerName};
use crate::proto::wire::{StampedEntry, STAMP_VERSION};
use crate::proto::{padding, BucketId, DeleteCheck, SealedLink, Stamp, SEALED_LINK_LEN};
use crate::proto::{ErrorCode, Request, Response, ServerInfo, MAX_LINKS_PER_BUCKET};
use crate::proto::{MailboxAddr, SealedAnswer};
use crate::server::adversary::Adversary;
use crate::store::{BucketStore, PutAnswer, StoreError, WriteKind};

impl<S: BucketStore> Server<S> {
    /// Answer one request of a connection from `source` that agreed on `version`.
    pub(crate) async fn handle(&self, req: Request, version: u16, source: &Source) -> Response {
        let now = self.clock.now();
        match req {
            Request::Hello { .. } => error(ErrorCode::Malformed, "Hello was already exchanged"),
            Request::Info => {
                let p = self.store.params();
                Response::Info(ServerInfo {
                    version,
                    max_links_per_bucket: MAX_LINKS_PER_BUCKET as u16,
                    open_window_secs: p.open_window_secs,
                    ttl_secs: p.ttl_secs,
                    server_time: now,
                    max_frame: self.config.max_frame,
                })
            }
            Request::Store { link, delete_check } => {
                if self.config.require_stamps {
                    self.metrics.store_refused("bad_stamp");
                    return error(
                        ErrorCode::BadStamp,
                        "this server stores only links with a stamp (protocol version 3)",
                    );
                }
                self.store_link(link, delete_check, None, None, source)
                    .await
            }
            Request::StampedStore {
                link,
                delete_check,
                id,
                name,
                stamp,
            } => {
                let seed = self.seed(id);
                let effort = self.config.stamp_effort;
                let verified = match self.config.adversary {
                    // The adversary takes what it handed out.
                    Some(Adversary::VarySeed) => Ok(()),
                    _ => stamp::verify(&name, &id.locator(), &seed, &link, &stamp, effort),
                };
                if let Err(e) = verified {
                    self.metrics.store_refused("bad_stamp");
                    return error(ErrorCode::BadStamp, e.to_string());
                }
                self.store_link(link, delete_check, Some((id, stamp)), Some(name), source)
                    .await
            }
            Request::Challenge => {
                let Some(_turn) = self.store_gate.admit(source).await else {
                    return error(ErrorCode::ShuttingDown, "server is shutting down");
                };
                let deadline = tokio::time::Instant::now() + STORE_WAIT;
                loop {
                    let now = self.clock.now();
                    if let Err(e) = self.hold_if_behind(now).await {
                        return store_error(e);
                    }
                    match self.store.challenge(now).await {
                        Ok(id) => {
                            // An adversary's trick shows in the challenge: the client checks the
                            // bucket before it stores anything.
                            let shown = self.config.adversary.map_or(id, |a| a.rewrite_id(id));
                            let mut challenge = Challenge {
                                id: shown,
                                seed: self.seed(shown),
                                effort: self.config.stamp_effort,
                            };
                            self.vary(&mut challenge);
                            return Response::Challenge(challenge);
                        }
                        Err(StoreError::Overloaded(_))
                            if tokio::time::Instant::now() + STORE_RETRY < deadline =>
                        {
                            tokio::time::sleep(STORE_RETRY).await
                        }
                        Err(e) => return store_error(e),
                    }
                }
            }
            Request::Fetch { locator } => {
                match self.store.fetch_entries(locator, self.expiry_now()).await {
                    Ok(Some((id, mut entries))) => {
                        entries.truncate(MAX_LINKS_PER_BUCKET);
                        let now = self.clock.now();
                        self.metrics.fetched(id, locator, entries.len(), now);
                        self.store.share_fetch(id, now);
                        let secret = self.store.filler_secret();
                        let filler = self.filler(&locator, entries.len());
                        let mut entries: Vec<StampedEntry> = entries
                            .into_iter()
                            .map(|e| (e.link, e.stamp))
                            .chain(filler.into_iter().map(|l| (l, None)))
                            .enumerate()
                            .map(|(i, (link, stamp))| StampedEntry {
                                link,
                                // Without a stamp: filler bytes in its place, as for filler.
                                stamp: stamp
                                    .unwrap_or_else(|| padding::stamp_filler(secret, &locator, i)),
                            })
                            .collect();
                        if self.config.adversary == Some(Adversary::Truncate) {
                            entries.truncate(MAX_LINKS_PER_BUCKET - 1);
                        }
                        if version < STAMP_VERSION {
                            return Response::Bucket {
                                links: entries.into_iter().map(|e| e.link).collect(),
                            };
                        }
                        Response::StampedBucket {
                            seed: self.seed(id),
                            entries,
                        }
                    }
                    Ok(None) => {
                        self.metrics.fetch_missed("not_found");
                        error(
                            ErrorCode::NotFound,
                            "no such bucket (never existed, or expired)",
                        )
                    }
                    Err(e) => {
                        self.metrics.fetch_missed("failed");
                        store_error(e)
                    }
                }
            }
            Request::Delete { locator, token } => {
                // A write like a store: the same fair admission, one per source at a time.
                let Some(_turn) = self.store_gate.admit(source).await else {
                    return error(ErrorCode::ShuttingDown, "server is shutting down");
                };
                match self
                    .store
                    .delete(locator, token.check(), self.expiry_now())
                    .await
                {
                    Ok(true) => {
                        let same = source.last_stored_is(&locator);
                        // Fetches other frontends of a cluster served, up to now.
                        self.hear_fetches();
                        self.metrics.deleted(&locator, self.clock.now(), same);
                        Response::Deleted
                    }
                    Ok(false) => {
                        self.metrics.delete_missed("nothing");
                        error(
                            ErrorCode::NotFound,
                            "no link with this deletion token in this bucket",
                        )
                    }
                    Err(e) => {
                        self.metrics.delete_missed("failed");
                        store_error(e)
                    }
                }
            }
            Request::PutAnswer { mailbox, answer } => {
                if self.config.require_stamps {
                    self.metrics.answer("put_bad_stamp");
                    return error(
                        ErrorCode::BadStamp,
                        "this server stores only answers with a stamp (protocol version 4)",
                    );
                }
                self.put_answer(mailbox, answer, false, source).await
            }
            Request::AnswerChallenge => {
                let epoch = answer_stamp::epoch_of(now);
                Response::AnswerChallenge(AnswerChallenge {
                    epoch,
                    seed: answer_stamp::answer_seed(self.store.filler_secret(), epoch),
                    effort: self.config.stamp_effort,
                })
            }
            Request::StampedPutAnswer {
                mailbox,
                answer,
                epoch,
                stamp,
            } => {
                if !answer_stamp::epoch_is_fresh(epoch, now) {
                    self.metrics.answer("put_bad_stamp");
                    return error(
                        ErrorCode::BadStamp,
                        "the stamp's epoch is over; ask for a new answer challenge",
                    );
                }
                let seed = answer_stamp::answer_seed(self.store.filler_secret(), epoch);
                let effort = self.config.stamp_effort;
                if let Err(e) =
                    answer_stamp::verify_answer(&seed, &mailbox, &answer, &stamp, effort)
                {
                    self.metrics.answer("put_bad_stamp");
                    return error(ErrorCode::BadStamp, e.to_string());
                }
                self.put_answer(mailbox, answer, true, source).await
            }
            Request::FetchAnswer { mailbox } => {
                match self.store.fetch_answer(mailbox, self.expiry_now()).await {
                    Ok(Some(answer)) => {
                        self.metrics.answer("fetch_found");
                        Response::Answer { answer }
                    }
                    Ok(None) => {
                        self.metrics.answer("fetch_empty");
                        Response::Answer {
                            answer: crate::proto::padding::answer_filler(
                                self.store.filler_secret(),
                                &mailbox,
                            ),
                        }
                    }
                    Err(e) => {
                        self.metrics.answer("failed");
                        store_error(e)
                    }
                }
            }
        }
    }
}

impl<S: BucketStore> Server<S> {
    /// The refusal of a write of `kind` past its share of the quota, by the counts this
    /// process knows: a refusal before the write's turn in the store, so that a flood does not
    /// take the writer's time. Only on current counts (on a cluster, read within a second: other
    /// frontends may have made room since); otherwise, and always for writes that fit, the
    /// store checks in its write transaction, exactly (and refreshes the counts).
    fn past_share(&self, kind: WriteKind) -> Option<StoreError> {
        if !self.store.counts_current() {
            return None;
        }
        let counts = (
            self.store.link_count() + self.store.mark_count(),
            self.store.answer_count(),
        );
        match self.store.params().admits(kind, counts.0, counts.1) {
            Err(e @ StoreError::ShareFull { .. }) => Some(e),
            _ => None,
        }
    }

    /// A PutAnswer or StampedPutAnswer (`stamped`, its stamp verified), with fair admission.
    async fn put_answer(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        stamped: bool,
        source: &Source,
    ) -> Response {
        // An answer past its share (a free flood, once the share is full) is refused before it
        // takes a place in the answers' rate, so it cannot crowd out answers that fit.
        if let Some(e) = self.past_share(WriteKind::answer(stamped)) {
            self.metrics.answer("put_quota");
            return store_error(e);
        }
        // A write like a store: the same fair admission, and no more answers a second
        // than links. An answer beyond that waits for room holding only its source's
        // lane, not a place among the writes in flight: stores and deletes go on.
        let lane = self.store_gate.lane(source).await;
        let deadline = tokio::time::Instant::now() + STORE_WAIT;
        while !self.answer_rate_allows() {
            if tokio::time::Instant::now() + STORE_RETRY >= deadline {
                self.metrics.answer("put_overloaded");
                return error(
                    ErrorCode::Overloaded,
                    "too many answers this second; try again",
                );
            }
            tokio::time::sleep(STORE_RETRY).await;
        }
        let Some(_turn) = self.store_gate.admit_in(lane).await else {
            self.refund_answer_rate();
            return error(ErrorCode::ShuttingDown, "server is shutting down");
        };
        // With the turn in hand, as for stores without a stamp.
        if let Some(e) = self.past_share(WriteKind::answer(stamped)) {
            self.refund_answer_rate();
            self.metrics.answer("put_quota");
            return store_error(e);
        }
        let wall = self.clock.now();
        if let Err(e) = self.hold_if_behind(wall).await {
            self.metrics.answer("failed");
            return store_error(e);
        }
        match self
            .store
            .put_answer_as(
                mailbox,
                answer,
                self.expiry_at(wall),
                WriteKind::answer(stamped),
            )
            .await
        {
            Ok(PutAnswer::Stored) => {
                self.metrics.answer("put_stored");
                Response::AnswerStored
            }
            // Nothing stored: its place in the rate goes back (a stamp replayed to its own
            // mailbox must not use up the answers' rate).
            Ok(PutAnswer::AlreadyAnswered) => {
                self.refund_answer_rate();
                self.metrics.answer("put_already");
                error(
                    ErrorCode::AlreadyAnswered,
                    "this mailbox holds an answer already; the first one stays",
                )
            }
            Err(e) => {
                self.metrics.answer(match e {
                    StoreError::QuotaExceeded { .. } | StoreError::ShareFull { .. } => {
                        self.refund_answer_rate();
                        "put_quota"
                    }
                    _ => "failed",
                });
                store_error(e)
            }
        }
    }

    /// Give back a place taken in the answers' cap by an answer that was not stored.
    fn refund_answer_rate(&self) {
        self.answer_rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refund();
    }

    /// Take one answer's place in this second's cap.
    fn answer_rate_allows(&self) -> bool {
        let mut r = self
            .answer_rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.allow(tokio::time::Instant::now())
    }

    /// A store (stamped or not), with fair admission: one store per source waits its turn, and
    /// a store that finds the second full waits for the next one, keeping its turn.
    async fn store_link(
        &self,
        link: SealedLink,
        delete_check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        name: Option<ServerName>,
        source: &Source,
    ) -> Response {
        let Some(_turn) = self.store_gate.admit(source).await else {
            return error(ErrorCode::ShuttingDown, "server is shutting down");
        };
        // With the turn in hand, so that connections that waited for it see the writes before
        // them counted (the store's own check in the write transaction is the exact one).
        if let Some(e) = self.past_share(WriteKind::link(target.is_some())) {
            self.metrics.store_refused("quota");
            return store_error(e);
        }
        let deadline = tokio::time::Instant::now() + STORE_WAIT;
        loop {
            let now = self.clock.now();
            if let Err(e) = self.hold_if_behind(now).await {
                self.metrics.store_refused("failed");
                return store_error(e);
            }
            match self
                .store
                .store_in(link.clone(), delete_check, target, now)
                .await
            {
                Ok(id) => {
                    let locator = id.locator();
                    self.metrics.stored();
                    source.set_last_stored(locator);
                    if let Some(a) = self.config.adversary {
                        return self.misbehave_on_store(a, id, now, name).await;
                    }
                    return Response::Stored { id };
                }
                // Full for this second: wait for the next one, keeping the turn.
                Err(StoreError::Overloaded(_))
                    if tokio::time::Instant::now() + STORE_RETRY < deadline =>
                {
                    tokio::time::sleep(STORE_RETRY).await
                }
                Err(e) => {
                    self.metrics.store_refused(match e {
                        StoreError::QuotaExceeded { .. } | StoreError::ShareFull { .. } => "quota",
                        StoreError::Overloaded(_) => "overloaded",
                        StoreError::BucketClosed => "bucket_closed",
                        StoreError::Duplicate => "bad_stamp",
                        _ => "failed",
                    });
                    return store_error(e);
                }
            }
        }
    }

    /// The adversarial server's changes to a challenge: a different effort or seed for each.
    fn vary(&self, c: &mut Challenge) {
        match self.config.adversary {
            Some(Adversary::VaryEffort) => {
                let extra = rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..=c.effort);
                c.effort = c.effort.saturating_add(extra);
            }
            Some(Adversary::VarySeed) => {
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut c.seed.0);
            }
            _ => {}
        }
    }

    /// The adversarial server's answer to a store that went into `id` (stamped for `name`, if
    /// it was stamped: fakes are stamped for the name the victim's accepters check).
    async fn misbehave_on_store(
        &self,
        a: Adversary,
        id: BucketId,
        now: u64,
        name: Option<ServerName>,
    ) -> Response {
        let budget = if name.is_some() {
            self.config.adversary_stamp_budget
        } else {
            0
        };
        match a {
            // Fill the rest of the bucket with random links nobody can open; with a budget, that
            // many of them get valid stamps, paid with real work.
            Adversary::Dummies => {
                for i in 1..MAX_LINKS_PER_BUCKET {
                    let stamped = name.filter(|_| i <= budget);
                    if !self.fake_entry(id, now, stamped, name.is_some()).await {
                        break;
                    }
                }
            }
            // The victim is alone in its bucket; with a budget, that many fakes join it, so
            // that the count of stamped entries looks like company.
            Adversary::Isolate => {
                for _ in 0..budget {
                    if !self.fake_entry(id, now, name, true).await {
                        break;
                    }
                }
            }
            _ => {}
        }
        Response::Stored {
            id: a.rewrite_id(id),
        }
    }

    /// One fake entry in bucket `id` (stamped at the server's own effort for `stamped`'s name,
    /// if given); `false` when the bucket takes no more. `named`: `id` is a bucket of the
    /// stamped stream (the victim's store was stamped), which stores without a stamp never
    /// reach (PROTOCOL.md §10.1), so an unstamped fake goes in beside a stamp that verifies
    /// nowhere, as a stamped store it is.
    async fn fake_entry(
        &self,
        id: BucketId,
        now: u64,
        stamped: Option<ServerName>,
        named: bool,
    ) -> bool {
        let mut bytes = [0u8; SEALED_LINK_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let mut check = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut check);
        let check = crate::proto::DeleteToken::from_bytes(check).check();
        let link = SealedLink(bytes);
        let target = if let Some(name) = stamped {
            let challenge = Challenge {
                id,
                seed: self.seed(id),
                effort: self.config.stamp_effort,
            };
            let mut start = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut start);
            let l = link.clone();
            let solved = tokio::task::spawn_blocking(move || {
                stamp::solve(&name, &challenge, &l, start, u64::MAX)
            })
            .await;
            match solved {
                Ok(Ok(stamp)) => Some((id, stamp)),
                _ => return false,
            }
        } else if named {
            let mut junk = [0u8; stamp::STAMP_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut junk);
            Some((id, crate::proto::Stamp(junk)))
        } else {
            None
        };
        match target {
            Some(t) => self.store.store_in(link, check, Some(t), now).await.is_ok(),
            None => matches!(self.store.store(link, check, now).await, Ok(other) if other == id),
        }
    }
}

/// The answer for a store failure. The cause is logged here, never sent.
fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::QuotaExceeded { .. } | StoreError::ShareFull { .. } => {
            error(ErrorCode::QuotaExceeded, e.to_string())
        }
        StoreError::Backend(_) => {
            tracing::warn!(error = %crate::config::report(&e), "storage failure");
            error(
                ErrorCode::StorageFailure,
                "storage failure on the server: the request was not done (retry later)",
            )
        }
        StoreError::Overloaded(_) => error(
            ErrorCode::Overloaded,
            "the server admits no more stores this second; retry shortly",
        ),
        StoreError::Closed => error(ErrorCode::ShuttingDown, "server is shutting down"),
        StoreError::BucketClosed => error(
            ErrorCode::BucketClosed,
            "the bucket takes no more links: ask for a new challenge",
        ),
        StoreError::Duplicate => error(
            ErrorCode::BadStamp,
            "the link is in the bucket already, or was deleted from it",
        ),
        _ => {
            tracing::error!(error = %crate::config::report(&e), "store error");
            error(ErrorCode::Internal, "internal server error")
        }
    }
}
