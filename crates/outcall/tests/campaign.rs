//! Campaigns end to end: the `outcall` binary on embedded SQLite against a SIPp carrier whose
//! scenario (`tests/sipp/uas_mix.xml`) answers by the dialed number's last digit: 0-5 answer,
//! 6-7 busy, 8 rings until our CANCEL, 9 is an empty number (404, Q.850 1).
#![allow(clippy::disallowed_methods)] // plain threads here: no tokio runtime to block

use outcall_testkit::{free_port, start_sipp, start_sipp_at, SippProcess, Transport};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outcall")
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIPp carrier with a message trace (to count the INVITEs it really received).
fn carrier(dir: &Path) -> SippProcess {
    let log = dir.join("sipp_messages.log");
    let log = log.to_string_lossy();
    start_sipp(
        "uas_mix.xml",
        Transport::Udp,
        &["-trace_msg", "-message_file", &log],
        dir,
    )
}

/// Distinct Call-IDs of the INVITEs SIPp received.
fn invites_seen(dir: &Path) -> HashSet<String> {
    let log = std::fs::read_to_string(dir.join("sipp_messages.log")).unwrap_or_default();
    let mut ids = HashSet::new();
    for chunk in log.split("message received") {
        let body: Vec<&str> = chunk
            .lines()
            .skip_while(|l| {
                !l.starts_with("INVITE ")
                    && !l.starts_with("SIP/2.0")
                    && !l.starts_with("ACK")
                    && !l.starts_with("BYE")
                    && !l.starts_with("CANCEL")
            })
            .collect();
        if body.first().is_some_and(|l| l.starts_with("INVITE ")) {
            if let Some(id) = body.iter().find_map(|l| l.strip_prefix("Call-ID:")) {
                ids.insert(id.trim().to_string());
            }
        }
    }
    ids
}

fn numbers(n: u32) -> String {
    let mut s = String::from("number,name\n");
    for i in 0..n {
        s.push_str(&format!("138{i:08},Customer {i}\n"));
    }
    s
}

fn campaign_json(busy_delay: u64) -> Value {
    serde_json::json!({
        "name": "e2e",
        "trunks": ["sipp"],
        "max_concurrent": 20,
        "max_cps": 60,
        "ring_timeout_secs": 1,
        "max_duration_secs": 1,
        "retry": { "max_attempts": 5, "rules": {
            "busy": { "delay_secs": busy_delay, "retries": 2 },
            "no_answer": { "delay_secs": 2, "retries": 1 },
            "failed": { "delay_secs": 1, "retries": 3 } } }
    })
}

