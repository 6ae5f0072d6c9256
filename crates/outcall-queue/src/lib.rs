//! Task queue with leases, global pacing limits, dialer registry and two-level cache, for the
//! distributed mode (several scheduler and dialer nodes).
//!
//! Each piece is a trait with two implementations: in memory (embedded mode, one process)
//! and on Redis (feature `redis`, on by default), shared by every node connected to the same
//! server and namespace.
//!
//! | Trait / type | Memory | Redis |
//! |---|---|---|
//! | [`TaskQueue`]: due contacts, claimed under a lease | [`MemoryQueue`] | [`RedisQueue`] |
//! | [`Limiter`]: calls in progress and calls per second, per campaign and trunk | [`MemoryLimiter`] | [`RedisLimiter`] |
//! | [`DialerRegistry`]: live dialer nodes and their load | [`MemoryRegistry`] | [`RedisRegistry`] |
//! | [`TwoLevelCache`]: campaign configs, blacklist, number status | [`TwoLevelCache::memory`] | [`TwoLevelCache::with_redis`] |
//!
//! # Task queue
//!
//! A task is a (campaign, contact) with a priority and a due time. A scheduler node
//! [claims](TaskQueue::claim) the best due tasks of a campaign under a lease, renews the
//! lease while the call is being placed, and [acks](TaskQueue::ack) it when the attempt is
//! recorded, or [releases](TaskQueue::release) it with a new due time (a closed calling
//! window). A node that dies stops renewing: any node [reaps](TaskQueue::reap) the expired
//! leases, which puts their tasks back (due now) and returns them so the attempts the dead
//! node left open can be closed. A token, new at each claim, identifies a lease: a node whose
//! lease was reaped and claimed again elsewhere gets `false` from renew, ack and release.
//!
//! Times are milliseconds since the Unix epoch given by the caller (`now_ms`), except the
//! new expiry of a renew, measured from the system clock ([`now_ms`]): nodes must keep their
//! clocks synchronised (NTP); a skew shortens or lengthens leases by as much.
//!
//! # Redis key layout
//!
//! `<ns>` is the namespace ([`RedisConfig::namespace`]). The part in braces is the Redis
//! Cluster hash tag: every key a script touches shares it, so each script runs on one slot.
//!
//! | Key | Type | Content |
//! |---|---|---|
//! | `{<ns>:c:<campaign>}:tasks` | hash | contact → `priority:due_ms`, every task queued or leased (push is idempotent on it) |
//! | `{<ns>:c:<campaign>}:due` | sorted set | contact, score due_ms: the timing wheel |
//! | `{<ns>:c:<campaign>}:ready` | sorted set | `<due_ms, 15 digits>:<contact>`, score −priority: due tasks; `ZPOPMIN` takes the highest priority, then (equal scores sort by member) the earliest due |
//! | `{<ns>:c:<campaign>}:leases` | sorted set | contact, score lease expiry ms |
//! | `{<ns>:c:<campaign>}:owners` | hash | contact → `<token>\t<node>` |
//! | `{<ns>:c:<campaign>}:clock` | string | the latest `now_ms` a claim or reap saw (expires after a day idle): a task pushed or released due at or before it goes straight to `ready`, so a node whose clock lags may claim it that much early |
//! | `{<ns>:limits}:calls:c:<campaign>` | sorted set | call id, score hold expiry ms (server clock): calls in progress |
//! | `{<ns>:limits}:calls:t:<trunk>` | sorted set | the same for a trunk |
//! | `{<ns>:limits}:pace:c:<campaign>` | string | GCRA theoretical arrival time, µs (server clock) |
//! | `{<ns>:limits}:pace:t:<trunk>` | string | the same for a trunk |
//! | `{<ns>:dialers}` | hash | node → `<expiry ms>\t<DialerInfo as JSON>` |
//! | `{<ns>:cache:<name>:<key>}` | string | a cached value, JSON, with the Redis TTL |
//! | `{<ns>:cache:<name>:<key>}:gen` | string | the key's invalidation count |
//! | channel `<ns>:cache:<name>` | pub/sub | keys invalidated |
//!
//! The ready set is scored by priority alone and ordered by due time through its members
//! (strings of equal score sort byte by byte, and the due time is zero-padded), so any `i32`
//! priority and any due time up to year 33658 order exactly; a combined score
//! `(MAX - priority) · 2^42 + due_ms` would have to clamp priorities to fit a double.
//!
//! All the limits share the tag `{<ns>:limits}`, because one script takes a campaign's and a
//! trunk's slots together: **on Redis Cluster every limit lives on a single slot** (one
//! shard carries the pacing of the whole deployment; each acquire is one short script).
//! The queue of each campaign is on its own slot, the registry on one.
//!
//! # Lua scripts
//!
//! Each operation is one script (`EVALSHA` through [`::redis::Script`], loaded on first use),
//! so it is atomic. The queue scripts begin with `queue_common.lua` (member encoding,
//! enqueue, token check), the limiter scripts with `limits_common.lua` (server time, pruning
//! expired holds).
//!
//! - `push.lua`: `HSETNX tasks` per task; a new task goes to `ready` if due at or before
//!   `clock`, else to `due`. Pushes are sent 1,000 tasks per script.
//! - `claim.lua`: advances `clock`; moves the entries of `due` scored ≤ now (at most 10,000
//!   per claim, earliest first, see [`RedisQueue::with_move_batch`]) to `ready`; `ZPOPMIN
//!   ready max`; records each lease in `leases` and `owners`. Returns (contact,
//!   `priority:due`) pairs; the token is a random prefix sent with the claim plus the
//!   contact.
//! - `renew.lua`, `ack.lua`, `release.lua`: check that `owners` holds the token, then move
//!   the expiry (`ZADD XX`), delete the task, or clear the lease and enqueue the task at its
//!   new due time.
//! - `reap.lua`: advances `clock`; for each `leases` entry scored ≤ now (1,000 per script,
//!   repeated until done): clears the lease, sets the task due now, adds it to `ready`.
//!   Returns the tasks and the dead leases' nodes (logged).
//! - `remove.lua`: deletes the task from every structure.
//! - `acquire.lua`: `TIME`; prunes expired holds of the campaign and the trunk; a call that
//!   already holds both is refreshed and granted; else checks, in order, campaign then trunk
//!   concurrency (`ZCARD` against the max), campaign then trunk rate (GCRA: with emission
//!   interval `T = 1/max_cps` and the stored arrival time `tat`, a call may start if
//!   `max(tat, now) − now ≤ (burst − 1)·T`, and `tat` becomes `max(tat, now) + T`); only if
//!   all pass does it write both arrival times
//!   and add the call to both sets (score now + hold). Returns `granted`, or the first
//!   failing limit and, for a rate, the wait in µs.
//! - `limits_release.lua`, `limits_renew.lua`, `limits_usage.lua`: `ZREM`; prune then
//!   `ZADD` the new expiry if the call still holds its slot; `ZCOUNT` of live holds.
//! - `registry_live.lua`: `HGETALL`, returns the entries whose expiry is after now and
//!   `HDEL`s the others.
//! - `cache_set.lua`: `SET … PX` of a loaded value only if the key's generation is the one
//!   read before loading (a load that raced an invalidation does not store a stale value).
//! - `cache_invalidate.lua`: `DEL` the value, `INCR` its generation, `PUBLISH` the key.
//!
//! The crate connects to one Redis server (or a proxy in front of a Cluster); the keys are
//! laid out for Cluster but the cluster client of the `redis` crate is not built in.

mod cache;
mod error;
mod limiter;
mod queue;
#[cfg(feature = "redis")]
mod redis;
mod registry;

#[cfg(feature = "redis")]
pub use self::redis::{RedisConfig, RedisConn, RedisLimiter, RedisQueue, RedisRegistry};
pub use cache::{CacheConfig, TwoLevelCache};
pub use error::{redact_url, QueueError, Result};
pub use limiter::{
    Acquire, DenyReason, Limiter, MemoryLimiter, PaceLimits, SlotRequest, SlotUsage,
};
pub use queue::{Lease, MemoryQueue, QueueDepth, Task, TaskQueue};
pub use registry::{least_loaded, DialerInfo, DialerRegistry, MemoryRegistry};

/// The system clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
