//! The bucket store: where links live between store and fetch.
//!
//! [`BucketStore`] is the interface the server uses; [`db::DiskStore`] keeps buckets in a redb
//! database on disk with group commit, [`memory::MemoryStore`] keeps them in memory for tests.
//! Which bucket a link goes into is decided by the pure [`alloc::Allocator`].

pub mod alloc;
pub mod db;
pub mod memory;

use crate::proto::{BucketId, DeleteCheck, Locator, SealedLink};
use serde::{Deserialize, Serialize};
use std::future::Future;

pub use db::{DiskStore, DiskStoreConfig};
pub use memory::MemoryStore;

/// The store's retention settings, advertised to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreParams {
    /// Seconds a bucket accepts new links after its creation.
    pub open_window_secs: u64,
    /// Seconds a bucket is kept after its creation.
    pub ttl_secs: u64,
    /// The most links stored at once (`None`: no limit).
    pub max_links: Option<u64>,
}

impl Default for StoreParams {
    fn default() -> Self {
        StoreParams {
            open_window_secs: 600,
            ttl_secs: 7 * 24 * 3600,
            max_links: None,
        }
    }
}

/// One stored link and the hash of its deletion token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLink {
    /// The sealed link.
    pub link: SealedLink,
    /// Hash of the deletion token.
    pub check: DeleteCheck,
}

/// A bucket as stored (postcard-encoded on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBucket {
    /// The bucket's ID.
    pub id: BucketId,
    /// Its links, in store order.
    pub links: Vec<StoredLink>,
}

impl StoredBucket {
    /// Whether the bucket has expired at `now`.
    pub fn expired(&self, now: u64, ttl_secs: u64) -> bool {
        now >= self.id.created.saturating_add(ttl_secs)
    }
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configured maximum of stored links is reached.
    #[error("storage quota of {max} links is full; try again after older buckets expire")]
    QuotaExceeded {
        /// The quota.
        max: u64,
    },
    /// The database failed (disk full, IO error); nothing of the failed operation was stored.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A stored value did not decode.
    #[error("corrupt stored bucket: {0}")]
    Corrupt(String),
    /// The store is shut down.
    #[error("the store is closed")]
    Closed,
}

/// A store of buckets. `now` is unix seconds, passed in so that tests control time.
pub trait BucketStore: Send + Sync + 'static {
    /// Put a link into the open bucket; resolves once the link is durable.
    fn store(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        now: u64,
    ) -> impl Future<Output = Result<BucketId, StoreError>> + Send;

    /// The links of an unexpired bucket, or `None`.
    fn fetch(
        &self,
        locator: Locator,
        now: u64,
    ) -> impl Future<Output = Result<Option<Vec<SealedLink>>, StoreError>> + Send;

    /// Remove the link whose check matches; `false` if there is none.
    fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Remove expired buckets, at most `limit` of them; returns how many were removed.
    fn collect_garbage(
        &self,
        now: u64,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Retention settings.
    fn params(&self) -> StoreParams;

    /// A stable secret from which the server derives fetch padding (see `server`).
    fn filler_secret(&self) -> [u8; 32];

    /// Number of links stored.
    fn link_count(&self) -> u64;
}