/// The expected final outcomes for `n` numbers `138000000NN`.
fn expected(n: u32) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        let o = match i % 10 {
            0..=5 => "answered_human",
            6 | 7 => "busy",
            8 => "no_answer",
            _ => "empty_number",
        };
        *m.entry(o.to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn campaign_run_finishes_with_the_carrier_outcomes_and_retries_busy_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut sipp = carrier(dir.path());
    let port = sipp.port;
    let campaign = format!(
        r#"
[[trunks]]
name = "sipp"
host = "127.0.0.1"
port = {port}

[campaign]
name = "e2e run"
trunks = ["sipp"]
max_concurrent = 30
max_cps = 80
ring_timeout_secs = 1
max_duration_secs = 1
[campaign.retry]
max_attempts = 5
rules = {{ busy = {{ delay_secs = 3, retries = 2 }}, no_answer = {{ delay_secs = 2, retries = 1 }} }}
"#
    );
    std::fs::write(dir.path().join("campaign.toml"), campaign).unwrap();
    std::fs::write(dir.path().join("numbers.csv"), numbers(300)).unwrap();
    let out = Command::new(bin())
        .args(["campaign", "run", "--file"])
        .arg(dir.path().join("campaign.toml"))
        .arg("--contacts")
        .arg(dir.path().join("numbers.csv"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("OUTCALL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("completed"), "{stdout}");
    for (o, n) in expected(300) {
        assert!(
            stdout.contains(&format!("| {o} | {n} |")),
            "final {o}={n} in\n{stdout}"
        );
    }
    // Busy numbers: first attempt and two retries; no answer: one retry.
    assert!(stdout.contains("| busy | 180 |"), "{stdout}");
    assert!(stdout.contains("| no_answer | 60 |"), "{stdout}");
    assert!(stdout.contains("300 contacts, 450 attempts"), "{stdout}");
    // SIPp saw exactly one INVITE transaction per attempt (stopped first so its trace is whole).
    sipp.stop();
    assert_eq!(invites_seen(dir.path()).len(), 450);

    // The store now answers through `outcall serve` on the same data dir: busy retries were
    // spaced by at least their 3 s delay.
    let api = free_port();
    let _serve = serve(&dir.path().join("data"), None, api);
    let attempts = all_attempts(api, 1);
    assert_eq!(attempts.len(), 450);
    let mut by_contact: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
    for a in &attempts {
        let cdr = &a["cdr"];
        by_contact
            .entry(a["contact_id"].as_i64().unwrap())
            .or_default()
            .push((
                cdr["invite_at_ms"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap().into(),
            ));
    }
    let mut checked = 0;
    for tries in by_contact.values().filter(|t| t[0].1 == "busy") {
        assert_eq!(tries.len(), 3);
        for w in tries.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= 3000,
                "busy retry after {} ms",
                w[1].0 - w[0].0
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 60);
    // No clear number in the database or its side files.
    for e in std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .flatten()
    {
        if e.path().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                !bytes.windows(11).any(|w| w == b"13800000012"),
                "{}",
                e.path().display()
            );
        }
    }
}

fn serve(data: &Path, config: Option<&Path>, api: u16) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--data-dir",
    ])
    .arg(data);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.env("OUTCALL_ADMIN_USER", "admin")
        .env("OUTCALL_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

/// The first admin's password, given to `serve` through the environment.
const ADMIN_PASSWORD: &str = "test-admin-password";

/// A session token for the node at `url` (logged in once per port; the token key lives in
/// the data directory, so a token survives restarts).
fn token(url: &str) -> String {
    static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let base: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let mut tokens = TOKENS.lock().unwrap();
    if let Some((_, t)) = tokens.iter().find(|(b, _)| *b == base) {
        return t.clone();
    }
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &format!("{base}/v1/auth/login")])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!(
            r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#
        ))
        .output()
        .expect("curl is installed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("login answers JSON");
    let t = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {v}"))
        .to_string();
    tokens.push((base, t.clone()));
    t
}

fn curl(method: &str, url: &str, body: Option<(&str, &str)>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, url]);
    cmd.args(["-H", &format!("authorization: Bearer {}", token(url))]);
    if let Some((ct, b)) = body {
        cmd.args(["-H", &format!("content-type: {ct}"), "--data-binary", b]);
    }
    let out = cmd.output().expect("curl is installed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{method} {url}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn all_attempts(api: u16, campaign: i64) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = curl(
            "GET",
            &format!(
                "http://127.0.0.1:{api}/v1/campaigns/{campaign}/attempts?after={after}&limit=200"
            ),
            None,
        );
        let list = page["attempts"].as_array().unwrap().clone();
        all.extend(list);
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

fn stats(api: u16, id: i64) -> Value {
    curl(
        "GET",
        &format!("http://127.0.0.1:{api}/v1/campaigns/{id}/stats"),
        None,
    )
}

fn config(dir: &Path, sip_port: u16) -> PathBuf {
    let p = dir.join("outcall.toml");
    std::fs::write(
        &p,
        format!(
            "shutdown_grace_secs = 20\n[ua]\nnode = \"node-a\"\n[[trunks]]\nname = \"sipp\"\nhost = \"127.0.0.1\"\nport = {sip_port}\n"
        ),
    )
    .unwrap();
    p
}

/// Creates and starts a campaign of `n` contacts through the API; returns its id.
fn launch(api: u16, n: u32, busy_delay: u64) -> i64 {
    let base = format!("http://127.0.0.1:{api}/v1/campaigns");
    let c = curl(
        "POST",
        &base,
        Some(("application/json", &campaign_json(busy_delay).to_string())),
    );
    let id = c["id"].as_i64().unwrap_or_else(|| panic!("{c}"));
    let r = curl(
        "POST",
        &format!("{base}/{id}/contacts"),
        Some(("text/csv", &numbers(n))),
    );
    assert_eq!(r["added"], n as u64, "{r}");
    let s = curl("POST", &format!("{base}/{id}/start"), None);
    assert_eq!(s["status"], "running", "{s}");
    id
}

