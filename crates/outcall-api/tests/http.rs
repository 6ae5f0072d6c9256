//! The HTTP API end to end through the router (no socket): status codes, stable error codes,
//! messages a user can act on, contact import reports, the lifecycle, and that clear phone
//! numbers never leave in a response nor reach the store.
//!
//! Tests that touch the store run on both the in-memory store and SQLite (see the
//! `on_both_stores!` list at the bottom).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use outcall_api::access::Access;
use outcall_api::auth::{format_api_key, new_api_key_secret, TokenSigner};
use outcall_api::http::{router, BODY_LIMIT};
use outcall_api::CampaignService;
use outcall_pool::NumberVault;
use outcall_scheduler::Clock;
use outcall_store::access::NewApiKey;
use outcall_store::memory::MemoryStore;
use outcall_store::sqlite::SqliteStore;
use outcall_store::{ContactRecord, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

/// A clear number used throughout: it must never appear in a response or in the store.
const CLEAR: &str = "13812345678";
/// Its E.164 form.
const E164: &str = "+8613812345678";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Sqlite,
}

fn vault() -> NumberVault {
    NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).unwrap()
}

fn service(store: Arc<dyn Store>) -> CampaignService {
    CampaignService {
        store,
        vault: Arc::new(vault()),
        scheduler: None,
        clock: Clock::system(),
        default_country_code: "86".into(),
        number_status_ttl: std::time::Duration::from_secs(90 * 86400),
        attributor: Arc::new(outcall_pool::number::Attributor::new(None)),
        jobs: Default::default(),
        dedup_false_positive_rate: 0.01,
        webhooks: None,
    }
}

/// The router and, for inspection, the store behind it.
struct Api {
    router: Router,
    store: Arc<dyn Store>,
    /// `Authorization` of every request: an admin API key.
    auth: String,
}

