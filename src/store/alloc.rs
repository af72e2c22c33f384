//! Which bucket a new link goes into. Pure: the caller passes the time and answers the one
//! question the allocator has about storage (the highest sequence number already used in a given
//! second).
//!
//! Rules (PROTOCOL.md §10.1):
//! - two open buckets, one for each stream: stamped stores (and the challenges that announce
//!   them) fill one, stores without a stamp the other, so that stores which cost nothing can
//!   neither fill nor close the bucket honest clients stamp their links for (a helper's attack,
//!   2026-12-07: free stores rolled the shared bucket as soon as an honest stamped link landed,
//!   and every accept was shown 1 verified link);
//! - a link goes into its stream's open bucket while that has room, its window has not passed,
//!   and it is not from the future (a wall clock that jumped ahead and came back must not keep
//!   handing out a bucket that clients refuse), and has not been collected;
//! - a new bucket is `(created, seq)` with `created` the current second (but after every
//!   collected bucket, unless that lies a minute or more ahead) and `seq` one more than the
//!   highest used in that second (by either stream), so IDs stay unique whatever the clock does,
//!   except that a clock corrected far behind collected buckets reuses their IDs rather than hand
//!   out IDs clients refuse;
//! - never a sequence number above `max_seq`: the client policy would refuse the bucket, so the
//!   store says it is full for this second instead.

use super::StoreParams;
use crate::proto::stamp::LATE_STORE_SECS;
use crate::proto::{BucketId, MAX_LINKS_PER_BUCKET};

/// How far in the future the open bucket's creation may lie before it is closed (small clock
/// corrections keep it open; a jump back closes it).
pub const FUTURE_TOLERANCE_SECS: u64 = 60;

/// Every bucket ID the client policy accepts for this second is used: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no more buckets can be opened in second {second} (sequence numbers above {max_seq} are refused by clients)")]
pub struct Exhausted {
    /// The second that is full.
    pub second: u64,
    /// The highest sequence number handed out.
    pub max_seq: u16,
}

/// An open bucket: its ID and how many links were assigned to it.
pub type Open = Option<(BucketId, usize)>;

/// Keeps the two open buckets and hands out bucket IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocator {
    /// The stamped stream's open bucket: challenges name it, stamped stores join it.
    open: Open,
    /// The open bucket of stores without a stamp (a bucket of their own).
    free: Open,
    last: Option<BucketId>,
    floor: Option<u64>,
    capacity: usize,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator::resume(None, None)
    }
}

impl Allocator {
    /// An allocator after a restart: `last` is the newest bucket ever created and `floor` the
    /// newest creation second of a collected bucket (both from storage). No bucket is open.
    pub fn resume(last: Option<BucketId>, floor: Option<u64>) -> Self {
        Allocator {
            open: None,
            free: None,
            last,
            floor,
            capacity: MAX_LINKS_PER_BUCKET,
        }
    }

