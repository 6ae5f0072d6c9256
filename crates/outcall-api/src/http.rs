//! The HTTP API: every route under `/v1/`, its OpenAPI document at `/openapi.json` and a
//! Swagger UI at `/docs` (served from the binary, no CDN).
//!
//! Each operation declares the permission it needs in its `#[utoipa::path]` annotation
//! (`security(("bearer" = ["<permission>"]))`, or `security(())` for the login). [`router`]
//! reads those declarations back from the generated document into a [`RouteSpec`] table and
//! checks every request against it before the handler runs: no credentials is 401
//! `unauthenticated`, a role without the permission is 403 `forbidden`. A route that declares
//! no permission makes [`route_table`] panic, so it cannot be served; the route × role test
//! matrix (tests/rbac.rs) is generated from the same table.

use crate::access::{
    Access, ApiKeyRecordView, Caller, CreateApiKey, CreateUser, NewApiKeyView, PatchUser, Session,
    UserView,
};
use crate::auth::Permission;
use crate::error::ApiError;
use crate::service::{CampaignService, UploadFormat};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRef, FromRequestParts, MatchedPath, Path, Query, Request,
    State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use outcall_domain::campaign::{CampaignSpec, LifecycleAction};
use outcall_store::access::{AuditQuery, AuditRecord, IdempotencyClaim};
use outcall_telephony::TrunkConfig;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod campaign_admin;
mod events;
pub mod observe;

pub use observe::{Check, Observability, Readiness, TraceId};

/// Largest request body other than contact uploads.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest contact upload (spooled to disk, imported as a stream): about 250 million numbers.
pub const UPLOAD_LIMIT: usize = 4 * 1024 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub svc: Arc<CampaignService>,
    pub access: Arc<Access>,
    stats: Arc<StatsCache>,
    obs: Observability,
}

/// How long a campaign's stats are served from memory. Dashboards poll; computing the counts
/// scans the campaign's contacts and attempts, so many pollers share one computation a second.
pub const STATS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Computed stats by campaign, dropped after [`STATS_TTL`] or when any request changes
/// something (every method but GET and HEAD).
#[derive(Default)]
struct StatsCache {
    entries: std::sync::Mutex<HashMap<i64, (std::time::Instant, Arc<serde_json::Value>)>>,
    /// One computation at a time: the others wait for it and read its result.
    computing: tokio::sync::Mutex<()>,
}

impl StatsCache {
    fn get(&self, id: i64) -> Option<Arc<serde_json::Value>> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id)
            .filter(|(at, _)| at.elapsed() < STATS_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, id: i64, v: Arc<serde_json::Value>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < STATS_TTL);
        map.insert(id, (std::time::Instant::now(), v));
    }

    fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl FromRef<ApiState> for Arc<CampaignService> {
    fn from_ref(s: &ApiState) -> Self {
        s.svc.clone()
    }
}

impl FromRef<ApiState> for Arc<Access> {
    fn from_ref(s: &ApiState) -> Self {
        s.access.clone()
    }
}

type Svc = State<Arc<CampaignService>>;
type Acc = State<Arc<Access>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outcall API",
        description = "Outbound calling campaigns over SIP trunks. Authenticate with \
            `Authorization: Bearer <session token or API key>`; each operation's security \
            scope names the permission it needs.",
        version = env!("CARGO_PKG_VERSION")
    ),
    components(schemas(crate::error::Body, crate::error::Inner))
)]
struct ApiDoc;

/// Adds what every operation shares: the bearer scheme and the error responses.
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        // A campaign is its spec flattened with id, status and times (`allOf`): the spec's
        // "no other fields" would make every campaign invalid, so the document leaves it out
        // (the server still refuses unknown fields in a spec).
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(spec))) =
            components.schemas.get_mut("CampaignSpec")
        {
            spec.additional_properties = None;
        }
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A session token from /v1/auth/login, or an API key"))
                    .build(),
            ),
        );
        let error = utoipa::openapi::ResponseBuilder::new()
            .description("An error with a stable code (see the README's error table)")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("Error")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("4XX".into())
                    .or_insert_with(|| error.clone().into());
            }
        }
    }
}

/// One operation and the permission it needs (`None`: public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// The path template (`/v1/campaigns/{id}`).
    pub path: String,
    pub permission: Option<Permission>,
}

/// The operations of the API as registered, from [`openapi`]. Panics on an operation that
/// declares no permission or an unknown one: such a route must not be served.
pub fn route_table() -> Vec<RouteSpec> {
    table_of(&openapi())
}

fn table_of(doc: &utoipa::openapi::OpenApi) -> Vec<RouteSpec> {
    let json = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    let mut out = Vec::new();
    for (path, item) in json["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            if !op.is_object() || op.get("responses").is_none() {
                continue;
            }
            let security = op
                .get("security")
                .and_then(|s| s.as_array())
                .unwrap_or_else(|| panic!("{method} {path} declares no permission"));
            let scopes: Vec<&str> = security
                .iter()
                .filter_map(|req| req.get("bearer"))
                .flat_map(|s| s.as_array().into_iter().flatten())
                .filter_map(|s| s.as_str())
                .collect();
            let permission = match scopes.as_slice() {
                [] if security
                    .iter()
                    .all(|r| r.as_object().is_some_and(|o| o.is_empty())) =>
                {
                    None
                }
                [one] => Some(
                    Permission::parse(one)
                        .unwrap_or_else(|| panic!("{method} {path}: unknown permission `{one}`")),
                ),
                _ => panic!("{method} {path} must declare exactly one permission"),
            };
            out.push(RouteSpec {
                method: m,
                path: path.clone(),
                permission,
            });
        }
    }
    out
}

