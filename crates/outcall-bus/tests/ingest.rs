//! Ingest: CDRs from the bus into a sink, each attempt exactly once, nothing lost when the
//! sink fails or when the broker goes down for a while.
#![cfg(all(feature = "rabbitmq", feature = "nats"))]

mod common;

use async_trait::async_trait;
use common::{cdrs, free_port, ids, nats_config, Kind, NatsServer, TestBus};
use outcall_bus::{
    CdrSink, Envelope, EventSink, Ingest, IngestConfig, IngestStats, NatsBus, Publisher,
    SpoolConfig, SpoolingPublisher, Topic,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A sink that behaves like `INSERT ... ON CONFLICT (attempt_id) DO NOTHING`: it records
/// each id once and reports how many were new. It can fail its first writes.
#[derive(Default)]
struct RecordingSink {
    rows: Mutex<HashMap<String, u32>>,
    fail_first: AtomicU32,
    failures: AtomicU32,
    duplicate_in_a_batch: AtomicBool,
    largest_batch: Mutex<usize>,
}

impl RecordingSink {
    fn failing(n: u32) -> Self {
        let sink = RecordingSink::default();
        sink.fail_first.store(n, Ordering::SeqCst);
        sink
    }

    fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }

    fn ids(&self) -> HashSet<String> {
        self.rows.lock().unwrap().keys().cloned().collect()
    }

    fn record(&self, batch: &[Envelope]) -> Result<u64, String> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err("database unavailable".to_string());
        }
        let unique: HashSet<&str> = batch.iter().map(|e| e.id.as_str()).collect();
        if unique.len() != batch.len() {
            self.duplicate_in_a_batch.store(true, Ordering::SeqCst);
        }
        {
            let mut largest = self.largest_batch.lock().unwrap();
            *largest = (*largest).max(batch.len());
        }
        let mut rows = self.rows.lock().unwrap();
        let mut new = 0;
        for envelope in batch {
            let count = rows.entry(envelope.id.clone()).or_insert(0);
            if *count == 0 {
                new += 1;
            }
            *count += 1;
        }
        Ok(new)
    }
}

