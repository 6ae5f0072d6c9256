//! [`EventStore`] on SQLite.

use super::{col, db, ms, ts, SqliteStore};
use crate::events::{check, EventQuery, EventStore, NewSystemEvent, SystemEvent};
use crate::Result;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;

mod q {
    pub const EVENT_INSERT: &str = include_str!("queries/event_insert.sql");
    pub const EVENT_LIST: &str = include_str!("queries/event_list.sql");
    pub const EVENT_PURGE: &str = include_str!("queries/event_purge.sql");
}

fn event_row(r: &SqliteRow) -> Result<SystemEvent> {
    let details: String = col(r, "details")?;
    Ok(SystemEvent {
        id: col(r, "id")?,
        at: ts(col(r, "at")?)?,
        kind: col(r, "kind")?,
        subject: col(r, "subject")?,
        severity: col(r, "severity")?,
        message: col(r, "message")?,
        details: super::json("event details", &details)?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, e: &NewSystemEvent) -> Result<SystemEvent> {
        check(e)?;
        let row = sqlx::query(q::EVENT_INSERT)
            .bind(ms(e.at))
            .bind(&e.kind)
            .bind(&e.subject)
            .bind(&e.severity)
            .bind(&e.message)
            .bind(e.details.to_string())
            .fetch_one(&self.writer)
            .await
            .map_err(db)?;
        Ok(SystemEvent {
            id: col(&row, "id")?,
            at: ts(ms(e.at))?,
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
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