    /// Fill buckets only up to `capacity` links (from 1 to 64). Honest servers use 64; 1 gives
    /// every link a bucket of its own, which is what an isolating server does (the adversarial
    /// server's `isolate` mode, for testing clients).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, MAX_LINKS_PER_BUCKET);
        self
    }

    /// The newest bucket ID handed out.
    pub fn last(&self) -> Option<BucketId> {
        self.last
    }

    /// The newest creation second of a collected bucket.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Garbage collection removed a bucket created at `created`: no new bucket may use that
    /// second or an earlier one.
    pub fn collected(&mut self, created: u64) {
        let floor = self.floor.map_or(created, |f| f.max(created));
        self.floor = Some(floor);
        // A collected bucket is never open again, even if a clock corrected far behind later
        // lowers the floor below it: its row is gone, so the other stream could be handed the
        // same ID and both would fill one bucket (a review, 2026-12-07).
        for open in [&mut self.open, &mut self.free] {
            if open.is_some_and(|(id, _)| id.created <= floor) {
                *open = None;
            }
        }
    }

    /// The bucket for one more link without a stamp at `now`. `used(second)` answers the highest
    /// sequence number of a bucket created in that second, if any. The outer error is `used`'s.
    pub fn assign<E>(
        &mut self,
        now: u64,
        params: &StoreParams,
        mut used: impl FnMut(u64) -> Result<Option<u16>, E>,
    ) -> Result<Result<BucketId, Exhausted>, E> {
        match self.begin(now, params) {
            Ok(Step::Joined(id)) => Ok(Ok(id)),
            Ok(Step::NewIn(created)) => Ok(self.open_in(created, used(created)?, params)),
            Err(full) => Ok(Err(full)),
        }
    }

    /// [`Allocator::assign`] for a challenge (protocol version 3): the stamped stream's bucket a
    /// stamped store at `now` would go into, a new one opened empty if needed; no link is
    /// assigned to it.
    pub fn challenge<E>(
        &mut self,
        now: u64,
        params: &StoreParams,
        mut used: impl FnMut(u64) -> Result<Option<u16>, E>,
    ) -> Result<Result<BucketId, Exhausted>, E> {
        match self.begin_challenge(now, params) {
            Ok(Step::Joined(id)) => Ok(Ok(id)),
            Ok(Step::NewIn(created)) => Ok(self.open_empty_in(created, used(created)?, params)),
            Err(full) => Ok(Err(full)),
        }
    }

    /// [`Allocator::assign`] in two steps, for a store that asks its storage asynchronously:
    /// first the open bucket of stores without a stamp, if it takes the link; otherwise the
    /// second a new bucket must be created in, for which the caller looks up the highest
    /// sequence number used and calls [`Allocator::open_in`].
    pub fn begin(&mut self, now: u64, params: &StoreParams) -> Result<Step, Exhausted> {
        self.drop_future(now);
        match Self::usable(self.free, self.floor, self.capacity, now, params) {
            Some(id) => {
                if let Some((_, n)) = &mut self.free {
                    *n += 1;
                }
                Ok(Step::Joined(id))
            }
            None => self.new_second(now, params),
        }
    }

    /// [`Allocator::begin`] for a challenge (protocol version 3): the stamped stream's bucket a
    /// stamped store would go into, without assigning a link to it. A new bucket, if one is
    /// needed, is opened empty with [`Allocator::open_empty_in`].
    pub fn begin_challenge(&mut self, now: u64, params: &StoreParams) -> Result<Step, Exhausted> {
        self.drop_future(now);
        match Self::usable(self.open, self.floor, self.capacity, now, params) {
            Some(id) => Ok(Step::Joined(id)),
            None => self.new_second(now, params),
        }
    }

    /// Close both streams' open buckets if either lies in the future at `now` (the wall clock
    /// went back): a bucket created at the wrong time is never used again, also by the stream
    /// that has had no store since, which would otherwise find it usable once real time reached
    /// it (rule 1 of PROTOCOL.md §10.1).
    fn drop_future(&mut self, now: u64) {
        let future = |o: &Open| {
            o.is_some_and(|(id, _)| id.created > now.saturating_add(FUTURE_TOLERANCE_SECS))
        };
        if future(&self.open) || future(&self.free) {
            self.open = None;
            self.free = None;
        }
    }

    /// Bucket `id` holding `links` links takes one more at `now`: it has room, is in its window
    /// (`window` seconds from its creation), does not lie in the future and has not been
    /// collected.
    fn takes(
        id: BucketId,
        links: usize,
        floor: Option<u64>,
        capacity: usize,
        now: u64,
        window: u64,
    ) -> bool {
        let has_room = links < capacity;
        let in_window = now < id.created.saturating_add(window);
        let not_future = id.created <= now.saturating_add(FUTURE_TOLERANCE_SECS);
        // Collected already (a wall clock far behind the expiry clock): never hand it out
        // again, its ID would be reused and its link collected at once.
        let not_collected = floor.is_none_or(|f| id.created > f);
        has_room && in_window && not_future && not_collected
    }

    /// A stream's open bucket, if it takes one more link at `now`.
    fn usable(
        open: Open,
        floor: Option<u64>,
        capacity: usize,
        now: u64,
        params: &StoreParams,
    ) -> Option<BucketId> {
        let (id, n) = open?;
        Self::takes(id, n, floor, capacity, now, params.open_window_secs).then_some(id)
    }

    /// The second a new bucket opens in at `now`.
    fn new_second(&mut self, now: u64, params: &StoreParams) -> Result<Step, Exhausted> {
        match self.floor {
            // Just behind a collected second (a small clock correction): after it, a few
            // seconds in the future, which clients accept, and no ID is ever used twice.
            Some(f) if now <= f && f - now < FUTURE_TOLERANCE_SECS => match f.checked_add(1) {
                Some(c) => Ok(Step::NewIn(c)),
                None => Err(Exhausted {
                    second: now,
                    max_seq: params.max_seq,
                }),
            },
            // Far behind (the clock ran ahead for longer than the TTL, and garbage collection
            // took buckets of its wrong seconds, before it was corrected): in the present, or
            // clients would refuse every new bucket until real time caught up. The ID of a
            // collected bucket may come again; its links are gone, and an old link finds
            // nothing it can open.
            Some(f) if now <= f => {
                self.floor = Some(now.saturating_sub(1));
                Ok(Step::NewIn(now))
            }
            _ => Ok(Step::NewIn(now)),
        }
    }

    /// A stamped store for bucket `id` (named by a challenge), which holds `links` links now
    /// (`None`: no such bucket in storage): it joins `id` if that bucket has room and its open
    /// window, extended by [`LATE_STORE_SECS`], has not passed at `now`; `false` otherwise (the
    /// client asks for a new challenge). The bucket need not be the open one (the server may
    /// have restarted, or another frontend of a shared store opened the next, while the client
    /// solved its stamp): the client gets into the bucket it did the work for while that has
    /// room. The extension means that a client is told `BucketClosed` soon after its challenge
    /// only when the bucket is full, which it checks before it stamps its link again.
    pub fn join(
        &mut self,
        id: BucketId,
        links: Option<usize>,
        now: u64,
        params: &StoreParams,
    ) -> bool {
        let Some(links) = links else { return false };
        // Never into an expired bucket (a TTL shorter than the window and the late time).
        if now >= id.created.saturating_add(params.ttl_secs) {
            return false;
        }
        let window = params.open_window_secs.saturating_add(LATE_STORE_SECS);
        if !Self::takes(id, links, self.floor, self.capacity, now, window) {
            return false;
        }
        // Either stream's open bucket counts it (a stamp may name any bucket the client has
        // seen, also the one of stores without a stamp: its work is done all the same).
        for (open, n) in [&mut self.open, &mut self.free].into_iter().flatten() {
            if *open == id {
                *n = (*n).max(links) + 1;
            }
        }
        true
    }

    /// Take back the place [`Allocator::assign`] gave a store without a stamp in `id`, which was
    /// then refused (a copy of a link the bucket holds or held).
    pub fn unassign(&mut self, id: BucketId) {
        if let Some((open, n)) = &mut self.free {
            if *open == id {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Open a new bucket for stores without a stamp in second `created` (from
    /// [`Allocator::begin`]), where `highest_used` is the highest sequence number of a bucket
    /// created in that second, if any.
    pub fn open_in(
        &mut self,
        created: u64,
        highest_used: Option<u16>,
        params: &StoreParams,
    ) -> Result<BucketId, Exhausted> {
        let id = self.new_id(created, highest_used, params)?;
        self.free = Some((id, 1));
        Ok(id)
    }

    /// [`Allocator::open_in`] for the stamped stream, without a link (for a challenge).
    pub fn open_empty_in(
        &mut self,
        created: u64,
        highest_used: Option<u16>,
        params: &StoreParams,
    ) -> Result<BucketId, Exhausted> {
        let id = self.new_id(created, highest_used, params)?;
        self.open = Some((id, 0));
        Ok(id)
    }

    fn new_id(
        &mut self,
        created: u64,
        highest_used: Option<u16>,
        params: &StoreParams,
    ) -> Result<BucketId, Exhausted> {
        let seq = match highest_used {
            None => 0,
            Some(s) if s < params.max_seq => s + 1,
            Some(_) => {
                return Err(Exhausted {
                    second: created,
                    max_seq: params.max_seq,
                })
            }
        };
        let id = BucketId { created, seq };
        self.last = Some(self.last.map_or(id, |l| l.max(id)));
        Ok(id)
    }

    /// The stamped stream's open bucket and how many links were assigned to it, if one is open.
    pub fn open_bucket(&self) -> Open {
        self.open
    }

    /// The open bucket of stores without a stamp and how many links were assigned to it.
    pub fn free_bucket(&self) -> Open {
        self.free
    }

    /// Continue with `open` as the stamped stream's open bucket and `free` as that of stores
    /// without a stamp (each its ID and the links assigned to it): a store shared by several
    /// processes keeps the open buckets in storage, so that all of them fill the same ones.
    pub fn with_open_buckets(mut self, open: Open, free: Open) -> Self {
        self.open = open;
        self.free = free;
        self
    }
}

/// The first step of an assignment ([`Allocator::begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The link goes into the open bucket.
    Joined(BucketId),
    /// A new bucket must be opened in this second.
    NewIn(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    fn params(window: u64, max_seq: u16) -> StoreParams {
        StoreParams {
            open_window_secs: window,
            max_seq,
            ..Default::default()
        }
    }

    /// An allocator over a set of existing IDs, as a store would answer `used`.
    #[derive(Default)]
    struct World {
        alloc: Allocator,
        ids: BTreeSet<BucketId>,
    }

    impl World {
        fn assign(&mut self, now: u64, p: &StoreParams) -> Result<BucketId, Exhausted> {
            let ids = &self.ids;
            let used = |c: u64| {
                Ok::<_, Infallible>(
                    ids.range(
                        BucketId { created: c, seq: 0 }..=BucketId {
                            created: c,
                            seq: u16::MAX,
                        },
                    )
                    .next_back()
                    .map(|id| id.seq),
                )
            };
            let r = match self.alloc.assign(now, p, used) {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if let Ok(id) = r {
                self.ids.insert(id);
            }
            r
        }
    }

    fn id(created: u64, seq: u16) -> BucketId {
        BucketId { created, seq }
    }

    /// The highest sequence number among `ids` in second `c`.
    fn highest(ids: &BTreeSet<BucketId>, c: u64) -> Option<u16> {
        ids.range(id(c, 0)..=id(c, u16::MAX))
            .next_back()
            .map(|b| b.seq)
    }

    #[test]
    fn fills_then_rolls_over() {
        let mut w = World::default();
        let p = params(600, 32);
        let first = w.assign(100, &p).unwrap();
        for _ in 1..64 {
            assert_eq!(w.assign(100, &p), Ok(first));
        }
        assert_eq!(w.assign(100, &p), Ok(id(100, 1)));
        assert_eq!(w.assign(101, &p), Ok(id(100, 1)));
    }

    #[test]
    fn window_closes_bucket() {
        let mut w = World::default();
        let p = params(10, 32);
        assert_eq!(w.assign(100, &p), Ok(id(100, 0)));
        assert_eq!(w.assign(109, &p), Ok(id(100, 0)));
        assert_eq!(w.assign(110, &p), Ok(id(110, 0)));
    }

    #[test]
    fn never_a_sequence_number_above_the_cap() {
        let mut w = World::default();
        let p = params(600, 32);
        let mut got = 0;
        while w.assign(500, &p).is_ok() {
            got += 1;
        }
        assert_eq!(got, 33 * 64, "33 buckets of 64 links fit in one second");
        assert_eq!(
            w.assign(500, &p),
            Err(Exhausted {
                second: 500,
                max_seq: 32
            })
        );
        assert!(w.ids.iter().all(|i| i.seq <= 32));
        // The next second opens a new bucket.
        assert_eq!(w.assign(501, &p), Ok(id(501, 0)));
    }

    #[test]
    fn a_restart_continues_in_the_same_second_without_reusing_ids() {
        let mut w = World::default();
        let p = params(600, 32);
        assert_eq!(w.assign(200, &p), Ok(id(200, 0)));
        w.alloc = Allocator::resume(w.alloc.last(), None);
        assert_eq!(
            w.assign(200, &p),
            Ok(id(200, 1)),
            "after a restart no bucket is open"
        );
    }

    #[test]
    fn a_clock_that_jumped_ahead_and_came_back_gets_acceptable_ids_at_once() {
        let mut w = World::default();
        let p = params(600, 32);
        let t = 1_800_000_000;
        assert_eq!(w.assign(t, &p), Ok(id(t, 0)));
        let ahead = t + 30 * 86_400;
        assert_eq!(
            w.assign(ahead, &p),
            Ok(id(ahead, 0)),
            "a bucket in the future"
        );
        assert_eq!(w.assign(ahead + 1, &p), Ok(id(ahead, 0)));
        // Corrected: the future bucket is closed at once; the new one is in the present.
        assert_eq!(w.assign(t + 5, &p), Ok(id(t + 5, 0)));
        assert_eq!(w.assign(t + 6, &p), Ok(id(t + 5, 0)));
        // A month later real time reaches the future second: its ID is not handed out twice.
        assert_eq!(w.assign(ahead, &p), Ok(id(ahead, 1)));
        assert_eq!(w.ids.len(), 4);
    }

    #[test]
    fn a_clock_that_went_back_does_not_reuse_ids() {
        let mut w = World::default();
        let p = params(600, 32);
        let t = 1_800_000_000;
        for _ in 0..65 {
            w.assign(t, &p).unwrap();
        }
        // Back by a day, then back to the same second again: new IDs, none repeated.
        let back = w.assign(t - 86_400, &p).unwrap();
        assert_eq!(back, id(t - 86_400, 0));
        for _ in 0..64 {
            w.assign(t, &p).unwrap();
        }
        assert!(
            w.ids.contains(&id(t, 2)),
            "second t continues after its highest seq"
        );
    }

    #[test]
    fn nothing_is_opened_at_or_before_a_collected_second() {
        let mut w = World::default();
        let p = params(600, 32);
        w.alloc.collected(1000);
        assert_eq!(w.assign(950, &p), Ok(id(1001, 0)));
        assert_eq!(w.alloc.floor(), Some(1000));
        // The open bucket itself collected: a new one after it.
        let open = w.alloc.free_bucket().unwrap().0;
        w.alloc.collected(open.created);
        assert_eq!(w.assign(950, &p), Ok(id(1002, 0)));
        let mut top = Allocator::resume(None, Some(u64::MAX));
        let r = top.assign(u64::MAX - 5, &p, |_| Ok::<_, Infallible>(None));
        assert!(matches!(r, Ok(Err(_))), "no overflow at u64::MAX: {r:?}");
    }

    /// A stream's open bucket, once collected, stays closed when a clock corrected far behind
    /// lowers the floor: its ID may then come again, and it must not be the other stream's and
    /// this one's at once.
    #[test]
    fn a_collected_open_bucket_is_never_reopened() {
        let p = params(600, 32);
        let none = |_: u64| Ok::<_, Infallible>(None);
        let t = 1_800_000_000;
        let mut a = Allocator::default();
        let free = a.assign(t + 86_400, &p, none).unwrap().unwrap();
        a.collected(free.created);
        assert_eq!(a.free_bucket(), None);
        // The clock corrected a day back: a challenge opens a bucket in the present ...
        let stamped = a.challenge(t, &p, none).unwrap().unwrap();
        assert_eq!(stamped, id(t, 0));
        // ... and the free stream opens a new one (its row is gone: `used` says nothing of it).
        let used = |_: u64| Ok::<_, Infallible>(Some(0));
        let next = a.assign(t, &p, used).unwrap().unwrap();
        assert_eq!(next, id(t, 1));
        assert_ne!(Some(next), a.open_bucket().map(|(b, _)| b));
    }

    /// A bucket opened while the wall clock ran ahead is closed for good once the clock is
    /// corrected, for both streams: the free stream, which had no store since, would otherwise
    /// take it up again when real time reached its second (the full suite's `tests/clock.rs`).
    #[test]
    fn a_bucket_from_the_future_is_closed_for_both_streams() {
        let p = params(600, 32);
        let none = |_: u64| Ok::<_, Infallible>(None);
        let t = 1_800_000_000;
        let ahead = t + 30 * 86_400;
        let mut a = Allocator::default();
        let future = a.assign(ahead, &p, none).unwrap().unwrap();
        // Corrected: a challenge (the other stream) sees the future bucket and closes both.
        let _ = a.challenge(t, &p, none).unwrap().unwrap();
        assert_eq!(a.free_bucket(), None);
        // A month later, the next store without a stamp opens a new bucket in that second.
        let used = |_: u64| Ok::<_, Infallible>(Some(future.seq));
        let next = a.assign(ahead, &p, used).unwrap().unwrap();
        assert_eq!(next, id(ahead, future.seq + 1));
    }

    /// A clock that ran a day ahead for longer than the TTL: garbage collection took buckets of
    /// its wrong seconds. Once corrected, new buckets used to start after those, 86 371 s in
    /// the future, and clients refused them for a day.
    #[test]
    fn a_clock_corrected_after_running_ahead_past_the_ttl_gets_present_ids() {
        let p = params(600, 32);
        let policy = crate::proto::ClientPolicy::default();
        let none = |_: u64| Ok::<_, Infallible>(None);
        let t = 1_800_000_000;
        let mut a = Allocator::default();
        a.collected(t + 86_400 - 30);
        let new = a.assign(t, &p, none).unwrap().unwrap();
        assert_eq!(new, id(t, 0), "in the present");
        assert!(policy.check(new, t, p.open_window_secs).is_ok());
        assert_eq!(a.assign(t + 1, &p, none), Ok(Ok(new)), "and filled");
        assert!(a.floor() < Some(t));
        // The lowered floor is what a restart resumes from.
        let mut b = Allocator::resume(a.last(), a.floor());
        assert_eq!(b.assign(t + 2, &p, none), Ok(Ok(id(t + 2, 0))));
    }

    #[test]
    fn the_open_bucket_carries_over_between_allocators() {
        // Two processes sharing one store: each loads the allocator state the other saved.
        let p = params(600, 32);
        let mut ids = BTreeSet::new();
        let mut saved = (None, None, None, None);
        for i in 0..200u32 {
            let (open, free, last, floor) = saved;
            let mut a = Allocator::resume(last, floor).with_open_buckets(open, free);
            let id = match a
                .assign(7_000 + u64::from(i / 100), &p, |c| {
                    Ok::<_, Infallible>(
                        ids.range(id(c, 0)..=id(c, u16::MAX))
                            .next_back()
                            .map(|b: &BucketId| b.seq),
                    )
                })
                .unwrap()
            {
                Ok(id) => id,
                Err(e) => panic!("{e}"),
            };
            ids.insert(id);
            saved = (a.open_bucket(), a.free_bucket(), a.last(), a.floor());
        }
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            vec![id(7_000, 0), id(7_000, 1), id(7_001, 0), id(7_001, 1)],
            "200 links alternating between processes fill buckets of 64 as one process would"
        );
    }

    #[test]
    fn a_challenge_names_the_bucket_a_stamped_store_joins() {
        let p = params(600, 32);
        let mut w = World::default();
        let none = |_: u64| Ok::<_, Infallible>(None);
        // A challenge on an empty store opens a bucket without a link in it.
        let a = w.alloc.challenge(100, &p, none).unwrap().unwrap();
        assert_eq!(
            a,
            BucketId {
                created: 100,
                seq: 0
            }
        );
        assert_eq!(w.alloc.open_bucket(), Some((a, 0)));
        // The next challenge names the same bucket; stamped stores join it.
        assert_eq!(w.alloc.challenge(101, &p, none).unwrap().unwrap(), a);
        assert!(w.alloc.join(a, Some(0), 102, &p));
        assert_eq!(w.alloc.open_bucket(), Some((a, 1)));
        // Not a bucket storage does not hold, and not once the window has passed.
        assert!(!w.alloc.join(
            BucketId {
                created: 100,
                seq: 1
            },
            None,
            102,
            &p
        ));
        // A stamped store comes up to LATE_STORE_SECS after the window (a challenge just before
        // its end), never later.
        assert!(w.alloc.clone().join(a, Some(1), 700, &p));
        assert!(w
            .alloc
            .clone()
            .join(a, Some(1), 700 + LATE_STORE_SECS - 1, &p));
        assert!(!w.alloc.join(a, Some(1), 700 + LATE_STORE_SECS, &p));
        // A challenge after the window names a new bucket.
        assert_ne!(w.alloc.challenge(700, &p, none).unwrap().unwrap(), a);
        // A full bucket takes no more: the challenge moves on to a new one.
        let mut small = Allocator::default().with_capacity(2);
        let b = small.challenge(200, &p, none).unwrap().unwrap();
        assert!(small.join(b, Some(0), 200, &p));
        assert!(small.join(b, Some(1), 200, &p));
        assert!(!small.join(b, Some(2), 200, &p));
        let used_b = |_: u64| Ok::<_, Infallible>(Some(b.seq));
        let c = small.challenge(200, &p, used_b).unwrap().unwrap();
        assert_eq!(
            c,
            BucketId {
                created: 200,
                seq: 1
            }
        );
        assert_eq!(small.last(), Some(c));
    }

    #[test]
    fn a_stamped_store_joins_its_bucket_when_it_is_no_longer_the_open_one() {
        let p = params(600, 32);
        let none = |_: u64| Ok::<_, Infallible>(None);
        let mut a = Allocator::default();
        let b = a.challenge(100, &p, none).unwrap().unwrap();
        // The server restarts while the client solves its stamp: the open bucket is forgotten.
        let mut a = Allocator::resume(a.last(), a.floor());
        assert_eq!(a.open_bucket(), None);
        // The stamped store still gets into the bucket it was stamped for, while it has room
        // and is in its window.
        assert!(a.join(b, Some(5), 101, &p));
        assert_eq!(a.open_bucket(), None, "no bucket was opened for it");
        assert!(!a.join(b, Some(MAX_LINKS_PER_BUCKET), 101, &p), "full");
        assert!(
            !a.join(b, Some(5), 700 + LATE_STORE_SECS, &p),
            "its window has passed"
        );
        // And not once garbage collection took its second.
        a.collected(100);
        assert!(!a.join(b, Some(5), 101, &p));
    }

    /// The splitting attack of a helper (2026-12-07), on the allocator: stores without a stamp
    /// used to share the stamped stream's open bucket and, when it was full, open the next, so
    /// that free stores closed it under every honest stamped link. They now have a bucket of
    /// their own: however many come, the bucket challenges name keeps taking stamped stores.
    #[test]
    fn stores_without_a_stamp_never_fill_or_close_the_stamped_bucket() {
        let p = params(600, 32);
        let mut w = World::default();
        let b = w
            .alloc
            .challenge(100, &p, |c| Ok::<_, Infallible>(highest(&w.ids, c)))
            .unwrap()
            .unwrap();
        w.ids.insert(b);
        for (stamped, round) in (0..20u64).enumerate() {
            // More free stores than a bucket holds between two stamped ones.
            for _ in 0..3 * MAX_LINKS_PER_BUCKET {
                let f = w.assign(100 + round, &p).unwrap();
                assert_ne!(f, b, "a store without a stamp went into the stamped bucket");
            }
            let c = w
                .alloc
                .challenge(100 + round, &p, |c| Ok::<_, Infallible>(highest(&w.ids, c)))
                .unwrap()
                .unwrap();
            assert_eq!(c, b, "round {round}: the challenge names the same bucket");
            assert!(w.alloc.join(b, Some(stamped), 100 + round, &p));
        }
        assert_eq!(w.alloc.open_bucket(), Some((b, 20)));
        // Free stores fill buckets of their own, 64 each, with unique IDs.
        let free: Vec<_> = w.ids.iter().filter(|i| **i != b).collect();
        assert_eq!(free.len(), 20 * 3);
        // A stamp may name the free stream's bucket too: it is counted there.
        let f = w.assign(120, &p).unwrap();
        let before = w.alloc.free_bucket().unwrap().1;
        assert!(w.alloc.join(f, Some(before), 120, &p));
        assert_eq!(w.alloc.free_bucket(), Some((f, before + 1)));
        // Only stamped stores fill the stamped bucket: once it holds 64 the next challenge opens
        // a new one.
        for n in 20..MAX_LINKS_PER_BUCKET {
            assert!(w.alloc.join(b, Some(n), 120, &p));
        }
        assert!(!w.alloc.join(b, Some(MAX_LINKS_PER_BUCKET), 120, &p));
        let next = w
            .alloc
            .challenge(120, &p, |c| Ok::<_, Infallible>(highest(&w.ids, c)))
            .unwrap()
            .unwrap();
        assert_ne!(next, b);
        assert!(!w.ids.contains(&next), "a new ID");
    }
}
