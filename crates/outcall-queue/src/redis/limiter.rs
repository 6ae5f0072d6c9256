//! [`Limiter`] on Redis: one Lua script per operation, on the Redis server's clock.

use super::RedisConn;
use crate::error::Result;
use crate::limiter::{hold_millis, Acquire, DenyReason, Limiter, SlotRequest, SlotUsage};
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::debug;

macro_rules! limits_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/limits_common.lua"),
                include_str!($file)
            ))
        })
    };
}

static ACQUIRE: LazyLock<Script> = limits_script!("lua/acquire.lua");
static RELEASE: LazyLock<Script> = limits_script!("lua/limits_release.lua");
static RENEW: LazyLock<Script> = limits_script!("lua/limits_renew.lua");
static USAGE: LazyLock<Script> = limits_script!("lua/limits_usage.lua");

/// Pacing shared by every node connected to the same server and namespace.
///
/// All limit keys carry the hash tag `{<ns>:limits}`, because one script takes a campaign's
/// and a trunk's slots together: on Redis Cluster every limit lives on one slot (one shard).
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    conn: RedisConn,
}

impl RedisLimiter {
    /// A limiter on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        RedisLimiter { conn }
    }

    fn key(&self, what: &str, scope: &str) -> String {
        format!("{{{}:limits}}:{what}:{scope}", self.conn.namespace())
    }

    fn call_keys(&self, campaign_id: i64, trunk: &str) -> (String, String) {
        (
            self.key("calls", &format!("c:{campaign_id}")),
            self.key("calls", &format!("t:{trunk}")),
        )
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn try_acquire(&self, req: &SlotRequest) -> Result<Acquire> {
        let hold = hold_millis(req.hold)?;
        let c_interval = req.campaign_limits.interval_us("campaign max_cps")?;
        let t_interval = req.trunk_limits.interval_us("trunk max_cps")?;
        let (c_calls, t_calls) = self.call_keys(req.campaign_id, &req.trunk);
        let max = |m: Option<u32>| m.map_or(-1, i64::from);
        let mut inv = ACQUIRE.prepare_invoke();
        inv.key(&c_calls)
            .key(&t_calls)
            .key(self.key("pace", &format!("c:{}", req.campaign_id)))
            .key(self.key("pace", &format!("t:{}", req.trunk)))
            .arg(&req.call_id)
            .arg(hold)
            .arg(max(req.campaign_limits.max_concurrent))
            .arg(max(req.trunk_limits.max_concurrent))
            .arg(c_interval.unwrap_or(0.0))
            .arg(req.campaign_limits.burst())
            .arg(t_interval.unwrap_or(0.0))
            .arg(req.trunk_limits.burst());
        let out: Vec<String> = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("slot acquire script", &e))?;
        match out.as_slice() {
            [granted] if granted == "granted" => Ok(Acquire::Granted),
            [reason, wait] => {
                let reason = DenyReason::parse(reason)
                    .ok_or_else(|| self.conn.corrupt(&c_calls, format!("reply {out:?}")))?;
                let retry_after = wait
                    .parse::<i64>()
                    .ok()
                    .filter(|us| *us >= 0)
                    .map(|us| Duration::from_micros(us as u64));
                debug!(
                    call_id = %req.call_id,
                    node = %req.node,
                    campaign = req.campaign_id,
                    trunk = %req.trunk,
                    ?reason,
                    "slot denied"
                );
                Ok(Acquire::Denied {
                    retry_after,
                    reason,
                })
            }
            _ => Err(self.conn.corrupt(&c_calls, format!("reply {out:?}"))),
        }
    }

    async fn release(&self, call_id: &str, campaign_id: i64, trunk: &str) -> Result<bool> {
        let (c_calls, t_calls) = self.call_keys(campaign_id, trunk);
        let mut inv = RELEASE.prepare_invoke();
        inv.key(&c_calls).key(&t_calls).arg(call_id);
        let freed: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("slot release script", &e))?;
        Ok(freed > 0)
    }

    async fn renew(
        &self,
        call_id: &str,
        campaign_id: i64,
        trunk: &str,
        hold: Duration,
    ) -> Result<bool> {
        let hold = hold_millis(hold)?;
        let (c_calls, t_calls) = self.call_keys(campaign_id, trunk);
        let mut inv = RENEW.prepare_invoke();
        inv.key(&c_calls).key(&t_calls).arg(call_id).arg(hold);
        let both: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("slot renew script", &e))?;
        Ok(both == 1)
    }

    async fn usage(&self, campaign_id: i64, trunk: &str) -> Result<SlotUsage> {
        let (c_calls, t_calls) = self.call_keys(campaign_id, trunk);
        let mut inv = USAGE.prepare_invoke();
        inv.key(&c_calls).key(&t_calls);
        let (campaign, trunk): (u32, u32) = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("slot usage script", &e))?;
        Ok(SlotUsage { campaign, trunk })
    }
}