fn wait_for(api: u16, id: i64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = stats(api, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_mid_campaign_then_restart_loses_nothing_and_dials_no_attempt_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sipp = carrier(dir.path());
    let port = sipp.port;
    let cfg = config(dir.path(), port);
    let api = free_port();
    let mut first = serve(&data, Some(&cfg), api);
    let id = launch(api, 200, 2);
    // Let it get going, with calls in flight, then kill -9.
    wait_for(api, id, Duration::from_secs(60), |s| {
        s["attempts"].as_u64().unwrap_or(0) >= 40 && s["live"]["active"].as_u64().unwrap_or(0) >= 5
    });
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    drop(first);
    let _second = serve(&data, Some(&cfg), api);
    let s = wait_for(api, id, Duration::from_secs(120), |s| {
        s["campaign"]["status"] == "completed"
    });
    assert_eq!(s["contacts"]["done"], 200, "{s}");
    assert!(s["contacts"].get("pending").is_none() && s["contacts"].get("dialing").is_none());
    // Every contact ended with the carrier's outcome for its number (retries absorbed restarts).
    let finals: BTreeMap<String, u64> =
        serde_json::from_value(s["final_outcomes"].clone()).unwrap();
    assert_eq!(finals, expected(200), "{s}");

    let attempts = all_attempts(api, id);
    assert_eq!(attempts.len() as u64, s["attempts"].as_u64().unwrap());
    let restarted: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["cause"] == "node_restart")
        .collect();
    assert!(!restarted.is_empty(), "calls were in flight at the kill");
    assert!(restarted
        .iter()
        .all(|a| a["outcome"] == "failed" && a["cdr"].is_null()));
    // No attempt was dialed twice: every CDR has its own Call-ID, SIPp saw each of them once,
    // and SIPp saw no INVITE beyond one per attempt.
    let cdr_ids: Vec<String> = attempts
        .iter()
        .filter_map(|a| a["cdr"]["call_id"].as_str().map(str::to_string))
        .collect();
    let unique: HashSet<&String> = cdr_ids.iter().collect();
    assert_eq!(unique.len(), cdr_ids.len(), "a Call-ID was used twice");
    sipp.stop();
    let seen = invites_seen(dir.path());
    assert!(
        cdr_ids.iter().all(|c| seen.contains(c)),
        "every CDR's INVITE reached the carrier"
    );
    assert!(
        seen.len() <= attempts.len(),
        "{} INVITEs for {} attempts",
        seen.len(),
        attempts.len()
    );
    assert!(seen.len() >= cdr_ids.len());
}

#[test]
fn sigterm_drains_calls_in_flight_and_leaves_no_open_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sipp = carrier(dir.path());
    let port = sipp.port;
    let cfg = config(dir.path(), port);
    let api = free_port();
    let mut node = serve(&data, Some(&cfg), api);
    let id = launch(api, 100, 2);
    wait_for(api, id, Duration::from_secs(60), |s| {
        s["live"]["active"].as_u64().unwrap_or(0) >= 5
    });
    let t0 = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    // While calls drain, the API still answers and /readyz says so (load balancers move away).
    let ready = (0..40)
        .map(|_| {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-w",
                    " %{http_code}",
                    &format!("http://127.0.0.1:{api}/readyz"),
                ])
                .output()
                .unwrap();
            std::thread::sleep(Duration::from_millis(25));
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .find(|r| r.contains("draining"))
        .expect("/readyz reports draining");
    assert!(ready.ends_with(" 503"), "{ready}");
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "drained within the grace period"
    );
    drop(node);
    // Restart: nothing was left open, so no attempt is closed as node_restart.
    let _again = serve(&data, Some(&cfg), api);
    wait_for(api, id, Duration::from_secs(120), |s| {
        s["campaign"]["status"] == "completed"
    });
    let attempts = all_attempts(api, id);
    assert!(!attempts.is_empty());
    assert!(
        attempts.iter().all(|a| a["cause"].is_null()),
        "no attempt needed reconciling"
    );
    assert!(
        attempts.iter().all(|a| !a["outcome"].is_null()),
        "every attempt has its outcome"
    );
}

