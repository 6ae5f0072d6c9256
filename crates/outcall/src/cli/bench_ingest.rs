//! `outcall bench ingest`: CDRs through the bus into PostgreSQL, as a dialer publishes them
//! and ingest nodes write them, against two peers measured in the same run: the same batched
//! inserts into PostgreSQL without the bus, and the bus without PostgreSQL.
//!
//! Every phase uses its own PostgreSQL schema and its own bus names, dropped at the end.

use super::node::{CdrMessage, StoreCdrs};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use outcall_bus::{CdrSink, Envelope, Ingest, IngestConfig, Publisher};
use outcall_domain::{CallState, Cdr, Outcome};
use outcall_store::postgres::{PgOptions, PgStore};
use outcall_store::{CdrRow, Store};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchBus {
    Nats,
    Rabbitmq,
}

#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    /// CDRs per phase.
    #[arg(long, default_value_t = 200_000)]
    pub cdrs: u64,
    /// CDRs per published batch and per insert.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Ingest consumers (the ingest nodes of a deployment).
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Concurrent publishers (the dialer nodes of a deployment).
    #[arg(long, default_value_t = 3)]
    pub publishers: usize,
    #[arg(long, value_enum, default_value_t = BenchBus::Nats)]
    pub bus: BenchBus,
    /// The bus (default: the local NATS or RabbitMQ).
    #[arg(long)]
    pub bus_url: Option<String>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres: String,
}

fn sample_cdr(i: u64, at_ms: u64) -> Cdr {
    Cdr {
        attempt_id: i.to_string(),
        trace_id: format!("{i:032x}"),
        call_id: format!("{i:016x}@bench"),
        trunk: "carrier-a".into(),
        node: format!("dialer-{}", i % 3),
        caller_id: "02150000001".into(),
        callee: "+86138****5678".into(),
        final_state: CallState::Completed,
        outcome: Outcome::AnsweredHuman,
        sip_status: Some(200),
        q850_cause: Some(16),
        queued_at_ms: Some(at_ms),
        dispatched_at_ms: Some(at_ms),
        invite_at_ms: Some(at_ms + 2),
        ring_at_ms: Some(at_ms + 120),
        early_media_at_ms: None,
        answer_at_ms: Some(at_ms + 4000),
        end_at_ms: Some(at_ms + 34000),
        setup_ms: Some(118),
        duration_ms: 33998,
        billsec: 30,
        hangup_by: Some(outcall_domain::HangupParty::Remote),
        early_media: false,
        dtmf: "1".into(),
        recording: None,
        rtp_packets_sent: 1500,
        rtp_packets_received: 1498,
        rtp_packets_lost: 2,
    }
}

fn envelopes(n: u64, at_ms: i64) -> Vec<Envelope> {
    (1..=n)
        .map(|i| {
            let m = CdrMessage {
                attempt_id: i as i64,
                campaign_id: 1 + (i % 10) as i64,
                started_at_ms: at_ms,
                cdr: sample_cdr(i, at_ms as u64),
            };
            Envelope::cdr(
                i,
                m.campaign_id.to_string(),
                serde_json::to_value(&m).unwrap_or_default(),
            )
        })
        .collect()
}

/// Counts what the bus delivers, for the bus-alone peer.
struct Counting(AtomicU64);

#[async_trait::async_trait]
impl CdrSink for Counting {
    async fn write(&self, batch: &[Envelope]) -> Result<u64, String> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(batch.len() as u64)
    }
}

enum AnyBus {
    Nats(outcall_bus::NatsBus),
    Rabbit(outcall_bus::RabbitBus),
}

