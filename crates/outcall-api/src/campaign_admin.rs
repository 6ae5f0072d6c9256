//! Changing and deleting campaigns, and caller-ID pools: what the service does behind
//! `PATCH` / `DELETE /v1/campaigns/{id}` and `/v1/caller-id-pools`.
//!
//! A campaign can be changed while it is a draft or paused: the given top-level fields of the
//! spec replace the stored ones (a JSON merge; `null` puts a field back to its default) and the
//! result is validated like a new spec. It can be deleted once it is a draft, completed or
//! canceled, with its contacts, attempts (CDRs), its own blacklist entries, its pending webhook
//! deliveries and its recording files.
//!
//! A caller-ID pool is a named list of numbers presented as From; a campaign that names one in
//! `caller_id_pool` rotates its numbers. Replacing a pool reloads the campaigns that name it, so
//! the scheduler reads the new numbers at once; a pool cannot be deleted while a campaign that
//! is not completed or canceled names it.

use crate::error::ApiError;
use crate::service::CampaignService;
use outcall_domain::campaign::{
    check_pool_name, Campaign, CampaignId, CampaignSpec, CampaignStatus,
};
use outcall_store::{CallerIdPoolRecord, NewCallerIdPool};
use serde::{Deserialize, Serialize};

/// Statuses in which a campaign's spec may change.
pub const EDITABLE: [CampaignStatus; 2] = [CampaignStatus::Draft, CampaignStatus::Paused];
/// Statuses in which a campaign may be deleted.
pub const DELETABLE: [CampaignStatus; 3] = [
    CampaignStatus::Draft,
    CampaignStatus::Completed,
    CampaignStatus::Canceled,
];
/// Most numbers in one caller-ID pool.
pub const MAX_POOL_NUMBERS: usize = 10_000;
/// Longest caller ID: up to 20 digits after an optional `+`.
const MAX_CALLER_ID_DIGITS: usize = 20;
/// Longest pool description, in characters.
const MAX_DESCRIPTION: usize = 500;

/// What deleting a campaign removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    pub name: String,
    pub contacts: u64,
    pub attempts: u64,
    /// Pending webhook deliveries dropped.
    pub webhooks: u64,
    /// The campaign's own blacklist entries.
    pub blacklist: u64,
    pub recordings_deleted: u64,
}

/// A caller-ID pool to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolInput {
    /// 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// Caller IDs: digits with an optional leading `+`; 1 to 10,000, duplicates dropped.
    pub numbers: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A caller-ID pool.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub name: String,
    pub description: Option<String>,
    /// In rotation order.
    pub numbers: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<CallerIdPoolRecord> for PoolView {
    fn from(p: CallerIdPoolRecord) -> Self {
        PoolView {
            name: p.name,
            description: p.description,
            numbers: p.numbers,
            created_at: p.created_at.to_string(),
            updated_at: p.updated_at.to_string(),
        }
    }
}

/// Checks and normalises a pool: the name, each number (trimmed), duplicates dropped in order.
fn pool_of(input: PoolInput) -> Result<NewCallerIdPool, ApiError> {
    let bad = ApiError::InvalidRequest;
    check_pool_name(&input.name).map_err(bad)?;
    if input.numbers.is_empty() || input.numbers.len() > MAX_POOL_NUMBERS {
        return Err(bad(format!(
            "a pool holds 1 to {MAX_POOL_NUMBERS} numbers, not {}",
            input.numbers.len()
        )));
    }
    let description = input.description.map(|d| d.trim().to_string());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(bad(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut numbers = Vec::with_capacity(input.numbers.len());
    for (i, raw) in input.numbers.iter().enumerate() {
        let n = raw.trim();
        let digits = n.strip_prefix('+').unwrap_or(n);
        if digits.is_empty()
            || digits.len() > MAX_CALLER_ID_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(format!(
                "numbers[{i}] `{}`: a caller ID is 1 to {MAX_CALLER_ID_DIGITS} digits with an \
                 optional leading +",
                n.chars().take(40).collect::<String>()
            )));
        }
        if seen.insert(n.to_string()) {
            numbers.push(n.to_string());
        }
    }
    Ok(NewCallerIdPool {
        name: input.name,
        description: description.filter(|d| !d.is_empty()),
        numbers,
    })
}

