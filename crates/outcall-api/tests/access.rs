//! Authentication, roles and the audit log through the router.
//!
//! The route × role matrix is generated from [`route_table`], which is read from the OpenAPI
//! document the routes are registered with: a route added without a permission makes
//! `route_table` panic, and a route whose permission a role lacks must answer 403.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use outcall_api::access::Access;
use outcall_api::auth::{format_api_key, new_api_key_secret, Permission, Role, TokenSigner};
use outcall_api::http::{openapi, route_table, router};
use outcall_api::CampaignService;
use outcall_pool::NumberVault;
use outcall_scheduler::Clock;
use outcall_store::access::NewApiKey;
use outcall_store::sqlite::SqliteStore;
use outcall_store::Store;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

struct Node {
    router: Router,
    store: Arc<dyn Store>,
    access: Arc<Access>,
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
        router: router(Arc::new(svc), access.clone()),
        store,
        access,
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

    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-request-id", "req-test-1");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {a}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v, headers)
    }

    async fn audit(&self, auth: &str, query: &str) -> Vec<Value> {
        let (s, v, _) = self
            .call(Method::GET, &format!("/v1/audit?{query}"), Some(auth), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["entries"].as_array().unwrap().clone()
    }
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_declares_one_known_permission() {
    let table = route_table();
    assert!(table.len() >= 25, "{} routes", table.len());
    let public: Vec<_> = table
        .iter()
        .filter(|r| r.permission.is_none())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(public, ["POST /v1/auth/login"], "only the login is public");
    // Nothing changes the audit log through the API.
    assert!(table
        .iter()
        .filter(|r| r.path.starts_with("/v1/audit"))
        .all(|r| r.method == Method::GET));
    // The document shows each route's permission as its bearer scope.
    let doc = serde_json::to_value(openapi()).unwrap();
    assert_eq!(
        doc["paths"]["/v1/users"]["post"]["security"],
        json!([{ "bearer": ["users:manage"] }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_role_matrix() {
    let n = node().await;
    // Made first: the admin key is id 1, which the matrix's `DELETE /v1/api-keys/1` would
    // revoke; a key cannot revoke itself, so the admin key survives the run.
    let mut keys = Vec::new();
    for role in Role::ALL {
        keys.push((role, n.key(role).await));
    }
    let table = route_table();
    let mut checked = 0;
    for r in &table {
        let uri = concrete(&r.path);
        let Some(need) = r.permission else {
            continue;
        };
        let (s, v, h) = n.call(r.method.clone(), &uri, None, None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{} {uri} without credentials: {v}",
            r.method
        );
        assert_eq!(v["error"]["code"], "unauthenticated");
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
        let (s, _, _) = n
            .call(r.method.clone(), &uri, Some("oc_1_forged"), None)
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{} {uri} with a forged key",
            r.method
        );
        for (role, key) in &keys {
            let (s, v, _) = n.call(r.method.clone(), &uri, Some(key), None).await;
            if role.allows(need) {
                assert!(
                    s != StatusCode::FORBIDDEN && s != StatusCode::UNAUTHORIZED,
                    "{role:?} may {} {uri} ({}) but got {s}: {v}",
                    r.method,
                    need.as_str()
                );
            } else {
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{role:?} must not {} {uri} ({}): {v}",
                    r.method,
                    need.as_str()
                );
                assert_eq!(v["error"]["code"], "forbidden");
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        4 * table.iter().filter(|r| r.permission.is_some()).count()
    );
    // Refusals are audited.
    let admin = &keys[0].1;
    let denied = n.audit(admin, "action=access.denied&limit=1000").await;
    assert!(denied.iter().any(|e| e["actor"] == "key:3"
        && e["target"] == "POST /v1/users"
        && e["outcome"] == "denied"));
}

#[test]
fn auditors_hold_no_permission_to_change_anything() {
    for r in route_table() {
        let Some(p) = r.permission else { continue };
        if Role::Auditor.allows(p) {
            assert_eq!(
                r.method,
                Method::GET,
                "auditors may {} {}",
                r.method,
                r.path
            );
        }
    }
    assert!(!Role::Auditor.allows(Permission::NumbersUnmasked));
}

#[tokio::test]
async fn login_sessions_disable_and_role_changes_take_effect_at_once() {
    let n = node().await;
    assert!(n
        .access
        .bootstrap_admin("root", "root-password-123")
        .await
        .unwrap());
    assert!(
        !n.access
            .bootstrap_admin("other", "root-password-123")
            .await
            .unwrap(),
        "only on an empty user table"
    );
    let login = |u: &'static str, p: &'static str| {
        let n = &n;
        async move {
            n.call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({ "username": u, "password": p })),
            )
            .await
        }
    };
    let (s, v, _) = login("root", "wrong-password-00").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "invalid_credentials");
    let (s, v, _) = login("nobody", "root-password-123").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_credentials"))
    );
    let (s, v, _) = login("root", "root-password-123").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let root = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["user"]["role"], "admin");
    assert!(v["user"].get("password_hash").is_none());

    // The admin creates an operator; a weak password is refused.
    let (s, v, _) = n
        .call(
            Method::POST,
            "/v1/users",
            Some(&root),
            Some(json!({ "username": "olga", "password": "short", "role": "operator" })),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_request"))
    );
    let (s, v, _) = n
        .call(
            Method::POST,
            "/v1/users",
            Some(&root),
            Some(json!({ "username": "olga", "password": "operator-pass-1", "role": "operator" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let olga_id = v["id"].as_i64().unwrap();
    let (s, _, _) = n
        .call(
            Method::POST,
            "/v1/users",
            Some(&root),
            Some(json!({ "username": "olga", "password": "operator-pass-1", "role": "agent" })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v, _) = login("olga", "operator-pass-1").await;
    let olga = v["token"].as_str().unwrap().to_string();
    let (s, v, _) = n.call(Method::GET, "/v1/auth/me", Some(&olga), None).await;
    assert_eq!((s, v["role"].as_str()), (StatusCode::OK, Some("operator")));
    let (s, _, _) = n
        .call(Method::POST, "/v1/campaigns/1/start", Some(&olga), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "operators run campaigns");

    // Demoted to auditor: the same token loses write access at once.
    let (s, v, _) = n
        .call(
            Method::PATCH,
            &format!("/v1/users/{olga_id}"),
            Some(&root),
            Some(json!({ "role": "auditor" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = n
        .call(Method::POST, "/v1/campaigns/1/start", Some(&olga), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Disabled: the token stops working, and so does a new login.
    n.call(
        Method::PATCH,
        &format!("/v1/users/{olga_id}"),
        Some(&root),
        Some(json!({ "disabled": true })),
    )
    .await;
    let (s, _, _) = n.call(Method::GET, "/v1/auth/me", Some(&olga), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = login("olga", "operator-pass-1").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An admin cannot lock themselves out.
    let (_, me, _) = n.call(Method::GET, "/v1/auth/me", Some(&root), None).await;
    let (s, v, _) = n
        .call(
            Method::PATCH,
            &format!("/v1/users/{}", me["user_id"]),
            Some(&root),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::CONFLICT, &json!("conflict"))
    );
    // A forged token (signed with another key) and a garbage one are refused.
    let forged = TokenSigner::new(&[6; 32])
        .unwrap()
        .sign(&outcall_api::auth::Claims {
            sub: 1,
            name: "root".into(),
            iat: 0,
            exp: i64::MAX / 2,
        });
    for bad in [forged.as_str(), "a.b.c", "x"] {
        let (s, _, _) = n.call(Method::GET, "/v1/auth/me", Some(bad), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}");
    }

    // Logins, good and bad, user changes: all in the audit log with who, what, where.
    let log = n.audit(&root, "limit=1000").await;
    let actions: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("user.bootstrap", "ok"),
        ("auth.login", "denied"),
        ("auth.login", "ok"),
        ("user.create", "ok"),
        ("user.role_change", "ok"),
        ("user.update", "ok"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    let change = log
        .iter()
        .find(|e| e["action"] == "user.role_change")
        .unwrap();
    assert_eq!(change["actor"], "user:root");
    assert_eq!(change["target"], format!("user:{olga_id}"));
    assert_eq!(
        change["detail"]["role"],
        json!({ "from": "operator", "to": "auditor" })
    );
    assert_eq!(change["ip"], "192.0.2.7");
    assert_eq!(change["request_id"], "req-test-1");
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains("operator-pass-1") && !text.contains("root-password-123"));
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let (s, v, _) = n
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin),
            Some(json!({ "name": "crm", "role": "auditor" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let id = v["id"].as_i64().unwrap();
    assert!(key.starts_with(&format!("oc_{id}_")));
    let (_, list, _) = n
        .call(Method::GET, "/v1/api-keys", Some(&admin), None)
        .await;
    let text = list.to_string();
    assert!(
        !text.contains(&key[key.len() - 20..]),
        "the secret is never listed"
    );
    assert!(text.contains("\"crm\""));
    // Scoped: an auditor key reads but cannot write.
    let (s, _, _) = n.call(Method::GET, "/v1/campaigns", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = n
        .call(Method::POST, "/v1/campaigns", Some(&key), Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Its secret is stored hashed: the database has no copy of it.
    let stored = n.store.get_api_key(id).await.unwrap().unwrap();
    assert_ne!(stored.secret_hash, key.as_bytes());
    // Revoked: refused at once.
    let (s, v, _) = n
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string());
    let (s, _, _) = n.call(Method::GET, "/v1/campaigns", Some(&key), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let log = n.audit(&admin, "limit=100").await;
    assert!(log.iter().any(|e| e["action"] == "api_key.create"));
    assert!(log.iter().any(|e| e["action"] == "api_key.revoke"));
}

#[tokio::test]
async fn sensitive_operations_are_audited_and_numbers_unmasked_only_for_admins() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let operator = n.key(Role::Operator).await;
    let auditor = n.key(Role::Auditor).await;
    let spec = json!({ "name": "audit", "trunks": ["t"] });
    let (s, c, _) = n
        .call(Method::POST, "/v1/campaigns", Some(&operator), Some(spec))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (s, r, _) = n
        .call(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts"),
            Some(&operator),
            Some(json!([{ "number": "13812345678" }])),
        )
        .await;
    assert_eq!((s, r["added"].as_u64()), (StatusCode::OK, Some(1)), "{r}");
    // No attempts yet: add one through the store so there is a record to read.
    let contact = n
        .store
        .due_contacts(id, jiff::Timestamp::now(), 10)
        .await
        .unwrap()[0]
        .id;
    n.store
        .begin_attempt(contact, "node", jiff::Timestamp::now())
        .await
        .unwrap();
    let uri = format!("/v1/campaigns/{id}/attempts?unmask=true");
    for (who, key) in [("operator", &operator), ("auditor", &auditor)] {
        let (s, v, _) = n.call(Method::GET, &uri, Some(key), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {v}");
    }
    let (s, v, _) = n
        .call(
            Method::GET,
            &format!("/v1/campaigns/{id}/attempts"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!v.to_string().contains("13812345678"));
    let (s, v, _) = n.call(Method::GET, &uri, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attempts"][0]["number"], "+8613812345678");
    n.call(
        Method::POST,
        "/v1/blacklist",
        Some(&operator),
        Some(json!([{ "number": "13900000000", "reason": "asked" }])),
    )
    .await;
    n.call(
        Method::GET,
        "/v1/blacklist?format=csv",
        Some(&auditor),
        None,
    )
    .await;
    n.call(
        Method::POST,
        "/v1/numbers/erase",
        Some(&admin),
        Some(json!({ "number": "13812345678" })),
    )
    .await;
    let log = n.audit(&auditor, "limit=1000").await;
    let find = |action: &str| {
        log.iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} not audited: {log:?}"))
            .clone()
    };
    assert_eq!(find("campaign.create")["actor"], "key:2");
    let import = find("contacts.import");
    assert_eq!(import["target"], format!("campaign:{id}"));
    assert_eq!(import["detail"]["added"], 1);
    assert_eq!(find("numbers.unmask")["actor"], "key:1");
    assert_eq!(find("blacklist.add")["role"], "operator");
    assert_eq!(find("blacklist.export")["actor"], "key:3");
    assert_eq!(find("number.erase")["target"], "number:138****5678");
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains("13812345678") && !text.contains("13900000000"));
    // Filters and paging.
    let only = n.audit(&auditor, "action=contacts.import").await;
    assert_eq!(only.len(), 1);
    let first = n.audit(&auditor, "limit=2").await;
    let rest = n
        .audit(&auditor, &format!("after={}&limit=1000", first[1]["id"]))
        .await;
    assert_eq!(first.len() + rest.len(), log.len());
    // The audit log cannot be changed through the API.
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let (s, _, _) = n.call(m.clone(), "/v1/audit", Some(&admin), None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
}

#[tokio::test]
async fn audit_retention_purges_old_entries() {
    let n = node().await;
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 200);
    for at in [old, jiff::Timestamp::now()] {
        n.store
            .append_audit(&outcall_store::access::NewAuditEntry {
                at,
                actor: "user:x".into(),
                action: "auth.login".into(),
                outcome: "ok".into(),
                detail: json!({}),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        n.access.purge().await.unwrap(),
        1,
        "default retention: 183 days"
    );
    let admin = n.key(Role::Admin).await;
    let log = n.audit(&admin, "limit=100").await;
    assert_eq!(log.len(), 2, "the recent entry and the purge's own entry");
    assert_eq!(log[1]["action"], "audit.purge");
    assert_eq!(log[1]["detail"]["deleted"], 1);
}

#[tokio::test]
async fn event_retention_purges_events_older_than_90_days() {
    let n = node().await;
    let now = jiff::Timestamp::now();
    for days in [91, 89] {
        n.store
            .append_event(&outcall_store::NewSystemEvent {
                at: now - jiff::SignedDuration::from_hours(24 * days),
                kind: "trunk.degraded".into(),
                subject: format!("trunk-{days}"),
                severity: "warning".into(),
                message: "rate cut".into(),
                details: json!({}),
            })
            .await
            .unwrap();
    }
    n.access.purge().await.unwrap();
    let left = n
        .store
        .list_events(&outcall_store::EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let subjects: Vec<&str> = left.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["trunk-89"]);
}

#[tokio::test]
async fn idempotency_keys_make_creation_repeat_safe() {
    let n = node().await;
    let op = n.key(Role::Operator).await;
    let post = |body: Value, key: &'static str| {
        let n = &n;
        let op = op.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/campaigns")
                .header(header::AUTHORIZATION, format!("Bearer {op}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", key)
                .body(Body::from(body.to_string()))
                .unwrap();
            let res = n.router.clone().oneshot(req).await.unwrap();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap(),
                replayed,
            )
        }
    };
    let spec = json!({ "name": "once", "trunks": ["t"] });
    let (s1, c1, r1) = post(spec.clone(), "k-1").await;
    let (s2, c2, r2) = post(spec.clone(), "k-1").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(c1["id"], c2["id"]);
    assert!(!r1 && r2, "the repeat is a replay");
    let (s, v, _) = post(json!({ "name": "other", "trunks": ["t"] }), "k-1").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("idempotency_key_reused")
        )
    );
    // A failed request is not remembered: fixing it under the same key works.
    let (s, _, _) = post(json!({ "name": "" }), "k-2").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = post(json!({ "name": "fixed", "trunks": ["t"] }), "k-2").await;
    assert_eq!(s, StatusCode::CREATED);
    let campaigns = n.store.list_campaigns().await.unwrap();
    assert_eq!(campaigns.len(), 2, "one per key");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let n = node().await;
    let (_, _, h) = n.call(Method::GET, "/v1/campaigns", None, None).await;
    assert_eq!(h["x-request-id"], "req-test-1");
    let res = n
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"].len(), 16);
}

#[tokio::test]
async fn openapi_document_and_docs_are_public_and_offline() {
    let n = node().await;
    let (s, doc, _) = n.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/v1/campaigns"]["post"]["responses"]["4XX"].is_object());
    // Campaigns, calls and CDRs are described field by field for typed clients.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CampaignSpec"]["required"],
        json!(["name", "trunks"])
    );
    assert!(schemas["CampaignSpec"]["properties"]["retry"].is_object());
    assert!(schemas["Cdr"]["properties"]["sip_status"].is_object());
    assert!(schemas["Outcome"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("answered_human")));
    let res = n
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/docs/")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn"),
        "served offline"
    );
}

#[tokio::test]
async fn cdrs_filter_across_campaigns_and_export_as_csv() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let auditor = n.key(Role::Auditor).await;
    let agent = n.key(Role::Agent).await;
    let mut campaigns = Vec::new();
    for name in ["a", "b"] {
        let (_, c, _) = n
            .call(
                Method::POST,
                "/v1/campaigns",
                Some(&admin),
                Some(json!({ "name": name, "trunks": ["t"] })),
            )
            .await;
        let id = c["id"].as_i64().unwrap();
        n.call(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts"),
            Some(&admin),
            Some(json!([{ "number": "13812345678" }, { "number": "13900000001" }])),
        )
        .await;
        campaigns.push(id);
    }
    // One attempt per contact, closed as busy (the first number) or no_answer.
    let now = jiff::Timestamp::now();
    for &c in &campaigns {
        for contact in n.store.due_contacts(c, now, 10).await.unwrap() {
            let start = n
                .store
                .begin_attempt(contact.id, "node-a", now)
                .await
                .unwrap()
                .unwrap();
            let outcome = if contact.masked.starts_with("+86138") {
                outcall_domain::Outcome::Busy
            } else {
                outcall_domain::Outcome::NoAnswer
            };
            n.store
                .finish_attempt(
                    start.attempt_id,
                    outcome,
                    None,
                    None,
                    outcall_store::ContactNext::Done { outcome },
                    now,
                )
                .await
                .unwrap();
        }
    }
    let get = |q: String, key: String| {
        let n = &n;
        async move {
            n.call(Method::GET, &format!("/v1/cdrs?{q}"), Some(&key), None)
                .await
        }
    };
    let (s, v, _) = get(String::new(), auditor.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 4);
    let (_, v, _) = get("number=138-1234-5678".into(), auditor.clone()).await;
    let rows = v["cdrs"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one number, both campaigns: {v}");
    assert!(rows.iter().all(|r| r["outcome"] == "busy"));
    let (_, v, _) = get(
        format!("campaign_id={}&outcome=no_answer", campaigns[1]),
        auditor.clone(),
    )
    .await;
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 1);
    let (_, v, _) = get("limit=3".into(), auditor.clone()).await;
    let next = v["next_after"].as_i64().unwrap();
    let (_, v, _) = get(format!("after={next}"), auditor.clone()).await;
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 1);
    let (s, v, _) = get("outcome=exploded".into(), auditor.clone()).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_request"))
    );
    let (s, _, _) = get(String::new(), agent.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // CSV: a header and one row per attempt, numbers never in clear; the export is audited.
    let (s, csv, h) = get(
        format!("campaign_id={}&format=csv", campaigns[0]),
        auditor.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.as_str().unwrap().to_string();
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("attempt_id,campaign_id,contact_id,seq,node,number,started_at"));
    assert!(!csv.contains("13812345678"));
    let log = n.audit(&admin, "action=cdrs.export").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["actor"], "key:2");
    // Stats by hour.
    let (_, st, _) = n
        .call(
            Method::GET,
            &format!("/v1/campaigns/{}/stats?hours=true", campaigns[0]),
            Some(&auditor),
            None,
        )
        .await;
    let hours = st["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "{st}");
    assert_eq!(hours[0]["outcomes"], json!({ "busy": 1, "no_answer": 1 }));
}

#[tokio::test]
async fn recordings_metadata_for_auditors_downloads_for_operators_audited() {
    let n = node().await;
    let admin = n.key(Role::Admin).await;
    let operator = n.key(Role::Operator).await;
    let auditor = n.key(Role::Auditor).await;
    let (_, c, _) = n
        .call(
            Method::POST,
            "/v1/campaigns",
            Some(&admin),
            Some(json!({ "name": "rec", "trunks": ["t"], "record": true })),
        )
        .await;
    let cid = c["id"].as_i64().unwrap();
    n.call(
        Method::POST,
        &format!("/v1/campaigns/{cid}/contacts"),
        Some(&admin),
        Some(json!([{ "number": "13812345678" }, { "number": "13812345679" }])),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let mut recorded = 0;
    for (i, contact) in n
        .store
        .due_contacts(cid, now, 10)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let start = n
            .store
            .begin_attempt(contact.id, "node-a", now)
            .await
            .unwrap()
            .unwrap();
        // The first attempt was recorded; the second was not answered.
        let recording = (i == 0).then(|| {
            let d = dir.path().join(format!("recordings/{cid}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join(format!("{}.wav", start.attempt_id));
            std::fs::write(&p, b"RIFF....WAVEfmt fake audio").unwrap();
            recorded = start.attempt_id;
            p.display().to_string()
        });
        let cdr: outcall_domain::Cdr = serde_json::from_value(json!({
            "attempt_id": "a", "trace_id": "t", "call_id": "c", "trunk": "t", "node": "node-a",
            "caller_id": "1", "callee": contact.masked, "final_state": "completed",
            "outcome": "answered_human", "sip_status": 200, "q850_cause": null,
            "queued_at_ms": null, "invite_at_ms": null, "ring_at_ms": null,
            "early_media_at_ms": null, "answer_at_ms": null, "end_at_ms": null, "setup_ms": null,
            "duration_ms": 5000, "billsec": 4, "hangup_by": null, "early_media": false,
            "dtmf": "", "recording": recording, "rtp_packets_sent": 0,
            "rtp_packets_received": 0, "rtp_packets_lost": 0
        }))
        .unwrap();
        n.store
            .finish_attempt(
                start.attempt_id,
                outcall_domain::Outcome::AnsweredHuman,
                None,
                Some(&cdr),
                outcall_store::ContactNext::Done {
                    outcome: outcall_domain::Outcome::AnsweredHuman,
                },
                now,
            )
            .await
            .unwrap();
    }
    let (s, v, _) = n
        .call(
            Method::GET,
            &format!("/v1/recordings?campaign_id={cid}"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let list = v["recordings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the recorded attempt: {v}");
    assert_eq!(list[0]["attempt_id"], recorded);
    assert_eq!(list[0]["bytes"], 26);
    let uri = format!("/v1/recordings/{recorded}");
    let (s, _, _) = n.call(Method::GET, &uri, Some(&auditor), None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "auditors read metadata, not audio"
    );
    let res = n
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {operator}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "audio/wav");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"RIFF....WAVEfmt fake audio");
    let (s, v, _) = n
        .call(
            Method::GET,
            &format!("/v1/recordings/{}", recorded + 1),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let log = n.audit(&admin, "action=recording.download").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["actor"], "key:2");
    assert_eq!(log[0]["target"], format!("attempt:{recorded}"));
}

#[tokio::test]
async fn contacts_list_masked_by_cursor_and_state() {
    let n = node().await;
    let op = n.key(Role::Operator).await;
    let auditor = n.key(Role::Auditor).await;
    let (_, c, _) = n
        .call(
            Method::POST,
            "/v1/campaigns",
            Some(&op),
            Some(json!({ "name": "list", "trunks": ["t"] })),
        )
        .await;
    let id = c["id"].as_i64().unwrap();
    let rows: Vec<Value> = (0..5)
        .map(|i| json!({ "number": format!("1381234567{i}"), "variables": { "name": format!("c{i}") } }))
        .collect();
    n.call(
        Method::POST,
        &format!("/v1/campaigns/{id}/contacts"),
        Some(&op),
        Some(Value::Array(rows)),
    )
    .await;
    let first = n.store.list_contacts(id, None, 0, 1).await.unwrap()[0].id;
    n.store
        .begin_attempt(first, "node-a", jiff::Timestamp::now())
        .await
        .unwrap();
    let uri = |q: &str| format!("/v1/campaigns/{id}/contacts?{q}");
    let (s, v, _) = n
        .call(Method::GET, &uri("limit=3"), Some(&auditor), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let page = v["contacts"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["number"], "+86138****5670");
    assert_eq!(page[0]["state"], "dialing");
    assert_eq!(page[1]["variables"]["name"], "c1");
    assert!(!v.to_string().contains("13812345670"));
    let (_, v, _) = n
        .call(
            Method::GET,
            &uri(&format!("after={}", v["next_after"])),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(v["contacts"].as_array().unwrap().len(), 2);
    let (_, v, _) = n
        .call(Method::GET, &uri("state=pending"), Some(&auditor), None)
        .await;
    assert_eq!(v["contacts"].as_array().unwrap().len(), 4);
    let (s, _, _) = n
        .call(Method::GET, &uri("state=bogus"), Some(&auditor), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn stats_are_shared_for_a_second_and_dropped_by_any_change() {
    let n = node().await;
    let op = n.key(Role::Operator).await;
    let (_, c, _) = n
        .call(
            Method::POST,
            "/v1/campaigns",
            Some(&op),
            Some(json!({ "name": "s", "trunks": ["t"] })),
        )
        .await;
    let id = c["id"].as_i64().unwrap();
    let uri = format!("/v1/campaigns/{id}/stats");
    let (_, before, _) = n.call(Method::GET, &uri, Some(&op), None).await;
    assert_eq!(before["contacts"], json!({}), "{before}");
    // Changed behind the API's back (as the scheduler does): served from memory for now…
    let contact = outcall_store::NewContact {
        number_hash: vec![1; 32],
        number_enc: vec![2; 40],
        masked: "+86138****0000".into(),
        time_zone: None,
        priority: 0,
        variables: json!({}),
        region: Default::default(),
        trace_id: None,
    };
    n.store
        .add_contacts(id, &[contact], jiff::Timestamp::now())
        .await
        .unwrap();
    let (_, cached, _) = n.call(Method::GET, &uri, Some(&op), None).await;
    assert_eq!(cached["contacts"], json!({}));
    // …until a second has passed,
    tokio::time::sleep(outcall_api::http::STATS_TTL).await;
    let (_, fresh, _) = n.call(Method::GET, &uri, Some(&op), None).await;
    assert_eq!(fresh["contacts"]["pending"], 1, "{fresh}");
    // or any request changes something.
    n.call(
        Method::POST,
        &format!("/v1/campaigns/{id}/start"),
        Some(&op),
        None,
    )
    .await;
    let (_, started, _) = n.call(Method::GET, &uri, Some(&op), None).await;
    assert_eq!(started["campaign"]["status"], "running", "{started}");
}

#[tokio::test]
async fn repeated_failed_logins_make_that_address_wait() {
    let n = node().await;
    n.access
        .bootstrap_admin("root", "root-password-123")
        .await
        .unwrap();
    let login = |password: &str, ip: [u8; 4]| {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "username": "root", "password": password }).to_string(),
            ))
            .unwrap();
        let mut req = req;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        let router = n.router.clone();
        async move {
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let retry = res.headers().get(header::RETRY_AFTER).cloned();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap(),
                retry,
            )
        }
    };
    let attacker = [198, 51, 100, 1];
    for _ in 0..outcall_api::access::LOGIN_MAX_FAILURES {
        let (s, _, _) = login("guess-guess-guess", attacker).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits, from that address…
    let (s, v, retry) = login("root-password-123", attacker).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("too_many_attempts"))
    );
    let secs: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs > 0 && secs <= 15 * 60);
    // …but not from another one.
    let (s, _, _) = login("root-password-123", [192, 0, 2, 50]).await;
    assert_eq!(s, StatusCode::OK);
    let admin = n.key(Role::Admin).await;
    let log = n.audit(&admin, "action=auth.login&limit=100").await;
    assert!(log
        .iter()
        .any(|e| e["detail"]["reason"] == "too many failed logins" && e["ip"] == "198.51.100.1"));
}
