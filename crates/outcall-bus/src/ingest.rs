//! The ingest loop: from a consumer to a sink, in batches, acknowledging only what was
//! written.

use crate::{Consumer, Delivery, Envelope, Topic};
use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where ingest writes CDRs (the database, in the binary).
///
/// `write` must be idempotent by [`Envelope::id`] (the attempt id): a CDR can arrive again
/// after a crash or a lost acknowledgement (`INSERT ... ON CONFLICT DO NOTHING`).
#[async_trait]
pub trait CdrSink: Send + Sync {
    /// Writes `batch` in one go; returns how many were new. `Err` leaves the batch
    /// unacknowledged: it is written again later.
    async fn write(&self, batch: &[Envelope]) -> std::result::Result<u64, String>;
}

/// Where ingest hands call events (webhooks, metrics). Same contract as [`CdrSink`], keyed by
/// `"<attempt>:<seq>"`.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Handles `batch` in one go; returns how many were new. `Err` leaves the batch
    /// unacknowledged: it is handed again later.
    async fn write(&self, batch: &[Envelope]) -> std::result::Result<u64, String>;
}

/// Settings of the ingest loop.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most envelopes per sink call. Default 1,000.
    pub batch_max: usize,
    /// A batch is written at the latest this long after its first message arrived. Default
    /// 200 ms.
    pub flush_every: Duration,
    /// First wait after a failed sink write or a broker error. Default 100 ms.
    pub retry_min: Duration,
    /// Longest wait between retries (the wait doubles up to it). Default 5 s.
    pub retry_max: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_max: 1000,
            flush_every: Duration::from_millis(200),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// What an ingest loop did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Sink calls that succeeded.
    pub batches: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// What the sink reported as new.
    pub written: u64,
    /// Deliveries dropped because their id was already in the same batch.
    pub duplicates: u64,
    /// Sink calls that failed (and were retried).
    pub sink_failures: u64,
    /// Errors from the broker (receiving or acknowledging).
    pub broker_errors: u64,
}

/// The ingest consumer.
pub struct Ingest;

enum Writer {
    Cdrs(Arc<dyn CdrSink>),
    Events(Arc<dyn EventSink>),
}

impl Writer {
    fn topic(&self) -> Topic {
        match self {
            Writer::Cdrs(_) => Topic::Cdrs,
            Writer::Events(_) => Topic::CallEvents,
        }
    }

    async fn write(&self, batch: &[Envelope]) -> std::result::Result<u64, String> {
        match self {
            Writer::Cdrs(sink) => sink.write(batch).await,
            Writer::Events(sink) => sink.write(batch).await,
        }
    }
}

impl Ingest {
    /// Moves CDRs from `consumer` (of [`Topic::Cdrs`]) to `sink` until `cancel`: collects up
    /// to `batch_max` envelopes or what arrived within `flush_every`, removes duplicates by
    /// id, writes them in one sink call and acknowledges them once the sink returned `Ok`. A
    /// failing sink is retried with backoff; broker errors are logged and retried. On cancel,
    /// a batch already collected gets one more write attempt; whatever is not acknowledged is
    /// delivered again by the broker once the consumer is dropped.
    pub async fn run<C: Consumer>(
        consumer: C,
        sink: Arc<dyn CdrSink>,
        cfg: IngestConfig,
        cancel: CancellationToken,
    ) -> IngestStats {
        run_loop(consumer, Writer::Cdrs(sink), cfg, cancel).await
    }

    /// The same loop for call events: from `consumer` (of [`Topic::CallEvents`]) to `sink`.
    pub async fn run_events<C: Consumer>(
        consumer: C,
        sink: Arc<dyn EventSink>,
        cfg: IngestConfig,
        cancel: CancellationToken,
    ) -> IngestStats {
        run_loop(consumer, Writer::Events(sink), cfg, cancel).await
    }
}

