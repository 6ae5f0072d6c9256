//! Persistence for the business layer: campaigns, contacts, attempts (with their CDRs) and
//! trunks, behind one [`Store`] trait.
//!
//! The scheduler keeps no state a crash could lose: a contact is `pending` with a due time,
//! `dialing` with exactly one open attempt, or `done`. [`Store::begin_attempt`] moves a
//! contact from pending to dialing and creates its attempt in one transaction, before the
//! INVITE leaves; [`Store::finish_attempt`] closes the attempt with its CDR and moves the
//! contact back to pending (a retry) or to done, again in one transaction. After a crash,
//! [`Store::open_attempts`] lists what was on the wire so the scheduler can close it.
//!
//! Phone numbers never reach the store in clear: contacts carry the ciphertext and an HMAC
//! blind index (from `outcall-pool`), and a masked form for display.
//!
//! [`sqlite::SqliteStore`] is the embedded implementation (WAL, migrations in
//! `migrations/sqlite`); `postgres::PgStore` (feature `postgres`, on by default) is the shared
//! one of the distributed mode (migrations in `migrations/postgres`, CDRs partitioned by month);
//! [`memory::MemoryStore`] holds everything in memory. `tests/store_suite.rs` is the suite every
//! implementation must pass.
//!
//! CDRs are stored apart from the attempt rows, keyed by attempt id: they arrive either with
//! [`Store::finish_attempt`] or in batches through [`Store::insert_cdrs`] (the ingest of CDRs
//! published on the bus), each exactly once whichever comes first, and
//! [`Store::purge_cdrs_before`] removes old ones.

pub mod access;
pub mod campaign_admin;
pub mod events;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
pub mod webhook;

pub use access::AccessStore;
pub use campaign_admin::{CallerIdPoolRecord, CampaignDeletion, NewCallerIdPool};
pub use events::{EventQuery, EventStore, NewSystemEvent, SystemEvent};
pub use webhook::{NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus};

use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AttemptId, Campaign, CampaignId, CampaignSpec, CampaignStatus, ContactId, ContactState,
};
use outcall_domain::{Cdr, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Store errors, each with a message an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: i64 },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A trunk as stored: its name and its configuration as JSON (owned by the telephony layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrunkRecord {
    pub name: String,
    pub config: serde_json::Value,
}

/// A contact to add. The number arrives protected.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    /// HMAC blind index of the E.164 number (dedup and frequency caps).
    pub number_hash: Vec<u8>,
    /// AES-256-GCM ciphertext of the E.164 number.
    pub number_enc: Vec<u8>,
    /// Masked form for display (`+86138****5678`).
    pub masked: String,
    /// The callee's IANA zone when known.
    pub time_zone: Option<String>,
    /// Higher is dialed first within a campaign.
    pub priority: i32,
    /// Script variables (name, amount due, …).
    pub variables: serde_json::Value,
    /// Attribution (号码归属地), when known.
    pub region: Region,
    /// The trace id its calls carry (a single call placed by an API request: the request's);
    /// `None`: each attempt gets a new one.
    pub trace_id: Option<String>,
}

/// Where a number is registered: province, city, original carrier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub province: Option<String>,
    pub city: Option<String>,
    pub carrier: Option<String>,
}

/// What `add_contacts` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResult {
    pub added: u64,
    /// Already in the campaign (same blind index).
    pub duplicates: u64,
}

/// A stored contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub id: ContactId,
    pub campaign_id: CampaignId,
    #[serde(skip)]
    pub number_hash: Vec<u8>,
    #[serde(skip)]
    pub number_enc: Vec<u8>,
    pub masked: String,
    pub time_zone: Option<String>,
    pub priority: i32,
    pub variables: serde_json::Value,
    pub state: ContactState,
    pub due_at: Timestamp,
    pub attempts: u32,
    pub last_outcome: Option<Outcome>,
    pub final_outcome: Option<Outcome>,
    #[serde(flatten)]
    pub region: Region,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// An attempt that was opened: what the dialer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStart {
    pub attempt_id: AttemptId,
    /// 1 for the first attempt of the contact.
    pub seq: u32,
}

/// After an attempt: where the contact goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactNext {
    /// Back to pending, due at this instant.
    Retry { due_at: Timestamp },
    /// Done with this outcome.
    Done { outcome: Outcome },
}

