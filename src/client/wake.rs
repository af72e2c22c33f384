//! Waiting for a moment in a way that follows the wall clock and does not line up with other
//! waits.
//!
//! A moment on the wall clock (a bucket's close, a later delete) waited for as one monotonic
//! sleep computed at the start is as wrong as the clock was then: an agent started with its
//! clock a day behind waited a day after the clock was corrected, past the link's end. And every
//! sleep of a process that was stopped (Ctrl-Z, a frozen cgroup, a paused virtual machine) ends
//! at the same instant when it goes on: looks into several mailboxes and deletes of several
//! links in the same millisecond, which tie them together as one user's. Here a wall-clock
//! moment is waited for in steps that read the clock again, and a wake-up that comes late says
//! so, for the caller to act at a moment of its own.

use crate::clock::Clock;
use std::time::Duration;

/// The longest single sleep of [`until_wall`]: a wall clock corrected meanwhile is noticed
/// this soon.
pub const RECHECK: Duration = Duration::from_secs(5);

/// How late a wake-up may come before it counts as late: far more than a busy runtime delays
/// a timer, far less than a stopped process or a suspended machine.
pub const LATE: Duration = Duration::from_secs(5);

/// Sleep until `clock` shows wall time `t` (with its fraction of a second), reading the clock
/// again at least every [`RECHECK`], or until as much time has passed as the clock said was
/// left (a clock that stands still), whichever comes first. A clock set ahead meanwhile ends
/// the wait at once; one set back (corrected from ahead) makes it as much longer. Whether the
/// wake-up came late: more than [`LATE`] after either (the process was stopped, the machine
/// suspended, or the clock set ahead), so that every wait of this process due meanwhile noticed
/// it at once.
pub async fn until_wall(clock: &dyn Clock, t: Duration) -> bool {
    let span = crate::proto::schedule::MAX_SPAN;
    let mut seen = clock.now_precise();
    let mut deadline = tokio::time::Instant::now() + t.saturating_sub(seen).min(span);
    loop {
        let now = clock.now_precise();
        if now >= t {
            return now - t > LATE;
        }
        if now < seen {
            // Set back: the time left grew by the step (a wait ended by the time the wrong
            // clock said was left would come early by it: a look before the close).
            deadline = (deadline + (seen - now).min(span))
                .min(tokio::time::Instant::now() + (t - now).min(span));
        }
        seen = now;
        let mono = tokio::time::Instant::now();
        if mono >= deadline {
            return mono - deadline > LATE;
        }
        tokio::time::sleep((t - now).min(deadline - mono).min(RECHECK)).await;
    }
}

/// Sleep until the monotonic instant `t`. Whether the wake-up came more than [`LATE`] after it
/// (the process was stopped meanwhile).
pub async fn until_instant(t: tokio::time::Instant) -> bool {
    tokio::time::sleep_until(t).await;
    tokio::time::Instant::now().saturating_duration_since(t) > LATE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A wall-clock moment is reached when the clock is corrected, not a whole offset later;
    /// a moment the clock is already far past is late.
    #[tokio::test(start_paused = true)]
    async fn a_corrected_clock_is_followed_either_way() {
        let clock = ManualClock::new(1_000);
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(
                async move { until_wall(&clock, Duration::from_secs(1_000 + 86_400)).await },
            )
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished());
        let t = tokio::time::Instant::now();
        clock.jump(86_400);
        assert!(!waiting.await.unwrap(), "on time, within a recheck");
        assert!(t.elapsed() <= RECHECK);
        assert!(
            until_wall(&clock, Duration::from_secs(1_000)).await,
            "long past"
        );
        assert!(!until_wall(&clock, Duration::from_secs(1_000 + 86_400)).await);
        // A clock that stands still: the time it said was left.
        let t = tokio::time::Instant::now();
        assert!(!until_wall(&clock, Duration::from_secs(1_000 + 86_400 + 30)).await);
        assert_eq!(t.elapsed(), Duration::from_secs(30));
        // A clock set back 50 s after 10 s (corrected from ahead): 50 s longer, not ended by
        // the time the wrong clock said was left.
        let now = clock.now();
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(async move { until_wall(&clock, Duration::from_secs(now + 30)).await })
        };
        let t = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        clock.jump(-50);
        assert!(!waiting.await.unwrap());
        assert_eq!(t.elapsed(), Duration::from_secs(80));
    }
}
