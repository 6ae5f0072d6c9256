//! An in-memory [`Store`]: the same semantics as SQLite without a disk, for scheduler tests on a
//! paused clock and for benchmarks of the scheduler alone. Nothing survives the process.

use crate::{
    AddResult, AttemptRecord, AttemptStart, BlacklistRecord, CampaignCounts, ContactNext,
    ContactRecord, NewBlacklistEntry, NewContact, OpenAttempt, Result, Store, StoreError,
    TrunkRecord,
};
use crate::{CdrPurge, CdrRow, EraseResult, NumberStatus, SealedNumber};
use crate::{NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus};
use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AttemptId, Campaign, CampaignId, CampaignSpec, CampaignStatus, ContactId, ContactState,
};
use outcall_domain::{Cdr, Outcome};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

mod access;
mod campaign_admin;
mod events;
mod webhook;

type PendingKey = (CampaignId, std::cmp::Reverse<i32>, Timestamp, ContactId);

fn pkey(c: &ContactRecord) -> PendingKey {
    (c.campaign_id, std::cmp::Reverse(c.priority), c.due_at, c.id)
}

/// A stored CDR: filed under its attempt's campaign and start.
struct StoredCdr {
    campaign_id: CampaignId,
    started_at: Timestamp,
    cdr: Cdr,
}

#[derive(Default)]
struct Data {
    trunks: BTreeMap<String, TrunkRecord>,
    campaigns: BTreeMap<CampaignId, Campaign>,
    contacts: BTreeMap<ContactId, ContactRecord>,
    keys: HashSet<(CampaignId, Vec<u8>)>,
    /// Attempt rows, their `cdr` always `None`: CDRs are in `cdrs`.
    attempts: BTreeMap<AttemptId, (AttemptRecord, Vec<u8>)>,
    /// CDRs by attempt id (also of attempts not known here).
    cdrs: BTreeMap<AttemptId, StoredCdr>,
    /// Pending contacts in dispatch order: (campaign, -priority, due, id).
    pending: BTreeSet<PendingKey>,
    by_contact: HashMap<ContactId, Vec<AttemptId>>,
    by_number: HashMap<Vec<u8>, Vec<Timestamp>>,
    open: BTreeSet<AttemptId>,
    blacklist: BTreeMap<i64, BlacklistRecord>,
    numbers: HashMap<Vec<u8>, NumberStatus>,
    next_blacklist: i64,
    unfinished: HashMap<CampaignId, u64>,
    pools: BTreeMap<String, crate::CallerIdPoolRecord>,
    next_campaign: i64,
    next_contact: i64,
    next_attempt: i64,
}

/// A store held in memory.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    access: Mutex<access::AccessData>,
    webhooks: Mutex<webhook::Outbox>,
    events: Mutex<events::EventLog>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> Result<T>) -> Result<T> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }
}

fn not_found(what: &'static str, id: i64) -> StoreError {
    StoreError::NotFound { what, id }
}

impl Data {
    /// An attempt as read: its row with its CDR.
    fn attempt_with_cdr(&self, a: &AttemptRecord) -> AttemptRecord {
        AttemptRecord {
            cdr: self.cdrs.get(&a.id).map(|c| c.cdr.clone()),
            ..a.clone()
        }
    }

