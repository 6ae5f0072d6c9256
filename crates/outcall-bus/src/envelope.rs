//! What travels on the bus: topics, envelopes and deliveries.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The two streams of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Call progress events (ringing, answered, hung up, ...), many per attempt.
    CallEvents,
    /// Call detail records, one per attempt.
    Cdrs,
}

impl Topic {
    /// Both topics.
    pub const ALL: [Topic; 2] = [Topic::CallEvents, Topic::Cdrs];

    /// The subject (NATS) and routing key (RabbitMQ) with the default prefix `outcall`:
    /// `outcall.events` or `outcall.cdrs`.
    pub fn subject(self) -> &'static str {
        match self {
            Topic::CallEvents => "outcall.events",
            Topic::Cdrs => "outcall.cdrs",
        }
    }

    /// The subject, routing key and queue name under `prefix`: `<prefix>.events` or
    /// `<prefix>.cdrs`.
    pub fn subject_with(self, prefix: &str) -> String {
        format!("{prefix}.{}", self.suffix())
    }

    /// `events` or `cdrs`.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::CallEvents => "events",
            Topic::Cdrs => "cdrs",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Topic::CallEvents => 0,
            Topic::Cdrs => 1,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subject())
    }
}

/// One message on the bus. Its JSON form is what the brokers and the spool carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message, and the same when a message is sent again: for a CDR the attempt
    /// id, for a call event `"<attempt>:<seq>"`. Brokers and sinks deduplicate by it.
    pub id: String,
    /// Which stream the message belongs to.
    pub topic: Topic,
    /// Ordering and partition key, e.g. the campaign id.
    pub key: String,
    /// The event or CDR itself (phone numbers in it are already masked or encrypted).
    pub payload: serde_json::Value,
    /// When the message was first published, Unix milliseconds.
    pub published_at_ms: i64,
}

impl Envelope {
    /// An envelope stamped with the current time.
    pub fn new(
        topic: Topic,
        id: impl Into<String>,
        key: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Envelope {
            id: id.into(),
            topic,
            key: key.into(),
            payload,
            published_at_ms: now_ms(),
        }
    }

    /// The CDR of attempt `attempt_id`; the attempt id is the message id.
    pub fn cdr(
        attempt_id: impl fmt::Display,
        key: impl Into<String>,
        cdr: serde_json::Value,
    ) -> Self {
        Envelope::new(Topic::Cdrs, attempt_id.to_string(), key, cdr)
    }

    /// Event number `seq` of attempt `attempt_id`; its id is `"<attempt>:<seq>"`.
    pub fn call_event(
        attempt_id: impl fmt::Display,
        seq: u64,
        key: impl Into<String>,
        event: serde_json::Value,
    ) -> Self {
        Envelope::new(Topic::CallEvents, format!("{attempt_id}:{seq}"), key, event)
    }

    pub(crate) fn to_json(&self) -> crate::Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| crate::BusError::Invalid {
            what: "envelope",
            message: format!("message {} cannot be encoded as JSON: {e}", self.id),
        })
    }

    pub(crate) fn from_json(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message handed to a [`Consumer`](crate::Consumer), with what the broker needs to
/// acknowledge it. Until it is acknowledged the broker keeps it, and hands it to another
/// consumer when this one goes away.
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// True when the broker says it delivered this message before (to this or another
    /// consumer) without an acknowledgement.
    pub redelivered: bool,
    pub(crate) handle: AckHandle,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.envelope.id)
            .field("topic", &self.envelope.topic)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// The broker's handle to acknowledge one delivery.
pub(crate) enum AckHandle {
    InProcess {
        consumer: u64,
        tag: u64,
    },
    #[cfg(feature = "rabbitmq")]
    Rabbit(lapin::Acker),
    #[cfg(feature = "nats")]
    Nats(async_nats::Subject),
}
