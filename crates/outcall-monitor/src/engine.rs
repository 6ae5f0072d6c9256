//! Rule evaluation over a ring of snapshots, and the alert state machine.
//!
//! Each [`Engine::observe`] call adds the snapshot scraped at a given time (the engine never
//! reads the clock) and evaluates every rule:
//!
//! - counters are read as increases over the rule's window: the sum of the deltas between
//!   consecutive snapshots since the latest snapshot at or before `now - window` (or the oldest
//!   one while the ring is younger than the window); a counter that went down was reset by a
//!   restart, and its new value is the delta; a series that was absent counts from 0;
//! - fewer calls or requests in the window than the rule's minimum is "not enough data", which
//!   counts as "condition false";
//! - per (rule, subject) (the subject is the trunk for `trunk_down`, none for the others): a
//!   true condition makes the alert pending, then firing once it held for `for_secs`; a firing
//!   alert resolves once the condition was false for `resolve_for_secs`. A pending alert whose
//!   condition turns false goes back to inactive silently, and a firing alert whose condition
//!   comes back before `resolve_for_secs` stays firing, so a flapping condition sends nothing
//!   more than one firing and one resolved notification.

use std::collections::{BTreeMap, HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};
use outcall_domain::metrics as m;
use serde::Serialize;

use crate::config::{Rule, RuleKind, Severity};
use crate::expo::{Labels, Snapshot};

/// Whether a transition starts or ends an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert that started firing or was resolved (or, from [`Engine::firing`], one that is
/// firing now, with its latest value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The rule's name (the `alertname`).
    pub rule: String,
    pub kind: RuleKind,
    pub severity: Severity,
    /// The trunk for `trunk_down`; none for the other kinds.
    pub subject: Option<String>,
    pub state: AlertState,
    /// The rule's value when the transition happened (a fraction for ratios, seconds for
    /// latency, tasks for the queue).
    pub value: f64,
    pub threshold: f64,
    /// When the alert started firing.
    pub started_at: Timestamp,
    /// When this transition happened (equal to `started_at` for a firing one).
    pub at: Timestamp,
    /// One line for a human, e.g. "call failure rate 38.0 % over 5m > 5.0 %".
    pub summary: String,
}

/// A rule's verdict for one subject at one evaluation.
#[derive(Debug, Clone)]
struct Eval {
    subject: Option<String>,
    value: f64,
    condition: bool,
    summary: String,
}

#[derive(Debug, Clone)]
enum Phase {
    Pending {
        since: Timestamp,
    },
    Firing {
        started_at: Timestamp,
        false_since: Option<Timestamp>,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    phase: Phase,
    value: f64,
    summary: String,
}

type Key = (usize, Option<String>);

/// The rule evaluator. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    ring: VecDeque<(Timestamp, Snapshot)>,
    max_window: SignedDuration,
    slots: BTreeMap<Key, Slot>,
}

fn secs(s: f64) -> SignedDuration {
    SignedDuration::from_secs_f64(s)
}

/// A window length for summaries: "5m", "2m", "90s", "1h", "2.5s".
pub fn fmt_window(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

/// `histogram_quantile` as PromQL computes it: `buckets` are (upper bound, cumulative count)
/// and must include `+Inf`; linear interpolation inside the bucket that holds the rank; NaN
/// without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<(f64, f64)> = buckets.iter().copied().filter(|x| !x.0.is_nan()).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.len() < 2 || b.last().is_none_or(|x| x.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Cumulative counts never decrease (a scrape can catch buckets mid-update).
    for i in 1..b.len() {
        if b[i].1 < b[i - 1].1 {
            b[i].1 = b[i - 1].1;
        }
    }
    let observations = b[b.len() - 1].1;
    if observations <= 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    if count <= 0.0 {
        return end;
    }
    start + (end - start) * (rank / count)
}

