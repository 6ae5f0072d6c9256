//! The composition root: builds the embedded node (SQLite store, number vault, SIP user agent,
//! scheduler, campaign service) from one config, for `serve` and `campaign run`.

use anyhow::{Context, Result};
use outcall_api::access::{Access, AccessConfig};
use outcall_api::auth::TokenSigner;
use outcall_api::webhook::{DispatcherHandle, WebhookConfig, WebhookDispatcher, WebhookSink};
use outcall_api::CampaignService;
use outcall_domain::classify::ClassificationConfig;
use outcall_domain::Classifier;
use outcall_pool::NumberVault;
use outcall_scheduler::{Clock, SchedulerConfig, SchedulerDeps, SchedulerHandle};
use outcall_store::{Store, TrunkRecord};
use outcall_telephony::{SipUserAgent, TrunkConfig, UaConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `outcall.toml`: everything a node needs. Every field has a default, so no file is needed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// SQLite database, number keys and recordings live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// HTTP API address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Country code for national numbers.
    #[serde(default = "default_cc")]
    pub default_country_code: String,
    /// Seconds calls in flight may take to finish on shutdown.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Calls in progress on this node, all campaigns together.
    #[serde(default = "default_node_concurrency")]
    pub max_concurrent_calls: u32,
    /// A `phone.dat` attribution file (号码归属地) for Chinese mobiles; libphonenumber's data
    /// answers without it.
    #[serde(default)]
    pub phone_dat: Option<PathBuf>,
    /// Attribution sources, in order: `phone_dat` (needs `phone_dat`) and `libphonenumber`.
    #[serde(default = "default_chain")]
    pub attribution: Vec<String>,
    /// Target false-positive rate of an import's dedup filter.
    #[serde(default = "default_fp")]
    pub dedup_false_positive_rate: f64,
    /// Days a learned number status (空号) is trusted before it ages out.
    #[serde(default = "default_status_ttl")]
    pub number_status_ttl_days: u64,
    #[serde(default)]
    pub ua: UaConfig,
    /// Trunks written to the store at start (the API can add more).
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    #[serde(default)]
    pub classification: ClassificationConfig,
    /// Hours a session token (from `/v1/auth/login`) stays valid.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_hours: u64,
    /// Days audit log entries are kept before the purge deletes them.
    #[serde(default = "default_audit_retention")]
    pub audit_retention_days: u64,
    /// Days delivered and failed status webhook deliveries are kept (pending ones always stay).
    #[serde(default = "default_webhook_retention")]
    pub webhook_retention_days: u64,
    /// Days system events (alerts, trunk degradation) are kept.
    #[serde(default = "default_event_retention")]
    pub event_retention_days: u64,
    /// File with the session token key (hex); `OUTCALL_JWT_SECRET` overrides it. Created
    /// under `<data_dir>/keys/jwt.key` when not set.
    #[serde(default)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Serve the API over HTTPS with these PEM files.
    #[serde(default)]
    pub tls: Option<outcall_api::tls::TlsConfig>,
    /// The first admin's name and password file, from the command line (`serve --admin-user
    /// --admin-password-file`); used only on a node without users.
    #[serde(skip)]
    pub bootstrap_admin: (Option<String>, Option<PathBuf>),
    /// File with the status webhook signing secret; `OUTCALL_WEBHOOK_SECRET` overrides it.
    /// Created under `<data_dir>/keys/webhook.key` when not set.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Tries of a status webhook event before it is given up (`failed`).
    #[serde(default = "default_webhook_max_tries")]
    pub webhook_max_tries: u32,
    /// Longest wait between two tries of a status webhook (waits double from 1 s).
    #[serde(default = "default_webhook_max_backoff")]
    pub webhook_max_backoff_secs: u64,
    /// Prometheus metrics at `/metrics` (permission `metrics:read`).
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// Seconds `/readyz` reports `draining` before the node stops taking requests, so load
    /// balancers move away first.
    #[serde(default)]
    pub drain_delay_secs: u64,
    /// Alert rules over this node's metrics (the `monitor` role, in process): with no rules
    /// the built-in five apply; notifiers are webhooks and SMTP.
    #[serde(default)]
    pub monitor: outcall_monitor::MonitorConfig,
    /// A TOML file with the monitor's settings (`interval_secs`, `[[rules]]`,
    /// `[[notifiers]]`), used instead of `[monitor]`.
    #[serde(default)]
    pub monitor_file: Option<PathBuf>,
    /// Run the monitor (needs `metrics`).
    #[serde(default = "default_true")]
    pub monitor_enabled: bool,
    /// The `/metrics` URLs of the nodes the monitor judges (a separate monitor role); empty:
    /// this node's own metrics.
    #[serde(default)]
    pub monitor_targets: Vec<String>,
    /// A file holding the API key the monitor scrapes with (permission `metrics:read`; else
    /// `OUTCALL_MONITOR_TOKEN`).
    #[serde(default)]
    pub monitor_token_file: Option<PathBuf>,
    /// Automatic degradation and circuit breaking of failing trunks.
    #[serde(default)]
    pub degradation: outcall_scheduler::DegradationConfig,
    /// This node's name in attempts, CDRs, the dialer registry and logs (`OUTCALL_NODE`;
    /// default: `ua.node`).
    #[serde(default)]
    pub node: Option<String>,
    /// The roles this node runs (`--role` and `OUTCALL_ROLES` take precedence); none: all.
    #[serde(default)]
    pub roles: Vec<super::dist::Role>,
    /// Number keys, the token key and the webhook key (default `<data_dir>/keys`). Every
    /// node of a deployment needs the same keys.
    #[serde(default)]
    pub keys_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: super::dist::StoreConfig,
    #[serde(default)]
    pub redis: super::dist::RedisConfig,
    #[serde(default)]
    pub bus: super::dist::BusConfig,
    #[serde(default)]
    pub rpc: super::dist::RpcConfig,
    #[serde(default)]
    pub recordings: super::dist::RecordingsConfig,
    /// The roles in force, resolved by [`AppConfig::load`] and the command line.
    #[serde(skip, default = "super::dist::Roles::all")]
    pub active_roles: super::dist::Roles,
}

