//! Changing and deleting campaigns, and caller-ID pools, through the router: which statuses
//! allow it, validation, what a deletion removes from the store and the disk, the audit trail.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use outcall_api::auth::{format_api_key, new_api_key_secret, Role};
use outcall_api::http::router;
use outcall_api::{access::Access, auth::TokenSigner, CampaignService};
use outcall_domain::campaign::CampaignStatus;
use outcall_domain::Outcome;
use outcall_pool::NumberVault;
use outcall_scheduler::Clock;
use outcall_store::access::NewApiKey;
use outcall_store::sqlite::SqliteStore;
use outcall_store::{AttemptQuery, ContactNext, Store, StoreError};
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
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        format_api_key(k.id, &secret)
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        auth: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {auth}"));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req.body(body.map(Body::from).unwrap_or_default()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.raw(method, uri, auth, body.map(|b| b.to_string()))
            .await
    }

    async fn campaign(&self, auth: &str, spec: Value) -> i64 {
        let (s, v) = self
            .call(Method::POST, "/v1/campaigns", auth, Some(spec))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_i64().unwrap()
    }

    async fn act(&self, auth: &str, id: i64, action: &str) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/v1/campaigns/{id}/{action}"),
                auth,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
    }

    async fn patch(&self, auth: &str, id: i64, body: Value) -> (StatusCode, Value) {
        self.call(
            Method::PATCH,
            &format!("/v1/campaigns/{id}"),
            auth,
            Some(body),
        )
        .await
    }

    async fn delete(&self, auth: &str, uri: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, uri, auth, None).await
    }

    async fn audit(&self, auth: &str, action: &str) -> Vec<Value> {
        let (s, v) = self
            .call(
                Method::GET,
                &format!("/v1/audit?action={action}&limit=1000"),
                auth,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["entries"].as_array().unwrap().clone()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

fn base() -> Value {
    json!({ "name": "reminder", "trunks": ["carrier-a"], "max_cps": 5, "max_concurrent": 10 })
}

#[tokio::test]
async fn update_only_drafts_and_paused_campaigns_and_audit_the_changed_fields() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let operator = n.key(Role::Operator).await;
    let id = n.campaign(&operator, base()).await;

    let (s, v) = n
        .patch(&operator, id, json!({ "max_cps": 7.5, "prompt": "p.wav" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["max_cps"], &v["prompt"], &v["name"], &v["status"]),
        (
            &json!(7.5),
            &json!("p.wav"),
            &json!("reminder"),
            &json!("draft")
        )
    );
    let (_, got) = n
        .call(Method::GET, &format!("/v1/campaigns/{id}"), &operator, None)
        .await;
    assert_eq!(got, v, "stored");
    // `null` puts a field back to its default.
    let (s, v) = n.patch(&operator, id, json!({ "prompt": null })).await;
    assert_eq!((s, &v["prompt"]), (StatusCode::OK, &Value::Null));
    // The same values again: nothing changes.
    let (s, _) = n.patch(&operator, id, json!({ "max_cps": 7.5 })).await;
    assert_eq!(s, StatusCode::OK);

    n.act(&operator, id, "start").await;
    let (s, v) = n.patch(&operator, id, json!({ "max_cps": 9 })).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "illegal_transition"));
    assert!(
        message(&v).contains("running") && message(&v).contains("pause it first"),
        "{v}"
    );

    n.act(&operator, id, "pause").await;
    let (s, v) = n
        .patch(&operator, id, json!({ "name": "renamed", "max_cps": 9 }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["name"], &v["status"]),
        (&json!("renamed"), &json!("paused"))
    );
    let (_, list) = n.call(Method::GET, "/v1/campaigns", &operator, None).await;
    assert_eq!(list[0]["name"], "renamed");

    n.act(&operator, id, "cancel").await;
    let (s, v) = n.patch(&operator, id, json!({ "max_cps": 1 })).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "illegal_transition"));
    assert!(message(&v).contains("canceled"), "{v}");

    let (s, v) = n.patch(&operator, 999, json!({ "max_cps": 1 })).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "campaign_not_found"));

    let log = n.audit(&admin, "campaign.update").await;
    let changed: Vec<&Value> = log.iter().map(|e| &e["detail"]["changed"]).collect();
    assert_eq!(
        changed,
        [
            &json!(["max_cps", "prompt"]),
            &json!(["prompt"]),
            &json!([]),
            &json!(["max_cps", "name"])
        ]
    );
    assert!(log
        .iter()
        .all(|e| e["target"] == format!("campaign:{id}") && e["actor"] == "key:2"));
}

