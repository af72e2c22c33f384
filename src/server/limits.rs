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

/// Fair admission of writes (stores and challenges, answers, deletes).
///
/// A source has at most one write waiting for admission at a time (its other connections queue
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

/// A source's lane, held: its other writes wait behind this one.
pub(crate) struct Lane(OwnedMutexGuard<()>);

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
        let lane = self.lane(source).await;
        self.admit_in(lane).await
    }

    /// The first half of [`StoreGate::admit`]: `source`'s lane, without a place among the
    /// writes in flight (for a write that must wait for something else first, holding up only
    /// its own source).
    pub(crate) async fn lane(&self, source: &Source) -> Lane {
        Lane(source.lane.clone().lock_owned().await)
    }

    /// The second half: a place among the writes in flight, for the holder of `lane`.
    pub(crate) async fn admit_in(&self, lane: Lane) -> Option<Admitted<'_>> {
        let permit = self.permits.acquire().await.ok()?;
        Some(Admitted {
            _lane: lane.0,
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

    /// Give back a token taken for something that was then not done.
    pub(crate) fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// A slot holder yields its slot to a connection in line only once it has held it this long,
/// and only between requests: an honest session over Tor (a few requests, a circuit round trip
/// apart) is over well within it.
pub(crate) const SLOT_QUANTUM: Duration = Duration::from_secs(10);
/// A slot holder whose answer has not been taken for this long yields its slot at once: an
/// honest client reads each answer before its next request, and an answer fits in the socket's
/// and the circuit's buffers.
pub(crate) const STALL: Duration = Duration::from_secs(2);
/// How long a connection with a complete first request waits in line for a slot before it is
/// answered `Busy`.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(45);

/// The connection slots, and who gets one when all are taken.
///
/// A new connection first waits in a *waiting room* until its first complete request: sockets
/// that never speak, or trickle a frame byte by byte, never hold a slot. When the waiting room is
/// full, its oldest silent occupant is closed to make room. A connection takes a slot with its
/// first complete request. When every slot is taken, it gets in line (first come, first served)
/// and takes the slot of a holder that has had its own for at least [`SLOT_QUANTUM`] and is
/// between requests, the longest-serving first, or at once the slot of a holder that has not
/// taken its answer for [`STALL`]. A holder is never closed in the middle of a request, nor
/// within its quantum: a client paced by Tor's round trips keeps its slot for its whole session,
/// whatever others do, and connections that hold slots for long take turns with those in line.
/// After [`QUEUE_WAIT`] in line, the newcomer is refused. Pure state: the caller passes the time.
#[derive(Debug)]
pub(crate) struct SlotTable {
    max: usize,
    max_waiting: usize,
    next_id: u64,
    next_ticket: u64,
    states: std::collections::HashMap<u64, SlotState>,
    /// Silent waiting-room occupants by arrival.
    waiting: std::collections::BTreeSet<(Instant, u64)>,
    /// Connections in line for a slot, by ticket.
    line: std::collections::BTreeSet<(u64, u64)>,
    /// Slot holders between requests, by when they got their slot.
    idle: std::collections::BTreeSet<(Instant, u64)>,
    /// Slot holders writing an answer, by when the write began.
    sending: std::collections::BTreeSet<(Instant, u64)>,
    /// Slot holders (idle, busy and sending).
    holders: usize,
}

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// In the waiting room since then: no complete request yet.
    Waiting(Instant),
    /// Has a complete first request and is in line for a slot, with this ticket.
    InLine(u64),
    /// Holds a slot (since `granted`) and waits for its next request.
    Idle { granted: Instant },
    /// Holds a slot (since `granted`) and executes a request.
    Busy { granted: Instant },
    /// Holds a slot (since `granted`) and writes an answer, since `since`.
    Sending { granted: Instant, since: Instant },
}

impl SlotState {
    fn granted(self) -> Option<Instant> {
        match self {
            SlotState::Idle { granted }
            | SlotState::Busy { granted }
            | SlotState::Sending { granted, .. } => Some(granted),
            SlotState::Waiting(_) | SlotState::InLine(_) => None,
        }
    }
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
        /// The oldest silent waiting connection.
        victim: u64,
    },
    /// The waiting room is full of connections in line: the newcomer must close.
    Full,
}

