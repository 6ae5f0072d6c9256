//! Campaigns, contacts and attempts: what to call, how, when, how fast, and what to do after
//! each outcome.

use crate::dtmf::DtmfRules;
use crate::outcome::Outcome;
use crate::window::{CallingWindows, WindowError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub type CampaignId = i64;
pub type ContactId = i64;
pub type AttemptId = i64;

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Draft,
    Running,
    Paused,
    Completed,
    Canceled,
}

impl CampaignStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Completed => "completed",
            CampaignStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignStatus> {
        [
            Self::Draft,
            Self::Running,
            Self::Paused,
            Self::Completed,
            Self::Canceled,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    pub fn is_final(&self) -> bool {
        matches!(self, CampaignStatus::Completed | CampaignStatus::Canceled)
    }

    /// `draft → running ⇄ paused → completed / canceled`.
    pub fn apply(self, action: LifecycleAction) -> Result<CampaignStatus, LifecycleError> {
        use CampaignStatus as S;
        use LifecycleAction as A;
        let next = match (self, action) {
            (S::Draft, A::Start) => S::Running,
            (S::Running, A::Pause) => S::Paused,
            (S::Paused, A::Resume) => S::Running,
            (S::Running | S::Paused, A::Complete) => S::Completed,
            (S::Draft | S::Running | S::Paused, A::Cancel) => S::Canceled,
            _ => {
                return Err(LifecycleError {
                    status: self,
                    action,
                })
            }
        };
        Ok(next)
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's (or the scheduler's) lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    Start,
    Pause,
    Resume,
    Cancel,
    Complete,
}

impl LifecycleAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            LifecycleAction::Start => "start",
            LifecycleAction::Pause => "pause",
            LifecycleAction::Resume => "resume",
            LifecycleAction::Cancel => "cancel",
            LifecycleAction::Complete => "complete",
        }
    }
}

/// An action the campaign's status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a campaign that is {status}", action.as_str())]
pub struct LifecycleError {
    pub status: CampaignStatus,
    pub action: LifecycleAction,
}

/// Retry after an outcome: wait `delay_secs`, at most `retries` times for this outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub delay_secs: u64,
    pub retries: u32,
}

/// What to do after each outcome. Outcomes without a rule are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_rules")]
    pub rules: BTreeMap<Outcome, RetryRule>,
    /// Hard cap on attempts per contact, whatever the outcomes.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    6
}

fn default_rules() -> BTreeMap<Outcome, RetryRule> {
    let r = |d, n| RetryRule {
        delay_secs: d,
        retries: n,
    };
    BTreeMap::from([
        (Outcome::Busy, r(600, 3)),
        (Outcome::NoAnswer, r(7200, 2)),
        (Outcome::Unreachable, r(3600, 2)),
        (Outcome::PoweredOff, r(3600, 2)),
        (Outcome::Congestion, r(300, 3)),
        (Outcome::TrunkError, r(300, 3)),
        (Outcome::Failed, r(120, 3)),
    ])
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            rules: default_rules(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// The scheduler's decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Dial again after this many seconds.
    RetryAfter(u64),
    /// The contact is done with this outcome.
    Final,
}

impl RetryPolicy {
    /// `same_outcome` counts the attempts of this contact that ended in `outcome`, this one
    /// included; `attempts` counts all of them.
    pub fn decide(&self, outcome: Outcome, same_outcome: u32, attempts: u32) -> RetryDecision {
        match self.rules.get(&outcome) {
            Some(r) if same_outcome <= r.retries && attempts < self.max_attempts => {
                RetryDecision::RetryAfter(r.delay_secs)
            }
            _ => RetryDecision::Final,
        }
    }
}

/// At most `max_calls` calls to one number within `per_secs`, across all campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max_calls: u32,
    pub per_secs: u64,
}

/// What happens once a call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterPrompt {
    #[default]
    Hangup,
    Stay,
}

