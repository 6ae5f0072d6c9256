//! The distributed parts of a node, by role: the store it opens, the dialer service and its
//! registration, the remote call engine of a scheduler, the ingest consumer, the bus publisher
//! with its spool, and the retention jobs.

use super::app::AppConfig;
use super::dist::Role;
use anyhow::{Context, Result};
use outcall_bus::Publisher as _;
use outcall_queue::{DialerInfo, DialerRegistry, RedisConn, RedisRegistry};
use outcall_store::sqlite::SqliteStore;
use outcall_store::Store;
use outcall_telephony::SipUserAgent;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A dependency `/readyz` asks about.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

/// The store: PostgreSQL when `[store]` names one, else SQLite in the data directory.
pub async fn open_store(cfg: &AppConfig) -> Result<Arc<dyn Store>> {
    if let Some(url) = cfg.store.postgres_url()? {
        let opts = outcall_store::postgres::PgOptions {
            max_connections: cfg.store.max_connections.max(1),
            ..Default::default()
        };
        let store = outcall_store::postgres::PgStore::connect(&url, opts)
            .await
            .with_context(|| format!("cannot open the PostgreSQL store at {}", redact(&url)))?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(
        SqliteStore::open(&cfg.data_dir.join("outcall.db"))
            .await
            .context("cannot open the database")?,
    ))
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A publisher to the configured bus, behind the on-disk spool.
type Spooled = outcall_bus::SpoolingPublisher<Arc<dyn outcall_bus::Publisher>>;

/// What a node runs besides the embedded parts.
#[derive(Default)]
pub struct Parts {
    redis: Option<RedisConn>,
    publisher: Option<Arc<Spooled>>,
    ingest: Option<tokio::task::JoinHandle<()>>,
    dialer: Option<DialerNode>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
}

struct DialerNode {
    service: outcall_rpc::DialerService,
    server_stop: CancellationToken,
    registry: Arc<dyn DialerRegistry>,
    info: DialerInfo,
    ttl: Duration,
}

/// The live dialers, from the registry in Redis (read at most twice a second).
struct RegistryDirectory {
    registry: Arc<dyn DialerRegistry>,
    cached: tokio::sync::Mutex<(
        Option<tokio::time::Instant>,
        Vec<outcall_rpc::DialerEndpoint>,
    )>,
}

#[async_trait::async_trait]
impl outcall_rpc::DialerDirectory for RegistryDirectory {
    async fn live(&self) -> Vec<outcall_rpc::DialerEndpoint> {
        let mut c = self.cached.lock().await;
        let fresh =
            c.0.is_some_and(|at| at.elapsed() < Duration::from_millis(500));
        if !fresh {
            match self.registry.live(outcall_queue::now_ms()).await {
                Ok(list) => {
                    c.1 = list
                        .into_iter()
                        .filter(|d| !d.draining)
                        .map(|d| outcall_rpc::DialerEndpoint {
                            node: d.node,
                            addr: d.rpc_addr,
                            capacity: d.capacity,
                            active: d.active,
                        })
                        .collect();
                    c.0 = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the dialer registry"),
            }
        }
        c.1.clone()
    }
}

/// `/readyz`: Redis answers.
struct RedisProbe(Arc<dyn DialerRegistry>);

#[async_trait::async_trait]
impl Probe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }
    async fn check(&self) -> Result<(), String> {
        self.0
            .live(outcall_queue::now_ms())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Parts {
    /// Starts the parts of the node's roles that need no scheduler: the dialer's gRPC service.
    pub async fn start(
        cfg: &AppConfig,
        store: Arc<dyn Store>,
        ua: Option<SipUserAgent>,
    ) -> Result<Parts> {
        let mut parts = Parts::default();
        let roles = &cfg.active_roles;
        if roles.is_all() {
            return Ok(parts);
        }
        if let Some(url) = cfg.redis.url()? {
            parts.redis = Some(
                RedisConn::connect(&url, &cfg.redis.namespace)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {}", redact(&url)))?,
            );
        }
        if roles.has(Role::Ingest) {
            match open_bus(cfg).await? {
                Some(bus) => {
                    let consumer = bus.cdr_consumer().await?;
                    let sink = Arc::new(StoreCdrs {
                        store: store.clone(),
                    });
                    let stop = parts.stop.clone();
                    parts.ingest = Some(tokio::spawn(async move {
                        let stats = consumer.run(sink, stop).await;
                        tracing::info!(?stats, "ingest stopped");
                    }));
                }
                None => tracing::warn!(
                    "the ingest role has nothing to consume with [bus] kind = local: CDRs are written with their attempts"
                ),
            }
        }
        if let (true, Some(ua)) = (roles.has(Role::Dialer), ua) {
            let Some(conn) = parts.redis.clone() else {
                anyhow::bail!("the dialer role needs [redis] url (its registry)");
            };
            if let Some(bus) = open_bus(cfg).await? {
                let spool = cfg.bus.spool_dir(&cfg.data_dir);
                let publisher = outcall_bus::SpoolingPublisher::open(
                    bus.publisher(),
                    outcall_bus::SpoolConfig::new(&spool),
                )
                .await
                .with_context(|| format!("cannot open the bus spool {}", spool.display()))?;
                parts.publisher = Some(Arc::new(publisher));
            }
            let hook = Arc::new(DialerReports {
                publisher: parts.publisher.clone(),
                #[cfg(feature = "s3")]
                uploader: super::recordings::RecordingUploader::from_config(&cfg.recordings)?,
            });
            let service = outcall_rpc::DialerService::new(
                Arc::new(ua),
                cfg.ua.node.clone(),
                cfg.max_concurrent_calls,
            )
            .with_recordings(cfg.data_dir.join("recordings"))
            .with_hook(hook);
            let listener = tokio::net::TcpListener::bind(cfg.rpc.listen)
                .await
                .with_context(|| format!("cannot listen for gRPC on {}", cfg.rpc.listen))?;
            let bound = listener.local_addr()?;
            let server_stop = CancellationToken::new();
            let (svc, stop) = (service.clone(), server_stop.clone());
            parts.tasks.push(tokio::spawn(async move {
                if let Err(e) = outcall_rpc::serve(svc, listener, stop).await {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }));
            let registry: Arc<dyn DialerRegistry> = Arc::new(RedisRegistry::new(conn));
            let info = DialerInfo {
                node: cfg.ua.node.clone(),
                rpc_addr: cfg
                    .rpc
                    .advertise
                    .clone()
                    .unwrap_or_else(|| bound.to_string()),
                capacity: cfg.max_concurrent_calls,
                active: 0,
                draining: false,
            };
            let ttl = Duration::from_secs(cfg.rpc.dialer_ttl_secs.max(1));
            registry
                .register(&info, ttl)
                .await
                .context("cannot register in the dialer registry")?;
            tracing::info!(node = %info.node, rpc = %info.rpc_addr, capacity = info.capacity, "dialer registered");
            parts.tasks.push(tokio::spawn(heartbeat(
                registry.clone(),
                service.clone(),
                info.clone(),
                ttl,
                Duration::from_secs(cfg.rpc.heartbeat_secs.max(1)),
                parts.stop.clone(),
            )));
            parts.dialer = Some(DialerNode {
                service,
                server_stop,
                registry,
                info,
                ttl,
            });
        }
        Ok(parts)
    }

    /// The call engine of a scheduler without a dialer in its process: calls go to the
    /// least-loaded dialer of the registry over gRPC.
    pub fn remote_engine(
        &mut self,
        cfg: &AppConfig,
    ) -> Result<Arc<dyn outcall_telephony::CallEngine>> {
        let Some(conn) = self.redis.clone() else {
            anyhow::bail!("a scheduler without the dialer role needs [redis] url to find dialers");
        };
        let directory = RegistryDirectory {
            registry: Arc::new(RedisRegistry::new(conn)),
            cached: Default::default(),
        };
        let rc = outcall_rpc::RemoteEngineConfig {
            keepalive: Duration::from_secs(cfg.rpc.heartbeat_secs.max(1)),
            ..Default::default()
        };
        Ok(Arc::new(outcall_rpc::RemoteEngine::new(
            Arc::new(directory),
            rc,
        )))
    }

    /// The task queue shared by scheduler nodes (Redis), when configured.
    pub fn queue(&self) -> Option<Arc<dyn outcall_queue::TaskQueue>> {
        self.redis.clone().map(|c| {
            Arc::new(outcall_queue::RedisQueue::new(c)) as Arc<dyn outcall_queue::TaskQueue>
        })
    }

    /// The campaign and trunk limits shared by scheduler nodes (Redis), when configured.
    pub fn limiter(&self) -> Option<Arc<dyn outcall_queue::Limiter>> {
        self.redis.clone().map(|c| {
            Arc::new(outcall_queue::RedisLimiter::new(c)) as Arc<dyn outcall_queue::Limiter>
        })
    }

    /// Checks for `/readyz`.
    pub fn probes(&self) -> Vec<Arc<dyn Probe>> {
        let mut v: Vec<Arc<dyn Probe>> = Vec::new();
        if let Some(conn) = &self.redis {
            v.push(Arc::new(RedisProbe(Arc::new(RedisRegistry::new(
                conn.clone(),
            )))));
        }
        v
    }

    /// Refreshes this node's gauges before `/metrics` renders.
    pub fn gauges(&self) -> impl Fn() + Send + Sync + 'static {
        let publisher = self.publisher.clone();
        move || {
            if let Some(p) = &publisher {
                metrics::gauge!(outcall_domain::metrics::BUS_SPOOLED).set(p.spooled() as f64);
            }
        }
    }

    /// CDR retention, hourly on nodes with the api role: CDRs of attempts older than
    /// `[store] cdr_retention_months` go (whole monthly partitions on PostgreSQL).
    pub fn spawn_retention(&mut self, cfg: &AppConfig, store: Arc<dyn Store>) {
        if !cfg.active_roles.has(Role::Api) || cfg.store.cdr_retention_months == 0 {
            return;
        }
        let months = i64::from(cfg.store.cdr_retention_months);
        let stop = self.stop.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let now = jiff::Timestamp::now();
                let cutoff = now
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .checked_sub(jiff::Span::new().months(months))
                    .map(|z| z.timestamp())
                    .unwrap_or(now);
                match store.purge_cdrs_before(cutoff).await {
                    Ok(p) if p.deleted > 0 || !p.dropped_partitions.is_empty() => tracing::info!(
                        deleted = p.deleted,
                        partitions = ?p.dropped_partitions,
                        %cutoff,
                        "CDR retention"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "CDR retention failed"),
                }
            }
        }));
    }

    /// SIGTERM: refuse new calls, leave the registry.
    pub async fn begin_drain(&self) {
        if let Some(d) = &self.dialer {
            d.service.drain();
            let mut info = d.info.clone();
            info.draining = true;
            info.active = d.service.active();
            if let Err(e) = d.registry.register(&info, d.ttl).await {
                tracing::warn!(error = %e, "cannot announce draining in the registry");
            }
        }
    }

    /// After the scheduler stopped: calls end (grace), then the services stop.
    pub async fn finish(&self, grace: Duration) {
        if let Some(d) = &self.dialer {
            let deadline = tokio::time::Instant::now() + grace;
            while d.service.active() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            d.service.hang_up_all();
            d.server_stop.cancel();
            if let Err(e) = d.registry.deregister(&d.info.node).await {
                tracing::warn!(error = %e, "cannot leave the dialer registry");
            }
        }
        if let Some(p) = &self.publisher {
            // CDRs still in the spool stay on disk and are sent after the next start.
            let left = p.spooled();
            if left > 0 {
                let _ = tokio::time::timeout(Duration::from_secs(5), p.wait_drained()).await;
                tracing::info!(spooled = p.spooled(), "bus spool at stop");
            }
        }
        self.stop.cancel();
        if let Some(i) = &self.ingest {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !i.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Re-registers the dialer every `every` with its load, until `stop`.
async fn heartbeat(
    registry: Arc<dyn DialerRegistry>,
    service: outcall_rpc::DialerService,
    mut info: DialerInfo,
    ttl: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        info.active = service.active();
        info.draining = service.is_draining();
        if let Err(e) = registry.register(&info, ttl).await {
            tracing::warn!(error = %e, "dialer heartbeat failed");
        }
    }
}

/// The configured bus (`None` for the in-process `local` kind).
enum Bus {
    #[cfg(feature = "rabbitmq")]
    Rabbit(outcall_bus::RabbitBus),
    #[cfg(feature = "nats")]
    Nats(outcall_bus::NatsBus),
}

/// CDR consumers of the configured bus.
enum CdrConsumer {
    #[cfg(feature = "rabbitmq")]
    Rabbit(Box<outcall_bus::RabbitConsumer>),
    #[cfg(feature = "nats")]
    Nats(Box<outcall_bus::NatsConsumer>),
}

async fn open_bus(cfg: &AppConfig) -> Result<Option<Bus>> {
    use super::dist::BusKind;
    let url = || -> Result<String> {
        cfg.bus.url()?.ok_or_else(|| {
            anyhow::anyhow!(
                "[bus] kind = {:?} needs url, url_file or OUTCALL_BUS_URL",
                cfg.bus.kind
            )
        })
    };
    Ok(match cfg.bus.kind {
        BusKind::Local => None,
        #[cfg(feature = "rabbitmq")]
        BusKind::Rabbitmq => {
            let mut rc = outcall_bus::RabbitConfig::new(url()?);
            rc.prefix = cfg.bus.prefix();
            Some(Bus::Rabbit(outcall_bus::RabbitBus::new(rc)?))
        }
        #[cfg(feature = "nats")]
        BusKind::Nats => {
            let mut nc = outcall_bus::NatsConfig::new(url()?);
            nc.prefix = cfg.bus.prefix();
            Some(Bus::Nats(outcall_bus::NatsBus::new(nc)?))
        }
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("[bus] kind = {other:?}: this build has no such bus"),
    })
}

impl Bus {
    fn publisher(self) -> Arc<dyn outcall_bus::Publisher> {
        match self {
            #[cfg(feature = "rabbitmq")]
            Bus::Rabbit(b) => Arc::new(b),
            #[cfg(feature = "nats")]
            Bus::Nats(b) => Arc::new(b),
        }
    }

    async fn cdr_consumer(&self) -> Result<CdrConsumer> {
        Ok(match self {
            #[cfg(feature = "rabbitmq")]
            Bus::Rabbit(b) => CdrConsumer::Rabbit(Box::new(
                b.consumer(outcall_bus::Topic::Cdrs)
                    .await
                    .context("cannot consume CDRs from RabbitMQ")?,
            )),
            #[cfg(feature = "nats")]
            Bus::Nats(b) => CdrConsumer::Nats(Box::new(
                b.consumer(outcall_bus::Topic::Cdrs)
                    .await
                    .context("cannot consume CDRs from NATS")?,
            )),
        })
    }
}

impl CdrConsumer {
    async fn run(
        self,
        sink: Arc<dyn outcall_bus::CdrSink>,
        stop: CancellationToken,
    ) -> outcall_bus::IngestStats {
        let cfg = outcall_bus::IngestConfig::default();
        match self {
            #[cfg(feature = "rabbitmq")]
            CdrConsumer::Rabbit(c) => outcall_bus::Ingest::run(*c, sink, cfg, stop).await,
            #[cfg(feature = "nats")]
            CdrConsumer::Nats(c) => outcall_bus::Ingest::run(*c, sink, cfg, stop).await,
        }
    }
}

/// What a dialer publishes for each call: the CDR and where it belongs.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct CdrMessage {
    pub attempt_id: i64,
    pub campaign_id: i64,
    /// When the attempt started (its dispatch): the CDR's partition.
    pub started_at_ms: i64,
    pub cdr: outcall_domain::Cdr,
}

