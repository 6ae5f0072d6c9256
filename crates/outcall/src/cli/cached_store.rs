//! A [`Store`] with a cache in front, for the distributed mode: campaigns, blacklists and the
//! learned status of numbers are read from this node's memory, then from Redis, then from the
//! database, and a write made through any node drops the copies it changed on every node.
//!
//! Each of the three is a [`TwoLevelCache`] (moka, 30 s, in front of Redis, 5 minutes, by
//! default; see [`CacheConfig`]) whose invalidations reach every node subscribed to the same
//! Redis and namespace within milliseconds. What is cached, and what drops it:
//!
//! | Read | Cache (`name`), key | Dropped by |
//! |---|---|---|
//! | [`Store::get_campaign`] | `campaigns`, `c:<id>` | `set_campaign_status`, `update_campaign_spec`, `delete_campaign` |
//! | [`Store::blacklist_match`] | `blacklist`, `b:<generation>:<campaign>` | `add_blacklist`, `remove_blacklist`, `delete_campaign` (a new generation) |
//! | [`Store::number_status`] | `numbers`, `n:<hex of the blind index>` | `record_number_outcome`, `erase_number` |
//!
//! Every other method goes straight to the inner store. A campaign is cached once created and
//! read (`create_campaign` has nothing to drop; a campaign that does not exist is not cached).
//! A write drops the copies after it returns, whatever it returned: an error can hide a write
//! that committed (a lost reply), and a `Conflict` says the cached copy is probably stale.
//!
//! **Blacklist.** `blacklist_match` answers from the list of entries that apply to the campaign
//! (global ones and its own), loaded once with `list_blacklist(Some(campaign), now)`, then
//! checked with [`BlacklistRecord::blocks`] at each call, so an entry that expires stops
//! blocking on time without a reload. A global entry applies to every campaign's list, and a
//! removal does not say which lists held the entry, so rather than finding every cached list
//! each blacklist write drops a single key, the *generation* (cache `blacklist_gen`, key `g`): a
//! random number, loaded by whichever node reads it first after the drop and shared through
//! Redis, that is part of every list's key. A new generation means new keys, so every node
//! loads fresh lists on its next check; the old ones are no longer read and expire. One Redis
//! call per write, however many campaigns; blacklist writes are rare next to checks (one per
//! dial). [`Store::reseal_number`] does not drop lists: the new ciphertext is of the same
//! number, and blocking reads only the blind index and the prefix.
//!
//! **Number status.** The status is cached whatever its age (loaded with `since` at the Unix
//! epoch) and filtered on `updated_at >= since` at each call; numbers never learned are cached
//! too (as `None`), the common case of a first dial.
//!
//! **Redis trouble.** A read never fails because of the cache: when Redis does not answer, the
//! value comes from the inner store (the cache logs it). A drop that cannot reach Redis is
//! logged and retried in the background (250 ms, doubling to 5 s); until it goes through, this
//! node reads that key past the cache, so it never serves a copy it knows to be stale. The other
//! nodes may serve their copy until their memory TTL ends if Redis is down for them too, and
//! until the retry succeeds otherwise; retries stop after the memory TTL plus the Redis TTL,
//! when every copy made before the write has expired. While Redis cannot be reached, a write
//! returns once the connection has given up on its drop (about a second).

