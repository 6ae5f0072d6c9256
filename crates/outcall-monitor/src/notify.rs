//! Notifications: webhooks (Alertmanager-compatible JSON, WeCom and DingTalk group robots) and
//! mail (SMTP). Every send counts in `outcall_alert_notifications_total{channel,result}` with
//! `result` = `sent` or `failed`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use outcall_domain::metrics as m;
use serde_json::{json, Map, Value};

use crate::config::{
    read_secret, ConfigError, NotifierConfig, RuleKind, Severity, SmtpConfig, SmtpTls,
    WebhookConfig, WebhookFormat,
};
use crate::engine::{AlertState, Transition};

/// A notification that could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No connection, a timeout, or a non-2xx answer (after the retries).
    #[error("webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
    /// The robot answered 200 with an error code in the body.
    #[error("webhook {url}: refused with errcode {code}: {message}")]
    Refused {
        url: String,
        code: i64,
        message: String,
    },
    #[error("smtp {host}: {reason}")]
    Smtp { host: String, reason: String },
}

/// Somewhere transitions are sent.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The `channel` label: `webhook`, `wecom`, `dingtalk` or `smtp`.
    fn channel(&self) -> &'static str;

    /// Transitions of lower severity are not sent here.
    fn min_severity(&self) -> Severity;

    /// Delivers one transition.
    async fn send(&self, transition: &Transition) -> Result<(), NotifyError>;

    /// [`Notifier::send`], counted in `outcall_alert_notifications_total`.
    async fn notify(&self, transition: &Transition) -> Result<(), NotifyError> {
        let r = self.send(transition).await;
        let result = if r.is_ok() { "sent" } else { "failed" };
        metrics::counter!(m::ALERT_NOTIFICATIONS_TOTAL, "channel" => self.channel(), "result" => result)
            .increment(1);
        r
    }
}

/// Builds a notifier, reading its secret from the environment or a file.
pub fn build(config: &NotifierConfig) -> Result<Arc<dyn Notifier>, ConfigError> {
    Ok(match config {
        NotifierConfig::Webhook(w) => Arc::new(WebhookNotifier::new(w)?),
        NotifierConfig::Smtp(s) => Arc::new(SmtpNotifier::new(s)?),
    })
}

fn title(t: &Transition) -> String {
    let state = match t.state {
        AlertState::Firing => "[FIRING]",
        AlertState::Resolved => "[RESOLVED]",
    };
    match &t.subject {
        Some(s) => format!("{state} {} {s}", t.rule),
        None => format!("{state} {}", t.rule),
    }
}

/// The labels of an alert: `alertname`, `severity`, and `subject` (and `trunk` for
/// `trunk_down`) when it has one.
pub fn labels(t: &Transition) -> Map<String, Value> {
    let mut l = Map::new();
    l.insert("alertname".into(), t.rule.clone().into());
    l.insert("severity".into(), t.severity.as_str().into());
    l.insert("kind".into(), t.kind.as_str().into());
    if let Some(s) = &t.subject {
        l.insert("subject".into(), s.clone().into());
        if t.kind == RuleKind::TrunkDown {
            l.insert("trunk".into(), s.clone().into());
        }
    }
    l
}

fn fingerprint(labels: &Map<String, Value>) -> String {
    // FNV-1a over the sorted labels, as 16 hex digits like Alertmanager's fingerprints.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k
            .bytes()
            .chain([0xff])
            .chain(v.as_str().unwrap_or_default().bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The body Alertmanager sends to webhook receivers (version 4), with one alert.
pub fn alertmanager_payload(t: &Transition) -> Value {
    let labels = labels(t);
    let annotations = json!({
        "summary": t.summary,
        "value": t.value.to_string(),
        "threshold": t.threshold.to_string(),
    });
    let ends_at = match t.state {
        AlertState::Firing => "0001-01-01T00:00:00Z".to_string(),
        AlertState::Resolved => t.at.to_string(),
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", t.rule),
        "truncatedAlerts": 0,
        "status": t.state.as_str(),
        "receiver": "outcall",
        "groupLabels": { "alertname": t.rule },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": t.state.as_str(),
            "labels": labels,
            "annotations": annotations,
            "startsAt": t.started_at.to_string(),
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": fingerprint(&labels),
        }],
    })
}

fn plain_lines(t: &Transition) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("alert", t.rule.clone()),
        ("state", t.state.as_str().to_string()),
        ("severity", t.severity.as_str().to_string()),
    ];
    if let Some(s) = &t.subject {
        v.push(("subject", s.clone()));
    }
    v.push(("summary", t.summary.clone()));
    v.push(("value", format!("{} (threshold {})", t.value, t.threshold)));
    v.push(("started", t.started_at.to_string()));
    if t.state == AlertState::Resolved {
        v.push(("resolved", t.at.to_string()));
    }
    v
}

