//! System events: what the platform did on its own or noticed, for operators to read back
//! (`GET /v1/events`). A trunk degraded or recovered, its circuit breaker opened, half-opened or
//! closed, an alert fired or resolved.
//!
//! Events are append-only; only [`EventStore::purge_events`] deletes, for retention. They name
//! trunks, campaigns and rules, never a phone number.

use crate::{Result, StoreError};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;

/// Event kinds written today.
pub mod kind {
    /// A trunk's rate factor went down (failures over the window).
    pub const TRUNK_DEGRADED: &str = "trunk.degraded";
    /// A trunk's rate factor is back at 1: its configured limits apply again.
    pub const TRUNK_RECOVERED: &str = "trunk.recovered";
    /// A trunk's circuit breaker opened: nothing is dispatched to it for a while.
    pub const TRUNK_CIRCUIT_OPEN: &str = "trunk.circuit_open";
    /// A trunk's circuit breaker lets one probe call through.
    pub const TRUNK_CIRCUIT_HALF_OPEN: &str = "trunk.circuit_half_open";
    /// A trunk's probe call worked: the circuit is closed again.
    pub const TRUNK_CIRCUIT_CLOSED: &str = "trunk.circuit_closed";
    /// An alert rule started firing.
    pub const ALERT_FIRING: &str = "alert.firing";
    /// An alert rule stopped firing.
    pub const ALERT_RESOLVED: &str = "alert.resolved";
}

/// Severities, from least to most urgent.
pub mod severity {
    pub const INFO: &str = "info";
    pub const WARNING: &str = "warning";
    pub const CRITICAL: &str = "critical";
    /// Every severity.
    pub const ALL: [&str; 3] = [INFO, WARNING, CRITICAL];
}

/// The most events one [`EventStore::list_events`] call returns.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSystemEvent {
    pub at: Timestamp,
    /// `trunk.degraded`, `trunk.circuit_open`, `alert.firing`, … (see [`kind`]).
    pub kind: String,
    /// What the event is about: a trunk's name, an alert rule's name.
    pub subject: String,
    /// `info`, `warning` or `critical` (see [`severity`]).
    pub severity: String,
    /// One line for a human.
    pub message: String,
    /// JSON with the figures behind the event (never a phone number).
    pub details: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemEvent {
    pub id: i64,
    pub at: Timestamp,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    pub details: serde_json::Value,
}

/// Which events to list. Results are **oldest first** (ascending id, the order they were
/// appended), so `after_id` set to the last id of a page reads the next one and a poller that
/// keeps its last id sees every new event exactly once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Exactly this kind.
    pub kind: Option<String>,
    /// Exactly this subject.
    pub subject: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Cursor: events with an id above this one.
    pub after_id: Option<i64>,
    /// Page size, 1 to [`MAX_EVENTS_PAGE`] (0 counts as 1, more as the cap).
    pub limit: u32,
}

impl EventQuery {
    /// The page size actually used.
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_EVENTS_PAGE)
    }
}

/// Checks an event before it is stored (both stores refuse the same things).
pub(crate) fn check(e: &NewSystemEvent) -> Result<()> {
    if !severity::ALL.contains(&e.severity.as_str()) {
        return Err(StoreError::Conflict(format!(
            "event severity `{}` is not info, warning or critical",
            e.severity
        )));
    }
    if e.kind.is_empty() {
        return Err(StoreError::Conflict("event kind is empty".into()));
    }
    Ok(())
}

/// Storage of system events.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends an event; returns it with its id. `Conflict` for an unknown severity or an empty
    /// kind.
    async fn append_event(&self, event: &NewSystemEvent) -> Result<SystemEvent>;
    /// Events matching the query, oldest first (see [`EventQuery`]).
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<SystemEvent>>;
    /// Deletes events older than `before` (retention); returns how many.
    async fn purge_events(&self, before: Timestamp) -> Result<u64>;
}
