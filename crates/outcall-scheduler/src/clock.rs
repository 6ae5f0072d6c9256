//! Wall-clock time that tests can pause.
//!
//! The scheduler measures intervals with `tokio::time::Instant` (so `tokio::time::pause()` and
//! `advance()` drive it in tests) and needs the wall clock for due times and calling windows.
//! [`Clock`] gives both from one source: the wall time at start plus the tokio time elapsed.

use jiff::Timestamp;
use tokio::time::Instant;

/// Wall-clock time derived from tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Timestamp,
    start: Instant,
}

impl Clock {
    /// Starts at the current wall time.
    pub fn system() -> Self {
        Clock {
            base: Timestamp::now(),
            start: Instant::now(),
        }
    }

    /// Starts at a given wall time (tests).
    pub fn starting_at(base: Timestamp) -> Self {
        Clock {
            base,
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let d = self.start.elapsed();
        self.base
            .checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::ZERO))
            .unwrap_or(self.base)
    }

    /// The tokio instant at which the wall clock reads `at` (now if `at` is past).
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let now = self.now();
        let ahead = at.duration_since(now);
        if ahead.is_negative() {
            return Instant::now();
        }
        Instant::now() + std::time::Duration::try_from(ahead).unwrap_or_default()
    }
}