fn api_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(
            campaign_admin::update_campaign,
            campaign_admin::delete_campaign
        ))
        .routes(routes!(start_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(add_contacts, list_contacts))
        .routes(routes!(stats))
        .routes(routes!(attempts))
        .routes(routes!(get_attempt))
        .routes(routes!(cdrs))
        .routes(routes!(create_call))
        .routes(routes!(get_call))
        .routes(routes!(list_recordings))
        .routes(routes!(download_recording))
        .routes(routes!(import_job))
        .routes(routes!(upsert_trunk, list_trunks))
        .routes(routes!(
            campaign_admin::upsert_caller_id_pool,
            campaign_admin::list_caller_id_pools
        ))
        .routes(routes!(
            campaign_admin::get_caller_id_pool,
            campaign_admin::delete_caller_id_pool
        ))
        .routes(routes!(add_blacklist, list_blacklist))
        .routes(routes!(remove_blacklist))
        .routes(routes!(erase_number))
        .routes(routes!(rotate_keys))
        .routes(routes!(create_user, list_users))
        .routes(routes!(update_user))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_audit))
        .routes(routes!(webhook_deliveries))
        .routes(routes!(retry_webhook_delivery))
        .routes(routes!(observe::metrics))
        .routes(routes!(events::list_events))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    utoipa::Modify::modify(&Conventions, &mut doc);
    doc
}

#[derive(Clone)]
struct Gate {
    access: Arc<Access>,
    table: Arc<HashMap<(Method, String), Option<Permission>>>,
}

/// The whole HTTP application: the API behind its permission checks, `/openapi.json`,
/// `/docs`, `/healthz`, request ids.
pub fn router(svc: Arc<CampaignService>, access: Arc<Access>) -> Router {
    router_with(svc, access, Observability::default())
}

/// [`router`] with `/metrics` and `/readyz` answered by `obs`.
pub fn router_with(svc: Arc<CampaignService>, access: Arc<Access>, obs: Observability) -> Router {
    let (api, mut doc) = api_router().split_for_parts();
    utoipa::Modify::modify(&Conventions, &mut doc);
    let table = table_of(&doc)
        .into_iter()
        .map(|r| ((r.method, r.path), r.permission))
        .collect();
    let gate = Gate {
        access: access.clone(),
        table: Arc::new(table),
    };
    let doc = Arc::new(doc);
    let json_doc = doc.clone();
    let stats = Arc::new(StatsCache::default());
    api.route_layer(middleware::from_fn_with_state(gate, authorize))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(observe::readyz))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let d = json_doc.clone();
                async move { Json((*d).clone()) }
            }),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs").config(
                utoipa_swagger_ui::Config::from("/openapi.json").persist_authorization(true),
            ),
        )
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::NotFound(format!(
                "no route {method} {}; the routes are listed in /openapi.json",
                uri.path()
            ))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(stats.clone(), forget_stats))
        .layer(middleware::from_fn(observe::track))
        .layer(middleware::from_fn(request_id))
        .with_state(ApiState {
            svc,
            access,
            stats,
            obs,
        })
}

/// A request that may change something drops the cached stats.
async fn forget_stats(State(stats): State<Arc<StatsCache>>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        stats.clear();
    }
    next.run(req).await
}

/// The request's id: the caller's `X-Request-Id` when it is short and printable, else a new
/// one; echoed in the response and written in audit entries.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| crate::auth::random_secret_hex()[..16].to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn authorize(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return ApiError::NotFound("no such route".into()).into_response();
    };
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    // Fail closed: a method that is not in the table is refused here, never passed on.
    let Some(need) = gate.table.get(&(method, path.clone())).copied() else {
        return ApiError::MethodNotAllowed.into_response();
    };
    let Some(need) = need else {
        return next.run(req).await;
    };
    let mut caller = match gate.access.authenticate(req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    caller.ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    caller.request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    if !caller.role.allows(need) {
        gate.access
            .audit_denied(&caller, req.method().as_str(), &path)
            .await;
        return ApiError::Forbidden(format!(
            "the {} role lacks the `{}` permission",
            caller.role.as_str(),
            need.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("route reached without authentication".into()))
    }
}

/// Runs `f` at most once per `Idempotency-Key` (per caller and route): a repeat with the same
/// body gets the first response again (with `Idempotent-Replayed: true`), a repeat with
/// another body 422 `idempotency_key_reused`, a repeat while the first runs 409
/// `idempotency_in_progress`. Failed requests are not remembered.
async fn idempotent<F, Fut>(
    access: &Access,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(key) = headers.get("idempotency-key") else {
        let (status, v) = f().await?;
        return Ok((status, Json(v)).into_response());
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::InvalidRequest("Idempotency-Key must be 1 to 255 visible characters".into())
        })?;
    use sha2::Digest;
    let hash = sha2::Sha256::digest(body).to_vec();
    let scope = format!("{} {route}", caller.actor);
    match access
        .store
        .idempotency_claim(&scope, key, &hash, jiff::Timestamp::now())
        .await?
    {
        IdempotencyClaim::New => match f().await {
            Ok((status, v)) => {
                access
                    .store
                    .idempotency_complete(&scope, key, status.as_u16(), &v.to_string())
                    .await?;
                Ok((status, Json(v)).into_response())
            }
            Err(e) => {
                access.store.idempotency_release(&scope, key).await?;
                Err(e)
            }
        },
        IdempotencyClaim::InProgress { .. } => Err(ApiError::IdempotencyInProgress),
        IdempotencyClaim::Done {
            request_hash,
            status,
            body: stored,
        } => {
            if request_hash != hash {
                return Err(ApiError::IdempotencyKeyReused);
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((
                status,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::HeaderName::from_static("idempotent-replayed"),
                        "true",
                    ),
                ],
                stored,
            )
                .into_response())
        }
    }
}

fn id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::InvalidRequest(format!("`{raw}` is not an id")))
}

/// The request body, or the API error for a body that could not be read (too large: 413
/// `payload_too_large`, as JSON like every other error).
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(BODY_LIMIT)
        } else {
            ApiError::InvalidRequest(e.body_text())
        }
    })
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::InvalidRequest(e.body_text()))
}

/// Attempts as JSON, each with its time by phase (`breakdown`) when it has a CDR.
fn with_breakdown(list: &[outcall_store::AttemptRecord]) -> Result<serde_json::Value, ApiError> {
    let mut rows = to_value(&list)?;
    if let Some(rows) = rows.as_array_mut() {
        for (row, a) in rows.iter_mut().zip(list) {
            row["breakdown"] = to_value(&a.cdr.as_ref().map(|c| c.breakdown()))?;
        }
    }
    Ok(rows)
}

