//! `outcall call`: one call, its transitions and CDR as JSON lines on stdout.

use super::TrunkArgs;
use anyhow::{Context, Result};
use clap::Args;
use outcall_domain::dtmf::DtmfRules;
use outcall_domain::Classifier;
use outcall_telephony::engine::AfterPrompt;
use outcall_telephony::{CallEngine, CallRequest, Prompt, SipUserAgent};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub trunk: TrunkArgs,
    /// Number to dial.
    #[arg(long)]
    pub to: String,
    /// WAV prompt to play when answered (any PCM WAV; converted to 8 kHz G.711).
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Seconds of ringing before CANCEL.
    #[arg(long, default_value_t = 30.0)]
    pub ring_timeout: f64,
    /// Seconds of talk time before we hang up.
    #[arg(long, default_value_t = 120.0)]
    pub max_duration: f64,
    /// Stay on the line after the prompt (until BYE, DTMF rule or max duration).
    #[arg(long)]
    pub stay: bool,
    /// DTMF rules, e.g. `1=confirm,2=repeat,#=hangup`.
    #[arg(long, default_value = "")]
    pub dtmf: String,
    /// Record both directions to this WAV file (left: sent, right: received).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Signalling only: no SDP, no RTP.
    #[arg(long)]
    pub no_media: bool,
    /// Attempt id for the CDR (default: random).
    #[arg(long)]
    pub attempt_id: Option<String>,
}

pub async fn run(a: CallArgs) -> Result<ExitCode> {
    let r = a.trunk.resolve()?;
    let prompt = match &a.prompt {
        Some(p) => Some(Prompt::load(p).with_context(|| format!("cannot load {}", p.display()))?),
        None => None,
    };
    let dtmf = DtmfRules::parse(&a.dtmf).map_err(anyhow::Error::msg)?;
    let ua = SipUserAgent::start(r.ua, Classifier::from_config(&r.classification)).await?;
    let attempt = a
        .attempt_id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", rand_id()));
    let mut req = CallRequest::new(attempt, a.to.clone(), Arc::new(r.trunk));
    req.prompt = prompt;
    req.after_prompt = if a.stay {
        AfterPrompt::Stay
    } else {
        AfterPrompt::Hangup
    };
    req.dtmf = dtmf;
    req.ring_timeout = secs(a.ring_timeout, "--ring-timeout")?;
    req.max_duration = secs(a.max_duration, "--max-duration")?;
    req.record_to = a.record.clone();
    req.media = !a.no_media;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(u) = rx.recv().await {
            if let Ok(line) = serde_json::to_string(&u) {
                println!("{line}");
            }
        }
    });
    let cancel = req.cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let report = ua.place_call(req, Some(tx)).await;
    ctrl_c.abort();
    let _ = printer.await;
    #[derive(serde::Serialize)]
    struct CdrLine<'a> {
        r#type: &'static str,
        cdr: &'a outcall_domain::Cdr,
    }
    println!(
        "{}",
        serde_json::to_string(&CdrLine {
            r#type: "cdr",
            cdr: &report.cdr
        })?
    );
    let c = &report.cdr;
    let opt = |v: Option<u16>| v.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    eprintln!(
        "outcome={} state={} sip={} q850={} billsec={} dtmf={:?}",
        c.outcome,
        c.final_state,
        opt(c.sip_status),
        opt(c.q850_cause),
        c.billsec,
        c.dtmf
    );
    ua.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn secs(v: f64, name: &str) -> Result<Duration> {
    if !(0.0..=86400.0).contains(&v) {
        anyhow::bail!("{name} must be between 0 and 86400 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(32)
}