/// `POST /v1/calls` places one call at once through the carrier; a repeat with the same
/// Idempotency-Key is the same call, not a second INVITE.
#[test]
fn single_calls_through_the_api_reach_the_carrier_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sipp = carrier(dir.path());
    let cfg = config(dir.path(), sipp.port);
    let api = free_port();
    let _node = serve(&dir.path().join("data"), Some(&cfg), api);
    let url = format!("http://127.0.0.1:{api}/v1/calls");
    let post = |body: &str, key: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", "POST", &url])
            .args(["-H", &format!("authorization: Bearer {}", token(&url))])
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ]);
        if let Some(k) = key {
            cmd.args(["-H", &format!("idempotency-key: {k}")]);
        }
        let out = cmd.output().unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = post(
        r#"{"to": "13800000001", "trunk": "sipp", "max_duration_secs": 1}"#,
        Some("order-42"),
    );
    // A caller's W3C trace context: the call's CDR carries its trace id.
    let traced = Command::new("curl")
        .args(["-sS", "-X", "POST", &url])
        .args(["-H", &format!("authorization: Bearer {}", token(&url))])
        .args([
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(r#"{"to": "13800000002", "trunk": "sipp", "max_duration_secs": 1}"#)
        .output()
        .unwrap();
    let traced: Value = serde_json::from_slice(&traced.stdout).unwrap();
    assert!(
        first["status"] == "queued" || first["status"] == "in_progress",
        "{first}"
    );
    assert_eq!(first["to"], "+86138****0001");
    let again = post(
        r#"{"to": "13800000001", "trunk": "sipp", "max_duration_secs": 1}"#,
        Some("order-42"),
    );
    assert_eq!(again["id"], first["id"], "same key, same call");
    let busy = post(r#"{"to": "13800000006"}"#, None);
    let bad = post(r#"{"to": "12"}"#, None);
    assert_eq!(bad["error"]["code"], "invalid_request", "{bad}");
    let wait = |id: &Value| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = curl("GET", &format!("{url}/{id}"), None);
            if c["status"] == "completed" {
                return c;
            }
            assert!(Instant::now() < deadline, "not completed: {c}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let answered = wait(&first["id"]);
    assert_eq!(answered["outcome"], "answered_human", "{answered}");
    assert_eq!(answered["cdr"]["sip_status"], 200);
    let busy = wait(&busy["id"]);
    assert_eq!(busy["outcome"], "busy", "{busy}");
    assert_eq!(busy["trunk"], "sipp", "the first trunk by default");
    let traced = wait(&traced["id"]);
    assert_eq!(
        traced["cdr"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let own = answered["cdr"]["trace_id"].as_str().unwrap();
    assert!(own.len() == 32 && own != "4bf92f3577b34da6a3ce929d0e0e4736");
    // Single calls share one `campaign` label in the metrics (no series per call).
    let (_, _, body) = scrape(api, Some(&token(&url)));
    let calls = samples(&body);
    assert_eq!(
        sum(&calls, "outcall_calls_total", &[("campaign", "calls")]),
        3.0
    );
    assert!(calls
        .iter()
        .filter(|(n, _, _)| n == "outcall_calls_total" || n == "outcall_attempts_total")
        .all(|(_, l, _)| l["campaign"] == "calls"));
    // No retry for a single call, and no second INVITE for the repeated request.
    sipp.stop();
    assert_eq!(invites_seen(dir.path()).len(), 3);
}

/// The first admin: from `--admin-user` / `--admin-password-file`, or, with nothing given, a
/// random password in `data_dir/admin-password` (0600). Only on a node without users.
#[test]
fn first_admin_from_the_command_line_or_a_generated_password_file() {
    let login = |api: u16, user: &str, password: &str| -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                &format!("http://127.0.0.1:{api}/v1/auth/login"),
            ])
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(serde_json::json!({ "username": user, "password": password }).to_string())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let start = |data: &Path, api: u16, extra: &[&str]| {
        let child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{api}"),
                "--data-dir",
            ])
            .arg(data)
            .args(extra)
            .env_remove("OUTCALL_ADMIN_PASSWORD")
            .env_remove("OUTCALL_ADMIN_USER")
            .env_remove("OUTCALL_ADMIN_PASSWORD_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Proc(child)
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-the-cli-123\n").unwrap();
    let api = free_port();
    let node = start(
        &dir.path().join("a"),
        api,
        &[
            "--admin-user",
            "ops",
            "--admin-password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert_eq!(
        login(api, "ops", "from-the-cli-123")["user"]["role"],
        "admin"
    );
    drop(node);

    let data = dir.path().join("b");
    let api = free_port();
    let node = start(&data, api, &[]);
    let file = data.join("admin-password");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let generated = std::fs::read_to_string(&file).unwrap();
    assert!(generated.trim().len() >= 20);
    assert_eq!(
        login(api, "admin", generated.trim())["user"]["role"],
        "admin"
    );
    drop(node);
    // Users exist now: a restart with other flags creates nobody.
    let api = free_port();
    let _node = start(
        &data,
        api,
        &[
            "--admin-user",
            "ops",
            "--admin-password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert_eq!(
        login(api, "ops", "from-the-cli-123")["error"]["code"],
        "invalid_credentials"
    );
}

/// The samples of a Prometheus text exposition: (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut m = BTreeMap::new();
                for pair in rest.trim_end_matches('}').split("\",") {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                }
                (n.to_string(), m)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// `GET /metrics` with the admin's token: (status, content type, body).
fn scrape(api: u16, token: Option<&str>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}"])
        .arg(format!("http://127.0.0.1:{api}/metrics"));
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (code, ct) = tail.split_once(' ').unwrap();
    (code.parse().unwrap(), ct.to_string(), body.to_string())
}

/// Sum of a metric's samples whose labels include `with`.
fn sum(s: &[(String, BTreeMap<String, String>, f64)], name: &str, with: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(n, l, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// A SIPp-driven campaign: `/metrics` counts exactly what the CDRs record (calls by outcome,
/// attempts, SIP codes, setup-time observations), the histograms carry the catalogue's buckets,
/// every attempt has its own trace id and a phase breakdown, and `/readyz` is ready.
#[test]
fn metrics_match_the_cdrs_of_a_sipp_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier(dir.path());
    let cfg = config(dir.path(), sipp.port);
    let api = free_port();
    let _node = serve(&dir.path().join("data"), Some(&cfg), api);
    let base = format!("http://127.0.0.1:{api}");
    let t = token(&base);
    assert_eq!(scrape(api, None).0, 401, "metrics need a credential");
    // A configured trunk's health shows before its first call.
    let (_, _, first) = scrape(api, Some(&t));
    let first = samples(&first);
    assert_eq!(
        sum(&first, "outcall_trunk_rate_factor", &[("trunk", "sipp")]),
        1.0
    );
    assert!(first
        .iter()
        .any(|(n, l, v)| n == "outcall_trunk_circuit_state" && l["trunk"] == "sipp" && *v == 0.0));
    let ready = Command::new("curl")
        .args(["-sS", &format!("{base}/readyz")])
        .output()
        .unwrap();
    let ready: Value = serde_json::from_slice(&ready.stdout).unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let checks: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["store", "scheduler", "bus"], "{ready}");

    let id = launch(api, 40, 1);
    // Scraped while calls are in flight.
    wait_for(api, id, Duration::from_secs(60), |s| {
        s["live"]["active"].as_u64().unwrap_or(0) >= 1
    });
    let (code, ct, body) = scrape(api, Some(&t));
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(sum(&samples(&body), "outcall_calls_active", &[]) >= 0.0);
    wait_for(api, id, Duration::from_secs(120), |s| {
        s["campaign"]["status"] == "completed"
    });
    let attempts = all_attempts(api, id);
    let (_, _, body) = scrape(api, Some(&t));
    let s = samples(&body);
    let campaign = id.to_string();

    // Calls by outcome, as the CDRs have them.
    let mut by_outcome: BTreeMap<String, f64> = BTreeMap::new();
    for a in attempts.iter().filter(|a| !a["cdr"].is_null()) {
        *by_outcome
            .entry(a["cdr"]["outcome"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    let mut metric: BTreeMap<String, f64> = BTreeMap::new();
    for (n, l, v) in &s {
        if n == "outcall_calls_total" && l.get("campaign") == Some(&campaign) {
            assert_eq!(l["trunk"], "sipp");
            *metric.entry(l["outcome"].clone()).or_default() += v;
        }
    }
    assert_eq!(metric, by_outcome, "outcall_calls_total vs CDRs");
    assert_eq!(
        sum(
            &s,
            "outcall_attempts_total",
            &[("campaign", &campaign), ("trunk", "sipp")]
        ),
        attempts.len() as f64
    );
    let busy = attempts
        .iter()
        .filter(|a| a["cdr"]["sip_status"] == 486)
        .count();
    assert!(busy > 0);
    assert_eq!(
        sum(
            &s,
            "outcall_sip_responses_total",
            &[("code", "486"), ("trunk", "sipp")]
        ),
        busy as f64
    );
    let with_setup = attempts
        .iter()
        .filter(|a| a["cdr"]["setup_ms"].is_u64())
        .count();
    assert_eq!(
        sum(&s, "outcall_call_setup_seconds_count", &[("trunk", "sipp")]),
        with_setup as f64
    );
    // Histogram buckets: every bound of the catalogue, then +Inf equal to the count.
    for (name, bounds, labels) in [
        (
            "outcall_call_setup_seconds",
            outcall_domain::metrics::SETUP_BUCKETS,
            vec![("trunk", "sipp")],
        ),
        (
            "outcall_dispatch_latency_seconds",
            outcall_domain::metrics::DISPATCH_BUCKETS,
            vec![],
        ),
        (
            "outcall_http_request_duration_seconds",
            outcall_domain::metrics::HTTP_BUCKETS,
            vec![("route", "/v1/campaigns/{id}/stats"), ("method", "GET")],
        ),
    ] {
        let les: Vec<f64> = s
            .iter()
            .filter(|(n, l, _)| {
                *n == format!("{name}_bucket")
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, _)| match l["le"].as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            })
            .collect();
        let mut want: Vec<f64> = bounds.to_vec();
        want.push(f64::INFINITY);
        assert_eq!(les, want, "{name} buckets");
        assert_eq!(
            sum(
                &s,
                &format!("{name}_bucket"),
                &[&labels[..], &[("le", "+Inf")]].concat()
            ),
            sum(&s, &format!("{name}_count"), &labels),
            "{name}"
        );
    }
    // The API counted its own requests by route template, never by concrete path.
    assert_eq!(
        sum(
            &s,
            "outcall_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/campaigns"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(
        !body.contains(&format!("/v1/campaigns/{id}/")),
        "no concrete paths as labels"
    );
    assert!(!body.contains("13800000"), "no numbers in metrics");
    assert!(sum(&s, "outcall_asr_ratio", &[("trunk", "sipp")]) > 0.0);
    assert!(sum(&s, "process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(sum(&s, "outcall_ready", &[]), 1.0);

    // Each attempt: its own W3C trace id in the CDR, and where its time went.
    let traces: HashSet<&str> = attempts
        .iter()
        .filter_map(|a| a["cdr"]["trace_id"].as_str())
        .collect();
    assert_eq!(traces.len(), by_outcome.values().sum::<f64>() as usize);
    assert!(traces
        .iter()
        .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())));
    let answered = attempts
        .iter()
        .find(|a| a["outcome"] == "answered_human")
        .unwrap();
    let one = curl(
        "GET",
        &format!("{base}/v1/attempts/{}", answered["id"]),
        None,
    );
    assert_eq!(one["id"], answered["id"]);
    let b = &one["breakdown"];
    for phase in [
        "queue_wait_ms",
        "dispatch_ms",
        "sip_setup_ms",
        "talk_ms",
        "total_ms",
    ] {
        assert!(b[phase].is_u64(), "{phase} in {one}");
    }
    assert!(
        b["talk_ms"].as_u64().unwrap() >= 900,
        "max_duration_secs 1: {b}"
    );
    let parts = ["queue_wait_ms", "dispatch_ms", "sip_setup_ms"]
        .iter()
        .map(|p| b[p].as_u64().unwrap())
        .sum::<u64>()
        + b["talk_ms"].as_u64().unwrap();
    assert!(parts <= b["total_ms"].as_u64().unwrap() + 5, "{b}");
}

/// A minimal HTTP receiver (OTLP, alert webhooks): answers every POST with 200 and keeps
/// each request line and body.
fn http_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    keep.lock().unwrap().push(format!(
                        "{}\n{}",
                        line.trim(),
                        String::from_utf8_lossy(&body)
                    ));
                    let _ = w.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (port, bodies)
}

/// With an OTLP endpoint configured, the spans of a call placed with a `traceparent` are
/// exported under the trace id its CDR records.
#[test]
fn otlp_export_carries_the_trace_id_of_the_cdr() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier(dir.path());
    let cfg = config(dir.path(), sipp.port);
    let (otlp, bodies) = http_receiver();
    let api = free_port();
    let mut cmd = Command::new(bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .arg("--config")
    .arg(&cfg)
    .env("OUTCALL_ADMIN_PASSWORD", ADMIN_PASSWORD)
    .env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{otlp}"),
    )
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut node = Proc(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{api}/v1/calls");
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &url])
        .args(["-H", &format!("authorization: Bearer {}", token(&url))])
        .args([
            "-H",
            &format!("traceparent: 00-{trace}-b7ad6b7169203331-01"),
        ])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(r#"{"to": "13800000001", "trunk": "sipp", "max_duration_secs": 1}"#)
        .output()
        .unwrap();
    let call: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let c = curl("GET", &format!("{url}/{}", call["id"]), None);
        if c["status"] == "completed" {
            break c;
        }
        assert!(Instant::now() < deadline, "not completed: {c}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["cdr"]["trace_id"], trace);
    // Stopping flushes the batch of spans.
    assert!(Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    node.0.wait().unwrap();
    let bodies = bodies.lock().unwrap();
    assert!(!bodies.is_empty(), "nothing exported");
    assert!(bodies.iter().all(|b| b.starts_with("POST /v1/traces")));
    let spans: Vec<Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b.split_once('\n').unwrap().1).ok())
        .flat_map(|v| {
            v["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
                .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        })
        .collect();
    let names: HashSet<&str> = spans
        .iter()
        .filter(|s| {
            s["traceId"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
                == Some(trace)
        })
        .filter_map(|s| s["name"].as_str())
        .collect();
    for want in ["http", "attempt", "call"] {
        assert!(
            names.contains(want),
            "span {want} under the trace: {names:?}"
        );
    }
    let all = bodies.join("\n");
    assert!(!all.contains("13800000001"), "no plaintext number in spans");
}

/// A carrier that starts failing (503 to everything): the failure-rate alert fires to a local
/// webhook once, the trunk's circuit opens and dialing slows to probes; when the carrier answers
/// again the circuit closes, the rate recovers and the alert resolves once.
#[test]
fn failing_carrier_fires_the_alert_slows_the_pacer_and_both_recover() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sipp = start_sipp_at(port, "uas_503.xml", Transport::Udp, &[], dir.path());
    let (hook, received) = http_receiver();
    let cfg = dir.path().join("outcall.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"shutdown_grace_secs = 5
[[trunks]]
name = "sipp"
host = "127.0.0.1"
port = {port}
[degradation]
window_secs = 10
min_calls = 5
recover_interval_secs = 1
recover_step = 0.25
open_secs = 2
max_open_secs = 4
[monitor]
interval_secs = 0.25
[[monitor.rules]]
kind = "call_failure_rate"
window_secs = 10
for_secs = 1
resolve_for_secs = 2
min_calls = 5
[[monitor.notifiers]]
kind = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
"#
        ),
    )
    .unwrap();
    let api = free_port();
    let _node = serve(&dir.path().join("data"), Some(&cfg), api);
    let base = format!("http://127.0.0.1:{api}/v1/campaigns");
    let spec = serde_json::json!({
        "name": "alerting", "trunks": ["sipp"], "max_concurrent": 40, "max_cps": 20,
        "ring_timeout_secs": 1, "max_duration_secs": 1,
        "retry": { "max_attempts": 1, "rules": {} }
    });
    let c = curl("POST", &base, Some(("application/json", &spec.to_string())));
    let id = c["id"].as_i64().unwrap();
    curl(
        "POST",
        &format!("{base}/{id}/contacts"),
        Some(("text/csv", &numbers(1000))),
    );
    curl("POST", &format!("{base}/{id}/start"), None);
    let t = token(&base);
    let alerts = |state: &str| -> Vec<Value> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.starts_with("POST /alerts"))
            .filter_map(|b| serde_json::from_str::<Value>(b.split_once('\n').unwrap().1).ok())
            .filter(|v| v["status"] == state)
            .collect()
    };
    let gauge = |name: &str| {
        let (_, _, body) = scrape(api, Some(&t));
        sum(&samples(&body), name, &[("trunk", "sipp")])
    };
    let attempts = || stats(api, id)["attempts"].as_u64().unwrap();
    let wait = |what: &str, limit: u64, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(limit);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The carrier fails: the alert fires (one notification) and the circuit opens.
    wait("the firing alert", 30, &|| !alerts("firing").is_empty());
    let firing = &alerts("firing")[0];
    assert_eq!(
        firing["alerts"][0]["labels"]["alertname"], "call_failure_rate",
        "{firing}"
    );
    wait("the open circuit", 10, &|| {
        gauge("outcall_trunk_circuit_state") == 2.0
    });
    // Dialing slows to probes: at 20 calls/s there would be about 100 attempts in 5 s.
    let before = attempts();
    std::thread::sleep(Duration::from_secs(5));
    let slowed = attempts() - before;
    assert!(
        slowed <= 10,
        "{slowed} attempts in 5 s with the circuit open"
    );
    assert!(
        gauge("outcall_trunk_rate_factor") < 1.0,
        "the trunk's rate is cut"
    );

    // The carrier recovers on the same address: a probe succeeds, the circuit closes, the rate
    // climbs back and the alert resolves (one notification).
    sipp.stop();
    let _healthy = start_sipp_at(port, "uas_mix.xml", Transport::Udp, &[], dir.path());
    wait("the closed circuit", 30, &|| {
        gauge("outcall_trunk_circuit_state") == 0.0
    });
    wait("the full rate", 30, &|| {
        gauge("outcall_trunk_rate_factor") == 1.0
    });
    let before = attempts();
    std::thread::sleep(Duration::from_secs(3));
    let recovered = attempts() - before;
    assert!(
        recovered >= 30,
        "{recovered} attempts in 3 s after recovery (20/s configured)"
    );
    wait("the resolved alert", 30, &|| !alerts("resolved").is_empty());
    assert_eq!(
        alerts("firing").len(),
        1,
        "one firing notification, no storm"
    );
    assert_eq!(alerts("resolved").len(), 1);
    // What happened is in the events an operator reads, in order.
    let events = curl(
        "GET",
        &format!("http://127.0.0.1:{api}/v1/events?limit=1000"),
        None,
    );
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        at("trunk.circuit_open") < at("trunk.circuit_closed"),
        "{kinds:?}"
    );
    assert!(at("alert.firing") < at("alert.resolved"), "{kinds:?}");
    assert!(at("trunk.degraded") < at("trunk.recovered"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "alert.firing").count(), 1);
    let open = &events["events"][at("trunk.circuit_open")];
    assert_eq!(open["subject"], "sipp", "{open}");
}

/// SIGTERM while calls ring on a carrier that has died: the CANCELs get no answer, yet the node
/// stops within its grace period plus 2 s (not 64*T1 later), and every attempt is recorded.
#[test]
fn sigterm_with_a_dead_carrier_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sipp = start_sipp("uas_ring_no_answer.xml", Transport::Udp, &[], dir.path());
    let cfg = dir.path().join("outcall.toml");
    std::fs::write(
        &cfg,
        format!(
            "shutdown_grace_secs = 1\n[[trunks]]\nname = \"sipp\"\nhost = \"127.0.0.1\"\nport = {}\n",
            sipp.port
        ),
    )
    .unwrap();
    let api = free_port();
    let mut node = serve(&data, Some(&cfg), api);
    let base = format!("http://127.0.0.1:{api}/v1/campaigns");
    let spec = serde_json::json!({
        "name": "ringing", "trunks": ["sipp"], "max_concurrent": 10, "max_cps": 50,
        "ring_timeout_secs": 30, "retry": { "max_attempts": 1, "rules": {} }
    });
    let c = curl("POST", &base, Some(("application/json", &spec.to_string())));
    let id = c["id"].as_i64().unwrap();
    curl(
        "POST",
        &format!("{base}/{id}/contacts"),
        Some(("text/csv", &numbers(20))),
    );
    curl("POST", &format!("{base}/{id}/start"), None);
    wait_for(api, id, Duration::from_secs(30), |s| {
        s["live"]["active"].as_u64().unwrap_or(0) >= 5
    });
    sipp.child.kill().unwrap(); // the carrier dies: nothing answers our CANCELs
    sipp.child.wait().unwrap();
    let ringing: HashSet<i64> = all_attempts(api, id)
        .iter()
        .filter_map(|a| a["id"].as_i64())
        .collect();
    let t0 = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = node.0.wait().unwrap();
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(8), "stopped after {took:?}");
    drop(node);
    let _again = serve(&data, Some(&cfg), api);
    // The restarted node dials on; the attempts that were ringing at the stop were closed by
    // it (canceled), none was left open for the restart to reconcile.
    let before: Vec<Value> = all_attempts(api, id)
        .into_iter()
        .filter(|a| ringing.contains(&a["id"].as_i64().unwrap()))
        .collect();
    assert!(before.len() >= 5);
    assert!(
        before
            .iter()
            .all(|a| a["cause"].is_null() && a["outcome"] == "canceled"),
        "{before:?}"
    );
}