/// One attempt with its CDR and where its time went: queue wait, dispatch, SIP setup, ring,
/// talk (milliseconds). The CDR's `trace_id` finds its logs and exported spans.
#[utoipa::path(get, path = "/v1/attempts/{id}", tag = "cdrs",
    security(("bearer" = ["cdrs:read"])),
    params(("id" = i64, Path, description = "attempt id")),
    responses((status = 200, description = "the attempt, its CDR and `breakdown`",
        body = serde_json::Value)))]
async fn get_attempt(
    State(st): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let filter = outcall_store::AttemptQuery {
        after: id.saturating_sub(1),
        limit: 1,
        ..Default::default()
    };
    let found = st
        .svc
        .store
        .query_attempts(&filter)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("attempt {id} not found")))?;
    let mut rows = with_breakdown(std::slice::from_ref(&found))?;
    Ok(Json(rows[0].take()).into_response())
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Session

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// Log in: a session token for `Authorization: Bearer`.
#[utoipa::path(post, path = "/v1/auth/login", tag = "session", security(()),
    request_body = LoginBody,
    responses((status = 200, body = Session)))]
async fn login(
    State(a): Acc,
    ci: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    rid: Option<axum::Extension<RequestId>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Session>, ApiError> {
    let l: LoginBody = json(&body(b)?)?;
    let ip = ci.map(|c| c.0 .0.ip().to_string());
    Ok(Json(
        a.login(&l.username, &l.password, ip, rid.map(|r| r.0 .0))
            .await?,
    ))
}

/// The caller: actor, role.
#[utoipa::path(get, path = "/v1/auth/me", tag = "session",
    security(("bearer" = ["session"])),
    responses((status = 200, body = Caller)))]
async fn me(caller: Caller) -> Json<Caller> {
    Json(caller)
}

// ---------------------------------------------------------------------------------------------
// Campaigns

/// Create a campaign (draft) from a campaign spec (see the README). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns",
    security(("bearer" = ["campaigns:write"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe creation")),
    request_body = outcall_domain::campaign::CampaignSpec,
    responses((status = 201, body = outcall_domain::campaign::Campaign)))]
async fn create_campaign(
    State(st): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    idempotent(
        &st.access,
        &caller,
        &headers,
        "POST /v1/campaigns",
        &b,
        || async {
            let spec: CampaignSpec = json(&b)?;
            let c = st.svc.create_campaign(spec).await?;
            st.access
                .audit(
                    &caller,
                    "campaign.create",
                    Some(format!("campaign:{}", c.id)),
                    serde_json::json!({ "name": c.spec.name }),
                )
                .await?;
            Ok((StatusCode::CREATED, to_value(&c)?))
        },
    )
    .await
}

/// List campaigns.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns",
    security(("bearer" = ["campaigns:read"])),
    responses((status = 200, body = Vec<outcall_domain::campaign::Campaign>)))]
async fn list_campaigns(State(s): Svc) -> Result<Response, ApiError> {
    Ok(Json(s.list_campaigns().await?).into_response())
}

/// One campaign.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    security(("bearer" = ["campaigns:read"])),
    params(("id" = i64, Path, description = "campaign id")),
    responses((status = 200, body = outcall_domain::campaign::Campaign)))]
async fn get_campaign(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(s.get_campaign(id(&raw)?).await?).into_response())
}

async fn lifecycle(
    st: ApiState,
    caller: Caller,
    raw: String,
    action: LifecycleAction,
    name: &str,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let c = st.svc.act(id, action).await?;
    st.access
        .audit(
            &caller,
            &format!("campaign.{name}"),
            Some(format!("campaign:{id}")),
            serde_json::json!({ "status": c.status }),
        )
        .await?;
    Ok(Json(c).into_response())
}

/// One lifecycle route: `POST /v1/campaigns/{id}/<name>`.
macro_rules! lifecycle_route {
    ($handler:ident, $path:literal, $action:ident, $name:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "campaigns",
                                            security(("bearer" = ["campaigns:write"])),
                                            params(("id" = i64, Path, description = "campaign id")),
                                            responses((status = 200, body = outcall_domain::campaign::Campaign)))]
        async fn $handler(
            State(st): State<ApiState>,
            caller: Caller,
            Path(raw): Path<String>,
        ) -> Result<Response, ApiError> {
            lifecycle(st, caller, raw, LifecycleAction::$action, $name).await
        }
    };
}

lifecycle_route!(
    start_campaign,
    "/v1/campaigns/{id}/start",
    Start,
    "start",
    "Start a draft campaign."
);
lifecycle_route!(
    pause_campaign,
    "/v1/campaigns/{id}/pause",
    Pause,
    "pause",
    "Pause a running campaign (calls in progress finish)."
);
lifecycle_route!(
    resume_campaign,
    "/v1/campaigns/{id}/resume",
    Resume,
    "resume",
    "Resume a paused campaign."
);
lifecycle_route!(
    cancel_campaign,
    "/v1/campaigns/{id}/cancel",
    Cancel,
    "cancel",
    "Cancel a campaign: nothing more is dialed."
);

#[derive(Deserialize, IntoParams)]
struct ContactsQuery {
    /// CSV column holding the number (`number` by default).
    number_column: Option<String>,
    /// Import in the background: 202 with a job to poll at `/v1/imports/{id}`.
    #[serde(default, rename = "async")]
    #[param(rename = "async")]
    background: bool,
}

