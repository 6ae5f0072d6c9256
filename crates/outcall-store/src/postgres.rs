//! The shared [`Store`] of the distributed mode: PostgreSQL through sqlx.
//!
//! Every node (API, scheduler, ingest) connects to the same database; the schema is
//! `migrations/postgres`, applied at connect under an advisory lock (one node migrates, the
//! others wait and find nothing to do). Times are BIGINT milliseconds since the Unix epoch (UTC),
//! states and outcomes their snake_case names, JSON documents JSONB, ciphertexts and blind
//! indexes BYTEA. The statements are constants next to the code that runs them.
//!
//! Concurrency between nodes rests on row locks, not on the process: [`Store::begin_attempt`]
//! claims a pending contact and opens its attempt in one statement (of concurrent callers, on any
//! node, exactly one wins); [`Store::finish_attempt`] closes an attempt still dialing, once;
//! [`Store::take_due_webhooks`] leases deliveries with `FOR UPDATE SKIP LOCKED`, so no delivery
//! goes to two dispatchers.
//!
//! CDRs live in `cdrs`, partitioned by the month (UTC) their attempt started in; see
//! [`PgStore::ensure_cdr_partitions`] and [`PgStore::drop_cdr_partitions_before`]. Partitions
//! are created ahead at connect and by every retention pass ([`Store::purge_cdrs_before`]): the
//! current month and [`PgOptions::cdr_months_ahead`] more; any other month a CDR belongs to gets
//! its partition on demand, so an insert never fails for want of one.
//!
//! [`PgStore::connect_schema`] keeps everything in one schema (its own `search_path` on every
//! pooled connection): several deployments, or tests, can share one database.

use crate::{
    AddResult, AttemptQuery, AttemptRecord, AttemptStart, BlacklistRecord, CampaignCounts,
    CdrPurge, CdrRow, ContactNext, ContactRecord, EraseResult, HourCount, NewBlacklistEntry,
    NewContact, NumberStatus, OpenAttempt, Result, SealedNumber, Store, StoreError, TrunkRecord,
};
use crate::{NewWebhookEvent, WebhookDelivery, WebhookFailure, WebhookQuery, WebhookStatus};
use async_trait::async_trait;
use jiff::Timestamp;
use outcall_domain::campaign::{
    AttemptId, Campaign, CampaignId, CampaignSpec, CampaignStatus, ContactId, ContactState,
};
use outcall_domain::{Cdr, Outcome};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, QueryBuilder, Row, SqlSafeStr};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod access;
mod campaign_admin;
mod cdrs;
mod events;
mod webhook;

pub use cdrs::CdrPartition;
use cdrs::Month;

/// The statements of this file.
mod q {
    pub const TRUNK_UPSERT: &str = "INSERT INTO trunks (name, config) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET config = excluded.config";
    pub const TRUNK_LIST: &str = r#"SELECT name, config FROM trunks ORDER BY name COLLATE "C""#;

    pub const CAMPAIGN_INSERT: &str = "INSERT INTO campaigns
        (name, status, spec, priority, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $5)
        RETURNING id";
    pub const CAMPAIGN_GET: &str =
        "SELECT id, status, spec, created_at, updated_at FROM campaigns WHERE id = $1";
    pub const CAMPAIGN_LIST: &str =
        "SELECT id, status, spec, created_at, updated_at FROM campaigns ORDER BY id";
    pub const CAMPAIGN_SET_STATUS: &str = "UPDATE campaigns SET status = $3, updated_at = $4
        WHERE id = $1 AND status = $2
        RETURNING id, status, spec, created_at, updated_at";
    pub const CAMPAIGN_STATUS: &str = "SELECT status FROM campaigns WHERE id = $1";

