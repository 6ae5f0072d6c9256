//! Webhook delivery against a real local receiver: retries, refusals, robot error codes.

mod common;

use std::time::{Duration, Instant};

use common::Receiver;
use jiff::Timestamp;
use outcall_monitor::config::NotifierConfig;
use outcall_monitor::notify::{self, NotifyError};
use outcall_monitor::{AlertState, MonitorConfig, RuleKind, Severity, Transition};

fn transition() -> Transition {
    Transition {
        rule: "trunk_down".into(),
        kind: RuleKind::TrunkDown,
        severity: Severity::Critical,
        subject: Some("carrier-b".into()),
        state: AlertState::Firing,
        value: 1.0,
        threshold: 1.0,
        started_at: Timestamp::now(),
        at: Timestamp::now(),
        summary: "trunk carrier-b: 9 of 9 calls failed (100.0 %) over 2m".into(),
    }
}

fn webhook(toml: &str) -> std::sync::Arc<dyn notify::Notifier> {
    let cfg =
        MonitorConfig::from_toml(&format!("[[notifiers]]\nkind = \"webhook\"\n{toml}")).unwrap();
    let NotifierConfig::Webhook(_) = &cfg.notifiers[0] else {
        panic!("not a webhook")
    };
    notify::build(&cfg.notifiers[0]).unwrap()
}

#[tokio::test]
async fn server_errors_are_retried_until_accepted() {
    let rx = Receiver::start().await;
    rx.fail_with(&[500, 503]);
    let n = webhook(&format!("url = \"{}/hook\"", rx.base));
    let started = Instant::now();
    n.notify(&transition()).await.unwrap();
    let got = rx.received("/hook");
    assert_eq!(got.len(), 3, "two failures, then accepted");
    // 0.25 s and 1 s between the tries
    assert!(started.elapsed() >= Duration::from_millis(1250));
    assert!(got
        .iter()
        .all(|r| r.body["alerts"][0]["labels"]["trunk"] == "carrier-b"));
}

#[tokio::test]
async fn three_failures_give_up_with_the_status() {
    let rx = Receiver::start().await;
    rx.fail_with(&[502, 502, 502, 502]);
    let n = webhook(&format!("url = \"{}/hook\"", rx.base));
    let err = n.notify(&transition()).await.unwrap_err();
    assert!(matches!(err, NotifyError::Webhook { .. }));
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(rx.received("/hook").len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let rx = Receiver::start().await;
    rx.fail_with(&[404]);
    let n = webhook(&format!("url = \"{}/hook\"", rx.base));
    let err = n.notify(&transition()).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(rx.received("/hook").len(), 1);
}

#[tokio::test]
async fn robot_error_codes_are_failures_and_tokens_stay_out_of_errors() {
    let rx = Receiver::start().await;
    rx.reply_with(serde_json::json!({"errcode": 93000, "errmsg": "invalid webhook url"}));
    let n = webhook(&format!(
        "format = \"wecom\"\nurl = \"{}/cgi-bin/webhook/send?key=secret-key\"",
        rx.base
    ));
    let err = n.notify(&transition()).await.unwrap_err();
    match &err {
        NotifyError::Refused { code, message, .. } => {
            assert_eq!(*code, 93000);
            assert_eq!(message, "invalid webhook url");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("secret-key"), "{err}");
    assert_eq!(rx.received("/cgi-bin/webhook/send").len(), 1);
}

#[tokio::test]
async fn a_missing_secret_is_refused_when_building() {
    let cfg = MonitorConfig::from_toml(
        "[[notifiers]]\nkind = \"webhook\"\nformat = \"dingtalk\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"OUTCALL_MONITOR_TEST_NO_SUCH_VAR\"",
    )
    .unwrap();
    let err = notify::build(&cfg.notifiers[0]).err().unwrap();
    assert!(
        err.to_string()
            .contains("OUTCALL_MONITOR_TEST_NO_SUCH_VAR is not set"),
        "{err}"
    );
}
