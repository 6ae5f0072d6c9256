//! The suite every bus passes: in process, on the machine's RabbitMQ and on its NATS
//! JetStream. Each test uses queues or a stream of its own, deleted at the end.
#![cfg(all(feature = "rabbitmq", feature = "nats"))]

mod common;

use common::{as_set, cdrs, drain, ids, Kind, TestBus};
use outcall_bus::{Envelope, Topic};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// 10,000 CDRs published in batches of 500 (and 200 call events beside them): the CDR
/// consumer receives exactly the CDRs, each once; the event consumer exactly the events.
async fn consumes_exactly_the_published_set(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("set", 10_000);
    let events: Vec<Envelope> = (0..200)
        .map(|i| {
            Envelope::call_event(
                format!("set-{}", i / 4),
                i % 4,
                "c1",
                serde_json::json!({"state": "ringing"}),
            )
        })
        .collect();
    for (chunk, event_chunk) in published.chunks(500).zip(events.chunks(10)) {
        bus.publisher().publish(chunk).await.expect("publish CDRs");
        bus.publisher()
            .publish(event_chunk)
            .await
            .expect("publish events");
    }
    let mut consumer = bus.consumer(Topic::Cdrs).await;
    let got = drain(consumer.as_mut(), published.len(), Duration::from_secs(60)).await;
    let mut sorted = got.clone();
    sorted.sort();
    let mut expected = ids(&published);
    expected.sort();
    assert_eq!(
        sorted.len(),
        expected.len(),
        "{kind:?}: every CDR once, no more"
    );
    assert_eq!(sorted, expected, "{kind:?}: exactly the published CDRs");

    let mut event_consumer = bus.consumer(Topic::CallEvents).await;
    let got_events = drain(
        event_consumer.as_mut(),
        events.len(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(got_events.len(), events.len(), "{kind:?}: every event once");
    assert_eq!(as_set(&got_events), as_set(&ids(&events)));
    assert!(got_events[0].contains(':'), "event ids are <attempt>:<seq>");
    drop((consumer, event_consumer));
    bus.cleanup().await;
}

/// Acknowledged messages are gone: a new consumer sees nothing, even after the broker's
/// redelivery delay.
async fn acked_messages_are_not_seen_again(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("acked", 300);
    bus.publisher().publish(&published).await.expect("publish");
    let mut first = bus.consumer(Topic::Cdrs).await;
    let got = drain(first.as_mut(), published.len(), Duration::from_secs(20)).await;
    assert_eq!(as_set(&got), as_set(&ids(&published)));
    drop(first);

    let mut second = bus.consumer(Topic::Cdrs).await;
    let wait = bus.redelivery_delay() + Duration::from_millis(1500);
    let again = second.next_batch(1000, wait).await.expect("receive");
    assert!(
        again.is_empty(),
        "{kind:?}: {} acknowledged messages delivered again",
        again.len()
    );
    drop(second);
    bus.cleanup().await;
}

/// Deliveries a consumer did not acknowledge go to a second consumer once the first is
/// dropped, flagged as redelivered.
async fn unacked_messages_go_to_another_consumer(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("unacked", 150);
    bus.publisher().publish(&published).await.expect("publish");
    let mut first = bus.consumer(Topic::Cdrs).await;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < published.len() && Instant::now() < deadline {
        held.extend(
            first
                .next_batch(published.len() - held.len(), Duration::from_millis(500))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(
        held.len(),
        published.len(),
        "{kind:?}: the first consumer got them all"
    );
    drop(held);
    drop(first);

    let mut second = bus.consumer(Topic::Cdrs).await;
    let deadline = Instant::now() + bus.redelivery_delay() + Duration::from_secs(20);
    let mut again = Vec::new();
    while again.len() < published.len() && Instant::now() < deadline {
        let batch = second
            .next_batch(published.len(), Duration::from_millis(500))
            .await
            .expect("receive");
        assert!(
            batch.iter().all(|d| d.redelivered),
            "{kind:?}: redeliveries are flagged"
        );
        second.ack(&batch).await.expect("ack");
        again.extend(batch.into_iter().map(|d| d.envelope.id));
    }
    assert_eq!(
        again.len(),
        published.len(),
        "{kind:?}: all delivered again, once"
    );
    assert_eq!(as_set(&again), as_set(&ids(&published)));
    drop(second);
    bus.cleanup().await;
}

/// Two consumers of one topic split the messages: each gets some, none gets a message the
/// other got, and together they got all.
async fn competing_consumers_split_without_loss(kind: Kind) {
    let bus = TestBus::new(kind).await;
    let published = cdrs("compete", 2000);
    let consumers = [
        bus.consumer(Topic::Cdrs).await,
        bus.consumer(Topic::Cdrs).await,
    ];
    let total = published.len();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let mut tasks = Vec::new();
    for mut consumer in consumers {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while *seen.lock().unwrap() < total && Instant::now() < deadline {
                let batch = consumer
                    .next_batch(50, Duration::from_millis(300))
                    .await
                    .expect("receive");
                consumer.ack(&batch).await.expect("ack");
                *seen.lock().unwrap() += batch.len();
                mine.extend(batch.into_iter().map(|d| d.envelope.id));
                // Let the other consumer take its turn, as a busy ingest node would.
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    for chunk in published.chunks(100) {
        bus.publisher().publish(chunk).await.expect("publish");
    }
    let mut parts = Vec::new();
    for task in tasks {
        parts.push(task.await.expect("consumer task"));
    }
    let (a, b) = (as_set(&parts[0]), as_set(&parts[1]));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "{kind:?}: both consumers got messages ({} / {})",
        a.len(),
        b.len()
    );
    assert!(a.is_disjoint(&b), "{kind:?}: no message went to both");
    assert_eq!(
        parts[0].len() + parts[1].len(),
        total,
        "{kind:?}: no duplicates"
    );
    let union: HashSet<String> = a.union(&b).cloned().collect();
    assert_eq!(union, as_set(&ids(&published)), "{kind:?}: no loss");
    bus.cleanup().await;
}

macro_rules! suite {
    ($($module:ident => $kind:expr;)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consumes_exactly_the_published_set() {
                super::consumes_exactly_the_published_set($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acked_messages_are_not_seen_again() {
                super::acked_messages_are_not_seen_again($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unacked_messages_go_to_another_consumer() {
                super::unacked_messages_go_to_another_consumer($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn competing_consumers_split_without_loss() {
                super::competing_consumers_split_without_loss($kind).await;
            }
        }
    )*};
}

suite! {
    in_process => Kind::InProcess;
    rabbitmq => Kind::Rabbit;
    nats => Kind::Nats;
}

/// An unreachable broker is reported with its URL (password hidden) and what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_broker() {
    let port = common::free_port();
    let mut cfg = common::rabbit_config("outcall-test-unreachable");
    cfg.url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let err = outcall_bus::RabbitBus::connect(cfg)
        .await
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "RabbitMQ at amqp://guest:***@127.0.0.1:{port}/%2f: "
        )),
        "{text}"
    );
    assert!(text.contains("check that RabbitMQ is running"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    let cfg = common::nats_config(&format!("nats://127.0.0.1:{port}"), "unreachable");
    let err = outcall_bus::NatsBus::connect(cfg)
        .await
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("NATS at nats://127.0.0.1:{port}: ")),
        "{text}"
    );
    assert!(text.contains("check that NATS is running"), "{text}");
}
