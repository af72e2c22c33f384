//! The database handles: one read-write handle owned by the writer thread, one read-only handle
//! shared by every reader.
//!
//! redb latches an IO failure: after one failed write (a full disk, say) every later operation on
//! that handle fails, reads included. So reads never go through the writer's handle. Both handles
//! are opened in redb's single-writer mode, in which a read-only handle shares the file with the
//! writer and follows its commits: while the writer is down (its handle dropped, to be reopened
//! once the disk has room again) fetches keep answering from the last committed state.

use crate::store::StoreError;
use redb::{ConcurrencyMode, Database, ReadOnlyDatabase, StorageBackend};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Makes the storage backend of a handle (`true`: the writer's) instead of the plain file: for
/// tests that inject faults or simulate a power loss.
pub(super) type BackendFactory =
    Arc<dyn Fn(bool) -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// A boxed backend as a backend.
#[derive(Debug)]
struct Boxed(Box<dyn StorageBackend>);

impl StorageBackend for Boxed {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(s, e)
    }
    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(s, e)
    }
}

/// The read-only handle's lock was poisoned by a panicking thread.
#[derive(Debug, thiserror::Error)]
#[error("the database reader's lock was poisoned by a panic")]
struct Poisoned;

/// Where the database lives and how to open it.
#[derive(Clone)]
pub(super) struct DbPath {
    pub(super) path: PathBuf,
    /// Page cache of the read-only handle, bytes.
    pub(super) read_cache: usize,
    /// Page cache of the writer's handle, bytes (it reads only the buckets it changes).
    pub(super) write_cache: usize,
    /// Backends other than the plain file (tests).
    pub(super) backend: Option<BackendFactory>,
}

impl std::fmt::Debug for DbPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPath")
            .field("path", &self.path)
            .field("custom_backend", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl DbPath {
    /// Open (or create) the database for writing.
    pub(super) fn open_writer(&self) -> Result<Database, StoreError> {
        let mut b = Database::builder();
        b.set_cache_size(self.write_cache)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter);
        let db = match &self.backend {
            Some(make) => b.create_with_backend(Boxed(make(true).map_err(StoreError::backend)?)),
            None => b.create(&self.path),
        };
        match db {
            Ok(db) => Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::InUse {
                path: self.path.display().to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Open the existing database for reading, beside its writer.
    pub(super) fn open_reader(&self) -> Result<ReadOnlyDatabase, StoreError> {
        let mut b = Database::builder();
        b.set_cache_size(self.read_cache)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter);
        Ok(match &self.backend {
            Some(make) => {
                b.open_read_only_with_backend(Boxed(make(false).map_err(StoreError::backend)?))?
            }
            None => b.open_read_only(&self.path)?,
        })
    }
}

/// The buckets table as of one commit.
pub(super) type BucketsTable = redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>;

/// The read snapshot fetches share, with the commit it was taken at ([`Reader`]).
pub(super) type Snapshot = Arc<std::sync::Mutex<Option<(u64, Arc<BucketsTable>)>>>;

/// The shared read-only handle, replaced when a read fails on IO.
///
/// Fetches share one read snapshot of the buckets table until the writer commits again: the
/// writer bumps `generation` after every commit and before it answers anyone, so a fetch that
/// starts after a store was acknowledged always reads a snapshot that holds it. (Opening a read
/// transaction for every fetch costs several file-lock system calls in redb's shared mode.)
/// The writer also lets go of the snapshot after every commit ([`Reader::snapshot`]): a read
/// transaction kept open keeps redb from reusing the pages every later commit frees, and one
/// fetch followed by writes and no more reads grew the file some 100 KB a commit, past any quota
/// (a helper's attack: 1.6 GB for 5 000 stores and deletes against a quota of 10 000 links).
pub(super) struct Reader {
    at: DbPath,
    db: RwLock<Arc<ReadOnlyDatabase>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    snapshot: Snapshot,
}

impl Reader {
    /// Open the reader of the database at `at`; `generation` is the writer's commit counter.
    pub(super) fn open(
        at: DbPath,
        generation: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(at.open_reader()?);
        Ok(Reader {
            at,
            db: RwLock::new(db),
            generation,
            snapshot: Snapshot::default(),
        })
    }

    /// The shared snapshot, for the writer to let go of after each commit.
    pub(super) fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    /// The buckets table as of the latest commit.
    pub(super) fn buckets(&self) -> Result<(Arc<ReadOnlyDatabase>, Arc<BucketsTable>), StoreError> {
        use redb::ReadableDatabase;
        use std::sync::atomic::Ordering;
        let db = self.get()?;
        let gen = self.generation.load(Ordering::Acquire);
        if let Ok(cached) = self.snapshot.lock() {
            if let Some((g, t)) = &*cached {
                if *g == gen {
                    return Ok((db, t.clone()));
                }
            }
        }
        let table = Arc::new(db.begin_read()?.open_table(super::schema::BUCKETS)?);
        if let Ok(mut cached) = self.snapshot.lock() {
            *cached = Some((gen, table.clone()));
        }
        Ok((db, table))
    }

    /// The current handle.
    pub(super) fn get(&self) -> Result<Arc<ReadOnlyDatabase>, StoreError> {
        Ok(self
            .db
            .read()
            .map_err(|_| StoreError::backend(Poisoned))?
            .clone())
    }

    /// Replace a handle that failed on IO (`failed` is the one the caller used; if another
    /// caller has replaced it already, nothing happens).
    pub(super) fn reopen(&self, failed: &Arc<ReadOnlyDatabase>) -> Result<(), StoreError> {
        let mut slot = self.db.write().map_err(|_| StoreError::backend(Poisoned))?;
        if Arc::ptr_eq(&slot, failed) {
            if let Ok(mut cached) = self.snapshot.lock() {
                *cached = None;
            }
            *slot = Arc::new(self.at.open_reader()?);
            tracing::info!("database reader reopened after an IO error");
        }
        Ok(())
    }
}

/// Whether `path` holds a database already.
pub(super) fn exists(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
