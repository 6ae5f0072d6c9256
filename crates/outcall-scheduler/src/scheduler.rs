//! The scheduler task and its handle.

use crate::clock::Clock;
use crate::events::{CallEventSink, StatusEvent};
use crate::health::{DegradationConfig, TrunkHealth};
use crate::pacer::Pacer;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AfterPrompt, Campaign, CampaignId, CampaignStatus, ContactId, ContactState, RetryDecision,
    StatusEventKind,
};
use outcall_domain::window::WindowSchedule;
use outcall_domain::CallState;
use outcall_domain::Outcome;
use outcall_pool::NumberVault;
use outcall_queue::{Acquire, Lease, Limiter, PaceLimits, SlotRequest, TaskQueue};
use outcall_store::{ContactNext, ContactRecord, Store, StoreError};
use outcall_telephony::engine::AfterPrompt as EngineAfterPrompt;
use outcall_telephony::engine::{CallReport, CallUpdate};
use outcall_telephony::{CallEngine, CallRequest, CallerIdPool, Prompt, TrunkConfig};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tracing::{debug, info, warn};

mod degrade;
pub use degrade::TrunkHealthView;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Node name written on attempts.
    pub node: String,
    /// Calls in progress on this node, all campaigns together.
    pub max_concurrent: u32,
    /// How often due contacts are loaded from the store.
    pub refill_interval: Duration,
    /// Contacts due within this horizon are loaded into the timing wheel.
    pub lookahead: Duration,
    /// Where recordings go (`<dir>/<campaign>/<attempt>.wav`) for campaigns that record.
    pub recordings_dir: Option<PathBuf>,
    /// How long a learned number status (空号 and others) is trusted.
    pub number_status_ttl: Duration,
    /// Automatic degradation and circuit breaking of trunks that fail.
    pub degradation: DegradationConfig,
    /// Re-read campaigns and trunks from the store this often, for changes made by other
    /// nodes (an API node of a distributed deployment); `None`: changes arrive through the
    /// handle only (one process).
    pub sync_interval: Option<Duration>,
    /// At start, close every attempt left open (one process: they all died with it). `false`:
    /// only this node's own (other nodes' attempts may be live).
    pub reconcile_all: bool,
    /// How long a task claimed from a shared queue stays this node's without a renewal
    /// (renewed every third of it while its call lives): a node that dies loses its tasks to
    /// the others after this.
    pub lease: Duration,
    /// Write each call's CDR with its attempt. `false` when dialer nodes publish CDRs to a bus
    /// and ingest nodes write them: the attempt is closed without it (the CDR of a call lost
    /// with its dialer, which nobody else has, is still written here).
    pub store_cdrs: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            node: "local".into(),
            max_concurrent: 1000,
            refill_interval: Duration::from_millis(200),
            lookahead: Duration::from_secs(2),
            recordings_dir: None,
            number_status_ttl: Duration::from_secs(90 * 86400),
            degradation: DegradationConfig::default(),
            sync_interval: None,
            reconcile_all: true,
            store_cdrs: true,
            lease: Duration::from_secs(15),
        }
    }
}

/// What the scheduler works with.
#[derive(Clone)]
pub struct SchedulerDeps {
    pub store: Arc<dyn Store>,
    pub engine: Arc<dyn CallEngine>,
    pub vault: Arc<NumberVault>,
    pub clock: Clock,
    /// Receives each attempt's status events (initiated, ringing, answered, completed).
    pub events: Option<Arc<dyn CallEventSink>>,
    /// A queue shared by several scheduler nodes (Redis): due contacts are pushed to it and
    /// each node dials only the tasks it claimed. `None`: this node loads due contacts from
    /// the store itself (one scheduler).
    pub queue: Option<Arc<dyn TaskQueue>>,
    /// Campaign and trunk limits enforced across nodes (Redis), on top of this node's own.
    pub limiter: Option<Arc<dyn Limiter>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the scheduler has stopped")]
    Stopped,
}

/// Live figures of a campaign, for stats.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignLive {
    /// Calls in progress.
    pub active: u32,
    /// Attempts dispatched since the scheduler started.
    pub dispatched: u64,
    /// Dispatches per second over the last 10 seconds.
    pub cps: f64,
    /// Tasks deferred because their calling window was closed.
    pub deferred_window: u64,
    /// Tasks deferred by a frequency cap.
    pub deferred_cap: u64,
    #[serde(skip)]
    recent: VecDeque<Instant>,
}

type LiveMap = Arc<Mutex<HashMap<CampaignId, CampaignLive>>>;

enum Msg {
    /// A campaign changed (status, spec, contacts): re-read it and load its due contacts.
    Reload(CampaignId),
    /// Trunks changed.
    ReloadTrunks,
    Finished {
        campaign: CampaignId,
        trunk: String,
        contact: ContactId,
        /// For the trunk's health: `Some(true)` the trunk failed the call, `Some(false)` it
        /// carried it, `None` no call reached it.
        trunk_fault: Option<bool>,
    },
    Shutdown {
        deadline: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Talks to the running scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    live: LiveMap,
    health: degrade::HealthViews,
}

impl SchedulerHandle {
    /// Tells the scheduler that a campaign changed.
    pub fn reload(&self, campaign: CampaignId) {
        let _ = self.tx.send(Msg::Reload(campaign));
    }

    /// Tells the scheduler that trunks changed.
    pub fn reload_trunks(&self) {
        let _ = self.tx.send(Msg::ReloadTrunks);
    }

    /// Whether the scheduler task is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Every trunk's health (rate factor, circuit, failures over the window), by name.
    pub fn trunk_health(&self) -> Vec<TrunkHealthView> {
        let views = self.health.lock().unwrap_or_else(|e| e.into_inner());
        views.values().cloned().collect()
    }

    /// Live figures of a campaign.
    pub fn live(&self, campaign: CampaignId) -> CampaignLive {
        let mut map = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let l = map.entry(campaign).or_default();
        trim_recent(&mut l.recent);
        l.cps = l.recent.len() as f64 / 10.0;
        l.clone()
    }

    /// Stops dispatching, lets calls in flight finish for up to `deadline`, then cancels the
    /// rest and waits for their records.
    pub async fn shutdown(&self, deadline: Duration) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { deadline, done }).is_ok() {
            let _ = rx.await;
        }
    }
}

fn trim_recent(q: &mut VecDeque<Instant>) {
    let now = Instant::now();
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > Duration::from_secs(10))
    {
        q.pop_front();
    }
}

