//! Answer-seizure ratio (ASR) and average call duration (ACD) per trunk over the last five
//! minutes, published as the gauges `outcall_asr_ratio` and `outcall_acd_seconds`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The window ASR and ACD are computed over.
pub const WINDOW_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Default)]
struct Window {
    /// (end time ms, answered, talk ms)
    calls: VecDeque<(u64, bool, u64)>,
    answered: u64,
    talk_ms: u64,
}

impl Window {
    fn trim(&mut self, now_ms: u64) {
        while let Some(&(at, answered, talk)) = self.calls.front() {
            if now_ms.saturating_sub(at) <= WINDOW_MS {
                break;
            }
            self.calls.pop_front();
            if answered {
                self.answered -= 1;
                self.talk_ms -= talk;
            }
        }
    }

    fn figures(&self) -> (f64, f64) {
        let asr = if self.calls.is_empty() {
            0.0
        } else {
            self.answered as f64 / self.calls.len() as f64
        };
        let acd = if self.answered == 0 {
            0.0
        } else {
            self.talk_ms as f64 / self.answered as f64 / 1e3
        };
        (asr, acd)
    }
}

/// Per-trunk windows of finished calls (seizures).
#[derive(Debug, Default)]
pub struct Quality {
    trunks: Mutex<HashMap<String, Window>>,
}

impl Quality {
    /// Records a call that reached the trunk and returns the trunk's (ASR, ACD seconds).
    pub fn record(&self, trunk: &str, now_ms: u64, answered: bool, talk_ms: u64) -> (f64, f64) {
        let mut map = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.entry(trunk.to_string()).or_default();
        w.trim(now_ms);
        w.calls.push_back((now_ms, answered, talk_ms));
        if answered {
            w.answered += 1;
            w.talk_ms += talk_ms;
        }
        let f = w.figures();
        publish(trunk, f);
        f
    }

    /// Ages every trunk's window to `now_ms` and republishes its figures (so a trunk that
    /// stopped calling decays to 0 instead of showing its last value forever).
    pub fn refresh(&self, now_ms: u64) {
        let mut map = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        for (trunk, w) in map.iter_mut() {
            w.trim(now_ms);
            publish(trunk, w.figures());
        }
    }
}

fn publish(trunk: &str, (asr, acd): (f64, f64)) {
    use outcall_domain::metrics as m;
    metrics::gauge!(m::ASR_RATIO, "trunk" => trunk.to_string()).set(asr);
    metrics::gauge!(m::ACD_SECONDS, "trunk" => trunk.to_string()).set(acd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asr_and_acd_cover_the_last_five_minutes() {
        let q = Quality::default();
        q.record("t", 1_000, true, 30_000);
        q.record("t", 2_000, false, 0);
        q.record("t", 3_000, false, 0);
        let (asr, acd) = q.record("t", 4_000, true, 10_000);
        assert!((asr - 0.5).abs() < 1e-9);
        assert!((acd - 20.0).abs() < 1e-9);
        // Five minutes later the first two calls have left the window.
        let (asr, acd) = q.record("t", 2_000 + WINDOW_MS + 1, false, 0);
        assert!((asr - 1.0 / 3.0).abs() < 1e-9, "{asr}");
        assert!((acd - 10.0).abs() < 1e-9);
        let (asr, _) = q.record("other", 10, true, 1);
        assert!((asr - 1.0).abs() < 1e-9);
    }
}
