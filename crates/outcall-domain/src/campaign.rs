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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub delay_secs: u64,
    pub retries: u32,
}

/// What to do after each outcome. Outcomes without a rule are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max_calls: u32,
    pub per_secs: u64,
}

/// What happens once a call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AfterPrompt {
    #[default]
    Hangup,
    Stay,
}

/// A campaign as the operator writes it (TOML file or API body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    /// Trunk names, tried in order of their free capacity.
    pub trunks: Vec<String>,
    /// Caller IDs to rotate; empty uses the trunk's.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// A named caller-ID pool (`/v1/caller-id-pools`) whose numbers are rotated instead of
    /// `caller_ids` (give one or the other). The scheduler reads the pool when it loads the
    /// campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id_pool: Option<String>,
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
    /// Where to POST call status events (initiated, ringing, answered, completed), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<StatusCallback>,
}

/// A call status event a campaign can send to its status callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatusEventKind {
    /// The call was handed to the dialer (the INVITE is about to leave).
    Initiated,
    /// The callee's phone rings (18x) or the network plays early media.
    Ringing,
    /// The callee answered (2xx).
    Answered,
    /// The attempt is recorded with its outcome (dialed or not).
    Completed,
}

impl StatusEventKind {
    pub const ALL: [StatusEventKind; 4] = [
        StatusEventKind::Initiated,
        StatusEventKind::Ringing,
        StatusEventKind::Answered,
        StatusEventKind::Completed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StatusEventKind::Initiated => "initiated",
            StatusEventKind::Ringing => "ringing",
            StatusEventKind::Answered => "answered",
            StatusEventKind::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<StatusEventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for StatusEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A campaign's status webhook: which events to POST, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusCallback {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The events to send; all four when absent.
    #[serde(default = "all_status_events")]
    pub events: Vec<StatusEventKind>,
}

fn all_status_events() -> Vec<StatusEventKind> {
    StatusEventKind::ALL.to_vec()
}

impl StatusCallback {
    /// Whether events of this kind are sent.
    pub fn wants(&self, kind: StatusEventKind) -> bool {
        self.events.contains(&kind)
    }

    /// Checks the URL (scheme, host, port, no credentials, no blanks) and the event list.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |why: &str| SpecError::StatusCallback(why.to_string());
        let url = self.url.as_str();
        if url.len() > 2048 {
            return Err(bad("url is longer than 2048 characters"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("url must not contain blanks or control characters"));
        }
        let lower = url.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &url[7..]
        } else if lower.starts_with("https://") {
            &url[8..]
        } else {
            return Err(bad("url must start with http:// or https://"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(bad(
                "url must not carry credentials (verify the Outcall-Signature header instead)",
            ));
        }
        let port = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("url has an invalid IPv6 host"))?;
                if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return Err(bad("url has an invalid IPv6 host"));
                }
                match after {
                    "" => None,
                    p => Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("url has an invalid port"))?,
                    ),
                }
            }
            None => {
                let (h, p) = match authority.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                };
                if h.is_empty() {
                    return Err(bad("url has no host"));
                }
                if !h
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
                {
                    return Err(bad("url has an invalid host"));
                }
                p
            }
        };
        if let Some(p) = port {
            if !matches!(p.parse::<u16>(), Ok(n) if n > 0) {
                return Err(bad("url has an invalid port"));
            }
        }
        if self.events.is_empty() {
            return Err(bad(
                "events must name at least one of initiated, ringing, answered, completed",
            ));
        }
        Ok(())
    }
}

/// Import filters on a number's attribution (号码归属地).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[error("status_callback: {0}")]
    StatusCallback(String),
    #[error("caller_id_pool: {0}")]
    CallerIdPool(String),
}

