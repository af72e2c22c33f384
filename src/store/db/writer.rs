//! The writer thread: group commit.
//!
//! Every write (store, delete, answer, garbage collection) is an [`Op`] queued to one thread. The writer
//! takes everything queued, applies it in one write transaction ([`Batch`]), commits durably, and
//! only then answers each caller: concurrent writes share one fsync. If the transaction or its
//! commit fails, every operation of the batch gets the error and the writer's state goes back to
//! the last commit.
//!
//! After an IO failure the writer drops its database handle (redb refuses everything on it from
//! then on) and reopens it every [`RETRY`] on its own, whether or not anyone writes; writes that
//! arrive in between fail at once with a storage error. Reads are not affected: they go through
//! their own handle (see `slot.rs`).

use super::schema::{self, Meta, BUCKETS, EXPIRY, MAILBOXES, MAILBOX_EXPIRY};
use super::slot::DbPath;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer};
use crate::store::alloc::Allocator;
use crate::store::ops::{delete_result, settle, Op, Outcome};
use crate::store::{
    ExpiryHold, PutAnswer, StoreError, StoreParams, StoredAnswer, StoredBucket, StoredLink,
    WriteKind,
};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// How often a failed writer tries to reopen the database.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// How often a waiting failed writer looks for new operations.
const POLL: Duration = Duration::from_millis(20);

/// Writes are suspended: the database failed and is being reopened.
#[derive(Debug, thiserror::Error)]
#[error("writes are suspended after a storage failure; the database is reopened every second")]
pub(super) struct Suspended;

/// What the store holds, counted by the writer.
#[derive(Clone, Copy)]
pub(super) struct Counts {
    links: u64,
    answers: u64,
    marks: u64,
}

/// The writer's state; runs on its own thread.
pub(super) struct Writer {
    pub(super) at: DbPath,
    /// The writer's own handle; `None` after an IO failure until a reopen succeeds.
    pub(super) db: Option<Database>,
    /// When to try the next reopen while `db` is `None`.
    pub(super) retry_at: Instant,
    /// Pause between reopen attempts ([`RETRY`] outside tests).
    pub(super) retry: Duration,
    /// Why the database went down (logged once, not on every retry).
    pub(super) down_since: Option<Instant>,
    pub(super) alloc: Allocator,
    /// Links per bucket (see `DiskStoreConfig::bucket_capacity`).
    pub(super) capacity: usize,
    pub(super) links: Arc<AtomicU64>,
    pub(super) answers: Arc<AtomicU64>,
    /// Marks of deleted links kept ([`crate::store::StoredBucket::gone`]).
    pub(super) marks: Arc<AtomicU64>,
    pub(super) commits: Arc<AtomicU64>,
    /// The expiry mark (0: none yet), shared with the store handle.
    pub(super) mark: Arc<AtomicU64>,
    /// The expiry hold, shared with the store handle. Set before the commit that writes it:
    /// safe because every committing batch writes the meta keys from this cell, so a store that
    /// relied on a hold whose commit failed writes the hold with itself (keep it so).
    pub(super) hold: Arc<crate::store::hold::HoldCell>,
    /// The storage quota in links (`u64::MAX`: none), shared with the store handle, which may
    /// change it while the store runs ([`crate::store::DiskStore::set_quota`]).
    pub(super) quota: Arc<AtomicU64>,
    /// Buckets created by committed transactions, shared with the store handle.
    pub(super) opened: Arc<crate::store::Opened>,
    /// The readers' shared snapshot, let go of after every commit ([`super::slot::Reader`]).
    pub(super) snapshot: super::slot::Snapshot,
    pub(super) params: StoreParams,
    pub(super) max_batch: usize,
}

