//! The on-disk store: postcard-encoded buckets in a redb database, with group commit.
//!
//! Every write (store, delete, garbage collection) goes through one writer thread. The writer
//! takes everything queued, applies it in one write transaction, commits it durably, and only then
//! answers each caller: concurrent stores share one fsync. A store is acknowledged only after its
//! commit has returned. If a commit fails (disk full, IO error) every operation of that batch gets
//! the error and the in-memory state is rolled back to the last commit.
//!
//! Tables:
//! - `buckets`: locator (32 bytes) → postcard [`StoredBucket`]
//! - `expiry`: (created, seq) → () — bucket IDs in creation order, for garbage collection
//! - `meta`: counters and the newest bucket ID; `secrets`: the fetch-padding secret

use super::alloc::Allocator;
use super::{BucketStore, StoreError, StoreParams, StoredBucket, StoredLink};
use crate::proto::{BucketId, DeleteCheck, Locator, SealedLink};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

const BUCKETS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("buckets");
const EXPIRY: TableDefinition<(u64, u16), ()> = TableDefinition::new("expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SECRETS: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("secrets");

const META_LINKS: &str = "links";
const META_LAST_CREATED: &str = "last_created";
const META_LAST_SEQ: &str = "last_seq";
const META_FORMAT: &str = "format";
const FORMAT_VERSION: u64 = 1;
/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "rdv.redb";

/// Settings of the on-disk store.
#[derive(Clone, Debug)]
pub struct DiskStoreConfig {
    /// Retention settings.
    pub params: StoreParams,
    /// Commit every store on its own instead of grouping (only to measure what group commit saves).
    pub commit_per_store: bool,
    /// Most operations in one commit.
    pub max_batch: usize,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
}

impl Default for DiskStoreConfig {
    fn default() -> Self {
        DiskStoreConfig {
            params: StoreParams::default(),
            commit_per_store: false,
            max_batch: 1024,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Op {
    Store {
        link: SealedLink,
        check: DeleteCheck,
        now: u64,
        reply: oneshot::Sender<Result<BucketId, StoreError>>,
    },
    Delete {
        locator: Locator,
        check: DeleteCheck,
        now: u64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Gc {
        now: u64,
        limit: usize,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// The database, reopened after an IO failure: redb refuses every operation after one (its
/// state may no longer match the file), so recovery from e.g. a full disk means closing it and
/// opening it again, which replays the last durable commit.
struct DbSlot {
    path: PathBuf,
    cache_bytes: usize,
    db: std::sync::RwLock<Option<Arc<Database>>>,
}

impl DbSlot {
    fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
        Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))
    }

    /// The open database.
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .map_err(|_| StoreError::Storage("poisoned lock".into()))?
            .clone()
            .ok_or_else(|| {
                StoreError::Storage("the database is being reopened after an IO error".into())
            })
    }

    /// Close the database (waiting for readers to let go) and open it again.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self
            .db
            .write()
            .map_err(|_| StoreError::Storage("poisoned lock".into()))?;
        if let Some(mut arc) = slot.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(arc) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        arc = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Storage(
                            "readers hold the database; reopen postponed".into(),
                        ));
                    }
                }
            }
        }
        let db = Self::open_db(&self.path, self.cache_bytes)?;
        *slot = Some(Arc::new(db));
        tracing::info!("database reopened after an IO error");
        Ok(())
    }
}

/// The redb-backed store. Cheap to clone; the writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DbSlot>,
    tx: mpsc::Sender<Op>,
    params: StoreParams,
    filler: [u8; 32],
    links: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    /// Closing the store: the writer finishes what is queued, then releases the database, so the
    /// same directory can be opened again as soon as the last handle is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// The newest bucket ID and the link counter, from the meta table.
fn read_meta(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<(Option<BucketId>, u64), StoreError> {
    let get = |k: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta.get(k).map_err(storage)?.map(|g| g.value()))
    };
    let last = match (get(META_LAST_CREATED)?, get(META_LAST_SEQ)?) {
        (Some(created), Some(seq)) => Some(BucketId {
            created,
            seq: u16::try_from(seq).map_err(|_| StoreError::Corrupt("bad last_seq".into()))?,
        }),
        _ => None,
    };
    Ok((last, get(META_LINKS)?.unwrap_or(0)))
}

