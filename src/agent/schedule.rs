//! When the agent sends what, beyond the looks of each offer (which follow
//! [`crate::proto::schedule::LookSchedule`], copy by copy): **cover traffic**. Pure: uniform
//! draws come in.
//!
//! Cover requests look like real ones to the server, in their pattern as well as one by one:
//! - a *decoy mailbox* is a mailbox nobody uses, looked into the way an initiator looks into its
//!   own while it waits for an answer (after exponential pauses of the look schedule's mean, each
//!   a fresh connection), for an exponential time of mean [`DECOY_MAILBOX_MEAN`]; an empty
//!   mailbox answers filler, as one still waiting for its answer does;
//! - a *decoy fetch* fetches a bucket the agent knows (one its own offers went into, or one it
//!   accepted from) once, as a late accept of some link there would.
//!
//! Both start at memoryless random moments, at rates the user sets; docs/ANONYMITY.md measures
//! what they buy.

use crate::proto::schedule::exponential;
use std::time::Duration;

/// How long a decoy mailbox is looked into, on average: about as long as a real initiator waits
/// for its answer when the accepter comes some ten minutes after the hand-over.
pub const DECOY_MAILBOX_MEAN: Duration = Duration::from_secs(600);

/// How much cover traffic the agent sends. Default: none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cover {
    /// Decoy mailboxes started per hour.
    pub mailboxes_per_hour: f64,
    /// Decoy fetches per hour.
    pub fetches_per_hour: f64,
}

/// A kind of cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoy {
    /// Start looking into a mailbox nobody uses.
    Mailbox,
    /// A fetch of a bucket the agent knows.
    Fetch,
}

impl Cover {
    /// Whether any cover is sent.
    pub fn any(&self) -> bool {
        self.mailboxes_per_hour > 0.0 || self.fetches_per_hour > 0.0
    }

    /// The pause until the next cover start and its kind, from two uniform draws in [0, 1):
    /// the merged Poisson process of both kinds, the kind drawn by its share of the rate.
    /// `None` without cover.
    pub fn next(&self, u_time: f64, u_kind: f64) -> Option<(Duration, Decoy)> {
        let total = self.mailboxes_per_hour.max(0.0) + self.fetches_per_hour.max(0.0);
        if total <= 0.0 || !total.is_finite() {
            return None;
        }
        // A rate near zero is a pause of at most ten years, not an overflow.
        let mean = Duration::try_from_secs_f64(3600.0 / total)
            .unwrap_or(crate::proto::schedule::MAX_SPAN)
            .min(crate::proto::schedule::MAX_SPAN);
        let kind = if u_kind * total < self.mailboxes_per_hour.max(0.0) {
            Decoy::Mailbox
        } else {
            Decoy::Fetch
        };
        Some((exponential(mean, u_time), kind))
    }

    /// How long a decoy mailbox is looked into, from a uniform draw in [0, 1).
    pub fn mailbox_lifetime(u: f64) -> Duration {
        exponential(DECOY_MAILBOX_MEAN, u)
    }
}

/// Spares made ahead for the servers the agent knows (`crate::client::spares`): a warm-up at
/// the moments of a Poisson process of mean [`Warming::mean`] that runs whatever the agent's
/// operations do, each for one known server drawn at random, at most [`Warming::keep`] spares
/// kept per server (a full pool drops its oldest). So a warm-up's moment says nothing about any
/// operation, and each operation takes a spare made at a moment of its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warming {
    /// Spares kept per server; 0: none made.
    pub keep: usize,
    /// The mean pause between two warm-ups.
    pub mean: Duration,
}

impl Warming {
    /// The pause until the next warm-up, from a uniform draw in [0, 1); `None` when no spares
    /// are made.
    pub fn next(&self, u: f64) -> Option<Duration> {
        self.is_on().then(|| exponential(self.mean, u))
    }

    /// Whether spares are made at all.
    pub fn is_on(&self) -> bool {
        self.keep > 0 && !self.mean.is_zero()
    }
}

/// When a later delete happens: a moment drawn uniformly from `within` seconds after `now`,
/// but not after `last` (the link's expiry, after which there is nothing to delete), from a
/// uniform draw in [0, 1). Uniform, not tied to any event, so the delete's time says nothing
/// about when the link was fetched or answered.
pub fn delete_at(now: u64, within: u64, last: u64, u: f64) -> u64 {
    let end = now.saturating_add(within).min(last.max(now));
    let span = end - now;
    now + ((u.clamp(0.0, 1.0) * span as f64) as u64).min(span)
}

/// The most a delete decided at the offer (`delete_after_close_secs`) comes after the delay:
/// ten minutes, and never more than a tenth of the delay.
pub const SCHEDULED_DELETE_SPREAD_SECS: u64 = 600;