/// A contact waiting to be dialed.
#[derive(Debug, Clone)]
struct Task {
    campaign_priority: i32,
    contact: Arc<ContactRecord>,
    /// This node's claim on the task in the shared queue, and when it was last renewed.
    lease: Option<Lease>,
    renewed: Instant,
}

impl Task {
    fn key(
        &self,
    ) -> (
        i32,
        i32,
        std::cmp::Reverse<Timestamp>,
        std::cmp::Reverse<ContactId>,
    ) {
        (
            self.campaign_priority,
            self.contact.priority,
            std::cmp::Reverse(self.contact.due_at),
            std::cmp::Reverse(self.contact.id),
        )
    }
}

impl PartialEq for Task {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Task {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key().cmp(&o.key())
    }
}

struct CampaignRt {
    campaign: Campaign,
    windows: Option<WindowSchedule>,
    pacer: Pacer,
    prompt: Option<Prompt>,
    callers: CallerIdPool,
    cancel: CancellationToken,
    loaded: usize,
}

struct TrunkRt {
    config: Arc<TrunkConfig>,
    pacer: Pacer,
    health: TrunkHealth,
}

struct Scheduler {
    deps: SchedulerDeps,
    cfg: SchedulerConfig,
    rx: mpsc::UnboundedReceiver<Msg>,
    tx: mpsc::UnboundedSender<Msg>,
    live: LiveMap,
    campaigns: HashMap<CampaignId, CampaignRt>,
    trunks: HashMap<String, TrunkRt>,
    global: Pacer,
    wheel: DelayQueue<Task>,
    ready: BinaryHeap<Task>,
    loaded: HashSet<ContactId>,
    /// Dispatched contacts whose call task has not reported back yet.
    starting: HashSet<ContactId>,
    /// Numbers (blind index) whose attempt is being opened by a call task: not yet counted by
    /// the store, but counted by frequency caps.
    opening: Arc<Mutex<HashMap<Vec<u8>, u32>>>,
    wake: Option<Instant>,
    draining: bool,
    health: degrade::HealthRt,
    /// When each campaign's expired leases were last reaped (shared queue).
    last_reap: HashMap<CampaignId, Instant>,
    /// Numbers the limiter slots of this node's calls.
    slot_seq: u64,
}

/// Reconciles attempts left open by a previous run, then starts the scheduler task.
pub async fn start(
    deps: SchedulerDeps,
    cfg: SchedulerConfig,
) -> Result<SchedulerHandle, SchedulerError> {
    reconcile(&deps, (!cfg.reconcile_all).then_some(cfg.node.as_str())).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let live: LiveMap = Arc::default();
    let health = degrade::HealthRt::start(cfg.degradation, deps.store.clone());
    let health_views = health.views.clone();
    let mut s = Scheduler {
        global: Pacer::new(cfg.max_concurrent, None),
        deps,
        cfg,
        rx,
        tx: tx.clone(),
        live: live.clone(),
        campaigns: HashMap::new(),
        trunks: HashMap::new(),
        wheel: DelayQueue::new(),
        ready: BinaryHeap::new(),
        loaded: HashSet::new(),
        starting: HashSet::new(),
        opening: Arc::default(),
        wake: None,
        draining: false,
        health,
        last_reap: HashMap::new(),
        slot_seq: 0,
    };
    s.reload_trunks().await;
    for c in s.deps.store.list_campaigns().await? {
        if !c.status.is_final() {
            s.install(c).await;
        }
    }
    tokio::spawn(s.run());
    Ok(SchedulerHandle {
        tx,
        live,
        health: health_views,
    })
}

/// Attempts still open belong to calls that died with the previous process: close them as
/// `failed` (cause `node_restart`) and reschedule by the campaign's policy.
async fn reconcile(deps: &SchedulerDeps, only_node: Option<&str>) -> Result<(), SchedulerError> {
    let mut open = deps.store.open_attempts().await?;
    if let Some(node) = only_node {
        open.retain(|a| a.node == node);
    }
    if open.is_empty() {
        return Ok(());
    }
    info!(
        count = open.len(),
        "closing attempts left open by a restart"
    );
    for a in open {
        close_open(deps, a, "node_restart").await?;
    }
    Ok(())
}

/// Closes an attempt whose node is gone as `failed` with `cause`, and reschedules its contact
/// by the campaign's policy.
async fn close_open(
    deps: &SchedulerDeps,
    a: outcall_store::OpenAttempt,
    cause: &str,
) -> Result<(), SchedulerError> {
    let now = deps.clock.now();
    let campaign = deps.store.get_campaign(a.campaign_id).await?;
    let counts = deps.store.outcome_counts(a.contact_id).await?;
    let same = counts.get(&Outcome::Failed).copied().unwrap_or(0) + 1;
    let next = match campaign.spec.retry.decide(Outcome::Failed, same, a.seq) {
        RetryDecision::RetryAfter(s) => ContactNext::Retry {
            due_at: add_secs(now, s),
        },
        RetryDecision::Final => ContactNext::Done {
            outcome: Outcome::Failed,
        },
    };
    deps.store
        .finish_attempt(a.attempt_id, Outcome::Failed, Some(cause), None, next, now)
        .await?;
    if let Some(sink) = &deps.events {
        // The integrator saw this attempt initiated: tell them how it ended.
        let number = match deps.store.get_contact(a.contact_id).await {
            Ok(c) => c.masked,
            Err(e) => {
                warn!(contact = a.contact_id, error = %e, "cannot read contact for its event");
                String::new()
            }
        };
        sink.emit(StatusEvent {
            kind: StatusEventKind::Completed,
            campaign_id: a.campaign_id,
            contact_id: a.contact_id,
            attempt_id: a.attempt_id,
            seq: a.seq,
            at: now,
            number,
            outcome: Some(Outcome::Failed),
            cause: Some(cause.into()),
            cdr: None,
        });
    }
    Ok(())
}

/// Gives a claimed task back to the shared queue, due at `due_at_ms`, without waiting.
fn release_later(q: &Arc<dyn TaskQueue>, lease: &Lease, due_at_ms: i64) {
    let (q, lease) = (q.clone(), lease.clone());
    tokio::spawn(async move {
        if let Err(e) = q.release(&lease, due_at_ms).await {
            warn!(contact = lease.task.contact_id, error = %e, "cannot release a task");
        }
    });
}

