//! The `outcall` command-line client against a real `outcall serve`: login and its session
//! file, the campaign verbs, a streamed import with rejected rows, API keys from the
//! environment, error codes and exit statuses, and a CDR export as CSV.
#![allow(clippy::disallowed_methods)] // plain threads here: no tokio runtime to block

use outcall_testkit::{free_port, start_sipp, Transport};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outcall")
}

/// The first admin's password, given to `serve` through the environment.
const ADMIN_PASSWORD: &str = "client-test-admin-password";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `outcall serve` on a free port with one trunk `t` at `127.0.0.1:sip_port` (nothing listens
/// there unless the test starts a carrier). Returns the process and its base URL.
fn serve(dir: &Path, sip_port: u16) -> (Proc, String) {
    serve_with(dir, sip_port, "")
}

/// [`serve`] with more config (TOML tables after the trunk).
fn serve_with(dir: &Path, sip_port: u16, extra: &str) -> (Proc, String) {
    let cfg = dir.join("outcall.toml");
    std::fs::write(
        &cfg,
        format!(
            "shutdown_grace_secs = 1\n[[trunks]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {sip_port}\n{extra}"
        ),
    )
    .unwrap();
    let api = free_port();
    let child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{api}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&cfg)
        .env("OUTCALL_ADMIN_USER", "admin")
        .env("OUTCALL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), format!("http://127.0.0.1:{api}"))
}

/// What a client command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The client with a clean environment: no inherited server, token or password, and the
/// session file at `session`.
fn oc(session: &Path) -> Command {
    let mut c = Command::new(bin());
    for v in [
        "OUTCALL_URL",
        "OUTCALL_TOKEN",
        "OUTCALL_PASSWORD",
        "OUTCALL_CA_CERT",
    ] {
        c.env_remove(v);
    }
    c.env("OUTCALL_SESSION", session).stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Out {
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(c: Command) -> Out {
    let o = run(c);
    assert_eq!(o.code, 0, "{o:?}");
    o
}

fn with(session: &Path, args: &[&str]) -> Command {
    let mut c = oc(session);
    c.args(args);
    c
}

/// `outcall login` with the password on stdin (not a terminal: one line is read).
fn login(session: &Path, url: &str, password: &str) -> Out {
    let mut c = oc(session);
    c.args(["login", "--url", url, "--username", "admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{password}").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"))
}

/// A campaign spec in TOML (`start_at` as a TOML datetime, far ahead: started, it dials
/// nothing, so its status stays as the test sets it).
fn spec_toml(dir: &Path, name: &str) -> PathBuf {
    spec_toml_at(dir, name, "start_at = 2099-01-01T00:00:00Z")
}

fn spec_toml_at(dir: &Path, name: &str, start: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"name = "{name}"
trunks = ["t"]
max_concurrent = 5
max_cps = 20
ring_timeout_secs = 1
max_duration_secs = 1
{start}
[retry]
max_attempts = 1
rules = {{}}
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn login_saves_a_private_session_and_the_campaign_verbs_work_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = serve(dir.path(), free_port());
    let session = dir.path().join("config/outcall/session.json");

    let o = login(&session, &url, ADMIN_PASSWORD);
    assert_eq!(o.code, 0, "{o:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "session file mode {mode:o}");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_eq!(saved["url"], url.as_str());
    assert!(saved["token"].as_str().is_some_and(|t| t.len() > 20));
    assert!(saved["expires_at"]
        .as_str()
        .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()));

    // Create from TOML, twice with one idempotency key: one campaign.
    let spec = spec_toml(dir.path(), "cli-remote");
    let spec = spec.to_str().unwrap();
    let c = json(&ok(with(
        &session,
        &[
            "campaign",
            "create",
            "--file",
            spec,
            "--idempotency-key",
            "k-1",
            "--json",
        ],
    )));
    assert_eq!(c["status"], "draft", "{c}");
    assert_eq!(c["name"], "cli-remote");
    assert_eq!(c["max_cps"], 20.0);
    let id = c["id"].as_i64().unwrap();
    let again = ok(with(
        &session,
        &[
            "campaign",
            "create",
            "--file",
            spec,
            "--idempotency-key",
            "k-1",
        ],
    ));
    assert!(
        again
            .stdout
            .contains(&format!("campaign {id} `cli-remote`: draft")),
        "{again:?}"
    );
    assert!(again.stderr.contains("idempotency key"), "{again:?}");

    // Import a CSV with bad rows: the report names their lines.
    let csv = dir.path().join("contacts.csv");
    std::fs::write(
        &csv,
        "number,name\n13800000001,a\nnot-a-number,b\n13800000002,c\n13800000001,dup\n1380000x003,e\n13800000004,f\n",
    )
    .unwrap();
    let ids = id.to_string();
    let imp = ok(with(&session, &["import", &ids, csv.to_str().unwrap()]));
    assert!(
        imp.stdout.contains(&format!(
            "campaign {id}: 6 rows, 3 added, 1 duplicates, 2 invalid"
        )),
        "{imp:?}"
    );
    assert!(imp.stdout.contains("  line 3: invalid number"), "{imp:?}");
    assert!(imp.stdout.contains("  line 6: invalid number"), "{imp:?}");

    // Start, then stats as a table and as JSON, then the list.
    let st = ok(with(&session, &["campaign", "start", &ids]));
    assert!(st.stdout.contains("running"), "{st:?}");
    let table = ok(with(&session, &["campaign", "stats", &ids]));
    for row in [
        "status",
        "contacts        3 (",
        "final outcomes",
        "active calls",
        "cps",
    ] {
        assert!(table.stdout.contains(row), "{row} in {table:?}");
    }
    assert!(table.stdout.contains("running"), "{table:?}");
    let s = json(&ok(with(&session, &["campaign", "stats", &ids, "--json"])));
    assert_eq!(s["campaign"]["id"], id);
    let contacts: u64 = s["contacts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(contacts, 3, "{s}");
    assert!(s["live"]["cps"].is_number(), "{s}");
    let list = ok(with(&session, &["campaign", "list"]));
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains("cli-remote"))
        .unwrap_or_else(|| panic!("{list:?}"));
    assert!(line.starts_with(&format!("{id} ")), "{line}");
    assert_eq!(
        json(&ok(with(&session, &["campaign", "list", "--json"])))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let got = json(&ok(with(&session, &["campaign", "get", &ids])));
    assert_eq!(got["id"], id);

    // Pause, resume, cancel; a second cancel is refused with the API's code and exit 2.
    for (verb, status) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("cancel", "canceled"),
    ] {
        let v = json(&ok(with(&session, &["campaign", verb, &ids, "--json"])));
        assert_eq!(v["status"], status, "{verb}: {v}");
    }
    let refused = run(with(&session, &["campaign", "resume", &ids]));
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: illegal_transition: "),
        "{refused:?}"
    );
    let missing = run(with(&session, &["campaign", "get", "999"]));
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("error: campaign_not_found: "),
        "{missing:?}"
    );

    // Logout deletes the session; without it the server's 401 points to `outcall login`.
    ok(with(&session, &["logout"]));
    assert!(!session.exists());
    let mut c = with(&session, &["campaign", "list"]);
    c.env("OUTCALL_URL", &url);
    let o = run(c);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("error: unauthenticated: "), "{o:?}");
    assert!(o.stderr.contains("outcall login"), "{o:?}");
    // No server at all: a local error, exit 1.
    let o = run(with(&session, &["campaign", "list"]));
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("outcall login"), "{o:?}");
}

