//! Scheduler behaviour on a paused tokio clock.
//!
//! The store is the in-memory implementation of the same trait as SQLite; the call engine is a
//! scripted stand-in that records when each call was dispatched and returns the outcome the
//! test asked for (the SIP engine itself is tested against SIPp elsewhere). Time only moves
//! when the runtime is idle, so hours of retries run in milliseconds and every timestamp is
//! exact.

use jiff::Timestamp;
use outcall_domain::call::{Call, CallEvent, HangupParty};
use outcall_domain::campaign::{CampaignSpec, CampaignStatus, ContactState, LifecycleAction};
use outcall_domain::cdr::CdrContext;
use outcall_domain::{mask_number, Cdr, Classifier, Outcome};
use outcall_pool::NumberVault;
use outcall_scheduler::{
    start, CallEventSink, Clock, SchedulerConfig, SchedulerDeps, SchedulerHandle, StatusEvent,
};
use outcall_store::memory::MemoryStore;
use outcall_store::{NewContact, Store, TrunkRecord};
use outcall_telephony::engine::{BoxFuture, CallReport, CallUpdate};
use outcall_telephony::{CallEngine, CallRequest, SipTransport, TrunkConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Dialed {
    at: Instant,
    wall: Timestamp,
    to: String,
    /// The caller ID presented as From, if the scheduler chose one.
    from: Option<String>,
    trunk: String,
    /// Whether the scheduler asked for live updates.
    updates: bool,
}

/// Answers every call after `hold` with the outcome scripted for its number (default: answered).
struct Scripted {
    clock: Clock,
    hold: Duration,
    outcomes: Mutex<HashMap<String, Vec<Outcome>>>,
    dialed: Mutex<Vec<Dialed>>,
    active: Mutex<(u32, u32)>,
}

impl Scripted {
    fn new(clock: Clock, hold: Duration) -> Arc<Self> {
        Arc::new(Scripted {
            clock,
            hold,
            outcomes: Mutex::default(),
            dialed: Mutex::default(),
            active: Mutex::default(),
        })
    }
    fn script(&self, number: &str, outcomes: &[Outcome]) {
        self.outcomes
            .lock()
            .unwrap()
            .insert(number.into(), outcomes.iter().rev().copied().collect());
    }
    fn dialed(&self) -> Vec<Dialed> {
        self.dialed.lock().unwrap().clone()
    }
    fn max_active(&self) -> u32 {
        self.active.lock().unwrap().1
    }
}

fn cdr_for(outcome: Outcome, at: u64) -> Cdr {
    let mut c = Call::new();
    c.apply(CallEvent::Dial, at).unwrap();
    if outcome.is_answered() {
        c.apply(CallEvent::Answer { status: 200 }, at + 1000)
            .unwrap();
        c.apply(
            CallEvent::Hangup {
                by: HangupParty::Local,
                q850: None,
            },
            at + 5000,
        )
        .unwrap();
    } else {
        // An empty number confirmed by its Q.850 cause 1, as carriers send it.
        let q850 = (outcome == Outcome::EmptyNumber).then_some(1);
        c.apply(CallEvent::Rejected { status: 486, q850 }, at + 100)
            .unwrap();
    }
    let mut cdr = Cdr::from_call(&c, &Classifier::default(), CdrContext::default());
    cdr.outcome = outcome;
    cdr
}

/// Applies `event` to the live call and streams the transition, as the SIP engine does.
fn stream(updates: &Option<UnboundedSender<CallUpdate>>, call: &mut Call, e: CallEvent, at: u64) {
    if let Some(tx) = updates {
        if call.apply(e, at).is_ok() {
            let t = call.history().last().unwrap().clone();
            let _ = tx.send(CallUpdate::Transition(t));
        }
    }
}

impl CallEngine for Scripted {
    fn place_call(
        &self,
        req: CallRequest,
        updates: Option<UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport> {
        Box::pin(async move {
            self.dialed.lock().unwrap().push(Dialed {
                at: Instant::now(),
                wall: self.clock.now(),
                to: req.to.clone(),
                from: req.caller_id.clone(),
                trunk: req.trunk.name.clone(),
                updates: updates.is_some(),
            });
            {
                let mut a = self.active.lock().unwrap();
                a.0 += 1;
                a.1 = a.1.max(a.0);
            }
            let scripted = self
                .outcomes
                .lock()
                .unwrap()
                .get_mut(&req.to)
                .and_then(|v| v.pop());
            // With live updates: answered calls ring (180, then a 183 that is still ringing)
            // and answer half-way through the hold; busy ones play early media first.
            let planned = scripted.unwrap_or(Outcome::AnsweredHuman);
            let ms = || self.clock.now().as_millisecond() as u64;
            let mut live = Call::new();
            stream(&updates, &mut live, CallEvent::Dial, ms());
            if planned.is_answered() {
                stream(
                    &updates,
                    &mut live,
                    CallEvent::Ringing { status: 180 },
                    ms(),
                );
                stream(
                    &updates,
                    &mut live,
                    CallEvent::EarlyMedia { status: 183 },
                    ms(),
                );
            } else if planned == Outcome::Busy {
                stream(
                    &updates,
                    &mut live,
                    CallEvent::EarlyMedia { status: 183 },
                    ms(),
                );
            }
            let outcome = tokio::select! {
                _ = async {
                    if planned.is_answered() && updates.is_some() {
                        tokio::time::sleep(self.hold / 2).await;
                        stream(&updates, &mut live, CallEvent::Answer { status: 200 }, ms());
                        tokio::time::sleep(self.hold - self.hold / 2).await;
                    } else {
                        tokio::time::sleep(self.hold).await;
                    }
                } => planned,
                _ = req.cancel.cancelled() => Outcome::Canceled,
            };
            self.active.lock().unwrap().0 -= 1;
            let cdr = cdr_for(outcome, self.clock.now().as_millisecond() as u64);
            CallReport {
                transitions: vec![],
                cdr,
                cause: None,
            }
        })
    }
}

struct Env {
    store: Arc<MemoryStore>,
    vault: Arc<NumberVault>,
    engine: Arc<Scripted>,
    clock: Clock,
    handle: Option<SchedulerHandle>,
    events: Option<Arc<dyn CallEventSink>>,
}

const START: &str = "2026-11-23T02:00:00Z"; // Monday 10:00 in Shanghai

impl Env {
    async fn new(hold: Duration) -> Env {
        Env::at(START, hold).await
    }

    async fn at(start: &str, hold: Duration) -> Env {
        let clock = Clock::starting_at(start.parse().unwrap());
        let store = Arc::new(MemoryStore::new());
        let mut t = TrunkConfig::new("t1", "127.0.0.1", 5060, SipTransport::Udp);
        t.max_concurrent = Some(1000);
        store.upsert_trunk(&trunk_record(&t)).await.unwrap();
        Env {
            store,
            vault: Arc::new(NumberVault::new(&[(1, [1; 32])], 1, [2; 32]).unwrap()),
            engine: Scripted::new(clock, hold),
            clock,
            handle: None,
            events: None,
        }
    }

    async fn start(&mut self, max_concurrent: u32) {
        self.start_config(SchedulerConfig {
            max_concurrent,
            ..SchedulerConfig::default()
        })
        .await
    }

    async fn start_config(&mut self, cfg: SchedulerConfig) {
        let deps = SchedulerDeps {
            store: self.store.clone(),
            engine: self.engine.clone(),
            vault: self.vault.clone(),
            clock: self.clock,
            events: self.events.clone(),
            queue: None,
            limiter: None,
        };
        self.handle = Some(start(deps, cfg).await.unwrap());
    }

    fn handle(&self) -> &SchedulerHandle {
        self.handle.as_ref().unwrap()
    }

    async fn campaign(&self, spec: serde_json::Value) -> i64 {
        let mut base = serde_json::json!({ "name": "c", "trunks": ["t1"], "max_cps": 1000, "max_concurrent": 1000 });
        base.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        let spec: CampaignSpec = serde_json::from_value(base).unwrap();
        spec.validate().unwrap();
        self.store
            .create_campaign(&spec, self.clock.now())
            .await
            .unwrap()
            .id
    }

    async fn add(&self, campaign: i64, numbers: &[(&str, i32, Option<&str>)]) {
        let contacts: Vec<NewContact> = numbers
            .iter()
            .map(|(n, prio, tz)| NewContact {
                number_hash: self.vault.blind_index(n),
                number_enc: self.vault.encrypt(n),
                masked: outcall_domain::mask_number(n),
                time_zone: tz.map(str::to_string),
                priority: *prio,
                variables: serde_json::json!({}),
                region: Default::default(),
                trace_id: None,
            })
            .collect();
        self.store
            .add_contacts(campaign, &contacts, self.clock.now())
            .await
            .unwrap();
    }

    async fn act(&self, campaign: i64, action: LifecycleAction) {
        let c = self.store.get_campaign(campaign).await.unwrap();
        let to = c.status.apply(action).unwrap();
        self.store
            .set_campaign_status(campaign, c.status, to, self.clock.now())
            .await
            .unwrap();
        if let Some(h) = &self.handle {
            h.reload(campaign);
        }
    }

    async fn status(&self, campaign: i64) -> CampaignStatus {
        self.store.get_campaign(campaign).await.unwrap().status
    }

    /// Lets the paused clock run until the campaign completes (or `limit` passes).
    async fn run_until_done(&self, campaign: i64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.status(campaign).await != CampaignStatus::Completed {
            assert!(
                Instant::now() < deadline,
                "campaign {campaign} did not complete in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn trunk_record(t: &TrunkConfig) -> TrunkRecord {
    TrunkRecord {
        name: t.name.clone(),
        config: serde_json::to_value(t).unwrap(),
    }
}

fn n(i: u32) -> String {
    format!("+86138{:08}", i)
}

#[tokio::test(start_paused = true)]
async fn dials_by_campaign_priority_then_contact_priority_then_due_time() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let low = env.campaign(serde_json::json!({ "priority": 1 })).await;
    let high = env.campaign(serde_json::json!({ "priority": 9 })).await;
    env.add(
        low,
        &[("+8613800000001", 0, None), ("+8613800000002", 5, None)],
    )
    .await;
    env.add(
        high,
        &[
            ("+8613800000003", 0, None),
            ("+8613800000004", 7, None),
            ("+8613800000005", 0, None),
        ],
    )
    .await;
    env.act(low, LifecycleAction::Start).await;
    env.act(high, LifecycleAction::Start).await;
    env.start(1).await; // one call at a time: the order is the queue's order
    env.run_until_done(low, Duration::from_secs(60)).await;
    let order: Vec<String> = env.engine.dialed().into_iter().map(|d| d.to).collect();
    assert_eq!(
        order,
        [
            "+8613800000004",
            "+8613800000003",
            "+8613800000005",
            "+8613800000002",
            "+8613800000001"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_id_pool_is_rotated_and_read_again_when_the_campaign_reloads() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let pool = |numbers: &[&str]| outcall_store::NewCallerIdPool {
        name: "sales".into(),
        description: None,
        numbers: numbers.iter().map(|n| n.to_string()).collect(),
    };
    env.store
        .upsert_caller_id_pool(&pool(&["02150000001", "02150000002"]), env.clock.now())
        .await
        .unwrap();
    let first = env
        .campaign(serde_json::json!({ "caller_id_pool": "sales" }))
        .await;
    let second = env
        .campaign(serde_json::json!({ "caller_id_pool": "sales" }))
        .await;
    let own = env
        .campaign(serde_json::json!({ "caller_ids": ["02199999999"] }))
        .await;
    let numbers: Vec<String> = (1..=7).map(n).collect();
    let rows = |r: std::ops::Range<usize>| -> Vec<(&str, i32, Option<&str>)> {
        numbers[r].iter().map(|x| (x.as_str(), 0, None)).collect()
    };
    env.add(first, &rows(0..4)).await;
    env.add(second, &rows(4..6)).await;
    env.add(own, &rows(6..7)).await;
    env.act(first, LifecycleAction::Start).await;
    env.act(own, LifecycleAction::Start).await;
    // The scheduler loads every campaign (the second one too, still a draft) with the pool as
    // it is now.
    env.start(1).await;
    env.run_until_done(first, Duration::from_secs(60)).await;
    env.run_until_done(own, Duration::from_secs(60)).await;
    let from = |campaign_numbers: &[String]| -> Vec<Option<String>> {
        env.engine
            .dialed()
            .into_iter()
            .filter(|d| campaign_numbers.contains(&d.to))
            .map(|d| d.from)
            .collect()
    };
    let some =
        |v: &[&str]| -> Vec<Option<String>> { v.iter().map(|x| Some(x.to_string())).collect() };
    assert_eq!(
        from(&numbers[0..4]),
        some(&["02150000001", "02150000002", "02150000001", "02150000002"]),
        "rotated through the pool"
    );
    assert_eq!(
        from(&numbers[6..7]),
        some(&["02199999999"]),
        "its own caller IDs"
    );
    // The pool changes; the second campaign sees it when it is reloaded (here: started).
    env.store
        .upsert_caller_id_pool(&pool(&["02150000009"]), env.clock.now())
        .await
        .unwrap();
    env.act(second, LifecycleAction::Start).await;
    env.run_until_done(second, Duration::from_secs(60)).await;
    assert_eq!(from(&numbers[4..6]), some(&["02150000009", "02150000009"]));
}

#[tokio::test(start_paused = true)]
async fn busy_is_retried_after_its_delay_and_no_more_than_allowed() {
    let mut env = Env::new(Duration::from_secs(2)).await;
    let c = env
        .campaign(serde_json::json!({
            "retry": { "rules": { "busy": { "delay_secs": 600, "retries": 3 },
                                  "no_answer": { "delay_secs": 7200, "retries": 1 } } }
        }))
        .await;
    env.engine.script("+8613800000001", &[Outcome::Busy; 10]);
    env.engine.script(
        "+8613800000002",
        &[Outcome::NoAnswer, Outcome::NoAnswer, Outcome::NoAnswer],
    );
    env.engine.script("+8613800000003", &[Outcome::EmptyNumber]);
    env.add(
        c,
        &[
            ("+8613800000001", 0, None),
            ("+8613800000002", 0, None),
            ("+8613800000003", 0, None),
        ],
    )
    .await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(c, Duration::from_secs(6 * 3600)).await;
    let dialed = env.engine.dialed();
    let times = |num: &str| -> Vec<Timestamp> {
        dialed
            .iter()
            .filter(|d| d.to == num)
            .map(|d| d.wall)
            .collect()
    };
    let busy = times("+8613800000001");
    assert_eq!(busy.len(), 4, "first call and three retries");
    for w in busy.windows(2) {
        let gap = w[1].duration_since(w[0]).as_secs_f64();
        // 2 s of call, then the 600 s delay, then at most one refill interval.
        assert!((602.0..603.0).contains(&gap), "busy retry gap {gap}");
    }
    let na = times("+8613800000002");
    assert_eq!(na.len(), 2);
    let gap = na[1].duration_since(na[0]).as_secs_f64();
    assert!((7202.0..7203.0).contains(&gap), "no-answer retry gap {gap}");
    assert_eq!(
        times("+8613800000003").len(),
        1,
        "empty numbers are never retried"
    );
    let counts = env.store.campaign_counts(c).await.unwrap();
    assert_eq!(counts.final_outcomes.get("busy"), Some(&1));
    assert_eq!(counts.final_outcomes.get("no_answer"), Some(&1));
    assert_eq!(counts.final_outcomes.get("empty_number"), Some(&1));
    assert_eq!(counts.attempts, 7);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_caps_retries_across_outcomes() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let c = env
        .campaign(serde_json::json!({
            "retry": { "max_attempts": 3, "rules": {
                "busy": { "delay_secs": 60, "retries": 5 }, "no_answer": { "delay_secs": 60, "retries": 5 } } }
        }))
        .await;
    env.engine.script(
        "+8613800000001",
        &[
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Busy,
            Outcome::Busy,
        ],
    );
    env.add(c, &[("+8613800000001", 0, None)]).await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(c, Duration::from_secs(3600)).await;
    assert_eq!(env.engine.dialed().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn closed_window_defers_to_the_next_opening_in_the_callee_zone_never_dials() {
    // 22:00 in Shanghai, 14:00 in London, on Monday 2026-11-23.
    let mut env = Env::at("2026-11-23T14:00:00Z", Duration::from_secs(1)).await;
    let c = env
        .campaign(serde_json::json!({
            "windows": { "time_zone": "Asia/Shanghai", "weekly": { "daily": ["09:00-21:00"] } }
        }))
        .await;
    env.add(
        c,
        &[
            ("+8613800000001", 0, Some("Asia/Shanghai")),
            ("+442079460000", 0, Some("Europe/London")),
        ],
    )
    .await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(c, Duration::from_secs(24 * 3600)).await;
    let dialed = env.engine.dialed();
    let london = dialed.iter().find(|d| d.to == "+442079460000").unwrap();
    assert!(
        london.wall < "2026-11-23T14:00:01Z".parse().unwrap(),
        "London is open: dialed at once"
    );
    let shanghai = dialed.iter().find(|d| d.to == "+8613800000001").unwrap();
    // Across midnight: next opening is Tuesday 09:00 Shanghai = 01:00 UTC.
    let expected: Timestamp = "2026-11-24T01:00:00Z".parse().unwrap();
    let late = shanghai.wall.duration_since(expected).as_secs_f64();
    assert!(
        (0.0..1.0).contains(&late),
        "dialed at {} (expected {expected})",
        shanghai.wall
    );
    assert_eq!(env.handle().live(c).deferred_window, 1);
}

#[tokio::test(start_paused = true)]
async fn frequency_cap_spans_campaigns() {
    let mut env = Env::new(Duration::from_secs(5)).await;
    let cap = serde_json::json!({ "frequency_caps": [{ "max_calls": 1, "per_secs": 3600 }] });
    let a = env.campaign(cap.clone()).await;
    let b = env.campaign(cap).await;
    env.add(a, &[("+8613800000001", 0, None)]).await;
    env.add(
        b,
        &[("+8613800000001", 0, None), ("+8613800000002", 0, None)],
    )
    .await;
    env.act(a, LifecycleAction::Start).await;
    env.act(b, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(a, Duration::from_secs(60)).await;
    env.run_until_done(b, Duration::from_secs(3 * 3600)).await;
    let times: Vec<Timestamp> = env
        .engine
        .dialed()
        .iter()
        .filter(|d| d.to == "+8613800000001")
        .map(|d| d.wall)
        .collect();
    assert_eq!(times.len(), 2);
    let gap = times[1].duration_since(times[0]).as_secs_f64();
    assert!(
        gap >= 3600.0,
        "second call to the same number only after the cap's hour: {gap}"
    );
    let other = env
        .engine
        .dialed()
        .into_iter()
        .find(|d| d.to == "+8613800000002")
        .unwrap();
    assert!(
        other.wall.duration_since(times[0]).as_secs_f64() < 1.0,
        "other numbers are not held"
    );
}

#[tokio::test(start_paused = true)]
async fn cps_and_concurrency_are_never_exceeded() {
    let mut env = Env::new(Duration::from_secs(2)).await;
    let c = env
        .campaign(serde_json::json!({ "max_cps": 10, "max_concurrent": 5 }))
        .await;
    let numbers: Vec<String> = (0..100).map(n).collect();
    let list: Vec<(&str, i32, Option<&str>)> =
        numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
    env.add(c, &list).await;
    env.act(c, LifecycleAction::Start).await;
    env.start(100).await;
    env.run_until_done(c, Duration::from_secs(600)).await;
    let d = env.engine.dialed();
    assert_eq!(d.len(), 100);
    assert!(
        env.engine.max_active() <= 5,
        "max concurrent {}",
        env.engine.max_active()
    );
    assert_eq!(
        env.engine.max_active(),
        5,
        "the concurrency limit is used fully"
    );
    for w in d.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(99),
            "calls {gap:?} apart exceed 10 CPS"
        );
    }
    // In every window of one second, at most 10 dispatches.
    for (i, a) in d.iter().enumerate() {
        let within = d[i..]
            .iter()
            .take_while(|b| b.at - a.at < Duration::from_secs(1))
            .count();
        assert!(within <= 10, "{within} dispatches within one second");
    }
}

#[tokio::test(start_paused = true)]
async fn trunk_and_node_limits_hold_across_campaigns() {
    let mut env = Env::new(Duration::from_secs(3)).await;
    let mut t = TrunkConfig::new("t2", "127.0.0.1", 5060, SipTransport::Udp);
    t.max_concurrent = Some(2);
    env.store.upsert_trunk(&trunk_record(&t)).await.unwrap();
    let a = env.campaign(serde_json::json!({ "trunks": ["t2"] })).await;
    let b = env.campaign(serde_json::json!({ "trunks": ["t2"] })).await;
    let numbers: Vec<String> = (0..20).map(n).collect();
    let list: Vec<(&str, i32, Option<&str>)> =
        numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
    env.add(a, &list[..10]).await;
    env.add(b, &list[10..]).await;
    env.act(a, LifecycleAction::Start).await;
    env.act(b, LifecycleAction::Start).await;
    env.start(100).await;
    env.run_until_done(a, Duration::from_secs(600)).await;
    env.run_until_done(b, Duration::from_secs(600)).await;
    assert_eq!(
        env.engine.max_active(),
        2,
        "the trunk's two channels bound both campaigns"
    );
    assert!(env.engine.dialed().iter().all(|d| d.trunk == "t2"));
}

#[tokio::test(start_paused = true)]
async fn pause_stops_dispatching_and_resume_continues() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let c = env
        .campaign(serde_json::json!({ "max_cps": 1, "max_concurrent": 1 }))
        .await;
    let numbers: Vec<String> = (0..10).map(n).collect();
    let list: Vec<(&str, i32, Option<&str>)> =
        numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
    env.add(c, &list).await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    env.act(c, LifecycleAction::Pause).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let at_pause = env.engine.dialed().len();
    assert!((3..=4).contains(&at_pause), "{at_pause}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        env.engine.dialed().len(),
        at_pause,
        "nothing dialed while paused"
    );
    assert_eq!(env.status(c).await, CampaignStatus::Paused);
    env.act(c, LifecycleAction::Resume).await;
    env.run_until_done(c, Duration::from_secs(120)).await;
    assert_eq!(env.engine.dialed().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_dispatching_and_hangs_up_calls_in_flight() {
    let mut env = Env::new(Duration::from_secs(30)).await;
    let c = env
        .campaign(serde_json::json!({ "max_cps": 100, "max_concurrent": 3 }))
        .await;
    let numbers: Vec<String> = (0..10).map(n).collect();
    let list: Vec<(&str, i32, Option<&str>)> =
        numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
    env.add(c, &list).await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.engine.dialed().len(), 3);
    env.act(c, LifecycleAction::Cancel).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(env.engine.dialed().len(), 3, "nothing dialed after cancel");
    let counts = env.store.campaign_counts(c).await.unwrap();
    assert_eq!(
        counts.final_outcomes.get("canceled"),
        Some(&3),
        "{counts:?}"
    );
    assert_eq!(counts.contacts.get("pending"), Some(&7));
    assert_eq!(env.status(c).await, CampaignStatus::Canceled);
}

#[tokio::test(start_paused = true)]
async fn attempts_left_open_by_a_crash_are_closed_and_rescheduled() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let c = env.campaign(serde_json::json!({})).await;
    env.add(
        c,
        &[("+8613800000001", 0, None), ("+8613800000002", 0, None)],
    )
    .await;
    env.act(c, LifecycleAction::Start).await;
    // A previous process opened an attempt and died.
    let due = env
        .store
        .due_contacts(c, env.clock.now(), 10)
        .await
        .unwrap();
    let crashed = env
        .store
        .begin_attempt(due[0].id, "old-node", env.clock.now())
        .await
        .unwrap()
        .unwrap();
    env.start(10).await;
    let attempts = env.store.list_attempts(c, None, 10).await.unwrap();
    let old = attempts
        .iter()
        .find(|a| a.id == crashed.attempt_id)
        .unwrap();
    assert_eq!(old.outcome, Some(Outcome::Failed));
    assert_eq!(old.cause.as_deref(), Some("node_restart"));
    env.run_until_done(c, Duration::from_secs(600)).await;
    // The crashed contact was dialed again by a new attempt after the `failed` delay (120 s).
    let dialed = env.engine.dialed();
    assert_eq!(dialed.len(), 2);
    let contact = env.store.get_contact(due[0].id).await.unwrap();
    assert_eq!(contact.state, ContactState::Done);
    assert_eq!(contact.attempts, 2);
    assert_eq!(env.store.open_attempts().await.unwrap().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_of_many_nodes_picks_up_changes_from_the_store_and_closes_only_its_own_attempts(
) {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let c = env.campaign(serde_json::json!({})).await;
    env.add(
        c,
        &[
            ("+8613800000001", 0, None),
            ("+8613800000002", 0, None),
            ("+8613800000003", 0, None),
        ],
    )
    .await;
    env.act(c, LifecycleAction::Start).await;
    let due = env
        .store
        .due_contacts(c, env.clock.now(), 10)
        .await
        .unwrap();
    // This node's attempt from before its restart, and a live one of another scheduler.
    let mine = env
        .store
        .begin_attempt(due[0].id, "sched-1", env.clock.now())
        .await
        .unwrap()
        .unwrap();
    let theirs = env
        .store
        .begin_attempt(due[1].id, "sched-2", env.clock.now())
        .await
        .unwrap()
        .unwrap();
    env.act(c, LifecycleAction::Pause).await;
    env.start_config(SchedulerConfig {
        node: "sched-1".into(),
        sync_interval: Some(Duration::from_secs(1)),
        reconcile_all: false,
        ..SchedulerConfig::default()
    })
    .await;
    let open: Vec<i64> = env
        .store
        .open_attempts()
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt_id)
        .collect();
    assert_eq!(open, vec![theirs.attempt_id], "only its own attempt closed");
    let closed = env.store.list_attempts(c, None, 10).await.unwrap();
    let closed = closed.iter().find(|a| a.id == mine.attempt_id).unwrap();
    assert_eq!(closed.cause.as_deref(), Some("node_restart"));
    // Another node (an API node) resumes the campaign in the store only: no reload message.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(env.engine.dialed().is_empty(), "paused: nothing dialed");
    let now = env.clock.now();
    env.store
        .set_campaign_status(c, CampaignStatus::Paused, CampaignStatus::Running, now)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.engine.dialed().len(),
        1,
        "the resumed campaign is dialed within the sync interval"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_calls_finish_and_dials_nothing_new() {
    let mut env = Env::new(Duration::from_secs(5)).await;
    let c = env
        .campaign(serde_json::json!({ "max_concurrent": 2 }))
        .await;
    let numbers: Vec<String> = (0..6).map(n).collect();
    let list: Vec<(&str, i32, Option<&str>)> =
        numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
    env.add(c, &list).await;
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.handle().shutdown(Duration::from_secs(30)).await;
    assert_eq!(env.engine.dialed().len(), 2);
    let counts = env.store.campaign_counts(c).await.unwrap();
    assert_eq!(
        counts.final_outcomes.get("answered_human"),
        Some(&2),
        "calls in flight finished"
    );
    assert!(env.store.open_attempts().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_number_blacklisted_after_import_is_never_dialed() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let c = env.campaign(serde_json::json!({})).await;
    env.add(
        c,
        &[
            ("+8613800000001", 0, None),
            ("+8617000000002", 0, None),
            ("+8613800000003", 0, None),
        ],
    )
    .await;
    let entry = |hash: Option<Vec<u8>>, prefix: Option<&str>| outcall_store::NewBlacklistEntry {
        campaign_id: None,
        number_enc: None,
        number_hash: hash,
        prefix: prefix.map(str::to_string),
        label: "x".into(),
        reason: "do not call".into(),
        source: "test".into(),
        expires_at: None,
    };
    env.store
        .add_blacklist(
            &[
                entry(Some(env.vault.blind_index("+8613800000001")), None),
                entry(None, Some("+86170")),
            ],
            env.clock.now(),
        )
        .await
        .unwrap();
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(c, Duration::from_secs(60)).await;
    let dialed: Vec<String> = env.engine.dialed().into_iter().map(|d| d.to).collect();
    assert_eq!(dialed, ["+8613800000003"]);
    let counts = env.store.campaign_counts(c).await.unwrap();
    assert_eq!(counts.final_outcomes.get("blocked"), Some(&2));
    let attempts = env.store.list_attempts(c, None, 10).await.unwrap();
    let blocked: Vec<_> = attempts
        .iter()
        .filter(|a| a.outcome == Some(Outcome::Blocked))
        .collect();
    assert_eq!(blocked.len(), 2);
    assert!(blocked
        .iter()
        .all(|a| a.cause.as_deref() == Some("blacklist") && a.cdr.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_empty_number_is_learned_and_skipped_by_later_campaigns() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    env.engine.script("+8613800000001", &[Outcome::EmptyNumber]);
    env.engine
        .script("+8613800000002", &[Outcome::TrunkError; 4]); // a bare 404: not learned
    let first = env.campaign(serde_json::json!({})).await;
    env.add(
        first,
        &[("+8613800000001", 0, None), ("+8613800000002", 0, None)],
    )
    .await;
    env.act(first, LifecycleAction::Start).await;
    env.start(10).await;
    // The trunk error is retried (5 min × 3 by default) before the campaign completes.
    env.run_until_done(first, Duration::from_secs(3600)).await;
    let since: Timestamp = START.parse().unwrap();
    let h = env.vault.blind_index("+8613800000001");
    let st = env.store.number_status(&h, since).await.unwrap().unwrap();
    assert_eq!(st.status, "empty");
    let h = env.vault.blind_index("+8613800000002");
    let st = env.store.number_status(&h, since).await.unwrap().unwrap();
    assert_eq!(st.status, "unknown");

    let later = env.campaign(serde_json::json!({})).await;
    let anyway = env
        .campaign(serde_json::json!({ "dial_known_empty": true }))
        .await;
    for c in [later, anyway] {
        env.add(
            c,
            &[("+8613800000001", 0, None), ("+8613800000002", 0, None)],
        )
        .await;
        env.act(c, LifecycleAction::Start).await;
        env.run_until_done(c, Duration::from_secs(3600)).await;
    }
    let dialed = |n: &str| env.engine.dialed().iter().filter(|d| d.to == n).count();
    assert_eq!(
        dialed("+8613800000001"),
        2,
        "first campaign and the one that dials anyway"
    );
    let counts = env.store.campaign_counts(later).await.unwrap();
    assert_eq!(counts.final_outcomes.get("blocked"), Some(&1), "{counts:?}");
    let attempts = env.store.list_attempts(later, None, 10).await.unwrap();
    assert!(attempts
        .iter()
        .any(|a| a.cause.as_deref() == Some("known_empty")));
}

/// Records status events with the (paused) tokio instant they were emitted at.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(Instant, StatusEvent)>>,
}

impl CallEventSink for Recorder {
    fn emit(&self, event: StatusEvent) {
        self.events.lock().unwrap().push((Instant::now(), event));
    }
}

impl Recorder {
    /// Event kinds of each attempt, in emission order.
    fn by_attempt(&self) -> HashMap<i64, Vec<&'static str>> {
        let mut m: HashMap<i64, Vec<&'static str>> = HashMap::new();
        for (_, e) in self.events.lock().unwrap().iter() {
            m.entry(e.attempt_id).or_default().push(e.kind.as_str());
        }
        m
    }
}

#[tokio::test(start_paused = true)]
async fn status_events_follow_each_attempt_from_initiated_to_completed() {
    let hold = Duration::from_secs(4);
    let mut env = Env::new(hold).await;
    let rec = Arc::new(Recorder::default());
    env.events = Some(rec.clone());
    let c = env
        .campaign(serde_json::json!({
            "retry": { "rules": { "busy": { "delay_secs": 60, "retries": 1 } } }
        }))
        .await;
    env.engine.script("+8613800000002", &[Outcome::Busy]); // then answered
    env.engine.script("+8613800000003", &[Outcome::NoAnswer]);
    env.add(
        c,
        &[
            ("+8613800000001", 0, None),
            ("+8613800000002", 0, None),
            ("+8613800000003", 0, None),
            ("+8613800000004", 0, None),
        ],
    )
    .await;
    // A number the vault cannot read.
    let garbled = NewContact {
        number_hash: vec![9; 32],
        number_enc: vec![1, 2, 3],
        masked: "+86138****0005".into(),
        time_zone: None,
        priority: 0,
        variables: serde_json::json!({}),
        region: Default::default(),
        trace_id: None,
    };
    env.store
        .add_contacts(c, &[garbled], env.clock.now())
        .await
        .unwrap();
    env.store
        .add_blacklist(
            &[outcall_store::NewBlacklistEntry {
                campaign_id: None,
                number_hash: Some(env.vault.blind_index("+8613800000004")),
                number_enc: None,
                prefix: None,
                label: "x".into(),
                reason: "asked".into(),
                source: "test".into(),
                expires_at: None,
            }],
            env.clock.now(),
        )
        .await
        .unwrap();
    env.act(c, LifecycleAction::Start).await;
    env.start(10).await;
    env.run_until_done(c, Duration::from_secs(600)).await;
    // Events are emitted once the attempt is recorded; the campaign completes right after.
    tokio::time::sleep(Duration::from_millis(10)).await;

    assert!(env.engine.dialed().iter().all(|d| d.updates));
    let attempts = env.store.list_attempts(c, None, 100).await.unwrap();
    assert_eq!(attempts.len(), 6, "{attempts:?}");
    let kinds = rec.by_attempt();
    assert_eq!(kinds.len(), attempts.len(), "every attempt has events");
    let events = rec.events.lock().unwrap().clone();
    let dialed = env.engine.dialed();
    for a in &attempts {
        let contact = env.store.get_contact(a.contact_id).await.unwrap();
        let want: &[&str] = match (contact.masked.as_str(), a.seq) {
            ("+86138****0001", 1) | ("+86138****0002", 2) => {
                &["initiated", "ringing", "answered", "completed"]
            }
            ("+86138****0002", 1) => &["initiated", "ringing", "completed"], // early media, busy
            ("+86138****0003", 1) => &["initiated", "completed"],            // never rang
            ("+86138****0004", 1) | ("+86138****0005", 1) => &["completed"], // not dialed
            other => panic!("unexpected attempt {other:?}"),
        };
        assert_eq!(
            kinds[&a.id], want,
            "attempt {} of {}",
            a.seq, contact.masked
        );
        let mine: Vec<&(Instant, StatusEvent)> = events
            .iter()
            .filter(|(_, e)| e.attempt_id == a.id)
            .collect();
        for (_, e) in &mine {
            assert_eq!(
                (e.campaign_id, e.contact_id, e.seq),
                (c, a.contact_id, a.seq)
            );
            assert_eq!(e.number, contact.masked, "masked, never the clear number");
        }
        let (_, done) = mine.last().unwrap();
        assert_eq!(done.outcome, a.outcome);
        assert_eq!(done.cause, a.cause);
        assert_eq!(done.cdr, a.cdr);
        assert_eq!(done.at, a.ended_at.unwrap());
        assert!(mine[..mine.len() - 1]
            .iter()
            .all(|(_, e)| e.outcome.is_none() && e.cdr.is_none()));
        // Live: initiated and ringing as the call is dialed, answered half-way through it,
        // completed when it ends.
        let calls: Vec<&Dialed> = dialed
            .iter()
            .filter(|d| mask_number(&d.to) == contact.masked)
            .collect();
        if let Some(d) = calls.get(a.seq as usize - 1) {
            assert_eq!(d.wall, a.started_at);
            for (at, e) in &mine {
                let expected = match e.kind.as_str() {
                    "initiated" | "ringing" => d.at,
                    "answered" => d.at + hold / 2,
                    _ => d.at + hold,
                };
                assert_eq!(*at, expected, "{} of attempt {}", e.kind, a.id);
            }
        } else {
            assert!(a.cdr.is_none(), "attempt {} was not dialed", a.id);
        }
    }
    let blocked = attempts
        .iter()
        .find(|a| a.cause.as_deref() == Some("blacklist"))
        .unwrap();
    let done = &events
        .iter()
        .find(|(_, e)| e.attempt_id == blocked.id)
        .unwrap()
        .1;
    assert_eq!(done.outcome, Some(Outcome::Blocked));
    assert!(done.cdr.is_none());
    assert!(events
        .iter()
        .any(|(_, e)| e.cause.as_deref() == Some("number_unreadable")
            && e.outcome == Some(Outcome::Failed)));

    // Without a sink, the engine is not asked for live updates.
    let mut plain = Env::new(hold).await;
    let c = plain.campaign(serde_json::json!({})).await;
    plain.add(c, &[("+8613800000001", 0, None)]).await;
    plain.act(c, LifecycleAction::Start).await;
    plain.start(10).await;
    plain.run_until_done(c, Duration::from_secs(60)).await;
    assert_eq!(plain.engine.dialed().len(), 1);
    assert!(!plain.engine.dialed()[0].updates);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_closed_after_a_crash_completes_with_node_restart() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    let rec = Arc::new(Recorder::default());
    env.events = Some(rec.clone());
    let c = env.campaign(serde_json::json!({})).await;
    env.add(c, &[("+8613800000001", 0, None)]).await;
    env.act(c, LifecycleAction::Start).await;
    let due = env
        .store
        .due_contacts(c, env.clock.now(), 10)
        .await
        .unwrap();
    let crashed = env
        .store
        .begin_attempt(due[0].id, "old-node", env.clock.now())
        .await
        .unwrap()
        .unwrap();
    env.start(10).await;
    let events = rec.events.lock().unwrap().clone();
    let (_, e) = events
        .iter()
        .find(|(_, e)| e.attempt_id == crashed.attempt_id)
        .expect("an event for the reconciled attempt");
    assert_eq!(e.kind.as_str(), "completed");
    assert_eq!(e.outcome, Some(Outcome::Failed));
    assert_eq!(e.cause.as_deref(), Some("node_restart"));
    assert_eq!(e.number, "+86138****0001");
    assert_eq!((e.contact_id, e.seq), (due[0].id, 1));
    env.run_until_done(c, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let kinds = rec.by_attempt();
    assert_eq!(kinds[&crashed.attempt_id], ["completed"]);
    let retry = kinds.keys().find(|id| **id != crashed.attempt_id).unwrap();
    assert_eq!(
        kinds[retry],
        ["initiated", "ringing", "answered", "completed"]
    );
}

// ---------------------------------------------------------------------------------------------
// Trunk health: degradation and the circuit breaker

/// How a trunk of [`Flaky`] treats calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Every call answered.
    Healthy,
    /// Every call fails (trunk error and congestion in turn, SIP 503).
    Down,
    /// Calls 0, 1, 2 of every 5 the trunk carries fail: 60 %, never five in a row.
    ThreeInFive,
}

/// A call engine whose trunks fail as the test says, holding every call for `hold`.
struct Flaky {
    clock: Clock,
    hold: Duration,
    modes: Mutex<HashMap<String, Mode>>,
    carried: Mutex<HashMap<String, usize>>,
    dialed: Mutex<Vec<Dialed>>,
}

impl Flaky {
    fn new(clock: Clock, hold: Duration) -> Arc<Self> {
        Arc::new(Flaky {
            clock,
            hold,
            modes: Mutex::default(),
            carried: Mutex::default(),
            dialed: Mutex::default(),
        })
    }
    fn set(&self, trunk: &str, mode: Mode) {
        self.modes.lock().unwrap().insert(trunk.into(), mode);
    }
    fn dialed(&self) -> Vec<Dialed> {
        self.dialed.lock().unwrap().clone()
    }
}

impl CallEngine for Flaky {
    fn place_call(
        &self,
        req: CallRequest,
        _updates: Option<UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport> {
        Box::pin(async move {
            let trunk = req.trunk.name.clone();
            self.dialed.lock().unwrap().push(Dialed {
                at: Instant::now(),
                wall: self.clock.now(),
                to: req.to.clone(),
                from: req.caller_id.clone(),
                trunk: trunk.clone(),
                updates: false,
            });
            let i = {
                let mut c = self.carried.lock().unwrap();
                let n = c.entry(trunk.clone()).or_default();
                *n += 1;
                *n - 1
            };
            let mode = self
                .modes
                .lock()
                .unwrap()
                .get(&trunk)
                .copied()
                .unwrap_or(Mode::Healthy);
            let fails = match mode {
                Mode::Healthy => false,
                Mode::Down => true,
                Mode::ThreeInFive => i % 5 < 3,
            };
            tokio::time::sleep(self.hold).await;
            let at = self.clock.now().as_millisecond() as u64;
            let cdr = if fails {
                let outcome = if i % 2 == 0 {
                    Outcome::TrunkError
                } else {
                    Outcome::Congestion
                };
                let mut cdr = cdr_for(outcome, at);
                cdr.sip_status = Some(503);
                cdr
            } else {
                cdr_for(Outcome::AnsweredHuman, at)
            };
            CallReport {
                transitions: vec![],
                cdr,
                cause: None,
            }
        })
    }
}

impl Env {
    async fn trunk(&self, name: &str, max_concurrent: Option<u32>, max_cps: Option<f64>) {
        let mut t = TrunkConfig::new(name, "127.0.0.1", 5060, SipTransport::Udp);
        t.max_concurrent = max_concurrent;
        t.max_cps = max_cps;
        self.store.upsert_trunk(&trunk_record(&t)).await.unwrap();
    }

    /// A running campaign on `trunks` with `count` contacts, 50 calls at a time and no retries.
    async fn running(&self, trunks: &[&str], max_cps: f64, count: u32) -> i64 {
        let c = self
            .campaign(serde_json::json!({
                "trunks": trunks, "max_cps": max_cps, "max_concurrent": 50,
                "retry": { "rules": {} }
            }))
            .await;
        let numbers: Vec<String> = (0..count).map(n).collect();
        let list: Vec<(&str, i32, Option<&str>)> =
            numbers.iter().map(|s| (s.as_str(), 0, None)).collect();
        self.add(c, &list).await;
        self.act(c, LifecycleAction::Start).await;
        c
    }

    async fn start_with(&mut self, engine: Arc<dyn CallEngine>) -> Instant {
        let deps = SchedulerDeps {
            store: self.store.clone(),
            engine,
            vault: self.vault.clone(),
            clock: self.clock,
            events: None,
            queue: None,
            limiter: None,
        };
        self.handle = Some(start(deps, SchedulerConfig::default()).await.unwrap());
        Instant::now()
    }

    async fn system_events(&self) -> Vec<outcall_store::SystemEvent> {
        let q = outcall_store::EventQuery {
            limit: 1000,
            ..Default::default()
        };
        outcall_store::EventStore::list_events(&*self.store, &q)
            .await
            .unwrap()
    }
}

/// Seconds since `t0`.
fn since(t0: Instant, d: &Dialed) -> f64 {
    (d.at - t0).as_secs_f64()
}

/// Dials within [from, to) seconds after `t0`.
fn dials_between(d: &[Dialed], t0: Instant, from: f64, to: f64) -> Vec<&Dialed> {
    d.iter()
        .filter(|x| (from..to).contains(&since(t0, x)))
        .collect()
}

async fn until(t0: Instant, secs: f64) {
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
}

fn kinds(events: &[outcall_store::SystemEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Seconds after `start` at which an event happened.
fn event_secs(start: Timestamp, e: &outcall_store::SystemEvent) -> f64 {
    e.at.duration_since(start).as_secs_f64()
}

fn assert_near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() < 0.05,
        "{what}: {got} s, expected {want} s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_trunk_opens_its_circuit_probes_after_open_secs_and_closes_on_success() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    env.trunk("dead", Some(1), None).await;
    let c = env.running(&["dead"], 1000.0, 200).await;
    let engine = Flaky::new(env.clock, Duration::from_secs(1));
    engine.set("dead", Mode::Down);
    let start_wall = env.clock.now();
    let t0 = env.start_with(engine.clone()).await;

    // One call at a time, each failing after 1 s: five failures by t = 5 s open the circuit.
    until(t0, 34.9).await;
    let d = engine.dialed();
    let at: Vec<f64> = d.iter().map(|x| since(t0, x)).collect();
    assert_eq!(at.len(), 5, "nothing dispatched while open: {at:?}");
    for (i, a) in at.iter().enumerate() {
        assert_near(*a, i as f64, "failing call");
    }
    let h = env.handle().trunk_health();
    assert_eq!(h.len(), 2, "t1 and dead: {h:?}");
    let dead = h.iter().find(|v| v.trunk == "dead").unwrap();
    assert_eq!(dead.circuit, outcall_scheduler::Circuit::Open);
    assert_eq!(dead.factor, 0.1);
    // The campaign waits: its contacts stay pending, none is marked failed for it.
    let counts = env.store.campaign_counts(c).await.unwrap();
    assert_eq!(counts.attempts, 5);
    assert_eq!(counts.contacts.get("pending"), Some(&195));
    assert_eq!(env.status(c).await, CampaignStatus::Running);

    // Half-open after 30 s: exactly one probe, which fails: open again for 60 s.
    until(t0, 95.9).await;
    let d = engine.dialed();
    assert_eq!(d.len(), 6, "one probe while half-open");
    assert_near(since(t0, &d[5]), 35.0, "first probe");

    // The trunk is back before the second probe; the probe's success closes the circuit.
    engine.set("dead", Mode::Healthy);
    until(t0, 240.0).await;
    let d = engine.dialed();
    assert_near(since(t0, &d[6]), 96.0, "second probe");
    let after: Vec<f64> = d[6..].iter().map(|x| since(t0, x)).collect();
    // Traffic comes back gradually: at 10 % of the measured 1 call/s first, then faster, until
    // one channel is busy all the time again (one call per second).
    let first_gap = after[2] - after[1];
    assert!(first_gap >= 5.0, "slow start after closing: {after:?}");
    let tail = dials_between(&d, t0, 220.0, 240.0).len();
    assert!(
        (19..=21).contains(&tail),
        "full rate again: {tail} calls in 20 s"
    );

    let ev = env.system_events().await;
    assert_eq!(
        kinds(&ev),
        [
            "trunk.circuit_open",
            "trunk.degraded",
            "trunk.circuit_half_open",
            "trunk.circuit_open",
            "trunk.circuit_half_open",
            "trunk.circuit_closed",
            "trunk.recovered",
        ]
    );
    assert!(ev.iter().all(|e| e.subject == "dead"));
    let secs: Vec<f64> = ev.iter().map(|e| event_secs(start_wall, e)).collect();
    for (got, want) in secs.iter().zip([5.0, 5.0, 35.0, 36.0, 96.0, 97.0]) {
        assert_near(*got, want, "event time");
    }
    assert!(secs[6] > 180.0 && secs[6] < 200.0, "recovered: {secs:?}");
    assert_eq!(ev[0].severity, "critical");
    assert_eq!(ev[0].details["open_secs"], 30);
    assert_eq!(ev[3].details["open_secs"], 60);
    assert_eq!(ev[1].details["factor"], 0.1);
    assert_eq!(ev[6].details["factor"], 1.0);
    assert_eq!(ev[0].details["samples"], 5);
    assert_eq!(ev[0].details["failure_ratio"], 1.0);
    // Events name the trunk, never a number.
    let text = serde_json::to_string(&ev).unwrap();
    assert!(!text.contains("+86138"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_campaign_moves_its_calls_to_the_healthy_trunk_while_the_other_is_open() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    env.trunk("a", None, Some(2.0)).await;
    env.trunk("b", None, None).await;
    env.running(&["a", "b"], 4.0, 400).await;
    // Calls end between dispatches (1.1 s), so no result coincides with a dispatch.
    let engine = Flaky::new(env.clock, Duration::from_millis(1100));
    engine.set("a", Mode::Down);
    let t0 = env.start_with(engine.clone()).await;
    until(t0, 40.0).await;
    let d = engine.dialed();
    let on = |trunk: &str, from: f64, to: f64| {
        dials_between(&d, t0, from, to)
            .into_iter()
            .filter(|x| x.trunk == trunk)
            .count()
    };
    // Before: `a` (first in the list) takes its 2 calls/s, `b` the rest of the campaign's 4.
    assert_eq!((on("a", 0.0, 3.05), on("b", 0.0, 3.05)), (7, 6));
    // The fifth failure (t = 3.1 s) opens `a`: every call goes to `b`, at the campaign's rate.
    assert_eq!(on("a", 3.05, 33.1), 0);
    assert_eq!(on("b", 5.0, 30.0), 100);
    // After 30 s `a` half-opens and the campaign's next call is its one probe; it fails and
    // `a` is open again.
    let probes: Vec<f64> = dials_between(&d, t0, 3.05, 40.0)
        .into_iter()
        .filter(|x| x.trunk == "a")
        .map(|x| since(t0, x))
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_near(probes[0], 33.25, "probe");
    assert_eq!(
        dials_between(&d, t0, 3.05, 40.0).len(),
        147,
        "the campaign never slowed down: 4 calls/s from 3.25 s to 39.75 s"
    );
    let ev = env.system_events().await;
    assert_eq!(
        kinds(&ev),
        [
            "trunk.circuit_open",
            "trunk.degraded",
            "trunk.circuit_half_open",
            "trunk.circuit_open",
        ]
    );
    assert!(ev.iter().all(|e| e.subject == "a"));
    let h = env.handle().trunk_health();
    let b = h.iter().find(|v| v.trunk == "b").unwrap();
    assert_eq!(
        (b.factor, b.circuit, b.failure_ratio),
        (1.0, outcall_scheduler::Circuit::Closed, 0.0)
    );
    assert!(b.samples > 100);
}

#[tokio::test(start_paused = true)]
async fn a_trunk_failing_60_percent_is_slowed_then_speeds_up_gradually_once_failures_stop() {
    let mut env = Env::new(Duration::from_secs(1)).await;
    env.trunk("flaky", None, Some(10.0)).await;
    env.running(&["flaky"], 50.0, 3000).await;
    let engine = Flaky::new(env.clock, Duration::from_secs(1));
    engine.set("flaky", Mode::ThreeInFive);
    let start_wall = env.clock.now();
    let t0 = env.start_with(engine.clone()).await;
    until(t0, 60.0).await;
    engine.set("flaky", Mode::Healthy);
    until(t0, 240.0).await;
    let d = engine.dialed();
    // Calls per second, averaged over 10 s windows.
    let rate = |from: f64| dials_between(&d, t0, from, from + 10.0).len() as f64 / 10.0;
    let first_second = dials_between(&d, t0, 0.0, 1.0).len();
    assert_eq!(first_second, 10, "the configured 10 calls/s at first");
    let slowed = rate(50.0);
    assert!(
        (0.9..=1.2).contains(&slowed),
        "cut to 10 % of 10 calls/s: {slowed}"
    );
    let rates: Vec<f64> = (5..24).map(|w| rate(f64::from(w) * 10.0)).collect();
    // From the slowest point on, the rate only grows, through several steps, to 10 again.
    for w in rates.windows(2) {
        assert!(w[1] >= w[0] - 0.15, "the rate went down again: {rates:?}");
    }
    let middle = rates.iter().filter(|r| **r > 2.0 && **r < 8.0).count();
    assert!(middle >= 3, "gradual, not at once: {rates:?}");
    assert!(
        (9.8..=10.0).contains(&rate(230.0)),
        "back to 10 calls/s: {rates:?}"
    );

    let ev = env.system_events().await;
    assert_eq!(
        kinds(&ev),
        [
            "trunk.degraded",
            "trunk.degraded",
            "trunk.degraded",
            "trunk.degraded",
            "trunk.recovered",
        ],
        "never five failures in a row: the circuit stays closed"
    );
    let factors: Vec<f64> = ev
        .iter()
        .map(|e| e.details["factor"].as_f64().unwrap())
        .collect();
    assert_eq!(factors, [0.5, 0.25, 0.125, 0.1, 1.0]);
    let secs: Vec<f64> = ev.iter().map(|e| event_secs(start_wall, e)).collect();
    for w in secs[..4].windows(2) {
        assert!(
            w[1] - w[0] >= 14.99,
            "cuts a quarter window apart: {secs:?}"
        );
    }
    let first = &ev[0];
    assert_eq!(first.severity, "warning");
    assert!(first.details["samples"].as_u64().unwrap() >= 10);
    assert!(first.details["failure_ratio"].as_f64().unwrap() >= 0.5);
    assert_eq!(first.details["window_secs"], 60);
}
