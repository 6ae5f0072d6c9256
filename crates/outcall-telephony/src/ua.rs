//! The SIP user agent client on rsipstack.
//!
//! One [`SipUserAgent`] per dialer node: one UDP socket (and a TCP listener) for signalling,
//! a transaction endpoint and a dialog layer shared by every call. Incoming requests (BYE,
//! OPTIONS, stray INVITEs) are routed by a single task; each call runs [`run_call`] on its own
//! task, which drives the call state machine from the stack's dialog events and the media
//! session's events, and always ends with a CDR.
//!
//! Finished dialogs are removed from the dialog layer (rsipstack keeps confirmed dialogs until
//! told otherwise), so a long run does not grow.

use crate::config::{CallerIdPool, SipTransport, TrunkConfig, UaConfig};
use crate::engine::{AfterPrompt, BoxFuture, CallEngine, CallReport, CallRequest, CallUpdate};
use crate::media::{MediaCommand, MediaEvent, MediaSession, DTMF_PAYLOAD_TYPE};
use crate::now_ms;
use outcall_domain::call::{CallEvent, CancelCause, HangupParty};
use outcall_domain::cdr::CdrContext;
use outcall_domain::dtmf::DtmfAction;
use outcall_domain::metrics as m;
use outcall_domain::reason::q850_cause;
use outcall_domain::{mask_number, Call, Cdr, Classifier};
use outcall_media::codec::Codec;
use outcall_media::sdp::{parse_answer, MediaOffer};
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{Dialog, DialogState};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use rsipstack::EndpointBuilder;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Errors starting the user agent.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error("cannot bind SIP {transport} on {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: rsipstack::Error,
    },
    #[error("sip stack: {0}")]
    Stack(#[from] rsipstack::Error),
}

/// A request from the far end inside one of our dialogs.
#[derive(Debug)]
enum RemoteRequest {
    Bye { q850: Option<u16> },
}

struct Inner {
    cfg: UaConfig,
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    dialog_layer: Arc<DialogLayer>,
    classifier: Classifier,
    cancel: CancellationToken,
    udp_addr: SipAddr,
    tcp_addr: Option<SipAddr>,
    remote_requests: Mutex<HashMap<String, mpsc::UnboundedSender<RemoteRequest>>>,
    caller_pools: Mutex<HashMap<String, CallerIdPool>>,
    active: AtomicUsize,
    quality: crate::quality::Quality,
    /// Set when the node stops: a CANCEL then waits at most [`STOPPING_CANCEL_GRACE`].
    stopping: std::sync::atomic::AtomicBool,
}

/// How long a CANCEL sent while the node stops waits for the INVITE's final response: a
/// carrier that no longer answers must not hold the shutdown for 64*T1.
pub const STOPPING_CANCEL_GRACE: Duration = Duration::from_secs(2);

impl Inner {
    fn cancel_grace(&self) -> Duration {
        if self.stopping.load(Ordering::SeqCst) {
            self.cfg.cancel_grace().min(STOPPING_CANCEL_GRACE)
        } else {
            self.cfg.cancel_grace()
        }
    }
}

/// A SIP user agent client that implements [`CallEngine`].
#[derive(Clone)]
pub struct SipUserAgent {
    inner: Arc<Inner>,
}