/// Marks a claimed task done in the shared queue, without waiting.
fn ack_later(q: &Arc<dyn TaskQueue>, lease: &Lease) {
    let (q, lease) = (q.clone(), lease.clone());
    tokio::spawn(async move {
        if let Err(e) = q.ack(&lease).await {
            warn!(contact = lease.task.contact_id, error = %e, "cannot acknowledge a task");
        }
    });
}

/// How long a global limiter slot stays taken without a renewal (renewed while the call
/// lives): the slots of a node that dies free themselves after this.
const SLOT_HOLD: Duration = Duration::from_secs(20);

fn add_secs(t: Timestamp, s: u64) -> Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(
        s.min(i64::MAX as u64) as i64
    ))
    .unwrap_or(t)
}

impl Scheduler {
    /// The caller IDs a campaign rotates: its caller-ID pool's numbers when it names one (read
    /// now, so a pool changed later takes effect when the campaign is next reloaded), else its
    /// own `caller_ids`. `None` when the pool cannot be read: the campaign keeps what it has.
    async fn caller_ids(&self, c: &Campaign) -> Option<Vec<String>> {
        let Some(name) = &c.spec.caller_id_pool else {
            return Some(c.spec.caller_ids.clone());
        };
        match self.deps.store.get_caller_id_pool(name).await {
            Ok(Some(pool)) => Some(pool.numbers),
            Ok(None) => {
                warn!(campaign = c.id, pool = %name, "caller-ID pool not found: the trunk's caller IDs are used");
                Some(Vec::new())
            }
            Err(e) => {
                warn!(campaign = c.id, pool = %name, error = %e, "cannot read the caller-ID pool");
                None
            }
        }
    }

