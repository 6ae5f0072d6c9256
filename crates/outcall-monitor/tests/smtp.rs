//! Mail through a real SMTP server: Python's aiosmtpd writing a maildir
//! (`python3 -m pip install aiosmtpd==1.4.6`; scripts/test.sh installs it).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use outcall_monitor::notify;
use outcall_monitor::{AlertState, MonitorConfig, RuleKind, Severity, Transition};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts aiosmtpd writing to the maildir `dir`; panics with its output if it cannot run.
async fn start_aiosmtpd(dir: &Path) -> Server {
    let port = free_port();
    let log = dir.with_extension("log");
    let mut child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3 must be installed to run the SMTP test");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "aiosmtpd exited ({status}) before listening; install it with \
                 `python3 -m pip install aiosmtpd==1.4.6`. Its output:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Server { child, port };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "aiosmtpd did not listen on 127.0.0.1:{port} within 20 s. Its output:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Headers (unfolded, by lowercase name) and body of a stored message.
fn parse_mail(raw: &str) -> (Vec<(String, String)>, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let qp = headers.iter().any(|(k, v)| {
        k == "content-transfer-encoding" && v.eq_ignore_ascii_case("quoted-printable")
    });
    let body = if qp {
        body.replace("=\n", "").replace("=3D", "=")
    } else {
        body.to_string()
    };
    (headers, body)
}

#[tokio::test]
async fn a_firing_alert_arrives_as_plain_text_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let server = start_aiosmtpd(&maildir).await;

    let cfg = MonitorConfig::from_toml(&format!(
        r#"
[[notifiers]]
kind = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Outcall alerts <alerts@outcall.test>"
to = ["oncall@outcall.test", "noc@outcall.test"]
"#,
        port = server.port
    ))
    .unwrap();
    let n = notify::build(&cfg.notifiers[0]).unwrap();
    assert_eq!(n.channel(), "smtp");
    let started = Timestamp::from_second(1_700_000_000).unwrap();
    let t = Transition {
        rule: "call_failure_rate".into(),
        kind: RuleKind::CallFailureRate,
        severity: Severity::Critical,
        subject: None,
        state: AlertState::Firing,
        value: 0.38,
        threshold: 0.05,
        started_at: started,
        at: started,
        summary: "call failure rate 38.0 % over 5m > 5.0 % (152 of 400 calls)".into(),
    };
    n.notify(&t).await.expect("aiosmtpd accepts the mail");

    let new = maildir.join("new");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let Some(f) = files.first() {
            assert_eq!(files.len(), 1, "{files:?}");
            break f.clone();
        }
        assert!(Instant::now() < deadline, "no mail in {}", new.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (headers, body) = parse_mail(&std::fs::read_to_string(&file).unwrap());
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
    };
    assert_eq!(
        h("subject"),
        "[FIRING] call_failure_rate: call failure rate 38.0 % over 5m > 5.0 % (152 of 400 calls)"
    );
    assert!(h("from").contains("alerts@outcall.test"), "{}", h("from"));
    assert_eq!(h("x-mailfrom"), "alerts@outcall.test");
    assert_eq!(h("x-rcptto"), "oncall@outcall.test, noc@outcall.test");
    assert!(h("to").contains("oncall@outcall.test") && h("to").contains("noc@outcall.test"));
    assert!(
        h("content-type").starts_with("text/plain"),
        "{}",
        h("content-type")
    );
    assert!(body.contains("alert:    call_failure_rate\n"), "{body}");
    assert!(body.contains("state:    firing\n"), "{body}");
    assert!(body.contains("severity: critical\n"), "{body}");
    assert!(
        body.contains("summary:  call failure rate 38.0 % over 5m > 5.0 % (152 of 400 calls)\n"),
        "{body}"
    );
    assert!(body.contains("started:  2023-11-14T22:13:20Z\n"), "{body}");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error() {
    let port = free_port();
    let cfg = MonitorConfig::from_toml(&format!(
        "[[notifiers]]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 2\nfrom = \"a@outcall.test\"\nto = [\"b@outcall.test\"]"
    ))
    .unwrap();
    let n = notify::build(&cfg.notifiers[0]).unwrap();
    let t = Transition {
        rule: "r".into(),
        kind: RuleKind::QueueBacklog,
        severity: Severity::Warning,
        subject: None,
        state: AlertState::Resolved,
        value: 0.0,
        threshold: 0.0,
        started_at: Timestamp::now(),
        at: Timestamp::now(),
        summary: "s".into(),
    };
    let err = n.notify(&t).await.unwrap_err();
    assert!(err.to_string().starts_with("smtp 127.0.0.1:"), "{err}");
}
