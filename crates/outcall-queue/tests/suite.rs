//! The behaviour every implementation must have.
//!
//! `suite!(backend, async { … })` expands to a module `backend` with one
//! `#[tokio::test]` per behaviour; each test builds a fresh [`Backend`] with the expression
//! and runs the matching case of [`cases`], which only speaks the traits. A backend hands
//! out "instances": for Redis each is a new connection (as another node would have), for
//! memory each shares the one in-process state (embedded mode has a single process).
//!
//! The Redis backend uses the server at `OUTCALL_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`) under a random namespace, and deletes the namespace's keys when
//! the test ends, passed or failed.

use async_trait::async_trait;
use outcall_queue::{
    least_loaded, now_ms, Acquire, CacheConfig, DenyReason, DialerInfo, DialerRegistry, Lease,
    Limiter, MemoryLimiter, MemoryQueue, MemoryRegistry, PaceLimits, QueueDepth, SlotRequest,
    SlotUsage, Task, TaskQueue, TwoLevelCache,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A cached value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conf {
    pub version: u32,
    pub name: String,
}

/// Hands out instances of each implementation.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn queue(&self) -> Arc<dyn TaskQueue>;
    async fn limiter(&self) -> Arc<dyn Limiter>;
    async fn registry(&self) -> Arc<dyn DialerRegistry>;
    async fn cache(&self, name: &str, cfg: &CacheConfig) -> TwoLevelCache<Conf>;
}

/// Embedded mode: every instance shares the process's state.
#[derive(Default)]
pub struct Memory {
    queue: MemoryQueue,
    limiter: MemoryLimiter,
    registry: MemoryRegistry,
    caches: Mutex<HashMap<String, TwoLevelCache<Conf>>>,
}

#[async_trait]
impl Backend for Memory {
    async fn queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(self.queue.clone())
    }
    async fn limiter(&self) -> Arc<dyn Limiter> {
        Arc::new(self.limiter.clone())
    }
    async fn registry(&self) -> Arc<dyn DialerRegistry> {
        Arc::new(self.registry.clone())
    }
    async fn cache(&self, name: &str, cfg: &CacheConfig) -> TwoLevelCache<Conf> {
        self.caches
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| TwoLevelCache::memory(cfg))
            .clone()
    }
}

#[cfg(feature = "redis")]
pub mod on_redis {
    use super::*;
    use ::redis::Commands;
    use outcall_queue::{RedisConn, RedisLimiter, RedisQueue, RedisRegistry};

    pub fn url() -> String {
        std::env::var("OUTCALL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A random namespace on the test server; its keys are deleted on drop.
    pub struct OnRedis {
        pub url: String,
        pub ns: String,
    }

    impl OnRedis {
        pub async fn new() -> Self {
            let backend = OnRedis {
                url: url(),
                ns: format!("outcall-test-{:016x}", rand::random::<u64>()),
            };
            backend.conn().await;
            backend
        }

        /// A new connection, as another node would open.
        pub async fn conn(&self) -> RedisConn {
            RedisConn::connect(&self.url, &self.ns)
                .await
                .unwrap_or_else(|e| {
                    panic!("{e} (the tests need the Redis server at OUTCALL_TEST_REDIS_URL)")
                })
        }

        /// Every key of the namespace.
        pub fn keys(&self) -> Vec<String> {
            let client = ::redis::Client::open(self.url.as_str()).expect("Redis URL");
            let mut con = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("Redis at {}: {e}", self.url));
            con.scan_match::<_, String>(format!("{{{}:*", self.ns))
                .expect("SCAN")
                .collect::<Result<_, _>>()
                .expect("SCAN")
        }
    }

    impl Drop for OnRedis {
        fn drop(&mut self) {
            let Ok(client) = ::redis::Client::open(self.url.as_str()) else {
                return;
            };
            let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
                return;
            };
            let keys: Vec<String> = match con.scan_match(format!("{{{}:*", self.ns)) {
                Ok(it) => it.filter_map(Result::ok).collect(),
                Err(_) => return,
            };
            for chunk in keys.chunks(500) {
                let _: ::redis::RedisResult<i64> = con.del(chunk);
            }
        }
    }

    #[async_trait]
    impl Backend for OnRedis {
        async fn queue(&self) -> Arc<dyn TaskQueue> {
            Arc::new(RedisQueue::new(self.conn().await))
        }
        async fn limiter(&self) -> Arc<dyn Limiter> {
            Arc::new(RedisLimiter::new(self.conn().await))
        }
        async fn registry(&self) -> Arc<dyn DialerRegistry> {
            Arc::new(RedisRegistry::new(self.conn().await))
        }
        async fn cache(&self, name: &str, cfg: &CacheConfig) -> TwoLevelCache<Conf> {
            TwoLevelCache::with_redis(&self.conn().await, name, cfg)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    }
}

/// One `#[tokio::test]` per case of [`cases`], each on a fresh backend built by `$build`.
macro_rules! suite {
    ($backend:ident, $build:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            suite!(@cases $build;
                claim_takes_highest_priority_then_earliest_due,
                a_task_not_yet_due_is_not_claimed,
                concurrent_claimers_take_each_task_once,
                renew_keeps_a_lease_and_reap_requeues_expired_ones,
                ack_removes_and_release_requeues,
                push_is_idempotent_while_queued_and_leased,
                remove_purge_and_depth,
                concurrency_limit_holds_across_instances,
                rate_limit_holds_over_two_seconds,
                slots_of_a_dead_holder_free_after_the_hold,
                campaign_and_trunk_slots_are_all_or_nothing,
                registry_lists_live_dialers_by_ttl,
                cache_loads_once_for_concurrent_callers,
                cache_invalidation_reaches_other_instances,
                cache_load_racing_an_invalidation_is_not_kept,
                cache_entries_expire_after_the_ttl,
                cache_failed_load_is_not_cached,
            );
        }
    };
    (@cases $build:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $build.await;
                super::cases::$case(&backend).await;
            }
        )*
    };
}

