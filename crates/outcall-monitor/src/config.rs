//! The monitor's configuration (TOML), every field defaulted: an empty file gives the five
//! built-in rules sampled every 15 s and no notifier.
//!
//! ```toml
//! interval_secs = 15
//!
//! [[rules]]
//! kind = "call_failure_rate"   # name defaults to the kind
//! threshold = 0.05             # ratios are fractions: 0.05 = 5 %
//! window_secs = 300
//! for_secs = 60
//!
//! [[notifiers]]
//! kind = "webhook"
//! url = "https://oapi.dingtalk.com/robot/send?access_token=..."
//! format = "dingtalk"
//! secret_env = "OUTCALL_DINGTALK_SECRET"
//!
//! [[notifiers]]
//! kind = "smtp"
//! host = "smtp.example.com"
//! username = "alerts@example.com"
//! password_env = "OUTCALL_SMTP_PASSWORD"
//! from = "Outcall <alerts@example.com>"
//! to = ["oncall@example.com"]
//! min_severity = "critical"
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use outcall_domain::Outcome;
use serde::{Deserialize, Serialize};

/// A configuration that cannot be used, with a message an operator can act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("monitor config: {0}")]
    Parse(String),
    #[error("monitor config: {0}")]
    Invalid(String),
    #[error("monitor config: {0}")]
    Secret(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// How urgent an alert is; notifiers can ask for a minimum.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Failed calls over all calls in the window (`outcall_calls_total`).
    CallFailureRate,
    /// The 99th percentile of API request durations over the window (all routes together).
    ApiP99Latency,
    /// 5xx responses over all API responses in the window.
    #[serde(rename = "http_5xx_rate")]
    Http5xxRate,
    /// Per trunk: the share of failed calls in the window (1.0 = every call failed).
    TrunkDown,
    /// Due tasks grew over the window and the oldest due task is old.
    QueueBacklog,
}

impl RuleKind {
    pub const ALL: [RuleKind; 5] = [
        RuleKind::CallFailureRate,
        RuleKind::ApiP99Latency,
        RuleKind::Http5xxRate,
        RuleKind::TrunkDown,
        RuleKind::QueueBacklog,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::CallFailureRate => "call_failure_rate",
            RuleKind::ApiP99Latency => "api_p99_latency",
            RuleKind::Http5xxRate => "http_5xx_rate",
            RuleKind::TrunkDown => "trunk_down",
            RuleKind::QueueBacklog => "queue_backlog",
        }
    }

    fn default_threshold(&self) -> f64 {
        match self {
            RuleKind::CallFailureRate => 0.05,
            RuleKind::ApiP99Latency => 1.0,
            RuleKind::Http5xxRate => 0.005,
            RuleKind::TrunkDown => 1.0,
            RuleKind::QueueBacklog => 0.0,
        }
    }

    fn default_window_secs(&self) -> f64 {
        match self {
            RuleKind::TrunkDown => 120.0,
            RuleKind::QueueBacklog => 600.0,
            _ => 300.0,
        }
    }

    fn counts_calls(&self) -> bool {
        matches!(self, RuleKind::CallFailureRate | RuleKind::TrunkDown)
    }

    fn counts_requests(&self) -> bool {
        matches!(self, RuleKind::ApiP99Latency | RuleKind::Http5xxRate)
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcomes counted as failures by default (the network's fault, not the number's).
pub const DEFAULT_FAILURE_OUTCOMES: &[&str] = &["congestion", "trunk_error", "failed"];
/// Default `for_secs` of every rule.
pub const DEFAULT_FOR_SECS: f64 = 60.0;
pub const DEFAULT_INTERVAL_SECS: f64 = 15.0;
pub const DEFAULT_MIN_CALLS: u64 = 20;
pub const DEFAULT_TRUNK_MIN_CALLS: u64 = 5;
pub const DEFAULT_MIN_REQUESTS: u64 = 20;
pub const DEFAULT_MIN_AGE_SECS: f64 = 300.0;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often to sample the metrics and evaluate the rules, in seconds (fractions allowed,
    /// down to 0.05, which tests use).
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// The rules; none means the built-in set ([`MonitorConfig::effective_rules`]).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub notifiers: Vec<NotifierConfig>,
}

fn default_interval() -> f64 {
    DEFAULT_INTERVAL_SECS
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval_secs: DEFAULT_INTERVAL_SECS,
            rules: Vec::new(),
            notifiers: Vec::new(),
        }
    }
}