use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AttemptId, Campaign, CampaignId, CampaignSpec, CampaignStatus, ContactId, ContactState,
};
use outcall_domain::{Cdr, Outcome};
use outcall_queue::{CacheConfig, QueueError, RedisConn, TwoLevelCache};
use outcall_store::access::{
    ApiKeyRecord, AuditQuery, AuditRecord, IdempotencyClaim, NewApiKey, NewAuditEntry, NewUser,
    UserRecord, UserUpdate,
};
use outcall_store::{
    AccessStore, AddResult, AttemptQuery, AttemptRecord, AttemptStart, BlacklistRecord,
    CallerIdPoolRecord, CampaignCounts, CampaignDeletion, CdrPurge, CdrRow, ContactNext,
    ContactRecord, EraseResult, EventQuery, EventStore, HourCount, NewBlacklistEntry,
    NewCallerIdPool, NewContact, NewSystemEvent, NewWebhookEvent, NumberStatus, OpenAttempt,
    Result, SealedNumber, Store, StoreError, SystemEvent, TrunkRecord, WebhookDelivery,
    WebhookFailure, WebhookQuery, WebhookStatus,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The key of the blacklist generation.
const GENERATION_KEY: &str = "g";
/// First wait before a failed drop is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A [`Store`] that answers campaign reads, blacklist checks and number statuses from a
/// [`TwoLevelCache`] and delegates everything else (see the [module](self) documentation).
pub struct CachedStore {
    inner: Arc<dyn Store>,
    campaigns: Tier<Campaign>,
    blacklists: Tier<Entries>,
    generations: Tier<u64>,
    numbers: Tier<Option<NumberStatus>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("campaigns", &self.campaigns.cache)
            .field("blacklists", &self.blacklists.cache)
            .field("numbers", &self.numbers.cache)
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Caches in this process's memory only (one node: every write goes through it).
    #[cfg(test)]
    pub fn memory(inner: Arc<dyn Store>, cfg: &CacheConfig) -> Self {
        CachedStore {
            inner,
            campaigns: Tier::new("campaigns", TwoLevelCache::memory(cfg), cfg),
            blacklists: Tier::new("blacklist", TwoLevelCache::memory(cfg), cfg),
            generations: Tier::new("blacklist_gen", TwoLevelCache::memory(cfg), cfg),
            numbers: Tier::new("numbers", TwoLevelCache::memory(cfg), cfg),
        }
    }

    /// Caches in memory and in Redis, shared with every node on the same Redis and namespace.
    /// Subscribes to the invalidations of the four caches (one connection each) before
    /// returning; fails if Redis does not answer.
    pub async fn with_redis(
        inner: Arc<dyn Store>,
        conn: &RedisConn,
        cfg: &CacheConfig,
    ) -> std::result::Result<Self, QueueError> {
        Ok(CachedStore {
            inner,
            campaigns: Tier::new(
                "campaigns",
                TwoLevelCache::with_redis(conn, "campaigns", cfg).await?,
                cfg,
            ),
            blacklists: Tier::new(
                "blacklist",
                TwoLevelCache::with_redis(conn, "blacklist", cfg).await?,
                cfg,
            ),
            generations: Tier::new(
                "blacklist_gen",
                TwoLevelCache::with_redis(conn, "blacklist_gen", cfg).await?,
                cfg,
            ),
            numbers: Tier::new(
                "numbers",
                TwoLevelCache::with_redis(conn, "numbers", cfg).await?,
                cfg,
            ),
        })
    }

    /// Starts a new blacklist generation: every node loads fresh lists at its next check.
    async fn bump_blacklist(&self) {
        self.generations
            .invalidate(GENERATION_KEY.to_string())
            .await;
    }
}

fn campaign_key(id: CampaignId) -> String {
    format!("c:{id}")
}

fn blacklist_key(generation: u64, campaign: CampaignId) -> String {
    format!("b:{generation:016x}:{campaign}")
}

fn number_key(number_hash: &[u8]) -> String {
    format!("n:{}", hex(number_hash))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
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

/// A store error shared by the callers of one load, as a value of their own.
fn unshare(e: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(e).unwrap_or_else(|e| match &*e {
        StoreError::NotFound { what, id } => StoreError::NotFound { what, id: *id },
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    })
}

/// The blacklist entries that apply to one campaign, shared (a check does not copy the list).
/// Serialised with their blind index and ciphertext, which [`BlacklistRecord`]'s own
/// serialisation leaves out (it is the API's), hex encoded.
#[derive(Debug, Clone)]
struct Entries(Arc<Vec<BlacklistRecord>>);

#[derive(Serialize)]
struct EntryOut<'a> {
    #[serde(flatten)]
    record: &'a BlacklistRecord,
    blind_index: Option<String>,
    sealed: Option<String>,
}

#[derive(Deserialize)]
struct EntryIn {
    #[serde(flatten)]
    record: BlacklistRecord,
    blind_index: Option<String>,
    sealed: Option<String>,
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|record| EntryOut {
            record,
            blind_index: record.number_hash.as_deref().map(hex),
            sealed: record.number_enc.as_deref().map(hex),
        }))
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = |s: Option<String>| -> std::result::Result<Option<Vec<u8>>, D::Error> {
            s.map(|s| unhex(&s).ok_or_else(|| serde::de::Error::custom("bad hex")))
                .transpose()
        };
        let mut list = Vec::new();
        for e in Vec::<EntryIn>::deserialize(d)? {
            let mut record = e.record;
            record.number_hash = bytes(e.blind_index)?;
            record.number_enc = bytes(e.sealed)?;
            list.push(record);
        }
        Ok(Entries(Arc::new(list)))
    }
}

/// One cache, and the keys of it whose drop has not reached Redis yet.
struct Tier<V> {
    name: &'static str,
    cache: TwoLevelCache<V>,
    unsettled: Arc<Unsettled>,
}

/// Keys whose drop failed: read past the cache on this node, and dropped again in the
/// background, until the drop goes through or `hold` has passed since the last failure.
struct Unsettled {
    hold: Duration,
    /// How many keys `state` holds, to skip the lock when none.
    len: AtomicUsize,
    state: Mutex<UnsettledState>,
}

#[derive(Default)]
struct UnsettledState {
    /// Key → (failed drops so far, read past the cache until).
    keys: HashMap<String, (u64, Instant)>,
    /// Whether the retry task runs.
    retrying: bool,
}