/// An attempt left open (its node died while it was dialing).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAttempt {
    pub attempt_id: AttemptId,
    pub contact_id: ContactId,
    pub campaign_id: CampaignId,
    pub seq: u32,
    pub started_at: Timestamp,
    pub node: String,
}

/// A stored attempt with its CDR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub campaign_id: CampaignId,
    pub contact_id: ContactId,
    pub seq: u32,
    pub node: String,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub outcome: Option<Outcome>,
    /// Why our side closed it, when it did (`node_restart`).
    pub cause: Option<String>,
    pub cdr: Option<Cdr>,
}

/// A filter over attempts (every field optional), paged by id.
#[derive(Debug, Clone, Default)]
pub struct AttemptQuery {
    pub campaign_id: Option<CampaignId>,
    pub outcome: Option<Outcome>,
    /// Blind index of the number.
    pub number_hash: Option<Vec<u8>>,
    /// Started at or after.
    pub since: Option<Timestamp>,
    /// Started before.
    pub until: Option<Timestamp>,
    pub after: AttemptId,
    pub limit: u32,
}

/// Attempts that started in one UTC hour with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    pub hour: Timestamp,
    pub outcome: String,
    pub attempts: u64,
}

/// Counts for a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCounts {
    /// Contacts by state (`pending`, `dialing`, `done`).
    pub contacts: BTreeMap<String, u64>,
    /// Finished contacts by final outcome.
    pub final_outcomes: BTreeMap<String, u64>,
    /// Attempts by outcome (every attempt, retries included).
    pub attempt_outcomes: BTreeMap<String, u64>,
    pub attempts: u64,
    /// Contacts by province (`unknown` when not attributed).
    #[serde(default)]
    pub provinces: BTreeMap<String, u64>,
}

/// A blacklist (do-not-call) entry to add: an exact number (by blind index) or an E.164 prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBlacklistEntry {
    /// `None`: global; else this campaign only.
    pub campaign_id: Option<CampaignId>,
    /// Blind index of the number (exact entries).
    pub number_hash: Option<Vec<u8>>,
    /// Ciphertext of the number (exact entries), for export.
    pub number_enc: Option<Vec<u8>>,
    /// E.164 prefix (`+86170`) for prefix entries.
    pub prefix: Option<String>,
    /// Masked number or the prefix, for display.
    pub label: String,
    pub reason: String,
    pub source: String,
    pub expires_at: Option<Timestamp>,
}

/// A stored blacklist entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlacklistRecord {
    pub id: i64,
    pub campaign_id: Option<CampaignId>,
    /// `exact` or `prefix`.
    pub kind: String,
    pub label: String,
    pub prefix: Option<String>,
    #[serde(skip)]
    pub number_hash: Option<Vec<u8>>,
    #[serde(skip)]
    pub number_enc: Option<Vec<u8>>,
    pub reason: String,
    pub source: String,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl BlacklistRecord {
    /// Whether this entry blocks `number_hash` / `e164` at `now` for `campaign`.
    pub fn blocks(
        &self,
        campaign: CampaignId,
        number_hash: &[u8],
        e164: &str,
        now: Timestamp,
    ) -> bool {
        if self.expires_at.is_some_and(|e| e <= now) {
            return false;
        }
        if self.campaign_id.is_some_and(|c| c != campaign) {
            return false;
        }
        match (&self.number_hash, &self.prefix) {
            (Some(h), _) => h.as_slice() == number_hash,
            (None, Some(p)) => e164.starts_with(p.as_str()),
            (None, None) => false,
        }
    }
}

/// What Outcall has learned about one number (by blind index), across campaigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberStatus {
    /// `valid` (answered), `empty` (confirmed 空号), `suspended`, `invalid_format`, `unknown`.
    pub status: String,
    pub last_outcome: Outcome,
    pub attempts: u32,
    pub answered: u32,
    pub updated_at: Timestamp,
}

/// What an erasure changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseResult {
    /// Contact rows scrubbed (number, masked form and variables gone; the row stays as a
    /// tombstone so counts and attempt history hold together).
    pub contacts: u64,
    /// Attempts whose CDR callee was masked to `[erased]` and recording reference dropped.
    pub attempts: u64,
    /// Recording files of those attempts, for the caller to delete.
    pub recordings: Vec<String>,
}

