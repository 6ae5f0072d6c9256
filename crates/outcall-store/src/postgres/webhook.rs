//! The webhook outbox on PostgreSQL (the `Store` methods delegate here).
//!
//! Several dispatchers (one per node) take due deliveries at once: the rows they take are locked
//! with `FOR UPDATE SKIP LOCKED` and leased in the same statement, so one delivery never goes
//! to two of them; a row another dispatcher leased meanwhile is no longer due when re-checked.

use super::{col, db, json_col, ms, opt_ts_col, ts_col, PgStore};
use crate::webhook::{
    NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus,
};
use crate::{Result, StoreError};
use jiff::Timestamp;
use sqlx::postgres::PgRow;

mod q {
    pub const INSERT: &str = "INSERT INTO webhook_outbox
        (event_id, campaign_id, attempt_id, event, url, payload, status, tries, created_at,
         next_attempt_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $7)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id";
    pub const ID_BY_EVENT: &str = "SELECT id FROM webhook_outbox WHERE event_id = $1";
    pub const TAKE_DUE: &str = "WITH due AS (
            SELECT w.id
            FROM webhook_outbox w
            WHERE w.status = 'pending'
              AND w.next_attempt_at <= $1
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_outbox p
                  WHERE p.attempt_id = w.attempt_id AND p.status = 'pending' AND p.id < w.id
              )
            ORDER BY w.next_attempt_at, w.id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        )
        UPDATE webhook_outbox o
        SET next_attempt_at = $2, updated_at = $1
        FROM due
        WHERE o.id = due.id
        RETURNING o.id, o.event_id, o.campaign_id, o.attempt_id, o.event, o.url, o.payload,
                  o.status, o.tries, o.last_error, o.last_http_status, o.created_at,
                  o.next_attempt_at, o.delivered_at, o.updated_at";
    pub const NEXT_DUE: &str = "SELECT MIN(w.next_attempt_at) AS due
        FROM webhook_outbox w
        WHERE w.status = 'pending'
          AND NOT EXISTS (
              SELECT 1 FROM webhook_outbox p
              WHERE p.attempt_id = w.attempt_id AND p.status = 'pending' AND p.id < w.id
          )";
    pub const DELIVERED: &str = "UPDATE webhook_outbox
        SET status = 'delivered', tries = tries + 1, delivered_at = $2, last_http_status = $3,
            last_error = NULL, updated_at = $2
        WHERE id = $1 AND status = 'pending'";
    pub const FAILED: &str = "UPDATE webhook_outbox
        SET tries = tries + 1, last_error = $3, last_http_status = $4,
            status = CASE WHEN $5::int8 IS NULL THEN 'failed' ELSE 'pending' END,
            next_attempt_at = COALESCE($5, next_attempt_at), updated_at = $2
        WHERE id = $1 AND status = 'pending'
        RETURNING status";
    pub const LIST: &str = "SELECT id, event_id, campaign_id, attempt_id, event, url, payload,
               status, tries, last_error, last_http_status, created_at, next_attempt_at,
               delivered_at, updated_at
        FROM webhook_outbox
        WHERE ($1::text IS NULL OR status = $1)
          AND ($2::int8 IS NULL OR campaign_id = $2)
          AND id > $3
        ORDER BY id
        LIMIT $4";
    pub const GET: &str = "SELECT id, event_id, campaign_id, attempt_id, event, url, payload,
               status, tries, last_error, last_http_status, created_at, next_attempt_at,
               delivered_at, updated_at
        FROM webhook_outbox
        WHERE id = $1";
    pub const REQUEUE: &str = "UPDATE webhook_outbox
        SET status = 'pending', tries = 0, next_attempt_at = $2, updated_at = $2
        WHERE id = $1 AND status = 'failed'
        RETURNING id, event_id, campaign_id, attempt_id, event, url, payload, status, tries,
                  last_error, last_http_status, created_at, next_attempt_at, delivered_at,
                  updated_at";
    pub const PURGE: &str =
        "DELETE FROM webhook_outbox WHERE status <> 'pending' AND updated_at < $1";
}

fn status(s: &str) -> Result<WebhookStatus> {
    WebhookStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook status `{s}`")))
}

fn delivery_row(r: &PgRow) -> Result<WebhookDelivery> {
    let st: String = col(r, "status")?;
    let tries: i32 = col(r, "tries")?;
    let http: Option<i32> = col(r, "last_http_status")?;
    Ok(WebhookDelivery {
        id: col(r, "id")?,
        event_id: col(r, "event_id")?,
        campaign_id: col(r, "campaign_id")?,
        attempt_id: col(r, "attempt_id")?,
        event: col(r, "event")?,
        url: col(r, "url")?,
        payload: json_col(r, "payload")?,
        status: status(&st)?,
        tries: u32::try_from(tries)
            .map_err(|_| StoreError::Corrupt(format!("webhook tries {tries}")))?,
        last_error: col(r, "last_error")?,
        last_http_status: http
            .map(|h| u16::try_from(h).map_err(|_| StoreError::Corrupt(format!("http status {h}"))))
            .transpose()?,
        created_at: ts_col(r, "created_at")?,
        next_attempt_at: ts_col(r, "next_attempt_at")?,
        delivered_at: opt_ts_col(r, "delivered_at")?,
        updated_at: ts_col(r, "updated_at")?,
    })
}

impl PgStore {
    pub(super) async fn webhook_enqueue(&self, e: &NewWebhookEvent) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar(q::INSERT)
            .bind(&e.event_id)
            .bind(e.campaign_id)
            .bind(e.attempt_id)
            .bind(&e.event)
            .bind(&e.url)
            .bind(&e.payload)
            .bind(ms(e.created_at))
            .bind(ms(e.next_attempt_at))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match id {
            Some(id) => Ok(id),
            // Already in the outbox (committed: the conflicting insert was waited for).
            None => sqlx::query_scalar(q::ID_BY_EVENT)
                .bind(&e.event_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "webhook event {} was purged while it was enqueued; try again",
                        e.event_id
                    ))
                }),
        }
    }

    pub(super) async fn webhook_take_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        let rows = sqlx::query(q::TAKE_DUE)
            .bind(ms(now))
            .bind(ms(lease_until))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut list = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        list.sort_by_key(|d| d.id);
        Ok(list)
    }

    pub(super) async fn webhook_next_due(&self) -> Result<Option<Timestamp>> {
        let row = sqlx::query(q::NEXT_DUE)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        opt_ts_col(&row, "due")
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
            .bind(i32::from(http_status))
            .execute(&self.pool)
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
            .bind(f.http_status.map(i32::from))
            .bind(f.retry_at.map(ms))
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