impl SipUserAgent {
    /// Binds the signalling sockets and starts the endpoint.
    pub async fn start(cfg: UaConfig, classifier: Classifier) -> Result<SipUserAgent, UaError> {
        let cancel = CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.clone());
        let bind = SocketAddr::new(cfg.bind_ip, cfg.sip_port);
        let external = cfg.advertise_ip.map(|ip| SocketAddr::new(ip, cfg.sip_port));
        let udp = UdpConnection::create_connection(bind, external, Some(cancel.child_token()))
            .await
            .map_err(|source| UaError::Bind {
                transport: "udp",
                addr: bind,
                source,
            })?;
        let udp_addr = udp.get_addr().clone();
        let port = udp_addr.addr.port.map(u16::from).unwrap_or(cfg.sip_port);
        transport_layer.add_transport(udp.into());
        let mut tcp_addr = None;
        if cfg.tcp {
            let tcp_bind = SocketAddr::new(cfg.bind_ip, port);
            let tcp_external = cfg.advertise_ip.map(|ip| SocketAddr::new(ip, port));
            let tcp = TcpListenerConnection::new(tcp_bind, tcp_external)
                .await
                .map_err(|source| UaError::Bind {
                    transport: "tcp",
                    addr: tcp_bind,
                    source,
                })?;
            let mut a = udp_addr.clone();
            a.r#type = Some(rsipstack::sip::Transport::Tcp);
            tcp_addr = Some(a);
            transport_layer.add_transport(tcp.into());
        }
        let t1 = Duration::from_millis(cfg.t1_ms.max(1));
        let option = EndpointOption {
            t1,
            t1x64: t1 * 64,
            ..EndpointOption::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport_layer)
            .with_user_agent(&cfg.user_agent)
            .with_option(option)
            .build();
        let incoming = endpoint.incoming_transactions()?;
        let dialog_layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let endpoint_ref = endpoint.inner.clone();
        tokio::spawn(async move {
            endpoint.serve().await;
            debug!("sip endpoint stopped");
        });
        let inner = Arc::new(Inner {
            cfg,
            endpoint: endpoint_ref,
            dialog_layer,
            classifier,
            cancel,
            udp_addr,
            tcp_addr,
            remote_requests: Mutex::new(HashMap::new()),
            caller_pools: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            quality: Default::default(),
            stopping: Default::default(),
        });
        tokio::spawn(serve_incoming(inner.clone(), incoming));
        info!(addr = %inner.udp_addr, "sip user agent started");
        Ok(SipUserAgent { inner })
    }

    /// The UDP signalling address.
    pub fn local_addr(&self) -> String {
        self.inner.udp_addr.addr.to_string()
    }

    /// Dialogs the stack still holds (should return to 0 when no call is up).
    pub fn dialog_count(&self) -> usize {
        self.inner.dialog_layer.len()
    }

    /// Transactions the stack holds: (running, finished and cached, waiting for ACK).
    pub fn transaction_counts(&self) -> (usize, usize, usize) {
        let s = self.inner.endpoint.get_stats();
        (
            s.running_transactions,
            s.finished_transactions,
            s.waiting_ack,
        )
    }

    /// Calls in progress.
    /// Ages the per-trunk ASR/ACD windows and republishes them (call before a scrape).
    pub fn refresh_quality(&self) {
        self.inner.quality.refresh(crate::now_ms());
    }

    pub fn active_calls(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// The node is stopping: CANCELs sent from now on wait at most
    /// [`STOPPING_CANCEL_GRACE`] for the final response instead of `cancel_grace_ms`.
    pub fn begin_stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops the endpoint (calls in flight should be finished first).
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

impl CallEngine for SipUserAgent {
    fn place_call(
        &self,
        req: CallRequest,
        updates: Option<mpsc::UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.active.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!(m::CALLS_ACTIVE).increment(1.0);
            // The call's span covers every await of the call (never entered across one).
            let span = tracing::info_span!(
                "call",
                attempt = %req.attempt_id,
                trace_id = %req.trace_id,
                to = %mask_number(&req.to)
            );
            let report =
                tracing::Instrument::instrument(run_call(&inner, req, updates), span).await;
            metrics::gauge!(m::CALLS_ACTIVE).decrement(1.0);
            inner.active.fetch_sub(1, Ordering::Relaxed);
            report
        })
    }
}

