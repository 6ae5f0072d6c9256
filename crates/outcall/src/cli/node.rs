//! The distributed parts of a node, by role: the store it opens, the dialer service and its
//! registration, the remote call engine of a scheduler, the ingest consumer, the bus publisher
//! with its spool, and the retention jobs.

use super::app::AppConfig;
use super::dist::Role;
use anyhow::{Context, Result};
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
        anyhow::bail!(
            "[store] url {}: this build has no PostgreSQL store",
            redact(&url)
        );
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

/// What a node runs besides the embedded parts.
#[derive(Default)]
pub struct Parts {
    redis: Option<RedisConn>,
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
        _store: Arc<dyn Store>,
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
        if let (true, Some(ua)) = (roles.has(Role::Dialer), ua) {
            let Some(conn) = parts.redis.clone() else {
                anyhow::bail!("the dialer role needs [redis] url (its registry)");
            };
            let service = outcall_rpc::DialerService::new(
                Arc::new(ua),
                cfg.ua.node.clone(),
                cfg.max_concurrent_calls,
            )
            .with_recordings(cfg.data_dir.join("recordings"));
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
        || {}
    }

    /// Retention jobs of the distributed store.
    pub fn spawn_retention(&mut self, _cfg: &AppConfig, _store: Arc<dyn Store>) {}

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
        self.stop.cancel();
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
