//! Throughput of the bus on a real broker: CDR envelopes published in confirmed batches, then
//! consumed and acknowledged.
//!
//! ```text
//! cargo run --release -p outcall-bus --example bus_bench -- --broker nats --messages 200000
//! cargo run --release -p outcall-bus --example bus_bench -- --broker rabbitmq --messages 200000
//! ```
//!
//! Options: `--batch 1000`, `--publishers 4` (concurrent publishers of the second round),
//! `--url <broker URL>` (default: OUTCALL_TEST_AMQP_URL / OUTCALL_TEST_NATS_URL, else the
//! local broker). Queues or the stream get a unique name and are deleted at the end.

use outcall_bus::{
    Consumer, Envelope, NatsBus, NatsConfig, Publisher, RabbitBus, RabbitConfig, Topic,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    broker: String,
    messages: usize,
    batch: usize,
    publishers: usize,
    url: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: String::new(),
        messages: 200_000,
        batch: 1000,
        publishers: 4,
        url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => args.broker = value()?,
            "--messages" => {
                args.messages = value()?.parse().map_err(|e| format!("--messages: {e}"))?
            }
            "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--publishers" => {
                args.publishers = value()?.parse().map_err(|e| format!("--publishers: {e}"))?
            }
            "--url" => args.url = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.broker != "nats" && args.broker != "rabbitmq" {
        return Err("--broker nats|rabbitmq is required".to_string());
    }
    if args.batch == 0 || args.messages == 0 || args.publishers == 0 {
        return Err("--messages, --batch and --publishers must be above zero".to_string());
    }
    Ok(args)
}

/// A CDR of the size the dialers publish (about 400 bytes of JSON).
fn cdr(round: &str, i: usize) -> Envelope {
    Envelope::cdr(
        format!("{round}-{i}"),
        format!("campaign-{}", i % 20),
        serde_json::json!({
            "attempt_id": format!("{round}-{i}"),
            "campaign_id": i % 20,
            "contact_id": i,
            "trunk": "carrier-a",
            "callee_masked": "138****0000",
            "caller_id": "0105550100",
            "outcome": "answered",
            "sip_status": 200,
            "cause": "normal_clearing",
            "started_at": "2025-01-01T09:00:00Z",
            "answered_at": "2025-01-01T09:00:07Z",
            "ended_at": "2025-01-01T09:01:02Z",
            "ring_ms": 7000,
            "billsec": 55,
            "node": "dialer-1",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
        }),
    )
}

struct Row {
    phase: String,
    messages: usize,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[idx])
}

