//! An in-memory store for tests: same rules as the disk store (the same allocator), nothing
//! durable.

use super::alloc::Allocator;
use super::{
    BucketStore, Entry, PutAnswer, StoreError, StoreParams, StoredAnswer, StoredBucket, StoredLink,
    WriteKind,
};
use crate::proto::padding::FillerSecret;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink, Stamp};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// In-memory [`BucketStore`] (buckets and answer mailboxes).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
    params: StoreParams,
    filler: Arc<FillerSecret>,
}

#[derive(Default)]
struct State {
    alloc: Allocator,
    buckets: HashMap<Locator, StoredBucket>,
    order: BTreeMap<BucketId, ()>,
    links: u64,
    /// Marks of deleted links kept ([`StoredBucket::gone`]).
    marks: u64,
    answers: HashMap<MailboxAddr, StoredAnswer>,
    answer_order: BTreeSet<(u64, MailboxAddr)>,
    /// The latest expiry time garbage collection used.
    mark: Option<u64>,
    hold: Option<super::ExpiryHold>,
    opened: super::Opened,
}

impl State {
    /// `now` with the expiry hold applied.
    fn held(&self, now: u64, ttl: u64) -> u64 {
        super::ExpiryHold::apply(self.hold.as_ref(), now, ttl)
    }
}

impl State {
    /// The highest sequence number used in second `c`.
    fn used(&self, c: u64) -> Option<u16> {
        let range = BucketId { created: c, seq: 0 }..=BucketId {
            created: c,
            seq: u16::MAX,
        };
        self.order.range(range).next_back().map(|(id, _)| id.seq)
    }

    /// The bucket `id`, created empty if it is not there.
    fn bucket(&mut self, id: BucketId) -> &mut StoredBucket {
        self.order.insert(id, ());
        let opened = &self.opened;
        self.buckets.entry(id.locator()).or_insert_with(|| {
            opened.add([id]);
            StoredBucket::new(id)
        })
    }

    fn quota(&self, params: &StoreParams, kind: WriteKind) -> Result<(), StoreError> {
        params.admits(kind, self.links + self.marks, self.answers.len() as u64)
    }
}

/// A thread panicked while holding the store's lock.
#[derive(Debug, thiserror::Error)]
#[error("the memory store's lock was poisoned by a panic")]
struct Poisoned;

impl MemoryStore {
    /// An empty store. Its filler secret is all zeros: tests want reproducible answers. The
    /// parameters are checked by [`crate::server::Server::new`].
    pub fn new(params: StoreParams) -> Self {
        MemoryStore {
            inner: Arc::default(),
            params,
            filler: Arc::new(FillerSecret::from_bytes([0; 32])),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::backend(Poisoned))
    }
}

impl BucketStore for MemoryStore {
    async fn store_in(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        target: Option<(BucketId, Stamp)>,
        now: u64,
    ) -> Result<BucketId, StoreError> {
        let mut s = self.state()?;
        s.quota(&self.params, WriteKind::link(target.is_some()))?;
        let mut alloc = s.alloc.clone();
        let id = match target {
            Some((id, _)) => {
                let held = s.buckets.get(&id.locator());
                if held.is_some_and(|b| b.holds(&link)) {
                    return Err(StoreError::Duplicate);
                }
                if !alloc.join(id, held.map(StoredBucket::stores), now, &self.params) {
                    return Err(StoreError::BucketClosed);
                }
                id
            }
            None => {
                let id = alloc.assign(now, &self.params, |c| Ok::<_, StoreError>(s.used(c)))??;
                // Not a copy of a link in that bucket, nor one deleted from it.
                if s.buckets.get(&id.locator()).is_some_and(|b| b.holds(&link)) {
                    return Err(StoreError::Duplicate);
                }
                id
            }
        };
        s.alloc = alloc;
        s.bucket(id).links.push(StoredLink {
            link,
            check,
            stamp: target.map(|(_, stamp)| stamp),
        });
        s.links += 1;
        Ok(id)
    }

    async fn challenge(&self, now: u64) -> Result<BucketId, StoreError> {
        let mut s = self.state()?;
        let mut alloc = s.alloc.clone();
        let id = alloc.challenge(now, &self.params, |c| Ok::<_, StoreError>(s.used(c)))??;
        s.alloc = alloc;
        s.bucket(id);
        Ok(id)
    }

