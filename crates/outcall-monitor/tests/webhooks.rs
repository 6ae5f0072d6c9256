//! The runner end to end: a scripted node whose calls fail at 40 % and then recover, a real
//! HTTP receiver on 127.0.0.1, and each webhook format. Each test takes a few seconds: 0.1 s
//! sampling, a 1 s window, 0.3 s for / resolve_for.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use common::{scripted_failures, Receiver};
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use outcall_monitor::{
    AlertState, FnSource, Monitor, MonitorConfig, MonitorHandle, Transition, TransitionSink,
};

#[derive(Default)]
struct Sink(Mutex<Vec<Transition>>);

#[async_trait]
impl TransitionSink for Sink {
    async fn record(&self, t: &Transition) {
        self.0.lock().unwrap().push(t.clone());
    }
}

fn config(notifiers: &str) -> MonitorConfig {
    MonitorConfig::from_toml(&format!(
        r#"
interval_secs = 0.1

[[rules]]
name = "carrier failures"
kind = "call_failure_rate"
severity = "critical"
window_secs = 1.0
for_secs = 0.3
resolve_for_secs = 0.3

{notifiers}
"#
    ))
    .unwrap()
}

/// Starts the monitor on a node failing for 15 scrapes; waits for one firing and one resolved
/// notification at `path`, then 1 s more to see that nothing else arrives.
async fn run_until_resolved(
    rx: &Receiver,
    path: &str,
    config: MonitorConfig,
) -> (Vec<common::Received>, Vec<Transition>) {
    let (f, _scrapes) = scripted_failures(15);
    let sink = Arc::new(Sink::default());
    let handle: MonitorHandle = Monitor::spawn(
        config,
        Arc::new(FnSource::new(f)),
        Some(sink.clone() as Arc<dyn TransitionSink>),
    )
    .unwrap();
    rx.wait_for(path, 1, Duration::from_secs(20)).await;
    let firing = handle.firing();
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(firing[0].rule, "carrier failures");
    rx.wait_for(path, 2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = rx.received(path);
    assert_eq!(
        got.len(),
        2,
        "exactly one firing and one resolved: {got:#?}"
    );
    assert!(handle.firing().is_empty());
    handle.shutdown().await;
    let transitions = sink.0.lock().unwrap().clone();
    let states: Vec<AlertState> = transitions.iter().map(|t| t.state).collect();
    assert_eq!(states, [AlertState::Firing, AlertState::Resolved]);
    (got, transitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_json_gets_one_firing_then_one_resolved() {
    let rx = Receiver::start().await;
    let cfg = config(&format!(
        r#"
[[notifiers]]
kind = "webhook"
url = "{base}/hook"

[[notifiers]]
kind = "webhook"
url = "{base}/only-info"
min_severity = "info"
"#,
        base = rx.base
    ));
    let (got, transitions) = run_until_resolved(&rx, "/hook", cfg).await;
    assert_eq!(rx.received("/only-info").len(), 2);

    let firing = &got[0].body;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    let a = &firing["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "carrier failures");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .split(" (")
            .next(),
        Some("call failure rate 40.0 % over 1s > 5.0 %")
    );
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    let starts: Timestamp = a["startsAt"].as_str().unwrap().parse().unwrap();

    let resolved = &got[1].body;
    assert_eq!(resolved["status"], "resolved");
    let r = &resolved["alerts"][0];
    assert_eq!(r["status"], "resolved");
    assert_eq!(r["startsAt"], a["startsAt"]);
    assert_eq!(r["fingerprint"], a["fingerprint"]);
    let ends: Timestamp = r["endsAt"].as_str().unwrap().parse().unwrap();
    // Resolving needs the failures to leave the 1 s window, then 0.3 s more.
    assert!(
        ends.duration_since(starts) >= jiff::SignedDuration::from_millis(1000),
        "{starts} .. {ends}"
    );
    assert!(
        r["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("<= 5.0 %"),
        "{r}"
    );
    assert_eq!(transitions[0].started_at, starts);
    assert_eq!(transitions[1].at, ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_gets_signed_markdown_firing_then_resolved() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("dingtalk-secret");
    let secret = "SEC0123456789abcdef";
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let cfg = config(&format!(
        r#"
[[notifiers]]
kind = "webhook"
format = "dingtalk"
url = "{base}/robot/send?access_token=tok123"
secret_file = "{file}"
"#,
        base = rx.base,
        file = secret_file.display()
    ));
    let (got, _) = run_until_resolved(&rx, "/robot/send", cfg).await;
    for (req, state) in got.iter().zip(["FIRING", "RESOLVED"]) {
        let url = reqwest::Url::parse(&format!(
            "http://x/?{}",
            req.query.as_deref().unwrap_or_default()
        ))
        .unwrap();
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["access_token"], "tok123");
        let ts: i64 = q["timestamp"].parse().unwrap();
        let age = Timestamp::now().as_millisecond() - ts;
        assert!((0..60_000).contains(&age), "timestamp {ts} is {age} ms old");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}\n{secret}").as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(q["sign"], want);

        let b = &req.body;
        assert_eq!(b["msgtype"], "markdown");
        assert_eq!(
            b["markdown"]["title"],
            format!("[{state}] carrier failures")
        );
        let text = b["markdown"]["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("### [{state}] carrier failures\n")),
            "{text}"
        );
        assert!(text.contains("- **severity**: critical"), "{text}");
    }
    let firing_text = got[0].body["markdown"]["text"].as_str().unwrap();
    assert!(
        firing_text.contains("call failure rate 40.0 % over 1s > 5.0 %"),
        "{firing_text}"
    );
}

/// Counts metrics in memory (the process-wide recorder of this test binary's process).
mod recorder {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, SharedString, Unit,
    };

    #[derive(Default)]
    pub struct Values {
        pub counters: Mutex<HashMap<String, u64>>,
        /// Every value each gauge was set to.
        pub gauges: Mutex<HashMap<String, Vec<f64>>>,
    }

    pub struct Recorder(pub Arc<Values>);
    struct Handle(Arc<Values>, String);

    fn name(key: &Key) -> String {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl CounterFn for Handle {
        fn increment(&self, v: u64) {
            *self
                .0
                .counters
                .lock()
                .unwrap()
                .entry(self.1.clone())
                .or_default() += v;
        }
        fn absolute(&self, v: u64) {
            self.0.counters.lock().unwrap().insert(self.1.clone(), v);
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, v: f64) {
            self.0
                .gauges
                .lock()
                .unwrap()
                .entry(self.1.clone())
                .or_default()
                .push(v);
        }
    }

    impl metrics::Recorder for Recorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Handle(self.0.clone(), name(key))))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(Handle(self.0.clone(), name(key))))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_gets_markdown_while_a_dead_webhook_fails_alongside() {
    let values = Arc::new(recorder::Values::default());
    metrics::set_global_recorder(recorder::Recorder(values.clone()))
        .expect("the first recorder of this process");
    let rx = Receiver::start().await;
    // Port 1 on 127.0.0.1 refuses connections: that notifier fails (after 3 tries) without
    // holding up the WeCom one. The critical-only notifier gets nothing: the rule is a warning.
    let cfg = config(&format!(
        r#"
[[notifiers]]
kind = "webhook"
url = "http://127.0.0.1:1/dead"

[[notifiers]]
kind = "webhook"
format = "wecom"
url = "{base}/cgi-bin/webhook/send?key=k1"
"#,
        base = rx.base
    ));
    let mut cfg = cfg;
    cfg.rules[0].severity = outcall_monitor::Severity::Warning;
    cfg.notifiers.push(
        MonitorConfig::from_toml(&format!(
            "[[notifiers]]\nkind = \"webhook\"\nurl = \"{}/critical\"\nmin_severity = \"critical\"",
            rx.base
        ))
        .unwrap()
        .notifiers
        .remove(0),
    );
    let (got, _) = run_until_resolved(&rx, "/cgi-bin/webhook/send", cfg).await;
    assert!(rx.received("/critical").is_empty());
    for (req, (state, colour)) in got
        .iter()
        .zip([("FIRING", "warning"), ("RESOLVED", "info")])
    {
        assert_eq!(req.query.as_deref(), Some("key=k1"));
        assert_eq!(req.body["msgtype"], "markdown");
        let content = req.body["markdown"]["content"].as_str().unwrap();
        assert!(
            content.starts_with(&format!(
                "**<font color=\"{colour}\">[{state}] carrier failures</font>**\n"
            )),
            "{content}"
        );
        assert!(content.contains("> severity: warning\n"), "{content}");
        assert!(
            content.contains("> summary: call failure rate "),
            "{content}"
        );
    }

    let counters = values.counters.lock().unwrap().clone();
    assert_eq!(
        counters.get("outcall_alert_notifications_total{channel=wecom,result=sent}"),
        Some(&2),
        "{counters:?}"
    );
    assert_eq!(
        counters.get("outcall_alert_notifications_total{channel=webhook,result=failed}"),
        Some(&2),
        "{counters:?}"
    );
    let gauges = values.gauges.lock().unwrap().clone();
    let firing = &gauges["outcall_alerts_firing{rule=carrier failures}"];
    assert!(firing.contains(&1.0), "{firing:?}");
    assert_eq!(firing.last(), Some(&0.0), "{firing:?}");
}