    async fn install(&mut self, c: Campaign) {
        let caller_ids = self.caller_ids(&c).await;
        let windows = c.spec.windows.as_ref().and_then(|w| match w.compile() {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(campaign = c.id, error = %e, "calling windows do not compile");
                None
            }
        });
        let prompt = c
            .spec
            .prompt
            .as_ref()
            .and_then(|p| match Prompt::load(p.as_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(campaign = c.id, prompt = %p, error = %e, "prompt cannot be loaded");
                    None
                }
            });
        let id = c.id;
        let pacer = Pacer::new(c.spec.max_concurrent, Some(c.spec.max_cps));
        let callers = caller_ids.map(CallerIdPool::new);
        match self.campaigns.get_mut(&id) {
            Some(rt) => {
                if c.status == CampaignStatus::Canceled {
                    rt.cancel.cancel();
                }
                rt.pacer.max_concurrent = c.spec.max_concurrent;
                if let Some(b) = &mut rt.pacer.bucket {
                    b.set_rate(c.spec.max_cps);
                }
                rt.windows = windows;
                rt.prompt = prompt;
                if let Some(callers) = callers {
                    rt.callers = callers;
                }
                rt.campaign = c;
            }
            None => {
                self.campaigns.insert(
                    id,
                    CampaignRt {
                        campaign: c,
                        windows,
                        pacer,
                        prompt,
                        callers: callers.unwrap_or_default(),
                        cancel: CancellationToken::new(),
                        loaded: 0,
                    },
                );
            }
        }
    }

    async fn reload_trunks(&mut self) {
        match self.deps.store.list_trunks().await {
            Ok(list) => {
                for t in list {
                    match serde_json::from_value::<TrunkConfig>(t.config) {
                        Ok(cfg) => {
                            match self.trunks.get_mut(&t.name) {
                                Some(rt) => {
                                    // Limits as configured, scaled while degraded.
                                    rt.config = Arc::new(cfg);
                                    rt.apply_limits(Instant::now());
                                }
                                None => {
                                    let rt = TrunkRt::new(&t.name, cfg, self.cfg.degradation);
                                    self.trunks.insert(t.name, rt);
                                }
                            }
                        }
                        Err(e) => warn!(trunk = %t.name, error = %e, "trunk config is invalid"),
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot load trunks"),
        }
    }

    async fn run(mut self) {
        let mut refill = tokio::time::interval(self.cfg.refill_interval);
        refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sync_every = self.cfg.sync_interval;
        let mut sync = tokio::time::interval(sync_every.unwrap_or(Duration::from_secs(3600)));
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown: Option<(Instant, oneshot::Sender<()>)> = None;
        let mut cancelled_all = false;
        loop {
            let wake = self.wake;
            let deadline = shutdown.as_ref().map(|s| s.0);
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(Msg::Finished { campaign, trunk, contact, trunk_fault }) => {
                        self.starting.remove(&contact);
                        self.on_finished(campaign, &trunk);
                        self.note_finished(&trunk, contact, trunk_fault);
                    }
                    Some(Msg::Reload(id)) => self.reload(id).await,
                    Some(Msg::ReloadTrunks) => self.reload_trunks().await,
                    Some(Msg::Shutdown { deadline, done }) => {
                        info!(active = self.global.active, "draining: no new calls");
                        self.draining = true;
                        shutdown = Some((Instant::now() + deadline, done));
                    }
                    None => return,
                },
                Some(exp) = std::future::poll_fn(|cx| self.wheel.poll_expired(cx)), if !self.wheel.is_empty() && !self.draining => {
                    self.ready.push(exp.into_inner());
                }
                _ = refill.tick(), if !self.draining => self.refill().await,
                _ = sync.tick(), if sync_every.is_some() && !self.draining => self.sync().await,
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    self.wake = None;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !cancelled_all => {
                    warn!(active = self.global.active, "shutdown deadline: cancelling calls in flight");
                    for rt in self.campaigns.values() {
                        rt.cancel.cancel();
                    }
                    cancelled_all = true;
                }
            }
            if self.draining {
                if self.global.active == 0 {
                    if let Some((_, done)) = shutdown.take() {
                        info!("scheduler stopped");
                        let _ = done.send(());
                    }
                    return;
                }
                continue;
            }
            self.dispatch().await;
        }
    }

    /// Picks up what other nodes changed: new campaigns, status and spec changes (by
    /// `updated_at`), deleted campaigns, trunks.
    async fn sync(&mut self) {
        self.reload_trunks().await;
        let list = match self.deps.store.list_campaigns().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot list campaigns");
                return;
            }
        };
        let present: HashSet<CampaignId> = list.iter().map(|c| c.id).collect();
        let gone: Vec<CampaignId> = self
            .campaigns
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.reload(id).await;
        }
        for c in list {
            let changed = match self.campaigns.get(&c.id) {
                Some(rt) => {
                    rt.campaign.updated_at != c.updated_at || rt.campaign.status != c.status
                }
                None => !c.status.is_final(),
            };
            if changed {
                let id = c.id;
                self.install(c).await;
                self.refill_campaign(id).await;
            }
        }
    }

    fn on_finished(&mut self, campaign: CampaignId, trunk: &str) {
        self.global.finish();
        if let Some(rt) = self.campaigns.get_mut(&campaign) {
            rt.pacer.finish();
        }
        if let Some(t) = self.trunks.get_mut(trunk) {
            t.pacer.finish();
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let l = live.entry(campaign).or_default();
        l.active = l.active.saturating_sub(1);
    }

    async fn reload(&mut self, id: CampaignId) {
        match self.deps.store.get_campaign(id).await {
            Ok(c) => {
                self.install(c).await;
                self.refill_campaign(id).await;
            }
            Err(StoreError::NotFound { .. }) => {
                // Deleted: forget it (its queued tasks are dropped at dispatch).
                self.campaigns.remove(&id);
                self.live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
            Err(e) => warn!(campaign = id, error = %e, "cannot reload campaign"),
        }
    }

    async fn refill(&mut self) {
        metrics::gauge!(outcall_domain::metrics::QUEUE_LOADED)
            .set((self.wheel.len() + self.ready.len()) as f64);
        let ids: Vec<CampaignId> = self
            .campaigns
            .iter()
            .filter(|(_, rt)| rt.campaign.status == CampaignStatus::Running)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.refill_campaign(id).await;
        }
    }

    /// Loads a running campaign's contacts due within the lookahead; completes the campaign
    /// when nothing is left.
    async fn refill_campaign(&mut self, id: CampaignId) {
        let now = self.deps.clock.now();
        let Some(rt) = self.campaigns.get(&id) else {
            return;
        };
        if rt.campaign.status != CampaignStatus::Running {
            return;
        }
        if rt.campaign.spec.start_at.is_some_and(|s| now < s) {
            return;
        }
        if rt.campaign.spec.end_at.is_some_and(|e| now >= e) {
            info!(campaign = id, "end time reached");
            self.complete(id).await;
            return;
        }
        // Keep the queue short: enough for a few seconds at the campaign's pace.
        let cap = (rt.campaign.spec.max_concurrent as usize * 4)
            .max((rt.campaign.spec.max_cps * 4.0) as usize)
            .max(64);
        if rt.loaded >= cap {
            return;
        }
        let want = (cap - rt.loaded) as u32;
        let campaign_priority = rt.campaign.spec.priority;
        let horizon = now
            .checked_add(jiff::SignedDuration::try_from(self.cfg.lookahead).unwrap_or_default())
            .unwrap_or(now);
        let list = match self.deps.store.due_contacts(id, horizon, want + 64).await {
            Ok(l) => l,
            Err(e) => {
                warn!(campaign = id, error = %e, "cannot load due contacts");
                return;
            }
        };
        // Claim no more than this node can start soon, so claimed tasks seldom wait on
        // a lease: free call slots plus about five seconds at the campaign's rate.
        let soon = (rt
            .campaign
            .spec
            .max_concurrent
            .saturating_sub(rt.pacer.active) as f64
            + rt.campaign.spec.max_cps * 5.0)
            .ceil() as u32;
        let added = match self.deps.queue.clone() {
            Some(q) => {
                self.claim_from(q, id, campaign_priority, list, want.min(soon.max(1)))
                    .await
            }
            None => self.load_local(campaign_priority, list, want, now),
        };
        if let Some(rt) = self.campaigns.get_mut(&id) {
            rt.loaded += added;
        }
        let (active, loaded) = match self.campaigns.get(&id) {
            Some(rt) => (rt.pacer.active, rt.loaded),
            None => return,
        };
        if active == 0 && loaded == 0 {
            match self.deps.store.unfinished_contacts(id).await {
                Ok(0) => self.complete(id).await,
                Ok(_) => {}
                Err(e) => warn!(campaign = id, error = %e, "cannot count contacts"),
            }
        }
    }

    /// One scheduler: the due contacts go into this node's wheel (due later) or heap (due now).
    fn load_local(
        &mut self,
        campaign_priority: i32,
        list: Vec<ContactRecord>,
        want: u32,
        now: Timestamp,
    ) -> usize {
        let mut added = 0;
        for c in list {
            if added >= want as usize {
                break;
            }
            if self.starting.contains(&c.id) || !self.loaded.insert(c.id) {
                continue;
            }
            added += 1;
            let due = c.due_at;
            let task = Task {
                campaign_priority,
                contact: Arc::new(c),
                lease: None,
                renewed: Instant::now(),
            };
            if due <= now {
                self.ready.push(task);
            } else {
                self.wheel.insert_at(task, self.deps.clock.instant_at(due));
            }
        }
        added
    }

    /// Several schedulers: the due contacts go into the shared queue (each once), and this
    /// node takes the due tasks it claims, under a lease. Leases of dead nodes are reaped
    /// here too.
    async fn claim_from(
        &mut self,
        q: Arc<dyn TaskQueue>,
        id: CampaignId,
        campaign_priority: i32,
        list: Vec<ContactRecord>,
        want: u32,
    ) -> usize {
        let now_ms = self.deps.clock.now().as_millisecond();
        let tasks: Vec<outcall_queue::Task> = list
            .iter()
            .map(|c| outcall_queue::Task {
                campaign_id: id,
                contact_id: c.id,
                priority: c.priority,
                due_at_ms: c.due_at.as_millisecond(),
            })
            .collect();
        if !tasks.is_empty() {
            if let Err(e) = q.push(&tasks).await {
                warn!(campaign = id, error = %e, "cannot queue due contacts");
            }
        }
        self.reap(&q, id, now_ms).await;
        self.renew_waiting(&q, id).await;
        let leases = match q
            .claim(id, now_ms, want, &self.cfg.node, self.cfg.lease)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                warn!(campaign = id, error = %e, "cannot claim tasks");
                return 0;
            }
        };
        let mut by_id: HashMap<ContactId, ContactRecord> =
            list.into_iter().map(|c| (c.id, c)).collect();
        let mut added = 0;
        for lease in leases {
            let cid = lease.task.contact_id;
            let contact = match by_id.remove(&cid) {
                Some(c) => Some(c),
                None => match self.deps.store.get_contact(cid).await {
                    Ok(c) => Some(c),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => {
                        warn!(contact = cid, error = %e, "cannot read a claimed contact");
                        release_later(&q, &lease, now_ms + 1000);
                        continue;
                    }
                },
            };
            let Some(contact) = contact.filter(|c| c.state == ContactState::Pending) else {
                // Done, deleted, or dialing on another node: nothing to do for this task.
                ack_later(&q, &lease);
                continue;
            };
            if self.starting.contains(&cid) || !self.loaded.insert(cid) {
                release_later(&q, &lease, contact.due_at.as_millisecond());
                continue;
            }
            added += 1;
            self.ready.push(Task {
                campaign_priority,
                contact: Arc::new(contact),
                lease: Some(lease),
                renewed: Instant::now(),
            });
        }
        added
    }

    /// Keeps the leases of this campaign's claimed tasks that still wait for a slot (renewed
    /// every third of the lease); a task whose lease was lost is dropped here (another node
    /// has it).
    async fn renew_waiting(&mut self, q: &Arc<dyn TaskQueue>, id: CampaignId) {
        let due = self.cfg.lease / 3;
        let now_i = Instant::now();
        if !self.ready.iter().any(|t| {
            t.contact.campaign_id == id
                && t.lease.is_some()
                && now_i.saturating_duration_since(t.renewed) >= due
        }) {
            return;
        }
        let tasks = std::mem::take(&mut self.ready).into_vec();
        for mut t in tasks {
            if let (true, Some(l)) = (
                t.contact.campaign_id == id && now_i.saturating_duration_since(t.renewed) >= due,
                &t.lease,
            ) {
                match q.renew(l, self.cfg.lease).await {
                    Ok(false) => {
                        debug!(contact = t.contact.id, "lease lost while waiting: dropped");
                        self.unload(&t);
                        continue;
                    }
                    Ok(true) => t.renewed = now_i,
                    Err(e) => warn!(error = %e, "cannot renew a lease"),
                }
            }
            self.ready.push(t);
        }
    }

    /// Tasks whose lease expired (their node died) are back in the queue; the attempts their
    /// node left open are closed as `failed`/`node_lost` and retried by the policy. Every two
    /// seconds per campaign.
    async fn reap(&mut self, q: &Arc<dyn TaskQueue>, id: CampaignId, now_ms: i64) {
        let now_i = Instant::now();
        if self
            .last_reap
            .get(&id)
            .is_some_and(|t| now_i.saturating_duration_since(*t) < Duration::from_secs(2))
        {
            return;
        }
        self.last_reap.insert(id, now_i);
        let reaped = match q.reap(id, now_ms).await {
            Ok(r) => r,
            Err(e) => {
                warn!(campaign = id, error = %e, "cannot reap expired leases");
                return;
            }
        };
        if reaped.is_empty() {
            return;
        }
        let contacts: HashSet<ContactId> = reaped.iter().map(|t| t.contact_id).collect();
        info!(
            campaign = id,
            tasks = reaped.len(),
            "taking over tasks of a lost node"
        );
        let open = match self.deps.store.open_attempts().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot list open attempts");
                return;
            }
        };
        for a in open {
            if contacts.contains(&a.contact_id) && a.node != self.cfg.node {
                if let Err(e) = close_open(&self.deps, a, "node_lost").await {
                    warn!(error = %e, "cannot close an attempt of a lost node");
                }
            }
        }
    }

    async fn complete(&mut self, id: CampaignId) {
        let now = self.deps.clock.now();
        let Some(rt) = self.campaigns.get(&id) else {
            return;
        };
        let from = rt.campaign.status;
        match self
            .deps
            .store
            .set_campaign_status(id, from, CampaignStatus::Completed, now)
            .await
        {
            Ok(c) => {
                info!(campaign = id, "campaign completed");
                self.install(c).await;
            }
            Err(e) => debug!(campaign = id, error = %e, "campaign not completed"),
        }
    }

    fn unload(&mut self, t: &Task) {
        self.loaded.remove(&t.contact.id);
        if let Some(rt) = self.campaigns.get_mut(&t.contact.campaign_id) {
            rt.loaded = rt.loaded.saturating_sub(1);
        }
    }

    /// Unloads a task this node will not dial now; a claimed one goes back to the shared
    /// queue, due at `due`.
    fn give_back(&mut self, t: &Task, due: Timestamp) {
        self.unload(t);
        if let (Some(q), Some(lease)) = (&self.deps.queue, &t.lease) {
            release_later(q, lease, due.as_millisecond());
        }
    }

    fn defer(&mut self, mut t: Task, until: Timestamp) {
        if t.lease.is_some() {
            // The shared queue keeps it until then, for whichever node claims it.
            self.give_back(&t, until);
            return;
        }
        let mut c = (*t.contact).clone();
        c.due_at = until;
        t.contact = Arc::new(c);
        self.wheel.insert_at(t, self.deps.clock.instant_at(until));
    }

    async fn dispatch(&mut self) {
        self.health_tick(Instant::now());
        let mut skipped: Vec<Task> = Vec::new();
        let mut blocked: HashSet<CampaignId> = HashSet::new();
        let mut wake: Option<Instant> = None;
        let mut soonest = |d: Duration| {
            let at = Instant::now() + d;
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        };
        while let Some(t) = self.ready.pop() {
            let cid = t.contact.campaign_id;
            if blocked.contains(&cid) {
                skipped.push(t);
                continue;
            }
            let Some(rt) = self.campaigns.get_mut(&cid) else {
                let now = self.deps.clock.now();
                self.give_back(&t, now);
                continue;
            };
            if rt.campaign.status != CampaignStatus::Running {
                let now = self.deps.clock.now();
                self.give_back(&t, now);
                continue;
            }
            let now = self.deps.clock.now();
            let now_i = Instant::now();
            if let Some(w) = &rt.windows {
                let tz = w.zone_for(t.contact.time_zone.as_deref());
                if !w.is_open(now, &tz) {
                    let next = w.next_opening(now, &tz);
                    self.bump(cid, |l| l.deferred_window += 1);
                    metrics::counter!(outcall_domain::metrics::DEFERRED_TOTAL, "reason" => "window")
                        .increment(1);
                    match next {
                        Some(next) => {
                            if let Err(e) = self.deps.store.defer_contact(t.contact.id, next).await
                            {
                                warn!(error = %e, "cannot defer contact");
                            }
                            debug!(contact = t.contact.id, %next, "outside calling window");
                            self.defer(t, next);
                        }
                        None => self.give_back(&t, add_secs(now, 86_400)),
                    }
                    continue;
                }
            }
            if self.global.check(now_i).is_err() {
                skipped.push(t);
                break;
            }
            match rt.pacer.check(now_i) {
                Ok(()) => {}
                Err(d) => {
                    if let Some(d) = d {
                        soonest(d);
                    }
                    blocked.insert(cid);
                    skipped.push(t);
                    continue;
                }
            }
            let mut chosen = None;
            for name in &rt.campaign.spec.trunks {
                if let Some(tr) = self.trunks.get_mut(name) {
                    // Circuit open: not before it half-opens (wake then); half-open with its
                    // probe out: not before the probe ends.
                    if let Err(wait) = tr.health.admits(now_i) {
                        if let Some(d) = wait {
                            soonest(d);
                        }
                        continue;
                    }
                    match tr.pacer.check(now_i) {
                        Ok(()) => {
                            chosen = Some(name.clone());
                            break;
                        }
                        Err(Some(d)) => soonest(d),
                        Err(None) => {}
                    }
                }
            }
            let Some(trunk_name) = chosen else {
                if !rt
                    .campaign
                    .spec
                    .trunks
                    .iter()
                    .any(|n| self.trunks.contains_key(n))
                {
                    warn!(campaign = cid, "none of the campaign's trunks exists");
                }
                blocked.insert(cid);
                skipped.push(t);
                continue;
            };
            // Frequency caps across campaigns.
            let mut capped = None;
            let opening = {
                let m = self.opening.lock().unwrap_or_else(|e| e.into_inner());
                m.get(&t.contact.number_hash).copied().unwrap_or(0)
            };
            for cap in &rt.campaign.spec.frequency_caps {
                let since = add_secs(now, 0)
                    .checked_sub(jiff::SignedDuration::from_secs(cap.per_secs as i64))
                    .unwrap_or(now);
                match self
                    .deps
                    .store
                    .attempts_to_number_since(&t.contact.number_hash, since)
                    .await
                {
                    Ok(n) if n + opening >= cap.max_calls => {
                        let wait = (cap.per_secs / u64::from(cap.max_calls)).max(1);
                        capped = Some(add_secs(now, wait));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot count attempts to number"),
                }
            }
            if let Some(until) = capped {
                self.bump(cid, |l| l.deferred_cap += 1);
                metrics::counter!(outcall_domain::metrics::DEFERRED_TOTAL, "reason" => "frequency_cap")
                    .increment(1);
                if let Err(e) = self.deps.store.defer_contact(t.contact.id, until).await {
                    warn!(error = %e, "cannot defer contact");
                }
                self.defer(t, until);
                continue;
            }
            let slot = match self.acquire_slot(&t, &trunk_name).await {
                Ok(slot) => slot,
                Err(wait) => {
                    if let Some(d) = wait {
                        soonest(d);
                    }
                    blocked.insert(cid);
                    skipped.push(t);
                    continue;
                }
            };
            self.unload(&t);
            self.starting.insert(t.contact.id);
            self.note_dispatch(&trunk_name, t.contact.id, now_i);
            self.launch(t, trunk_name, slot, now, now_i);
        }
        for t in skipped {
            self.ready.push(t);
        }
        self.wake = wake;
    }

    /// Takes the campaign's and the trunk's slots in the limiter shared by all nodes, when
    /// there is one. `Ok(Some(id))`: the call's slot id; `Err(wait)`: denied (retry after
    /// `wait` for a rate, when a call ends for a concurrency limit).
    async fn acquire_slot(
        &mut self,
        t: &Task,
        trunk: &str,
    ) -> Result<Option<String>, Option<Duration>> {
        let Some(limiter) = self.deps.limiter.clone() else {
            return Ok(None);
        };
        let cid = t.contact.campaign_id;
        let (Some(rt), Some(tr)) = (self.campaigns.get(&cid), self.trunks.get(trunk)) else {
            return Err(None);
        };
        self.slot_seq += 1;
        let call_id = format!("{}:{}:{}", self.cfg.node, t.contact.id, self.slot_seq);
        let req = SlotRequest {
            call_id: call_id.clone(),
            node: self.cfg.node.clone(),
            campaign_id: cid,
            campaign_limits: PaceLimits {
                max_concurrent: Some(rt.campaign.spec.max_concurrent),
                max_cps: Some(rt.campaign.spec.max_cps),
                cps_burst: 1,
            },
            trunk: trunk.to_string(),
            trunk_limits: PaceLimits {
                max_concurrent: tr.config.max_concurrent,
                max_cps: tr.config.max_cps,
                cps_burst: 1,
            },
            hold: SLOT_HOLD,
        };
        match limiter.try_acquire(&req).await {
            Ok(Acquire::Granted) => Ok(Some(call_id)),
            Ok(Acquire::Denied {
                retry_after,
                reason,
            }) => {
                debug!(campaign = cid, trunk, ?reason, "global limit: not now");
                Err(Some(retry_after.unwrap_or(Duration::from_millis(50))))
            }
            Err(e) => {
                warn!(error = %e, "global limiter unavailable: not dialing");
                Err(Some(Duration::from_millis(500)))
            }
        }
    }

    fn bump(&self, id: CampaignId, f: impl FnOnce(&mut CampaignLive)) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        f(live.entry(id).or_default());
    }

    /// Takes the pacing slots and starts the attempt's task: it opens the attempt in the store
    /// (before any INVITE, so a crash leaves a record) and places the call.
    fn launch(
        &mut self,
        t: Task,
        trunk_name: String,
        slot: Option<String>,
        now: Timestamp,
        now_i: Instant,
    ) {
        let cid = t.contact.campaign_id;
        let (Some(rt), Some(tr)) = (
            self.campaigns.get_mut(&cid),
            self.trunks.get_mut(&trunk_name),
        ) else {
            return;
        };
        rt.pacer.start(now_i);
        tr.pacer.start(now_i);
        self.global.start(now_i);
        let latency = now.duration_since(t.contact.due_at).as_secs_f64().max(0.0);
        metrics::histogram!(outcall_domain::metrics::DISPATCH_SECONDS).record(latency);
        metrics::counter!(
            outcall_domain::metrics::ATTEMPTS_TOTAL,
            "trunk" => trunk_name.clone(),
            "campaign" => rt.campaign.metric_label()
        )
        .increment(1);
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let l = live.entry(cid).or_default();
            l.active += 1;
            l.dispatched += 1;
            l.recent.push_back(now_i);
            trim_recent(&mut l.recent);
        }
        let spec = &rt.campaign.spec;
        let contact = t.contact.clone();
        let mut req = CallRequest::new(String::new(), String::new(), tr.config.clone());
        req.caller_id = rt.callers.next_id().map(str::to_string);
        req.prompt = rt.prompt.clone();
        req.after_prompt = match spec.after_prompt {
            AfterPrompt::Hangup => EngineAfterPrompt::Hangup,
            AfterPrompt::Stay => EngineAfterPrompt::Stay,
        };
        req.dtmf = spec.dtmf.clone();
        req.ring_timeout = Duration::from_secs(spec.ring_timeout_secs);
        req.max_duration = Duration::from_secs(spec.max_duration_secs);
        req.queued_at_ms = Some(contact.due_at.as_millisecond().max(0) as u64);
        req.dispatched_at_ms = Some(now.as_millisecond().max(0) as u64);
        req.campaign_label = Some(rt.campaign.metric_label());
        req.campaign_id = cid;
        req.cancel = rt.cancel.child_token();
        let record_dir = match (spec.record, &self.cfg.recordings_dir) {
            (true, Some(dir)) => Some(dir.join(cid.to_string())),
            _ => None,
        };
        let retry = spec.retry.clone();
        let learn = Learn {
            dial_known_empty: spec.dial_known_empty,
            ttl: self.cfg.number_status_ttl,
            store_cdrs: self.cfg.store_cdrs,
        };
        let deps = self.deps.clone();
        let tx = self.tx.clone();
        let node = self.cfg.node.clone();
        let opening = self.opening.clone();
        *opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(contact.number_hash.clone())
            .or_default() += 1;
        let keeper = Keeper {
            queue: deps.queue.clone(),
            limiter: deps.limiter.clone(),
            lease: t.lease.clone(),
            slot: slot.map(|id| (id, cid, trunk_name.clone())),
            lease_for: self.cfg.lease,
        };
        tokio::spawn(async move {
            let renewing = keeper.renew_while_live();
            let contact_id = contact.id;
            let begun = deps.store.begin_attempt(contact_id, &node, now).await;
            {
                let mut m = opening.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = m.get_mut(&contact.number_hash) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&contact.number_hash);
                    }
                }
            }
            let mut trunk_fault = None;
            match begun {
                Ok(Some(start)) => {
                    req.attempt_id = start.attempt_id.to_string();
                    // A single call keeps its API request's trace; other attempts start one.
                    req.trace_id = contact
                        .trace_id
                        .clone()
                        .filter(|t| outcall_telephony::trace::is_trace_id(t))
                        .unwrap_or_else(outcall_telephony::trace::new_trace_id);
                    if let Some(d) = record_dir {
                        if std::fs::create_dir_all(&d).is_ok() {
                            req.record_to = Some(d.join(format!("{}.wav", start.attempt_id)));
                        }
                    }
                    let span = tracing::info_span!(
                        "attempt",
                        trace_id = %req.trace_id,
                        campaign = cid,
                        attempt = start.attempt_id,
                    );
                    outcall_telephony::trace::link(&span, &req.trace_id);
                    let attempt = run_attempt(deps, req, contact, start, retry, learn);
                    trunk_fault = tracing::Instrument::instrument(attempt, span).await;
                }
                Ok(None) => debug!(contact = contact_id, "contact no longer pending"),
                Err(e) => warn!(contact = contact_id, error = %e, "cannot open attempt"),
            }
            renewing.abort();
            keeper.done().await;
            let _ = tx.send(Msg::Finished {
                campaign: cid,
                trunk: trunk_name,
                contact: contact_id,
                trunk_fault,
            });
        });
    }
}