suite!(memory, async { Memory::default() });

#[cfg(feature = "redis")]
suite!(redis, async { on_redis::OnRedis::new().await });

/// Redis only: what a node sees of the server itself.
#[cfg(feature = "redis")]
mod redis_only {
    use super::on_redis::OnRedis;
    use super::*;
    use outcall_queue::{RedisConn, RedisQueue};

    #[tokio::test]
    async fn unreachable_redis_is_named_in_the_error() {
        let err = RedisConn::connect("redis://127.0.0.1:1", "outcall-test")
            .await
            .expect_err("nothing listens on port 1");
        let msg = err.to_string();
        assert!(msg.starts_with("Redis at redis://127.0.0.1:1: "), "{msg}");
        assert!(msg.contains("connection refused"), "{msg}");
        let err = RedisConn::connect("redis://app:s3cret@127.0.0.1:1", "outcall-test")
            .await
            .expect_err("nothing listens on port 1");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn a_namespace_with_braces_is_refused() {
        let err = RedisConn::connect(&super::on_redis::url(), "a{b}")
            .await
            .expect_err("braces would break the hash tags");
        assert!(err.to_string().contains("Redis namespace"), "{err}");
    }

    /// Every key lives under `{<ns>:…}` (the cleanup relies on it) and a campaign's keys
    /// share one hash tag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_carry_the_namespace_hash_tags() {
        let backend = OnRedis::new().await;
        let q = RedisQueue::new(backend.conn().await);
        let t0 = now_ms();
        q.push(&[task(7, 1, 0, t0), task(7, 2, 0, t0 + 60_000)])
            .await
            .unwrap();
        q.claim(7, t0, 1, "n1", Duration::from_secs(30))
            .await
            .unwrap();
        let l = backend.limiter().await;
        assert!(l
            .try_acquire(&slot(
                "call",
                7,
                "sipp",
                limits(Some(5), Some(10.0)),
                limits(Some(5), Some(10.0))
            ))
            .await
            .unwrap()
            .is_granted());
        backend
            .registry()
            .await
            .register(&dialer("d1", 10, 0), Duration::from_secs(30))
            .await
            .unwrap();
        let cache = backend.cache("conf", &CacheConfig::default()).await;
        cache
            .get_or_load("k", async { Ok::<_, String>(conf(1)) })
            .await
            .unwrap();
        let mut keys = backend.keys();
        keys.sort();
        let ns = &backend.ns;
        let tag = |k: &str| k[..=k.find('}').unwrap()].to_string();
        for k in &keys {
            assert!(k.starts_with(&format!("{{{ns}:")), "{k}");
        }
        let campaign: Vec<_> = keys.iter().filter(|k| k.contains(":c:7}")).collect();
        assert!(campaign.len() >= 5, "{keys:?}");
        assert!(
            campaign.iter().all(|k| tag(k) == format!("{{{ns}:c:7}}")),
            "{keys:?}"
        );
        let limits: Vec<_> = keys.iter().filter(|k| k.contains(":limits}")).collect();
        assert_eq!(limits.len(), 4, "{keys:?}");
        assert!(
            limits.iter().all(|k| tag(k) == format!("{{{ns}:limits}}")),
            "{keys:?}"
        );
        assert!(keys.contains(&format!("{{{ns}:dialers}}")), "{keys:?}");
        assert!(keys.contains(&format!("{{{ns}:cache:conf:k}}")), "{keys:?}");
    }

    /// With more tasks falling due than a claim moves at once, every task still comes out,
    /// once, and priority holds among the moved ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_move_batch_still_delivers_every_task() {
        let backend = OnRedis::new().await;
        let q = RedisQueue::new(backend.conn().await).with_move_batch(3);
        let t0 = 1_767_225_600_000;
        let tasks: Vec<Task> = (1..=10).map(|i| task(1, i, i as i32, t0 + i)).collect();
        q.push(&tasks).await.unwrap();
        let now = t0 + 100;
        // The 3 earliest due (contacts 1-3) move first; the best of them is 3.
        let first = q
            .claim(1, now, 1, "n", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(first[0].task.contact_id, 3);
        let mut seen = vec![3];
        loop {
            let got = q
                .claim(1, now, 2, "n", Duration::from_secs(30))
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            seen.extend(got.iter().map(|l| l.task.contact_id));
        }
        seen.sort();
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert_eq!(q.depth(1).await.unwrap().leased, 10);
    }

