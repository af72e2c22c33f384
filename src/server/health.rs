//! Whether the server can be reached the way clients reach it: the decisions of the health probe,
//! as pure state. The caller probes (for the onion service: `Info` through Tor on a fresh
//! isolated circuit) and passes each result with the time; [`Health`] says what to report and
//! when to probe next.

use std::time::Duration;

/// When to probe and when to complain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Pause between probes while the server is reachable. Default: 5 min.
    pub probe_interval: Duration,
    /// Pause between probes while it is not (yet). Default: 10 s.
    pub retry_interval: Duration,
    /// Unreachable for this long is a warning, repeated every such period. Default: 5 min.
    pub warn_after: Duration,
    /// Unreachable for this long (from the start, or since the last success): give up, so that a
    /// supervisor restarts the server. Default: never.
    pub exit_after: Option<Duration>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            probe_interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(10),
            warn_after: Duration::from_secs(300),
            exit_after: None,
        }
    }
}

impl HealthPolicy {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.probe_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("probe_interval", "must be at least 1 s"));
        }
        if self.retry_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("probe_retry", "must be at least 1 s"));
        }
        if self.warn_after < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "warn_unreachable_after",
                "must be at least 1 s",
            ));
        }
        if self.exit_after.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(ConfigError::new(
                "exit_when_unreachable",
                "must be at least 1 s",
            ));
        }
        Ok(())
    }
}

/// The longest one probe may try (a connection over Tor, with retries).
pub const PROBE_BUDGET: Duration = Duration::from_secs(60);
/// The shortest budget a probe is given, however soon a warning is due.
pub const MIN_PROBE_BUDGET: Duration = Duration::from_secs(10);

impl HealthPolicy {
    /// How long one probe may try: [`PROBE_BUDGET`], but no longer than the time to a warning
    /// or an exit (and at least [`MIN_PROBE_BUDGET`]), so that a probe that hangs in an outage
    /// does not delay the report of it.
    pub fn probe_budget(&self) -> Duration {
        let mut b = PROBE_BUDGET.min(self.warn_after);
        if let Some(e) = self.exit_after {
            b = b.min(e);
        }
        b.max(MIN_PROBE_BUDGET)
    }
}

/// What a probe result means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// Reachable for the first time, this long after the start.
    FirstReachable(Duration),
    /// Was reachable, the probe failed.
    Lost,
    /// Reachable again after being unreachable this long.
    Recovered(Duration),
    /// Unreachable for this long (a warning).
    StillUnreachable(Duration),
    /// Unreachable for longer than the policy allows: stop.
    GiveUp(Duration),
}

/// The probe's memory. Times are the caller's monotonic clock (any fixed origin).
#[derive(Clone, Debug)]
pub struct Health {
    policy: HealthPolicy,
    start: Duration,
    ever_up: bool,
    down_since: Option<Duration>,
    warned_at: Option<Duration>,
}

impl Health {
    /// A server that has just started at `now`: not reachable yet.
    pub fn new(policy: HealthPolicy, now: Duration) -> Self {
        Health {
            policy,
            start: now,
            ever_up: false,
            down_since: Some(now),
            warned_at: None,
        }
    }

    /// Whether the last probe succeeded.
    pub fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// How long to wait before the next probe.
    pub fn next_probe_in(&self) -> Duration {
        if self.is_up() {
            self.policy.probe_interval
        } else {
            self.policy.retry_interval
        }
    }

