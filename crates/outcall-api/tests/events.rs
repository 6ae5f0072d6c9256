//! `GET /v1/events` through the router: events appended to the store come back oldest first,
//! filtered by kind, subject and time, paged by cursor; who may read them.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jiff::Timestamp;
use outcall_api::auth::{format_api_key, new_api_key_secret, Role};
use outcall_api::http::{openapi, router};
use outcall_api::{access::Access, auth::TokenSigner, CampaignService};
use outcall_pool::NumberVault;
use outcall_scheduler::Clock;
use outcall_store::access::NewApiKey;
use outcall_store::events::{kind, severity};
use outcall_store::sqlite::SqliteStore;
use outcall_store::{NewSystemEvent, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

struct Node {
    router: Router,
    store: Arc<dyn Store>,
}

async fn node() -> Node {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let svc = CampaignService {
        store: store.clone(),
        vault: Arc::new(NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).unwrap()),
        scheduler: None,
        clock: Clock::system(),
        default_country_code: "86".into(),
        number_status_ttl: std::time::Duration::from_secs(90 * 86400),
        attributor: Arc::new(outcall_pool::number::Attributor::new(None)),
        jobs: Default::default(),
        dedup_false_positive_rate: 0.01,
        webhooks: None,
    };
    let access = Arc::new(Access::new(
        store.clone(),
        TokenSigner::new(&[5; 32]).unwrap(),
        Default::default(),
    ));
    Node {
        router: router(Arc::new(svc), access),
        store,
    }
}

impl Node {
    async fn key(&self, role: Role) -> String {
        let (secret, hash) = new_api_key_secret();
        let k = self
            .store
            .create_api_key(
                &NewApiKey {
                    name: format!("{role:?}"),
                    role: role.as_str().into(),
                    secret_hash: hash,
                    created_by: "tests".into(),
                },
                Timestamp::now(),
            )
            .await
            .unwrap();
        format_api_key(k.id, &secret)
    }

    async fn get(&self, uri: &str, auth: &str) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {auth}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn append(&self, at: &str, kind: &str, subject: &str, sev: &str, factor: f64) -> i64 {
        self.store
            .append_event(&NewSystemEvent {
                at: at.parse().unwrap(),
                kind: kind.into(),
                subject: subject.into(),
                severity: sev.into(),
                message: format!("trunk {subject}: {kind}"),
                details: json!({ "trunk": subject, "factor": factor, "samples": 12 }),
            })
            .await
            .unwrap()
            .id
    }
}

fn ids(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_read_back_filtered_and_paged_by_those_allowed() {
    let n = node().await;
    let e1 = n
        .append(
            "2026-11-23T02:00:00Z",
            kind::TRUNK_DEGRADED,
            "carrier-a",
            severity::WARNING,
            0.5,
        )
        .await;
    let e2 = n
        .append(
            "2026-11-23T02:00:05Z",
            kind::TRUNK_CIRCUIT_OPEN,
            "carrier-a",
            severity::CRITICAL,
            0.1,
        )
        .await;
    let e3 = n
        .append(
            "2026-11-23T02:00:10Z",
            kind::TRUNK_DEGRADED,
            "carrier-b",
            severity::WARNING,
            0.5,
        )
        .await;
    let e4 = n
        .append(
            "2026-11-23T02:00:35Z",
            kind::TRUNK_CIRCUIT_HALF_OPEN,
            "carrier-a",
            severity::INFO,
            0.1,
        )
        .await;
    let e5 = n
        .append(
            "2026-11-23T02:01:40Z",
            kind::TRUNK_RECOVERED,
            "carrier-b",
            severity::INFO,
            1.0,
        )
        .await;
    let operator = n.key(Role::Operator).await;

    // Everything, oldest first, as stored.
    let (s, page) = n.get("/v1/events", &operator).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), [e1, e2, e3, e4, e5]);
    assert_eq!(page["next_after_id"], Value::Null, "not a full page");
    let first = &page["events"][1];
    assert_eq!(first["kind"], "trunk.circuit_open");
    assert_eq!(first["subject"], "carrier-a");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["at"], "2026-11-23T02:00:05Z");
    assert_eq!(first["message"], "trunk carrier-a: trunk.circuit_open");
    assert_eq!(
        first["details"],
        json!({ "trunk": "carrier-a", "factor": 0.1, "samples": 12 })
    );

    let (_, page) = n.get("/v1/events?kind=trunk.degraded", &operator).await;
    assert_eq!(ids(&page), [e1, e3]);
    let (_, page) = n.get("/v1/events?subject=carrier-a", &operator).await;
    assert_eq!(ids(&page), [e1, e2, e4]);
    let (_, page) = n
        .get(
            "/v1/events?kind=trunk.degraded&subject=carrier-b",
            &operator,
        )
        .await;
    assert_eq!(ids(&page), [e3]);
    let (_, page) = n
        .get("/v1/events?since=2026-11-23T02:00:10Z", &operator)
        .await;
    assert_eq!(ids(&page), [e3, e4, e5], "since is inclusive");
    let (_, page) = n.get("/v1/events?kind=alert.firing", &operator).await;
    assert_eq!(ids(&page), Vec::<i64>::new());

    // Pages of two by cursor.
    let mut seen = Vec::new();
    let mut uri = "/v1/events?limit=2".to_string();
    loop {
        let (s, page) = n.get(&uri, &operator).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let got = ids(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page["next_after_id"].as_i64() {
            Some(next) => uri = format!("/v1/events?limit=2&after_id={next}"),
            None => break,
        }
    }
    assert_eq!(seen, [e1, e2, e3, e4, e5]);
    // A poller that keeps the last id it saw gets only what is new.
    let (_, page) = n.get(&format!("/v1/events?after_id={e5}"), &operator).await;
    assert_eq!(ids(&page), Vec::<i64>::new());
    let e6 = n
        .append(
            "2026-11-23T02:02:00Z",
            kind::TRUNK_CIRCUIT_CLOSED,
            "carrier-a",
            severity::INFO,
            0.1,
        )
        .await;
    let (_, page) = n.get(&format!("/v1/events?after_id={e5}"), &operator).await;
    assert_eq!(ids(&page), [e6]);

    // Bad input is refused with a message that says why.
    let (s, v) = n.get("/v1/events?since=yesterday", &operator).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("since"));

    // Admins and auditors read them too; agents do not.
    for role in [Role::Admin, Role::Auditor] {
        let (s, page) = n.get("/v1/events", &n.key(role).await).await;
        assert_eq!(s, StatusCode::OK, "{role:?}");
        assert_eq!(ids(&page).len(), 6);
    }
    let (s, v) = n.get("/v1/events", &n.key(Role::Agent).await).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
}

#[test]
fn the_route_is_documented_with_its_permission() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let get = &doc["paths"]["/v1/events"]["get"];
    assert_eq!(get["security"], json!([{ "bearer": ["events:read"] }]));
    let params: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["kind", "subject", "since", "after_id", "limit"]);
}
