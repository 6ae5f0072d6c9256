//! Which dialer nodes are alive, and how loaded.

use crate::error::{QueueError, Result};
use crate::now_ms;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A dialer node as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialerInfo {
    /// Unique node name.
    pub node: String,
    /// Where its call RPC listens (`host:port`).
    pub rpc_addr: String,
    /// Calls it can carry at once.
    pub capacity: u32,
    /// Calls it carries now.
    pub active: u32,
    /// Finishing its calls before a stop: takes no new call.
    pub draining: bool,
}

impl DialerInfo {
    /// Whether it takes a new call: not draining and below capacity.
    pub fn accepts_calls(&self) -> bool {
        !self.draining && self.active < self.capacity
    }
}

/// The dialer that should take the next call: the lowest load (`active / capacity`) among
/// those that take calls; ties go to the fewest active calls, then to the node name.
pub fn least_loaded(dialers: &[DialerInfo]) -> Option<&DialerInfo> {
    dialers.iter().filter(|d| d.accepts_calls()).min_by(|a, b| {
        // a.active / a.capacity against b.active / b.capacity, exactly.
        let la = u64::from(a.active) * u64::from(b.capacity);
        let lb = u64::from(b.active) * u64::from(a.capacity);
        la.cmp(&lb)
            .then(a.active.cmp(&b.active))
            .then_with(|| a.node.cmp(&b.node))
    })
}

/// Live dialer nodes. Each node registers at start and again every few seconds (its
/// heartbeat, carrying its load); a node whose last heartbeat is older than its ttl is gone.
#[async_trait]
pub trait DialerRegistry: Send + Sync {
    /// Registers or refreshes the node for `ttl` from now (system clock).
    async fn register(&self, info: &DialerInfo, ttl: Duration) -> Result<()>;

    /// Removes the node at once (a clean stop).
    async fn deregister(&self, node: &str) -> Result<()>;

    /// The nodes whose heartbeat is within their ttl at `now_ms` (milliseconds since the
    /// Unix epoch), by name. Expired entries are removed.
    async fn live(&self, now_ms: i64) -> Result<Vec<DialerInfo>>;
}

pub(crate) fn ttl_millis(ttl: Duration) -> Result<i64> {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 {
        return Err(QueueError::Invalid {
            what: "registration ttl",
            message: format!("{ttl:?} is shorter than a millisecond"),
        });
    }
    Ok(ms)
}

/// The registry in memory, for one process (embedded mode). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    nodes: Arc<Mutex<HashMap<String, (DialerInfo, i64)>>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DialerRegistry for MemoryRegistry {
    async fn register(&self, info: &DialerInfo, ttl: Duration) -> Result<()> {
        let expires = now_ms().saturating_add(ttl_millis(ttl)?);
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(info.node.clone(), (info.clone(), expires));
        Ok(())
    }

    async fn deregister(&self, node: &str) -> Result<()> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
        Ok(())
    }

    async fn live(&self, now_ms: i64) -> Result<Vec<DialerInfo>> {
        let mut g = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        g.retain(|_, (_, expires)| *expires > now_ms);
        let mut out: Vec<DialerInfo> = g.values().map(|(d, _)| d.clone()).collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(node: &str, capacity: u32, active: u32, draining: bool) -> DialerInfo {
        DialerInfo {
            node: node.into(),
            rpc_addr: format!("{node}:7000"),
            capacity,
            active,
            draining,
        }
    }

    #[test]
    fn least_loaded_picks_the_lowest_ratio() {
        let all = [
            d("a", 100, 50, false),
            d("b", 10, 3, false),
            d("c", 200, 90, false),
        ];
        assert_eq!(least_loaded(&all).map(|d| d.node.as_str()), Some("b"));
    }

    #[test]
    fn least_loaded_skips_draining_and_full_nodes() {
        let all = [
            d("a", 100, 0, true),
            d("b", 10, 10, false),
            d("c", 0, 0, false),
            d("d", 100, 99, false),
        ];
        assert_eq!(least_loaded(&all).map(|d| d.node.as_str()), Some("d"));
        assert_eq!(least_loaded(&all[..3]), None);
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn least_loaded_breaks_ties_by_fewest_active_then_name() {
        // 1/10 and 10/100 are the same load: fewer calls in progress wins.
        let all = [d("a", 100, 10, false), d("b", 10, 1, false)];
        assert_eq!(least_loaded(&all).map(|d| d.node.as_str()), Some("b"));
        let all = [
            d("z", 10, 1, false),
            d("m", 10, 1, false),
            d("q", 10, 1, false),
        ];
        assert_eq!(least_loaded(&all).map(|d| d.node.as_str()), Some("m"));
    }
}
