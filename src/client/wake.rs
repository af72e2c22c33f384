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
use tokio::time::Instant;

/// The longest single sleep of [`until_wall`] and [`until_instant`]: a wall clock corrected
/// meanwhile is noticed this soon, and a stop of the process is noticed by every wait whose
/// moment it passed, however near the stop's end that moment was (see [`LATE`]).
pub const RECHECK: Duration = Duration::from_secs(1);

/// How late a wake-up may come before it counts as late: far more than a busy runtime delays
/// a timer (its heavy work, key derivation and stamps, runs off the runtime's threads), less
/// than a stopped process or a suspended machine that matters.
///
/// Lateness is judged by the step a wait was sleeping when it came, not only by its moment: a
/// step is at most [`RECHECK`] long, so every wait whose moment a stop passed was in a step that
/// began before the stop and ended within a second of its start, and wakes that step's
/// lateness late, the stop's length less at most a second. Judged by the moment alone, a wait
/// due in the last seconds of a stop came at the same instant as every other such wait
/// (a helper's attack, 2026-12-06: looks into two mailboxes at once after a `SIGCONT`).
/// So every stop longer than `LATE + RECHECK` (3 s) makes all waits it passed late; a shorter
/// one does not (a helper measured bursts of 2 to 8 mailboxes after stops of 2 to 10 s with a
/// margin of 5 s judged by the moment).
pub const LATE: Duration = Duration::from_secs(2);

/// Sleep until `clock` shows wall time `t` (with its fraction of a second), reading the clock
/// again at least every [`RECHECK`], or until as much time has passed as the clock said was
/// left (a clock that stands still), whichever comes first. A clock set ahead meanwhile ends
/// the wait at once; one set back (corrected from ahead) makes it as much longer. Whether the
/// wake-up came late: more than [`LATE`] after either, or in a step that ended more than
/// [`LATE`] late or in which the wall clock moved on more than `LATE` further than the
/// monotonic one (the process was stopped, the machine suspended, or the clock set ahead, a
/// clock corrected from behind among them), so that every wait of this process whose moment
/// that passed noticed it at once.
pub async fn until_wall(clock: &dyn Clock, t: Duration) -> bool {
    let span = crate::proto::schedule::MAX_SPAN;
    let mut seen = clock.now_precise();
    let mut deadline = Instant::now() + t.saturating_sub(seen).min(span);
    let mut step = None;
    loop {
        let now = clock.now_precise();
        let mono = Instant::now();
        let jolted = step.is_some_and(|s: Step| s.jolted(now, mono));
        if now >= t {
            return jolted || now - t > LATE;
        }
        if now < seen {
            // Set back: the time left grew by the step (a wait ended by the time the wrong
            // clock said was left would come early by it: a look before the close).
            deadline = (deadline + (seen - now).min(span)).min(mono + (t - now).min(span));
        }
        seen = now;
        if mono >= deadline {
            return jolted || mono - deadline > LATE;
        }
        let end = mono + (t - now).min(deadline - mono).min(RECHECK);
        step = Some(Step {
            wall: now,
            mono,
            end,
        });
        tokio::time::sleep_until(end).await;
    }
}

/// Sleep until the monotonic instant `t`, in steps of at most [`RECHECK`]. Whether the wake-up
/// came more than [`LATE`] after it, or in a step that ended more than `LATE` late (the process
/// was stopped meanwhile).
pub async fn until_instant(t: Instant) -> bool {
    let mut step = None;
    loop {
        let now = Instant::now();
        let jolted = step.is_some_and(|end: Instant| now.saturating_duration_since(end) > LATE);
        if now >= t {
            return jolted || now - t > LATE;
        }
        let end = t.min(now + RECHECK);
        step = Some(end);
        tokio::time::sleep_until(end).await;
    }
}

/// Sleep a random pause of mean `mean` (exponential, as [`crate::proto::schedule::exponential`]
/// draws it), drawn afresh from the moment the process goes on when it was stopped meanwhile:
/// every such pause a stop passed would otherwise end in the same instant.
pub async fn pause(mean: Duration) {
    loop {
        let d = crate::proto::schedule::exponential(mean, rand::random());
        if !until_instant(Instant::now() + d).await {
            return;
        }
    }
}

/// Sleep until `clock` shows wall time `t` ([`until_wall`]), then a random pause of mean `mean`
/// ([`pause`]): a moment past a bucket's close that tells nothing of when the wait began, nor
/// of the close itself.
pub async fn past(clock: &dyn Clock, t: Duration, mean: Duration) {
    until_wall(clock, t).await;
    pause(mean).await;
}

