//! Storage of the access layer: users, API keys, the audit log and idempotency keys.
//!
//! Roles are stored as their names; what a role may do is the API's business. Secrets never
//! arrive here in clear: users carry an argon2id hash, API keys the SHA-256 of their secret.
//! The audit log is append-only (SQLite refuses an `UPDATE` with a trigger); only
//! [`AccessStore::purge_audit`] deletes, for retention.

use crate::Result;
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub role: String,
}

/// Changes to a user; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<String>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

/// An API key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub secret_hash: Vec<u8>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// An API key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_by: String,
}

/// One audit log entry to append.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    /// `user:<name>`, `key:<id>`, `system`, or the name tried at a failed login.
    pub actor: String,
    pub role: Option<String>,
    /// `auth.login`, `contacts.import`, `campaign.delete`, …
    pub action: String,
    /// What was acted on (`campaign:3`, `user:7`).
    pub target: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// JSON object with the details (never a clear phone number).
    pub detail: serde_json::Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// An audit log entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// A filter over the audit log, paged by id.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub after: i64,
    pub limit: u32,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// What became of an idempotency key claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use: run the request, then [`AccessStore::idempotency_complete`] or
    /// [`AccessStore::idempotency_release`].
    New,
    /// A request with this key is still running.
    InProgress { request_hash: Vec<u8> },
    /// Done before: this is its response.
    Done {
        request_hash: Vec<u8>,
        status: u16,
        body: String,
    },
}

/// Storage of users, API keys, the audit log and idempotency keys.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// A new user; `Conflict` if the name is taken.
    async fn create_user(&self, user: &NewUser, now: Timestamp) -> Result<UserRecord>;
    async fn get_user(&self, id: i64) -> Result<UserRecord>;
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    async fn update_user(&self, id: i64, update: &UserUpdate, now: Timestamp)
        -> Result<UserRecord>;
    async fn count_users(&self) -> Result<u64>;

    async fn create_api_key(&self, key: &NewApiKey, now: Timestamp) -> Result<ApiKeyRecord>;
    async fn get_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key (idempotent: the first revocation time stays).
    async fn revoke_api_key(&self, id: i64, now: Timestamp) -> Result<ApiKeyRecord>;

    /// Appends an entry; returns its id.
    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
    /// Deletes entries older than `before`; returns how many.
    async fn purge_audit(&self, before: Timestamp) -> Result<u64>;

    /// Claims `key` in `scope` for a request whose body hashes to `request_hash`.
    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
    ) -> Result<IdempotencyClaim>;
    /// Stores the response of a claimed key.
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()>;
    /// Forgets a claimed key whose request failed, so it can be tried again.
    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()>;
    /// Forgets keys older than `before`.
    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64>;
}
