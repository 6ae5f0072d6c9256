//! Trunk and user-agent configuration.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// SIP transport to a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
}

impl std::str::FromStr for SipTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(SipTransport::Udp),
            "tcp" => Ok(SipTransport::Tcp),
            other => Err(format!("transport `{other}` is not one of udp, tcp")),
        }
    }
}

/// A SIP trunk: where INVITEs go and how we authenticate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used in CDRs, metrics and logs.
    pub name: String,
    /// Host of the trunk (Request-URI host).
    pub host: String,
    #[serde(default = "default_sip_port")]
    pub port: u16,
    #[serde(default)]
    pub transport: SipTransport,
    /// Optional outbound proxy `host:port`: requests are sent there, the Request-URI still
    /// names the trunk.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Digest credentials (answered on 401 and 407).
    #[serde(default)]
    pub username: Option<String>,
    /// Prefer `password_env` or `password_file`; a literal password is accepted for tests.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub realm: Option<String>,
    /// Caller IDs to present (From user), used in rotation.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// Also send `P-Asserted-Identity` with the caller ID.
    #[serde(default)]
    pub p_asserted_identity: bool,
    /// Extra headers on every INVITE (`X-Account: 42`).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Prefix added to the dialed number (some carriers want `0` or `+`).
    #[serde(default)]
    pub dial_prefix: String,
    /// How numbers are written in the Request-URI.
    #[serde(default)]
    pub number_format: NumberFormat,
    /// Calls in progress this trunk accepts (campaign pacing also applies).
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Calls per second this trunk accepts.
    #[serde(default)]
    pub max_cps: Option<f64>,
}

/// How an E.164 number is written to the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberFormat {
    /// `+8613812345678`
    #[default]
    E164,
    /// `8613812345678`
    Digits,
    /// `13812345678` for +86 numbers (mobiles as is, landlines with a leading 0); other
    /// countries as digits.
    National,
}

impl NumberFormat {
    /// Writes an E.164 number (`+…`) in this format; other input is returned as it is.
    pub fn format(&self, e164: &str) -> String {
        let Some(digits) = e164.strip_prefix('+') else {
            return e164.to_string();
        };
        match self {
            NumberFormat::E164 => e164.to_string(),
            NumberFormat::Digits => digits.to_string(),
            NumberFormat::National => match digits.strip_prefix("86") {
                Some(n) if n.starts_with('1') && n.len() == 11 => n.to_string(),
                Some(n) => format!("0{n}"),
                None => digits.to_string(),
            },
        }
    }
}

fn default_sip_port() -> u16 {
    5060
}

impl TrunkConfig {
    /// A trunk at `host:port` with default settings.
    pub fn new(name: &str, host: &str, port: u16, transport: SipTransport) -> Self {
        TrunkConfig {
            name: name.to_string(),
            host: host.to_string(),
            port,
            transport,
            outbound_proxy: None,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            realm: None,
            caller_ids: Vec::new(),
            p_asserted_identity: false,
            headers: Vec::new(),
            dial_prefix: String::new(),
            number_format: NumberFormat::E164,
            max_concurrent: None,
            max_cps: None,
        }
    }

    /// The password from the env variable, the file or the literal, in that order.
    pub fn resolve_password(&self) -> Result<Option<String>, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("trunk `{}`: env variable {var} is not set", self.name));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("trunk `{}`: cannot read {}: {e}", self.name, path.display())
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        Ok(self.password.clone())
    }
}

/// Round-robin pool of caller IDs.
#[derive(Debug, Clone, Default)]
pub struct CallerIdPool {
    ids: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

impl CallerIdPool {
    pub fn new(ids: Vec<String>) -> Self {
        CallerIdPool {
            ids: Arc::new(ids),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next caller ID, or `None` for an empty pool.
    pub fn next_id(&self) -> Option<&str> {
        if self.ids.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.ids.len();
        Some(self.ids[i].as_str())
    }
}

/// The local user agent: where it listens and what it advertises.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UaConfig {
    /// Address to bind SIP and RTP sockets to.
    #[serde(default = "default_bind")]
    pub bind_ip: IpAddr,
    /// Address written in Via, Contact and SDP (defaults to `bind_ip`).
    #[serde(default)]
    pub advertise_ip: Option<IpAddr>,
    /// SIP port (0 = any free port).
    #[serde(default)]
    pub sip_port: u16,
    /// Also listen on TCP (needed for TCP trunks).
    #[serde(default = "yes")]
    pub tcp: bool,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// RFC 3261 T1 in ms (Timer B = 64*T1 for INVITEs that get no answer at all).
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    /// How long to wait for the final response after our CANCEL before giving up.
    #[serde(default = "default_cancel_grace")]
    pub cancel_grace_ms: u64,
    /// Node name written in CDRs.
    #[serde(default = "default_node")]
    pub node: String,
}

fn default_bind() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn yes() -> bool {
    true
}
fn default_user_agent() -> String {
    format!("Outcall/{}", env!("CARGO_PKG_VERSION"))
}
fn default_t1() -> u64 {
    500
}
fn default_cancel_grace() -> u64 {
    32_000
}
fn default_node() -> String {
    "local".to_string()
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            bind_ip: default_bind(),
            advertise_ip: None,
            sip_port: 0,
            tcp: true,
            user_agent: default_user_agent(),
            t1_ms: default_t1(),
            cancel_grace_ms: default_cancel_grace(),
            node: default_node(),
        }
    }
}

impl UaConfig {
    pub fn advertised(&self) -> IpAddr {
        self.advertise_ip.unwrap_or(self.bind_ip)
    }
    pub fn cancel_grace(&self) -> Duration {
        Duration::from_millis(self.cancel_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(
            NumberFormat::E164.format("+8613812345678"),
            "+8613812345678"
        );
        assert_eq!(
            NumberFormat::Digits.format("+8613812345678"),
            "8613812345678"
        );
        assert_eq!(
            NumberFormat::National.format("+8613812345678"),
            "13812345678"
        );
        assert_eq!(
            NumberFormat::National.format("+8675512345678"),
            "075512345678"
        );
        assert_eq!(NumberFormat::National.format("+12125550100"), "12125550100");
        assert_eq!(NumberFormat::National.format("10086"), "10086");
    }

    #[test]
    fn caller_ids_rotate() {
        let p = CallerIdPool::new(vec!["1".into(), "2".into(), "3".into()]);
        let got: Vec<_> = (0..5).map(|_| p.next_id().unwrap().to_string()).collect();
        assert_eq!(got, ["1", "2", "3", "1", "2"]);
        assert_eq!(CallerIdPool::default().next_id(), None);
    }

    #[test]
    fn password_comes_from_env_then_file_then_literal() {
        let mut t = TrunkConfig::new("t", "127.0.0.1", 5060, SipTransport::Udp);
        t.password = Some("lit".into());
        assert_eq!(t.resolve_password().unwrap().as_deref(), Some("lit"));
        let dir = std::env::temp_dir().join(format!("outcall-pw-{}", std::process::id()));
        std::fs::write(&dir, "fromfile\nignored").unwrap();
        t.password_file = Some(dir.clone());
        assert_eq!(t.resolve_password().unwrap().as_deref(), Some("fromfile"));
        t.password_env = Some("OUTCALL_TEST_SURELY_UNSET_VAR".into());
        assert!(t.resolve_password().unwrap_err().contains("not set"));
        std::fs::remove_file(dir).ok();
        assert!("sctp"
            .parse::<SipTransport>()
            .unwrap_err()
            .contains("udp, tcp"));
    }
}
