//! `outcall bench sip`: drive N calls at a target rate and print a table.
//!
//! With `--compare-sipp SCENARIO`, SIPp's own UAC then runs the same number of calls at the
//! same rate against the same trunk, and its CPU time is measured the same way (CPU seconds
//! of the waited-for child), so the figures are ratios on one machine in one run.

use super::proc_stats::{cpu_seconds, peak_rss_kib, rss_kib};
use super::TrunkArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use outcall_domain::{Classifier, Outcome};
use outcall_telephony::engine::AfterPrompt;
use outcall_telephony::{CallEngine, CallRequest, Prompt, SipUserAgent};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Place N calls at a target calls-per-second against a trunk.
    Sip(SipBenchArgs),
    /// Scheduler throughput (null call engine) and due-to-INVITE latency (with --trunk).
    Scheduler(super::bench_scheduler::SchedulerBenchArgs),
    /// Number pipeline per core and an import of generated numbers into the embedded store.
    Import(super::bench_import::ImportBenchArgs),
    /// CDRs through the bus into PostgreSQL (the ingest path), against the store alone and
    /// the bus alone.
    #[cfg(all(feature = "nats", feature = "rabbitmq"))]
    Ingest(super::bench_ingest::IngestBenchArgs),
}

#[derive(Debug, Args)]
pub struct SipBenchArgs {
    #[command(flatten)]
    pub trunk: TrunkArgs,
    /// Number of calls.
    #[arg(long, default_value_t = 1000)]
    pub calls: u64,
    /// Target calls per second.
    #[arg(long, default_value_t = 100.0)]
    pub cps: f64,
    /// Talk time of each answered call in milliseconds before our BYE.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// Open RTP and send G.711 both ways during the hold (a 1 kHz tone unless --prompt).
    #[arg(long)]
    pub media: bool,
    /// Prompt to send with --media.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Number to dial (the same for every call; the UAS does not care).
    #[arg(long, default_value = "10000")]
    pub to: String,
    /// Ring timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub ring_timeout: f64,
    /// After our run, run SIPp's UAC with this scenario at the same rate and compare.
    #[arg(long)]
    pub compare_sipp: Option<PathBuf>,
    /// Seconds to wait after the last call before reporting memory again (transactions of
    /// answered calls are kept 64*T1 = 32 s, RFC 6026; use 35 to see them released).
    #[arg(long, default_value_t = 0)]
    pub settle_secs: u64,
    /// Extra arguments for the SIPp UAC (space separated).
    #[arg(long, default_value = "")]
    pub sipp_args: String,
    /// Record Prometheus metrics as `serve` does, and render them once a second as a scrape
    /// would (to measure their cost; tracing is set with the global --log-* flags).
    #[arg(long)]
    pub metrics: bool,
}

struct Row {
    name: String,
    calls: u64,
    ok: u64,
    failed: u64,
    wall: f64,
    cpu: f64,
    extra: Vec<(String, String)>,
}

