//! Event bus for call events and CDRs, and the ingest consumer.
//!
//! In the distributed mode a dialer node publishes each call's events and its CDR (call
//! detail record) to a message broker; `ingest` nodes consume them and write the CDRs to the
//! database in batches. This crate knows nothing of the database: messages are
//! [`Envelope`]s whose payload is JSON, and the ingest loop hands batches to a [`CdrSink`] (or
//! an [`EventSink`]) that the composition root implements.
//!
//! # Delivery guarantees
//!
//! * [`Publisher::publish`] returns `Ok` only once the broker has confirmed every message of
//!   the batch (stored durably). The batch is pipelined: all messages are sent, then all
//!   confirmations awaited.
//! * A [`Consumer`] hands out [`Delivery`]s that stay owned by the broker until
//!   [`Consumer::ack`]. When a consumer goes away (crash, network loss, drop) its unacknowledged
//!   messages are delivered to another consumer. Several consumers of one topic compete: each
//!   message goes to one of them.
//! * Delivery is *at least once*. A message can arrive twice (a confirmation lost on the way
//!   back, a spool replayed after a crash, a consumer that died after writing but before
//!   acknowledging). Every envelope carries a stable [`Envelope::id`] (for a CDR the attempt
//!   id) and the sinks are idempotent by it; [`Ingest`] also removes duplicates within a batch.
//!
//! # Implementations
//!
//! * [`InProcessBus`]: bounded in-memory queues for a single node (`outcall serve`); same
//!   semantics (acks, redelivery when a consumer is dropped, competing consumers), nothing on
//!   disk.
//! * [`RabbitBus`] (feature `rabbitmq`), topology with the default prefix `outcall`:
//!
//!   | object | name | properties |
//!   | --- | --- | --- |
//!   | exchange | `outcall` | `direct`, durable |
//!   | queue | `outcall.events` | durable, bound to `outcall` with routing key `outcall.events` |
//!   | queue | `outcall.cdrs` | durable, bound to `outcall` with routing key `outcall.cdrs` |
//!
//!   Messages are published persistent (delivery mode 2), `mandatory`, on a channel in
//!   confirm mode, with the envelope id as AMQP `message_id`. Consumers use manual
//!   acknowledgements and a prefetch (`basic.qos`, 2,000 by default); unacknowledged messages
//!   go back to the queue when the consumer's connection closes. Each consumer has its own
//!   connection. A lost connection is opened again on the next call.
//! * [`NatsBus`] (feature `nats`), JetStream topology with the default prefix `outcall`:
//!
//!   | object | name | properties |
//!   | --- | --- | --- |
//!   | stream | `OUTCALL` | subjects `outcall.events`, `outcall.cdrs`; file storage; work-queue retention (a message leaves the stream once acknowledged); max age 7 days; duplicate window 2 min |
//!   | consumer | `ingest-events` on `OUTCALL` | durable, pull, filter `outcall.events`, explicit ack, ack wait 30 s |
//!   | consumer | `ingest-cdrs` on `OUTCALL` | durable, pull, filter `outcall.cdrs`, explicit ack, ack wait 30 s |
//!
//!   Each message carries the header `Nats-Msg-Id` = envelope id, so JetStream drops a
//!   message sent again within the duplicate window. The stream and consumers are created when
//!   missing and reused as they are otherwise. A message not acknowledged within the ack wait
//!   is delivered again to any consumer of the durable. The client reconnects by itself.
//!
//! Both brokers are created lazily ([`RabbitBus::new`], [`NatsBus::new`]) or connected at
//! once ([`RabbitBus::connect`], [`NatsBus::connect`]); errors name the broker's URL (password
//! hidden) and what to check.
//!
//! # The spool
//!
//! [`SpoolingPublisher`] wraps a publisher so that a broker outage does not stop the dialers.
//! When a publish fails or is not confirmed within `confirm_timeout` (5 s), the batch is
//! appended to a local spool and fsync'd before `publish` returns `Ok`; while the spool holds
//! anything, new batches go to the spool too, so the order is kept. A background task probes
//! the broker with backoff and replays the spool in order, deleting a segment file only once
//! every message in it is confirmed. A spool left by a previous run (crash, `kill -9`) is
//! replayed on start.
//!
//! The spool directory holds a `lock` file (an exclusive lock: one process per directory)
//! and segment files `seg-<20-digit sequence>.spool`, replayed in sequence order. A segment
//! is an 8-byte header `OCSPOOL1` followed by records:
//!
//! ```text
//! +----------------+----------------+------------------------------+
//! | length: u32 LE | crc32: u32 LE  | envelope as JSON (length B)  |
//! +----------------+----------------+------------------------------+
//! ```
//!
//! The CRC is CRC-32 (IEEE) of the JSON bytes. A record cut short by a crash (too few bytes
//! for its length) ends the segment: it is dropped with a warning and the rest is replayed.
//! A record whose CRC does not match is skipped with a warning. A segment is sealed (never
//! written again) when it reaches `segment_bytes` (8 MiB), when the replay reaches it, after a
//! write error, and at every start.
//!
//! # Ingest
//!
//! [`Ingest::run`] pulls CDR envelopes, collects up to `batch_max` (1,000) of them or what
//! arrived within `flush_every` (200 ms), removes duplicates by id, writes them with one
//! [`CdrSink::write`] call and acknowledges them only after the sink returned `Ok`. A failing
//! sink is retried with backoff while the messages stay unacknowledged (if the node stops,
//! the broker hands them to another ingest node). [`Ingest::run_events`] does the same for
//! call events with an [`EventSink`].

mod envelope;
mod error;
mod ingest;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbit;
mod spool;

pub use envelope::{Delivery, Envelope, Topic};
pub use error::{redact_url, BusError, Result};
pub use ingest::{CdrSink, EventSink, Ingest, IngestConfig, IngestStats};
pub use memory::{InProcessBus, InProcessConsumer};
#[cfg(feature = "nats")]
pub use nats::{NatsBus, NatsConfig, NatsConsumer};
#[cfg(feature = "rabbitmq")]
pub use rabbit::{RabbitBus, RabbitConfig, RabbitConsumer};
pub use spool::{SpoolConfig, SpoolingPublisher};

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Sends envelopes to the broker.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `batch`, each envelope to its topic, and returns once the broker has
    /// confirmed every message (stored durably). On `Err` some messages may have been stored:
    /// sending the batch again is safe because consumers deduplicate by envelope id.
    async fn publish(&self, batch: &[Envelope]) -> Result<()>;
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for Arc<P> {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        (**self).publish(batch).await
    }
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for Box<P> {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        (**self).publish(batch).await
    }
}

/// Receives the envelopes of one topic. Consumers of the same topic (on any node) compete:
/// each message goes to one of them.
#[async_trait]
pub trait Consumer: Send {
    /// Waits until `max` deliveries have arrived or `wait` has passed, whichever comes first,
    /// and returns what arrived (possibly nothing). The deliveries stay with this consumer
    /// until [`Consumer::ack`]; if the consumer goes away first, the broker delivers them
    /// again to another consumer.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges `deliveries` (received by this consumer): the broker forgets them.
    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()>;
}

#[async_trait]
impl<C: Consumer + ?Sized> Consumer for Box<C> {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        (**self).next_batch(max, wait).await
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        (**self).ack(deliveries).await
    }
}
