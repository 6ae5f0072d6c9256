//! `outcall bench scheduler`: how fast the scheduler dispatches, and how late.
//!
//! 1. The queue alone: tasks through the timing wheel and the priority queue, no store.
//! 2. The whole scheduler with a null call engine (every call ends at once), on the in-memory
//!    store and on SQLite: tasks dispatched per second, each one a real attempt opened and
//!    closed in the store.
//! 3. With `--trunk`: dispatch latency from due time to INVITE against a real SIP peer at a
//!    given rate, contacts falling due at that rate (not queued up front).
//!
//! Throughput runs on one core (a current-thread runtime).

use super::TrunkArgs;
use anyhow::{bail, Result};
use clap::Args;
use jiff::Timestamp;
use outcall_domain::call::{Call, CallEvent, HangupParty};
use outcall_domain::campaign::{CampaignSpec, CampaignStatus};
use outcall_domain::cdr::CdrContext;
use outcall_domain::{Cdr, Classifier};
use outcall_pool::NumberVault;
use outcall_scheduler::{Clock, SchedulerConfig, SchedulerDeps};
use outcall_store::memory::MemoryStore;
use outcall_store::sqlite::SqliteStore;
use outcall_store::{NewContact, Store, TrunkRecord};
use outcall_telephony::engine::{BoxFuture, CallReport, CallUpdate};
use outcall_telephony::{CallEngine, CallRequest, SipUserAgent, TrunkConfig};
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Args)]
pub struct SchedulerBenchArgs {
    /// Tasks for the queue-only run.
    #[arg(long, default_value_t = 1_000_000)]
    pub queue_tasks: usize,
    /// Tasks for the in-memory-store run.
    #[arg(long, default_value_t = 100_000)]
    pub memory_tasks: u32,
    /// Tasks for the SQLite run.
    #[arg(long, default_value_t = 20_000)]
    pub sqlite_tasks: u32,
    /// Latency run: calls per second.
    #[arg(long, default_value_t = 1000.0)]
    pub cps: f64,
    /// Latency run: number of calls.
    #[arg(long, default_value_t = 5000)]
    pub calls: u32,
    /// Latency run against this SIP peer (skipped without `--trunk`).
    #[command(flatten)]
    pub trunk: TrunkArgs,
}

/// Ends every call at once, answered.
struct NullEngine;

fn null_cdr() -> Cdr {
    let mut c = Call::new();
    let _ = c.apply(CallEvent::Dial, 1);
    let _ = c.apply(CallEvent::Answer { status: 200 }, 2);
    let _ = c.apply(
        CallEvent::Hangup {
            by: HangupParty::Local,
            q850: None,
        },
        3,
    );
    Cdr::from_call(&c, &Classifier::default(), CdrContext::default())
}

impl CallEngine for NullEngine {
    fn place_call(
        &self,
        _req: CallRequest,
        _u: Option<UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport> {
        Box::pin(async {
            CallReport {
                transitions: vec![],
                cdr: null_cdr(),
                cause: None,
            }
        })
    }
}

fn spec(cps: f64, concurrency: u32) -> CampaignSpec {
    serde_json::from_value(serde_json::json!({
        "name": "bench", "trunks": ["t"], "max_cps": cps, "max_concurrent": concurrency,
    }))
    .expect("bench spec")
}

fn vault() -> Arc<NumberVault> {
    Arc::new(NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).expect("vault"))
}

async fn seed(
    store: &dyn Store,
    vault: &NumberVault,
    spec: &CampaignSpec,
    n: u32,
    trunk: &TrunkConfig,
) -> Result<i64> {
    store
        .upsert_trunk(&TrunkRecord {
            name: trunk.name.clone(),
            config: serde_json::to_value(trunk)?,
        })
        .await?;
    let c = store.create_campaign(spec, Timestamp::now()).await?;
    let mut batch = Vec::with_capacity(5000);
    for i in 0..n {
        let num = format!("+8613{:09}", i);
        batch.push(NewContact {
            number_hash: vault.blind_index(&num),
            number_enc: vault.encrypt(&num),
            masked: outcall_domain::mask_number(&num),
            time_zone: None,
            priority: (i % 7) as i32,
            variables: serde_json::json!({}),
            region: Default::default(),
            trace_id: None,
        });
        if batch.len() == 5000 {
            store.add_contacts(c.id, &batch, Timestamp::now()).await?;
            batch.clear();
        }
    }
    store.add_contacts(c.id, &batch, Timestamp::now()).await?;
    store
        .set_campaign_status(
            c.id,
            CampaignStatus::Draft,
            CampaignStatus::Running,
            Timestamp::now(),
        )
        .await?;
    Ok(c.id)
}