impl Engine {
    pub fn new(rules: Vec<Rule>) -> Self {
        let longest = rules.iter().map(|r| r.window_secs).fold(0.0, f64::max);
        Self {
            rules,
            ring: VecDeque::new(),
            max_window: secs(longest),
            slots: BTreeMap::new(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many snapshots the ring holds (the longest window's worth, plus the one at or before
    /// its start).
    pub fn retained(&self) -> usize {
        self.ring.len()
    }

    /// Adds the snapshot scraped at `at` and evaluates every rule; returns the alerts that
    /// started firing or were resolved. A snapshot not newer than the previous one is ignored.
    pub fn observe(&mut self, at: Timestamp, snapshot: Snapshot) -> Vec<Transition> {
        if self.ring.back().is_some_and(|(last, _)| *last >= at) {
            return Vec::new();
        }
        self.ring.push_back((at, snapshot));
        let horizon = at - self.max_window;
        while self.ring.len() >= 2 && self.ring[1].0 <= horizon {
            self.ring.pop_front();
        }
        let mut out = Vec::new();
        for idx in 0..self.rules.len() {
            let evals = self.evaluate(idx, at);
            let mut seen = Vec::with_capacity(evals.len());
            for e in evals {
                seen.push(e.subject.clone());
                if let Some(t) = self.step(idx, e, at) {
                    out.push(t);
                }
            }
            // Subjects with an alert but no data any more: the condition is false.
            let stale: Vec<Option<String>> = self
                .slots
                .range((idx, None)..)
                .take_while(|((i, _), _)| *i == idx)
                .map(|((_, s), _)| s.clone())
                .filter(|s| !seen.contains(s))
                .collect();
            for subject in stale {
                let rule = &self.rules[idx];
                let what = subject.as_deref().unwrap_or("the subject");
                let e = Eval {
                    summary: format!(
                        "{}: no data for {what} over {}",
                        rule.name,
                        fmt_window(rule.window_secs)
                    ),
                    subject,
                    value: 0.0,
                    condition: false,
                };
                if let Some(t) = self.step(idx, e, at) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// The alerts firing now, with their latest value and summary.
    pub fn firing(&self) -> Vec<Transition> {
        self.slots
            .iter()
            .filter_map(|((idx, subject), slot)| match slot.phase {
                Phase::Firing { started_at, .. } => Some(self.transition(
                    *idx,
                    subject.clone(),
                    AlertState::Firing,
                    slot,
                    started_at,
                    started_at,
                )),
                Phase::Pending { .. } => None,
            })
            .collect()
    }

    /// For every rule, how many of its subjects are firing.
    pub fn firing_counts(&self) -> Vec<(String, usize)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(idx, r)| {
                let n = self
                    .slots
                    .iter()
                    .filter(|((i, _), s)| *i == idx && matches!(s.phase, Phase::Firing { .. }))
                    .count();
                (r.name.clone(), n)
            })
            .collect()
    }

    fn transition(
        &self,
        idx: usize,
        subject: Option<String>,
        state: AlertState,
        slot: &Slot,
        started_at: Timestamp,
        at: Timestamp,
    ) -> Transition {
        let r = &self.rules[idx];
        Transition {
            rule: r.name.clone(),
            kind: r.kind,
            severity: r.severity,
            subject,
            state,
            value: slot.value,
            threshold: r.threshold,
            started_at,
            at,
            summary: slot.summary.clone(),
        }
    }

    fn step(&mut self, idx: usize, e: Eval, now: Timestamp) -> Option<Transition> {
        let rule = &self.rules[idx];
        let for_d = secs(rule.for_secs);
        let resolve_d = secs(rule.resolve_for_secs);
        let key = (idx, e.subject.clone());
        let Some(slot) = self.slots.get_mut(&key) else {
            if !e.condition {
                return None;
            }
            let phase = if for_d.is_zero() {
                Phase::Firing {
                    started_at: now,
                    false_since: None,
                }
            } else {
                Phase::Pending { since: now }
            };
            let fired = matches!(phase, Phase::Firing { .. });
            let slot = Slot {
                phase,
                value: e.value,
                summary: e.summary,
            };
            let t =
                fired.then(|| self.transition(idx, e.subject, AlertState::Firing, &slot, now, now));
            self.slots.insert(key, slot);
            return t;
        };
        match (&mut slot.phase, e.condition) {
            (Phase::Pending { since }, true) => {
                slot.value = e.value;
                slot.summary = e.summary;
                if now.duration_since(*since) >= for_d {
                    slot.phase = Phase::Firing {
                        started_at: now,
                        false_since: None,
                    };
                    let slot = slot.clone();
                    return Some(self.transition(
                        idx,
                        e.subject,
                        AlertState::Firing,
                        &slot,
                        now,
                        now,
                    ));
                }
                None
            }
            (Phase::Pending { .. }, false) => {
                self.slots.remove(&key);
                None
            }
            (Phase::Firing { false_since, .. }, true) => {
                *false_since = None;
                slot.value = e.value;
                slot.summary = e.summary;
                None
            }
            (
                Phase::Firing {
                    started_at,
                    false_since,
                },
                false,
            ) => {
                let since = *false_since.get_or_insert(now);
                if now.duration_since(since) >= resolve_d {
                    let started_at = *started_at;
                    let slot = Slot {
                        phase: slot.phase.clone(),
                        value: e.value,
                        summary: e.summary,
                    };
                    self.slots.remove(&key);
                    return Some(self.transition(
                        idx,
                        e.subject,
                        AlertState::Resolved,
                        &slot,
                        started_at,
                        now,
                    ));
                }
                None
            }
        }
    }

    /// The index of the window's first snapshot: the latest at or before `now - window`, or the
    /// oldest one. `None` with a single snapshot.
    fn baseline(&self, now: Timestamp, window_secs: f64) -> Option<usize> {
        if self.ring.len() < 2 {
            return None;
        }
        let start = now - secs(window_secs);
        let last = self.ring.len() - 1;
        let i = self
            .ring
            .iter()
            .rposition(|(at, _)| *at <= start)
            .unwrap_or(0);
        (i < last).then_some(i)
    }

    /// Per series of `name`, its increase from snapshot `from` to the newest.
    fn increases(&self, from: usize, name: &str) -> HashMap<Labels, f64> {
        let mut out: HashMap<Labels, f64> = HashMap::new();
        for i in from..self.ring.len() - 1 {
            let (prev, cur) = (&self.ring[i].1, &self.ring[i + 1].1);
            for (labels, v) in cur.series(name) {
                let before = prev.get(name, labels).unwrap_or(0.0);
                let delta = if v >= before { v - before } else { v };
                if delta.is_finite() {
                    *out.entry(labels.clone()).or_insert(0.0) += delta;
                }
            }
        }
        out
    }

    fn evaluate(&self, idx: usize, now: Timestamp) -> Vec<Eval> {
        let r = &self.rules[idx];
        let baseline = self.baseline(now, r.window_secs);
        let w = fmt_window(r.window_secs);
        match r.kind {
            RuleKind::CallFailureRate => {
                let inc = baseline
                    .map(|b| self.increases(b, m::CALLS_TOTAL))
                    .unwrap_or_default();
                let (failed, total) = failures(r, inc.iter());
                vec![ratio_eval(
                    r,
                    None,
                    failed,
                    total,
                    "call failure rate",
                    "calls",
                    &w,
                )]
            }
            RuleKind::TrunkDown => {
                let Some(b) = baseline else {
                    return Vec::new();
                };
                let inc = self.increases(b, m::CALLS_TOTAL);
                let mut by_trunk: BTreeMap<&str, Vec<(&Labels, &f64)>> = BTreeMap::new();
                for (labels, v) in &inc {
                    if let Some(t) = labels.get("trunk") {
                        by_trunk.entry(t.as_str()).or_default().push((labels, v));
                    }
                }
                by_trunk
                    .into_iter()
                    .map(|(trunk, series)| {
                        let (failed, total) = failures(r, series.into_iter());
                        let value = if total > 0.0 { failed / total } else { 0.0 };
                        let enough = total > 0.0 && total >= r.min_count as f64;
                        let condition = enough && value >= r.threshold;
                        let summary = format!(
                            "trunk {trunk}: {failed} of {total} calls failed ({}) over {w}{}",
                            pct(value),
                            if enough {
                                String::new()
                            } else {
                                format!(", fewer than {} calls", r.min_count)
                            }
                        );
                        Eval {
                            subject: Some(trunk.to_string()),
                            value,
                            condition,
                            summary,
                        }
                    })
                    .collect()
            }
            RuleKind::Http5xxRate => {
                let inc = baseline
                    .map(|b| self.increases(b, m::HTTP_REQUESTS_TOTAL))
                    .unwrap_or_default();
                let total: f64 = inc.values().sum();
                let errors: f64 = inc
                    .iter()
                    .filter(|(l, _)| l.get("status").is_some_and(|s| s.starts_with('5')))
                    .map(|(_, v)| v)
                    .sum();
                vec![ratio_eval(
                    r,
                    None,
                    errors,
                    total,
                    "API 5xx rate",
                    "requests",
                    &w,
                )]
            }
            RuleKind::ApiP99Latency => {
                let bucket_name = format!("{}_bucket", m::HTTP_SECONDS);
                let inc = baseline
                    .map(|b| self.increases(b, &bucket_name))
                    .unwrap_or_default();
                let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
                for (labels, v) in &inc {
                    if let Some(le) = labels.get("le") {
                        *by_le.entry(le.clone()).or_insert(0.0) += v;
                    }
                }
                let buckets: Vec<(f64, f64)> = by_le
                    .iter()
                    .filter_map(|(le, v)| Some((crate::expo::parse_value(le)?, *v)))
                    .collect();
                let requests = buckets
                    .iter()
                    .find(|(le, _)| *le == f64::INFINITY)
                    .map_or(0.0, |b| b.1);
                let q = histogram_quantile(0.99, &buckets);
                let value = if q.is_nan() { 0.0 } else { q };
                let enough = requests > 0.0 && requests >= r.min_count as f64;
                let condition = enough && value > r.threshold;
                let summary = if enough {
                    format!(
                        "API p99 latency {value:.3} s over {w} {} {:.3} s ({requests} requests)",
                        if condition { ">" } else { "<=" },
                        r.threshold
                    )
                } else {
                    format!(
                        "API p99 latency {value:.3} s over {w} ({requests} requests, fewer than {})",
                        r.min_count
                    )
                };
                vec![Eval {
                    subject: None,
                    value,
                    condition,
                    summary,
                }]
            }
            RuleKind::QueueBacklog => {
                let newest = &self.ring.back().expect("observe pushed a snapshot").1;
                let data = baseline.and_then(|b| {
                    Some((
                        self.ring[b].1.total(m::QUEUE_DUE)?,
                        newest.total(m::QUEUE_DUE)?,
                        newest.total(m::QUEUE_OLDEST_AGE)?,
                    ))
                });
                let Some((then, due, age)) = data else {
                    return vec![Eval {
                        subject: None,
                        value: 0.0,
                        condition: false,
                        summary: format!("due queue: no data over {w}"),
                    }];
                };
                let growth = due - then;
                let condition = growth > r.threshold && age >= r.min_age_secs;
                vec![Eval {
                    subject: None,
                    value: growth,
                    condition,
                    summary: format!(
                        "due queue grew by {growth} tasks over {w} (now {due}), oldest due {age:.0} s{}",
                        if condition {
                            String::new()
                        } else {
                            format!(
                                "; alerts above {} tasks with the oldest due for {} s",
                                r.threshold, r.min_age_secs
                            )
                        }
                    ),
                }]
            }
        }
    }
}

/// (failed calls, all calls) among series of `outcall_calls_total`.
fn failures<'a>(r: &Rule, series: impl Iterator<Item = (&'a Labels, &'a f64)>) -> (f64, f64) {
    let (mut failed, mut total) = (0.0, 0.0);
    for (labels, v) in series {
        total += v;
        if labels
            .get("outcome")
            .is_some_and(|o| r.outcomes.iter().any(|f| f == o))
        {
            failed += v;
        }
    }
    (failed, total)
}

fn ratio_eval(
    r: &Rule,
    subject: Option<String>,
    bad: f64,
    total: f64,
    what: &str,
    unit: &str,
    w: &str,
) -> Eval {
    let value = if total > 0.0 { bad / total } else { 0.0 };
    let enough = total > 0.0 && total >= r.min_count as f64;
    let condition = enough && value > r.threshold;
    let summary = if enough {
        format!(
            "{what} {} over {w} {} {} ({bad} of {total} {unit})",
            pct(value),
            if condition { ">" } else { "<=" },
            pct(r.threshold)
        )
    } else {
        format!(
            "{what} {} over {w} ({total} {unit}, fewer than {})",
            pct(value),
            r.min_count
        )
    };
    Eval {
        subject,
        value,
        condition,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn t(s: f64) -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap() + secs(s)
    }

    fn rule(kind: RuleKind, edit: impl FnOnce(&mut RuleConfig)) -> Rule {
        let mut c = RuleConfig::of_kind(kind);
        edit(&mut c);
        c.resolve()
    }

    /// Cumulative call counters: (outcome, trunk) -> count.
    #[derive(Default, Clone)]
    struct Calls(BTreeMap<(String, String), u64>);

    impl Calls {
        fn add(&mut self, outcome: &str, trunk: &str, n: u64) -> &mut Self {
            *self.0.entry((outcome.into(), trunk.into())).or_insert(0) += n;
            self
        }
        fn snapshot(&self) -> Snapshot {
            let mut text = String::from("# TYPE outcall_calls_total counter\n");
            for ((o, tr), n) in &self.0 {
                text.push_str(&format!(
                    "outcall_calls_total{{outcome=\"{o}\",trunk=\"{tr}\",campaign=\"1\"}} {n}\n"
                ));
            }
            let (s, bad) = Snapshot::from_text(&text);
            assert_eq!(bad, 0);
            s
        }
    }

    fn only(ts: Vec<Transition>) -> Transition {
        assert_eq!(ts.len(), 1, "{ts:#?}");
        ts.into_iter().next().unwrap()
    }

    #[test]
    fn call_failure_rate_fires_after_for_and_resolves_after_resolve_for() {
        let mut e = Engine::new(vec![rule(RuleKind::CallFailureRate, |_| {})]);
        let mut calls = Calls::default();
        let mut all = Vec::new();
        // Every 15 s: 10 calls, 40 % of them failing, until t = 90; then only answered calls.
        for k in 0..=40 {
            let at = k as f64 * 15.0;
            if k > 0 {
                if at <= 90.0 {
                    calls
                        .add("answered_human", "a", 6)
                        .add("congestion", "a", 4);
                } else {
                    calls.add("answered_human", "a", 10);
                }
            }
            for tr in e.observe(t(at), calls.snapshot()) {
                all.push((at, tr));
            }
            if at == 75.0 {
                assert!(all.is_empty(), "pending only for 45 s: {all:?}");
            }
        }
        assert_eq!(all.len(), 2, "{all:#?}");
        let (at, fired) = &all[0];
        // Enough calls (20) from t = 30: pending; firing 60 s later.
        assert_eq!(*at, 90.0);
        assert_eq!(fired.state, AlertState::Firing);
        assert_eq!(fired.rule, "call_failure_rate");
        assert_eq!(fired.subject, None);
        assert_eq!(fired.started_at, t(90.0));
        assert!((fired.value - 0.4).abs() < 1e-9);
        assert_eq!(
            fired.summary,
            "call failure rate 40.0 % over 5m > 5.0 % (24 of 60 calls)"
        );
        // The failures age out of the 5 min window: 4 % at t = 360; resolved 60 s later.
        let (at, resolved) = &all[1];
        assert_eq!(*at, 420.0);
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.started_at, t(90.0));
        assert_eq!(resolved.at, t(420.0));
        assert_eq!(resolved.value, 0.0);
        assert!(
            resolved.summary.contains("<= 5.0 %"),
            "{}",
            resolved.summary
        );
        assert!(e.firing().is_empty());
    }

    #[test]
    fn too_few_calls_is_condition_false() {
        let mut e = Engine::new(vec![rule(RuleKind::CallFailureRate, |r| {
            r.for_secs = Some(0.0)
        })]);
        let mut calls = Calls::default();
        let mut out = Vec::new();
        for k in 0..30 {
            if k % 2 == 1 {
                calls.add("failed", "a", 1);
            }
            out.extend(e.observe(t(k as f64 * 15.0), calls.snapshot()));
        }
        // 100 % failures, but at most 10 calls in any 5 min window (minimum 20).
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn a_counter_reset_counts_the_new_value() {
        let r = rule(RuleKind::CallFailureRate, |r| r.for_secs = Some(0.0));
        let mut e = Engine::new(vec![r.clone()]);
        let mut calls = Calls::default();
        calls.add("answered_human", "a", 1000);
        assert!(e.observe(t(0.0), calls.snapshot()).is_empty());
        calls.add("answered_human", "a", 10);
        assert!(e.observe(t(15.0), calls.snapshot()).is_empty());
        // The node restarted: its counters start again from 0.
        let mut restarted = Calls::default();
        restarted
            .add("answered_human", "a", 3)
            .add("congestion", "a", 17);
        let fired = only(e.observe(t(30.0), restarted.snapshot()));
        // 10 answered before the restart, 3 answered and 17 congested after it.
        assert!((fired.value - 17.0 / 30.0).abs() < 1e-9, "{fired:?}");

        // Without failures a reset raises nothing (a naive delta would be -1007 calls).
        let mut e = Engine::new(vec![r]);
        let mut calls = Calls::default();
        calls
            .add("answered_human", "a", 1000)
            .add("failed", "a", 10);
        e.observe(t(0.0), calls.snapshot());
        let mut restarted = Calls::default();
        restarted.add("answered_human", "a", 30);
        assert!(e.observe(t(15.0), restarted.snapshot()).is_empty());
        assert!(e.firing().is_empty());
    }

    #[test]
    fn flapping_conditions_send_nothing_more_than_one_firing_and_one_resolved() {
        // Window of one interval: each tick's batch decides the condition.
        let mut e = Engine::new(vec![rule(RuleKind::CallFailureRate, |r| {
            r.window_secs = Some(15.0);
            r.min_calls = Some(5);
        })]);
        let mut calls = Calls::default();
        let mut out = Vec::new();
        let mut k = 0;
        let mut tick = |e: &mut Engine, calls: &mut Calls, failing: bool| {
            k += 1;
            if failing {
                calls
                    .add("trunk_error", "a", 5)
                    .add("answered_human", "a", 5);
            } else {
                calls.add("answered_human", "a", 10);
            }
            let ts = e.observe(t(k as f64 * 15.0), calls.snapshot());
            (k as f64 * 15.0, ts)
        };
        e.observe(t(0.0), calls.snapshot());
        // Flapping faster than for_secs (60 s): never fires.
        for i in 0..40 {
            let (_, ts) = tick(&mut e, &mut calls, i % 3 != 2);
            out.extend(ts);
        }
        assert!(out.is_empty(), "{out:#?}");
        // Held for 60 s: fires once.
        for _ in 0..6 {
            let (_, ts) = tick(&mut e, &mut calls, true);
            out.extend(ts);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Firing);
        // Flapping faster than resolve_for_secs (60 s): stays firing, nothing sent.
        for i in 0..40 {
            let (_, ts) = tick(&mut e, &mut calls, i % 4 == 3);
            out.extend(ts);
        }
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(e.firing().len(), 1);
        // False for 60 s: resolved once.
        for _ in 0..8 {
            let (_, ts) = tick(&mut e, &mut calls, false);
            out.extend(ts);
        }
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[1].state, AlertState::Resolved);
    }

    #[test]
    fn trunk_down_alerts_per_trunk() {
        let mut e = Engine::new(vec![rule(RuleKind::TrunkDown, |_| {})]);
        let mut calls = Calls::default();
        let mut out: Vec<(f64, Transition)> = Vec::new();
        let mut run = |e: &mut Engine, calls: &Calls, at: f64| {
            for tr in e.observe(t(at), calls.snapshot()) {
                out.push((at, tr));
            }
        };
        run(&mut e, &calls, 0.0);
        // carrier-a: every call fails; carrier-b: all answered; carrier-c: 3 calls, all failed.
        for k in 1..=10 {
            calls
                .add("trunk_error", "carrier-a", 2)
                .add("answered_human", "carrier-b", 2);
            if k <= 3 {
                calls.add("congestion", "carrier-c", 1);
            }
            run(&mut e, &calls, k as f64 * 15.0);
        }
        // carrier-a recovers, carrier-b goes down.
        for k in 11..=30 {
            calls
                .add("answered_human", "carrier-a", 2)
                .add("failed", "carrier-b", 2);
            run(&mut e, &calls, k as f64 * 15.0);
        }
        let got: Vec<(f64, &str, AlertState)> = out
            .iter()
            .map(|(at, tr)| (*at, tr.subject.as_deref().unwrap(), tr.state))
            .collect();
        assert_eq!(
            got,
            [
                // 6 failed calls by t = 45 (minimum 5): pending, firing 60 s later
                (105.0, "carrier-a", AlertState::Firing),
                // an answered call at t = 165: resolved 60 s later
                (225.0, "carrier-a", AlertState::Resolved),
                // the last answered call leaves the 2 min window at t = 270: firing at 330
                (330.0, "carrier-b", AlertState::Firing),
            ]
        );
        let fired = &out[0].1;
        assert_eq!(fired.rule, "trunk_down");
        assert_eq!(fired.value, 1.0);
        assert_eq!(
            fired.summary,
            "trunk carrier-a: 14 of 14 calls failed (100.0 %) over 2m"
        );
        let firing = e.firing();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0].subject.as_deref(), Some("carrier-b"));
        assert_eq!(firing[0].started_at, t(330.0));
        assert_eq!(e.firing_counts(), [("trunk_down".to_string(), 1)]);
    }

    /// HTTP metrics: per (route, status) request counts and per (route, le) bucket counts.
    #[derive(Default)]
    struct Http {
        requests: BTreeMap<(String, String), u64>,
        buckets: BTreeMap<(String, String), u64>,
    }

    const LES: [&str; 5] = ["0.1", "0.5", "1", "2.5", "+Inf"];

    impl Http {
        fn record(&mut self, route: &str, status: &str, seconds: f64, n: u64) -> &mut Self {
            *self
                .requests
                .entry((route.into(), status.into()))
                .or_insert(0) += n;
            for le in LES {
                let bound: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                if seconds <= bound {
                    *self.buckets.entry((route.into(), le.into())).or_insert(0) += n;
                }
            }
            self
        }
        fn snapshot(&self) -> Snapshot {
            let mut text = String::new();
            for ((route, status), n) in &self.requests {
                text.push_str(&format!(
                    "outcall_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"{status}\"}} {n}\n"
                ));
            }
            let routes: std::collections::BTreeSet<&String> =
                self.requests.keys().map(|k| &k.0).collect();
            for route in routes {
                for le in LES {
                    let n = self
                        .buckets
                        .get(&(route.clone(), le.to_string()))
                        .copied()
                        .unwrap_or(0);
                    text.push_str(&format!(
                        "outcall_http_request_duration_seconds_bucket{{method=\"GET\",route=\"{route}\",le=\"{le}\"}} {n}\n"
                    ));
                }
            }
            let (s, bad) = Snapshot::from_text(&text);
            assert_eq!(bad, 0);
            s
        }
    }

    #[test]
    fn histogram_quantile_interpolates_like_promql() {
        let b = [
            (0.5, 50.0),
            (1.0, 50.0),
            (2.5, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 99 falls in (1, 2.5] holding 50: 1 + 1.5 * 49/50
        assert!((histogram_quantile(0.99, &b) - 2.47).abs() < 1e-9);
        assert!((histogram_quantile(0.5, &b) - 0.5).abs() < 1e-9);
        // rank in the +Inf bucket: the highest finite bound
        let inf = [(0.5, 10.0), (1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(histogram_quantile(0.99, &inf), 1.0);
        // first bucket interpolates from 0
        assert!(
            (histogram_quantile(0.5, &[(0.2, 10.0), (f64::INFINITY, 10.0)]) - 0.1).abs() < 1e-9
        );
        assert!(histogram_quantile(0.99, &[(0.5, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert!(histogram_quantile(0.99, &[(0.5, 3.0), (1.0, 4.0)]).is_nan());
        // non-monotonic counts are fixed up, not trusted
        let odd = [(0.5, 60.0), (1.0, 40.0), (f64::INFINITY, 100.0)];
        assert_eq!(histogram_quantile(0.99, &odd), 1.0);
    }

    #[test]
    fn api_p99_latency_sums_all_routes_from_bucket_deltas() {
        let mut e = Engine::new(vec![rule(RuleKind::ApiP99Latency, |r| {
            r.for_secs = Some(0.0)
        })]);
        let mut http = Http::default();
        // Old slow requests before the window must not count.
        http.record("/v1/calls", "200", 2.0, 500);
        assert!(e.observe(t(0.0), http.snapshot()).is_empty());
        // Fast traffic only: p99 within the 0.1 s bucket.
        http.record("/v1/calls", "200", 0.05, 100);
        let ts = e.observe(t(60.0), http.snapshot());
        assert!(ts.is_empty(), "{ts:?}");
        // 10 slow requests are fewer than 20: not enough data even though all are slow.
        let mut e2 = Engine::new(e.rules().to_vec());
        let mut h2 = Http::default();
        h2.record("/v1/campaigns", "200", 0.05, 0);
        e2.observe(t(0.0), h2.snapshot());
        h2.record("/v1/campaigns", "200", 3.0, 10);
        assert!(e2.observe(t(15.0), h2.snapshot()).is_empty());
        // Half of the requests, on another route, take 1-2.5 s: rank 198 of 200 lies 98/100
        // into the (1, 2.5] bucket: p99 = 1 + 1.5 * 0.98 = 2.47
        http.record("/v1/campaigns", "200", 2.0, 100);
        let fired = only(e.observe(t(120.0), http.snapshot()));
        assert!((fired.value - 2.47).abs() < 1e-9, "{fired:?}");
        assert_eq!(
            fired.summary,
            "API p99 latency 2.470 s over 5m > 1.000 s (200 requests)"
        );
    }

    #[test]
    fn http_5xx_rate_counts_5xx_over_all_responses() {
        let mut e = Engine::new(vec![rule(RuleKind::Http5xxRate, |r| {
            r.for_secs = Some(0.0)
        })]);
        let mut http = Http::default();
        http.record("/v1/calls", "200", 0.01, 10);
        e.observe(t(0.0), http.snapshot());
        // 3 errors in 15 requests: 20 %, but fewer than 20 requests
        http.record("/v1/calls", "200", 0.01, 12)
            .record("/v1/calls", "503", 0.01, 3);
        assert!(e.observe(t(15.0), http.snapshot()).is_empty());
        // 4xx are not server errors: 3 of 1015 = 0.3 %
        http.record("/v1/calls", "404", 0.01, 1000);
        assert!(e.observe(t(30.0), http.snapshot()).is_empty());
        // 10 more 500s: 13 of 1525 requests in the window = 0.85 %
        http.record("/v1/calls", "200", 0.01, 500)
            .record("/v1/campaigns", "500", 0.01, 10);
        let fired = only(e.observe(t(45.0), http.snapshot()));
        assert!((fired.value - 13.0 / 1525.0).abs() < 1e-9);
        assert_eq!(
            fired.summary,
            "API 5xx rate 0.9 % over 5m > 0.5 % (13 of 1525 requests)"
        );
    }

    fn queue(due: f64, age: f64) -> Snapshot {
        Snapshot::from_text(&format!(
            "outcall_queue_due_tasks {due}\noutcall_queue_oldest_due_age_seconds {age}\n"
        ))
        .0
    }

    #[test]
    fn queue_backlog_needs_growth_and_an_old_oldest_task() {
        let r = rule(RuleKind::QueueBacklog, |r| r.for_secs = Some(0.0));
        // Grew from 100 to 400 over 10 min, oldest due for 300 s at the end: fires then.
        let mut e = Engine::new(vec![r.clone()]);
        for k in 0..=40 {
            let at = k as f64 * 15.0;
            let ts = e.observe(t(at), queue(100.0 + 7.5 * k as f64, 100.0 + at / 3.0));
            if k < 40 {
                assert!(ts.is_empty(), "t = {at}: {ts:?}");
            } else {
                let fired = only(ts);
                assert_eq!(fired.value, 300.0);
                assert_eq!(
                    fired.summary,
                    "due queue grew by 300 tasks over 10m (now 400), oldest due 300 s"
                );
            }
        }
        // Growing but fresh (dialing keeps up): nothing.
        let mut e = Engine::new(vec![r.clone()]);
        for k in 0..=40 {
            assert!(e
                .observe(t(k as f64 * 15.0), queue(100.0 + k as f64, 30.0))
                .is_empty());
        }
        // Old but shrinking: nothing.
        let mut e = Engine::new(vec![r.clone()]);
        for k in 0..=40 {
            assert!(e
                .observe(t(k as f64 * 15.0), queue(500.0 - k as f64, 900.0))
                .is_empty());
        }
        // Gauges missing (no queue on this node): nothing, and a firing alert resolves.
        let mut e = Engine::new(vec![rule(RuleKind::QueueBacklog, |r| {
            r.for_secs = Some(0.0);
            r.resolve_for_secs = Some(0.0);
        })]);
        e.observe(t(0.0), queue(0.0, 900.0));
        assert_eq!(
            only(e.observe(t(15.0), queue(50.0, 900.0))).state,
            AlertState::Firing
        );
        let resolved = only(e.observe(t(30.0), Snapshot::new()));
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.summary, "due queue: no data over 10m");
    }

    #[test]
    fn the_ring_keeps_just_the_longest_window() {
        let mut e = Engine::new(vec![
            rule(RuleKind::TrunkDown, |_| {}),
            rule(RuleKind::QueueBacklog, |_| {}),
        ]);
        for k in 0..200 {
            e.observe(t(k as f64 * 15.0), queue(1.0, 1.0));
        }
        // 600 s / 15 s = 40 intervals: 41 snapshots.
        assert_eq!(e.retained(), 41);
        // A snapshot older than the newest one is ignored.
        assert!(e.observe(t(0.0), queue(1e6, 1e6)).is_empty());
        assert_eq!(e.retained(), 41);
    }

    #[test]
    fn window_lengths_read_naturally() {
        assert_eq!(fmt_window(300.0), "5m");
        assert_eq!(fmt_window(120.0), "2m");
        assert_eq!(fmt_window(90.0), "90s");
        assert_eq!(fmt_window(7200.0), "2h");
        assert_eq!(fmt_window(2.5), "2.5s");
    }
}
