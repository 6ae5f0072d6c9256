//! Claim throughput of the Redis task queue, across OS processes.
//!
//! ```text
//! cargo run --release -p outcall-queue --example claim_bench -- --nodes 3 --tasks 200000 --batch 50
//! ```
//!
//! Pushes `--tasks` tasks into one campaign, then starts `--nodes` processes (this program
//! again, with `--worker`) that claim `--batch` tasks at a time and ack each, until the
//! queue is empty. Prints claims per second in total and per node, then, as a peer measured
//! in the same run against the same server, `redis-benchmark -q -n <tasks> -P 1 -c <nodes>`
//! for ZADD, ZPOPMIN and EVALSHA of a trivial script, so the figures read as ratios. Checks
//! that every task was claimed exactly once (the counts add up to the tasks pushed, every
//! ack succeeded, the queue is empty).
//!
//! Options: `--url` (default `OUTCALL_REDIS_URL`, else `redis://127.0.0.1:6379`; the peer
//! figures need a server without a password and `redis-benchmark` on the PATH).

use futures_util::future::join_all;
use outcall_queue::{now_ms, RedisConn, RedisQueue, Task, TaskQueue};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const CAMPAIGN: i64 = 1;
const LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Args {
    nodes: u32,
    tasks: u32,
    batch: u32,
    url: String,
    worker: Option<Worker>,
}

#[derive(Debug, Clone)]
struct Worker {
    namespace: String,
    node: String,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut args = Args {
            nodes: 3,
            tasks: 200_000,
            batch: 50,
            url: std::env::var("OUTCALL_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            worker: None,
        };
        let mut namespace = None;
        let mut node = None;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--nodes" => args.nodes = value()?.parse()?,
                "--tasks" => args.tasks = value()?.parse()?,
                "--batch" => args.batch = value()?.parse()?,
                "--url" => args.url = value()?,
                "--worker" => {}
                "--namespace" => namespace = Some(value()?),
                "--node" => node = Some(value()?),
                "-h" | "--help" => {
                    println!(
                        "claim_bench [--nodes 3] [--tasks 200000] [--batch 50] [--url redis://127.0.0.1:6379]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        if let (Some(namespace), Some(node)) = (namespace, node) {
            args.worker = Some(Worker { namespace, node });
        }
        if args.nodes == 0 || args.tasks == 0 || args.batch == 0 {
            return Err("--nodes, --tasks and --batch must be at least 1".into());
        }
        Ok(args)
    }
}

/// What a worker reports on its last line of output.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    node: String,
    claimed: u64,
    claim_scripts: u64,
    acks_lost: u64,
    secs: f64,
}

#[tokio::main]
async fn main() -> Res<()> {
    let args = Args::parse()?;
    match &args.worker {
        Some(w) => worker(&args, w).await,
        None => coordinator(&args).await,
    }
}

