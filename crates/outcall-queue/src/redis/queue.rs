//! [`TaskQueue`] on Redis: one Lua script per operation, keys of a campaign on one slot.

use super::RedisConn;
use crate::error::{QueueError, Result};
use crate::now_ms;
use crate::queue::{lease_millis, token_prefix, Lease, QueueDepth, Task, TaskQueue};
use async_trait::async_trait;
use redis::Script;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;
use tracing::{info, warn};

macro_rules! queue_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/queue_common.lua"),
                include_str!($file)
            ))
        })
    };
}

static PUSH: LazyLock<Script> = queue_script!("lua/push.lua");
static CLAIM: LazyLock<Script> = queue_script!("lua/claim.lua");
static RENEW: LazyLock<Script> = queue_script!("lua/renew.lua");
static ACK: LazyLock<Script> = queue_script!("lua/ack.lua");
static RELEASE: LazyLock<Script> = queue_script!("lua/release.lua");
static REAP: LazyLock<Script> = queue_script!("lua/reap.lua");
static REMOVE: LazyLock<Script> = queue_script!("lua/remove.lua");

/// How long a campaign's clock outlives its last claim. Losing it is harmless: tasks then go
/// through the `due` set, as on a fresh campaign.
const CLOCK_TTL_MS: i64 = 86_400_000;
/// Due times must be exact in a Lua number (a double).
const MAX_ABS_DUE_MS: i64 = 1 << 53;

/// The keys of a campaign's queue; `{<ns>:c:<campaign>}` is their Cluster hash tag.
struct CampaignKeys {
    due: String,
    ready: String,
    tasks: String,
    leases: String,
    owners: String,
    clock: String,
}

impl CampaignKeys {
    fn new(ns: &str, campaign: i64) -> Self {
        let k = |part: &str| format!("{{{ns}:c:{campaign}}}:{part}");
        CampaignKeys {
            due: k("due"),
            ready: k("ready"),
            tasks: k("tasks"),
            leases: k("leases"),
            owners: k("owners"),
            clock: k("clock"),
        }
    }

    fn all(&self) -> [&str; 6] {
        [
            &self.due,
            &self.ready,
            &self.tasks,
            &self.leases,
            &self.owners,
            &self.clock,
        ]
    }
}

/// The task queue on Redis, shared by every node connected to the same server and namespace.
#[derive(Debug, Clone)]
pub struct RedisQueue {
    conn: RedisConn,
    move_batch: u32,
    push_chunk: usize,
    reap_batch: u32,
}

fn check_due(due_at_ms: i64) -> Result<()> {
    if due_at_ms.unsigned_abs() > MAX_ABS_DUE_MS as u64 {
        return Err(QueueError::Invalid {
            what: "due time",
            message: format!("{due_at_ms} ms is out of range (±2^53 ms)"),
        });
    }
    Ok(())
}

impl RedisQueue {
    /// A queue on `conn`. A claim moves at most 10,000 tasks from `due` to `ready`; a push
    /// sends 1,000 tasks per script.
    pub fn new(conn: RedisConn) -> Self {
        RedisQueue {
            conn,
            move_batch: 10_000,
            push_chunk: 1_000,
            reap_batch: 1_000,
        }
    }

    /// Sets how many tasks whose time has come one claim moves to `ready` (bounds the time
    /// a claim blocks Redis). When more than this fall due between two claims of a campaign,
    /// the earliest due move first and priority applies among the moved ones.
    pub fn with_move_batch(mut self, n: u32) -> Self {
        self.move_batch = n.max(1);
        self
    }

    fn keys(&self, campaign: i64) -> CampaignKeys {
        CampaignKeys::new(self.conn.namespace(), campaign)
    }

    /// Parses `priority:due` stored for a contact.
    fn task(&self, campaign: i64, contact: &str, stored: &str, key: &str) -> Result<Task> {
        let bad = || {
            self.conn.corrupt(
                key,
                format!("task {contact} is {stored:?}, not priority:due_ms"),
            )
        };
        let contact_id = contact.parse().map_err(|_| bad())?;
        let (p, d) = stored.split_once(':').ok_or_else(bad)?;
        Ok(Task {
            campaign_id: campaign,
            contact_id,
            priority: p.parse().map_err(|_| bad())?,
            due_at_ms: d.parse().map_err(|_| bad())?,
        })
    }

    async fn push_chunk(&self, campaign: i64, tasks: &[&Task]) -> Result<u64> {
        let k = self.keys(campaign);
        let mut inv = PUSH.prepare_invoke();
        inv.key(&k.due).key(&k.ready).key(&k.tasks).key(&k.clock);
        for t in tasks {
            inv.arg(t.contact_id).arg(t.priority).arg(t.due_at_ms);
        }
        inv.invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("push script", &e))
    }
}

#[async_trait]
impl TaskQueue for RedisQueue {
    async fn push(&self, tasks: &[Task]) -> Result<u64> {
        let mut by_campaign: BTreeMap<i64, Vec<&Task>> = BTreeMap::new();
        for t in tasks {
            check_due(t.due_at_ms)?;
            by_campaign.entry(t.campaign_id).or_default().push(t);
        }
        let mut added = 0;
        for (campaign, tasks) in by_campaign {
            for chunk in tasks.chunks(self.push_chunk) {
                added += self.push_chunk(campaign, chunk).await?;
            }
        }
        Ok(added)
    }

