//! The bucket store: where links live between store and fetch, and answers between the
//! accepter's put and the initiator's fetch.
//!
//! [`BucketStore`] is the interface the server uses; [`db::DiskStore`] keeps buckets in a redb
//! database on disk with group commit, [`memory::MemoryStore`] keeps them in memory for tests.
//! Which bucket a link goes into is decided by the pure [`alloc::Allocator`], shared by every
//! backend so that they cannot drift apart.

pub mod alloc;
mod codec;
pub mod db;
pub mod hold;
pub mod memory;
mod ops;
pub mod pg;

use crate::proto::padding::FillerSecret;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

pub use db::{DiskStore, DiskStoreConfig};
pub use hold::ExpiryHold;
pub use memory::MemoryStore;
pub use pg::{PgStore, PgStoreConfig};

/// The store's retention settings, advertised to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreParams {
    /// Seconds a bucket accepts new links after its creation. Default: 600 (10 minutes). At least
    /// 1 and less than [`StoreParams::ttl_secs`].
    pub open_window_secs: u64,
    /// Seconds a bucket is kept after its creation. Default: 604 800 (7 days). At least 1.
    pub ttl_secs: u64,
    /// The most links and answers stored at once, expired ones not yet collected included
    /// (`None`: no limit). Default: `None` (`rdv serve` sizes a default from the free disk
    /// space).
    pub max_links: Option<u64>,
    /// The highest sequence number handed out: buckets beyond it in one second are refused by
    /// clients (the default client policy accepts up to 32), so the store reports itself full for
    /// that second instead. Default: 32, which caps the store at 33 × 64 = 2112 new links per
    /// second.
    pub max_seq: u16,
    /// Percent of `max_links` that links without a stamp may fill: past it (links and answers
    /// counted together) a store without a stamp is refused and only stamped stores go on, so a
    /// flood of free stores cannot fill the quota: the rest costs a stamp per link. From 1 to
    /// 100 (100: no share of their own). Default: 50. No effect without a quota.
    pub unstamped_share: u8,
    /// Percent of `max_links` that answers may fill (answers carry no stamp): past it a new
    /// answer is refused while links go on being stored, so an answer flood cannot fill the
    /// quota either. From 1 to 100. Default: 25. No effect without a quota.
    pub answer_share: u8,
}

impl Default for StoreParams {
    fn default() -> Self {
        StoreParams {
            open_window_secs: 600,
            ttl_secs: 7 * 24 * 3600,
            max_links: None,
            max_seq: crate::proto::ClientPolicy::default().max_seq,
            unstamped_share: 50,
            answer_share: 25,
        }
    }
}

