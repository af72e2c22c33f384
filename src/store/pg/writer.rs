//! The writer task of one frontend: group commit over PostgreSQL.
//!
//! Every write of this frontend is an [`Op`] queued to one task. The task takes everything
//! queued, runs it in one transaction that starts by locking the meta row (so the frontends of
//! one database write one after the other, each with the allocator state the previous one left),
//! commits, and only then answers each caller. If the transaction or its commit fails, every
//! operation of the batch gets the error. When the connection is lost, the writer reconnects in
//! the background (an attempt can hang as long as the database does), starting a new attempt at
//! most once per [`RETRY`] after the last one ended; writes that arrive in between wait for it
//! [`RECONNECT_WAIT`] at most, so that no write waits for more than one batch's time limit.

use super::connect;
use super::schema::{self, int, Meta};
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer};
use crate::store::alloc::{Allocator, Step};
use crate::store::codec::{decode, decode_answer, encode, encode_answer};
use crate::store::ops::{delete_result, settle, Op, Outcome};
use crate::store::{
    ExpiryHold, PutAnswer, StoreError, StoreParams, StoredAnswer, StoredBucket, StoredLink,
    WriteKind,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{Client, Statement, Transaction};

/// How often a writer without a connection tries to connect again.
const RETRY: Duration = Duration::from_secs(1);

/// How long a batch waits for a reconnect under way before it fails.
const RECONNECT_WAIT: Duration = Duration::from_secs(2);

/// Writes are suspended: the connection to the database was lost.
#[derive(Debug, thiserror::Error)]
#[error("writes are suspended: the connection to PostgreSQL was lost; reconnecting every second")]
struct Suspended;

/// Counters shared with the store handle.
pub(super) struct Counters {
    pub(super) links: AtomicU64,
    pub(super) answers: AtomicU64,
    /// Marks of deleted links kept.
    pub(super) marks: AtomicU64,
    /// When the counts were last read from the database.
    pub(super) read_at: std::sync::Mutex<std::time::Instant>,
    pub(super) commits: AtomicU64,
    /// Buckets this process's committed transactions created.
    pub(super) opened: crate::store::Opened,
    /// Writes refused as read-only (a failover) so far: the readers then connect again too.
    pub(super) failovers: AtomicU64,
    /// The cluster's expiry hold as this process last read or wrote it.
    pub(super) hold: crate::store::hold::HoldCell,
}

impl Counters {
    fn set(&self, m: &Meta) {
        self.links.store(m.links, Ordering::Relaxed);
        self.answers.store(m.answers, Ordering::Relaxed);
        self.marks.store(m.marks, Ordering::Relaxed);
        if let Ok(mut at) = self.read_at.lock() {
            *at = std::time::Instant::now();
        }
    }

    /// Whether the counts were read from the database within `within`.
    pub(super) fn read_within(&self, within: std::time::Duration) -> bool {
        self.read_at.lock().is_ok_and(|at| at.elapsed() <= within)
    }
}

/// The prepared statements of the writer's connection.
struct Stmts {
    lock_meta: Statement,
    write_meta: Statement,
    read_free: Statement,
    write_free: Statement,
    clear_free: Statement,
    get_bucket: Statement,
    max_seq: Statement,
    insert_bucket: Statement,
    update_bucket: Statement,
    get_answer: Statement,
    delete_answer: Statement,
    insert_answer: Statement,
    gc_buckets: Statement,
    gc_answers: Statement,
    get_hold: Statement,
    merge_hold: Statement,
    end_hold: Statement,
}

impl Stmts {
    async fn prepare(c: &Client) -> Result<Self, StoreError> {
        Ok(Stmts {
            lock_meta: c.prepare(schema::LOCK_META).await?,
            write_meta: c.prepare(schema::WRITE_META).await?,
            read_free: c.prepare(schema::READ_FREE).await?,
            write_free: c.prepare(schema::WRITE_FREE).await?,
            clear_free: c.prepare(schema::CLEAR_FREE).await?,
            get_bucket: c.prepare(schema::GET_BUCKET).await?,
            max_seq: c.prepare(schema::MAX_SEQ).await?,
            insert_bucket: c.prepare(schema::INSERT_BUCKET).await?,
            update_bucket: c.prepare(schema::UPDATE_BUCKET).await?,
            get_answer: c.prepare(schema::GET_ANSWER).await?,
            delete_answer: c.prepare(schema::DELETE_ANSWER).await?,
            insert_answer: c.prepare(schema::INSERT_ANSWER).await?,
            gc_buckets: c.prepare(schema::GC_BUCKETS).await?,
            gc_answers: c.prepare(schema::GC_ANSWERS).await?,
            get_hold: c.prepare(schema::GET_HOLD).await?,
            merge_hold: c.prepare(schema::MERGE_HOLD).await?,
            end_hold: c.prepare(schema::END_HOLD).await?,
        })
    }
}

/// What a batch runs with.
struct Settings {
    params: StoreParams,
    capacity: usize,
}

/// A connection attempt running on a task of its own.
type Reconnecting = tokio::task::JoinHandle<Result<(Client, Stmts), StoreError>>;

pub(super) struct Writer {
    database: tokio_postgres::Config,
    conn: Option<(Client, Stmts)>,
    /// When a new connection attempt may start: [`RETRY`] after the last one ended.
    retry_at: Instant,
    reconnecting: Option<Reconnecting>,
    settings: Settings,
    max_batch: usize,
    counters: Arc<Counters>,
}

impl Writer {
    pub(super) async fn new(
        database: tokio_postgres::Config,
        client: Client,
        params: StoreParams,
        capacity: usize,
        max_batch: usize,
        counters: Arc<Counters>,
    ) -> Result<Self, StoreError> {
        let stmts = Stmts::prepare(&client).await?;
        Ok(Writer {
            database,
            conn: Some((client, stmts)),
            retry_at: Instant::now(),
            reconnecting: None,
            settings: Settings { params, capacity },
            max_batch,
            counters,
        })
    }

    /// Take batches off the queue until every sender is gone.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.apply(std::mem::take(&mut batch)).await;
        }
    }

    /// Whether there is a connection. When it was lost, a reconnect runs in the background;
    /// this waits for it until `deadline` at most.
    async fn connect(&mut self, deadline: Instant) -> bool {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_some() {
            return true;
        }
        if self.reconnecting.is_none() && Instant::now() >= self.retry_at {
            let database = self.database.clone();
            self.reconnecting = Some(tokio::spawn(async move {
                let c = connect(&database).await?;
                let s = tokio::time::timeout(2 * super::SESSION_TIMEOUT, Stmts::prepare(&c))
                    .await
                    .map_err(|_| StoreError::backend(super::TimedOut))??;
                Ok((c, s))
            }));
        }
        let Some(attempt) = self.reconnecting.as_mut() else {
            return false;
        };
        let Ok(ended) = tokio::time::timeout_at(deadline, attempt).await else {
            return false;
        };
        self.reconnecting = None;
        self.retry_at = Instant::now() + RETRY;
        match ended {
            Ok(Ok(conn)) => {
                tracing::info!("reconnected to PostgreSQL; writes resume");
                // Perhaps to another server (a failover), which need not hold the hold this
                // process saw: the next store writes it again rather than trust the copy.
                self.counters.hold.set(None);
                self.conn = Some(conn);
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::config::report(&e), "PostgreSQL cannot be reached yet");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "a PostgreSQL reconnect attempt failed");
                false
            }
        }
    }

    async fn apply(&mut self, ops: Vec<Op>) {
        // The batch's whole time: waiting for a reconnect, the transaction, and asking whether
        // a commit whose answer was lost happened.
        let deadline = Instant::now() + 2 * super::SESSION_TIMEOUT;
        // A lost connection is waited for briefly (a database that restarted is back in
        // moments); one that does not come back fails the batch in [`RECONNECT_WAIT`].
        let wait = if self.conn.is_some() {
            deadline
        } else {
            deadline.min(Instant::now() + RECONNECT_WAIT)
        };
        let connected = self.connect(wait).await;
        let Some((client, stmts)) = self.conn.as_mut().filter(|_| connected) else {
            let e = StoreError::backend(Suspended);
            ops.into_iter().for_each(|op| op.fail(&e));
            return;
        };
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut txid = None;
        let mut created = Vec::new();
        let settings = &self.settings;
        let counters = &self.counters;
        let run = apply_in_txn(
            client,
            stmts,
            settings,
            counters,
            ops,
            &mut outcomes,
            (&mut txid, &mut created),
        );
        let result = match tokio::time::timeout_at(deadline, run).await {
            Ok(r) => r,
            Err(_) => {
                // The connection is dropped below, which rolls the transaction back (if the
                // server had not ended it already).
                self.conn = None;
                Err((StoreError::backend(super::TimedOut), Vec::new()))
            }
        };
        match result {
            Ok(()) => {
                self.counters.opened.add(created);
                outcomes.into_iter().for_each(Outcome::send)
            }
            Err((e, rest)) => {
                let refused = read_only(&e);
                if refused {
                    // After a failover the old primary takes no writes (SQLSTATE 25006): a new
                    // connection finds the new one (target_session_attrs=read-write, or a name
                    // that now points to it).
                    tracing::warn!(
                        "PostgreSQL refused a write as read-only (a failover?); reconnecting"
                    );
                    self.conn = None;
                    self.retry_at = Instant::now();
                    self.counters.failovers.fetch_add(1, Ordering::Release);
                }
                let lost = self.conn.as_ref().is_none_or(|(c, _)| c.is_closed());
                // A commit whose answer was lost may have happened: ask the database.
                // (Not after a read-only refusal: nothing committed, and the new connection may
                // be to another server, where the transaction ID means something else.)
                if lost && !refused && rest.is_empty() && !outcomes.is_empty() {
                    if let Some(id) = txid {
                        if self.committed(id, deadline).await {
                            tracing::info!("the connection was lost after a commit, which the database confirms");
                            self.counters.opened.add(created);
                            outcomes.into_iter().for_each(Outcome::send);
                            return;
                        }
                    }
                }
                tracing::warn!(error = %crate::config::report(&e), "store transaction failed; nothing of this batch was stored");
                if lost {
                    tracing::warn!("the connection to PostgreSQL was lost; reconnecting");
                }
                outcomes.into_iter().for_each(|o| o.fail(&e));
                rest.into_iter().for_each(|op| op.fail(&e));
            }
        }
    }

    /// Whether transaction `id` committed, asked on a fresh connection (which stays the
    /// writer's) before `deadline`. `false` when that cannot be known: then the batch is
    /// failed, and what it stored (if anything) stays as unacknowledged links until they expire.
    async fn committed(&mut self, id: i64, deadline: Instant) -> bool {
        self.conn = None;
        self.retry_at = Instant::now();
        // Asked again until the deadline: right after a crash the database is still down (or
        // recovering) for a few seconds, and a commit that happened must not be reported as a
        // failure for want of asking once more.
        while !self.connect(deadline).await {
            if Instant::now() >= deadline || self.retry_at >= deadline {
                return false;
            }
            tokio::time::sleep_until(self.retry_at).await;
        }
        let Some((client, _)) = self.conn.as_ref() else {
            return false;
        };
        let status =
            tokio::time::timeout_at(deadline, client.query_one("SELECT txid_status($1)", &[&id]))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|row| row.try_get::<_, Option<String>>(0).ok().flatten());
        status.as_deref() == Some("committed")
    }
}

