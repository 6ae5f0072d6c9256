//! The business layer's scheduler: which contact is dialed when, on which trunk, how fast.
//!
//! Contacts wait in the store with a due time. The scheduler loads those due soon into a
//! timing wheel (`tokio_util::time::DelayQueue`); when a due time arrives the task moves to a
//! priority queue ordered by (campaign priority, contact priority, due time). Dispatch takes
//! the best task that its campaign's pacer, a trunk's pacer and the node's limit allow (a
//! token bucket for calls per second, a counter for calls in progress), checks the calling
//! window in the callee's time zone (a closed window defers the task to its next opening; it
//! is never dialed) and the per-number frequency caps across campaigns, opens the attempt in
//! the store, and hands the call to the [`CallEngine`](outcall_telephony::CallEngine). When the
//! call ends its outcome goes through the campaign's retry policy: the contact comes back with
//! a new due time, or is done.
//!
//! Trunks that fail calls are slowed down (their rate follows a factor cut on failures and
//! raised again gradually) and, after failures in a row, skipped for a while behind a circuit
//! breaker; each change is a system event in the store ([`health`]).
//!
//! Nothing lives only in memory: on start, attempts left open by a crash are closed as
//! `failed` with cause `node_restart` and rescheduled by the policy, and the wheel is rebuilt
//! from the store.

pub mod clock;
pub mod events;
pub mod health;
pub mod pacer;
mod scheduler;

pub use clock::Clock;
pub use events::{CallEventSink, StatusEvent};
pub use health::{Circuit, DegradationConfig};
pub use scheduler::{
    start, CampaignLive, SchedulerConfig, SchedulerDeps, SchedulerError, SchedulerHandle,
    TrunkHealthView,
};