/// Add contacts: a JSON array, JSON Lines, or CSV; the report lists rejected rows by line.
#[utoipa::path(post, path = "/v1/campaigns/{id}/contacts", tag = "contacts",
    security(("bearer" = ["contacts:write"])),
    params(("id" = i64, Path, description = "campaign id"), ContactsQuery),
    request_body(content(
        (Vec<Object> = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/csv"))),
    responses(
        (status = 200, body = Object, description = "import report"),
        (status = 202, body = Object, description = "background import job")))]
async fn add_contacts(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    q: Result<Query<ContactsQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let s = &st.svc;
    let id = id(&raw)?;
    let q = query(q)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let format = if ct.starts_with("text/csv") {
        UploadFormat::Csv {
            number_column: q.number_column.unwrap_or_else(|| "number".into()),
        }
    } else if ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl") {
        UploadFormat::JsonLines
    } else if ct.starts_with("application/json") {
        UploadFormat::Json
    } else {
        return Err(ApiError::UnsupportedMediaType(ct));
    };
    // The campaign must exist before anything is spooled or audited.
    s.get_campaign(id).await?;
    let upload = spool(body).await?;
    let size = upload.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    if q.background {
        let job = s.start_import(id, upload, format).await?;
        st.access
            .audit(
                &caller,
                "contacts.import",
                Some(format!("campaign:{id}")),
                serde_json::json!({ "bytes": size, "background": true, "job": job.id }),
            )
            .await?;
        return Ok((StatusCode::ACCEPTED, Json(job)).into_response());
    }
    let file = upload
        .reopen()
        .map_err(|e| ApiError::Internal(format!("cannot reopen the upload: {e}")))?;
    let report = s.import(id, file, &format, None).await?;
    st.access
        .audit(
            &caller,
            "contacts.import",
            Some(format!("campaign:{id}")),
            serde_json::json!({
                "bytes": size,
                "added": report.added,
                "duplicates": report.duplicates,
                "invalid": report.invalid,
                "blacklisted": report.blacklisted,
            }),
        )
        .await?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize, IntoParams)]
struct StatsQuery {
    /// Add `hours`: attempts by UTC hour and outcome.
    #[serde(default)]
    hours: bool,
}

#[derive(Deserialize, IntoParams)]
struct ContactsPage {
    /// `pending`, `dialing` or `done`.
    state: Option<String>,
    /// Cursor: the `next_after` of the previous page.
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// A campaign's contacts by cursor: masked number, state, attempts, outcomes, attribution.
#[utoipa::path(get, path = "/v1/campaigns/{id}/contacts", tag = "contacts",
    security(("bearer" = ["contacts:read"])),
    params(("id" = i64, Path, description = "campaign id"), ContactsPage),
    responses((status = 200, body = Object)))]
async fn list_contacts(
    State(s): Svc,
    Path(raw): Path<String>,
    q: Result<Query<ContactsPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = id(&raw)?;
    s.get_campaign(id).await?;
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => Some(outcall_domain::campaign::ContactState::Pending),
        Some("dialing") => Some(outcall_domain::campaign::ContactState::Dialing),
        Some("done") => Some(outcall_domain::campaign::ContactState::Done),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "state `{other}`: use pending, dialing or done"
            )))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = s
        .store
        .list_contacts(id, state, q.after.unwrap_or(0), limit)
        .await?;
    let next = if rows.len() as u32 == limit {
        rows.last().map(|c| c.id)
    } else {
        None
    };
    let contacts: Vec<serde_json::Value> = rows
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "number": c.masked,
                "state": c.state.as_str(),
                "priority": c.priority,
                "attempts": c.attempts,
                "last_outcome": c.last_outcome.map(|o| o.as_str()),
                "final_outcome": c.final_outcome.map(|o| o.as_str()),
                "due_at": c.due_at.to_string(),
                "time_zone": c.time_zone,
                "province": c.region.province,
                "city": c.region.city,
                "carrier": c.region.carrier,
                "variables": c.variables,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "contacts": contacts, "next_after": next })).into_response())
}

/// Counts by state, outcome and province; live concurrency and CPS; optionally by hour.
#[utoipa::path(get, path = "/v1/campaigns/{id}/stats", tag = "campaigns",
    security(("bearer" = ["campaigns:read"])),
    params(("id" = i64, Path, description = "campaign id"), StatsQuery),
    responses((status = 200, body = Object)))]
async fn stats(
    State(st): State<ApiState>,
    Path(raw): Path<String>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = id(&raw)?;
    let cached = match st.stats.get(id) {
        Some(v) => v,
        None => {
            let _one = st.stats.computing.lock().await;
            match st.stats.get(id) {
                Some(v) => v,
                None => {
                    let v = Arc::new(to_value(&st.svc.stats(id).await?)?);
                    st.stats.put(id, v.clone());
                    v
                }
            }
        }
    };
    if !q.hours {
        return Ok(Json(cached).into_response());
    }
    let mut v = (*cached).clone();
    v["hours"] = to_value(&st.svc.hours(id).await?)?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize, IntoParams)]
struct CdrQuery {
    campaign_id: Option<i64>,
    /// An outcome (`answered_human`, `busy`, …).
    outcome: Option<String>,
    /// A number in any format the importer accepts: its calls, across campaigns.
    number: Option<String>,
    /// RFC 3339: attempts started at or after.
    since: Option<String>,
    /// RFC 3339: attempts started before.
    until: Option<String>,
    /// Cursor: the `next_after` of the previous page (JSON only).
    after: Option<i64>,
    /// Page size, 1 to 1000 (JSON only; CSV streams every match).
    limit: Option<u32>,
    /// `json` (default) or `csv` (needs `cdrs:export`; audited).
    format: Option<String>,
}

const CDR_COLUMNS: [&str; 20] = [
    "attempt_id",
    "campaign_id",
    "contact_id",
    "seq",
    "node",
    "number",
    "started_at",
    "ended_at",
    "outcome",
    "cause",
    "trunk",
    "caller_id",
    "sip_status",
    "q850_cause",
    "setup_ms",
    "duration_ms",
    "billsec",
    "hangup_by",
    "dtmf",
    "call_id",
];