impl AnyBus {
    fn open(a: &IngestBenchArgs, prefix: &str) -> Result<AnyBus> {
        Ok(match a.bus {
            BenchBus::Nats => {
                let mut c = outcall_bus::NatsConfig::new(
                    a.bus_url
                        .clone()
                        .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
                );
                c.prefix = prefix.into();
                AnyBus::Nats(outcall_bus::NatsBus::new(c)?)
            }
            BenchBus::Rabbitmq => {
                let mut c = outcall_bus::RabbitConfig::new(
                    a.bus_url
                        .clone()
                        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
                );
                c.prefix = prefix.into();
                AnyBus::Rabbit(outcall_bus::RabbitBus::new(c)?)
            }
        })
    }

    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        match self {
            AnyBus::Nats(b) => b.publish(batch).await?,
            AnyBus::Rabbit(b) => b.publish(batch).await?,
        }
        Ok(())
    }

    async fn ingest(
        &self,
        sink: Arc<dyn CdrSink>,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let cfg = IngestConfig::default();
        Ok(match self {
            AnyBus::Nats(b) => {
                let c = b.consumer(outcall_bus::Topic::Cdrs).await?;
                tokio::spawn(async move {
                    Ingest::run(c, sink, cfg, stop).await;
                })
            }
            AnyBus::Rabbit(b) => {
                let c = b.consumer(outcall_bus::Topic::Cdrs).await?;
                tokio::spawn(async move {
                    Ingest::run(c, sink, cfg, stop).await;
                })
            }
        })
    }

    async fn remove(&self) {
        let r = match self {
            AnyBus::Nats(b) => b.delete_stream().await,
            AnyBus::Rabbit(b) => b.delete_topology().await,
        };
        if let Err(e) = r {
            eprintln!("warning: bus names not removed: {e}");
        }
    }
}