async fn serve_incoming(
    inner: Arc<Inner>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
) {
    while let Some(mut tx) = incoming.recv().await {
        let method = tx.original.method;
        match method {
            Method::Bye => {
                let q850 = q850_cause(
                    tx.original
                        .headers
                        .iter()
                        .filter(|h| h.name().eq_ignore_ascii_case("Reason"))
                        .map(|h| h.value()),
                );
                if let Some(call_id) = header_value(&tx.original.headers, "Call-ID") {
                    let sender = inner
                        .remote_requests
                        .lock()
                        .ok()
                        .and_then(|m| m.get(call_id).cloned());
                    if let Some(s) = sender {
                        let _ = s.send(RemoteRequest::Bye { q850 });
                    }
                }
                match inner.dialog_layer.match_dialog(&tx) {
                    Some(Dialog::Invite(mut d)) => {
                        tokio::spawn(async move {
                            if let Err(e) = d.handle(&mut tx).await {
                                debug!(error = %e, "bye handling failed");
                            }
                        });
                    }
                    _ => {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                }
            }
            Method::Ack => {}
            Method::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Method::Invite => {
                // Outcall only dials out; inbound calls come with the agent layer.
                let _ = tx.reply(StatusCode::TemporarilyUnavailable).await;
            }
            _ => match inner.dialog_layer.match_dialog(&tx) {
                Some(Dialog::Invite(mut d)) => {
                    tokio::spawn(async move {
                        let _ = d.handle(&mut tx).await;
                    });
                }
                _ => {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                }
            },
        }
    }
}

fn header_value<'a>(headers: &'a rsipstack::sip::Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

fn response_q850(resp: &rsipstack::sip::Response) -> Option<u16> {
    q850_cause(
        resp.headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Reason"))
            .map(|h| h.value()),
    )
}

/// Everything a running call accumulates besides the state machine.
struct CallRun<'a> {
    call: Call,
    updates: Option<mpsc::UnboundedSender<CallUpdate>>,
    req: &'a CallRequest,
    first_response_at: Option<u64>,
    dtmf: String,
}

impl CallRun<'_> {
    fn apply(&mut self, event: CallEvent) {
        let at = now_ms();
        match self.call.apply(event, at) {
            Ok(_) => {
                if let (Some(tx), Some(t)) = (&self.updates, self.call.history().last()) {
                    let _ = tx.send(CallUpdate::Transition(t.clone()));
                }
            }
            Err(e) => debug!(attempt = %self.req.attempt_id, error = %e, "ignored call event"),
        }
    }

    fn first_response(&mut self) {
        self.first_response_at.get_or_insert_with(now_ms);
    }

    fn digit(&mut self, d: char) {
        self.dtmf.push(d);
        if let Some(tx) = &self.updates {
            let _ = tx.send(CallUpdate::Dtmf {
                digit: d,
                at_ms: now_ms(),
            });
        }
    }
}

