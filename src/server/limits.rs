//! Per-connection and server-wide limits: the rate limiter (pure state, the caller passes the
//! time) and fair store admission.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Where connections come from, for fairness: each TCP connection is a source of its own, and
/// every stream of one onion-service circuit shares its circuit's source. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Source {
    lane: Arc<Mutex<()>>,
    /// The locator of the latest link stored from this source, for the metrics' count of
    /// refusals (a delete of it from the same source). Never leaves the server's memory.
    last_stored: Arc<std::sync::Mutex<Option<crate::proto::Locator>>>,
}

impl Source {
    /// A new, independent source.
    pub fn new() -> Self {
        Source::default()
    }

    /// Remember the latest link stored from this source.
    pub(crate) fn set_last_stored(&self, l: crate::proto::Locator) {
        if let Ok(mut g) = self.last_stored.lock() {
            *g = Some(l);
        }
    }

    /// Whether `l` is the latest link stored from this source.
    pub(crate) fn last_stored_is(&self, l: &crate::proto::Locator) -> bool {
        self.last_stored
            .lock()
            .map(|g| g.as_ref() == Some(l))
            .unwrap_or(false)
    }
}

/// Fair admission of stores.
///
/// A source has at most one store waiting for admission at a time (its other connections queue
/// behind it, in its lane), and sources are admitted first come, first served (tokio's semaphore
/// is FIFO). So a flooder with many connections or streams gets no more turns than anybody else:
/// an honest store waits behind at most one store per other source.
#[derive(Debug)]
pub(crate) struct StoreGate {
    permits: Semaphore,
}

/// Stores handed to the store at once: enough for large group commits.
const STORES_IN_FLIGHT: usize = 64;
/// How long an admitted store keeps retrying while the store is full for the second.
pub(crate) const STORE_WAIT: Duration = Duration::from_secs(5);
/// Pause between such retries.
pub(crate) const STORE_RETRY: Duration = Duration::from_millis(100);

/// A store's turn; ends when dropped.
pub(crate) struct Admitted<'a> {
    _lane: OwnedMutexGuard<()>,
    _permit: SemaphorePermit<'a>,
}

impl StoreGate {
    pub(crate) fn new() -> Self {
        StoreGate {
            permits: Semaphore::new(STORES_IN_FLIGHT),
        }
    }

    /// Wait for `source`'s turn.
    pub(crate) async fn admit(&self, source: &Source) -> Option<Admitted<'_>> {
        let lane = source.lane.clone().lock_owned().await;
        let permit = self.permits.acquire().await.ok()?;
        Some(Admitted {
            _lane: lane,
            _permit: permit,
        })
    }
}

/// A token bucket: `rate` tokens per second up to `burst`, starting full.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Take a token if there is one.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The connection slots, and which connection yields its slot to a newcomer.
///
/// A new connection first waits in a *waiting room* until its first complete request: sockets
/// that never speak, or trickle a frame byte by byte, never hold a slot. When the waiting room is
/// full, its oldest occupant is closed to make room. A connection takes a slot with its first
/// complete request; when every slot is taken, the slot holder that has waited longest for its
/// next complete request is closed instead (an idle keep-alive, say). Only when every slot holder
/// is in the middle of a request is the newcomer refused. So old connections cannot starve new
/// ones, and silent ones cannot even compete for slots. Pure state: the caller passes the time.
#[derive(Debug)]
pub(crate) struct SlotTable {
    max: usize,
    max_waiting: usize,
    next_id: u64,
    states: std::collections::HashMap<u64, SlotState>,
    /// Waiting-room occupants by arrival.
    waiting: std::collections::BTreeSet<(Instant, u64)>,
    /// Idle slot holders by the time they started waiting.
    idle: std::collections::BTreeSet<(Instant, u64)>,
    /// Slot holders (idle and busy).
    holders: usize,
}

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// In the waiting room since then: no complete request yet.
    Waiting(Instant),
    /// Holds a slot, waiting for its next complete request since then.
    Idle(Instant),
    /// Holds a slot and executes a request.
    Busy,
}

/// What happened to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// In the waiting room.
    Waiting(u64),
    /// In the waiting room, in place of `victim`, which must close.
    Displaced {
        /// The newcomer.
        id: u64,
        /// The oldest waiting connection.
        victim: u64,
    },
}

