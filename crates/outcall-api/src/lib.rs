//! The access layer: a [`service::CampaignService`] that every entry point uses (HTTP API, CLI),
//! and the HTTP API under `/v1/` built on it ([`http::router`]).
//!
//! Errors leave as JSON `{"error": {"code": "...", "message": "..."}}` with a stable code per
//! cause (see [`error::ApiError`]) and a 4xx status for anything the caller can fix.

pub mod access;
pub mod auth;
pub mod calls;
pub mod campaign_admin;
pub mod error;
pub mod http;
pub mod service;
pub mod tls;
pub mod webhook;

pub use error::ApiError;
pub use service::CampaignService;
