//! The on-disk store: postcard-encoded buckets in a redb database, with group commit.
//!
//! - [`schema`]: tables, format version, creation and verification;
//! - [`slot`]: the read-only handle readers share, beside the writer's own;
//! - [`writer`]: the one writer thread that groups concurrent writes into shared commits, and
//!   reopens its handle by itself after an IO failure.
//!
//! A store is acknowledged only after the commit that holds it has returned. If a commit fails
//! (disk full, IO error), every operation of that batch gets the error and nothing of it is kept.

mod schema;
mod slot;
#[cfg(test)]
mod tests;
mod writer;

use super::alloc::Allocator;
use super::ops::Op;
use super::{BucketStore, Entry, PutAnswer, StoreError, StoreParams, StoredLink, WriteKind};
use crate::proto::padding::FillerSecret;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink, Stamp};
use slot::{DbPath, Reader};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::Writer;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "rdv.redb";

/// Settings of the on-disk store.
#[derive(Clone, Debug)]
pub struct DiskStoreConfig {
    /// Retention settings.
    pub params: StoreParams,
    /// Commit every store on its own instead of grouping (only to measure what group commit
    /// saves). Default: `false`.
    pub commit_per_store: bool,
    /// Most operations in one commit. Default: 1024.
    pub max_batch: usize,
    /// redb page cache of the readers' handle, bytes (the writer's handle gets a quarter of it).
    /// Default: 64 MiB.
    pub cache_bytes: usize,
    /// Links per bucket before a new one opens. Default: 64. **Testing only**: less is what an
    /// isolating server does (`rdv serve --adversary isolate`); honest servers keep 64.
    pub bucket_capacity: usize,
}

impl Default for DiskStoreConfig {
    fn default() -> Self {
        DiskStoreConfig {
            params: StoreParams::default(),
            commit_per_store: false,
            max_batch: 1024,
            cache_bytes: 64 * 1024 * 1024,
            bucket_capacity: crate::proto::MAX_LINKS_PER_BUCKET,
        }
    }
}

impl DiskStoreConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.params.validate()?;
        if self.max_batch == 0 {
            return Err(crate::ConfigError::new("max_batch", "must be at least 1"));
        }
        if !(1..=crate::proto::MAX_LINKS_PER_BUCKET).contains(&self.bucket_capacity) {
            return Err(crate::ConfigError::new(
                "bucket_capacity",
                "must be from 1 to 64",
            ));
        }
        Ok(())
    }
}

macro_rules! backend_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::backend(redb::Error::from(e))
            }
        }
    )*};
}
backend_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The redb-backed store. Cheap to clone; the writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    reader: Reader,
    tx: mpsc::Sender<Op>,
    params: StoreParams,
    filler: FillerSecret,
    links: Arc<AtomicU64>,
    answers: Arc<AtomicU64>,
    /// Marks of deleted links kept.
    marks: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    /// The latest expiry time garbage collection used (0: none yet).
    mark: Arc<AtomicU64>,
    /// The expiry hold in force.
    hold: Arc<super::hold::HoldCell>,
    /// The storage quota in links (`u64::MAX`: none).
    quota: Arc<AtomicU64>,
    opened: Arc<super::Opened>,
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

/// What rdv itself keeps in a data directory; a directory that holds anything else is not
/// rdv's own, and its permissions are not rdv's to change.
pub const DATA_DIR_ENTRIES: &[&str] = &[DB_FILE, "arti", "health-probe"];

/// The data directory is not one rdv may make private.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another user's.
    #[error("the data directory {path} belongs to another user (uid {owner}); give rdv a directory of its own")]
    NotOurs {
        /// The directory.
        path: String,
        /// Its owner.
        owner: u32,
    },
    /// Readable by others and holding other files (a home directory, /tmp).
    #[error("the data directory {path} is open to other users and holds files that are not rdv's ({example}, …): rdv keeps keys there and would have to close it to everyone; give it a directory of its own (mkdir -m 700 DIR)")]
    Shared {
        /// The directory.
        path: String,
        /// One entry that is not rdv's.
        example: String,
    },
    /// Something else than a directory is there (a file, a symbolic link to nothing).
    #[error("the data directory {path} is not a directory (a file, or a symbolic link to nothing, is in its place): give --data a directory, or a path where none is yet")]
    NotADirectory {
        /// The path.
        path: String,
    },
}