/// Keeps a dispatched task's lease and limiter slots while its call lives, and gives them up
/// when it ends.
struct Keeper {
    queue: Option<Arc<dyn TaskQueue>>,
    limiter: Option<Arc<dyn Limiter>>,
    lease: Option<Lease>,
    /// (slot id, campaign, trunk)
    slot: Option<(String, CampaignId, String)>,
    lease_for: Duration,
}

impl Keeper {
    /// Renews the lease and the slots every third of the lease until aborted.
    fn renew_while_live(&self) -> tokio::task::JoinHandle<()> {
        let (queue, limiter) = (self.queue.clone(), self.limiter.clone());
        let (lease, slot, lease_for) = (self.lease.clone(), self.slot.clone(), self.lease_for);
        tokio::spawn(async move {
            if lease.is_none() && slot.is_none() {
                return;
            }
            let mut tick = tokio::time::interval(lease_for / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let (Some(q), Some(l)) = (&queue, &lease) {
                    match q.renew(l, lease_for).await {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!(
                                contact = l.task.contact_id,
                                "lease lost while the call is live"
                            )
                        }
                        Err(e) => warn!(error = %e, "cannot renew a lease"),
                    }
                }
                if let (Some(lim), Some((id, campaign, trunk))) = (&limiter, &slot) {
                    if let Err(e) = lim.renew(id, *campaign, trunk, SLOT_HOLD).await {
                        warn!(error = %e, "cannot renew limiter slots");
                    }
                }
            }
        })
    }

    /// The call ended: the task is done in the shared queue and the slots are free.
    async fn done(self) {
        if let (Some(q), Some(l)) = (&self.queue, &self.lease) {
            if let Err(e) = q.ack(l).await {
                warn!(contact = l.task.contact_id, error = %e, "cannot acknowledge a task");
            }
        }
        if let (Some(lim), Some((id, campaign, trunk))) = (&self.limiter, &self.slot) {
            if let Err(e) = lim.release(id, *campaign, trunk).await {
                warn!(error = %e, "cannot release limiter slots");
            }
        }
    }
}