    /// Stores a CDR unless its attempt has one; `true` when it was stored.
    fn store_cdr(
        &mut self,
        attempt: AttemptId,
        campaign: CampaignId,
        at: Timestamp,
        cdr: &Cdr,
    ) -> bool {
        if self.cdrs.contains_key(&attempt) {
            return false;
        }
        let (campaign_id, started_at) = match self.attempts.get(&attempt) {
            Some((a, _)) => (a.campaign_id, a.started_at),
            None => (campaign, at),
        };
        self.cdrs.insert(
            attempt,
            StoredCdr {
                campaign_id,
                started_at,
                cdr: cdr.clone(),
            },
        );
        true
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn upsert_trunk(&self, trunk: &TrunkRecord) -> Result<()> {
        self.with(|d| {
            d.trunks.insert(trunk.name.clone(), trunk.clone());
            Ok(())
        })
    }

    async fn list_trunks(&self) -> Result<Vec<TrunkRecord>> {
        self.with(|d| Ok(d.trunks.values().cloned().collect()))
    }

    async fn create_campaign(&self, spec: &CampaignSpec, now: Timestamp) -> Result<Campaign> {
        self.with(|d| {
            campaign_admin::require_pool(d, spec)?;
            d.next_campaign += 1;
            let c = Campaign {
                id: d.next_campaign,
                status: CampaignStatus::Draft,
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            d.campaigns.insert(c.id, c.clone());
            Ok(c)
        })
    }

    async fn get_campaign(&self, id: CampaignId) -> Result<Campaign> {
        self.with(|d| {
            d.campaigns
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("campaign", id))
        })
    }

    async fn list_campaigns(&self) -> Result<Vec<Campaign>> {
        self.with(|d| Ok(d.campaigns.values().cloned().collect()))
    }

    async fn set_campaign_status(
        &self,
        id: CampaignId,
        from: CampaignStatus,
        to: CampaignStatus,
        now: Timestamp,
    ) -> Result<Campaign> {
        self.with(|d| {
            let c = d
                .campaigns
                .get_mut(&id)
                .ok_or_else(|| not_found("campaign", id))?;
            if c.status != from {
                return Err(StoreError::Conflict(format!(
                    "campaign {id} is {}, not {from}",
                    c.status
                )));
            }
            c.status = to;
            c.updated_at = now;
            Ok(c.clone())
        })
    }

    async fn add_contacts(
        &self,
        campaign: CampaignId,
        contacts: &[NewContact],
        now: Timestamp,
    ) -> Result<AddResult> {
        self.with(|d| {
            if !d.campaigns.contains_key(&campaign) {
                return Err(not_found("campaign", campaign));
            }
            let mut r = AddResult::default();
            for c in contacts {
                if !d.keys.insert((campaign, c.number_hash.clone())) {
                    r.duplicates += 1;
                    continue;
                }
                d.next_contact += 1;
                let id = d.next_contact;
                d.contacts.insert(
                    id,
                    ContactRecord {
                        id,
                        campaign_id: campaign,
                        number_hash: c.number_hash.clone(),
                        number_enc: c.number_enc.clone(),
                        masked: c.masked.clone(),
                        time_zone: c.time_zone.clone(),
                        priority: c.priority,
                        variables: c.variables.clone(),
                        state: ContactState::Pending,
                        due_at: now,
                        attempts: 0,
                        last_outcome: None,
                        final_outcome: None,
                        region: c.region.clone(),
                        trace_id: c.trace_id.clone(),
                    },
                );
                d.pending
                    .insert((campaign, std::cmp::Reverse(c.priority), now, id));
                *d.unfinished.entry(campaign).or_default() += 1;
                r.added += 1;
            }
            Ok(r)
        })
    }

    async fn due_contacts(
        &self,
        campaign: CampaignId,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        self.with(|d| {
            let from = (
                campaign,
                std::cmp::Reverse(i32::MAX),
                Timestamp::MIN,
                i64::MIN,
            );
            let to = (
                campaign,
                std::cmp::Reverse(i32::MIN),
                Timestamp::MAX,
                i64::MAX,
            );
            Ok(d.pending
                .range(from..=to)
                .filter(|k| k.2 <= until)
                .take(limit as usize)
                .filter_map(|k| d.contacts.get(&k.3).cloned())
                .collect())
        })
    }

    async fn get_contact(&self, id: ContactId) -> Result<ContactRecord> {
        self.with(|d| {
            d.contacts
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("contact", id))
        })
    }

    async fn list_contacts(
        &self,
        campaign: CampaignId,
        state: Option<ContactState>,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        self.with(|d| {
            Ok(d.contacts
                .range(after.saturating_add(1)..)
                .map(|(_, c)| c)
                .filter(|c| c.campaign_id == campaign && state.is_none_or(|s| c.state == s))
                .take(limit.clamp(1, 10_000) as usize)
                .cloned()
                .collect())
        })
    }

    async fn defer_contact(&self, id: ContactId, due_at: Timestamp) -> Result<()> {
        self.with(|d| {
            let c = d
                .contacts
                .get_mut(&id)
                .ok_or_else(|| not_found("contact", id))?;
            if c.state == ContactState::Pending {
                d.pending.remove(&pkey(c));
                c.due_at = due_at;
                d.pending.insert(pkey(c));
            }
            Ok(())
        })
    }