/// A campaign as the operator writes it (TOML file or API body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    /// Trunk names, tried in order of their free capacity.
    pub trunks: Vec<String>,
    /// Caller IDs to rotate; empty uses the trunk's.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// WAV prompt played when answered.
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub after_prompt: AfterPrompt,
    #[serde(default)]
    pub dtmf: DtmfRules,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Not before this instant (RFC 3339).
    #[serde(default)]
    pub start_at: Option<jiff::Timestamp>,
    /// Not after this instant: the campaign completes.
    #[serde(default)]
    pub end_at: Option<jiff::Timestamp>,
    #[serde(default)]
    pub windows: Option<CallingWindows>,
    #[serde(default = "default_concurrency")]
    pub max_concurrent: u32,
    #[serde(default = "default_cps")]
    pub max_cps: f64,
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    #[serde(default = "default_max_duration")]
    pub max_duration_secs: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Per-number caps across campaigns.
    #[serde(default)]
    pub frequency_caps: Vec<FrequencyCap>,
    /// Record calls (both directions) to the recordings directory.
    #[serde(default)]
    pub record: bool,
    /// Dial numbers learned to be empty (空号) anyway; by default they are skipped at import
    /// and at dispatch.
    #[serde(default)]
    pub dial_known_empty: bool,
    /// Only contacts whose number is attributed to one of these provinces / carriers (an empty
    /// list allows all). Applied at import.
    #[serde(default)]
    pub filters: ContactFilters,
}

/// Import filters on a number's attribution (号码归属地).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactFilters {
    /// Province names as attribution gives them (`广东` matches `广东省` too).
    #[serde(default)]
    pub provinces: Vec<String>,
    /// Carriers: `china_mobile`, `china_unicom`, `china_telecom`, `china_broadnet`, `virtual_*`.
    #[serde(default)]
    pub carriers: Vec<String>,
}

impl ContactFilters {
    /// Why a number with this attribution is filtered out, or `None` if it may be called.
    pub fn reject(&self, province: Option<&str>, carrier: Option<&str>) -> Option<String> {
        if !self.provinces.is_empty() {
            let ok = province.is_some_and(|p| {
                self.provinces
                    .iter()
                    .any(|f| p.starts_with(f.as_str()) || f.starts_with(p))
            });
            if !ok {
                return Some(format!(
                    "province {} is not in the campaign's filter",
                    province.unwrap_or("unknown")
                ));
            }
        }
        if !self.carriers.is_empty()
            && !carrier.is_some_and(|c| self.carriers.iter().any(|f| f == c))
        {
            return Some(format!(
                "carrier {} is not in the campaign's filter",
                carrier.unwrap_or("unknown")
            ));
        }
        None
    }
}

fn default_concurrency() -> u32 {
    10
}
fn default_cps() -> f64 {
    5.0
}
fn default_ring_timeout() -> u64 {
    30
}
fn default_max_duration() -> u64 {
    120
}

/// A campaign spec that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("name must be 1 to 200 characters")]
    Name,
    #[error("at least one trunk is required")]
    NoTrunk,
    #[error("max_concurrent must be between 1 and 100000")]
    Concurrency,
    #[error("max_cps must be greater than 0 and at most 100000")]
    Cps,
    #[error("ring_timeout_secs must be between 1 and 600")]
    RingTimeout,
    #[error("max_duration_secs must be between 1 and 86400")]
    MaxDuration,
    #[error("end_at is before start_at")]
    EndBeforeStart,
    #[error("frequency cap needs max_calls >= 1 and per_secs >= 1")]
    Cap,
    #[error("windows: {0}")]
    Windows(#[from] WindowError),
}

impl CampaignSpec {
    /// Checks every field; the first problem is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            return Err(SpecError::Name);
        }
        if self.trunks.is_empty() {
            return Err(SpecError::NoTrunk);
        }
        if !(1..=100_000).contains(&self.max_concurrent) {
            return Err(SpecError::Concurrency);
        }
        if !(self.max_cps > 0.0 && self.max_cps <= 100_000.0) {
            return Err(SpecError::Cps);
        }
        if !(1..=600).contains(&self.ring_timeout_secs) {
            return Err(SpecError::RingTimeout);
        }
        if !(1..=86_400).contains(&self.max_duration_secs) {
            return Err(SpecError::MaxDuration);
        }
        if let (Some(a), Some(b)) = (self.start_at, self.end_at) {
            if b <= a {
                return Err(SpecError::EndBeforeStart);
            }
        }
        if self
            .frequency_caps
            .iter()
            .any(|c| c.max_calls == 0 || c.per_secs == 0)
        {
            return Err(SpecError::Cap);
        }
        if let Some(w) = &self.windows {
            w.compile()?;
        }
        Ok(())
    }
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub status: CampaignStatus,
    #[serde(flatten)]
    pub spec: CampaignSpec,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
}