fn cdr_csv_rows(rows: &[outcall_store::AttemptRecord]) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let opt = |v: Option<String>| v.unwrap_or_default();
    for a in rows {
        let c = a.cdr.as_ref();
        w.write_record([
            a.id.to_string(),
            a.campaign_id.to_string(),
            a.contact_id.to_string(),
            a.seq.to_string(),
            a.node.clone(),
            opt(c.map(|c| c.callee.clone())),
            a.started_at.to_string(),
            opt(a.ended_at.map(|t| t.to_string())),
            opt(a.outcome.map(|o| o.as_str().to_string())),
            opt(a.cause.clone()),
            opt(c.map(|c| c.trunk.clone())),
            opt(c.map(|c| c.caller_id.clone())),
            opt(c.and_then(|c| c.sip_status).map(|v| v.to_string())),
            opt(c.and_then(|c| c.q850_cause).map(|v| v.to_string())),
            opt(c.and_then(|c| c.setup_ms).map(|v| v.to_string())),
            opt(c.map(|c| c.duration_ms.to_string())),
            opt(c.map(|c| c.billsec.to_string())),
            opt(c
                .and_then(|c| c.hangup_by)
                .and_then(|h| serde_json::to_value(h).ok())
                .and_then(|v| v.as_str().map(str::to_string))),
            opt(c.map(|c| c.dtmf.clone())),
            opt(c.map(|c| c.call_id.clone())),
        ])
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    w.into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Call records across campaigns by filter: JSON pages by cursor, or every match as CSV
/// (numbers masked either way).
#[utoipa::path(get, path = "/v1/cdrs", tag = "cdrs",
    security(("bearer" = ["cdrs:read"])),
    params(CdrQuery),
    responses((status = 200, content(
        (Object = "application/json"),
        (String = "text/csv")))))]
async fn cdrs(
    State(st): State<ApiState>,
    caller: Caller,
    q: Result<Query<CdrQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "format `{other}`: use json or csv"
            )))
        }
    };
    let outcome = q
        .outcome
        .as_deref()
        .map(|o| {
            o.parse::<outcall_domain::Outcome>()
                .map_err(|e| ApiError::InvalidRequest(e.to_string()))
        })
        .transpose()?;
    let filter = outcall_store::AttemptQuery {
        campaign_id: q.campaign_id,
        outcome,
        number_hash: q
            .number
            .as_deref()
            .map(|n| st.svc.number_hash(n))
            .transpose()?,
        since: instant("since", q.since)?,
        until: instant("until", q.until)?,
        after: q.after.unwrap_or(0),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    if !csv {
        let rows = st.svc.store.query_attempts(&filter).await?;
        let next = if rows.len() as u32 == filter.limit {
            rows.last().map(|a| a.id)
        } else {
            None
        };
        let rows = with_breakdown(&rows)?;
        return Ok(Json(serde_json::json!({ "cdrs": rows, "next_after": next })).into_response());
    }
    if !caller.role.allows(Permission::CdrsExport) {
        return Err(ApiError::Forbidden(format!(
            "the {} role may not export call records (`cdrs:export`)",
            caller.role.as_str()
        )));
    }
    st.access
        .audit(
            &caller,
            "cdrs.export",
            q.campaign_id.map(|c| format!("campaign:{c}")),
            serde_json::json!({
                "outcome": q.outcome,
                "number": q.number.as_deref().map(outcall_domain::mask_number),
                "since": filter.since.map(|t| t.to_string()),
                "until": filter.until.map(|t| t.to_string()),
            }),
        )
        .await?;
    // Every match, a page at a time, as the client reads.
    let header = {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CDR_COLUMNS)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        w.into_inner()
            .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    let store = st.svc.store.clone();
    let first = futures_util::stream::once(async move { Ok::<_, ApiError>(Bytes::from(header)) });
    let pages = futures_util::stream::unfold(
        Some(outcall_store::AttemptQuery {
            limit: 1000,
            ..filter
        }),
        move |state| {
            let store = store.clone();
            async move {
                let mut f = state?;
                let rows = match store.query_attempts(&f).await {
                    Ok(r) => r,
                    Err(e) => return Some((Err(ApiError::from(e)), None)),
                };
                let last = rows.last()?;
                f.after = last.id;
                let next = (rows.len() as u32 == f.limit).then_some(f);
                Some((cdr_csv_rows(&rows).map(Bytes::from), next))
            }
        },
    );
    use futures_util::StreamExt;
    let body = axum::body::Body::from_stream(first.chain(pages));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"cdrs.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
struct AttemptsQuery {
    /// Cursor: the `next_after` of the previous page.
    after: Option<i64>,
    /// Page size (1 to 1000, default 100).
    limit: Option<u32>,
    /// Add each attempt's full number as `number` (needs `numbers:unmasked`; audited).
    #[serde(default)]
    unmask: bool,
}

/// A campaign's attempts with their CDRs, by cursor. Numbers are masked unless `unmask=true`
/// and the caller's role may see full numbers.
#[utoipa::path(get, path = "/v1/campaigns/{id}/attempts", tag = "cdrs",
    security(("bearer" = ["cdrs:read"])),
    params(("id" = i64, Path, description = "campaign id"), AttemptsQuery),
    responses((status = 200, body = Object)))]
async fn attempts(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    q: Result<Query<AttemptsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = id(&raw)?;
    if q.unmask && !caller.role.allows(Permission::NumbersUnmasked) {
        return Err(ApiError::Forbidden(format!(
            "the {} role may not see full numbers (`numbers:unmasked`)",
            caller.role.as_str()
        )));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = st.svc.attempts(id, q.after, limit).await?;
    let next = if list.len() as u32 == limit {
        list.last().map(|a| a.id)
    } else {
        None
    };
    let mut rows = with_breakdown(&list)?;
    if q.unmask {
        let ids: Vec<i64> = list.iter().map(|a| a.contact_id).collect();
        let numbers = st.svc.clear_numbers(ids).await?;
        if let Some(rows) = rows.as_array_mut() {
            for (row, a) in rows.iter_mut().zip(&list) {
                row["number"] = numbers.get(&a.contact_id).cloned().into();
            }
        }
        st.access
            .audit(
                &caller,
                "numbers.unmask",
                Some(format!("campaign:{id}")),
                serde_json::json!({ "attempts": list.len() }),
            )
            .await?;
    }
    Ok(Json(serde_json::json!({ "attempts": rows, "next_after": next })).into_response())
}

/// A background import: rows read so far, then its report.
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "contacts",
    security(("bearer" = ["imports:read"])),
    params(("id" = u64, Path, description = "import job id")),
    responses((status = 200, body = Object)))]
async fn import_job(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = raw
        .parse::<u64>()
        .map_err(|_| ApiError::InvalidRequest(format!("`{raw}` is not an import id")))?;
    Ok(Json(s.import_job(id)?).into_response())
}

// ---------------------------------------------------------------------------------------------
// Single calls

