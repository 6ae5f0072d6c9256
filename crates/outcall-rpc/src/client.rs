//! The scheduler's side: a [`CallEngine`] that places calls on remote dialer nodes.

use crate::pb::dialer_client::DialerClient;
use crate::pb::{call_event, HangupRequest, Header, OriginateRequest};
use outcall_domain::{CallState, Cdr, Outcome};
use outcall_telephony::engine::{AfterPrompt, BoxFuture};
use outcall_telephony::{CallEngine, CallReport, CallRequest, CallUpdate};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedSender;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

/// A live dialer node, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialerEndpoint {
    pub node: String,
    /// `host:port` of its gRPC service.
    pub addr: String,
    pub capacity: u32,
    /// Calls in progress at its last heartbeat.
    pub active: u32,
}

/// Where the live dialers are (the registry in Redis, or a fixed list).
#[async_trait::async_trait]
pub trait DialerDirectory: Send + Sync {
    /// Dialers that are alive and not draining.
    async fn live(&self) -> Vec<DialerEndpoint>;
}

#[async_trait::async_trait]
impl DialerDirectory for Vec<DialerEndpoint> {
    async fn live(&self) -> Vec<DialerEndpoint> {
        self.clone()
    }
}

/// Settings of [`RemoteEngine`].
#[derive(Debug, Clone)]
pub struct RemoteEngineConfig {
    /// How long a call waits for a dialer that can take it before it fails (`no_dialer`).
    pub wait_for_dialer: Duration,
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive pings: a dialer that stops answering them is lost after
    /// `keepalive * 2`.
    pub keepalive: Duration,
}

impl Default for RemoteEngineConfig {
    fn default() -> Self {
        RemoteEngineConfig {
            wait_for_dialer: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(5),
        }
    }
}

/// Places calls on the least-loaded live dialer over gRPC.
pub struct RemoteEngine {
    directory: Arc<dyn DialerDirectory>,
    cfg: RemoteEngineConfig,
    channels: Mutex<HashMap<String, Channel>>,
    /// Calls this engine has in progress per node (heartbeats lag; this does not).
    inflight: Arc<Mutex<HashMap<String, u32>>>,
}

/// Counts a call in progress on a node while it lives.
struct InFlight {
    map: Arc<Mutex<HashMap<String, u32>>>,
    node: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether the error says the request never reached a dialer (so nothing was dialed).
fn not_delivered(status: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source: Option<&dyn Error> = status.source();
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("Connection refused")
            || text.contains("error trying to connect")
        {
            return true;
        }
        source = e.source();
    }
    status.message().contains("tcp connect error")
}

/// Whether the dialer refused the call before dialing (full, draining, bad request) or the
/// request never reached it: another dialer may take it.
fn refused_before_dialing(status: &tonic::Status) -> bool {
    if not_delivered(status) {
        return true;
    }
    match status.code() {
        // (`AlreadyExists` is not among them: that dialer is dialing this very attempt.)
        Code::ResourceExhausted | Code::FailedPrecondition | Code::InvalidArgument => true,
        Code::Unavailable => status.message().contains("draining"),
        _ => false,
    }
}

impl RemoteEngine {
    pub fn new(directory: Arc<dyn DialerDirectory>, cfg: RemoteEngineConfig) -> Self {
        RemoteEngine {
            directory,
            cfg,
            channels: Mutex::default(),
            inflight: Arc::default(),
        }
    }

