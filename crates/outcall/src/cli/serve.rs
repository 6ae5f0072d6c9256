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
    /// Run only these roles (repeat or separate with commas; default: all, in one process).
    #[arg(long = "role", value_delimiter = ',')]
    pub roles: Vec<super::dist::Role>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file to check.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The roles it will run with (as `serve --role`), if not those of the file.
    #[arg(long = "role", value_delimiter = ',')]
    pub roles: Vec<super::dist::Role>,
}

/// `outcall check-config`: parses the file as `serve` would and checks the settings that need
/// no network: degradation, monitor rules, bus kind and URL, roles' requirements.
pub fn check_config(a: CheckConfigArgs) -> Result<ExitCode> {
    use super::dist::{BusKind, Role};
    let mut cfg = AppConfig::load(Some(&a.config))?;
    if !a.roles.is_empty() {
        cfg.active_roles = super::dist::Roles::of(&a.roles);
    }
    cfg.degradation
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid [degradation]: {e}"))?;
    let monitor = match &cfg.monitor_file {
        Some(f) => outcall_monitor::MonitorConfig::from_file(f)
            .with_context(|| format!("invalid monitor file {}", f.display()))?,
        None => cfg.monitor.clone(),
    };
    monitor
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid [monitor]: {e}"))?;
    let roles = &cfg.active_roles;
    let distributed = !roles.is_all();
    let needs_redis = distributed && (roles.has(Role::Scheduler) || roles.has(Role::Dialer));
    if needs_redis
        && cfg.redis.url.is_none()
        && cfg.redis.url_file.is_none()
        && std::env::var_os("OUTCALL_REDIS_URL").is_none()
    {
        anyhow::bail!(
            "roles {:?} need [redis] url, url_file or OUTCALL_REDIS_URL",
            roles.names()
        );
    }
    let bus_roles = distributed && (roles.has(Role::Dialer) || roles.has(Role::Ingest));
    if bus_roles
        && cfg.bus.kind != BusKind::Local
        && cfg.bus.url.is_none()
        && cfg.bus.url_file.is_none()
        && std::env::var_os("OUTCALL_BUS_URL").is_none()
    {
        anyhow::bail!(
            "[bus] kind = {:?} needs url, url_file or OUTCALL_BUS_URL",
            cfg.bus.kind
        );
    }
    println!(
        "{}: ok; node {}, roles {}",
        a.config.display(),
        cfg.ua.node,
        roles.names().join(", ")
    );
    Ok(ExitCode::SUCCESS)
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
    if !a.roles.is_empty() {
        cfg.active_roles = super::dist::Roles::of(&a.roles);
    }
    let app = std::sync::Arc::new(App::start(&cfg, &[]).await?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let sip = app
        .ua
        .as_ref()
        .map(|ua| ua.local_addr().to_string())
        .unwrap_or_else(|| "-".into());
    info!(%addr, %sip, roles = ?app.roles.names(), "outcall serving");
    if app.roles.is_all() {
        eprintln!("outcall: api on {scheme}://{addr} (docs at /docs), sip on {sip}");
    } else {
        eprintln!(
            "outcall: node {} ({}) on {scheme}://{addr}, sip on {sip}",
            cfg.ua.node,
            app.roles.names().join(", ")
        );
    }
    let mut router = outcall_api::http::router_with(
        app.service.clone(),
        app.access.clone(),
        app.observability.clone(),
    );
    if !app.roles.has(super::dist::Role::Api) {
        // A node without the api role answers health and metrics only.
        router = router.layer(axum::middleware::from_fn(ops_only));
    }
    let router = router.into_make_service_with_connect_info::<SocketAddr>();
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

/// Lets through `/healthz`, `/readyz` and `/metrics`; anything else is the API, which this
/// node does not serve.
async fn ops_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match req.uri().path() {
        "/healthz" | "/readyz" | "/metrics" => next.run(req).await,
        path => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": {
                    "code": "not_found",
                    "message": format!("{path}: this node does not run the api role"),
                }
            })),
        )
            .into_response(),
    }
}
