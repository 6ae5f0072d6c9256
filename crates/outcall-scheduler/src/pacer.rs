//! Pacing: a token bucket for calls per second and a counter for calls in progress.

use std::time::Duration;
use tokio::time::Instant;

/// Calls-per-second limit. The bucket holds at most `burst` tokens (1 by default, so calls are
/// spread evenly) and refills at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(1e-6),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Whether a token is available, without taking it.
    pub fn ready(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate.max(1e-6);
    }
}

/// Concurrency and rate limits of one campaign, trunk or the whole node.
#[derive(Debug, Clone)]
pub struct Pacer {
    pub max_concurrent: u32,
    pub active: u32,
    pub bucket: Option<TokenBucket>,
}

impl Pacer {
    pub fn new(max_concurrent: u32, cps: Option<f64>) -> Self {
        Pacer {
            max_concurrent,
            active: 0,
            bucket: cps.map(|r| TokenBucket::new(r, 1.0)),
        }
    }

    /// Whether a call may start now; `Err(Some(d))` means retry in `d`, `Err(None)` means wait
    /// for a call to end.
    pub fn check(&mut self, now: Instant) -> Result<(), Option<Duration>> {
        if self.active >= self.max_concurrent {
            return Err(None);
        }
        match &mut self.bucket {
            Some(b) => b.ready(now).map_err(Some),
            None => Ok(()),
        }
    }

    /// Records a started call (after `check` said yes).
    pub fn start(&mut self, now: Instant) {
        self.active += 1;
        if let Some(b) = &mut self.bucket {
            let _ = b.try_take(now);
        }
    }

    pub fn finish(&mut self) {
        self.active = self.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_spreads_calls_at_the_rate() {
        let mut b = TokenBucket::new(10.0, 1.0);
        let t0 = Instant::now();
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9);
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_limits_concurrency() {
        let mut p = Pacer::new(2, None);
        let now = Instant::now();
        p.start(now);
        p.start(now);
        assert_eq!(p.check(now), Err(None));
        p.finish();
        assert_eq!(p.check(now), Ok(()));
    }
}