/// A stored number ciphertext, for key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedNumber {
    /// `contacts` or `blacklist`.
    pub table: &'static str,
    pub id: i64,
    pub number_enc: Vec<u8>,
}

/// A CDR to store with [`Store::insert_cdrs`].
#[derive(Debug, Clone, PartialEq)]
pub struct CdrRow {
    pub attempt_id: AttemptId,
    pub campaign_id: CampaignId,
    /// When the attempt started (the `now` [`Store::begin_attempt`] was given): the CDR is
    /// filed under it (its month on PostgreSQL). A store that knows the attempt uses the
    /// attempt's own start and campaign instead of these.
    pub started_at: Timestamp,
    pub cdr: Cdr,
}

/// What one CDR retention pass ([`Store::purge_cdrs_before`]) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrPurge {
    /// CDRs deleted one by one (SQLite, memory). PostgreSQL drops whole partitions and does not
    /// count their rows: 0 there.
    pub deleted: u64,
    /// Monthly partitions detached and dropped, by name (`cdrs_y2025m10`; PostgreSQL only).
    pub dropped_partitions: Vec<String>,
}

/// The repository of the business layer. Every method is atomic.
#[async_trait]
/// Every store also keeps the access layer's tables ([`AccessStore`]) and the system events
/// ([`EventStore`]).
pub trait Store: AccessStore + EventStore + Send + Sync + 'static {
    async fn upsert_trunk(&self, trunk: &TrunkRecord) -> Result<()>;
    async fn list_trunks(&self) -> Result<Vec<TrunkRecord>>;

    async fn create_campaign(&self, spec: &CampaignSpec, now: Timestamp) -> Result<Campaign>;
    async fn get_campaign(&self, id: CampaignId) -> Result<Campaign>;
    async fn list_campaigns(&self) -> Result<Vec<Campaign>>;
    /// Compare-and-set of the status: fails with `Conflict` if it is no longer `from`.
    async fn set_campaign_status(
        &self,
        id: CampaignId,
        from: CampaignStatus,
        to: CampaignStatus,
        now: Timestamp,
    ) -> Result<Campaign>;

    /// Adds contacts, due at `now`; numbers already in the campaign are counted as duplicates.
    async fn add_contacts(
        &self,
        campaign: CampaignId,
        contacts: &[NewContact],
        now: Timestamp,
    ) -> Result<AddResult>;
    /// Pending contacts due at or before `until`, by priority (high first) then due time.
    async fn due_contacts(
        &self,
        campaign: CampaignId,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ContactRecord>>;
    async fn get_contact(&self, id: ContactId) -> Result<ContactRecord>;
    /// A campaign's contacts in id order after `after`, optionally in one state.
    async fn list_contacts(
        &self,
        campaign: CampaignId,
        state: Option<ContactState>,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<ContactRecord>>;
    /// Blind indexes of a campaign's contacts with an id above `after`, in id order (to seed an
    /// import's dedup filter).
    async fn contact_hashes(
        &self,
        campaign: CampaignId,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, Vec<u8>)>>;
    /// Whether the campaign already has this number.
    async fn contact_exists(&self, campaign: CampaignId, number_hash: &[u8]) -> Result<bool>;
    /// Moves a pending contact's due time (window deferral, frequency cap). A contact that is
    /// no longer pending is left as it is; `NotFound` if there is no such contact.
    async fn defer_contact(&self, id: ContactId, due_at: Timestamp) -> Result<()>;
    /// Pending → dialing and a new attempt, atomically. `None` if the contact was not pending
    /// (or does not exist): of concurrent calls for one contact, exactly one gets `Some`.
    async fn begin_attempt(
        &self,
        contact: ContactId,
        node: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptStart>>;
    /// Closes an attempt (with its CDR, if a call was placed) and moves its contact on.
    /// `Conflict` if the attempt is already finished, `NotFound` if there is no such attempt.
    /// A CDR already stored for the attempt (by [`Store::insert_cdrs`]) stays as it is.
    async fn finish_attempt(
        &self,
        attempt: AttemptId,
        outcome: Outcome,
        cause: Option<&str>,
        cdr: Option<&Cdr>,
        next: ContactNext,
        now: Timestamp,
    ) -> Result<()>;
    /// Stores CDRs in one batch (the ingest of CDRs from the bus). Idempotent by attempt id: a
    /// CDR already stored for an attempt (by this method or by [`Store::finish_attempt`]) is
    /// left as it is and not counted, and so is the second of two rows for one attempt in the
    /// batch. A CDR whose attempt the store does not know is stored all the same (the attempt
    /// row may come later, from another node). Returns how many CDRs were written.
    async fn insert_cdrs(&self, batch: &[CdrRow]) -> Result<u64>;
    /// CDRs stored, of one campaign or of all.
    async fn count_cdrs(&self, campaign: Option<CampaignId>) -> Result<u64>;
    /// CDR retention: removes CDRs of attempts that started before `cutoff`; attempt rows stay
    /// (without their CDR). SQLite and memory delete exactly those, row by row. PostgreSQL
    /// detaches and drops whole monthly partitions whose month ended at or before `cutoff`, so
    /// a CDR can outlive the cutoff by up to a month; a cutoff at the start of a month (UTC)
    /// gives the same result everywhere. PostgreSQL also creates the partitions of the current
    /// month and the next ones here when they are missing: run it periodically (hourly).
    async fn purge_cdrs_before(&self, cutoff: Timestamp) -> Result<CdrPurge>;
    /// Attempts of this contact by outcome.
    async fn outcome_counts(&self, contact: ContactId) -> Result<BTreeMap<Outcome, u32>>;
    /// Attempts to this number (blind index) started at or after `since`, all campaigns.
    async fn attempts_to_number_since(&self, number_hash: &[u8], since: Timestamp) -> Result<u32>;
    /// Attempts still open (dialing), on any node.
    async fn open_attempts(&self) -> Result<Vec<OpenAttempt>>;
    /// Contacts not done, for completion detection.
    async fn unfinished_contacts(&self, campaign: CampaignId) -> Result<u64>;
    /// The earliest due time of a pending contact.
    async fn next_due(&self, campaign: CampaignId) -> Result<Option<Timestamp>>;
    /// The backlog: pending contacts of running campaigns due at `now` or before, and the
    /// oldest due time among them.
    async fn due_backlog(&self, now: Timestamp) -> Result<(u64, Option<Timestamp>)>;

    async fn campaign_counts(&self, campaign: CampaignId) -> Result<CampaignCounts>;
    /// Attempts of a campaign in id order after `after` (cursor paging).
    async fn list_attempts(
        &self,
        campaign: CampaignId,
        after: Option<AttemptId>,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>>;
    /// Attempts of any campaign matching a filter, in id order after `q.after`.
    async fn query_attempts(&self, q: &AttemptQuery) -> Result<Vec<AttemptRecord>>;
    /// A campaign's attempts counted by the UTC hour they started in and by outcome
    /// (`in_progress` while open), in hour order.
    async fn attempts_by_hour(&self, campaign: CampaignId) -> Result<Vec<HourCount>>;

    /// Adds blacklist entries; returns how many were added.
    async fn add_blacklist(&self, entries: &[NewBlacklistEntry], now: Timestamp) -> Result<u64>;
    /// Entries that apply to `campaign` (global ones and its own) and have not expired at `now`;
    /// `None` lists every entry, expired or not.
    async fn list_blacklist(
        &self,
        campaign: Option<CampaignId>,
        now: Timestamp,
    ) -> Result<Vec<BlacklistRecord>>;
    /// Removes an entry (`NotFound` if there is none).
    async fn remove_blacklist(&self, id: i64) -> Result<()>;
    /// Learns from an attempt's outcome: `status` replaces the number's status when given
    /// (`valid`, `empty`, …); counts and the last outcome always update.
    async fn record_number_outcome(
        &self,
        number_hash: &[u8],
        outcome: Outcome,
        status: Option<&str>,
        now: Timestamp,
    ) -> Result<()>;
    /// Blind indexes of numbers whose status is `status`, updated at or after `since`, above
    /// `after` in byte order (paging), for an import to check against in memory.
    async fn numbers_with_status(
        &self,
        status: &str,
        since: Timestamp,
        after: &[u8],
        limit: u32,
    ) -> Result<Vec<Vec<u8>>>;
    /// The number's status, if it was updated at or after `since` (older statuses have aged out).
    async fn number_status(
        &self,
        number_hash: &[u8],
        since: Timestamp,
    ) -> Result<Option<NumberStatus>>;
    /// Right to erasure: scrubs every contact with this number (all campaigns), masks it in the
    /// CDRs of their attempts and forgets its learned status. Blacklist entries stay (a do-not-
    /// call request outlives the data).
    async fn erase_number(&self, number_hash: &[u8]) -> Result<EraseResult>;
    /// Number ciphertexts of contacts and blacklist entries with an id above `after`
    /// (per table), in id order, for re-encryption.
    async fn sealed_numbers(
        &self,
        table: &'static str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SealedNumber>>;
    /// Replaces one ciphertext (same number, new key).
    async fn reseal_number(&self, table: &'static str, id: i64, number_enc: &[u8]) -> Result<()>;
    /// The first unexpired entry that blocks this number for this campaign, if any.
    async fn blacklist_match(
        &self,
        campaign: CampaignId,
        number_hash: &[u8],
        e164: &str,
        now: Timestamp,
    ) -> Result<Option<BlacklistRecord>>;

    // Webhook outbox (see [`webhook`]).
    /// Adds an event to deliver, pending; returns its delivery id. An event id already in the
    /// outbox is not added again (its delivery id is returned).
    async fn enqueue_webhook(&self, event: &NewWebhookEvent) -> Result<i64>;
    /// Up to `limit` pending deliveries due at `now`, earliest first, leased until
    /// `lease_until` (not due again before then). Only the oldest pending delivery of each
    /// attempt is ever taken, so one attempt's events go out in order.
    async fn take_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;
    /// When the next pending delivery that could be taken is due.
    async fn next_webhook_due(&self) -> Result<Option<Timestamp>>;
    /// A try got a 2xx: `delivered`. A delivery that is no longer pending is left as it is.
    async fn webhook_delivered(&self, id: i64, at: Timestamp, http_status: u16) -> Result<()>;
    /// A try failed: counted, with its error, and rescheduled or given up (`failed`). Returns
    /// the delivery's status after it; `Conflict` if it was not pending.
    async fn webhook_failed(&self, id: i64, failure: &WebhookFailure) -> Result<WebhookStatus>;
    /// Deliveries in id order, filtered by status and campaign, after a cursor.
    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Vec<WebhookDelivery>>;
    async fn get_webhook(&self, id: i64) -> Result<WebhookDelivery>;
    /// A `failed` delivery back to `pending`, due at `now`, its tries counted from 0 again;
    /// `Conflict` for a delivery that is not `failed`.
    async fn requeue_webhook(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery>;
    /// Deletes delivered and failed deliveries last changed before `before` (retention);
    /// pending ones always stay. Returns how many went.
    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64>;

    // Changing and deleting campaigns, caller-ID pools (see [`campaign_admin`]).
    /// Replaces a campaign's spec (its name and priority with it) if its status is one of
    /// `expected`: compare-and-set like [`Store::set_campaign_status`], `Conflict` when the
    /// status is another, `NotFound` when there is no such campaign. A spec naming a caller-ID
    /// pool that does not exist is a `Conflict` too.
    async fn update_campaign_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign>;
    /// Deletes a campaign whose status is one of `allowed`, with its contacts, its attempts
    /// (CDRs), its own blacklist entries and its pending webhook deliveries, in one
    /// transaction. `Conflict` when the status is another or an attempt is still open;
    /// `NotFound` when there is no such campaign. Returns the counts and the recording paths.
    async fn delete_campaign(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<CampaignDeletion>;
    /// Creates or replaces a caller-ID pool; `true` when it was created.
    async fn upsert_caller_id_pool(
        &self,
        pool: &NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(CallerIdPoolRecord, bool)>;
    async fn get_caller_id_pool(&self, name: &str) -> Result<Option<CallerIdPoolRecord>>;
    /// Every pool, by name.
    async fn list_caller_id_pools(&self) -> Result<Vec<CallerIdPoolRecord>>;
    /// Deletes a pool; `false` when there was none. `Conflict` (naming them) while campaigns
    /// that are not completed or canceled name it.
    async fn delete_caller_id_pool(&self, name: &str) -> Result<bool>;
}
