//! Changing and deleting campaigns, caller-ID pools, on PostgreSQL (the `Store` methods
//! delegate here).
//!
//! A campaign that names a pool locks the pool's row (`FOR SHARE`) in the transaction that
//! writes it, and deleting a pool locks it `FOR UPDATE` before looking for campaigns that use
//! it: a pool is never deleted under a campaign written at the same time on another node.

use super::{campaign_row, col, db, json_col, ms, ts_col, PgStore};
use crate::campaign_admin::{CallerIdPoolRecord, CampaignDeletion, NewCallerIdPool};
use crate::{Result, StoreError};
use jiff::Timestamp;
use outcall_domain::campaign::{Campaign, CampaignId, CampaignSpec, CampaignStatus};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

mod q {
    pub const STATUS_FOR_UPDATE: &str = "SELECT status FROM campaigns WHERE id = $1 FOR UPDATE";
    pub const UPDATE_SPEC: &str = "UPDATE campaigns
        SET name = $2, spec = $3, priority = $4, updated_at = $5
        WHERE id = $1 AND status = ANY($6)
        RETURNING id, status, spec, created_at, updated_at";
    pub const OPEN_ATTEMPTS: &str =
        "SELECT COUNT(*) AS n FROM attempts WHERE campaign_id = $1 AND ended_at IS NULL";
    pub const DELETE_RECORDINGS: &str = "SELECT cdr ->> 'recording' AS recording
        FROM cdrs
        WHERE campaign_id = $1 AND cdr ->> 'recording' IS NOT NULL
        ORDER BY attempt_id";
    pub const DELETE_WEBHOOKS: &str =
        "DELETE FROM webhook_outbox WHERE campaign_id = $1 AND status = 'pending'";
    pub const DELETE_CDRS: &str = "DELETE FROM cdrs WHERE campaign_id = $1";
    pub const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE campaign_id = $1";
    pub const DELETE_CONTACTS: &str = "DELETE FROM contacts WHERE campaign_id = $1";
    pub const DELETE_BLACKLIST: &str = "DELETE FROM blacklist WHERE campaign_id = $1";
    pub const DELETE: &str = "DELETE FROM campaigns WHERE id = $1";
    /// `created`: the row is new (no older version was replaced).
    pub const POOL_UPSERT: &str = "INSERT INTO caller_id_pools
        (name, description, numbers, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $4)
        ON CONFLICT (name) DO UPDATE
        SET description = excluded.description, numbers = excluded.numbers,
            updated_at = excluded.updated_at
        RETURNING name, description, numbers, created_at, updated_at, (xmax = 0) AS created";
    pub const POOL_GET: &str = "SELECT name, description, numbers, created_at, updated_at
        FROM caller_id_pools WHERE name = $1";
    pub const POOL_SHARE: &str = "SELECT name FROM caller_id_pools WHERE name = $1 FOR SHARE";
    pub const POOL_LOCK: &str = "SELECT name FROM caller_id_pools WHERE name = $1 FOR UPDATE";
    pub const POOL_LIST: &str = r#"SELECT name, description, numbers, created_at, updated_at
        FROM caller_id_pools ORDER BY name COLLATE "C""#;
    pub const POOL_DELETE: &str = "DELETE FROM caller_id_pools WHERE name = $1";
    pub const POOL_USERS: &str = "SELECT id FROM campaigns
        WHERE spec ->> 'caller_id_pool' = $1 AND status NOT IN ('completed', 'canceled')
        ORDER BY id";
}

fn pool_row(r: &PgRow) -> Result<CallerIdPoolRecord> {
    Ok(CallerIdPoolRecord {
        name: col(r, "name")?,
        description: col(r, "description")?,
        numbers: json_col(r, "numbers")?,
        created_at: ts_col(r, "created_at")?,
        updated_at: ts_col(r, "updated_at")?,
    })
}

