//! The embedded [`Store`]: SQLite through sqlx, in WAL mode.
//!
//! Every statement lives in its own file under `src/sqlite/queries/` and is compiled in with
//! `include_str!`; the schema is `migrations/sqlite`. Times are stored as INTEGER milliseconds
//! since the Unix epoch, states and outcomes as their snake_case names. CDRs are rows of their
//! own (`cdrs`, keyed by attempt id), joined to the attempts they belong to. Writing transactions
//! start with `BEGIN IMMEDIATE`, so two connections never race to upgrade a read lock: the
//! second one waits (up to the busy timeout) instead of failing.

use crate::{
    AddResult, AttemptRecord, AttemptStart, BlacklistRecord, CampaignCounts, ContactNext,
    ContactRecord, NewBlacklistEntry, NewContact, NumberStatus, OpenAttempt, Result, Store,
    StoreError, TrunkRecord,
};
use crate::{CdrPurge, CdrRow, EraseResult, SealedNumber};
use crate::{NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus};
use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AttemptId, Campaign, CampaignId, CampaignSpec, CampaignStatus, ContactId, ContactState,
};
use outcall_domain::{Cdr, Outcome};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, SqlitePool, Transaction};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

mod access;
mod campaign_admin;
mod events;
mod webhook;

/// The statements, one file each.
mod q {
    pub const BEGIN_IMMEDIATE: &str = include_str!("sqlite/queries/begin_immediate.sql");
    pub const BLACKLIST_INSERT: &str = include_str!("sqlite/queries/blacklist_insert.sql");
    pub const BLACKLIST_LIST_ALL: &str = include_str!("sqlite/queries/blacklist_list_all.sql");
    pub const BLACKLIST_LIST_ACTIVE: &str =
        include_str!("sqlite/queries/blacklist_list_active.sql");
    pub const BLACKLIST_DELETE: &str = include_str!("sqlite/queries/blacklist_delete.sql");
    pub const BLACKLIST_MATCH: &str = include_str!("sqlite/queries/blacklist_match.sql");
    pub const NUMBER_STATUS_UPSERT: &str = include_str!("sqlite/queries/number_status_upsert.sql");
    pub const NUMBER_STATUS_GET: &str = include_str!("sqlite/queries/number_status_get.sql");
    pub const NUMBERS_WITH_STATUS: &str = include_str!("sqlite/queries/numbers_with_status.sql");
    pub const CONTACT_HASHES: &str = include_str!("sqlite/queries/contact_hashes.sql");
    pub const CONTACT_EXISTS_HASH: &str = include_str!("sqlite/queries/contact_exists_hash.sql");
    pub const COUNTS_BY_PROVINCE: &str = include_str!("sqlite/queries/counts_by_province.sql");
    pub const ERASE_CONTACTS: &str = include_str!("sqlite/queries/erase_contacts.sql");
    pub const ERASE_RECORDINGS: &str = include_str!("sqlite/queries/erase_recordings.sql");
    pub const ERASE_ATTEMPTS: &str = include_str!("sqlite/queries/erase_attempts.sql");
    pub const ERASE_CDRS: &str = include_str!("sqlite/queries/erase_cdrs.sql");
    pub const CDR_INSERT: &str = include_str!("sqlite/queries/cdr_insert.sql");
    pub const CDR_COUNT: &str = include_str!("sqlite/queries/cdr_count.sql");
    pub const CDR_PURGE: &str = include_str!("sqlite/queries/cdr_purge.sql");
    pub const ERASE_NUMBER_STATUS: &str = include_str!("sqlite/queries/erase_number_status.sql");
    pub const SEALED_CONTACTS: &str = include_str!("sqlite/queries/sealed_contacts.sql");
    pub const SEALED_BLACKLIST: &str = include_str!("sqlite/queries/sealed_blacklist.sql");
    pub const RESEAL_CONTACT: &str = include_str!("sqlite/queries/reseal_contact.sql");
    pub const RESEAL_BLACKLIST: &str = include_str!("sqlite/queries/reseal_blacklist.sql");
    pub const TRUNK_UPSERT: &str = include_str!("sqlite/queries/trunk_upsert.sql");
    pub const TRUNK_LIST: &str = include_str!("sqlite/queries/trunk_list.sql");
    pub const CAMPAIGN_INSERT: &str = include_str!("sqlite/queries/campaign_insert.sql");
    pub const CAMPAIGN_GET: &str = include_str!("sqlite/queries/campaign_get.sql");
    pub const CAMPAIGN_LIST: &str = include_str!("sqlite/queries/campaign_list.sql");
    pub const CAMPAIGN_SET_STATUS: &str = include_str!("sqlite/queries/campaign_set_status.sql");
    pub const CAMPAIGN_STATUS: &str = include_str!("sqlite/queries/campaign_status.sql");
    pub const CONTACT_INSERT: &str = include_str!("sqlite/queries/contact_insert.sql");
    pub const CONTACT_DUE: &str = include_str!("sqlite/queries/contact_due.sql");
    pub const CONTACT_GET: &str = include_str!("sqlite/queries/contact_get.sql");
    pub const CONTACTS_LIST: &str = include_str!("sqlite/queries/contacts_list.sql");
    pub const CONTACT_EXISTS: &str = include_str!("sqlite/queries/contact_exists.sql");
    pub const CONTACT_DEFER: &str = include_str!("sqlite/queries/contact_defer.sql");
    pub const CONTACT_CLAIM: &str = include_str!("sqlite/queries/contact_claim.sql");
    pub const CONTACT_RETRY: &str = include_str!("sqlite/queries/contact_retry.sql");
    pub const CONTACT_DONE: &str = include_str!("sqlite/queries/contact_done.sql");
    pub const ATTEMPT_INSERT: &str = include_str!("sqlite/queries/attempt_insert.sql");
    pub const ATTEMPT_FINISH: &str = include_str!("sqlite/queries/attempt_finish.sql");
    pub const ATTEMPT_STATE: &str = include_str!("sqlite/queries/attempt_state.sql");
    pub const ATTEMPT_OUTCOME_COUNTS: &str =
        include_str!("sqlite/queries/attempt_outcome_counts.sql");
    pub const ATTEMPTS_TO_NUMBER_SINCE: &str =
        include_str!("sqlite/queries/attempts_to_number_since.sql");
    pub const ATTEMPTS_OPEN: &str = include_str!("sqlite/queries/attempts_open.sql");
    pub const ATTEMPTS_LIST: &str = include_str!("sqlite/queries/attempts_list.sql");
    pub const ATTEMPTS_QUERY: &str = include_str!("sqlite/queries/attempts_query.sql");
    pub const ATTEMPTS_BY_HOUR: &str = include_str!("sqlite/queries/attempts_by_hour.sql");
    pub const CONTACTS_UNFINISHED: &str = include_str!("sqlite/queries/contacts_unfinished.sql");
    pub const CONTACTS_DUE_BACKLOG: &str = include_str!("sqlite/queries/contacts_due_backlog.sql");
    pub const CONTACTS_NEXT_DUE: &str = include_str!("sqlite/queries/contacts_next_due.sql");
    pub const COUNTS_CONTACTS_BY_STATE: &str =
        include_str!("sqlite/queries/counts_contacts_by_state.sql");
    pub const COUNTS_FINAL_OUTCOMES: &str =
        include_str!("sqlite/queries/counts_final_outcomes.sql");
    pub const COUNTS_ATTEMPT_OUTCOMES: &str =
        include_str!("sqlite/queries/counts_attempt_outcomes.sql");
    pub const COUNTS_ATTEMPTS_TOTAL: &str =
        include_str!("sqlite/queries/counts_attempts_total.sql");
}