/// What happened to a connection with its first complete request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Promotion {
    /// It holds a slot now.
    Granted,
    /// It holds the slot of `victim`, which must close.
    Evicted {
        /// The slot holder idle the longest.
        victim: u64,
    },
    /// Every slot holder is executing a request.
    Refused,
    /// It was closed meanwhile.
    Gone,
}

impl SlotTable {
    pub(crate) fn new(max: usize, max_waiting: usize) -> Self {
        SlotTable {
            max,
            max_waiting: max_waiting.max(1),
            next_id: 0,
            states: std::collections::HashMap::new(),
            waiting: std::collections::BTreeSet::new(),
            idle: std::collections::BTreeSet::new(),
            holders: 0,
        }
    }

    /// Connections holding a slot.
    pub(crate) fn holders(&self) -> usize {
        self.holders
    }

    /// Connections open (waiting and holding slots).
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// A new connection at `now`.
    pub(crate) fn arrive(&mut self, now: Instant) -> Arrival {
        let id = self.next_id;
        self.next_id += 1;
        let victim = if self.waiting.len() >= self.max_waiting {
            self.waiting.pop_first().map(|(_, v)| {
                self.states.remove(&v);
                v
            })
        } else {
            None
        };
        self.states.insert(id, SlotState::Waiting(now));
        self.waiting.insert((now, id));
        match victim {
            Some(victim) => Arrival::Displaced { id, victim },
            None => Arrival::Waiting(id),
        }
    }

    /// Connection `id` completed its first request at `now`; it executes it if it gets a slot.
    pub(crate) fn promote(&mut self, id: u64, now: Instant) -> Promotion {
        let Some(SlotState::Waiting(since)) = self.states.get(&id).copied() else {
            return Promotion::Gone;
        };
        let mut victim = None;
        if self.holders >= self.max {
            match self.idle.pop_first() {
                Some((_, v)) => {
                    self.states.remove(&v);
                    self.holders -= 1;
                    victim = Some(v);
                }
                None => return Promotion::Refused,
            }
        }
        let _ = now;
        self.waiting.remove(&(since, id));
        self.states.insert(id, SlotState::Busy);
        self.holders += 1;
        match victim {
            Some(victim) => Promotion::Evicted { victim },
            None => Promotion::Granted,
        }
    }

    /// Slot holder `id` starts waiting for its next request at `now`.
    pub(crate) fn idle(&mut self, id: u64, now: Instant) {
        if let Some(s @ SlotState::Busy) = self.states.get_mut(&id) {
            *s = SlotState::Idle(now);
            self.idle.insert((now, id));
        }
    }

    /// Slot holder `id` executes a request. `false` if it was closed meanwhile.
    pub(crate) fn busy(&mut self, id: u64) -> bool {
        match self.states.get_mut(&id) {
            Some(s @ SlotState::Idle(_)) => {
                if let SlotState::Idle(t) = *s {
                    self.idle.remove(&(t, id));
                }
                *s = SlotState::Busy;
                true
            }
            Some(SlotState::Busy) => true,
            Some(SlotState::Waiting(_)) | None => false,
        }
    }

    /// Whether `id` is still in the waiting room.
    pub(crate) fn is_waiting(&self, id: u64) -> bool {
        matches!(self.states.get(&id), Some(SlotState::Waiting(_)))
    }

    /// Connection `id` is gone.
    pub(crate) fn release(&mut self, id: u64) {
        match self.states.remove(&id) {
            Some(SlotState::Waiting(t)) => {
                self.waiting.remove(&(t, id));
            }
            Some(SlotState::Idle(t)) => {
                self.idle.remove(&(t, id));
                self.holders -= 1;
            }
            Some(SlotState::Busy) => self.holders -= 1,
            None => {}
        }
    }
}

/// The slot table shared by every connection, with a way to tell a connection that must close.
#[derive(Debug)]
pub(crate) struct Slots {
    inner: std::sync::Mutex<(
        SlotTable,
        std::collections::HashMap<u64, Arc<tokio::sync::Notify>>,
    )>,
}

/// One connection's place; released when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    id: u64,
    evicted: Arc<tokio::sync::Notify>,
}

/// A connection's first request found every slot holder busy.
#[derive(Debug)]
pub(crate) struct NoSlot;

