//! The task queue: contacts due for a call, claimed under a lease by one node at a time.

use crate::error::{QueueError, Result};
use crate::now_ms;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A contact of a campaign waiting for its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub campaign_id: i64,
    pub contact_id: i64,
    /// Higher is claimed first.
    pub priority: i32,
    /// When the task may be claimed, in milliseconds since the Unix epoch.
    pub due_at_ms: i64,
}

/// A claimed task: the claiming node holds it until `expires_at_ms` unless it renews the
/// lease. Only the holder of `token` can renew, ack or release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub task: Task,
    /// Unique to this claim: a task claimed again after its lease expired gets a new token.
    pub token: String,
    /// The node that claimed the task.
    pub node: String,
    /// When the lease expires, in milliseconds since the Unix epoch, as of the claim (a
    /// [`TaskQueue::renew`] moves the stored expiry, not this copy).
    pub expires_at_ms: i64,
}

/// How many tasks of a campaign are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Waiting for their due time (as of the last claim: a task whose time has come moves to
    /// `ready` at the next claim).
    pub due: u64,
    /// Due and waiting for a claimer.
    pub ready: u64,
    /// Claimed, under a lease.
    pub leased: u64,
}

impl QueueDepth {
    /// Tasks queued or leased.
    pub fn total(&self) -> u64 {
        self.due + self.ready + self.leased
    }
}

/// Due contacts of every campaign, shared by the scheduler nodes.
///
/// A task is identified by (campaign, contact): it is queued (waiting for its due time or
/// ready), leased by one node, or absent. Times are milliseconds since the Unix epoch and
/// come from the caller, except [`renew`](TaskQueue::renew), which measures from the system
/// clock: nodes are expected to keep their clocks synchronised (NTP).
#[async_trait]
pub trait TaskQueue: Send + Sync {
    /// Queues tasks, from any campaigns. A task already queued or leased is left as it is;
    /// returns how many were added. On Redis a push is atomic per campaign and per 1,000
    /// tasks, not as a whole: after an error, pushing the same tasks again is safe.
    async fn push(&self, tasks: &[Task]) -> Result<u64>;

    /// Takes up to `max` tasks of the campaign due at `now_ms`, highest priority first, then
    /// earliest due, each under a lease of `lease` for `node`. Atomic: two claimers never
    /// get the same task.
    async fn claim(
        &self,
        campaign_id: i64,
        now_ms: i64,
        max: u32,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<Lease>>;

    /// Extends a lease to `lease_for` from now (system clock). `false`: the lease was lost
    /// (it expired and was reaped, the task was removed, or another node holds it now).
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<bool>;

    /// The task is done: removes it. `false` if the lease was lost.
    async fn ack(&self, lease: &Lease) -> Result<bool>;

    /// Gives the task back, due at `due_at_ms` (deferred by a calling window, say). `false`
    /// if the lease was lost.
    async fn release(&self, lease: &Lease, due_at_ms: i64) -> Result<bool>;

    /// Puts the tasks whose lease expired at `now_ms` back in the queue, due at `now_ms`, and
    /// returns them (as queued again) so the caller can close the attempts their dead node
    /// left open. Any node may reap.
    async fn reap(&self, campaign_id: i64, now_ms: i64) -> Result<Vec<Task>>;

    /// Removes a task whether queued or leased (its holder's next renew, ack or release
    /// returns `false`). `false` if it was not there.
    async fn remove(&self, campaign_id: i64, contact_id: i64) -> Result<bool>;

    /// Removes every task of the campaign.
    async fn purge_campaign(&self, campaign_id: i64) -> Result<()>;

    /// Counts the campaign's tasks.
    async fn depth(&self, campaign_id: i64) -> Result<QueueDepth>;
}

/// A fresh random prefix for the tokens of one claim: `<32 hex digits>:`; each lease's
/// token is the prefix followed by its contact id.
pub(crate) fn token_prefix() -> String {
    format!("{:032x}:", rand::random::<u128>())
}

pub(crate) fn lease_millis(lease: Duration, what: &'static str) -> Result<i64> {
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 {
        return Err(QueueError::Invalid {
            what,
            message: format!("{lease:?} is shorter than a millisecond"),
        });
    }
    Ok(ms)
}

/// The queue in memory, for one process (embedded mode). Clones share the queue.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    campaigns: Arc<Mutex<HashMap<i64, CampaignQueue>>>,
}

#[derive(Debug, Default)]
struct CampaignQueue {
    tasks: HashMap<i64, Entry>,
    /// (due, contact): the timing wheel.
    due: BTreeSet<(i64, i64)>,
    /// (priority descending, due, contact).
    ready: BTreeSet<(Reverse<i32>, i64, i64)>,
    /// (expiry, contact).
    leases: BTreeSet<(i64, i64)>,
}

#[derive(Debug)]
struct Entry {
    priority: i32,
    due_at_ms: i64,
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    token: String,
    expires_at_ms: i64,
}

impl CampaignQueue {
    fn unqueue(&mut self, contact: i64, e: &Entry) {
        self.due.remove(&(e.due_at_ms, contact));
        self.ready
            .remove(&(Reverse(e.priority), e.due_at_ms, contact));
    }

