//! The scheduler's side of trunk health ([`crate::health`]): feeding each trunk's tracker with
//! dispatches and results, applying its rate factor to the trunk's pacer, and recording every
//! transition as a system event, metrics and a log line.
//!
//! Events go to the store through one recorder task, in the order they happened; dispatch
//! never waits for the store. A failure to record is logged and counted
//! (`outcall_store_errors_total{component="scheduler"}`).

use super::{Scheduler, TrunkRt};
use crate::health::{Change, Circuit, DegradationConfig, Transition, TrunkHealth};
use crate::pacer::Pacer;
use outcall_domain::campaign::ContactId;
use outcall_domain::metrics as m;
use outcall_store::events::{kind, severity};
use outcall_store::{NewSystemEvent, Store};
use outcall_telephony::TrunkConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// How often time-driven health changes (half-open, recovery steps) are looked at.
const TICK: Duration = Duration::from_millis(100);

/// The health of one trunk as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrunkHealthView {
    pub trunk: String,
    /// Share of the trunk's rate the pacer allows (1 normal).
    pub factor: f64,
    pub circuit: Circuit,
    /// Failures over samples in the window (0 without samples).
    pub failure_ratio: f64,
    /// Finished attempts in the window.
    pub samples: u32,
    /// Calls per second the pacer allows now (`None`: no limit).
    pub max_cps: Option<f64>,
    /// Calls in progress the pacer allows now (`None`: no limit).
    pub max_concurrent: Option<u32>,
}

pub(super) type HealthViews = Arc<Mutex<BTreeMap<String, TrunkHealthView>>>;

/// What the scheduler keeps for trunk health besides each trunk's tracker.
pub(super) struct HealthRt {
    pub(super) cfg: DegradationConfig,
    pub(super) views: HealthViews,
    events: mpsc::UnboundedSender<NewSystemEvent>,
    last_tick: Option<Instant>,
}

impl HealthRt {
    /// Starts the event recorder.
    pub(super) fn start(cfg: DegradationConfig, store: Arc<dyn Store>) -> HealthRt {
        let (tx, mut rx) = mpsc::unbounded_channel::<NewSystemEvent>();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Err(err) = store.append_event(&e).await {
                    warn!(kind = %e.kind, subject = %e.subject, error = %err, "cannot record a system event");
                    metrics::counter!(m::STORE_ERRORS_TOTAL, "component" => "scheduler")
                        .increment(1);
                }
            }
        });
        HealthRt {
            cfg,
            views: HealthViews::default(),
            events: tx,
            last_tick: None,
        }
    }
}

impl TrunkRt {
    pub(super) fn new(name: &str, config: TrunkConfig, cfg: DegradationConfig) -> TrunkRt {
        metrics::gauge!(m::TRUNK_RATE_FACTOR, "trunk" => name.to_string()).set(1.0);
        metrics::gauge!(m::TRUNK_CIRCUIT, "trunk" => name.to_string()).set(Circuit::Closed.gauge());
        TrunkRt {
            pacer: Pacer::new(config.max_concurrent.unwrap_or(u32::MAX), config.max_cps),
            config: Arc::new(config),
            health: TrunkHealth::new(cfg),
        }
    }

    /// The pacer's limits: the configured ones scaled by the health's rate factor.
    pub(super) fn apply_limits(&mut self, now: Instant) {
        let (max, cps) = self
            .health
            .limits(self.config.max_concurrent, self.config.max_cps);
        self.pacer.set_limits(max, cps, now);
    }