/// Checks a caller-ID pool's name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it appears
/// in URLs as is).
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("a pool name is 1 to 64 letters, digits, `.`, `_` or `-`".into());
    }
    Ok(())
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
        if let Some(cb) = &self.status_callback {
            cb.validate()?;
        }
        if let Some(pool) = &self.caller_id_pool {
            check_pool_name(pool).map_err(SpecError::CallerIdPool)?;
            if !self.caller_ids.is_empty() {
                return Err(SpecError::CallerIdPool(
                    "give caller_ids or caller_id_pool, not both (set caller_ids to [])".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Campaign {
    pub id: CampaignId,
    pub status: CampaignStatus,
    #[serde(flatten)]
    pub spec: CampaignSpec,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
}

/// Name prefix of the one-contact campaigns that single calls (`POST /v1/calls`) are.
pub const SINGLE_CALL_PREFIX: &str = "call:";

impl Campaign {
    /// The `campaign` label of its metrics: its id, or `calls` for every single call (one
    /// series for all of them, not one per call).
    pub fn metric_label(&self) -> String {
        if self.spec.name.starts_with(SINGLE_CALL_PREFIX) {
            "calls".into()
        } else {
            self.id.to_string()
        }
    }
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

    #[test]
    fn status_callback_defaults_to_every_event_and_validates_its_url() {
        let s: CampaignSpec = toml::from_str(
            "name = 'x'\ntrunks = ['a']\n[status_callback]\nurl = 'https://hooks.example.com/outcall?k=1'\n",
        )
        .unwrap();
        s.validate().unwrap();
        let cb = s.status_callback.clone().unwrap();
        assert_eq!(cb.events, StatusEventKind::ALL);
        assert!(cb.wants(StatusEventKind::Ringing));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["status_callback"]["events"],
            serde_json::json!(["initiated", "ringing", "answered", "completed"])
        );
        let only: StatusCallback = serde_json::from_value(
            serde_json::json!({ "url": "http://127.0.0.1:9000/cb", "events": ["completed"] }),
        )
        .unwrap();
        assert!(only.wants(StatusEventKind::Completed) && !only.wants(StatusEventKind::Initiated));
        assert!(serde_json::from_value::<StatusCallback>(
            serde_json::json!({ "url": "http://h/", "events": ["hangup"] })
        )
        .is_err());
        for ok in [
            "http://localhost/x",
            "HTTPS://hooks.example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:9000/cb",
        ] {
            let mut s = s.clone();
            s.status_callback.as_mut().unwrap().url = ok.into();
            assert_eq!(s.validate(), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("ftp://h/x", "url must start with http:// or https://"),
            (
                "hooks.example.com/x",
                "url must start with http:// or https://",
            ),
            ("http:///x", "url has no host"),
            ("http://h:0/", "url has an invalid port"),
            ("http://h:99999/", "url has an invalid port"),
            ("http://user:pw@h/", "url must not carry credentials"),
            ("http://h/a b", "url must not contain blanks"),
            ("http://h%2F/", "url has an invalid host"),
        ] {
            let mut s = s.clone();
            s.status_callback.as_mut().unwrap().url = bad.into();
            let e = s.validate().unwrap_err().to_string();
            assert!(
                e.starts_with("status_callback: ") && e.contains(why),
                "{bad}: {e}"
            );
        }
        let mut none = s.clone();
        none.status_callback.as_mut().unwrap().events.clear();
        assert!(none
            .validate()
            .unwrap_err()
            .to_string()
            .contains("events must name at least one"));
    }

    #[test]
    fn caller_id_pool_is_named_well_and_excludes_caller_ids() {
        let mut s: CampaignSpec =
            serde_json::from_value(serde_json::json!({ "name": "x", "trunks": ["a"] })).unwrap();
        assert_eq!(s.caller_id_pool, None);
        assert!(serde_json::to_value(&s)
            .unwrap()
            .get("caller_id_pool")
            .is_none());
        s.caller_id_pool = Some("sales-sh_1.a".into());
        assert_eq!(s.validate(), Ok(()));
        for bad in ["", "a/b", "with space", &"x".repeat(65)] {
            s.caller_id_pool = Some(bad.to_string());
            assert!(
                matches!(s.validate(), Err(SpecError::CallerIdPool(_))),
                "{bad:?}"
            );
        }
        s.caller_id_pool = Some("sales".into());
        s.caller_ids = vec!["02150000001".into()];
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "caller_id_pool: give caller_ids or caller_id_pool, not both (set caller_ids to [])"
        );
    }
}
