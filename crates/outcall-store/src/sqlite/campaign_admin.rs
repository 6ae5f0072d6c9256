//! Changing and deleting campaigns, caller-ID pools, on SQLite (the `Store` methods delegate
//! here).

use super::{campaign_row, col, db, json, ms, ts, SqliteStore};
use crate::campaign_admin::{CallerIdPoolRecord, CampaignDeletion, NewCallerIdPool};
use crate::{Result, StoreError};
use jiff::Timestamp;
use outcall_domain::campaign::{Campaign, CampaignId, CampaignSpec, CampaignStatus};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

mod q {
    pub const UPDATE_SPEC: &str = include_str!("queries/campaign_update_spec.sql");
    pub const OPEN_ATTEMPTS: &str = include_str!("queries/campaign_open_attempts.sql");
    pub const DELETE_RECORDINGS: &str = include_str!("queries/campaign_delete_recordings.sql");
    pub const DELETE_WEBHOOKS: &str = include_str!("queries/campaign_delete_webhooks.sql");
    pub const DELETE_CDRS: &str = include_str!("queries/campaign_delete_cdrs.sql");
    pub const DELETE_ATTEMPTS: &str = include_str!("queries/campaign_delete_attempts.sql");
    pub const DELETE_CONTACTS: &str = include_str!("queries/campaign_delete_contacts.sql");
    pub const DELETE_BLACKLIST: &str = include_str!("queries/campaign_delete_blacklist.sql");
    pub const DELETE: &str = include_str!("queries/campaign_delete.sql");
    pub const POOL_UPSERT: &str = include_str!("queries/caller_id_pool_upsert.sql");
    pub const POOL_GET: &str = include_str!("queries/caller_id_pool_get.sql");
    pub const POOL_LIST: &str = include_str!("queries/caller_id_pool_list.sql");
    pub const POOL_DELETE: &str = include_str!("queries/caller_id_pool_delete.sql");
    pub const POOL_USERS: &str = include_str!("queries/caller_id_pool_users.sql");
}

fn pool_row(r: &SqliteRow) -> Result<CallerIdPoolRecord> {
    let numbers: String = col(r, "numbers")?;
    Ok(CallerIdPoolRecord {
        name: col(r, "name")?,
        description: col(r, "description")?,
        numbers: json("caller-ID pool numbers", &numbers)?,
        created_at: ts(col(r, "created_at")?)?,
        updated_at: ts(col(r, "updated_at")?)?,
    })
}

/// `["draft","paused"]`, bound as one parameter and read with `json_each`.
fn status_list(statuses: &[CampaignStatus]) -> String {
    serde_json::Value::from(statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()
}

fn names(statuses: &[CampaignStatus]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `Conflict` unless the spec's caller-ID pool (if it names one) exists, in `tx`.
pub(super) async fn require_pool(
    tx: &mut Transaction<'static, Sqlite>,
    spec: &CampaignSpec,
) -> Result<()> {
    let Some(name) = &spec.caller_id_pool else {
        return Ok(());
    };
    let found = sqlx::query(q::POOL_GET)
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

/// The campaign's status in `tx`, or `NotFound`.
async fn status_of(tx: &mut Transaction<'static, Sqlite>, id: CampaignId) -> Result<String> {
    sqlx::query_scalar(super::q::CAMPAIGN_STATUS)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound {
            what: "campaign",
            id,
        })
}

impl SqliteStore {
    pub(super) async fn campaign_update_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        let spec_json = serde_json::to_string(spec)
            .map_err(|e| StoreError::Database(format!("campaign spec: {e}")))?;
        let mut tx = self.write_tx().await?;
        let actual = status_of(&mut tx, id).await?;
        require_pool(&mut tx, spec).await?;
        let row = sqlx::query(q::UPDATE_SPEC)
            .bind(id)
            .bind(&spec.name)
            .bind(spec_json)
            .bind(i64::from(spec.priority))
            .bind(ms(now))
            .bind(status_list(expected))
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
        let mut tx = self.write_tx().await?;
        let actual = status_of(&mut tx, id).await?;
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
        let recordings = sqlx::query(q::DELETE_RECORDINGS)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .filter_map(|r| r.try_get::<Option<String>, _>("recording").ok().flatten())
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
        let numbers = serde_json::Value::from(pool.numbers.clone()).to_string();
        let mut tx = self.write_tx().await?;
        let existed = sqlx::query(q::POOL_GET)
            .bind(&pool.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        let row = sqlx::query(q::POOL_UPSERT)
            .bind(&pool.name)
            .bind(&pool.description)
            .bind(numbers)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let record = pool_row(&row)?;
        tx.commit().await.map_err(db)?;
        Ok((record, !existed))
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
        let mut tx = self.write_tx().await?;
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