    fn view(&self, name: &str) -> TrunkHealthView {
        TrunkHealthView {
            trunk: name.to_string(),
            factor: self.health.factor(),
            circuit: self.health.circuit(),
            failure_ratio: round3(self.health.failure_ratio()),
            samples: self.health.samples(),
            max_cps: self.pacer.bucket.as_ref().map(|b| round3(b.rate())),
            max_concurrent: (self.pacer.max_concurrent != u32::MAX)
                .then_some(self.pacer.max_concurrent),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn pct(v: f64) -> String {
    format!("{}%", (v * 1000.0).round() / 10.0)
}

impl Scheduler {
    /// Time-driven changes of every trunk (at most every [`TICK`]).
    pub(super) fn health_tick(&mut self, now: Instant) {
        if self
            .health
            .last_tick
            .is_some_and(|t| now.saturating_duration_since(t) < TICK)
        {
            return;
        }
        self.health.last_tick = Some(now);
        let names: Vec<String> = self.trunks.keys().cloned().collect();
        for name in names {
            self.health_update(&name, now, |h| h.tick(now));
        }
        let views = self
            .trunks
            .iter()
            .map(|(name, tr)| (name.clone(), tr.view(name)))
            .collect();
        *self.health.views.lock().unwrap_or_else(|e| e.into_inner()) = views;
    }

    /// An attempt is being dispatched to `trunk`.
    pub(super) fn note_dispatch(&mut self, trunk: &str, contact: ContactId, now: Instant) {
        self.health_update(trunk, now, |h| h.on_dispatch(now, contact));
    }

    /// An attempt dispatched to `trunk` ended (`fault` as [`crate::health::trunk_fault`] says).
    pub(super) fn note_finished(&mut self, trunk: &str, contact: ContactId, fault: Option<bool>) {
        let now = Instant::now();
        self.health_update(trunk, now, |h| h.on_finished(now, contact, fault));
    }

    fn health_update(
        &mut self,
        trunk: &str,
        now: Instant,
        f: impl FnOnce(&mut TrunkHealth) -> Vec<Transition>,
    ) {
        let Some(tr) = self.trunks.get_mut(trunk) else {
            return;
        };
        let before = tr.health.factor();
        let changes = f(&mut tr.health);
        if tr.health.factor() != before {
            tr.apply_limits(now);
            metrics::gauge!(m::TRUNK_RATE_FACTOR, "trunk" => trunk.to_string())
                .set(tr.health.factor());
        }
        if changes.is_empty() {
            return;
        }
        metrics::gauge!(m::TRUNK_CIRCUIT, "trunk" => trunk.to_string())
            .set(tr.health.circuit().gauge());
        let view = tr.view(trunk);
        self.health
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(trunk.to_string(), view);
        let at = self.deps.clock.now();
        for t in changes {
            self.report(trunk, &t, at);
        }
    }

    /// Logs, counts and records one transition.
    fn report(&self, trunk: &str, t: &Transition, at: jiff::Timestamp) {
        let fails = format!(
            "{} of {} calls failed in the last {} s",
            pct(t.failure_ratio),
            t.samples,
            t.window_secs
        );
        let open = t.open_secs.unwrap_or(0);
        let (kind, sev, counter, message) = match t.change {
            Change::Degraded => {
                warn!(
                    trunk,
                    factor = t.factor,
                    failure_ratio = t.failure_ratio,
                    samples = t.samples,
                    "trunk degraded: rate cut"
                );
                (
                    kind::TRUNK_DEGRADED,
                    severity::WARNING,
                    Some("degraded"),
                    format!(
                        "trunk {trunk} degraded: rate cut to {} of its limit ({fails})",
                        pct(t.factor)
                    ),
                )
            }
            Change::Recovered => {
                info!(trunk, "trunk recovered: configured limits restored");
                (
                    kind::TRUNK_RECOVERED,
                    severity::INFO,
                    Some("recovered"),
                    format!("trunk {trunk} recovered: its configured limits apply again"),
                )
            }
            Change::CircuitOpen { reopened } => {
                warn!(
                    trunk,
                    open_secs = open,
                    reopened,
                    failure_ratio = t.failure_ratio,
                    "trunk circuit open: no calls"
                );
                let why = if reopened {
                    "the probe call failed".to_string()
                } else {
                    format!("{} calls failed in a row", self.health.cfg.breaker_failures)
                };
                (
                    kind::TRUNK_CIRCUIT_OPEN,
                    severity::CRITICAL,
                    Some("circuit_open"),
                    format!("trunk {trunk}: {why}; circuit open, no calls for {open} s"),
                )
            }
            Change::CircuitHalfOpen => {
                info!(trunk, "trunk circuit half-open: one probe call");
                (
                    kind::TRUNK_CIRCUIT_HALF_OPEN,
                    severity::INFO,
                    None,
                    format!("trunk {trunk}: circuit half-open, one probe call goes through"),
                )
            }
            Change::CircuitClosed => {
                info!(
                    trunk,
                    factor = t.factor,
                    "trunk circuit closed: the probe call worked"
                );
                (
                    kind::TRUNK_CIRCUIT_CLOSED,
                    severity::INFO,
                    Some("circuit_closed"),
                    format!(
                        "trunk {trunk}: the probe call worked; circuit closed, rate at {} and recovering",
                        pct(t.factor)
                    ),
                )
            }
        };
        if let Some(c) = counter {
            metrics::counter!(m::DEGRADATIONS_TOTAL, "trunk" => trunk.to_string(), "kind" => c)
                .increment(1);
        }
        let _ = self.health.events.send(NewSystemEvent {
            at,
            kind: kind.into(),
            subject: trunk.into(),
            severity: sev.into(),
            message,
            details: serde_json::json!({
                "trunk": trunk,
                "factor": t.factor,
                "failure_ratio": round3(t.failure_ratio),
                "samples": t.samples,
                "window_secs": t.window_secs,
                "open_secs": t.open_secs,
            }),
        });
    }
}
