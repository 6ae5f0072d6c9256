//! The distributed mode end to end, on this machine's PostgreSQL, Redis, RabbitMQ and NATS:
//! `outcall serve --role …` processes (api, one scheduler, three dialers, ingest) on loopback
//! against a SIPp carrier. Each test gets its own PostgreSQL database, Redis namespace and bus
//! names. The carrier's scenario (`tests/sipp/uas_mix.xml`) answers by the dialed number's last
//! digit: 0-5 answer, 6-7 busy, 8 rings until our CANCEL, 9 is an empty number.
#![allow(clippy::disallowed_methods)] // plain threads here: no tokio runtime to block

use outcall_testkit::{free_port, start_sipp, SippProcess, Transport};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outcall")
}

const ADMIN_PASSWORD: &str = "test-admin-password";

fn pg_url(db: &str) -> String {
    let base = std::env::var("OUTCALL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let cut = base
        .rfind('/')
        .expect("a database in OUTCALL_TEST_POSTGRES_URL");
    format!("{}/{db}", &base[..cut])
}

fn redis_url() -> String {
    std::env::var("OUTCALL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn amqp_url() -> String {
    std::env::var("OUTCALL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(pg_url("test"))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "PostgreSQL at {}: {sql}: {}",
        pg_url("test"),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn psql_value(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(pg_url(db))
        .args(["-At", "-c", sql])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which bus the cluster uses.
enum Bus {
    Rabbit,
    Nats(u16),
}

/// One deployment: a database, a Redis namespace, bus names, a carrier, nodes.
struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    ns: String,
    bus: Bus,
    sip_port: u16,
    api: u16,
    nodes: HashMap<String, Proc>,
    /// HTTP port of each node.
    ports: HashMap<String, u16>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        if std::thread::panicking() || std::env::var_os("OUTCALL_TEST_KEEP_LOGS").is_some() {
            // Keep the nodes' logs of a failed test.
            let keep = std::env::temp_dir().join(format!("outcall-dist-{}", self.ns));
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("node logs kept in {}", keep.display());
        }
        let _ = Command::new("psql")
            .arg(pg_url("test"))
            .args([
                "-q",
                "-c",
                &format!("drop database if exists {} with (force)", self.db),
            ])
            .output();
        let _ = Command::new("redis-cli")
            .args(["-u", &redis_url(), "--scan", "--pattern"])
            .arg(format!("*{}*", self.ns))
            .output()
            .map(|o| {
                let keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                for chunk in keys.chunks(100) {
                    let _ = Command::new("redis-cli")
                        .args(["-u", &redis_url(), "del"])
                        .args(chunk)
                        .output();
                }
            });
    }
}

impl Cluster {
    fn new(bus: Bus, sip_port: u16) -> Cluster {
        let id: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos());
        let suffix = format!("{id:x}{:x}", rand_u32());
        let db = format!("outcall_dist_{suffix}");
        psql(&format!("create database {db}"));
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            db,
            ns: format!("outcall-t-{suffix}"),
            bus,
            sip_port,
            api: free_port(),
            nodes: HashMap::new(),
            ports: HashMap::new(),
        }
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, name: &str, listen: u16, extra: &str, tables: &str) -> PathBuf {
        let (kind, url) = match self.bus {
            Bus::Rabbit => ("rabbitmq", amqp_url()),
            Bus::Nats(port) => ("nats", format!("nats://127.0.0.1:{port}")),
        };
        let text = format!(
            r#"data_dir = "{data}"
keys_dir = "{keys}"
node = "{name}"
listen = "127.0.0.1:{listen}"
max_concurrent_calls = 40
shutdown_grace_secs = 5
metrics = true

[store]
url = "{pg}"

[redis]
url = "{redis}"
namespace = "{ns}"

[bus]
kind = "{kind}"
url = "{url}"
prefix = "{ns}"

[rpc]
listen = "127.0.0.1:{rpc}"
heartbeat_secs = 1
dialer_ttl_secs = 3

[[trunks]]
name = "sipp"
host = "127.0.0.1"
port = {sip}
"#,
            data = self.data(name).display(),
            keys = self.dir.path().join("keys").display(),
            pg = pg_url(&self.db),
            redis = redis_url(),
            ns = self.ns,
            rpc = free_port(),
            sip = self.sip_port,
        );
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, format!("{extra}\n{text}\n{tables}")).unwrap();
        p
    }

    /// Starts `outcall serve --role <roles>` as node `name`; returns once it is ready.
    fn start(&mut self, name: &str, roles: &str) {
        self.start_with(name, roles, "")
    }

    /// [`Cluster::start`] with top-level settings added to the node's config.
    fn start_with(&mut self, name: &str, roles: &str, extra: &str) {
        self.start_full(name, roles, extra, "", &[])
    }

    /// [`Cluster::start`] with top-level settings, tables and environment variables.
    fn start_full(
        &mut self,
        name: &str,
        roles: &str,
        extra: &str,
        tables: &str,
        env: &[(&str, &str)],
    ) {
        let listen = if roles.contains("api") {
            self.api
        } else {
            free_port()
        };
        self.ports.insert(name.to_string(), listen);
        let cfg = self.config(name, listen, extra, tables);
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&cfg)
            .args(["--role", roles])
            .env("OUTCALL_ADMIN_USER", "admin")
            .env("OUTCALL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proc = Proc {
            child,
            name: name.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = proc.child.try_wait().unwrap() {
                panic!("{name} exited ({st}):\n{}", self.log(name));
            }
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{listen}/readyz"))
                .output()
                .unwrap();
            if out.stdout == b"200" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.nodes.insert(proc.name.clone(), proc);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// SIGKILL, no drain.
    fn kill_9(&mut self, name: &str) {
        let mut p = self.nodes.remove(name).expect("node runs");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

fn token(c: &Cluster) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &c.url("/v1/auth/login")])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!(
            r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#
        ))
        .output()
        .expect("curl is installed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("login answers JSON");
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {v}"))
        .to_string()
}