/// Where a contact is in its campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Waiting for its due time.
    Pending,
    /// An attempt is on the wire.
    Dialing,
    /// Finished: `final_outcome` says how.
    Done,
}

impl ContactState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ContactState::Pending => "pending",
            ContactState::Dialing => "dialing",
            ContactState::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<ContactState> {
        [Self::Pending, Self::Dialing, Self::Done]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_is_exactly_as_designed() {
        use CampaignStatus as S;
        use LifecycleAction as A;
        let all_s = [S::Draft, S::Running, S::Paused, S::Completed, S::Canceled];
        let all_a = [A::Start, A::Pause, A::Resume, A::Cancel, A::Complete];
        let allowed = [
            (S::Draft, A::Start, S::Running),
            (S::Draft, A::Cancel, S::Canceled),
            (S::Running, A::Pause, S::Paused),
            (S::Running, A::Cancel, S::Canceled),
            (S::Running, A::Complete, S::Completed),
            (S::Paused, A::Resume, S::Running),
            (S::Paused, A::Cancel, S::Canceled),
            (S::Paused, A::Complete, S::Completed),
        ];
        for s in all_s {
            for a in all_a {
                let want = allowed
                    .iter()
                    .find(|(x, y, _)| *x == s && *y == a)
                    .map(|t| t.2);
                assert_eq!(s.apply(a).ok(), want, "{s} {a:?}");
            }
        }
        assert_eq!(
            S::Completed.apply(A::Start).unwrap_err().to_string(),
            "cannot start a campaign that is completed"
        );
    }

    #[test]
    fn retry_policy_counts_per_outcome_and_caps_attempts() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(Outcome::Busy, 1, 1),
            RetryDecision::RetryAfter(600)
        );
        assert_eq!(
            p.decide(Outcome::Busy, 3, 3),
            RetryDecision::RetryAfter(600)
        );
        assert_eq!(p.decide(Outcome::Busy, 4, 4), RetryDecision::Final);
        assert_eq!(
            p.decide(Outcome::NoAnswer, 2, 5),
            RetryDecision::RetryAfter(7200)
        );
        assert_eq!(p.decide(Outcome::NoAnswer, 2, 6), RetryDecision::Final);
        assert_eq!(p.decide(Outcome::EmptyNumber, 1, 1), RetryDecision::Final);
        assert_eq!(p.decide(Outcome::AnsweredHuman, 1, 1), RetryDecision::Final);
    }

    fn spec() -> CampaignSpec {
        toml::from_str(
            r#"
            name = "reminders"
            trunks = ["sipp"]
            max_concurrent = 20
            max_cps = 10
            [retry]
            max_attempts = 4
            rules = { busy = { delay_secs = 600, retries = 3 }, no_answer = { delay_secs = 7200, retries = 2 } }
            [[frequency_caps]]
            max_calls = 3
            per_secs = 86400
            [windows]
            time_zone = "Asia/Shanghai"
            weekly = { daily = ["09:00-21:00"] }
            "#,
        )
        .unwrap()
    }

    #[test]
    fn spec_parses_from_toml_and_validates() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(
            s.retry.rules[&Outcome::Busy],
            RetryRule {
                delay_secs: 600,
                retries: 3
            }
        );
        assert_eq!(s.retry.rules.len(), 2, "rules given replace the defaults");
        assert_eq!(s.ring_timeout_secs, 30);
        let mut bad = s.clone();
        bad.trunks.clear();
        assert_eq!(bad.validate().unwrap_err(), SpecError::NoTrunk);
        let mut bad = s.clone();
        bad.max_cps = 0.0;
        assert_eq!(bad.validate().unwrap_err(), SpecError::Cps);
        let mut bad = s.clone();
        bad.windows.as_mut().unwrap().time_zone = "Nowhere/City".into();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "windows: unknown time zone `Nowhere/City`"
        );
        assert!(toml::from_str::<CampaignSpec>("name='x'\ntrunks=['a']\nmax_cpss=1").is_err());
    }
}