/// One `[[rules]]` entry as written; unset fields take the kind's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, the `alertname` of notifications; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    pub kind: RuleKind,
    #[serde(default)]
    pub severity: Severity,
    /// Fractions for the ratio kinds (0.05 = 5 %), seconds for `api_p99_latency`, tasks for
    /// `queue_backlog`.
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub window_secs: Option<f64>,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_secs: Option<f64>,
    /// How long the condition must be false before a firing alert resolves; defaults to
    /// max(for_secs, 60).
    #[serde(default)]
    pub resolve_for_secs: Option<f64>,
    /// `call_failure_rate` and `trunk_down`: fewer calls in the window is "not enough data".
    #[serde(default)]
    pub min_calls: Option<u64>,
    /// `api_p99_latency` and `http_5xx_rate`: fewer requests in the window is "not enough data".
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// `call_failure_rate` and `trunk_down`: the outcomes counted as failures.
    #[serde(default)]
    pub outcomes: Option<Vec<String>>,
    /// `queue_backlog`: the oldest due task must be at least this old.
    #[serde(default)]
    pub min_age_secs: Option<f64>,
}

impl RuleConfig {
    /// A rule of a kind with every default.
    pub fn of_kind(kind: RuleKind) -> Self {
        Self {
            name: None,
            kind,
            severity: Severity::Warning,
            threshold: None,
            window_secs: None,
            for_secs: None,
            resolve_for_secs: None,
            min_calls: None,
            min_requests: None,
            outcomes: None,
            min_age_secs: None,
        }
    }

    /// The rule with its defaults filled in.
    pub fn resolve(&self) -> Rule {
        let kind = self.kind;
        let for_secs = self.for_secs.unwrap_or(DEFAULT_FOR_SECS);
        Rule {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| kind.as_str().to_string()),
            kind,
            severity: self.severity,
            threshold: self.threshold.unwrap_or(kind.default_threshold()),
            window_secs: self.window_secs.unwrap_or(kind.default_window_secs()),
            for_secs,
            resolve_for_secs: self.resolve_for_secs.unwrap_or(for_secs.max(60.0)),
            min_count: match kind {
                RuleKind::CallFailureRate => self.min_calls.unwrap_or(DEFAULT_MIN_CALLS),
                RuleKind::TrunkDown => self.min_calls.unwrap_or(DEFAULT_TRUNK_MIN_CALLS),
                RuleKind::ApiP99Latency | RuleKind::Http5xxRate => {
                    self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS)
                }
                RuleKind::QueueBacklog => 0,
            },
            outcomes: if kind.counts_calls() {
                self.outcomes.clone().unwrap_or_else(|| {
                    DEFAULT_FAILURE_OUTCOMES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                })
            } else {
                Vec::new()
            },
            min_age_secs: self.min_age_secs.unwrap_or(DEFAULT_MIN_AGE_SECS),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let r = self.resolve();
        let at = format!("rule `{}` ({})", r.name, r.kind);
        if r.name.trim().is_empty() {
            return Err(invalid(format!("{at}: `name` is empty")));
        }
        let secs = |field: &str, v: f64, positive: bool| {
            if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
                Err(invalid(format!(
                    "{at}: `{field}` = {v} must be a {} number of seconds",
                    if positive { "positive" } else { "non-negative" }
                )))
            } else {
                Ok(())
            }
        };
        secs("window_secs", r.window_secs, true)?;
        secs("for_secs", r.for_secs, false)?;
        secs("resolve_for_secs", r.resolve_for_secs, false)?;
        secs("min_age_secs", r.min_age_secs, false)?;
        let t = r.threshold;
        let range_ok = t.is_finite()
            && match r.kind {
                RuleKind::CallFailureRate | RuleKind::Http5xxRate => (0.0..1.0).contains(&t),
                RuleKind::TrunkDown => t > 0.0 && t <= 1.0,
                RuleKind::ApiP99Latency => t > 0.0,
                RuleKind::QueueBacklog => t >= 0.0,
            };
        if !range_ok {
            let expected = match r.kind {
                RuleKind::CallFailureRate | RuleKind::Http5xxRate => {
                    "a fraction in [0, 1) (0.05 = 5 %)"
                }
                RuleKind::TrunkDown => "a fraction in (0, 1] (1.0 = every call failed)",
                RuleKind::ApiP99Latency => "a positive number of seconds",
                RuleKind::QueueBacklog => "a non-negative number of tasks",
            };
            return Err(invalid(format!(
                "{at}: `threshold` = {t} is out of range, expected {expected}"
            )));
        }
        let misplaced = |field: &str, set: bool, allowed: bool| {
            if set && !allowed {
                Err(invalid(format!(
                    "{at}: `{field}` does not apply to this kind"
                )))
            } else {
                Ok(())
            }
        };
        misplaced("min_calls", self.min_calls.is_some(), r.kind.counts_calls())?;
        misplaced("outcomes", self.outcomes.is_some(), r.kind.counts_calls())?;
        misplaced(
            "min_requests",
            self.min_requests.is_some(),
            r.kind.counts_requests(),
        )?;
        misplaced(
            "min_age_secs",
            self.min_age_secs.is_some(),
            r.kind == RuleKind::QueueBacklog,
        )?;
        if let Some(outcomes) = &self.outcomes {
            if outcomes.is_empty() {
                return Err(invalid(format!("{at}: `outcomes` is empty")));
            }
            for o in outcomes {
                o.parse::<Outcome>()
                    .map_err(|e| invalid(format!("{at}: `outcomes`: {e}")))?;
            }
        }
        Ok(())
    }
}