async fn run_loop<C: Consumer>(
    mut consumer: C,
    writer: Writer,
    cfg: IngestConfig,
    cancel: CancellationToken,
) -> IngestStats {
    let batch_max = cfg.batch_max.max(1);
    let topic = writer.topic();
    let mut stats = IngestStats::default();
    let mut broker_backoff = cfg.retry_min;
    loop {
        // Collect: the window opens with the first delivery.
        let mut pending: Vec<Delivery> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut cancelled = false;
        while pending.len() < batch_max {
            let wait = match deadline {
                None => cfg.flush_every,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    left
                }
            };
            let received = tokio::select! {
                _ = cancel.cancelled() => { cancelled = true; break; }
                r = consumer.next_batch(batch_max - pending.len(), wait) => r,
            };
            match received {
                Ok(deliveries) => {
                    broker_backoff = cfg.retry_min;
                    if deliveries.is_empty() && !pending.is_empty() {
                        // Nothing more within the window (or the consumer cannot take more
                        // before an acknowledgement): write what is there.
                        break;
                    }
                    if !deliveries.is_empty() && deadline.is_none() {
                        deadline = Some(Instant::now() + cfg.flush_every);
                    }
                    pending.extend(deliveries);
                }
                Err(e) => {
                    stats.broker_errors += 1;
                    tracing::warn!(error = %e, %topic, retry_ms = broker_backoff.as_millis() as u64, "ingest: cannot receive; retrying");
                    let slept = tokio::select! {
                        _ = cancel.cancelled() => false,
                        _ = tokio::time::sleep(broker_backoff) => true,
                    };
                    broker_backoff = (broker_backoff * 2).min(cfg.retry_max);
                    if !slept {
                        cancelled = true;
                        break;
                    }
                    if !pending.is_empty() {
                        break;
                    }
                }
            }
        }
        if !pending.is_empty() {
            flush(&mut consumer, &writer, &cfg, &cancel, pending, &mut stats).await;
        }
        if cancelled || cancel.is_cancelled() {
            return stats;
        }
    }
}

/// Writes `pending` (without duplicates) and acknowledges it; retries the sink with backoff
/// until it succeeds or `cancel` (then one last attempt, and no acknowledgement on failure).
async fn flush<C: Consumer>(
    consumer: &mut C,
    writer: &Writer,
    cfg: &IngestConfig,
    cancel: &CancellationToken,
    pending: Vec<Delivery>,
    stats: &mut IngestStats,
) {
    let topic = writer.topic();
    let mut seen = HashSet::with_capacity(pending.len());
    let mut unique = Vec::with_capacity(pending.len());
    for delivery in &pending {
        if delivery.envelope.topic != topic {
            tracing::error!(
                id = %delivery.envelope.id,
                expected = %topic,
                found = %delivery.envelope.topic,
                "ingest: a message of another topic on this consumer: dropped (check the broker's \
                 bindings)"
            );
            continue;
        }
        if seen.insert(delivery.envelope.id.as_str()) {
            unique.push(delivery.envelope.clone());
        } else {
            stats.duplicates += 1;
        }
    }
    let mut backoff = cfg.retry_min;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = if unique.is_empty() {
            Ok(0)
        } else {
            writer.write(&unique).await
        };
        match result {
            Ok(n) => {
                stats.batches += 1;
                stats.written += n;
                if attempt > 1 {
                    tracing::info!(%topic, attempt, messages = unique.len(), "ingest: sink write succeeded after retries");
                }
                break;
            }
            Err(e) => {
                stats.sink_failures += 1;
                tracing::warn!(
                    %topic,
                    error = %e,
                    attempt,
                    messages = unique.len(),
                    retry_ms = backoff.as_millis() as u64,
                    "ingest: the sink failed; the batch stays unacknowledged and is retried"
                );
                if cancel.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(cfg.retry_max);
            }
        }
    }
    match consumer.ack(&pending).await {
        Ok(()) => stats.acked += pending.len() as u64,
        Err(e) => {
            stats.broker_errors += 1;
            tracing::warn!(
                %topic,
                error = %e,
                messages = pending.len(),
                "ingest: written but not acknowledged; the broker will deliver them again and \
                 the sink drops the duplicates"
            );
        }
    }
}
