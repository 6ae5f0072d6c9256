//! Stable API error codes and their HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outcall_store::StoreError;
use serde::Serialize;

/// Every error the API returns. `code()` is stable: integrators match on it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidCampaign(String),
    #[error("{0}")]
    InvalidTrunk(String),
    #[error("campaign {0} not found")]
    CampaignNotFound(i64),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    IllegalTransition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    #[error(
        "unsupported content type `{0}`: use text/csv, application/json or application/x-ndjson"
    )]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running")]
    IdempotencyInProgress,
    #[error("too many failed logins: try again in {0} s")]
    TooManyAttempts(u64),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidCampaign(_) => "invalid_campaign",
            ApiError::InvalidTrunk(_) => "invalid_trunk",
            ApiError::CampaignNotFound(_) => "campaign_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::IllegalTransition(_) => "illegal_transition",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyInProgress => "idempotency_in_progress",
            ApiError::TooManyAttempts(_) => "too_many_attempts",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidCampaign(_)
            | ApiError::InvalidTrunk(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::CampaignNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::IllegalTransition(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthenticated(_) | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyInProgress => StatusCode::CONFLICT,
            ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound {
                what: "campaign",
                id,
            } => ApiError::CampaignNotFound(id),
            StoreError::NotFound { what, id } => {
                ApiError::NotFound(format!("{what} {id} not found"))
            }
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => {
                metrics::counter!(outcall_domain::metrics::STORE_ERRORS_TOTAL, "component" => "api")
                    .increment(1);
                ApiError::Internal(other.to_string())
            }
        }
    }
}

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Inner<'a> {
    /// Stable code: match on it.
    code: &'a str,
    /// What went wrong, for a person.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!(error = %self, "internal error");
        }
        let body = Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let retry_after = match self {
            ApiError::TooManyAttempts(s) => Some(s),
            _ => None,
        };
        let mut res = (self.status(), axum::Json(body)).into_response();
        if let Some(v) =
            retry_after.and_then(|s| axum::http::HeaderValue::from_str(&s.to_string()).ok())
        {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        if res.status() == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}
