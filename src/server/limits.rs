//! Per-connection and server-wide limits, as pure state: the caller passes the time.

use tokio::time::Instant;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