/// Ingest's sink: CDRs from the bus into the store, in one batch insert, idempotent by
/// attempt id.
pub(super) struct StoreCdrs {
    pub store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl outcall_bus::CdrSink for StoreCdrs {
    async fn write(&self, batch: &[outcall_bus::Envelope]) -> Result<u64, String> {
        let mut rows = Vec::with_capacity(batch.len());
        for e in batch {
            match serde_json::from_value::<CdrMessage>(e.payload.clone()) {
                Ok(m) => rows.push(outcall_store::CdrRow {
                    attempt_id: m.attempt_id,
                    campaign_id: m.campaign_id,
                    started_at: jiff::Timestamp::from_millisecond(m.started_at_ms)
                        .unwrap_or_else(|_| jiff::Timestamp::now()),
                    cdr: m.cdr,
                }),
                // A message no version of Outcall can read would block the queue forever.
                Err(err) => {
                    tracing::error!(id = %e.id, error = %err, "unreadable CDR message dropped")
                }
            }
        }
        let n = self
            .store
            .insert_cdrs(&rows)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!(outcall_domain::metrics::INGEST_CDRS_TOTAL).increment(n);
        Ok(n)
    }
}

/// The dialer's end of each call: upload its recording, then publish its CDR (to the spool
/// when the bus is down) before the report goes back to the scheduler.
struct DialerReports {
    publisher: Option<Arc<Spooled>>,
    #[cfg(feature = "s3")]
    uploader: Option<super::recordings::RecordingUploader>,
}

#[async_trait::async_trait]
impl outcall_rpc::ReportHook for DialerReports {
    async fn finished(
        &self,
        info: &outcall_rpc::CallInfo,
        report: &mut outcall_telephony::CallReport,
    ) {
        #[cfg(feature = "s3")]
        if let (Some(up), Some(file)) = (&self.uploader, &info.recording) {
            if file.exists() {
                match up.upload(file, info.campaign_id, &info.attempt_id).await {
                    Ok(url) => report.cdr.recording = Some(url),
                    Err(e) => {
                        tracing::warn!(attempt = %info.attempt_id, error = %format!("{e:#}"), "recording kept on the node")
                    }
                }
            }
        }
        let Some(publisher) = &self.publisher else {
            return;
        };
        let Ok(attempt_id) = info.attempt_id.parse::<i64>() else {
            tracing::warn!(attempt = %info.attempt_id, "attempt id is not a number: CDR not published");
            return;
        };
        let started_at_ms = report
            .cdr
            .dispatched_at_ms
            .or(report.cdr.queued_at_ms)
            .or(report.cdr.invite_at_ms)
            .map(|ms| ms as i64)
            .unwrap_or_else(outcall_queue::now_ms);
        let msg = CdrMessage {
            attempt_id,
            campaign_id: info.campaign_id,
            started_at_ms,
            cdr: report.cdr.clone(),
        };
        let payload = match serde_json::to_value(&msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "CDR cannot be encoded");
                return;
            }
        };
        let env = outcall_bus::Envelope::cdr(attempt_id, info.campaign_id.to_string(), payload);
        if let Err(e) = publisher.publish(std::slice::from_ref(&env)).await {
            tracing::error!(attempt = attempt_id, error = %e, "CDR neither published nor spooled");
        }
    }
}