/// The span, seconds, over which a delete decided at the offer `after` seconds after the close
/// is spread: a tenth of `after`, at most [`SCHEDULED_DELETE_SPREAD_SECS`].
pub fn scheduled_delete_spread(after: u64) -> u64 {
    (after / 10).min(SCHEDULED_DELETE_SPREAD_SECS)
}

/// When a delete decided at the offer happens: `after` seconds after the bucket's close at
/// `closes_at`, plus a uniform share (from `u` in [0, 1)) of a tenth of `after`, at most
/// [`SCHEDULED_DELETE_SPREAD_SECS`]. At exactly the delay, the server, which knows its bucket's
/// close to the second, read the client's clock error off every delete (arrival minus close
/// minus delay), and grouped one user's deletes, and a link's copies across servers comparing
/// notes, by a clock error of their own; spread over minutes, that error is lost in the draw.
/// The moment still follows no fetch and no answer.
///
/// `expires_at`: when the link expires, after which there is nothing to delete. `None` when
/// the delay itself reaches it (whether a link gets a delete is never a draw). A spread that
/// would reach past it is moved earlier, whole, to end at the last second before it (but not
/// before the close): cut there instead, every draw past it came at that one second, and a
/// server that told a connection a TTL just past the delay read the client's clock error off
/// the delete again (a helper's review, 2026-12-07).
pub fn scheduled_delete_at(closes_at: u64, after: u64, expires_at: u64, u: f64) -> Option<u64> {
    let due = closes_at.saturating_add(after);
    if due >= expires_at {
        return None;
    }
    // The window `[from, from + spread)` ends by `expires_at`, and never begins before the
    // close, since `expires_at > due >= close + 10 * spread` (no clamp needed either way).
    let spread = scheduled_delete_spread(after);
    let from = due.min(expires_at - spread);
    let extra = ((u.clamp(0.0, 1.0) * spread as f64) as u64).min(spread.saturating_sub(1));
    Some(from + extra)
}

/// How long a later delete is tried after its moment: a day, when its link has surely expired
/// (the TTL is at most a day by default) and nothing is left to delete.
pub const DELETE_GIVE_UP_SECS: u64 = 86_400;

/// The moment for a later delete (first due at `due`) that could not be carried out at its
/// moment: its moment passed while the agent was not running, or the attempt failed (Tor down,
/// the server unreachable). A fresh moment of its own, uniform from five minutes to an hour
/// after `now` (`u` uniform in [0, 1)), never past [`DELETE_GIVE_UP_SECS`] after `due`; `None`
/// once that has passed. Carried out at once, every delete missed during an outage would come
/// together, and with the looks a restart resumes: the server could tie those links to each
/// other and to the mailboxes. Each at a moment of its own, away from the start, they tie
/// nothing.
pub fn late_delete_at(now: u64, due: u64, u: f64) -> Option<u64> {
    let give_up = due.saturating_add(DELETE_GIVE_UP_SECS);
    let from = now.saturating_add(300).min(give_up);
    (now < give_up).then(|| delete_at(from, 3300, give_up, u))
}

