//! The database handles: one read-write handle owned by the writer thread, one read-only handle
//! shared by every reader.
//!
//! redb latches an IO failure: after one failed write (a full disk, say) every later operation on
//! that handle fails, reads included. So reads never go through the writer's handle. Both handles
//! are opened in redb's single-writer mode, in which a read-only handle shares the file with the
//! writer and follows its commits: while the writer is down (its handle dropped, to be reopened
//! once the disk has room again) fetches keep answering from the last committed state.

use crate::store::StoreError;
use redb::{ConcurrencyMode, Database, ReadOnlyDatabase};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The read-only handle's lock was poisoned by a panicking thread.
#[derive(Debug, thiserror::Error)]
#[error("the database reader's lock was poisoned by a panic")]
struct Poisoned;

/// Where the database lives and how to open it.
#[derive(Clone, Debug)]
pub(super) struct DbPath {
    pub(super) path: PathBuf,
    /// Page cache of the read-only handle, bytes.
    pub(super) read_cache: usize,
    /// Page cache of the writer's handle, bytes (it reads only the buckets it changes).
    pub(super) write_cache: usize,
}

impl DbPath {
    /// Open (or create) the database for writing.
    pub(super) fn open_writer(&self) -> Result<Database, StoreError> {
        Ok(Database::builder()
            .set_cache_size(self.write_cache)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(&self.path)?)
    }

    /// Open the existing database for reading, beside its writer.
    pub(super) fn open_reader(&self) -> Result<ReadOnlyDatabase, StoreError> {
        Ok(Database::builder()
            .set_cache_size(self.read_cache)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .open_read_only(&self.path)?)
    }
}

/// The shared read-only handle, replaced when a read fails on IO.
pub(super) struct Reader {
    at: DbPath,
    db: RwLock<Arc<ReadOnlyDatabase>>,
}

impl Reader {
    /// Open the reader of the database at `at`.
    pub(super) fn open(at: DbPath) -> Result<Self, StoreError> {
        let db = Arc::new(at.open_reader()?);
        Ok(Reader {
            at,
            db: RwLock::new(db),
        })
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
