//! Spares: connections made ahead, so that a later operation skips part of its connection's
//! set-up. Over Tor a spare is an isolated arti client that has connected to a server once (and
//! dropped that circuit): it keeps the onion service's descriptor, so an operation that takes
//! it builds only its introduction and rendezvous circuits (`tor`).
//!
//! This is the bookkeeping only, free of IO, clocks and randomness (the moment and a uniform
//! draw come in): which spares a server has, one drawn at random among those not older than
//! [`Spares::max_age`], each taken once. Drawn at random, not the oldest first: in a first-in,
//! first-out pool a spare's age would follow how many the pool holds, and so the user's recent
//! operations, and two operations whose spares came out of order could not be one user's.
//!
//! What a spare costs in anonymity (docs/THREAT-MODEL.md): the service can tell from an
//! introduction which of its descriptors the client holds, so a service that publishes a new
//! descriptor every few minutes dates every operation's spare, and tells operations on spares
//! from operations that fetched the descriptor just now. Off unless asked for.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a spare is kept by default: fifteen minutes. The shorter, the less a service that
/// dates its descriptors learns from a spare's age.
pub const SPARE_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Spares by server.
#[derive(Debug)]
pub struct Spares<T> {
    by_server: HashMap<String, VecDeque<(Instant, T)>>,
    /// A spare older than this is dropped, never taken.
    pub max_age: Duration,
}

impl<T> Default for Spares<T> {
    fn default() -> Self {
        Spares {
            by_server: HashMap::new(),
            max_age: SPARE_MAX_AGE,
        }
    }
}

impl<T> Spares<T> {
    /// Keep `item`, made at `now`, for `server`; at most `keep` spares stay for it (the oldest
    /// go first), and every server's spares older than [`Spares::max_age`] go (a server no
    /// longer used would keep its own for good: each holds a client of its own). Returns how
    /// many were dropped.
    pub fn put(&mut self, server: &str, item: T, now: Instant, keep: usize) -> usize {
        let mut dropped = self.prune(now);
        let list = self.by_server.entry(server.to_owned()).or_default();
        list.push_back((now, item));
        while list.len() > keep {
            list.pop_front();
            dropped += 1;
        }
        if list.is_empty() {
            self.by_server.remove(server);
        }
        dropped
    }

    /// A spare for `server` drawn by `u` (uniform in [0, 1)) among those not older than
    /// [`Spares::max_age`] at `now`; the older ones, every server's, are dropped. Each spare is
    /// taken once.
    pub fn take(&mut self, server: &str, now: Instant, u: f64) -> Option<T> {
        self.prune(now);
        let list = self.by_server.get_mut(server)?;
        let n = list.len();
        let got = (n > 0)
            .then(|| ((u.clamp(0.0, 1.0) * n as f64) as usize).min(n - 1))
            .and_then(|i| list.remove(i))
            .map(|(_, item)| item);
        if list.is_empty() {
            self.by_server.remove(server);
        }
        got
    }

    /// Drop every server's spares older than [`Spares::max_age`] at `now`; how many went.
    fn prune(&mut self, now: Instant) -> usize {
        let max_age = self.max_age;
        let mut dropped = 0;
        self.by_server.retain(|_, list| {
            let before = list.len();
            list.retain(|(made, _)| now.saturating_duration_since(*made) <= max_age);
            dropped += before - list.len();
            !list.is_empty()
        });
        dropped
    }

    /// How many spares could be taken at `now`, over every server.
    pub fn ready(&self, now: Instant) -> usize {
        self.by_server
            .values()
            .flatten()
            .filter(|(made, _)| now.saturating_duration_since(*made) <= self.max_age)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_spare_is_drawn_and_taken_once() {
        let t0 = Instant::now();
        let mut s = Spares::default();
        s.put("a:1", 1, t0, 3);
        s.put("a:1", 2, t0 + Duration::from_secs(10), 3);
        s.put("a:1", 3, t0 + Duration::from_secs(20), 3);
        s.put("b:1", 9, t0, 2);
        let at = t0 + Duration::from_secs(30);
        assert_eq!(s.ready(at), 4);
        // The draw picks among the fresh ones, whatever their age.
        assert_eq!(s.take("a:1", at, 0.5), Some(2));
        assert_eq!(s.take("a:1", at, 0.99), Some(3));
        assert_eq!(s.take("a:1", at, 0.0), Some(1));
        assert_eq!(s.take("a:1", at, 0.5), None);
        assert_eq!(
            s.take("c:1", t0, 0.5),
            None,
            "another server's spare is not taken"
        );
        assert_eq!(s.ready(at), 1);
    }

    #[test]
    fn a_full_pool_drops_its_oldest_and_an_old_spare_is_never_taken() {
        let t0 = Instant::now();
        let mut s = Spares::default();
        assert_eq!(s.put("a:1", 1, t0, 2), 0);
        assert_eq!(s.put("a:1", 2, t0 + Duration::from_secs(1), 2), 0);
        assert_eq!(s.put("a:1", 3, t0 + Duration::from_secs(2), 2), 1);
        assert_eq!(s.take("a:1", t0 + Duration::from_secs(3), 0.0), Some(2));
        // No spares kept at all: the new one goes at once.
        assert_eq!(s.put("b:1", 7, t0, 0), 1);
        assert_eq!(s.take("b:1", t0, 0.0), None);
        // Past the age: dropped, whatever the draw; the younger one taken (3, made at 2 s, is
        // a second too old; 4, made at 5 s, two seconds short of it).
        let late = t0 + SPARE_MAX_AGE + Duration::from_secs(3);
        s.put("a:1", 4, t0 + Duration::from_secs(5), 3);
        assert_eq!(s.ready(late), 1);
        assert_eq!(s.take("a:1", late, 0.0), Some(4));
        assert_eq!(s.take("a:1", late + SPARE_MAX_AGE, 0.0), None);
        assert!(s.by_server.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_server_no_longer_used_keeps_no_old_spares() {
        let t0 = Instant::now();
        let mut s = Spares::default();
        s.put("old:1", 1, t0, 2);
        s.put("old:1", 2, t0 + Duration::from_secs(1), 2);
        // A spare for another server, past the first ones' age: they go with it.
        assert_eq!(
            s.put("new:1", 3, t0 + SPARE_MAX_AGE + Duration::from_secs(2), 2),
            2
        );
        assert_eq!(s.by_server.len(), 1);
        assert_eq!(s.ready(t0 + SPARE_MAX_AGE + Duration::from_secs(2)), 1);
        // A take for any server drops the others' old ones too.
        let t1 = t0 + SPARE_MAX_AGE * 3;
        s.put("old:1", 4, t1, 2);
        assert_eq!(
            s.take("other:1", t1 + SPARE_MAX_AGE + Duration::from_secs(1), 0.5),
            None
        );
        assert!(s.by_server.is_empty(), "nothing left behind");
    }
}