/// The WeCom group robot body (markdown).
pub fn wecom_body(t: &Transition) -> Value {
    let colour = match t.state {
        AlertState::Firing => "warning",
        AlertState::Resolved => "info",
    };
    let mut content = format!("**<font color=\"{colour}\">{}</font>**\n", title(t));
    for (k, v) in plain_lines(t).into_iter().skip(1) {
        content.push_str(&format!("> {k}: {v}\n"));
    }
    json!({ "msgtype": "markdown", "markdown": { "content": content } })
}

/// The DingTalk group robot body (markdown).
pub fn dingtalk_body(t: &Transition) -> Value {
    let title = title(t);
    let mut text = format!("### {title}\n\n");
    for (k, v) in plain_lines(t).into_iter().skip(1) {
        text.push_str(&format!("- **{k}**: {v}\n"));
    }
    json!({ "msgtype": "markdown", "markdown": { "title": title, "text": text } })
}

/// DingTalk's signature: base64(HMAC-SHA256(secret, "{timestamp}\n{secret}")), timestamp in
/// milliseconds (sent URL-encoded as the `sign` query parameter).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts to a webhook in one of the three formats; 3 tries on connection errors, timeouts,
/// 429 and 5xx (0.25 s and 1 s apart).
pub struct WebhookNotifier {
    url: reqwest::Url,
    format: WebhookFormat,
    secret: Option<String>,
    client: reqwest::Client,
    min_severity: Severity,
    backoff: [Duration; 2],
}

impl WebhookNotifier {
    pub fn new(c: &WebhookConfig) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(&c.url)
            .map_err(|e| ConfigError::Invalid(format!("webhook url {:?}: {e}", c.url)))?;
        let secret = read_secret(
            "dingtalk secret",
            c.secret_env.as_deref(),
            c.secret_file.as_deref(),
        )?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(c.timeout_secs))
            .user_agent(concat!("outcall-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("webhook client: {e}")))?;
        Ok(Self {
            url,
            format: c.format,
            secret,
            client,
            min_severity: c.min_severity,
            backoff: [Duration::from_millis(250), Duration::from_secs(1)],
        })
    }

    fn body(&self, t: &Transition) -> Value {
        match self.format {
            WebhookFormat::Json => alertmanager_payload(t),
            WebhookFormat::Wecom => wecom_body(t),
            WebhookFormat::Dingtalk => dingtalk_body(t),
        }
    }

    /// The URL without its query (which may hold a robot's access token), for errors and logs.
    fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.to_string()
    }

    fn request_url(&self) -> reqwest::Url {
        let mut url = self.url.clone();
        if let Some(secret) = &self.secret {
            let ts = jiff::Timestamp::now().as_millisecond();
            url.query_pairs_mut()
                .append_pair("timestamp", &ts.to_string())
                .append_pair("sign", &dingtalk_sign(secret, ts));
        }
        url
    }

    async fn try_once(&self, body: &Value) -> Result<(), (bool, NotifyError)> {
        let err = |retry: bool, reason: String| {
            (
                retry,
                NotifyError::Webhook {
                    url: self.shown_url(),
                    reason,
                },
            )
        };
        let res = self
            .client
            .post(self.request_url())
            .json(body)
            .send()
            .await
            .map_err(|e| err(true, format!("{e}")))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            let retry = status.is_server_error() || status.as_u16() == 429;
            let snippet: String = text.chars().take(200).collect();
            return Err(err(retry, format!("status {status}: {snippet}")));
        }
        if self.format != WebhookFormat::Json {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let code = v.get("errcode").and_then(Value::as_i64).unwrap_or(0);
                if code != 0 {
                    let message = v
                        .get("errmsg")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    return Err((
                        false,
                        NotifyError::Refused {
                            url: self.shown_url(),
                            code,
                            message,
                        },
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self) -> &'static str {
        self.format.as_str()
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }

    async fn send(&self, t: &Transition) -> Result<(), NotifyError> {
        let body = self.body(t);
        let mut tries = 0;
        loop {
            match self.try_once(&body).await {
                Ok(()) => return Ok(()),
                Err((retry, e)) => {
                    if !retry || tries == self.backoff.len() {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, try_ = tries + 1, "alert webhook failed, retrying");
                    tokio::time::sleep(self.backoff[tries]).await;
                    tries += 1;
                }
            }
        }
    }
}

/// Sends plain-text mail through an SMTP server (one try; mail servers queue themselves).
pub struct SmtpNotifier {
    host: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    min_severity: Severity,
}

impl SmtpNotifier {
    pub fn new(c: &SmtpConfig) -> Result<Self, ConfigError> {
        let bad = |e: String| ConfigError::Invalid(format!("smtp {}: {e}", c.host));
        let builder = match c.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| bad(e.to_string()))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| bad(e.to_string()))?,
        };
        let mut builder = builder
            .port(c.port)
            .timeout(Some(Duration::from_secs_f64(c.timeout_secs)));
        let password = read_secret(
            "smtp password",
            c.password_env.as_deref(),
            c.password_file.as_deref(),
        )?;
        if let (Some(user), Some(password)) = (&c.username, password) {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from = c
            .from
            .parse()
            .map_err(|e| bad(format!("from {:?}: {e}", c.from)))?;
        let to =
            c.to.iter()
                .map(|a| a.parse().map_err(|e| bad(format!("to {a:?}: {e}"))))
                .collect::<Result<_, _>>()?;
        Ok(Self {
            host: c.host.clone(),
            transport: builder.build(),
            from,
            to,
            min_severity: c.min_severity,
        })
    }
}

