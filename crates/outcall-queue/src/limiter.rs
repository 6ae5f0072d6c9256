//! Global pacing: calls in progress and calls per second, per campaign and per trunk, across
//! every dialer node.

use crate::error::{QueueError, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Limits of a campaign or a trunk. `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PaceLimits {
    /// Calls in progress at once.
    pub max_concurrent: Option<u32>,
    /// Calls started per second.
    pub max_cps: Option<f64>,
    /// Calls that may start back to back after a quiet spell (at least 1); over any interval
    /// of `t` seconds at most `max_cps * t + cps_burst` calls start.
    pub cps_burst: u32,
}

impl PaceLimits {
    /// No limit at all.
    pub const UNLIMITED: PaceLimits = PaceLimits {
        max_concurrent: None,
        max_cps: None,
        cps_burst: 1,
    };

    /// Limits with a burst of 20 ms worth of calls (at least one), as the in-process pacer.
    pub fn new(max_concurrent: Option<u32>, max_cps: Option<f64>) -> Self {
        let cps_burst = max_cps.map_or(1, |r| ((r / 50.0).ceil() as u32).max(1));
        PaceLimits {
            max_concurrent,
            max_cps,
            cps_burst,
        }
    }

    /// The spacing of calls in microseconds (`None`: unlimited), after checking the rate.
    pub(crate) fn interval_us(&self, what: &'static str) -> Result<Option<f64>> {
        match self.max_cps {
            None => Ok(None),
            Some(r) if r.is_finite() && r > 0.0 && r <= 1_000_000.0 => Ok(Some(1e6 / r)),
            Some(r) => Err(QueueError::Invalid {
                what,
                message: format!("max_cps {r} must be greater than 0 and at most 1000000"),
            }),
        }
    }

    pub(crate) fn burst(&self) -> u32 {
        self.cps_burst.max(1)
    }
}

/// A request for a call slot: one in its campaign and one on its trunk, both or neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotRequest {
    /// Identifies the call (its SIP Call-ID or attempt id); release and renew name it.
    pub call_id: String,
    /// The node placing the call (for logs).
    pub node: String,
    pub campaign_id: i64,
    pub campaign_limits: PaceLimits,
    pub trunk: String,
    pub trunk_limits: PaceLimits,
    /// How long the slots stay taken without a renew: a node that dies frees its slots
    /// after this.
    pub hold: Duration,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The campaign has `max_concurrent` calls in progress.
    CampaignConcurrency,
    /// The trunk has `max_concurrent` calls in progress.
    TrunkConcurrency,
    /// The campaign's calls-per-second limit.
    CampaignRate,
    /// The trunk's calls-per-second limit.
    TrunkRate,
}

impl DenyReason {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "campaign_concurrency" => DenyReason::CampaignConcurrency,
            "trunk_concurrency" => DenyReason::TrunkConcurrency,
            "campaign_rate" => DenyReason::CampaignRate,
            "trunk_rate" => DenyReason::TrunkRate,
            _ => return None,
        })
    }
}

/// The answer to a [`SlotRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Both slots are taken for the call.
    Granted,
    /// Neither was taken. `retry_after`: when a rate limit will let a call through; `None`
    /// for a concurrency limit (a slot frees when a call ends).
    Denied {
        retry_after: Option<Duration>,
        reason: DenyReason,
    },
}

impl Acquire {
    /// Whether the slots were granted.
    pub fn is_granted(&self) -> bool {
        matches!(self, Acquire::Granted)
    }
}

/// Calls in progress holding a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotUsage {
    pub campaign: u32,
    pub trunk: u32,
}

/// Pacing shared by every node: a call needs a slot in its campaign and one on its trunk.
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Takes the campaign's and the trunk's slots for the call, both or neither. A call that
    /// already holds both is granted again (its hold is renewed, no rate is charged).
    async fn try_acquire(&self, req: &SlotRequest) -> Result<Acquire>;

    /// Frees the call's slots. `false` if it held none (released already, or expired).
    async fn release(&self, call_id: &str, campaign_id: i64, trunk: &str) -> Result<bool>;

    /// Keeps a long call's slots for `hold` from now. `false` if they were lost (the hold
    /// expired and the slots went to other calls): the call may go on, uncounted.
    async fn renew(
        &self,
        call_id: &str,
        campaign_id: i64,
        trunk: &str,
        hold: Duration,
    ) -> Result<bool>;

    /// Calls holding a slot now.
    async fn usage(&self, campaign_id: i64, trunk: &str) -> Result<SlotUsage>;
}

pub(crate) fn hold_millis(hold: Duration) -> Result<u64> {
    let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(QueueError::Invalid {
            what: "slot hold",
            message: format!("{hold:?} is shorter than a millisecond"),
        });
    }
    Ok(ms)
}

/// The limiter in memory, for one process (embedded mode). Clones share the counts.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    state: Arc<Mutex<LimiterState>>,
    epoch: Instant,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Calls holding a slot: call id → expiry (µs since `epoch`).
    campaign_calls: HashMap<i64, BTreeMap<String, f64>>,
    trunk_calls: HashMap<String, BTreeMap<String, f64>>,
    /// GCRA theoretical arrival time (µs since `epoch`).
    campaign_tat: HashMap<i64, f64>,
    trunk_tat: HashMap<String, f64>,
}