impl Writer {
    /// Take batches off the queue until every sender is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.next(&mut rx) {
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.apply(std::mem::take(&mut batch));
        }
    }

    /// The next operation; `None` once every sender is gone. While the database is down, the
    /// writer keeps trying to reopen it between operations.
    fn next(&mut self, rx: &mut mpsc::Receiver<Op>) -> Option<Op> {
        loop {
            if self.db.is_some() {
                return rx.blocking_recv();
            }
            self.try_recover();
            match rx.try_recv() {
                Ok(op) => return Some(op),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => std::thread::sleep(POLL),
            }
        }
    }

    fn apply(&mut self, ops: Vec<Op>) {
        self.params.max_links = Some(self.quota.load(Ordering::Relaxed)).filter(|q| *q != u64::MAX);
        self.try_recover();
        if self.db.is_none() {
            let e = StoreError::backend(Suspended);
            ops.into_iter().for_each(|op| op.fail(&e));
            return;
        }
        let saved_alloc = self.alloc.clone();
        let mut outcomes = Vec::with_capacity(ops.len());
        match self.apply_in_txn(ops, &mut outcomes) {
            Ok(()) => outcomes.into_iter().for_each(Outcome::send),
            Err((e, rest)) => {
                self.alloc = saved_alloc;
                tracing::warn!(error = %crate::config::report(&e), "store commit failed; nothing of this batch was stored");
                if matches!(e, StoreError::Backend(_)) {
                    // redb refuses everything on a handle after an IO error: drop it and reopen.
                    self.db = None;
                    self.down_since = Some(Instant::now());
                    self.retry_at = Instant::now() + self.retry;
                }
                outcomes.into_iter().for_each(|o| o.fail(&e));
                rest.into_iter().for_each(|op| op.fail(&e));
            }
        }
    }

    /// If the database is down and a retry is due, reopen it and continue from what is durable,
    /// whatever a failed commit left.
    fn try_recover(&mut self) {
        if self.db.is_some() || Instant::now() < self.retry_at {
            return;
        }
        self.retry_at = Instant::now() + self.retry;
        let reopened = self.at.open_writer().and_then(|db| {
            let meta = schema::read_meta(&db)?;
            Ok((db, meta))
        });
        match reopened {
            Ok((db, meta)) => {
                self.alloc = Allocator::resume(meta.last, meta.floor).with_capacity(self.capacity);
                self.links.store(meta.links, Ordering::Relaxed);
                self.answers.store(meta.answers, Ordering::Relaxed);
                self.marks.store(meta.marks.unwrap_or(0), Ordering::Relaxed);
                self.db = Some(db);
                let down = self
                    .down_since
                    .take()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                tracing::info!(
                    down_secs = down.as_secs(),
                    "database reopened after a storage failure; writes resume"
                );
            }
            Err(e) => {
                tracing::debug!(error = %crate::config::report(&e), "the database cannot be reopened yet")
            }
        }
    }

    /// Apply `ops` in one transaction and commit it. On failure, returns the error and the
    /// operations not reached yet.
    fn apply_in_txn(
        &mut self,
        ops: Vec<Op>,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), (StoreError, Vec<Op>)> {
        let mut ops = ops.into_iter();
        let w = match self.begin() {
            Ok(w) => w,
            Err(e) => return Err((e, ops.collect())),
        };
        let before = Counts {
            links: self.links.load(Ordering::Relaxed),
            answers: self.answers.load(Ordering::Relaxed),
            marks: self.marks.load(Ordering::Relaxed),
        };
        let mut created = Vec::new();
        let changed = match self.run_ops(&w, &mut ops, outcomes, before, &mut created) {
            Ok(changed) => changed,
            Err(e) => {
                drop(w.abort());
                return Err((e, ops.collect()));
            }
        };
        match changed {
            // Nothing changed (deletes that matched nothing, refused stores, GC with nothing
            // expired): no commit, no fsync, the answers stand as they are.
            None => drop(w.abort()),
            Some(after) => {
                w.commit().map_err(|e| (StoreError::from(e), Vec::new()))?;
                // Release: a reader that sees the new count (before any reply goes out) reads this commit.
                self.commits.fetch_add(1, Ordering::Release);
                // Outdated now: kept, its read transaction would pin every page freed from here.
                if let Ok(mut s) = self.snapshot.lock() {
                    *s = None;
                }
                self.links.store(after.links, Ordering::Relaxed);
                self.answers.store(after.answers, Ordering::Relaxed);
                self.marks.store(after.marks, Ordering::Relaxed);
                self.opened.add(created);
            }
        }
        Ok(())
    }

    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| StoreError::backend(Suspended))?;
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        w.set_quick_repair(true);
        Ok(w)
    }

    /// Run the operations; the counts after them if anything is to be committed.
    fn run_ops(
        &mut self,
        w: &WriteTransaction,
        ops: &mut std::vec::IntoIter<Op>,
        outcomes: &mut Vec<Outcome>,
        Counts {
            links,
            answers,
            marks,
        }: Counts,
        created: &mut Vec<BucketId>,
    ) -> Result<Option<Counts>, StoreError> {
        let mut batch = Batch {
            w,
            buckets: w.open_table(BUCKETS)?,
            expiry: w.open_table(EXPIRY)?,
            mail: None,
            touched: HashMap::new(),
            dirty: HashSet::new(),
            links,
            answers,
            marks,
            changed: false,
            created: Vec::new(),
        };
        let mut mark = Some(self.mark.load(Ordering::Relaxed)).filter(|m| *m > 0);
        let mut hold = self.hold.get();
        let ttl = self.params.ttl_secs;
        for op in ops.by_ref() {
            match op {
                Op::Store {
                    link,
                    check,
                    target,
                    now,
                    reply,
                } => {
                    let r = batch.apply_store(
                        &mut self.alloc,
                        &self.params,
                        StoredLink {
                            link,
                            check,
                            stamp: target.map(|(_, s)| s),
                        },
                        target.map(|(id, _)| id),
                        now,
                    );
                    settle(outcomes, |r| Outcome::Store(reply, r), r)?;
                }
                Op::Challenge { now, reply } => {
                    let r = batch.apply_challenge(&mut self.alloc, &self.params, now);
                    settle(outcomes, |r| Outcome::Store(reply, r), r)?;
                }
                Op::Delete {
                    locator,
                    check,
                    now,
                    reply,
                } => {
                    let now = ExpiryHold::apply(hold.as_ref(), now, ttl);
                    let r = batch.apply_delete(&self.params, locator, check, now);
                    settle(outcomes, |r| Outcome::Delete(reply, r), delete_result(r))?;
                }
                Op::PutAnswer {
                    mailbox,
                    answer,
                    now,
                    kind,
                    reply,
                } => {
                    let held = ExpiryHold::apply(hold.as_ref(), now, ttl);
                    let r =
                        batch.apply_put_answer(&self.params, (mailbox, answer), now, held, kind);
                    settle(outcomes, |r| Outcome::PutAnswer(reply, r), r)?;
                }
                Op::Gc { now, limit, reply } => {
                    if hold.is_some_and(|h| h.ended(now, ttl)) {
                        hold = None;
                        batch.changed = true;
                    }
                    let held = ExpiryHold::apply(hold.as_ref(), now, ttl);
                    let r = batch.apply_gc(&mut self.alloc, &self.params, held, limit);
                    settle(outcomes, |r| Outcome::Gc(reply, r), r.map(Ok))?;
                    // The mark moves on even when nothing expired: a restart resumes from it.
                    if now > mark.unwrap_or(0) {
                        mark = Some(now);
                        batch.changed = true;
                    }
                }
                Op::Hold { hold: h, reply } => {
                    let merged = hold.map_or(h, |old| old.merge(h));
                    if Some(merged) != hold {
                        hold = Some(merged);
                        batch.changed = true;
                    }
                    outcomes.push(Outcome::Hold(reply, Ok(())));
                }
            }
        }
        batch.flush()?;
        let (changed, links, answers, marks) =
            (batch.changed, batch.links, batch.answers, batch.marks);
        *created = std::mem::take(&mut batch.created);
        drop(batch);
        if !changed {
            return Ok(None);
        }
        schema::write_meta(
            w,
            &Meta {
                last: self.alloc.last(),
                links,
                answers,
                marks: Some(marks),
                floor: self.alloc.floor(),
                mark,
                hold,
            },
        )?;
        if let Some(m) = mark {
            self.mark.store(m, Ordering::Relaxed);
        }
        // Before the commit, but its answers wait for the commit: nobody stores under a hold
        // that is not durable, and one that failed to commit only holds back in memory.
        self.hold.set(hold);
        Ok(Some(Counts {
            links,
            answers,
            marks,
        }))
    }
}