    /// A value loaded on one node is served to another from Redis, without loading again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_tier_serves_other_nodes() {
        let backend = OnRedis::new().await;
        let cfg = CacheConfig::default();
        let a = backend.cache("conf", &cfg).await;
        let b = backend.cache("conf", &cfg).await;
        let v = a
            .get_or_load("k", async { Ok::<_, String>(conf(1)) })
            .await
            .unwrap();
        assert_eq!(v, conf(1));
        let v = b
            .get_or_load("k", async {
                Err::<Conf, _>("node B must not load".to_string())
            })
            .await
            .unwrap();
        assert_eq!(v, conf(1));
    }
}

pub fn task(campaign_id: i64, contact_id: i64, priority: i32, due_at_ms: i64) -> Task {
    Task {
        campaign_id,
        contact_id,
        priority,
        due_at_ms,
    }
}

pub fn limits(max_concurrent: Option<u32>, max_cps: Option<f64>) -> PaceLimits {
    PaceLimits {
        max_concurrent,
        max_cps,
        cps_burst: 1,
    }
}

pub fn slot(
    call: &str,
    campaign_id: i64,
    trunk: &str,
    c: PaceLimits,
    t: PaceLimits,
) -> SlotRequest {
    SlotRequest {
        call_id: call.to_string(),
        node: "node-test".into(),
        campaign_id,
        campaign_limits: c,
        trunk: trunk.to_string(),
        trunk_limits: t,
        hold: Duration::from_secs(30),
    }
}

pub fn dialer(node: &str, capacity: u32, active: u32) -> DialerInfo {
    DialerInfo {
        node: node.to_string(),
        rpc_addr: format!("10.0.0.1:{}", 7000 + node.len()),
        capacity,
        active,
        draining: false,
    }
}

pub fn conf(version: u32) -> Conf {
    Conf {
        version,
        name: format!("campaign config v{version}"),
    }
}

pub mod cases {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use tokio::time::{sleep, Instant};

    /// A fixed instant for tests that never renew (renew reads the system clock).
    const T: i64 = 1_767_225_600_000;
    const LEASE: Duration = Duration::from_secs(30);

    fn contacts(leases: &[Lease]) -> Vec<i64> {
        leases.iter().map(|l| l.task.contact_id).collect()
    }