#[test]
fn a_wrong_password_exits_2_with_invalid_credentials_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = serve(dir.path(), free_port());
    let session = dir.path().join("session.json");
    let o = login(&session, &url, "not-the-password");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.starts_with("error: invalid_credentials: "),
        "{o:?}"
    );
    assert!(!session.exists());
    // The password from a file works.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let mut c = with(
        &session,
        &[
            "login",
            "--url",
            &url,
            "--username",
            "admin",
            "--password-file",
        ],
    );
    c.arg(&pw);
    ok(c);
    assert!(session.exists());
}

/// Logs in with curl and creates an API key for `role`.
fn api_key(url: &str, role: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &format!("{url}/v1/auth/login")])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!(
            r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#
        ))
        .output()
        .expect("curl is installed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap_or_else(|| panic!("{v}"));
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", &format!("{url}/v1/api-keys")])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!(r#"{{"name":"cli-test","role":"{role}"}}"#))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

#[test]
fn an_api_key_from_outcall_token_works_without_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = serve(dir.path(), free_port());
    let key = api_key(&url, "operator");
    assert!(key.starts_with("oc_"), "{key}");
    let session = dir.path().join("no-session.json");
    let env = |args: &[&str]| {
        let mut c = with(&session, args);
        c.env("OUTCALL_URL", &url).env("OUTCALL_TOKEN", &key);
        c
    };
    let spec = spec_toml(dir.path(), "by-key");
    let c = json(&ok(env(&[
        "campaign",
        "create",
        "--file",
        spec.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(c["name"], "by-key");
    let list = ok(env(&["campaign", "list"]));
    assert!(list.stdout.contains("by-key"), "{list:?}");
    assert!(!session.exists());
    // Flags win over the environment: a wrong --token is refused.
    let o = run(env(&["campaign", "list", "--token", "oc_1_wrong"]));
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("error: unauthenticated: "), "{o:?}");
}

#[test]
fn a_large_import_streams_and_format_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = serve(dir.path(), free_port());
    let session = dir.path().join("session.json");
    assert_eq!(login(&session, &url, ADMIN_PASSWORD).code, 0);
    let spec = spec_toml(dir.path(), "big");
    let c = json(&ok(with(
        &session,
        &[
            "campaign",
            "create",
            "--file",
            spec.to_str().unwrap(),
            "--json",
        ],
    )));
    let ids = c["id"].as_i64().unwrap().to_string();
    // 30 000 rows (about 700 KB, many 64 KiB chunks), in a column named `phone`.
    let csv = dir.path().join("big.csv");
    let mut text = String::from("id,phone\n");
    for i in 0..30_000u32 {
        text.push_str(&format!("{i},139{i:08}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let o = ok(with(
        &session,
        &[
            "import",
            &ids,
            csv.to_str().unwrap(),
            "--number-column",
            "phone",
        ],
    ));
    assert!(
        o.stdout
            .contains("30000 rows, 30000 added, 0 duplicates, 0 invalid"),
        "{o:?}"
    );
    // JSON Lines in a file whose name says nothing: --format decides; --json prints the report.
    let jl = dir.path().join("more.txt");
    std::fs::write(
        &jl,
        "\"13700000001\"\n{\"number\":\"13700000002\",\"priority\":3}\n",
    )
    .unwrap();
    let r = json(&ok(with(
        &session,
        &[
            "import",
            &ids,
            jl.to_str().unwrap(),
            "--format",
            "jsonl",
            "--json",
        ],
    )));
    assert_eq!(r["added"], 2, "{r}");
    let unknown = run(with(&session, &["import", &ids, jl.to_str().unwrap()]));
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("--format"), "{unknown:?}");
}

#[test]
fn https_with_a_private_ca_needs_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    outcall_testkit::private_ca(dir.path());
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let (_node, url) = serve_with(dir.path(), free_port(), &tls);
    let url = url.replace("http://", "https://");
    let session = dir.path().join("session.json");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    // Without the CA the server is not trusted: a local error (exit 1), nothing saved.
    let mut c = with(&session, &["login", "--url", &url, "--username", "admin"]);
    c.env("OUTCALL_PASSWORD", ADMIN_PASSWORD);
    let o = run(c);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("cannot reach"), "{o:?}");
    assert!(!session.exists());
    let mut c = with(
        &session,
        &[
            "login",
            "--url",
            &url,
            "--username",
            "admin",
            "--ca-cert",
            ca,
        ],
    );
    c.env("OUTCALL_PASSWORD", ADMIN_PASSWORD);
    ok(c);
    let list = ok(with(&session, &["campaign", "list", "--ca-cert", ca]));
    assert!(list.stdout.starts_with("ID"), "{list:?}");
    let o = run(with(&session, &["campaign", "list"]));
    assert_eq!(o.code, 1, "{o:?}");
}