/// Create `dir` (mode 0700), or check that an existing one is rdv's to make private: owned by
/// this user, and either closed to others already or holding nothing but rdv's own files (then
/// it is made 0700). Never changes the mode of someone else's directory or of a shared one.
pub fn claim_private_dir(dir: &Path) -> Result<(), StoreError> {
    // Nothing there (not even a symbolic link to nothing, refused below).
    if dir.symlink_metadata().is_err() {
        std::fs::create_dir_all(dir).map_err(|source| {
            StoreError::backend(CreateDir {
                path: dir.display().to_string(),
                source,
            })
        })?;
        restrict_permissions(dir, 0o700);
        return Ok(());
    }
    if check_private_dir(dir)? {
        restrict_permissions(dir, 0o700);
    }
    Ok(())
}

/// What [`claim_private_dir`] would say of `dir`, changing nothing (for a check of the
/// settings): the error it would refuse the directory with, else whether it would close the
/// directory to others (`false` for one that does not exist yet: it would be created closed).
pub fn check_private_dir(dir: &Path) -> Result<bool, StoreError> {
    let create = |source| {
        StoreError::backend(CreateDir {
            path: dir.display().to_string(),
            source,
        })
    };
    if !dir.exists() {
        // A symbolic link to nothing: creating the directory would fail at start.
        if dir.symlink_metadata().is_ok() {
            return Err(StoreError::backend(DataDirError::NotADirectory {
                path: dir.display().to_string(),
            }));
        }
        return Ok(false);
    }
    if !dir.is_dir() {
        return Err(StoreError::backend(DataDirError::NotADirectory {
            path: dir.display().to_string(),
        }));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(dir).map_err(create)?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(StoreError::backend(DataDirError::NotOurs {
                path: dir.display().to_string(),
                owner: meta.uid(),
            }));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            let foreign = std::fs::read_dir(dir)
                .map_err(create)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| !DATA_DIR_ENTRIES.contains(&n.as_str()));
            if let Some(example) = foreign {
                return Err(StoreError::backend(DataDirError::Shared {
                    path: dir.display().to_string(),
                    example,
                }));
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// The data directory could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the data directory {path}")]
struct CreateDir {
    path: String,
    #[source]
    source: std::io::Error,
}

impl DiskStore {
    /// Open (or create) the store in `dir`. `filler_seed` becomes the fetch-padding secret when
    /// the database is new.
    pub fn open(
        dir: &Path,
        config: DiskStoreConfig,
        filler_seed: FillerSecret,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, config, filler_seed, None, writer::RETRY)
    }

    /// [`DiskStore::open`] with another storage backend and reopen interval (tests).
    fn open_with(
        dir: &Path,
        config: DiskStoreConfig,
        filler_seed: FillerSecret,
        backend: Option<slot::BackendFactory>,
        retry: std::time::Duration,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        claim_private_dir(dir)?;
        let at = DbPath {
            path: dir.join(DB_FILE),
            read_cache: config.cache_bytes,
            write_cache: config.cache_bytes / 4,
            backend,
        };
        let existed = slot::exists(&at.path);
        // On a full disk an existing database still opens for reading; the writer then starts
        // down and reopens by itself once there is room.
        let (writer_db, meta, filler) = match at.open_writer() {
            Ok(db) => {
                restrict_permissions(&at.path, 0o600);
                let (meta, filler) = schema::init(&db, filler_seed)?;
                (Some(db), meta, filler)
            }
            Err(e @ StoreError::Backend(_)) if existed => {
                let reader = at.open_reader()?;
                let (meta, filler) = schema::read_existing(&reader)?.ok_or(e.clone())?;
                tracing::warn!(error = %crate::config::report(&e), "the database opens only for reading; writes are suspended until it can be reopened");
                (None, meta, filler)
            }
            Err(e) => return Err(e),
        };
        let links = Arc::new(AtomicU64::new(meta.links));
        let answers = Arc::new(AtomicU64::new(meta.answers));
        let marks = Arc::new(AtomicU64::new(meta.marks.unwrap_or(0)));
        let commits = Arc::new(AtomicU64::new(0));
        let mark = Arc::new(AtomicU64::new(meta.mark.unwrap_or(0)));
        let hold = Arc::new(super::hold::HoldCell::new(meta.hold));
        let quota = Arc::new(AtomicU64::new(config.params.max_links.unwrap_or(u64::MAX)));
        let opened = Arc::<super::Opened>::default();
        let reader = Reader::open(at.clone(), commits.clone())?;
        let max_batch = if config.commit_per_store {
            1
        } else {
            config.max_batch
        };
        let (tx, rx) = mpsc::channel(4 * max_batch);
        let down = writer_db.is_none();
        let writer = Writer {
            at,
            db: writer_db,
            retry_at: std::time::Instant::now() + retry,
            retry,
            down_since: down.then(std::time::Instant::now),
            alloc: Allocator::resume(meta.last, meta.floor).with_capacity(config.bucket_capacity),
            capacity: config.bucket_capacity,
            links: links.clone(),
            answers: answers.clone(),
            marks: marks.clone(),
            commits: commits.clone(),
            mark: mark.clone(),
            hold: hold.clone(),
            quota: quota.clone(),
            opened: opened.clone(),
            snapshot: reader.snapshot(),
            params: config.params,
            max_batch,
        };
        let writer = std::thread::Builder::new()
            .name("rdv-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::backend)?;
        Ok(DiskStore {
            inner: Arc::new(Inner {
                reader,
                tx,
                params: config.params,
                filler,
                links,
                answers,
                marks,
                commits,
                mark,
                hold,
                quota,
                opened,
                writer: Some(writer),
            }),
        })
    }

    /// The storage quota in links now (`None`: none).
    pub fn quota(&self) -> Option<u64> {
        Some(self.inner.quota.load(Ordering::Relaxed)).filter(|q| *q != u64::MAX)
    }

    /// Change the storage quota while the store runs (a quota derived from free disk space is
    /// derived again as space comes and goes); the next write transaction applies it.
    pub fn set_quota(&self, max_links: Option<u64>) {
        self.inner
            .quota
            .store(max_links.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Write transactions committed since the store was opened (group commit makes this far
    /// smaller than the number of writes under concurrency).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Check that every bucket and answer decodes and the counters agree; returns (buckets,
    /// links).
    pub fn verify(&self) -> Result<(u64, u64), StoreError> {
        let (buckets, links) = schema::verify(&*self.inner.reader.get()?)?;
        if links != self.link_count() {
            return Err(StoreError::Corrupt {
                what: "the in-memory link counter disagrees with the database",
                source: None,
            });
        }
        let meta = schema::read_meta(&*self.inner.reader.get()?)?;
        if meta.answers != self.answer_count() {
            return Err(StoreError::Corrupt {
                what: "the in-memory answer counter disagrees with the database",
                source: None,
            });
        }
        if meta.marks != Some(self.mark_count()) {
            return Err(StoreError::Corrupt {
                what: "the in-memory mark counter disagrees with the database",
                source: None,
            });
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
            let (op, rx) = Op::store(link, check, None, now);
            self.inner
                .tx
                .send(op)
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

/// The ID and unexpired entries of the bucket at `locator`.
fn read_bucket(
    t: &slot::BucketsTable,
    locator: Locator,
    now: u64,
    ttl: u64,
) -> Result<Option<(BucketId, Vec<Entry>)>, StoreError> {
    let Some(v) = t.get(&locator.0)? else {
        return Ok(None);
    };
    let b = schema::decode(v.value())?;
    if b.expired(now, ttl) {
        return Ok(None);
    }
    Ok(Some((
        b.id,
        b.links.into_iter().map(StoredLink::entry).collect(),
    )))
}

/// The unexpired answer in `mailbox`, from a fresh read transaction.
fn read_answer(
    db: &redb::ReadOnlyDatabase,
    mailbox: MailboxAddr,
    now: u64,
    ttl: u64,
) -> Result<Option<SealedAnswer>, StoreError> {
    use redb::ReadableDatabase;
    let r = db.begin_read()?;
    let Some(t) = schema::open_optional(&r, schema::MAILBOXES)? else {
        return Ok(None);
    };
    let Some(v) = t.get(&mailbox.0)? else {
        return Ok(None);
    };
    let a = schema::decode_answer(v.value())?;
    Ok((!a.expired(now, ttl)).then_some(a.answer))
}

fn restrict_permissions(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

impl BucketStore for DiskStore {
    async fn store_in(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        now: u64,
    ) -> Result<BucketId, StoreError> {
        let (op, rx) = Op::store(link, check, target, now);
        self.send(op, rx).await
    }

    async fn challenge(&self, now: u64) -> Result<BucketId, StoreError> {
        let (op, rx) = Op::challenge(now);
        self.send(op, rx).await
    }

    async fn fetch_entries(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<(BucketId, Vec<Entry>)>, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let ttl = inner.params.ttl_secs;
            let now = inner.hold.apply(now, ttl);
            let (db, table) = inner.reader.buckets()?;
            match read_bucket(&table, locator, now, ttl) {
                // One IO failure latches the handle: reopen it and try once more.
                Err(StoreError::Backend(_)) => {
                    drop(table);
                    inner.reader.reopen(&db)?;
                    read_bucket(&inner.reader.buckets()?.1, locator, now, ttl)
                }
                r => r,
            }
        })
        .await
        .map_err(StoreError::backend)?
    }

    async fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (op, rx) = Op::delete(locator, check, now);
        self.send(op, rx).await
    }

    async fn put_answer_as(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> Result<PutAnswer, StoreError> {
        let (op, rx) = Op::put_answer(mailbox, answer, now, kind);
        self.send(op, rx).await
    }

    async fn fetch_answer(
        &self,
        mailbox: MailboxAddr,
        now: u64,
    ) -> Result<Option<SealedAnswer>, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let ttl = inner.params.ttl_secs;
            let now = inner.hold.apply(now, ttl);
            let db = inner.reader.get()?;
            match read_answer(&db, mailbox, now, ttl) {
                Err(StoreError::Backend(_)) => {
                    inner.reader.reopen(&db)?;
                    read_answer(&*inner.reader.get()?, mailbox, now, ttl)
                }
                r => r,
            }
        })
        .await
        .map_err(StoreError::backend)?
    }

    async fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let (op, rx) = Op::gc(now, limit);
        self.send(op, rx).await
    }

    fn take_opened(&self) -> Vec<BucketId> {
        self.inner.opened.take()
    }

    fn params(&self) -> StoreParams {
        StoreParams {
            max_links: self.quota(),
            ..self.inner.params
        }
    }

    fn filler_secret(&self) -> &FillerSecret {
        &self.inner.filler
    }

    fn link_count(&self) -> u64 {
        self.inner.links.load(Ordering::Relaxed)
    }

    fn answer_count(&self) -> u64 {
        self.inner.answers.load(Ordering::Relaxed)
    }

    fn mark_count(&self) -> u64 {
        self.inner.marks.load(Ordering::Relaxed)
    }

    fn expiry_mark(&self) -> Option<u64> {
        Some(self.inner.mark.load(Ordering::Relaxed)).filter(|m| *m > 0)
    }

    fn expiry_hold(&self) -> Option<super::ExpiryHold> {
        self.inner.hold.get()
    }

    async fn hold_expiry(&self, hold: super::ExpiryHold) -> Result<(), StoreError> {
        if self.inner.hold.get().is_some_and(|h| h.covers(&hold)) {
            return Ok(());
        }
        let (op, rx) = Op::hold(hold);
        self.send(op, rx).await
    }
}
