//! The webhook outbox in memory (the `Store` methods delegate here).

use super::MemoryStore;
use crate::webhook::{
    NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus,
};
use crate::{Result, StoreError};
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
pub(super) struct Outbox {
    rows: BTreeMap<i64, WebhookDelivery>,
    by_event: HashMap<String, i64>,
    next: i64,
}

impl Outbox {
    /// Pending deliveries that may be taken: the oldest pending one of each attempt.
    fn heads(&self) -> impl Iterator<Item = &WebhookDelivery> {
        let mut seen = std::collections::HashSet::new();
        self.rows
            .values()
            .filter(|d| d.status == WebhookStatus::Pending)
            .filter(move |d| seen.insert(d.attempt_id))
    }

    /// Drops a campaign's pending deliveries (the campaign is deleted); returns how many.
    pub(super) fn remove_pending_of_campaign(&mut self, campaign: i64) -> u64 {
        let gone: Vec<i64> = self
            .rows
            .values()
            .filter(|d| d.campaign_id == campaign && d.status == WebhookStatus::Pending)
            .map(|d| d.id)
            .collect();
        for id in &gone {
            if let Some(d) = self.rows.remove(id) {
                self.by_event.remove(&d.event_id);
            }
        }
        gone.len() as u64
    }

    fn get(&mut self, id: i64) -> Result<&mut WebhookDelivery> {
        self.rows.get_mut(&id).ok_or(StoreError::NotFound {
            what: "webhook delivery",
            id,
        })
    }
}

impl MemoryStore {
    fn outbox<T>(&self, f: impl FnOnce(&mut Outbox) -> Result<T>) -> Result<T> {
        let mut d = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }

    pub(super) fn webhook_enqueue(&self, e: &NewWebhookEvent) -> Result<i64> {
        self.outbox(|o| {
            if let Some(id) = o.by_event.get(&e.event_id) {
                return Ok(*id);
            }
            o.next += 1;
            let id = o.next;
            o.by_event.insert(e.event_id.clone(), id);
            o.rows.insert(
                id,
                WebhookDelivery {
                    id,
                    event_id: e.event_id.clone(),
                    campaign_id: e.campaign_id,
                    attempt_id: e.attempt_id,
                    event: e.event.clone(),
                    url: e.url.clone(),
                    payload: e.payload.clone(),
                    status: WebhookStatus::Pending,
                    tries: 0,
                    last_error: None,
                    last_http_status: None,
                    created_at: e.created_at,
                    next_attempt_at: e.next_attempt_at,
                    delivered_at: None,
                    updated_at: e.created_at,
                },
            );
            Ok(id)
        })
    }

    pub(super) fn webhook_take_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.outbox(|o| {
            let mut due: Vec<(Timestamp, i64)> = o
                .heads()
                .filter(|d| d.next_attempt_at <= now)
                .map(|d| (d.next_attempt_at, d.id))
                .collect();
            due.sort();
            due.truncate(limit as usize);
            let mut out = Vec::with_capacity(due.len());
            for (_, id) in due {
                let d = o.get(id)?;
                d.next_attempt_at = lease_until;
                d.updated_at = now;
                out.push(d.clone());
            }
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
    }

    pub(super) fn webhook_next_due(&self) -> Result<Option<Timestamp>> {
        self.outbox(|o| Ok(o.heads().map(|d| d.next_attempt_at).min()))
    }

    pub(super) fn webhook_mark_delivered(
        &self,
        id: i64,
        at: Timestamp,
        http_status: u16,
    ) -> Result<()> {
        self.outbox(|o| {
            let d = o.get(id)?;
            if d.status == WebhookStatus::Pending {
                d.status = WebhookStatus::Delivered;
                d.tries += 1;
                d.delivered_at = Some(at);
                d.last_http_status = Some(http_status);
                d.last_error = None;
                d.updated_at = at;
            }
            Ok(())
        })
    }

    pub(super) fn webhook_mark_failed(&self, id: i64, f: &WebhookFailure) -> Result<WebhookStatus> {
        self.outbox(|o| {
            let d = o.get(id)?;
            if d.status != WebhookStatus::Pending {
                return Err(StoreError::Conflict(format!(
                    "webhook delivery {id} is {}, not pending",
                    d.status
                )));
            }
            d.tries += 1;
            d.last_error = Some(f.error.clone());
            d.last_http_status = f.http_status;
            d.updated_at = f.at;
            match f.retry_at {
                Some(at) => d.next_attempt_at = at,
                None => d.status = WebhookStatus::Failed,
            }
            Ok(d.status)
        })
    }

    pub(super) fn webhook_list(&self, q: &WebhookQuery) -> Result<Vec<WebhookDelivery>> {
        self.outbox(|o| {
            Ok(o.rows
                .range(q.after.unwrap_or(0).saturating_add(1)..)
                .map(|(_, d)| d)
                .filter(|d| q.status.is_none_or(|s| d.status == s))
                .filter(|d| q.campaign_id.is_none_or(|c| d.campaign_id == c))
                .take(q.limit as usize)
                .cloned()
                .collect())
        })
    }

    pub(super) fn webhook_get(&self, id: i64) -> Result<WebhookDelivery> {
        self.outbox(|o| o.get(id).map(|d| d.clone()))
    }

    pub(super) fn webhook_requeue(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery> {
        self.outbox(|o| {
            let d = o.get(id)?;
            if d.status != WebhookStatus::Failed {
                return Err(StoreError::Conflict(format!(
                    "webhook delivery {id} is {}: only failed deliveries can be retried",
                    d.status
                )));
            }
            d.status = WebhookStatus::Pending;
            d.tries = 0;
            d.next_attempt_at = now;
            d.updated_at = now;
            Ok(d.clone())
        })
    }

    pub(super) fn webhook_purge(&self, before: Timestamp) -> Result<u64> {
        self.outbox(|o| {
            let gone: Vec<(i64, String)> = o
                .rows
                .values()
                .filter(|d| d.status != WebhookStatus::Pending && d.updated_at < before)
                .map(|d| (d.id, d.event_id.clone()))
                .collect();
            for (id, event) in &gone {
                o.rows.remove(id);
                o.by_event.remove(event);
            }
            Ok(gone.len() as u64)
        })
    }
}