fn default_true() -> bool {
    true
}

fn default_webhook_max_tries() -> u32 {
    15
}
fn default_webhook_max_backoff() -> u64 {
    3600
}

fn default_token_ttl() -> u64 {
    12
}
fn default_audit_retention() -> u64 {
    183
}
fn default_webhook_retention() -> u64 {
    30
}
fn default_event_retention() -> u64 {
    90
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("outcall-data")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_cc() -> String {
    "86".into()
}
fn default_grace() -> u64 {
    30
}
fn default_chain() -> Vec<String> {
    vec!["phone_dat".into(), "libphonenumber".into()]
}
fn default_fp() -> f64 {
    0.01
}
fn default_status_ttl() -> u64 {
    90
}
fn default_node_concurrency() -> u32 {
    2000
}

impl AppConfig {
    /// Reads the config file (if any) and applies `OUTCALL_DATA_DIR` / `OUTCALL_LISTEN`.
    pub fn load(path: Option<&Path>) -> Result<AppConfig> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?,
            None => String::new(),
        };
        let mut cfg: AppConfig = toml::from_str(&text).with_context(|| match path {
            Some(p) => format!("invalid config {}", p.display()),
            None => "invalid default config".into(),
        })?;
        if let Ok(d) = std::env::var("OUTCALL_DATA_DIR") {
            cfg.data_dir = d.into();
        }
        if let Ok(l) = std::env::var("OUTCALL_LISTEN") {
            cfg.listen = l.parse().context("OUTCALL_LISTEN is not host:port")?;
        }
        if let Ok(n) = std::env::var("OUTCALL_NODE") {
            cfg.node = Some(n);
        }
        if let Some(n) = &cfg.node {
            cfg.ua.node = n.clone();
        }
        if let Ok(a) = std::env::var("OUTCALL_RPC_ADVERTISE") {
            cfg.rpc.advertise = Some(a);
        }
        cfg.active_roles = match std::env::var("OUTCALL_ROLES") {
            Ok(r) => super::dist::Roles::parse(&r)?,
            Err(_) => super::dist::Roles::of(&cfg.roles),
        };
        Ok(cfg)
    }

    /// Where the node's keys live.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

/// `/readyz` of a node: the store answers, the scheduler runs (scheduler role), the event
/// path runs, the shared engines answer (distributed roles), not draining.
pub struct NodeHealth {
    store: Arc<dyn Store>,
    scheduler: Option<SchedulerHandle>,
    events: Option<Arc<WebhookSink>>,
    /// Checks of the distributed parts (Redis, the bus, the dialer's registration).
    extra: Vec<Arc<dyn super::node::Probe>>,
    draining: std::sync::atomic::AtomicBool,
}