    /// A probe that started at `started` ended at `now`: it succeeded (`ok`) or failed. An
    /// outage counts from the start of the first probe that failed (it may have begun earlier,
    /// between two probes, but not later).
    pub fn observe(&mut self, ok: bool, started: Duration, now: Duration) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        if ok {
            match self.down_since.take() {
                Some(_) if !self.ever_up => {
                    events.push(HealthEvent::FirstReachable(now.saturating_sub(self.start)))
                }
                Some(since) => events.push(HealthEvent::Recovered(now.saturating_sub(since))),
                None => {}
            }
            self.ever_up = true;
            self.warned_at = None;
            return events;
        }
        if self.down_since.is_none() {
            self.down_since = Some(started.min(now));
            events.push(HealthEvent::Lost);
        }
        events.extend(self.tick(now));
        events
    }

    /// While unreachable: how long from `now` until a warning or the exit is due (zero when it
    /// is due already), so that it comes on time even while a probe hangs. `None` while up.
    pub fn due_in(&self, now: Duration) -> Option<Duration> {
        let since = self.down_since?;
        let warn = match self.warned_at {
            None => since + self.policy.warn_after,
            Some(w) => w + self.policy.warn_after,
        };
        let due = match self.policy.exit_after {
            Some(e) => warn.min(since + e),
            None => warn,
        };
        Some(due.saturating_sub(now))
    }

    /// The warning or exit due at `now`, if still unreachable (no probe result needed).
    pub fn tick(&mut self, now: Duration) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        let Some(since) = self.down_since else {
            return events;
        };
        let down = now.saturating_sub(since);
        let warn_due = match self.warned_at {
            None => down >= self.policy.warn_after,
            Some(w) => now.saturating_sub(w) >= self.policy.warn_after,
        };
        if warn_due {
            self.warned_at = Some(now);
            events.push(HealthEvent::StillUnreachable(down));
        }
        if self.policy.exit_after.is_some_and(|limit| down >= limit) {
            events.push(HealthEvent::GiveUp(down));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_success_then_loss_warning_recovery_and_giving_up() {
        let policy = HealthPolicy {
            probe_interval: s(300),
            retry_interval: s(10),
            warn_after: s(60),
            exit_after: Some(s(180)),
        };
        let mut h = Health::new(policy, s(0));
        assert_eq!(h.next_probe_in(), s(10));
        assert_eq!(h.observe(false, s(10), s(10)), vec![]);
        assert_eq!(
            h.observe(true, s(20), s(20)),
            vec![HealthEvent::FirstReachable(s(20))]
        );
        assert_eq!(h.next_probe_in(), s(300));
        assert_eq!(h.observe(true, s(320), s(320)), vec![]);
        assert_eq!(h.observe(false, s(620), s(620)), vec![HealthEvent::Lost]);
        assert_eq!(h.observe(false, s(660), s(660)), vec![]);
        assert_eq!(
            h.observe(false, s(680), s(680)),
            vec![HealthEvent::StillUnreachable(s(60))]
        );
        assert_eq!(
            h.observe(false, s(700), s(700)),
            vec![],
            "warned once per warn_after"
        );
        assert_eq!(
            h.observe(true, s(710), s(710)),
            vec![HealthEvent::Recovered(s(90))]
        );
        assert_eq!(h.observe(false, s(1000), s(1000)), vec![HealthEvent::Lost]);
        let last = h.observe(false, s(1180), s(1180));
        assert!(last.contains(&HealthEvent::GiveUp(s(180))), "{last:?}");
    }

    /// A probe that hangs for its whole budget in an outage used to put the exit 125 s after
    /// the outage began with --exit-when-unreachable 60s, and a 20 s warning after 127 s.
    #[test]
    fn an_outage_is_reported_on_time_while_probes_hang() {
        let policy = HealthPolicy {
            probe_interval: s(300),
            retry_interval: s(10),
            warn_after: s(20),
            exit_after: Some(s(60)),
        };
        assert_eq!(policy.probe_budget(), s(20));
        let mut h = Health::new(policy, s(0));
        assert_eq!(
            h.observe(true, s(0), s(2)),
            vec![HealthEvent::FirstReachable(s(2))]
        );
        assert_eq!(h.due_in(s(2)), None, "nothing is due while up");
        // The outage begins at 300, as the next probe starts; it gives up after its budget.
        assert_eq!(
            h.observe(false, s(300), s(320)),
            vec![HealthEvent::Lost, HealthEvent::StillUnreachable(s(20))],
            "counted from the probe's start: the warning is due at once"
        );
        // The next probe starts at 330 and hangs: the exit is due at 360, whatever it does.
        assert_eq!(h.due_in(s(330)), Some(s(10)));
        assert_eq!(h.tick(s(340)), vec![HealthEvent::StillUnreachable(s(40))]);
        assert_eq!(h.due_in(s(340)), Some(s(20)));
        assert_eq!(
            h.tick(s(360)),
            vec![
                HealthEvent::StillUnreachable(s(60)),
                HealthEvent::GiveUp(s(60))
            ]
        );
    }

    #[test]
    fn a_probe_budget_never_hides_a_warning_and_is_never_absurdly_short() {
        assert_eq!(HealthPolicy::default().probe_budget(), PROBE_BUDGET);
        let quick = HealthPolicy {
            warn_after: s(300),
            exit_after: Some(s(2)),
            ..Default::default()
        };
        assert_eq!(quick.probe_budget(), MIN_PROBE_BUDGET);
    }

    #[test]
    fn a_server_never_reachable_warns_and_gives_up_too() {
        let policy = HealthPolicy {
            warn_after: s(30),
            exit_after: Some(s(100)),
            ..Default::default()
        };
        let mut h = Health::new(policy, s(5));
        assert_eq!(
            h.observe(false, s(35), s(35)),
            vec![HealthEvent::StillUnreachable(s(30))]
        );
        assert_eq!(
            h.observe(false, s(105), s(105)),
            vec![
                HealthEvent::StillUnreachable(s(100)),
                HealthEvent::GiveUp(s(100))
            ]
        );
    }
}
