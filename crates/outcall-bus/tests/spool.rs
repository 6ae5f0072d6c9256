//! The spool: batches published while the broker is down are kept on disk and delivered, in
//! order, once it is back; a spool left by a crash is replayed at the next start; a torn
//! last record does not block the rest.
#![cfg(all(feature = "rabbitmq", feature = "nats"))]

mod common;

use common::{
    as_set, cdrs, drain, free_port, ids, nats_config, rabbit, rabbit_config, unique, NatsServer,
    TcpProxy,
};
use outcall_bus::{NatsBus, Publisher, RabbitBus, SpoolConfig, SpoolingPublisher, Topic};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

fn spool_config(dir: &Path) -> SpoolConfig {
    let mut cfg = SpoolConfig::new(dir);
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg.retry_min = Duration::from_millis(100);
    cfg.retry_max = Duration::from_millis(500);
    // Small segments, so that a replay spans several files.
    cfg.segment_bytes = 64 * 1024;
    cfg
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .expect("list spool")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    found.sort();
    found
}

/// A NATS server that is not running when the publisher starts: every batch goes to the
/// spool (publish still returns Ok); once the server starts, the spool is replayed and a
/// consumer receives every message, in the order published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spools_while_nats_is_down_and_delivers_in_order_once_it_starts() {
    let store = tempfile::tempdir().expect("tempdir");
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cfg = nats_config(&NatsServer::url(port), "spooltest");
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_millis(500);
    let publisher = SpoolingPublisher::open(
        NatsBus::new(cfg.clone()).expect("bus"),
        spool_config(spool_dir.path()),
    )
    .await
    .expect("open spool");

    let published = cdrs("down", 2000);
    for chunk in published.chunks(100) {
        publisher
            .publish(chunk)
            .await
            .expect("publish goes to the spool");
    }
    assert_eq!(publisher.spooled(), 2000, "every message waits on disk");
    assert!(
        segments(spool_dir.path()).len() > 1,
        "the spool spans several segment files"
    );

    let mut server = NatsServer::start(port, store.path()).await;
    tokio::time::timeout(Duration::from_secs(60), publisher.wait_drained())
        .await
        .expect("the spool drains once NATS is up");
    assert_eq!(publisher.spooled(), 0);
    assert!(
        segments(spool_dir.path()).is_empty(),
        "replayed segments are deleted"
    );
    // New batches go straight to the broker again.
    let after = cdrs("after", 10);
    publisher.publish(&after).await.expect("publish");
    assert_eq!(publisher.spooled(), 0);

    let bus = NatsBus::connect(cfg)
        .await
        .expect("connect to the test's nats-server");
    let mut consumer = bus.consumer(Topic::Cdrs).await.expect("consumer");
    let got = drain(&mut consumer, 2010, Duration::from_secs(30)).await;
    let mut expected = ids(&published);
    expected.extend(ids(&after));
    assert_eq!(got, expected, "every message once, in the order published");
    drop(consumer);
    server.kill().await;
}

/// RabbitMQ becomes unreachable (a proxy in front of the machine's broker cuts every
/// connection and refuses new ones) while publishing goes on: publish keeps returning Ok,
/// the batches wait on disk, and once the broker is reachable again the same publisher
/// reconnects and delivers every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_outage_is_spooled_and_the_publisher_reconnects() {
    let prefix = unique("outcall-test-spool");
    let direct = rabbit(&prefix).await; // declares the queues on the real broker
    let url = common::amqp_url();
    let (scheme_user, rest) = url
        .split_once('@')
        .expect("user@host in OUTCALL_TEST_AMQP_URL");
    let (hostport, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let target = hostport
        .to_socket_addrs()
        .expect("resolve RabbitMQ address")
        .next()
        .expect("an address");
    let mut proxy = TcpProxy::start(target).await;
    let mut cfg = rabbit_config(&prefix);
    cfg.url = format!("{scheme_user}@127.0.0.1:{}/{vhost}", proxy.port);
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_secs(1);
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let publisher = SpoolingPublisher::open(
        RabbitBus::new(cfg).expect("bus"),
        spool_config(spool_dir.path()),
    )
    .await
    .expect("open spool");

    let published = cdrs("outage", 3000);
    let (before, rest) = published.split_at(1000);
    let (during, after) = rest.split_at(1000);
    for chunk in before.chunks(100) {
        publisher.publish(chunk).await.expect("publish");
    }
    assert_eq!(publisher.spooled(), 0, "the broker confirms while it is up");

    proxy.down().await;
    for chunk in during.chunks(100) {
        publisher
            .publish(chunk)
            .await
            .expect("publish during the outage");
    }
    assert_eq!(
        publisher.spooled(),
        1000,
        "the outage's batches wait on disk"
    );

    proxy.up().await;
    for chunk in after.chunks(100) {
        publisher
            .publish(chunk)
            .await
            .expect("publish after the outage");
    }
    tokio::time::timeout(Duration::from_secs(60), publisher.wait_drained())
        .await
        .expect("the spool drains once RabbitMQ is reachable");

    let mut consumer = direct.consumer(Topic::Cdrs).await.expect("consumer");
    let got = drain(&mut consumer, published.len(), Duration::from_secs(30)).await;
    assert_eq!(got.len(), published.len(), "each message once");
    assert_eq!(got, ids(&published), "in the order published");
    drop(consumer);
    drop(publisher);
    proxy.down().await;
    direct.delete_topology().await.expect("delete queues");
}

