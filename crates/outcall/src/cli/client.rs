//! The command-line client of the HTTP API: `login`/`logout`, the remote `campaign` verbs,
//! `import` and `cdr export`, so operators can script without curl.
//!
//! The server and the credential come from `--url`/`--token`, else `OUTCALL_URL` /
//! `OUTCALL_TOKEN` (a session token or an API key `oc_…`), else the session saved by
//! `outcall login` (`$OUTCALL_SESSION` or `~/.config/outcall/session.json`, mode 0600).
//! API errors print `error: <code>: <message>` and exit 2 for a 4xx, 1 otherwise.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{header, Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Where the server is and who the caller is; every client command takes these.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// API base URL, e.g. `http://127.0.0.1:8080` (default: the saved session's).
    #[arg(long, env = "OUTCALL_URL")]
    pub url: Option<String>,
    /// Session token or API key (`oc_…`) (default: the saved session's).
    #[arg(long, env = "OUTCALL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra trusted root certificate (PEM), for an HTTPS server with a private CA.
    #[arg(long, env = "OUTCALL_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// API base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "OUTCALL_URL")]
    pub url: String,
    #[arg(long)]
    pub username: String,
    /// File holding the password (else `OUTCALL_PASSWORD`, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Extra trusted root certificate (PEM), for an HTTPS server with a private CA.
    #[arg(long, env = "OUTCALL_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Campaign spec: JSON, or TOML when the name ends in `.toml` (the spec at the top level
    /// or as a `[campaign]` table, as for `campaign run`).
    #[arg(long)]
    pub file: PathBuf,
    /// Sent as `Idempotency-Key`: a repeat with the same key creates nothing new.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Campaign id.
    pub id: i64,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Csv,
    Jsonl,
    Json,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Campaign id.
    pub id: i64,
    /// Contacts file, streamed as it is read (never loaded whole).
    pub file: PathBuf,
    /// CSV column holding the number (the server's default: `number`).
    #[arg(long)]
    pub number_column: Option<String>,
    /// File format (default: from the extension: .csv, .jsonl/.ndjson, .json).
    #[arg(long)]
    pub format: Option<ImportFormat>,
    /// Print the API's JSON report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum CdrCommand {
    /// Write a campaign's CDRs as CSV (with a header row) to a file or stdout.
    Export(CdrExportArgs),
}

