//! Routes: change and delete a campaign (`PATCH`, `DELETE /v1/campaigns/{id}`) and caller-ID
//! pools (`/v1/caller-id-pools`). The service side is [`crate::campaign_admin`].

use super::{body, id, json, to_value, ApiState, Svc};
use crate::access::Caller;
use crate::campaign_admin::{PoolInput, PoolView};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Change a draft or paused campaign: the given top-level spec fields replace the stored ones
/// (JSON merge; `null` puts a field back to its default), and the result is validated like a
/// new spec. The scheduler reloads the campaign.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "campaigns",
    security(("bearer" = ["campaigns:write"])),
    params(("id" = i64, Path, description = "campaign id")),
    request_body(content = Object, description = "campaign spec fields to replace"),
    responses((status = 200, body = Object, description = "the campaign")))]
pub(super) async fn update_campaign(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let patch: serde_json::Value = json(&body(b)?)?;
    let (c, changed) = st.svc.update_campaign(id, patch).await?;
    st.access
        .audit(
            &caller,
            "campaign.update",
            Some(format!("campaign:{id}")),
            serde_json::json!({ "changed": changed, "status": c.status }),
        )
        .await?;
    Ok(Json(to_value(&c)?).into_response())
}

/// Delete a draft, completed or canceled campaign with its contacts, attempts (CDRs), its own
/// blacklist entries, its pending webhook deliveries and its recordings.
#[utoipa::path(delete, path = "/v1/campaigns/{id}", tag = "campaigns",
    security(("bearer" = ["campaigns:write"])),
    params(("id" = i64, Path, description = "campaign id")),
    responses((status = 204, description = "deleted")))]
pub(super) async fn delete_campaign(
    State(st): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let report = st.svc.delete_campaign(id).await?;
    st.access
        .audit(
            &caller,
            "campaign.delete",
            Some(format!("campaign:{id}")),
            to_value(&report)?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Create or replace a caller-ID pool (numbers presented as From). Campaigns that name it are
/// reloaded and rotate the new numbers.
#[utoipa::path(post, path = "/v1/caller-id-pools", tag = "caller-id-pools",
    security(("bearer" = ["trunks:write"])),
    request_body = PoolInput,
    responses(
        (status = 201, body = PoolView, description = "created"),
        (status = 200, body = PoolView, description = "replaced")))]
pub(super) async fn upsert_caller_id_pool(
    State(st): State<ApiState>,
    caller: Caller,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input: PoolInput = json(&body(b)?)?;
    let (pool, created) = st.svc.upsert_caller_id_pool(input).await?;
    st.access
        .audit(
            &caller,
            "caller_id_pool.upsert",
            Some(format!("caller_id_pool:{}", pool.name)),
            serde_json::json!({ "created": created, "numbers": pool.numbers.len() }),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pool)).into_response())
}

/// List caller-ID pools.
#[utoipa::path(get, path = "/v1/caller-id-pools", tag = "caller-id-pools",
    security(("bearer" = ["trunks:read"])),
    responses((status = 200, body = Vec<PoolView>)))]
pub(super) async fn list_caller_id_pools(State(s): Svc) -> Result<Json<Vec<PoolView>>, ApiError> {
    Ok(Json(s.list_caller_id_pools().await?))
}

/// One caller-ID pool.
#[utoipa::path(get, path = "/v1/caller-id-pools/{name}", tag = "caller-id-pools",
    security(("bearer" = ["trunks:read"])),
    params(("name" = String, Path, description = "pool name")),
    responses((status = 200, body = PoolView)))]
pub(super) async fn get_caller_id_pool(
    State(s): Svc,
    Path(name): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.get_caller_id_pool(&name).await?))
}

/// Delete a caller-ID pool (refused while a campaign that is not finished names it).
#[utoipa::path(delete, path = "/v1/caller-id-pools/{name}", tag = "caller-id-pools",
    security(("bearer" = ["trunks:write"])),
    params(("name" = String, Path, description = "pool name")),
    responses((status = 204, description = "deleted")))]
pub(super) async fn delete_caller_id_pool(
    State(st): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    st.svc.delete_caller_id_pool(&name).await?;
    st.access
        .audit(
            &caller,
            "caller_id_pool.delete",
            Some(format!("caller_id_pool:{name}")),
            serde_json::json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