/// Place one call now (a campaign of one contact, no retries). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/calls", tag = "calls",
    security(("bearer" = ["calls:create"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe creation")),
    request_body = crate::calls::NewCall,
    responses((status = 201, body = crate::calls::CallView)))]
async fn create_call(
    State(st): State<ApiState>,
    caller: Caller,
    trace: Option<axum::Extension<TraceId>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    idempotent(
        &st.access,
        &caller,
        &headers,
        "POST /v1/calls",
        &b,
        || async {
            let mut c: crate::calls::NewCall = json(&b)?;
            c.trace_id = trace.map(|t| t.0 .0);
            let call = st.svc.create_call(c).await?;
            st.access
                .audit(
                    &caller,
                    "call.create",
                    Some(format!("call:{}", call.id)),
                    serde_json::json!({ "to": call.to, "trunk": call.trunk }),
                )
                .await?;
            Ok((StatusCode::CREATED, to_value(&call)?))
        },
    )
    .await
}

/// A single call: status, outcome and CDR once completed.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls",
    security(("bearer" = ["calls:read"])),
    params(("id" = i64, Path, description = "call id")),
    responses((status = 200, body = crate::calls::CallView)))]
async fn get_call(
    State(s): Svc,
    Path(raw): Path<String>,
) -> Result<Json<crate::calls::CallView>, ApiError> {
    Ok(Json(s.get_call(id(&raw)?).await?))
}

// ---------------------------------------------------------------------------------------------
// Recordings

#[derive(Deserialize, IntoParams)]
struct RecordingsQuery {
    campaign_id: Option<i64>,
    /// Cursor: the `next_after` of the previous page (an attempt id).
    after: Option<i64>,
    /// Attempts scanned per page, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// One recording's metadata.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RecordingView {
    attempt_id: i64,
    campaign_id: i64,
    started_at: String,
    outcome: Option<String>,
    /// Answered time of the call (ms).
    billsec_ms: u64,
    /// Size of the WAV file; absent if the file is gone.
    bytes: Option<u64>,
}

/// Recordings metadata (which attempts were recorded, how long, how big), by cursor.
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings",
    security(("bearer" = ["recordings:metadata"])),
    params(RecordingsQuery),
    responses((status = 200, body = Object)))]
async fn list_recordings(
    State(s): Svc,
    q: Result<Query<RecordingsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = s
        .store
        .query_attempts(&outcall_store::AttemptQuery {
            campaign_id: q.campaign_id,
            after: q.after.unwrap_or(0),
            limit,
            ..Default::default()
        })
        .await?;
    let next = if rows.len() as u32 == limit {
        rows.last().map(|a| a.id)
    } else {
        None
    };
    let recordings: Vec<RecordingView> = rows
        .iter()
        .filter_map(|a| {
            let cdr = a.cdr.as_ref()?;
            let path = cdr.recording.as_ref()?;
            Some(RecordingView {
                attempt_id: a.id,
                campaign_id: a.campaign_id,
                started_at: a.started_at.to_string(),
                outcome: a.outcome.map(|o| o.as_str().to_string()),
                billsec_ms: cdr.billsec,
                bytes: std::fs::metadata(path).ok().map(|m| m.len()),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "recordings": recordings, "next_after": next })).into_response())
}

/// Download an attempt's recording (WAV, both directions). Audited.
#[utoipa::path(get, path = "/v1/recordings/{attempt_id}", tag = "recordings",
    security(("bearer" = ["recordings:download"])),
    params(("attempt_id" = i64, Path, description = "attempt id")),
    responses((status = 200, content((String = "audio/wav")))))]
async fn download_recording(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let attempt = st
        .svc
        .store
        .query_attempts(&outcall_store::AttemptQuery {
            after: id - 1,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("attempt {id} not found")))?;
    let path = attempt
        .cdr
        .as_ref()
        .and_then(|c| c.recording.clone())
        .ok_or_else(|| ApiError::NotFound(format!("attempt {id} has no recording")))?;
    // Only the file the scheduler names `<recordings>/<campaign>/<attempt>.wav`.
    let p = std::path::Path::new(&path);
    let expected_name = format!("{id}.wav");
    let campaign_dir = attempt.campaign_id.to_string();
    if p.file_name().and_then(|n| n.to_str()) != Some(expected_name.as_str())
        || p.parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            != Some(campaign_dir.as_str())
    {
        return Err(ApiError::Internal(format!(
            "attempt {id}: unexpected recording path"
        )));
    }
    let file = match tokio::fs::File::open(p).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!(
                "the recording of attempt {id} is gone (erased or deleted)"
            )))
        }
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "recording of attempt {id}: {e}"
            )))
        }
    };
    let size = file.metadata().await.map(|m| m.len()).ok();
    st.access
        .audit(
            &caller,
            "recording.download",
            Some(format!("attempt:{id}")),
            serde_json::json!({ "campaign_id": attempt.campaign_id, "bytes": size }),
        )
        .await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut res = (
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"attempt-{id}.wav\""),
            ),
        ],
        body,
    )
        .into_response();
    if let Some(n) = size.and_then(|n| HeaderValue::from_str(&n.to_string()).ok()) {
        res.headers_mut().insert(header::CONTENT_LENGTH, n);
    }
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// Trunks

/// Add or replace a trunk (passwords only through `password_env` / `password_file`).
#[utoipa::path(post, path = "/v1/trunks", tag = "trunks",
    security(("bearer" = ["trunks:write"])),
    request_body(content = Object, description = "trunk configuration"),
    responses((status = 200, body = Object)))]
async fn upsert_trunk(
    State(st): State<ApiState>,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t: TrunkConfig = serde_json::from_slice(&body(b)?)
        .map_err(|e| ApiError::InvalidTrunk(format!("invalid trunk: {e}")))?;
    let t = st.svc.upsert_trunk(t).await?;
    st.access
        .audit(
            &caller,
            "trunk.upsert",
            Some(format!("trunk:{}", t.name)),
            serde_json::json!({ "host": t.host, "port": t.port }),
        )
        .await?;
    Ok(Json(t).into_response())
}

/// List trunks.
#[utoipa::path(get, path = "/v1/trunks", tag = "trunks",
    security(("bearer" = ["trunks:read"])),
    responses((status = 200, body = Vec<Object>)))]