    async fn fetch_entries(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<(BucketId, Vec<Entry>)>, StoreError> {
        let s = self.state()?;
        let now = s.held(now, self.params.ttl_secs);
        Ok(s.buckets
            .get(&locator)
            .filter(|b| !b.expired(now, self.params.ttl_secs))
            .map(|b| {
                (
                    b.id,
                    b.links.iter().cloned().map(StoredLink::entry).collect(),
                )
            }))
    }

    async fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut s = self.state()?;
        let ttl = self.params.ttl_secs;
        let now = s.held(now, ttl);
        let Some(b) = s.buckets.get_mut(&locator) else {
            return Ok(false);
        };
        if b.expired(now, ttl) {
            return Ok(false);
        }
        let Some(marked) = b.delete(check, now, self.params.open_window_secs) else {
            return Ok(false);
        };
        s.links -= 1;
        s.marks += marked;
        Ok(true)
    }

    async fn put_answer_as(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
        kind: WriteKind,
    ) -> Result<PutAnswer, StoreError> {
        let mut s = self.state()?;
        let ttl = self.params.ttl_secs;
        let held = s.held(now, ttl);
        if let Some(old) = s.answers.get(&mailbox) {
            if !old.expired(held, ttl) {
                return Ok(PutAnswer::AlreadyAnswered);
            }
            let created = old.created;
            s.answers.remove(&mailbox);
            s.answer_order.remove(&(created, mailbox));
        }
        s.quota(&self.params, kind)?;
        s.answers.insert(
            mailbox,
            StoredAnswer {
                created: now,
                answer,
            },
        );
        s.answer_order.insert((now, mailbox));
        Ok(PutAnswer::Stored)
    }

    async fn fetch_answer(
        &self,
        mailbox: MailboxAddr,
        now: u64,
    ) -> Result<Option<SealedAnswer>, StoreError> {
        let s = self.state()?;
        let now = s.held(now, self.params.ttl_secs);
        Ok(s.answers
            .get(&mailbox)
            .filter(|a| !a.expired(now, self.params.ttl_secs))
            .map(|a| a.answer))
    }

    async fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut s = self.state()?;
        s.mark = s.mark.max(Some(now));
        let ttl = self.params.ttl_secs;
        if s.hold.is_some_and(|h| h.ended(now, ttl)) {
            s.hold = None;
        }
        let now = s.held(now, ttl);
        let old_answers: Vec<(u64, MailboxAddr)> = s
            .answer_order
            .iter()
            .take_while(|(created, _)| now >= created.saturating_add(ttl))
            .take(limit)
            .copied()
            .collect();
        for k in &old_answers {
            s.answer_order.remove(k);
            s.answers.remove(&k.1);
        }
        let doomed: Vec<BucketId> = s
            .order
            .keys()
            .take_while(|id| now >= id.created.saturating_add(ttl))
            .take(limit)
            .copied()
            .collect();
        for id in &doomed {
            s.order.remove(id);
            s.alloc.collected(id.created);
            if let Some(b) = s.buckets.remove(&id.locator()) {
                s.links -= b.links.len() as u64;
                s.marks -= b.gone.len() as u64;
            }
        }
        Ok(doomed.len() + old_answers.len())
    }

    fn take_opened(&self) -> Vec<BucketId> {
        self.state().map(|s| s.opened.take()).unwrap_or_default()
    }

    fn params(&self) -> StoreParams {
        self.params
    }

    fn filler_secret(&self) -> &FillerSecret {
        &self.filler
    }

    fn link_count(&self) -> u64 {
        self.inner.lock().map(|s| s.links).unwrap_or(0)
    }

    fn mark_count(&self) -> u64 {
        self.inner.lock().map(|s| s.marks).unwrap_or(0)
    }

    fn expiry_mark(&self) -> Option<u64> {
        self.state().ok()?.mark
    }

    fn expiry_hold(&self) -> Option<super::ExpiryHold> {
        self.state().ok()?.hold
    }

    async fn hold_expiry(&self, hold: super::ExpiryHold) -> Result<(), StoreError> {
        let mut s = self.state()?;
        s.hold = Some(s.hold.map_or(hold, |h| h.merge(hold)));
        Ok(())
    }

    fn answer_count(&self) -> u64 {
        self.inner
            .lock()
            .map(|s| s.answers.len() as u64)
            .unwrap_or(0)
    }
}
