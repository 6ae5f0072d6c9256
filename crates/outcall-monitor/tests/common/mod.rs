//! A local HTTP receiver for webhook tests and a scripted metrics source.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
struct Shared {
    got: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; 200 with `reply` once exhausted.
    statuses: Arc<Mutex<Vec<u16>>>,
    reply: Arc<Mutex<Value>>,
}

/// An HTTP server on 127.0.0.1 that records every POST.
pub struct Receiver {
    pub base: String,
    shared: Shared,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Shared::default();
        *shared.reply.lock().unwrap() = serde_json::json!({"errcode": 0, "errmsg": "ok"});
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, shared }
    }

    /// Answers the next requests with these statuses.
    pub fn fail_with(&self, statuses: &[u16]) {
        *self.shared.statuses.lock().unwrap() = statuses.to_vec();
    }

    /// The JSON body of 200 answers.
    pub fn reply_with(&self, body: Value) {
        *self.shared.reply.lock().unwrap() = body;
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `n` requests (panics after `limit`).
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {} of {n} requests after {limit:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State(s): State<Shared>,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        query,
        body,
    });
    let next = {
        let mut st = s.statuses.lock().unwrap();
        (!st.is_empty()).then(|| st.remove(0))
    };
    match next {
        Some(code) => (
            StatusCode::from_u16(code).unwrap(),
            "scripted failure".to_string(),
        ),
        None => (StatusCode::OK, s.reply.lock().unwrap().to_string()),
    }
}

/// Exposition text of a node that finished `answered` calls and `congested` failed ones on
/// trunk `carrier-a`.
pub fn calls_text(answered: u64, congested: u64) -> String {
    format!(
        "# TYPE outcall_calls_total counter\n\
         outcall_calls_total{{outcome=\"answered_human\",trunk=\"carrier-a\",campaign=\"1\"}} {answered}\n\
         outcall_calls_total{{outcome=\"congestion\",trunk=\"carrier-a\",campaign=\"1\"}} {congested}\n"
    )
}

/// A node whose calls fail at 40 % for the first `failing` scrapes (10 calls per scrape), then
/// all get answered. Returns the text function and the scrape counter.
pub fn scripted_failures(failing: u64) -> (impl Fn() -> String + Send + Sync, Arc<AtomicU64>) {
    let scrapes = Arc::new(AtomicU64::new(0));
    let n = scrapes.clone();
    let f = move || {
        let k = n.fetch_add(1, Ordering::SeqCst);
        let bad = k.min(failing);
        let good = k - bad;
        calls_text(6 * bad + 10 * good, 4 * bad)
    };
    (f, scrapes)
}