/// One sleep of [`until_wall`]: the clocks when it began, and when it was to end.
#[derive(Clone, Copy)]
struct Step {
    wall: Duration,
    mono: Instant,
    end: Instant,
}

impl Step {
    /// Whether the process was stopped or the wall clock jumped ahead during the step, by
    /// more than [`LATE`].
    fn jolted(self, wall: Duration, mono: Instant) -> bool {
        let slept = mono.saturating_duration_since(self.mono);
        mono.saturating_duration_since(self.end) > LATE
            || wall.saturating_sub(self.wall) > slept + LATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

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
        // Reached within a recheck, and late: every wait whose moment the correction passed
        // ends in this instant.
        assert!(waiting.await.unwrap(), "reached, late");
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

    /// A wall clock that follows the (paused) runtime's time, plus an offset.
    struct Follows {
        origin: Instant,
        offset: std::sync::atomic::AtomicU64,
    }

    impl Clock for Follows {
        fn now(&self) -> u64 {
            self.now_precise().as_secs()
        }
        fn now_precise(&self) -> Duration {
            let offset = self.offset.load(std::sync::atomic::Ordering::SeqCst);
            Duration::from_secs(1_000 + offset) + self.origin.elapsed()
        }
        fn elapsed(&self) -> Duration {
            self.origin.elapsed()
        }
    }

    /// A stop of the process (`SIGSTOP`, a frozen cgroup) makes every wait whose moment it
    /// passed late, also those due in its last seconds, which a lateness judged by the moment
    /// alone let come at the same instant when the process went on; a wait due after the stop
    /// is on time.
    #[tokio::test(start_paused = true)]
    async fn a_stop_makes_every_wait_it_passed_late() {
        let clock = Arc::new(Follows {
            origin: Instant::now(),
            offset: 0.into(),
        });
        let start = Instant::now();
        let wall = clock.now_precise();
        let ms = Duration::from_millis;
        let waits: Vec<_> = [ms(28_000), ms(29_500), ms(29_900), ms(40_000)]
            .into_iter()
            .map(|d| tokio::spawn(until_instant(start + d)))
            .collect();
        let on_wall: Vec<_> = [ms(29_000), ms(45_000)]
            .into_iter()
            .map(|d| {
                let clock = clock.clone();
                tokio::spawn(async move { until_wall(clock.as_ref(), wall + d).await })
            })
            .collect();
        tokio::time::sleep(ms(100)).await;
        // Stopped for 30 s: the runtime's time jumps, every timer due meanwhile fires at once.
        tokio::time::advance(Duration::from_secs(30)).await;
        let mut late = Vec::new();
        for w in waits.into_iter().chain(on_wall) {
            late.push(w.await.unwrap());
        }
        assert_eq!(late, [true, true, true, false, true, false]);
    }

    /// Pauses a stop passed are drawn afresh from the moment the process goes on: they do not
    /// all end in that instant (as plain sleeps would).
    #[tokio::test(start_paused = true)]
    async fn pauses_a_stop_passed_are_drawn_afresh() {
        let ends: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn(async {
                    pause(Duration::from_secs(100)).await;
                    Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(10_000)).await;
        let went_on = start + Duration::from_secs(10_000);
        let mut at = Vec::new();
        for e in ends {
            at.push(e.await.unwrap());
        }
        // Each ended a fresh pause after going on (all within a second of it: one run in a
        // million), none before.
        assert!(at.iter().all(|t| *t >= went_on), "{at:?}");
        assert!(
            at.iter().any(|t| *t > went_on + Duration::from_secs(1)),
            "{at:?}"
        );
        at.sort();
        at.dedup();
        assert_eq!(at.len(), 3, "ended together");
    }

    /// A machine suspended (the monotonic clock stands, the wall clock goes on): every
    /// wall-clock wait whose moment the suspend passed is late, also one due a second before
    /// it ended.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_makes_every_wall_wait_it_passed_late() {
        let clock = Arc::new(Follows {
            origin: Instant::now(),
            offset: 0.into(),
        });
        let wall = clock.now_precise();
        let waits: Vec<_> = [29, 60]
            .into_iter()
            .map(|d| {
                let clock = clock.clone();
                tokio::spawn(async move {
                    until_wall(clock.as_ref(), wall + Duration::from_secs(d)).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        clock.offset.store(30, std::sync::atomic::Ordering::SeqCst);
        let mut late = Vec::new();
        for w in waits {
            late.push(w.await.unwrap());
        }
        assert_eq!(late, [true, false]);
    }
}