    /// Calls in progress through this engine, per dialer node.
    pub fn inflight(&self) -> HashMap<String, u32> {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad dialer address {addr}: {e}"))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.cfg.keepalive)
            .keep_alive_timeout(self.cfg.keepalive)
            .keep_alive_while_idle(true);
        let c = ep.connect_lazy();
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn forget_channel(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    /// The least-loaded dialer not in `skip`: lowest load over capacity, counting both its
    /// last heartbeat and the calls this engine has sent it since.
    fn pick(&self, live: &[DialerEndpoint], skip: &HashSet<String>) -> Option<DialerEndpoint> {
        let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter(|d| !skip.contains(&d.node) && d.capacity > 0)
            .map(|d| {
                let load = d.active.max(inflight.get(&d.node).copied().unwrap_or(0));
                (d, load)
            })
            .filter(|(d, load)| *load < d.capacity)
            .min_by(|(a, la), (b, lb)| {
                let ra = f64::from(*la) / f64::from(a.capacity);
                let rb = f64::from(*lb) / f64::from(b.capacity);
                ra.total_cmp(&rb).then(la.cmp(lb)).then(a.node.cmp(&b.node))
            })
            .map(|(d, _)| d.clone())
    }

    async fn run(
        &self,
        req: CallRequest,
        updates: Option<UnboundedSender<CallUpdate>>,
    ) -> CallReport {
        let started = now_ms();
        let deadline = tokio::time::Instant::now() + self.cfg.wait_for_dialer;
        let mut skip: HashSet<String> = HashSet::new();
        let wire = wire_request(&req);
        loop {
            if req.cancel.is_cancelled() {
                return synthetic(
                    &req,
                    "",
                    Outcome::Canceled,
                    CallState::Canceled,
                    None,
                    started,
                    &[],
                );
            }
            let live = self.directory.live().await;
            let Some(d) = self.pick(&live, &skip) else {
                if tokio::time::Instant::now() >= deadline {
                    warn!(attempt = %req.attempt_id, dialers = live.len(), "no dialer can take the call");
                    return synthetic(
                        &req,
                        "",
                        Outcome::Failed,
                        CallState::Failed,
                        Some("no_dialer"),
                        started,
                        &[],
                    );
                }
                // Dialers that refused may have room again soon.
                skip.clear();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = req.cancel.cancelled() => {}
                }
                continue;
            };
            let channel = match self.channel(&d.addr) {
                Ok(c) => c,
                Err(e) => {
                    warn!(node = %d.node, error = %e, "dialer skipped");
                    skip.insert(d.node.clone());
                    continue;
                }
            };
            let mut client = DialerClient::new(channel.clone());
            let guard = {
                let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                *m.entry(d.node.clone()).or_default() += 1;
                InFlight {
                    map: self.inflight.clone(),
                    node: d.node.clone(),
                }
            };
            let mut stream = match client.originate(wire.clone()).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    drop(guard);
                    let delivered = !refused_before_dialing(&status);
                    if delivered {
                        // The request may have reached the dialer: it may have dialed.
                        warn!(node = %d.node, attempt = %req.attempt_id, error = %status, "dialer lost while originating");
                        self.forget_channel(&d.addr);
                        return synthetic(
                            &req,
                            &d.node,
                            Outcome::Failed,
                            CallState::Failed,
                            Some("node_lost"),
                            started,
                            &[],
                        );
                    }
                    debug!(node = %d.node, error = %status, "dialer refused the call, trying another");
                    if not_delivered(&status) {
                        self.forget_channel(&d.addr);
                    }
                    skip.insert(d.node.clone());
                    continue;
                }
            };
            let mut seen: Vec<CallUpdate> = Vec::new();
            let mut hung_up = false;
            loop {
                tokio::select! {
                    biased;
                    _ = req.cancel.cancelled(), if !hung_up => {
                        hung_up = true;
                        let mut c = DialerClient::new(channel.clone());
                        let id = req.attempt_id.clone();
                        tokio::spawn(async move {
                            if let Err(e) = c.hangup(HangupRequest { attempt_id: id }).await {
                                warn!(error = %e, "hang-up request failed");
                            }
                        });
                    }
                    msg = stream.message() => match msg {
                        Ok(Some(ev)) => match ev.event {
                            Some(call_event::Event::UpdateJson(j)) => {
                                match serde_json::from_str::<CallUpdate>(&j) {
                                    Ok(u) => {
                                        if let Some(tx) = &updates {
                                            let _ = tx.send(u.clone());
                                        }
                                        seen.push(u);
                                    }
                                    Err(e) => warn!(error = %e, "bad call update from dialer"),
                                }
                            }
                            Some(call_event::Event::ReportJson(j)) => {
                                match serde_json::from_str::<CallReport>(&j) {
                                    Ok(r) => return r,
                                    Err(e) => {
                                        warn!(node = %d.node, error = %e, "bad call report from dialer");
                                        return synthetic(&req, &d.node, Outcome::Failed, CallState::Failed, Some("node_lost"), started, &seen);
                                    }
                                }
                            }
                            None => {}
                        },
                        Ok(None) | Err(_) => {
                            if let Err(e) = &msg {
                                info!(node = %d.node, attempt = %req.attempt_id, error = %e, "dialer lost mid-call");
                            } else {
                                info!(node = %d.node, attempt = %req.attempt_id, "dialer ended the stream without a report");
                            }
                            self.forget_channel(&d.addr);
                            return synthetic(&req, &d.node, Outcome::Failed, CallState::Failed, Some("node_lost"), started, &seen);
                        }
                    }
                }
            }
        }
    }
}

