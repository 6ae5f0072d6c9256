//! Status webhooks end to end: `outcall campaign run` with a `status_callback` places real calls
//! to SIPp's `uas_mix.xml` carrier (by the dialed number's last digit: 0-5 answer after 180,
//! 6-7 busy, 8 rings until our CANCEL, 9 empty number), and a local HTTP receiver gets each
//! attempt's events, signed, in order.
#![allow(clippy::disallowed_methods)] // plain threads here: the binary runs synchronously

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use outcall_api::webhook::{verify_signature, EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER};
use outcall_testkit::{start_sipp, Transport};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const SECRET: &str = "e2e-webhook-secret-0123456789abcdef";

type Log = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn record(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> StatusCode {
    log.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// An HTTP receiver on 127.0.0.1 (its own runtime, on a thread); returns its URL and log.
fn receiver() -> (String, Log, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let log: Log = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/outcall/status", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/outcall/status", post(record))
        .with_state(log.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log, rt)
}

/// What the carrier does with a number ending in `digit`: the events and the final outcome.
fn expected(digit: u32) -> (&'static [&'static str], &'static str) {
    match digit {
        0..=5 => (
            &["initiated", "ringing", "answered", "completed"],
            "answered_human",
        ),
        6 | 7 => (&["initiated", "completed"], "busy"),
        8 => (&["initiated", "ringing", "completed"], "no_answer"),
        _ => (&["initiated", "completed"], "empty_number"),
    }
}

#[test]
fn a_campaign_with_a_status_callback_reports_every_call_to_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = start_sipp("uas_mix.xml", Transport::Udp, &[], dir.path());
    let (url, log, _rt) = receiver();
    let port = sipp.port;
    std::fs::write(
        dir.path().join("campaign.toml"),
        format!(
            r#"
[[trunks]]
name = "sipp"
host = "127.0.0.1"
port = {port}

[campaign]
name = "webhooks e2e"
trunks = ["sipp"]
max_concurrent = 10
max_cps = 50
ring_timeout_secs = 1
max_duration_secs = 1
retry = {{ max_attempts = 1 }}
status_callback = {{ url = "{url}" }}
"#
        ),
    )
    .unwrap();
    let mut csv = String::from("number\n");
    for i in 0..20 {
        csv.push_str(&format!("138{i:08}\n"));
    }
    std::fs::write(dir.path().join("numbers.csv"), csv).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outcall"))
        .args(["campaign", "run", "--file"])
        .arg(dir.path().join("campaign.toml"))
        .arg("--contacts")
        .arg(dir.path().join("numbers.csv"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("OUTCALL_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("20 contacts, 20 attempts"), "{stdout}");

    // 2 × (4 + 4 + 4 + 4 + 4 + 4 + 2 + 2 + 3 + 2) events; delivered before the run ended.
    let want = 66;
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} events",
            log.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), want, "no duplicates on a healthy receiver");

    let mut by_attempt: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (headers, body) in &got {
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
        verify_signature(
            SECRET.as_bytes(),
            &h(SIGNATURE_HEADER),
            body,
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .unwrap();
        let p: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(h(EVENT_ID_HEADER), p["event_id"]);
        assert_eq!(h(EVENT_HEADER), p["event"]);
        assert!(ids.insert(h(EVENT_ID_HEADER)), "event ids are unique");
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains("13800000"),
            "no clear number in a payload: {text}"
        );
        by_attempt
            .entry(p["attempt_id"].as_i64().unwrap())
            .or_default()
            .push(p);
    }
    assert_eq!(by_attempt.len(), 20, "one attempt per number");
    let mut numbers = HashSet::new();
    for (attempt, events) in &by_attempt {
        let number = events[0]["number"].as_str().unwrap().to_string();
        assert!(number.contains("****"), "{number}");
        let digit = number.chars().last().unwrap().to_digit(10).unwrap();
        let (kinds, outcome) = expected(digit);
        let seen: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(seen, kinds, "attempt {attempt} to {number}, in order");
        for e in events {
            assert_eq!(e["number"], number.as_str());
            assert_eq!(e["seq"], 1);
            assert_eq!(e["campaign_id"], 1);
            assert_eq!(e["contact_id"], events[0]["contact_id"]);
        }
        let done = events.last().unwrap();
        assert_eq!(done["outcome"], outcome, "{done}");
        assert!(done["cause"].is_null());
        let cdr = &done["cdr"];
        assert_eq!(cdr["outcome"], outcome);
        assert_eq!(cdr["attempt_id"], attempt.to_string());
        assert!(cdr["call_id"].as_str().is_some_and(|c| !c.is_empty()));
        assert_eq!(cdr["trunk"], "sipp");
        if outcome == "answered_human" {
            assert!(cdr["answer_at_ms"].as_u64().is_some(), "{cdr}");
            assert!(cdr["billsec"].as_u64().unwrap() >= 1, "{cdr}");
        }
        numbers.insert(number);
    }
    assert_eq!(numbers.len(), 20);
}