fn curl(token: &str, method: &str, url: &str, body: Option<(&str, &str)>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, url]);
    cmd.args(["-H", &format!("authorization: Bearer {token}")]);
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

fn numbers(n: u32) -> String {
    let mut s = String::from("number,name\n");
    for i in 0..n {
        s.push_str(&format!("138{i:08},Customer {i}\n"));
    }
    s
}

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

/// Creates and starts a campaign of `n` contacts through the API node.
fn launch(c: &Cluster, t: &str, n: u32, max_cps: u32, hold_secs: u32) -> i64 {
    launch_spec(c, t, n, max_cps, hold_secs, None)
}

fn launch_spec(
    c: &Cluster,
    t: &str,
    n: u32,
    max_cps: u32,
    hold_secs: u32,
    prompt: Option<&Path>,
) -> i64 {
    let mut spec = serde_json::json!({
        "record": prompt.is_some(),
        "name": "distributed",
        "trunks": ["sipp"],
        "max_concurrent": 30,
        "max_cps": max_cps,
        "ring_timeout_secs": 2,
        "max_duration_secs": hold_secs,
        "retry": { "max_attempts": 6, "rules": {
            "busy": { "delay_secs": 1, "retries": 1 },
            "no_answer": { "delay_secs": 1, "retries": 1 },
            "failed": { "delay_secs": 1, "retries": 3 } } }
    });
    if let Some(p) = prompt {
        spec["prompt"] = p.display().to_string().into();
    }
    let base = c.url("/v1/campaigns");
    let r = curl(
        t,
        "POST",
        &base,
        Some(("application/json", &spec.to_string())),
    );
    let id = r["id"].as_i64().unwrap_or_else(|| panic!("{r}"));
    let r = curl(
        t,
        "POST",
        &format!("{base}/{id}/contacts"),
        Some(("text/csv", &numbers(n))),
    );
    assert_eq!(r["added"], n as u64, "{r}");
    let r = curl(t, "POST", &format!("{base}/{id}/start"), None);
    assert_eq!(r["status"], "running", "{r}");
    id
}

