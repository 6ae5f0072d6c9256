//! The dialer's side: places calls on its engine for remote schedulers.

use crate::pb::dialer_server::Dialer;
use crate::pb::{
    call_event, CallEvent, DialerStatus, HangupReply, HangupRequest, OriginateRequest,
    StatusRequest,
};
use futures_util::Stream;
use outcall_telephony::engine::AfterPrompt;
use outcall_telephony::{CallEngine, CallReport, CallRequest, CallUpdate, Prompt, TrunkConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// What the dialer knows of a call besides its report, for [`ReportHook`].
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub attempt_id: String,
    pub campaign_id: i64,
    pub trace_id: String,
    /// Where the recording was written on this node, if the call was recorded.
    pub recording: Option<PathBuf>,
}

/// Runs on the dialer when a call has ended, before its report goes back to the scheduler:
/// uploads the recording (and points the CDR at it), publishes the CDR to the bus.
#[async_trait::async_trait]
pub trait ReportHook: Send + Sync {
    async fn finished(&self, info: &CallInfo, report: &mut CallReport);
}

type Calls = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// The gRPC service of a dialer node.
#[derive(Clone)]
pub struct DialerService {
    engine: Arc<dyn CallEngine>,
    node: String,
    capacity: u32,
    calls: Calls,
    draining: Arc<AtomicBool>,
    hook: Option<Arc<dyn ReportHook>>,
    recordings_dir: Option<PathBuf>,
    prompts: Arc<Mutex<HashMap<String, Prompt>>>,
    stop: CancellationToken,
}

