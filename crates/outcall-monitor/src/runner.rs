//! The running monitor: samples a metrics source every `interval_secs`, evaluates the rules,
//! sends notifications and hands every transition to a sink.
//!
//! Each notifier has its own queue and task, so a slow or failing one (logged, counted in
//! `outcall_alert_notifications_total{result="failed"}`) neither delays the evaluation nor the
//! other notifiers; a notifier sees the transitions in the order they happened.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::metrics as m;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, MonitorConfig};
use crate::engine::{AlertState, Engine, Transition};
use crate::expo::{self, Labels, Snapshot};
use crate::notify::{self, Notifier};

/// A boxed future, for the object-safe [`MetricsSource`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the metrics come from: a Prometheus exposition text per scrape.
pub trait MetricsSource: Send + Sync {
    fn scrape(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// A source that calls a function, e.g. the in-process exporter's render.
pub struct FnSource<F> {
    f: F,
}

impl<F> FnSource<F>
where
    F: Fn() -> String + Send + Sync,
{
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> MetricsSource for FnSource<F>
where
    F: Fn() -> String + Send + Sync,
{
    fn scrape(&self) -> BoxFuture<'_, Result<String, String>> {
        let text = (self.f)();
        Box::pin(async move { Ok(text) })
    }
}

type SeriesKey = (String, Labels);

#[derive(Default)]
struct UrlState {
    /// The last raw value of each cumulative series, to spot resets.
    raw: HashMap<SeriesKey, f64>,
    /// What resets took away, added back so the sum over nodes never goes down.
    offset: HashMap<SeriesKey, f64>,
    /// The last good samples (reset-adjusted), reused while the node does not answer.
    last: Option<Vec<(SeriesKey, f64)>>,
}

/// Scrapes the `/metrics` of one or more nodes and sums their samples by name and labels.
///
/// Three things keep the sum meaningful: a node that does not answer contributes its last good
/// samples (so its counters neither vanish nor come back looking like a reset); a node's
/// counter that went down (the node restarted) is continued from where it was, so one node's
/// restart is not mistaken for a reset of the sum; and a counter a node stopped rendering
/// (after a restart, until it moves again) keeps its last value. The scrape fails only when no
/// node answers. Gauges are summed as they are.
pub struct HttpSource {
    urls: Vec<reqwest::Url>,
    bearer: Option<String>,
    client: reqwest::Client,
    state: Mutex<Vec<UrlState>>,
}

impl HttpSource {
    /// `bearer` is sent as `Authorization: Bearer …` (the API's `/metrics` needs a token with
    /// `metrics:read`). Each request times out after `timeout`.
    pub fn new(
        urls: &[String],
        bearer: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if urls.is_empty() {
            return Err(ConfigError::Invalid("metrics source: no URL".into()));
        }
        let urls = urls
            .iter()
            .map(|u| {
                reqwest::Url::parse(u)
                    .map_err(|e| ConfigError::Invalid(format!("metrics source {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ConfigError::Invalid(format!("metrics source client: {e}")))?;
        let state = Mutex::new(urls.iter().map(|_| UrlState::default()).collect());
        Ok(Self {
            urls,
            bearer,
            client,
            state,
        })
    }

    async fn fetch(&self, url: &reqwest::Url) -> Result<String, String> {
        let mut req = self.client.get(url.clone());
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("{url}: status {status}"));
        }
        res.text().await.map_err(|e| format!("{url}: {e}"))
    }
}

impl MetricsSource for HttpSource {
    fn scrape(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let texts =
                futures_util::future::join_all(self.urls.iter().map(|u| self.fetch(u))).await;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut sum = Snapshot::new();
            let mut errors = Vec::new();
            for (text, st) in texts.into_iter().zip(state.iter_mut()) {
                match text {
                    Ok(text) => {
                        let parsed = expo::parse(&text);
                        let mut adjusted = Vec::with_capacity(parsed.samples.len());
                        for s in &parsed.samples {
                            let key = (s.name.clone(), s.labels.clone());
                            let mut v = s.value;
                            if parsed.is_cumulative(&s.name) {
                                if let Some(prev) = st.raw.insert(key.clone(), v) {
                                    if v < prev {
                                        *st.offset.entry(key.clone()).or_insert(0.0) += prev;
                                    }
                                }
                                v += st.offset.get(&key).copied().unwrap_or(0.0);
                            }
                            adjusted.push((key, v));
                        }
                        // A restarted node renders a counter again only once it moves: until
                        // then its last value stands, so the sum does not drop.
                        let seen: std::collections::HashSet<&SeriesKey> =
                            adjusted.iter().map(|(k, _)| k).collect();
                        let missing: Vec<(SeriesKey, f64)> = st
                            .raw
                            .iter()
                            .filter(|(k, _)| !seen.contains(k))
                            .map(|(k, raw)| {
                                (k.clone(), raw + st.offset.get(k).copied().unwrap_or(0.0))
                            })
                            .collect();
                        adjusted.extend(missing);
                        st.last = Some(adjusted);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics scrape failed, using the node's last samples");
                        errors.push(e);
                    }
                }
                for ((name, labels), v) in st.last.iter().flatten() {
                    sum.add(name.clone(), labels.clone(), *v);
                }
            }
            if errors.len() == self.urls.len() {
                return Err(errors.join("; "));
            }
            Ok(sum.render())
        })
    }
}

/// Receives every transition (the composition root records them as operator-visible events).
#[async_trait]
pub trait TransitionSink: Send + Sync {
    async fn record(&self, transition: &Transition);
}

/// Entry point: see [`Monitor::spawn`].
pub struct Monitor;

struct Outlet {
    channel: &'static str,
    min_severity: crate::config::Severity,
    queue: mpsc::Sender<Transition>,
}

impl Monitor {
    /// Validates the configuration, builds the notifiers (reading their secrets) and starts
    /// sampling on the current tokio runtime.
    pub fn spawn(
        config: MonitorConfig,
        source: Arc<dyn MetricsSource>,
        sink: Option<Arc<dyn TransitionSink>>,
    ) -> Result<MonitorHandle, ConfigError> {
        config.validate()?;
        let notifiers = config
            .notifiers
            .iter()
            .map(notify::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::spawn_with_notifiers(config, notifiers, source, sink))
    }

    /// Like [`Monitor::spawn`] with notifiers built by the caller (the configured ones are
    /// ignored).
    pub fn spawn_with_notifiers(
        config: MonitorConfig,
        notifiers: Vec<Arc<dyn Notifier>>,
        source: Arc<dyn MetricsSource>,
        sink: Option<Arc<dyn TransitionSink>>,
    ) -> MonitorHandle {
        let mut workers = Vec::new();
        let mut outlets = Vec::new();
        for n in notifiers {
            let (tx, mut rx) = mpsc::channel::<Transition>(256);
            outlets.push(Outlet {
                channel: n.channel(),
                min_severity: n.min_severity(),
                queue: tx,
            });
            workers.push(tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    match n.notify(&t).await {
                        Ok(()) => tracing::info!(
                            channel = n.channel(),
                            rule = %t.rule,
                            state = t.state.as_str(),
                            "alert notification sent"
                        ),
                        Err(e) => tracing::warn!(
                            channel = n.channel(),
                            rule = %t.rule,
                            state = t.state.as_str(),
                            error = %e,
                            "alert notification failed"
                        ),
                    }
                }
            }));
        }
        let firing = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, source, sink, outlets, firing.clone(), stop_rx));
        MonitorHandle {
            firing,
            stop: stop_tx,
            task,
            workers,
        }
    }
}