impl NodeHealth {
    /// Marks the node as draining: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!(outcall_domain::metrics::READY).set(0.0);
    }
}

impl outcall_api::http::Readiness for NodeHealth {
    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn checks(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Vec<outcall_api::http::Check>> + Send + '_>,
    > {
        Box::pin(async move {
            let store = tokio::time::timeout(
                Duration::from_secs(2),
                self.store.due_backlog(jiff::Timestamp::now()),
            )
            .await;
            let store = match store {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 2 s".to_string()),
            };
            let mut checks: Vec<(String, Option<String>)> = vec![("store".into(), store)];
            if let Some(s) = &self.scheduler {
                checks.push((
                    "scheduler".into(),
                    (!s.is_running()).then(|| "stopped".to_string()),
                ));
            }
            if let Some(e) = &self.events {
                checks.push((
                    "bus".into(),
                    (!e.is_running()).then(|| "stopped".to_string()),
                ));
            }
            for p in &self.extra {
                let r = tokio::time::timeout(Duration::from_secs(2), p.check()).await;
                let error = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("no answer within 2 s".to_string()),
                };
                checks.push((p.name().to_string(), error));
            }
            checks
                .into_iter()
                .map(|(name, error)| outcall_api::http::Check {
                    name,
                    ok: error.is_none(),
                    error,
                })
                .collect()
        })
    }
}

/// A running node: every role in one process (the embedded default), or some of them.
pub struct App {
    pub roles: super::dist::Roles,
    pub service: Arc<CampaignService>,
    pub access: Arc<Access>,
    purge: tokio::task::JoinHandle<()>,
    pub scheduler: Option<SchedulerHandle>,
    /// The SIP user agent (dialer role).
    pub ua: Option<SipUserAgent>,
    pub grace: Duration,
    /// Status webhooks: the scheduler's events into the outbox, and its delivery.
    webhook_sink: Option<Arc<WebhookSink>>,
    webhooks: Option<DispatcherHandle>,
    /// The distributed parts this node runs (dialer service, ingest, registry, spool).
    parts: super::node::Parts,
    pub health: Arc<NodeHealth>,
    /// `/metrics` and `/readyz` of this node.
    pub observability: outcall_api::http::Observability,
    samplers: tokio::task::JoinHandle<()>,
    monitor: std::sync::Mutex<Option<outcall_monitor::MonitorHandle>>,
}