    /// One statement per chunk of contacts; the first of two rows with one number wins.
    pub const CONTACTS_INSERT: &str = "INSERT INTO contacts
        (campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state,
         due_at, attempts, province, city, carrier, trace_id)
        SELECT $1, u.number_hash, u.number_enc, u.masked, u.time_zone, u.priority,
               u.variables::jsonb, 'pending', $2, 0, u.province, u.city, u.carrier, u.trace_id
        FROM UNNEST($3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::int4[], $8::text[],
                    $9::text[], $10::text[], $11::text[], $12::text[])
             WITH ORDINALITY AS u(number_hash, number_enc, masked, time_zone, priority, variables,
                                  province, city, carrier, trace_id, n)
        ORDER BY u.n
        ON CONFLICT (campaign_id, number_hash) DO NOTHING";
    pub const CONTACT_DUE: &str = "SELECT id, campaign_id, number_hash, number_enc, masked,
               time_zone, priority, variables, state, province, city, carrier, due_at, attempts,
               last_outcome, final_outcome, trace_id
        FROM contacts
        WHERE campaign_id = $1 AND state = 'pending' AND due_at <= $2
        ORDER BY priority DESC, due_at, id
        LIMIT $3";
    pub const CONTACT_GET: &str = "SELECT id, campaign_id, number_hash, number_enc, masked,
               time_zone, priority, variables, state, province, city, carrier, due_at, attempts,
               last_outcome, final_outcome, trace_id
        FROM contacts
        WHERE id = $1";
    pub const CONTACTS_LIST: &str = "SELECT id, campaign_id, number_hash, number_enc, masked,
               time_zone, priority, variables, state, province, city, carrier, due_at, attempts,
               last_outcome, final_outcome
        FROM contacts
        WHERE campaign_id = $1 AND id > $2 AND ($3::text IS NULL OR state = $3)
        ORDER BY id
        LIMIT $4";
    pub const CONTACT_EXISTS: &str = "SELECT id FROM contacts WHERE id = $1";
    pub const CONTACT_DEFER: &str =
        "UPDATE contacts SET due_at = $2 WHERE id = $1 AND state = 'pending'";
    pub const CONTACT_RETRY: &str =
        "UPDATE contacts SET state = 'pending', due_at = $2, last_outcome = $3 WHERE id = $1";
    pub const CONTACT_DONE: &str =
        "UPDATE contacts SET state = 'done', final_outcome = $2, last_outcome = $3 WHERE id = $1";
    pub const CONTACT_HASHES: &str = "SELECT id, number_hash FROM contacts
        WHERE campaign_id = $1 AND id > $2 ORDER BY id LIMIT $3";
    pub const CONTACT_EXISTS_HASH: &str =
        "SELECT 1 AS one FROM contacts WHERE campaign_id = $1 AND number_hash = $2 LIMIT 1";