/// What the attempt does with learned number statuses.
#[derive(Debug, Clone, Copy)]
struct Learn {
    dial_known_empty: bool,
    ttl: Duration,
    /// See [`SchedulerConfig::store_cdrs`].
    store_cdrs: bool,
}

async fn run_attempt(
    deps: SchedulerDeps,
    mut req: CallRequest,
    contact: Arc<ContactRecord>,
    start: outcall_store::AttemptStart,
    retry: outcall_domain::campaign::RetryPolicy,
    learn: Learn,
) -> Option<bool> {
    let (outcome, cdr, cause) = match deps.vault.decrypt(&contact.number_enc) {
        Ok(number) => {
            let since = deps
                .clock
                .now()
                .checked_sub(jiff::SignedDuration::try_from(learn.ttl).unwrap_or_default())
                .unwrap_or_else(|_| deps.clock.now());
            let known_empty = !learn.dial_known_empty
                && matches!(
                    deps.store.number_status(&contact.number_hash, since).await,
                    Ok(Some(ref st)) if st.status == "empty"
                );
            // Checked again at dispatch: a number blacklisted after import is never dialed.
            let hit = deps
                .store
                .blacklist_match(
                    contact.campaign_id,
                    &contact.number_hash,
                    &number,
                    deps.clock.now(),
                )
                .await;
            match hit {
                Ok(Some(entry)) => {
                    debug!(
                        contact = contact.id,
                        entry = entry.id,
                        "blacklisted: not dialed"
                    );
                    (Outcome::Blocked, None, Some("blacklist".to_string()))
                }
                Ok(None) if known_empty => {
                    debug!(contact = contact.id, "known empty number: not dialed");
                    (Outcome::Blocked, None, Some("known_empty".to_string()))
                }
                Ok(None) => {
                    req.to = number;
                    let report = place_call(&deps, req, &contact, &start).await;
                    (report.cdr.outcome, Some(report.cdr), report.cause)
                }
                Err(e) => {
                    warn!(contact = contact.id, error = %e, "cannot check the blacklist: not dialed");
                    (
                        Outcome::Failed,
                        None,
                        Some("blacklist_unavailable".to_string()),
                    )
                }
            }
        }
        Err(e) => {
            warn!(contact = contact.id, error = %e, "number cannot be decrypted");
            (Outcome::Failed, None, Some("number_unreadable".to_string()))
        }
    };
    let now = deps.clock.now();
    let counts = deps
        .store
        .outcome_counts(contact.id)
        .await
        .unwrap_or_default();
    let same = counts.get(&outcome).copied().unwrap_or(0) + 1;
    // Causes of our own making that say nothing against the number: retried like any call.
    let retryable = matches!(
        cause.as_deref(),
        None | Some("blacklist_unavailable" | "node_lost" | "no_dialer")
    );
    let next = match (retryable, retry.decide(outcome, same, start.seq)) {
        (true, RetryDecision::RetryAfter(s)) => ContactNext::Retry {
            due_at: add_secs(now, s),
        },
        _ => ContactNext::Done { outcome },
    };
    // For the trunk's health: only a call that was placed says something about the trunk.
    // A call lost with its dialer node, or never placed for want of one, says nothing
    // about the trunk.
    let trunk_fault = cdr
        .as_ref()
        .filter(|_| cause.is_none())
        .and_then(|c| crate::health::trunk_fault(outcome, c.sip_status));
    // Without `store_cdrs` the dialer's CDR reaches the store through the bus; a CDR this
    // node made up (the dialer was lost) exists nowhere else.
    let stored_cdr = cdr.as_ref().filter(|_| learn.store_cdrs || cause.is_some());
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        match deps
            .store
            .finish_attempt(
                start.attempt_id,
                outcome,
                cause.as_deref(),
                stored_cdr,
                next,
                now,
            )
            .await
        {
            Ok(()) => {
                // Learned only once the attempt is recorded: a crash in between must not leave
                // the number known as empty while its own attempt is retried (and then blocked
                // as a known empty number instead of ending `empty_number`).
                if let Some(c) = &cdr {
                    learn_number(&deps, &contact, outcome, c, now).await;
                }
                if let Some(sink) = &deps.events {
                    let mut e = status_event(&contact, &start, StatusEventKind::Completed, now);
                    e.outcome = Some(outcome);
                    e.cause = cause.clone();
                    e.cdr = cdr;
                    sink.emit(e);
                }
                return trunk_fault;
            }
            Err(StoreError::Conflict(m)) => {
                warn!(attempt = start.attempt_id, error = %m, "attempt already closed");
                return trunk_fault;
            }
            Err(e) => {
                warn!(attempt = start.attempt_id, error = %e, "cannot record attempt, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    trunk_fault
}

/// Records what the call taught about its number: only a Q.850 cause 1 confirms an empty
/// number (空号), never a bare 404.
async fn learn_number(
    deps: &SchedulerDeps,
    contact: &ContactRecord,
    outcome: Outcome,
    cdr: &outcall_domain::Cdr,
    now: Timestamp,
) {
    let status = match outcome {
        o if o.is_answered() => Some("valid"),
        Outcome::EmptyNumber if cdr.q850_cause == Some(1) => Some("empty"),
        Outcome::Suspended => Some("suspended"),
        Outcome::InvalidFormat => Some("invalid_format"),
        _ => None,
    };
    if let Err(e) = deps
        .store
        .record_number_outcome(&contact.number_hash, outcome, status, now)
        .await
    {
        warn!(contact = contact.id, error = %e, "cannot record the number's status");
    }
}

/// An event of this attempt, without the `completed` details.
fn status_event(
    contact: &ContactRecord,
    start: &outcall_store::AttemptStart,
    kind: StatusEventKind,
    at: Timestamp,
) -> StatusEvent {
    StatusEvent {
        kind,
        campaign_id: contact.campaign_id,
        contact_id: contact.id,
        attempt_id: start.attempt_id,
        seq: start.seq,
        at,
        number: contact.masked.clone(),
        outcome: None,
        cause: None,
        cdr: None,
    }
}

/// Places the call. With an event sink: `initiated` as the call is handed over, then `ringing`
/// (first transition to ringing or early media) and `answered` from the engine's transitions.
async fn place_call(
    deps: &SchedulerDeps,
    req: CallRequest,
    contact: &ContactRecord,
    start: &outcall_store::AttemptStart,
) -> CallReport {
    let Some(sink) = &deps.events else {
        return deps.engine.place_call(req, None).await;
    };
    sink.emit(status_event(
        contact,
        start,
        StatusEventKind::Initiated,
        deps.clock.now(),
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let call = deps.engine.place_call(req, Some(tx));
    tokio::pin!(call);
    let (mut rang, mut answered) = (false, false);
    let mut on_update = |u: CallUpdate| {
        let CallUpdate::Transition(t) = u else {
            return;
        };
        let kind = match t.to {
            CallState::Ringing | CallState::EarlyMedia if !rang => {
                rang = true;
                StatusEventKind::Ringing
            }
            CallState::Answered if !answered => {
                answered = true;
                StatusEventKind::Answered
            }
            _ => return,
        };
        let at = i64::try_from(t.at_ms)
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or_else(|| deps.clock.now());
        sink.emit(status_event(contact, start, kind, at));
    };
    let report = loop {
        tokio::select! {
            biased;
            Some(u) = rx.recv() => on_update(u),
            r = &mut call => break r,
        }
    };
    // Transitions sent just before the call ended.
    while let Ok(u) = rx.try_recv() {
        on_update(u);
    }
    report
}
