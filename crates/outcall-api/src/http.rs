//! HTTP routes under `/v1/`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | alive |
//! | POST, GET | `/v1/campaigns` | create (JSON campaign spec), list |
//! | GET | `/v1/campaigns/{id}` | one campaign |
//! | POST | `/v1/campaigns/{id}/contacts` | add contacts: JSON array, or `text/csv` (`?number_column=`) |
//! | POST | `/v1/campaigns/{id}/start` (`pause`, `resume`, `cancel`) | lifecycle |
//! | GET | `/v1/campaigns/{id}/stats` | counts by state and outcome, concurrency, CPS |
//! | GET | `/v1/campaigns/{id}/attempts?after=&limit=` | attempts with CDRs, cursor paging |
//! | POST, GET | `/v1/trunks` | add or replace a trunk, list |
//! | POST, GET | `/v1/blacklist` | add do-not-call entries (JSON array), list (`?campaign_id=`) |
//! | DELETE | `/v1/blacklist/{id}` | remove an entry |
//! | POST | `/v1/numbers/erase` | right to erasure for `{"number": …}` |
//! | GET | `/v1/imports/{id}` | a background import (`contacts?async=true`): rows read, report |
//! | POST | `/v1/keys/rotate` | re-encrypt every number with the current key |

use crate::error::ApiError;
use crate::service::{CampaignService, UploadFormat};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outcall_domain::campaign::{CampaignSpec, LifecycleAction};
use outcall_telephony::TrunkConfig;
use serde::Deserialize;
use std::sync::Arc;

/// Largest request body other than contact uploads.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest contact upload (spooled to disk, imported as a stream): about 250 million numbers.
pub const UPLOAD_LIMIT: usize = 4 * 1024 * 1024 * 1024;

type Svc = State<Arc<CampaignService>>;

/// The API router.
pub fn router(service: Arc<CampaignService>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/campaigns", post(create_campaign).get(list_campaigns))
        .route("/v1/campaigns/{id}", get(get_campaign))
        .route("/v1/campaigns/{id}/contacts", post(add_contacts))
        .route("/v1/campaigns/{id}/stats", get(stats))
        .route("/v1/campaigns/{id}/attempts", get(attempts))
        .route("/v1/campaigns/{id}/{action}", post(lifecycle))
        .route("/v1/trunks", post(upsert_trunk).get(list_trunks))
        .route("/v1/blacklist", post(add_blacklist).get(list_blacklist))
        .route(
            "/v1/blacklist/{id}",
            axum::routing::delete(remove_blacklist),
        )
        .route("/v1/numbers/erase", post(erase_number))
        .route("/v1/imports/{id}", get(import_job))
        .route("/v1/keys/rotate", post(rotate_keys))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service)
}

fn id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::InvalidRequest(format!("`{raw}` is not a campaign id")))
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

async fn create_campaign(
    State(s): Svc,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec: CampaignSpec = json(&body(b)?)?;
    let c = s.create_campaign(spec).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn list_campaigns(State(s): Svc) -> Result<Response, ApiError> {
    Ok(Json(s.list_campaigns().await?).into_response())
}

async fn get_campaign(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(s.get_campaign(id(&raw)?).await?).into_response())
}

#[derive(Deserialize)]
struct ContactsQuery {
    number_column: Option<String>,
    /// Import in the background: 202 with a job to poll at `/v1/imports/{id}`.
    #[serde(default, rename = "async")]
    background: bool,
}

async fn add_contacts(
    State(s): Svc,
    Path(raw): Path<String>,
    q: Result<Query<ContactsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
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
    let upload = spool(body).await?;
    if q.background {
        let job = s.start_import(id, upload, format).await?;
        return Ok((StatusCode::ACCEPTED, Json(job)).into_response());
    }
    let file = upload
        .reopen()
        .map_err(|e| ApiError::Internal(format!("cannot reopen the upload: {e}")))?;
    let report = s.import(id, file, &format, None).await?;
    Ok(Json(report).into_response())
}

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

async fn lifecycle(
    State(s): Svc,
    Path((raw, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let action = match action.as_str() {
        "start" => LifecycleAction::Start,
        "pause" => LifecycleAction::Pause,
        "resume" => LifecycleAction::Resume,
        "cancel" => LifecycleAction::Cancel,
        other => {
            return Err(ApiError::NotFound(format!(
                "no action `{other}` (start, pause, resume, cancel)"
            )))
        }
    };
    Ok(Json(s.act(id, action).await?).into_response())
}

async fn stats(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(s.stats(id(&raw)?).await?).into_response())
}

#[derive(Deserialize)]
struct Page {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn attempts(
    State(s): Svc,
    Path(raw): Path<String>,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let list = s
        .attempts(id(&raw)?, q.after, q.limit.unwrap_or(100))
        .await?;
    let next = if list.len() as u32 == q.limit.unwrap_or(100).clamp(1, 1000) {
        list.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Json(serde_json::json!({ "attempts": list, "next_after": next })).into_response())
}

async fn upsert_trunk(
    State(s): Svc,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t: TrunkConfig = serde_json::from_slice(&body(b)?)
        .map_err(|e| ApiError::InvalidTrunk(format!("invalid trunk: {e}")))?;
    Ok(Json(s.upsert_trunk(t).await?).into_response())
}

async fn list_trunks(State(s): Svc) -> Result<Response, ApiError> {
    Ok(Json(s.list_trunks().await?).into_response())
}

async fn add_blacklist(
    State(s): Svc,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    Ok(Json(s.add_blacklist_rows(items, first_line).await?).into_response())
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

#[derive(Deserialize)]
struct BlacklistQuery {
    campaign_id: Option<i64>,
    /// `csv` exports the list as CSV (numbers masked).
    format: Option<String>,
}

async fn list_blacklist(
    State(s): Svc,
    q: Result<Query<BlacklistQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let list = s.list_blacklist(q.campaign_id).await?;
    if q.format.as_deref() == Some("csv") {
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
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(list).into_response())
}

async fn remove_blacklist(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = raw
        .parse::<i64>()
        .map_err(|_| ApiError::InvalidRequest(format!("`{raw}` is not an entry id")))?;
    s.remove_blacklist(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    number: String,
}

async fn erase_number(State(s): Svc, body: Bytes) -> Result<Response, ApiError> {
    let b: EraseBody = json(&body)?;
    Ok(Json(s.erase_number(&b.number).await?).into_response())
}

async fn rotate_keys(State(s): Svc) -> Result<Response, ApiError> {
    Ok(Json(s.rotate_keys().await?).into_response())
}

async fn import_job(State(s): Svc, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = raw
        .parse::<u64>()
        .map_err(|_| ApiError::InvalidRequest(format!("`{raw}` is not an import id")))?;
    Ok(Json(s.import_job(id)?).into_response())
}