/// The migrations of `migrations/sqlite`, in version order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "blacklist",
        include_str!("../migrations/sqlite/0002_blacklist.sql"),
    ),
    (
        3,
        "number_status",
        include_str!("../migrations/sqlite/0003_number_status.sql"),
    ),
    (
        4,
        "contact_region",
        include_str!("../migrations/sqlite/0004_contact_region.sql"),
    ),
    (
        5,
        "access",
        include_str!("../migrations/sqlite/0005_access.sql"),
    ),
    (
        6,
        "webhooks",
        include_str!("../migrations/sqlite/0006_webhooks.sql"),
    ),
    (
        7,
        "caller_id_pools",
        include_str!("../migrations/sqlite/0007_caller_id_pools.sql"),
    ),
    (
        8,
        "system_events",
        include_str!("../migrations/sqlite/0008_system_events.sql"),
    ),
    (
        9,
        "contact_trace",
        include_str!("../migrations/sqlite/0009_contact_trace.sql"),
    ),
    (
        10,
        "cdrs",
        include_str!("../migrations/sqlite/0010_cdrs.sql"),
    ),
];

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one writer: SQLite allows a single writer at a time, and queueing writes on one
    /// connection avoids the busy-handler sleeps of several connections racing for the lock.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` in WAL mode, with
    /// `synchronous = NORMAL`, foreign keys on and a 5 s busy timeout, and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db)?;
        SqliteStore::migrated(pool, Some(writer)).await
    }

    /// A private in-memory database (tests, dry runs). The pool holds exactly one connection,
    /// never recycled, so every query sees the same database.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db)?;
        SqliteStore::migrated(pool, None).await
    }

    /// Closes every connection (checkpointing the WAL into the database file).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn migrated(pool: SqlitePool, writer: Option<SqlitePool>) -> Result<SqliteStore> {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let writer = writer.unwrap_or_else(|| pool.clone());
        Migrator::with_migrations(migrations)
            .run(&writer)
            .await
            .map_err(|e| StoreError::Database(format!("migration: {e}")))?;
        Ok(SqliteStore { pool, writer })
    }

    /// A transaction that takes the write lock at once.
    async fn write_tx(&self) -> Result<Transaction<'static, sqlx::Sqlite>> {
        self.writer.begin_with(q::BEGIN_IMMEDIATE).await.map_err(db)
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

