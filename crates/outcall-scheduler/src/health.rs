//! Trunk health: automatic degradation of a trunk's rate and a circuit breaker.
//!
//! Every finished attempt that reached a trunk is a sample: a *failure* when its outcome is a
//! network fault (congestion, trunk error, failed) or the carrier answered 5xx, a *success*
//! otherwise (busy, no answer, rejected: the trunk did its job). Attempts that never reached
//! the trunk (blocked, unreadable number) and calls we canceled are not samples.
//!
//! * **Rate (AIMD).** Over a sliding window, once `min_calls` samples are in and the failure
//!   ratio reaches `failure_threshold`, the trunk's rate factor is multiplied by `decrease`
//!   (not below `min_factor`, at most once per `window_secs / 4`). While the ratio stays below
//!   half the threshold the factor grows by `recover_step` every `recover_interval_secs` until
//!   it is 1 again. The trunk's pacer allows `factor × base` calls per second and
//!   `factor × base` calls in progress (at least 1), the bases being the trunk's configured
//!   limits or, where it has none, what it carried when it was first cut (its dispatches per
//!   second over the last 10 s, at least 1; its calls in progress, at least 1). Back at 1 the
//!   configured limits apply again exactly.
//! * **Circuit breaker.** `breaker_failures` failures in a row open the circuit: nothing is
//!   dispatched to the trunk for `open_secs` (doubled on each re-open, up to `max_open_secs`).
//!   Then it is half-open: one probe attempt goes through. A success closes it, a failure
//!   opens it again. Opening also cuts the rate factor to `min_factor`, so a trunk that comes
//!   back takes traffic gradually (the factor only recovers while the circuit is closed).
//!
//! [`TrunkHealth`] is pure: time comes in as arguments, changes go out as [`Transition`]s that
//! the scheduler records (system events, metrics, logs).

use outcall_domain::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Settings of automatic degradation and the circuit breaker (`[degradation]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DegradationConfig {
    /// Off: trunks always get their configured limits and no circuit ever opens.
    pub enabled: bool,
    /// The sliding window over which the failure ratio is measured.
    pub window_secs: u64,
    /// Samples needed in the window before the rate is cut.
    pub min_calls: u32,
    /// Failure ratio (0..1] at which the rate is cut; below half of it the rate recovers.
    pub failure_threshold: f64,
    /// Multiplier of the rate factor on each cut (0..1).
    pub decrease: f64,
    /// Lowest rate factor (0..1].
    pub min_factor: f64,
    /// What the rate factor grows by on each recovery step.
    pub recover_step: f64,
    /// Time between recovery steps.
    pub recover_interval_secs: u64,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long the circuit first stays open.
    pub open_secs: u64,
    /// Longest open period (each re-open doubles the last one).
    pub max_open_secs: u64,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            enabled: true,
            window_secs: 60,
            min_calls: 10,
            failure_threshold: 0.5,
            decrease: 0.5,
            min_factor: 0.1,
            recover_step: 0.1,
            recover_interval_secs: 10,
            breaker_failures: 5,
            open_secs: 30,
            max_open_secs: 300,
        }
    }
}

impl DegradationConfig {
    /// Checks the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, v: f64, max_inclusive: bool| {
            let ok = v > 0.0 && (v < 1.0 || (max_inclusive && v <= 1.0));
            if ok {
                Ok(())
            } else if max_inclusive {
                Err(format!("degradation.{name} must be in (0, 1], not {v}"))
            } else {
                Err(format!("degradation.{name} must be in (0, 1), not {v}"))
            }
        };
        unit("failure_threshold", self.failure_threshold, true)?;
        unit("decrease", self.decrease, false)?;
        unit("min_factor", self.min_factor, true)?;
        unit("recover_step", self.recover_step, true)?;
        for (name, v) in [
            ("window_secs", self.window_secs),
            ("min_calls", u64::from(self.min_calls)),
            ("recover_interval_secs", self.recover_interval_secs),
            ("breaker_failures", u64::from(self.breaker_failures)),
            ("open_secs", self.open_secs),
        ] {
            if v == 0 {
                return Err(format!("degradation.{name} must be at least 1"));
            }
        }
        if self.max_open_secs < self.open_secs {
            return Err(format!(
                "degradation.max_open_secs ({}) is below open_secs ({})",
                self.max_open_secs, self.open_secs
            ));
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

/// Whether a finished attempt that placed a call counts against its trunk: `Some(true)` a
/// failure (network fault or SIP 5xx), `Some(false)` a success, `None` not a sample (a call we
/// canceled says nothing about the trunk). Attempts that placed no call are not samples
/// either; the caller does not ask.
pub fn trunk_fault(outcome: Outcome, sip_status: Option<u16>) -> Option<bool> {
    if outcome == Outcome::Canceled {
        return None;
    }
    Some(outcome.is_network_fault() || sip_status.is_some_and(|s| (500..600).contains(&s)))
}

/// A trunk's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Calls go through.
    Closed,
    /// One probe call may go through.
    HalfOpen,
    /// No calls until it half-opens.
    Open,
}

impl Circuit {
    /// The value of the `outcall_trunk_circuit_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Circuit::Closed => 0.0,
            Circuit::HalfOpen => 1.0,
            Circuit::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::HalfOpen => "half_open",
            Circuit::Open => "open",
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The rate factor went down.
    Degraded,
    /// The rate factor is back at 1.
    Recovered,
    /// The circuit opened: after `breaker_failures` failures in a row, or (`reopened`) because
    /// the half-open probe failed.
    CircuitOpen { reopened: bool },
    /// The circuit lets one probe through.
    CircuitHalfOpen,
    /// The probe worked.
    CircuitClosed,
}

