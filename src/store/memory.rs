//! An in-memory store for tests: same rules as the disk store (the same allocator), nothing
//! durable.

use super::alloc::Allocator;
use super::{
    BucketStore, PutAnswer, StoreError, StoreParams, StoredAnswer, StoredBucket, StoredLink,
};
use crate::proto::padding::FillerSecret;
use crate::proto::{BucketId, DeleteCheck, Locator, MailboxAddr, SealedAnswer, SealedLink};
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
    answers: HashMap<MailboxAddr, StoredAnswer>,
    answer_order: BTreeSet<(u64, MailboxAddr)>,
}

impl State {
    fn quota(&self, params: &StoreParams) -> Result<(), StoreError> {
        match params.max_links {
            Some(max) if self.links + self.answers.len() as u64 >= max => {
                Err(StoreError::QuotaExceeded { max })
            }
            _ => Ok(()),
        }
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
    async fn store(
        &self,
        link: SealedLink,
        check: DeleteCheck,
        now: u64,
    ) -> Result<BucketId, StoreError> {
        let mut s = self.state()?;
        s.quota(&self.params)?;
        let order = &s.order;
        let used = |c: u64| {
            let range = BucketId { created: c, seq: 0 }..=BucketId {
                created: c,
                seq: u16::MAX,
            };
            Ok::<_, StoreError>(order.range(range).next_back().map(|(id, _)| id.seq))
        };
        let mut alloc = s.alloc.clone();
        let id = alloc.assign(now, &self.params, used)??;
        s.alloc = alloc;
        s.order.insert(id, ());
        s.buckets
            .entry(id.locator())
            .or_insert_with(|| StoredBucket {
                id,
                links: Vec::new(),
            })
            .links
            .push(StoredLink { link, check });
        s.links += 1;
        Ok(id)
    }

    async fn fetch(
        &self,
        locator: Locator,
        now: u64,
    ) -> Result<Option<Vec<SealedLink>>, StoreError> {
        let s = self.state()?;
        Ok(s.buckets
            .get(&locator)
            .filter(|b| !b.expired(now, self.params.ttl_secs))
            .map(|b| b.links.iter().map(|l| l.link.clone()).collect()))
    }

    async fn delete(
        &self,
        locator: Locator,
        check: DeleteCheck,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut s = self.state()?;
        let ttl = self.params.ttl_secs;
        let Some(b) = s.buckets.get_mut(&locator) else {
            return Ok(false);
        };
        if b.expired(now, ttl) {
            return Ok(false);
        }
        let Some(i) = b.links.iter().position(|l| l.check == check) else {
            return Ok(false);
        };
        b.links.remove(i);
        s.links -= 1;
        Ok(true)
    }

    async fn put_answer(
        &self,
        mailbox: MailboxAddr,
        answer: SealedAnswer,
        now: u64,
    ) -> Result<PutAnswer, StoreError> {
        let mut s = self.state()?;
        let ttl = self.params.ttl_secs;
        if let Some(old) = s.answers.get(&mailbox) {
            if !old.expired(now, ttl) {
                return Ok(PutAnswer::AlreadyAnswered);
            }
            let created = old.created;
            s.answers.remove(&mailbox);
            s.answer_order.remove(&(created, mailbox));
        }
        s.quota(&self.params)?;
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
        Ok(s.answers
            .get(&mailbox)
            .filter(|a| !a.expired(now, self.params.ttl_secs))
            .map(|a| a.answer))
    }

    async fn collect_garbage(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut s = self.state()?;
        let ttl = self.params.ttl_secs;
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
            }
        }
        Ok(doomed.len() + old_answers.len())
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

    fn answer_count(&self) -> u64 {
        self.inner
            .lock()
            .map(|s| s.answers.len() as u64)
            .unwrap_or(0)
    }
}