/// Records the monitor's transitions as operator-visible events (`GET /v1/events`).
struct AlertEvents {
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl outcall_monitor::TransitionSink for AlertEvents {
    async fn record(&self, t: &outcall_monitor::Transition) {
        let firing = t.state == outcall_monitor::AlertState::Firing;
        let e = outcall_store::NewSystemEvent {
            at: t.at,
            kind: if firing {
                "alert.firing"
            } else {
                "alert.resolved"
            }
            .into(),
            subject: match &t.subject {
                Some(s) => format!("{}:{s}", t.rule),
                None => t.rule.clone(),
            },
            severity: if firing { t.severity.as_str() } else { "info" }.into(),
            message: t.summary.clone(),
            details: serde_json::to_value(t).unwrap_or_default(),
        };
        if let Err(err) = self.store.append_event(&e).await {
            metrics::counter!(outcall_domain::metrics::STORE_ERRORS_TOTAL, "component" => "monitor")
                .increment(1);
            tracing::warn!(error = %err, rule = %t.rule, "cannot record an alert event");
        }
    }
}

impl App {
    pub async fn start(cfg: &AppConfig, extra_trunks: &[TrunkConfig]) -> Result<App> {
        use super::dist::Role;
        let roles = cfg.active_roles.clone();
        // First, so that what the parts record while they start (trunk gauges) is kept.
        let recorder = if cfg.metrics {
            Some(super::telemetry::install_metrics().map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        let store = super::node::open_store(cfg).await?;
        // Several nodes: campaigns, blacklists and number statuses cached in memory and in
        // Redis, invalidated on every node when one of them changes them.
        let store: Arc<dyn Store> = match cfg.redis.url()? {
            Some(url) if !roles.is_all() => {
                let conn = outcall_queue::RedisConn::connect(&url, &cfg.redis.namespace)
                    .await
                    .with_context(|| {
                        format!("cannot connect to Redis at {}", super::node::redact(&url))
                    })?;
                Arc::new(
                    super::cached_store::CachedStore::with_redis(
                        store,
                        &conn,
                        &outcall_queue::CacheConfig::default(),
                    )
                    .await
                    .context("cannot subscribe to cache invalidations")?,
                )
            }
            _ => store,
        };
        let vault = Arc::new(
            NumberVault::load_or_create(&cfg.keys_dir().join("number.keys"))
                .context("cannot load number keys")?,
        );
        for t in cfg.trunks.iter().chain(extra_trunks) {
            if t.password.is_some() {
                anyhow::bail!(
                    "trunk `{}`: give its password with password_env or password_file",
                    t.name
                );
            }
            store
                .upsert_trunk(&TrunkRecord {
                    name: t.name.clone(),
                    config: serde_json::to_value(t)?,
                })
                .await?;
        }
        if !(cfg.dedup_false_positive_rate > 0.0 && cfg.dedup_false_positive_rate < 0.5) {
            anyhow::bail!("dedup_false_positive_rate must be between 0 and 0.5");
        }
        cfg.degradation
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid [degradation]: {e}"))?;
        let mut sources = Vec::new();
        for name in &cfg.attribution {
            sources.push(match name.as_str() {
                "phone_dat" => match &cfg.phone_dat {
                    Some(p) => outcall_pool::number::Source::PhoneDat(
                        outcall_pool::attribution::PhoneDat::open(p)?,
                    ),
                    None => continue,
                },
                "libphonenumber" => outcall_pool::number::Source::LibPhoneNumber,
                other => anyhow::bail!(
                    "unknown attribution source `{other}` (phone_dat, libphonenumber)"
                ),
            });
        }
        let ua = if roles.has(Role::Dialer) {
            Some(
                SipUserAgent::start(cfg.ua.clone(), Classifier::from_config(&cfg.classification))
                    .await
                    .context("cannot start the SIP user agent")?,
            )
        } else {
            None
        };
        let mut parts = super::node::Parts::start(cfg, store.clone(), ua.clone()).await?;
        let clock = Clock::system();
        let (webhooks, webhook_sink) = if roles.has(Role::Api) || roles.has(Role::Scheduler) {
            let mut webhook_cfg = WebhookConfig::new(
                outcall_api::webhook::load_or_create_secret(
                    cfg.webhook_secret_file.as_deref(),
                    &cfg.keys_dir().join("webhook.key"),
                )
                .context("cannot load the webhook secret")?,
            );
            webhook_cfg.max_tries = cfg.webhook_max_tries.max(1);
            webhook_cfg.max_backoff = Duration::from_secs(cfg.webhook_max_backoff_secs.max(1));
            let webhooks = WebhookDispatcher::start(store.clone(), webhook_cfg, Default::default())
                .context("cannot start the webhook dispatcher")?;
            let sink = WebhookSink::start(store.clone(), webhooks.waker());
            (Some(webhooks), Some(sink))
        } else {
            (None, None)
        };
        let scheduler = if roles.has(Role::Scheduler) {
            let engine: Arc<dyn outcall_telephony::CallEngine> = match &ua {
                Some(ua) if roles.is_all() => Arc::new(ua.clone()),
                _ => parts.remote_engine(cfg)?,
            };
            let deps = SchedulerDeps {
                store: store.clone(),
                engine,
                vault: vault.clone(),
                clock,
                events: webhook_sink
                    .clone()
                    .map(|s| s as Arc<dyn outcall_scheduler::CallEventSink>),
                queue: parts.queue(),
                limiter: parts.limiter(),
            };
            let distributed = !roles.is_all();
            let sched_cfg = SchedulerConfig {
                node: cfg.ua.node.clone(),
                max_concurrent: cfg.max_concurrent_calls,
                recordings_dir: Some(cfg.data_dir.join("recordings")),
                number_status_ttl: Duration::from_secs(cfg.number_status_ttl_days * 86400),
                degradation: cfg.degradation,
                sync_interval: distributed.then_some(Duration::from_secs(1)),
                reconcile_all: !distributed,
                // Dialer nodes publish CDRs to the bus when there is one; ingest writes them.
                store_cdrs: !distributed || cfg.bus.kind == super::dist::BusKind::Local,
                ..SchedulerConfig::default()
            };
            Some(outcall_scheduler::start(deps, sched_cfg).await?)
        } else {
            None
        };
        let service = Arc::new(CampaignService {
            store,
            vault,
            scheduler: scheduler.clone(),
            clock,
            default_country_code: cfg.default_country_code.clone(),
            number_status_ttl: Duration::from_secs(cfg.number_status_ttl_days * 86400),
            attributor: Arc::new(outcall_pool::number::Attributor::chain(sources)),
            jobs: Default::default(),
            dedup_false_positive_rate: cfg.dedup_false_positive_rate,
            webhooks: webhooks.as_ref().map(|w| w.waker()),
        });
        let access = Arc::new(build_access(cfg, service.store.clone())?);
        if roles.has(Role::Api) {
            bootstrap_admin(cfg, &access).await?;
        }
        let purge = access.spawn_purge(Duration::from_secs(3600));
        let health = Arc::new(NodeHealth {
            store: service.store.clone(),
            scheduler: scheduler.clone(),
            events: webhook_sink.clone(),
            extra: parts.probes(),
            draining: Default::default(),
        });
        let metrics = if let Some(render) = recorder {
            let ua_q = ua.clone();
            let gauges = parts.gauges();
            Some(Arc::new(move || {
                if let Some(ua) = &ua_q {
                    ua.refresh_quality();
                }
                gauges();
                render()
            }) as outcall_api::http::observe::MetricsRender)
        } else {
            None
        };
        let run_monitor = cfg.monitor_enabled && roles.has(Role::Monitor);
        let monitor = match (&metrics, run_monitor) {
            (_, true) if !cfg.monitor_targets.is_empty() => {
                let mcfg = match &cfg.monitor_file {
                    Some(f) => outcall_monitor::MonitorConfig::from_file(f)
                        .with_context(|| format!("invalid monitor file {}", f.display()))?,
                    None => cfg.monitor.clone(),
                };
                let token = match (
                    &cfg.monitor_token_file,
                    std::env::var("OUTCALL_MONITOR_TOKEN"),
                ) {
                    (_, Ok(t)) => Some(t),
                    (Some(f), _) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| {
                                format!("cannot read monitor_token_file {}", f.display())
                            })?
                            .trim()
                            .to_string(),
                    ),
                    _ => None,
                };
                let source = Arc::new(
                    outcall_monitor::HttpSource::new(
                        &cfg.monitor_targets,
                        token,
                        Duration::from_secs(5),
                    )
                    .map_err(|e| anyhow::anyhow!("invalid monitor_targets: {e}"))?,
                );
                let sink = Arc::new(AlertEvents {
                    store: service.store.clone(),
                });
                Some(
                    outcall_monitor::Monitor::spawn(mcfg, source, Some(sink))
                        .context("invalid monitor settings")?,
                )
            }
            (Some(render), true) => {
                let mcfg = match &cfg.monitor_file {
                    Some(f) => outcall_monitor::MonitorConfig::from_file(f)
                        .with_context(|| format!("invalid monitor file {}", f.display()))?,
                    None => cfg.monitor.clone(),
                };
                let render = render.clone();
                let source = Arc::new(outcall_monitor::FnSource::new(move || render()));
                let sink = Arc::new(AlertEvents {
                    store: service.store.clone(),
                });
                Some(
                    outcall_monitor::Monitor::spawn(mcfg, source, Some(sink))
                        .context("invalid monitor settings")?,
                )
            }
            (None, true) => {
                tracing::warn!("the monitor needs metrics = true: not started");
                None
            }
            _ => None,
        };
        parts.spawn_retention(cfg, service.store.clone());
        metrics::gauge!(outcall_domain::metrics::READY).set(1.0);
        let samplers = tokio::spawn(sample_queue(service.store.clone()));
        let observability = outcall_api::http::Observability {
            metrics,
            readiness: Some(health.clone()),
        };
        tracing::info!(roles = ?roles.names(), node = %cfg.ua.node, "node started");
        Ok(App {
            roles,
            service,
            access,
            purge,
            scheduler,
            ua,
            grace: Duration::from_secs(cfg.shutdown_grace_secs),
            webhook_sink,
            webhooks,
            parts,
            health,
            observability,
            samplers,
            monitor: std::sync::Mutex::new(monitor),
        })
    }