fn stats(c: &Cluster, t: &str, id: i64) -> Value {
    curl(t, "GET", &c.url(&format!("/v1/campaigns/{id}/stats")), None)
}

fn wait_for(
    c: &Cluster,
    t: &str,
    id: i64,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = stats(c, t, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_attempts(c: &Cluster, t: &str, id: i64) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = curl(
            t,
            "GET",
            &c.url(&format!(
                "/v1/campaigns/{id}/attempts?after={after}&limit=200"
            )),
            None,
        );
        all.extend(page["attempts"].as_array().unwrap().clone());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return all,
        }
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

/// Call-IDs of the INVITEs SIPp received, with how many times each arrived.
fn invites_seen(dir: &Path) -> HashMap<String, u32> {
    let log = std::fs::read_to_string(dir.join("sipp_messages.log")).unwrap_or_default();
    let mut ids = HashMap::new();
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
                *ids.entry(id.trim().to_string()).or_default() += 1;
            }
        }
    }
    ids
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("a timestamp: {v}"))
        .parse()
        .unwrap()
}

#[test]
fn a_dialer_then_a_scheduler_killed_mid_campaign_lose_no_contact_no_cdr_and_dial_no_attempt_twice()
{
    let sipp_dir = tempfile::tempdir().unwrap();
    let mut sipp = carrier(sipp_dir.path());
    let mut c = Cluster::new(Bus::Rabbit, sipp.port);
    c.start("api-1", "api");
    c.start("ingest-1", "ingest");
    for d in ["dialer-1", "dialer-2", "dialer-3"] {
        c.start(d, "dialer");
    }
    // Two schedulers share the queue and the campaign's limits.
    c.start("scheduler-1", "scheduler");
    c.start("scheduler-2", "scheduler");
    let t = token(&c);
    // A monitor node judging the scheduler's and the dialers' metrics, with an API key.
    let key = curl(
        &t,
        "POST",
        &c.url("/v1/api-keys"),
        Some(("application/json", r#"{"name":"monitor","role":"auditor"}"#)),
    );
    let key = key["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}"))
        .to_string();
    let key_file = c.dir.path().join("monitor.key");
    std::fs::write(&key_file, &key).unwrap();
    let targets: Vec<String> = [
        "scheduler-1",
        "scheduler-2",
        "dialer-1",
        "dialer-2",
        "dialer-3",
    ]
    .iter()
    .map(|n| format!("\"http://127.0.0.1:{}/metrics\"", c.ports[*n]))
    .collect();
    // One rule that the carrier's busy numbers (a fifth of them) fire.
    let rules = c.dir.path().join("monitor-rules.toml");
    std::fs::write(
        &rules,
        "interval_secs = 1\n[[rules]]\nname = \"busy_rate\"\nkind = \"call_failure_rate\"\n\
         outcomes = [\"busy\"]\nthreshold = 0.05\nwindow_secs = 10\nfor_secs = 0\nmin_calls = 5\n",
    )
    .unwrap();
    c.start_with(
        "monitor-1",
        "monitor",
        &format!(
            "monitor_targets = [{}]\nmonitor_token_file = \"{}\"\nmonitor_file = \"{}\"",
            targets.join(", "),
            key_file.display(),
            rules.display()
        ),
    );
    let n = 150;
    let id = launch(&c, &t, n, 30, 3);
    // Calls in flight on every dialer, then dialer-2 dies without a word.
    wait_for(&c, &t, id, Duration::from_secs(60), |s| {
        s["attempts"].as_u64().unwrap_or(0) >= 45
    });
    let killed_at = jiff::Timestamp::now();
    c.kill_9("dialer-2");
    // Later, scheduler-2 dies too: its leases expire and scheduler-1 takes its tasks over.
    wait_for(&c, &t, id, Duration::from_secs(60), |s| {
        s["attempts"].as_u64().unwrap_or(0) >= 90
    });
    let scheduler_killed_at = jiff::Timestamp::now();
    c.kill_9("scheduler-2");
    let s = wait_for(&c, &t, id, Duration::from_secs(240), |s| {
        s["campaign"]["status"] == "completed"
    });
    assert_eq!(s["contacts"]["done"], n as u64, "{s}");
    let finals: BTreeMap<String, u64> =
        serde_json::from_value(s["final_outcomes"].clone()).unwrap();
    assert_eq!(
        finals,
        expected(n),
        "every contact ends with its carrier outcome: {s}"
    );

    // Every attempt gets its CDR: dialers publish them to RabbitMQ, ingest writes them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let attempts = loop {
        let a = all_attempts(&c, &t, id);
        if a.iter().all(|a| !a["cdr"].is_null()) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} attempts without a CDR",
            a.iter().filter(|a| a["cdr"].is_null()).count(),
            a.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(attempts.len() as u64, s["attempts"].as_u64().unwrap());
    let cdrs: u64 = psql_value(&c.db, "select count(*) from cdrs")
        .parse()
        .unwrap();
    assert_eq!(
        cdrs,
        attempts.len() as u64,
        "one CDR per attempt in PostgreSQL"
    );

    // dialer-2's calls were lost with it: closed as failed/node_lost within 30 s of the
    // kill (their contacts back in the queue), and each of those contacts dialed again.
    let lost: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["cause"] == "node_lost" && ts(&a["ended_at"]) < scheduler_killed_at)
        .collect();
    assert!(
        !lost.is_empty(),
        "calls were in flight on the killed dialer"
    );
    for a in &lost {
        assert_eq!(a["outcome"], "failed", "{a}");
        assert_eq!(a["cdr"]["node"], "dialer-2", "{a}");
        let closed = ts(&a["ended_at"]).duration_since(killed_at).as_secs_f64();
        assert!(
            closed <= 30.0,
            "taken over {closed:.1} s after the kill: {a}"
        );
        assert!(
            attempts
                .iter()
                .any(|b| b["contact_id"] == a["contact_id"] && b["id"].as_i64() > a["id"].as_i64()),
            "the contact of {a} was dialed again"
        );
    }
    // A lost dialer is no fault of the trunk: its circuit stayed closed, its rate whole.
    let events = curl(&t, "GET", &c.url("/v1/events?limit=500"), None);
    let trunk_events: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("trunk."))
        .collect();
    assert!(trunk_events.is_empty(), "trunk events: {trunk_events:?}");
    // scheduler-2's attempts in flight were closed by scheduler-1 once their leases expired
    // (their calls hung up by the dialers, whose CDRs still arrived), within 30 s, and their
    // contacts dialed again.
    let orphaned: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["node"] == "scheduler-2" && ts(&a["ended_at"]) >= scheduler_killed_at)
        .collect();
    assert!(!orphaned.is_empty(), "scheduler-2 had calls in flight");
    for a in &orphaned {
        assert_eq!(a["cause"], "node_lost", "{a}");
        let closed = ts(&a["ended_at"])
            .duration_since(scheduler_killed_at)
            .as_secs_f64();
        assert!(
            closed <= 30.0,
            "taken over {closed:.1} s after the kill: {a}"
        );
        assert!(
            attempts.iter().any(|b| b["contact_id"] == a["contact_id"]
                && b["id"].as_i64() > a["id"].as_i64()
                && b["node"] == "scheduler-1"),
            "the contact of {a} was dialed again by scheduler-1"
        );
    }
    let nodes: HashSet<&str> = attempts
        .iter()
        .filter_map(|a| a["cdr"]["node"].as_str())
        .collect();
    assert!(
        ["dialer-1", "dialer-2", "dialer-3"]
            .iter()
            .all(|d| nodes.contains(d)),
        "calls spread over the three dialers: {nodes:?}"
    );
    assert!(
        attempts
            .iter()
            .filter(|a| ts(&a["started_at"]) > killed_at + jiff::SignedDuration::from_secs(5))
            .all(|a| a["cdr"]["node"] != "dialer-2"),
        "no call went to the dead dialer once its heartbeat expired"
    );

    // The monitor node judged the calls of the dialers it scraped: its rule fired, and the
    // alert is an event an operator reads.
    let fired = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "alert.firing" && e["subject"] == "busy_rate");
    assert!(fired, "the monitor's alert fired:\n{}", c.log("monitor-1"));

    // The campaign's limits held across both schedulers (each would allow them on its own):
    // never more than 30 calls at once, never more than 30 started in a second.
    let mut spans: Vec<(u64, u64)> = attempts
        .iter()
        .filter_map(|a| {
            Some((
                a["cdr"]["invite_at_ms"].as_u64()?,
                a["cdr"]["end_at_ms"].as_u64()?,
            ))
        })
        .collect();
    spans.sort();
    let mut peak = 0;
    for (i, (start, _)) in spans.iter().enumerate() {
        let live = spans[..=i].iter().filter(|(_, end)| end > start).count();
        peak = peak.max(live);
    }
    assert!(peak <= 30, "{peak} calls at once for max_concurrent 30");
    let starts: Vec<u64> = spans.iter().map(|s| s.0).collect();
    let busiest = starts
        .iter()
        .map(|t0| {
            starts
                .iter()
                .filter(|t| **t >= *t0 && **t < t0 + 1000)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= 31,
        "{busiest} calls started within one second for max_cps 30"
    );
    let by_scheduler: HashSet<&str> = attempts.iter().filter_map(|a| a["node"].as_str()).collect();
    assert_eq!(
        by_scheduler.len(),
        2,
        "both schedulers dialed: {by_scheduler:?}"
    );

    // No attempt was dialed twice: each real CDR has its own Call-ID, SIPp saw each INVITE
    // once, and no more INVITEs than attempts.
    let call_ids: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a["cdr"]["call_id"].as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let unique: HashSet<&&str> = call_ids.iter().collect();
    assert_eq!(unique.len(), call_ids.len(), "a Call-ID was used twice");
    sipp.stop();
    let seen = invites_seen(sipp_dir.path());
    assert!(seen.values().all(|n| *n == 1), "an INVITE was sent twice");
    assert!(
        seen.len() <= attempts.len(),
        "{} INVITEs for {} attempts",
        seen.len(),
        attempts.len()
    );
    assert!(call_ids.iter().all(|id| seen.contains_key(*id)));
}