impl DialerService {
    /// A service placing calls on `engine`, at most `capacity` at a time.
    pub fn new(engine: Arc<dyn CallEngine>, node: impl Into<String>, capacity: u32) -> Self {
        DialerService {
            engine,
            node: node.into(),
            capacity,
            calls: Arc::default(),
            draining: Arc::default(),
            hook: None,
            recordings_dir: None,
            prompts: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs `hook` on every finished call.
    pub fn with_hook(mut self, hook: Arc<dyn ReportHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Records calls that ask for it under `<dir>/<campaign>/<attempt>.wav`.
    pub fn with_recordings(mut self, dir: PathBuf) -> Self {
        self.recordings_dir = Some(dir);
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> crate::pb::dialer_server::DialerServer<DialerService> {
        crate::pb::dialer_server::DialerServer::new(self)
    }

    /// Calls in progress.
    pub fn active(&self) -> u32 {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len() as u32
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Refuses new calls from now on (SIGTERM); calls in progress go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Hangs up every call in progress (end of the shutdown grace).
    pub fn hang_up_all(&self) {
        self.stop.cancel();
    }

    fn prompt(&self, path: &str) -> Result<Prompt, Status> {
        if let Some(p) = self
            .prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(p.clone());
        }
        let p = Prompt::load(std::path::Path::new(path)).map_err(|e| {
            Status::failed_precondition(format!("prompt {path} cannot be loaded: {e}"))
        })?;
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), p.clone());
        Ok(p)
    }

    fn request(&self, o: OriginateRequest) -> Result<(CallRequest, CallInfo), Status> {
        let trunk: TrunkConfig = serde_json::from_str(&o.trunk_json)
            .map_err(|e| Status::invalid_argument(format!("bad trunk_json: {e}")))?;
        let mut req = CallRequest::new(o.attempt_id.clone(), o.to, Arc::new(trunk));
        req.trace_id = o.trace_id.clone();
        req.caller_id = o.caller_id;
        if let Some(p) = o.prompt.as_deref() {
            req.prompt = Some(self.prompt(p)?);
        }
        req.after_prompt = if o.stay_after_prompt {
            AfterPrompt::Stay
        } else {
            AfterPrompt::Hangup
        };
        if !o.dtmf_json.is_empty() {
            req.dtmf = serde_json::from_str(&o.dtmf_json)
                .map_err(|e| Status::invalid_argument(format!("bad dtmf_json: {e}")))?;
        }
        req.ring_timeout = Duration::from_millis(o.ring_timeout_ms);
        req.max_duration = Duration::from_millis(o.max_duration_ms);
        req.media = o.media;
        req.headers = o.headers.into_iter().map(|h| (h.name, h.value)).collect();
        req.queued_at_ms = o.queued_at_ms;
        req.dispatched_at_ms = o.dispatched_at_ms;
        req.campaign_label = o.campaign_label;
        let mut recording = None;
        if o.record {
            if let Some(dir) = &self.recordings_dir {
                let d = dir.join(o.campaign_id.to_string());
                match std::fs::create_dir_all(&d) {
                    Ok(()) => recording = Some(d.join(format!("{}.wav", o.attempt_id))),
                    Err(e) => {
                        warn!(dir = %d.display(), error = %e, "cannot create the recordings directory: call not recorded")
                    }
                }
            }
        }
        req.record_to = recording.clone();
        let info = CallInfo {
            attempt_id: o.attempt_id,
            campaign_id: o.campaign_id,
            trace_id: o.trace_id,
            recording,
        };
        Ok((req, info))
    }
}

/// Removes a call from the table when its task ends, however it ends.
struct Registered {
    calls: Calls,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn event(e: call_event::Event) -> Result<CallEvent, Status> {
    Ok(CallEvent { event: Some(e) })
}

#[tonic::async_trait]
impl Dialer for DialerService {
    type OriginateStream = Pin<Box<dyn Stream<Item = Result<CallEvent, Status>> + Send>>;

    async fn originate(
        &self,
        request: Request<OriginateRequest>,
    ) -> Result<Response<Self::OriginateStream>, Status> {
        if self.is_draining() {
            return Err(Status::unavailable(format!(
                "dialer {} is draining",
                self.node
            )));
        }
        let (mut req, info) = self.request(request.into_inner())?;
        let cancel = self.stop.child_token();
        req.cancel = cancel.clone();
        let registered = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            if calls.len() as u32 >= self.capacity {
                return Err(Status::resource_exhausted(format!(
                    "dialer {} is full ({} calls)",
                    self.node, self.capacity
                )));
            }
            if calls.contains_key(&info.attempt_id) {
                return Err(Status::already_exists(format!(
                    "attempt {} is already in progress on {}",
                    info.attempt_id, self.node
                )));
            }
            calls.insert(info.attempt_id.clone(), cancel.clone());
            Registered {
                calls: self.calls.clone(),
                id: info.attempt_id.clone(),
            }
        };
        let (out, rx) = mpsc::channel::<Result<CallEvent, Status>>(64);
        let engine = self.engine.clone();
        let hook = self.hook.clone();
        tokio::spawn(async move {
            let _registered = registered;
            let (utx, mut urx) = mpsc::unbounded_channel::<CallUpdate>();
            let call = engine.place_call(req, Some(utx));
            tokio::pin!(call);
            let forward = |u: CallUpdate| match serde_json::to_string(&u) {
                Ok(j) => Some(event(call_event::Event::UpdateJson(j))),
                Err(e) => {
                    warn!(error = %e, "call update cannot be encoded");
                    None
                }
            };
            let mut report = loop {
                tokio::select! {
                    biased;
                    Some(u) = urx.recv() => {
                        if let Some(ev) = forward(u) {
                            if out.send(ev).await.is_err() {
                                cancel.cancel();
                            }
                        }
                    }
                    _ = out.closed(), if !cancel.is_cancelled() => {
                        // The scheduler went away: nobody would record this call's outcome.
                        debug!(attempt = %info.attempt_id, "caller gone: hanging up");
                        cancel.cancel();
                    }
                    r = &mut call => break r,
                }
            };
            while let Ok(u) = urx.try_recv() {
                if let Some(ev) = forward(u) {
                    let _ = out.send(ev).await;
                }
            }
            if let Some(h) = &hook {
                h.finished(&info, &mut report).await;
            }
            match serde_json::to_string(&report) {
                Ok(j) => {
                    let _ = out.send(event(call_event::Event::ReportJson(j))).await;
                }
                Err(e) => warn!(error = %e, "call report cannot be encoded"),
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn hangup(
        &self,
        request: Request<HangupRequest>,
    ) -> Result<Response<HangupReply>, Status> {
        let id = request.into_inner().attempt_id;
        let token = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(t) = &token {
            t.cancel();
        }
        Ok(Response::new(HangupReply {
            found: token.is_some(),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<DialerStatus>, Status> {
        Ok(Response::new(DialerStatus {
            node: self.node.clone(),
            capacity: self.capacity,
            active: self.active(),
            draining: self.is_draining(),
        }))
    }
}

/// Serves `service` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    service: DialerService,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