impl StoreParams {
    /// Check the settings: every backend calls this when it opens, so a library caller, the
    /// command line and a configuration file all meet the same rules.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.open_window_secs == 0 {
            return Err(ConfigError::new("open_window", "must be at least 1 s"));
        }
        if self.ttl_secs == 0 {
            return Err(ConfigError::new("ttl", "must be at least 1 s"));
        }
        if self.open_window_secs >= self.ttl_secs {
            return Err(ConfigError::new(
                "open_window",
                format!(
                    "{} s must be shorter than the ttl ({} s): a bucket would expire while still open",
                    self.open_window_secs, self.ttl_secs
                ),
            ));
        }
        if self.max_links == Some(0) {
            return Err(ConfigError::new(
                "max_links",
                "must be at least 1 (leave it unset for no limit)",
            ));
        }
        for (name, percent) in [
            ("unstamped_share", self.unstamped_share),
            ("answer_share", self.answer_share),
        ] {
            if !(1..=100).contains(&percent) {
                return Err(ConfigError::new(name, "must be a percentage from 1 to 100"));
            }
        }
        Ok(())
    }

    /// Whether one more write of `kind` fits the quota and its share, with `links` links and
    /// `answers` answers stored; `links` counts the marks of deleted links too
    /// ([`BucketStore::mark_count`]): a mark stays until its bucket expires, and uncounted,
    /// stores and deletes over and over filled the disk past any quota (about 100 bytes a pair,
    /// thousands of pairs a second). Every backend asks this in its write transaction, with the
    /// counts of the whole store (every frontend's, on a cluster), so no two writes pass a
    /// limit together.
    pub fn admits(&self, kind: WriteKind, links: u64, answers: u64) -> Result<(), StoreError> {
        let Some(max) = self.max_links else {
            return Ok(());
        };
        let all = links.saturating_add(answers);
        if all >= max {
            return Err(StoreError::QuotaExceeded { max });
        }
        // The shares in hundredths of a percent, and what each counts. A write without a stamp
        // of either kind stops at the unstamped share: free answers after free stores took
        // 56 % of the quota where the share said 50 (a helper's attack, 2026-12-08).
        let unstamped = (u128::from(self.unstamped_share) * 100, all);
        let shares: &[(u128, u64)] = match kind {
            WriteKind::Stamped => &[],
            WriteKind::Unstamped => &[unstamped],
            WriteKind::Answer => &[(u128::from(self.answer_share) * 100, answers)],
            WriteKind::UnstampedAnswer => {
                &[(u128::from(self.answer_share) * 25, answers), unstamped]
            }
        };
        for &(basis, used) in shares {
            // used / max >= basis / 10 000, without overflow or rounding the share down to
            // nothing.
            let share = (u128::from(max) * basis).div_ceil(10_000);
            if basis < 10_000 && u128::from(used) >= share {
                let percent = u8::try_from(basis.div_ceil(100)).unwrap_or(100);
                return Err(StoreError::ShareFull { kind, max, percent });
            }
        }
        Ok(())
    }
}

/// What a write is, for the quota and its shares ([`StoreParams::admits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A link with a stamp: it may fill the whole quota.
    Stamped,
    /// A link without one: links and answers together may be `unstamped_share` of the quota.
    Unstamped,
    /// An answer with a stamp (protocol version 4): answers alone may be `answer_share` of the
    /// quota.
    Answer,
    /// An answer without one: answers alone may be a quarter of `answer_share` of the quota,
    /// and links and answers together `unstamped_share` of it, as for links without a stamp.
    UnstampedAnswer,
}

impl WriteKind {
    /// The kind of an answer with (`true`) or without a stamp.
    pub fn answer(stamped: bool) -> Self {
        if stamped {
            WriteKind::Answer
        } else {
            WriteKind::UnstampedAnswer
        }
    }

    /// The kind of a store with (`true`) or without a stamp.
    pub fn link(stamped: bool) -> Self {
        if stamped {
            WriteKind::Stamped
        } else {
            WriteKind::Unstamped
        }
    }
}

/// The refusal of a write past its share of the quota.
fn share_full(kind: WriteKind, max: u64, percent: u8) -> String {
    match kind {
        WriteKind::Answer => format!(
            "answers fill their {percent}% share of the storage quota ({max}); try again after older ones expire"
        ),
        WriteKind::UnstampedAnswer => format!(
            "writes without a stamp fill their share of the storage quota ({max}): a quarter of the answers' share, and no more than the share of links and answers without a stamp; only answers with a stamp (protocol version 4) are stored now"
        ),
        _ => format!(
            "the storage quota ({max} links) is {percent}% full: only links with a stamp (protocol version 3) are stored now"
        ),
    }
}

/// One stored link, the hash of its deletion token and its stamp, if it came with one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLink {
    /// The sealed link.
    pub link: SealedLink,
    /// Hash of the deletion token.
    pub check: DeleteCheck,
    /// The stamp it was stored with (protocol version 3), verified by the server then.
    pub stamp: Option<Stamp>,
}

impl StoredLink {
    /// What a fetch shows of it.
    pub fn entry(self) -> Entry {
        Entry {
            link: self.link,
            stamp: self.stamp,
        }
    }
}

/// One entry of a fetched bucket: a link and its stamp, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The sealed link.
    pub link: SealedLink,
    /// Its stamp.
    pub stamp: Option<Stamp>,
}