/// An index into `n` choices from a uniform draw in [0, 1) (`None` when there is nothing to
/// choose).
pub fn pick(n: usize, u: f64) -> Option<usize> {
    (n > 0).then(|| ((u.clamp(0.0, 1.0) * n as f64) as usize).min(n - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_delete_gets_a_moment_of_its_own_within_the_hour() {
        let due = 1_000_000;
        let now = due + 50_000;
        assert_eq!(late_delete_at(now, due, 0.0), Some(now + 300));
        assert_eq!(late_delete_at(now, due, 0.5), Some(now + 1950));
        assert_eq!(late_delete_at(now, due, 0.999_999), Some(now + 3599));
        // Never past the give-up moment, and nothing after it.
        let close = due + DELETE_GIVE_UP_SECS - 1000;
        assert_eq!(late_delete_at(close, due, 0.999_999), Some(close + 999));
        let closer = due + DELETE_GIVE_UP_SECS - 100;
        assert_eq!(late_delete_at(closer, due, 0.5), Some(closer + 100));
        assert_eq!(late_delete_at(due + DELETE_GIVE_UP_SECS, due, 0.5), None);
    }

    /// A rate near zero (the flag takes any number from 0 to 3600) is a long pause, not a
    /// panic that would end the cover task.
    #[test]
    fn a_tiny_cover_rate_is_a_long_pause() {
        let c = Cover {
            mailboxes_per_hour: 1e-300,
            fetches_per_hour: 0.0,
        };
        let (pause, kind) = c.next(0.5, 0.5).unwrap();
        assert_eq!(kind, Decoy::Mailbox);
        assert!(pause <= crate::proto::schedule::MAX_SPAN);
    }

    #[test]
    fn a_scheduled_delete_is_spread_over_a_tenth_of_its_delay_at_most_ten_minutes() {
        let far = u64::MAX;
        // Three hours: within ten minutes after the delay.
        assert_eq!(scheduled_delete_at(1000, 10_800, far, 0.0), Some(11_800));
        assert_eq!(scheduled_delete_at(1000, 10_800, far, 0.5), Some(12_100));
        assert_eq!(
            scheduled_delete_at(1000, 10_800, far, 0.999_999),
            Some(12_399)
        );
        assert_eq!(scheduled_delete_at(1000, 10_800, far, 1.0), Some(12_399));
        // An hour: within six minutes.
        assert_eq!(scheduled_delete_at(0, 3600, far, 0.999_999), Some(3959));
        // A few seconds: at the delay (a tenth of it is under a second).
        assert_eq!(scheduled_delete_at(100, 5, far, 0.9), Some(105));
        assert_eq!(
            scheduled_delete_at(far - 4000, 3600, far, 0.5),
            Some(far - 220)
        );
    }

    /// A link that expires within the spread after the delay: the spread is moved earlier,
    /// whole, to end the second before the expiry; before, every draw past it came at that one
    /// second, and a server choosing the TTL read the client's clock error off the delete.
    #[test]
    fn a_scheduled_delete_keeps_its_whole_spread_before_the_expiry() {
        // Three hours after a close at 1000, spread over 600 s; the link expires 1 s after the
        // delay.
        let expires = 11_801;
        let moments: Vec<u64> = (0..600)
            .map(|k| scheduled_delete_at(1000, 10_800, expires, (k as f64 + 0.5) / 600.0).unwrap())
            .collect();
        assert_eq!(moments.first(), Some(&11_201));
        assert_eq!(moments.last(), Some(&11_800));
        let distinct: std::collections::HashSet<_> = moments.iter().collect();
        assert_eq!(distinct.len(), 600, "the spread kept whole");
        // Never past the expiry, never before the close.
        assert_eq!(scheduled_delete_at(1000, 10_800, 11_800, 0.5), None);
        assert_eq!(scheduled_delete_at(1000, 100, 1050, 0.0), None);
        assert_eq!(scheduled_delete_at(1000, 30, 1032, 0.0), Some(1029));
        assert_eq!(scheduled_delete_at(1000, 30, 1031, 0.99), Some(1030));
        for u in [0.0, 0.3, 0.99] {
            let at = scheduled_delete_at(1000, 3600, 4601, u).unwrap();
            assert!((1000..4601).contains(&at), "{at}");
        }
    }

    #[test]
    fn warm_ups_follow_their_mean_and_stop_with_no_spares() {
        let w = Warming {
            keep: 2,
            mean: Duration::from_secs(600),
        };
        let n = 10_000;
        let total: f64 = (0..n)
            .map(|i| w.next((i as f64 + 0.5) / n as f64).unwrap().as_secs_f64())
            .sum();
        assert!((total / n as f64 - 600.0).abs() < 6.0);
        assert_eq!(Warming { keep: 0, ..w }.next(0.5), None);
        assert_eq!(
            Warming {
                mean: Duration::ZERO,
                ..w
            }
            .next(0.5),
            None
        );
    }

    #[test]
    fn cover_follows_its_rates() {
        assert_eq!(Cover::default().next(0.5, 0.5), None);
        let c = Cover {
            mailboxes_per_hour: 30.0,
            fetches_per_hour: 10.0,
        };
        // 40 an hour in all: a mean pause of 90 s.
        let n = 40_000;
        let mut looks = 0;
        let mut total = 0.0;
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64;
            let (d, k) = c.next(u, (i as f64 * 0.618_033_988_7) % 1.0).unwrap();
            total += d.as_secs_f64();
            looks += usize::from(k == Decoy::Mailbox);
        }
        assert!((total / n as f64 - 90.0).abs() < 1.0);
        assert!((looks as f64 / n as f64 - 0.75).abs() < 0.01);
        assert_eq!(pick(0, 0.3), None);
        assert_eq!(pick(4, 0.0), Some(0));
        assert_eq!(pick(4, 0.99), Some(3));
        assert_eq!(pick(4, 1.0), Some(3));
        // Later deletes: within the span, never past the link's expiry.
        assert_eq!(delete_at(1000, 3600, u64::MAX, 0.0), 1000);
        assert_eq!(delete_at(1000, 3600, u64::MAX, 0.5), 2800);
        assert_eq!(delete_at(1000, 3600, u64::MAX, 1.0), 4600);
        assert_eq!(delete_at(1000, 3600, 1600, 0.9), 1540);
        assert_eq!(
            delete_at(1000, 3600, 500, 0.9),
            1000,
            "expired already: now"
        );
    }
}
