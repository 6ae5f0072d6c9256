//! HttpSource against real local `/metrics` endpoints: sums nodes, survives a node's restart
//! and absence, sends the bearer token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use outcall_monitor::expo::{Labels, Snapshot};
use outcall_monitor::{HttpSource, MetricsSource};

#[derive(Clone)]
struct Node {
    text: Arc<Mutex<String>>,
    up: Arc<Mutex<bool>>,
}

impl Node {
    async fn start() -> (Self, String) {
        let node = Node {
            text: Arc::new(Mutex::new(String::new())),
            up: Arc::new(Mutex::new(true)),
        };
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (node, url)
    }

    fn set(&self, answered: u64, due: u64) {
        *self.text.lock().unwrap() = format!(
            "# TYPE outcall_calls_total counter\n\
             outcall_calls_total{{outcome=\"answered_human\",trunk=\"a\",campaign=\"1\"}} {answered}\n\
             # TYPE outcall_queue_due_tasks gauge\n\
             outcall_queue_due_tasks {due}\n"
        );
    }
}

async fn metrics(State(n): State<Node>, headers: HeaderMap) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-1") {
        return (StatusCode::UNAUTHORIZED, "unauthorized".into());
    }
    if !*n.up.lock().unwrap() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining".into());
    }
    (StatusCode::OK, n.text.lock().unwrap().clone())
}

fn answered(s: &Snapshot) -> f64 {
    let labels: Labels = [
        ("outcome", "answered_human"),
        ("trunk", "a"),
        ("campaign", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    s.get("outcall_calls_total", &labels).unwrap()
}

async fn scrape(src: &HttpSource) -> Snapshot {
    let text = src.scrape().await.unwrap();
    let (s, malformed) = Snapshot::from_text(&text);
    assert_eq!(malformed, 0, "{text}");
    s
}

#[tokio::test]
async fn nodes_are_summed_and_restarts_or_outages_do_not_look_like_resets() {
    let (a, url_a) = Node::start().await;
    let (b, url_b) = Node::start().await;
    a.set(100, 3);
    b.set(50, 4);
    let src = HttpSource::new(
        &[url_a.clone(), url_b.clone()],
        Some("tok-1".into()),
        Duration::from_secs(5),
    )
    .unwrap();
    let s = scrape(&src).await;
    assert_eq!(answered(&s), 150.0);
    assert_eq!(s.total("outcall_queue_due_tasks"), Some(7.0));

    // B restarts and renders no call counter until its first call: B's 50 still count.
    *b.text.lock().unwrap() = "outcall_queue_due_tasks 0\n".into();
    let s = scrape(&src).await;
    assert_eq!(answered(&s), 150.0);
    // Its counter starts again from 5; the sum goes on from 150.
    b.set(5, 1);
    let s = scrape(&src).await;
    assert_eq!(answered(&s), 155.0);
    // Gauges are not cumulative: they are summed as they are.
    assert_eq!(s.total("outcall_queue_due_tasks"), Some(4.0));

    // A stops answering: its last samples stand in, so the sum does not drop.
    *a.up.lock().unwrap() = false;
    b.set(7, 1);
    let s = scrape(&src).await;
    assert_eq!(answered(&s), 157.0);

    // Nobody answers: the scrape fails.
    *b.up.lock().unwrap() = false;
    let err = src.scrape().await.unwrap_err();
    assert!(err.contains("503"), "{err}");

    // Without the right token every node refuses.
    let wrong =
        HttpSource::new(&[url_a, url_b], Some("nope".into()), Duration::from_secs(5)).unwrap();
    let err = wrong.scrape().await.unwrap_err();
    assert!(err.contains("401"), "{err}");
}
