//! `outcall serve`: the whole product in one process (embedded store, queue and bus).

use super::app::{terminated, App, AppConfig};
use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::info;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (`outcall.toml`); every setting has a default.
    #[arg(long, short = 'c', env = "OUTCALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP API address (overrides the config).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory (overrides the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// On a node without users: the first admin's name (default `admin`).
    #[arg(long, env = "OUTCALL_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// On a node without users: a file holding the first admin's password (else
    /// `OUTCALL_ADMIN_PASSWORD`, else a random one written to `<data_dir>/admin-password`).
    #[arg(long, env = "OUTCALL_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let mut cfg = AppConfig::load(a.config.as_deref())?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    cfg.bootstrap_admin = (a.admin_user, a.admin_password_file);
    let app = std::sync::Arc::new(App::start(&cfg, &[]).await?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    info!(%addr, sip = %app.ua.local_addr(), "outcall serving");
    eprintln!(
        "outcall: api on {scheme}://{addr} (docs at /docs), sip on {}",
        app.ua.local_addr()
    );
    let router = outcall_api::http::router_with(
        app.service.clone(),
        app.access.clone(),
        app.observability.clone(),
    )
    .into_make_service_with_connect_info::<SocketAddr>();
    // On SIGTERM: /readyz turns `draining`, the scheduler stops dialing and lets calls in
    // flight finish while the API still answers (status, metrics); then the API stops.
    let drain_delay = std::time::Duration::from_secs(cfg.drain_delay_secs);
    let draining = app.clone();
    let stop = async move {
        terminated().await;
        info!("shutting down");
        draining.health.drain();
        tokio::time::sleep(drain_delay).await;
        draining.shutdown().await;
    };
    match &cfg.tls {
        Some(t) => {
            let config =
                outcall_api::tls::server_config(&t.cert, &t.key).map_err(anyhow::Error::msg)?;
            let tls = outcall_api::tls::TlsListener::new(listener, config)?;
            axum::serve(tls.tap_io(|_| ()), router)
                .with_graceful_shutdown(stop)
                .await?
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await?
        }
    }
    eprintln!("outcall: stopped");
    Ok(ExitCode::SUCCESS)
}