/// A change with the figures at that moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub change: Change,
    /// The rate factor after the change.
    pub factor: f64,
    /// Failures over samples in the window (0 when there are none).
    pub failure_ratio: f64,
    /// Samples in the window.
    pub samples: u32,
    pub window_secs: u64,
    /// The current (or last) open period of the circuit; `None` if it never opened.
    pub open_secs: Option<u64>,
}

/// What a trunk carried when its rate was first cut, for trunks without configured limits.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    cps: f64,
    concurrent: u32,
}

/// How long dispatches are remembered to measure a trunk's rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The health of one trunk.
#[derive(Debug, Clone)]
pub struct TrunkHealth {
    cfg: DegradationConfig,
    /// (finished at, failure) in the window, oldest first.
    samples: VecDeque<(Instant, bool)>,
    failures: u32,
    /// Dispatches over the last [`RATE_WINDOW`].
    dispatches: VecDeque<Instant>,
    in_flight: u32,
    factor: f64,
    measured: Option<Measured>,
    last_decrease: Option<Instant>,
    last_step: Option<Instant>,
    healthy_since: Option<Instant>,
    consecutive: u32,
    circuit: Circuit,
    open_until: Option<Instant>,
    open_for: Option<Duration>,
    /// The attempt (contact id) let through while half-open.
    probe: Option<i64>,
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl TrunkHealth {
    pub fn new(cfg: DegradationConfig) -> Self {
        TrunkHealth {
            cfg,
            samples: VecDeque::new(),
            failures: 0,
            dispatches: VecDeque::new(),
            in_flight: 0,
            factor: 1.0,
            measured: None,
            last_decrease: None,
            last_step: None,
            healthy_since: None,
            consecutive: 0,
            circuit: Circuit::Closed,
            open_until: None,
            open_for: None,
            probe: None,
        }
    }

    pub fn factor(&self) -> f64 {
        self.factor
    }

    pub fn circuit(&self) -> Circuit {
        self.circuit
    }

    /// Failures over samples in the window as of the last update (0 without samples).
    pub fn failure_ratio(&self) -> f64 {
        if self.samples.is_empty() {
            0.0
        } else {
            f64::from(self.failures) / self.samples.len() as f64
        }
    }

    /// Samples in the window as of the last update.
    pub fn samples(&self) -> u32 {
        self.samples.len() as u32
    }

    /// Whether an attempt may be dispatched to the trunk now. `Err(Some(d))`: the circuit is
    /// open for `d` more; `Err(None)`: the half-open probe is still out, wait for its end.
    pub fn admits(&self, now: Instant) -> Result<(), Option<Duration>> {
        if !self.cfg.enabled {
            return Ok(());
        }
        match self.circuit {
            Circuit::Closed => Ok(()),
            Circuit::HalfOpen if self.probe.is_some() => Err(None),
            Circuit::HalfOpen => Ok(()),
            Circuit::Open => match self.open_until {
                Some(until) if now < until => Err(Some(until - now)),
                _ => Ok(()),
            },
        }
    }

    /// The limits the trunk's pacer applies: (max calls in progress, calls per second), from
    /// its configured ones (`None`: unlimited).
    pub fn limits(&self, max_concurrent: Option<u32>, max_cps: Option<f64>) -> (u32, Option<f64>) {
        if self.factor >= 1.0 || !self.cfg.enabled {
            return (max_concurrent.unwrap_or(u32::MAX), max_cps);
        }
        let m = self.measured.unwrap_or(Measured {
            cps: 1.0,
            concurrent: 1,
        });
        let base_cps = max_cps.unwrap_or(m.cps);
        let base_conc = f64::from(max_concurrent.unwrap_or(m.concurrent));
        let conc = (self.factor * base_conc).floor().max(1.0) as u32;
        (conc, Some(self.factor * base_cps))
    }

    /// An attempt (`id`: its contact) was dispatched to the trunk.
    pub fn on_dispatch(&mut self, now: Instant, id: i64) -> Vec<Transition> {
        self.in_flight += 1;
        self.dispatches.push_back(now);
        self.trim_dispatches(now);
        if !self.cfg.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.circuit == Circuit::HalfOpen && self.probe.is_none() {
            self.probe = Some(id);
        }
        out
    }

    /// An attempt dispatched to the trunk ended; `fault` as [`trunk_fault`] says (`None`: not
    /// a sample).
    pub fn on_finished(&mut self, now: Instant, id: i64, fault: Option<bool>) -> Vec<Transition> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !self.cfg.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        let is_probe = self.probe == Some(id);
        match fault {
            None => {
                if is_probe {
                    // The probe never tested the trunk: let another through.
                    self.probe = None;
                }
            }
            Some(failed) => {
                self.samples.push_back((now, failed));
                if failed {
                    self.failures += 1;
                }
                self.trim_samples(now);
                match self.circuit {
                    Circuit::Closed if failed => {
                        self.consecutive += 1;
                        if self.consecutive >= self.cfg.breaker_failures {
                            let d = Duration::from_secs(self.cfg.open_secs);
                            self.open(now, d, false, &mut out);
                        }
                    }
                    Circuit::Closed => self.consecutive = 0,
                    Circuit::HalfOpen if is_probe => {
                        self.probe = None;
                        if failed {
                            let last = self
                                .open_for
                                .unwrap_or(Duration::from_secs(self.cfg.open_secs));
                            let d = (last * 2).min(Duration::from_secs(self.cfg.max_open_secs));
                            self.open(now, d, true, &mut out);
                        } else {
                            self.circuit = Circuit::Closed;
                            self.consecutive = 0;
                            self.healthy_since = None;
                            self.last_step = Some(now);
                            out.push(self.transition(Change::CircuitClosed));
                        }
                    }
                    // Calls dispatched before the circuit opened: samples, nothing more.
                    Circuit::HalfOpen | Circuit::Open => {}
                }
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// Time passing: an open circuit half-opens, the rate recovers.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        self.trim_dispatches(now);
        if !self.cfg.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        self.trim_samples(now);
        self.evaluate(now, &mut out);
        out
    }

    fn trim_dispatches(&mut self, now: Instant) {
        while self
            .dispatches
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.dispatches.pop_front();
        }
    }

    fn trim_samples(&mut self, now: Instant) {
        let window = self.cfg.window();
        while let Some(&(at, failed)) = self.samples.front() {
            if now.saturating_duration_since(at) <= window {
                break;
            }
            self.samples.pop_front();
            if failed {
                self.failures -= 1;
            }
        }
    }

    fn transition(&self, change: Change) -> Transition {
        Transition {
            change,
            factor: self.factor,
            failure_ratio: self.failure_ratio(),
            samples: self.samples(),
            window_secs: self.cfg.window_secs,
            open_secs: self.open_for.map(|d| d.as_secs()),
        }
    }

    /// Open → half-open once the open period is over.
    fn advance(&mut self, now: Instant, out: &mut Vec<Transition>) {
        if self.circuit == Circuit::Open && self.open_until.is_some_and(|u| now >= u) {
            self.circuit = Circuit::HalfOpen;
            self.probe = None;
            out.push(self.transition(Change::CircuitHalfOpen));
        }
    }

    fn open(&mut self, now: Instant, d: Duration, reopened: bool, out: &mut Vec<Transition>) {
        self.circuit = Circuit::Open;
        self.open_until = Some(now + d);
        self.open_for = Some(d);
        self.consecutive = 0;
        self.probe = None;
        self.healthy_since = None;
        out.push(self.transition(Change::CircuitOpen { reopened }));
        if self.factor > self.cfg.min_factor {
            self.cut_to(now, self.cfg.min_factor);
            out.push(self.transition(Change::Degraded));
        }
    }

    fn cut_to(&mut self, now: Instant, factor: f64) {
        if self.factor >= 1.0 {
            self.measured = Some(Measured {
                cps: (self.dispatches.len() as f64 / RATE_WINDOW.as_secs_f64()).max(1.0),
                concurrent: self.in_flight.max(1),
            });
        }
        self.factor = round6(factor.max(self.cfg.min_factor));
        self.last_decrease = Some(now);
    }

    /// The AIMD rule on the window as it is now.
    fn evaluate(&mut self, now: Instant, out: &mut Vec<Transition>) {
        let ratio = self.failure_ratio();
        let c = self.cfg;
        if self.samples.len() >= c.min_calls as usize && ratio >= c.failure_threshold {
            self.healthy_since = None;
            let spaced = self
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= c.window() / 4);
            if spaced && self.factor > c.min_factor {
                let next = self.factor * c.decrease;
                self.cut_to(now, next);
                out.push(self.transition(Change::Degraded));
            }
        } else if ratio < c.failure_threshold / 2.0 {
            if self.circuit != Circuit::Closed || self.factor >= 1.0 {
                return;
            }
            let since = *self.healthy_since.get_or_insert(now);
            let from = [Some(since), self.last_step, self.last_decrease]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            if now.saturating_duration_since(from) >= Duration::from_secs(c.recover_interval_secs) {
                self.factor = round6((self.factor + c.recover_step).min(1.0));
                self.last_step = Some(now);
                if self.factor >= 1.0 - 1e-9 {
                    self.factor = 1.0;
                    self.measured = None;
                    out.push(self.transition(Change::Recovered));
                }
            }
        } else {
            self.healthy_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn changes(v: &[Transition]) -> Vec<Change> {
        v.iter().map(|t| t.change).collect()
    }

    /// Feeds `n` results, one every `every` seconds from `t`, failing where `fail(i)`; returns
    /// the time after the last and every transition.
    fn feed(
        h: &mut TrunkHealth,
        t0: Instant,
        from: f64,
        every: f64,
        n: usize,
        fail: impl Fn(usize) -> bool,
    ) -> (f64, Vec<Transition>) {
        let mut out = Vec::new();
        let mut t = from;
        for i in 0..n {
            let id = (from * 1000.0) as i64 + i as i64;
            out.extend(h.on_dispatch(t0 + secs(t), id));
            out.extend(h.on_finished(t0 + secs(t), id, Some(fail(i))));
            t += every;
        }
        (t, out)
    }

    #[test]
    fn faults_are_network_faults_and_5xx_but_not_busy_or_cancels() {
        assert_eq!(trunk_fault(Outcome::TrunkError, Some(486)), Some(true));
        assert_eq!(trunk_fault(Outcome::Congestion, None), Some(true));
        assert_eq!(trunk_fault(Outcome::Failed, None), Some(true));
        assert_eq!(trunk_fault(Outcome::Rejected, Some(503)), Some(true));
        assert_eq!(trunk_fault(Outcome::Busy, Some(486)), Some(false));
        assert_eq!(trunk_fault(Outcome::NoAnswer, Some(487)), Some(false));
        assert_eq!(trunk_fault(Outcome::Rejected, Some(603)), Some(false));
        assert_eq!(trunk_fault(Outcome::EmptyNumber, Some(404)), Some(false));
        assert_eq!(trunk_fault(Outcome::AnsweredHuman, Some(200)), Some(false));
        assert_eq!(trunk_fault(Outcome::Canceled, Some(487)), None);
    }

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_named() {
        assert_eq!(DegradationConfig::default().validate(), Ok(()));
        let bad = DegradationConfig {
            decrease: 1.0,
            ..DegradationConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("decrease"));
        let bad = DegradationConfig {
            max_open_secs: 10,
            ..DegradationConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_open_secs"));
        let parsed: DegradationConfig =
            serde_json::from_str(r#"{ "enabled": false, "open_secs": 5 }"#).unwrap();
        assert!(!parsed.enabled);
        assert_eq!(parsed.open_secs, 5);
        assert_eq!(parsed.window_secs, 60);
        assert!(serde_json::from_str::<DegradationConfig>(r#"{ "open_sec": 5 }"#).is_err());
    }

    #[test]
    fn five_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(DegradationConfig::default());
        // F F F F S F F F F: never five in a row.
        let (t, out) = feed(&mut h, t0, 0.0, 1.0, 9, |i| i != 4);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(h.circuit(), Circuit::Closed);
        let (_, out) = feed(&mut h, t0, t, 1.0, 1, |_| true);
        assert_eq!(
            changes(&out),
            [Change::CircuitOpen { reopened: false }, Change::Degraded]
        );
        assert_eq!(out[0].open_secs, Some(30));
        assert_eq!(h.factor(), 0.1);
        assert_eq!(h.circuit(), Circuit::Open);
    }

    #[test]
    fn open_refuses_then_one_probe_then_reopens_doubling_then_closes() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(DegradationConfig::default());
        let (t, out) = feed(&mut h, t0, 0.0, 0.1, 5, |_| true);
        assert_eq!(changes(&out)[0], Change::CircuitOpen { reopened: false });
        let opened = t - 0.1;
        assert_eq!(h.admits(t0 + secs(opened + 1.0)), Err(Some(secs(29.0))));
        assert_eq!(
            h.admits(t0 + secs(opened + 29.9)).unwrap_err(),
            Some(secs(0.1))
        );
        // Time passing alone half-opens it.
        let out = h.tick(t0 + secs(opened + 30.0));
        assert_eq!(changes(&out), [Change::CircuitHalfOpen]);
        assert_eq!(h.admits(t0 + secs(opened + 30.0)), Ok(()));
        let probe_at = t0 + secs(opened + 30.0);
        assert!(h.on_dispatch(probe_at, 100).is_empty());
        assert_eq!(h.admits(probe_at), Err(None), "one probe at a time");
        // A straggler dispatched before the open does not decide.
        assert!(h.on_finished(probe_at, 7, Some(false)).is_empty());
        assert_eq!(h.circuit(), Circuit::HalfOpen);
        let out = h.on_finished(probe_at + secs(1.0), 100, Some(true));
        assert_eq!(changes(&out), [Change::CircuitOpen { reopened: true }]);
        assert_eq!(out[0].open_secs, Some(60));
        let reopened = probe_at + secs(1.0);
        assert_eq!(h.admits(reopened), Err(Some(secs(60.0))));
        // A probe that never reached the trunk lets another one through.
        let second = reopened + secs(60.0);
        assert_eq!(
            changes(&h.on_dispatch(second, 101)),
            [Change::CircuitHalfOpen]
        );
        assert_eq!(h.admits(second), Err(None));
        h.on_finished(second, 101, None);
        assert_eq!(h.admits(second), Ok(()));
        h.on_dispatch(second, 102);
        let out = h.on_finished(second + secs(2.0), 102, Some(false));
        assert_eq!(changes(&out), [Change::CircuitClosed]);
        assert_eq!(h.circuit(), Circuit::Closed);
        assert_eq!(h.factor(), 0.1, "the rate recovers gradually");
    }

    #[test]
    fn open_periods_double_up_to_the_maximum() {
        let cfg = DegradationConfig {
            open_secs: 30,
            max_open_secs: 100,
            ..DegradationConfig::default()
        };
        let mut h = TrunkHealth::new(cfg);
        let t0 = Instant::now();
        let (mut t, _) = feed(&mut h, t0, 0.0, 0.1, 5, |_| true);
        let mut periods = vec![30];
        for probe in 0..4 {
            let d = *periods.last().unwrap() as f64;
            t += d;
            h.on_dispatch(t0 + secs(t), 1000 + probe);
            let out = h.on_finished(t0 + secs(t), 1000 + probe, Some(true));
            let open = out
                .iter()
                .find(|x| x.change == (Change::CircuitOpen { reopened: true }))
                .expect("reopened");
            periods.push(open.open_secs.unwrap());
        }
        assert_eq!(periods, [30, 60, 100, 100, 100]);
    }

    #[test]
    fn sixty_percent_failures_cut_the_rate_stepwise_then_it_recovers_in_steps() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(DegradationConfig::default());
        let fail = |i: usize| i % 5 < 3; // F F F S S: 60 %, never 5 in a row
                                         // Nine samples: not enough to judge.
        let (t, out) = feed(&mut h, t0, 0.0, 0.1, 9, fail);
        assert!(out.is_empty());
        let (t, out) = feed(&mut h, t0, t, 0.1, 1, |_| false);
        assert_eq!(changes(&out), [Change::Degraded]);
        assert_eq!(out[0].factor, 0.5);
        assert_eq!(out[0].samples, 10);
        // Still failing: the next cut waits a quarter of the window.
        let mut cuts = vec![(t - 0.1, 0.5)];
        let mut now = t;
        let mut i = 10;
        while now < 70.0 {
            let id = i as i64;
            h.on_dispatch(t0 + secs(now), id);
            for x in h.on_finished(t0 + secs(now), id, Some(fail(i))) {
                assert_eq!(x.change, Change::Degraded);
                cuts.push((now, x.factor));
            }
            i += 1;
            now += 0.5;
        }
        let factors: Vec<f64> = cuts.iter().map(|c| c.1).collect();
        assert_eq!(factors, [0.5, 0.25, 0.125, 0.1]);
        for w in cuts.windows(2) {
            assert!(w[1].0 - w[0].0 >= 15.0 - 1e-9, "{cuts:?}");
        }
        assert_eq!(h.circuit(), Circuit::Closed);
        // Failures stop. Recovery needs the ratio under 25 %, then 0.1 every 10 s.
        let mut steps = Vec::new();
        let mut last = h.factor();
        let mut recovered = None;
        while now < 300.0 {
            let id = i as i64;
            h.on_dispatch(t0 + secs(now), id);
            let mut out = h.on_finished(t0 + secs(now), id, Some(false));
            out.extend(h.tick(t0 + secs(now + 0.25)));
            if h.factor() != last {
                assert!(h.factor() > last, "only up");
                steps.push((now, h.factor()));
                last = h.factor();
            }
            if out.iter().any(|x| x.change == Change::Recovered) {
                recovered = Some(now);
            }
            i += 1;
            now += 0.5;
        }
        assert_eq!(steps.len(), 9, "{steps:?}");
        for w in steps.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!((9.99..=10.5).contains(&gap), "{steps:?}");
            assert!((w[1].1 - w[0].1 - 0.1).abs() < 1e-6, "{steps:?}");
        }
        assert_eq!(h.factor(), 1.0);
        assert_eq!(recovered, Some(steps.last().unwrap().0));
        // The first step came only once the window's ratio was under half the threshold.
        assert!(steps[0].0 > 70.0);
    }

    #[test]
    fn limits_follow_the_factor_from_configured_or_measured_bases() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(DegradationConfig::default());
        assert_eq!(h.limits(Some(40), Some(20.0)), (40, Some(20.0)));
        assert_eq!(h.limits(None, None), (u32::MAX, None));
        // 30 dispatches in the last 10 s (3/s), 6 in progress when the circuit opens.
        for i in 0..30 {
            h.on_dispatch(t0 + secs(f64::from(i) / 3.0), i64::from(i));
        }
        for i in 0..24 {
            h.on_finished(t0 + secs(9.9), i64::from(i), Some(i >= 19));
        }
        assert_eq!(h.circuit(), Circuit::Open);
        assert_eq!(h.factor(), 0.1);
        assert_eq!(h.limits(Some(40), Some(20.0)), (4, Some(2.0)));
        let (conc, cps) = h.limits(None, None);
        assert_eq!(conc, 1, "0.1 x 6 in progress, at least 1");
        assert!((cps.unwrap() - 0.3).abs() < 1e-9, "0.1 x 3/s: {cps:?}");
    }

    #[test]
    fn back_at_one_the_configured_limits_are_restored_exactly() {
        let t0 = Instant::now();
        let cfg = DegradationConfig {
            recover_step: 0.5,
            ..DegradationConfig::default()
        };
        let mut h = TrunkHealth::new(cfg);
        let (t, _) = feed(&mut h, t0, 0.0, 0.1, 10, |i| i % 2 == 0);
        assert_eq!(h.factor(), 0.5);
        assert_eq!(h.limits(None, Some(7.0)), (1, Some(3.5)));
        let (t, _) = feed(&mut h, t0, t, 0.1, 40, |_| false);
        let out = h.tick(t0 + secs(t + 10.0));
        assert_eq!(changes(&out), [Change::Recovered]);
        assert_eq!(h.limits(None, Some(7.0)), (u32::MAX, Some(7.0)));
        assert_eq!(h.limits(Some(3), None), (3, None));
    }

    #[test]
    fn disabled_tracks_nothing() {
        let t0 = Instant::now();
        let mut h = TrunkHealth::new(DegradationConfig {
            enabled: false,
            ..DegradationConfig::default()
        });
        let (_, out) = feed(&mut h, t0, 0.0, 0.1, 50, |_| true);
        assert!(out.is_empty());
        assert_eq!(h.admits(t0 + secs(5.0)), Ok(()));
        assert_eq!(h.limits(Some(5), Some(2.0)), (5, Some(2.0)));
    }
}
