//! Settings of the distributed mode: which roles a node runs and the shared engines it uses
//! (PostgreSQL, Redis, a message bus, object storage, gRPC between nodes).

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What a node does. `outcall serve` without roles runs all of them in one process.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// REST API, console, webhooks out.
    Api,
    /// Campaign pacing, queue, retries; dials through dialer nodes.
    Scheduler,
    /// SIP user agent and media; places calls for schedulers over gRPC.
    Dialer,
    /// Writes CDRs from the bus to the store in batches.
    Ingest,
    /// Alert rules over the nodes' metrics.
    Monitor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Api,
        Role::Scheduler,
        Role::Dialer,
        Role::Ingest,
        Role::Monitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Scheduler => "scheduler",
            Role::Dialer => "dialer",
            Role::Ingest => "ingest",
            Role::Monitor => "monitor",
        }
    }
}

/// The roles of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    pub fn all() -> Roles {
        Roles(Role::ALL.into_iter().collect())
    }

    pub fn of(list: &[Role]) -> Roles {
        if list.is_empty() {
            Roles::all()
        } else {
            Roles(list.iter().copied().collect())
        }
    }

    pub fn has(&self, r: Role) -> bool {
        self.0.contains(&r)
    }

    /// Every role in this process: calls are placed in process, no bus or RPC is needed.
    pub fn is_all(&self) -> bool {
        self.0.len() == Role::ALL.len()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.as_str()).collect()
    }

    /// Parses `api,scheduler` (commas and spaces), as `OUTCALL_ROLES` gives it.
    pub fn parse(text: &str) -> Result<Roles> {
        let mut set = BTreeSet::new();
        for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
            let r = <Role as clap::ValueEnum>::from_str(part, true).map_err(|_| {
                anyhow::anyhow!("unknown role `{part}` (api, scheduler, dialer, ingest, monitor)")
            })?;
            set.insert(r);
        }
        Ok(if set.is_empty() {
            Roles::all()
        } else {
            Roles(set)
        })
    }
}

/// Reads a secret-bearing URL: the environment variable, else `url_file`, else `url`.
fn url_from(env: &str, url: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>> {
    if let Ok(u) = std::env::var(env) {
        if !u.trim().is_empty() {
            return Ok(Some(u.trim().to_string()));
        }
    }
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the URL file {}", f.display()))?;
        return Ok(Some(text.trim().to_string()));
    }
    Ok(url.clone())
}

/// `[store]`: PostgreSQL for a distributed deployment; without a URL, SQLite in `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://…` (credentials belong in `url_file` or `OUTCALL_DATABASE_URL`).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// Monthly CDR partitions older than this are dropped (PostgreSQL).
    #[serde(default = "default_cdr_retention")]
    pub cdr_retention_months: u32,
}

fn default_pool() -> u32 {
    16
}
fn default_cdr_retention() -> u32 {
    13
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            url_file: None,
            max_connections: default_pool(),
            cdr_retention_months: default_cdr_retention(),
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL URL, when one is configured.
    pub fn postgres_url(&self) -> Result<Option<String>> {
        url_from("OUTCALL_DATABASE_URL", &self.url, &self.url_file)
    }
}

/// `[redis]`: the task queue, leases, global limits, dialer registry and shared cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Prefix of every key (several deployments can share one Redis).
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "outcall".into()
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            url_file: None,
            namespace: default_namespace(),
        }
    }
}

impl RedisConfig {
    pub fn url(&self) -> Result<Option<String>> {
        url_from("OUTCALL_REDIS_URL", &self.url, &self.url_file)
    }
}

/// Which message bus carries call events and CDRs between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In process (one node).
    #[default]
    Local,
    Rabbitmq,
    Nats,
}

/// `[bus]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    #[serde(default)]
    pub kind: BusKind,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Where messages wait on disk while the bus is down (default `<data_dir>/spool`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Prefix of exchanges, queues, streams and subjects (default `outcall`).
    #[serde(default)]
    pub prefix: Option<String>,
}

impl BusConfig {
    pub fn url(&self) -> Result<Option<String>> {
        url_from("OUTCALL_BUS_URL", &self.url, &self.url_file)
    }

    pub fn prefix(&self) -> String {
        self.prefix.clone().unwrap_or_else(|| "outcall".into())
    }

    pub fn spool_dir(&self, data_dir: &Path) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("spool"))
    }
}

/// `[rpc]`: call control between scheduler and dialer nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcConfig {
    /// Where a dialer serves gRPC.
    #[serde(default = "default_rpc_listen")]
    pub listen: SocketAddr,
    /// The address schedulers reach this dialer at (`OUTCALL_RPC_ADVERTISE`; default: the
    /// listen address).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Seconds between a dialer's heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// A dialer whose last heartbeat is older than this is dead: no new calls go to it.
    #[serde(default = "default_dialer_ttl")]
    pub dialer_ttl_secs: u64,
}

fn default_rpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_heartbeat() -> u64 {
    2
}
fn default_dialer_ttl() -> u64 {
    6
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: default_rpc_listen(),
            advertise: None,
            heartbeat_secs: default_heartbeat(),
            dialer_ttl_secs: default_dialer_ttl(),
        }
    }
}

/// `[recordings]`: recordings go to S3-compatible object storage when a bucket is set, else
/// to `<data_dir>/recordings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    #[serde(default)]
    pub s3_bucket: Option<String>,
    /// `http://minio:9000` for MinIO and other S3-compatible stores; AWS when absent.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub s3_prefix: Option<String>,
    /// Keep the local file after it was uploaded.
    #[serde(default)]
    pub keep_local: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_default_to_all() {
        assert!(Roles::parse("").unwrap().is_all());
        let r = Roles::parse("api, scheduler").unwrap();
        assert!(r.has(Role::Api) && r.has(Role::Scheduler) && !r.has(Role::Dialer));
        assert!(!r.is_all());
        let err = Roles::parse("api,dialler").unwrap_err().to_string();
        assert!(err.contains("unknown role `dialler`"), "{err}");
    }
}