    /// The entry if `lease` still holds it.
    fn held(&mut self, lease: &Lease) -> Option<&mut Entry> {
        self.tasks
            .get_mut(&lease.task.contact_id)
            .filter(|e| e.held.as_ref().is_some_and(|h| h.token == lease.token))
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<i64, CampaignQueue>) -> T) -> T {
        let mut g = self
            .campaigns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    fn with_campaign<T>(&self, campaign: i64, f: impl FnOnce(&mut CampaignQueue) -> T) -> T {
        self.with(|all| {
            let q = all.entry(campaign).or_default();
            let out = f(q);
            if q.tasks.is_empty() {
                all.remove(&campaign);
            }
            out
        })
    }
}

#[async_trait]
impl TaskQueue for MemoryQueue {
    async fn push(&self, tasks: &[Task]) -> Result<u64> {
        Ok(self.with(|all| {
            let mut added = 0;
            for t in tasks {
                let q = all.entry(t.campaign_id).or_default();
                if q.tasks.contains_key(&t.contact_id) {
                    continue;
                }
                q.tasks.insert(
                    t.contact_id,
                    Entry {
                        priority: t.priority,
                        due_at_ms: t.due_at_ms,
                        held: None,
                    },
                );
                q.due.insert((t.due_at_ms, t.contact_id));
                added += 1;
            }
            added
        }))
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
        let expires_at_ms = now_ms.saturating_add(lease_ms);
        let prefix = token_prefix();
        Ok(self.with_campaign(campaign_id, |q| {
            while let Some(&(due, contact)) = q.due.first() {
                if due > now_ms {
                    break;
                }
                q.due.pop_first();
                if let Some(e) = q.tasks.get(&contact) {
                    q.ready.insert((Reverse(e.priority), due, contact));
                }
            }
            let mut out = Vec::new();
            while out.len() < max as usize {
                let Some((Reverse(priority), due_at_ms, contact_id)) = q.ready.pop_first() else {
                    break;
                };
                let token = format!("{prefix}{contact_id}");
                if let Some(e) = q.tasks.get_mut(&contact_id) {
                    e.held = Some(Held {
                        token: token.clone(),
                        expires_at_ms,
                    });
                }
                q.leases.insert((expires_at_ms, contact_id));
                out.push(Lease {
                    task: Task {
                        campaign_id,
                        contact_id,
                        priority,
                        due_at_ms,
                    },
                    token,
                    node: node.to_string(),
                    expires_at_ms,
                });
            }
            out
        }))
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<bool> {
        let expires = now_ms().saturating_add(lease_millis(lease_for, "lease")?);
        let contact = lease.task.contact_id;
        Ok(self.with_campaign(lease.task.campaign_id, |q| {
            let Some(h) = q.held(lease).and_then(|e| e.held.as_mut()) else {
                return false;
            };
            let old = std::mem::replace(&mut h.expires_at_ms, expires);
            q.leases.remove(&(old, contact));
            q.leases.insert((expires, contact));
            true
        }))
    }

    async fn ack(&self, lease: &Lease) -> Result<bool> {
        let contact = lease.task.contact_id;
        Ok(self.with_campaign(lease.task.campaign_id, |q| {
            let Some(expires) = q
                .held(lease)
                .and_then(|e| e.held.as_ref())
                .map(|h| h.expires_at_ms)
            else {
                return false;
            };
            q.leases.remove(&(expires, contact));
            q.tasks.remove(&contact);
            true
        }))
    }

    async fn release(&self, lease: &Lease, due_at_ms: i64) -> Result<bool> {
        let contact = lease.task.contact_id;
        Ok(self.with_campaign(lease.task.campaign_id, |q| {
            let Some(e) = q.held(lease) else {
                return false;
            };
            let held = e.held.take();
            e.due_at_ms = due_at_ms;
            if let Some(h) = held {
                q.leases.remove(&(h.expires_at_ms, contact));
            }
            q.due.insert((due_at_ms, contact));
            true
        }))
    }

    async fn reap(&self, campaign_id: i64, now_ms: i64) -> Result<Vec<Task>> {
        Ok(self.with_campaign(campaign_id, |q| {
            let mut out = Vec::new();
            while let Some(&(expires, contact)) = q.leases.first() {
                if expires > now_ms {
                    break;
                }
                q.leases.pop_first();
                let Some(e) = q.tasks.get_mut(&contact) else {
                    continue;
                };
                e.held = None;
                e.due_at_ms = now_ms;
                q.ready.insert((Reverse(e.priority), now_ms, contact));
                out.push(Task {
                    campaign_id,
                    contact_id: contact,
                    priority: e.priority,
                    due_at_ms: now_ms,
                });
            }
            out
        }))
    }

    async fn remove(&self, campaign_id: i64, contact_id: i64) -> Result<bool> {
        Ok(self.with_campaign(campaign_id, |q| {
            let Some(e) = q.tasks.remove(&contact_id) else {
                return false;
            };
            q.unqueue(contact_id, &e);
            if let Some(h) = &e.held {
                q.leases.remove(&(h.expires_at_ms, contact_id));
            }
            true
        }))
    }

    async fn purge_campaign(&self, campaign_id: i64) -> Result<()> {
        self.with(|all| all.remove(&campaign_id));
        Ok(())
    }

    async fn depth(&self, campaign_id: i64) -> Result<QueueDepth> {
        Ok(self.with(|all| {
            all.get(&campaign_id)
                .map(|q| QueueDepth {
                    due: q.due.len() as u64,
                    ready: q.ready.len() as u64,
                    leased: q.leases.len() as u64,
                })
                .unwrap_or_default()
        }))
    }
}