/// The access layer on `store` and an admin API key made directly in the store.
async fn admin_access(store: &Arc<dyn Store>) -> (Arc<Access>, String) {
    let access = Arc::new(Access::new(
        store.clone(),
        TokenSigner::new(&[9; 32]).unwrap(),
        Default::default(),
    ));
    let (secret, hash) = new_api_key_secret();
    let k = store
        .create_api_key(
            &NewApiKey {
                name: "tests".into(),
                role: "admin".into(),
                secret_hash: hash,
                created_by: "tests".into(),
            },
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    (access, format!("Bearer {}", format_api_key(k.id, &secret)))
}

impl Api {
    async fn new(backend: Backend) -> Api {
        let store: Arc<dyn Store> = match backend {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Sqlite => Arc::new(SqliteStore::open_in_memory().await.unwrap()),
        };
        Api::with_store(store).await
    }

    async fn with_store(store: Arc<dyn Store>) -> Api {
        Api::with_service(service(store)).await
    }

    async fn with_service(svc: CampaignService) -> Api {
        let store = svc.store.clone();
        let (access, auth) = admin_access(&store).await;
        Api {
            router: router(Arc::new(svc), access),
            store,
            auth,
        }
    }

    /// Sends a request; returns the status and the body as text.
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, &self.auth);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Sends a request; returns the status and the body as JSON (`Value::String` if the body
    /// is not JSON).
    async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let (status, text) = self.raw(method, uri, content_type, body).await;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Method::GET, uri, None, Body::empty()).await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.post(uri, "application/json", body.to_string()).await
    }

    async fn post(
        &self,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        self.send(Method::POST, uri, Some(content_type), body).await
    }

    async fn post_csv(&self, uri: &str, csv: &str) -> (StatusCode, Value) {
        self.post(uri, "text/csv", csv.to_string()).await
    }

    /// Creates a valid campaign and returns its id.
    async fn campaign(&self, name: &str) -> i64 {
        let (status, body) = self.post_json("/v1/campaigns", &spec(name)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Every pending contact of a campaign, as the store holds it.
    async fn stored_contacts(&self, id: i64) -> Vec<ContactRecord> {
        self.store
            .due_contacts(id, jiff::Timestamp::MAX, 10_000)
            .await
            .unwrap()
    }
}

fn spec(name: &str) -> Value {
    json!({
        "name": name,
        "trunks": ["carrier-a"],
        "max_concurrent": 20,
        "max_cps": 10,
        "windows": { "time_zone": "Asia/Shanghai", "weekly": { "daily": ["09:00-21:00"] } }
    })
}

/// Asserts an error response: status, stable code, and message substrings.
#[track_caller]
fn assert_error(res: &(StatusCode, Value), status: StatusCode, code: &str, message_has: &[&str]) {
    let (got, body) = res;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    for s in message_has {
        assert!(message.contains(s), "message {message:?} lacks {s:?}");
    }
}

/// `(line, reason)` of every rejected row of an import report.
fn rejected(report: &Value) -> Vec<(u64, String)> {
    report["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list in {report}"))
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[track_caller]
fn assert_counts(report: &Value, rows: u64, added: u64, duplicates: u64, invalid: u64) {
    let got = (
        report["rows"].as_u64(),
        report["added"].as_u64(),
        report["duplicates"].as_u64(),
        report["invalid"].as_u64(),
    );
    assert_eq!(
        got,
        (Some(rows), Some(added), Some(duplicates), Some(invalid)),
        "rows, added, duplicates, invalid in {report}"
    );
}

/// Asserts the rejected lines, each with a substring of its reason.
#[track_caller]
fn assert_rejected(report: &Value, want: &[(u64, &str)]) {
    let got = rejected(report);
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        want.iter().map(|e| e.0).collect::<Vec<_>>(),
        "rejected lines in {report}"
    );
    for ((line, reason), (_, has)) in got.iter().zip(want) {
        assert!(
            reason.contains(has),
            "line {line}: reason {reason:?} lacks {has:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Campaigns

async fn create_list_get(b: Backend) {
    let api = Api::new(b).await;
    let (status, created) = api.post_json("/v1/campaigns", &spec("reminders")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().expect("id");
    assert!(id > 0);
    assert_eq!(created["status"], "draft");
    assert_eq!(created["name"], "reminders");
    assert_eq!(created["trunks"], json!(["carrier-a"]));
    assert_eq!(created["max_cps"], 10.0);
    assert_eq!(created["ring_timeout_secs"], 30, "defaults are filled in");

    let other = api.campaign("second").await;
    assert_ne!(other, id);

    let (status, list) = api.get("/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reminders", "second"]);

    let (status, got) = api.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created, "get returns what create returned");
}

async fn unknown_and_malformed_campaign_ids(b: Backend) {
    let api = Api::new(b).await;
    assert_error(
        &api.get("/v1/campaigns/999").await,
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        &["campaign 999 not found"],
    );
    for bad in ["abc", "0", "-3", "1.5"] {
        assert_error(
            &api.get(&format!("/v1/campaigns/{bad}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &[&format!("`{bad}` is not an id")],
        );
    }
    // Every per-campaign endpoint answers the same for an unknown campaign.
    assert_error(
        &api.get("/v1/campaigns/999/stats").await,
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        &["999"],
    );
    assert_error(
        &api.get("/v1/campaigns/999/attempts").await,
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        &["999"],
    );
    assert_error(
        &api.post_json("/v1/campaigns/999/contacts", &json!([CLEAR]))
            .await,
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        &["999"],
    );
    assert_error(
        &api.post_json("/v1/campaigns/999/start", &json!({})).await,
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        &["999"],
    );
    assert_error(
        &api.post_json("/v1/campaigns/abc/start", &json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["`abc` is not an id"],
    );
}

#[tokio::test]
async fn invalid_json_body_names_the_position() {
    let api = Api::new(Backend::Memory).await;
    let res = api
        .post(
            "/v1/campaigns",
            "application/json",
            "{\"name\": \"x\",\n \"trunks\": [\"a\",]}",
        )
        .await;
    assert_error(
        &res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["invalid JSON body", "line 2 column"],
    );
    assert_error(
        &api.post("/v1/campaigns", "application/json", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["EOF", "line 1 column 0"],
    );
    let (_, list) = api.get("/v1/campaigns").await;
    assert_eq!(list, json!([]), "nothing was created");
}

#[tokio::test]
async fn unknown_or_missing_spec_fields_are_named() {
    let api = Api::new(Backend::Memory).await;
    let mut s = spec("x");
    s["max_cpss"] = json!(3);
    assert_error(
        &api.post_json("/v1/campaigns", &s).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["unknown field `max_cpss`", "max_cps"],
    );
    assert_error(
        &api.post_json("/v1/campaigns", &json!({ "name": "x" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["missing field `trunks`"],
    );
    let mut s = spec("x");
    s["max_concurrent"] = json!("many");
    assert_error(
        &api.post_json("/v1/campaigns", &s).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["invalid type", "line 1 column"],
    );
}

async fn invalid_specs_are_rejected_with_the_reason(b: Backend) {
    let api = Api::new(b).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "trunks": [] }), "at least one trunk is required"),
        (json!({ "max_cps": 0 }), "max_cps must be greater than 0"),
        (
            json!({ "max_concurrent": 0 }),
            "max_concurrent must be between 1",
        ),
        (json!({ "name": "  " }), "name must be 1 to 200 characters"),
        (
            json!({ "windows": { "time_zone": "Nowhere/City", "weekly": { "daily": ["09:00-21:00"] } } }),
            "windows: unknown time zone `Nowhere/City`",
        ),
        (
            json!({ "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z" }),
            "end_at is before start_at",
        ),
        (
            json!({ "frequency_caps": [{ "max_calls": 0, "per_secs": 60 }] }),
            "frequency cap",
        ),
    ];
    for (patch, reason) in cases {
        let mut s = spec("x");
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        assert_error(
            &api.post_json("/v1/campaigns", &s).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            &[reason],
        );
    }
    let (_, list) = api.get("/v1/campaigns").await;
    assert_eq!(list, json!([]), "no invalid campaign was stored");
}

// ---------------------------------------------------------------------------------------------
// Contacts

async fn contacts_json_array(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("json").await;
    let body = json!([
        { "number": CLEAR, "priority": 3, "variables": { "name": "Alice", "due": 120.5 } },
        "13900000001",
        "+86 138-1234-5678",
        { "number": "138abc" },
        { "phone": "13700000002" },
        { "number": "13600000003", "priority": "high" },
        { "number": "" },
        { "number": "0755-12345678", "variables": { "name": "Office" } },
        ["13500000004"],
    ]);
    let (status, report) = api
        .post_json(&format!("/v1/campaigns/{id}/contacts"), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 9, 3, 1, 5);
    assert_rejected(
        &report,
        &[
            (4, "invalid number: unexpected character `a`"),
            (5, "unknown field `phone`"),
            (6, "`priority` must be an integer, not a string"),
            (7, "invalid number: empty number"),
            (9, "a contact must be a string or an object"),
        ],
    );

    let stored = api.stored_contacts(id).await;
    assert_eq!(stored.len(), 3);
    let alice = stored.iter().find(|c| c.priority == 3).unwrap();
    assert_eq!(alice.masked, "+86138****5678");
    assert_eq!(alice.variables, json!({ "name": "Alice", "due": 120.5 }));
    assert_eq!(alice.time_zone.as_deref(), Some("Asia/Shanghai"));
    let office = stored
        .iter()
        .find(|c| c.masked.starts_with("+86755"))
        .unwrap();
    assert_eq!(office.variables, json!({ "name": "Office" }));

    // A body that is not an array is refused as a whole.
    assert_error(
        &api.post_json(
            &format!("/v1/campaigns/{id}/contacts"),
            &json!({ "number": CLEAR }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["not a JSON array"],
    );
    // Without a content type the body is read as JSON.
    let (status, report) = api
        .send(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts"),
            None,
            json!(["13900000009"]).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 1, 1, 0, 0);
}

#[tokio::test]
async fn numbers_given_as_json_numbers_are_rejected_without_being_echoed() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("json numbers").await;
    let (status, text) = api
        .raw(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts"),
            Some("application/json"),
            format!("[{CLEAR}, {{\"number\": {CLEAR}}}, {{\"number\": \"{CLEAR}\"}}]"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        !text.contains(CLEAR),
        "the report echoes the number: {text}"
    );
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_counts(&report, 3, 1, 0, 2);
    assert_rejected(
        &report,
        &[
            (
                1,
                "a contact must be a string or an object with a `number` string",
            ),
            (2, "`number` must be a string, not a JSON number"),
        ],
    );
}

async fn contacts_csv_with_number_column_and_variables(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("csv").await;
    let csv = "name,phone,priority,amount\n\
               Alice,13812345678,5,120.50\n\
               Bob,13900000001,,80\n\
               Carol,13700000002,high,10\n";
    let (status, report) = api
        .post_csv(
            &format!("/v1/campaigns/{id}/contacts?number_column=phone"),
            csv,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 3, 2, 0, 1);
    assert_rejected(&report, &[(4, "priority `high` is not an integer")]);

    let stored = api.stored_contacts(id).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].priority, 5, "higher priority first");
    assert_eq!(
        stored[0].variables,
        json!({ "name": "Alice", "amount": "120.50" }),
        "extra columns become variables; number and priority do not"
    );
    assert_eq!(stored[1].priority, 0, "an empty priority is 0");
    assert_eq!(
        stored[1].variables,
        json!({ "name": "Bob", "amount": "80" })
    );

    // The number column matches without regard to case; the default is `number`.
    let (status, report) = api
        .post_csv(
            &format!("/v1/campaigns/{id}/contacts"),
            "Number\n13600000003\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 1, 1, 0, 0);
}

async fn csv_without_the_number_column_lists_the_columns(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("csv").await;
    assert_error(
        &api.post_csv(
            &format!("/v1/campaigns/{id}/contacts"),
            "name,phone\nAlice,13812345678\n",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["no `number` column", "columns: name, phone"],
    );
    assert_error(
        &api.post_csv(
            &format!("/v1/campaigns/{id}/contacts?number_column=mobile"),
            "name,phone\nAlice,13812345678\n",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["no `mobile` column", "columns: name, phone"],
    );
    assert!(api.stored_contacts(id).await.is_empty());
}

/// The acceptance file: good, bad and duplicate rows, every count and every line checked.
async fn mixed_csv_file(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("mixed").await;
    let csv = "\
phone,name,priority
13812345678,Alice,5
+86 138-1234-5678,Alice again,
13900000001,Bob,
1391234abcd,Carol,
12345,Dan,
1234567890123456,Eve,
0755-12345678,Office,1
13900000001,Bob again,
13700000002,Frank,high
,Nobody,
13600000003
008613500000004,Grace,2
";
    let uri = format!("/v1/campaigns/{id}/contacts?number_column=phone");
    let (status, report) = api.post_csv(&uri, csv).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    // 12 rows: 5 added (lines 2, 4, 8, 12, 13), 2 duplicates (lines 3 and 9), 5 invalid.
    assert_counts(&report, 12, 5, 2, 5);
    assert_rejected(
        &report,
        &[
            (5, "invalid number: unexpected character `a`"),
            (6, "invalid number: 7 digits is not a valid length"),
            (7, "invalid number: 16 digits is not a valid length"),
            (10, "priority `high` is not an integer"),
            (11, "invalid number: empty number"),
        ],
    );

    let (_, stats) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(stats["contacts"]["pending"], 5, "{stats}");

    let stored = api.stored_contacts(id).await;
    let mut masked: Vec<&str> = stored.iter().map(|c| c.masked.as_str()).collect();
    masked.sort();
    assert_eq!(
        masked,
        [
            "+86135****0004",
            "+86136****0003",
            "+86138****5678",
            "+86139****0001",
            "+86755****5678"
        ]
    );
    let alice = stored
        .iter()
        .find(|c| c.masked == "+86138****5678")
        .unwrap();
    assert_eq!(alice.priority, 5);
    assert_eq!(
        alice.variables,
        json!({ "name": "Alice" }),
        "the first of two duplicate rows is kept"
    );

    // The same file again: every valid row is now a duplicate.
    let (status, report) = api.post_csv(&uri, csv).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 12, 0, 7, 5);
    assert_eq!(api.stored_contacts(id).await.len(), 5);
}

async fn csv_from_a_spreadsheet_with_bom_crlf_and_blank_lines(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("excel").await;
    let csv = "\u{feff}number,name\r\n13812345678,Alice\r\n\r\n12,Bob\r\n\"139 0000 0001\",\"Lee, Carol\"\r\n";
    let (status, report) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), csv)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 3, 2, 0, 1);
    assert_rejected(&report, &[(4, "digits is not a valid length")]);
    let stored = api.stored_contacts(id).await;
    assert!(stored
        .iter()
        .any(|c| c.variables == json!({ "name": "Lee, Carol" })));
}

/// Rejected rows are reported on the line a text editor shows, whatever the line ends, blank
/// lines or quoted fields spanning lines.
#[tokio::test]
async fn csv_line_numbers_follow_the_file() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("lines").await;
    let uri = format!("/v1/campaigns/{id}/contacts");
    for (what, csv) in [
        ("LF", "number,note\n1,a\n13800000001,b\n2,c\n"),
        ("CRLF", "number,note\r\n1,a\r\n13800000001,b\r\n2,c\r\n"),
        (
            "CRLF, no final",
            "number,note\r\n1,a\r\n13800000001,b\r\n2,c",
        ),
    ] {
        let (status, report) = api.post_csv(&uri, csv).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_rejected(&report, &[(2, "digits"), (4, "digits")]);
        assert_eq!(report["rows"], 3, "{what}");
    }
    let csv = "number,note\n\n1,a\n\n\n13800000002,\"two\nlines\"\n2,c\r\n\r\n3,d\n   \n";
    let (status, report) = api.post_csv(&uri, csv).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 5, 1, 0, 4);
    assert_rejected(
        &report,
        &[
            (3, "digits"),
            (8, "digits"),
            (10, "digits"),
            (11, "empty number"),
        ],
    );
}

#[tokio::test]
async fn csv_that_is_not_utf8_is_reported() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("gbk").await;
    // "张三" in GBK in the second row; the first row is fine.
    let mut csv = b"number,name\n13812345678,Alice\n13900000001,".to_vec();
    csv.extend_from_slice(&[0xd5, 0xc5, 0xc8, 0xfd]);
    csv.push(b'\n');
    let (status, report) = api
        .post(&format!("/v1/campaigns/{id}/contacts"), "text/csv", csv)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 2, 1, 0, 1);
    assert_rejected(&report, &[(3, "utf-8")]);
}

