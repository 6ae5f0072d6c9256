//! Call status events: what the scheduler tells the outside world about each attempt.
//!
//! When a [`CallEventSink`] is configured ([`SchedulerDeps::events`](crate::SchedulerDeps)),
//! every attempt produces, in this order:
//!
//! - `initiated` when the call is handed to the call engine;
//! - `ringing` on the first transition to ringing or early media;
//! - `answered` when the callee answers;
//! - `completed` once the attempt is recorded in the store, with its outcome, the cause when
//!   our side decided it (`blacklist`, `known_empty`, `number_unreadable`, `node_restart`, …)
//!   and the CDR when a call was placed.
//!
//! Attempts that were never dialed (blocked, unreadable number) produce only `completed`; a
//! call that never rang produces no `ringing`, one never answered no `answered`. Attempts
//! closed after a crash (`node_restart`) produce `completed` at the next start.

use jiff::Timestamp;
use outcall_domain::campaign::{AttemptId, CampaignId, ContactId, StatusEventKind};
use outcall_domain::{Cdr, Outcome};
use serde::Serialize;

/// One status event of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusEvent {
    pub kind: StatusEventKind,
    pub campaign_id: CampaignId,
    pub contact_id: ContactId,
    pub attempt_id: AttemptId,
    /// 1 for the contact's first attempt.
    pub seq: u32,
    /// When it happened (for `ringing` and `answered`: the call engine's transition time).
    pub at: Timestamp,
    /// The callee, masked (`+86138****5678`): never the clear number.
    pub number: String,
    /// `completed` only.
    pub outcome: Option<Outcome>,
    /// `completed` only: why our side decided the outcome, when it did.
    pub cause: Option<String>,
    /// `completed` only, when a call was placed.
    pub cdr: Option<Cdr>,
}

/// Receives status events. `emit` must not block: the scheduler calls it from call tasks.
pub trait CallEventSink: Send + Sync {
    fn emit(&self, event: StatusEvent);
}