impl Unsettled {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnsettledState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, key: &str) -> bool {
        self.len.load(Ordering::SeqCst) != 0 && self.lock().keys.contains_key(key)
    }

    /// Records a failed drop; `true` if the retry task must be started.
    fn failed(&self, key: String) -> bool {
        let mut st = self.lock();
        let until = Instant::now() + self.hold;
        let e = st.keys.entry(key).or_insert((0, until));
        e.0 += 1;
        e.1 = until;
        self.len.store(st.keys.len(), Ordering::SeqCst);
        !std::mem::replace(&mut st.retrying, true)
    }

    /// The keys to drop again with their failure counts (those past their hold are given up);
    /// `None` when there are none left, and the retry task then ends.
    fn batch(&self, name: &str) -> Option<Vec<(String, u64)>> {
        let mut st = self.lock();
        let now = Instant::now();
        let before = st.keys.len();
        st.keys.retain(|_, (_, until)| *until > now);
        if st.keys.len() < before {
            warn!(
                cache = name,
                keys = before - st.keys.len(),
                "cache invalidations given up: every copy made before the writes has expired"
            );
        }
        self.len.store(st.keys.len(), Ordering::SeqCst);
        if st.keys.is_empty() {
            st.retrying = false;
            return None;
        }
        Some(st.keys.iter().map(|(k, (n, _))| (k.clone(), *n)).collect())
    }

    /// A drop of `key` went through after `failures` failures.
    fn settled(&self, key: &str, failures: u64) {
        let mut st = self.lock();
        if st.keys.get(key).is_some_and(|(n, _)| *n == failures) {
            st.keys.remove(key);
        }
        self.len.store(st.keys.len(), Ordering::SeqCst);
    }
}

impl<V> Tier<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn new(name: &'static str, cache: TwoLevelCache<V>, cfg: &CacheConfig) -> Self {
        Tier {
            name,
            cache,
            unsettled: Arc::new(Unsettled {
                hold: cfg.ttl.saturating_add(cfg.redis_ttl),
                len: AtomicUsize::new(0),
                state: Mutex::new(UnsettledState::default()),
            }),
        }
    }

    /// Whether this node reads `key` past the cache (its last drop has not reached Redis).
    fn unsettled(&self, key: &str) -> bool {
        self.unsettled.contains(key)
    }

    /// The value of `key`, from the cache or from `load`.
    async fn get<F>(&self, key: &str, load: F) -> Result<V>
    where
        F: Future<Output = Result<V>> + Send,
    {
        if self.unsettled(key) {
            return load.await;
        }
        self.cache.get_or_load(key, load).await.map_err(unshare)
    }

    /// Drops `key` on every node; on failure, reads it past the cache here and retries.
    async fn invalidate(&self, key: String) {
        let Err(e) = self.cache.invalidate(&key).await else {
            return;
        };
        if self.unsettled.failed(key) {
            warn!(
                cache = self.name,
                error = %e,
                "cache invalidation failed: this node reads the keys concerned from the store, \
                 and the invalidation is retried"
            );
            tokio::spawn(retry(self.name, self.cache.clone(), self.unsettled.clone()));
        } else {
            debug!(cache = self.name, error = %e, "cache invalidation failed");
        }
    }
}

/// Drops the unsettled keys again until none is left.
async fn retry<V>(name: &'static str, cache: TwoLevelCache<V>, unsettled: Arc<Unsettled>)
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let mut delay = RETRY_MIN;
    let mut done = 0u64;
    loop {
        tokio::time::sleep(delay).await;
        let Some(batch) = unsettled.batch(name) else {
            info!(cache = name, keys = done, "cache invalidations caught up");
            return;
        };
        let mut failed = false;
        for (key, failures) in batch {
            match cache.invalidate(&key).await {
                Ok(()) => {
                    unsettled.settled(&key, failures);
                    done += 1;
                }
                Err(e) => {
                    debug!(cache = name, error = %e, "cache invalidation retry failed");
                    failed = true;
                    break;
                }
            }
        }
        delay = if failed {
            (delay * 2).min(RETRY_MAX)
        } else {
            RETRY_MIN
        };
    }
}

#[async_trait]
impl AccessStore for CachedStore {
    async fn create_user(&self, user: &NewUser, now: Timestamp) -> Result<UserRecord> {
        self.inner.create_user(user, now).await
    }

    async fn get_user(&self, id: i64) -> Result<UserRecord> {
        self.inner.get_user(id).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        self.inner.user_by_name(username).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.inner.list_users().await
    }

    async fn update_user(
        &self,
        id: i64,
        update: &UserUpdate,
        now: Timestamp,
    ) -> Result<UserRecord> {
        self.inner.update_user(id, update, now).await
    }

    async fn count_users(&self) -> Result<u64> {
        self.inner.count_users().await
    }

    async fn create_api_key(&self, key: &NewApiKey, now: Timestamp) -> Result<ApiKeyRecord> {
        self.inner.create_api_key(key, now).await
    }

    async fn get_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>> {
        self.inner.get_api_key(id).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.inner.list_api_keys().await
    }

    async fn revoke_api_key(&self, id: i64, now: Timestamp) -> Result<ApiKeyRecord> {
        self.inner.revoke_api_key(id, now).await
    }

    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64> {
        self.inner.append_audit(entry).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.inner.list_audit(query).await
    }