#[derive(Debug, Args)]
pub struct CdrExportArgs {
    /// Campaign id.
    #[arg(long)]
    pub campaign: i64,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Only calls at or after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
    /// Only calls before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<String>,
    /// Only calls with this outcome (`answered_human`, `busy`, …).
    #[arg(long)]
    pub outcome: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// A lifecycle verb.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: each prints its own error and picks the exit status.

pub async fn login(a: LoginArgs) -> Result<ExitCode> {
    Ok(finish(do_login(a).await))
}

pub async fn logout() -> Result<ExitCode> {
    Ok(finish(do_logout()))
}

pub async fn create(a: CreateArgs) -> Result<ExitCode> {
    Ok(finish(do_create(a).await))
}

pub async fn list(a: ListArgs) -> Result<ExitCode> {
    Ok(finish(do_list(a).await))
}

pub async fn get(a: IdArgs) -> Result<ExitCode> {
    Ok(finish(do_get(a).await))
}

pub async fn act(a: IdArgs, action: Action) -> Result<ExitCode> {
    Ok(finish(do_act(a, action).await))
}

pub async fn stats(a: IdArgs) -> Result<ExitCode> {
    Ok(finish(do_stats(a).await))
}

pub async fn import(a: ImportArgs) -> Result<ExitCode> {
    Ok(finish(do_import(a).await))
}

pub async fn cdr(c: CdrCommand) -> Result<ExitCode> {
    match c {
        CdrCommand::Export(a) => Ok(finish(do_cdr_export(a).await)),
    }
}

/// An error the API answered with.
#[derive(Debug)]
struct ApiFailure {
    status: StatusCode,
    code: String,
    message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Prints the error (if any) and maps it to the exit status: 2 for an API 4xx, 1 otherwise.
fn finish(r: Result<()>) -> ExitCode {
    let e = match r {
        Ok(()) => return ExitCode::SUCCESS,
        Err(e) => e,
    };
    match e.downcast_ref::<ApiFailure>() {
        Some(f) => {
            eprintln!("error: {f}");
            if f.status == StatusCode::UNAUTHORIZED && f.code != "invalid_credentials" {
                eprintln!(
                    "hint: run `outcall login --url URL --username NAME` (or set OUTCALL_TOKEN)"
                );
            }
            if f.status.is_client_error() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
        None => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session file

/// What `outcall login` keeps.
#[derive(Debug, Serialize, Deserialize)]
struct SavedSession {
    url: String,
    token: String,
    expires_at: String,
}

/// `$OUTCALL_SESSION`, else `~/.config/outcall/session.json`.
fn session_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OUTCALL_SESSION").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: give the session file with OUTCALL_SESSION")?;
    Ok(PathBuf::from(home).join(".config/outcall/session.json"))
}

fn load_session() -> Result<Option<SavedSession>> {
    let path = session_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let s = serde_json::from_str(&text).with_context(|| {
        format!(
            "the session file {} is unreadable: run `outcall login`",
            path.display()
        )
    })?;
    Ok(Some(s))
}

/// Writes the session readable by its owner only (0600), replacing any earlier one whole.
fn save_session(s: &SavedSession) -> Result<PathBuf> {
    let path = session_path()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    outcall_api::access::write_private(&tmp, &serde_json::to_string_pretty(s)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Client {
    http: reqwest::Client,
    /// Ends in `/`, so API paths join under it (a server behind a path prefix works).
    base: Url,
    token: Option<String>,
}

fn base_url(raw: &str) -> Result<Url> {
    let mut url = Url::parse(raw.trim())
        .with_context(|| format!("`{raw}` is not a URL (http://host:port)"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("`{raw}`: the API URL must be http:// or https://");
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("outcall/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = ca_cert {
        let pem = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", p.display()))?;
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", p.display());
        }
        // Added to the system's roots (`add_root_certificate` for each).
        b = b.tls_certs_merge(certs);
    }
    b.build().context("cannot set up the HTTP client")
}

impl Client {
    /// The server and credential: flags, then the environment (both through clap), then the
    /// saved session (its token only for its own server).
    fn new(a: &ServerArgs) -> Result<Client> {
        let saved = if a.url.is_none() || a.token.is_none() {
            load_session()?
        } else {
            None
        };
        let url = match (&a.url, &saved) {
            (Some(u), _) => base_url(u)?,
            (None, Some(s)) => base_url(&s.url)?,
            (None, None) => bail!(
                "no server: give --url, set OUTCALL_URL, or run `outcall login --url URL --username NAME`"
            ),
        };
        let token = match (&a.token, saved) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(s)) if base_url(&s.url).ok().as_ref() == Some(&url) => {
                if let Ok(t) = s.expires_at.parse::<jiff::Timestamp>() {
                    if t <= jiff::Timestamp::now() {
                        bail!("the saved session expired at {t}: run `outcall login` again");
                    }
                }
                Some(s.token)
            }
            _ => None,
        };
        Ok(Client {
            http: http_client(a.ca_cert.as_deref())?,
            base: url,
            token,
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("bad API path {path}"))
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut rb = self.request(method, self.url(path)?);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = send(rb).await?;
        read_json(resp).await
    }
}

/// Sends the request; a non-2xx answer becomes an [`ApiFailure`].
async fn send(rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
    let resp = rb.send().await.map_err(|e| {
        let url = e.url().map(|u| u.to_string()).unwrap_or_default();
        anyhow!("cannot reach {url}: {}", error_chain(&e))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let parsed: Option<(String, String)> =
        serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string(),
            ))
        });
    let (code, message) = parsed.unwrap_or_else(|| {
        let mut m: String = text.trim().chars().take(300).collect();
        if m.is_empty() {
            m = status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string();
        }
        (format!("http_{}", status.as_u16()), m)
    });
    Err(ApiFailure {
        status,
        code,
        message,
    }
    .into())
}

/// reqwest's error by its causes (the TLS or connection reason is in the sources; the top
/// message only repeats the URL).
fn error_chain(e: &dyn std::error::Error) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut s = first.to_string();
    let mut src = first.source();
    while let Some(c) = src {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        src = c.source();
    }
    s
}

async fn read_json(resp: reqwest::Response) -> Result<Value> {
    let text = resp
        .text()
        .await
        .map_err(|e| anyhow!("the answer broke off: {}", error_chain(&e)))?;
    serde_json::from_str(&text).with_context(|| {
        let head: String = text.chars().take(200).collect();
        format!("the server did not answer JSON: {head}")
    })
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// login / logout

async fn do_login(a: LoginArgs) -> Result<()> {
    let base = base_url(&a.url)?;
    let password = read_password(&a).await?;
    let http = http_client(a.ca_cert.as_deref())?;
    let url = base.join("v1/auth/login")?;
    let body = serde_json::json!({ "username": a.username, "password": password });
    let resp = send(http.post(url).json(&body)).await?;
    let v = read_json(resp).await?;
    let token = v["token"]
        .as_str()
        .context("the login answer has no token")?
        .to_string();
    let expires_at = v["expires_at"].as_str().unwrap_or_default().to_string();
    let path = save_session(&SavedSession {
        url: base.to_string().trim_end_matches('/').to_string(),
        token,
        expires_at: expires_at.clone(),
    })?;
    let role = v["user"]["role"].as_str().unwrap_or("?");
    eprintln!(
        "logged in to {} as {} ({role}) until {expires_at}; session in {}",
        base.as_str().trim_end_matches('/'),
        a.username,
        path.display()
    );
    Ok(())
}

/// `--password-file`, else `OUTCALL_PASSWORD`, else a prompt (no echo) on a terminal, else a
/// line of stdin.
async fn read_password(a: &LoginArgs) -> Result<String> {
    if let Some(p) = &a.password_file {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(p) = std::env::var("OUTCALL_PASSWORD") {
        return Ok(p);
    }
    let user = a.username.clone();
    let line = tokio::task::spawn_blocking(move || -> Result<String> {
        let tty = std::io::stdin().is_terminal();
        if tty {
            eprint!("password for {user}: ");
        }
        // Turn echo off for the prompt when `stty` can (best effort).
        let quiet = tty
            && std::process::Command::new("stty")
                .arg("-echo")
                .status()
                .is_ok_and(|s| s.success());
        let mut line = String::new();
        let r = std::io::stdin().read_line(&mut line);
        if quiet {
            let _ = std::process::Command::new("stty").arg("echo").status();
        }
        if tty {
            eprintln!();
        }
        r.context("cannot read the password")?;
        Ok(line)
    })
    .await??;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        bail!("no password: give --password-file, set OUTCALL_PASSWORD or type it");
    }
    Ok(p)
}

fn do_logout() -> Result<()> {
    let path = session_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("logged out: removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("not logged in (no {})", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Campaigns

/// The spec as JSON: a JSON file as it is, a TOML file converted (its `[campaign]` table when
/// it has one, as `campaign run` files do).
fn read_spec(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if !is_toml {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()));
    }
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    let spec = match table.remove("campaign") {
        Some(toml::Value::Table(t)) if !table.contains_key("name") => {
            if table.contains_key("trunks") {
                eprintln!(
                    "note: the file's [[trunks]] are not sent; add trunks with POST /v1/trunks"
                );
            }
            t
        }
        Some(other) => {
            table.insert("campaign".into(), other);
            table
        }
        None => table,
    };
    toml_to_json(toml::Value::Table(spec))
}

fn toml_to_json(v: toml::Value) -> Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .with_context(|| format!("{f} cannot be sent as JSON"))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(
            a.into_iter()
                .map(toml_to_json)
                .collect::<Result<Vec<_>>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| Ok((k, toml_to_json(v)?)))
                .collect::<Result<serde_json::Map<_, _>>>()?,
        ),
    })
}