/// Top-level spec fields whose value differs between two specs, by name.
fn changed_fields(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}

fn spec_json(spec: &CampaignSpec) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(spec).map_err(|e| ApiError::Internal(format!("campaign spec: {e}")))
}

impl CampaignService {
    /// `invalid_campaign` when the spec names a caller-ID pool that does not exist.
    pub async fn check_caller_id_pool(&self, spec: &CampaignSpec) -> Result<(), ApiError> {
        if let Some(name) = &spec.caller_id_pool {
            if self.store.get_caller_id_pool(name).await?.is_none() {
                return Err(ApiError::InvalidCampaign(format!(
                    "caller_id_pool: there is no caller-ID pool `{name}` (see /v1/caller-id-pools)"
                )));
            }
        }
        Ok(())
    }

    /// Changes a draft or paused campaign: `patch`'s top-level fields replace the spec's (a
    /// `null` puts a field back to its default), and the result must validate like a new spec.
    /// Returns the campaign and the names of the fields that changed.
    pub async fn update_campaign(
        &self,
        id: CampaignId,
        patch: serde_json::Value,
    ) -> Result<(Campaign, Vec<String>), ApiError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(ApiError::InvalidRequest(
                "the body is a JSON object of campaign spec fields to replace".into(),
            ));
        };
        let c = self.store.get_campaign(id).await?;
        if !EDITABLE.contains(&c.status) {
            let hint = match c.status {
                CampaignStatus::Running => "pause it first",
                _ => "it is finished; create a new campaign instead",
            };
            return Err(ApiError::IllegalTransition(format!(
                "cannot change a campaign that is {}: only a draft or paused campaign can be \
                 changed ({hint})",
                c.status
            )));
        }
        let before = spec_json(&c.spec)?;
        let original = before.as_object().cloned().unwrap_or_default();
        let merge = |fields: &mut dyn Iterator<Item = (&String, &serde_json::Value)>| {
            let mut m = original.clone();
            for (k, v) in fields {
                if v.is_null() {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
            serde_json::from_value::<CampaignSpec>(serde_json::Value::Object(m))
        };
        let spec = match merge(&mut patch.iter()) {
            Ok(spec) => spec,
            Err(e) => {
                // Name the field: the first one that fails on its own (a value error does not
                // say where it is).
                let field = patch.iter().find_map(|(k, v)| {
                    merge(&mut std::iter::once((k, v)))
                        .err()
                        .map(|e| format!("{k}: {e}"))
                });
                return Err(ApiError::InvalidCampaign(
                    field.unwrap_or_else(|| format!("invalid campaign spec: {e}")),
                ));
            }
        };
        spec.validate()
            .map_err(|e| ApiError::InvalidCampaign(e.to_string()))?;
        self.check_caller_id_pool(&spec).await?;
        let changed = changed_fields(&before, &spec_json(&spec)?);
        if changed.is_empty() {
            return Ok((c, changed));
        }
        let c = self
            .store
            .update_campaign_spec(id, &spec, &EDITABLE, self.clock.now())
            .await?;
        if let Some(s) = &self.scheduler {
            s.reload(id);
        }
        Ok((c, changed))
    }

    /// Deletes a draft, completed or canceled campaign with its contacts, attempts, own
    /// blacklist entries, pending webhook deliveries and recording files.
    pub async fn delete_campaign(&self, id: CampaignId) -> Result<DeleteReport, ApiError> {
        let c = self.store.get_campaign(id).await?;
        if !DELETABLE.contains(&c.status) {
            return Err(ApiError::IllegalTransition(format!(
                "cannot delete a campaign that is {}: cancel it first",
                c.status
            )));
        }
        let r = self.store.delete_campaign(id, &DELETABLE).await?;
        if let Some(s) = &self.scheduler {
            s.reload(id);
        }
        let mut deleted = 0;
        let mut dirs = std::collections::BTreeSet::new();
        for path in &r.recordings {
            match std::fs::remove_file(path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete a deleted campaign's recording")
                }
            }
            if let Some(dir) = std::path::Path::new(path).parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        // `<recordings>/<campaign>/`, once empty.
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(DeleteReport {
            name: c.spec.name,
            contacts: r.contacts,
            attempts: r.attempts,
            webhooks: r.webhooks,
            blacklist: r.blacklist,
            recordings_deleted: deleted,
        })
    }

    /// Creates or replaces a caller-ID pool (`true`: created). Campaigns that name it and are
    /// not finished are reloaded, so the scheduler rotates the new numbers at once.
    pub async fn upsert_caller_id_pool(
        &self,
        input: PoolInput,
    ) -> Result<(PoolView, bool), ApiError> {
        let pool = pool_of(input)?;
        let (p, created) = self
            .store
            .upsert_caller_id_pool(&pool, self.clock.now())
            .await?;
        if let Some(s) = &self.scheduler {
            for c in self.store.list_campaigns().await? {
                if !c.status.is_final() && c.spec.caller_id_pool.as_deref() == Some(&p.name) {
                    s.reload(c.id);
                }
            }
        }
        Ok((p.into(), created))
    }

    pub async fn list_caller_id_pools(&self) -> Result<Vec<PoolView>, ApiError> {
        Ok(self
            .store
            .list_caller_id_pools()
            .await?
            .into_iter()
            .map(PoolView::from)
            .collect())
    }

    pub async fn get_caller_id_pool(&self, name: &str) -> Result<PoolView, ApiError> {
        self.store
            .get_caller_id_pool(name)
            .await?
            .map(PoolView::from)
            .ok_or_else(|| ApiError::NotFound(format!("caller-ID pool `{name}` not found")))
    }

    /// Deletes a pool; `conflict` while a campaign that is not finished names it.
    pub async fn delete_caller_id_pool(&self, name: &str) -> Result<(), ApiError> {
        if self.store.delete_caller_id_pool(name).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!(
                "caller-ID pool `{name}` not found"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(numbers: &[&str]) -> PoolInput {
        PoolInput {
            name: "sales".into(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            description: Some("  Shanghai lines ".into()),
        }
    }

    #[test]
    fn pool_numbers_are_checked_trimmed_and_deduplicated() {
        let p = pool_of(input(&["02150000001", " +862150000002", "02150000001"])).unwrap();
        assert_eq!(p.numbers, ["02150000001", "+862150000002"]);
        assert_eq!(p.description.as_deref(), Some("Shanghai lines"));
        for bad in ["", "+", "0215-0000", "abc", "++1", &"1".repeat(21)] {
            let e = pool_of(input(&["100", bad])).unwrap_err();
            assert!(e.to_string().starts_with("numbers[1] "), "{bad:?}: {e}");
            assert_eq!(e.code(), "invalid_request");
        }
        assert!(pool_of(input(&[])).is_err());
        let many: Vec<String> = (0..=MAX_POOL_NUMBERS).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(pool_of(input(&refs)).is_err());
        assert!(pool_of(input(&refs[..MAX_POOL_NUMBERS])).is_ok());
        let mut bad_name = input(&["100"]);
        bad_name.name = "a b".into();
        assert!(pool_of(bad_name).is_err());
    }

    #[test]
    fn changed_fields_lists_differing_top_level_keys() {
        let a = serde_json::json!({ "name": "x", "max_cps": 5.0, "prompt": "a.wav" });
        let b = serde_json::json!({ "name": "x", "max_cps": 6.0, "trunks": ["t"] });
        assert_eq!(changed_fields(&a, &b), ["max_cps", "prompt", "trunks"]);
        assert!(changed_fields(&a, &a).is_empty());
    }
}
