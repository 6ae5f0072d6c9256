//! Changing and deleting campaigns, caller-ID pools, in memory (the `Store` methods delegate
//! here).

use super::{not_found, pkey, MemoryStore};
use crate::campaign_admin::{pool_in_use, CallerIdPoolRecord, CampaignDeletion, NewCallerIdPool};
use crate::{Result, StoreError};
use jiff::Timestamp;
use outcall_domain::campaign::{Campaign, CampaignId, CampaignSpec, CampaignStatus};

fn names(statuses: &[CampaignStatus]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `Conflict` unless the spec's caller-ID pool (if it names one) exists.
pub(super) fn require_pool(d: &super::Data, spec: &CampaignSpec) -> Result<()> {
    match &spec.caller_id_pool {
        Some(name) if !d.pools.contains_key(name) => Err(StoreError::Conflict(format!(
            "caller-ID pool `{name}` does not exist"
        ))),
        _ => Ok(()),
    }
}

impl MemoryStore {
    pub(super) fn campaign_update_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        self.with(|d| {
            let status = d
                .campaigns
                .get(&id)
                .ok_or_else(|| not_found("campaign", id))?
                .status;
            require_pool(d, spec)?;
            if !expected.contains(&status) {
                return Err(StoreError::Conflict(format!(
                    "campaign {id} is {status}, not {}",
                    names(expected)
                )));
            }
            let c = d
                .campaigns
                .get_mut(&id)
                .ok_or_else(|| not_found("campaign", id))?;
            c.spec = spec.clone();
            c.updated_at = now;
            Ok(c.clone())
        })
    }

    pub(super) fn campaign_delete(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<CampaignDeletion> {
        // Both locks, data first (as everywhere), so the deletion is seen whole or not at all.
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut outbox = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        let status = d
            .campaigns
            .get(&id)
            .ok_or_else(|| not_found("campaign", id))?
            .status;
        if !allowed.contains(&status) {
            return Err(StoreError::Conflict(format!(
                "campaign {id} is {status}, not {}",
                names(allowed)
            )));
        }
        let open = d
            .open
            .iter()
            .filter(|a| d.attempts.get(a).is_some_and(|(r, _)| r.campaign_id == id))
            .count();
        if open > 0 {
            return Err(StoreError::Conflict(format!(
                "campaign {id} still has {open} call(s) in progress; try again when they end"
            )));
        }
        let mut r = CampaignDeletion::default();
        let attempts: Vec<i64> = d
            .attempts
            .iter()
            .filter(|(_, (a, _))| a.campaign_id == id)
            .map(|(k, _)| *k)
            .collect();
        // Its CDRs (those of attempts not known here too), in attempt order.
        let cdrs: Vec<i64> = d
            .cdrs
            .iter()
            .filter(|(_, c)| c.campaign_id == id)
            .map(|(k, _)| *k)
            .collect();
        for a in cdrs {
            if let Some(path) = d.cdrs.remove(&a).and_then(|c| c.cdr.recording) {
                r.recordings.push(path);
            }
        }
        for a in attempts {
            let Some((rec, hash)) = d.attempts.remove(&a) else {
                continue;
            };
            // Frequency caps forget the deleted attempts, as the SQL count does.
            if let Some(times) = d.by_number.get_mut(&hash) {
                if let Some(i) = times.iter().position(|t| *t == rec.started_at) {
                    times.remove(i);
                }
                if times.is_empty() {
                    d.by_number.remove(&hash);
                }
            }
            r.attempts += 1;
        }
        let contacts: Vec<i64> = d
            .contacts
            .values()
            .filter(|c| c.campaign_id == id)
            .map(|c| c.id)
            .collect();
        for c in contacts {
            if let Some(rec) = d.contacts.remove(&c) {
                d.pending.remove(&pkey(&rec));
                d.keys.remove(&(id, rec.number_hash.clone()));
                d.by_contact.remove(&c);
                r.contacts += 1;
            }
        }
        let before = d.blacklist.len();
        d.blacklist.retain(|_, b| b.campaign_id != Some(id));
        r.blacklist = (before - d.blacklist.len()) as u64;
        d.unfinished.remove(&id);
        d.campaigns.remove(&id);
        r.webhooks = outbox.remove_pending_of_campaign(id);
        Ok(r)
    }

    pub(super) fn pool_upsert(
        &self,
        pool: &NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(CallerIdPoolRecord, bool)> {
        self.with(|d| {
            let created = !d.pools.contains_key(&pool.name);
            let e = d
                .pools
                .entry(pool.name.clone())
                .or_insert_with(|| CallerIdPoolRecord {
                    name: pool.name.clone(),
                    description: None,
                    numbers: Vec::new(),
                    created_at: now,
                    updated_at: now,
                });
            e.description = pool.description.clone();
            e.numbers = pool.numbers.clone();
            e.updated_at = now;
            Ok((e.clone(), created))
        })
    }

    pub(super) fn pool_get(&self, name: &str) -> Result<Option<CallerIdPoolRecord>> {
        self.with(|d| Ok(d.pools.get(name).cloned()))
    }

    pub(super) fn pool_list(&self) -> Result<Vec<CallerIdPoolRecord>> {
        self.with(|d| Ok(d.pools.values().cloned().collect()))
    }

    pub(super) fn pool_delete(&self, name: &str) -> Result<bool> {
        self.with(|d| {
            let users: Vec<i64> = d
                .campaigns
                .values()
                .filter(|c| !c.status.is_final())
                .filter(|c| c.spec.caller_id_pool.as_deref() == Some(name))
                .map(|c| c.id)
                .collect();
            if !users.is_empty() {
                return Err(StoreError::Conflict(pool_in_use(name, &users)));
            }
            Ok(d.pools.remove(name).is_some())
        })
    }
}
