//! Route: system events (`GET /v1/events`): what the platform did on its own or noticed (a
//! trunk degraded or recovered, its circuit breaker opened, half-opened or closed, an alert
//! fired or resolved). Oldest first, paged by id, so a poller that keeps the last id it saw
//! gets every new event exactly once.

use super::{instant, query, ApiState};
use crate::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use outcall_store::{EventQuery, SystemEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Default page size.
const DEFAULT_LIMIT: u32 = 100;

#[derive(Deserialize, IntoParams)]
pub(super) struct EventsParams {
    /// Only this kind: `trunk.degraded`, `trunk.recovered`, `trunk.circuit_open`,
    /// `trunk.circuit_half_open`, `trunk.circuit_closed`, `alert.firing`, `alert.resolved`.
    kind: Option<String>,
    /// Only this subject (a trunk's name, an alert rule's name).
    subject: Option<String>,
    /// RFC 3339: events at or after this time.
    since: Option<String>,
    /// Cursor: events after this id (the `next_after_id` of the previous page, or the last id
    /// seen).
    after_id: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// One system event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct SystemEventDoc {
    id: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    at: String,
    /// `trunk.degraded`, `trunk.circuit_open`, …
    kind: String,
    /// A trunk's name, an alert rule's name.
    subject: String,
    /// `info`, `warning` or `critical`.
    severity: String,
    message: String,
    /// The figures behind the event (trunk events: trunk, factor, failure_ratio, samples,
    /// window_secs, open_secs).
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

/// A page of events, oldest first.
#[derive(Serialize, ToSchema)]
pub(super) struct EventsPage {
    #[schema(value_type = Vec<SystemEventDoc>)]
    events: Vec<SystemEvent>,
    /// The cursor for the next page when this one is full.
    next_after_id: Option<i64>,
}

/// System events, oldest first, filtered by kind, subject and time, paged by id.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    security(("bearer" = ["events:read"])),
    params(EventsParams),
    responses((status = 200, body = EventsPage)))]
pub(super) async fn list_events(
    State(st): State<ApiState>,
    q: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1000);
    let events = st
        .svc
        .store
        .list_events(&EventQuery {
            kind: q.kind,
            subject: q.subject,
            since: instant("since", q.since)?,
            after_id: q.after_id,
            limit,
        })
        .await?;
    let next_after_id = if events.len() as u32 == limit {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(EventsPage {
        events,
        next_after_id,
    }))
}