async fn run(
    config: MonitorConfig,
    source: Arc<dyn MetricsSource>,
    sink: Option<Arc<dyn TransitionSink>>,
    outlets: Vec<Outlet>,
    firing: Arc<Mutex<Vec<Transition>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut engine = Engine::new(config.effective_rules());
    tracing::info!(
        rules = engine.rules().len(),
        notifiers = outlets.len(),
        interval_secs = config.interval_secs,
        "monitor started"
    );
    let mut interval = tokio::time::interval(config.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let scrape_timeout = config.interval().max(Duration::from_secs(10));
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = interval.tick() => {}
        }
        let scraped = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = tokio::time::timeout(scrape_timeout, source.scrape()) => r,
        };
        let text = match scraped {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics scrape failed");
                continue;
            }
            Err(_) => {
                tracing::warn!("metrics scrape timed out");
                continue;
            }
        };
        let (snapshot, malformed) = Snapshot::from_text(&text);
        if malformed > 0 {
            tracing::debug!(malformed, "skipped malformed exposition lines");
        }
        let transitions = engine.observe(Timestamp::now(), snapshot);
        for (rule, n) in engine.firing_counts() {
            metrics::gauge!(m::ALERTS_FIRING, "rule" => rule).set(n as f64);
        }
        *firing.lock().unwrap_or_else(|e| e.into_inner()) = engine.firing();
        for t in transitions {
            match t.state {
                AlertState::Firing => tracing::warn!(
                    rule = %t.rule,
                    subject = t.subject.as_deref().unwrap_or(""),
                    severity = t.severity.as_str(),
                    summary = %t.summary,
                    "alert firing"
                ),
                AlertState::Resolved => tracing::info!(
                    rule = %t.rule,
                    subject = t.subject.as_deref().unwrap_or(""),
                    summary = %t.summary,
                    "alert resolved"
                ),
            }
            for o in &outlets {
                if t.severity < o.min_severity {
                    continue;
                }
                if o.queue.try_send(t.clone()).is_err() {
                    tracing::warn!(channel = o.channel, rule = %t.rule, "alert notification dropped: queue full");
                    metrics::counter!(m::ALERT_NOTIFICATIONS_TOTAL, "channel" => o.channel, "result" => "dropped")
                        .increment(1);
                }
            }
            if let Some(sink) = &sink {
                sink.record(&t).await;
            }
        }
    }
}

/// A running monitor.
pub struct MonitorHandle {
    firing: Arc<Mutex<Vec<Transition>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl MonitorHandle {
    /// The alerts firing now (state `Firing`, latest value and summary).
    pub fn firing(&self) -> Vec<Transition> {
        self.firing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops sampling, then lets the notifiers finish what is queued (10 s at most).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let drain = futures_util::future::join_all(self.workers);
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("alert notifications still pending at shutdown were dropped");
        }
    }
}