    pub async fn claim_takes_highest_priority_then_earliest_due<B: Backend>(b: &B) {
        let q = b.queue().await;
        let added = q
            .push(&[
                task(1, 1, 1, T - 5_000),
                task(1, 2, 5, T - 1_000),
                task(1, 3, 5, T - 3_000),
                task(1, 4, 1, T - 9_000),
                task(1, 5, -3, T - 10_000),
                task(1, 6, 9, T + 60_000),
                task(2, 7, 100, T - 60_000),
            ])
            .await
            .unwrap();
        assert_eq!(added, 7);
        let got = q.claim(1, T, 10, "node-a", LEASE).await.unwrap();
        assert_eq!(contacts(&got), [3, 2, 4, 1, 5]);
        assert_eq!(got[0].task, task(1, 3, 5, T - 3_000));
        assert!(got
            .iter()
            .all(|l| l.node == "node-a" && l.expires_at_ms == T + 30_000));
        let mut tokens: Vec<_> = got.iter().map(|l| l.token.clone()).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 5, "a token per lease");
        // The other campaign's task and the one not yet due stay.
        assert_eq!(
            q.depth(1).await.unwrap(),
            QueueDepth {
                due: 1,
                ready: 0,
                leased: 5
            }
        );
        assert_eq!(
            contacts(&q.claim(2, T, 10, "node-a", LEASE).await.unwrap()),
            [7]
        );
        // Claims take at most `max`, best first.
        let q2 = b.queue().await;
        q2.push(&[task(3, 1, 0, T), task(3, 2, 2, T), task(3, 3, 1, T)])
            .await
            .unwrap();
        assert_eq!(
            contacts(&q2.claim(3, T, 2, "n", LEASE).await.unwrap()),
            [2, 3]
        );
        assert_eq!(contacts(&q2.claim(3, T, 2, "n", LEASE).await.unwrap()), [1]);
        assert!(q2.claim(3, T, 0, "n", LEASE).await.unwrap().is_empty());
    }

    pub async fn a_task_not_yet_due_is_not_claimed<B: Backend>(b: &B) {
        let q = b.queue().await;
        q.push(&[task(1, 1, 0, T + 1_000)]).await.unwrap();
        assert!(q.claim(1, T, 10, "n", LEASE).await.unwrap().is_empty());
        assert!(q
            .claim(1, T + 999, 10, "n", LEASE)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(q.depth(1).await.unwrap().due, 1);
        assert_eq!(
            contacts(&q.claim(1, T + 1_000, 10, "n", LEASE).await.unwrap()),
            [1]
        );
        // Pushed after claims have seen later instants: due ones are claimable at once,
        // later ones still wait.
        q.push(&[task(1, 2, 0, T + 500), task(1, 3, 9, T + 5_000)])
            .await
            .unwrap();
        assert_eq!(
            contacts(&q.claim(1, T + 1_000, 10, "n", LEASE).await.unwrap()),
            [2]
        );
        assert!(q
            .claim(1, T + 4_999, 10, "n", LEASE)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            contacts(&q.claim(1, T + 5_000, 10, "n", LEASE).await.unwrap()),
            [3]
        );
    }

    pub async fn concurrent_claimers_take_each_task_once<B: Backend>(b: &B) {
        const N: i64 = 2_000;
        let tasks: Vec<Task> = (0..N).map(|i| task(1, i, (i % 7) as i32, T - i)).collect();
        assert_eq!(b.queue().await.push(&tasks).await.unwrap(), N as u64);
        let claimed: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let mut workers = Vec::new();
        for node in 0..3 {
            let q = b.queue().await;
            for w in 0..2 {
                let (q, claimed) = (q.clone(), claimed.clone());
                workers.push(tokio::spawn(async move {
                    let name = format!("node-{node}-{w}");
                    let mut n = 0u32;
                    loop {
                        let got = q.claim(1, T, 25, &name, LEASE).await.unwrap();
                        if got.is_empty() {
                            return n;
                        }
                        for l in &got {
                            *claimed
                                .lock()
                                .unwrap()
                                .entry(l.task.contact_id)
                                .or_default() += 1;
                            assert!(q.ack(l).await.unwrap(), "ack of a fresh lease");
                        }
                        n += got.len() as u32;
                    }
                }));
            }
        }
        let mut total = 0;
        for w in workers {
            total += w.await.unwrap();
        }
        let claimed = claimed.lock().unwrap().clone();
        assert_eq!(total, N as u32);
        assert_eq!(claimed.len(), N as usize);
        let twice: Vec<_> = claimed.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "claimed more than once: {twice:?}");
        assert_eq!(b.queue().await.depth(1).await.unwrap().total(), 0);
    }

    pub async fn renew_keeps_a_lease_and_reap_requeues_expired_ones<B: Backend>(b: &B) {
        let q = b.queue().await;
        let t0 = now_ms();
        q.push(&[task(1, 1, 3, t0), task(1, 2, 1, t0)])
            .await
            .unwrap();
        let leases = q
            .claim(1, t0, 2, "node-a", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(contacts(&leases), [1, 2]);
        let (l1, l2) = (&leases[0], &leases[1]);
        assert!(
            q.reap(1, t0 + 999).await.unwrap().is_empty(),
            "not expired yet"
        );
        assert!(q.renew(l1, Duration::from_secs(60)).await.unwrap());

        // l2 expired (node-a died); l1 was renewed.
        let reaped = q.reap(1, t0 + 5_000).await.unwrap();
        assert_eq!(reaped, [task(1, 2, 1, t0 + 5_000)]);
        assert_eq!(
            q.depth(1).await.unwrap(),
            QueueDepth {
                due: 0,
                ready: 1,
                leased: 1
            }
        );
        assert!(
            !q.renew(l2, Duration::from_secs(60)).await.unwrap(),
            "renew after reap"
        );
        assert!(!q.ack(l2).await.unwrap());
        assert!(!q.release(l2, t0).await.unwrap());

        // Claimable again, by another node, under a new token.
        let other = b.queue().await;
        let again = other
            .claim(1, t0 + 5_000, 10, "node-b", LEASE)
            .await
            .unwrap();
        assert_eq!(contacts(&again), [2]);
        assert_ne!(again[0].token, l2.token);
        assert!(
            !q.renew(l2, LEASE).await.unwrap(),
            "the old token stays lost"
        );
        assert!(other.renew(&again[0], LEASE).await.unwrap());

        assert!(q.renew(l1, Duration::from_secs(60)).await.unwrap());
        assert!(
            q.reap(1, t0 + 10_000).await.unwrap().is_empty(),
            "renewed leases stay"
        );
        let reaped = q.reap(1, now_ms() + 3_600_000).await.unwrap();
        assert_eq!(contacts_of(&reaped), [1, 2]);
        assert!(!q.renew(l1, LEASE).await.unwrap());
    }

    fn contacts_of(tasks: &[Task]) -> Vec<i64> {
        let mut c: Vec<i64> = tasks.iter().map(|t| t.contact_id).collect();
        c.sort();
        c
    }

    pub async fn ack_removes_and_release_requeues<B: Backend>(b: &B) {
        let q = b.queue().await;
        q.push(&[task(1, 1, 0, T), task(1, 2, 0, T)]).await.unwrap();
        let l = q.claim(1, T, 2, "n", LEASE).await.unwrap();
        assert!(q.ack(&l[0]).await.unwrap());
        assert!(!q.ack(&l[0]).await.unwrap(), "acked twice");
        assert_eq!(
            q.depth(1).await.unwrap(),
            QueueDepth {
                due: 0,
                ready: 0,
                leased: 1
            }
        );
        // Deferred (a closed calling window): back in the queue at its new time only.
        assert!(q.release(&l[1], T + 10_000).await.unwrap());
        assert!(!q.release(&l[1], T).await.unwrap(), "released twice");
        assert!(!q.ack(&l[1]).await.unwrap());
        assert!(q
            .claim(1, T + 9_999, 5, "n", LEASE)
            .await
            .unwrap()
            .is_empty());
        let again = q.claim(1, T + 10_000, 5, "n", LEASE).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].task, task(1, 2, 0, T + 10_000));
        // Released to a time already past: claimable at once.
        assert!(q.release(&again[0], T).await.unwrap());
        assert_eq!(
            contacts(&q.claim(1, T + 10_000, 5, "n", LEASE).await.unwrap()),
            [2]
        );
        // An acked task can be queued anew (its next attempt).
        assert_eq!(q.push(&[task(1, 1, 0, T)]).await.unwrap(), 1);
    }

    pub async fn push_is_idempotent_while_queued_and_leased<B: Backend>(b: &B) {
        let q = b.queue().await;
        assert_eq!(
            q.push(&[task(1, 1, 0, T), task(1, 2, 0, T)]).await.unwrap(),
            2
        );
        assert_eq!(
            q.push(&[
                task(1, 1, 5, T - 1),
                task(1, 2, 0, T),
                task(1, 3, 0, T),
                task(1, 3, 0, T)
            ])
            .await
            .unwrap(),
            1
        );
        let l = q.claim(1, T, 10, "n", LEASE).await.unwrap();
        assert_eq!(
            contacts(&l),
            [1, 2, 3],
            "the first push's priority and due time hold"
        );
        assert_eq!(
            b.queue().await.push(&[task(1, 1, 0, T)]).await.unwrap(),
            0,
            "leased"
        );
        assert!(q.claim(1, T, 10, "n", LEASE).await.unwrap().is_empty());
        assert!(q.ack(&l[0]).await.unwrap());
        assert_eq!(
            q.push(&[task(1, 1, 0, T)]).await.unwrap(),
            1,
            "done: queued again"
        );
    }

    pub async fn remove_purge_and_depth<B: Backend>(b: &B) {
        let q = b.queue().await;
        q.push(&[
            task(1, 1, 0, T),
            task(1, 2, 0, T),
            task(1, 3, 0, T + 60_000),
        ])
        .await
        .unwrap();
        let l = q.claim(1, T, 1, "n", LEASE).await.unwrap();
        assert_eq!(
            q.depth(1).await.unwrap(),
            QueueDepth {
                due: 1,
                ready: 1,
                leased: 1
            }
        );
        assert!(q.remove(1, l[0].task.contact_id).await.unwrap());
        assert!(
            !q.ack(&l[0]).await.unwrap(),
            "the holder of a removed task learns it"
        );
        assert!(!q.remove(1, l[0].task.contact_id).await.unwrap());
        assert!(q.remove(1, 3).await.unwrap());
        assert_eq!(
            q.depth(1).await.unwrap(),
            QueueDepth {
                due: 0,
                ready: 1,
                leased: 0
            }
        );
        q.push(&[task(2, 1, 0, T)]).await.unwrap();
        q.purge_campaign(1).await.unwrap();
        assert_eq!(q.depth(1).await.unwrap(), QueueDepth::default());
        assert!(q.claim(1, T, 10, "n", LEASE).await.unwrap().is_empty());
        assert_eq!(
            q.depth(2).await.unwrap().ready + q.depth(2).await.unwrap().due,
            1
        );
        assert_eq!(
            q.push(&[task(1, 2, 0, T)]).await.unwrap(),
            1,
            "purged: new again"
        );
    }

    /// Counts calls granted and not released yet, across 3 instances hammering at once.
    pub async fn concurrency_limit_holds_across_instances<B: Backend>(b: &B) {
        const MAX: i64 = 4;
        let in_use = Arc::new(AtomicI64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        let granted = Arc::new(AtomicU32::new(0));
        let deadline = Instant::now() + Duration::from_millis(1_500);
        let mut workers = Vec::new();
        for node in 0..3 {
            let l = b.limiter().await;
            for w in 0..3 {
                let (l, in_use, peak, granted) =
                    (l.clone(), in_use.clone(), peak.clone(), granted.clone());
                workers.push(tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < deadline {
                        i += 1;
                        let call = format!("call-{node}-{w}-{i}");
                        let req = slot(
                            &call,
                            1,
                            "sipp",
                            limits(Some(MAX as u32), None),
                            limits(Some(1000), None),
                        );
                        match l.try_acquire(&req).await.unwrap() {
                            Acquire::Granted => {
                                let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                granted.fetch_add(1, Ordering::SeqCst);
                                sleep(Duration::from_millis(5)).await;
                                in_use.fetch_sub(1, Ordering::SeqCst);
                                assert!(l.release(&call, 1, "sipp").await.unwrap());
                            }
                            Acquire::Denied {
                                reason,
                                retry_after,
                            } => {
                                assert_eq!(reason, DenyReason::CampaignConcurrency);
                                assert_eq!(retry_after, None);
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                }));
            }
        }
        for w in workers {
            w.await.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= MAX, "{peak} calls at once, limit {MAX}");
        assert_eq!(peak, MAX, "9 workers for 1.5 s should fill the limit");
        assert!(granted.load(Ordering::SeqCst) >= 50, "{granted:?}");
        let usage = b.limiter().await.usage(1, "sipp").await.unwrap();
        assert_eq!(
            usage,
            SlotUsage {
                campaign: 0,
                trunk: 0
            }
        );
    }

    pub async fn rate_limit_holds_over_two_seconds<B: Backend>(b: &B) {
        const RATE: f64 = 25.0;
        const BURST: u32 = 3;
        let granted = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let stop = start + Duration::from_secs(2);
        let mut workers = Vec::new();
        for node in 0..3 {
            let l = b.limiter().await;
            for w in 0..2 {
                let (l, granted) = (l.clone(), granted.clone());
                workers.push(tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < stop {
                        i += 1;
                        let call = format!("call-{node}-{w}-{i}");
                        let c = PaceLimits {
                            max_concurrent: None,
                            max_cps: Some(RATE),
                            cps_burst: BURST,
                        };
                        let req = slot(&call, 1, "sipp", c, PaceLimits::UNLIMITED);
                        match l.try_acquire(&req).await.unwrap() {
                            Acquire::Granted => {
                                granted.fetch_add(1, Ordering::SeqCst);
                                l.release(&call, 1, "sipp").await.unwrap();
                            }
                            Acquire::Denied {
                                reason,
                                retry_after,
                            } => {
                                assert_eq!(reason, DenyReason::CampaignRate);
                                let wait = retry_after.expect("a rate denial says when to retry");
                                assert!(wait <= Duration::from_millis(40), "{wait:?}");
                                sleep(wait.min(Duration::from_millis(10))).await;
                            }
                        }
                    }
                }));
            }
        }
        for w in workers {
            w.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let granted = granted.load(Ordering::SeqCst);
        let bound = (RATE * elapsed).floor() as u32 + BURST;
        assert!(
            granted <= bound,
            "{granted} calls in {elapsed:.3} s, bound {bound}"
        );
        assert!(
            granted as f64 >= RATE * 2.0 * 0.8,
            "only {granted} calls in {elapsed:.3} s"
        );
    }

    pub async fn slots_of_a_dead_holder_free_after_the_hold<B: Backend>(b: &B) {
        let hold = Duration::from_millis(400);
        let req = |call: &str| SlotRequest {
            hold,
            ..slot(
                call,
                1,
                "sipp",
                limits(Some(2), None),
                PaceLimits::UNLIMITED,
            )
        };
        let dead = b.limiter().await;
        assert!(dead.try_acquire(&req("a")).await.unwrap().is_granted());
        assert!(dead.try_acquire(&req("b")).await.unwrap().is_granted());
        let started = Instant::now();
        drop(dead); // the node dies without releasing
        let l = b.limiter().await;
        assert_eq!(
            l.try_acquire(&req("c")).await.unwrap(),
            Acquire::Denied {
                retry_after: None,
                reason: DenyReason::CampaignConcurrency
            }
        );
        assert_eq!(
            l.usage(1, "sipp").await.unwrap(),
            SlotUsage {
                campaign: 2,
                trunk: 2
            }
        );
        let deadline = started + Duration::from_secs(5);
        while !l.try_acquire(&req("c")).await.unwrap().is_granted() {
            assert!(
                Instant::now() < deadline,
                "the dead holder's slots never freed"
            );
            sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "freed before the hold"
        );
        assert!(
            !l.release("a", 1, "sipp").await.unwrap(),
            "an expired slot frees nothing"
        );

        // A long call renewed past its hold keeps its slot.
        assert!(l.try_acquire(&req("d")).await.unwrap().is_granted());
        let until = Instant::now() + Duration::from_millis(1_000);
        while Instant::now() < until {
            assert!(l.renew("c", 1, "sipp", hold).await.unwrap());
            assert!(l.renew("d", 1, "sipp", hold).await.unwrap());
            assert!(!l.try_acquire(&req("e")).await.unwrap().is_granted());
            sleep(Duration::from_millis(100)).await;
        }
        assert!(l.release("c", 1, "sipp").await.unwrap());
        assert!(
            !l.renew("c", 1, "sipp", hold).await.unwrap(),
            "released: nothing to renew"
        );
        assert!(l.try_acquire(&req("e")).await.unwrap().is_granted());
    }

    pub async fn campaign_and_trunk_slots_are_all_or_nothing<B: Backend>(b: &B) {
        let l = b.limiter().await;
        let one = limits(Some(1), Some(1.0));
        let free = PaceLimits::UNLIMITED;
        assert!(l
            .try_acquire(&slot("A", 1, "t1", one, one))
            .await
            .unwrap()
            .is_granted());
        // Trunk t1 is full: campaign 2 keeps its slot and its rate token.
        assert_eq!(
            l.try_acquire(&slot("B", 2, "t1", one, one)).await.unwrap(),
            Acquire::Denied {
                retry_after: None,
                reason: DenyReason::TrunkConcurrency
            }
        );
        assert_eq!(
            l.usage(2, "t1").await.unwrap(),
            SlotUsage {
                campaign: 0,
                trunk: 1
            }
        );
        assert!(l
            .try_acquire(&slot("C", 2, "t2", one, free))
            .await
            .unwrap()
            .is_granted());
        assert_eq!(
            l.try_acquire(&slot("D", 2, "t2", one, free)).await.unwrap(),
            Acquire::Denied {
                retry_after: None,
                reason: DenyReason::CampaignConcurrency
            }
        );
        assert!(l.release("C", 2, "t2").await.unwrap());
        // Campaign 2 has a free slot but started a call less than a second ago (1 call/s).
        match l.try_acquire(&slot("D", 2, "t2", one, free)).await.unwrap() {
            Acquire::Denied {
                retry_after: Some(wait),
                reason: DenyReason::CampaignRate,
            } => {
                assert!(wait <= Duration::from_secs(1), "{wait:?}")
            }
            other => panic!("expected a rate denial, got {other:?}"),
        }
        assert_eq!(
            l.usage(2, "t2").await.unwrap(),
            SlotUsage {
                campaign: 0,
                trunk: 0
            }
        );
        // A trunk's rate, with an unlimited campaign: its campaign slot is not taken either.
        let slow = limits(None, Some(1.0));
        assert!(l
            .try_acquire(&slot("E", 3, "t3", free, slow))
            .await
            .unwrap()
            .is_granted());
        match l
            .try_acquire(&slot("F", 3, "t3", free, slow))
            .await
            .unwrap()
        {
            Acquire::Denied {
                retry_after: Some(_),
                reason: DenyReason::TrunkRate,
            } => {}
            other => panic!("expected a trunk rate denial, got {other:?}"),
        }
        assert_eq!(
            l.usage(3, "t3").await.unwrap(),
            SlotUsage {
                campaign: 1,
                trunk: 1
            }
        );
        // Asking again for a call that holds its slots is granted, not charged twice.
        assert!(l
            .try_acquire(&slot("A", 1, "t1", one, one))
            .await
            .unwrap()
            .is_granted());
        assert_eq!(
            l.usage(1, "t1").await.unwrap(),
            SlotUsage {
                campaign: 1,
                trunk: 1
            }
        );
    }

    pub async fn registry_lists_live_dialers_by_ttl<B: Backend>(b: &B) {
        let r = b.registry().await;
        let other = b.registry().await;
        let t0 = now_ms();
        r.register(&dialer("d1", 100, 40), Duration::from_secs(10))
            .await
            .unwrap();
        other
            .register(&dialer("d2", 10, 1), Duration::from_secs(2))
            .await
            .unwrap();
        let d3 = DialerInfo {
            draining: true,
            ..dialer("d3", 100, 0)
        };
        r.register(&d3, Duration::from_secs(10)).await.unwrap();
        let names = |v: &[DialerInfo]| v.iter().map(|d| d.node.clone()).collect::<Vec<_>>();
        let live = other.live(now_ms()).await.unwrap();
        assert_eq!(names(&live), ["d1", "d2", "d3"]);
        assert_eq!(live[1], dialer("d2", 10, 1));
        assert_eq!(
            least_loaded(&live).map(|d| d.node.as_str()),
            Some("d2"),
            "1/10 < 40/100; d3 drains"
        );

        // d2's registration lasts 2 s: past it, d2 is gone (and removed).
        let later = r.live(t0 + 5_000).await.unwrap();
        assert_eq!(names(&later), ["d1", "d3"]);
        assert_eq!(names(&r.live(now_ms()).await.unwrap()), ["d1", "d3"]);
        assert_eq!(least_loaded(&later).map(|d| d.node.as_str()), Some("d1"));

        // A heartbeat carries the new load and extends the registration.
        other
            .register(&dialer("d2", 10, 9), Duration::from_secs(10))
            .await
            .unwrap();
        let live = r.live(t0 + 5_000).await.unwrap();
        assert_eq!(names(&live), ["d1", "d2", "d3"]);
        assert_eq!(live[1].active, 9);
        assert_eq!(
            least_loaded(&live).map(|d| d.node.as_str()),
            Some("d1"),
            "40/100 < 9/10"
        );

        r.deregister("d1").await.unwrap();
        r.deregister("nobody").await.unwrap();
        let live = other.live(now_ms()).await.unwrap();
        assert_eq!(names(&live), ["d2", "d3"]);
        assert!(other.live(now_ms() + 60_000).await.unwrap().is_empty());
    }

    pub async fn cache_loads_once_for_concurrent_callers<B: Backend>(b: &B) {
        let cache = b.cache("conf", &CacheConfig::default()).await;
        let loads = Arc::new(AtomicU32::new(0));
        let mut callers = Vec::new();
        for _ in 0..16 {
            let (cache, loads) = (cache.clone(), loads.clone());
            callers.push(tokio::spawn(async move {
                cache
                    .get_or_load("campaign:1", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(100)).await;
                        Ok::<_, String>(conf(1))
                    })
                    .await
                    .unwrap()
            }));
        }
        for c in callers {
            assert_eq!(c.await.unwrap(), conf(1));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let again = cache
            .get_or_load("campaign:1", async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(conf(2))
            })
            .await
            .unwrap();
        assert_eq!(again, conf(1));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "served from memory");
    }

    /// The store behind a cache: a value and a count of loads.
    #[derive(Clone, Default)]
    struct Store {
        value: Arc<Mutex<u32>>,
        loads: Arc<AtomicU32>,
    }

    impl Store {
        async fn load(&self) -> Result<Conf, String> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(conf(*self.value.lock().unwrap()))
        }
        fn set(&self, v: u32) {
            *self.value.lock().unwrap() = v;
        }
    }

    pub async fn cache_invalidation_reaches_other_instances<B: Backend>(b: &B) {
        let cfg = CacheConfig::default();
        let a = b.cache("conf", &cfg).await;
        let other = b.cache("conf", &cfg).await;
        let store = Store::default();
        store.set(1);
        assert_eq!(a.get_or_load("k", store.load()).await.unwrap(), conf(1));
        assert_eq!(other.get_or_load("k", store.load()).await.unwrap(), conf(1));
        assert_eq!(
            store.loads.load(Ordering::SeqCst),
            1,
            "the second read is cached"
        );
        // Another key is untouched by the invalidation.
        assert_eq!(
            other.get_or_load("k2", store.load()).await.unwrap(),
            conf(1)
        );

        store.set(2);
        a.invalidate("k").await.unwrap();
        assert_eq!(a.get_or_load("k", store.load()).await.unwrap(), conf(2));
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let v = other.get_or_load("k", store.load()).await.unwrap();
            if v == conf(2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the other instance still sees {v:?}"
            );
            sleep(Duration::from_millis(10)).await;
        }
        let loads = store.loads.load(Ordering::SeqCst);
        assert_eq!(
            other.get_or_load("k2", store.load()).await.unwrap(),
            conf(1)
        );
        assert_eq!(store.loads.load(Ordering::SeqCst), loads, "k2 still cached");
    }

    /// A load that read the old value while the key was invalidated does not stay cached.
    pub async fn cache_load_racing_an_invalidation_is_not_kept<B: Backend>(b: &B) {
        let cfg = CacheConfig::default();
        let a = b.cache("conf", &cfg).await;
        let other = b.cache("conf", &cfg).await;
        let store = Store::default();
        store.set(1);
        a.get_or_load("probe", async { Ok::<_, String>(conf(0)) })
            .await
            .unwrap();
        let (read_tx, read_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let (a, store) = (a.clone(), store.clone());
            tokio::spawn(async move {
                a.get_or_load("k", async move {
                    let old = store.load().await;
                    let _ = read_tx.send(());
                    let _ = go_rx.await;
                    old
                })
                .await
                .unwrap()
            })
        };
        read_rx.await.unwrap();
        store.set(2);
        other.invalidate("k").await.unwrap();
        // Wait until `a` has dropped "probe", invalidated next: invalidations arrive in
        // order, so by then `a` has seen the one of "k" too.
        other.invalidate("probe").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let reloaded = Arc::new(AtomicU32::new(0));
            let r = reloaded.clone();
            a.get_or_load("probe", async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(conf(0))
            })
            .await
            .unwrap();
            if reloaded.load(Ordering::SeqCst) == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the invalidation never reached the instance"
            );
            sleep(Duration::from_millis(5)).await;
        }
        go_tx.send(()).unwrap();
        assert_eq!(
            slow.await.unwrap(),
            conf(1),
            "the racing read returns what it read"
        );
        assert_eq!(a.get_or_load("k", store.load()).await.unwrap(), conf(2));
        assert_eq!(other.get_or_load("k", store.load()).await.unwrap(), conf(2));
    }

    pub async fn cache_entries_expire_after_the_ttl<B: Backend>(b: &B) {
        let cfg = CacheConfig {
            ttl: Duration::from_millis(300),
            redis_ttl: Duration::from_millis(300),
            ..CacheConfig::default()
        };
        let cache = b.cache("short", &cfg).await;
        let store = Store::default();
        store.set(1);
        assert_eq!(cache.get_or_load("k", store.load()).await.unwrap(), conf(1));
        store.set(2);
        assert_eq!(cache.get_or_load("k", store.load()).await.unwrap(), conf(1));
        // Time passing is what is under test.
        sleep(Duration::from_millis(700)).await;
        assert_eq!(cache.get_or_load("k", store.load()).await.unwrap(), conf(2));
        assert_eq!(store.loads.load(Ordering::SeqCst), 2);
    }

    pub async fn cache_failed_load_is_not_cached<B: Backend>(b: &B) {
        let cache = b.cache("conf", &CacheConfig::default()).await;
        let err = cache
            .get_or_load("k", async {
                Err::<Conf, _>("store unavailable".to_string())
            })
            .await
            .unwrap_err();
        assert_eq!(*err, "store unavailable");
        let v = cache
            .get_or_load("k", async { Ok::<_, String>(conf(3)) })
            .await
            .unwrap();
        assert_eq!(v, conf(3));
    }
}
