//! Changing and deleting campaigns, and caller-ID pools.
//!
//! A campaign's spec is replaced by compare-and-set on its status
//! ([`Store::update_campaign_spec`](crate::Store::update_campaign_spec)); a campaign is deleted
//! with everything that hangs off it in one transaction
//! ([`Store::delete_campaign`](crate::Store::delete_campaign)), and the paths of its recordings
//! come back for the caller to delete from disk.
//!
//! A caller-ID pool is a named set of numbers presented as From that campaigns share
//! (`caller_id_pool` in the spec). Caller IDs are the enterprise's own numbers, not customers':
//! they are stored in clear. A campaign may only name a pool that exists (checked in the
//! transaction that writes the campaign), and a pool named by a campaign that is not finished
//! cannot be deleted.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A stored caller-ID pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerIdPoolRecord {
    pub name: String,
    pub description: Option<String>,
    /// The numbers, in the order they are rotated.
    pub numbers: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A caller-ID pool to create or replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallerIdPool {
    pub name: String,
    pub description: Option<String>,
    pub numbers: Vec<String>,
}

/// What deleting a campaign removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDeletion {
    pub contacts: u64,
    /// Attempts with their CDRs.
    pub attempts: u64,
    /// Webhook deliveries still pending (delivered and failed ones stay as delivery history).
    pub webhooks: u64,
    /// Do-not-call entries scoped to this campaign (global entries stay).
    pub blacklist: u64,
    /// Recording files of the deleted attempts, for the caller to delete.
    pub recordings: Vec<String>,
}

/// The conflict message for a pool that campaigns still use.
pub(crate) fn pool_in_use(name: &str, campaigns: &[i64]) -> String {
    let list = campaigns
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!("caller-ID pool `{name}` is used by campaign(s) {list}, not completed or canceled")
}