/// A private NATS server (JetStream on disk) that the test may stop and start again.
struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn start(port: u16, store: &Path) -> NatsServer {
        let mut s = NatsServer {
            port,
            store: store.to_path_buf(),
            child: None,
        };
        s.resume();
        s
    }

    fn resume(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spooled(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let m = e.metadata().unwrap();
                        if m.is_dir() {
                            walk(&e.path())
                        } else {
                            m.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir)
}

#[test]
fn the_bus_stopped_for_a_minute_mid_campaign_loses_no_cdr() {
    let sipp_dir = tempfile::tempdir().unwrap();
    let sipp = carrier(sipp_dir.path());
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(free_port(), nats_dir.path());
    let mut c = Cluster::new(Bus::Nats(nats.port), sipp.port);
    c.start("api-1", "api");
    c.start("ingest-1", "ingest");
    c.start("dialer-1", "dialer");
    c.start("dialer-2", "dialer");
    c.start("scheduler-1", "scheduler");
    let t = token(&c);
    // About 80 s of calls at 2 per second: the outage falls in the middle.
    let n = 160;
    let id = launch(&c, &t, n, 2, 1);
    wait_for(&c, &t, id, Duration::from_secs(60), |s| {
        s["attempts"].as_u64().unwrap_or(0) >= 20
    });
    nats.stop();
    let outage = Instant::now();
    // Calls go on; their CDRs wait in the dialers' spools.
    let mut spool_seen = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        spool_seen = spool_seen.max(
            spooled(&c.data("dialer-1").join("spool")) + spooled(&c.data("dialer-2").join("spool")),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = stats(&c, &t, id)["attempts"].as_u64().unwrap();
    assert!(
        during > 40,
        "the campaign went on while the bus was down: {during} attempts"
    );
    assert!(
        spool_seen > 0,
        "CDRs were spooled on disk while the bus was down"
    );
    nats.resume();
    let s = wait_for(&c, &t, id, Duration::from_secs(180), |s| {
        s["campaign"]["status"] == "completed"
    });
    assert_eq!(s["contacts"]["done"], n as u64, "{s}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let a = all_attempts(&c, &t, id);
        let missing = a.iter().filter(|a| a["cdr"].is_null()).count();
        if missing == 0 {
            let cdrs: u64 = psql_value(&c.db, "select count(*) from cdrs")
                .parse()
                .unwrap();
            assert_eq!(cdrs, a.len() as u64, "one CDR per attempt");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} attempts without a CDR after the bus came back",
            a.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(sipp);
}

/// A local S3 API (moto's server: MinIO is not installable here), killed when dropped.
struct S3Server {
    port: u16,
    child: Child,
}

impl S3Server {
    fn start() -> S3Server {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is installed (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn recordings_of_a_dialer_node_go_to_object_storage() {
    let sipp_dir = tempfile::tempdir().unwrap();
    let sipp = carrier(sipp_dir.path());
    let s3 = S3Server::start();
    let made = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .arg(s3.url("/outcall-recordings"))
        .output()
        .unwrap();
    assert_eq!(made.stdout, b"200", "bucket created");
    let mut c = Cluster::new(Bus::Rabbit, sipp.port);
    c.start("api-1", "api");
    c.start("ingest-1", "ingest");
    let tables = format!(
        "[recordings]\ns3_bucket = \"outcall-recordings\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_prefix = \"calls/\"\n",
        s3.url("")
    );
    c.start_full(
        "dialer-1",
        "dialer",
        "",
        &tables,
        &[
            ("AWS_ACCESS_KEY_ID", "outcall-test"),
            ("AWS_SECRET_ACCESS_KEY", "outcall-test-secret"),
        ],
    );
    c.start("scheduler-1", "scheduler");
    let t = token(&c);
    // Numbers ending 0-5 answer: six answered calls play a 1 s prompt, recorded.
    let prompt = c.dir.path().join("prompt.wav");
    tone_wav(&prompt);
    let id = launch_spec(&c, &t, 6, 10, 5, Some(&prompt));
    wait_for(&c, &t, id, Duration::from_secs(60), |s| {
        s["campaign"]["status"] == "completed"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let attempts = loop {
        let a = all_attempts(&c, &t, id);
        if a.iter().all(|a| !a["cdr"].is_null()) {
            break a;
        }
        assert!(Instant::now() < deadline, "CDRs did not arrive");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(attempts.len(), 6);
    for a in &attempts {
        let rec = a["cdr"]["recording"]
            .as_str()
            .unwrap_or_else(|| panic!("recorded: {a}"));
        let key = format!("calls/{id}/{}.wav", a["id"]);
        assert_eq!(rec, format!("s3://outcall-recordings/{key}"), "{a}");
        // (moto's server wants some authorization header on a GET, not a valid one.)
        let got = Command::new("curl")
            .args(["-sS", "-o", "-", "-H"])
            .arg(
                "authorization: AWS4-HMAC-SHA256 Credential=outcall-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .arg(s3.url(&format!("/outcall-recordings/{key}")))
            .output()
            .unwrap();
        let listing = Command::new("curl")
            .args(["-sS"])
            .arg(s3.url("/outcall-recordings"))
            .output()
            .unwrap();
        assert!(
            got.stdout.starts_with(b"RIFF") && got.stdout.len() > 8000,
            "{key} holds a WAV file ({} bytes): {}",
            got.stdout.len(),
            String::from_utf8_lossy(&listing.stdout)
        );
    }
    // Uploaded, then removed from the dialer's disk.
    let local = c.data("dialer-1").join("recordings").join(id.to_string());
    let left = std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no recording left on the dialer");
}

/// One second of a 440 Hz tone, 8 kHz 16-bit mono WAV.
fn tone_wav(path: &Path) {
    let samples: Vec<i16> = (0..8000)
        .map(|i| ((i as f64 * 440.0 * 2.0 * std::f64::consts::PI / 8000.0).sin() * 8000.0) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, w).unwrap();
}