#[test]
fn cdr_export_writes_the_campaigns_calls_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    // SIPp answers by the dialed number's last digit: 0-5 answer, 6-7 busy, 8 rings, 9 empty.
    let carrier = start_sipp("uas_mix.xml", Transport::Udp, &[], dir.path());
    let (_node, url) = serve(dir.path(), carrier.port);
    let session = dir.path().join("session.json");
    assert_eq!(login(&session, &url, ADMIN_PASSWORD).code, 0);
    let spec = spec_toml_at(dir.path(), "cdrs", "");
    let c = json(&ok(with(
        &session,
        &[
            "campaign",
            "create",
            "--file",
            spec.to_str().unwrap(),
            "--json",
        ],
    )));
    let id = c["id"].as_i64().unwrap();
    let ids = id.to_string();
    let csv = dir.path().join("numbers.csv");
    let mut text = String::from("number\n");
    for i in 0..10 {
        text.push_str(&format!("1380000000{i}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    ok(with(&session, &["import", &ids, csv.to_str().unwrap()]));
    ok(with(&session, &["campaign", "start", &ids]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let s = json(&ok(with(&session, &["campaign", "stats", &ids, "--json"])));
        if s["campaign"]["status"] == "completed" {
            break s;
        }
        assert!(Instant::now() < deadline, "not completed: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(stats["attempts"], 10, "{stats}");

    let out = dir.path().join("cdrs.csv");
    let o = ok(with(
        &session,
        &[
            "cdr",
            "export",
            "--campaign",
            &ids,
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(o.stdout.is_empty(), "{o:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "attempt_id", "{text}");
    assert!(header.contains(&"outcome") && header.contains(&"sip_status"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 10, "{text}");
    let col = header.iter().position(|h| *h == "outcome").unwrap();
    let busy = rows
        .iter()
        .filter(|r| r.split(',').nth(col) == Some("busy"))
        .count();
    assert_eq!(busy, 2, "{text}");
    assert!(!dir.path().join("cdrs.csv.part").exists());

    // Filtered by outcome, to stdout.
    let o = ok(with(
        &session,
        &["cdr", "export", "--campaign", &ids, "--outcome", "busy"],
    ));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], header.join(","));
    assert_eq!(lines.len(), 3, "{o:?}");
    assert!(lines[1..]
        .iter()
        .all(|r| r.split(',').nth(col) == Some("busy")));
    // Nothing after --since: the header alone.
    let o = ok(with(
        &session,
        &[
            "cdr",
            "export",
            "--campaign",
            &ids,
            "--since",
            "2099-01-01T00:00:00Z",
        ],
    ));
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    // A bad instant is the API's 422: exit 2 with its code.
    let o = run(with(
        &session,
        &["cdr", "export", "--campaign", &ids, "--since", "yesterday"],
    ));
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.starts_with("error: invalid_request: "), "{o:?}");
}