fn campaign_line(c: &Value) -> String {
    format!(
        "campaign {} `{}`: {}",
        c["id"],
        c["name"].as_str().unwrap_or(""),
        c["status"].as_str().unwrap_or("?")
    )
}

async fn do_create(a: CreateArgs) -> Result<()> {
    let spec = read_spec(&a.file)?;
    let client = Client::new(&a.server)?;
    let mut rb = client
        .request(Method::POST, client.url("v1/campaigns")?)
        .json(&spec);
    if let Some(k) = &a.idempotency_key {
        rb = rb.header("idempotency-key", k);
    }
    let resp = send(rb).await?;
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let c = read_json(resp).await?;
    if a.json {
        return print_json(&c);
    }
    println!("{}", campaign_line(&c));
    if replayed {
        eprintln!("(created earlier with this idempotency key: nothing new was created)");
    }
    Ok(())
}

async fn do_list(a: ListArgs) -> Result<()> {
    let client = Client::new(&a.server)?;
    let v = client.json(Method::GET, "v1/campaigns", None).await?;
    if a.json {
        return print_json(&v);
    }
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut rows = vec![[
        "ID".to_string(),
        "STATUS".into(),
        "PRIORITY".into(),
        "MAX_CPS".into(),
        "CREATED".into(),
        "NAME".into(),
    ]];
    for c in list {
        rows.push([
            c["id"].to_string(),
            c["status"].as_str().unwrap_or("?").into(),
            c["priority"].to_string(),
            c["max_cps"].to_string(),
            c["created_at"].as_str().unwrap_or("").into(),
            c["name"].as_str().unwrap_or("").into(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// Left-aligned columns, two spaces apart (the last column unpadded).
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut width = [0usize; N];
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

async fn do_get(a: IdArgs) -> Result<()> {
    let client = Client::new(&a.server)?;
    let c = client
        .json(Method::GET, &format!("v1/campaigns/{}", a.id), None)
        .await?;
    print_json(&c)
}

async fn do_act(a: IdArgs, action: Action) -> Result<()> {
    let client = Client::new(&a.server)?;
    let path = format!("v1/campaigns/{}/{}", a.id, action.as_str());
    let c = client.json(Method::POST, &path, None).await?;
    if a.json {
        return print_json(&c);
    }
    println!("{}", campaign_line(&c));
    Ok(())
}

/// `k1 n1, k2 n2` from a JSON object of counts (`-` when empty).
fn counts(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

async fn do_stats(a: IdArgs) -> Result<()> {
    let client = Client::new(&a.server)?;
    let s = client
        .json(Method::GET, &format!("v1/campaigns/{}/stats", a.id), None)
        .await?;
    if a.json {
        return print_json(&s);
    }
    let c = &s["campaign"];
    let total: u64 = s["contacts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let live = &s["live"];
    let rows = [
        [
            "campaign".to_string(),
            format!("{} `{}`", c["id"], c["name"].as_str().unwrap_or("")),
        ],
        ["status".into(), c["status"].as_str().unwrap_or("?").into()],
        [
            "contacts".into(),
            format!("{total} ({})", counts(&s["contacts"])),
        ],
        ["final outcomes".into(), counts(&s["final_outcomes"])],
        [
            "attempts".into(),
            format!("{} ({})", s["attempts"], counts(&s["attempt_outcomes"])),
        ],
        ["active calls".into(), live["active"].to_string()],
        [
            "cps".into(),
            format!("{:.1}", live["cps"].as_f64().unwrap_or(0.0)),
        ],
        [
            "deferred".into(),
            format!(
                "{} by calling window, {} by frequency cap",
                live["deferred_window"], live["deferred_cap"]
            ),
        ],
    ];
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import

/// Counts the bytes read into the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            if n == 0 {
                self.bar.set_message("sent; importing on the server");
            }
            self.bar.inc(n as u64);
        }
        r
    }
}

fn import_format(a: &ImportArgs) -> Result<ImportFormat> {
    if let Some(f) = a.format {
        return Ok(f);
    }
    let ext = a
        .file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(match ext.as_str() {
        "csv" => ImportFormat::Csv,
        "jsonl" | "ndjson" => ImportFormat::Jsonl,
        "json" => ImportFormat::Json,
        _ => bail!(
            "cannot tell the format of {} from its name: give --format csv|jsonl|json",
            a.file.display()
        ),
    })
}

async fn do_import(a: ImportArgs) -> Result<()> {
    let format = import_format(&a)?;
    let client = Client::new(&a.server)?;
    let file = tokio::fs::File::open(&a.file)
        .await
        .with_context(|| format!("cannot open {}", a.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut url = client.url(&format!("v1/campaigns/{}/contacts", a.id))?;
    if let Some(c) = &a.number_column {
        url.query_pairs_mut().append_pair("number_column", c);
    }
    let content_type = match format {
        ImportFormat::Csv => "text/csv",
        ImportFormat::Jsonl => "application/x-ndjson",
        ImportFormat::Json => "application/json",
    };
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let reader = Counting {
        inner: file,
        bar: bar.clone(),
    };
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        64 << 10,
    ));
    let rb = client
        .request(Method::POST, url)
        .header(header::CONTENT_TYPE, content_type)
        .body(body);
    let result = match send(rb).await {
        Ok(resp) => read_json(resp).await,
        Err(e) => Err(e),
    };
    bar.finish_and_clear();
    let report = result?;
    if a.json {
        return print_json(&report);
    }
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    println!(
        "campaign {}: {} rows, {} added, {} duplicates, {} invalid, {} blacklisted, {} known empty, {} filtered",
        a.id,
        n("rows"),
        n("added"),
        n("duplicates"),
        n("invalid"),
        n("blacklisted"),
        n("known_empty"),
        n("filtered")
    );
    let errors = report["errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in errors {
        println!(
            "  line {}: {}",
            e["line"],
            e["reason"].as_str().unwrap_or("")
        );
    }
    let rejected = n("invalid");
    if rejected > errors.len() as u64 {
        println!(
            "  ({} more rejected rows not listed)",
            rejected - errors.len() as u64
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CDR export

async fn do_cdr_export(a: CdrExportArgs) -> Result<()> {
    let client = Client::new(&a.server)?;
    let mut url = client.url("v1/cdrs")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("campaign_id", &a.campaign.to_string());
        q.append_pair("format", "csv");
        for (k, v) in [
            ("since", &a.since),
            ("until", &a.until),
            ("outcome", &a.outcome),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let mut resp = send(client.request(Method::GET, url)).await?;
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("text/csv") {
        bail!("the server answered `{ct}`, not CSV: does it serve GET /v1/cdrs?format=csv?");
    }
    // To a `.part` file renamed when whole, so a broken transfer leaves no truncated export.
    let (mut out, part): (
        Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        Option<PathBuf>,
    ) = match &a.out {
        Some(p) => {
            let mut part = p.clone().into_os_string();
            part.push(".part");
            let part = PathBuf::from(part);
            let f = tokio::fs::File::create(&part)
                .await
                .with_context(|| format!("cannot create {}", part.display()))?;
            (Box::new(tokio::io::BufWriter::new(f)), Some(part))
        }
        None => (Box::new(tokio::io::stdout()), None),
    };
    let mut bytes = 0u64;
    let copied: Result<()> = async {
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| anyhow!("the export broke off: {}", error_chain(&e)))?
        {
            bytes += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(())
    }
    .await;
    drop(out);
    match (copied, part, &a.out) {
        (Ok(()), Some(part), Some(dest)) => {
            std::fs::rename(&part, dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            eprintln!("wrote {} ({bytes} bytes)", dest.display());
            Ok(())
        }
        (Ok(()), _, _) => Ok(()),
        (Err(e), part, _) => {
            if let Some(p) = part {
                let _ = std::fs::remove_file(p);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_end_in_a_slash_and_keep_their_prefix() {
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        let b = base_url("https://ops.example/outcall").unwrap();
        assert_eq!(
            b.join("v1/campaigns").unwrap().as_str(),
            "https://ops.example/outcall/v1/campaigns"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("127.0.0.1:8080").is_err());
    }

    #[test]
    fn toml_specs_become_json_with_or_without_a_campaign_table() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("a.toml");
        std::fs::write(
            &top,
            "name = \"x\"\ntrunks = [\"t\"]\nmax_cps = 2.5\nstart_at = 2026-12-01T01:00:00Z\n[retry]\nmax_attempts = 3\n",
        )
        .unwrap();
        let v = read_spec(&top).unwrap();
        assert_eq!(v["name"], "x");
        assert_eq!(v["max_cps"], 2.5);
        assert_eq!(v["retry"]["max_attempts"], 3);
        assert_eq!(v["start_at"], "2026-12-01T01:00:00Z");
        let nested = dir.path().join("b.toml");
        std::fs::write(
            &nested,
            "[[trunks]]\nname = \"t\"\nhost = \"h\"\n[campaign]\nname = \"y\"\ntrunks = [\"t\"]\n",
        )
        .unwrap();
        let v = read_spec(&nested).unwrap();
        assert_eq!(v, serde_json::json!({ "name": "y", "trunks": ["t"] }));
    }
}