fn names(statuses: &[CampaignStatus]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `Conflict` unless the spec's caller-ID pool (if it names one) exists; locks its row until
/// `tx` ends.
pub(super) async fn require_pool(
    tx: &mut Transaction<'static, Postgres>,
    spec: &CampaignSpec,
) -> Result<()> {
    let Some(name) = &spec.caller_id_pool else {
        return Ok(());
    };
    let found = sqlx::query(q::POOL_SHARE)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    if found.is_none() {
        return Err(StoreError::Conflict(format!(
            "caller-ID pool `{name}` does not exist"
        )));
    }
    Ok(())
}

/// The campaign's status, its row locked until `tx` ends; or `NotFound`.
async fn lock_status(tx: &mut Transaction<'static, Postgres>, id: CampaignId) -> Result<String> {
    sqlx::query_scalar(q::STATUS_FOR_UPDATE)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound {
            what: "campaign",
            id,
        })
}

impl PgStore {
    pub(super) async fn campaign_update_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let actual = lock_status(&mut tx, id).await?;
        require_pool(&mut tx, spec).await?;
        let allowed: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        let row = sqlx::query(q::UPDATE_SPEC)
            .bind(id)
            .bind(&spec.name)
            .bind(Json(spec))
            .bind(spec.priority)
            .bind(ms(now))
            .bind(allowed)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!(
                "campaign {id} is {actual}, not {}",
                names(expected)
            )));
        };
        let campaign = campaign_row(&row)?;
        tx.commit().await.map_err(db)?;
        Ok(campaign)
    }

    pub(super) async fn campaign_delete(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<CampaignDeletion> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let actual = lock_status(&mut tx, id).await?;
        if !allowed.iter().any(|s| s.as_str() == actual) {
            return Err(StoreError::Conflict(format!(
                "campaign {id} is {actual}, not {}",
                names(allowed)
            )));
        }
        let open: i64 = sqlx::query_scalar(q::OPEN_ATTEMPTS)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if open > 0 {
            return Err(StoreError::Conflict(format!(
                "campaign {id} still has {open} call(s) in progress; try again when they end"
            )));
        }
        let recordings = sqlx::query_scalar::<_, Option<String>>(q::DELETE_RECORDINGS)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .into_iter()
            .flatten()
            .collect();
        // Its CDRs (those of attempts not known here too), counted with the attempts.
        sqlx::query(q::DELETE_CDRS)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let mut counts = [0u64; 4];
        for (sql, n) in [
            q::DELETE_WEBHOOKS,
            q::DELETE_ATTEMPTS,
            q::DELETE_CONTACTS,
            q::DELETE_BLACKLIST,
        ]
        .into_iter()
        .zip(counts.iter_mut())
        {
            *n = sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        sqlx::query(q::DELETE)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let [webhooks, attempts, contacts, blacklist] = counts;
        Ok(CampaignDeletion {
            contacts,
            attempts,
            webhooks,
            blacklist,
            recordings,
        })
    }

    pub(super) async fn pool_upsert(
        &self,
        pool: &NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(CallerIdPoolRecord, bool)> {
        let row = sqlx::query(q::POOL_UPSERT)
            .bind(&pool.name)
            .bind(&pool.description)
            .bind(Json(&pool.numbers))
            .bind(ms(now))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((pool_row(&row)?, col(&row, "created")?))
    }

    pub(super) async fn pool_get(&self, name: &str) -> Result<Option<CallerIdPoolRecord>> {
        sqlx::query(q::POOL_GET)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(pool_row)
            .transpose()
    }

    pub(super) async fn pool_list(&self) -> Result<Vec<CallerIdPoolRecord>> {
        sqlx::query(q::POOL_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(pool_row)
            .collect()
    }

    pub(super) async fn pool_delete(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let found = sqlx::query(q::POOL_LOCK)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if found.is_none() {
            return Ok(false);
        }
        let users: Vec<i64> = sqlx::query_scalar(q::POOL_USERS)
            .bind(name)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(crate::campaign_admin::pool_in_use(
                name, &users,
            )));
        }
        let n = sqlx::query(q::POOL_DELETE)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }
}