    /// Drains: no new calls, calls in flight finish (up to the grace period), then SIP stops.
    pub async fn shutdown(&self) {
        self.health.drain();
        if let Some(ua) = &self.ua {
            ua.begin_stop();
        }
        self.parts.begin_drain().await;
        self.purge.abort();
        self.samplers.abort();
        let monitor = self
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = monitor {
            m.shutdown().await;
        }
        if let Some(s) = &self.scheduler {
            s.shutdown(self.grace).await;
        }
        self.parts.finish(self.grace).await;
        // The last attempts' events: into the outbox, and out if the receiver takes them soon
        // (the rest goes out after the next start).
        if let Some(sink) = &self.webhook_sink {
            sink.flush().await;
        }
        if let Some(w) = &self.webhooks {
            w.settle(self.grace.min(Duration::from_secs(10))).await;
            w.shutdown(Duration::from_secs(1)).await;
        }
        if let Some(ua) = &self.ua {
            ua.shutdown();
        }
    }
}

/// Keeps the backlog gauges current: due contacts of running campaigns and the age of the
/// oldest, every 5 s.
async fn sample_queue(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        match store.due_backlog(now).await {
            Ok((n, oldest)) => {
                metrics::gauge!(outcall_domain::metrics::QUEUE_DUE).set(n as f64);
                let age = oldest.map_or(0.0, |o| now.duration_since(o).as_secs_f64().max(0.0));
                metrics::gauge!(outcall_domain::metrics::QUEUE_OLDEST_AGE).set(age);
            }
            Err(e) => {
                metrics::counter!(outcall_domain::metrics::STORE_ERRORS_TOTAL, "component" => "monitor")
                    .increment(1);
                tracing::warn!(error = %e, "cannot read the queue backlog");
            }
        }
    }
}