/// Runs the scheduler to the end of the campaign; returns seconds.
async fn run_full(
    store: Arc<dyn Store>,
    engine: Arc<dyn CallEngine>,
    n: u32,
    cps: f64,
    trunk: TrunkConfig,
) -> Result<f64> {
    let vault = vault();
    let id = seed(&*store, &vault, &spec(cps, 100_000), n, &trunk).await?;
    let deps = SchedulerDeps {
        store: store.clone(),
        engine,
        vault,
        clock: Clock::system(),
        events: None,
        queue: None,
        limiter: None,
    };
    let cfg = SchedulerConfig {
        max_concurrent: 100_000,
        refill_interval: Duration::from_millis(10),
        ..SchedulerConfig::default()
    };
    let t0 = Instant::now();
    let h = outcall_scheduler::start(deps, cfg).await?;
    while store.get_campaign(id).await?.status != CampaignStatus::Completed {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    h.shutdown(Duration::from_secs(5)).await;
    Ok(secs)
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Q(i32, i32, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>);

fn queue_only(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut wheel = tokio_util::time::DelayQueue::with_capacity(n);
        let mut heap = BinaryHeap::with_capacity(n);
        let base = tokio::time::Instant::now();
        let t0 = Instant::now();
        for i in 0..n as u64 {
            wheel.insert_at(
                Q(
                    (i % 3) as i32,
                    (i % 7) as i32,
                    std::cmp::Reverse(i),
                    std::cmp::Reverse(i),
                ),
                base + Duration::from_millis(i % 1000),
            );
        }
        let mut out = 0usize;
        tokio::time::sleep_until(base + Duration::from_millis(1000)).await;
        while out < n {
            if let Some(e) = std::future::poll_fn(|cx| wheel.poll_expired(cx)).await {
                heap.push(e.into_inner());
            }
            while let Some(t) = heap.pop() {
                std::hint::black_box(&t);
                out += 1;
            }
        }
        // The 1 s wait for the last due time is not the queue's cost.
        n as f64 / (t0.elapsed().as_secs_f64() - 1.0).max(1e-9)
    })
}

pub async fn run(a: SchedulerBenchArgs) -> Result<ExitCode> {
    let trunk = TrunkConfig::new("t", "127.0.0.1", 9, outcall_telephony::SipTransport::Udp);
    let q = a.queue_tasks;
    let queue_rate = tokio::task::spawn_blocking(move || queue_only(q)).await?;
    let (mem_n, sql_n) = (a.memory_tasks, a.sqlite_tasks);
    let t = trunk.clone();
    let (mem_secs, sql_secs) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let m = run_full(
                Arc::new(MemoryStore::new()),
                Arc::new(NullEngine),
                mem_n,
                100_000.0,
                t.clone(),
            )
            .await?;
            let dir = tempfile_dir()?;
            let s = SqliteStore::open(&dir.join("bench.db")).await?;
            let q = run_full(Arc::new(s), Arc::new(NullEngine), sql_n, 100_000.0, t).await?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok((m, q))
        })
    })
    .await??;
    println!("| run | tasks | seconds | tasks/s |");
    println!("|---|---|---|---|");
    println!(
        "| queue only (timing wheel + priority queue), one core | {q} | - | {queue_rate:.0} |"
    );
    println!(
        "| scheduler, in-memory store, null engine, one core | {mem_n} | {mem_secs:.2} | {:.0} |",
        mem_n as f64 / mem_secs
    );
    println!(
        "| scheduler, SQLite store, null engine, one core | {sql_n} | {sql_secs:.2} | {:.0} |",
        sql_n as f64 / sql_secs
    );
    if a.trunk.trunk.is_some() || a.trunk.config.is_some() {
        latency(&a).await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("outcall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Due-to-INVITE latency against a real SIP peer, contacts falling due at `cps`.
async fn latency(a: &SchedulerBenchArgs) -> Result<()> {
    if a.cps <= 0.0 || a.calls == 0 {
        bail!("--cps and --calls must be positive");
    }
    let r = a.trunk.resolve()?;
    let mut trunk = r.trunk;
    trunk.name = "t".into();
    let ua = SipUserAgent::start(r.ua, Classifier::default()).await?;
    let dir = tempfile_dir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("latency.db")).await?);
    let vault = vault();
    let mut s = spec(a.cps * 2.0, 100_000);
    s.max_duration_secs = 1;
    let id = seed(&*store, &vault, &s, a.calls, &trunk).await?;
    // Spread the due times: contact i falls due at start + i / cps.
    let start = Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let contacts = store
        .due_contacts(
            id,
            Timestamp::now() + jiff::SignedDuration::from_secs(1),
            a.calls + 10,
        )
        .await?;
    for (i, c) in contacts.iter().enumerate() {
        let at = start + jiff::SignedDuration::from_secs_f64(i as f64 / a.cps);
        store.defer_contact(c.id, at).await?;
    }
    let deps = SchedulerDeps {
        store: store.clone(),
        engine: Arc::new(ua.clone()),
        vault,
        clock: Clock::system(),
        events: None,
        queue: None,
        limiter: None,
    };
    let h = outcall_scheduler::start(
        deps,
        SchedulerConfig {
            max_concurrent: 100_000,
            ..SchedulerConfig::default()
        },
    )
    .await?;
    while store.get_campaign(id).await?.status != CampaignStatus::Completed {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown(Duration::from_secs(5)).await;
    let mut lat = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_attempts(id, after, 1000).await?;
        if page.is_empty() {
            break;
        }
        after = page.last().map(|x| x.id);
        for at in page {
            if let Some(c) = at.cdr {
                if let (Some(q), Some(i)) = (c.queued_at_ms, c.invite_at_ms) {
                    lat.push(i.saturating_sub(q));
                }
            }
        }
    }
    lat.sort_unstable();
    let p = |x: f64| {
        lat.get(((lat.len() as f64 - 1.0) * x).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!();
    println!(
        "| due → INVITE at {:.0} CPS ({} calls, SQLite) | ms |",
        a.cps,
        lat.len()
    );
    println!("|---|---|");
    println!("| p50 | {} |", p(0.5));
    println!("| p90 | {} |", p(0.9));
    println!("| p99 | {} |", p(0.99));
    println!("| max | {} |", lat.last().copied().unwrap_or(0));
    ua.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