/// What happened to a connection with a complete request and no slot yet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Promotion {
    /// It holds a slot now.
    Granted,
    /// It holds the slot of `victim`, which must close.
    Evicted {
        /// The holder that yielded.
        victim: u64,
    },
    /// No slot yet: it is in line.
    InLine,
    /// It was closed meanwhile.
    Gone,
}

impl SlotTable {
    pub(crate) fn new(max: usize, max_waiting: usize) -> Self {
        SlotTable {
            max,
            max_waiting: max_waiting.max(1),
            next_id: 0,
            next_ticket: 0,
            states: std::collections::HashMap::new(),
            waiting: std::collections::BTreeSet::new(),
            line: std::collections::BTreeSet::new(),
            idle: std::collections::BTreeSet::new(),
            sending: std::collections::BTreeSet::new(),
            holders: 0,
        }
    }

    /// Connections holding a slot.
    pub(crate) fn holders(&self) -> usize {
        self.holders
    }

    /// Connections open (waiting, in line and holding slots).
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// The connection first in line, if any.
    pub(crate) fn first_in_line(&self) -> Option<u64> {
        self.line.first().map(|(_, id)| *id)
    }

    /// A new connection at `now`.
    pub(crate) fn arrive(&mut self, now: Instant) -> Arrival {
        let victim = if self.waiting.len() + self.line.len() >= self.max_waiting {
            match self.waiting.pop_first() {
                Some((_, v)) => {
                    self.states.remove(&v);
                    Some(v)
                }
                None => return Arrival::Full,
            }
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.states.insert(id, SlotState::Waiting(now));
        self.waiting.insert((now, id));
        match victim {
            Some(victim) => Arrival::Displaced { id, victim },
            None => Arrival::Waiting(id),
        }
    }

    /// The holder that yields its slot to the one first in line at `now`, if any: a stalled
    /// writer first, else the longest-serving idle holder past its quantum.
    fn yielding(&self, now: Instant) -> Option<u64> {
        if let Some((since, v)) = self.sending.first() {
            if now.saturating_duration_since(*since) >= STALL {
                return Some(*v);
            }
        }
        match self.idle.first() {
            Some((granted, v)) if now.saturating_duration_since(*granted) >= SLOT_QUANTUM => {
                Some(*v)
            }
            _ => None,
        }
    }

    /// Give connection `id` (in the waiting room or in line) a slot if it can have one now.
    fn grant(&mut self, id: u64, now: Instant) -> Option<Promotion> {
        let mut victim = None;
        if self.holders >= self.max {
            let v = self.yielding(now)?;
            self.release(v);
            victim = Some(v);
        }
        match self.states.get(&id).copied() {
            Some(SlotState::Waiting(t)) => {
                self.waiting.remove(&(t, id));
            }
            Some(SlotState::InLine(ticket)) => {
                self.line.remove(&(ticket, id));
            }
            _ => {}
        }
        self.states.insert(id, SlotState::Busy { granted: now });
        self.holders += 1;
        Some(match victim {
            Some(victim) => Promotion::Evicted { victim },
            None => Promotion::Granted,
        })
    }

    /// Connection `id` completed its first request at `now`: it executes it if it gets a slot,
    /// else it gets in line (behind anybody already there).
    pub(crate) fn promote(&mut self, id: u64, now: Instant) -> Promotion {
        let Some(SlotState::Waiting(since)) = self.states.get(&id).copied() else {
            return Promotion::Gone;
        };
        if self.line.is_empty() {
            if let Some(p) = self.grant(id, now) {
                return p;
            }
        }
        self.waiting.remove(&(since, id));
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.states.insert(id, SlotState::InLine(ticket));
        self.line.insert((ticket, id));
        Promotion::InLine
    }

    /// Connection `id`, in line, tries again at `now`: it gets a slot once it is first in line
    /// and one is free or yields.
    pub(crate) fn take(&mut self, id: u64, now: Instant) -> Promotion {
        match self.states.get(&id) {
            Some(SlotState::InLine(_)) => {}
            Some(s) if s.granted().is_some() => return Promotion::Granted,
            _ => return Promotion::Gone,
        }
        if self.first_in_line() != Some(id) {
            return Promotion::InLine;
        }
        self.grant(id, now).unwrap_or(Promotion::InLine)
    }

    /// Slot holder `id` starts waiting for its next request.
    pub(crate) fn idle(&mut self, id: u64) {
        let granted = match self.states.get(&id).copied() {
            Some(SlotState::Busy { granted }) => granted,
            Some(SlotState::Sending { granted, since }) => {
                self.sending.remove(&(since, id));
                granted
            }
            _ => return,
        };
        self.states.insert(id, SlotState::Idle { granted });
        self.idle.insert((granted, id));
    }

    /// Slot holder `id` writes an answer from `now` on.
    pub(crate) fn sending(&mut self, id: u64, now: Instant) {
        if let Some(SlotState::Busy { granted }) = self.states.get(&id).copied() {
            self.states.insert(
                id,
                SlotState::Sending {
                    granted,
                    since: now,
                },
            );
            self.sending.insert((now, id));
        }
    }

    /// Slot holder `id` executes a request. `false` if it was closed meanwhile.
    pub(crate) fn busy(&mut self, id: u64) -> bool {
        match self.states.get(&id).copied() {
            Some(SlotState::Idle { granted }) => {
                self.idle.remove(&(granted, id));
                self.states.insert(id, SlotState::Busy { granted });
                true
            }
            Some(SlotState::Busy { .. } | SlotState::Sending { .. }) => true,
            Some(SlotState::Waiting(_) | SlotState::InLine(_)) | None => false,
        }
    }

    /// Whether `id` is still in the waiting room (no complete request yet).
    pub(crate) fn is_waiting(&self, id: u64) -> bool {
        matches!(self.states.get(&id), Some(SlotState::Waiting(_)))
    }

    /// Connection `id` is gone.
    pub(crate) fn release(&mut self, id: u64) {
        match self.states.remove(&id) {
            Some(SlotState::Waiting(t)) => {
                self.waiting.remove(&(t, id));
            }
            Some(SlotState::InLine(ticket)) => {
                self.line.remove(&(ticket, id));
            }
            Some(SlotState::Idle { granted }) => {
                self.idle.remove(&(granted, id));
                self.holders -= 1;
            }
            Some(SlotState::Sending { since, .. }) => {
                self.sending.remove(&(since, id));
                self.holders -= 1;
            }
            Some(SlotState::Busy { .. }) => self.holders -= 1,
            None => {}
        }
    }
}

/// The slot table shared by every connection, with a way to tell a connection that must close
/// and one to wake the connection first in line.
#[derive(Debug)]
pub(crate) struct Slots {
    inner: std::sync::Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    table: SlotTable,
    /// Per connection: told when it must close.
    evict: std::collections::HashMap<u64, Arc<tokio::sync::Notify>>,
    /// Per connection: told when a slot may have come free for it.
    turn: std::collections::HashMap<u64, Arc<tokio::sync::Notify>>,
}

impl Shared {
    fn tell(&mut self, victim: u64) {
        if let Some(n) = self.evict.remove(&victim) {
            n.notify_one();
        }
    }