impl Slots {
    pub(crate) fn new(max: usize, max_waiting: usize) -> Self {
        Slots {
            inner: std::sync::Mutex::new((SlotTable::new(max, max_waiting), Default::default())),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        (
            SlotTable,
            std::collections::HashMap<u64, Arc<tokio::sync::Notify>>,
        ),
    > {
        // The table stays consistent whatever a panicking holder did: every method keeps it so.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open (in the waiting room or holding a slot).
    pub(crate) fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Connections holding a slot.
    pub(crate) fn holders(&self) -> usize {
        self.lock().0.holders()
    }

    fn tell(notify: &mut std::collections::HashMap<u64, Arc<tokio::sync::Notify>>, victim: u64) {
        if let Some(n) = notify.remove(&victim) {
            n.notify_one();
        }
    }

    /// A place in the waiting room for a new connection (closing the oldest waiting one if the
    /// room is full).
    pub(crate) fn arrive(&self) -> Slot<'_> {
        let mut g = self.lock();
        let (table, notify) = &mut *g;
        let id = match table.arrive(Instant::now()) {
            Arrival::Waiting(id) => id,
            Arrival::Displaced { id, victim } => {
                Self::tell(notify, victim);
                id
            }
        };
        let evicted = Arc::new(tokio::sync::Notify::new());
        notify.insert(id, evicted.clone());
        Slot {
            slots: self,
            id,
            evicted,
        }
    }
}

impl Slot<'_> {
    /// The connection starts waiting for its next request.
    pub(crate) fn idle(&self) {
        self.slots.lock().0.idle(self.id, Instant::now());
    }

    /// The connection has a complete request to execute: take a slot with the first one.
    /// `Ok(false)` if the connection was closed meanwhile, `Err` if no slot can be had.
    pub(crate) fn busy(&self) -> Result<bool, NoSlot> {
        let mut g = self.slots.lock();
        let (table, notify) = &mut *g;
        if !table.is_waiting(self.id) {
            return Ok(table.busy(self.id));
        }
        match table.promote(self.id, Instant::now()) {
            Promotion::Granted => Ok(true),
            Promotion::Evicted { victim } => {
                Self::tell_victim(notify, victim);
                tracing::debug!(
                    "all connection slots taken: closed the connection idle the longest"
                );
                Ok(true)
            }
            Promotion::Refused => Err(NoSlot),
            Promotion::Gone => Ok(false),
        }
    }

    fn tell_victim(
        notify: &mut std::collections::HashMap<u64, Arc<tokio::sync::Notify>>,
        victim: u64,
    ) {
        Slots::tell(notify, victim)
    }

    /// Resolves once the connection has lost its place to a newcomer.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut g = self.slots.lock();
        g.0.release(self.id);
        g.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(2, 4, t0);
        assert!((0..4).all(|_| l.allow(t0)));
        assert!(!l.allow(t0));
        // Half a second at 2/s brings one token back, and no more than the burst ever.
        assert!(l.allow(t0 + Duration::from_millis(500)));
        assert!(!l.allow(t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow(later)).count(), 4);
    }

    #[test]
    fn silent_connections_never_hold_slots_and_the_longest_idle_holder_yields() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = SlotTable::new(2, 3);
        let w = |a: Arrival| match a {
            Arrival::Waiting(id) => id,
            other => panic!("{other:?}"),
        };
        let a = w(s.arrive(at(0)));
        let b = w(s.arrive(at(1)));
        let silent = w(s.arrive(at(2)));
        // The waiting room is full: the oldest waiting connection (a) goes for a newcomer.
        let Arrival::Displaced { id: c, victim } = s.arrive(at(3)) else {
            panic!()
        };
        assert_eq!(victim, a);
        assert_eq!(s.promote(a, at(4)), Promotion::Gone);
        // b and c speak and take the two slots; the silent one holds none.
        assert_eq!(s.promote(b, at(5)), Promotion::Granted);
        assert_eq!(s.promote(c, at(6)), Promotion::Granted);
        assert_eq!(s.holders(), 2);
        s.idle(b, at(10));
        s.idle(c, at(20));
        // A third speaker: the holder idle the longest (b) yields its slot.
        let d = w(s.arrive(at(30)));
        assert_eq!(s.promote(d, at(31)), Promotion::Evicted { victim: b });
        assert!(!s.busy(b), "an evicted connection has no slot");
        // c is busy again, d busy: a fourth speaker is refused, the silent one still waits.
        assert!(s.busy(c));
        let e = w(s.arrive(at(40)));
        assert_eq!(s.promote(e, at(41)), Promotion::Refused);
        assert!(s.is_waiting(silent));
        s.release(d);
        assert_eq!(s.promote(e, at(50)), Promotion::Granted);
        assert_eq!(s.len(), 3);
    }
}
