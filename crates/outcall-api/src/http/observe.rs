//! Observability of the HTTP layer: `/metrics` (Prometheus text), `/readyz`, request metrics
//! by route template and status, and the trace id of each request.

use super::ApiState;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use outcall_domain::metrics as m;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// One readiness check: a dependency and whether it answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/readyz` asks: whether the node is draining, and its dependencies' checks.
pub trait Readiness: Send + Sync {
    /// True once shutdown has begun: the node takes no new work.
    fn draining(&self) -> bool;
    fn checks(&self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send + '_>>;
}

/// Renders the Prometheus exposition of the process.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The observability hooks of the router, given by the composition root.
#[derive(Clone, Default)]
pub struct Observability {
    /// `/metrics` answers 503 `unavailable` without it.
    pub metrics: Option<MetricsRender>,
    /// `/readyz` answers 200 without it (nothing to check).
    pub readiness: Option<Arc<dyn Readiness>>,
}

/// The trace id of a request: from its `traceparent` header when valid, else new. Echoed as
/// `X-Trace-Id`; a call placed by the request carries it to its CDR.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    security(("bearer" = ["metrics:read"])),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let render = s
        .obs
        .metrics
        .clone()
        .ok_or_else(|| ApiError::Unavailable("metrics are not enabled on this node".into()))?;
    let body = tokio::task::spawn_blocking(move || render())
        .await
        .map_err(|e| ApiError::Internal(format!("metrics rendering failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

/// `/readyz`: 200 `{"status":"ready"}` when every dependency answers; 503 with the failing
/// checks, or `{"status":"draining"}` once shutdown has begun (so load balancers stop sending).
pub(super) async fn readyz(State(s): State<ApiState>) -> Response {
    let Some(r) = s.obs.readiness.clone() else {
        return Json(serde_json::json!({"status": "ready", "checks": []})).into_response();
    };
    if r.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "draining", "checks": []})),
        )
            .into_response();
    }
    let checks = r.checks().await;
    let ok = checks.iter().all(|c| c.ok);
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": checks,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts each request by method, route template (never the concrete path: bounded labels)
/// and status, and records its duration; opens the request's span with its trace id.
pub(super) async fn track(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(outcall_telephony::trace::parse_traceparent)
        .unwrap_or_else(outcall_telephony::trace::new_trace_id);
    req.extensions_mut().insert(TraceId(trace.clone()));
    let span = tracing::info_span!("http", method, route = %route, trace_id = %trace);
    outcall_telephony::trace::link(&span, &trace);
    let mut res = tracing::Instrument::instrument(next.run(req), span).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&trace) {
        res.headers_mut().insert("x-trace-id", v);
    }
    res
}