/// The subject of an alert mail: `[FIRING] <rule> [<subject>]: <summary>`.
pub fn mail_subject(t: &Transition) -> String {
    format!("{}: {}", title(t), t.summary)
}

/// The plain-text body of an alert mail.
pub fn mail_body(t: &Transition) -> String {
    let mut body = String::new();
    for (k, v) in plain_lines(t) {
        body.push_str(&format!("{:<10}{v}\n", format!("{k}:")));
    }
    body
}

#[async_trait]
impl Notifier for SmtpNotifier {
    fn channel(&self) -> &'static str {
        "smtp"
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }

    async fn send(&self, t: &Transition) -> Result<(), NotifyError> {
        let err = |reason: String| NotifyError::Smtp {
            host: self.host.clone(),
            reason,
        };
        let mut msg = Message::builder()
            .from(self.from.clone())
            .subject(mail_subject(t))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        let msg = msg.body(mail_body(t)).map_err(|e| err(e.to_string()))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn transition(state: AlertState) -> Transition {
        Transition {
            rule: "trunk_down".into(),
            kind: RuleKind::TrunkDown,
            severity: Severity::Critical,
            subject: Some("carrier-a".into()),
            state,
            value: 1.0,
            threshold: 1.0,
            started_at: Timestamp::from_second(1_700_000_000).unwrap(),
            at: Timestamp::from_second(1_700_000_300).unwrap(),
            summary: "trunk carrier-a: 14 of 14 calls failed (100.0 %) over 2m".into(),
        }
    }

    #[test]
    fn alertmanager_payload_has_the_v4_shape() {
        let p = alertmanager_payload(&transition(AlertState::Firing));
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        let a = &p["alerts"][0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["labels"]["alertname"], "trunk_down");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["trunk"], "carrier-a");
        assert_eq!(a["labels"]["subject"], "carrier-a");
        assert_eq!(
            a["annotations"]["summary"],
            "trunk carrier-a: 14 of 14 calls failed (100.0 %) over 2m"
        );
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
        let r = alertmanager_payload(&transition(AlertState::Resolved));
        assert_eq!(r["status"], "resolved");
        assert_eq!(r["alerts"][0]["endsAt"], "2023-11-14T22:18:20Z");
        // The same alert keeps its fingerprint from firing to resolved.
        assert_eq!(r["alerts"][0]["fingerprint"], a["fingerprint"]);
    }

    #[test]
    fn robot_bodies_are_markdown_messages() {
        let w = wecom_body(&transition(AlertState::Firing));
        assert_eq!(w["msgtype"], "markdown");
        let content = w["markdown"]["content"].as_str().unwrap();
        assert!(
            content
                .starts_with("**<font color=\"warning\">[FIRING] trunk_down carrier-a</font>**\n"),
            "{content}"
        );
        assert!(content.contains("> summary: trunk carrier-a: 14 of 14 calls failed"));
        let d = dingtalk_body(&transition(AlertState::Resolved));
        assert_eq!(d["msgtype"], "markdown");
        assert_eq!(d["markdown"]["title"], "[RESOLVED] trunk_down carrier-a");
        let text = d["markdown"]["text"].as_str().unwrap();
        assert!(text.starts_with("### [RESOLVED] trunk_down carrier-a\n"));
        assert!(
            text.contains("- **resolved**: 2023-11-14T22:18:20Z"),
            "{text}"
        );
    }

    #[test]
    fn dingtalk_signature_matches_the_documented_algorithm() {
        // Python: base64.b64encode(hmac.new(b"SECabc", b"1700000000000\nSECabc",
        //         hashlib.sha256).digest())
        assert_eq!(
            dingtalk_sign("SECabc", 1_700_000_000_000),
            "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM="
        );
    }

    #[test]
    fn mail_subject_and_body() {
        let t = transition(AlertState::Firing);
        assert_eq!(
            mail_subject(&t),
            "[FIRING] trunk_down carrier-a: trunk carrier-a: 14 of 14 calls failed (100.0 %) over 2m"
        );
        let body = mail_body(&t);
        assert!(
            body.starts_with("alert:    trunk_down\nstate:    firing\n"),
            "{body}"
        );
        assert!(body.contains("severity: critical\n"));
        assert!(!body.contains("resolved:"));
    }
}