/// A bucket as stored (postcard-encoded on disk, see `codec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBucket {
    /// The bucket's ID.
    pub id: BucketId,
    /// Its links, in store order.
    pub links: Vec<StoredLink>,
    /// The links deleted from it, each as [`LinkMark`]: a deleted link is never stored in the
    /// bucket again and still counts as one of its 64 stores (PROTOCOL.md §10.1, §10.4).
    pub gone: Vec<LinkMark>,
}

/// What a bucket keeps of a deleted link: SHA3-256 of its sealed bytes.
pub type LinkMark = [u8; 32];

impl StoredBucket {
    /// An empty bucket.
    pub fn new(id: BucketId) -> Self {
        StoredBucket {
            id,
            links: Vec::new(),
            gone: Vec::new(),
        }
    }

    /// Whether the bucket has expired at `now`.
    pub fn expired(&self, now: u64, ttl_secs: u64) -> bool {
        now >= self.id.created.saturating_add(ttl_secs)
    }

    /// The stores it has received: its links and the deleted ones.
    pub fn stores(&self) -> usize {
        self.links.len() + self.gone.len()
    }

    /// Whether `link` is in the bucket or was deleted from it. A stamp is bound to a link's
    /// bytes, not to its deletion check, so without the deleted ones anyone who fetched a
    /// stamped entry could store it again after its owner deleted it (with a check of their
    /// own, so that the owner could not delete it again), and one stamp stored, deleted and
    /// stored again filled a bucket's 64 stores (a helper's attack, 2026-12-07).
    pub fn holds(&self, link: &SealedLink) -> bool {
        self.links.iter().any(|l| &l.link == link) || self.gone.contains(&mark(link))
    }

    /// Delete the first link whose check is `check` at `now` (the bucket's store window being
    /// `open_window` seconds): `None` if there is none, else the marks it kept (0 or 1, which
    /// a store counts in its quota). The link is marked only while the bucket can still take a
    /// store ([`crate::proto::stamp::LATE_STORE_SECS`] after its window): after that no store
    /// reaches it, and a mark would only take room until it expires.
    pub fn delete(&mut self, check: DeleteCheck, now: u64, open_window: u64) -> Option<u64> {
        let i = self.links.iter().position(|l| l.check == check)?;
        let l = self.links.remove(i);
        let open_until = self
            .id
            .created
            .saturating_add(open_window)
            .saturating_add(crate::proto::stamp::LATE_STORE_SECS);
        if now >= open_until {
            return Some(0);
        }
        self.gone.push(mark(&l.link));
        Some(1)
    }
}

/// The mark a bucket keeps of deleted link `link`.
fn mark(link: &SealedLink) -> LinkMark {
    use sha3::{Digest, Sha3_256};
    let mut h = Sha3_256::new();
    h.update(b"rdv deleted link v1");
    h.update(link.0);
    h.finalize().into()
}

/// An answer as stored (postcard-encoded on disk): it expires `ttl_secs` after it was put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// When the answer was put, unix seconds.
    pub created: u64,
    /// The sealed answer.
    pub answer: SealedAnswer,
}

impl StoredAnswer {
    /// Whether the answer has expired at `now`.
    pub fn expired(&self, now: u64, ttl_secs: u64) -> bool {
        now >= self.created.saturating_add(ttl_secs)
    }
}

/// What putting an answer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutAnswer {
    /// The answer is durably stored.
    Stored,
    /// The mailbox holds an (unexpired) answer already, which stays.
    AlreadyAnswered,
}

/// Most bucket IDs [`Opened`] keeps for [`BucketStore::take_opened`] (the oldest go first): a
/// server without a metrics endpoint never takes them.
pub const MAX_OPENED: usize = 65_536;

/// A queue that keeps the latest `MAX` items added, until they are taken (the oldest go first
/// when it is full).
#[derive(Debug)]
pub(crate) struct Recent<T, const MAX: usize>(Mutex<VecDeque<T>>);

impl<T, const MAX: usize> Default for Recent<T, MAX> {
    fn default() -> Self {
        Recent(Mutex::default())
    }
}

