//! [`AccessStore`] on PostgreSQL.
//!
//! The audit log is append-only in the database itself: triggers refuse every UPDATE and
//! TRUNCATE, and every DELETE except the retention purge's, which marks its own transaction
//! (`outcall.audit_purge`).

use super::{col, db, is_unique_violation, json_col, ms, opt_ts_col, ts_col, PgStore};
use crate::access::{
    AccessStore, ApiKeyRecord, AuditQuery, AuditRecord, IdempotencyClaim, NewApiKey, NewAuditEntry,
    NewUser, UserRecord, UserUpdate,
};
use crate::{Result, StoreError};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::PgRow;

mod q {
    pub const USER_INSERT: &str = "INSERT INTO users
        (username, password_hash, role, disabled, created_at, updated_at)
        VALUES ($1, $2, $3, FALSE, $4, $4)
        RETURNING id, username, password_hash, role, disabled, created_at, updated_at";
    pub const USER_GET: &str = "SELECT id, username, password_hash, role, disabled, created_at,
               updated_at
        FROM users WHERE id = $1";
    pub const USER_BY_NAME: &str = "SELECT id, username, password_hash, role, disabled,
               created_at, updated_at
        FROM users WHERE username = $1";
    pub const USER_LIST: &str = "SELECT id, username, password_hash, role, disabled, created_at,
               updated_at
        FROM users ORDER BY id";
    pub const USER_UPDATE: &str = "UPDATE users
        SET role = COALESCE($1, role),
            password_hash = COALESCE($2, password_hash),
            disabled = COALESCE($3, disabled),
            updated_at = $4
        WHERE id = $5
        RETURNING id, username, password_hash, role, disabled, created_at, updated_at";
    pub const USER_COUNT: &str = "SELECT COUNT(*) AS n FROM users";
    pub const API_KEY_INSERT: &str = "INSERT INTO api_keys
        (name, role, secret_hash, created_by, created_at)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, name, role, secret_hash, created_by, created_at, revoked_at";
    pub const API_KEY_GET: &str = "SELECT id, name, role, secret_hash, created_by, created_at,
               revoked_at
        FROM api_keys WHERE id = $1";
    pub const API_KEY_LIST: &str = "SELECT id, name, role, secret_hash, created_by, created_at,
               revoked_at
        FROM api_keys ORDER BY id";
    pub const API_KEY_REVOKE: &str = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1)
        WHERE id = $2
        RETURNING id, name, role, secret_hash, created_by, created_at, revoked_at";
    pub const AUDIT_INSERT: &str = "INSERT INTO audit_log
        (at, actor, role, action, target, outcome, detail, ip, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING id";
    pub const AUDIT_LIST: &str = "SELECT id, at, actor, role, action, target, outcome, detail,
               ip, request_id
        FROM audit_log
        WHERE id > $1
          AND ($2::text IS NULL OR actor = $2)
          AND ($3::text IS NULL OR action = $3)
          AND ($4::int8 IS NULL OR at >= $4)
          AND ($5::int8 IS NULL OR at < $5)
        ORDER BY id
        LIMIT $6";
    /// Marks the transaction as the retention purge, which the append-only trigger lets
    /// delete.
    pub const AUDIT_PURGE_MARK: &str = "SELECT set_config('outcall.audit_purge', 'on', true)";
    pub const AUDIT_PURGE: &str = "DELETE FROM audit_log WHERE at < $1";
    pub const IDEMPOTENCY_INSERT: &str = "INSERT INTO idempotency_keys
        (scope, key, request_hash, status, body, created_at)
        VALUES ($1, $2, $3, 0, '', $4)
        ON CONFLICT (scope, key) DO NOTHING";
    pub const IDEMPOTENCY_GET: &str =
        "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2";
    pub const IDEMPOTENCY_COMPLETE: &str =
        "UPDATE idempotency_keys SET status = $1, body = $2 WHERE scope = $3 AND key = $4";
    pub const IDEMPOTENCY_RELEASE: &str =
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status = 0";
    pub const IDEMPOTENCY_PURGE: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";
}

fn user_row(r: &PgRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: col(r, "id")?,
        username: col(r, "username")?,
        password_hash: col(r, "password_hash")?,
        role: col(r, "role")?,
        disabled: col(r, "disabled")?,
        created_at: ts_col(r, "created_at")?,
        updated_at: ts_col(r, "updated_at")?,
    })
}

fn key_row(r: &PgRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: col(r, "id")?,
        name: col(r, "name")?,
        role: col(r, "role")?,
        secret_hash: col(r, "secret_hash")?,
        created_by: col(r, "created_by")?,
        created_at: ts_col(r, "created_at")?,
        revoked_at: opt_ts_col(r, "revoked_at")?,
    })
}

fn audit_row(r: &PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: col(r, "id")?,
        at: ts_col(r, "at")?,
        actor: col(r, "actor")?,
        role: col(r, "role")?,
        action: col(r, "action")?,
        target: col(r, "target")?,
        outcome: col(r, "outcome")?,
        detail: json_col(r, "detail")?,
        ip: col(r, "ip")?,
        request_id: col(r, "request_id")?,
    })
}

#[async_trait]
impl AccessStore for PgStore {
    async fn create_user(&self, user: &NewUser, now: Timestamp) -> Result<UserRecord> {
        let row = sqlx::query(q::USER_INSERT)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(ms(now))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
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
            .bind(update.disabled)
            .bind(ms(now))
            .bind(id)
            .fetch_optional(&self.pool)
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
        super::u64_col(&row, "n")
    }

    async fn create_api_key(&self, key: &NewApiKey, now: Timestamp) -> Result<ApiKeyRecord> {
        let row = sqlx::query(q::API_KEY_INSERT)
            .bind(&key.name)
            .bind(&key.role)
            .bind(&key.secret_hash)
            .bind(&key.created_by)
            .bind(ms(now))
            .fetch_one(&self.pool)
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
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound {
                what: "api key",
                id,
            })?;
        key_row(&row)
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        sqlx::query_scalar(q::AUDIT_INSERT)
            .bind(ms(e.at))
            .bind(&e.actor)
            .bind(&e.role)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(&e.detail)
            .bind(&e.ip)
            .bind(&e.request_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(q::AUDIT_PURGE_MARK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let n = sqlx::query(q::AUDIT_PURGE)
            .bind(ms(before))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(n)
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
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyClaim::New);
        }
        let row = sqlx::query(q::IDEMPOTENCY_GET)
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            // Released between the two statements: the key is free again.
            return Err(StoreError::Conflict(format!(
                "idempotency key `{key}` was released while it was claimed; try again"
            )));
        };
        let request_hash: Vec<u8> = col(&row, "request_hash")?;
        let status: i32 = col(&row, "status")?;
        Ok(if status == 0 {
            IdempotencyClaim::InProgress { request_hash }
        } else {
            IdempotencyClaim::Done {
                request_hash,
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt(format!("idempotency status {status}")))?,
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
            .bind(i32::from(status))
            .bind(body)
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query(q::IDEMPOTENCY_RELEASE)
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(q::IDEMPOTENCY_PURGE)
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
