//! The `outcall` binary as an operator uses it: one call against a SIPp carrier, a small bench,
//! and clear errors for bad input.
#![allow(clippy::disallowed_methods)] // plain threads here: no tokio runtime to block

use outcall_testkit::{start_sipp, SippProcess, Transport};
use std::path::Path;
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outcall")
}

fn sipp(name: &str, calls: u32, dir: &Path) -> SippProcess {
    let calls = calls.to_string();
    let args = ["-m", calls.as_str(), "-timeout", "60s", "-timeout_error"];
    start_sipp(name, Transport::Udp, &args, dir)
}

#[test]
fn call_prints_transitions_and_a_classified_cdr() {
    let dir = tempfile::tempdir().unwrap();
    let mut carrier = sipp("uas_404_cause1.xml", 1, dir.path());
    let out = Command::new(bin())
        .args([
            "call",
            "--trunk",
            &format!("127.0.0.1:{}", carrier.port),
            "--to",
            "13700137000",
        ])
        .args(["--caller-id", "02150000009", "--header", "X-Campaign: demo"])
        .output()
        .unwrap();
    assert!(
        carrier.child.wait().unwrap().success(),
        "sipp saw the whole dialog"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "transition");
    assert_eq!(lines[0]["to"], "dialing");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "cdr");
    let cdr = &last["cdr"];
    assert_eq!(cdr["outcome"], "empty_number");
    assert_eq!(cdr["sip_status"], 404);
    assert_eq!(cdr["q850_cause"], 1);
    assert_eq!(cdr["caller_id"], "02150000009");
    assert_eq!(cdr["callee"], "137****7000");
    // The number never appears in clear, on stdout or in the logs.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("13700137000") && !stderr.contains("13700137000"));
    assert!(stderr.contains("outcome=empty_number"), "{stderr}");
}

#[test]
fn info_logs_keep_numbers_masked() {
    let dir = tempfile::tempdir().unwrap();
    let mut carrier = sipp("uas_busy.xml", 1, dir.path());
    let out = Command::new(bin())
        .args([
            "--log-filter",
            "debug",
            "call",
            "--trunk",
            &format!("127.0.0.1:{}", carrier.port),
        ])
        .args(["--to", "13900139000"])
        .output()
        .unwrap();
    assert!(carrier.child.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("139****9000"),
        "the masked number is logged"
    );
    assert!(
        !stderr.contains("13900139000"),
        "the clear number is not: {stderr}"
    );
}

#[test]
fn bench_prints_a_table_with_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let mut carrier = sipp("uas_bench.xml", 50, dir.path());
    let out = Command::new(bin())
        .args([
            "bench",
            "sip",
            "--trunk",
            &format!("127.0.0.1:{}", carrier.port),
        ])
        .args(["--calls", "50", "--cps", "100"])
        .output()
        .unwrap();
    assert!(carrier.child.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("| outcall | 50 | 50 | 0 |"), "{stdout}");
    assert!(stdout.contains("answered_human=50"), "{stdout}");
    assert!(
        stdout.contains("| dialogs left after run | 0 |"),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["call", "--to", "1"], "no trunk"),
        (
            &["call", "--trunk", "127.0.0.1:notaport", "--to", "1"],
            "bad trunk port",
        ),
        (
            &[
                "call",
                "--trunk",
                "127.0.0.1",
                "--to",
                "1",
                "--dtmf",
                "1=dance",
            ],
            "confirm, repeat, hangup",
        ),
        (
            &[
                "call",
                "--trunk",
                "127.0.0.1",
                "--to",
                "1",
                "--prompt",
                "/nonexistent.wav",
            ],
            "cannot load",
        ),
        (
            &[
                "call",
                "--trunk",
                "127.0.0.1",
                "--to",
                "1",
                "--header",
                "nocolon",
            ],
            "is not `Name: value`",
        ),
        (
            &[
                "call",
                "--trunk",
                "127.0.0.1",
                "--to",
                "1",
                "--ring-timeout=-1",
            ],
            "between 0 and 86400",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(bin()).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[trunk]\nname='t'\nhost='h'\nbogus=1\n").unwrap();
    let out = Command::new(bin())
        .args(["call", "--config", cfg.to_str().unwrap(), "--to", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("unknown field `bogus`"), "{stderr}");
    // `serve` refuses monitoring and degradation settings that cannot work, before it starts.
    let data = dir.path().join("data");
    for (toml, want) in [
        ("[degradation]\nfailure_threshold = 2\n", "invalid [degradation]"),
        ("[monitor]\n[[monitor.rules]]\nkind = \"call_failure_rate\"\nthreshold = 7\n", "invalid monitor settings"),
        ("[monitor]\n[[monitor.notifiers]]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b\"\nto = []\n", "invalid monitor settings"),
        ("monitor_file = \"/nonexistent/monitor.toml\"\n", "invalid monitor file"),
        ("[otlp]\n", "unknown field `otlp`"),
    ] {
        std::fs::write(&cfg, toml).unwrap();
        let out = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()])
            .arg("--data-dir")
            .arg(&data)
            .env("OUTCALL_ADMIN_PASSWORD", "a-long-enough-password")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {stderr}");
        assert!(stderr.contains(want), "{toml}: {stderr}");
    }
    let out = Command::new(bin())
        .args([
            "--otlp-protocol",
            "grpc",
            "--otlp-endpoint",
            "http://127.0.0.1:1",
        ])
        .args(["call", "--to", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTLP protocol `grpc` is not supported"));
}

/// JSON logs: each call's lines carry that call's span (its trace id), never another call's,
/// even with many calls in flight at once; `--metrics` records metrics on the side.
#[test]
fn json_logs_carry_each_calls_own_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut carrier = sipp("uas_bench.xml", 40, dir.path());
    let out = Command::new(bin())
        .args([
            "--log-filter",
            "info",
            "--log-json",
            "bench",
            "sip",
            "--metrics",
        ])
        .args(["--trunk", &format!("127.0.0.1:{}", carrier.port)])
        .args(["--calls", "40", "--cps", "200", "--hold-ms", "200"])
        .output()
        .unwrap();
    assert!(carrier.child.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let finished: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["fields"]["message"] == "call finished")
        .collect();
    assert_eq!(finished.len(), 40, "{stderr}");
    for line in &finished {
        // The bench gives each call the trace id of its attempt id.
        assert_eq!(line["span"]["name"], "call", "{line}");
        assert_eq!(
            line["span"]["trace_id"], line["fields"]["attempt"],
            "{line}"
        );
    }
}