#[tokio::test]
async fn contacts_in_another_media_type_are_refused() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("plain").await;
    assert_error(
        &api.post(
            &format!("/v1/campaigns/{id}/contacts"),
            "text/plain",
            "13812345678\n",
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        &[
            "text/plain",
            "text/csv, application/json or application/x-ndjson",
        ],
    );
    // Parameters and case are fine.
    let (status, report) = api
        .post(
            &format!("/v1/campaigns/{id}/contacts"),
            "Text/CSV; charset=utf-8",
            "number\n13812345678\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 1, 1, 0, 0);
}

#[tokio::test]
async fn oversized_upload_is_payload_too_large() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("big").await;
    // Contact uploads stream through a file on disk: past the 64 MiB limit of other bodies.
    let mut body = b"number\n13800000001\n".to_vec();
    body.resize(BODY_LIMIT + 1, b'\n');
    let (status, r) = api
        .post(
            &format!("/v1/campaigns/{id}/contacts"),
            "text/csv",
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["added"], 1, "{r}");
    // Every other body keeps the limit.
    assert_error(
        &api.post("/v1/campaigns", "application/json", body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &["limit"],
    );
}

async fn contacts_to_a_finished_campaign_are_refused(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("done").await;
    let (status, _) = api
        .post_json(&format!("/v1/campaigns/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &api.post_json(&format!("/v1/campaigns/{id}/contacts"), &json!([CLEAR]))
            .await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["cannot add contacts to a campaign that is canceled"],
    );
    assert_error(
        &api.post_csv(
            &format!("/v1/campaigns/{id}/contacts"),
            "number\n13812345678\n",
        )
        .await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["canceled"],
    );
    assert!(api.stored_contacts(id).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

async fn lifecycle(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("life").await;
    let act = |action: &'static str| {
        let api = &api;
        async move {
            api.send(
                Method::POST,
                &format!("/v1/campaigns/{id}/{action}"),
                None,
                Body::empty(),
            )
            .await
        }
    };

    assert_error(
        &act("resume").await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["cannot resume a campaign that is draft"],
    );
    assert_error(
        &act("pause").await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["cannot pause a campaign that is draft"],
    );
    for (action, status) in [
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
        ("pause", "paused"),
        ("cancel", "canceled"),
    ] {
        let (code, c) = act(action).await;
        assert_eq!(code, StatusCode::OK, "{action}: {c}");
        assert_eq!(c["status"], status, "{action}");
        assert_eq!(c["id"], id);
        let (_, got) = api.get(&format!("/v1/campaigns/{id}")).await;
        assert_eq!(got["status"], status, "{action} is stored");
    }
    assert_error(
        &act("start").await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["cannot start a campaign that is canceled"],
    );
    assert_error(
        &act("cancel").await,
        StatusCode::CONFLICT,
        "illegal_transition",
        &["cannot cancel a campaign that is canceled"],
    );
    assert_error(
        &act("explode").await,
        StatusCode::NOT_FOUND,
        "not_found",
        &["no route POST /v1/campaigns/", "/explode", "/openapi.json"],
    );
    // `complete` belongs to the scheduler, not to the API.
    assert_error(
        &act("complete").await,
        StatusCode::NOT_FOUND,
        "not_found",
        &["no route POST /v1/campaigns/", "/complete"],
    );
    let (_, got) = api.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(got["status"], "canceled");
}

#[tokio::test]
async fn unknown_action_is_not_found_even_for_a_fresh_campaign() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("x").await;
    assert_eq!(id, 1);
    assert_error(
        &api.post_json("/v1/campaigns/1/explode", &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        &["explode"],
    );
    let (_, got) = api.get("/v1/campaigns/1").await;
    assert_eq!(got["status"], "draft");
}

// ---------------------------------------------------------------------------------------------
// Stats and attempts

async fn stats_count_contacts_by_state(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("stats").await;
    let (status, stats) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["campaign"]["id"], id);
    assert_eq!(stats["attempts"], 0);
    assert_eq!(
        stats["contacts"].get("pending"),
        None,
        "no contacts yet: {stats}"
    );

    let (_, report) = api
        .post_json(
            &format!("/v1/campaigns/{id}/contacts"),
            &json!([CLEAR, "13900000001", "13700000002", "13812345678", "x"]),
        )
        .await;
    assert_counts(&report, 5, 3, 1, 1);

    let (status, stats) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["contacts"]["pending"], report["added"], "{stats}");
    assert_eq!(
        stats["contacts"]
            .get("done")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        0
    );
    assert_eq!(stats["attempts"], 0);
    assert_eq!(stats["campaign"]["status"], "draft");
    assert!(stats.get("live").is_some(), "{stats}");
    assert!(stats.get("final_outcomes").is_some(), "{stats}");
    assert!(stats.get("attempt_outcomes").is_some(), "{stats}");
}

async fn attempts_empty_then_paged(b: Backend) {
    let api = Api::new(b).await;
    let id = api.campaign("attempts").await;
    let (status, page) = api.get(&format!("/v1/campaigns/{id}/attempts")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({ "attempts": [], "next_after": null }));

    for bad in ["limit=abc", "limit=-1", "after=x"] {
        assert_error(
            &api.get(&format!("/v1/campaigns/{id}/attempts?{bad}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &[bad.split('=').next().unwrap()],
        );
    }

    // Three attempts, opened through the store as the scheduler would.
    api.post_json(
        &format!("/v1/campaigns/{id}/contacts"),
        &json!([CLEAR, "13900000001", "13700000002"]),
    )
    .await;
    let now = jiff::Timestamp::now();
    for c in api.stored_contacts(id).await {
        api.store
            .begin_attempt(c.id, "node-a", now)
            .await
            .unwrap()
            .unwrap();
    }
    let (status, page) = api
        .get(&format!("/v1/campaigns/{id}/attempts?limit=2"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first = page["attempts"].as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(page["next_after"], first[1]["id"]);
    assert_eq!(first[0]["node"], "node-a");
    assert_eq!(first[0]["outcome"], Value::Null, "still on the wire");

    let after = page["next_after"].as_i64().unwrap();
    let (status, page) = api
        .get(&format!(
            "/v1/campaigns/{id}/attempts?after={after}&limit=2"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_after"], Value::Null, "last page");

    let (_, stats) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(stats["contacts"]["dialing"], 3, "{stats}");
    assert_eq!(stats["attempts"], 3, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// Trunks

async fn trunks(b: Backend) {
    let api = Api::new(b).await;
    let (status, list) = api.get("/v1/trunks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));

    let trunk = json!({ "name": "carrier-a", "host": "sip.example.com", "port": 5060 });
    let (status, saved) = api.post_json("/v1/trunks", &trunk).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["name"], "carrier-a");
    assert_eq!(saved["host"], "sip.example.com");

    let (_, list) = api.get("/v1/trunks").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "carrier-a");
    assert_eq!(list[0]["port"], 5060);

    // Same name: replaced, not added.
    let (status, _) = api
        .post_json(
            "/v1/trunks",
            &json!({ "name": "carrier-a", "host": "sip.example.com", "port": 5080, "password_env": "CARRIER_A_PASSWORD" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = api.get("/v1/trunks").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["port"], 5080);
    assert_eq!(list[0]["password_env"], "CARRIER_A_PASSWORD");
}

async fn invalid_trunks(b: Backend) {
    let api = Api::new(b).await;
    let (status, text) = api
        .raw(
            Method::POST,
            "/v1/trunks",
            Some("application/json"),
            json!({ "name": "t", "host": "h", "password": "s3cret-pw" }).to_string(),
        )
        .await;
    let res = (status, serde_json::from_str::<Value>(&text).unwrap());
    assert_error(
        &res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_trunk",
        &["password_env"],
    );
    assert!(
        !text.contains("s3cret-pw"),
        "the password is echoed: {text}"
    );

    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "t", "port": 5060 }), "missing field `host`"),
        (
            json!({ "name": "t", "host": " " }),
            "name and host are required",
        ),
        (
            json!({ "name": "", "host": "h" }),
            "name and host are required",
        ),
        (
            json!({ "name": "t", "host": "h", "passwd": "x" }),
            "unknown field `passwd`",
        ),
        (
            json!({ "name": "t", "host": "h", "max_cps": 0 }),
            "max_cps and max_concurrent must be positive",
        ),
        (
            json!({ "name": "t", "host": "h", "max_concurrent": 0 }),
            "max_cps and max_concurrent must be positive",
        ),
        (
            json!({ "name": "t", "host": "h", "port": 70000 }),
            "invalid value",
        ),
    ];
    for (body, reason) in cases {
        assert_error(
            &api.post_json("/v1/trunks", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_trunk",
            &[reason],
        );
    }
    assert_error(
        &api.post("/v1/trunks", "application/json", "{").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_trunk",
        &["line 1 column 1"],
    );
    let (_, list) = api.get("/v1/trunks").await;
    assert_eq!(list, json!([]), "no invalid trunk was stored");
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let api = Api::new(Backend::Memory).await;
    for uri in [
        "/",
        "/v2/campaigns",
        "/v1/campaign",
        "/v1/campaigns/1/contacts/2",
    ] {
        assert_error(
            &api.get(uri).await,
            StatusCode::NOT_FOUND,
            "not_found",
            &["no route", "/openapi.json"],
        );
    }
}

#[tokio::test]
async fn healthz_is_ok() {
    let api = Api::new(Backend::Memory).await;
    let (status, text) = api.raw(Method::GET, "/healthz", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "ok");
}

// ---------------------------------------------------------------------------------------------
// Security: clear numbers never leave in a response nor reach the store.

/// Adds contacts in every format and returns every response body of every read endpoint.
/// Returns the campaign, the contact an attempt was opened for (the clear number) and the
/// bodies.
async fn exercise_every_endpoint(api: &Api) -> (i64, i64, Vec<(String, String)>) {
    let id = api.campaign("secret").await;
    let mut bodies = Vec::new();
    let uri = format!("/v1/campaigns/{id}/contacts");
    let imports: [(&str, String, StatusCode); 4] = [
        (
            "application/json",
            json!([CLEAR, { "number": "+86 139-0000-0001", "variables": { "name": "Bob" } }, "13700000002x"])
                .to_string(),
            StatusCode::OK,
        ),
        (
            "text/csv",
            format!("number,name\n{CLEAR},Alice\n13600000003,Carol\n"),
            StatusCode::OK,
        ),
        (
            "text/csv",
            format!("phone\n{CLEAR}\n"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "text/plain",
            format!("{CLEAR}\n"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (ct, body, want) in imports {
        let (status, text) = api.raw(Method::POST, &uri, Some(ct), body).await;
        assert_eq!(status, want, "{ct}: {text}");
        bodies.push((format!("POST {uri} ({ct})"), text));
    }
    let now = jiff::Timestamp::now();
    let first = api.stored_contacts(id).await[0].id;
    api.store
        .begin_attempt(first, "node-a", now)
        .await
        .unwrap()
        .unwrap();
    let (status, _) = api
        .post_json(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for uri in [
        "/v1/campaigns".to_string(),
        format!("/v1/campaigns/{id}"),
        format!("/v1/campaigns/{id}/stats"),
        format!("/v1/campaigns/{id}/attempts"),
        "/v1/trunks".to_string(),
    ] {
        let (status, text) = api.raw(Method::GET, &uri, None, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {text}");
        bodies.push((format!("GET {uri}"), text));
    }
    let (status, text) = api
        .raw(
            Method::POST,
            &format!("/v1/campaigns/{id}/pause"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    bodies.push(("POST pause".into(), text));
    (id, first, bodies)
}

fn assert_no_clear_number(what: &str, text: &str) {
    for clear in [CLEAR, "8613812345678", "138-1234-5678"] {
        assert!(!text.contains(clear), "{what} contains {clear}: {text}");
    }
}

async fn no_response_contains_a_clear_number(b: Backend) {
    let api = Api::new(b).await;
    let (id, dialed, bodies) = exercise_every_endpoint(&api).await;
    for (what, text) in &bodies {
        assert_no_clear_number(what, text);
    }
    let report: Value = serde_json::from_str(&bodies[0].1).unwrap();
    assert_counts(&report, 3, 2, 0, 1);

    // The store holds the ciphertext, the blind index and the masked form, nothing in clear.
    let mut stored = api.stored_contacts(id).await;
    assert_eq!(stored.len(), 2, "Bob and Carol are pending");
    let mine = api.store.get_contact(dialed).await.unwrap();
    let v = vault();
    assert_eq!(mine.masked, "+86138****5678");
    assert_eq!(v.decrypt(&mine.number_enc).unwrap(), E164);
    assert_eq!(mine.number_hash, v.blind_index(E164));
    stored.push(mine);
    for c in &stored {
        assert_no_clear_number("a stored contact", &format!("{c:?} {}", c.variables));
        for bytes in [&c.number_enc, &c.number_hash] {
            assert!(
                !bytes.windows(CLEAR.len()).any(|w| w == CLEAR.as_bytes()),
                "stored bytes hold the clear number"
            );
        }
    }
}

/// With SQLite on disk, the database files themselves never hold a clear number.
#[tokio::test]
async fn sqlite_files_never_hold_a_clear_number() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("outcall.db"))
            .await
            .unwrap(),
    );
    let api = Api::with_store(sqlite.clone()).await;
    let (id, _, bodies) = exercise_every_endpoint(&api).await;
    for (what, text) in &bodies {
        assert_no_clear_number(what, text);
    }
    assert_eq!(
        api.stored_contacts(id).await.len(),
        2,
        "one contact is dialing"
    );
    drop(api);
    sqlite.close().await;
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for clear in [CLEAR, "8613812345678"] {
            assert!(
                !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
                "{} holds {clear}",
                path.display()
            );
        }
        // The masked form is there: the check looks at the right bytes.
        if path.extension().is_some_and(|e| e == "db") {
            assert!(bytes.windows(14).any(|w| w == b"+86138****5678"));
        }
    }
    assert!(files >= 1);
}

// ---------------------------------------------------------------------------------------------

/// Runs each scenario once on the in-memory store and once on SQLite (in memory).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
    };
}

on_both_stores!(
    create_list_get,
    unknown_and_malformed_campaign_ids,
    invalid_specs_are_rejected_with_the_reason,
    contacts_json_array,
    contacts_csv_with_number_column_and_variables,
    csv_without_the_number_column_lists_the_columns,
    mixed_csv_file,
    csv_from_a_spreadsheet_with_bom_crlf_and_blank_lines,
    contacts_to_a_finished_campaign_are_refused,
    lifecycle,
    stats_count_contacts_by_state,
    attempts_empty_then_paged,
    trunks,
    invalid_trunks,
    no_response_contains_a_clear_number,
);

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let api = Api::new(Backend::Memory).await;
    let (status, text) = api
        .raw(Method::DELETE, "/v1/campaigns", None, Body::empty())
        .await;
    let res = (status, serde_json::from_str::<Value>(&text).unwrap());
    assert_error(
        &res,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &["method not allowed"],
    );
}

#[tokio::test]
async fn numbers_invalid_for_their_country_are_rejected() {
    let api = Api::new(Backend::Memory).await;
    let id = api.campaign("metadata").await;
    // Well formed, but no Chinese number has these digits; the last one is a valid landline.
    let body = json!([
        "+86 138 1234",
        "11012345678",
        "+1 212 555 0100",
        "0755-12345678"
    ]);
    let (status, report) = api
        .post_json(&format!("/v1/campaigns/{id}/contacts"), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_counts(&report, 4, 2, 0, 2);
    assert_rejected(
        &report,
        &[
            (1, "invalid number: not a valid number for its country"),
            (2, "invalid number: not a valid number for its country"),
        ],
    );
}

#[tokio::test]
async fn blacklist_entries_block_imports_and_report_bad_rows() {
    let api = Api::new(Backend::Sqlite).await;
    let a = api.campaign("bl-a").await;
    let b = api.campaign("bl-b").await;
    let entries = json!([
        { "number": "13800000001", "reason": "complained", "source": "hotline" },
        { "prefix": "+86170", "reason": "virtual operators" },
        { "number": "13800000002", "reason": "campaign a only", "campaign_id": a },
        { "number": "13800000003", "prefix": "+86", "reason": "both" },
        { "prefix": "86abc", "reason": "bad prefix" },
        { "number": "13800000004", "reason": "" },
        { "number": "13800000005", "reason": "gone", "expires_at": "2000-01-01T00:00:00Z" },
        { "number": "13800000006", "reason": "x", "campaign_id": 999 },
    ]);
    let (status, report) = api.post_json("/v1/blacklist", &entries).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["added"], 3, "{report}");
    assert_eq!(report["invalid"], 5, "{report}");
    assert_rejected(
        &report,
        &[
            (4, "exactly one of `number` and `prefix`"),
            (5, "prefix must be `+` and 1 to 14 digits"),
            (6, "reason is required"),
            (7, "expires_at is in the past"),
            (8, "campaign 999 not found"),
        ],
    );
    let (_, list) = api.get("/v1/blacklist").await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    assert!(
        list.iter().all(|e| !e.to_string().contains("13800000001")),
        "entries are masked"
    );
    let numbers = "number\n13800000001\n17012345678\n13800000002\n13800000009\n";
    let (_, ra) = api
        .post_csv(&format!("/v1/campaigns/{a}/contacts"), numbers)
        .await;
    assert_eq!(
        (ra["added"].as_u64(), ra["blacklisted"].as_u64()),
        (Some(1), Some(3)),
        "{ra}"
    );
    assert_rejected(
        &ra,
        &[
            (2, "blacklisted: complained"),
            (3, "blacklisted: virtual operators"),
            (4, "blacklisted: campaign a only"),
        ],
    );
    let (_, rb) = api
        .post_csv(&format!("/v1/campaigns/{b}/contacts"), numbers)
        .await;
    assert_eq!(
        (rb["added"].as_u64(), rb["blacklisted"].as_u64()),
        (Some(2), Some(2)),
        "{rb}"
    );
    // Removing the prefix entry lets those numbers in.
    let id = list.iter().find(|e| e["kind"] == "prefix").unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, _) = api
        .raw(
            Method::DELETE,
            &format!("/v1/blacklist/{id}"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, text) = api
        .raw(
            Method::DELETE,
            &format!("/v1/blacklist/{id}"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let c = api.campaign("bl-c").await;
    let (_, rc) = api
        .post_csv(&format!("/v1/campaigns/{c}/contacts"), numbers)
        .await;
    assert_eq!(
        (rc["added"].as_u64(), rc["blacklisted"].as_u64()),
        (Some(3), Some(1)),
        "{rc}"
    );
}

#[tokio::test]
async fn known_empty_numbers_are_skipped_at_import_unless_the_campaign_dials_them() {
    let api = Api::new(Backend::Sqlite).await;
    let vault = NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).unwrap();
    let now = jiff::Timestamp::now();
    let hash = vault.blind_index("+8613800000001");
    let empty = outcall_domain::Outcome::EmptyNumber;
    api.store
        .record_number_outcome(&hash, empty, Some("empty"), now)
        .await
        .unwrap();
    let id = api.campaign("learned").await;
    let csv = "number\n13800000001\n13800000002\n";
    let (_, r) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), csv)
        .await;
    assert_eq!(
        (r["added"].as_u64(), r["known_empty"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_rejected(&r, &[(2, "known empty number")]);
    let spec = json!({ "name": "anyway", "trunks": ["t"], "dial_known_empty": true });
    let (_, c) = api.post_json("/v1/campaigns", &spec).await;
    let id = c["id"].as_i64().unwrap();
    let (_, r) = api
        .post_csv(
            &format!("/v1/campaigns/{id}/contacts"),
            "number\n13800000001\n",
        )
        .await;
    assert_eq!(
        (r["added"].as_u64(), r["known_empty"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
}

#[tokio::test]
async fn erase_scrubs_a_number_from_every_campaign() {
    let api = Api::new(Backend::Sqlite).await;
    let a = api.campaign("erase-a").await;
    let b = api.campaign("erase-b").await;
    for c in [a, b] {
        let csv = "number,name\n13800000001,Alice\n13800000002,Bob\n";
        api.post_csv(&format!("/v1/campaigns/{c}/contacts"), csv)
            .await;
    }
    let (status, r) = api
        .post_json(
            "/v1/numbers/erase",
            &json!({ "number": "+86 138-0000-0001" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["contacts"].as_u64(), r["attempts"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    for c in [a, b] {
        let due = api
            .store
            .due_contacts(c, jiff::Timestamp::now(), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "only Bob is left to call");
        assert_eq!(due[0].variables["name"], "Bob");
    }
    // Importing the number again is a new contact (nothing of the old one is left to match).
    let (_, r) = api
        .post_csv(
            &format!("/v1/campaigns/{a}/contacts"),
            "number\n13800000001\n",
        )
        .await;
    assert_eq!(r["added"], 1, "{r}");
    let (status, r) = api
        .post_json("/v1/numbers/erase", &json!({ "number": "nope" }))
        .await;
    assert_error(
        &(status, r),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["invalid number"],
    );
}

#[tokio::test]
async fn key_rotation_reseals_every_number_and_old_keys_can_go() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let api = Api::with_store(store.clone()).await;
    let id = api.campaign("rotate").await;
    api.post_csv(
        &format!("/v1/campaigns/{id}/contacts"),
        "number\n13800000001\n13800000002\n13800000003\n",
    )
    .await;
    api.post_json(
        "/v1/blacklist",
        &json!([{ "number": "13900000009", "reason": "asked" }]),
    )
    .await;
    // The operator adds key 2 and makes it current; key 1 is still loaded to read old data.
    let both = NumberVault::new(&[(1, [1; 32]), (2, [7; 32])], 2, [2; 32]).unwrap();
    let svc = CampaignService {
        vault: Arc::new(both),
        ..service(store.clone())
    };
    let rotated = Api::with_service(svc).await;
    let (status, r) = rotated
        .send(Method::POST, "/v1/keys/rotate", None, Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            r["checked"].as_u64(),
            r["resealed"].as_u64(),
            r["unreadable"].as_u64()
        ),
        (Some(4), Some(4), Some(0)),
        "{r}"
    );
    // Key 1 can now be dropped: key 2 alone reads every number.
    let only_new = NumberVault::new(&[(2, [7; 32])], 2, [2; 32]).unwrap();
    let mut numbers = Vec::new();
    for table in ["contacts", "blacklist"] {
        for sealed in store.sealed_numbers(table, 0, 100).await.unwrap() {
            assert_eq!(NumberVault::key_id(&sealed.number_enc), Some(2));
            numbers.push(only_new.decrypt(&sealed.number_enc).unwrap());
        }
    }
    numbers.sort();
    assert_eq!(
        numbers,
        [
            "+8613800000001",
            "+8613800000002",
            "+8613800000003",
            "+8613900000009"
        ]
    );
}

#[tokio::test]
async fn attribution_feeds_filters_and_province_statistics() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let dat =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/phone.dat");
    let attributor = outcall_pool::number::Attributor::new(Some(
        outcall_pool::attribution::PhoneDat::open(&dat).expect("../shared/data/phone.dat"),
    ));
    let svc = CampaignService {
        attributor: Arc::new(attributor),
        ..service(store.clone())
    };
    let api = Api::with_service(svc).await;
    let csv = "number\n13800138000\n13900001234\n0755-12345678\n18600001234\n";
    // No filter: every number is added, counted by province.
    let all = api.campaign("all").await;
    let (_, r) = api
        .post_csv(&format!("/v1/campaigns/{all}/contacts"), csv)
        .await;
    assert_eq!(r["added"], 4, "{r}");
    let (_, st) = api.get(&format!("/v1/campaigns/{all}/stats")).await;
    assert_eq!(st["provinces"]["北京"], 2, "{st}");
    assert_eq!(st["provinces"]["新疆"], 1, "{st}");
    assert_eq!(st["provinces"]["广东省"], 1, "{st}");
    // Only Beijing, only China Mobile.
    let spec = json!({ "name": "bj-mobile", "trunks": ["t"],
                       "filters": { "provinces": ["北京"], "carriers": ["china_mobile"] } });
    let (_, c) = api.post_json("/v1/campaigns", &spec).await;
    let id = c["id"].as_i64().unwrap();
    let (_, r) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), csv)
        .await;
    assert_eq!(
        (r["added"].as_u64(), r["filtered"].as_u64()),
        (Some(1), Some(3)),
        "{r}"
    );
    assert_rejected(
        &r,
        &[
            (3, "filtered: province 新疆 is not in the campaign's filter"),
            (
                4,
                "filtered: province 广东省 is not in the campaign's filter",
            ),
            (
                5,
                "filtered: carrier china_unicom is not in the campaign's filter",
            ),
        ],
    );
}

#[tokio::test]
async fn json_lines_and_background_imports() {
    let api = Api::new(Backend::Sqlite).await;
    let id = api.campaign("jsonl").await;
    let body = "{\"number\": \"13800000001\", \"variables\": {\"name\": \"A\"}}\n\n\"13800000002\"\nnot json\n{\"number\": \"x1\"}\n";
    let (status, text) = api
        .raw(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts"),
            Some("application/x-ndjson"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_counts(&r, 4, 2, 0, 2);
    assert_rejected(&r, &[(4, "not JSON"), (5, "invalid number")]);

    // In the background: 202 with a job, then its report.
    let csv: String = std::iter::once("number".to_string())
        .chain((0..3000).map(|i| format!("139{i:08}")))
        .collect::<Vec<_>>()
        .join("\n");
    let (status, text) = api
        .raw(
            Method::POST,
            &format!("/v1/campaigns/{id}/contacts?async=true"),
            Some("text/csv"),
            csv,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let job: Value = serde_json::from_str(&text).unwrap();
    let job_id = job["id"].as_u64().unwrap();
    assert_eq!(job["campaign_id"], id);
    let mut done = Value::Null;
    for _ in 0..200 {
        let (_, j) = api.get(&format!("/v1/imports/{job_id}")).await;
        if j["status"] == "done" {
            done = j;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["rows_read"], 3000, "{done}");
    assert_eq!(done["report"]["added"], 3000, "{done}");
    let (status, _) = api.get("/v1/imports/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_import_with_repeats_is_deduplicated_exactly() {
    let api = Api::new(Backend::Sqlite).await;
    let id = api.campaign("dedup").await;
    // 20,000 rows: 15,000 distinct numbers, every fourth row repeats an earlier one.
    let mut csv = String::from("number\n");
    for i in 0..20_000u32 {
        let n = if i % 4 == 3 { i - 3 } else { i };
        csv.push_str(&format!("138{n:08}\n"));
    }
    let (_, r) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), &csv)
        .await;
    assert_counts(&r, 20_000, 15_000, 5_000, 0);
    assert!(r["dedup_filter_bytes"].as_u64().unwrap() > 0, "{r}");
    // The same file again: every row is already in the campaign.
    let (_, r) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), &csv)
        .await;
    assert_counts(&r, 20_000, 0, 20_000, 0);
    let (_, st) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(st["contacts"]["pending"], 15_000);
}

#[tokio::test]
async fn one_file_of_good_bad_duplicate_and_blacklisted_rows() {
    let api = Api::new(Backend::Sqlite).await;
    let id = api.campaign("mixed").await;
    let entries = json!([
        { "number": "13800000009", "reason": "complained" },
        { "prefix": "+86170", "reason": "virtual operators" },
    ]);
    api.post_json("/v1/blacklist", &entries).await;
    let csv = "number,name\n\
               13800000001,A\n\
               +86 138-0000-0001,A again\n\
               abc,B\n\
               13800000009,C\n\
               17012345678,D\n\
               1380000,E\n\
               13900000002,F\n";
    let (status, r) = api
        .post_csv(&format!("/v1/campaigns/{id}/contacts"), csv)
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_counts(&r, 7, 2, 1, 2);
    assert_eq!(r["blacklisted"], 2, "{r}");
    assert_rejected(
        &r,
        &[
            (4, "invalid number: unexpected character `a`"),
            (5, "blacklisted: complained"),
            (6, "blacklisted: virtual operators"),
            (7, "invalid number: not a valid number for its country"),
        ],
    );
    let (_, st) = api.get(&format!("/v1/campaigns/{id}/stats")).await;
    assert_eq!(st["contacts"]["pending"], 2);
}

#[tokio::test]
async fn blacklist_csv_import_and_export() {
    let api = Api::new(Backend::Sqlite).await;
    let csv = "number,prefix,reason,source,expires_at\n\
               13800000001,,complained,hotline,\n\
               ,+86170,virtual operators,policy,2099-01-01T00:00:00Z\n\
               13800000002,,,hotline,\n\
               13800000003,,temporary,hotline,next week\n";
    let (status, r) = api
        .post("/v1/blacklist", "text/csv", csv.as_bytes().to_vec())
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["added"].as_u64(), r["invalid"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert_rejected(
        &r,
        &[
            (4, "reason is required"),
            (5, "expires_at `next week` is not RFC 3339"),
        ],
    );
    let (status, text) = api
        .raw(Method::GET, "/v1/blacklist?format=csv", None, Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,kind,number_or_prefix,campaign_id,reason,source,expires_at,created_at"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("exact,+86138****0001,,complained,hotline"),
        "{text}"
    );
    assert!(
        lines[2].contains("prefix,+86170,,virtual operators,policy,2099-01-01T00:00:00Z"),
        "{text}"
    );
    assert!(!text.contains("13800000001"), "numbers are exported masked");
    let (status, r) = api
        .post("/v1/blacklist", "text/csv", b"name\nx\n".to_vec())
        .await;
    assert_error(
        &(status, r),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        &["`number` or `prefix` column"],
    );
}