pub async fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Sip(a) => sip(a).await,
        BenchCommand::Scheduler(a) => super::bench_scheduler::run(a).await,
        BenchCommand::Import(a) => super::bench_import::run(a).await,
        #[cfg(all(feature = "nats", feature = "rabbitmq"))]
        BenchCommand::Ingest(a) => super::bench_ingest::run(a).await,
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn sip(a: SipBenchArgs) -> Result<ExitCode> {
    if a.calls == 0 || a.cps <= 0.0 {
        bail!("--calls and --cps must be positive");
    }
    let r = a.trunk.resolve()?;
    let trunk_host = format!("{}:{}", r.trunk.host, r.trunk.port);
    let transport = r.trunk.transport;
    let trunk = Arc::new(r.trunk);
    let prompt = if a.media {
        Some(match &a.prompt {
            Some(p) => Prompt::load(p).with_context(|| format!("cannot load {}", p.display()))?,
            None => {
                let n = (a.hold_ms.max(20) * 8) as usize;
                let tone: Vec<i16> = (0..n)
                    .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI / 8.0).sin() * 8000.0) as i16)
                    .collect();
                Prompt {
                    name: "tone".into(),
                    samples: Arc::new(tone),
                }
            }
        })
    } else {
        None
    };
    let ua = SipUserAgent::start(r.ua, Classifier::from_config(&r.classification)).await?;
    let scraper = if a.metrics {
        let render = super::telemetry::install_metrics().map_err(anyhow::Error::msg)?;
        let ua = ua.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                ua.refresh_quality();
                let text = render();
                std::hint::black_box(text.len());
            }
        }))
    } else {
        None
    };
    let base_rss = rss_kib();
    let (cpu0, _) = cpu_seconds();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut launched = 0u64;
    let mut peak_active = 0usize;
    let mut peak_rss_at_peak = base_rss;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while launched < a.calls {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * a.cps).floor() as u64 + 1).min(a.calls);
        while launched < due {
            let mut req =
                CallRequest::new(format!("bench-{launched}"), a.to.clone(), trunk.clone());
            req.media = a.media;
            req.prompt = prompt.clone();
            req.after_prompt = AfterPrompt::Stay;
            req.max_duration = Duration::from_millis(a.hold_ms);
            req.ring_timeout = Duration::from_secs_f64(a.ring_timeout);
            req.queued_at_ms = Some(outcall_telephony::now_ms());
            let ua = ua.clone();
            tasks.spawn(async move { ua.place_call(req, None).await });
            launched += 1;
        }
        let active = ua.active_calls();
        if active > peak_active {
            peak_active = active;
            peak_rss_at_peak = rss_kib();
        }
    }
    let dispatch_secs = start.elapsed().as_secs_f64();
    let mut outcomes: BTreeMap<Outcome, u64> = BTreeMap::new();
    let mut setup = Vec::with_capacity(a.calls as usize);
    let mut answer = Vec::with_capacity(a.calls as usize);
    let mut sampler = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(Ok(rep)) => {
                    *outcomes.entry(rep.cdr.outcome).or_default() += 1;
                    if let Some(s) = rep.cdr.setup_ms { setup.push(s); }
                    if let (Some(x), Some(i)) = (rep.cdr.answer_at_ms, rep.cdr.invite_at_ms) {
                        answer.push(x.saturating_sub(i));
                    }
                }
                Some(Err(e)) => bail!("call task failed: {e}"),
                None => break,
            },
            _ = sampler.tick() => {
                let active = ua.active_calls();
                if active > peak_active {
                    peak_active = active;
                    peak_rss_at_peak = rss_kib();
                }
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, _) = cpu_seconds();
    setup.sort_unstable();
    answer.sort_unstable();
    let answered = outcomes.get(&Outcome::AnsweredHuman).copied().unwrap_or(0);
    let failed = a.calls - answered;
    // Give the stack a moment to drop finished dialogs, then report what is left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = ua.dialog_count();
    let rss_end = rss_kib();
    let tx_end = ua.transaction_counts();
    let mut settled = vec![(
        "transactions at end (running / finished / waiting ack)".to_string(),
        format!("{} / {} / {}", tx_end.0, tx_end.1, tx_end.2),
    )];
    if a.settle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
        let t = ua.transaction_counts();
        settled.push((
            format!("transactions after {} s settle", a.settle_secs),
            format!("{} / {} / {}", t.0, t.1, t.2),
        ));
        settled.push((
            format!("RSS MiB at end / after {} s settle", a.settle_secs),
            format!(
                "{:.1} / {:.1}",
                rss_end as f64 / 1024.0,
                rss_kib() as f64 / 1024.0
            ),
        ));
    }
    let mut extra = vec![
        ("outcomes".to_string(), fmt_outcomes(&outcomes)),
        (
            "dispatch cps".to_string(),
            format!("{:.0}", a.calls as f64 / dispatch_secs),
        ),
        (
            "setup p50 / p99 ms (INVITE→first response)".to_string(),
            format!("{} / {}", pct(&setup, 0.5), pct(&setup, 0.99)),
        ),
        (
            "answer p50 / p99 ms (INVITE→200)".to_string(),
            format!("{} / {}", pct(&answer, 0.5), pct(&answer, 0.99)),
        ),
        ("peak concurrent calls".to_string(), peak_active.to_string()),
        (
            "peak RSS MiB".to_string(),
            format!("{:.1}", peak_rss_kib() as f64 / 1024.0),
        ),
        (
            "RSS per concurrent call KiB".to_string(),
            format!(
                "{:.1}",
                peak_rss_at_peak.saturating_sub(base_rss) as f64 / peak_active.max(1) as f64
            ),
        ),
        ("dialogs left after run".to_string(), left.to_string()),
    ];
    extra.extend(settled);
    if let Some(s) = scraper {
        s.abort();
    }
    let ours = Row {
        name: if a.metrics {
            "outcall (metrics on)".into()
        } else {
            "outcall".into()
        },
        calls: a.calls,
        ok: answered,
        failed,
        wall,
        cpu: cpu1 - cpu0,
        extra: std::mem::take(&mut extra),
    };
    ua.shutdown();
    let mut rows = vec![ours];
    if let Some(scn) = &a.compare_sipp {
        rows.push(run_sipp(scn, &trunk_host, transport, &a).await?);
    }
    print_table(&rows, a.cps);
    Ok(if rows.iter().all(|r| r.failed == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_sipp(
    scn: &std::path::Path,
    trunk: &str,
    transport: outcall_telephony::SipTransport,
    a: &SipBenchArgs,
) -> Result<Row> {
    let (_, child0) = cpu_seconds();
    let t = match transport {
        outcall_telephony::SipTransport::Udp => "u1",
        outcall_telephony::SipTransport::Tcp => "t1",
    };
    let start = Instant::now();
    let mut cmd = tokio::process::Command::new("sipp");
    cmd.arg("-sf")
        .arg(scn)
        .arg(trunk)
        .args(["-i", "127.0.0.1", "-p", "0", "-t", t, "-m"])
        .arg(a.calls.to_string())
        .arg("-r")
        .arg(format!("{}", a.cps.round() as u64))
        .args([
            "-rp",
            "1000",
            "-l",
            "100000",
            "-s",
            &a.to,
            "-nostdin",
            "-timeout_error",
        ])
        .args(["-timeout", "600s", "-d"])
        .arg(a.hold_ms.to_string())
        .args(a.sipp_args.split_whitespace())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = cmd
        .status()
        .await
        .context("cannot run sipp (install sip-tester)")?;
    let wall = start.elapsed().as_secs_f64();
    let (_, child1) = cpu_seconds();
    let ok = if status.success() { a.calls } else { 0 };
    Ok(Row {
        name: "sipp uac".into(),
        calls: a.calls,
        ok,
        failed: a.calls - ok,
        wall,
        cpu: child1 - child0,
        extra: vec![(
            "sipp exit status".into(),
            status.code().unwrap_or(-1).to_string(),
        )],
    })
}

fn fmt_outcomes(o: &BTreeMap<Outcome, u64>) -> String {
    o.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(rows: &[Row], target: f64) {
    println!(
        "| client | calls | answered | failed | wall s | calls/s over wall | CPU s | CPU ms/call |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} (target {:.0}) | {:.2} | {:.3} |",
            r.name,
            r.calls,
            r.ok,
            r.failed,
            r.wall,
            r.calls as f64 / r.wall,
            target,
            r.cpu,
            r.cpu * 1000.0 / r.calls as f64
        );
    }
    if rows.len() == 2 && rows[1].cpu > 0.0 {
        println!();
        println!(
            "CPU per call, outcall / sipp: {:.2}x",
            rows[0].cpu / rows[1].cpu
        );
    }
    for r in rows {
        if r.extra.is_empty() {
            continue;
        }
        println!();
        println!("| {} | |", r.name);
        println!("|---|---|");
        for (k, v) in &r.extra {
            println!("| {k} | {v} |");
        }
    }
}