/// Publishes `all` from `publishers` concurrent tasks in batches; returns the time it took.
async fn publish_all(
    bus: &Arc<AnyBus>,
    all: &Arc<Vec<Envelope>>,
    batch: usize,
    publishers: usize,
) -> Result<Duration> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let chunks: Vec<(usize, usize)> = (0..all.len())
        .step_by(batch)
        .map(|s| (s, (s + batch).min(all.len())))
        .collect();
    let chunks = Arc::new(chunks);
    for p in 0..publishers.max(1) {
        let (bus, all, chunks) = (bus.clone(), all.clone(), chunks.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < chunks.len() {
                let (s, e) = chunks[i];
                bus.publish(&all[s..e]).await?;
                i += publishers.max(1);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed())
}

async fn wait_count(
    what: &str,
    limit: Duration,
    mut n: impl FnMut() -> futures_like::BoxCount,
    want: u64,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let got = n().await?;
        if got >= want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            anyhow::bail!("{what}: {got} of {want} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod futures_like {
    pub type BoxCount =
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u64>> + Send>>;
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub async fn run(a: IngestBenchArgs) -> Result<ExitCode> {
    let n = a.cdrs;
    let tag = format!("{:08x}", rand::random::<u32>());
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let all = Arc::new(envelopes(n, now_ms));
    println!(
        "bench ingest: {n} CDRs, batches of {}, {} publishers, {} consumers, bus {:?}",
        a.batch, a.publishers, a.consumers, a.bus
    );

    // Peer 1: the store alone (batched inserts, no bus).
    let schema_a = format!("bench_store_{tag}");
    let store = PgStore::connect_schema(&a.postgres, &schema_a, PgOptions::default())
        .await
        .with_context(|| format!("PostgreSQL at {}", super::node::redact(&a.postgres)))?;
    let rows: Vec<CdrRow> = all
        .iter()
        .map(|e| {
            let m: CdrMessage = serde_json::from_value(e.payload.clone())?;
            Ok(CdrRow {
                attempt_id: m.attempt_id,
                campaign_id: m.campaign_id,
                started_at: jiff::Timestamp::from_millisecond(m.started_at_ms)?,
                cdr: m.cdr,
            })
        })
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    let store = Arc::new(store);
    {
        let rows = Arc::new(rows);
        let mut tasks = Vec::new();
        let writers = a.consumers.max(1);
        for w in 0..writers {
            let (store, rows, batch) = (store.clone(), rows.clone(), a.batch);
            tasks.push(tokio::spawn(async move {
                let chunks: Vec<&[CdrRow]> = rows.chunks(batch).collect();
                let mut i = w;
                while i < chunks.len() {
                    store.insert_cdrs(chunks[i]).await?;
                    i += writers;
                }
                Ok::<(), anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let store_alone = t0.elapsed();
    let stored = store.count_cdrs(None).await?;
    anyhow::ensure!(stored == n, "store alone wrote {stored} of {n}");
    drop_schema(&store, &schema_a).await;

    // Peer 2: the bus alone (publish with confirms, ingest into a counter).
    let bus = Arc::new(AnyBus::open(&a, &format!("bench-bus-{tag}"))?);
    let counted = Arc::new(Counting(AtomicU64::new(0)));
    let stop = CancellationToken::new();
    let mut consumers = Vec::new();
    for _ in 0..a.consumers.max(1) {
        consumers.push(bus.ingest(counted.clone(), stop.clone()).await?);
    }
    let t0 = Instant::now();
    let bus_publish = publish_all(&bus, &all, a.batch, a.publishers).await?;
    let c = counted.clone();
    wait_count(
        "bus alone",
        Duration::from_secs(600),
        move || {
            let c = c.clone();
            Box::pin(async move { Ok(c.0.load(Ordering::Relaxed)) })
        },
        n,
    )
    .await?;
    let bus_alone = t0.elapsed();
    stop.cancel();
    for c in consumers {
        let _ = c.await;
    }
    bus.remove().await;

    // The path: bus then PostgreSQL, as ingest nodes do it.
    let schema_b = format!("bench_ingest_{tag}");
    let store =
        Arc::new(PgStore::connect_schema(&a.postgres, &schema_b, PgOptions::default()).await?);
    let bus = Arc::new(AnyBus::open(&a, &format!("bench-ingest-{tag}"))?);
    let sink = Arc::new(StoreCdrs {
        store: store.clone() as Arc<dyn Store>,
    });
    let stop = CancellationToken::new();
    let mut consumers = Vec::new();
    for _ in 0..a.consumers.max(1) {
        consumers.push(bus.ingest(sink.clone(), stop.clone()).await?);
    }
    let t0 = Instant::now();
    let path_publish = publish_all(&bus, &all, a.batch, a.publishers).await?;
    let s = store.clone();
    wait_count(
        "ingest",
        Duration::from_secs(900),
        move || {
            let s = s.clone();
            Box::pin(async move { Ok(s.count_cdrs(None).await?) })
        },
        n,
    )
    .await?;
    let path = t0.elapsed();
    stop.cancel();
    for c in consumers {
        let _ = c.await;
    }
    bus.remove().await;
    drop_schema(&store, &schema_b).await;

    let path_rate = rate(n, path);
    println!();
    println!("| phase | seconds | CDR/s | path ÷ phase |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, d: Duration| {
        let r = rate(n, d);
        println!(
            "| {name} | {:.2} | {:.0} | {:.2} |",
            d.as_secs_f64(),
            r,
            path_rate / r
        );
    };
    row("PostgreSQL alone: batched inserts (peer)", store_alone);
    row(
        "bus alone: publish with confirms + consume (peer)",
        bus_alone,
    );
    row("bus alone: publishing", bus_publish);
    row("bus → ingest → PostgreSQL (the path)", path);
    row("the path: publishing", path_publish);
    println!();
    println!(
        "target 100,000 CDR/s: {}",
        if path_rate >= 100_000.0 {
            "met"
        } else {
            "not met (see the peers for the ceiling)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn drop_schema(store: &PgStore, schema: &str) {
    // The schema name is this benchmark's own (letters, digits, `_`).
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
    {
        eprintln!("warning: schema {schema} not dropped: {e}");
    }
    store.close().await;
}