/// The mailbox tables of a write transaction.
struct MailTables<'t> {
    answers: Table<'t, &'static [u8; 32], &'static [u8]>,
    expiry: Table<'t, (u64, [u8; 32]), ()>,
}

/// One write transaction's tables and the buckets it has loaded.
struct Batch<'t> {
    w: &'t WriteTransaction,
    buckets: Table<'t, &'static [u8; 32], &'static [u8]>,
    expiry: Table<'t, (u64, u16), ()>,
    /// Opened at the first answer or GC of the batch (most batches hold stores only).
    mail: Option<MailTables<'t>>,
    /// Buckets read (and maybe changed) in this batch, written back at the end.
    touched: HashMap<Locator, StoredBucket>,
    /// Which of `touched` changed.
    dirty: HashSet<Locator>,
    /// Links stored after this batch.
    links: u64,
    /// Answers stored after this batch.
    answers: u64,
    /// Marks of deleted links kept after this batch.
    marks: u64,
    /// Whether the batch changed anything at all.
    changed: bool,
    /// Buckets this batch created.
    created: Vec<BucketId>,
}

impl<'t> Batch<'t> {
    fn mail(&mut self) -> Result<&mut MailTables<'t>, StoreError> {
        if self.mail.is_none() {
            self.mail = Some(MailTables {
                answers: self.w.open_table(MAILBOXES)?,
                expiry: self.w.open_table(MAILBOX_EXPIRY)?,
            });
        }
        Ok(self.mail.as_mut().expect("opened above"))
    }

    /// The quota check shared by stores and answers.
    fn over_quota(&self, params: &StoreParams, kind: WriteKind) -> Option<StoreError> {
        params
            .admits(kind, self.links + self.marks, self.answers)
            .err()
    }

    /// One answer. The outer error aborts the batch; the inner one is this answer's refusal.
    fn apply_put_answer(
        &mut self,
        params: &StoreParams,
        (mailbox, answer): (MailboxAddr, SealedAnswer),
        now: u64,
        held: u64,
        kind: WriteKind,
    ) -> Result<Result<PutAnswer, StoreError>, StoreError> {
        let ttl = params.ttl_secs;
        let mail = self.mail()?;
        let old = match mail.answers.get(&mailbox.0)? {
            Some(g) => Some(schema::decode_answer(g.value())?),
            None => None,
        };
        let mut freed = false;
        if let Some(old) = old {
            if !old.expired(held, ttl) {
                return Ok(Ok(PutAnswer::AlreadyAnswered));
            }
            // An expired answer not collected yet: the mailbox is free again.
            mail.answers.remove(&mailbox.0)?;
            mail.expiry.remove((old.created, mailbox.0))?;
            freed = true;
        }
        if freed {
            self.answers -= 1;
            self.changed = true;
        }
        if let Some(e) = self.over_quota(params, kind) {
            return Ok(Err(e));
        }
        let bytes = schema::encode_answer(&StoredAnswer {
            created: now,
            answer,
        })?;
        let mail = self.mail()?;
        mail.answers.insert(&mailbox.0, bytes.as_slice())?;
        mail.expiry.insert((now, mailbox.0), ())?;
        self.answers += 1;
        self.changed = true;
        Ok(Ok(PutAnswer::Stored))
    }

    /// The bucket at `loc`, loaded into the batch once.
    fn load(&mut self, loc: Locator) -> Result<Option<&mut StoredBucket>, StoreError> {
        if let Entry::Vacant(v) = self.touched.entry(loc) {
            match self.buckets.get(&loc.0)? {
                Some(g) => {
                    v.insert(schema::decode(g.value())?);
                }
                None => return Ok(None),
            }
        }
        Ok(self.touched.get_mut(&loc))
    }

    /// The highest sequence number used in second `c`, from the expiry index.
    fn used(&self, c: u64) -> Result<Option<u16>, StoreError> {
        let last = self.expiry.range((c, 0)..=(c, u16::MAX))?.next_back();
        Ok(match last {
            Some(row) => Some(row?.0.value().1),
            None => None,
        })
    }

    /// The bucket at `id`'s locator, created empty (with its expiry entry) if it is not there.
    fn ensure(&mut self, id: BucketId) -> Result<(), StoreError> {
        let loc = id.locator();
        if self.load(loc)?.is_none() {
            self.expiry.insert((id.created, id.seq), ())?;
            self.touched.insert(loc, StoredBucket::new(id));
            self.dirty.insert(loc);
            self.changed = true;
            self.created.push(id);
        }
        Ok(())
    }

    /// One store (into the open bucket, or with `target` the bucket a challenge named). The
    /// outer error aborts the batch; the inner one is this store's refusal.
    fn apply_store(
        &mut self,
        alloc: &mut Allocator,
        params: &StoreParams,
        link: StoredLink,
        target: Option<BucketId>,
        now: u64,
    ) -> Result<Result<BucketId, StoreError>, StoreError> {
        if let Some(e) = self.over_quota(params, WriteKind::link(target.is_some())) {
            return Ok(Err(e));
        }
        let id = match target {
            Some(id) => {
                // A replayed stamp would put the same link into the bucket twice.
                let held = self
                    .load(id.locator())?
                    .map(|b| (b.holds(&link.link), b.stores()));
                if held.is_some_and(|(copy, _)| copy) {
                    return Ok(Err(StoreError::Duplicate));
                }
                let links = held.map(|(_, n)| n);
                if !alloc.join(id, links, now, params) {
                    return Ok(Err(StoreError::BucketClosed));
                }
                id
            }
            None => match alloc.assign(now, params, |c| self.used(c))? {
                // Not a copy of a link in that bucket, nor one deleted from it; refused, it
                // takes no place there.
                Ok(id)
                    if self
                        .load(id.locator())?
                        .is_some_and(|b| b.holds(&link.link)) =>
                {
                    alloc.unassign(id);
                    return Ok(Err(StoreError::Duplicate));
                }
                Ok(id) => id,
                Err(full) => return Ok(Err(full.into())),
            },
        };
        self.ensure(id)?;
        let loc = id.locator();
        if let Some(b) = self.touched.get_mut(&loc) {
            b.links.push(link);
        }
        self.dirty.insert(loc);
        self.links += 1;
        self.changed = true;
        Ok(Ok(id))
    }

    /// One challenge: the bucket the next store goes into, a new one opened (and written,
    /// empty) if needed.
    fn apply_challenge(
        &mut self,
        alloc: &mut Allocator,
        params: &StoreParams,
        now: u64,
    ) -> Result<Result<BucketId, StoreError>, StoreError> {
        let id = match alloc.challenge(now, params, |c| self.used(c))? {
            Ok(id) => id,
            Err(full) => return Ok(Err(full.into())),
        };
        self.ensure(id)?;
        Ok(Ok(id))
    }

    /// One delete: removes the first link whose check matches, if the bucket is not expired.
    fn apply_delete(
        &mut self,
        params: &StoreParams,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let Some(b) = self.load(locator)? else {
            return Ok(false);
        };
        if b.expired(now, params.ttl_secs) {
            return Ok(false);
        }
        let Some(marked) = b.delete(check, now, params.open_window_secs) else {
            return Ok(false);
        };
        self.marks += marked;
        self.dirty.insert(locator);
        self.links -= 1;
        self.changed = true;
        Ok(true)
    }

    /// Garbage collection: at most `limit` expired buckets and `limit` expired answers, oldest
    /// first.
    fn apply_gc(
        &mut self,
        alloc: &mut Allocator,
        params: &StoreParams,
        now: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if now < params.ttl_secs {
            return Ok(0);
        }
        // Write out what this batch changed so far: GC may remove those buckets.
        self.flush()?;
        let cutoff = now - params.ttl_secs;
        let mut doomed = Vec::new();
        for row in self.expiry.range(..=(cutoff, u16::MAX))?.take(limit) {
            let (k, _) = row?;
            doomed.push(k.value());
        }
        let mut damaged = 0usize;
        for &(created, seq) in &doomed {
            self.expiry.remove((created, seq))?;
            alloc.collected(created);
            let loc = BucketId { created, seq }.locator();
            self.touched.remove(&loc);
            if let Some(g) = self.buckets.remove(&loc.0)? {
                // A body that does not decode is removed all the same (it expired by its ID);
                // how many links it held is then unknown, so they are counted again below.
                match schema::decode(g.value()) {
                    Ok(b) => {
                        self.links = self.links.saturating_sub(b.links.len() as u64);
                        self.marks = self.marks.saturating_sub(b.gone.len() as u64);
                    }
                    Err(_) => damaged += 1,
                }
            }
        }
        if damaged > 0 {
            (self.links, self.marks) = schema::count_links_and_marks(&self.buckets)?;
            tracing::warn!(
                damaged,
                links = self.links,
                "garbage collection removed expired buckets that did not decode; the stored links were counted again"
            );
        }
        let mail = self.mail()?;
        let mut old_answers = Vec::new();
        for row in mail.expiry.range(..=(cutoff, [0xff; 32]))?.take(limit) {
            old_answers.push(row?.0.value());
        }
        for (created, mb) in &old_answers {
            mail.expiry.remove((*created, *mb))?;
            mail.answers.remove(mb)?;
        }
        self.answers -= old_answers.len() as u64;
        if !doomed.is_empty() || !old_answers.is_empty() {
            self.changed = true;
        }
        Ok(doomed.len() + old_answers.len())
    }

    /// Write the changed buckets into the table.
    fn flush(&mut self) -> Result<(), StoreError> {
        for loc in self.dirty.drain() {
            if let Some(b) = self.touched.get(&loc) {
                self.buckets.insert(&loc.0, schema::encode(b)?.as_slice())?;
            }
        }
        Ok(())
    }
}
