//! The catalogue of metrics Outcall exposes at `/metrics` (Prometheus text format).
//!
//! Every metric the code emits is named here, with its kind, help text, labels and (for
//! histograms) buckets, so the exporter can describe them and the shipped dashboards and alert
//! rules can be checked against the names. Labels are bounded: outcomes, trunk names, campaign
//! ids, SIP codes, route templates; never phone numbers or per-call ids.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Upper bounds of the histogram's buckets (seconds), empty for other kinds.
    pub buckets: &'static [f64],
}

/// Buckets for call setup and answer times (seconds).
pub const SETUP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];
/// Buckets for dispatch latency (seconds).
pub const DISPATCH_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for HTTP request durations (seconds).
pub const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets for talk time (seconds).
pub const TALK_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Buckets for RTP interarrival jitter (seconds).
pub const JITTER_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];

macro_rules! catalogue {
    ($($(#[$doc:meta])* $id:ident = ($name:literal, $kind:ident, [$($l:literal),*], $buckets:expr, $help:literal);)*) => {
        $($(#[$doc])* pub const $id: &str = $name;)*
        /// Every metric, in catalogue order.
        pub const ALL: &[Def] = &[$(Def {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            labels: &[$($l),*],
            buckets: $buckets,
        },)*];
    };
}

const NONE: &[f64] = &[];

catalogue! {
    /// Finished calls by classified outcome.
    CALLS_TOTAL = ("outcall_calls_total", Counter, ["outcome", "trunk", "campaign"], NONE,
        "Finished calls by outcome, trunk and campaign");
    /// Attempts dispatched (an attempt per second is `rate()` of this).
    ATTEMPTS_TOTAL = ("outcall_attempts_total", Counter, ["trunk", "campaign"], NONE,
        "Attempts dispatched to a trunk");
    CALLS_ACTIVE = ("outcall_calls_active", Gauge, [], NONE,
        "Calls in progress on this node");
    /// Answer-seizure ratio over the last 5 minutes, per trunk.
    ASR_RATIO = ("outcall_asr_ratio", Gauge, ["trunk"], NONE,
        "Answered calls over calls placed, last 5 minutes");
    /// Average call duration over the last 5 minutes, per trunk.
    ACD_SECONDS = ("outcall_acd_seconds", Gauge, ["trunk"], NONE,
        "Average talk time of answered calls, last 5 minutes");
    SETUP_SECONDS = ("outcall_call_setup_seconds", Histogram, ["trunk"], SETUP_BUCKETS,
        "INVITE to first provisional or final response");
    ANSWER_SECONDS = ("outcall_call_answer_seconds", Histogram, ["trunk"], SETUP_BUCKETS,
        "INVITE to answer");
    TALK_SECONDS = ("outcall_call_talk_seconds", Histogram, ["trunk"], TALK_BUCKETS,
        "Answer to hangup of answered calls");
    DISPATCH_SECONDS = ("outcall_dispatch_latency_seconds", Histogram, [], DISPATCH_BUCKETS,
        "Due time to dispatch of an attempt");
    SIP_RESPONSES_TOTAL = ("outcall_sip_responses_total", Counter, ["code", "trunk"], NONE,
        "Final SIP responses to INVITEs");
    RTP_SENT_TOTAL = ("outcall_rtp_packets_sent_total", Counter, ["trunk"], NONE,
        "RTP packets sent");
    RTP_RECEIVED_TOTAL = ("outcall_rtp_packets_received_total", Counter, ["trunk"], NONE,
        "RTP packets received");
    RTP_LOST_TOTAL = ("outcall_rtp_packets_lost_total", Counter, ["trunk"], NONE,
        "RTP packets lost (sequence gaps)");
    RTP_JITTER_SECONDS = ("outcall_rtp_jitter_seconds", Histogram, ["trunk"], JITTER_BUCKETS,
        "Interarrival jitter at the end of each call (RFC 3550)");
    QUEUE_DUE = ("outcall_queue_due_tasks", Gauge, [], NONE,
        "Contacts of running campaigns that are due and not yet dialed");
    QUEUE_OLDEST_AGE = ("outcall_queue_oldest_due_age_seconds", Gauge, [], NONE,
        "Age of the oldest due contact of a running campaign");
    QUEUE_LOADED = ("outcall_queue_loaded_tasks", Gauge, [], NONE,
        "Tasks in the scheduler's timing wheel and ready queue");
    DEFERRED_TOTAL = ("outcall_tasks_deferred_total", Counter, ["reason"], NONE,
        "Tasks deferred by a closed calling window or a frequency cap");
    IMPORT_ROWS_TOTAL = ("outcall_import_rows_total", Counter, ["result"], NONE,
        "Imported rows by result (added, duplicate, invalid, blacklisted, known_empty, filtered)");
    HTTP_REQUESTS_TOTAL = ("outcall_http_requests_total", Counter, ["method", "route", "status"], NONE,
        "API requests by route template and status");
    HTTP_SECONDS = ("outcall_http_request_duration_seconds", Histogram, ["method", "route"], HTTP_BUCKETS,
        "API request durations");
    WEBHOOK_DELIVERIES_TOTAL = ("outcall_webhook_deliveries_total", Counter, ["result"], NONE,
        "Status webhook tries by result (delivered, retry, failed)");
    STORE_ERRORS_TOTAL = ("outcall_store_errors_total", Counter, ["component"], NONE,
        "Store operations that failed");
    BUS_ERRORS_TOTAL = ("outcall_bus_errors_total", Counter, ["component"], NONE,
        "Events that could not be handed to the bus or outbox");
    BUS_SPOOLED = ("outcall_bus_spooled_messages", Gauge, [], NONE,
        "Messages of a dialer waiting in its on-disk spool for the bus to come back");
    INGEST_CDRS_TOTAL = ("outcall_ingest_cdrs_total", Counter, [], NONE,
        "CDRs an ingest node wrote to the store (new ones; redeliveries not counted)");
    TRUNK_RATE_FACTOR = ("outcall_trunk_rate_factor", Gauge, ["trunk"], NONE,
        "Share of a trunk's rate the pacer allows (1 normal, lower when degraded)");
    TRUNK_CIRCUIT = ("outcall_trunk_circuit_state", Gauge, ["trunk"], NONE,
        "Trunk circuit breaker: 0 closed, 1 half-open, 2 open");
    DEGRADATIONS_TOTAL = ("outcall_degradation_events_total", Counter, ["trunk", "kind"], NONE,
        "Automatic degradation events (degraded, recovered, circuit_open, circuit_closed)");
    ALERTS_FIRING = ("outcall_alerts_firing", Gauge, ["rule"], NONE,
        "Alerts firing by rule");
    ALERT_NOTIFICATIONS_TOTAL = ("outcall_alert_notifications_total", Counter, ["channel", "result"], NONE,
        "Alert notifications sent by channel and result");
    READY = ("outcall_ready", Gauge, [], NONE,
        "1 while the node takes work, 0 while starting or draining");
    BUILD_INFO = ("outcall_build_info", Gauge, ["version"], NONE,
        "Always 1; the version label tells the build");
    PROCESS_CPU = ("process_cpu_seconds_total", Counter, [], NONE,
        "CPU time used by the process");
    PROCESS_RSS = ("process_resident_memory_bytes", Gauge, [], NONE,
        "Resident memory of the process");
    PROCESS_FDS = ("process_open_fds", Gauge, [], NONE,
        "Open file descriptors");
    PROCESS_THREADS = ("process_threads", Gauge, [], NONE,
        "Threads of the process");
    PROCESS_START = ("process_start_time_seconds", Gauge, [], NONE,
        "Start time of the process (Unix seconds)");
}

/// The definition of a metric by name.
pub fn def(name: &str) -> Option<&'static Def> {
    ALL.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            match d.kind {
                Kind::Counter => assert!(d.name.ends_with("_total"), "{}", d.name),
                Kind::Histogram => {
                    assert!(d.name.ends_with("_seconds"), "{}", d.name);
                    assert!(d.buckets.windows(2).all(|w| w[0] < w[1]), "{}", d.name);
                }
                Kind::Gauge => assert!(d.buckets.is_empty()),
            }
            for l in d.labels {
                assert!(
                    !["number", "callee", "caller", "attempt", "call_id", "trace_id"].contains(l),
                    "{}: unbounded label {l}",
                    d.name
                );
            }
        }
    }
}
