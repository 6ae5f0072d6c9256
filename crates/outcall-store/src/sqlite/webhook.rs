//! The webhook outbox on SQLite (the `Store` methods delegate here).

use super::{col, db, ms, ts, SqliteStore};
use crate::webhook::{
    NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus,
};
use crate::{Result, StoreError};
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;

mod q {
    pub const INSERT: &str = include_str!("queries/webhook_insert.sql");
    pub const ID_BY_EVENT: &str = include_str!("queries/webhook_id_by_event.sql");
    pub const TAKE_DUE: &str = include_str!("queries/webhook_take_due.sql");
    pub const NEXT_DUE: &str = include_str!("queries/webhook_next_due.sql");
    pub const DELIVERED: &str = include_str!("queries/webhook_delivered.sql");
    pub const FAILED: &str = include_str!("queries/webhook_failed.sql");
    pub const LIST: &str = include_str!("queries/webhook_list.sql");
    pub const GET: &str = include_str!("queries/webhook_get.sql");
    pub const REQUEUE: &str = include_str!("queries/webhook_requeue.sql");
    pub const PURGE: &str = include_str!("queries/webhook_purge.sql");
}

fn status(s: &str) -> Result<WebhookStatus> {
    WebhookStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook status `{s}`")))
}

fn delivery_row(r: &SqliteRow) -> Result<WebhookDelivery> {
    let payload: String = col(r, "payload")?;
    let st: String = col(r, "status")?;
    let tries: i64 = col(r, "tries")?;
    let http: Option<i64> = col(r, "last_http_status")?;
    Ok(WebhookDelivery {
        id: col(r, "id")?,
        event_id: col(r, "event_id")?,
        campaign_id: col(r, "campaign_id")?,
        attempt_id: col(r, "attempt_id")?,
        event: col(r, "event")?,
        url: col(r, "url")?,
        payload: super::json("webhook payload", &payload)?,
        status: status(&st)?,
        tries: u32::try_from(tries)
            .map_err(|_| StoreError::Corrupt(format!("webhook tries {tries}")))?,
        last_error: col(r, "last_error")?,
        last_http_status: http
            .map(|h| u16::try_from(h).map_err(|_| StoreError::Corrupt(format!("http status {h}"))))
            .transpose()?,
        created_at: ts(col(r, "created_at")?)?,
        next_attempt_at: ts(col(r, "next_attempt_at")?)?,
        delivered_at: col::<Option<i64>>(r, "delivered_at")?.map(ts).transpose()?,
        updated_at: ts(col(r, "updated_at")?)?,
    })
}

impl SqliteStore {
    pub(super) async fn webhook_enqueue(&self, e: &NewWebhookEvent) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar(q::INSERT)
            .bind(&e.event_id)
            .bind(e.campaign_id)
            .bind(e.attempt_id)
            .bind(&e.event)
            .bind(&e.url)
            .bind(e.payload.to_string())
            .bind(ms(e.created_at))
            .bind(ms(e.next_attempt_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let id = match id {
            Some(id) => id,
            None => sqlx::query_scalar(q::ID_BY_EVENT)
                .bind(&e.event_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?,
        };
        tx.commit().await.map_err(db)?;
        Ok(id)
    }

    pub(super) async fn webhook_take_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(q::TAKE_DUE)
            .bind(ms(now))
            .bind(ms(lease_until))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut list = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        list.sort_by_key(|d| d.id);
        Ok(list)
    }

    pub(super) async fn webhook_next_due(&self) -> Result<Option<Timestamp>> {
        let due: Option<i64> = sqlx::query_scalar(q::NEXT_DUE)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        due.map(ts).transpose()
    }

    pub(super) async fn webhook_mark_delivered(
        &self,
        id: i64,
        at: Timestamp,
        http_status: u16,
    ) -> Result<()> {
        let n = sqlx::query(q::DELIVERED)
            .bind(id)
            .bind(ms(at))
            .bind(i64::from(http_status))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 0 {
            self.webhook_get(id).await?;
        }
        Ok(())
    }

    pub(super) async fn webhook_mark_failed(
        &self,
        id: i64,
        f: &WebhookFailure,
    ) -> Result<WebhookStatus> {
        let st: Option<String> = sqlx::query_scalar(q::FAILED)
            .bind(id)
            .bind(ms(f.at))
            .bind(&f.error)
            .bind(f.http_status.map(i64::from))
            .bind(f.retry_at.map(ms))
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?;
        match st {
            Some(s) => status(&s),
            None => {
                let d = self.webhook_get(id).await?;
                Err(StoreError::Conflict(format!(
                    "webhook delivery {id} is {}, not pending",
                    d.status
                )))
            }
        }
    }

    pub(super) async fn webhook_list(&self, query: &WebhookQuery) -> Result<Vec<WebhookDelivery>> {
        let rows = sqlx::query(q::LIST)
            .bind(query.status.map(|s| s.as_str()))
            .bind(query.campaign_id)
            .bind(query.after.unwrap_or(0))
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(delivery_row).collect()
    }

    pub(super) async fn webhook_get(&self, id: i64) -> Result<WebhookDelivery> {
        let row = sqlx::query(q::GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound {
                what: "webhook delivery",
                id,
            })?;
        delivery_row(&row)
    }

    pub(super) async fn webhook_requeue(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery> {
        let row = sqlx::query(q::REQUEUE)
            .bind(id)
            .bind(ms(now))
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?;
        match row {
            Some(r) => delivery_row(&r),
            None => {
                let d = self.webhook_get(id).await?;
                Err(StoreError::Conflict(format!(
                    "webhook delivery {id} is {}: only failed deliveries can be retried",
                    d.status
                )))
            }
        }
    }

    pub(super) async fn webhook_purge(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(q::PURGE)
            .bind(ms(before))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