impl<T, const MAX: usize> Recent<T, MAX> {
    /// Add `items` after those kept.
    pub(crate) fn add(&self, items: impl IntoIterator<Item = T>) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(items);
        let over = q.len().saturating_sub(MAX);
        q.drain(..over);
    }

    /// Everything added since the last call, oldest first.
    pub(crate) fn take(&self) -> Vec<T> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }
}

/// The buckets a store handle's committed transactions created, until the server's metrics take
/// them ([`BucketStore::take_opened`]).
pub(crate) type Opened = Recent<BucketId, MAX_OPENED>;

/// The cause of a backend failure, kept whole (an `Arc` so that one failed commit can fail every
/// operation of its batch with the same cause).
pub type BackendError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Store errors.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configured maximum of stored links and answers is reached.
    #[error("storage quota of {max} links is full; try again after older buckets expire")]
    QuotaExceeded {
        /// The quota.
        max: u64,
    },
    /// Writes of this kind fill their share of the quota ([`StoreParams::admits`]).
    #[error("{}", share_full(*kind, *max, *percent))]
    ShareFull {
        /// The kind of write refused.
        kind: WriteKind,
        /// The quota.
        max: u64,
        /// The share, in percent of it.
        percent: u8,
    },
    /// The backend failed (disk full, IO error); nothing of the failed operation was stored.
    #[error("storage failure")]
    Backend(#[source] BackendError),
    /// A stored value did not decode or the stored data disagree with each other.
    #[error("corrupt stored data: {what}")]
    Corrupt {
        /// What was found wrong.
        what: &'static str,
        /// The decoder's error, if there is one.
        #[source]
        source: Option<BackendError>,
    },
    /// Every bucket ID clients accept in this second is used: try again shortly.
    #[error(transparent)]
    Overloaded(#[from] alloc::Exhausted),
    /// The bucket a stamped store names takes no more links (64 stores, or its window and the
    /// time after it passed): ask for a new challenge.
    #[error("the bucket takes no more links; ask for a new challenge")]
    BucketClosed,
    /// The link is in the bucket already, or was deleted from it (a stamp replayed).
    #[error("the link is in the bucket already, or was deleted from it")]
    Duplicate,
    /// The store is shut down.
    #[error("the store is closed")]
    Closed,
    /// Another process (or another store in this one) has the database open for writing.
    #[error("the database {path} is in use by another process (is another rdv serve running on this data directory?)")]
    InUse {
        /// The database file.
        path: String,
    },
    /// The store's settings are unusable.
    #[error("invalid store settings")]
    Config(#[from] crate::ConfigError),
}

impl StoreError {
    /// A backend failure from any error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Arc::new(e))
    }

    /// Corrupt data, with the decoder's error.
    pub fn corrupt(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Corrupt {
            what,
            source: Some(Arc::new(e)),
        }
    }
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::corrupt("a stored bucket does not decode", e)
    }
}