    /// Something changed that may let the first in line in.
    fn wake_line(&self) {
        if let Some(first) = self.table.first_in_line() {
            if let Some(n) = self.turn.get(&first) {
                n.notify_one();
            }
        }
    }
}

/// One connection's place; released when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    id: Option<u64>,
    evicted: Arc<tokio::sync::Notify>,
    turn: Arc<tokio::sync::Notify>,
}

/// A connection's first request got no slot within [`QUEUE_WAIT`], or the waiting room is full
/// of connections in line.
#[derive(Debug)]
pub(crate) struct NoSlot;

/// How often the first in line looks again whether a holder's quantum has ended.
const LINE_TICK: Duration = Duration::from_millis(100);

impl Slots {
    pub(crate) fn new(max: usize, max_waiting: usize) -> Self {
        Slots {
            inner: std::sync::Mutex::new(Shared {
                table: SlotTable::new(max, max_waiting),
                evict: Default::default(),
                turn: Default::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The table stays consistent whatever a panicking holder did: every method keeps it so.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open (in the waiting room, in line or holding a slot).
    pub(crate) fn len(&self) -> usize {
        self.lock().table.len()
    }

    /// Connections holding a slot.
    pub(crate) fn holders(&self) -> usize {
        self.lock().table.holders()
    }

    /// A place in the waiting room for a new connection (closing the oldest silent one if the
    /// room is full; none if it is full of connections in line).
    pub(crate) fn arrive(&self) -> Slot<'_> {
        let mut g = self.lock();
        let id = match g.table.arrive(Instant::now()) {
            Arrival::Waiting(id) => Some(id),
            Arrival::Displaced { id, victim } => {
                g.tell(victim);
                Some(id)
            }
            Arrival::Full => None,
        };
        let evicted = Arc::new(tokio::sync::Notify::new());
        let turn = Arc::new(tokio::sync::Notify::new());
        if let Some(id) = id {
            g.evict.insert(id, evicted.clone());
            g.turn.insert(id, turn.clone());
        }
        Slot {
            slots: self,
            id,
            evicted,
            turn,
        }
    }
}

impl Slot<'_> {
    /// Whether the connection got a place at all (the waiting room may be full of connections
    /// in line).
    pub(crate) fn admitted(&self) -> bool {
        self.id.is_some()
    }

    /// The connection starts waiting for its next request.
    pub(crate) fn idle(&self) {
        let Some(id) = self.id else { return };
        let mut g = self.slots.lock();
        g.table.idle(id);
        g.wake_line();
    }

    /// The connection starts writing an answer.
    pub(crate) fn sending(&self) {
        let Some(id) = self.id else { return };
        self.slots.lock().table.sending(id, Instant::now());
    }

    /// One step of taking a slot; `None` while in line.
    fn step(&self, first: bool) -> Option<Result<bool, NoSlot>> {
        let Some(id) = self.id else {
            return Some(Err(NoSlot));
        };
        let mut g = self.slots.lock();
        let now = Instant::now();
        let p = if first {
            if !g.table.is_waiting(id) {
                return Some(Ok(g.table.busy(id)));
            }
            g.table.promote(id, now)
        } else {
            g.table.take(id, now)
        };
        match p {
            Promotion::Granted => {
                // Slots come free in bursts (a group commit answers many stores at once, and
                // their connections close together), but each release wakes only the first in
                // line: it passes the word on, so the next one looks without waiting for its tick.
                g.wake_line();
                Some(Ok(true))
            }
            Promotion::Evicted { victim } => {
                g.tell(victim);
                g.wake_line();
                tracing::debug!("all connection slots taken: a connection past its turn yielded");
                Some(Ok(true))
            }
            Promotion::InLine => None,
            Promotion::Gone => Some(Ok(false)),
        }
    }

    /// The connection has a complete request to execute: take a slot with the first one,
    /// waiting in line if every slot is taken. `Ok(false)` if the connection was closed
    /// meanwhile, `Err` if no slot came within [`QUEUE_WAIT`].
    pub(crate) async fn busy(&self) -> Result<bool, NoSlot> {
        if let Some(r) = self.step(true) {
            return r;
        }
        let deadline = Instant::now() + QUEUE_WAIT;
        loop {
            let wait = LINE_TICK.min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = self.turn.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.evicted.notified() => return Ok(false),
            }
            if let Some(r) = self.step(false) {
                return r;
            }
            if Instant::now() >= deadline {
                return Err(NoSlot);
            }
        }
    }

    /// Resolves once the connection has lost its place to a newcomer.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut g = self.slots.lock();
        g.table.release(id);
        g.evict.remove(&id);
        g.turn.remove(&id);
        g.wake_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// #21 Low: slots that come free together (the connections of one group commit closing)
    /// go to as many connections in line at once, not one per [`LINE_TICK`].
    #[tokio::test(start_paused = true)]
    async fn slots_freed_together_are_all_taken_at_once() {
        let slots = Arc::new(Slots::new(4, 100));
        let holders: Vec<_> = (0..4)
            .map(|_| {
                let s = slots.arrive();
                assert!(matches!(s.step(true), Some(Ok(true))));
                s
            })
            .collect();
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let (slots, taken) = (slots.clone(), taken.clone());
            waiters.push(tokio::spawn(async move {
                let s = slots.arrive();
                if s.busy().await.is_ok_and(|b| b) {
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Holds its slot until the test ends.
                    std::future::pending::<()>().await;
                }
            }));
        }
        let settle = || async {
            for _ in 0..200 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 0);
        let start = tokio::time::Instant::now();
        drop(holders);
        settle().await;
        // No time has passed (the clock is paused and never idle): no tick helped.
        assert_eq!(tokio::time::Instant::now(), start);
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(slots.holders(), 4);
        for w in waiters {
            w.abort();
        }
    }

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