#[tokio::test]
async fn update_is_validated_like_a_new_spec() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let id = n.campaign(&admin, base()).await;
    let (_, before) = n
        .call(Method::GET, &format!("/v1/campaigns/{id}"), &admin, None)
        .await;

    // The same refusal as for a new spec.
    let mut bad_new = base();
    bad_new["max_cps"] = json!(0);
    let (s, created) = n
        .call(Method::POST, "/v1/campaigns", &admin, Some(bad_new))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = n.patch(&admin, id, json!({ "max_cps": 0 })).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_campaign")
    );
    assert_eq!(v, created);

    for (patch, why) in [
        (json!({ "trunks": [] }), "at least one trunk"),
        (json!({ "ring_timeout_secs": 0 }), "ring_timeout_secs"),
        (
            json!({ "windows": { "time_zone": "Nowhere/City", "weekly": { "daily": ["09:00-18:00"] } } }),
            "Nowhere/City",
        ),
        (
            json!({ "status_callback": { "url": "ftp://h/" } }),
            "status_callback",
        ),
        (json!({ "max_cps": "fast" }), "max_cps"),
        (json!({ "bogus": 1 }), "unknown field `bogus`"),
        (json!({ "status": "running" }), "unknown field `status`"),
        (json!({ "name": null }), "missing field `name`"),
        (
            json!({ "caller_ids": ["1"], "caller_id_pool": "sales" }),
            "not both",
        ),
    ] {
        let (s, v) = n.patch(&admin, id, patch.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_campaign"),
            "{patch}: {v}"
        );
        assert!(message(&v).contains(why), "{patch}: {v}");
    }
    for raw in ["[1, 2]", "\"x\"", "not json", ""] {
        let (s, v) = n
            .raw(
                Method::PATCH,
                &format!("/v1/campaigns/{id}"),
                &admin,
                Some(raw.into()),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{raw:?}: {v}"
        );
    }
    let (_, after) = n
        .call(Method::GET, &format!("/v1/campaigns/{id}"), &admin, None)
        .await;
    assert_eq!(after, before, "nothing was written");
    assert!(n.audit(&admin, "campaign.update").await.is_empty());
}

