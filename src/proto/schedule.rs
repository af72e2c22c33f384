//! When a client sends what: the timing rules of the answer flow (PROTOCOL.md §15.4). Pure: the
//! current time and uniform random draws are arguments.
//!
//! The server sees the time of every request, and a mailbox's name in every look and answer.
//! Three rules keep it from chaining a link's store, its accept, the answer and the initiator's
//! looks together (docs/ANONYMITY.md, "The answer flow", measures each):
//! - **no look before the bucket closes**: the first look at a new mailbox would otherwise come
//!   seconds after the store and name the link it belongs to; after the close every link of the
//!   bucket is an equally good owner;
//! - **looks at memoryless random moments** (exponential pauses): no fixed beat that would tie
//!   two mailboxes of one initiator together, nothing a look's time says about the next;
//! - **no delete right after the answer**: a delete names its link, and one that follows the
//!   look that found the answer ties the link to the mailbox, hence to the accepter's fetch that
//!   answered it. The default is to let the link expire.

use std::time::Duration;

/// Default mean pause between two looks into a mailbox.
pub const DEFAULT_MEAN_LOOK: Duration = Duration::from_secs(30);

/// Below this mean pause the command line warns (each look costs a Tor circuit, and the moment
/// the answer was collected follows the accepter's answer closely).
pub const SHORT_MEAN_LOOK: Duration = Duration::from_secs(10);

/// The longest exponential pause drawn, in means (the tail beyond is cut, which changes the
/// distribution by less than e^-12).
const MAX_MEANS: f64 = 12.0;

/// An exponentially distributed pause of mean `mean`, from `u` uniform in [0, 1) (values
/// outside are clamped), at most 12 means.
pub fn exponential(mean: Duration, u: f64) -> Duration {
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0) };
    let draws = (-(1.0 - u).ln()).min(MAX_MEANS);
    // Never more than MAX_SPAN, whatever the mean: a pause added to a clock must not overflow.
    Duration::try_from_secs_f64(mean.as_secs_f64() * draws.max(0.0))
        .unwrap_or(MAX_SPAN)
        .min(MAX_SPAN)
}

/// The longest pause or wait rdv's schedules use: ten years. Longer ones (from a flag, a state
/// file, a server's advertised TTL) are cut to it, so that adding them to a clock cannot overflow.
pub const MAX_SPAN: Duration = Duration::from_secs(10 * 366 * 86_400);

/// How the initiator looks for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookSchedule {
    /// Mean of the exponential pause before each look. Default 30 s.
    pub mean: Duration,
    /// Look before the bucket closes. Default `false`: a look that early ties the mailbox to
    /// the store it follows.
    pub early: bool,
}

impl Default for LookSchedule {
    fn default() -> Self {
        LookSchedule {
            mean: DEFAULT_MEAN_LOOK,
            early: false,
        }
    }
}

impl LookSchedule {
    /// When looking may start (unix seconds): the bucket's close `polls_from`, or `now` if that
    /// has passed or the schedule looks early.
    pub fn start(&self, now: u64, polls_from: u64) -> u64 {
        if self.early {
            now
        } else {
            now.max(polls_from)
        }
    }

    /// The pause from one look to the next (`u` uniform in [0, 1)).
    pub fn next_look_in(&self, u: f64) -> Duration {
        exponential(self.mean, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mean from a flag, a state file or a server can be anything: the pause never overflows
    /// and never passes ten years.
    #[test]
    fn a_huge_mean_gives_a_bounded_pause_not_a_panic() {
        for mean in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            MAX_SPAN * 2,
        ] {
            for u in [0.0, 0.5, 0.999_999] {
                assert!(exponential(mean, u) <= MAX_SPAN);
            }
        }
        assert_eq!(exponential(Duration::MAX, 0.999_999), MAX_SPAN);
    }

    #[test]
    fn exponential_pauses_have_the_mean_and_stay_bounded() {
        let mean = Duration::from_secs(30);
        let n = 100_000;
        let total: f64 = (0..n)
            .map(|i| exponential(mean, (i as f64 + 0.5) / n as f64).as_secs_f64())
            .sum();
        let avg = total / n as f64;
        assert!((avg - 30.0).abs() < 0.3, "{avg}");
        assert_eq!(exponential(mean, 0.0), Duration::ZERO);
        assert_eq!(exponential(mean, 1.0), mean * 12);
        assert_eq!(exponential(mean, f64::NAN), Duration::ZERO);
        assert_eq!(exponential(mean, -3.0), Duration::ZERO);
        // Memoryless: the median is mean * ln 2, not half the mean.
        let median = exponential(mean, 0.5).as_secs_f64();
        assert!((median - 30.0 * 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn no_look_before_the_bucket_closes_unless_early() {
        let s = LookSchedule::default();
        assert_eq!(s.start(1000, 1600), 1600);
        // Closed already: from now.
        assert_eq!(s.start(2000, 1600), 2000);
        let early = LookSchedule { early: true, ..s };
        assert_eq!(early.start(1000, 1600), 1000);
        // The first look is a pause past the start, as every other (the client's loop).
        assert!(s.next_look_in(0.5) > Duration::ZERO);
    }
}
