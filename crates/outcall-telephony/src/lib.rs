//! Telephony for the dialer role: a SIP user agent client and the RTP media of each call.
//!
//! The rest of Outcall sees one trait, [`CallEngine`]: give it a [`CallRequest`] (who to call,
//! over which [`TrunkConfig`], with which prompt and rules) and it returns a [`CallReport`]
//! with the call's transitions and its classified CDR. [`SipUserAgent`] implements it on
//! rsipstack (RFC 3261 transactions, digest auth, UDP and TCP); the SIP stack never leaks
//! past this crate. Each answered call gets a [`media`] session: one UDP socket, a 20 ms
//! clock that sends the prompt in G.711, a jitter buffer on receive, DTMF detection (RFC 4733
//! and in-band) and a two-channel recording.
//!
//! Signalling and media run on separate tokio tasks so SIP never waits behind audio work.

pub mod config;
pub mod engine;
pub mod media;
pub mod quality;
pub mod trace;
pub mod ua;

pub use config::{CallerIdPool, NumberFormat, SipTransport, TrunkConfig, UaConfig};
pub use engine::{CallEngine, CallReport, CallRequest, CallUpdate, Prompt};
pub use ua::SipUserAgent;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
