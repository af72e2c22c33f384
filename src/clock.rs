//! The one place that reads the system clock. Everything else gets time passed in.
//!
//! A [`Clock`] gives two readings: wall time (unix seconds, which bucket IDs carry and clients
//! compare with their own clocks) and elapsed time (monotonic, which cannot jump). Wall time is
//! input, not truth: [`TimeGuard`] bounds every expiry decision by the elapsed time, and at a
//! start by the last expiry time the store used, so a wall clock that jumps ahead, or is ahead
//! when the server starts, never makes the server collect a link early.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// Wall time, unix seconds.
    fn now(&self) -> u64;
    /// Wall time with its fraction of a second. A moment set in whole seconds from
    /// [`Clock::now`] and waited for on a monotonic timer comes at that whole second *plus the
    /// fraction of a second at which it was set*, which tells whatever sees it when it was set:
    /// such moments count from here. Default: [`Clock::now`], a whole second.
    fn now_precise(&self) -> Duration {
        Duration::from_secs(self.now())
    }
    /// Monotonic time since an arbitrary fixed origin; never goes back, never jumps.
    fn elapsed(&self) -> Duration;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        self.now_precise().as_secs()
    }

    fn now_precise(&self) -> Duration {
        #[allow(clippy::disallowed_methods)]
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }

    fn elapsed(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that only moves when told to (tests). [`ManualClock::advance`] moves wall and elapsed
/// time together, as time passing does; [`ManualClock::jump`] moves only the wall clock, as a
/// misconfigured or corrected system clock does.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<ManualState>);

#[derive(Debug, Default)]
struct ManualState {
    wall: AtomicU64,
    elapsed_secs: AtomicU64,
    /// Set jumps that have not been undone, for [`ManualClock::jumped`].
    offset: AtomicI64,
}

impl ManualClock {
    /// A clock showing wall time `t`.
    pub fn new(t: u64) -> Self {
        let c = ManualClock::default();
        c.0.wall.store(t, Ordering::SeqCst);
        c
    }

    /// Time passes: wall and elapsed time move forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.wall.fetch_add(secs, Ordering::SeqCst);
        self.0.elapsed_secs.fetch_add(secs, Ordering::SeqCst);
    }

    /// The wall clock is set `secs` ahead (or back, if negative); elapsed time does not move.
    pub fn jump(&self, secs: i64) {
        let wall = self.0.wall.load(Ordering::SeqCst);
        self.0
            .wall
            .store(wall.saturating_add_signed(secs), Ordering::SeqCst);
        self.0.offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// How far the wall clock has been jumped in total.
    pub fn jumped(&self) -> i64 {
        self.0.offset.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.wall.load(Ordering::SeqCst)
    }

    fn elapsed(&self) -> Duration {
        Duration::from_secs(self.0.elapsed_secs.load(Ordering::SeqCst))
    }
}

/// The last second RFC 3339 can write, 9999-12-31T23:59:59Z, in unix seconds. A time past it
/// comes only from a corrupt file or a clock far off; files that carry times refuse it.
pub const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Unix time `secs` as RFC 3339 text (UTC, whole seconds), for people to read; a time past
/// [`LAST_RFC3339_SECOND`], which RFC 3339 cannot write, as its unix seconds. Never panics.
pub fn rfc3339(secs: u64) -> String {
    if secs > LAST_RFC3339_SECOND {
        return format!("unix time {secs} (past the year 9999)");
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// How far the wall clock may run ahead of elapsed time before expiry stops following it.
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(60);

/// The time expiry decisions use: the wall clock, but never ahead of what elapsed time allows.
///
/// Anchored at one reading of both clocks (the server's start), it answers `min(wall, anchor +
/// elapsed + tolerance)`: a wall clock that jumps ahead is ignored for expiry, one that goes back
/// is followed (links then live longer, never shorter). With the store's *mark* (the latest
/// expiry time it used, [`TimeGuard::resume`]) the anchor is also kept within
/// [`RESTART_CREDIT`] of the mark: a clock that is ahead when the server starts counts as a
/// jump, not as the time, and one that is behind resumes from the mark once corrected. Pure: the
/// readings are arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeGuard {
    anchor_wall: u64,
    anchor_elapsed: Duration,
}

/// What [`TimeGuard::expiry_now`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryTime {
    /// The time to use for expiry, unix seconds.
    pub now: u64,
    /// Seconds the wall clock is ahead of what elapsed time allows (0 when it is not).
    pub wall_ahead: u64,
}

/// How much of the time between the store's last expiry time and a start is taken to have
/// passed, at most: a restart's seconds, not a clock that booted a day ahead. Time the server was
/// down beyond it does not count toward the TTL (links then live that much longer, never
/// shorter), unless the operator says the clock is right (`rdv serve --trust-clock`).
pub const RESTART_CREDIT: Duration = Duration::from_secs(600);

impl TimeGuard {
    /// Anchor at one reading of both clocks, resuming from the store's `mark` (the latest expiry
    /// time it used, if it records one): the anchor is the wall clock, but at least the mark and
    /// at most [`RESTART_CREDIT`] past it.
    pub fn resume(wall: u64, elapsed: Duration, mark: Option<u64>) -> Self {
        let anchor_wall = match mark {
            Some(m) => wall.clamp(m, m.saturating_add(RESTART_CREDIT.as_secs())),
            None => wall,
        };
        TimeGuard {
            anchor_wall,
            anchor_elapsed: elapsed,
        }
    }

    /// The expiry time at the anchor (unix seconds).
    pub fn anchor(&self) -> u64 {
        self.anchor_wall
    }

    /// Anchor at one reading of both clocks.
    pub fn new(wall: u64, elapsed: Duration) -> Self {
        TimeGuard {
            anchor_wall: wall,
            anchor_elapsed: elapsed,
        }
    }

    /// Anchor at `clock`'s current readings.
    pub fn start(clock: &dyn Clock) -> Self {
        TimeGuard::new(clock.now(), clock.elapsed())
    }

    /// The expiry time for the readings `wall` and `elapsed`.
    pub fn expiry_now(&self, wall: u64, elapsed: Duration) -> ExpiryTime {
        let since = elapsed.saturating_sub(self.anchor_elapsed);
        let bound = self
            .anchor_wall
            .saturating_add(since.as_secs())
            .saturating_add(JUMP_TOLERANCE.as_secs());
        ExpiryTime {
            now: wall.min(bound),
            wall_ahead: wall.saturating_sub(bound),
        }
    }

    /// Seconds the wall clock `wall` is behind the elapsed-time line (the anchor plus the
    /// elapsed time since), 0 when it is not. What is created while it is behind is dated that
    /// much early ([`crate::store::hold`]).
    pub fn behind(&self, wall: u64, elapsed: Duration) -> u64 {
        let since = elapsed.saturating_sub(self.anchor_elapsed);
        self.anchor_wall
            .saturating_add(since.as_secs())
            .saturating_sub(wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unix time has a text, those RFC 3339 cannot write too (a corrupt state file's).
    #[test]
    fn every_time_has_a_text() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(LAST_RFC3339_SECOND + 1),
            "unix time 253402300800 (past the year 9999)"
        );
        assert!(rfc3339(u64::MAX).contains("18446744073709551615"));
    }

    #[test]
    fn expiry_follows_the_wall_clock_back_but_not_ahead() {
        let c = ManualClock::new(1_000_000);
        let g = TimeGuard::start(&c);
        let expiry = |c: &ManualClock| g.expiry_now(c.now(), c.elapsed());
        c.advance(100);
        assert_eq!(expiry(&c).now, 1_000_100);
        c.jump(30 * 86_400);
        let e = expiry(&c);
        assert_eq!(e.now, 1_000_100 + JUMP_TOLERANCE.as_secs());
        assert_eq!(e.wall_ahead, 30 * 86_400 - JUMP_TOLERANCE.as_secs());
        c.jump(-60 * 86_400);
        assert_eq!(
            expiry(&c).now,
            c.now(),
            "a clock that went back is followed"
        );
        assert_eq!(c.jumped(), -30 * 86_400);
        // (The wall clock stopped at 0: 30 days before 1 000 100 s.)
        assert_eq!(g.behind(c.now(), c.elapsed()), 1_000_100 - c.now());
        assert_eq!(g.behind(1_000_100 - 7200, c.elapsed()), 7200);
        c.jump(30 * 86_400);
        assert_eq!(g.behind(c.now(), c.elapsed()), 0);
    }

    #[test]
    fn a_start_resumes_from_the_store_s_mark_whichever_way_the_clock_is_off() {
        let credit = RESTART_CREDIT.as_secs();
        let tol = JUMP_TOLERANCE.as_secs();
        let mark = 1_000_000;
        // A restart of a minute: the wall clock is taken as it is.
        let g = TimeGuard::resume(mark + 60, Duration::ZERO, Some(mark));
        assert_eq!(g.expiry_now(mark + 60, Duration::ZERO).now, mark + 60);
        // Booted a day ahead: expiry goes on from the mark (plus the credit), at the pace of
        // elapsed time, and says how far ahead the wall clock is.
        let g = TimeGuard::resume(mark + 86_400, Duration::ZERO, Some(mark));
        assert_eq!(g.anchor(), mark + credit);
        let e = g.expiry_now(mark + 86_400 + 3600, Duration::from_secs(3600));
        assert_eq!(e.now, mark + credit + 3600 + tol);
        assert_eq!(e.wall_ahead, 86_400 - credit - tol);
        // Booted a day behind: expiry follows the (behind) wall clock, and once the clock is
        // corrected it is back at the mark plus elapsed time, not stuck a day behind.
        let g = TimeGuard::resume(mark - 86_400, Duration::ZERO, Some(mark));
        assert_eq!(
            g.expiry_now(mark - 86_400 + 60, Duration::from_secs(60))
                .now,
            mark - 86_400 + 60
        );
        let e = g.expiry_now(mark + 3600, Duration::from_secs(3600));
        assert_eq!(e.now, mark + 3600);
        assert_eq!(e.wall_ahead, 0);
        // No mark (a new store): the wall clock.
        assert_eq!(TimeGuard::resume(5, Duration::ZERO, None).anchor(), 5);
    }
}