    async fn purge_audit(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_audit(before).await
    }

    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
    ) -> Result<IdempotencyClaim> {
        self.inner
            .idempotency_claim(scope, key, request_hash, now)
            .await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        self.inner
            .idempotency_complete(scope, key, status, body)
            .await
    }

    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        self.inner.idempotency_release(scope, key).await
    }

    async fn idempotency_purge(&self, before: Timestamp) -> Result<u64> {
        self.inner.idempotency_purge(before).await
    }
}

#[async_trait]
impl EventStore for CachedStore {
    async fn append_event(&self, event: &NewSystemEvent) -> Result<SystemEvent> {
        self.inner.append_event(event).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<SystemEvent>> {
        self.inner.list_events(query).await
    }

    async fn purge_events(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_events(before).await
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn upsert_trunk(&self, trunk: &TrunkRecord) -> Result<()> {
        self.inner.upsert_trunk(trunk).await
    }

    async fn list_trunks(&self) -> Result<Vec<TrunkRecord>> {
        self.inner.list_trunks().await
    }

    async fn create_campaign(&self, spec: &CampaignSpec, now: Timestamp) -> Result<Campaign> {
        self.inner.create_campaign(spec, now).await
    }

    async fn get_campaign(&self, id: CampaignId) -> Result<Campaign> {
        let inner = &self.inner;
        self.campaigns
            .get(&campaign_key(id), inner.get_campaign(id))
            .await
    }

    async fn list_campaigns(&self) -> Result<Vec<Campaign>> {
        self.inner.list_campaigns().await
    }

    async fn set_campaign_status(
        &self,
        id: CampaignId,
        from: CampaignStatus,
        to: CampaignStatus,
        now: Timestamp,
    ) -> Result<Campaign> {
        let r = self.inner.set_campaign_status(id, from, to, now).await;
        self.campaigns.invalidate(campaign_key(id)).await;
        r
    }

    async fn add_contacts(
        &self,
        campaign: CampaignId,
        contacts: &[NewContact],
        now: Timestamp,
    ) -> Result<AddResult> {
        self.inner.add_contacts(campaign, contacts, now).await
    }

    async fn due_contacts(
        &self,
        campaign: CampaignId,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        self.inner.due_contacts(campaign, until, limit).await
    }

    async fn get_contact(&self, id: ContactId) -> Result<ContactRecord> {
        self.inner.get_contact(id).await
    }

    async fn list_contacts(
        &self,
        campaign: CampaignId,
        state: Option<ContactState>,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        self.inner
            .list_contacts(campaign, state, after, limit)
            .await
    }

    async fn contact_hashes(
        &self,
        campaign: CampaignId,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, Vec<u8>)>> {
        self.inner.contact_hashes(campaign, after, limit).await
    }

    async fn contact_exists(&self, campaign: CampaignId, number_hash: &[u8]) -> Result<bool> {
        self.inner.contact_exists(campaign, number_hash).await
    }

    async fn defer_contact(&self, id: ContactId, due_at: Timestamp) -> Result<()> {
        self.inner.defer_contact(id, due_at).await
    }

    async fn begin_attempt(
        &self,
        contact: ContactId,
        node: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptStart>> {
        self.inner.begin_attempt(contact, node, now).await
    }

    async fn finish_attempt(
        &self,
        attempt: AttemptId,
        outcome: Outcome,
        cause: Option<&str>,
        cdr: Option<&Cdr>,
        next: ContactNext,
        now: Timestamp,
    ) -> Result<()> {
        self.inner
            .finish_attempt(attempt, outcome, cause, cdr, next, now)
            .await
    }

    async fn insert_cdrs(&self, batch: &[CdrRow]) -> Result<u64> {
        self.inner.insert_cdrs(batch).await
    }

    async fn count_cdrs(&self, campaign: Option<CampaignId>) -> Result<u64> {
        self.inner.count_cdrs(campaign).await
    }

    async fn purge_cdrs_before(&self, cutoff: Timestamp) -> Result<CdrPurge> {
        self.inner.purge_cdrs_before(cutoff).await
    }

    async fn outcome_counts(&self, contact: ContactId) -> Result<BTreeMap<Outcome, u32>> {
        self.inner.outcome_counts(contact).await
    }

    async fn attempts_to_number_since(&self, number_hash: &[u8], since: Timestamp) -> Result<u32> {
        self.inner
            .attempts_to_number_since(number_hash, since)
            .await
    }

    async fn open_attempts(&self) -> Result<Vec<OpenAttempt>> {
        self.inner.open_attempts().await
    }

    async fn unfinished_contacts(&self, campaign: CampaignId) -> Result<u64> {
        self.inner.unfinished_contacts(campaign).await
    }

    async fn next_due(&self, campaign: CampaignId) -> Result<Option<Timestamp>> {
        self.inner.next_due(campaign).await
    }

    async fn due_backlog(&self, now: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        self.inner.due_backlog(now).await
    }

    async fn campaign_counts(&self, campaign: CampaignId) -> Result<CampaignCounts> {
        self.inner.campaign_counts(campaign).await
    }

    async fn list_attempts(
        &self,
        campaign: CampaignId,
        after: Option<AttemptId>,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>> {
        self.inner.list_attempts(campaign, after, limit).await
    }

    async fn query_attempts(&self, q: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        self.inner.query_attempts(q).await
    }

    async fn attempts_by_hour(&self, campaign: CampaignId) -> Result<Vec<HourCount>> {
        self.inner.attempts_by_hour(campaign).await
    }

    async fn add_blacklist(&self, entries: &[NewBlacklistEntry], now: Timestamp) -> Result<u64> {
        let r = self.inner.add_blacklist(entries, now).await;
        self.bump_blacklist().await;
        r
    }

    async fn list_blacklist(
        &self,
        campaign: Option<CampaignId>,
        now: Timestamp,
    ) -> Result<Vec<BlacklistRecord>> {
        self.inner.list_blacklist(campaign, now).await
    }

    async fn remove_blacklist(&self, id: i64) -> Result<()> {
        let r = self.inner.remove_blacklist(id).await;
        self.bump_blacklist().await;
        r
    }

    async fn record_number_outcome(
        &self,
        number_hash: &[u8],
        outcome: Outcome,
        status: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let r = self
            .inner
            .record_number_outcome(number_hash, outcome, status, now)
            .await;
        self.numbers.invalidate(number_key(number_hash)).await;
        r
    }

    async fn numbers_with_status(
        &self,
        status: &str,
        since: Timestamp,
        after: &[u8],
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        self.inner
            .numbers_with_status(status, since, after, limit)
            .await
    }

    async fn number_status(
        &self,
        number_hash: &[u8],
        since: Timestamp,
    ) -> Result<Option<NumberStatus>> {
        let inner = &self.inner;
        let status = self
            .numbers
            .get(
                &number_key(number_hash),
                inner.number_status(number_hash, Timestamp::UNIX_EPOCH),
            )
            .await?;
        Ok(status.filter(|s| s.updated_at >= since))
    }

    async fn erase_number(&self, number_hash: &[u8]) -> Result<EraseResult> {
        let r = self.inner.erase_number(number_hash).await;
        self.numbers.invalidate(number_key(number_hash)).await;
        r
    }

    async fn sealed_numbers(
        &self,
        table: &'static str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SealedNumber>> {
        self.inner.sealed_numbers(table, after, limit).await
    }

    async fn reseal_number(&self, table: &'static str, id: i64, number_enc: &[u8]) -> Result<()> {
        self.inner.reseal_number(table, id, number_enc).await
    }

    async fn blacklist_match(
        &self,
        campaign: CampaignId,
        number_hash: &[u8],
        e164: &str,
        now: Timestamp,
    ) -> Result<Option<BlacklistRecord>> {
        if self.generations.unsettled(GENERATION_KEY) {
            return self
                .inner
                .blacklist_match(campaign, number_hash, e164, now)
                .await;
        }
        let generation = self
            .generations
            .get(GENERATION_KEY, async { Ok(rand::random::<u64>()) })
            .await?;
        let inner = &self.inner;
        let entries = self
            .blacklists
            .get(&blacklist_key(generation, campaign), async {
                let list = inner.list_blacklist(Some(campaign), now).await?;
                Ok(Entries(Arc::new(list)))
            })
            .await?;
        Ok(entries
            .0
            .iter()
            .find(|e| e.blocks(campaign, number_hash, e164, now))
            .cloned())
    }

    async fn enqueue_webhook(&self, event: &NewWebhookEvent) -> Result<i64> {
        self.inner.enqueue_webhook(event).await
    }

    async fn take_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.inner.take_due_webhooks(now, lease_until, limit).await
    }

    async fn next_webhook_due(&self) -> Result<Option<Timestamp>> {
        self.inner.next_webhook_due().await
    }

    async fn webhook_delivered(&self, id: i64, at: Timestamp, http_status: u16) -> Result<()> {
        self.inner.webhook_delivered(id, at, http_status).await
    }

    async fn webhook_failed(&self, id: i64, failure: &WebhookFailure) -> Result<WebhookStatus> {
        self.inner.webhook_failed(id, failure).await
    }

    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Vec<WebhookDelivery>> {
        self.inner.list_webhooks(query).await
    }

    async fn get_webhook(&self, id: i64) -> Result<WebhookDelivery> {
        self.inner.get_webhook(id).await
    }

    async fn requeue_webhook(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery> {
        self.inner.requeue_webhook(id, now).await
    }

    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_webhooks(before).await
    }

    async fn update_campaign_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        let r = self
            .inner
            .update_campaign_spec(id, spec, expected, now)
            .await;
        self.campaigns.invalidate(campaign_key(id)).await;
        r
    }

    async fn delete_campaign(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<CampaignDeletion> {
        let r = self.inner.delete_campaign(id, allowed).await;
        self.campaigns.invalidate(campaign_key(id)).await;
        // Its own blacklist entries went with it.
        self.bump_blacklist().await;
        r
    }

    async fn upsert_caller_id_pool(
        &self,
        pool: &NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(CallerIdPoolRecord, bool)> {
        self.inner.upsert_caller_id_pool(pool, now).await
    }

    async fn get_caller_id_pool(&self, name: &str) -> Result<Option<CallerIdPoolRecord>> {
        self.inner.get_caller_id_pool(name).await
    }

    async fn list_caller_id_pools(&self) -> Result<Vec<CallerIdPoolRecord>> {
        self.inner.list_caller_id_pools().await
    }

    async fn delete_caller_id_pool(&self, name: &str) -> Result<bool> {
        self.inner.delete_caller_id_pool(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outcall_store::memory::MemoryStore;
    use serde_json::json;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use CampaignStatus::{Draft, Paused, Running};

    /// How soon a change made through one node must be seen through another (the memory TTL
    /// is 30 s: only an invalidation explains it).
    const PROPAGATION: Duration = Duration::from_secs(2);

    fn redis_url() -> String {
        std::env::var("OUTCALL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A random namespace on the test server; its keys are deleted on drop.
    struct Namespace(String);

    impl Namespace {
        fn new() -> Self {
            Namespace(format!("outcall-cache-test-{:016x}", rand::random::<u64>()))
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let url = redis_url();
            let Ok(out) = std::process::Command::new("redis-cli")
                .args(["-u", &url, "--scan", "--pattern"])
                .arg(format!("*{}*", self.0))
                .output()
            else {
                return;
            };
            let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            for chunk in keys.chunks(100) {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-u", &url, "del"])
                    .args(chunk)
                    .output();
            }
        }
    }

    /// A node: its own Redis connection and caches, over `inner`.
    async fn node(inner: &Arc<MemoryStore>, url: &str, ns: &str) -> CachedStore {
        let conn = RedisConn::connect(url, ns).await.unwrap_or_else(|e| {
            panic!("{e} (the tests need the Redis server at OUTCALL_TEST_REDIS_URL)")
        });
        CachedStore::with_redis(inner.clone(), &conn, &CacheConfig::default())
            .await
            .expect("cache subscriptions")
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("timestamp")
    }

    /// A spec with most fields set, so that a copy read back from Redis is checked whole.
    fn spec(name: &str) -> CampaignSpec {
        serde_json::from_value(json!({
            "name": name,
            "trunks": ["sipp", "backup"],
            "caller_ids": ["02150000000"],
            "prompt": "remind.wav",
            "after_prompt": "stay",
            "dtmf": { "keys": { "1": "confirm", "#": "hangup" }, "max_repeats": 2 },
            "priority": 7,
            "start_at": "2026-01-01T00:00:00Z",
            "end_at": "2026-02-01T12:30:00.123456789Z",
            "windows": {
                "time_zone": "Asia/Shanghai",
                "callee_time_zone": false,
                "weekly": { "daily": ["09:00-21:00"], "sat": ["10:00-18:00"] },
                "holidays": ["2026-10-01"]
            },
            "max_concurrent": 20,
            "max_cps": 2.5,
            "retry": {
                "rules": { "busy": { "delay_secs": 600, "retries": 3 } },
                "max_attempts": 4
            },
            "frequency_caps": [{ "max_calls": 3, "per_secs": 86400 }],
            "record": true
        }))
        .expect("spec")
    }

    fn exact(campaign: Option<CampaignId>, hash: &[u8]) -> NewBlacklistEntry {
        NewBlacklistEntry {
            campaign_id: campaign,
            number_hash: Some(hash.to_vec()),
            number_enc: Some(vec![0xA5, 0x5A, 0x01]),
            prefix: None,
            label: "+86138****0001".into(),
            reason: "customer request".into(),
            source: "api".into(),
            expires_at: None,
        }
    }

    /// Polls `check` until it holds or `limit` passes; how long it took.
    async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_campaign_read_twice_is_loaded_once() {
        let ns = Namespace::new();
        let inner = Arc::new(MemoryStore::new());
        let on_redis = node(&inner, &redis_url(), &ns.0).await;
        let in_memory = CachedStore::memory(inner.clone(), &CacheConfig::default());
        for cached in [&on_redis, &in_memory] {
            let c = cached.create_campaign(&spec("first"), t(0)).await.unwrap();
            assert_eq!(cached.get_campaign(c.id).await.unwrap(), c);
            // Changed behind the cache: the second read does not reach the store.
            inner
                .set_campaign_status(c.id, Draft, Running, t(1))
                .await
                .unwrap();
            assert_eq!(cached.get_campaign(c.id).await.unwrap(), c);
            // A write that conflicts drops the stale copy as well.
            assert!(matches!(
                cached.set_campaign_status(c.id, Draft, Paused, t(2)).await,
                Err(StoreError::Conflict(_))
            ));
            assert_eq!(cached.get_campaign(c.id).await.unwrap().status, Running);
            let paused = cached
                .set_campaign_status(c.id, Running, Paused, t(3))
                .await
                .unwrap();
            assert_eq!(cached.get_campaign(c.id).await.unwrap(), paused);
            let renamed = cached
                .update_campaign_spec(c.id, &spec("renamed"), &[Paused], t(4))
                .await
                .unwrap();
            assert_eq!(cached.get_campaign(c.id).await.unwrap(), renamed);
            cached.delete_campaign(c.id, &[Paused]).await.unwrap();
            assert!(matches!(
                cached.get_campaign(c.id).await,
                Err(StoreError::NotFound { .. })
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_status_change_on_one_node_is_seen_on_another() {
        let ns = Namespace::new();
        let url = redis_url();
        let inner = Arc::new(MemoryStore::new());
        let a = node(&inner, &url, &ns.0).await;
        let b = node(&inner, &url, &ns.0).await;
        let c = inner.create_campaign(&spec("shared"), t(0)).await.unwrap();
        assert_eq!(a.get_campaign(c.id).await.unwrap(), c);
        // A node over an empty store can only have it from Redis, where A put it: whole.
        let elsewhere = node(&Arc::new(MemoryStore::new()), &url, &ns.0).await;
        assert_eq!(elsewhere.get_campaign(c.id).await.unwrap(), c);

        assert_eq!(b.get_campaign(c.id).await.unwrap().status, Draft);
        a.set_campaign_status(c.id, Draft, Running, t(1))
            .await
            .unwrap();
        let b = &b;
        let took = within(PROPAGATION, || async move {
            b.get_campaign(c.id).await.unwrap().status == Running
        })
        .await;
        assert!(took.is_some(), "B still sees the campaign as draft");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_number_blacklisted_on_one_node_is_blocked_on_another() {
        let ns = Namespace::new();
        let url = redis_url();
        let inner = Arc::new(MemoryStore::new());
        let (a, b) = (
            node(&inner, &url, &ns.0).await,
            node(&inner, &url, &ns.0).await,
        );
        let (a, b) = (&a, &b);
        let c = inner.create_campaign(&spec("one"), t(0)).await.unwrap().id;
        let other = inner.create_campaign(&spec("two"), t(0)).await.unwrap().id;
        let hash: &[u8] = b"blind-index-1";
        let number = "+8613800000001";
        // Both nodes have the campaign's list cached, without the number.
        assert_eq!(
            a.blacklist_match(c, hash, number, t(10)).await.unwrap(),
            None
        );
        assert_eq!(
            b.blacklist_match(c, hash, number, t(10)).await.unwrap(),
            None
        );

        a.add_blacklist(&[exact(None, hash)], t(11)).await.unwrap();
        let took = within(PROPAGATION, || async move {
            b.blacklist_match(c, hash, number, t(12))
                .await
                .unwrap()
                .is_some()
        })
        .await;
        assert!(took.is_some(), "B would still dial a blacklisted number");
        let stored = inner.list_blacklist(None, t(12)).await.unwrap();
        assert_eq!(
            b.blacklist_match(c, hash, number, t(12)).await.unwrap(),
            stored.first().cloned()
        );
        // A node over an empty store blocks it too: the list in Redis keeps the blind index.
        let elsewhere = node(&Arc::new(MemoryStore::new()), &url, &ns.0).await;
        assert_eq!(
            elsewhere
                .blacklist_match(c, hash, number, t(12))
                .await
                .unwrap(),
            stored.first().cloned()
        );

        // A prefix of one campaign, until t(100): checked against the time of each call.
        let mut prefix = exact(Some(c), b"");
        prefix.number_hash = None;
        prefix.number_enc = None;
        prefix.prefix = Some("+86170".into());
        prefix.expires_at = Some(t(100));
        b.add_blacklist(&[prefix], t(13)).await.unwrap();
        let took = within(PROPAGATION, || async move {
            a.blacklist_match(c, b"h2", "+8617000000002", t(50))
                .await
                .unwrap()
                .is_some()
        })
        .await;
        assert!(took.is_some(), "A would still dial a blacklisted prefix");
        assert_eq!(
            a.blacklist_match(c, b"h2", "+8617000000002", t(100))
                .await
                .unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            a.blacklist_match(other, b"h2", "+8617000000002", t(50))
                .await
                .unwrap(),
            None,
            "another campaign's entry"
        );

        let id = stored.first().map(|e| e.id).expect("the exact entry");
        a.remove_blacklist(id).await.unwrap();
        let took = within(PROPAGATION, || async move {
            b.blacklist_match(c, hash, number, t(14))
                .await
                .unwrap()
                .is_none()
        })
        .await;
        assert!(took.is_some(), "B still blocks a removed entry");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_number_learned_empty_on_one_node_is_known_on_another() {
        let ns = Namespace::new();
        let url = redis_url();
        let inner = Arc::new(MemoryStore::new());
        let (a, b) = (
            node(&inner, &url, &ns.0).await,
            node(&inner, &url, &ns.0).await,
        );
        let (a, b) = (&a, &b);
        let hash: &[u8] = b"blind-index-7";
        assert_eq!(a.number_status(hash, t(0)).await.unwrap(), None);
        assert_eq!(b.number_status(hash, t(0)).await.unwrap(), None);

        a.record_number_outcome(hash, Outcome::EmptyNumber, Some("empty"), t(20))
            .await
            .unwrap();
        let took = within(PROPAGATION, || async move {
            b.number_status(hash, t(0))
                .await
                .unwrap()
                .is_some_and(|s| s.status == "empty")
        })
        .await;
        assert!(took.is_some(), "B does not know the number is empty");
        let learned = inner.number_status(hash, t(0)).await.unwrap();
        assert_eq!(b.number_status(hash, t(20)).await.unwrap(), learned);
        // Older than `since`: aged out, from the same cached status.
        assert_eq!(b.number_status(hash, t(21)).await.unwrap(), None);
        let elsewhere = node(&Arc::new(MemoryStore::new()), &url, &ns.0).await;
        assert_eq!(elsewhere.number_status(hash, t(0)).await.unwrap(), learned);

        b.erase_number(hash).await.unwrap();
        let took = within(PROPAGATION, || async move {
            a.number_status(hash, t(0)).await.unwrap().is_none()
        })
        .await;
        assert!(took.is_some(), "A still knows an erased number");
    }

    /// A TCP relay to Redis that can be cut and restored, to take Redis away from one node.
    struct Relay {
        port: u16,
        target: String,
        url: String,
        tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    }

    impl Relay {
        async fn start(redis_url: &str) -> Relay {
            let rest = redis_url.strip_prefix("redis://").expect("a redis:// URL");
            let (auth, rest) = match rest.rsplit_once('@') {
                Some((auth, rest)) => (format!("{auth}@"), rest),
                None => (String::new(), rest),
            };
            let (target, db) = match rest.split_once('/') {
                Some((target, db)) => (target.to_string(), format!("/{db}")),
                None => (rest.to_string(), String::new()),
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("local address").port();
            let relay = Relay {
                port,
                target,
                url: format!("redis://{auth}127.0.0.1:{port}{db}"),
                tasks: Arc::default(),
            };
            relay.serve(listener);
            relay
        }

        fn serve(&self, listener: TcpListener) {
            let tasks = self.tasks.clone();
            let target = self.target.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    tasks.lock().unwrap().push(relay);
                }
            });
            self.tasks.lock().unwrap().push(accept);
        }

        /// Closes the port and every connection through it.
        async fn cut(&self) {
            let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
        }

        async fn restore(&self) {
            let listener = TcpListener::bind(("127.0.0.1", self.port))
                .await
                .expect("the relay's port again");
            self.serve(listener);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_redis_reads_come_from_the_store() {
        let ns = Namespace::new();
        let url = redis_url();
        let relay = Relay::start(&url).await;
        let inner = Arc::new(MemoryStore::new());
        // A reaches Redis through the relay, B directly.
        let (a, b) = (
            node(&inner, &relay.url, &ns.0).await,
            node(&inner, &url, &ns.0).await,
        );
        let (a, b) = (&a, &b);
        let c1 = inner.create_campaign(&spec("one"), t(0)).await.unwrap();
        let c2 = inner.create_campaign(&spec("two"), t(0)).await.unwrap();
        let hash: &[u8] = b"blind-index-9";
        let number = "+8613900000009";
        for n in [a, b] {
            assert_eq!(n.get_campaign(c1.id).await.unwrap(), c1);
            assert_eq!(
                n.blacklist_match(c1.id, hash, number, t(1)).await.unwrap(),
                None
            );
            assert_eq!(n.number_status(hash, t(0)).await.unwrap(), None);
        }

        relay.cut().await;
        let started = Instant::now();
        assert_eq!(a.get_campaign(c2.id).await.unwrap(), c2, "never cached");
        assert_eq!(a.get_campaign(c1.id).await.unwrap(), c1, "cached");
        // Writes go through, and this node reads them back at once, though it could not tell
        // the others.
        a.set_campaign_status(c1.id, Draft, Running, t(2))
            .await
            .unwrap();
        assert_eq!(a.get_campaign(c1.id).await.unwrap().status, Running);
        a.add_blacklist(&[exact(None, hash)], t(3)).await.unwrap();
        assert!(a
            .blacklist_match(c1.id, hash, number, t(4))
            .await
            .unwrap()
            .is_some());
        a.record_number_outcome(hash, Outcome::EmptyNumber, Some("empty"), t(5))
            .await
            .unwrap();
        assert!(a.number_status(hash, t(0)).await.unwrap().is_some());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "reads and writes without Redis took {:?}",
            started.elapsed()
        );
        // B heard of none of it: it serves its copies.
        assert_eq!(b.get_campaign(c1.id).await.unwrap().status, Draft);

        // Redis back for A: its retried invalidations reach B.
        relay.restore().await;
        let took = within(Duration::from_secs(30), || async move {
            b.blacklist_match(c1.id, hash, number, t(6))
                .await
                .unwrap()
                .is_some()
                && b.get_campaign(c1.id).await.unwrap().status == Running
                && b.number_status(hash, t(0)).await.unwrap().is_some()
        })
        .await;
        assert!(took.is_some(), "B never heard of A's writes");
    }
}