    async fn begin_attempt(
        &self,
        contact: ContactId,
        node: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptStart>> {
        self.with(|d| {
            let Some(c) = d.contacts.get_mut(&contact) else {
                return Ok(None);
            };
            if c.state != ContactState::Pending {
                return Ok(None);
            }
            d.pending.remove(&pkey(c));
            c.state = ContactState::Dialing;
            c.attempts += 1;
            let seq = c.attempts;
            let (campaign_id, hash) = (c.campaign_id, c.number_hash.clone());
            d.next_attempt += 1;
            let id = d.next_attempt;
            let rec = AttemptRecord {
                id,
                campaign_id,
                contact_id: contact,
                seq,
                node: node.to_string(),
                started_at: now,
                ended_at: None,
                outcome: None,
                cause: None,
                cdr: None,
            };
            d.by_contact.entry(contact).or_default().push(id);
            d.by_number.entry(hash.clone()).or_default().push(now);
            d.open.insert(id);
            d.attempts.insert(id, (rec, hash));
            Ok(Some(AttemptStart {
                attempt_id: id,
                seq,
            }))
        })
    }

    async fn finish_attempt(
        &self,
        attempt: AttemptId,
        outcome: Outcome,
        cause: Option<&str>,
        cdr: Option<&Cdr>,
        next: ContactNext,
        now: Timestamp,
    ) -> Result<()> {
        self.with(|d| {
            let (a, _) = d
                .attempts
                .get_mut(&attempt)
                .ok_or_else(|| not_found("attempt", attempt))?;
            if a.ended_at.is_some() {
                return Err(StoreError::Conflict(format!(
                    "attempt {attempt} is already finished"
                )));
            }
            d.open.remove(&attempt);
            a.ended_at = Some(now);
            a.outcome = Some(outcome);
            a.cause = cause.map(str::to_string);
            let (contact, campaign, started) = (a.contact_id, a.campaign_id, a.started_at);
            if let Some(cdr) = cdr {
                d.store_cdr(attempt, campaign, started, cdr);
            }
            let c = d
                .contacts
                .get_mut(&contact)
                .ok_or_else(|| not_found("contact", contact))?;
            c.last_outcome = Some(outcome);
            match next {
                ContactNext::Retry { due_at } => {
                    c.state = ContactState::Pending;
                    c.due_at = due_at;
                    d.pending.insert(pkey(c));
                }
                ContactNext::Done { outcome } => {
                    c.state = ContactState::Done;
                    c.final_outcome = Some(outcome);
                    if let Some(u) = d.unfinished.get_mut(&c.campaign_id) {
                        *u = u.saturating_sub(1);
                    }
                }
            }
            Ok(())
        })
    }

    async fn insert_cdrs(&self, batch: &[CdrRow]) -> Result<u64> {
        self.with(|d| {
            Ok(batch
                .iter()
                .filter(|r| d.store_cdr(r.attempt_id, r.campaign_id, r.started_at, &r.cdr))
                .count() as u64)
        })
    }

    async fn count_cdrs(&self, campaign: Option<CampaignId>) -> Result<u64> {
        self.with(|d| {
            Ok(d.cdrs
                .values()
                .filter(|c| campaign.is_none_or(|id| c.campaign_id == id))
                .count() as u64)
        })
    }

    async fn purge_cdrs_before(&self, cutoff: Timestamp) -> Result<CdrPurge> {
        self.with(|d| {
            let before = d.cdrs.len();
            d.cdrs.retain(|_, c| c.started_at >= cutoff);
            Ok(CdrPurge {
                deleted: (before - d.cdrs.len()) as u64,
                dropped_partitions: Vec::new(),
            })
        })
    }

    async fn outcome_counts(&self, contact: ContactId) -> Result<BTreeMap<Outcome, u32>> {
        self.with(|d| {
            let mut m = BTreeMap::new();
            for id in d.by_contact.get(&contact).into_iter().flatten() {
                if let Some(o) = d.attempts.get(id).and_then(|(a, _)| a.outcome) {
                    *m.entry(o).or_default() += 1;
                }
            }
            Ok(m)
        })
    }

    async fn attempts_to_number_since(&self, number_hash: &[u8], since: Timestamp) -> Result<u32> {
        self.with(|d| {
            Ok(d.by_number
                .get(number_hash)
                .map_or(0, |v| v.iter().filter(|t| **t >= since).count() as u32))
        })
    }

    async fn open_attempts(&self) -> Result<Vec<OpenAttempt>> {
        self.with(|d| {
            Ok(d.open
                .iter()
                .filter_map(|id| d.attempts.get(id))
                .map(|(a, _)| OpenAttempt {
                    attempt_id: a.id,
                    contact_id: a.contact_id,
                    campaign_id: a.campaign_id,
                    seq: a.seq,
                    started_at: a.started_at,
                    node: a.node.clone(),
                })
                .collect())
        })
    }

    async fn due_backlog(&self, now: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        self.with(|d| {
            let mut n = 0;
            let mut oldest: Option<Timestamp> = None;
            for (campaign, _, due, _) in &d.pending {
                let running = d
                    .campaigns
                    .get(campaign)
                    .is_some_and(|c| c.status == CampaignStatus::Running);
                if running && *due <= now {
                    n += 1;
                    oldest = Some(oldest.map_or(*due, |o| o.min(*due)));
                }
            }
            Ok((n, oldest))
        })
    }

    async fn unfinished_contacts(&self, campaign: CampaignId) -> Result<u64> {
        self.with(|d| Ok(d.unfinished.get(&campaign).copied().unwrap_or(0)))
    }

    async fn next_due(&self, campaign: CampaignId) -> Result<Option<Timestamp>> {
        self.with(|d| {
            Ok(d.contacts
                .values()
                .filter(|c| c.campaign_id == campaign && c.state == ContactState::Pending)
                .map(|c| c.due_at)
                .min())
        })
    }

    async fn campaign_counts(&self, campaign: CampaignId) -> Result<CampaignCounts> {
        self.with(|d| {
            let mut r = CampaignCounts::default();
            for c in d.contacts.values().filter(|c| c.campaign_id == campaign) {
                *r.contacts.entry(c.state.as_str().to_string()).or_default() += 1;
                let province = c
                    .region
                    .province
                    .clone()
                    .unwrap_or_else(|| "unknown".into());
                *r.provinces.entry(province).or_default() += 1;
                if let Some(o) = c.final_outcome {
                    *r.final_outcomes.entry(o.as_str().to_string()).or_default() += 1;
                }
            }
            for (a, _) in d
                .attempts
                .values()
                .filter(|(a, _)| a.campaign_id == campaign)
            {
                r.attempts += 1;
                if let Some(o) = a.outcome {
                    *r.attempt_outcomes
                        .entry(o.as_str().to_string())
                        .or_default() += 1;
                }
            }
            Ok(r)
        })
    }

    async fn list_attempts(
        &self,
        campaign: CampaignId,
        after: Option<AttemptId>,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>> {
        self.with(|d| {
            Ok(d.attempts
                .range(after.map_or(0, |a| a.saturating_add(1))..)
                .filter(|(_, (a, _))| a.campaign_id == campaign)
                .take(limit as usize)
                .map(|(_, (a, _))| d.attempt_with_cdr(a))
                .collect())
        })
    }

    async fn query_attempts(&self, f: &crate::AttemptQuery) -> Result<Vec<AttemptRecord>> {
        self.with(|d| {
            Ok(d.attempts
                .range(f.after.saturating_add(1)..)
                .map(|(_, x)| x)
                .filter(|(a, _)| f.campaign_id.is_none_or(|c| a.campaign_id == c))
                .filter(|(a, _)| f.outcome.is_none_or(|o| a.outcome == Some(o)))
                .filter(|(_, h)| f.number_hash.as_ref().is_none_or(|x| x == h))
                .filter(|(a, _)| f.since.is_none_or(|t| a.started_at >= t))
                .filter(|(a, _)| f.until.is_none_or(|t| a.started_at < t))
                .take(f.limit.clamp(1, 10_000) as usize)
                .map(|(a, _)| d.attempt_with_cdr(a))
                .collect())
        })
    }

    async fn attempts_by_hour(&self, campaign: CampaignId) -> Result<Vec<crate::HourCount>> {
        self.with(|d| {
            let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
            for (a, _) in d
                .attempts
                .values()
                .filter(|(a, _)| a.campaign_id == campaign)
            {
                let ms = a.started_at.as_millisecond();
                let hour = ms - ms.rem_euclid(3_600_000);
                let outcome = a
                    .outcome
                    .map_or_else(|| "in_progress".to_string(), |o| o.as_str().to_string());
                *counts.entry((hour, outcome)).or_default() += 1;
            }
            counts
                .into_iter()
                .map(|((hour, outcome), attempts)| {
                    Ok(crate::HourCount {
                        hour: Timestamp::from_millisecond(hour)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        outcome,
                        attempts,
                    })
                })
                .collect()
        })
    }

    async fn add_blacklist(&self, entries: &[NewBlacklistEntry], now: Timestamp) -> Result<u64> {
        self.with(|d| {
            for e in entries {
                d.next_blacklist += 1;
                let id = d.next_blacklist;
                d.blacklist.insert(
                    id,
                    BlacklistRecord {
                        id,
                        campaign_id: e.campaign_id,
                        kind: if e.number_hash.is_some() {
                            "exact"
                        } else {
                            "prefix"
                        }
                        .into(),
                        label: e.label.clone(),
                        prefix: e.prefix.clone(),
                        number_hash: e.number_hash.clone(),
                        number_enc: e.number_enc.clone(),
                        reason: e.reason.clone(),
                        source: e.source.clone(),
                        expires_at: e.expires_at,
                        created_at: now,
                    },
                );
            }
            Ok(entries.len() as u64)
        })
    }

    async fn list_blacklist(
        &self,
        campaign: Option<CampaignId>,
        now: Timestamp,
    ) -> Result<Vec<BlacklistRecord>> {
        self.with(|d| {
            Ok(d.blacklist
                .values()
                .filter(|b| match campaign {
                    None => true,
                    Some(c) => {
                        b.campaign_id.is_none_or(|x| x == c) && b.expires_at.is_none_or(|e| e > now)
                    }
                })
                .cloned()
                .collect())
        })
    }

    async fn remove_blacklist(&self, id: i64) -> Result<()> {
        self.with(|d| {
            d.blacklist
                .remove(&id)
                .map(|_| ())
                .ok_or_else(|| not_found("blacklist entry", id))
        })
    }

    async fn blacklist_match(
        &self,
        campaign: CampaignId,
        number_hash: &[u8],
        e164: &str,
        now: Timestamp,
    ) -> Result<Option<BlacklistRecord>> {
        self.with(|d| {
            Ok(d.blacklist
                .values()
                .find(|b| b.blocks(campaign, number_hash, e164, now))
                .cloned())
        })
    }

    async fn record_number_outcome(
        &self,
        number_hash: &[u8],
        outcome: Outcome,
        status: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        self.with(|d| {
            let e = d
                .numbers
                .entry(number_hash.to_vec())
                .or_insert_with(|| NumberStatus {
                    status: "unknown".into(),
                    last_outcome: outcome,
                    attempts: 0,
                    answered: 0,
                    updated_at: now,
                });
            if let Some(s) = status {
                e.status = s.to_string();
            }
            e.last_outcome = outcome;
            e.attempts += 1;
            if outcome.is_answered() {
                e.answered += 1;
            }
            e.updated_at = now;
            Ok(())
        })
    }

    async fn number_status(
        &self,
        number_hash: &[u8],
        since: Timestamp,
    ) -> Result<Option<NumberStatus>> {
        self.with(|d| {
            Ok(d.numbers
                .get(number_hash)
                .filter(|n| n.updated_at >= since)
                .cloned())
        })
    }

    async fn erase_number(&self, number_hash: &[u8]) -> Result<EraseResult> {
        self.with(|d| {
            let mut r = EraseResult::default();
            let ids: Vec<ContactId> = d
                .contacts
                .values()
                .filter(|c| c.number_hash == number_hash)
                .map(|c| c.id)
                .collect();
            for id in ids {
                if let Some(c) = d.contacts.get_mut(&id) {
                    d.pending.remove(&pkey(c));
                    d.keys.remove(&(c.campaign_id, c.number_hash.clone()));
                    if c.state != ContactState::Done {
                        if let Some(u) = d.unfinished.get_mut(&c.campaign_id) {
                            *u = u.saturating_sub(1);
                        }
                        c.state = ContactState::Done;
                        c.final_outcome = Some(Outcome::Blocked);
                    }
                    c.number_hash = format!("erased-{id}").into_bytes();
                    c.number_enc.clear();
                    c.masked = "[erased]".into();
                    c.variables = serde_json::json!({});
                    r.contacts += 1;
                }
            }
            for (a, h) in d.attempts.values_mut() {
                if h.as_slice() == number_hash {
                    *h = format!("erased-{}", a.id).into_bytes();
                    if let Some(stored) = d.cdrs.get_mut(&a.id) {
                        stored.cdr.callee = "[erased]".into();
                        if let Some(rec) = stored.cdr.recording.take() {
                            r.recordings.push(rec);
                        }
                    }
                    r.attempts += 1;
                }
            }
            d.by_number.remove(number_hash);
            d.numbers.remove(number_hash);
            Ok(r)
        })
    }

    async fn sealed_numbers(
        &self,
        table: &'static str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SealedNumber>> {
        self.with(|d| {
            let v: Vec<SealedNumber> = match table {
                "contacts" => d
                    .contacts
                    .range(after.saturating_add(1)..)
                    .filter(|(_, c)| !c.number_enc.is_empty())
                    .take(limit as usize)
                    .map(|(id, c)| SealedNumber {
                        table,
                        id: *id,
                        number_enc: c.number_enc.clone(),
                    })
                    .collect(),
                _ => d
                    .blacklist
                    .range(after.saturating_add(1)..)
                    .filter_map(|(id, b)| {
                        b.number_enc.clone().map(|e| SealedNumber {
                            table,
                            id: *id,
                            number_enc: e,
                        })
                    })
                    .take(limit as usize)
                    .collect(),
            };
            Ok(v)
        })
    }

    async fn reseal_number(&self, table: &'static str, id: i64, number_enc: &[u8]) -> Result<()> {
        self.with(|d| {
            match table {
                "contacts" => {
                    d.contacts
                        .get_mut(&id)
                        .ok_or_else(|| not_found("contact", id))?
                        .number_enc = number_enc.to_vec()
                }
                _ => {
                    d.blacklist
                        .get_mut(&id)
                        .ok_or_else(|| not_found("blacklist entry", id))?
                        .number_enc = Some(number_enc.to_vec())
                }
            }
            Ok(())
        })
    }

    async fn contact_hashes(
        &self,
        campaign: CampaignId,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, Vec<u8>)>> {
        self.with(|d| {
            Ok(d.contacts
                .range(after.saturating_add(1)..)
                .filter(|(_, c)| c.campaign_id == campaign)
                .take(limit as usize)
                .map(|(id, c)| (*id, c.number_hash.clone()))
                .collect())
        })
    }

    async fn contact_exists(&self, campaign: CampaignId, number_hash: &[u8]) -> Result<bool> {
        self.with(|d| Ok(d.keys.contains(&(campaign, number_hash.to_vec()))))
    }

    async fn numbers_with_status(
        &self,
        status: &str,
        since: Timestamp,
        after: &[u8],
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        self.with(|d| {
            let mut v: Vec<Vec<u8>> = d
                .numbers
                .iter()
                .filter(|(h, n)| {
                    n.status == status && n.updated_at >= since && h.as_slice() > after
                })
                .map(|(h, _)| h.clone())
                .collect();
            v.sort();
            v.truncate(limit as usize);
            Ok(v)
        })
    }

    // Webhook outbox (in `memory/webhook.rs`).
    async fn enqueue_webhook(&self, event: &NewWebhookEvent) -> Result<i64> {
        self.webhook_enqueue(event)
    }

    async fn take_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.webhook_take_due(now, lease_until, limit)
    }

    async fn next_webhook_due(&self) -> Result<Option<Timestamp>> {
        self.webhook_next_due()
    }

    async fn webhook_delivered(&self, id: i64, at: Timestamp, http_status: u16) -> Result<()> {
        self.webhook_mark_delivered(id, at, http_status)
    }

    async fn webhook_failed(&self, id: i64, failure: &WebhookFailure) -> Result<WebhookStatus> {
        self.webhook_mark_failed(id, failure)
    }

    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Vec<WebhookDelivery>> {
        self.webhook_list(query)
    }

    async fn get_webhook(&self, id: i64) -> Result<WebhookDelivery> {
        self.webhook_get(id)
    }

    async fn requeue_webhook(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery> {
        self.webhook_requeue(id, now)
    }

    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64> {
        self.webhook_purge(before)
    }

    // Changing and deleting campaigns, caller-ID pools (in `memory/campaign_admin.rs`).
    async fn update_campaign_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        self.campaign_update_spec(id, spec, expected, now)
    }

    async fn delete_campaign(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<crate::CampaignDeletion> {
        self.campaign_delete(id, allowed)
    }

    async fn upsert_caller_id_pool(
        &self,
        pool: &crate::NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(crate::CallerIdPoolRecord, bool)> {
        self.pool_upsert(pool, now)
    }

    async fn get_caller_id_pool(&self, name: &str) -> Result<Option<crate::CallerIdPoolRecord>> {
        self.pool_get(name)
    }

    async fn list_caller_id_pools(&self) -> Result<Vec<crate::CallerIdPoolRecord>> {
        self.pool_list()
    }

    async fn delete_caller_id_pool(&self, name: &str) -> Result<bool> {
        self.pool_delete(name)
    }
}
