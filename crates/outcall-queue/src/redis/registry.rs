//! [`DialerRegistry`] on Redis: one hash, each field's expiry inside its value.

use super::RedisConn;
use crate::error::Result;
use crate::now_ms;
use crate::registry::{ttl_millis, DialerInfo, DialerRegistry};
use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;
use std::time::Duration;
use tracing::warn;

static LIVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/registry_live.lua")));

/// The dialer registry on Redis: the hash `{<ns>:dialers}`, field = node, value =
/// `<expiry ms>\t<DialerInfo as JSON>`.
#[derive(Debug, Clone)]
pub struct RedisRegistry {
    conn: RedisConn,
    key: String,
}

impl RedisRegistry {
    /// A registry on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        let key = format!("{{{}:dialers}}", conn.namespace());
        RedisRegistry { conn, key }
    }
}

#[async_trait]
impl DialerRegistry for RedisRegistry {
    async fn register(&self, info: &DialerInfo, ttl: Duration) -> Result<()> {
        let expires = now_ms().saturating_add(ttl_millis(ttl)?);
        let json = serde_json::to_string(info).map_err(|e| {
            self.conn
                .corrupt(&self.key, format!("encoding {}: {e}", info.node))
        })?;
        let _: i64 = self
            .conn
            .manager()
            .hset(&self.key, &info.node, format!("{expires}\t{json}"))
            .await
            .map_err(|e| self.conn.error("HSET of a dialer registration", &e))?;
        Ok(())
    }

    async fn deregister(&self, node: &str) -> Result<()> {
        let _: i64 = self
            .conn
            .manager()
            .hdel(&self.key, node)
            .await
            .map_err(|e| self.conn.error("HDEL of a dialer registration", &e))?;
        Ok(())
    }

    async fn live(&self, now_ms: i64) -> Result<Vec<DialerInfo>> {
        let mut inv = LIVE.prepare_invoke();
        inv.key(&self.key).arg(now_ms);
        let out: Vec<String> = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("dialer registry script", &e))?;
        let mut live = Vec::with_capacity(out.len());
        for json in out {
            match serde_json::from_str::<DialerInfo>(&json) {
                Ok(d) => live.push(d),
                // One bad entry (a newer node's format, say) must not hide the others.
                Err(e) => warn!(key = %self.key, error = %e, "unreadable dialer registration"),
            }
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }
}