/// A rule with every default filled in, as the engine evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub threshold: f64,
    pub window_secs: f64,
    pub for_secs: f64,
    pub resolve_for_secs: f64,
    /// Minimum calls (call kinds) or requests (API kinds) in the window; 0 for `queue_backlog`.
    pub min_count: u64,
    /// Failure outcomes (call kinds only).
    pub outcomes: Vec<String>,
    /// `queue_backlog` only.
    pub min_age_secs: f64,
}

/// The format of a webhook's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Alertmanager's webhook payload (version 4).
    #[default]
    Json,
    /// WeCom (企业微信) group robot, markdown message.
    Wecom,
    /// DingTalk (钉钉) group robot, markdown message, optionally signed.
    Dingtalk,
}

impl WebhookFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookFormat::Json => "webhook",
            WebhookFormat::Wecom => "wecom",
            WebhookFormat::Dingtalk => "dingtalk",
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or network).
    None,
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server lacks it.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// One `[[notifiers]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifierConfig {
    Webhook(WebhookConfig),
    Smtp(SmtpConfig),
}

impl NotifierConfig {
    pub fn min_severity(&self) -> Severity {
        match self {
            NotifierConfig::Webhook(w) => w.min_severity,
            NotifierConfig::Smtp(s) => s.min_severity,
        }
    }
}

fn default_timeout() -> f64 {
    10.0
}

fn default_min_severity() -> Severity {
    Severity::Info
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// DingTalk signing secret, from this environment variable.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// DingTalk signing secret, from this file (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Refused: a secret is never written in the file.
    #[serde(default, skip_serializing)]
    pub secret: Option<toml::Value>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Transitions of lower severity are not sent here.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
}

fn default_smtp_port() -> u16 {
    587
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Refused: a password is never written in the file.
    #[serde(default, skip_serializing)]
    pub password: Option<toml::Value>,
    pub from: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
}

