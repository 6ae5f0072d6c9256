//! [`EventStore`] on PostgreSQL.

use super::{col, db, json_col, ms, ts_col, PgStore};
use crate::events::{check, EventQuery, EventStore, NewSystemEvent, SystemEvent};
use crate::Result;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::PgRow;

mod q {
    pub const EVENT_INSERT: &str = "INSERT INTO system_events
        (at, kind, subject, severity, message, details)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING id";
    pub const EVENT_LIST: &str = "SELECT id, at, kind, subject, severity, message, details
        FROM system_events
        WHERE id > $1
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::text IS NULL OR subject = $3)
          AND ($4::int8 IS NULL OR at >= $4)
        ORDER BY id
        LIMIT $5";
    pub const EVENT_PURGE: &str = "DELETE FROM system_events WHERE at < $1";
}

fn event_row(r: &PgRow) -> Result<SystemEvent> {
    Ok(SystemEvent {
        id: col(r, "id")?,
        at: ts_col(r, "at")?,
        kind: col(r, "kind")?,
        subject: col(r, "subject")?,
        severity: col(r, "severity")?,
        message: col(r, "message")?,
        details: json_col(r, "details")?,
    })
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_event(&self, e: &NewSystemEvent) -> Result<SystemEvent> {
        check(e)?;
        let id: i64 = sqlx::query_scalar(q::EVENT_INSERT)
            .bind(ms(e.at))
            .bind(&e.kind)
            .bind(&e.subject)
            .bind(&e.severity)
            .bind(&e.message)
            .bind(&e.details)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(SystemEvent {
            id,
            at: super::ts(ms(e.at))?,
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            severity: e.severity.clone(),
            message: e.message.clone(),
            details: e.details.clone(),
        })
    }

    async fn list_events(&self, f: &EventQuery) -> Result<Vec<SystemEvent>> {
        sqlx::query(q::EVENT_LIST)
            .bind(f.after_id.unwrap_or(0))
            .bind(&f.kind)
            .bind(&f.subject)
            .bind(f.since.map(ms))
            .bind(i64::from(f.page_size()))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(event_row)
            .collect()
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(q::EVENT_PURGE)
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
