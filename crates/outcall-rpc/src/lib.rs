//! Call control between scheduler and dialer nodes over gRPC (`proto/dialer.proto`).
//!
//! A dialer node serves [`DialerService`] around its own [`CallEngine`] (the SIP user agent).
//! A scheduler node dials through [`RemoteEngine`], which is a [`CallEngine`] too: it picks the
//! least-loaded live dialer from a [`DialerDirectory`], originates the call there and follows
//! its event stream to the final report. So the scheduler runs the same code whether calls are
//! placed in its own process or on other nodes.
//!
//! Failure semantics:
//! - A dialer that refuses a call (full, draining) or cannot be reached before the call was
//!   accepted: the next dialer is tried; nothing was dialed.
//! - The stream breaks after the dialer accepted the call (the node died, the network failed):
//!   the call is reported `failed` with cause `node_lost`, with whatever the stream had told
//!   of it (a CDR is always produced), and the scheduler retries it by the campaign's policy.
//! - The scheduler goes away mid-call: the dialer sees its stream closed and hangs the call up,
//!   since nobody is left to record its outcome (the CDR still reaches the bus from the dialer
//!   when it publishes one, see [`ReportHook`]).

mod client;
mod server;

pub use client::{DialerDirectory, DialerEndpoint, RemoteEngine, RemoteEngineConfig};
pub use server::{serve, CallInfo, DialerService, ReportHook};

/// The generated protocol types, client and server.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("outcall.dialer.v1");
}

/// Errors converting between the wire and the domain.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("bad {what} JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}
