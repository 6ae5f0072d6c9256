//! Metric names emitted by the call engine (exposition comes with the monitoring layer).

/// Counter: finished calls, labels `outcome`, `trunk`.
pub const CALLS_TOTAL: &str = "outcall_calls_total";
/// Histogram (seconds): INVITE to first 18x or final response, label `trunk`.
pub const SETUP_SECONDS: &str = "outcall_call_setup_seconds";
/// Histogram (seconds): INVITE to answer, label `trunk`.
pub const ANSWER_SECONDS: &str = "outcall_call_answer_seconds";
/// Counter: SIP final responses, labels `code`, `trunk`.
pub const SIP_RESPONSES_TOTAL: &str = "outcall_sip_responses_total";
/// Gauge: calls in progress.
pub const CALLS_ACTIVE: &str = "outcall_calls_active";
/// Counters: RTP packets.
pub const RTP_SENT_TOTAL: &str = "outcall_rtp_packets_sent_total";
pub const RTP_RECEIVED_TOTAL: &str = "outcall_rtp_packets_received_total";
pub const RTP_LOST_TOTAL: &str = "outcall_rtp_packets_lost_total";