async fn list_trunks(State(s): Svc) -> Result<Response, ApiError> {
    Ok(Json(s.list_trunks().await?).into_response())
}

// ---------------------------------------------------------------------------------------------
// Blacklist

/// Add do-not-call entries: a JSON array or CSV (`number` or `prefix`, `reason`, …).
#[utoipa::path(post, path = "/v1/blacklist", tag = "blacklist",
    security(("bearer" = ["blacklist:write"])),
    request_body(content((Vec<Object> = "application/json"), (String = "text/csv"))),
    responses((status = 200, body = Object, description = "import report")))]
async fn add_blacklist(
    State(st): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body(b)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let (items, first_line) = if ct.starts_with("text/csv") {
        (blacklist_csv(&body)?, 2)
    } else if ct.starts_with("application/json") {
        let rows: Vec<crate::service::BlacklistInput> = json(&body)?;
        (rows.into_iter().map(Ok).collect(), 1)
    } else {
        return Err(ApiError::UnsupportedMediaType(ct));
    };
    let report = st.svc.add_blacklist_rows(items, first_line).await?;
    st.access
        .audit(
            &caller,
            "blacklist.add",
            None,
            serde_json::json!({ "added": report.added, "invalid": report.invalid }),
        )
        .await?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize, IntoParams)]
struct BlacklistQuery {
    /// Only this campaign's entries (and the global ones).
    campaign_id: Option<i64>,
    /// `csv` exports the list as CSV (numbers masked).
    format: Option<String>,
}

/// List do-not-call entries (numbers masked), as JSON or CSV.
#[utoipa::path(get, path = "/v1/blacklist", tag = "blacklist",
    security(("bearer" = ["blacklist:read"])),
    params(BlacklistQuery),
    responses((status = 200, content(
        (Vec<Object> = "application/json"),
        (String = "text/csv")))))]
async fn list_blacklist(
    State(st): State<ApiState>,
    caller: Caller,
    q: Result<Query<BlacklistQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let list = st.svc.list_blacklist(q.campaign_id).await?;
    match q.format.as_deref() {
        None | Some("json") => return Ok(Json(list).into_response()),
        Some("csv") => {}
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "format `{other}`: use json or csv"
            )))
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| ApiError::Internal(e.to_string());
    w.write_record([
        "id",
        "kind",
        "number_or_prefix",
        "campaign_id",
        "reason",
        "source",
        "expires_at",
        "created_at",
    ])
    .map_err(io)?;
    for e in &list {
        let campaign = e.campaign_id.map(|c| c.to_string()).unwrap_or_default();
        let expires = e.expires_at.map(|t| t.to_string()).unwrap_or_default();
        w.write_record([
            e.id.to_string().as_str(),
            e.kind.as_str(),
            e.label.as_str(),
            campaign.as_str(),
            e.reason.as_str(),
            e.source.as_str(),
            expires.as_str(),
            e.created_at.to_string().as_str(),
        ])
        .map_err(io)?;
    }
    let body = w
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    st.access
        .audit(
            &caller,
            "blacklist.export",
            None,
            serde_json::json!({ "entries": list.len() }),
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// Remove a do-not-call entry.
#[utoipa::path(delete, path = "/v1/blacklist/{id}", tag = "blacklist",
    security(("bearer" = ["blacklist:write"])),
    params(("id" = i64, Path, description = "entry id")),
    responses((status = 204, description = "removed")))]
async fn remove_blacklist(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = raw
        .parse::<i64>()
        .map_err(|_| ApiError::InvalidRequest(format!("`{raw}` is not an entry id")))?;
    st.svc.remove_blacklist(id).await?;
    st.access
        .audit(
            &caller,
            "blacklist.remove",
            Some(format!("blacklist:{id}")),
            serde_json::json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Numbers and keys

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    number: String,
}

/// Right to erasure: every contact, CDR, status and recording of a number.
#[utoipa::path(post, path = "/v1/numbers/erase", tag = "numbers",
    security(("bearer" = ["numbers:erase"])),
    request_body = EraseBody,
    responses((status = 200, body = Object)))]
async fn erase_number(
    State(st): State<ApiState>,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let e: EraseBody = json(&body(b)?)?;
    let report = st.svc.erase_number(&e.number).await?;
    st.access
        .audit(
            &caller,
            "number.erase",
            Some(format!("number:{}", outcall_domain::mask_number(&e.number))),
            to_value(&report)?,
        )
        .await?;
    Ok(Json(report).into_response())
}

/// Re-encrypt every stored number with the current key.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "numbers",
    security(("bearer" = ["keys:rotate"])),
    responses((status = 200, body = Object)))]
async fn rotate_keys(State(st): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    let report = st.svc.rotate_keys().await?;
    st.access
        .audit(&caller, "keys.rotate", None, to_value(&report)?)
        .await?;
    Ok(Json(report).into_response())
}

// ---------------------------------------------------------------------------------------------
// Users, API keys, audit

/// Create a user.
#[utoipa::path(post, path = "/v1/users", tag = "users",
    security(("bearer" = ["users:manage"])),
    request_body = CreateUser,
    responses((status = 201, body = UserView)))]
async fn create_user(
    State(a): Acc,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let u: CreateUser = json(&body(b)?)?;
    Ok((StatusCode::CREATED, Json(a.create_user(&caller, u).await?)).into_response())
}

/// List users.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    security(("bearer" = ["users:manage"])),
    responses((status = 200, body = Vec<UserView>)))]
async fn list_users(State(a): Acc) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(a.list_users().await?))
}

/// Change a user's role, password or disabled flag (audited; role changes as
/// `user.role_change`).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    security(("bearer" = ["users:manage"])),
    params(("id" = i64, Path, description = "user id")),
    request_body = PatchUser,
    responses((status = 200, body = UserView)))]
async fn update_user(
    State(a): Acc,
    caller: Caller,
    Path(raw): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<UserView>, ApiError> {
    let id = id(&raw)?;
    let p: PatchUser = json(&body(b)?)?;
    Ok(Json(a.update_user(&caller, id, p).await?))
}

/// Create an API key for a role. The key is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = ["api_keys:manage"])),
    request_body = CreateApiKey,
    responses((status = 201, body = NewApiKeyView)))]
