//! Call control over gRPC against real SIP: a [`RemoteEngine`] places calls through
//! [`DialerService`]s (each around its own SIP user agent) on SIPp carriers over loopback.

use outcall_domain::{CallState, Classifier, Outcome};
use outcall_rpc::{
    serve, CallInfo, DialerEndpoint, DialerService, RemoteEngine, RemoteEngineConfig, ReportHook,
};
use outcall_telephony::{
    CallEngine, CallReport, CallRequest, CallUpdate, SipTransport, SipUserAgent, TrunkConfig,
    UaConfig,
};
use outcall_testkit::{start_sipp, SippProcess, Transport};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Dialer {
    service: DialerService,
    endpoint: DialerEndpoint,
    _stop: tokio_util::sync::DropGuard,
    _ua: SipUserAgent,
}

async fn dialer(node: &str, capacity: u32, hook: Option<Arc<dyn ReportHook>>) -> Dialer {
    let ua = SipUserAgent::start(
        UaConfig {
            node: node.into(),
            cancel_grace_ms: 5_000,
            ..UaConfig::default()
        },
        Classifier::default(),
    )
    .await
    .expect("user agent starts");
    let mut service = DialerService::new(Arc::new(ua.clone()), node, capacity);
    if let Some(h) = hook {
        service = service.with_hook(h);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn({
        let (s, stop) = (service.clone(), stop.clone());
        async move {
            serve(s, listener, stop).await.expect("gRPC server runs");
        }
    });
    Dialer {
        endpoint: DialerEndpoint {
            node: node.into(),
            addr: addr.to_string(),
            capacity,
            active: 0,
        },
        service,
        _stop: stop.drop_guard(),
        _ua: ua,
    }
}

fn carrier(scenario: &str, dir: &tempfile::TempDir) -> SippProcess {
    start_sipp(
        scenario,
        Transport::Udp,
        &["-trace_err", "-timeout", "60s"],
        dir.path(),
    )
}

fn request(sipp: &SippProcess, attempt: &str) -> CallRequest {
    let trunk = TrunkConfig::new("sipp", "127.0.0.1", sipp.port, SipTransport::Udp);
    let mut r = CallRequest::new(attempt, "13812345678", Arc::new(trunk));
    r.ring_timeout = Duration::from_secs(20);
    r.max_duration = Duration::from_secs(20);
    r.media = false;
    r.campaign_id = 7;
    r
}

fn engine(dialers: Vec<DialerEndpoint>) -> RemoteEngine {
    RemoteEngine::new(
        Arc::new(dialers),
        RemoteEngineConfig {
            wait_for_dialer: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            keepalive: Duration::from_secs(1),
        },
    )
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records the reports the dialer's hook saw (where the binary publishes CDRs to the bus).
#[derive(Default)]
struct Seen(Mutex<Vec<(CallInfo, String)>>);

#[async_trait::async_trait]
impl ReportHook for Seen {
    async fn finished(&self, info: &CallInfo, report: &mut CallReport) {
        self.0
            .lock()
            .unwrap()
            .push((info.clone(), report.cdr.outcome.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_reports_like_a_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier("uas_busy.xml", &dir);
    let seen = Arc::new(Seen::default());
    let d = dialer("dialer-a", 10, Some(seen.clone())).await;
    let engine = engine(vec![d.endpoint.clone()]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = engine.place_call(request(&sipp, "41"), Some(tx)).await;
    assert_eq!(report.cdr.outcome, Outcome::Busy, "{report:?}");
    assert_eq!(report.cdr.sip_status, Some(486));
    assert_eq!(report.cdr.node, "dialer-a");
    assert_eq!(report.cdr.attempt_id, "41");
    assert_eq!(report.cause, None);
    assert!(!report.cdr.callee.contains("12345678"), "callee is masked");
    let mut states = Vec::new();
    while let Ok(u) = rx.try_recv() {
        if let CallUpdate::Transition(t) = u {
            states.push(t.to);
        }
    }
    assert!(
        states.contains(&CallState::Dialing),
        "updates streamed: {states:?}"
    );
    assert_eq!(states.last(), Some(&CallState::Unanswered));
    let hooked = seen.0.lock().unwrap().clone();
    assert_eq!(hooked.len(), 1);
    assert_eq!(hooked[0].0.attempt_id, "41");
    assert_eq!(hooked[0].0.campaign_id, 7);
    assert_eq!(hooked[0].1, "busy");
    assert_eq!(d.service.active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_to_the_least_loaded_dialer_and_skip_full_or_draining_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier("uas_ring_no_answer.xml", &dir);
    let a = dialer("dialer-a", 1, None).await;
    let b = dialer("dialer-b", 1, None).await;
    let c = dialer("dialer-c", 5, None).await;
    c.service.drain();
    let engine = Arc::new(engine(vec![
        a.endpoint.clone(),
        b.endpoint.clone(),
        c.endpoint.clone(),
    ]));
    // Two ringing calls: one on each dialer with room; the draining one gets none.
    let mut reqs = Vec::new();
    let mut calls = Vec::new();
    for i in 0..2 {
        let r = request(&sipp, &format!("5{i}"));
        reqs.push(r.cancel.clone());
        let e = engine.clone();
        calls.push(tokio::spawn(async move { e.place_call(r, None).await }));
    }
    until("both dialers busy", 10, || {
        a.service.active() == 1 && b.service.active() == 1
    })
    .await;
    assert_eq!(c.service.active(), 0, "the draining dialer takes no call");
    // A third call finds every dialer full or draining and fails after the wait.
    let third = engine.place_call(request(&sipp, "59"), None).await;
    assert_eq!(third.cause.as_deref(), Some("no_dialer"));
    assert_eq!(third.cdr.outcome, Outcome::Failed);
    // Hang-up through the cancel token reaches the dialer: CANCEL, outcome canceled.
    for t in &reqs {
        t.cancel();
    }
    let mut nodes = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.cdr.outcome, Outcome::Canceled, "{r:?}");
        nodes.push(r.cdr.node.clone());
    }
    nodes.sort();
    assert_eq!(nodes, ["dialer-a", "dialer-b"]);
    until("calls gone", 10, || {
        a.service.active() == 0 && b.service.active() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dialer_is_skipped_and_a_lost_one_reports_node_lost() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier("uas_ring_no_answer.xml", &dir);
    // A dialer that is registered but not listening: nothing is dialed there.
    let dead = DialerEndpoint {
        node: "dialer-0".into(),
        addr: format!("127.0.0.1:{}", outcall_testkit::free_port()),
        capacity: 100,
        active: 0,
    };
    let a = dialer("dialer-a", 10, None).await;
    // The scheduler reaches dialer-a through a link that can be cut (as if the node died).
    let link = Link::start(&a.endpoint.addr).await;
    let mut via_link = a.endpoint.clone();
    via_link.addr = link.addr.clone();
    let engine = Arc::new(engine(vec![dead, via_link]));
    let e = engine.clone();
    let r = request(&sipp, "61");
    let call = tokio::spawn(async move { e.place_call(r, None).await });
    until("the call rings on the live dialer", 10, || {
        a.service.active() == 1
    })
    .await;
    link.cut.cancel();
    let report = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("lost call reported within the keep-alive timeout")
        .unwrap();
    assert_eq!(report.cause.as_deref(), Some("node_lost"), "{report:?}");
    assert_eq!(report.cdr.outcome, Outcome::Failed);
    assert_eq!(report.cdr.node, "dialer-a");
    assert_eq!(report.cdr.attempt_id, "61");
    assert!(
        report.cdr.invite_at_ms.is_some(),
        "what the stream told is kept"
    );
    // The dialer saw its caller vanish and hung up.
    until("the dialer hangs up", 10, || a.service.active() == 0).await;
}

/// A TCP relay to a dialer; cancelling `cut` drops every connection at once.
struct Link {
    addr: String,
    cut: CancellationToken,
}

impl Link {
    async fn start(to: &str) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = CancellationToken::new();
        let (to, c) = (to.to_string(), cut.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    _ = c.cancelled() => return,
                };
                let (to, c) = (to.clone(), c.clone());
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(&to).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = c.cancelled() => {}
                    }
                });
            }
        });
        Link { addr, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_hangs_up_when_its_scheduler_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier("uas_ring_no_answer.xml", &dir);
    let a = dialer("dialer-a", 10, None).await;
    let engine = Arc::new(engine(vec![a.endpoint.clone()]));
    let e = engine.clone();
    let r = request(&sipp, "71");
    let call = tokio::spawn(async move { e.place_call(r, None).await });
    until("ringing", 10, || a.service.active() == 1).await;
    call.abort();
    until("the dialer hangs up", 10, || a.service.active() == 0).await;
}
