//! [`AccessStore`] on SQLite.

use super::{col, db, ms, ts, SqliteStore};
use crate::access::{
    AccessStore, ApiKeyRecord, AuditQuery, AuditRecord, IdempotencyClaim, NewApiKey, NewAuditEntry,
    NewUser, UserRecord, UserUpdate,
};
use crate::{Result, StoreError};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;

mod q {
    pub const USER_INSERT: &str = include_str!("queries/user_insert.sql");
    pub const USER_GET: &str = include_str!("queries/user_get.sql");
    pub const USER_BY_NAME: &str = include_str!("queries/user_by_name.sql");
    pub const USER_LIST: &str = include_str!("queries/user_list.sql");
    pub const USER_UPDATE: &str = include_str!("queries/user_update.sql");
    pub const USER_COUNT: &str = include_str!("queries/user_count.sql");
    pub const API_KEY_INSERT: &str = include_str!("queries/api_key_insert.sql");
    pub const API_KEY_GET: &str = include_str!("queries/api_key_get.sql");
    pub const API_KEY_LIST: &str = include_str!("queries/api_key_list.sql");
    pub const API_KEY_REVOKE: &str = include_str!("queries/api_key_revoke.sql");
    pub const AUDIT_INSERT: &str = include_str!("queries/audit_insert.sql");
    pub const AUDIT_LIST: &str = include_str!("queries/audit_list.sql");
    pub const AUDIT_PURGE: &str = include_str!("queries/audit_purge.sql");
    pub const IDEMPOTENCY_INSERT: &str = include_str!("queries/idempotency_insert.sql");
    pub const IDEMPOTENCY_GET: &str = include_str!("queries/idempotency_get.sql");
    pub const IDEMPOTENCY_COMPLETE: &str = include_str!("queries/idempotency_complete.sql");
    pub const IDEMPOTENCY_RELEASE: &str = include_str!("queries/idempotency_release.sql");
    pub const IDEMPOTENCY_PURGE: &str = include_str!("queries/idempotency_purge.sql");
}

fn user_row(r: &SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: col(r, "id")?,
        username: col(r, "username")?,
        password_hash: col(r, "password_hash")?,
        role: col(r, "role")?,
        disabled: col::<i64>(r, "disabled")? != 0,
        created_at: ts(col(r, "created_at")?)?,
        updated_at: ts(col(r, "updated_at")?)?,
    })
}

fn key_row(r: &SqliteRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: col(r, "id")?,
        name: col(r, "name")?,
        role: col(r, "role")?,
        secret_hash: col(r, "secret_hash")?,
        created_by: col(r, "created_by")?,
        created_at: ts(col(r, "created_at")?)?,
        revoked_at: col::<Option<i64>>(r, "revoked_at")?.map(ts).transpose()?,
    })
}

fn audit_row(r: &SqliteRow) -> Result<AuditRecord> {
    let detail: String = col(r, "detail")?;
    Ok(AuditRecord {
        id: col(r, "id")?,
        at: ts(col(r, "at")?)?,
        actor: col(r, "actor")?,
        role: col(r, "role")?,
        action: col(r, "action")?,
        target: col(r, "target")?,
        outcome: col(r, "outcome")?,
        detail: super::json("audit detail", &detail)?,
        ip: col(r, "ip")?,
        request_id: col(r, "request_id")?,
    })
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_user(&self, user: &NewUser, now: Timestamp) -> Result<UserRecord> {
        let row = sqlx::query(q::USER_INSERT)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(ms(now))
            .bind(ms(now))
            .fetch_one(&self.writer)
            .await
            .map_err(|e| {
                if unique_violation(&e) {
                    StoreError::Conflict(format!("user `{}` exists", user.username))
                } else {
                    db(e)
                }
            })?;
        user_row(&row)
    }

    async fn get_user(&self, id: i64) -> Result<UserRecord> {
        let row = sqlx::query(q::USER_GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound { what: "user", id })?;
        user_row(&row)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        sqlx::query(q::USER_BY_NAME)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        sqlx::query(q::USER_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn update_user(
        &self,
        id: i64,
        update: &UserUpdate,
        now: Timestamp,
    ) -> Result<UserRecord> {
        let row = sqlx::query(q::USER_UPDATE)
            .bind(&update.role)
            .bind(&update.password_hash)
            .bind(update.disabled.map(i64::from))
            .bind(ms(now))
            .bind(id)
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound { what: "user", id })?;
        user_row(&row)
    }

    async fn count_users(&self) -> Result<u64> {
        let row = sqlx::query(q::USER_COUNT)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(col::<i64>(&row, "n")? as u64)
    }

    async fn create_api_key(&self, key: &NewApiKey, now: Timestamp) -> Result<ApiKeyRecord> {
        let row = sqlx::query(q::API_KEY_INSERT)
            .bind(&key.name)
            .bind(&key.role)
            .bind(&key.secret_hash)
            .bind(&key.created_by)
            .bind(ms(now))
            .fetch_one(&self.writer)
            .await
            .map_err(db)?;
        key_row(&row)
    }

    async fn get_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>> {
        sqlx::query(q::API_KEY_GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(key_row)
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        sqlx::query(q::API_KEY_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(key_row)
            .collect()
    }

    async fn revoke_api_key(&self, id: i64, now: Timestamp) -> Result<ApiKeyRecord> {
        let row = sqlx::query(q::API_KEY_REVOKE)
            .bind(ms(now))
            .bind(id)
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound {
                what: "api key",
                id,
            })?;
        key_row(&row)
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        let row = sqlx::query(q::AUDIT_INSERT)
            .bind(ms(e.at))
            .bind(&e.actor)
            .bind(&e.role)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(e.detail.to_string())
            .bind(&e.ip)
            .bind(&e.request_id)
            .fetch_one(&self.writer)
            .await
            .map_err(db)?;
        col(&row, "id")
    }

    async fn list_audit(&self, f: &AuditQuery) -> Result<Vec<AuditRecord>> {
        sqlx::query(q::AUDIT_LIST)
            .bind(f.after)
            .bind(&f.actor)
            .bind(&f.action)
            .bind(f.since.map(ms))
            .bind(f.until.map(ms))
            .bind(i64::from(f.limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(audit_row)
            .collect()
    }

    async fn purge_audit(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(q::AUDIT_PURGE)
            .bind(ms(before))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected())
    }

    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
    ) -> Result<IdempotencyClaim> {
        let inserted = sqlx::query(q::IDEMPOTENCY_INSERT)
            .bind(scope)
            .bind(key)
            .bind(request_hash)
            .bind(ms(now))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyClaim::New);
        }
        let row = sqlx::query(q::IDEMPOTENCY_GET)
            .bind(scope)
            .bind(key)
            .fetch_one(&self.writer)
            .await
            .map_err(db)?;
        let request_hash: Vec<u8> = col(&row, "request_hash")?;
        let status: i64 = col(&row, "status")?;
        Ok(if status == 0 {
            IdempotencyClaim::InProgress { request_hash }
        } else {
            IdempotencyClaim::Done {
                request_hash,
                status: status as u16,
                body: col(&row, "body")?,
            }
        })
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(q::IDEMPOTENCY_COMPLETE)
            .bind(i64::from(status))
            .bind(body)
            .bind(scope)
            .bind(key)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query(q::IDEMPOTENCY_RELEASE)
            .bind(scope)
            .bind(key)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(q::IDEMPOTENCY_PURGE)
            .bind(ms(before))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