async fn create_api_key(
    State(a): Acc,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let k: CreateApiKey = json(&body(b)?)?;
    Ok((
        StatusCode::CREATED,
        Json(a.create_api_key(&caller, k).await?),
    )
        .into_response())
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = ["api_keys:manage"])),
    responses((status = 200, body = Vec<ApiKeyRecordView>)))]
async fn list_api_keys(State(a): Acc) -> Result<Json<Vec<ApiKeyRecordView>>, ApiError> {
    Ok(Json(a.list_api_keys().await?))
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    security(("bearer" = ["api_keys:manage"])),
    params(("id" = i64, Path, description = "key id")),
    responses((status = 200, body = ApiKeyRecordView)))]
async fn revoke_api_key(
    State(a): Acc,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<ApiKeyRecordView>, ApiError> {
    let id = id(&raw)?;
    if caller.api_key_id == Some(id) {
        return Err(ApiError::Conflict(
            "a key cannot revoke itself; use another credential".into(),
        ));
    }
    Ok(Json(a.revoke_api_key(&caller, id).await?))
}

#[derive(Deserialize, IntoParams)]
struct AuditParams {
    /// Cursor: the `next_after` of the previous page.
    after: Option<i64>,
    /// Page size (1 to 1000, default 100).
    limit: Option<u32>,
    /// `user:<name>`, `key:<id>` or `system`.
    actor: Option<String>,
    /// `auth.login`, `contacts.import`, …
    action: Option<String>,
    /// RFC 3339: entries at or after.
    since: Option<String>,
    /// RFC 3339: entries before.
    until: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    entries: Vec<AuditRecord>,
    next_after: Option<i64>,
}

fn instant(name: &str, v: Option<String>) -> Result<Option<jiff::Timestamp>, ApiError> {
    v.map(|s| {
        s.parse::<jiff::Timestamp>()
            .map_err(|_| ApiError::InvalidRequest(format!("{name} `{s}` is not RFC 3339")))
    })
    .transpose()
}

/// Read the audit log (append-only: no route changes it).
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    security(("bearer" = ["audit:read"])),
    params(AuditParams),
    responses((status = 200, body = AuditPage)))]
async fn list_audit(
    State(a): Acc,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = a
        .list_audit(&AuditQuery {
            after: q.after.unwrap_or(0),
            limit,
            actor: q.actor,
            action: q.action,
            since: instant("since", q.since)?,
            until: instant("until", q.until)?,
        })
        .await?;
    let next_after = if entries.len() as u32 == limit {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/// Status webhook deliveries: status, tries, last error and HTTP status; by cursor.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks",
    security(("bearer" = ["webhooks:read"])),
    params(
        ("status" = Option<String>, Query, description = "pending, delivered or failed"),
        ("campaign_id" = Option<i64>, Query),
        ("after" = Option<i64>, Query, description = "cursor: the previous page's next_after"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, body = Object)))]
async fn webhook_deliveries(
    s: Svc,
    q: Result<Query<crate::webhook::DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    crate::webhook::list_deliveries(s, q).await
}

/// Send a failed delivery again (back to pending, due now).
#[utoipa::path(post, path = "/v1/webhooks/deliveries/{id}/retry", tag = "webhooks",
    security(("bearer" = ["webhooks:write"])),
    params(("id" = i64, Path, description = "delivery id")),
    responses((status = 200, body = Object)))]
async fn retry_webhook_delivery(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let res = crate::webhook::retry_delivery(State(st.svc.clone()), Path(raw.clone())).await?;
    st.access
        .audit(
            &caller,
            "webhook.retry",
            Some(format!("delivery:{raw}")),
            serde_json::json!({}),
        )
        .await?;
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Writes an upload to a temporary file as it arrives, so an import of any size (up to
/// [`UPLOAD_LIMIT`]) holds only one chunk in memory; the file is deleted when dropped.
async fn spool(body: axum::body::Body) -> Result<tempfile::NamedTempFile, ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let internal = |e: std::io::Error| ApiError::Internal(format!("cannot spool the upload: {e}"));
    let tmp = tempfile::NamedTempFile::new().map_err(internal)?;
    let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(internal)?);
    let mut body = body;
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::InvalidRequest(format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            size += data.len();
            if size > UPLOAD_LIMIT {
                return Err(ApiError::PayloadTooLarge(UPLOAD_LIMIT));
            }
            out.write_all(&data).await.map_err(internal)?;
        }
    }
    out.flush().await.map_err(internal)?;
    Ok(tmp)
}

/// Blacklist CSV: a header with `number` or `prefix`, `reason`, and optionally `source`,
/// `campaign_id`, `expires_at` (RFC 3339). A row that cannot be read is reported by line.
fn blacklist_csv(
    body: &[u8],
) -> Result<Vec<Result<crate::service::BlacklistInput, String>>, ApiError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = rdr
        .headers()
        .map_err(|e| ApiError::InvalidRequest(format!("csv header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (number, prefix, reason) = (col("number"), col("prefix"), col("reason"));
    if number.is_none() && prefix.is_none() {
        return Err(ApiError::InvalidRequest(
            "blacklist csv needs a `number` or `prefix` column".into(),
        ));
    }
    let (source, campaign, expires) = (col("source"), col("campaign_id"), col("expires_at"));
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let row = rec
            .map_err(|e| format!("unreadable row: {e}"))
            .and_then(|r| {
                let get = |i: Option<usize>| {
                    i.and_then(|i| r.get(i))
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                };
                Ok(crate::service::BlacklistInput {
                    number: get(number),
                    prefix: get(prefix),
                    reason: get(reason).unwrap_or_default(),
                    source: get(source),
                    campaign_id: match get(campaign) {
                        Some(c) => Some(
                            c.parse()
                                .map_err(|_| format!("campaign_id `{c}` is not a number"))?,
                        ),
                        None => None,
                    },
                    expires_at: match get(expires) {
                        Some(e) => Some(
                            e.parse()
                                .map_err(|_| format!("expires_at `{e}` is not RFC 3339"))?,
                        ),
                        None => None,
                    },
                })
            });
        rows.push(row);
    }
    Ok(rows)
}
