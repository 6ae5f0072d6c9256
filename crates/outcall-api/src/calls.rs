//! Single calls (`POST /v1/calls`): an integrator's one-off call.
//!
//! A single call is a campaign of one contact with no retries, started at once, so it gets
//! everything a campaign has: the number checks (blacklist, 空号), the trunk's pacing, a CDR,
//! status webhooks. Its campaign is named `call:<masked number>`; the call's id is that
//! campaign's id.

use crate::error::ApiError;
use crate::service::{CampaignService, ContactInput};
use outcall_domain::campaign::{
    AfterPrompt, CampaignSpec, CampaignStatus, LifecycleAction, StatusCallback,
};
use serde::{Deserialize, Serialize};

/// A call to place.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    /// The number to call, in any format the importer accepts.
    pub to: String,
    /// The trace id of the request that placed the call (from its `traceparent` header, or
    /// new); the call's CDR carries it.
    #[serde(skip)]
    pub trace_id: Option<String>,
    /// Caller ID to present; the trunk's otherwise.
    #[serde(default)]
    pub from: Option<String>,
    /// Trunk name; the first configured trunk otherwise.
    #[serde(default)]
    pub trunk: Option<String>,
    /// WAV prompt played when answered.
    #[serde(default)]
    pub prompt: Option<String>,
    /// What to do after the prompt: `hangup` (default) or `stay`.
    #[serde(default)]
    pub after_prompt: Option<AfterPrompt>,
    #[serde(default)]
    pub ring_timeout_secs: Option<u64>,
    #[serde(default)]
    pub max_duration_secs: Option<u64>,
    /// Record the call.
    #[serde(default)]
    pub record: bool,
    /// Status webhook: `{"url": "...", "events": ["initiated","ringing","answered","completed"]}`.
    #[serde(default)]
    pub status_callback: Option<StatusCallback>,
    /// Variables kept with the contact.
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A single call and where it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallView {
    /// The call's id (its campaign's id).
    pub id: i64,
    /// `queued`, `in_progress`, `completed` or `canceled`.
    pub status: &'static str,
    /// The number, masked.
    pub to: String,
    pub trunk: String,
    /// The final outcome, once completed.
    pub outcome: Option<String>,
    /// The call detail record, once completed.
    pub cdr: Option<outcall_domain::Cdr>,
    pub created_at: String,
}

const PREFIX: &str = outcall_domain::campaign::SINGLE_CALL_PREFIX;

impl CampaignService {
    /// Places a single call: creates its campaign, adds the number, starts it.
    pub async fn create_call(&self, c: NewCall) -> Result<CallView, ApiError> {
        let trunk = match c.trunk {
            Some(t) => t,
            None => self
                .store
                .list_trunks()
                .await?
                .into_iter()
                .next()
                .map(|t| t.name)
                .ok_or_else(|| ApiError::InvalidRequest("no trunk is configured".into()))?,
        };
        let e164 = outcall_domain::number::normalize_e164(&c.to, &self.default_country_code)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid number `to`: {e}")))?;
        let mut spec = serde_json::json!({
            "name": format!("{PREFIX}{}", outcall_domain::mask_number(&e164)),
            "trunks": [trunk],
            "caller_ids": c.from.into_iter().collect::<Vec<_>>(),
            "prompt": c.prompt,
            "max_concurrent": 1,
            "max_cps": 10.0,
            "record": c.record,
            "retry": { "rules": {}, "max_attempts": 1 },
        });
        if let Some(a) = c.after_prompt {
            spec["after_prompt"] = serde_json::to_value(a).unwrap_or_default();
        }
        if let Some(r) = c.ring_timeout_secs {
            spec["ring_timeout_secs"] = r.into();
        }
        if let Some(m) = c.max_duration_secs {
            spec["max_duration_secs"] = m.into();
        }
        if let Some(cb) = c.status_callback {
            spec["status_callback"] = serde_json::to_value(cb).unwrap_or_default();
        }
        let spec: CampaignSpec = serde_json::from_value(spec)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid call: {e}")))?;
        let campaign = self.create_campaign(spec).await?;
        let report = self
            .add_contacts(
                campaign.id,
                [(
                    1,
                    Ok(ContactInput {
                        number: e164,
                        priority: 0,
                        variables: c.variables,
                        trace_id: c.trace_id,
                    }),
                )],
            )
            .await?;
        if report.added != 1 {
            let reason = report
                .errors
                .first()
                .map(|e| e.reason.clone())
                .unwrap_or_else(|| "the number was not accepted".into());
            self.act(campaign.id, LifecycleAction::Cancel).await.ok();
            return Err(ApiError::InvalidRequest(format!(
                "cannot call `to`: {reason}"
            )));
        }
        self.act(campaign.id, LifecycleAction::Start).await?;
        self.get_call(campaign.id).await
    }

    /// A single call by id.
    pub async fn get_call(&self, id: i64) -> Result<CallView, ApiError> {
        let c = self.store.get_campaign(id).await.map_err(|e| match e {
            outcall_store::StoreError::NotFound { .. } => {
                ApiError::NotFound(format!("call {id} not found"))
            }
            e => e.into(),
        })?;
        let Some(to) = c.spec.name.strip_prefix(PREFIX) else {
            return Err(ApiError::NotFound(format!(
                "call {id} not found (campaign {id} is not a single call)"
            )));
        };
        let attempt = self
            .store
            .list_attempts(id, None, 1)
            .await?
            .into_iter()
            .next();
        let status = match (&c.status, &attempt) {
            (CampaignStatus::Canceled, _) => "canceled",
            (_, Some(a)) if a.ended_at.is_some() => "completed",
            (_, Some(_)) => "in_progress",
            (CampaignStatus::Completed, None) => "completed",
            _ => "queued",
        };
        let (outcome, cdr) = match attempt {
            Some(a) if a.ended_at.is_some() => (a.outcome.map(|o| o.as_str().to_string()), a.cdr),
            _ => (None, None),
        };
        Ok(CallView {
            id,
            status,
            to: to.to_string(),
            trunk: c.spec.trunks.first().cloned().unwrap_or_default(),
            outcome,
            cdr,
            created_at: c.created_at.to_string(),
        })
    }
}