impl DiskStore {
    /// Open (or create) the store in `dir`. `filler_seed` seeds the fetch-padding secret when the
    /// database is new.
    pub fn open(
        dir: &Path,
        config: DiskStoreConfig,
        filler_seed: [u8; 32],
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = DbSlot::open_db(&path, config.cache_bytes)?;
        let (last, links, filler) = {
            let mut w = db.begin_write().map_err(storage)?;
            w.set_quick_repair(true);
            let out;
            {
                w.open_table(BUCKETS).map_err(storage)?;
                w.open_table(EXPIRY).map_err(storage)?;
                let mut meta = w.open_table(META).map_err(storage)?;
                let format = meta.get(META_FORMAT).map_err(storage)?.map(|g| g.value());
                match format {
                    None => {
                        meta.insert(META_FORMAT, FORMAT_VERSION).map_err(storage)?;
                    }
                    Some(FORMAT_VERSION) => {}
                    Some(v) => {
                        return Err(StoreError::Corrupt(format!("unknown store format {v}")))
                    }
                }
                let (last, links) = read_meta(&meta)?;
                let mut secrets = w.open_table(SECRETS).map_err(storage)?;
                let existing = secrets.get("filler").map_err(storage)?.map(|g| *g.value());
                let filler = match existing {
                    Some(f) => f,
                    None => {
                        secrets.insert("filler", &filler_seed).map_err(storage)?;
                        filler_seed
                    }
                };
                out = (last, links, filler);
            }
            w.commit().map_err(storage)?;
            out
        };
        let db = Arc::new(DbSlot {
            path,
            cache_bytes: config.cache_bytes,
            db: std::sync::RwLock::new(Some(Arc::new(db))),
        });
        let links = Arc::new(AtomicU64::new(links));
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(4 * config.max_batch.max(1));
        let writer = Writer {
            db: db.clone(),
            failed: false,
            alloc: Allocator::resume(last),
            links: links.clone(),
            commits: commits.clone(),
            params: config.params,
            max_batch: if config.commit_per_store {
                1
            } else {
                config.max_batch.max(1)
            },
        };
        let writer = std::thread::Builder::new()
            .name("rdv-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
        Ok(DiskStore {
            inner: Arc::new(Inner {
                db,
                tx,
                params: config.params,
                filler,
                links,
                commits,
                writer: Some(writer),
            }),
        })
    }

    /// Write transactions committed since the store was opened (group commit makes this far
    /// smaller than the number of writes under concurrency).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Check every bucket decodes and the counters agree; returns (buckets, links).
    pub fn verify(&self) -> Result<(u64, u64), StoreError> {
        let r = self.inner.db.get()?.begin_read().map_err(storage)?;
        let t = r.open_table(BUCKETS).map_err(storage)?;
        let e = r.open_table(EXPIRY).map_err(storage)?;
        let (mut buckets, mut links) = (0u64, 0u64);
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let b: StoredBucket =
                postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if b.id.locator().0 != *k.value() {
                return Err(StoreError::Corrupt(
                    "bucket stored under a wrong locator".into(),
                ));
            }
            if e.get((b.id.created, b.id.seq)).map_err(storage)?.is_none() {
                return Err(StoreError::Corrupt(
                    "bucket missing from the expiry index".into(),
                ));
            }
            buckets += 1;
            links += b.links.len() as u64;
        }
        if links != self.link_count() {
            return Err(StoreError::Corrupt(format!(
                "link counter {} but {links} links stored",
                self.link_count()
            )));
        }
        Ok((buckets, links))
    }

    async fn send<T>(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.inner
            .tx
            .send(op)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Write many links at once in few large transactions: the bulk-load path for benchmarks. It
    /// goes through the same writer and on-disk format as ordinary stores.
    pub async fn bulk_store(
        &self,
        links: Vec<(SealedLink, DeleteCheck)>,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut waits = Vec::with_capacity(links.len());
        for (link, check) in links {
            let (reply, rx) = oneshot::channel();
            self.inner
                .tx
                .send(Op::Store {
                    link,
                    check,
                    now,
                    reply,
                })
                .await
                .map_err(|_| StoreError::Closed)?;
            waits.push(rx);
        }
        for w in waits {
            w.await.map_err(|_| StoreError::Closed)??;
        }
        Ok(())
    }
}

impl BucketStore for DiskStore {
    async fn store(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        now: u64,
    ) -> Result<BucketId, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Op::Store {
                link,
                check,
                now,
                reply,
            },
            rx,
        )
        .await
    }

    async fn fetch(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<Vec<SealedLink>>, StoreError> {
        let db = self.inner.db.get()?;
        let ttl = self.inner.params.ttl_secs;
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(storage)?;
            let t = r.open_table(BUCKETS).map_err(storage)?;
            let Some(v) = t.get(&locator.0).map_err(storage)? else {
                return Ok(None);
            };
            let b: StoredBucket =
                postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if b.expired(now, ttl) {
                return Ok(None);
            }
            Ok(Some(b.links.into_iter().map(|l| l.link).collect()))
        })
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))?
    }

    async fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Op::Delete {
                locator,
                check,
                now,
                reply,
            },
            rx,
        )
        .await
    }

    async fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Gc { now, limit, reply }, rx).await
    }

    fn params(&self) -> StoreParams {
        self.inner.params
    }

    fn filler_secret(&self) -> [u8; 32] {
        self.inner.filler
    }

    fn link_count(&self) -> u64 {
        self.inner.links.load(Ordering::Relaxed)
    }
}