fn parse_sdp(body: &[u8]) -> Option<outcall_media::sdp::MediaAnswer> {
    if body.is_empty() {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    parse_answer(text, &[Codec::Pcmu, Codec::Pcma]).ok()
}

fn remote_command(a: &outcall_media::sdp::MediaAnswer) -> MediaCommand {
    MediaCommand::Remote {
        addr: SocketAddr::new(a.remote_ip, a.remote_port),
        codec: a.codec,
        dtmf_payload_type: a.dtmf_payload_type,
    }
}

fn target_uri(user: &str, host: &str, port: u16, transport: SipTransport) -> String {
    match transport {
        SipTransport::Udp => format!("sip:{user}@{host}:{port}"),
        SipTransport::Tcp => format!("sip:{user}@{host}:{port};transport=tcp"),
    }
}

fn build_invite(
    inner: &Inner,
    req: &CallRequest,
    trunk: &TrunkConfig,
    caller: &str,
    call_id: &str,
    offer: Option<String>,
) -> Result<InviteOption, String> {
    let to_user = format!(
        "{}{}",
        trunk.dial_prefix,
        trunk.number_format.format(&req.to)
    );
    let callee = target_uri(&to_user, &trunk.host, trunk.port, trunk.transport);
    let callee = rsipstack::sip::Uri::try_from(callee.as_str())
        .map_err(|e| format!("bad callee uri: {e}"))?;
    let caller_uri = rsipstack::sip::Uri::try_from(format!("sip:{caller}@{}", trunk.host).as_str())
        .map_err(|e| format!("bad caller uri: {e}"))?;
    let local = match trunk.transport {
        SipTransport::Udp => &inner.udp_addr,
        SipTransport::Tcp => inner
            .tcp_addr
            .as_ref()
            .ok_or("tcp is disabled in the ua config")?,
    };
    let contact = target_uri(
        "outcall",
        &inner.cfg.advertised().to_string(),
        local.addr.port.map(u16::from).unwrap_or(5060),
        trunk.transport,
    );
    let contact =
        rsipstack::sip::Uri::try_from(contact.as_str()).map_err(|e| format!("bad contact: {e}"))?;
    let dest_text = trunk
        .outbound_proxy
        .clone()
        .unwrap_or_else(|| format!("{}:{}", trunk.host, trunk.port));
    let dest_hp = rsipstack::sip::HostWithPort::try_from(dest_text.as_str())
        .map_err(|e| format!("bad destination `{dest_text}`: {e}"))?;
    let destination = SipAddr {
        r#type: Some(match trunk.transport {
            SipTransport::Udp => rsipstack::sip::Transport::Udp,
            SipTransport::Tcp => rsipstack::sip::Transport::Tcp,
        }),
        addr: dest_hp,
    };
    let credential = match &trunk.username {
        Some(u) => Some(Credential {
            username: u.clone(),
            password: trunk.resolve_password()?.unwrap_or_default(),
            realm: trunk.realm.clone(),
            auth_username: None,
        }),
        None => None,
    };
    let mut headers = Vec::new();
    if trunk.p_asserted_identity {
        headers.push(Header::Other(
            "P-Asserted-Identity".into(),
            format!("<sip:{caller}@{}>", trunk.host),
        ));
    }
    for (k, v) in trunk.headers.iter().chain(req.headers.iter()) {
        headers.push(Header::Other(k.clone(), v.clone()));
    }
    let has_offer = offer.is_some();
    Ok(InviteOption {
        caller: caller_uri,
        callee,
        destination: Some(destination),
        content_type: has_offer.then(|| "application/sdp".to_string()),
        offer: offer.map(String::into_bytes),
        contact,
        credential,
        headers: (!headers.is_empty()).then_some(headers),
        call_id: Some(call_id.to_string()),
        ..Default::default()
    })
}

