//! Shared helpers of the bus tests: the real brokers of the machine, private `nats-server`
//! processes, a TCP proxy that plays a broker outage, unique names.
#![allow(dead_code)]

use outcall_bus::{
    Consumer, Delivery, Envelope, InProcessBus, NatsBus, NatsConfig, Publisher, RabbitBus,
    RabbitConfig, Topic,
};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub fn amqp_url() -> String {
    std::env::var("OUTCALL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

pub fn nats_url() -> String {
    std::env::var("OUTCALL_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

pub fn nats_server_bin() -> PathBuf {
    let path = std::env::var("OUTCALL_TEST_NATS_SERVER")
        .unwrap_or_else(|_| "/usr/sbin/nats-server".to_string());
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} not found: the spool and outage tests start their own nats-server (Debian package \
         nats-server; or set OUTCALL_TEST_NATS_SERVER)",
        path.display()
    );
    path
}

/// A name no other test process uses: `<what>_<pid>_<random>`.
pub fn unique(what: &str) -> String {
    format!(
        "{what}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// `n` CDR envelopes `<tag>-<i>` on campaign `c<i % 7>`.
pub fn cdrs(tag: &str, n: usize) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            Envelope::cdr(
                format!("{tag}-{i}"),
                format!("c{}", i % 7),
                serde_json::json!({"attempt": format!("{tag}-{i}"), "outcome": "answered", "billsec": i % 61}),
            )
        })
        .collect()
}

pub fn ids(envelopes: &[Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.id.clone()).collect()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives and acknowledges until `expected` deliveries arrived or `limit` passed; returns
/// the envelope ids in arrival order.
pub async fn drain(consumer: &mut dyn Consumer, expected: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < expected && Instant::now() < deadline {
        let batch: Vec<Delivery> = consumer
            .next_batch(1000, Duration::from_millis(500))
            .await
            .expect("receive");
        consumer.ack(&batch).await.expect("ack");
        got.extend(batch.into_iter().map(|d| d.envelope.id));
    }
    got
}

pub fn as_set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

/// Which bus a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InProcess,
    Rabbit,
    Nats,
}

/// A bus with names of its own on the machine's broker; [`TestBus::cleanup`] deletes them.
pub enum TestBus {
    InProcess(InProcessBus),
    Rabbit(RabbitBus),
    Nats(NatsBus),
}

/// Ack wait of the NATS consumers in the tests: redelivery after a dropped consumer takes this
/// long.
pub const NATS_ACK_WAIT: Duration = Duration::from_secs(2);

pub fn rabbit_config(prefix: &str) -> RabbitConfig {
    let mut cfg = RabbitConfig::new(amqp_url());
    cfg.prefix = prefix.to_string();
    cfg.prefetch = 200;
    cfg
}

pub fn nats_config(url: &str, prefix: &str) -> NatsConfig {
    let mut cfg = NatsConfig::new(url);
    cfg.prefix = prefix.to_string();
    cfg.ack_wait = NATS_ACK_WAIT;
    cfg.max_age = Duration::from_secs(3600);
    cfg
}

pub async fn rabbit(prefix: &str) -> RabbitBus {
    RabbitBus::connect(rabbit_config(prefix))
        .await
        .unwrap_or_else(|e| panic!("{e} (the tests need RabbitMQ: OUTCALL_TEST_AMQP_URL)"))
}

pub async fn nats(prefix: &str) -> NatsBus {
    NatsBus::connect(nats_config(&nats_url(), prefix))
        .await
        .unwrap_or_else(|e| {
            panic!("{e} (the tests need NATS with JetStream: OUTCALL_TEST_NATS_URL)")
        })
}

impl TestBus {
    pub async fn new(kind: Kind) -> TestBus {
        match kind {
            Kind::InProcess => TestBus::InProcess(InProcessBus::new(1_000_000)),
            Kind::Rabbit => TestBus::Rabbit(rabbit(&unique("outcall-test")).await),
            Kind::Nats => TestBus::Nats(nats(&unique("otest")).await),
        }
    }

    pub fn publisher(&self) -> &dyn Publisher {
        match self {
            TestBus::InProcess(bus) => bus,
            TestBus::Rabbit(bus) => bus,
            TestBus::Nats(bus) => bus,
        }
    }

    pub async fn consumer(&self, topic: Topic) -> Box<dyn Consumer> {
        match self {
            TestBus::InProcess(bus) => Box::new(bus.consumer(topic)),
            TestBus::Rabbit(bus) => Box::new(bus.consumer(topic).await.expect("RabbitMQ consumer")),
            TestBus::Nats(bus) => Box::new(bus.consumer(topic).await.expect("NATS consumer")),
        }
    }

    /// How long an unacknowledged delivery of a dropped consumer takes to come back.
    pub fn redelivery_delay(&self) -> Duration {
        match self {
            TestBus::Nats(_) => NATS_ACK_WAIT,
            _ => Duration::ZERO,
        }
    }

    pub async fn cleanup(self) {
        match self {
            TestBus::InProcess(_) => {}
            TestBus::Rabbit(bus) => bus.delete_topology().await.expect("delete RabbitMQ queues"),
            TestBus::Nats(bus) => bus.delete_stream().await.expect("delete NATS stream"),
        }
    }
}

/// A `nats-server` of the test's own, with JetStream on a store directory.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
}

impl NatsServer {
    pub fn url(port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    pub async fn start(port: u16, store: &Path) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port,
            store: store.to_path_buf(),
        };
        server.restart().await;
        server
    }

    /// Starts the server (again) on the same port and store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(15), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        assert!(
            up,
            "the test's nats-server did not listen on 127.0.0.1:{port}"
        );
    }

    /// Kills the server (SIGKILL, like a crash).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill nats-server");
        }
    }
}

/// A TCP proxy to a real broker: [`TcpProxy::down`] closes the port and cuts every connection
/// (an outage as the client sees it), [`TcpProxy::up`] opens it again.
pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let mut proxy = TcpProxy {
            port: free_port(),
            target,
            task: None,
        };
        proxy.up().await;
        proxy
    }

    pub async fn up(&mut self) {
        assert!(self.task.is_none(), "proxy already up");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port");
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}