fn wire_request(req: &CallRequest) -> OriginateRequest {
    OriginateRequest {
        attempt_id: req.attempt_id.clone(),
        trace_id: req.trace_id.clone(),
        to: req.to.clone(),
        trunk_json: serde_json::to_string(&*req.trunk).unwrap_or_default(),
        caller_id: req.caller_id.clone(),
        prompt: req.prompt.as_ref().map(|p| p.name.clone()),
        stay_after_prompt: req.after_prompt == AfterPrompt::Stay,
        dtmf_json: serde_json::to_string(&req.dtmf).unwrap_or_default(),
        ring_timeout_ms: req.ring_timeout.as_millis() as u64,
        max_duration_ms: req.max_duration.as_millis() as u64,
        record: req.record_to.is_some(),
        media: req.media,
        headers: req
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        queued_at_ms: req.queued_at_ms,
        dispatched_at_ms: req.dispatched_at_ms,
        campaign_label: req.campaign_label.clone(),
        campaign_id: req.campaign_id,
    }
}

/// The report of a call whose real end is unknown: what the stream told of it, ended now.
fn synthetic(
    req: &CallRequest,
    node: &str,
    outcome: Outcome,
    state: CallState,
    cause: Option<&str>,
    started: u64,
    seen: &[CallUpdate],
) -> CallReport {
    let end = now_ms();
    let transitions: Vec<_> = seen
        .iter()
        .filter_map(|u| match u {
            CallUpdate::Transition(t) => Some(t.clone()),
            CallUpdate::Dtmf { .. } => None,
        })
        .collect();
    let at = |s: CallState| transitions.iter().find(|t| t.to == s).map(|t| t.at_ms);
    let invite = at(CallState::Dialing);
    let answer = at(CallState::Answered);
    let dtmf: String = seen
        .iter()
        .filter_map(|u| match u {
            CallUpdate::Dtmf { digit, .. } => Some(*digit),
            CallUpdate::Transition(_) => None,
        })
        .collect();
    let cdr = Cdr {
        attempt_id: req.attempt_id.clone(),
        trace_id: req.trace_id.clone(),
        call_id: String::new(),
        trunk: req.trunk.name.clone(),
        node: node.to_string(),
        caller_id: req.caller_id.clone().unwrap_or_default(),
        callee: outcall_domain::mask::mask_number(&req.to),
        final_state: state,
        outcome,
        sip_status: None,
        q850_cause: None,
        queued_at_ms: req.queued_at_ms,
        dispatched_at_ms: req.dispatched_at_ms,
        invite_at_ms: invite,
        ring_at_ms: at(CallState::Ringing),
        early_media_at_ms: at(CallState::EarlyMedia),
        answer_at_ms: answer,
        end_at_ms: Some(end),
        setup_ms: None,
        duration_ms: invite.map_or(0, |i| end.saturating_sub(i)),
        billsec: answer.map_or(0, |a| end.saturating_sub(a).div_ceil(1000)),
        hangup_by: None,
        early_media: at(CallState::EarlyMedia).is_some(),
        dtmf,
        recording: None,
        rtp_packets_sent: 0,
        rtp_packets_received: 0,
        rtp_packets_lost: 0,
    };
    let _ = started;
    CallReport {
        transitions,
        cdr,
        cause: cause.map(str::to_string),
    }
}

impl CallEngine for RemoteEngine {
    fn place_call(
        &self,
        req: CallRequest,
        updates: Option<UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport> {
        Box::pin(self.run(req, updates))
    }
}