/// Two finished attempts of the campaign's first two contacts, the first recorded under
/// `dir/recordings/<campaign>/`; returns the recording's path.
async fn attempts(n: &Node, cid: i64, dir: &std::path::Path) -> std::path::PathBuf {
    let now = jiff::Timestamp::now();
    let mut recording = None;
    let due = n.store.due_contacts(cid, now, 10).await.unwrap();
    for (i, contact) in due.iter().take(2).enumerate() {
        let start = n
            .store
            .begin_attempt(contact.id, "node-a", now)
            .await
            .unwrap()
            .unwrap();
        let path = (i == 0).then(|| {
            let d = dir.join(format!("recordings/{cid}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join(format!("{}.wav", start.attempt_id));
            std::fs::write(&p, b"RIFF....WAVEfmt fake audio").unwrap();
            recording = Some(p.clone());
            p.display().to_string()
        });
        let cdr: outcall_domain::Cdr = serde_json::from_value(json!({
            "attempt_id": "a", "trace_id": "t", "call_id": "c", "trunk": "t", "node": "node-a",
            "caller_id": "1", "callee": contact.masked, "final_state": "completed",
            "outcome": "answered_human", "sip_status": 200, "q850_cause": null,
            "queued_at_ms": null, "invite_at_ms": null, "ring_at_ms": null,
            "early_media_at_ms": null, "answer_at_ms": null, "end_at_ms": null, "setup_ms": null,
            "duration_ms": 5000, "billsec": 4, "hangup_by": null, "early_media": false,
            "dtmf": "", "recording": path, "rtp_packets_sent": 0,
            "rtp_packets_received": 0, "rtp_packets_lost": 0
        }))
        .unwrap();
        n.store
            .finish_attempt(
                start.attempt_id,
                Outcome::AnsweredHuman,
                None,
                Some(&cdr),
                ContactNext::Done {
                    outcome: Outcome::AnsweredHuman,
                },
                now,
            )
            .await
            .unwrap();
    }
    recording.unwrap()
}

#[tokio::test]
async fn delete_only_finished_or_draft_campaigns_with_their_contacts_attempts_and_recordings() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let operator = n.key(Role::Operator).await;
    let dir = tempfile::tempdir().unwrap();
    let id = n.campaign(&operator, base()).await;
    let kept = n.campaign(&operator, base()).await;
    for c in [id, kept] {
        let (s, v) = n
            .call(
                Method::POST,
                &format!("/v1/campaigns/{c}/contacts"),
                &operator,
                Some(json!(["13812345678", "13812345679", "13812345670"])),
            )
            .await;
        assert_eq!((s, &v["added"]), (StatusCode::OK, &json!(3)), "{v}");
    }
    n.act(&operator, id, "start").await;
    let recording = attempts(&n, id, dir.path()).await;
    attempts(&n, kept, dir.path()).await;
    let (s, v) = n
        .call(
            Method::POST,
            "/v1/blacklist",
            &operator,
            Some(json!([{ "number": "13900000000", "reason": "asked", "campaign_id": id }])),
        )
        .await;
    assert_eq!((s, &v["added"]), (StatusCode::OK, &json!(1)), "{v}");

    // Running, then paused: refused.
    let uri = format!("/v1/campaigns/{id}");
    let (s, v) = n.delete(&operator, &uri).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "illegal_transition"));
    assert!(
        message(&v).contains("running") && message(&v).contains("cancel it first"),
        "{v}"
    );
    n.act(&operator, id, "pause").await;
    let (s, v) = n.delete(&operator, &uri).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "illegal_transition"));
    assert!(recording.exists());
    assert_eq!(n.store.list_attempts(id, None, 10).await.unwrap().len(), 2);

    n.act(&operator, id, "cancel").await;
    let contact_ids: Vec<i64> = n
        .store
        .list_contacts(id, None, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(contact_ids.len(), 3);
    let (s, v) = n.delete(&operator, &uri).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // Gone from the store and the disk.
    assert!(matches!(
        n.store.get_campaign(id).await,
        Err(StoreError::NotFound { .. })
    ));
    for c in contact_ids {
        assert!(matches!(
            n.store.get_contact(c).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert!(n
        .store
        .list_contacts(id, None, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(n
        .store
        .list_attempts(id, None, 10)
        .await
        .unwrap()
        .is_empty());
    let everywhere = n
        .store
        .query_attempts(&AttemptQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(everywhere.iter().all(|a| a.campaign_id == kept));
    assert_eq!(everywhere.len(), 2);
    assert!(!recording.exists());
    assert!(
        !recording.parent().unwrap().exists(),
        "the empty directory too"
    );
    let (s, v) = n.call(Method::GET, &uri, &operator, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "campaign_not_found"));
    let (s, _) = n.delete(&operator, &uri).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, bl) = n.call(Method::GET, "/v1/blacklist", &operator, None).await;
    assert_eq!(
        bl.as_array().unwrap().len(),
        0,
        "its own blacklist entry went too"
    );

    // The other campaign is whole.
    let (s, stats) = n
        .call(
            Method::GET,
            &format!("/v1/campaigns/{kept}/stats"),
            &operator,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stats["attempts"], 2);
    assert_eq!(
        n.store
            .list_contacts(kept, None, 0, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // A draft and a completed campaign can go too.
    let draft = n.campaign(&operator, base()).await;
    let (s, _) = n.delete(&operator, &format!("/v1/campaigns/{draft}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    n.act(&operator, kept, "start").await;
    n.store
        .set_campaign_status(
            kept,
            CampaignStatus::Running,
            CampaignStatus::Completed,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let (s, _) = n.delete(&admin, &format!("/v1/campaigns/{kept}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(n.store.list_campaigns().await.unwrap().is_empty());

    let log = n.audit(&admin, "campaign.delete").await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["target"], format!("campaign:{id}"));
    assert_eq!(log[0]["actor"], "key:2");
    assert_eq!(
        log[0]["detail"],
        json!({
            "name": "reminder", "contacts": 3, "attempts": 2, "webhooks": 0, "blacklist": 1,
            "recordings_deleted": 1
        })
    );
    assert_eq!(log[1]["detail"]["contacts"], 0);
    assert_eq!(log[2]["detail"]["attempts"], 2);
}

#[tokio::test]
async fn caller_id_pools_crud_and_the_campaigns_that_name_them() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let operator = n.key(Role::Operator).await;
    let auditor = n.key(Role::Auditor).await;
    let pool = json!({
        "name": "sales-sh",
        "description": "Shanghai lines",
        "numbers": ["02150000001", " +862150000002", "02150000001"]
    });
    let (s, v) = n
        .call(
            Method::POST,
            "/v1/caller-id-pools",
            &admin,
            Some(pool.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["numbers"],
        json!(["02150000001", "+862150000002"]),
        "deduplicated"
    );
    assert_eq!(v["description"], "Shanghai lines");
    let mut replacement = pool.clone();
    replacement["numbers"] = json!(["02150000009"]);
    let (s, v) = n
        .call(
            Method::POST,
            "/v1/caller-id-pools",
            &admin,
            Some(replacement),
        )
        .await;
    assert_eq!(
        (s, &v["numbers"]),
        (StatusCode::OK, &json!(["02150000009"]))
    );
    // Managed with `trunks:write` (admins); read with `trunks:read`.
    let (s, v) = n
        .call(
            Method::POST,
            "/v1/caller-id-pools",
            &operator,
            Some(pool.clone()),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, v) = n
        .call(Method::GET, "/v1/caller-id-pools", &operator, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = n
        .call(Method::GET, "/v1/caller-id-pools/sales-sh", &auditor, None)
        .await;
    assert_eq!(
        (s, &v["numbers"]),
        (StatusCode::OK, &json!(["02150000009"]))
    );
    let (s, v) = n
        .call(Method::GET, "/v1/caller-id-pools/nope", &auditor, None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));

    for (bad, why) in [
        (json!({ "name": "x", "numbers": ["12a"] }), "numbers[0]"),
        (json!({ "name": "x", "numbers": [] }), "1 to 10000 numbers"),
        (json!({ "name": "a b", "numbers": ["1"] }), "pool name"),
        (
            json!({ "name": "x", "numbers": ["1"], "extra": 1 }),
            "unknown field",
        ),
        (json!({ "numbers": ["1"] }), "missing field `name`"),
    ] {
        let (s, v) = n
            .call(
                Method::POST,
                "/v1/caller-id-pools",
                &admin,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{bad}: {v}"
        );
        assert!(message(&v).contains(why), "{bad}: {v}");
    }

    // A campaign may only name a pool that exists, created or changed.
    let mut spec = base();
    spec["caller_id_pool"] = json!("unknown");
    let (s, v) = n
        .call(Method::POST, "/v1/campaigns", &operator, Some(spec))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_campaign")
    );
    assert!(message(&v).contains("no caller-ID pool `unknown`"), "{v}");
    let plain = n.campaign(&operator, base()).await;
    let (s, v) = n
        .patch(&operator, plain, json!({ "caller_id_pool": "unknown" }))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_campaign")
    );
    let (s, v) = n
        .patch(&operator, plain, json!({ "caller_id_pool": "sales-sh" }))
        .await;
    assert_eq!(
        (s, &v["caller_id_pool"]),
        (StatusCode::OK, &json!("sales-sh"))
    );
    let mut spec = base();
    spec["caller_id_pool"] = json!("sales-sh");
    let user = n.campaign(&operator, spec).await;

    // In use by campaigns that are not finished: kept.
    let (s, v) = n.delete(&admin, "/v1/caller-id-pools/sales-sh").await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"));
    assert!(
        message(&v).contains(&format!("campaign(s) {plain}, {user}")),
        "{v}"
    );
    n.act(&operator, plain, "cancel").await;
    n.act(&operator, user, "cancel").await;
    let (s, v) = n.delete(&admin, "/v1/caller-id-pools/sales-sh").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = n
        .call(Method::GET, "/v1/caller-id-pools/sales-sh", &admin, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = n.delete(&admin, "/v1/caller-id-pools/sales-sh").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));

    let upserts = n.audit(&admin, "caller_id_pool.upsert").await;
    assert_eq!(
        upserts
            .iter()
            .map(|e| (e["target"].as_str().unwrap(), e["detail"].clone()))
            .collect::<Vec<_>>(),
        [
            (
                "caller_id_pool:sales-sh",
                json!({ "created": true, "numbers": 2 })
            ),
            (
                "caller_id_pool:sales-sh",
                json!({ "created": false, "numbers": 1 })
            ),
        ]
    );
    let deletes = n.audit(&admin, "caller_id_pool.delete").await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["actor"], "key:1");
}