struct Writer {
    db: Arc<DbSlot>,
    failed: bool,
    alloc: Allocator,
    links: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    params: StoreParams,
    max_batch: usize,
}

enum Reply {
    Store(
        oneshot::Sender<Result<BucketId, StoreError>>,
        Result<BucketId, StoreError>,
    ),
    Delete(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Gc(
        oneshot::Sender<Result<usize, StoreError>>,
        Result<usize, StoreError>,
    ),
}

impl Reply {
    fn fail(self, msg: &str) {
        let e = || StoreError::Storage(msg.to_string());
        // A caller that went away does not mind.
        match self {
            Reply::Store(tx, Ok(_)) => drop(tx.send(Err(e()))),
            Reply::Store(tx, r) => drop(tx.send(r)),
            Reply::Delete(tx, Ok(_)) => drop(tx.send(Err(e()))),
            Reply::Delete(tx, r) => drop(tx.send(r)),
            Reply::Gc(tx, Ok(_)) => drop(tx.send(Err(e()))),
            Reply::Gc(tx, r) => drop(tx.send(r)),
        }
    }
    fn send(self) {
        match self {
            Reply::Store(tx, r) => drop(tx.send(r)),
            Reply::Delete(tx, r) => drop(tx.send(r)),
            Reply::Gc(tx, r) => drop(tx.send(r)),
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = rx.blocking_recv() {
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

    fn apply(&mut self, ops: Vec<Op>) {
        let saved_alloc = self.alloc.clone();
        let saved_links = self.links.load(Ordering::Relaxed);
        let mut replies = Vec::with_capacity(ops.len());
        let result = self.apply_in_txn(ops, &mut replies);
        match result {
            Ok(()) => replies.into_iter().for_each(Reply::send),
            Err(e) => {
                // After an IO error redb must be reopened before the next write.
                self.failed = matches!(e, StoreError::Storage(_));
                self.alloc = saved_alloc;
                self.links.store(saved_links, Ordering::Relaxed);
                let msg = e.to_string();
                tracing::warn!(error = %msg, "store commit failed; nothing of this batch was stored");
                replies.into_iter().for_each(|r| r.fail(&msg));
            }
        }
    }

    fn apply_in_txn(&mut self, ops: Vec<Op>, replies: &mut Vec<Reply>) -> Result<(), StoreError> {
        if self.failed {
            self.db.reopen()?;
            // Continue from what is durable, whatever the failed commit left behind.
            let r = self.db.get()?.begin_read().map_err(storage)?;
            let (last, links) = read_meta(&r.open_table(META).map_err(storage)?)?;
            self.alloc = Allocator::resume(last);
            self.links.store(links, Ordering::Relaxed);
            self.failed = false;
        }
        let mut w = self.db.get()?.begin_write().map_err(storage)?;
        w.set_durability(Durability::Immediate).map_err(storage)?;
        w.set_quick_repair(true);
        let mut links = self.links.load(Ordering::Relaxed);
        // Fallible work happens first; replies are queued and sent only after the commit.
        let mut ops = ops.into_iter();
        let mut run = |w: &redb::WriteTransaction,
                       ops: &mut std::vec::IntoIter<Op>,
                       replies: &mut Vec<Reply>|
         -> Result<(), StoreError> {
            let mut buckets = w.open_table(BUCKETS).map_err(storage)?;
            let mut expiry = w.open_table(EXPIRY).map_err(storage)?;
            let mut touched: HashMap<[u8; 32], StoredBucket> = HashMap::new();
            for op in ops.by_ref() {
                match op {
                    Op::Store {
                        link,
                        check,
                        now,
                        reply,
                    } => {
                        if let Some(max) = self.params.max_links {
                            if links >= max {
                                replies.push(Reply::Store(
                                    reply,
                                    Err(StoreError::QuotaExceeded { max }),
                                ));
                                continue;
                            }
                        }
                        let id = self.alloc.assign(now, self.params.open_window_secs);
                        let loc = id.locator().0;
                        let bucket = match touched.entry(loc) {
                            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                let b = match buckets.get(&loc).map_err(storage)? {
                                    Some(g) => postcard::from_bytes(g.value())
                                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                                    None => {
                                        expiry.insert((id.created, id.seq), ()).map_err(storage)?;
                                        StoredBucket {
                                            id,
                                            links: Vec::new(),
                                        }
                                    }
                                };
                                v.insert(b)
                            }
                        };
                        bucket.links.push(StoredLink { link, check });
                        links += 1;
                        replies.push(Reply::Store(reply, Ok(id)));
                    }
                    Op::Delete {
                        locator,
                        check,
                        now,
                        reply,
                    } => {
                        let loc = locator.0;
                        if let std::collections::hash_map::Entry::Vacant(v) = touched.entry(loc) {
                            match buckets.get(&loc).map_err(storage)? {
                                Some(g) => {
                                    v.insert(
                                        postcard::from_bytes(g.value())
                                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                                    );
                                }
                                None => {
                                    replies.push(Reply::Delete(reply, Ok(false)));
                                    continue;
                                }
                            }
                        }
                        let b = touched
                            .get_mut(&loc)
                            .ok_or_else(|| StoreError::Storage("bucket vanished".into()))?;
                        let found = !b.expired(now, self.params.ttl_secs)
                            && match b.links.iter().position(|l| l.check == check) {
                                Some(i) => {
                                    b.links.remove(i);
                                    links -= 1;
                                    true
                                }
                                None => false,
                            };
                        replies.push(Reply::Delete(reply, Ok(found)));
                    }
                    Op::Gc { now, limit, reply } => {
                        // Write out what this batch touched so far: GC may remove those buckets.
                        for (loc, b) in touched.drain() {
                            buckets
                                .insert(
                                    &loc,
                                    postcard::to_allocvec(&b).map_err(storage)?.as_slice(),
                                )
                                .map_err(storage)?;
                        }
                        let cutoff = now.saturating_sub(self.params.ttl_secs);
                        let mut doomed = Vec::new();
                        if now >= self.params.ttl_secs {
                            for row in expiry
                                .range(..=(cutoff, u16::MAX))
                                .map_err(storage)?
                                .take(limit)
                            {
                                let (k, _) = row.map_err(storage)?;
                                doomed.push(k.value());
                            }
                        }
                        for (created, seq) in &doomed {
                            expiry.remove((*created, *seq)).map_err(storage)?;
                            let loc = BucketId {
                                created: *created,
                                seq: *seq,
                            }
                            .locator()
                            .0;
                            if let Some(g) = buckets.remove(&loc).map_err(storage)? {
                                let b: StoredBucket = postcard::from_bytes(g.value())
                                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                                links -= b.links.len() as u64;
                            }
                        }
                        replies.push(Reply::Gc(reply, Ok(doomed.len())));
                    }
                }
            }
            for (loc, b) in touched {
                buckets
                    .insert(&loc, postcard::to_allocvec(&b).map_err(storage)?.as_slice())
                    .map_err(storage)?;
            }
            let mut meta = w.open_table(META).map_err(storage)?;
            meta.insert(META_LINKS, links).map_err(storage)?;
            if let Some(last) = self.alloc.last() {
                meta.insert(META_LAST_CREATED, last.created)
                    .map_err(storage)?;
                meta.insert(META_LAST_SEQ, u64::from(last.seq))
                    .map_err(storage)?;
            }
            Ok(())
        };
        if let Err(e) = run(&w, &mut ops, replies) {
            drop(w.abort());
            // Operations not reached yet fail with the same error.
            for op in ops {
                replies.push(match op {
                    Op::Store { reply, .. } => {
                        Reply::Store(reply, Ok(BucketId { created: 0, seq: 0 }))
                    }
                    Op::Delete { reply, .. } => Reply::Delete(reply, Ok(false)),
                    Op::Gc { reply, .. } => Reply::Gc(reply, Ok(0)),
                });
            }
            return Err(e);
        }
        w.commit().map_err(storage)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.links.store(links, Ordering::Relaxed);
        Ok(())
    }
}
