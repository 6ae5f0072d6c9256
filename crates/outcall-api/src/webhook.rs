//! Status webhooks, in the style of Twilio's status callbacks.
//!
//! A campaign with a `status_callback` gets a signed `POST` for each status event of each
//! attempt (`initiated`, `ringing`, `answered`, `completed`, or the ones it chose):
//!
//! 1. the scheduler emits [`StatusEvent`]s into the [`WebhookSink`], which looks up the
//!    campaign's callback (campaigns are cached for [`CAMPAIGN_CACHE_TTL`]) and writes the
//!    events it wants into the store's outbox, in order, and wakes the dispatcher;
//! 2. the [`WebhookDispatcher`] takes due deliveries from the outbox (leased, so a crash loses
//!    nothing; only the oldest pending delivery of an attempt, so an attempt's events arrive in
//!    order), POSTs them in parallel up to a bound, marks a 2xx `delivered` and reschedules
//!    anything else with exponential backoff until it gives up (`failed`).
//!
//! Delivery is at least once: an event is marked delivered only after a 2xx, so a receiver
//! may see an event twice (always with the same `Outcall-Event-Id`) and should deduplicate on
//! it. Each request carries `Outcall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`; [`verify_signature`] checks one.
//!
//! Payloads hold the masked number only (`+86138****5678`), like CDRs.

use crate::error::ApiError;
use crate::service::CampaignService;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use outcall_domain::campaign::{CampaignId, StatusCallback};
use outcall_domain::metrics as M;
use outcall_scheduler::{CallEventSink, StatusEvent};
use outcall_store::{
    NewWebhookEvent, Store, StoreError, WebhookDelivery, WebhookFailure, WebhookQuery,
    WebhookStatus,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.
pub const SIGNATURE_HEADER: &str = "Outcall-Signature";
/// The event's unique id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "Outcall-Event-Id";
/// `initiated`, `ringing`, `answered` or `completed`.
pub const EVENT_HEADER: &str = "Outcall-Event";
/// The environment variable holding the signing secret.
pub const SECRET_ENV: &str = "OUTCALL_WEBHOOK_SECRET";
/// How long the sink trusts a campaign's `status_callback` before reading it again.
pub const CAMPAIGN_CACHE_TTL: Duration = Duration::from_secs(5);

/// How deliveries are made.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The HMAC key: the secret's bytes as written (see [`load_or_create_secret`]).
    pub secret: Vec<u8>,
    /// Tries per event before it is given up (`failed`).
    pub max_tries: u32,
    /// Wait after the first failed try; doubled after each further one.
    pub initial_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// Per request: connect, send, and the receiver's answer.
    pub request_timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// A taken delivery is not taken again for this long (a crashed try is retried after it).
    pub lease: Duration,
    /// The longest the dispatcher sleeps without looking at the outbox (deliveries re-queued
    /// by another process, clock changes).
    pub idle_poll: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"[redacted]")
            .field("max_tries", &self.max_tries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("idle_poll", &self.idle_poll)
            .finish()
    }
}

impl WebhookConfig {
    /// The defaults: 15 tries, 1 s doubling up to 1 h, 10 s per request, 16 in flight.
    pub fn new(secret: impl Into<Vec<u8>>) -> WebhookConfig {
        WebhookConfig {
            secret: secret.into(),
            max_tries: 15,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            concurrency: 16,
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_secs(5),
        }
    }