/// The access layer: the session token key from `OUTCALL_JWT_SECRET`, the configured file, or
/// `<data_dir>/keys/jwt.key` (created on first start).
pub fn build_access(cfg: &AppConfig, store: Arc<dyn Store>) -> Result<Access> {
    let secret = match std::env::var("OUTCALL_JWT_SECRET") {
        Ok(s) if s.len() >= 32 => s.into_bytes(),
        Ok(_) => anyhow::bail!("OUTCALL_JWT_SECRET needs at least 32 characters"),
        Err(_) => {
            let path = cfg
                .jwt_secret_file
                .clone()
                .unwrap_or_else(|| cfg.keys_dir().join("jwt.key"));
            outcall_api::access::load_or_create_secret(&path)
                .with_context(|| format!("cannot load the token key {}", path.display()))?
        }
    };
    Ok(Access::new(
        store,
        TokenSigner::new(&secret).map_err(anyhow::Error::msg)?,
        AccessConfig {
            token_ttl: Duration::from_secs(cfg.token_ttl_hours.max(1) * 3600),
            audit_retention: Duration::from_secs(cfg.audit_retention_days.max(1) * 86400),
            webhook_retention: Duration::from_secs(cfg.webhook_retention_days.max(1) * 86400),
            event_retention: Duration::from_secs(cfg.event_retention_days.max(1) * 86400),
        },
    ))
}

/// On a node without users, creates the first admin: `OUTCALL_ADMIN_USER` (default `admin`)
/// with the password in `OUTCALL_ADMIN_PASSWORD` or the file `OUTCALL_ADMIN_PASSWORD_FILE`;
/// without either, a random password written to `<data_dir>/admin-password` (mode 0600).
async fn bootstrap_admin(cfg: &AppConfig, access: &Access) -> Result<()> {
    if access.store.count_users().await? > 0 {
        return Ok(());
    }
    let user = cfg
        .bootstrap_admin
        .0
        .clone()
        .or_else(|| std::env::var("OUTCALL_ADMIN_USER").ok())
        .unwrap_or_else(|| "admin".into());
    let file = cfg.bootstrap_admin.1.clone().or_else(|| {
        std::env::var("OUTCALL_ADMIN_PASSWORD_FILE")
            .ok()
            .map(PathBuf::from)
    });
    let (password, generated) = match (std::env::var("OUTCALL_ADMIN_PASSWORD"), file) {
        (Ok(p), _) => (p, None),
        (_, Some(f)) => (
            std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the admin password file {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None,
        ),
        _ => {
            let p = outcall_api::auth::random_secret_hex()[..24].to_string();
            let path = cfg.data_dir.join("admin-password");
            let _ = std::fs::remove_file(&path);
            outcall_api::access::write_private(&path, &p)
                .with_context(|| format!("cannot write {}", path.display()))?;
            (p, Some(path))
        }
    };
    access
        .bootstrap_admin(&user, &password)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first admin: {e}"))?;
    match generated {
        Some(path) => eprintln!(
            "outcall: created the admin user `{user}`; its password is in {}",
            path.display()
        ),
        None => eprintln!("outcall: created the admin user `{user}`"),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
