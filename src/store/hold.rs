//! Expiry holds: links and answers created while the wall clock ran behind keep their whole TTL.
//!
//! A bucket expires `ttl` seconds after the time in its ID, which is the wall clock's reading when
//! it was opened (clients compare it with their own clocks). A server whose wall clock runs a day
//! behind opens buckets dated a day early; once the clock is corrected those buckets look a day
//! old, and would be collected a day before their TTL has passed. The server sees it coming: its
//! elapsed-time line ([`crate::clock::TimeGuard`]) runs ahead of the wall clock by the deficit.
//! It then records a hold before storing anything: everything created (by wall time) from
//! [`ExpiryHold::from`] to [`ExpiryHold::to`] is expired as if `credit` seconds later. The store
//! keeps the hold durably, with the links it protects, and applies it to every expiry decision
//! (fetch, delete, answers, garbage collection), so a restart or another frontend of a cluster
//! keeps it too.
//!
//! The hold is one interval and one credit, merged: a second period behind widens it. Applied to
//! a single expiry time, it also holds back buckets created after `from` that were never behind
//! (they live up to `credit` longer, never shorter). Once every held bucket has had its TTL and
//! its credit, the hold ends. Pure: no clock, no IO.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The largest credit a hold gives: a wall clock years behind (a reset real-time clock) must not
/// stop garbage collection for years. Links stored while the clock ran further behind than this
/// lose the difference.
pub const MAX_CREDIT: u64 = 30 * 86_400;

/// Buckets and answers created (by their wall-clock time) in `from..=to` expire `credit`
/// seconds late.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryHold {
    /// The earliest creation time held.
    pub from: u64,
    /// The latest creation time held.
    pub to: u64,
    /// Seconds added to the TTL of what was created in `from..=to`, at most [`MAX_CREDIT`].
    pub credit: u64,
}

impl ExpiryHold {
    /// A hold for what is created in `from..=to`, `credit` seconds (capped at [`MAX_CREDIT`]).
    pub fn new(from: u64, to: u64, credit: u64) -> Self {
        ExpiryHold {
            from: from.min(to),
            to: to.max(from),
            credit: credit.min(MAX_CREDIT),
        }
    }

    /// The expiry time to use at expiry time `now`, for a store with `ttl`: `now` itself, except
    /// that nothing created in `from..=to` expires before its creation + `ttl` + `credit`.
    /// What was created before `from` expires on time.
    pub fn apply(hold: Option<&Self>, now: u64, ttl: u64) -> u64 {
        let Some(h) = hold else { return now };
        if h.ended(now, ttl) {
            return now;
        }
        // Everything created before `from` may go: a time at which exactly those have expired.
        let before_from = h.from.saturating_add(ttl).saturating_sub(1);
        now.min(before_from.max(now.saturating_sub(h.credit)))
    }

    /// Whether every bucket the hold protects has had its TTL and its credit at `now`.
    pub fn ended(&self, now: u64, ttl: u64) -> bool {
        now.saturating_sub(self.credit) >= self.to.saturating_add(ttl)
    }

    /// Whether this hold already gives everything `other` asks for.
    pub fn covers(&self, other: &Self) -> bool {
        self.from <= other.from && self.to >= other.to && self.credit >= other.credit
    }

    /// The smallest hold that covers both.
    pub fn merge(self, other: Self) -> Self {
        ExpiryHold::new(
            self.from.min(other.from),
            self.to.max(other.to),
            self.credit.max(other.credit),
        )
    }
}

/// A store's current hold, shared between its handle and its writer.
#[derive(Debug, Default)]
pub(crate) struct HoldCell(Mutex<Option<ExpiryHold>>);

impl HoldCell {
    pub(crate) fn new(h: Option<ExpiryHold>) -> Self {
        HoldCell(Mutex::new(h))
    }

    pub(crate) fn get(&self) -> Option<ExpiryHold> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, h: Option<ExpiryHold>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// `now` with the hold applied (see [`ExpiryHold::apply`]).
    pub(crate) fn apply(&self, now: u64, ttl: u64) -> u64 {
        ExpiryHold::apply(self.get().as_ref(), now, ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 86_400;

    fn expired(created: u64, at: u64, hold: Option<&ExpiryHold>) -> bool {
        ExpiryHold::apply(hold, at, TTL) >= created + TTL
    }

    #[test]
    fn what_was_created_while_behind_gets_its_ttl_and_the_credit() {
        let t = 1_000_000_000;
        // Behind by a day for an hour: buckets dated t - DAY .. t - DAY + 3600.
        let h = ExpiryHold::new(t - TTL, t - TTL + 3600, TTL);
        let held = t - TTL + 100;
        assert!(!expired(held, t + 3600, Some(&h)), "not at the correction");
        assert!(!expired(held, held + TTL + TTL - 1, Some(&h)));
        assert!(expired(held, held + TTL + TTL, Some(&h)));
        // Without the hold it would have gone at the correction.
        assert!(expired(held, t + 3600, None));
        // Created before the hold: on time.
        let older = t - TTL - 10;
        assert!(!expired(older, older + TTL - 1, Some(&h)));
        assert!(expired(older, older + TTL, Some(&h)));
        // Created after it (the clock right again): late by at most the credit, never early.
        let later = t + 7200;
        assert!(!expired(later, later + TTL - 1, Some(&h)));
        assert!(expired(later, later + TTL + TTL, Some(&h)));
    }

    #[test]
    fn every_creation_time_keeps_at_least_its_ttl() {
        let h = ExpiryHold::new(5_000, 9_000, 2_500);
        let ttl = 1_000;
        for created in (3_000..12_000).step_by(97) {
            let need = created
                + ttl
                + if (5_000..=9_000).contains(&created) {
                    2_500
                } else {
                    0
                };
            for at in (created..need + 4_000).step_by(13) {
                let gone = ExpiryHold::apply(Some(&h), at, ttl) >= created + ttl;
                assert!(!gone || at >= need, "created {created} gone at {at}");
            }
            // And it does go, at the latest the credit after its time.
            assert!(ExpiryHold::apply(Some(&h), need + 2_500, ttl) >= created + ttl);
        }
    }

    #[test]
    fn a_hold_ends_and_merges() {
        let h = ExpiryHold::new(100, 200, 50);
        assert!(!h.ended(200 + 1_000 + 49, 1_000));
        assert!(h.ended(200 + 1_000 + 50, 1_000));
        assert_eq!(ExpiryHold::apply(Some(&h), 5_000, 1_000), 5_000);
        let m = h.merge(ExpiryHold::new(150, 400, 20));
        assert_eq!(m, ExpiryHold::new(100, 400, 50));
        assert!(m.covers(&h) && !h.covers(&m));
        assert_eq!(ExpiryHold::new(0, 1, u64::MAX).credit, MAX_CREDIT);
    }
}