#[async_trait]
impl CdrSink for RecordingSink {
    async fn write(&self, batch: &[Envelope]) -> Result<u64, String> {
        self.record(batch)
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn write(&self, batch: &[Envelope]) -> Result<u64, String> {
        self.record(batch)
    }
}

fn ingest_config() -> IngestConfig {
    IngestConfig {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..IngestConfig::default()
    }
}

async fn stop(
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<IngestStats>,
) -> IngestStats {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("ingest stops when cancelled")
        .expect("ingest task")
}

/// 5,000 CDRs, 100 of them published twice (next to each other), through the bus into the
/// sink: every attempt id ends in the sink, each counted new exactly once, no batch holds the
/// same id twice, no batch is above batch_max, and nothing is left on the broker.
async fn every_cdr_reaches_the_sink_once(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("ingest", 5000);
    let mut sent: Vec<Envelope> = Vec::new();
    for (i, envelope) in published.iter().enumerate() {
        sent.push(envelope.clone());
        if i % 50 == 0 {
            sent.push(envelope.clone()); // 100 duplicates
        }
    }
    assert_eq!(sent.len(), 5100);
    let sink = Arc::new(RecordingSink::default());
    let cancel = CancellationToken::new();
    let consumer = bus.consumer(Topic::Cdrs).await;
    let task = tokio::spawn(Ingest::run(
        consumer,
        sink.clone(),
        ingest_config(),
        cancel.clone(),
    ));
    for chunk in sent.chunks(500) {
        bus.publisher().publish(chunk).await.expect("publish");
    }
    let complete = common::wait_until(Duration::from_secs(60), || {
        let sink = sink.clone();
        async move { sink.len() >= 5000 }
    })
    .await;
    let stats = stop(cancel, task).await;
    assert!(
        complete,
        "{kind:?}: only {} of 5000 CDRs reached the sink",
        sink.len()
    );
    assert_eq!(
        sink.ids(),
        ids(&published).into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(
        stats.written, 5000,
        "{kind:?}: each CDR new exactly once: {stats:?}"
    );
    assert!(
        !sink.duplicate_in_a_batch.load(Ordering::SeqCst),
        "{kind:?}: duplicates are removed before the sink call"
    );
    assert!(
        *sink.largest_batch.lock().unwrap() <= 1000,
        "{kind:?}: batch_max holds"
    );
    assert!(stats.batches >= 5, "{kind:?}: batched writes: {stats:?}");

    let mut after = bus.consumer(Topic::Cdrs).await;
    let left = after
        .next_batch(100, bus.redelivery_delay() + Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(
        left.is_empty(),
        "{kind:?}: {} messages left unacknowledged",
        left.len()
    );
    drop(after);
    bus.cleanup().await;
}

/// The sink fails its first 3 writes: the batch stays unacknowledged and is retried with
/// backoff; in the end every CDR is in the sink and none is lost.
async fn a_failing_sink_loses_nothing(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("flaky", 2000);
    let sink = Arc::new(RecordingSink::failing(3));
    let cancel = CancellationToken::new();
    let consumer = bus.consumer(Topic::Cdrs).await;
    let task = tokio::spawn(Ingest::run(
        consumer,
        sink.clone(),
        ingest_config(),
        cancel.clone(),
    ));
    for chunk in published.chunks(250) {
        bus.publisher().publish(chunk).await.expect("publish");
    }
    let complete = common::wait_until(Duration::from_secs(60), || {
        let sink = sink.clone();
        async move { sink.len() >= 2000 }
    })
    .await;
    let stats = stop(cancel, task).await;
    assert!(
        complete,
        "{kind:?}: only {} of 2000 CDRs reached the sink",
        sink.len()
    );
    assert_eq!(sink.failures.load(Ordering::SeqCst), 3);
    assert_eq!(stats.sink_failures, 3, "{stats:?}");
    assert_eq!(
        sink.ids(),
        ids(&published).into_iter().collect::<HashSet<_>>()
    );
    bus.cleanup().await;
}

/// Call events go through their own consumer to the event sink the same way.
async fn call_events_reach_the_event_sink(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let events: Vec<Envelope> = (0..600)
        .map(|i| {
            Envelope::call_event(
                format!("ev-{}", i / 3),
                i % 3,
                "c1",
                serde_json::json!({"state": "ringing"}),
            )
        })
        .collect();
    let sink = Arc::new(RecordingSink::default());
    let cancel = CancellationToken::new();
    let consumer = bus.consumer(Topic::CallEvents).await;
    let task = tokio::spawn(Ingest::run_events(
        consumer,
        sink.clone(),
        ingest_config(),
        cancel.clone(),
    ));
    bus.publisher().publish(&events).await.expect("publish");
    let complete = common::wait_until(Duration::from_secs(30), || {
        let sink = sink.clone();
        async move { sink.len() >= 600 }
    })
    .await;
    let stats = stop(cancel, task).await;
    assert!(
        complete,
        "{kind:?}: only {} of 600 events reached the sink",
        sink.len()
    );
    assert_eq!(stats.written, 600);
    assert_eq!(sink.ids(), ids(&events).into_iter().collect::<HashSet<_>>());
    bus.cleanup().await;
}

macro_rules! per_bus {
    ($($module:ident => $kind:expr;)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_cdr_reaches_the_sink_once() {
                super::every_cdr_reaches_the_sink_once($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failing_sink_loses_nothing() {
                super::a_failing_sink_loses_nothing($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn call_events_reach_the_event_sink() {
                super::call_events_reach_the_event_sink($kind).await;
            }
        }
    )*};
}

per_bus! {
    in_process => Kind::InProcess;
    rabbitmq => Kind::Rabbit;
    nats => Kind::Nats;
}

/// Stop the bus: a private nats-server is killed for about 5 s while dialers keep publishing
/// CDRs through the spool and ingest keeps running, then restarted on the same port and store.
/// Every CDR ends in the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdrs_survive_a_nats_outage() {
    let store = tempfile::tempdir().expect("tempdir");
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = NatsServer::start(port, store.path()).await;
    let mut cfg = nats_config(&NatsServer::url(port), "stopbus");
    cfg.confirm_timeout = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.ack_wait = Duration::from_secs(5);

    let mut spool_cfg = SpoolConfig::new(spool_dir.path());
    spool_cfg.confirm_timeout = Duration::from_secs(1);
    spool_cfg.retry_min = Duration::from_millis(100);
    spool_cfg.retry_max = Duration::from_millis(500);
    let publisher = Arc::new(
        SpoolingPublisher::open(
            NatsBus::connect(cfg.clone())
                .await
                .expect("connect publisher"),
            spool_cfg,
        )
        .await
        .expect("open spool"),
    );
    let ingest_bus = NatsBus::connect(cfg.clone()).await.expect("connect ingest");
    let consumer = ingest_bus.consumer(Topic::Cdrs).await.expect("consumer");
    let sink = Arc::new(RecordingSink::default());
    let cancel = CancellationToken::new();
    let ingest = tokio::spawn(Ingest::run(
        consumer,
        sink.clone(),
        ingest_config(),
        cancel.clone(),
    ));

    // Dialers: 6,000 CDRs in batches of 50, one batch every 50 ms (about 6 s).
    let published = cdrs("outage", 6000);
    let dialers = {
        let publisher = publisher.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for chunk in published.chunks(50) {
                publisher
                    .publish(chunk)
                    .await
                    .expect("publish never fails: it spools");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let started = common::wait_until(Duration::from_secs(30), || {
        let sink = sink.clone();
        async move { sink.len() >= 1000 }
    })
    .await;
    assert!(started, "CDRs flow before the outage");
    server.kill().await;
    // The outage itself lasts 5 s; publishing goes on meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let spooled_during_outage = publisher.spooled();
    let in_sink_during_outage = sink.len();
    server.restart().await;

    dialers.await.expect("dialers");
    tokio::time::timeout(Duration::from_secs(90), publisher.wait_drained())
        .await
        .expect("the spool drains after the restart");
    let complete = common::wait_until(Duration::from_secs(90), || {
        let sink = sink.clone();
        async move { sink.len() >= 6000 }
    })
    .await;
    let stats = stop(cancel, ingest).await;
    server.kill().await;

    assert!(
        spooled_during_outage > 0,
        "the outage sent batches to the spool"
    );
    assert!(
        in_sink_during_outage < 6000,
        "the outage happened while publishing"
    );
    assert!(
        complete,
        "only {} of 6000 CDRs reached the sink ({stats:?})",
        sink.len()
    );
    assert_eq!(
        sink.ids(),
        ids(&published).into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(stats.written, 6000, "{stats:?}");
}