    async fn claim(
        &self,
        campaign_id: i64,
        now_ms: i64,
        max: u32,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<Lease>> {
        let lease_ms = lease_millis(lease, "lease")?;
        check_due(now_ms)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let expires_at_ms = now_ms.saturating_add(lease_ms);
        let prefix = token_prefix();
        let k = self.keys(campaign_id);
        let mut inv = CLAIM.prepare_invoke();
        inv.key(&k.due)
            .key(&k.ready)
            .key(&k.tasks)
            .key(&k.leases)
            .key(&k.owners)
            .key(&k.clock)
            .arg(now_ms)
            .arg(max)
            .arg(node)
            .arg(expires_at_ms)
            .arg(&prefix)
            .arg(self.move_batch)
            .arg(CLOCK_TTL_MS);
        let out: Vec<String> = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("claim script", &e))?;
        out.chunks_exact(2)
            .map(|pair| {
                Ok(Lease {
                    task: self.task(campaign_id, &pair[0], &pair[1], &k.tasks)?,
                    token: format!("{prefix}{}", pair[0]),
                    node: node.to_string(),
                    expires_at_ms,
                })
            })
            .collect()
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<bool> {
        let expires = now_ms().saturating_add(lease_millis(lease_for, "lease")?);
        let k = self.keys(lease.task.campaign_id);
        let mut inv = RENEW.prepare_invoke();
        inv.key(&k.leases)
            .key(&k.owners)
            .arg(lease.task.contact_id)
            .arg(&lease.token)
            .arg(expires);
        let n: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("renew script", &e))?;
        Ok(n == 1)
    }

    async fn ack(&self, lease: &Lease) -> Result<bool> {
        let k = self.keys(lease.task.campaign_id);
        let mut inv = ACK.prepare_invoke();
        inv.key(&k.tasks)
            .key(&k.leases)
            .key(&k.owners)
            .arg(lease.task.contact_id)
            .arg(&lease.token);
        let n: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("ack script", &e))?;
        Ok(n == 1)
    }

    async fn release(&self, lease: &Lease, due_at_ms: i64) -> Result<bool> {
        check_due(due_at_ms)?;
        let k = self.keys(lease.task.campaign_id);
        let mut inv = RELEASE.prepare_invoke();
        inv.key(&k.due)
            .key(&k.ready)
            .key(&k.tasks)
            .key(&k.leases)
            .key(&k.owners)
            .key(&k.clock)
            .arg(lease.task.contact_id)
            .arg(&lease.token)
            .arg(due_at_ms);
        let n: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("release script", &e))?;
        Ok(n == 1)
    }

    async fn reap(&self, campaign_id: i64, now_ms: i64) -> Result<Vec<Task>> {
        check_due(now_ms)?;
        let k = self.keys(campaign_id);
        let mut reaped = Vec::new();
        let mut nodes: BTreeMap<String, u32> = BTreeMap::new();
        loop {
            let mut inv = REAP.prepare_invoke();
            inv.key(&k.due)
                .key(&k.ready)
                .key(&k.tasks)
                .key(&k.leases)
                .key(&k.owners)
                .key(&k.clock)
                .arg(now_ms)
                .arg(self.reap_batch)
                .arg(CLOCK_TTL_MS);
            let out: Vec<String> = inv
                .invoke_async(&mut self.conn.manager())
                .await
                .map_err(|e| self.conn.error("reap script", &e))?;
            let Some((expired, out)) = out.split_first() else {
                break;
            };
            for t in out.chunks_exact(3) {
                let stored = format!("{}:{now_ms}", t[1]);
                reaped.push(self.task(campaign_id, &t[0], &stored, &k.tasks)?);
                *nodes.entry(t[2].clone()).or_default() += 1;
            }
            if expired.parse::<u32>().map_or(true, |n| n < self.reap_batch) {
                break;
            }
        }
        for (node, n) in nodes {
            if node.is_empty() {
                warn!(
                    campaign = campaign_id,
                    tasks = n,
                    "reaped leases without an owner"
                );
            } else {
                info!(
                    campaign = campaign_id,
                    node,
                    tasks = n,
                    "reaped expired leases"
                );
            }
        }
        Ok(reaped)
    }

    async fn remove(&self, campaign_id: i64, contact_id: i64) -> Result<bool> {
        let k = self.keys(campaign_id);
        let mut inv = REMOVE.prepare_invoke();
        inv.key(&k.due)
            .key(&k.ready)
            .key(&k.tasks)
            .key(&k.leases)
            .key(&k.owners)
            .arg(contact_id);
        let n: i64 = inv
            .invoke_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("remove script", &e))?;
        Ok(n == 1)
    }

    async fn purge_campaign(&self, campaign_id: i64) -> Result<()> {
        let k = self.keys(campaign_id);
        let _: i64 = redis::cmd("UNLINK")
            .arg(&k.all()[..])
            .query_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("UNLINK of a campaign's queue", &e))?;
        Ok(())
    }

    async fn depth(&self, campaign_id: i64) -> Result<QueueDepth> {
        let k = self.keys(campaign_id);
        let (due, ready, leased): (u64, u64, u64) = redis::pipe()
            .atomic()
            .zcard(&k.due)
            .zcard(&k.ready)
            .zcard(&k.leases)
            .query_async(&mut self.conn.manager())
            .await
            .map_err(|e| self.conn.error("ZCARD of a campaign's queue", &e))?;
        Ok(QueueDepth { due, ready, leased })
    }
}