/// Reads a secret from an environment variable or a file (at most one of them).
pub fn read_secret(
    what: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError::Secret(format!(
            "{what}: give either the `_env` or the `_file` setting, not both"
        ))),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(ConfigError::Secret(format!(
                "{what}: environment variable {var} is not set"
            ))),
        },
        (None, Some(path)) => {
            let v = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Secret(format!("{what}: cannot read {}: {e}", path.display()))
            })?;
            let v = v.trim_end_matches(['\r', '\n']).to_string();
            if v.is_empty() {
                return Err(ConfigError::Secret(format!(
                    "{what}: {} is empty",
                    path.display()
                )));
            }
            Ok(Some(v))
        }
        (None, None) => Ok(None),
    }
}

impl MonitorConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Parse(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The rules to evaluate: the configured ones, or the built-in set when none is.
    pub fn effective_rules(&self) -> Vec<Rule> {
        if self.rules.is_empty() {
            RuleKind::ALL
                .iter()
                .map(|k| RuleConfig::of_kind(*k).resolve())
                .collect()
        } else {
            self.rules.iter().map(RuleConfig::resolve).collect()
        }
    }

    /// The sampling interval.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs)
    }

    /// Checks everything that can be checked without the environment (secrets are read when
    /// the notifiers are built).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.interval_secs.is_finite() || self.interval_secs < 0.05 {
            return Err(invalid(format!(
                "`interval_secs` = {} must be at least 0.05",
                self.interval_secs
            )));
        }
        let mut names = HashSet::new();
        for r in &self.rules {
            r.validate()?;
            let name = r.resolve().name;
            if !names.insert(name.clone()) {
                return Err(invalid(format!(
                    "two rules are named `{name}`; give each a unique `name`"
                )));
            }
        }
        for (i, n) in self.notifiers.iter().enumerate() {
            let at = format!("notifier #{}", i + 1);
            match n {
                NotifierConfig::Webhook(w) => validate_webhook(&at, w)?,
                NotifierConfig::Smtp(s) => validate_smtp(&at, s)?,
            }
        }
        Ok(())
    }
}

fn validate_timeout(at: &str, t: f64) -> Result<(), ConfigError> {
    if !t.is_finite() || t <= 0.0 {
        return Err(invalid(format!(
            "{at}: `timeout_secs` = {t} must be positive"
        )));
    }
    Ok(())
}

fn validate_webhook(at: &str, w: &WebhookConfig) -> Result<(), ConfigError> {
    let at = format!("{at} (webhook)");
    let url = reqwest::Url::parse(&w.url)
        .map_err(|e| invalid(format!("{at}: `url` = {:?} is not a URL: {e}", w.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("{at}: `url` must be http or https")));
    }
    if w.secret.is_some() {
        return Err(invalid(format!(
            "{at}: `secret` must not be written in the file; use `secret_env` or `secret_file`"
        )));
    }
    let has_secret = w.secret_env.is_some() || w.secret_file.is_some();
    if w.secret_env.is_some() && w.secret_file.is_some() {
        return Err(invalid(format!(
            "{at}: give either `secret_env` or `secret_file`, not both"
        )));
    }
    if has_secret && w.format != WebhookFormat::Dingtalk {
        return Err(invalid(format!(
            "{at}: a signing secret only applies to format = \"dingtalk\""
        )));
    }
    validate_timeout(&at, w.timeout_secs)
}