/// GCRA: `Ok(new tat)` if a call may start now, else how long until one may (µs). A call
/// may start while the theoretical arrival time is at most `burst - 1` intervals ahead.
pub(crate) fn gcra(
    tat: Option<f64>,
    now: f64,
    interval: f64,
    burst: u32,
) -> std::result::Result<f64, f64> {
    let tat = tat.unwrap_or(now).max(now);
    let ahead = tat - now - f64::from(burst - 1) * interval;
    if ahead > 0.0 {
        Err(ahead)
    } else {
        Ok(tat + interval)
    }
}

fn prune(calls: &mut BTreeMap<String, f64>, now: f64) {
    calls.retain(|_, until| *until > now);
}

impl MemoryLimiter {
    /// A limiter with no call in progress.
    pub fn new() -> Self {
        MemoryLimiter {
            state: Arc::default(),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e6
    }

    fn with<T>(&self, f: impl FnOnce(&mut LimiterState) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn try_acquire(&self, req: &SlotRequest) -> Result<Acquire> {
        let hold_us = hold_millis(req.hold)? as f64 * 1e3;
        let c_interval = req.campaign_limits.interval_us("campaign max_cps")?;
        let t_interval = req.trunk_limits.interval_us("trunk max_cps")?;
        let now = self.now_us();
        let until = now + hold_us;
        Ok(self.with(|s| {
            let cc = s.campaign_calls.entry(req.campaign_id).or_default();
            prune(cc, now);
            let c_held = cc.contains_key(&req.call_id);
            let c_full = req
                .campaign_limits
                .max_concurrent
                .is_some_and(|m| cc.len() >= m as usize);
            let tc = s.trunk_calls.entry(req.trunk.clone()).or_default();
            prune(tc, now);
            let t_held = tc.contains_key(&req.call_id);
            let t_full = req
                .trunk_limits
                .max_concurrent
                .is_some_and(|m| tc.len() >= m as usize);
            let deny = |reason, wait: Option<f64>| Acquire::Denied {
                retry_after: wait.map(|us| Duration::from_secs_f64(us / 1e6)),
                reason,
            };
            if c_held && t_held {
                if let Some(u) = s.campaign_calls.get_mut(&req.campaign_id) {
                    u.insert(req.call_id.clone(), until);
                }
                if let Some(u) = s.trunk_calls.get_mut(&req.trunk) {
                    u.insert(req.call_id.clone(), until);
                }
                return Acquire::Granted;
            }
            if !c_held && c_full {
                return deny(DenyReason::CampaignConcurrency, None);
            }
            if !t_held && t_full {
                return deny(DenyReason::TrunkConcurrency, None);
            }
            let c_tat = match c_interval {
                None => None,
                Some(i) => {
                    let tat = s.campaign_tat.get(&req.campaign_id).copied();
                    match gcra(tat, now, i, req.campaign_limits.burst()) {
                        Ok(t) => Some(t),
                        Err(w) => return deny(DenyReason::CampaignRate, Some(w)),
                    }
                }
            };
            let t_tat = match t_interval {
                None => None,
                Some(i) => {
                    let tat = s.trunk_tat.get(&req.trunk).copied();
                    match gcra(tat, now, i, req.trunk_limits.burst()) {
                        Ok(t) => Some(t),
                        Err(w) => return deny(DenyReason::TrunkRate, Some(w)),
                    }
                }
            };
            if let Some(t) = c_tat {
                s.campaign_tat.insert(req.campaign_id, t);
            }
            if let Some(t) = t_tat {
                s.trunk_tat.insert(req.trunk.clone(), t);
            }
            s.campaign_calls
                .entry(req.campaign_id)
                .or_default()
                .insert(req.call_id.clone(), until);
            s.trunk_calls
                .entry(req.trunk.clone())
                .or_default()
                .insert(req.call_id.clone(), until);
            Acquire::Granted
        }))
    }

    async fn release(&self, call_id: &str, campaign_id: i64, trunk: &str) -> Result<bool> {
        let now = self.now_us();
        Ok(self.with(|s| {
            let mut freed = false;
            if let Some(cc) = s.campaign_calls.get_mut(&campaign_id) {
                freed |= cc.remove(call_id).is_some_and(|u| u > now);
                if cc.is_empty() {
                    s.campaign_calls.remove(&campaign_id);
                }
            }
            if let Some(tc) = s.trunk_calls.get_mut(trunk) {
                freed |= tc.remove(call_id).is_some_and(|u| u > now);
                if tc.is_empty() {
                    s.trunk_calls.remove(trunk);
                }
            }
            freed
        }))
    }

    async fn renew(
        &self,
        call_id: &str,
        campaign_id: i64,
        trunk: &str,
        hold: Duration,
    ) -> Result<bool> {
        let now = self.now_us();
        let until = now + hold_millis(hold)? as f64 * 1e3;
        Ok(self.with(|s| {
            let mut both = true;
            for calls in [
                s.campaign_calls.get_mut(&campaign_id),
                s.trunk_calls.get_mut(trunk),
            ] {
                match calls {
                    Some(calls) => {
                        prune(calls, now);
                        match calls.get_mut(call_id) {
                            Some(u) => *u = until,
                            None => both = false,
                        }
                    }
                    None => both = false,
                }
            }
            both
        }))
    }

    async fn usage(&self, campaign_id: i64, trunk: &str) -> Result<SlotUsage> {
        let now = self.now_us();
        Ok(self.with(|s| {
            let live = |c: Option<&BTreeMap<String, f64>>| {
                c.map_or(0, |c| c.values().filter(|u| **u > now).count() as u32)
            };
            SlotUsage {
                campaign: live(s.campaign_calls.get(&campaign_id)),
                trunk: live(s.trunk_calls.get(trunk)),
            }
        }))
    }
}