    /// The wait after the `tries`-th failed try (1-based): `initial · 2^(tries-1)`, capped.
    pub fn backoff(&self, tries: u32) -> Duration {
        let factor = 2u32.saturating_pow(tries.saturating_sub(1));
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

// ---------------------------------------------------------------------------------------------
// Signing

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Outcall-Signature` value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex(&mac(secret, t, body).finalize().into_bytes())
    )
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is {0} s away from now (outside the tolerance)")]
    Stale(i64),
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks an `Outcall-Signature` header against the raw request body, the way a receiver
/// should: the HMAC-SHA256 of `"<t>.<body>"` with the shared secret must equal one of the `v1`
/// values (compared in constant time), and `t` must be within `tolerance` of `now` (replays of
/// an old request are refused).
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut t: Option<i64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => {
                t = Some(
                    v.parse()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                )
            }
            Some(("v1", v)) => {
                sigs.push(unhex(v).ok_or(SignatureError::Malformed("v1 is not hex"))?)
            }
            Some(_) => {} // other schemes: ignored
            None => return Err(SignatureError::Malformed("expected key=value pairs")),
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t"))?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed("no v1"));
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let skew = now.saturating_sub(t);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale(skew));
    }
    let expected = mac(secret, t, body);
    if sigs
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------------------------
// The secret

/// Why the signing secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{source_name}: the webhook secret must be at least 16 characters")]
    TooShort { source_name: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The webhook signing secret: `OUTCALL_WEBHOOK_SECRET` if set, else the contents of
/// `configured` (the `webhook_secret_file` setting) if given, else `default_path`
/// (`<data_dir>/keys/webhook.key`), created with 32 random bytes in hex and mode 0600 on first
/// use. Surrounding blanks are trimmed; the secret's bytes are the HMAC key.
pub fn load_or_create_secret(
    configured: Option<&FsPath>,
    default_path: &FsPath,
) -> Result<Vec<u8>, SecretError> {
    let checked = |s: &str, source_name: String| {
        let s = s.trim();
        if s.chars().count() < 16 {
            return Err(SecretError::TooShort { source_name });
        }
        Ok(s.as_bytes().to_vec())
    };
    if let Ok(s) = std::env::var(SECRET_ENV) {
        return checked(&s, SECRET_ENV.into());
    }
    let io = |p: &FsPath| {
        let path = p.display().to_string();
        move |source| SecretError::Io { path, source }
    };
    if let Some(p) = configured {
        let s = std::fs::read_to_string(p).map_err(io(p))?;
        return checked(&s, p.display().to_string());
    }
    match std::fs::read_to_string(default_path) {
        Ok(s) => checked(&s, default_path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex(&rand::random::<[u8; 32]>());
            if let Some(dir) = default_path.parent() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
            }
            outcall_pool::vault::write_private(default_path, &format!("{secret}\n"))
                .map_err(io(default_path))?;
            info!(path = %default_path.display(), "created a webhook signing secret");
            Ok(secret.into_bytes())
        }
        Err(e) => Err(io(default_path)(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// The sink: status events into the outbox

/// Wakes the dispatcher when there is something new to deliver. A wake while the dispatcher is
/// busy is kept for its next wait.
#[derive(Debug, Clone, Default)]
pub struct WebhookWaker(Arc<Notify>);

impl WebhookWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

enum SinkMsg {
    Event(Box<StatusEvent>),
    Flush(oneshot::Sender<()>),
}

/// A [`CallEventSink`] that writes the events a campaign's `status_callback` asks for into the
/// store's outbox. `emit` only queues (never blocks); one task writes, in emission order.
pub struct WebhookSink {
    tx: mpsc::UnboundedSender<SinkMsg>,
}

impl CallEventSink for WebhookSink {
    fn emit(&self, event: StatusEvent) {
        if self.tx.send(SinkMsg::Event(Box::new(event))).is_err() {
            warn!("webhook sink stopped: status event dropped");
        }
    }
}

impl WebhookSink {
    /// Whether the task that writes events to the outbox is still running (the in-process
    /// event bus of `serve`).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Starts the task that writes events to the outbox and wakes `waker`.
    pub fn start(store: Arc<dyn Store>, waker: WebhookWaker) -> Arc<WebhookSink> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(sink_task(store, waker, rx));
        Arc::new(WebhookSink { tx })
    }

    /// Waits until every event emitted so far is in the outbox (or was not wanted).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(SinkMsg::Flush(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn sink_task(
    store: Arc<dyn Store>,
    waker: WebhookWaker,
    mut rx: mpsc::UnboundedReceiver<SinkMsg>,
) {
    let mut cache: HashMap<CampaignId, (Instant, Option<StatusCallback>)> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        let event = match msg {
            SinkMsg::Event(e) => e,
            SinkMsg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let fresh = cache
            .get(&event.campaign_id)
            .is_some_and(|(at, _)| at.elapsed() < CAMPAIGN_CACHE_TTL);
        if !fresh {
            match store.get_campaign(event.campaign_id).await {
                Ok(c) => {
                    cache.insert(c.id, (Instant::now(), c.spec.status_callback));
                }
                Err(e) => {
                    warn!(campaign = event.campaign_id, error = %e, "cannot read campaign: status event dropped");
                    continue;
                }
            }
        }
        let Some((_, Some(cb))) = cache.get(&event.campaign_id) else {
            continue;
        };
        if !cb.wants(event.kind) {
            continue;
        }
        let row = outbox_row(&event, &cb.url);
        let mut delay = Duration::from_millis(50);
        for left in (0..6).rev() {
            match store.enqueue_webhook(&row).await {
                Ok(id) => {
                    debug!(delivery = id, event = %event.kind, attempt = event.attempt_id, "webhook queued");
                    waker.wake();
                    break;
                }
                Err(e) if left > 0 => {
                    warn!(error = %e, "cannot queue a webhook, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    metrics::counter!(M::BUS_ERRORS_TOTAL, "component" => "webhook").increment(1);
                    warn!(error = %e, event = %row.event_id, "cannot queue a webhook: dropped")
                }
            }
        }
        // Keep the cache small: forget campaigns not seen for a while.
        if cache.len() > 1024 {
            cache.retain(|_, (at, _)| at.elapsed() < CAMPAIGN_CACHE_TTL);
        }
    }
}

/// The outbox row of an event: a fresh event id and the JSON body receivers get.
fn outbox_row(e: &StatusEvent, url: &str) -> NewWebhookEvent {
    let event_id = format!("evt_{}", hex(&rand::random::<[u8; 16]>()));
    let payload = serde_json::json!({
        "event_id": event_id,
        "event": e.kind,
        "campaign_id": e.campaign_id,
        "contact_id": e.contact_id,
        "attempt_id": e.attempt_id,
        "seq": e.seq,
        "timestamp": e.at,
        "number": e.number,
        "outcome": e.outcome,
        "cause": e.cause,
        "cdr": e.cdr,
    });
    NewWebhookEvent {
        event_id,
        campaign_id: e.campaign_id,
        attempt_id: e.attempt_id,
        event: e.kind.as_str().to_string(),
        url: url.to_string(),
        payload,
        created_at: Timestamp::now(),
        next_attempt_at: Timestamp::now(),
    }
}

// ---------------------------------------------------------------------------------------------
// The dispatcher: outbox to HTTP

/// Delivers the outbox: see the module documentation.
pub struct WebhookDispatcher {
    store: Arc<dyn Store>,
    cfg: WebhookConfig,
    client: reqwest::Client,
    /// Requests in flight.
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running dispatcher.
pub struct DispatcherHandle {
    waker: WebhookWaker,
    store: Arc<dyn Store>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DispatcherHandle {
    /// Wakes the dispatcher (give it to the sink and the API).
    pub fn waker(&self) -> WebhookWaker {
        self.waker.clone()
    }

    /// Waits (up to `within`) until no request is in flight and no pending delivery is due
    /// before that time is up: what can go out soon has gone out. Deliveries waiting for a
    /// later retry are not waited for.
    pub async fn settle(&self, within: Duration) {
        let deadline = add(Timestamp::now(), within);
        let until = Instant::now() + within;
        // Quiet twice in a row: a delivery just taken is counted as busy by then.
        let mut quiet = 0;
        while Instant::now() < until && quiet < 2 {
            let idle = self.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
                && match self.store.next_webhook_due().await {
                    Ok(Some(due)) => due > deadline,
                    Ok(None) => true,
                    Err(e) => {
                        warn!(error = %e, "cannot read the webhook outbox");
                        return;
                    }
                };
            quiet = if idle { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes no new deliveries, lets requests in flight finish for up to `grace`, then stops.
    /// What is not delivered stays in the outbox for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl WebhookDispatcher {
    /// Starts delivering; `waker` is what the sink and the API wake it with.
    pub fn start(
        store: Arc<dyn Store>,
        cfg: WebhookConfig,
        waker: WebhookWaker,
    ) -> Result<DispatcherHandle, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Outcall-Webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .build()?;
        let (stop, stop_rx) = watch::channel(false);
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = Arc::new(WebhookDispatcher {
            store: store.clone(),
            cfg,
            client,
            busy: busy.clone(),
        });
        let task = tokio::spawn(d.run(waker.clone(), stop_rx));
        Ok(DispatcherHandle {
            waker,
            store,
            busy,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    async fn run(self: Arc<Self>, waker: WebhookWaker, mut stop: watch::Receiver<bool>) {
        let mut inflight: JoinSet<()> = JoinSet::new();
        let concurrency = self.cfg.concurrency.max(1);
        loop {
            if *stop.borrow() {
                break;
            }
            let mut wait = self.cfg.idle_poll;
            let free = concurrency.saturating_sub(inflight.len());
            if free > 0 {
                let now = Timestamp::now();
                let lease_until = add(now, self.cfg.lease);
                match self
                    .store
                    .take_due_webhooks(now, lease_until, free as u32)
                    .await
                {
                    Ok(list) => {
                        for d in list {
                            self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let me = self.clone();
                            inflight.spawn(async move {
                                me.clone().deliver(d).await;
                                me.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            });
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot read the webhook outbox"),
                }
                if inflight.len() < concurrency {
                    match self.store.next_webhook_due().await {
                        Ok(Some(due)) => {
                            let ahead = Timestamp::now().duration_until(due);
                            let ahead = Duration::try_from(ahead).unwrap_or(Duration::ZERO);
                            wait = wait.min(ahead.max(Duration::from_millis(5)));
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "cannot read the webhook outbox"),
                    }
                }
            }
            tokio::select! {
                _ = waker.0.notified() => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        // Requests in flight finish (each is bounded by the request timeout).
        while inflight.join_next().await.is_some() {}
    }

    async fn deliver(self: Arc<Self>, d: WebhookDelivery) {
        let body = match serde_json::to_vec(&d.payload) {
            Ok(b) => b,
            Err(e) => {
                warn!(delivery = d.id, error = %e, "webhook payload cannot be encoded");
                return;
            }
        };
        let t = Timestamp::now().as_second();
        let res = self
            .client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &d.event_id)
            .header(EVENT_HEADER, &d.event)
            .header(SIGNATURE_HEADER, sign(&self.cfg.secret, t, &body))
            .body(body)
            .send()
            .await;
        let now = Timestamp::now();
        let (error, http_status) = match res {
            Ok(r) if r.status().is_success() => {
                let code = r.status().as_u16();
                metrics::counter!(M::WEBHOOK_DELIVERIES_TOTAL, "result" => "delivered")
                    .increment(1);
                match self.store.webhook_delivered(d.id, now, code).await {
                    Ok(()) => debug!(delivery = d.id, status = code, "webhook delivered"),
                    // Left pending: the lease runs out and it is sent again (same event id).
                    Err(e) => warn!(delivery = d.id, error = %e, "cannot record a delivery"),
                }
                return;
            }
            Ok(r) => (format!("HTTP {}", r.status()), Some(r.status().as_u16())),
            Err(e) => (describe(&e), None),
        };
        let tries = d.tries + 1;
        let retry_at = (tries < self.cfg.max_tries).then(|| add(now, self.cfg.backoff(tries)));
        let failure = WebhookFailure {
            at: now,
            error,
            http_status,
            retry_at,
        };
        let result = if retry_at.is_some() {
            "retry"
        } else {
            "failed"
        };
        metrics::counter!(M::WEBHOOK_DELIVERIES_TOTAL, "result" => result).increment(1);
        match self.store.webhook_failed(d.id, &failure).await {
            Ok(WebhookStatus::Failed) => warn!(
                delivery = d.id,
                event = %d.event_id,
                tries,
                error = %failure.error,
                "webhook given up"
            ),
            Ok(_) => debug!(delivery = d.id, tries, error = %failure.error, "webhook try failed"),
            Err(e) => warn!(delivery = d.id, error = %e, "cannot record a webhook try"),
        }
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

/// A transport error in a few words, with its cause (`connection refused`).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

// ---------------------------------------------------------------------------------------------
// API: deliveries and re-queueing (routes are registered by the HTTP layer)

/// `GET /v1/webhooks/deliveries` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    pub campaign_id: Option<CampaignId>,
    /// Cursor: deliveries with an id above this one.
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

impl CampaignService {
    /// Deliveries in id order, by status and campaign, after a cursor.
    pub async fn webhook_deliveries(
        &self,
        status: Option<WebhookStatus>,
        campaign_id: Option<CampaignId>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, ApiError> {
        let query = WebhookQuery {
            status,
            campaign_id,
            after,
            limit: limit.clamp(1, 1000),
        };
        Ok(self.store.list_webhooks(&query).await?)
    }

    /// Puts a given-up delivery back in the queue, due now, and wakes the dispatcher.
    pub async fn retry_webhook_delivery(&self, id: i64) -> Result<WebhookDelivery, ApiError> {
        let d = self
            .store
            .requeue_webhook(id, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ApiError::Conflict(m),
                other => other.into(),
            })?;
        if let Some(w) = &self.webhooks {
            w.wake();
        }
        Ok(d)
    }
}

/// `GET /v1/webhooks/deliveries?status=&campaign_id=&after=&limit=`: deliveries with their
/// status, tries, last error and last HTTP status; `next_after` pages on.
pub async fn list_deliveries(
    State(s): State<Arc<CampaignService>>,
    q: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(WebhookStatus::parse(s).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "status `{s}` is not one of pending, delivered, failed"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = s
        .webhook_deliveries(status, q.campaign_id, q.after, limit)
        .await?;
    let next = if list.len() as u32 == limit {
        list.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Json(serde_json::json!({ "deliveries": list, "next_after": next })).into_response())
}

/// `POST /v1/webhooks/deliveries/{id}/retry`: a `failed` delivery back to `pending`, due now
/// (409 `conflict` for one that is not failed, 404 for none).
pub async fn retry_delivery(
    State(s): State<Arc<CampaignService>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::InvalidRequest(format!("`{raw}` is not a delivery id")))?;
    Ok(Json(s.retry_webhook_delivery(id).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_wait_and_is_capped() {
        let c = WebhookConfig::new(b"0123456789abcdef".to_vec());
        let waits: Vec<u64> = (1..=14).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(c.backoff(60), Duration::from_secs(3600));
    }

    #[test]
    fn the_signature_matches_python_and_openssl() {
        // hmac.new(b"whsec-test-0123456789", b'1700000000.{"event":"completed"}',
        //          hashlib.sha256).hexdigest(), and the README's openssl line.
        assert_eq!(
            sign(
                b"whsec-test-0123456789",
                1_700_000_000,
                br#"{"event":"completed"}"#
            ),
            "t=1700000000,v1=d415b913e551537bd72c6b6b8dc818b1c792a520e8e436e05966ca855315bce0"
        );
    }

    #[test]
    fn signatures_round_trip_and_refuse_tampering_and_replays() {
        let secret = b"whsec-test-0123456789";
        let body = br#"{"event":"completed"}"#;
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let h = sign(secret, t, body);
        assert!(h.starts_with(&format!("t={t},v1=")) && h.len() == format!("t={t},v1=").len() + 64);
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature(secret, &h, body, now, tol), Ok(()));
        assert_eq!(
            verify_signature(secret, &h, br#"{"event":"answered"}"#, now, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"another-secret-000", &h, body, now, tol),
            Err(SignatureError::Mismatch)
        );
        let later = now + Duration::from_secs(301);
        assert_eq!(
            verify_signature(secret, &h, body, later, tol),
            Err(SignatureError::Stale(301))
        );
        // Several v1 values (a secret being rotated): one match is enough.
        let other = sign(b"old-secret-0000000", t, body);
        let both = format!("{},{}", other, h.split_once(',').unwrap().1);
        assert_eq!(verify_signature(secret, &both, body, now, tol), Ok(()));
        for bad in ["", "t=x,v1=00", "t=1", "v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify_signature(secret, bad, body, now, tol),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/webhook.key");
        // Only when the environment does not set one (tests do not set it).
        if std::env::var(SECRET_ENV).is_ok() {
            return;
        }
        let a = load_or_create_secret(None, &path).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load_or_create_secret(None, &path).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let file = dir.path().join("configured.key");
        std::fs::write(&file, "  a-configured-secret-value \n").unwrap();
        assert_eq!(
            load_or_create_secret(Some(&file), &path).unwrap(),
            b"a-configured-secret-value"
        );
        std::fs::write(&file, "short").unwrap();
        assert!(load_or_create_secret(Some(&file), &path)
            .unwrap_err()
            .to_string()
            .contains("at least 16 characters"));
        assert!(load_or_create_secret(Some(&dir.path().join("missing")), &path).is_err());
    }
}