    /// Claims the contact and opens its attempt in one statement: the row lock of the UPDATE
    /// makes concurrent callers wait, and the loser finds the contact no longer pending.
    pub const ATTEMPT_BEGIN: &str = "WITH claimed AS (
            UPDATE contacts SET state = 'dialing', attempts = attempts + 1
            WHERE id = $1 AND state = 'pending'
            RETURNING campaign_id, number_hash, attempts
        )
        INSERT INTO attempts (campaign_id, contact_id, number_hash, seq, node, state, started_at)
        SELECT campaign_id, $1, number_hash, attempts, $2, 'dialing', $3 FROM claimed
        RETURNING id, seq";
    pub const ATTEMPT_FINISH: &str = "UPDATE attempts
        SET state = 'finished', ended_at = $2, outcome = $3, cause = $4
        WHERE id = $1 AND state = 'dialing'
        RETURNING contact_id, campaign_id, started_at";
    pub const ATTEMPT_STATE: &str = "SELECT state FROM attempts WHERE id = $1";
    pub const ATTEMPT_OUTCOME_COUNTS: &str = "SELECT outcome, COUNT(*) AS n FROM attempts
        WHERE contact_id = $1 AND state = 'finished'
        GROUP BY outcome";
    pub const ATTEMPTS_TO_NUMBER_SINCE: &str = "SELECT COUNT(*) AS n FROM attempts
        WHERE number_hash = $1 AND started_at >= $2";
    pub const ATTEMPTS_OPEN: &str = "SELECT id, contact_id, campaign_id, seq, started_at, node
        FROM attempts WHERE ended_at IS NULL ORDER BY id";
    /// An attempt with its CDR (filed under the attempt's start: one partition is read).
    pub const ATTEMPT_COLUMNS: &str = "SELECT a.id, a.campaign_id, a.contact_id, a.seq, a.node,
               a.started_at, a.ended_at, a.outcome, a.cause, c.cdr
        FROM attempts a
        LEFT JOIN cdrs c ON c.attempt_id = a.id AND c.started_at = a.started_at";
    pub const ATTEMPTS_LIST: &str = "SELECT a.id, a.campaign_id, a.contact_id, a.seq, a.node,
               a.started_at, a.ended_at, a.outcome, a.cause, c.cdr
        FROM attempts a
        LEFT JOIN cdrs c ON c.attempt_id = a.id AND c.started_at = a.started_at
        WHERE a.campaign_id = $1 AND a.id > $2
        ORDER BY a.id
        LIMIT $3";
    pub const ATTEMPTS_BY_HOUR: &str = "SELECT (started_at / 3600000) * 3600000 AS hour,
               COALESCE(outcome, 'in_progress') AS outcome, COUNT(*) AS n
        FROM attempts
        WHERE campaign_id = $1
        GROUP BY 1, 2
        ORDER BY 1, 2";

    pub const CONTACTS_UNFINISHED: &str =
        "SELECT COUNT(*) AS n FROM contacts WHERE campaign_id = $1 AND state <> 'done'";
    pub const CONTACTS_DUE_BACKLOG: &str = "SELECT COUNT(*) AS n, MIN(c.due_at) AS oldest
        FROM campaigns k
        JOIN contacts c ON c.campaign_id = k.id AND c.state = 'pending' AND c.due_at <= $1
        WHERE k.status = 'running'";
    pub const CONTACTS_NEXT_DUE: &str = "SELECT MIN(due_at) AS due_at FROM contacts
        WHERE campaign_id = $1 AND state = 'pending'";
    pub const COUNTS_CONTACTS_BY_STATE: &str = "SELECT state AS name, COUNT(*) AS n
        FROM contacts WHERE campaign_id = $1 GROUP BY state";
    pub const COUNTS_FINAL_OUTCOMES: &str = "SELECT final_outcome AS name, COUNT(*) AS n
        FROM contacts
        WHERE campaign_id = $1 AND state = 'done' AND final_outcome IS NOT NULL
        GROUP BY final_outcome";
    pub const COUNTS_ATTEMPT_OUTCOMES: &str = "SELECT outcome AS name, COUNT(*) AS n
        FROM attempts
        WHERE campaign_id = $1 AND state = 'finished' AND outcome IS NOT NULL
        GROUP BY outcome";
    pub const COUNTS_BY_PROVINCE: &str = "SELECT COALESCE(province, 'unknown') AS name,
               COUNT(*) AS n
        FROM contacts WHERE campaign_id = $1 GROUP BY COALESCE(province, 'unknown')";
    pub const COUNTS_ATTEMPTS_TOTAL: &str =
        "SELECT COUNT(*) AS n FROM attempts WHERE campaign_id = $1";

    pub const BLACKLIST_INSERT: &str = "INSERT INTO blacklist
        (campaign_id, kind, number_hash, number_enc, prefix, label, reason, source, expires_at,
         created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    pub const BLACKLIST_LIST_ALL: &str = "SELECT id, campaign_id, kind, number_hash, number_enc,
               prefix, label, reason, source, expires_at, created_at
        FROM blacklist ORDER BY id";
    pub const BLACKLIST_LIST_ACTIVE: &str = "SELECT id, campaign_id, kind, number_hash,
               number_enc, prefix, label, reason, source, expires_at, created_at
        FROM blacklist
        WHERE (campaign_id IS NULL OR campaign_id = $1) AND (expires_at IS NULL OR expires_at > $2)
        ORDER BY id";
    pub const BLACKLIST_DELETE: &str = "DELETE FROM blacklist WHERE id = $1";
    pub const BLACKLIST_MATCH: &str = "SELECT id, campaign_id, kind, number_hash, number_enc,
               prefix, label, reason, source, expires_at, created_at
        FROM blacklist
        WHERE (campaign_id IS NULL OR campaign_id = $1)
          AND (expires_at IS NULL OR expires_at > $4)
          AND (number_hash = $2 OR (prefix IS NOT NULL AND starts_with($3, prefix)))
        ORDER BY id
        LIMIT 1";

    pub const NUMBER_STATUS_UPSERT: &str = "INSERT INTO number_status
        (number_hash, status, last_outcome, attempts, answered, updated_at)
        VALUES ($1, COALESCE($2, 'unknown'), $3, 1, $4, $5)
        ON CONFLICT (number_hash) DO UPDATE SET
            status = COALESCE($2, number_status.status),
            last_outcome = $3,
            attempts = number_status.attempts + 1,
            answered = number_status.answered + $4,
            updated_at = $5";
    pub const NUMBER_STATUS_GET: &str = "SELECT status, last_outcome, attempts, answered,
               updated_at
        FROM number_status WHERE number_hash = $1 AND updated_at >= $2";
    pub const NUMBERS_WITH_STATUS: &str = "SELECT number_hash FROM number_status
        WHERE status = $1 AND updated_at >= $2 AND number_hash > $3
        ORDER BY number_hash
        LIMIT $4";

    pub const ERASE_RECORDINGS: &str = "SELECT c.cdr ->> 'recording' AS recording
        FROM attempts a
        JOIN cdrs c ON c.attempt_id = a.id AND c.started_at = a.started_at
        WHERE a.number_hash = $1 AND c.cdr ->> 'recording' IS NOT NULL
        ORDER BY a.id";
    pub const ERASE_CONTACTS: &str = "UPDATE contacts
        SET number_hash = uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
            number_enc = ''::bytea,
            masked = '[erased]',
            variables = '{}',
            final_outcome = CASE WHEN state = 'done' THEN final_outcome ELSE 'blocked' END,
            state = 'done'
        WHERE number_hash = $1";
    pub const ERASE_CDRS: &str = "UPDATE cdrs c
        SET cdr = jsonb_set(jsonb_set(c.cdr, '{callee}', '\"[erased]\"'), '{recording}', 'null')
        FROM attempts a
        WHERE a.number_hash = $1 AND c.attempt_id = a.id AND c.started_at = a.started_at";
    pub const ERASE_ATTEMPTS: &str = "UPDATE attempts
        SET number_hash = uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())
        WHERE number_hash = $1";
    pub const ERASE_NUMBER_STATUS: &str = "DELETE FROM number_status WHERE number_hash = $1";

    pub const SEALED_CONTACTS: &str = "SELECT id, number_enc FROM contacts
        WHERE id > $1 AND length(number_enc) > 0 ORDER BY id LIMIT $2";
    pub const SEALED_BLACKLIST: &str = "SELECT id, number_enc FROM blacklist
        WHERE id > $1 AND number_enc IS NOT NULL ORDER BY id LIMIT $2";
    pub const RESEAL_CONTACT: &str = "UPDATE contacts SET number_enc = $2 WHERE id = $1";
    pub const RESEAL_BLACKLIST: &str = "UPDATE blacklist SET number_enc = $2 WHERE id = $1";

    /// Migrations of one schema at a time (`current_schema()` keys the lock).
    pub const MIGRATE_LOCK: &str =
        "SELECT pg_advisory_lock(hashtextextended('outcall.migrate.' || COALESCE(current_schema(), ''), 0))";
    pub const MIGRATE_UNLOCK: &str =
        "SELECT pg_advisory_unlock(hashtextextended('outcall.migrate.' || COALESCE(current_schema(), ''), 0))";
    pub const SCHEMA_EXISTS: &str = "SELECT 1 AS one FROM pg_namespace WHERE nspname = $1";
}