/// One node: claims and acks until the queue is empty.
async fn worker(args: &Args, w: &Worker) -> Res<()> {
    let q = RedisQueue::new(RedisConn::connect(&args.url, &w.namespace).await?);
    println!("ready");
    // Wait for the go, so that every node starts at once.
    tokio::task::spawn_blocking(|| {
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).map(|_| ())
    })
    .await??;
    let start = Instant::now();
    let mut report = Report {
        node: w.node.clone(),
        claimed: 0,
        claim_scripts: 0,
        acks_lost: 0,
        secs: 0.0,
    };
    loop {
        let leases = q
            .claim(CAMPAIGN, now_ms(), args.batch, &w.node, LEASE)
            .await?;
        report.claim_scripts += 1;
        if leases.is_empty() {
            break;
        }
        report.claimed += leases.len() as u64;
        for acked in join_all(leases.iter().map(|l| q.ack(l))).await {
            if !acked? {
                report.acks_lost += 1;
            }
        }
    }
    report.secs = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn coordinator(args: &Args) -> Res<()> {
    let namespace = format!("outcall-bench-{:016x}", rand::random::<u64>());
    let conn = RedisConn::connect(&args.url, &namespace).await?;
    let q = RedisQueue::new(conn.clone());
    let version = redis_version(&args.url)
        .await
        .unwrap_or_else(|_| "?".into());
    println!(
        "claim_bench: {} tasks, {} nodes (processes), batch {}, Redis {version} at {}",
        args.tasks,
        args.nodes,
        args.batch,
        conn.url()
    );

    let due = now_ms();
    let tasks: Vec<Task> = (0..args.tasks)
        .map(|i| Task {
            campaign_id: CAMPAIGN,
            contact_id: i64::from(i) + 1,
            priority: (i % 10) as i32,
            due_at_ms: due - i64::from(i % 1000),
        })
        .collect();
    let t = Instant::now();
    let pushed = q.push(&tasks).await?;
    let push_secs = t.elapsed().as_secs_f64();
    if pushed != u64::from(args.tasks) {
        return Err(format!("pushed {pushed} of {} tasks", args.tasks).into());
    }
    println!(
        "push: {pushed} tasks in {push_secs:.2} s ({:.0} tasks/s, 1,000 per script)",
        pushed as f64 / push_secs
    );

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for n in 1..=args.nodes {
        let mut child = Command::new(&exe)
            .args(["--worker", "--namespace", &namespace])
            .args(["--node", &format!("node-{n}")])
            .args(["--url", &args.url, "--batch", &args.batch.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        match lines.next_line().await? {
            Some(l) if l == "ready" => {}
            other => return Err(format!("worker node-{n} did not start: {other:?}").into()),
        }
        children.push((child, lines));
    }
    let start = Instant::now();
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().ok_or("worker without stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }
    let mut reports = Vec::new();
    for (mut child, mut lines) in children {
        let line = lines
            .next_line()
            .await?
            .ok_or("a worker ended without a report")?;
        let status = child.wait().await?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
        reports.push(serde_json::from_str::<Report>(&line)?);
    }
    let wall = start.elapsed().as_secs_f64();
    let depth = q.depth(CAMPAIGN).await?;
    q.purge_campaign(CAMPAIGN).await?;

    let total: u64 = reports.iter().map(|r| r.claimed).sum();
    let scripts: u64 = reports.iter().map(|r| r.claim_scripts).sum();
    let lost: u64 = reports.iter().map(|r| r.acks_lost).sum();
    println!();
    println!("| node | tasks claimed | claim scripts | seconds | claims/s |");
    println!("|---|---:|---:|---:|---:|");
    for r in &reports {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} |",
            r.node,
            r.claimed,
            r.claim_scripts,
            r.secs,
            r.claimed as f64 / r.secs
        );
    }
    let claims_per_sec = total as f64 / wall;
    println!("| total | {total} | {scripts} | {wall:.2} | {claims_per_sec:.0} |");
    println!(
        "\nEach task costs 1/{} of a claim script and one ack script: {:.0} scripts/s in all.",
        args.batch,
        (scripts + total) as f64 / wall
    );

    println!(
        "\nPeer, same run: redis-benchmark -q -n {} -P 1 -c {}",
        args.tasks, args.nodes
    );
    println!("| command | requests/s | claims/s ÷ requests/s |");
    println!("|---|---:|---:|");
    for (name, rps) in peer(args).await {
        match rps {
            Some(rps) => println!("| {name} | {rps:.0} | {:.2} |", claims_per_sec / rps),
            None => println!("| {name} | (redis-benchmark failed) | |"),
        }
    }

    let ok = total == u64::from(args.tasks) && lost == 0 && depth.total() == 0;
    println!(
        "\ncheck: {total} claimed of {} pushed, {lost} acks lost, {} left in the queue: {}",
        args.tasks,
        depth.total(),
        if ok {
            "OK, each task claimed exactly once"
        } else {
            "FAILED"
        }
    );
    if !ok {
        return Err("a task was claimed twice or never".into());
    }
    Ok(())
}

async fn redis_version(url: &str) -> Res<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string())
}

/// `redis-benchmark` against the same server: ZADD, ZPOPMIN and EVALSHA of `return 1`.
async fn peer(args: &Args) -> Vec<(String, Option<f64>)> {
    let client = match redis::Client::open(args.url.as_str()) {
        Ok(c) => c,
        Err(_) => return Vec::new(),
    };
    let addr = client.get_connection_info().addr().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "6379"));
    let mut base: Vec<String> = ["-h", host, "-p", port, "-q"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    base.extend(
        [
            "-n",
            &args.tasks.to_string(),
            "-P",
            "1",
            "-c",
            &args.nodes.to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let sha: Option<String> = match client.get_multiplexed_async_connection().await {
        Ok(mut con) => redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query_async(&mut con)
            .await
            .ok(),
        Err(_) => None,
    };
    let mut out = Vec::new();
    for (name, extra) in [
        ("ZADD", vec!["-t".to_string(), "zadd".to_string()]),
        ("ZPOPMIN", vec!["-t".to_string(), "zpopmin".to_string()]),
    ] {
        out.push((name.to_string(), run_benchmark(&base, &extra).await));
    }
    if let Some(sha) = sha {
        let extra = vec!["EVALSHA".to_string(), sha, "0".to_string()];
        out.push((
            "EVALSHA (return 1)".to_string(),
            run_benchmark(&base, &extra).await,
        ));
    }
    out
}

/// Requests per second from `redis-benchmark -q` output (`ZADD: 81234.56 requests per
/// second, p50=…`).
async fn run_benchmark(base: &[String], extra: &[String]) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(base)
        .args(extra)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // -q redraws with carriage returns; the last segment holds the result.
    let last = text
        .split(['\r', '\n'])
        .rev()
        .find(|s| s.contains("requests per second"))?;
    let (_, after) = last.split_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}
