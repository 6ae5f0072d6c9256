//! The Redis implementations: [`RedisQueue`], [`RedisLimiter`], [`RedisRegistry`], and the
//! Redis tier of [`TwoLevelCache`](crate::TwoLevelCache). They share a [`RedisConn`].

mod limiter;
mod queue;
mod registry;

pub use limiter::RedisLimiter;
pub use queue::RedisQueue;
pub use registry::RedisRegistry;

use crate::error::{redact_url, redis_error, QueueError, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (`rediss://` is not built in).
    pub url: String,
    /// Prefix of every key and channel, so that several deployments (or tests) share a
    /// server. No `{` or `}`.
    pub namespace: String,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a command or script may take to answer.
    pub response_timeout: Duration,
}

impl RedisConfig {
    /// Defaults: connect within 2 s, answers within 5 s.
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: namespace.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to Redis (multiplexed, reconnecting) and the namespace of the keys. Cheap to
/// clone: clones share the connection.
#[derive(Clone)]
pub struct RedisConn {
    client: redis::Client,
    manager: ConnectionManager,
    url: Arc<str>,
    namespace: Arc<str>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn check_namespace(ns: &str) -> Result<()> {
    if ns.is_empty()
        || ns.len() > 100
        || ns.contains(['{', '}'])
        || ns.contains(char::is_whitespace)
    {
        return Err(QueueError::Invalid {
            what: "Redis namespace",
            message: format!(
                "{ns:?}: 1 to 100 characters, no braces (they delimit Cluster hash tags) and no \
                 spaces"
            ),
        });
    }
    Ok(())
}

impl RedisConn {
    /// Connects with the default timeouts.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        Self::connect_with(&RedisConfig::new(url, namespace)).await
    }

    /// Connects and checks that the server answers.
    pub async fn connect_with(cfg: &RedisConfig) -> Result<Self> {
        check_namespace(&cfg.namespace)?;
        let url = redact_url(&cfg.url);
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| redis_error(&url, "bad URL (redis://host:port[/db])", &e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| redis_error(&url, "cannot connect", &e))?;
        let conn = RedisConn {
            client,
            manager,
            url: url.into(),
            namespace: cfg.namespace.as_str().into(),
        };
        let _: String = redis::cmd("PING")
            .query_async(&mut conn.manager())
            .await
            .map_err(|e| conn.error("PING", &e))?;
        Ok(conn)
    }

    /// The key and channel prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The server's URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(crate) fn error(&self, doing: &str, e: &redis::RedisError) -> QueueError {
        redis_error(&self.url, doing, e)
    }

    pub(crate) fn corrupt(&self, key: &str, message: impl Into<String>) -> QueueError {
        QueueError::Corrupt {
            url: self.url.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_namespace;

    #[test]
    fn namespaces_without_braces() {
        assert!(check_namespace("outcall").is_ok());
        assert!(check_namespace("outcall-prod:eu").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace("a{b").is_err());
        assert!(check_namespace("a}b").is_err());
        assert!(check_namespace("a b").is_err());
    }
}
