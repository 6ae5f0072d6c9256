//! `outcall campaign run`: one campaign from a file to its end, on embedded defaults; the
//! other verbs manage campaigns on a server through its API (`super::client`).

use super::app::{terminated, App, AppConfig};
use super::client;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use outcall_domain::campaign::{CampaignSpec, CampaignStatus, LifecycleAction};
use outcall_telephony::TrunkConfig;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign from a TOML file, import its contacts, run it to completion, report.
    Run(RunArgs),
    /// Create a campaign (draft) on a server from a JSON or TOML spec.
    Create(client::CreateArgs),
    /// List a server's campaigns.
    List(client::ListArgs),
    /// Show one campaign as JSON.
    Get(client::IdArgs),
    /// Start a draft campaign.
    Start(client::IdArgs),
    /// Pause a running campaign (calls in progress finish).
    Pause(client::IdArgs),
    /// Resume a paused campaign.
    Resume(client::IdArgs),
    /// Cancel a campaign: nothing more is dialed.
    Cancel(client::IdArgs),
    /// A campaign's status, contacts by state, outcomes, active calls and CPS.
    Stats(client::IdArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Campaign file: a `[campaign]` table and optional `[[trunks]]`.
    #[arg(long)]
    pub file: PathBuf,
    /// Contacts: CSV with a header (`.csv`), a JSON array (`.json`), JSON Lines (`.jsonl`) or
    /// one number per line.
    #[arg(long)]
    pub contacts: PathBuf,
    /// CSV column holding the number.
    #[arg(long, default_value = "number")]
    pub number_column: String,
    /// Node config (`outcall.toml`).
    #[arg(long, short = 'c', env = "OUTCALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also serve the HTTP API on this address while the campaign runs.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    #[serde(default)]
    trunks: Vec<TrunkConfig>,
    campaign: CampaignSpec,
}

pub async fn run(cmd: CampaignCommand) -> Result<ExitCode> {
    match cmd {
        CampaignCommand::Run(a) => run_campaign(a).await,
        CampaignCommand::Create(a) => client::create(a).await,
        CampaignCommand::List(a) => client::list(a).await,
        CampaignCommand::Get(a) => client::get(a).await,
        CampaignCommand::Start(a) => client::act(a, client::Action::Start).await,
        CampaignCommand::Pause(a) => client::act(a, client::Action::Pause).await,
        CampaignCommand::Resume(a) => client::act(a, client::Action::Resume).await,
        CampaignCommand::Cancel(a) => client::act(a, client::Action::Cancel).await,
        CampaignCommand::Stats(a) => client::stats(a).await,
    }
}

async fn run_campaign(a: RunArgs) -> Result<ExitCode> {
    let mut cfg = AppConfig::load(a.config.as_deref())?;
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read campaign file {}", a.file.display()))?;
    let file: CampaignFile = toml::from_str(&text)
        .with_context(|| format!("invalid campaign file {}", a.file.display()))?;
    let contacts = std::fs::File::open(&a.contacts)
        .with_context(|| format!("cannot open contacts {}", a.contacts.display()))?;
    let app = App::start(&cfg, &file.trunks).await?;
    let svc = app.service.clone();
    let campaign = svc.create_campaign(file.campaign).await?;
    let id = campaign.id;
    let ext = a
        .contacts
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows_read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let import_bar = ProgressBar::new_spinner();
    import_bar.set_style(
        ProgressStyle::with_template("{spinner} importing {pos} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let ticker = {
        let (bar, rows) = (import_bar.clone(), rows_read.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(rows.load(std::sync::atomic::Ordering::Relaxed));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let progress = Some(&*rows_read);
    let report = match ext.as_str() {
        "json" => {
            let body = std::fs::read(&a.contacts)?;
            svc.import_json(id, &body).await?
        }
        "jsonl" | "ndjson" => {
            svc.import_jsonl(id, std::io::BufReader::new(contacts), progress)
                .await?
        }
        "csv" => {
            let reader = std::io::BufReader::new(contacts);
            svc.import_csv_tracked(id, reader, &a.number_column, progress)
                .await?
        }
        _ => {
            // One number per line: a CSV without header.
            let body = std::fs::read_to_string(&a.contacts)?;
            let with_header = format!("number\n{body}");
            svc.import_csv_tracked(id, with_header.as_bytes(), "number", progress)
                .await?
        }
    };
    ticker.abort();
    import_bar.finish_and_clear();
    eprintln!(
        "campaign {id} `{}`: {} rows, {} added, {} duplicates, {} invalid",
        campaign.spec.name, report.rows, report.added, report.duplicates, report.invalid
    );
    for e in report.errors.iter().take(20) {
        eprintln!("  line {}: {}", e.line, e.reason);
    }
    if report.added == 0 {
        bail!("no contact to call");
    }
    if let Some(addr) = a.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let router = outcall_api::http::router_with(
            svc.clone(),
            app.access.clone(),
            app.observability.clone(),
        )
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
        eprintln!("api on http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    svc.act(id, LifecycleAction::Start).await?;
    let started = Instant::now();
    let bar = ProgressBar::new(report.added);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} done · {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let interrupted = loop {
        let s = svc.stats(id).await?;
        bar.set_position(s.counts.contacts.get("done").copied().unwrap_or(0));
        bar.set_message(format!(
            "{} calls up, {:.1} cps, {} attempts",
            s.live.active, s.live.cps, s.counts.attempts
        ));
        if s.campaign.status == CampaignStatus::Completed
            || s.campaign.status == CampaignStatus::Canceled
        {
            break false;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = terminated() => break true,
        }
    };
    bar.finish_and_clear();
    if interrupted {
        eprintln!("interrupted: finishing calls in flight; `outcall serve --data-dir {}` resumes the campaign", cfg.data_dir.display());
        app.shutdown().await;
        return Ok(ExitCode::from(130));
    }
    app.shutdown().await;
    let s = svc.stats(id).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "campaign {id} `{}` {} in {:.1} s",
        s.campaign.spec.name, s.campaign.status, secs
    );
    println!();
    println!("| final outcome | contacts |");
    println!("|---|---|");
    for (o, n) in &s.counts.final_outcomes {
        println!("| {o} | {n} |");
    }
    println!();
    println!("| attempt outcome | attempts |");
    println!("|---|---|");
    for (o, n) in &s.counts.attempt_outcomes {
        println!("| {o} | {n} |");
    }
    println!();
    println!(
        "{} contacts, {} attempts, {:.1} attempts/s; CDRs: `outcall serve --data-dir {}`, then GET /v1/campaigns/{id}/attempts",
        report.added,
        s.counts.attempts,
        s.counts.attempts as f64 / secs.max(0.001),
        cfg.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
