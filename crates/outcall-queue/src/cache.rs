//! A read-through cache in two levels: this node's memory, then Redis, then the loader (the
//! store).

use crate::error::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of a [`TwoLevelCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a value stays in this node's memory: the longest a change can go unseen if
    /// its invalidation message is lost. Default 30 s.
    pub ttl: Duration,
    /// Values kept in memory at most. Default 10,000.
    pub max_capacity: u64,
    /// How long a value stays in Redis. Default 5 minutes.
    pub redis_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(30),
            max_capacity: 10_000,
            redis_ttl: Duration::from_secs(300),
        }
    }
}

/// Invalidation counters, by hash of the key: a load that overlaps an invalidation of its
/// key does not stay cached.
const EPOCH_SLOTS: usize = 64;

struct Inner<V> {
    local: moka::future::Cache<String, V>,
    epochs: [AtomicU64; EPOCH_SLOTS],
    hasher: RandomState,
    #[cfg(feature = "redis")]
    redis: Option<redis_tier::RedisTier>,
}

impl<V: Clone + Send + Sync + 'static> Inner<V> {
    fn epoch(&self, key: &str) -> &AtomicU64 {
        &self.epochs[(self.hasher.hash_one(key) % EPOCH_SLOTS as u64) as usize]
    }

    async fn evict(&self, key: &str) {
        self.epoch(key).fetch_add(1, Ordering::SeqCst);
        self.local.invalidate(key).await;
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn evict_all(&self) {
        for e in &self.epochs {
            e.fetch_add(1, Ordering::SeqCst);
        }
        self.local.invalidate_all();
    }
}

/// A cache of `V` by string key: moka in this node's memory (coalesced loads, a TTL), then
/// optionally Redis (JSON, shared by the nodes), then a loader supplied by the caller.
///
/// [`invalidate`](Self::invalidate) drops the key here and in Redis and publishes it; every
/// instance on the same Redis and name subscribes and drops its copy, so a change made on
/// one node is seen on the others within milliseconds (the memory TTL bounds it if a message
/// is lost). Cheap to clone: clones share the cache.
pub struct TwoLevelCache<V> {
    inner: Arc<Inner<V>>,
    #[cfg(feature = "redis")]
    _listener: Option<Arc<redis_tier::AbortOnDrop>>,
}

impl<V> Clone for TwoLevelCache<V> {
    fn clone(&self) -> Self {
        TwoLevelCache {
            inner: self.inner.clone(),
            #[cfg(feature = "redis")]
            _listener: self._listener.clone(),
        }
    }
}

impl<V> std::fmt::Debug for TwoLevelCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoLevelCache")
            .field("entries", &self.inner.local.entry_count())
            .finish()
    }
}

impl<V> TwoLevelCache<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn local(cfg: &CacheConfig) -> moka::future::Cache<String, V> {
        moka::future::Cache::builder()
            .max_capacity(cfg.max_capacity)
            .time_to_live(cfg.ttl)
            .build()
    }

    /// Memory only (embedded mode: one process, so nothing to share).
    pub fn memory(cfg: &CacheConfig) -> Self {
        TwoLevelCache {
            inner: Arc::new(Inner {
                local: Self::local(cfg),
                epochs: std::array::from_fn(|_| AtomicU64::new(0)),
                hasher: RandomState::new(),
                #[cfg(feature = "redis")]
                redis: None,
            }),
            #[cfg(feature = "redis")]
            _listener: None,
        }
    }

    /// Memory, then Redis. `name` tells caches apart (`campaigns`, `blacklist`): instances
    /// with the same name on the same Redis and namespace share values and invalidations.
    /// Subscribes to the invalidation channel before returning.
    #[cfg(feature = "redis")]
    pub async fn with_redis(
        conn: &crate::RedisConn,
        name: &str,
        cfg: &CacheConfig,
    ) -> Result<Self> {
        let tier = redis_tier::RedisTier::new(conn, name, cfg);
        let stream = tier.subscribe().await?;
        let inner = Arc::new(Inner {
            local: Self::local(cfg),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: RandomState::new(),
            redis: Some(tier),
        });
        let listener = redis_tier::spawn_listener(Arc::downgrade(&inner), stream);
        Ok(TwoLevelCache {
            inner,
            _listener: Some(Arc::new(listener)),
        })
    }

    /// The value of `key`: from memory, else from Redis, else from `loader` (then stored in
    /// both). Concurrent calls for the same key on this instance wait for one load. A failed
    /// load is not cached: its error goes to every caller that waited for it. Redis trouble
    /// is logged and bypassed: the value then comes from the loader.
    pub async fn get_or_load<E, F>(&self, key: &str, loader: F) -> std::result::Result<V, Arc<E>>
    where
        F: Future<Output = std::result::Result<V, E>> + Send,
        E: Send + Sync + 'static,
    {
        const NOT_LOADED: u64 = u64::MAX;
        let epoch = self.inner.epoch(key);
        let started = AtomicU64::new(NOT_LOADED);
        let init = async {
            started.store(epoch.load(Ordering::SeqCst), Ordering::SeqCst);
            #[cfg(feature = "redis")]
            if let Some(tier) = &self.inner.redis {
                return tier.get_or_load(key, loader).await;
            }
            loader.await
        };
        let value = self.inner.local.try_get_with(key.to_string(), init).await?;
        let e0 = started.load(Ordering::SeqCst);
        if e0 != NOT_LOADED && epoch.load(Ordering::SeqCst) != e0 {
            // Invalidated while this load was in flight: what it read may be stale.
            self.inner.local.invalidate(key).await;
        }
        Ok(value)
    }

    /// Drops `key` everywhere: in Redis, on every instance subscribed, and here.
    pub async fn invalidate(&self, key: &str) -> Result<()> {
        #[cfg(feature = "redis")]
        if let Some(tier) = &self.inner.redis {
            tier.invalidate(key).await?;
        }
        self.inner.evict(key).await;
        Ok(())
    }

    /// Values held in this node's memory (approximate: moka counts lazily).
    pub fn local_entries(&self) -> u64 {
        self.inner.local.entry_count()
    }
}

#[cfg(feature = "redis")]
mod redis_tier {
    use super::Inner;
    use crate::error::Result;
    use crate::RedisConn;
    use futures_util::StreamExt;
    use redis::aio::PubSubStream;
    use redis::Script;
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use std::future::Future;
    use std::sync::{LazyLock, Weak};
    use std::time::Duration;
    use tokio::task::JoinHandle;
    use tracing::{info, warn};

    static SET: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("redis/lua/cache_set.lua")));
    static INVALIDATE: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("redis/lua/cache_invalidate.lua")));

    /// Stops the subscription task when the last clone of the cache goes.
    pub(super) struct AbortOnDrop(JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    pub(super) struct RedisTier {
        conn: RedisConn,
        name: String,
        /// `{<ns>:cache:<name>:` — a key's value is `<prefix><key>}`, its generation
        /// `<prefix><key>}:gen` (one hash tag per key).
        prefix: String,
        channel: String,
        ttl_ms: u64,
        gen_ttl_ms: u64,
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    impl RedisTier {
        pub(super) fn new(conn: &RedisConn, name: &str, cfg: &super::CacheConfig) -> Self {
            let ns = conn.namespace();
            let ttl_ms = millis(cfg.redis_ttl);
            RedisTier {
                conn: conn.clone(),
                name: name.to_string(),
                prefix: format!("{{{ns}:cache:{name}:"),
                channel: format!("{ns}:cache:{name}"),
                ttl_ms,
                // Outlives any load in flight, so a stale load cannot slip in after it.
                gen_ttl_ms: ttl_ms.saturating_add(600_000),
            }
        }

        fn keys(&self, key: &str) -> (String, String) {
            let value = format!("{}{key}}}", self.prefix);
            let generation = format!("{value}:gen");
            (value, generation)
        }

        pub(super) async fn subscribe(&self) -> Result<PubSubStream> {
            let mut pubsub = self
                .conn
                .client()
                .get_async_pubsub()
                .await
                .map_err(|e| self.conn.error("cache invalidation subscription", &e))?;
            pubsub
                .subscribe(&self.channel)
                .await
                .map_err(|e| self.conn.error("SUBSCRIBE to cache invalidations", &e))?;
            Ok(pubsub.into_on_message())
        }

        pub(super) async fn get_or_load<V, E, F>(
            &self,
            key: &str,
            loader: F,
        ) -> std::result::Result<V, E>
        where
            V: Serialize + DeserializeOwned,
            F: Future<Output = std::result::Result<V, E>>,
        {
            let (value_key, gen_key) = self.keys(key);
            let mut con = self.conn.manager();
            let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("MGET")
                .arg(&value_key)
                .arg(&gen_key)
                .query_async(&mut con)
                .await;
            let generation = match read {
                Ok((Some(json), _)) => match serde_json::from_str(&json) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        warn!(cache = %self.name, error = %e, "unreadable value in Redis; reloading");
                        None
                    }
                },
                Ok((None, generation)) => Some(generation.unwrap_or_else(|| "0".into())),
                Err(e) => {
                    warn!(cache = %self.name, error = %self.conn.error("cache GET", &e), "loading without Redis");
                    None
                }
            };
            let v = loader.await?;
            // Stored only when the generation read before loading still holds.
            if let Some(generation) = generation {
                match serde_json::to_string(&v) {
                    Ok(json) => {
                        let mut inv = SET.prepare_invoke();
                        inv.key(&value_key)
                            .key(&gen_key)
                            .arg(generation)
                            .arg(json)
                            .arg(self.ttl_ms);
                        if let Err(e) = inv.invoke_async::<i64>(&mut con).await {
                            warn!(cache = %self.name, error = %self.conn.error("cache SET", &e), "value not stored in Redis");
                        }
                    }
                    Err(e) => warn!(cache = %self.name, error = %e, "value not stored in Redis"),
                }
            }
            Ok(v)
        }

        pub(super) async fn invalidate(&self, key: &str) -> Result<()> {
            let (value_key, gen_key) = self.keys(key);
            let mut inv = INVALIDATE.prepare_invoke();
            inv.key(&value_key)
                .key(&gen_key)
                .arg(self.gen_ttl_ms)
                .arg(&self.channel)
                .arg(key);
            let _: i64 = inv
                .invoke_async(&mut self.conn.manager())
                .await
                .map_err(|e| self.conn.error("cache invalidation script", &e))?;
            Ok(())
        }
    }

    /// Drops the local copy of each key published on the channel. When the subscription
    /// breaks it subscribes again and, as messages may have been missed, drops everything.
    pub(super) fn spawn_listener<V: Clone + Send + Sync + 'static>(
        inner: Weak<Inner<V>>,
        mut stream: PubSubStream,
    ) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(async move {
            loop {
                while let Some(msg) = stream.next().await {
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    if let Ok(key) = msg.get_payload::<String>() {
                        inner.evict(&key).await;
                    }
                }
                let mut delay = Duration::from_millis(100);
                let mut lost = true;
                stream = loop {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    let Some(tier) = strong.redis.as_ref() else {
                        return;
                    };
                    if lost {
                        warn!(cache = %tier.name, redis = %tier.conn.url(), "cache invalidation subscription lost; subscribing again");
                        lost = false;
                    }
                    tokio::time::sleep(delay).await;
                    match tier.subscribe().await {
                        Ok(s) => {
                            // Invalidations published meanwhile were missed.
                            strong.evict_all();
                            info!(cache = %tier.name, "cache invalidation subscription restored");
                            break s;
                        }
                        Err(e) => {
                            warn!(cache = %tier.name, error = %e, "cache invalidation subscription failed; retrying");
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                };
            }
        }))
    }
}