/// The migrations of `migrations/postgres`, in version order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../migrations/postgres/0001_core.sql"),
    ),
    (
        2,
        "access",
        include_str!("../migrations/postgres/0002_access.sql"),
    ),
    (
        3,
        "outbox_events",
        include_str!("../migrations/postgres/0003_outbox_events.sql"),
    ),
    (
        4,
        "cdrs",
        include_str!("../migrations/postgres/0004_cdrs.sql"),
    ),
];

/// Contacts per INSERT statement of [`Store::add_contacts`].
const CONTACT_CHUNK: usize = 10_000;

/// How to connect.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (16).
    pub max_connections: u32,
    /// How long a query waits for a free connection, or for the first connection at start (30 s).
    pub acquire_timeout: Duration,
    /// Monthly CDR partitions created at connect beyond the current month (3).
    pub cdr_months_ahead: u32,
    /// Keep every table in this schema (created if missing) instead of the database's default
    /// `search_path`: letters, digits and `_`, not starting with a digit, at most 63 bytes.
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            cdr_months_ahead: 3,
            schema: None,
        }
    }
}

/// The PostgreSQL implementation of [`Store`]. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Monthly CDR partitions kept ready beyond the current month.
    months_ahead: u32,
    /// Months known to have a CDR partition (created or seen by this process). Another node's
    /// retention may drop one: an insert that finds it missing creates it again.
    partitions: Arc<Mutex<HashSet<Month>>>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`), migrates the schema
    /// and creates the CDR partitions of the current month and `opts.cdr_months_ahead` more.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let mut pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout);
        if let Some(schema) = &opts.schema {
            check_schema_name(schema)?;
            let set: Arc<str> = format!("SET search_path TO \"{schema}\"").into();
            pool = pool.after_connect(move |conn, _meta| {
                let set = set.clone();
                Box::pin(async move {
                    // The name was checked: letters, digits and `_` only.
                    conn.execute(AssertSqlSafe(&*set)).await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(connect).await.map_err(|e| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                redacted(url)
            ))
        })?;
        if let Some(schema) = &opts.schema {
            create_schema(&pool, schema).await?;
        }
        migrate(&pool).await?;
        let store = PgStore {
            pool,
            months_ahead: opts.cdr_months_ahead,
            partitions: Arc::default(),
        };
        store
            .ensure_cdr_partitions(Timestamp::now(), opts.cdr_months_ahead)
            .await?;
        Ok(store)
    }

    /// [`PgStore::connect`] with every table in `schema` (created if missing): each pooled
    /// connection runs `SET search_path TO <schema>` when it opens.
    pub async fn connect_schema(url: &str, schema: &str, opts: PgOptions) -> Result<PgStore> {
        PgStore::connect(
            url,
            PgOptions {
                schema: Some(schema.to_string()),
                ..opts
            },
        )
        .await
    }

    /// The pool (for health checks and maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the schema unless it exists (two nodes starting together may both try).
async fn create_schema(pool: &PgPool, schema: &str) -> Result<()> {
    let exists = sqlx::query(q::SCHEMA_EXISTS)
        .bind(schema)
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .is_some();
    if exists {
        return Ok(());
    }
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    match pool.execute(AssertSqlSafe(create)).await {
        Ok(_) => Ok(()),
        // Created by someone else between the check and the statement.
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create schema {schema}: {e}"
        ))),
    }
}

/// Applies the migrations not yet applied, one migrator per schema at a time.
async fn migrate(pool: &PgPool) -> Result<()> {
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
    let mut migrator = Migrator::with_migrations(migrations);
    // sqlx's own lock is per database; this one is per schema.
    migrator.set_locking(false);
    let mut conn = pool.acquire().await.map_err(db)?;
    sqlx::query(q::MIGRATE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let ran = migrator.run(&mut *conn).await;
    if sqlx::query(q::MIGRATE_UNLOCK)
        .execute(&mut *conn)
        .await
        .is_err()
    {
        // Never hand back a connection that may still hold the lock.
        conn.close_on_drop();
    }
    ran.map_err(|e| StoreError::Database(format!("PostgreSQL migration: {e}")))
}

fn check_schema_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "schema name `{name}`: use letters, digits and `_` (not starting with a digit), \
             at most 63 bytes"
        )))
    }
}

/// A URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// An INTEGER column that cannot be negative.
fn u32_col(row: &PgRow, name: &str) -> Result<u32> {
    let v: i32 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {name}: {v} out of range")))
}

/// A BIGINT count.
fn u64_col(row: &PgRow, name: &str) -> Result<u64> {
    let v: i64 = col(row, name)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {name}: {v} out of range")))
}

fn ts_col(row: &PgRow, name: &str) -> Result<Timestamp> {
    ts(col(row, name)?)
}

fn opt_ts_col(row: &PgRow, name: &str) -> Result<Option<Timestamp>> {
    col::<Option<i64>>(row, name)?.map(ts).transpose()
}

/// A JSONB column into its type.
fn json_col<T: serde::de::DeserializeOwned>(row: &PgRow, name: &str) -> Result<T> {
    Ok(col::<Json<T>>(row, name)?.0)
}

fn outcome(s: &str) -> Result<Outcome> {
    s.parse::<Outcome>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn opt_outcome(s: Option<String>) -> Result<Option<Outcome>> {
    s.as_deref().map(outcome).transpose()
}

fn campaign_status(s: &str) -> Result<CampaignStatus> {
    CampaignStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown campaign status `{s}`")))
}

fn campaign_row(row: &PgRow) -> Result<Campaign> {
    let status: String = col(row, "status")?;
    Ok(Campaign {
        id: col(row, "id")?,
        status: campaign_status(&status)?,
        spec: json_col(row, "spec")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

fn contact_row(row: &PgRow) -> Result<ContactRecord> {
    let state: String = col(row, "state")?;
    Ok(ContactRecord {
        id: col(row, "id")?,
        campaign_id: col(row, "campaign_id")?,
        number_hash: col(row, "number_hash")?,
        number_enc: col(row, "number_enc")?,
        masked: col(row, "masked")?,
        time_zone: col(row, "time_zone")?,
        priority: col(row, "priority")?,
        variables: json_col(row, "variables")?,
        state: ContactState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown contact state `{state}`")))?,
        due_at: ts_col(row, "due_at")?,
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

fn attempt_row(row: &PgRow) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        id: col(row, "id")?,
        campaign_id: col(row, "campaign_id")?,
        contact_id: col(row, "contact_id")?,
        seq: u32_col(row, "seq")?,
        node: col(row, "node")?,
        started_at: ts_col(row, "started_at")?,
        ended_at: opt_ts_col(row, "ended_at")?,
        outcome: opt_outcome(col(row, "outcome")?)?,
        cause: col(row, "cause")?,
        cdr: col::<Option<Json<Cdr>>>(row, "cdr")?.map(|j| j.0),
    })
}

/// `name, n` rows into a map.
fn name_counts(rows: &[PgRow]) -> Result<BTreeMap<String, u64>> {
    rows.iter()
        .map(|r| Ok((col::<String>(r, "name")?, u64_col(r, "n")?)))
        .collect()
}

fn blacklist_row(r: &PgRow) -> Result<BlacklistRecord> {
    Ok(BlacklistRecord {
        id: col(r, "id")?,
        campaign_id: col(r, "campaign_id")?,
        kind: col(r, "kind")?,
        number_hash: col(r, "number_hash")?,
        number_enc: col(r, "number_enc")?,
        prefix: col(r, "prefix")?,
        label: col(r, "label")?,
        reason: col(r, "reason")?,
        source: col(r, "source")?,
        expires_at: opt_ts_col(r, "expires_at")?,
        created_at: ts_col(r, "created_at")?,
    })
}

/// Column vectors of a chunk of contacts, bound as arrays.
#[derive(Default)]
struct ContactColumns<'a> {
    number_hash: Vec<&'a [u8]>,
    number_enc: Vec<&'a [u8]>,
    masked: Vec<&'a str>,
    time_zone: Vec<Option<&'a str>>,
    priority: Vec<i32>,
    variables: Vec<String>,
    province: Vec<Option<&'a str>>,
    city: Vec<Option<&'a str>>,
    carrier: Vec<Option<&'a str>>,
    trace_id: Vec<Option<&'a str>>,
}

impl<'a> ContactColumns<'a> {
    fn of(contacts: &'a [NewContact]) -> Self {
        let mut c = ContactColumns::default();
        for n in contacts {
            c.number_hash.push(&n.number_hash);
            c.number_enc.push(&n.number_enc);
            c.masked.push(&n.masked);
            c.time_zone.push(n.time_zone.as_deref());
            c.priority.push(n.priority);
            c.variables.push(n.variables.to_string());
            c.province.push(n.region.province.as_deref());
            c.city.push(n.region.city.as_deref());
            c.carrier.push(n.region.carrier.as_deref());
            c.trace_id.push(n.trace_id.as_deref());
        }
        c
    }
}

/// What closing an attempt did, or the month whose CDR partition turned out missing (dropped by
/// another node since this one saw it): the whole transaction is tried again.
enum Finish {
    Done,
    NoPartition(Month),
}

impl PgStore {
    /// One try of [`Store::finish_attempt`], in one transaction.
    async fn finish_once(
        &self,
        attempt: AttemptId,
        outcome: Outcome,
        cause: Option<&str>,
        cdr: Option<&Cdr>,
        next: ContactNext,
        now: Timestamp,
    ) -> Result<Finish> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        let mut created = None;
        if let Some(cdr) = cdr {
            let started_at = ts_col(&closed, "started_at")?;
            let month = Month::of(started_at);
            if !self.knows(month) {
                cdrs::ensure_partition_in(&mut tx, month).await?;
                created = Some(month);
            }
            let row = CdrRow {
                attempt_id: attempt,
                campaign_id: col(&closed, "campaign_id")?,
                started_at,
                cdr: cdr.clone(),
            };
            match cdrs::insert_one(&mut tx, &row).await {
                Ok(()) => {}
                Err(e) if cdrs::is_missing_partition(&e) => return Ok(Finish::NoPartition(month)),
                Err(e) => return Err(db(e)),
            }
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
        if let Some(month) = created {
            self.learn(month);
        }
        Ok(Finish::Done)
    }

    /// Attempts matching a filter; the SQL names only the filters given, so each shape of query
    /// gets a plan that uses its index.
    async fn attempts_matching(&self, f: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        let mut b = QueryBuilder::<Postgres>::new(q::ATTEMPT_COLUMNS);
        b.push(" WHERE a.id > ").push_bind(f.after);
        if let Some(c) = f.campaign_id {
            b.push(" AND a.campaign_id = ").push_bind(c);
        }
        if let Some(o) = f.outcome {
            b.push(" AND a.outcome = ").push_bind(o.as_str());
        }
        if let Some(h) = &f.number_hash {
            b.push(" AND a.number_hash = ").push_bind(h.as_slice());
        }
        if let Some(t) = f.since {
            b.push(" AND a.started_at >= ").push_bind(ms(t));
        }
        if let Some(t) = f.until {
            b.push(" AND a.started_at < ").push_bind(ms(t));
        }
        b.push(" ORDER BY a.id LIMIT ")
            .push_bind(i64::from(f.limit.clamp(1, 10_000)));
        let rows = b.build().fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(attempt_row).collect()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_trunk(&self, trunk: &TrunkRecord) -> Result<()> {
        sqlx::query(q::TRUNK_UPSERT)
            .bind(&trunk.name)
            .bind(&trunk.config)
            .execute(&self.pool)
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
                Ok(TrunkRecord {
                    name: col(r, "name")?,
                    config: col(r, "config")?,
                })
            })
            .collect()
    }

    async fn create_campaign(&self, spec: &CampaignSpec, now: Timestamp) -> Result<Campaign> {
        let now = ms(now);
        let mut tx = self.pool.begin().await.map_err(db)?;
        campaign_admin::require_pool(&mut tx, spec).await?;
        let id: CampaignId = sqlx::query_scalar(q::CAMPAIGN_INSERT)
            .bind(&spec.name)
            .bind(CampaignStatus::Draft.as_str())
            .bind(Json(spec))
            .bind(spec.priority)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Campaign {
            id,
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
        let row = sqlx::query(q::CAMPAIGN_SET_STATUS)
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if let Some(row) = row {
            return campaign_row(&row);
        }
        let actual: Option<String> = sqlx::query_scalar(q::CAMPAIGN_STATUS)
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut added = 0u64;
        for chunk in contacts.chunks(CONTACT_CHUNK) {
            let c = ContactColumns::of(chunk);
            added += sqlx::query(q::CONTACTS_INSERT)
                .bind(campaign)
                .bind(ms(now))
                .bind(c.number_hash)
                .bind(c.number_enc)
                .bind(c.masked)
                .bind(c.time_zone)
                .bind(c.priority)
                .bind(c.variables)
                .bind(c.province)
                .bind(c.city)
                .bind(c.carrier)
                .bind(c.trace_id)
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

    async fn contact_hashes(
        &self,
        campaign: CampaignId,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, Vec<u8>)>> {
        let rows = sqlx::query(q::CONTACT_HASHES)
            .bind(campaign)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((col(r, "id")?, col(r, "number_hash")?)))
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

    async fn defer_contact(&self, id: ContactId, due_at: Timestamp) -> Result<()> {
        let changed = sqlx::query(q::CONTACT_DEFER)
            .bind(id)
            .bind(ms(due_at))
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if changed == 0 {
            let exists: Option<i64> = sqlx::query_scalar(q::CONTACT_EXISTS)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "contact",
                    id,
                });
            }
        }
        Ok(())
    }

    async fn begin_attempt(
        &self,
        contact: ContactId,
        node: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptStart>> {
        let row = sqlx::query(q::ATTEMPT_BEGIN)
            .bind(contact)
            .bind(node)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(AttemptStart {
                attempt_id: col(&r, "id")?,
                seq: u32_col(&r, "seq")?,
            })
        })
        .transpose()
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
        match self
            .finish_once(attempt, outcome, cause, cdr, next, now)
            .await?
        {
            Finish::Done => Ok(()),
            Finish::NoPartition(month) => {
                self.forget(month);
                match self
                    .finish_once(attempt, outcome, cause, cdr, next, now)
                    .await?
                {
                    Finish::Done => Ok(()),
                    Finish::NoPartition(month) => Err(StoreError::Database(format!(
                        "the CDR partition {} is still missing after it was created",
                        month.name()
                    ))),
                }
            }
        }
    }

    async fn insert_cdrs(&self, batch: &[CdrRow]) -> Result<u64> {
        self.cdr_insert_batch(batch).await
    }

    async fn count_cdrs(&self, campaign: Option<CampaignId>) -> Result<u64> {
        self.cdr_count(campaign).await
    }

    async fn purge_cdrs_before(&self, cutoff: Timestamp) -> Result<CdrPurge> {
        let dropped_partitions = self.drop_cdr_partitions_before(cutoff).await?;
        // The same periodic pass keeps the coming months' partitions ready.
        self.ensure_cdr_partitions(Timestamp::now(), self.months_ahead)
            .await?;
        Ok(CdrPurge {
            deleted: 0,
            dropped_partitions,
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
                let n = u64_col(r, "n")?;
                Ok((outcome(&name)?, u32::try_from(n).unwrap_or(u32::MAX)))
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
        Ok(u32::try_from(u64_col(&row, "n")?).unwrap_or(u32::MAX))
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
                    started_at: ts_col(r, "started_at")?,
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

    async fn next_due(&self, campaign: CampaignId) -> Result<Option<Timestamp>> {
        let row = sqlx::query(q::CONTACTS_NEXT_DUE)
            .bind(campaign)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        opt_ts_col(&row, "due_at")
    }

    async fn due_backlog(&self, now: Timestamp) -> Result<(u64, Option<Timestamp>)> {
        let row = sqlx::query(q::CONTACTS_DUE_BACKLOG)
            .bind(ms(now))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((u64_col(&row, "n")?, opt_ts_col(&row, "oldest")?))
    }

    async fn campaign_counts(&self, campaign: CampaignId) -> Result<CampaignCounts> {
        // One snapshot for every count.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db)?;
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

    async fn query_attempts(&self, f: &AttemptQuery) -> Result<Vec<AttemptRecord>> {
        self.attempts_matching(f).await
    }

    async fn attempts_by_hour(&self, campaign: CampaignId) -> Result<Vec<HourCount>> {
        let rows = sqlx::query(q::ATTEMPTS_BY_HOUR)
            .bind(campaign)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(HourCount {
                    hour: ts_col(r, "hour")?,
                    outcome: col(r, "outcome")?,
                    attempts: u64_col(r, "n")?,
                })
            })
            .collect()
    }

    async fn add_blacklist(&self, entries: &[NewBlacklistEntry], now: Timestamp) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
            .execute(&self.pool)
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
            .bind(i32::from(outcome.is_answered()))
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn numbers_with_status(
        &self,
        status: &str,
        since: Timestamp,
        after: &[u8],
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(q::NUMBERS_WITH_STATUS)
            .bind(status)
            .bind(ms(since))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| col(r, "number_hash")).collect()
    }

    async fn number_status(
        &self,
        number_hash: &[u8],
        since: Timestamp,
    ) -> Result<Option<NumberStatus>> {
        let row = sqlx::query(q::NUMBER_STATUS_GET)
            .bind(number_hash)
            .bind(ms(since))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let last: String = col(&r, "last_outcome")?;
        Ok(Some(NumberStatus {
            status: col(&r, "status")?,
            last_outcome: outcome(&last)?,
            attempts: u32_col(&r, "attempts")?,
            answered: u32_col(&r, "answered")?,
            updated_at: ts_col(&r, "updated_at")?,
        }))
    }

    async fn erase_number(&self, number_hash: &[u8]) -> Result<EraseResult> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let recordings = sqlx::query_scalar::<_, Option<String>>(q::ERASE_RECORDINGS)
            .bind(number_hash)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .into_iter()
            .flatten()
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
                    id: col(r, "id")?,
                    number_enc: col(r, "number_enc")?,
                })
            })
            .collect()
    }

    async fn reseal_number(&self, table: &'static str, id: i64, number_enc: &[u8]) -> Result<()> {
        let (sql, what) = if table == "contacts" {
            (q::RESEAL_CONTACT, "contact")
        } else {
            (q::RESEAL_BLACKLIST, "blacklist entry")
        };
        let n = sqlx::query(sql)
            .bind(id)
            .bind(number_enc)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound { what, id });
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

    // Webhook outbox (in `postgres/webhook.rs`).
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

    // Changing and deleting campaigns, caller-ID pools (in `postgres/campaign_admin.rs`).
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
