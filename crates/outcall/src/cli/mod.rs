//! Command-line interface: argument types and dispatch.

mod app;
mod bench;
mod bench_import;
#[cfg(all(feature = "nats", feature = "rabbitmq"))]
mod bench_ingest;
mod bench_scheduler;
mod cached_store;
mod call;
mod campaign;
mod client;
pub mod dist;
mod node;
pub mod proc_stats;
#[cfg(feature = "s3")]
mod recordings;
mod serve;
pub mod telemetry;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use outcall_domain::classify::ClassificationConfig;
use outcall_telephony::{SipTransport, TrunkConfig, UaConfig};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "outcall",
    version,
    about = "Outcall: outbound calling over SIP trunks"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing env-filter syntax), e.g. `info,rsipstack=warn`.
    #[arg(long, env = "OUTCALL_LOG", default_value = "warn", global = true)]
    pub log_filter: String,
    /// Log as JSON lines (each line carries its span's fields, such as `trace_id`).
    #[arg(long, env = "OUTCALL_LOG_JSON", global = true)]
    pub log_json: bool,
    /// Export traces over OTLP/HTTP to this collector (`http://host:4318`); off by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: `http/protobuf` (default) or `http/json`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", global = true)]
    pub otlp_protocol: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Place one call and print its transitions and CDR as JSON lines.
    Call(call::CallArgs),
    /// Run everything in one process: HTTP API, scheduler, SIP dialer, on embedded SQLite.
    Serve(serve::ServeArgs),
    /// Campaigns: `run` one on embedded defaults, or manage them on a server through its API.
    #[command(subcommand)]
    Campaign(campaign::CampaignCommand),
    /// Log in to a server's API and save the session (`$OUTCALL_SESSION` or
    /// `~/.config/outcall/session.json`).
    Login(client::LoginArgs),
    /// Delete the saved session.
    Logout,
    /// Stream a contacts file (CSV, JSON Lines, JSON) into a campaign on a server.
    Import(client::ImportArgs),
    /// Call detail records on a server.
    #[command(subcommand)]
    Cdr(client::CdrCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check a node's config file without starting anything: every key known, every value
    /// valid; prints the roles it would run.
    CheckConfig(serve::CheckConfigArgs),
}

pub fn init_logging(args: &LogArgs) -> Result<(), String> {
    telemetry::init_logging(&telemetry::LogSetup {
        filter: args.log_filter.clone(),
        json: args.log_json,
        otlp_endpoint: args.otlp_endpoint.clone().filter(|e| !e.is_empty()),
        otlp_protocol: args.otlp_protocol.clone(),
    })
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Call(a) => call::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Campaign(c) => campaign::run(c).await,
        Command::Bench(b) => bench::run(b).await,
        Command::CheckConfig(a) => serve::check_config(a),
        Command::Login(a) => client::login(a).await,
        Command::Logout => client::logout().await,
        Command::Import(a) => client::import(a).await,
        Command::Cdr(c) => client::cdr(c).await,
    }
}

/// Options shared by every command that dials: which trunk, which local address.
#[derive(Debug, Clone, Args)]
pub struct TrunkArgs {
    /// Trunk as `host:port` (or `host`, port 5060).
    #[arg(long)]
    pub trunk: Option<String>,
    /// TOML config with `[ua]`, `[trunk]` and `[classification]` tables.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// SIP transport to the trunk.
    #[arg(long, default_value = "udp")]
    pub transport: SipTransport,
    /// Outbound proxy `host:port`.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Digest username.
    #[arg(long)]
    pub username: Option<String>,
    /// Digest password (prefer --password-env).
    #[arg(long, env = "OUTCALL_TRUNK_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Caller ID(s) to present, comma separated (rotated).
    #[arg(long, value_delimiter = ',')]
    pub caller_id: Vec<String>,
    /// Send P-Asserted-Identity with the caller ID.
    #[arg(long)]
    pub pai: bool,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Local address for SIP and RTP.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Local SIP port (0 = any).
    #[arg(long, default_value_t = 0)]
    pub sip_port: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    ua: Option<UaConfig>,
    #[serde(default)]
    trunk: Option<TrunkConfig>,
    #[serde(default)]
    classification: ClassificationConfig,
}

pub struct Resolved {
    pub ua: UaConfig,
    pub trunk: TrunkConfig,
    pub classification: ClassificationConfig,
}

impl TrunkArgs {
    pub fn resolve(&self) -> Result<Resolved> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let mut ua = file.ua.unwrap_or_default();
        if self.config.is_none() || self.bind.to_string() != "127.0.0.1" {
            ua.bind_ip = self.bind;
        }
        if self.sip_port != 0 {
            ua.sip_port = self.sip_port;
        }
        let mut trunk = match (&self.trunk, file.trunk) {
            (Some(t), _) => {
                let (host, port) = match t.rsplit_once(':') {
                    Some((h, p)) => (
                        h.to_string(),
                        p.parse::<u16>()
                            .with_context(|| format!("bad trunk port in `{t}`"))?,
                    ),
                    None => (t.clone(), 5060),
                };
                TrunkConfig::new("cli", &host, port, self.transport)
            }
            (None, Some(t)) => t,
            (None, None) => bail!("no trunk: give --trunk host:port or a config with [trunk]"),
        };
        if self.trunk.is_some() || self.transport != SipTransport::Udp {
            trunk.transport = self.transport;
        }
        if let Some(p) = &self.proxy {
            trunk.outbound_proxy = Some(p.clone());
        }
        if let Some(u) = &self.username {
            trunk.username = Some(u.clone());
        }
        if let Some(p) = &self.password {
            trunk.password = Some(p.clone());
        }
        if !self.caller_id.is_empty() {
            trunk.caller_ids = self.caller_id.clone();
        }
        trunk.p_asserted_identity |= self.pai;
        for h in &self.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("header `{h}` is not `Name: value`"))?;
            trunk
                .headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
        trunk.resolve_password().map_err(anyhow::Error::msg)?;
        Ok(Resolved {
            ua,
            trunk,
            classification: file.classification,
        })
    }
}
