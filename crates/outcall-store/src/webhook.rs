//! The outbox of status webhooks: every event to POST to a campaign's status callback is a row,
//! written when the event happens and kept with the result of its last try.
//!
//! A delivery is `pending` until a try gets a 2xx (`delivered`) or the dispatcher gives up
//! (`failed`; an operator can re-queue it). [`Store::take_due_webhooks`](crate::Store) leases
//! what it returns (its `next_attempt_at` moves to the lease's end), so a dispatcher that dies
//! mid-try loses nothing: the lease runs out and the event is tried again. Deliveries of one
//! attempt go out in order: only the oldest pending delivery of an attempt is ever due.
//!
//! Payloads carry masked numbers only, like CDRs.

use jiff::Timestamp;
use outcall_domain::campaign::{AttemptId, CampaignId};
use serde::{Deserialize, Serialize};

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Waiting for its next try.
    Pending,
    /// A try got a 2xx.
    Delivered,
    /// Given up after the last try; can be re-queued.
    Failed,
}

impl WebhookStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Delivered => "delivered",
            WebhookStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookStatus> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|w| w.as_str() == s)
    }
}

impl std::fmt::Display for WebhookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhookEvent {
    /// Unique; the receiver deduplicates on it.
    pub event_id: String,
    pub campaign_id: CampaignId,
    pub attempt_id: AttemptId,
    /// `initiated`, `ringing`, `answered`, `completed`.
    pub event: String,
    pub url: String,
    /// The JSON body, sent as it is on every try (masked numbers only).
    pub payload: serde_json::Value,
    pub created_at: Timestamp,
    /// The first try.
    pub next_attempt_at: Timestamp,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: i64,
    pub event_id: String,
    pub campaign_id: CampaignId,
    pub attempt_id: AttemptId,
    pub event: String,
    pub url: String,
    pub payload: serde_json::Value,
    pub status: WebhookStatus,
    /// Tries made so far (a re-queue starts again from 0).
    pub tries: u32,
    pub last_error: Option<String>,
    pub last_http_status: Option<u16>,
    pub created_at: Timestamp,
    /// The next try (pending), or when the last lease or try was scheduled.
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// A try that did not get a 2xx.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookFailure {
    pub at: Timestamp,
    /// What went wrong (`HTTP 500`, `connection refused`, `timed out`).
    pub error: String,
    /// The receiver's status, when it answered.
    pub http_status: Option<u16>,
    /// The next try; `None` gives up (`failed`).
    pub retry_at: Option<Timestamp>,
}

/// Which deliveries to list: filters and a cursor (ids above `after`, in id order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookQuery {
    pub status: Option<WebhookStatus>,
    pub campaign_id: Option<CampaignId>,
    pub after: Option<i64>,
    pub limit: u32,
}
