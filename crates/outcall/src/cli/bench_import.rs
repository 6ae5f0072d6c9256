//! `outcall bench import`: how fast numbers are normalised, deduplicated, checked against the
//! blacklist, protected and stored.
//!
//! 1. The in-memory pipeline on one core, stage by stage: E.164 reading, libphonenumber
//!    validation, the HMAC blind index, the bloom-filter dedup and the blacklist check.
//! 2. A whole import into the embedded store (SQLite in a temporary directory) through the same
//!    service the CLI and the API use, from a generated CSV streamed row by row: rows per second
//!    and the process's peak memory.

use super::proc_stats::peak_rss_kib;
use anyhow::Result;
use clap::Args;
use outcall_api::CampaignService;
use outcall_pool::dedup::Dedup;
use outcall_pool::NumberVault;
use outcall_scheduler::Clock;
use outcall_store::sqlite::SqliteStore;
use outcall_store::Store;
use std::collections::HashSet;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ImportBenchArgs {
    /// Numbers for the in-memory pipeline.
    #[arg(long, default_value_t = 1_000_000)]
    pub pipeline: u64,
    /// Numbers imported into the embedded store.
    #[arg(long, default_value_t = 1_000_000)]
    pub import: u64,
}

/// The i-th generated number: mobiles of several segments, every tenth one repeated.
fn number(i: u64) -> String {
    let j = if i % 10 == 9 { i - 9 } else { i };
    let seg = [138u64, 139, 150, 186, 177, 199][(j % 6) as usize];
    format!("{seg}{:08}", (j / 6) % 100_000_000)
}

/// A CSV of `n` generated numbers, produced while it is read.
struct GeneratedCsv {
    next: u64,
    n: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for GeneratedCsv {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.next == 0 {
                self.buf.extend_from_slice(b"number\n");
            }
            while self.buf.len() < 64 * 1024 && self.next < self.n {
                self.buf.extend_from_slice(number(self.next).as_bytes());
                self.buf.push(b'\n');
                self.next += 1;
            }
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let k = out.len().min(self.buf.len() - self.pos);
        out[..k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn pipeline(n: u64) -> Vec<(&'static str, f64)> {
    let vault = NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).expect("vault");
    let numbers: Vec<String> = (0..n).map(number).collect();
    let mut rows = Vec::new();

    let t = Instant::now();
    let e164: Vec<String> = numbers
        .iter()
        .filter_map(|s| outcall_domain::number::normalize_e164(s, "86").ok())
        .collect();
    rows.push(("read E.164 (Chinese forms)", rate(n, t.elapsed())));

    let t = Instant::now();
    let valid = e164
        .iter()
        .filter(|s| outcall_pool::number::normalize(s, "ZZ").is_ok())
        .count();
    rows.push(("libphonenumber validation", rate(n, t.elapsed())));
    assert_eq!(valid as u64, n, "every generated number is valid");

    let t = Instant::now();
    let hashes: Vec<Vec<u8>> = e164.iter().map(|s| vault.blind_index(s)).collect();
    rows.push(("HMAC blind index", rate(n, t.elapsed())));

    let mut blacklist: HashSet<Vec<u8>> = HashSet::new();
    for h in hashes.iter().step_by(1000) {
        blacklist.insert(h.clone());
    }
    let prefixes = ["+86170", "+86171"];
    let t = Instant::now();
    let mut dedup = Dedup::new(n as usize, 0.01);
    let (mut kept, mut dup, mut blocked) = (0u64, 0u64, 0u64);
    for (h, e) in hashes.iter().zip(&e164) {
        if dedup.check_and_insert(h) {
            dup += 1;
        } else if blacklist.contains(h) || prefixes.iter().any(|p| e.starts_with(p)) {
            blocked += 1;
        } else {
            kept += 1;
        }
    }
    rows.push(("bloom dedup + blacklist check", rate(n, t.elapsed())));
    std::hint::black_box((kept, dup, blocked));

    let t = Instant::now();
    for s in &e164 {
        std::hint::black_box(vault.encrypt(s));
    }
    rows.push(("AES-256-GCM encryption", rate(n, t.elapsed())));
    rows
}

pub async fn run(a: ImportBenchArgs) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("outcall-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("outcall.db")).await?);
    let svc = CampaignService {
        store: store.clone(),
        vault: Arc::new(NumberVault::new(&[(1, [1; 32])], 1, [2; 32])?),
        scheduler: None,
        clock: Clock::system(),
        default_country_code: "86".into(),
        number_status_ttl: Duration::from_secs(90 * 86400),
        attributor: Arc::new(outcall_pool::number::Attributor::new(None)),
        jobs: Default::default(),
        dedup_false_positive_rate: 0.01,
        webhooks: None,
    };
    let spec = serde_json::from_value(serde_json::json!({ "name": "bench", "trunks": ["t"] }))?;
    let c = svc.create_campaign(spec).await?;
    let rss0 = peak_rss_kib();
    let t = Instant::now();
    let csv = GeneratedCsv {
        next: 0,
        n: a.import,
        buf: Vec::new(),
        pos: 0,
    };
    let report = svc
        .import_csv(c.id, std::io::BufReader::new(csv), "number")
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let db_mib = std::fs::metadata(dir.join("outcall.db"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0);
    println!("| import into SQLite ({} rows) | value |", a.import);
    println!("|---|---|");
    println!(
        "| added / duplicates / invalid | {} / {} / {} |",
        report.added, report.duplicates, report.invalid
    );
    println!("| seconds | {secs:.1} |");
    println!("| rows/s | {:.0} |", a.import as f64 / secs);
    println!(
        "| peak RSS MiB (before → after) | {:.0} → {:.0} |",
        rss0 as f64 / 1024.0,
        peak_rss_kib() as f64 / 1024.0
    );
    println!(
        "| dedup filter MiB | {:.1} |",
        report.dedup_filter_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("| database MiB | {db_mib:.0} |");
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    let n = a.pipeline;
    let rows = tokio::task::spawn_blocking(move || pipeline(n)).await?;
    println!("| in-memory stage, one core ({n} numbers) | numbers/s |");
    println!("|---|---|");
    let mut total_secs = 0.0;
    for (name, r) in &rows {
        println!("| {name} | {r:.0} |");
        total_secs += 1.0 / r;
    }
    println!("| all stages together | {:.0} |", 1.0 / total_secs);

    Ok(ExitCode::SUCCESS)
}
