//! Pacing: a token bucket for calls per second and a counter for calls in progress.

use std::time::Duration;
use tokio::time::Instant;

/// Calls-per-second limit: a token bucket that refills at `rate` per second and holds at most
/// 20 ms worth of tokens (at least one), so calls are spread evenly yet a timer that wakes a
/// millisecond late does not lose capacity; plus a sliding one-second window, so no second
/// ever holds more than `rate` calls.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    window: std::collections::VecDeque<Instant>,
    window_cap: usize,
}

impl TokenBucket {
    /// A bucket for `rate` calls per second; `burst` is a minimum bucket size.
    pub fn new(rate: f64, burst: f64) -> Self {
        let rate = rate.max(1e-6);
        let burst = burst.max(rate / 50.0).max(1.0);
        let window_cap = (rate.floor() as usize).clamp(1, 1_000_000);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            window: std::collections::VecDeque::with_capacity(window_cap.min(4096)),
            window_cap,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    fn window_wait(&mut self, now: Instant) -> Option<Duration> {
        let second = Duration::from_secs(1);
        while self
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= second)
        {
            self.window.pop_front();
        }
        if self.window.len() < self.window_cap {
            return None;
        }
        self.window
            .front()
            .map(|t| (*t + second).saturating_duration_since(now))
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.ready(now)?;
        self.tokens -= 1.0;
        self.window.push_back(now);
        Ok(())
    }

    /// Whether a token is available, without taking it.
    pub fn ready(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if let Some(w) = self.window_wait(now) {
            return Err(w.max(Duration::from_micros(100)));
        }
        // A token short by a rounding error is a token: waiting for the last nanosecond of it
        // would wake a timer that cannot wait that little, again and again.
        if self.tokens >= 1.0 - 1e-9 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
                .max(Duration::from_micros(100)))
        }
    }

    pub fn set_rate(&mut self, rate: f64) {
        *self = TokenBucket::new(rate, 1.0);
    }

    /// Calls per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate without forgetting what was taken: the tokens left (up to the new
    /// bucket size) and the calls of the last second stay.
    pub fn retune(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(1e-6);
        self.burst = (self.rate / 50.0).max(1.0);
        self.tokens = self.tokens.min(self.burst);
        self.window_cap = (self.rate.floor() as usize).clamp(1, 1_000_000);
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

    /// New limits (`cps` `None`: no rate limit). An unchanged rate keeps its bucket as it is.
    pub fn set_limits(&mut self, max_concurrent: u32, cps: Option<f64>, now: Instant) {
        self.max_concurrent = max_concurrent;
        match (cps, &mut self.bucket) {
            (None, b) => *b = None,
            (Some(r), Some(b)) if b.rate() == r.max(1e-6) => {}
            (Some(r), Some(b)) => b.retune(r, now),
            (Some(r), b) => *b = Some(TokenBucket::new(r, 1.0)),
        }
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
    async fn high_rates_burst_20_ms_but_never_exceed_the_rate_in_any_second() {
        let mut b = TokenBucket::new(1000.0, 1.0);
        let t0 = Instant::now();
        let mut times = Vec::new();
        // Poll every 3 ms (a coarse timer) for 3 seconds, taking all that is allowed.
        for step in 0..1000u64 {
            let now = t0 + Duration::from_millis(step * 3);
            while b.try_take(now).is_ok() {
                times.push(now);
            }
        }
        assert!(
            times.len() >= 2900,
            "capacity kept despite the coarse timer: {}",
            times.len()
        );
        for (i, a) in times.iter().enumerate() {
            let within = times[i..]
                .iter()
                .take_while(|t| **t - *a < Duration::from_secs(1))
                .count();
            assert!(within <= 1000, "{within} calls in one second");
        }
        let first_ms = times.iter().take_while(|t| **t == t0).count();
        assert!(first_ms <= 20, "a burst is at most 20 ms worth: {first_ms}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_as_told_keeps_the_rate_at_fractional_rates() {
        for rate in [0.1, 0.3, 0.4, 0.7, 1.3, 2.5, 3.3] {
            let mut b = TokenBucket::new(rate, 1.0);
            let t0 = Instant::now();
            let mut now = t0;
            let mut taken = 0u32;
            while taken < 100 {
                match b.try_take(now) {
                    Ok(()) => taken += 1,
                    Err(wait) => {
                        // Never "wait 0": a timer cannot, and the caller would spin.
                        assert!(wait >= Duration::from_micros(100), "{rate}/s: {wait:?}");
                        now += wait;
                    }
                }
            }
            // No second holds more than `rate` calls: 1.3/s is one call a second.
            let effective = if rate < 1.0 { rate } else { rate.floor() };
            let expected = 99.0 / effective;
            let took = (now - t0).as_secs_f64();
            assert!(
                took <= expected * 1.01 + 0.01,
                "{rate}/s: 100 calls took {took} s, expected {expected} s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn new_limits_keep_what_was_taken() {
        let mut p = Pacer::new(10, Some(10.0));
        let t0 = Instant::now();
        p.start(t0);
        // Slower: the token just taken is not given back.
        p.set_limits(2, Some(1.0), t0);
        assert_eq!(p.max_concurrent, 2);
        let wait = p.check(t0).unwrap_err().unwrap();
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        assert_eq!(p.check(t0 + Duration::from_secs(1)), Ok(()));
        // The same rate again changes nothing; no rate lifts the limit.
        p.start(t0 + Duration::from_secs(1));
        p.set_limits(2, Some(1.0), t0 + Duration::from_secs(1));
        assert!(p.check(t0 + Duration::from_secs(1)).is_err());
        p.set_limits(u32::MAX, None, t0 + Duration::from_secs(1));
        assert_eq!(p.check(t0 + Duration::from_secs(1)), Ok(()));
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
