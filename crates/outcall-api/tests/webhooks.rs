//! Status webhooks against a real HTTP receiver: an axum server on 127.0.0.1 (port 0) that
//! records every request and answers as the test tells it (200, 500, or never).
//!
//! Events go in through the [`WebhookSink`] (as the scheduler emits them) and out through the
//! [`WebhookDispatcher`] over TCP, on a SQLite file store: signatures verify with
//! [`verify_signature`], failures are retried with backoff, a receiver that is down for a while
//! loses nothing, and a dispatcher restarted on the same database delivers what was pending.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use jiff::Timestamp;
use outcall_api::webhook::{
    list_deliveries, retry_delivery, verify_signature, DispatcherHandle, SignatureError,
    WebhookConfig, WebhookDispatcher, WebhookSink, WebhookWaker, EVENT_HEADER, EVENT_ID_HEADER,
    SIGNATURE_HEADER,
};
use outcall_api::CampaignService;
use outcall_domain::call::{Call, CallEvent, HangupParty};
use outcall_domain::campaign::{CampaignSpec, StatusEventKind};
use outcall_domain::cdr::CdrContext;
use outcall_domain::{Cdr, Classifier, Outcome};
use outcall_pool::NumberVault;
use outcall_scheduler::{CallEventSink, Clock, StatusEvent};
use outcall_store::sqlite::SqliteStore;
use outcall_store::{Store, WebhookQuery, WebhookStatus};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tower::ServiceExt;

const SECRET: &[u8] = b"test-webhook-secret-0123456789";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// 500 for this many more requests, then 200.
    FailFirst(u32),
    /// Never answers (the client times out or goes away).
    Hang,
    Ok,
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener, mode)
    }

    fn on(listener: tokio::net::TcpListener, mode: Mode) -> Receiver {
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
        };
        let app = Router::new()
            .route("/hooks", post(hook))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut m = r.mode.lock().unwrap();
        match *m {
            Mode::FailFirst(0) | Mode::Ok => StatusCode::OK,
            Mode::FailFirst(n) => {
                *m = Mode::FailFirst(n - 1);
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Mode::Hang => StatusCode::GATEWAY_TIMEOUT, // recorded as such, never sent
        }
    };
    r.log.lock().unwrap().push(Received {
        at: Instant::now(),
        headers,
        body,
        status: status.as_u16(),
    });
    if status == StatusCode::GATEWAY_TIMEOUT {
        std::future::pending::<()>().await;
    }
    status
}