fn u32_col(row: &SqliteRow, name: &str) -> Result<u32> {
    let v: i64 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {name}: {v} out of range")))
}

fn u64_col(row: &SqliteRow, name: &str) -> Result<u64> {
    let v: i64 = col(row, name)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {name}: {v} out of range")))
}

fn outcome(s: &str) -> Result<Outcome> {
    s.parse::<Outcome>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn opt_outcome(s: Option<String>) -> Result<Option<Outcome>> {
    s.as_deref().map(outcome).transpose()
}

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn campaign_status(s: &str) -> Result<CampaignStatus> {
    CampaignStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown campaign status `{s}`")))
}

fn campaign_row(row: &SqliteRow) -> Result<Campaign> {
    let status: String = col(row, "status")?;
    let spec: String = col(row, "spec")?;
    Ok(Campaign {
        id: col(row, "id")?,
        status: campaign_status(&status)?,
        spec: json("campaign spec", &spec)?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
    })
}

fn contact_row(row: &SqliteRow) -> Result<ContactRecord> {
    let state: String = col(row, "state")?;
    let variables: String = col(row, "variables")?;
    let priority: i64 = col(row, "priority")?;
    Ok(ContactRecord {
        id: col(row, "id")?,
        campaign_id: col(row, "campaign_id")?,
        number_hash: col(row, "number_hash")?,
        number_enc: col(row, "number_enc")?,
        masked: col(row, "masked")?,
        time_zone: col(row, "time_zone")?,
        priority: i32::try_from(priority)
            .map_err(|_| StoreError::Corrupt(format!("contact priority {priority}")))?,
        variables: json("contact variables", &variables)?,
        state: ContactState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown contact state `{state}`")))?,
        due_at: ts(col(row, "due_at")?)?,
        attempts: u32_col(row, "attempts")?,
        last_outcome: opt_outcome(col(row, "last_outcome")?)?,
        final_outcome: opt_outcome(col(row, "final_outcome")?)?,
        region: crate::Region {
            province: col(row, "province")?,
            city: col(row, "city")?,
            carrier: col(row, "carrier")?,
        },
        // Only the queries that feed the dialer select it.
        trace_id: row.try_get::<Option<String>, _>("trace_id").ok().flatten(),
    })
}

fn attempt_row(row: &SqliteRow) -> Result<AttemptRecord> {
    let cdr: Option<String> = col(row, "cdr")?;
    let ended_at: Option<i64> = col(row, "ended_at")?;
    Ok(AttemptRecord {
        id: col(row, "id")?,
        campaign_id: col(row, "campaign_id")?,
        contact_id: col(row, "contact_id")?,
        seq: u32_col(row, "seq")?,
        node: col(row, "node")?,
        started_at: ts(col(row, "started_at")?)?,
        ended_at: ended_at.map(ts).transpose()?,
        outcome: opt_outcome(col(row, "outcome")?)?,
        cause: col(row, "cause")?,
        cdr: cdr
            .as_deref()
            .map(|s| json::<Cdr>("attempt cdr", s))
            .transpose()?,
    })
}

/// `name, n` rows into a map.
fn name_counts(rows: &[SqliteRow]) -> Result<BTreeMap<String, u64>> {
    rows.iter()
        .map(|r| Ok((col::<String>(r, "name")?, u64_col(r, "n")?)))
        .collect()
}

fn blacklist_row(r: &SqliteRow) -> Result<BlacklistRecord> {
    use sqlx::Row;
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok(BlacklistRecord {
        id: r.try_get("id").map_err(get)?,
        campaign_id: r.try_get("campaign_id").map_err(get)?,
        kind: r.try_get("kind").map_err(get)?,
        number_hash: r.try_get("number_hash").map_err(get)?,
        number_enc: r.try_get("number_enc").map_err(get)?,
        prefix: r.try_get("prefix").map_err(get)?,
        label: r.try_get("label").map_err(get)?,
        reason: r.try_get("reason").map_err(get)?,
        source: r.try_get("source").map_err(get)?,
        expires_at: r
            .try_get::<Option<i64>, _>("expires_at")
            .map_err(get)?
            .map(ts)
            .transpose()?,
        created_at: ts(r.try_get("created_at").map_err(get)?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_trunk(&self, trunk: &TrunkRecord) -> Result<()> {
        sqlx::query(q::TRUNK_UPSERT)
            .bind(&trunk.name)
            .bind(trunk.config.to_string())
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list_trunks(&self) -> Result<Vec<TrunkRecord>> {
        let rows = sqlx::query(q::TRUNK_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let config: String = col(r, "config")?;
                Ok(TrunkRecord {
                    name: col(r, "name")?,
                    config: json("trunk config", &config)?,
                })
            })
            .collect()
    }

    async fn create_campaign(&self, spec: &CampaignSpec, now: Timestamp) -> Result<Campaign> {
        let spec_json = serde_json::to_string(spec)
            .map_err(|e| StoreError::Database(format!("campaign spec: {e}")))?;
        let now = ms(now);
        let mut tx = self.write_tx().await?;
        campaign_admin::require_pool(&mut tx, spec).await?;
        let row = sqlx::query(q::CAMPAIGN_INSERT)
            .bind(&spec.name)
            .bind(CampaignStatus::Draft.as_str())
            .bind(spec_json)
            .bind(i64::from(spec.priority))
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Campaign {
            id: col(&row, "id")?,
            status: CampaignStatus::Draft,
            spec: spec.clone(),
            created_at: ts(now)?,
            updated_at: ts(now)?,
        })
    }

    async fn get_campaign(&self, id: CampaignId) -> Result<Campaign> {
        let row = sqlx::query(q::CAMPAIGN_GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound {
                what: "campaign",
                id,
            })?;
        campaign_row(&row)
    }

    async fn list_campaigns(&self) -> Result<Vec<Campaign>> {
        let rows = sqlx::query(q::CAMPAIGN_LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(campaign_row).collect()
    }

    async fn set_campaign_status(
        &self,
        id: CampaignId,
        from: CampaignStatus,
        to: CampaignStatus,
        now: Timestamp,
    ) -> Result<Campaign> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(q::CAMPAIGN_SET_STATUS)
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(ms(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(row) = row {
            let campaign = campaign_row(&row)?;
            tx.commit().await.map_err(db)?;
            return Ok(campaign);
        }
        let actual: Option<String> = sqlx::query_scalar(q::CAMPAIGN_STATUS)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        match actual {
            None => Err(StoreError::NotFound {
                what: "campaign",
                id,
            }),
            Some(actual) => Err(StoreError::Conflict(format!(
                "campaign {id} is {actual}, not {from}"
            ))),
        }
    }

    async fn add_contacts(
        &self,
        campaign: CampaignId,
        contacts: &[NewContact],
        now: Timestamp,
    ) -> Result<AddResult> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> = sqlx::query_scalar(q::CAMPAIGN_STATUS)
            .bind(campaign)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "campaign",
                id: campaign,
            });
        }
        let now = ms(now);
        let mut added = 0u64;
        // The statement is persistent: prepared on first use, then reused from the
        // connection's cache for every row of the batch.
        for c in contacts {
            added += sqlx::query(q::CONTACT_INSERT)
                .bind(campaign)
                .bind(&c.number_hash)
                .bind(&c.number_enc)
                .bind(&c.masked)
                .bind(&c.time_zone)
                .bind(i64::from(c.priority))
                .bind(c.variables.to_string())
                .bind(now)
                .bind(&c.region.province)
                .bind(&c.region.city)
                .bind(&c.region.carrier)
                .bind(&c.trace_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(AddResult {
            added,
            duplicates: contacts.len() as u64 - added,
        })
    }

    async fn due_contacts(
        &self,
        campaign: CampaignId,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        let rows = sqlx::query(q::CONTACT_DUE)
            .bind(campaign)
            .bind(ms(until))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(contact_row).collect()
    }

    async fn get_contact(&self, id: ContactId) -> Result<ContactRecord> {
        let row = sqlx::query(q::CONTACT_GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound {
                what: "contact",
                id,
            })?;
        contact_row(&row)
    }

    async fn list_contacts(
        &self,
        campaign: CampaignId,
        state: Option<ContactState>,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        sqlx::query(q::CONTACTS_LIST)
            .bind(campaign)
            .bind(after)
            .bind(state.map(|s| s.as_str()))
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(contact_row)
            .collect()
    }

    async fn defer_contact(&self, id: ContactId, due_at: Timestamp) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(q::CONTACT_DEFER)
            .bind(id)
            .bind(ms(due_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if changed == 0 {
            let exists: Option<i64> = sqlx::query_scalar(q::CONTACT_EXISTS)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "contact",
                    id,
                });
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn begin_attempt(
        &self,
        contact: ContactId,
        node: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptStart>> {
        let mut tx = self.write_tx().await?;
        let Some(row) = sqlx::query(q::CONTACT_CLAIM)
            .bind(contact)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
        else {
            tx.rollback().await.map_err(db)?;
            return Ok(None);
        };
        let campaign_id: CampaignId = col(&row, "campaign_id")?;
        let number_hash: Vec<u8> = col(&row, "number_hash")?;
        let seq = u32_col(&row, "attempts")?;
        let attempt_id: AttemptId = sqlx::query_scalar(q::ATTEMPT_INSERT)
            .bind(campaign_id)
            .bind(contact)
            .bind(number_hash)
            .bind(i64::from(seq))
            .bind(node)
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(AttemptStart { attempt_id, seq }))
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
        let cdr_json = cdr
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(format!("cdr: {e}")))?;
        let mut tx = self.write_tx().await?;
        let closed = sqlx::query(q::ATTEMPT_FINISH)
            .bind(attempt)
            .bind(ms(now))
            .bind(outcome.as_str())
            .bind(cause)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(closed) = closed else {
            let state: Option<String> = sqlx::query_scalar(q::ATTEMPT_STATE)
                .bind(attempt)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            return Err(match state {
                None => StoreError::NotFound {
                    what: "attempt",
                    id: attempt,
                },
                Some(_) => StoreError::Conflict(format!("attempt {attempt} is already finished")),
            });
        };
        let contact: ContactId = col(&closed, "contact_id")?;
        if let (Some(cdr), Some(json)) = (cdr, cdr_json) {
            // A CDR the ingest stored first stays.
            sqlx::query(q::CDR_INSERT)
                .bind(attempt)
                .bind(col::<CampaignId>(&closed, "campaign_id")?)
                .bind(col::<i64>(&closed, "started_at")?)
                .bind(cdr.outcome.as_str())
                .bind(cdr.sip_status.map(i64::from))
                .bind(json)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let update = match next {
            ContactNext::Retry { due_at } => sqlx::query(q::CONTACT_RETRY)
                .bind(contact)
                .bind(ms(due_at))
                .bind(outcome.as_str()),
            ContactNext::Done { outcome: last } => sqlx::query(q::CONTACT_DONE)
                .bind(contact)
                .bind(last.as_str())
                .bind(outcome.as_str()),
        };
        update.execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn insert_cdrs(&self, batch: &[CdrRow]) -> Result<u64> {
        let rows = batch
            .iter()
            .map(|r| {
                serde_json::to_string(&r.cdr)
                    .map(|json| (r, json))
                    .map_err(|e| StoreError::Database(format!("cdr: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self.write_tx().await?;
        let mut written = 0;
        for (r, json) in rows {
            written += sqlx::query(q::CDR_INSERT)
                .bind(r.attempt_id)
                .bind(r.campaign_id)
                .bind(ms(r.started_at))
                .bind(r.cdr.outcome.as_str())
                .bind(r.cdr.sip_status.map(i64::from))
                .bind(json)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(written)
    }

    async fn count_cdrs(&self, campaign: Option<CampaignId>) -> Result<u64> {
        let row = sqlx::query(q::CDR_COUNT)
            .bind(campaign)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        u64_col(&row, "n")
    }

    async fn purge_cdrs_before(&self, cutoff: Timestamp) -> Result<CdrPurge> {
        let deleted = sqlx::query(q::CDR_PURGE)
            .bind(ms(cutoff))
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(CdrPurge {
            deleted,
            dropped_partitions: Vec::new(),
        })
    }

    async fn outcome_counts(&self, contact: ContactId) -> Result<BTreeMap<Outcome, u32>> {
        let rows = sqlx::query(q::ATTEMPT_OUTCOME_COUNTS)
            .bind(contact)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let name: String = col(r, "outcome")?;
                Ok((outcome(&name)?, u32_col(r, "n")?))
            })
            .collect()
    }

    async fn attempts_to_number_since(&self, number_hash: &[u8], since: Timestamp) -> Result<u32> {
        let row = sqlx::query(q::ATTEMPTS_TO_NUMBER_SINCE)
            .bind(number_hash)
            .bind(ms(since))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        u32_col(&row, "n")
    }

    async fn open_attempts(&self) -> Result<Vec<OpenAttempt>> {
        let rows = sqlx::query(q::ATTEMPTS_OPEN)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(OpenAttempt {
                    attempt_id: col(r, "id")?,
                    contact_id: col(r, "contact_id")?,
                    campaign_id: col(r, "campaign_id")?,
                    seq: u32_col(r, "seq")?,
                    started_at: ts(col(r, "started_at")?)?,
                    node: col(r, "node")?,
                })
            })
            .collect()
    }

    async fn unfinished_contacts(&self, campaign: CampaignId) -> Result<u64> {
        let row = sqlx::query(q::CONTACTS_UNFINISHED)
            .bind(campaign)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        u64_col(&row, "n")
    }

    async fn due_backlog(&self, now: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        let row = sqlx::query(q::CONTACTS_DUE_BACKLOG)
            .bind(ms(now))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let oldest: Option<i64> = col(&row, "oldest")?;
        Ok((u64_col(&row, "n")?, oldest.map(ts).transpose()?))
    }

    async fn next_due(&self, campaign: CampaignId) -> Result<Option<Timestamp>> {
        let row = sqlx::query(q::CONTACTS_NEXT_DUE)
            .bind(campaign)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let due: Option<i64> = col(&row, "due_at")?;
        due.map(ts).transpose()
    }

    async fn campaign_counts(&self, campaign: CampaignId) -> Result<CampaignCounts> {
        // One read transaction: the four counts see the same snapshot.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let exists: Option<String> = sqlx::query_scalar(q::CAMPAIGN_STATUS)
            .bind(campaign)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "campaign",
                id: campaign,
            });
        }
        let mut counts = CampaignCounts::default();
        for (sql, into) in [
            (q::COUNTS_CONTACTS_BY_STATE, &mut counts.contacts),
            (q::COUNTS_FINAL_OUTCOMES, &mut counts.final_outcomes),
            (q::COUNTS_ATTEMPT_OUTCOMES, &mut counts.attempt_outcomes),
            (q::COUNTS_BY_PROVINCE, &mut counts.provinces),
        ] {
            let rows = sqlx::query(sql)
                .bind(campaign)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            *into = name_counts(&rows)?;
        }
        let row = sqlx::query(q::COUNTS_ATTEMPTS_TOTAL)
            .bind(campaign)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        counts.attempts = u64_col(&row, "n")?;
        tx.commit().await.map_err(db)?;
        Ok(counts)
    }

    async fn list_attempts(
        &self,
        campaign: CampaignId,
        after: Option<AttemptId>,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(q::ATTEMPTS_LIST)
            .bind(campaign)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(attempt_row).collect()
    }

    async fn query_attempts(&self, f: &crate::AttemptQuery) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(q::ATTEMPTS_QUERY)
            .bind(f.after)
            .bind(f.campaign_id)
            .bind(f.outcome.map(|o| o.as_str()))
            .bind(f.number_hash.as_deref())
            .bind(f.since.map(ms))
            .bind(f.until.map(ms))
            .bind(i64::from(f.limit.clamp(1, 10_000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(attempt_row).collect()
    }

    async fn attempts_by_hour(&self, campaign: CampaignId) -> Result<Vec<crate::HourCount>> {
        let rows = sqlx::query(q::ATTEMPTS_BY_HOUR)
            .bind(campaign)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(crate::HourCount {
                    hour: ts(col(r, "hour")?)?,
                    outcome: col(r, "outcome")?,
                    attempts: u64_col(r, "n")?,
                })
            })
            .collect()
    }

    async fn add_blacklist(&self, entries: &[NewBlacklistEntry], now: Timestamp) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        for e in entries {
            let kind = if e.number_hash.is_some() {
                "exact"
            } else {
                "prefix"
            };
            sqlx::query(q::BLACKLIST_INSERT)
                .bind(e.campaign_id)
                .bind(kind)
                .bind(e.number_hash.as_deref())
                .bind(e.number_enc.as_deref())
                .bind(e.prefix.as_deref())
                .bind(&e.label)
                .bind(&e.reason)
                .bind(&e.source)
                .bind(e.expires_at.map(ms))
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(entries.len() as u64)
    }

    async fn list_blacklist(
        &self,
        campaign: Option<CampaignId>,
        now: Timestamp,
    ) -> Result<Vec<BlacklistRecord>> {
        let rows = match campaign {
            None => {
                sqlx::query(q::BLACKLIST_LIST_ALL)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(c) => {
                sqlx::query(q::BLACKLIST_LIST_ACTIVE)
                    .bind(c)
                    .bind(ms(now))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db)?;
        rows.iter().map(blacklist_row).collect()
    }

    async fn remove_blacklist(&self, id: i64) -> Result<()> {
        let done = sqlx::query(q::BLACKLIST_DELETE)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound {
                what: "blacklist entry",
                id,
            });
        }
        Ok(())
    }

    async fn blacklist_match(
        &self,
        campaign: CampaignId,
        number_hash: &[u8],
        e164: &str,
        now: Timestamp,
    ) -> Result<Option<BlacklistRecord>> {
        let row = sqlx::query(q::BLACKLIST_MATCH)
            .bind(campaign)
            .bind(number_hash)
            .bind(e164)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(blacklist_row).transpose()
    }

    async fn record_number_outcome(
        &self,
        number_hash: &[u8],
        outcome: Outcome,
        status: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(q::NUMBER_STATUS_UPSERT)
            .bind(number_hash)
            .bind(status)
            .bind(outcome.as_str())
            .bind(i64::from(outcome.is_answered()))
            .bind(ms(now))
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn number_status(
        &self,
        number_hash: &[u8],
        since: Timestamp,
    ) -> Result<Option<NumberStatus>> {
        use sqlx::Row;
        let row = sqlx::query(q::NUMBER_STATUS_GET)
            .bind(number_hash)
            .bind(ms(since))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        let last: String = r.try_get("last_outcome").map_err(get)?;
        Ok(Some(NumberStatus {
            status: r.try_get("status").map_err(get)?,
            last_outcome: last
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("outcome `{last}`")))?,
            attempts: r.try_get::<i64, _>("attempts").map_err(get)? as u32,
            answered: r.try_get::<i64, _>("answered").map_err(get)? as u32,
            updated_at: ts(r.try_get("updated_at").map_err(get)?)?,
        }))
    }

    async fn erase_number(&self, number_hash: &[u8]) -> Result<EraseResult> {
        use sqlx::Row;
        let mut tx = self.write_tx().await?;
        let recordings = sqlx::query(q::ERASE_RECORDINGS)
            .bind(number_hash)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .filter_map(|r| r.try_get::<Option<String>, _>("recording").ok().flatten())
            .collect();
        let contacts = sqlx::query(q::ERASE_CONTACTS)
            .bind(number_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query(q::ERASE_CDRS)
            .bind(number_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let attempts = sqlx::query(q::ERASE_ATTEMPTS)
            .bind(number_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query(q::ERASE_NUMBER_STATUS)
            .bind(number_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(EraseResult {
            contacts,
            attempts,
            recordings,
        })
    }

    async fn sealed_numbers(
        &self,
        table: &'static str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SealedNumber>> {
        use sqlx::Row;
        let sql = if table == "contacts" {
            q::SEALED_CONTACTS
        } else {
            q::SEALED_BLACKLIST
        };
        let rows = sqlx::query(sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(SealedNumber {
                    table,
                    id: r.try_get("id").map_err(db)?,
                    number_enc: r.try_get("number_enc").map_err(db)?,
                })
            })
            .collect()
    }

    async fn reseal_number(&self, table: &'static str, id: i64, number_enc: &[u8]) -> Result<()> {
        let sql = if table == "contacts" {
            q::RESEAL_CONTACT
        } else {
            q::RESEAL_BLACKLIST
        };
        let n = sqlx::query(sql)
            .bind(id)
            .bind(number_enc)
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 0 {
            let what = if table == "contacts" {
                "contact"
            } else {
                "blacklist entry"
            };
            return Err(StoreError::NotFound { what, id });
        }
        Ok(())
    }

    async fn contact_hashes(
        &self,
        campaign: CampaignId,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, Vec<u8>)>> {
        use sqlx::Row;
        let rows = sqlx::query(q::CONTACT_HASHES)
            .bind(campaign)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id").map_err(db)?,
                    r.try_get("number_hash").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn contact_exists(&self, campaign: CampaignId, number_hash: &[u8]) -> Result<bool> {
        let row = sqlx::query(q::CONTACT_EXISTS_HASH)
            .bind(campaign)
            .bind(number_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn numbers_with_status(
        &self,
        status: &str,
        since: Timestamp,
        after: &[u8],
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        use sqlx::Row;
        let rows = sqlx::query(q::NUMBERS_WITH_STATUS)
            .bind(status)
            .bind(ms(since))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| r.try_get("number_hash").map_err(db))
            .collect()
    }

    // Webhook outbox (in `sqlite/webhook.rs`).
    async fn enqueue_webhook(&self, event: &NewWebhookEvent) -> Result<i64> {
        self.webhook_enqueue(event).await
    }

    async fn take_due_webhooks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        self.webhook_take_due(now, lease_until, limit).await
    }

    async fn next_webhook_due(&self) -> Result<Option<Timestamp>> {
        self.webhook_next_due().await
    }

    async fn webhook_delivered(&self, id: i64, at: Timestamp, http_status: u16) -> Result<()> {
        self.webhook_mark_delivered(id, at, http_status).await
    }

    async fn webhook_failed(&self, id: i64, failure: &WebhookFailure) -> Result<WebhookStatus> {
        self.webhook_mark_failed(id, failure).await
    }

    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Vec<WebhookDelivery>> {
        self.webhook_list(query).await
    }

    async fn get_webhook(&self, id: i64) -> Result<WebhookDelivery> {
        self.webhook_get(id).await
    }

    async fn requeue_webhook(&self, id: i64, now: Timestamp) -> Result<WebhookDelivery> {
        self.webhook_requeue(id, now).await
    }

    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64> {
        self.webhook_purge(before).await
    }

    // Changing and deleting campaigns, caller-ID pools (in `sqlite/campaign_admin.rs`).
    async fn update_campaign_spec(
        &self,
        id: CampaignId,
        spec: &CampaignSpec,
        expected: &[CampaignStatus],
        now: Timestamp,
    ) -> Result<Campaign> {
        self.campaign_update_spec(id, spec, expected, now).await
    }

    async fn delete_campaign(
        &self,
        id: CampaignId,
        allowed: &[CampaignStatus],
    ) -> Result<crate::CampaignDeletion> {
        self.campaign_delete(id, allowed).await
    }

    async fn upsert_caller_id_pool(
        &self,
        pool: &crate::NewCallerIdPool,
        now: Timestamp,
    ) -> Result<(crate::CallerIdPoolRecord, bool)> {
        self.pool_upsert(pool, now).await
    }

    async fn get_caller_id_pool(&self, name: &str) -> Result<Option<crate::CallerIdPoolRecord>> {
        self.pool_get(name).await
    }

    async fn list_caller_id_pools(&self) -> Result<Vec<crate::CallerIdPoolRecord>> {
        self.pool_list().await
    }

    async fn delete_caller_id_pool(&self, name: &str) -> Result<bool> {
        self.pool_delete(name).await
    }
}
