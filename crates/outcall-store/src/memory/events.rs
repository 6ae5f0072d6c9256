//! [`EventStore`] in memory.

use super::MemoryStore;
use crate::events::{check, EventQuery, EventStore, NewSystemEvent, SystemEvent};
use crate::Result;
use async_trait::async_trait;
use jiff::Timestamp;
use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct EventLog {
    rows: BTreeMap<i64, SystemEvent>,
    next: i64,
}

impl MemoryStore {
    fn event_log<T>(&self, f: impl FnOnce(&mut EventLog) -> T) -> T {
        let mut d = self.events.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }
}

/// The stores keep whole milliseconds.
fn to_ms(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append_event(&self, e: &NewSystemEvent) -> Result<SystemEvent> {
        check(e)?;
        Ok(self.event_log(|d| {
            d.next += 1;
            let ev = SystemEvent {
                id: d.next,
                at: to_ms(e.at),
                kind: e.kind.clone(),
                subject: e.subject.clone(),
                severity: e.severity.clone(),
                message: e.message.clone(),
                details: e.details.clone(),
            };
            d.rows.insert(ev.id, ev.clone());
            ev
        }))
    }

    async fn list_events(&self, f: &EventQuery) -> Result<Vec<SystemEvent>> {
        Ok(self.event_log(|d| {
            d.rows
                .range(f.after_id.unwrap_or(0).saturating_add(1)..)
                .map(|(_, r)| r)
                .filter(|r| f.kind.as_ref().is_none_or(|k| &r.kind == k))
                .filter(|r| f.subject.as_ref().is_none_or(|s| &r.subject == s))
                .filter(|r| f.since.is_none_or(|t| r.at >= t))
                .take(f.page_size() as usize)
                .cloned()
                .collect()
        }))
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64> {
        Ok(self.event_log(|d| {
            let n = d.rows.len();
            d.rows.retain(|_, r| r.at >= before);
            (n - d.rows.len()) as u64
        }))
    }
}