/// A store of buckets. `now` is unix seconds, passed in so that tests control time: for a store
/// it is the wall clock (it goes into the bucket ID), for expiry (fetch, delete, garbage
/// collection) the server passes a time that never runs ahead of elapsed time
/// ([`crate::clock::TimeGuard`]).
pub trait BucketStore: Send + Sync + 'static {
    /// Put a link without a stamp into the free stream's open bucket (PROTOCOL.md §10.1);
    /// resolves once the link is durable.
    /// [`StoreError::Overloaded`] when no bucket ID clients accept is left in this second.
    fn store(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        now: u64,
    ) -> impl Future<Output = Result<BucketId, StoreError>> + Send {
        self.store_in(link, check, None, now)
    }

    /// [`BucketStore::store`], or with `target` a stamped store (protocol version 3): into the
    /// bucket its challenge named, with its stamp (verified by the caller), if that bucket takes
    /// one more store ([`StoreError::BucketClosed`] otherwise) and the link is not and was never
    /// in it ([`StoreError::Duplicate`]).
    fn store_in(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        now: u64,
    ) -> impl Future<Output = Result<BucketId, StoreError>> + Send;

    /// The bucket a stamped store at `now` would go into (protocol version 3): the stamped
    /// stream's open one, or a new one opened empty (which counts against the 33 buckets a
    /// second like any other).
    fn challenge(&self, now: u64) -> impl Future<Output = Result<BucketId, StoreError>> + Send;

    /// The links of an unexpired bucket, or `None`.
    fn fetch(
        &self,
        locator: Locator,
        now: u64,
    ) -> impl Future<Output = Result<Option<Vec<SealedLink>>, StoreError>> + Send {
        async move {
            Ok(self
                .fetch_entries(locator, now)
                .await?
                .map(|(_, v)| v.into_iter().map(|e| e.link).collect()))
        }
    }

    /// The ID and the entries (links and their stamps) of an unexpired bucket, or `None`.
    fn fetch_entries(
        &self,
        locator: Locator,
        now: u64,
    ) -> impl Future<Output = Result<Option<(BucketId, Vec<Entry>)>, StoreError>> + Send;

    /// Remove the link whose check matches; `false` if there is none.
    fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Leave an answer in a mailbox; resolves once it is durable. Write-once: a mailbox that
    /// holds an unexpired answer keeps it. `now` is an expiry time (see above): the answer
    /// expires `ttl_secs` after it. `kind` is [`WriteKind::Answer`] (stamped) or
    /// [`WriteKind::UnstampedAnswer`], for the quota's shares.
    fn put_answer_as(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> impl Future<Output = Result<PutAnswer, StoreError>> + Send;

    /// [`BucketStore::put_answer_as`] of a stamped answer.
    fn put_answer(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
    ) -> impl Future<Output = Result<PutAnswer, StoreError>> + Send {
        self.put_answer_as(mailbox, answer, now, WriteKind::Answer)
    }

    /// The unexpired answer in a mailbox, or `None`.
    fn fetch_answer(
        &self,
        mailbox: MailboxAddr,
        now: u64,
    ) -> impl Future<Output = Result<Option<SealedAnswer>, StoreError>> + Send;

    /// Remove expired buckets and answers, at most `limit` of each; returns how many of both
    /// were removed.
    fn collect_garbage(
        &self,
        now: u64,
        limit: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The buckets this store handle created (a store or a challenge that opened a new bucket,
    /// in a transaction that committed) since the last call, oldest first; at most the latest
    /// [`MAX_OPENED`]. On a shared store each bucket is reported by the one handle whose
    /// transaction created it: that is what lets every frontend of a cluster report each
    /// bucket's k_close exactly once (the server's metrics read the bucket when its window ends).
    fn take_opened(&self) -> Vec<BucketId>;

    /// This handle's server served a fetch of bucket `id` at `at` (unix seconds): a shared
    /// store passes it on to the other frontends of the cluster, for their delete-after-fetch
    /// metric. A store of one server has nobody to tell (the default does nothing).
    fn share_fetch(&self, _id: BucketId, _at: u64) {}

    /// Fetches the frontends of a cluster served (this one's may be among them) that this
    /// handle heard of since the last call; none for a store of one server.
    fn take_heard_fetches(&self) -> Vec<(BucketId, u64)> {
        Vec::new()
    }

    /// Retention settings.
    fn params(&self) -> StoreParams;

    /// The stable secret from which the server derives fetch padding.
    fn filler_secret(&self) -> &FillerSecret;

    /// Number of links stored.
    fn link_count(&self) -> u64;

    /// Number of answers stored.
    fn answer_count(&self) -> u64;

    /// Number of deleted links whose marks are kept ([`StoredBucket::gone`]): each keeps its
    /// place in the quota until its bucket expires, as the link did ([`StoreParams::admits`]).
    fn mark_count(&self) -> u64;

    /// Whether [`link_count`](Self::link_count) and [`answer_count`](Self::answer_count) are the
    /// whole store's as of now. The only writer of a store always knows them (the default); a
    /// frontend of a shared store knows them as of its last transaction, and the other
    /// frontends' deletes and collections since then do not show. The server refuses a write
    /// past its share early, before the write's turn in the store, only on current counts; the
    /// store's own check in the write transaction is exact either way.
    fn counts_current(&self) -> bool {
        true
    }

    /// The latest expiry time garbage collection has used (unix seconds; `None` before the
    /// first pass, or for a store that does not keep it). A server starts its expiry clock from
    /// it, so that a wall clock that is ahead at the start cannot collect links early
    /// ([`crate::clock::TimeGuard::resume`]).
    fn expiry_mark(&self) -> Option<u64> {
        None
    }

    /// The store's expiry hold, if one is in force ([`hold`]): everything it holds is expired
    /// `credit` seconds late by every expiry decision the store makes (the expiry times passed
    /// in stay the server's own; the store applies the hold).
    fn expiry_hold(&self) -> Option<ExpiryHold>;

    /// Widen the store's hold to cover `hold` (merged with the one in force), durably: once this
    /// resolves, a restart, and every frontend of a cluster, apply it. The server calls it before
    /// it stores anything while its wall clock runs behind.
    fn hold_expiry(&self, hold: ExpiryHold) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::{StoreError, StoreParams, WriteKind};

    #[test]
    fn shares_round_up_and_the_quota_binds_every_write() {
        let p = StoreParams {
            max_links: Some(3),
            unstamped_share: 50,
            answer_share: 1,
            ..Default::default()
        };
        let ok = |kind, links, answers| ok_with(&p, kind, links, answers);
        // Half of 3 is 2 (rounded up, never down to nothing); 1 % of 3 is 1.
        assert!(ok(WriteKind::Unstamped, 1, 0));
        assert!(!ok(WriteKind::Unstamped, 1, 1));
        assert!(ok(WriteKind::Answer, 2, 0));
        assert!(!ok(WriteKind::Answer, 0, 1));
        assert!(ok(WriteKind::Stamped, 1, 1));
        assert!(matches!(
            p.admits(WriteKind::Stamped, 2, 1),
            Err(StoreError::QuotaExceeded { max: 3 })
        ));
        assert!(matches!(
            p.admits(WriteKind::Unstamped, 2, 0),
            Err(StoreError::ShareFull {
                kind: WriteKind::Unstamped,
                max: 3,
                percent: 50
            })
        ));
        // 100 %: no share; no quota: nothing refused.
        let open = StoreParams {
            unstamped_share: 100,
            answer_share: 100,
            ..p
        };
        assert!(ok_with(&open, WriteKind::Unstamped, 2, 0));
        assert!(ok_with(&open, WriteKind::Answer, 0, 2));
        let unlimited = StoreParams {
            max_links: None,
            ..p
        };
        assert!(ok_with(&unlimited, WriteKind::Answer, u64::MAX, u64::MAX));
        // Answers without a stamp: a quarter of the answers' share (here 25 % of 800 = 200,
        // a quarter of it 50), rounded up; stamped ones the whole share.
        let answers = StoreParams {
            max_links: Some(800),
            answer_share: 25,
            ..p
        };
        assert!(ok_with(&answers, WriteKind::UnstampedAnswer, 0, 49));
        assert!(matches!(
            answers.admits(WriteKind::UnstampedAnswer, 0, 50),
            Err(StoreError::ShareFull {
                kind: WriteKind::UnstampedAnswer,
                ..
            })
        ));
        assert!(ok_with(&answers, WriteKind::Answer, 0, 199));
        assert!(!ok_with(&answers, WriteKind::Answer, 0, 200));
        assert!(!ok_with(&p, WriteKind::UnstampedAnswer, 0, 1));
        // Free answers stop at the unstamped share too, links and answers counted together
        // (here half of 800), whatever room the answers' share has left.
        let free = StoreParams {
            answer_share: 100,
            ..answers
        };
        assert!(ok_with(&free, WriteKind::UnstampedAnswer, 399, 0));
        assert!(matches!(
            free.admits(WriteKind::UnstampedAnswer, 350, 50),
            Err(StoreError::ShareFull {
                kind: WriteKind::UnstampedAnswer,
                percent: 50,
                ..
            })
        ));
    }

    fn ok_with(p: &StoreParams, kind: WriteKind, links: u64, answers: u64) -> bool {
        p.admits(kind, links, answers).is_ok()
    }
}