/// A process killed with a spool on disk: a new publisher on the same directory replays it
/// at start, and the consumer receives every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_a_killed_process_is_replayed_at_start() {
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("outcall-test-restart");
    let published = cdrs("crash", 1500);
    {
        // Nothing listens on this port: every batch is spooled.
        let mut cfg = rabbit_config(&prefix);
        cfg.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
        cfg.connect_timeout = Duration::from_millis(500);
        let publisher = SpoolingPublisher::open(
            RabbitBus::new(cfg).expect("bus"),
            spool_config(spool_dir.path()),
        )
        .await
        .expect("open spool");
        for chunk in published.chunks(250) {
            publisher
                .publish(chunk)
                .await
                .expect("publish goes to the spool");
        }
        assert_eq!(publisher.spooled(), 1500);
        // Dropped without a replay, as a kill -9 would leave it.
    }
    assert!(!segments(spool_dir.path()).is_empty());

    let bus = rabbit(&prefix).await;
    let restarted = SpoolingPublisher::open(bus, spool_config(spool_dir.path()))
        .await
        .expect("reopen spool");
    tokio::time::timeout(Duration::from_secs(60), restarted.wait_drained())
        .await
        .expect("the spool of the previous run drains");
    assert!(segments(spool_dir.path()).is_empty());
    let mut consumer = restarted
        .inner()
        .consumer(Topic::Cdrs)
        .await
        .expect("consumer");
    let got = drain(&mut consumer, published.len(), Duration::from_secs(30)).await;
    assert_eq!(got, ids(&published), "every message once, in order");
    drop(consumer);
    restarted
        .inner()
        .delete_topology()
        .await
        .expect("delete queues");
}

/// A crash in the middle of an append leaves the last record cut short: at the next start
/// it is dropped (with a warning) and every complete record is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_skipped_and_the_rest_delivered() {
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("otest_torn");
    let published = cdrs("torn", 300);
    {
        let mut cfg = nats_config(&NatsServer::url(free_port()), &prefix);
        cfg.connect_timeout = Duration::from_millis(500);
        let publisher = SpoolingPublisher::open(
            NatsBus::new(cfg).expect("bus"),
            spool_config(spool_dir.path()),
        )
        .await
        .expect("open spool");
        for chunk in published.chunks(100) {
            publisher
                .publish(chunk)
                .await
                .expect("publish goes to the spool");
        }
        assert_eq!(publisher.spooled(), 300);
    }
    // Cut the last segment 7 bytes short: its last record is torn.
    let last = segments(spool_dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    file.set_len(len - 7).expect("truncate");
    drop(file);

    let bus = common::nats(&prefix).await;
    let restarted = SpoolingPublisher::open(bus, spool_config(spool_dir.path()))
        .await
        .expect("reopen spool despite the torn record");
    assert_eq!(restarted.spooled(), 299, "the torn record is not counted");
    tokio::time::timeout(Duration::from_secs(60), restarted.wait_drained())
        .await
        .expect("the spool drains");
    let mut consumer = restarted
        .inner()
        .consumer(Topic::Cdrs)
        .await
        .expect("consumer");
    let got = drain(&mut consumer, 299, Duration::from_secs(30)).await;
    // Nothing more arrives.
    let extra = drain(&mut consumer, 1, Duration::from_millis(1500)).await;
    assert!(extra.is_empty(), "unexpected extra messages: {extra:?}");
    assert_eq!(
        got,
        ids(&published[..299]),
        "all but the torn record, in order"
    );
    assert_eq!(as_set(&got).len(), 299);
    drop(consumer);
    restarted
        .inner()
        .delete_stream()
        .await
        .expect("delete stream");
}

/// Two publishers cannot share a spool directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_directory_serves_one_publisher() {
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let bus = outcall_bus::InProcessBus::default();
    let first = SpoolingPublisher::open(bus.clone(), spool_config(spool_dir.path()))
        .await
        .expect("open spool");
    let second = SpoolingPublisher::open(bus, spool_config(spool_dir.path())).await;
    let err = second
        .err()
        .expect("a second publisher on the same directory is refused");
    assert!(
        err.to_string().contains("in use by another process"),
        "operator-readable error: {err}"
    );
    drop(first);
}