async fn run_call(
    inner: &Arc<Inner>,
    req: CallRequest,
    updates: Option<mpsc::UnboundedSender<CallUpdate>>,
) -> CallReport {
    let trunk = req.trunk.clone();
    let caller = match &req.caller_id {
        Some(c) => c.clone(),
        None => {
            let mut pools = inner.caller_pools.lock().unwrap_or_else(|e| e.into_inner());
            let pool = pools
                .entry(trunk.name.clone())
                .or_insert_with(|| CallerIdPool::new(trunk.caller_ids.clone()));
            pool.next_id().unwrap_or("outcall").to_string()
        }
    };
    let call_id = format!("{:032x}@outcall", rand::random::<u128>());
    let mut run = CallRun {
        call: Call::new(),
        updates,
        req: &req,
        first_response_at: None,
        dtmf: String::new(),
    };
    let masked = mask_number(&req.to);

    let media = if req.media {
        match MediaSession::start(inner.cfg.bind_ip, req.prompt.clone(), req.record_to.clone())
            .await
        {
            Ok(m) => Some(m),
            Err(e) => {
                run.apply(CallEvent::Dial);
                run.apply(CallEvent::Error {
                    reason: format!("media: {e}"),
                });
                return finish(inner, run, &caller, &call_id, &masked, None).await;
            }
        }
    } else {
        None
    };
    let mut media = media;
    let offer = media.as_ref().map(|m| {
        MediaOffer {
            session_id: rand::random::<u32>() as u64,
            local_ip: inner.cfg.advertised(),
            rtp_port: m.local_port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            dtmf_payload_type: Some(DTMF_PAYLOAD_TYPE),
        }
        .to_sdp()
    });

    let opt = match build_invite(inner, &req, &trunk, &caller, &call_id, offer) {
        Ok(o) => o,
        Err(e) => {
            run.apply(CallEvent::Dial);
            run.apply(CallEvent::Error { reason: e });
            return finish(inner, run, &caller, &call_id, &masked, media).await;
        }
    };
    let (rr_tx, mut rr_rx) = mpsc::unbounded_channel();
    if let Ok(mut m) = inner.remote_requests.lock() {
        m.insert(call_id.clone(), rr_tx);
    }
    let (state_tx, mut state_rx) = inner.dialog_layer.new_dialog_state_channel();
    run.apply(CallEvent::Dial);
    let (dialog, mut handle) = match inner.dialog_layer.do_invite_async(opt, state_tx) {
        Ok(x) => x,
        Err(e) => {
            run.apply(CallEvent::Error {
                reason: format!("invite: {e}"),
            });
            return finish(inner, run, &caller, &call_id, &masked, media).await;
        }
    };

    // Phase 1: until the INVITE has a final response.
    let ring_deadline = tokio::time::sleep(req.ring_timeout);
    tokio::pin!(ring_deadline);
    let mut canceled: Option<CancelCause> = None;
    let far_future = Instant::now() + Duration::from_secs(86400 * 365);
    let cancel_deadline = tokio::time::sleep_until(far_future);
    tokio::pin!(cancel_deadline);
    let outcome = loop {
        tokio::select! {
            // Biased, dialog states first: a 180 followed at once by a final response is
            // recorded as ringing before the final response ends the loop.
            biased;
            Some(st) = state_rx.recv() => match st {
                DialogState::Trying(_) => run.apply(CallEvent::Trying),
                DialogState::Early(_, resp) => {
                    run.first_response();
                    let status = resp.status_code.code();
                    match parse_sdp(&resp.body) {
                        Some(a) => {
                            if let Some(m) = &media { m.send(remote_command(&a)); }
                            run.apply(CallEvent::EarlyMedia { status });
                        }
                        None => run.apply(CallEvent::Ringing { status }),
                    }
                }
                _ => {}
            },
            r = &mut handle => break Some(r),
            Some(ev) = recv_media(&mut media) => {
                if ev == MediaEvent::FirstPacket { run.call.note_early_media_packets(); }
            }
            _ = &mut ring_deadline, if canceled.is_none() => {
                canceled = Some(CancelCause::RingTimeout);
                debug!("ring timeout, sending cancel");
                send_cancel(&dialog);
                cancel_deadline.as_mut().reset(Instant::now() + inner.cancel_grace());
            }
            _ = req.cancel.cancelled(), if canceled.is_none() => {
                canceled = Some(CancelCause::Operator);
                send_cancel(&dialog);
                cancel_deadline.as_mut().reset(Instant::now() + inner.cancel_grace());
            }
            _ = &mut cancel_deadline => {
                handle.abort();
                break None;
            }
        }
    };
    let mut confirmed_id = None;
    match outcome {
        Some(Ok(Ok((id, Some(resp))))) => {
            run.first_response();
            let status = resp.status_code.code();
            metrics::counter!(m::SIP_RESPONSES_TOTAL, "code" => status.to_string(), "trunk" => trunk.name.clone()).increment(1);
            if (200..300).contains(&status) {
                confirmed_id = Some(id);
                if let Some(c) = canceled {
                    // 2xx crossed our CANCEL: the stack already sent BYE.
                    run.apply(CallEvent::Canceled {
                        cause: c,
                        status: Some(status),
                    });
                } else {
                    run.apply(CallEvent::Answer { status });
                    match (parse_sdp(&resp.body), &media) {
                        (Some(a), Some(m)) => m.send(remote_command(&a)),
                        (None, Some(_)) => {
                            run.apply(CallEvent::Error {
                                reason: "unusable sdp answer".into(),
                            });
                        }
                        _ => {}
                    }
                }
            } else if let Some(c) = canceled {
                run.apply(CallEvent::Canceled {
                    cause: c,
                    status: Some(status),
                });
            } else if (status == 401 || status == 407) && trunk.username.is_some() {
                run.apply(CallEvent::AuthFailed { status });
            } else {
                run.apply(CallEvent::Rejected {
                    status,
                    q850: response_q850(&resp),
                });
            }
        }
        Some(Ok(Ok((_, None)))) | None => match canceled {
            Some(c) => run.apply(CallEvent::Canceled {
                cause: c,
                status: None,
            }),
            None => run.apply(CallEvent::Timeout),
        },
        Some(Ok(Err(e))) => match canceled {
            Some(c) => run.apply(CallEvent::Canceled {
                cause: c,
                status: None,
            }),
            None => run.apply(CallEvent::Error {
                reason: e.to_string(),
            }),
        },
        Some(Err(e)) => run.apply(CallEvent::Error {
            reason: format!("invite task: {e}"),
        }),
    }

    // Phase 2: the conversation.
    if run.call.state() == outcall_domain::CallState::Answered {
        let after = if req.prompt.is_some() {
            req.after_prompt
        } else {
            AfterPrompt::Stay
        };
        if let Some(m) = &media {
            m.send(MediaCommand::Play);
        }
        let max = tokio::time::sleep(req.max_duration);
        tokio::pin!(max);
        let mut repeats = 0;
        let mut hangup: Option<(HangupParty, Option<u16>)> = None;
        while hangup.is_none() {
            tokio::select! {
                Some(r) = rr_rx.recv() => match r {
                    RemoteRequest::Bye { q850 } => hangup = Some((HangupParty::Remote, q850)),
                },
                Some(st) = state_rx.recv() => {
                    if let DialogState::Terminated(_, reason) = st {
                        debug!(?reason, "dialog terminated");
                        // A BYE we did not see through the router still ends the call.
                        if !matches!(reason, rsipstack::dialog::dialog::TerminatedReason::UacBye) {
                            hangup = Some((HangupParty::Remote, None));
                        }
                    }
                }
                Some(ev) = recv_media(&mut media) => match ev {
                    MediaEvent::PromptDone => {
                        if after == AfterPrompt::Hangup { hangup = Some((HangupParty::Local, None)); }
                    }
                    MediaEvent::Digit(d) => {
                        run.digit(d);
                        match req.dtmf.action(d) {
                            Some(DtmfAction::Confirm | DtmfAction::Hangup) => {
                                hangup = Some((HangupParty::Local, None));
                            }
                            Some(DtmfAction::Repeat) if repeats < req.dtmf.max_repeats => {
                                repeats += 1;
                                if let Some(m) = &media { m.send(MediaCommand::Play); }
                            }
                            _ => {}
                        }
                    }
                    MediaEvent::FirstPacket => {}
                },
                _ = &mut max => hangup = Some((HangupParty::Local, None)),
                _ = req.cancel.cancelled() => hangup = Some((HangupParty::Local, None)),
                _ = inner.cancel.cancelled() => hangup = Some((HangupParty::Local, None)),
            }
        }
        if let Some((by, q850)) = hangup {
            // A remote BYE may have raced our own hangup decision: prefer what the peer did.
            let (by, q850) = match rr_rx.try_recv() {
                Ok(RemoteRequest::Bye { q850 }) => (HangupParty::Remote, q850),
                Err(_) => (by, q850),
            };
            if by == HangupParty::Local {
                if let Err(e) = dialog.bye().await {
                    debug!(error = %e, "bye failed");
                }
            }
            run.apply(CallEvent::Hangup { by, q850 });
        }
    } else if let Some(outcall_domain::CallState::Failed) = Some(run.call.state()) {
        if confirmed_id.is_some() {
            let _ = dialog.bye().await;
        }
    }

    if let Some(id) = confirmed_id {
        inner.dialog_layer.remove_dialog(&id);
    }
    inner.dialog_layer.remove_dialog(&dialog.id());
    if let Ok(mut m) = inner.remote_requests.lock() {
        m.remove(&call_id);
    }
    finish(inner, run, &caller, &call_id, &masked, media).await
}