/// A SQLite file store with campaigns; dropped with its directory.
struct Env {
    dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("outcall.db"))
                .await
                .unwrap(),
        );
        Env { dir, store }
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(
            SqliteStore::open(&self.dir.path().join("outcall.db"))
                .await
                .unwrap(),
        );
    }

    async fn campaign(&self, callback: Option<Value>) -> i64 {
        let mut spec = serde_json::json!({ "name": "c", "trunks": ["t"] });
        if let Some(cb) = callback {
            spec["status_callback"] = cb;
        }
        let spec: CampaignSpec = serde_json::from_value(spec).unwrap();
        spec.validate().unwrap();
        self.store
            .create_campaign(&spec, Timestamp::now())
            .await
            .unwrap()
            .id
    }

    fn sink(&self, waker: &WebhookWaker) -> Arc<WebhookSink> {
        WebhookSink::start(self.store.clone(), waker.clone())
    }

    fn dispatcher(&self, cfg: WebhookConfig) -> DispatcherHandle {
        WebhookDispatcher::start(self.store.clone(), cfg, WebhookWaker::default()).unwrap()
    }

    async fn deliveries(
        &self,
        status: Option<WebhookStatus>,
    ) -> Vec<outcall_store::WebhookDelivery> {
        self.store
            .list_webhooks(&WebhookQuery {
                status,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

/// Short waits for tests.
fn config() -> WebhookConfig {
    let mut c = WebhookConfig::new(SECRET.to_vec());
    c.initial_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(400);
    c.request_timeout = Duration::from_secs(5);
    c.lease = Duration::from_secs(10);
    c.idle_poll = Duration::from_secs(5);
    c
}

fn cdr(outcome: Outcome) -> Cdr {
    let mut c = Call::new();
    c.apply(CallEvent::Dial, 1_000).unwrap();
    c.apply(CallEvent::Ringing { status: 180 }, 1_100).unwrap();
    c.apply(CallEvent::Answer { status: 200 }, 3_000).unwrap();
    c.apply(
        CallEvent::Hangup {
            by: HangupParty::Remote,
            q850: Some(16),
        },
        9_000,
    )
    .unwrap();
    let ctx = CdrContext {
        callee_masked: "+86138****0001".into(),
        call_id: "call-1@outcall".into(),
        ..CdrContext::default()
    };
    let mut cdr = Cdr::from_call(&c, &Classifier::default(), ctx);
    cdr.outcome = outcome;
    cdr
}

fn event(kind: StatusEventKind, campaign: i64, attempt: i64) -> StatusEvent {
    let completed = kind == StatusEventKind::Completed;
    StatusEvent {
        kind,
        campaign_id: campaign,
        contact_id: attempt * 10,
        attempt_id: attempt,
        seq: 1,
        at: Timestamp::now(),
        number: "+86138****0001".into(),
        outcome: completed.then_some(Outcome::AnsweredHuman),
        cause: None,
        cdr: completed.then(|| cdr(Outcome::AnsweredHuman)),
    }
}

const ALL: [StatusEventKind; 4] = StatusEventKind::ALL;

/// Polls `f` every 20 ms until it holds; panics with `what` after `limit`.
async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn service(store: Arc<dyn Store>, webhooks: Option<WebhookWaker>) -> Arc<CampaignService> {
    Arc::new(CampaignService {
        store,
        vault: Arc::new(NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).unwrap()),
        scheduler: None,
        clock: Clock::system(),
        default_country_code: "86".into(),
        number_status_ttl: Duration::from_secs(90 * 86400),
        attributor: Arc::new(outcall_pool::number::Attributor::new(None)),
        jobs: Default::default(),
        dedup_false_positive_rate: 0.01,
        webhooks,
    })
}

/// The two handlers, mounted where the API serves them.
fn api(svc: Arc<CampaignService>) -> Router {
    Router::new()
        .route("/v1/webhooks/deliveries", get(list_deliveries))
        .route("/v1/webhooks/deliveries/{id}/retry", post(retry_delivery))
        .with_state(svc)
}

async fn call(router: &Router, method: Method, uri: &str) -> (StatusCode, Value) {
    let res = router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn events_arrive_signed_in_order_with_the_chosen_kinds_only() {
    let env = Env::new().await;
    let rx = Receiver::start(Mode::Ok).await;
    let everything = env
        .campaign(Some(serde_json::json!({ "url": rx.url() })))
        .await;
    let only_completed = env
        .campaign(Some(
            serde_json::json!({ "url": rx.url(), "events": ["completed"] }),
        ))
        .await;
    let silent = env.campaign(None).await;
    let d = env.dispatcher(config());
    let sink = env.sink(&d.waker());
    for kind in ALL {
        sink.emit(event(kind, everything, 1));
        sink.emit(event(kind, only_completed, 2));
        sink.emit(event(kind, silent, 3));
    }
    until(Duration::from_secs(10), "5 deliveries", async || {
        rx.accepted().len() >= 5
    })
    .await;
    sink.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await; // nothing more comes
    let got = rx.received();
    assert_eq!(
        got.len(),
        5,
        "4 events of attempt 1, completed of attempt 2"
    );
    let kinds = |attempt: i64| -> Vec<String> {
        got.iter()
            .map(Received::json)
            .filter(|p| p["attempt_id"] == attempt)
            .map(|p| p["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(1), ["initiated", "ringing", "answered", "completed"]);
    assert_eq!(kinds(2), ["completed"]);
    assert!(kinds(3).is_empty(), "no status_callback: nothing sent");

    let now = SystemTime::now();
    let tolerance = Duration::from_secs(300);
    for r in &got {
        let p = r.json();
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "attempt_id",
                "campaign_id",
                "cause",
                "cdr",
                "contact_id",
                "event",
                "event_id",
                "number",
                "outcome",
                "seq",
                "timestamp"
            ]
        );
        assert_eq!(r.header(EVENT_ID_HEADER), p["event_id"]);
        assert!(p["event_id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(r.header(EVENT_HEADER), p["event"]);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(p["number"], "+86138****0001");
        assert_eq!(p["seq"], 1);
        assert!(p["timestamp"]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .is_ok());
        let sig = r.header(SIGNATURE_HEADER);
        assert!(sig.starts_with("t=") && sig.contains(",v1="), "{sig}");
        assert_eq!(
            verify_signature(SECRET, sig, &r.body, now, tolerance),
            Ok(())
        );
        // One changed byte, another secret, or an old request: refused.
        let mut tampered = r.body.to_vec();
        let i = tampered.iter().position(|b| *b == b'1').unwrap();
        tampered[i] = b'2';
        assert_eq!(
            verify_signature(SECRET, sig, &tampered, now, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"some-other-secret-123", sig, &r.body, now, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(
                SECRET,
                sig,
                &r.body,
                now + Duration::from_secs(900),
                tolerance
            ),
            Err(SignatureError::Stale(_))
        ));
        if p["event"] == "completed" {
            assert_eq!(p["outcome"], "answered_human");
            assert_eq!(p["cdr"]["callee"], "+86138****0001");
            assert_eq!(p["cdr"]["call_id"], "call-1@outcall");
            assert_eq!(p["cdr"]["billsec"], 6);
            assert!(p["cause"].is_null());
        } else {
            assert!(p["outcome"].is_null() && p["cdr"].is_null());
        }
    }
    // An attempt's events arrive one after the other, never in parallel.
    let first: Vec<&Received> = got.iter().filter(|r| r.json()["attempt_id"] == 1).collect();
    assert!(first.windows(2).all(|w| w[0].at <= w[1].at));

    // The outbox: all delivered, first try, 200.
    let all = env.deliveries(None).await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|d| d.status == WebhookStatus::Delivered
        && d.tries == 1
        && d.last_http_status == Some(200)
        && d.delivered_at.is_some()));
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_backoff_then_the_event() {
    let env = Env::new().await;
    let rx = Receiver::start(Mode::FailFirst(3)).await;
    let c = env
        .campaign(Some(
            serde_json::json!({ "url": rx.url(), "events": ["completed"] }),
        ))
        .await;
    let d = env.dispatcher(config());
    let sink = env.sink(&d.waker());
    sink.emit(event(StatusEventKind::Completed, c, 7));
    until(Duration::from_secs(10), "the event accepted", async || {
        !rx.accepted().is_empty()
    })
    .await;
    let got = rx.received();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    let ids: HashSet<&str> = got.iter().map(|r| r.header(EVENT_ID_HEADER)).collect();
    assert_eq!(ids.len(), 1, "every retry carries the same event id");
    assert!(
        got.windows(2).all(|w| w[0].body == w[1].body),
        "and the same body"
    );
    // Waits of 50, 100, 200 ms between tries (exponential backoff).
    for (w, min) in got.windows(2).zip([50u64, 100, 200]) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(min) && gap < Duration::from_millis(min + 1000),
            "gap {gap:?}, expected about {min} ms"
        );
    }
    let all = env.deliveries(None).await;
    assert_eq!(all.len(), 1);
    let one = &all[0];
    assert_eq!(
        (
            one.status,
            one.tries,
            one.last_http_status,
            one.last_error.as_deref()
        ),
        (WebhookStatus::Delivered, 4, Some(200), None)
    );
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_given_up_delivery_is_listed_and_an_operator_retry_delivers_it() {
    let env = Env::new().await;
    let rx = Receiver::start(Mode::FailFirst(u32::MAX)).await;
    let c = env
        .campaign(Some(serde_json::json!({ "url": rx.url() })))
        .await;
    let other = env
        .campaign(Some(
            serde_json::json!({ "url": rx.url(), "events": ["answered"] }),
        ))
        .await;
    let mut cfg = config();
    cfg.max_tries = 3;
    let d = env.dispatcher(cfg);
    let sink = env.sink(&d.waker());
    sink.emit(event(StatusEventKind::Initiated, c, 1));
    sink.emit(event(StatusEventKind::Ringing, c, 1));
    sink.emit(event(StatusEventKind::Answered, other, 2));
    until(Duration::from_secs(10), "three given up", async || {
        env.deliveries(Some(WebhookStatus::Failed)).await.len() == 3
    })
    .await;
    // Three tries each; a given-up event does not hold back the next one of its attempt.
    assert_eq!(rx.received().len(), 9);
    let svc = service(env.store.clone(), Some(d.waker()));
    let router = api(svc);
    let (st, body) = call(
        &router,
        Method::GET,
        "/v1/webhooks/deliveries?status=failed",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let list = body["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for x in list {
        assert_eq!(x["status"], "failed");
        assert_eq!(x["tries"], 3);
        assert_eq!(x["last_http_status"], 500);
        assert_eq!(x["last_error"], "HTTP 500 Internal Server Error");
        assert_eq!(x["payload"]["number"], "+86138****0001");
    }
    assert!(body["next_after"].is_null());
    // Filters and paging.
    let (_, mine) = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/deliveries?campaign_id={other}"),
    )
    .await;
    assert_eq!(mine["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(mine["deliveries"][0]["event"], "answered");
    let (_, page) = call(&router, Method::GET, "/v1/webhooks/deliveries?limit=2").await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_i64().unwrap();
    let (_, rest) = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/deliveries?limit=2&after={after}"),
    )
    .await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1);
    assert!(rest["next_after"].is_null());
    let (st, e) = call(&router, Method::GET, "/v1/webhooks/deliveries?status=lost").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["error"]["code"], "invalid_request");

    // The receiver is fixed; the operator retries one.
    rx.set(Mode::Ok);
    let id = list[0]["id"].as_i64().unwrap();
    let (st, r) = call(
        &router,
        Method::POST,
        &format!("/v1/webhooks/deliveries/{id}/retry"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["tries"].as_u64()),
        (Some("pending"), Some(0))
    );
    until(Duration::from_secs(5), "the retried event", async || {
        rx.accepted().len() == 1
    })
    .await;
    assert_eq!(
        rx.accepted()[0].header(EVENT_ID_HEADER),
        list[0]["event_id"]
    );
    until(
        Duration::from_secs(5),
        "recorded as delivered",
        async || env.store.get_webhook(id).await.unwrap().status == WebhookStatus::Delivered,
    )
    .await;
    // Retrying what is not failed, or nothing at all.
    let (st, e) = call(
        &router,
        Method::POST,
        &format!("/v1/webhooks/deliveries/{id}/retry"),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (st, e) = call(&router, Method::POST, "/v1/webhooks/deliveries/999/retry").await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (st, _) = call(&router, Method::POST, "/v1/webhooks/deliveries/x/retry").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_receiver_down_for_a_while_loses_nothing() {
    let env = Env::new().await;
    // A port with nothing listening on it (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks");
    let c = env
        .campaign(Some(
            serde_json::json!({ "url": url, "events": ["initiated", "ringing", "completed"] }),
        ))
        .await;
    let mut cfg = config();
    cfg.max_tries = 1000;
    cfg.concurrency = 4;
    let d = env.dispatcher(cfg);
    let sink = env.sink(&d.waker());
    for attempt in 1..=10 {
        for kind in ALL {
            sink.emit(event(kind, c, attempt));
        }
    }
    sink.flush().await;
    // Connections are refused, tries are counted and rescheduled.
    until(Duration::from_secs(10), "failed tries", async || {
        env.deliveries(Some(WebhookStatus::Pending))
            .await
            .iter()
            .filter(|d| d.tries >= 3)
            .count()
            == 10
    })
    .await;
    let pending = env.deliveries(Some(WebhookStatus::Pending)).await;
    assert_eq!(pending.len(), 30);
    assert!(pending.iter().filter(|d| d.tries > 0).all(|d| d
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("cannot connect")
        && d.last_http_status.is_none()));
    assert!(
        pending
            .iter()
            .all(|d| d.tries == 0 || d.event == "initiated"),
        "an attempt's later events wait for its first"
    );
    // The receiver comes up on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let rx = Receiver::on(listener, Mode::Ok);
    until(
        Duration::from_secs(15),
        "every event delivered",
        async || env.deliveries(Some(WebhookStatus::Delivered)).await.len() == 30,
    )
    .await;
    let outbox: HashSet<String> = env
        .deliveries(None)
        .await
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    let got = rx.received();
    let mut bodies: BTreeMap<String, Bytes> = BTreeMap::new();
    for r in &got {
        let id = r.header(EVENT_ID_HEADER).to_string();
        if let Some(b) = bodies.insert(id.clone(), r.body.clone()) {
            assert_eq!(b, r.body, "a duplicate is the same event");
        }
    }
    let seen: HashSet<String> = bodies.keys().cloned().collect();
    assert_eq!(seen, outbox, "every event arrived, none invented");
    assert_eq!(seen.len(), 30);
    for attempt in 1..=10 {
        let order: Vec<String> = got
            .iter()
            .map(Received::json)
            .filter(|p| p["attempt_id"] == attempt)
            .map(|p| p["event"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            order,
            ["initiated", "ringing", "completed"],
            "attempt {attempt}"
        );
    }
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_dispatcher_restarted_on_the_same_database_delivers_what_was_pending() {
    let mut env = Env::new().await;
    // The receiver takes the requests but never answers: the first dispatcher dies mid-try.
    let rx = Receiver::start(Mode::Hang).await;
    let c = env
        .campaign(Some(
            serde_json::json!({ "url": rx.url(), "events": ["completed"] }),
        ))
        .await;
    let mut cfg = config();
    cfg.lease = Duration::from_secs(1);
    cfg.request_timeout = Duration::from_secs(30);
    let first = env.dispatcher(cfg.clone());
    let sink = env.sink(&first.waker());
    for attempt in 1..=5 {
        sink.emit(event(StatusEventKind::Completed, c, attempt));
    }
    until(
        Duration::from_secs(10),
        "5 requests in flight",
        async || rx.received().len() == 5,
    )
    .await;
    let crashed_at = Instant::now();
    first.shutdown(Duration::ZERO).await; // aborted with its requests in flight
                                          // Events not yet tried at all also survive: one more, written while nothing delivers.
    sink.emit(event(StatusEventKind::Completed, c, 6));
    sink.flush().await;
    env.reopen().await;
    assert_eq!(env.deliveries(Some(WebhookStatus::Pending)).await.len(), 6);

    rx.set(Mode::Ok);
    let second = env.dispatcher(cfg);
    until(
        Duration::from_secs(10),
        "every event delivered",
        async || env.deliveries(Some(WebhookStatus::Delivered)).await.len() == 6,
    )
    .await;
    let accepted = rx.accepted();
    let ids: HashSet<&str> = accepted.iter().map(|r| r.header(EVENT_ID_HEADER)).collect();
    assert_eq!(ids.len(), 6);
    // The five that were in flight came again after their lease, with the same id and body.
    let hung: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.status != 200)
        .collect();
    assert_eq!(hung.len(), 5);
    for h in &hung {
        let again = accepted
            .iter()
            .find(|a| a.header(EVENT_ID_HEADER) == h.header(EVENT_ID_HEADER))
            .expect("redelivered");
        assert_eq!(again.body, h.body);
        assert!(again.at >= crashed_at);
    }
    second.shutdown(Duration::from_secs(1)).await;
}