    fn w(a: Arrival) -> u64 {
        match a {
            Arrival::Waiting(id) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silent_connections_never_hold_slots() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = SlotTable::new(2, 3);
        let a = w(s.arrive(at(0)));
        let b = w(s.arrive(at(1)));
        let silent = w(s.arrive(at(2)));
        // The waiting room is full: the oldest silent connection (a) goes for a newcomer.
        let Arrival::Displaced { id: c, victim } = s.arrive(at(3)) else {
            panic!()
        };
        assert_eq!(victim, a);
        assert_eq!(s.promote(a, at(4)), Promotion::Gone);
        // b and c speak and take the two slots; the silent one holds none.
        assert_eq!(s.promote(b, at(5)), Promotion::Granted);
        assert_eq!(s.promote(c, at(6)), Promotion::Granted);
        assert_eq!(s.holders(), 2);
        assert!(s.is_waiting(silent));
        s.release(b);
        assert_eq!(s.holders(), 1);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_holder_keeps_its_slot_for_its_quantum_then_yields_to_the_first_in_line() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let q = SLOT_QUANTUM.as_millis() as u64;
        let mut s = SlotTable::new(2, 10);
        let (a, b) = (w(s.arrive(at(0))), w(s.arrive(at(0))));
        assert_eq!(s.promote(a, at(0)), Promotion::Granted);
        assert_eq!(s.promote(b, at(100)), Promotion::Granted);
        s.idle(a);
        s.idle(b);
        // Two newcomers speak while both holders are within their quantum: they get in line,
        // whatever the holders' pauses between requests.
        let (c, d) = (w(s.arrive(at(200))), w(s.arrive(at(300))));
        assert_eq!(s.promote(c, at(1_000)), Promotion::InLine);
        assert_eq!(s.promote(d, at(1_100)), Promotion::InLine);
        assert_eq!(s.take(c, at(q - 1)), Promotion::InLine);
        // Past a's quantum: a yields to c, the first in line; d, second, cannot jump ahead.
        assert_eq!(s.take(d, at(q)), Promotion::InLine);
        assert_eq!(s.take(c, at(q)), Promotion::Evicted { victim: a });
        assert!(!s.busy(a), "a has no slot any more");
        // c is now protected by a fresh quantum; b (older) yields to d once past its own.
        s.idle(c);
        assert_eq!(s.take(d, at(q + 99)), Promotion::InLine);
        assert_eq!(s.take(d, at(q + 100)), Promotion::Evicted { victim: b });
        assert_eq!(s.holders(), 2);
        // A busy holder never yields, even past its quantum.
        assert!(s.busy(c));
        s.idle(d);
        let e = w(s.arrive(at(3 * q)));
        assert_eq!(s.promote(e, at(3 * q)), Promotion::Evicted { victim: d });
        let f = w(s.arrive(at(3 * q)));
        assert_eq!(
            s.promote(f, at(3 * q)),
            Promotion::InLine,
            "c is busy, e is new"
        );
        assert_eq!(s.take(f, at(10 * q)), Promotion::InLine);
        s.release(c);
        assert_eq!(s.take(f, at(10 * q)), Promotion::Granted);
    }

    #[test]
    fn a_holder_that_does_not_take_its_answer_yields_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let stall = STALL.as_millis() as u64;
        let mut s = SlotTable::new(1, 10);
        let a = w(s.arrive(at(0)));
        assert_eq!(s.promote(a, at(0)), Promotion::Granted);
        s.sending(a, at(10));
        let b = w(s.arrive(at(20)));
        assert_eq!(s.promote(b, at(20)), Promotion::InLine);
        assert_eq!(s.take(b, at(10 + stall - 1)), Promotion::InLine);
        assert_eq!(s.take(b, at(10 + stall)), Promotion::Evicted { victim: a });
        // A write that completes in time makes the holder an ordinary idle one.
        s.sending(b, at(3_000));
        s.idle(b);
        let c = w(s.arrive(at(4_000)));
        assert_eq!(s.promote(c, at(5_000)), Promotion::InLine);
    }

    #[test]
    fn a_waiting_room_full_of_connections_in_line_turns_newcomers_away() {
        let t0 = Instant::now();
        let mut s = SlotTable::new(1, 2);
        let a = w(s.arrive(t0));
        assert_eq!(s.promote(a, t0), Promotion::Granted);
        let (b, c) = (w(s.arrive(t0)), w(s.arrive(t0)));
        assert_eq!(s.promote(b, t0), Promotion::InLine);
        assert_eq!(s.promote(c, t0), Promotion::InLine);
        assert_eq!(s.arrive(t0), Arrival::Full);
        s.release(c);
        assert!(matches!(s.arrive(t0), Arrival::Waiting(_)));
    }
}
