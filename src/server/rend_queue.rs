//! Introductions waiting for their rendezvous. The onion service builds at most so many
//! rendezvous circuits at once ([`super::onion::OnionSettings::max_rendezvous_in_flight`]); the
//! introductions beyond that wait here, first come, first served. arti hands them over through
//! a queue of 32 and drops what does not fit without a word to the client, which then waits for
//! a rendezvous that never comes (some 16 s on the test network) before it tries again: in a
//! burst of 128 accepts against a bound of 64, that was the slowest accepts' time. Read at once
//! into this queue, none is lost to a burst.
//!
//! Bounded all the same: at most [`RendQueue::capacity`] wait (when full, the oldest goes: it is
//! the nearest to being given up by its client), and one that waited longer than
//! [`RendQueue::max_wait`] is dropped when its turn comes (its client has given up; a circuit
//! built for it would be wasted). Pure: the moment comes in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many introductions may wait by default.
pub const REND_QUEUE_CAPACITY: usize = 1024;

/// How long an introduction may wait by default: a client gives up waiting for its rendezvous
/// after about eight of its circuit-build timeouts (arti), which is seldom under 12 s.
pub const REND_MAX_WAIT: Duration = Duration::from_secs(12);

/// Introductions waiting for a rendezvous.
#[derive(Debug)]
pub struct RendQueue<T> {
    waiting: VecDeque<(Instant, T)>,
    /// At most this many wait.
    pub capacity: usize,
    /// None waits longer than this.
    pub max_wait: Duration,
    /// How many were dropped because the queue was full.
    pub dropped_full: u64,
    /// How many were dropped because they waited longer than [`RendQueue::max_wait`].
    pub dropped_stale: u64,
}

impl<T> RendQueue<T> {
    /// An empty queue.
    pub fn new(capacity: usize, max_wait: Duration) -> Self {
        RendQueue {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            max_wait,
            dropped_full: 0,
            dropped_stale: 0,
        }
    }

    /// `item` arrived at `now`. When the queue is full the oldest waiting one is dropped;
    /// returns whether one was.
    pub fn push(&mut self, now: Instant, item: T) -> bool {
        let full = self.waiting.len() >= self.capacity;
        if full {
            self.waiting.pop_front();
            self.dropped_full += 1;
        }
        self.waiting.push_back((now, item));
        full
    }

    /// The next one to serve at `now`: the oldest that has not waited longer than
    /// [`RendQueue::max_wait`] (those that have are dropped).
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        while let Some((came, item)) = self.waiting.pop_front() {
            if now.saturating_duration_since(came) <= self.max_wait {
                return Some(item);
            }
            self.dropped_stale += 1;
        }
        None
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served_and_nothing_lost_below_the_bound() {
        let t0 = Instant::now();
        let mut q = RendQueue::new(1024, REND_MAX_WAIT);
        // A burst of 128 where arti's own queue holds 32: every one waits its turn.
        for i in 0..128 {
            assert!(!q.push(t0, i));
        }
        assert_eq!(q.len(), 128);
        let served: Vec<i32> = std::iter::from_fn(|| q.pop(t0 + Duration::from_secs(2))).collect();
        assert_eq!(served, (0..128).collect::<Vec<_>>());
        assert_eq!((q.dropped_full, q.dropped_stale), (0, 0));
        assert!(q.is_empty());
    }

    #[test]
    fn a_flood_beyond_the_bound_drops_the_oldest_and_the_stale_are_not_served() {
        let t0 = Instant::now();
        let mut q = RendQueue::new(4, Duration::from_secs(12));
        for i in 0..4 {
            assert!(!q.push(t0 + Duration::from_secs(i), i));
        }
        // Twice the bound: the oldest go, the newest wait.
        for i in 4..8 {
            assert!(q.push(t0 + Duration::from_secs(i), i));
        }
        assert_eq!((q.len(), q.dropped_full), (4, 4));
        // At 17 s, 4 (came at 4 s) and 5 (came at 5 s) waited more than 12 s: dropped.
        assert_eq!(q.pop(t0 + Duration::from_secs(17)), Some(5));
        assert_eq!(q.dropped_stale, 1);
        assert_eq!(q.pop(t0 + Duration::from_secs(19)), Some(7));
        assert_eq!((q.dropped_full, q.dropped_stale), (4, 2));
        assert_eq!(q.pop(t0 + Duration::from_secs(19)), None);
        // A capacity of 0 is one.
        let mut one = RendQueue::new(0, REND_MAX_WAIT);
        assert!(!one.push(t0, 1));
        assert!(one.push(t0, 2));
        assert_eq!(one.pop(t0), Some(2));
    }
}