/// Publishes `messages` envelopes from `tasks` concurrent publishers, batch by batch.
async fn publish_round(
    publisher: Arc<dyn Publisher>,
    round: &str,
    messages: usize,
    batch: usize,
    tasks: usize,
) -> Result<Row, String> {
    let per_task = messages.div_ceil(tasks);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let publisher = publisher.clone();
        let round = round.to_string();
        let range = (t * per_task)..((t + 1) * per_task).min(messages);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let envelopes: Vec<Envelope> = range.map(|i| cdr(&round, i)).collect();
            for chunk in envelopes.chunks(batch) {
                let t0 = Instant::now();
                publisher.publish(chunk).await.map_err(|e| e.to_string())?;
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.map_err(|e| e.to_string())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Row {
        phase: format!("publish, {tasks} publisher(s), batch {batch}"),
        messages,
        seconds,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// Receives and acknowledges `messages` deliveries with `consumers` competing consumers.
async fn consume_round(
    consumers: Vec<Box<dyn Consumer>>,
    messages: usize,
    batch: usize,
) -> Result<Row, String> {
    let n = consumers.len();
    let started = Instant::now();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for mut consumer in consumers {
        let received = received.clone();
        handles.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while received.load(std::sync::atomic::Ordering::Relaxed) < messages {
                if Instant::now() > deadline {
                    return Err("consuming took over 10 minutes".to_string());
                }
                let deliveries = consumer
                    .next_batch(batch, Duration::from_millis(200))
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.ack(&deliveries).await.map_err(|e| e.to_string())?;
                received.fetch_add(deliveries.len(), std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for handle in handles {
        handle.await.map_err(|e| e.to_string())??;
    }
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    if got < messages {
        return Err(format!("received {got} of {messages}"));
    }
    // The last batch may wait up to 200 ms for messages that never come.
    Ok(Row {
        phase: format!("consume + ack, {n} consumer(s), batch {batch}"),
        messages: got,
        seconds: started.elapsed().as_secs_f64(),
        p50_ms: None,
        p99_ms: None,
    })
}

enum Bus {
    Nats(Arc<NatsBus>),
    Rabbit(Arc<RabbitBus>),
}

impl Bus {
    fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            Bus::Nats(bus) => bus.clone(),
            Bus::Rabbit(bus) => bus.clone(),
        }
    }

    async fn consumers(&self, n: usize) -> Result<Vec<Box<dyn Consumer>>, String> {
        let mut out: Vec<Box<dyn Consumer>> = Vec::new();
        for _ in 0..n {
            out.push(match self {
                Bus::Nats(bus) => {
                    Box::new(bus.consumer(Topic::Cdrs).await.map_err(|e| e.to_string())?)
                }
                Bus::Rabbit(bus) => {
                    Box::new(bus.consumer(Topic::Cdrs).await.map_err(|e| e.to_string())?)
                }
            });
        }
        Ok(out)
    }

    async fn cleanup(&self) -> Result<(), String> {
        match self {
            Bus::Nats(bus) => bus.delete_stream().await.map_err(|e| e.to_string()),
            Bus::Rabbit(bus) => bus.delete_topology().await.map_err(|e| e.to_string()),
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let bus = if args.broker == "nats" {
        let url = args.url.clone().unwrap_or_else(|| {
            std::env::var("OUTCALL_TEST_NATS_URL").unwrap_or("nats://127.0.0.1:4222".into())
        });
        let mut cfg = NatsConfig::new(url);
        cfg.prefix = format!("bench_{suffix}");
        cfg.max_ack_pending = 100_000;
        cfg.confirm_timeout = Duration::from_secs(30);
        Bus::Nats(Arc::new(
            NatsBus::connect(cfg).await.map_err(|e| e.to_string())?,
        ))
    } else {
        let url = args.url.clone().unwrap_or_else(|| {
            std::env::var("OUTCALL_TEST_AMQP_URL")
                .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into())
        });
        let mut cfg = RabbitConfig::new(url);
        cfg.prefix = format!("bench-{suffix}");
        cfg.prefetch = (args.batch * 2).min(u16::MAX as usize) as u16;
        cfg.confirm_timeout = Duration::from_secs(30);
        Bus::Rabbit(Arc::new(
            RabbitBus::connect(cfg).await.map_err(|e| e.to_string())?,
        ))
    };

    let mut rows = Vec::new();
    let result = async {
        rows.push(publish_round(bus.publisher(), "r1", args.messages, args.batch, 1).await?);
        rows.push(consume_round(bus.consumers(1).await?, args.messages, args.batch).await?);
        rows.push(
            publish_round(
                bus.publisher(),
                "r2",
                args.messages,
                args.batch,
                args.publishers,
            )
            .await?,
        );
        rows.push(consume_round(bus.consumers(2).await?, args.messages, args.batch).await?);
        Ok::<_, String>(())
    }
    .await;
    let cleaned = bus.cleanup().await;
    result?;
    cleaned?;

    println!(
        "broker: {}   messages per round: {}   envelope ≈ {} bytes of JSON",
        args.broker,
        args.messages,
        serde_json::to_vec(&cdr("r1", 0))
            .map(|v| v.len())
            .unwrap_or(0)
    );
    println!();
    println!("| phase | messages | seconds | messages/s | batch p50 ms | batch p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} |",
            row.phase,
            row.messages,
            row.seconds,
            row.messages as f64 / row.seconds,
            ms(row.p50_ms),
            ms(row.p99_ms)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bus_bench: {e}");
            eprintln!(
                "usage: bus_bench --broker nats|rabbitmq [--messages 200000] [--batch 1000] \
                 [--publishers 4] [--url URL]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("bus_bench: {e}");
        std::process::exit(1);
    }
}
