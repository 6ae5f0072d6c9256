//! [`AccessStore`] in memory.

use super::MemoryStore;
use crate::access::{
    AccessStore, ApiKeyRecord, AuditQuery, AuditRecord, IdempotencyClaim, NewApiKey, NewAuditEntry,
    NewUser, UserRecord, UserUpdate,
};
use crate::{Result, StoreError};
use async_trait::async_trait;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// One stored idempotency key: request hash, status (0 while running), body, time.
type IdemRow = (Vec<u8>, u16, String, Timestamp);

#[derive(Default)]
pub(super) struct AccessData {
    users: BTreeMap<i64, UserRecord>,
    keys: BTreeMap<i64, ApiKeyRecord>,
    audit: BTreeMap<i64, AuditRecord>,
    idem: BTreeMap<(String, String), IdemRow>,
    next_user: i64,
    next_key: i64,
    next_audit: i64,
}

impl MemoryStore {
    fn access<T>(&self, f: impl FnOnce(&mut AccessData) -> Result<T>) -> Result<T> {
        let mut d = self.access.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }
}

#[async_trait]
impl AccessStore for MemoryStore {
    async fn create_user(&self, user: &NewUser, now: Timestamp) -> Result<UserRecord> {
        self.access(|d| {
            if d.users.values().any(|u| u.username == user.username) {
                return Err(StoreError::Conflict(format!(
                    "user `{}` exists",
                    user.username
                )));
            }
            d.next_user += 1;
            let u = UserRecord {
                id: d.next_user,
                username: user.username.clone(),
                password_hash: user.password_hash.clone(),
                role: user.role.clone(),
                disabled: false,
                created_at: now,
                updated_at: now,
            };
            d.users.insert(u.id, u.clone());
            Ok(u)
        })
    }

    async fn get_user(&self, id: i64) -> Result<UserRecord> {
        self.access(|d| {
            d.users
                .get(&id)
                .cloned()
                .ok_or(StoreError::NotFound { what: "user", id })
        })
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        self.access(|d| Ok(d.users.values().find(|u| u.username == username).cloned()))
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.access(|d| Ok(d.users.values().cloned().collect()))
    }

    async fn update_user(
        &self,
        id: i64,
        update: &UserUpdate,
        now: Timestamp,
    ) -> Result<UserRecord> {
        self.access(|d| {
            let u = d
                .users
                .get_mut(&id)
                .ok_or(StoreError::NotFound { what: "user", id })?;
            if let Some(r) = &update.role {
                u.role = r.clone();
            }
            if let Some(h) = &update.password_hash {
                u.password_hash = h.clone();
            }
            if let Some(x) = update.disabled {
                u.disabled = x;
            }
            u.updated_at = now;
            Ok(u.clone())
        })
    }

    async fn count_users(&self) -> Result<u64> {
        self.access(|d| Ok(d.users.len() as u64))
    }

    async fn create_api_key(&self, key: &NewApiKey, now: Timestamp) -> Result<ApiKeyRecord> {
        self.access(|d| {
            d.next_key += 1;
            let k = ApiKeyRecord {
                id: d.next_key,
                name: key.name.clone(),
                role: key.role.clone(),
                secret_hash: key.secret_hash.clone(),
                created_by: key.created_by.clone(),
                created_at: now,
                revoked_at: None,
            };
            d.keys.insert(k.id, k.clone());
            Ok(k)
        })
    }

    async fn get_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>> {
        self.access(|d| Ok(d.keys.get(&id).cloned()))
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.access(|d| Ok(d.keys.values().cloned().collect()))
    }

    async fn revoke_api_key(&self, id: i64, now: Timestamp) -> Result<ApiKeyRecord> {
        self.access(|d| {
            let k = d.keys.get_mut(&id).ok_or(StoreError::NotFound {
                what: "api key",
                id,
            })?;
            k.revoked_at.get_or_insert(now);
            Ok(k.clone())
        })
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        self.access(|d| {
            d.next_audit += 1;
            let id = d.next_audit;
            d.audit.insert(
                id,
                AuditRecord {
                    id,
                    at: e.at,
                    actor: e.actor.clone(),
                    role: e.role.clone(),
                    action: e.action.clone(),
                    target: e.target.clone(),
                    outcome: e.outcome.clone(),
                    detail: e.detail.clone(),
                    ip: e.ip.clone(),
                    request_id: e.request_id.clone(),
                },
            );
            Ok(id)
        })
    }

    async fn list_audit(&self, f: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.access(|d| {
            Ok(d.audit
                .range(f.after + 1..)
                .map(|(_, r)| r)
                .filter(|r| f.actor.as_ref().is_none_or(|a| &r.actor == a))
                .filter(|r| f.action.as_ref().is_none_or(|a| &r.action == a))
                .filter(|r| f.since.is_none_or(|t| r.at >= t))
                .filter(|r| f.until.is_none_or(|t| r.at < t))
                .take(f.limit.clamp(1, 1000) as usize)
                .cloned()
                .collect())
        })
    }

    async fn purge_audit(&self, before: Timestamp) -> Result<u64> {
        self.access(|d| {
            let n = d.audit.len();
            d.audit.retain(|_, r| r.at >= before);
            Ok((n - d.audit.len()) as u64)
        })
    }

    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
    ) -> Result<IdempotencyClaim> {
        self.access(|d| {
            let k = (scope.to_string(), key.to_string());
            Ok(match d.idem.get(&k) {
                None => {
                    d.idem
                        .insert(k, (request_hash.to_vec(), 0, String::new(), now));
                    IdempotencyClaim::New
                }
                Some((h, 0, _, _)) => IdempotencyClaim::InProgress {
                    request_hash: h.clone(),
                },
                Some((h, status, body, _)) => IdempotencyClaim::Done {
                    request_hash: h.clone(),
                    status: *status,
                    body: body.clone(),
                },
            })
        })
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        self.access(|d| {
            if let Some(row) = d.idem.get_mut(&(scope.to_string(), key.to_string())) {
                row.1 = status;
                row.2 = body.to_string();
            }
            Ok(())
        })
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        self.access(|d| {
            let k = (scope.to_string(), key.to_string());
            if matches!(d.idem.get(&k), Some((_, 0, _, _))) {
                d.idem.remove(&k);
            }
            Ok(())
        })
    }

    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64> {
        self.access(|d| {
            let n = d.idem.len();
            d.idem.retain(|_, r| r.3 >= before);
            Ok((n - d.idem.len()) as u64)
        })
    }
}