/// Whether the database refused a write because the server is read-only (a standby).
fn read_only(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    // From the backend's own error (the shared handle around it hides its type).
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**inner);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<super::PgError>() {
            if pg.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Apply `ops` in one transaction and commit it. On failure, returns the error and the
/// operations not reached yet.
async fn apply_in_txn(
    client: &mut Client,
    stmts: &Stmts,
    settings: &Settings,
    counters: &Counters,
    ops: Vec<Op>,
    outcomes: &mut Vec<Outcome>,
    (txid, created): (&mut Option<i64>, &mut Vec<BucketId>),
) -> Result<(), (StoreError, Vec<Op>)> {
    let mut ops = ops.into_iter();
    let t = match client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
    {
        Ok(t) => t,
        Err(e) => return Err((e.into(), ops.collect())),
    };
    match run_ops(
        &t,
        stmts,
        settings,
        counters,
        &mut ops,
        outcomes,
        (txid, created),
    )
    .await
    {
        Ok((meta, hold)) => {
            if let Some(meta) = meta {
                t.commit().await.map_err(|e| {
                    // A hold this batch wrote may not be in the database: the next store writes
                    // it again rather than trust this process's copy.
                    counters.hold.set(None);
                    (e.into(), Vec::new())
                })?;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.set(&meta);
            } else {
                // Nothing changed: no commit, no fsync; the answers stand as they are.
                drop(t.rollback().await);
            }
            // Only now, committed: a request that finds the hold here stores without writing it.
            if let Some(h) = hold {
                counters.hold.set(h);
            }
            Ok(())
        }
        Err(e) => {
            drop(t.rollback().await);
            counters.hold.set(None);
            Err((e, ops.collect()))
        }
    }
}

/// Run the operations; the new meta row if anything is to be committed, and the cluster's
/// expiry hold as the batch read or left it (if it looked).
async fn run_ops(
    t: &Transaction<'_>,
    stmts: &Stmts,
    settings: &Settings,
    counters: &Counters,
    ops: &mut std::vec::IntoIter<Op>,
    outcomes: &mut Vec<Outcome>,
    (txid, created): (&mut Option<i64>, &mut Vec<BucketId>),
) -> Result<(Option<Meta>, Option<Option<ExpiryHold>>), StoreError> {
    let row = t.query_one(&stmts.lock_meta, &[]).await?;
    *txid = Some(row.try_get(9)?);
    let mut meta = schema::meta_from_row(&row)?;
    meta.free = schema::read_free(t, &stmts.read_free).await?;
    let (old_open, old_free) = (meta.open, meta.free);
    // What the other frontends wrote shows here, even if this batch changes nothing.
    counters.set(&meta);
    let alloc = Allocator::resume(meta.last, meta.floor)
        .with_capacity(settings.capacity)
        .with_open_buckets(meta.open, meta.free);
    let mut b = Batch {
        t,
        s: stmts,
        params: &settings.params,
        alloc,
        touched: HashMap::new(),
        dirty: HashSet::new(),
        links: meta.links,
        answers: meta.answers,
        marks: meta.marks,
        changed: false,
        created: Vec::new(),
        hold: None,
    };
    for op in ops.by_ref() {
        match op {
            Op::Store {
                link,
                check,
                target,
                now,
                reply,
            } => {
                let link = StoredLink {
                    link,
                    check,
                    stamp: target.map(|(_, s)| s),
                };
                let r = b.store(link, target.map(|(id, _)| id), now).await;
                settle(outcomes, |r| Outcome::Store(reply, r), r)?;
            }
            Op::Challenge { now, reply } => {
                let r = b.challenge(now).await;
                settle(outcomes, |r| Outcome::Store(reply, r), r)?;
            }
            Op::Delete {
                locator,
                check,
                now,
                reply,
            } => {
                let r = b.delete(locator, check, now).await;
                settle(outcomes, |r| Outcome::Delete(reply, r), delete_result(r))?;
            }
            Op::PutAnswer {
                mailbox,
                answer,
                now,
                kind,
                reply,
            } => {
                let r = b.put_answer(mailbox, answer, now, kind).await;
                settle(outcomes, |r| Outcome::PutAnswer(reply, r), r)?;
            }
            Op::Gc { now, limit, reply } => {
                let r = b.gc(now, limit).await.map(Ok);
                settle(outcomes, |r| Outcome::Gc(reply, r), r)?;
            }
            Op::Hold { hold, reply } => {
                let r = b.merge_hold(hold).await.map(Ok);
                settle(outcomes, |r| Outcome::Hold(reply, r), r)?;
            }
        }
    }
    b.flush().await?;
    *created = std::mem::take(&mut b.created);
    // An open bucket closed without a write (one from the future) is closed for every
    // frontend.
    let closed = b.alloc.open_bucket() != old_open || b.alloc.free_bucket() != old_free;
    if !b.changed && !closed {
        return Ok((None, b.hold));
    }
    let meta = Meta {
        links: b.links,
        answers: b.answers,
        marks: b.marks,
        last: b.alloc.last(),
        floor: b.alloc.floor(),
        open: b.alloc.open_bucket(),
        free: b.alloc.free_bucket(),
    };
    schema::write_meta(t, &stmts.write_meta, &meta).await?;
    if meta.free != old_free {
        let stmts_free = (&stmts.write_free, &stmts.clear_free);
        schema::write_free(t, stmts_free, meta.free).await?;
    }
    Ok((Some(meta), b.hold))
}

/// One transaction's state: the allocator loaded from the meta row, and the buckets loaded.
struct Batch<'a, 't> {
    t: &'a Transaction<'t>,
    s: &'a Stmts,
    params: &'a StoreParams,
    alloc: Allocator,
    /// Buckets read (and maybe changed) in this batch, written back at the end.
    touched: HashMap<Locator, StoredBucket>,
    /// Which of `touched` changed.
    dirty: HashSet<Locator>,
    links: u64,
    answers: u64,
    /// Marks of deleted links kept.
    marks: u64,
    changed: bool,
    /// Buckets this batch created.
    created: Vec<BucketId>,
    /// The cluster's expiry hold, read (under the meta row's lock) when first needed.
    hold: Option<Option<ExpiryHold>>,
}

impl Batch<'_, '_> {
    /// The cluster's expiry hold (read once per batch: every writer holds the meta row's lock,
    /// so no other frontend changes it meanwhile).
    async fn hold(&mut self) -> Result<Option<ExpiryHold>, StoreError> {
        if let Some(h) = self.hold {
            return Ok(h);
        }
        let h = match self.t.query_opt(&self.s.get_hold, &[]).await? {
            Some(row) => Some(schema::hold_from_row(&row)?),
            None => None,
        };
        self.hold = Some(h);
        Ok(h)
    }

    /// `now` with the cluster's expiry hold applied.
    async fn held(&mut self, now: u64) -> Result<u64, StoreError> {
        let ttl = self.params.ttl_secs;
        Ok(ExpiryHold::apply(self.hold().await?.as_ref(), now, ttl))
    }

    /// Widen the cluster's expiry hold.
    async fn merge_hold(&mut self, hold: ExpiryHold) -> Result<(), StoreError> {
        let row = self
            .t
            .query_one(
                &self.s.merge_hold,
                &[&int(hold.from)?, &int(hold.to)?, &int(hold.credit)?],
            )
            .await?;
        let h = schema::hold_from_row(&row)?;
        // This process's copy is set only after the commit: a request that finds the hold in it
        // stores without writing it, so it must be in the database by then.
        self.hold = Some(Some(h));
        self.changed = true;
        Ok(())
    }

    /// The quota check shared by stores and answers.
    fn over_quota(&self, kind: WriteKind) -> Option<StoreError> {
        self.params
            .admits(kind, self.links + self.marks, self.answers)
            .err()
    }

    /// The bucket at `loc`, loaded into the batch once.
    async fn load(&mut self, loc: Locator) -> Result<Option<&mut StoredBucket>, StoreError> {
        if !self.touched.contains_key(&loc) {
            let key: &[u8] = &loc.0;
            match self.t.query_opt(&self.s.get_bucket, &[&key]).await? {
                Some(row) => {
                    let b = decode(row.try_get(0)?)?;
                    self.touched.insert(loc, b);
                }
                None => return Ok(None),
            }
        }
        Ok(self.touched.get_mut(&loc))
    }

    /// A new, empty bucket row (inserted at once, so that the next `max(seq)` of its second
    /// sees it).
    async fn create(&mut self, id: BucketId) -> Result<(), StoreError> {
        let loc = id.locator();
        let empty = StoredBucket::new(id);
        let key: &[u8] = &loc.0;
        self.t
            .execute(
                &self.s.insert_bucket,
                &[
                    &key,
                    &int(id.created)?,
                    &i32::from(id.seq),
                    &encode(&empty)?,
                ],
            )
            .await?;
        self.touched.insert(loc, empty);
        self.created.push(id);
        Ok(())
    }

    /// The highest sequence number used in second `created`.
    async fn used(&self, created: u64) -> Result<Option<u16>, StoreError> {
        let row = self.t.query_one(&self.s.max_seq, &[&int(created)?]).await?;
        row.try_get::<_, Option<i32>>(0)?
            .map(|s| {
                u16::try_from(s).map_err(|_| StoreError::Corrupt {
                    what: "a bucket sequence number out of range in the database",
                    source: None,
                })
            })
            .transpose()
    }

    /// The bucket a store would go into (`links`: 1 for a store, 0 for a challenge), a new one
    /// created if needed.
    async fn assign(
        &mut self,
        now: u64,
        links: usize,
    ) -> Result<Result<BucketId, StoreError>, StoreError> {
        let step = match links {
            0 => self.alloc.begin_challenge(now, self.params),
            _ => self.alloc.begin(now, self.params),
        };
        Ok(match step {
            Ok(Step::Joined(id)) => Ok(id),
            Ok(Step::NewIn(created)) => {
                let used = self.used(created).await?;
                let opened = match links {
                    0 => self.alloc.open_empty_in(created, used, self.params),
                    _ => self.alloc.open_in(created, used, self.params),
                };
                match opened {
                    Ok(id) => {
                        self.create(id).await?;
                        self.changed = true;
                        Ok(id)
                    }
                    Err(full) => Err(full.into()),
                }
            }
            Err(full) => Err(full.into()),
        })
    }

    /// One store (into the open bucket, or with `target` the bucket a challenge named). The
    /// outer error aborts the batch; the inner one is this store's refusal.
    async fn store(
        &mut self,
        link: StoredLink,
        target: Option<BucketId>,
        now: u64,
    ) -> Result<Result<BucketId, StoreError>, StoreError> {
        if let Some(e) = self.over_quota(WriteKind::link(target.is_some())) {
            return Ok(Err(e));
        }
        let id = match target {
            Some(id) => {
                // A replayed stamp would put the same link into the bucket twice.
                let held = self
                    .load(id.locator())
                    .await?
                    .map(|b| (b.holds(&link.link), b.stores()));
                if held.is_some_and(|(copy, _)| copy) {
                    return Ok(Err(StoreError::Duplicate));
                }
                let links = held.map(|(_, n)| n);
                if !self.alloc.join(id, links, now, self.params) {
                    return Ok(Err(StoreError::BucketClosed));
                }
                id
            }
            None => match self.assign(now, 1).await? {
                // Not a copy of a link in that bucket, nor one deleted from it; refused, it
                // takes no place there.
                Ok(id)
                    if self
                        .load(id.locator())
                        .await?
                        .is_some_and(|b| b.holds(&link.link)) =>
                {
                    self.alloc.unassign(id);
                    return Ok(Err(StoreError::Duplicate));
                }
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            },
        };
        let loc = id.locator();
        if self.load(loc).await?.is_none() {
            // The open bucket's row is gone (it cannot have expired while open): start it again.
            self.create(id).await?;
        }
        if let Some(b) = self.touched.get_mut(&loc) {
            b.links.push(link);
        }
        self.dirty.insert(loc);
        self.links += 1;
        self.changed = true;
        Ok(Ok(id))
    }

    /// One challenge: the bucket the next store goes into, a new one created (empty) if needed.
    async fn challenge(&mut self, now: u64) -> Result<Result<BucketId, StoreError>, StoreError> {
        self.assign(now, 0).await
    }

    /// One delete: removes the first link whose check matches, if the bucket is not expired.
    async fn delete(
        &mut self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (ttl, window) = (self.params.ttl_secs, self.params.open_window_secs);
        let now = self.held(now).await?;
        let Some(b) = self.load(locator).await? else {
            return Ok(false);
        };
        if b.expired(now, ttl) {
            return Ok(false);
        }
        let Some(marked) = b.delete(check, now, window) else {
            return Ok(false);
        };
        self.marks += marked;
        self.dirty.insert(locator);
        self.links = self.links.saturating_sub(1);
        self.changed = true;
        Ok(true)
    }

    /// One answer. The outer error aborts the batch; the inner one is this answer's refusal.
    async fn put_answer(
        &mut self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> Result<Result<PutAnswer, StoreError>, StoreError> {
        let key: &[u8] = &mailbox.0;
        let held = self.held(now).await?;
        if let Some(row) = self.t.query_opt(&self.s.get_answer, &[&key]).await? {
            let old = decode_answer(row.try_get(1)?)?;
            if !old.expired(held, self.params.ttl_secs) {
                return Ok(Ok(PutAnswer::AlreadyAnswered));
            }
            // An expired answer not collected yet: the mailbox is free again.
            self.t.execute(&self.s.delete_answer, &[&key]).await?;
            self.answers = self.answers.saturating_sub(1);
            self.changed = true;
        }
        if let Some(e) = self.over_quota(kind) {
            return Ok(Err(e));
        }
        let bytes = encode_answer(&StoredAnswer {
            created: now,
            answer,
        })?;
        self.t
            .execute(&self.s.insert_answer, &[&key, &int(now)?, &bytes])
            .await?;
        self.answers += 1;
        self.changed = true;
        Ok(Ok(PutAnswer::Stored))
    }

    /// Garbage collection: at most `limit` expired buckets and `limit` expired answers, oldest
    /// first.
    async fn gc(&mut self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let ttl = self.params.ttl_secs;
        // Every frontend deletes for all of them: only what has expired by the database
        // server's clock too, so that one frontend whose clock is ahead cannot collect the
        // cluster's links early.
        let db_now: i64 = self
            .t
            .query_one("SELECT floor(extract(epoch FROM now()))::bigint", &[])
            .await?
            .try_get(0)?;
        let now = now.min(u64::try_from(db_now).unwrap_or(0));
        if self.hold().await?.is_some_and(|h| h.ended(now, ttl)) {
            self.t.execute(&self.s.end_hold, &[]).await?;
            self.hold = Some(None);
            self.changed = true;
        }
        let now = self.held(now).await?;
        if now < ttl {
            return Ok(0);
        }
        // Write out what this batch changed so far: GC may remove those buckets.
        self.flush().await?;
        let cutoff = int(now - ttl)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let gone = self.t.query(&self.s.gc_buckets, &[&cutoff, &limit]).await?;
        for row in &gone {
            let created = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
            let links = u64::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0);
            let marks = u64::try_from(row.try_get::<_, i32>(2)?).unwrap_or(0);
            self.alloc.collected(created);
            self.links = self.links.saturating_sub(links);
            self.marks = self.marks.saturating_sub(marks);
        }
        // Whatever this batch loaded may be gone now: load again if needed.
        self.touched.clear();
        let answers = self
            .t
            .query(&self.s.gc_answers, &[&cutoff, &limit])
            .await?
            .len();
        self.answers = self.answers.saturating_sub(answers as u64);
        if !gone.is_empty() || answers > 0 {
            self.changed = true;
        }
        Ok(gone.len() + answers)
    }

    /// Write the changed buckets back.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for loc in std::mem::take(&mut self.dirty) {
            if let Some(b) = self.touched.get(&loc) {
                let n = i32::try_from(b.links.len()).unwrap_or(i32::MAX);
                let marks = i32::try_from(b.gone.len()).unwrap_or(i32::MAX);
                writes.push((loc, n, encode(b)?, marks));
            }
        }
        // Sent together: the connection pipelines them.
        let t = self.t;
        let update = &self.s.update_bucket;
        let updated =
            futures::future::try_join_all(writes.iter().map(|(loc, n, body, marks)| async move {
                let key: &[u8] = &loc.0;
                t.execute(update, &[&key, n, body, marks]).await
            }))
            .await?;
        if updated.iter().any(|n| *n != 1) {
            // The row vanished under us (removed by hand?): never acknowledge a link into it.
            return Err(StoreError::Corrupt {
                what: "a bucket being written is missing from the database",
                source: None,
            });
        }
        Ok(())
    }
}