/// Sends CANCEL without waiting for its answer: the call loop goes on reading the INVITE's
/// final response and its own deadline, even when the carrier no longer answers.
fn send_cancel(dialog: &rsipstack::dialog::invite_dialog::InviteDialog) {
    let d = dialog.clone();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = d.cancel().await {
                debug!(error = %e, "cancel not answered");
            }
        },
        tracing::Span::current(),
    ));
}

async fn recv_media(media: &mut Option<MediaSession>) -> Option<MediaEvent> {
    match media {
        Some(m) => m.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn finish(
    inner: &Arc<Inner>,
    run: CallRun<'_>,
    caller: &str,
    call_id: &str,
    masked: &str,
    media: Option<MediaSession>,
) -> CallReport {
    let stats = match media {
        Some(m) => Some(m.stop().await),
        None => None,
    };
    let req = run.req;
    let stats = stats.unwrap_or_default();
    if let Some(e) = &stats.recording_error {
        warn!(attempt = %req.attempt_id, error = %e, "recording failed");
    }
    let ctx = CdrContext {
        attempt_id: req.attempt_id.clone(),
        trace_id: req.trace_id.clone(),
        call_id: call_id.to_string(),
        trunk: req.trunk.name.clone(),
        node: inner.cfg.node.clone(),
        caller_id: caller.to_string(),
        callee_masked: masked.to_string(),
        queued_at_ms: req.queued_at_ms,
        dispatched_at_ms: req.dispatched_at_ms,
        first_response_at_ms: run.first_response_at,
        dtmf: run.dtmf.clone(),
        recording: stats
            .recording
            .as_ref()
            .map(|r| r.path.display().to_string()),
        rtp_packets_sent: stats.packets_sent,
        rtp_packets_received: stats.packets_received,
        rtp_packets_lost: stats.packets_lost,
    };
    let cdr = Cdr::from_call(&run.call, &inner.classifier, ctx);
    let trunk = req.trunk.name.clone();
    let campaign = req
        .campaign_label
        .clone()
        .unwrap_or_else(|| "none".to_string());
    metrics::counter!(m::CALLS_TOTAL, "outcome" => cdr.outcome.as_str(), "trunk" => trunk.clone(), "campaign" => campaign)
        .increment(1);
    if let Some(s) = cdr.setup_ms {
        metrics::histogram!(m::SETUP_SECONDS, "trunk" => trunk.clone()).record(s as f64 / 1e3);
    }
    if let (Some(a), Some(i)) = (cdr.answer_at_ms, cdr.invite_at_ms) {
        metrics::histogram!(m::ANSWER_SECONDS, "trunk" => trunk.clone())
            .record(a.saturating_sub(i) as f64 / 1e3);
    }
    let talk_ms = match (cdr.answer_at_ms, cdr.end_at_ms) {
        (Some(a), Some(e)) => Some(e.saturating_sub(a)),
        _ => None,
    };
    if let Some(t) = talk_ms {
        metrics::histogram!(m::TALK_SECONDS, "trunk" => trunk.clone()).record(t as f64 / 1e3);
    }
    if cdr.invite_at_ms.is_some() {
        inner.quality.record(
            &trunk,
            cdr.end_at_ms.unwrap_or_else(crate::now_ms),
            cdr.outcome.is_answered(),
            talk_ms.unwrap_or(0),
        );
    }
    metrics::counter!(m::RTP_SENT_TOTAL, "trunk" => trunk.clone()).increment(stats.packets_sent);
    metrics::counter!(m::RTP_RECEIVED_TOTAL, "trunk" => trunk.clone())
        .increment(stats.packets_received);
    metrics::counter!(m::RTP_LOST_TOTAL, "trunk" => trunk.clone()).increment(stats.packets_lost);
    if stats.packets_received > 0 {
        metrics::histogram!(m::RTP_JITTER_SECONDS, "trunk" => trunk.clone())
            .record(stats.jitter_ms / 1e3);
    }
    info!(
        attempt = %req.attempt_id,
        to = %masked,
        outcome = %cdr.outcome,
        sip_status = ?cdr.sip_status,
        q850 = ?cdr.q850_cause,
        "call finished"
    );
    CallReport {
        transitions: run.call.history().to_vec(),
        cdr,
        cause: None,
    }
}