fn validate_smtp(at: &str, s: &SmtpConfig) -> Result<(), ConfigError> {
    let at = format!("{at} (smtp)");
    if s.password.is_some() {
        return Err(invalid(format!(
            "{at}: `password` must not be written in the file; use `password_env` or `password_file`"
        )));
    }
    if s.host.trim().is_empty() {
        return Err(invalid(format!("{at}: `host` is empty")));
    }
    if s.port == 0 {
        return Err(invalid(format!("{at}: `port` is 0")));
    }
    if s.to.is_empty() {
        return Err(invalid(format!("{at}: `to` lists no recipient")));
    }
    s.from
        .parse::<lettre::message::Mailbox>()
        .map_err(|e| invalid(format!("{at}: `from` = {:?}: {e}", s.from)))?;
    for to in &s.to {
        to.parse::<lettre::message::Mailbox>()
            .map_err(|e| invalid(format!("{at}: `to` entry {to:?}: {e}")))?;
    }
    let has_password = s.password_env.is_some() || s.password_file.is_some();
    if s.password_env.is_some() && s.password_file.is_some() {
        return Err(invalid(format!(
            "{at}: give either `password_env` or `password_file`, not both"
        )));
    }
    match (&s.username, has_password) {
        (Some(_), false) => {
            return Err(invalid(format!(
                "{at}: `username` needs `password_env` or `password_file`"
            )))
        }
        (None, true) => {
            return Err(invalid(format!(
                "{at}: a password is given without `username`"
            )))
        }
        _ => {}
    }
    validate_timeout(&at, s.timeout_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        MonitorConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_the_built_in_rules() {
        let c = MonitorConfig::from_toml("").unwrap();
        assert_eq!(c, MonitorConfig::default());
        assert_eq!(c.interval_secs, 15.0);
        let rules = c.effective_rules();
        let by = |k: RuleKind| rules.iter().find(|r| r.kind == k).unwrap().clone();
        assert_eq!(rules.len(), 5);

        let f = by(RuleKind::CallFailureRate);
        assert_eq!(f.name, "call_failure_rate");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            (f.threshold, f.window_secs, f.for_secs, f.min_count),
            (0.05, 300.0, 60.0, 20)
        );
        assert_eq!(f.resolve_for_secs, 60.0);
        assert_eq!(f.outcomes, ["congestion", "trunk_error", "failed"]);

        let p = by(RuleKind::ApiP99Latency);
        assert_eq!((p.threshold, p.window_secs, p.min_count), (1.0, 300.0, 20));
        let h = by(RuleKind::Http5xxRate);
        assert_eq!(
            (h.threshold, h.window_secs, h.min_count),
            (0.005, 300.0, 20)
        );
        let t = by(RuleKind::TrunkDown);
        assert_eq!((t.threshold, t.window_secs, t.min_count), (1.0, 120.0, 5));
        assert_eq!(t.outcomes, ["congestion", "trunk_error", "failed"]);
        let q = by(RuleKind::QueueBacklog);
        assert_eq!(
            (q.threshold, q.window_secs, q.min_age_secs),
            (0.0, 600.0, 300.0)
        );
    }

    #[test]
    fn configured_rules_replace_the_built_in_set_and_keep_kind_defaults() {
        let c = MonitorConfig::from_toml(
            r#"
            interval_secs = 0.5
            [[rules]]
            name = "carrier failures"
            kind = "call_failure_rate"
            severity = "critical"
            threshold = 0.2
            for_secs = 120
            outcomes = ["busy", "failed"]
            "#,
        )
        .unwrap();
        assert_eq!(c.interval(), std::time::Duration::from_millis(500));
        let rules = c.effective_rules();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.name, "carrier failures");
        assert_eq!(r.severity, Severity::Critical);
        assert_eq!((r.threshold, r.window_secs, r.min_count), (0.2, 300.0, 20));
        // resolve_for defaults to max(for_secs, 60)
        assert_eq!((r.for_secs, r.resolve_for_secs), (120.0, 120.0));
        assert_eq!(r.outcomes, ["busy", "failed"]);
    }

    #[test]
    fn notifiers_parse_with_defaults() {
        let c = MonitorConfig::from_toml(
            r#"
            [[notifiers]]
            kind = "webhook"
            url = "http://127.0.0.1:9/hook"

            [[notifiers]]
            kind = "webhook"
            url = "https://oapi.dingtalk.com/robot/send?access_token=x"
            format = "dingtalk"
            secret_env = "DING_SECRET"
            min_severity = "critical"

            [[notifiers]]
            kind = "smtp"
            host = "smtp.example.com"
            username = "alerts@example.com"
            password_file = "/run/secrets/smtp"
            from = "Outcall <alerts@example.com>"
            to = ["oncall@example.com", "noc@example.com"]
            "#,
        )
        .unwrap();
        let NotifierConfig::Webhook(w) = &c.notifiers[0] else {
            panic!()
        };
        assert_eq!(w.format, WebhookFormat::Json);
        assert_eq!(w.timeout_secs, 10.0);
        assert_eq!(w.min_severity, Severity::Info);
        assert_eq!(c.notifiers[1].min_severity(), Severity::Critical);
        let NotifierConfig::Smtp(s) = &c.notifiers[2] else {
            panic!()
        };
        assert_eq!((s.port, s.tls), (587, SmtpTls::Starttls));
        assert_eq!(s.to.len(), 2);
    }

    #[test]
    fn invalid_configs_are_refused_with_a_clear_message() {
        let cases: &[(&str, &str)] = &[
            ("[[rules]]\nkind = \"cpu\"", "unknown variant `cpu`"),
            ("colour = 1", "unknown field `colour`"),
            (
                "[[rules]]\nkind = \"trunk_down\"\nwindow = 5",
                "unknown field `window`",
            ),
            (
                "[[rules]]\nkind = \"call_failure_rate\"\nthreshold = 5",
                "`threshold` = 5 is out of range, expected a fraction in [0, 1)",
            ),
            (
                "[[rules]]\nkind = \"api_p99_latency\"\nthreshold = 0",
                "expected a positive number of seconds",
            ),
            (
                "[[rules]]\nkind = \"trunk_down\"\nthreshold = 1.5",
                "expected a fraction in (0, 1]",
            ),
            (
                "[[rules]]\nkind = \"http_5xx_rate\"\nwindow_secs = 0",
                "`window_secs` = 0 must be a positive number of seconds",
            ),
            (
                "[[rules]]\nkind = \"http_5xx_rate\"\nmin_calls = 3",
                "`min_calls` does not apply to this kind",
            ),
            (
                "[[rules]]\nkind = \"trunk_down\"\noutcomes = [\"broken\"]",
                "unknown outcome `broken`",
            ),
            (
                "[[rules]]\nkind = \"trunk_down\"\n[[rules]]\nkind = \"trunk_down\"",
                "two rules are named `trunk_down`",
            ),
            ("interval_secs = 0", "`interval_secs` = 0 must be at least 0.05"),
            (
                "[[rules]]\nkind = \"queue_backlog\"\nseverity = \"page\"",
                "unknown variant `page`",
            ),
            ("[[notifiers]]\nkind = \"pager\"", "unknown variant `pager`"),
            (
                "[[notifiers]]\nkind = \"webhook\"\nurl = \"not a url\"",
                "is not a URL",
            ),
            (
                "[[notifiers]]\nkind = \"webhook\"\nurl = \"ftp://x/\"",
                "must be http or https",
            ),
            (
                "[[notifiers]]\nkind = \"webhook\"\nurl = \"http://x/\"\nsecret_env = \"S\"",
                "only applies to format = \"dingtalk\"",
            ),
            (
                "[[notifiers]]\nkind = \"webhook\"\nurl = \"http://x/\"\nformat = \"dingtalk\"\nsecret = \"s3cr3t\"",
                "`secret` must not be written in the file",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"",
                "`to` lists no recipient",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"\npassword = \"hunter2\"",
                "`password` must not be written in the file",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"",
                "`username` needs `password_env` or `password_file`",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"not an address\"]",
                "`to` entry \"not an address\"",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\ntls = \"ssl\"",
                "unknown variant `ssl`",
            ),
            (
                "[[notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nsmarthost = 1",
                "unknown field `smarthost`",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "SECabc\n").unwrap();
        assert_eq!(
            read_secret("s", None, Some(&path)).unwrap().as_deref(),
            Some("SECabc")
        );
        assert_eq!(read_secret("s", None, None).unwrap(), None);
        let missing = read_secret("dingtalk", Some("OUTCALL_MONITOR_TEST_UNSET_VAR"), None)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("OUTCALL_MONITOR_TEST_UNSET_VAR is not set"),
            "{missing}"
        );
        let gone = read_secret("s", None, Some(&dir.path().join("nope"))).unwrap_err();
        assert!(gone.to_string().contains("cannot read"), "{gone}");
    }
}
