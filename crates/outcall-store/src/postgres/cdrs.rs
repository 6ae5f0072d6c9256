//! CDRs on PostgreSQL: the monthly partitions of `cdrs` and batched inserts.
//!
//! A CDR is filed under its attempt's start: `(attempt_id, started_at)` is the key, and
//! `started_at` (with the campaign) is taken from the attempt row whenever the attempt is known,
//! whatever the caller says, so the same attempt's CDR always lands on the same key and
//! `ON CONFLICT DO NOTHING` stores it once. A CDR of an attempt not known yet keeps the
//! caller's start and campaign.
//!
//! Partitions are named `cdrs_yYYYYmMM` and cover one calendar month (UTC) of `started_at`
//! (milliseconds). They are created ahead ([`PgStore::ensure_cdr_partitions`]) and, for any
//! other month, on demand before a CDR of that month is written; creation and retention take one
//! advisory lock per schema, so nodes never race to create or drop the same partition. There is
//! no DEFAULT partition: every row is in its month's partition, and retention
//! ([`PgStore::drop_cdr_partitions_before`]) detaches and drops whole months.
//!
//! A batch is one `INSERT … SELECT FROM UNNEST(…)` (arrays bound as parameters, JSONB encoded by
//! the client). Against COPY into a temporary table and one INSERT from it (the ignored test
//! `cdr_ingest_throughput` in `tests/postgres.rs`), it wrote about twice as many rows per second
//! in batches of 1,000 and was within 10 % in batches of 10,000, with no per-connection state.

use super::{db, ms, PgStore};
use crate::{CdrRow, Result, StoreError};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use outcall_domain::campaign::CampaignId;
use outcall_domain::Cdr;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Executor, Postgres, Row, Transaction};
use std::collections::BTreeSet;

mod q {
    /// Partition creation and retention, one at a time per schema (until the transaction ends).
    pub const PARTITION_LOCK: &str = "SELECT pg_advisory_xact_lock(
        hashtextextended('outcall.cdr_partitions.' || COALESCE(current_schema(), ''), 0))";
    pub const PARTITION_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL AS found";
    pub const PARTITIONS: &str = "SELECT c.relname::text AS name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'cdrs'::regclass
        ORDER BY c.relname";
    /// The starts a batch files its CDRs under (its attempts' when they are known).
    pub const MONTHS_OF: &str = "SELECT DISTINCT COALESCE(a.started_at, u.started_at)
        FROM UNNEST($1::int8[], $2::int8[]) AS u(attempt_id, started_at)
        LEFT JOIN attempts a ON a.id = u.attempt_id";
    /// The whole batch in one statement, each CDR filed under its attempt when the attempt is
    /// known; the first of two rows for one attempt wins.
    pub const INSERT_BATCH: &str = "INSERT INTO cdrs
        (attempt_id, campaign_id, started_at, outcome, sip_status, cdr)
        SELECT u.attempt_id, COALESCE(a.campaign_id, u.campaign_id),
               COALESCE(a.started_at, u.started_at), u.outcome, u.sip_status, u.cdr
        FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int4[], $6::jsonb[])
             WITH ORDINALITY AS u(attempt_id, campaign_id, started_at, outcome, sip_status, cdr, n)
        LEFT JOIN attempts a ON a.id = u.attempt_id
        ORDER BY u.n
        ON CONFLICT DO NOTHING";
    /// One CDR when its attempt closes; one stored under another start (a CDR that came
    /// before its attempt row) counts too.
    pub const INSERT_ONE: &str = "INSERT INTO cdrs
        (attempt_id, campaign_id, started_at, outcome, sip_status, cdr)
        SELECT $1, $2, $3, $4, $5, $6
        WHERE NOT EXISTS (SELECT 1 FROM cdrs WHERE attempt_id = $1)
        ON CONFLICT DO NOTHING";
    pub const COUNT_ALL: &str = "SELECT COUNT(*) AS n FROM cdrs";
    pub const COUNT_CAMPAIGN: &str = "SELECT COUNT(*) AS n FROM cdrs WHERE campaign_id = $1";
}

/// A calendar month (UTC), counted from January of year 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Month(i32);

impl Month {
    pub(super) fn of(t: Timestamp) -> Month {
        let d = t.to_zoned(TimeZone::UTC).date();
        Month(i32::from(d.year()) * 12 + i32::from(d.month()) - 1)
    }

    fn year(self) -> i32 {
        self.0.div_euclid(12)
    }

    fn month(self) -> i32 {
        self.0.rem_euclid(12) + 1
    }

    fn next(self) -> Month {
        Month(self.0 + 1)
    }

    /// The partition's name: `cdrs_y2026m01`.
    pub(super) fn name(self) -> String {
        format!("cdrs_y{:04}m{:02}", self.year(), self.month())
    }

    /// The month of a partition name this store gave; `None` for any other name.
    fn parse(name: &str) -> Option<Month> {
        let (y, m) = name.strip_prefix("cdrs_y")?.split_once('m')?;
        let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
        let month = (1..=12).contains(&m).then_some(Month(y * 12 + m - 1))?;
        (month.name() == name).then_some(month)
    }

    /// Its first instant; `None` outside the range of timestamps.
    fn start(self) -> Option<Timestamp> {
        let year = i16::try_from(self.year()).ok()?;
        let month = i8::try_from(self.month()).ok()?;
        let day = jiff::civil::Date::new(year, month, 1).ok()?;
        day.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
    }

    /// `FROM (…) TO (…)` of its partition, in milliseconds (open-ended at the range's edges).
    fn bounds(self) -> (String, String) {
        let from = self
            .start()
            .map_or_else(|| "MINVALUE".to_string(), |t| ms(t).to_string());
        let to = self
            .next()
            .start()
            .map_or_else(|| "MAXVALUE".to_string(), |t| ms(t).to_string());
        (from, to)
    }
}

/// A monthly partition of `cdrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrPartition {
    /// `cdrs_y2026m01`.
    pub name: String,
    /// Its first instant (the month's start, UTC).
    pub from: Timestamp,
    /// The next month's start (`None` at the end of the range of timestamps).
    pub until: Option<Timestamp>,
}

/// Whether an insert failed because no partition holds the row's month.
pub(super) fn is_missing_partition(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().as_deref() == Some("23514") && d.message().contains("no partition"))
}

/// Creates the month's partition unless it exists, in `tx` (the creation commits with it).
/// Returns whether it created one.
pub(super) async fn ensure_partition_in(
    tx: &mut Transaction<'static, Postgres>,
    month: Month,
) -> Result<bool> {
    let name = month.name();
    sqlx::query(q::PARTITION_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    let found: bool = sqlx::query_scalar(q::PARTITION_EXISTS)
        .bind(format!("\"{name}\""))
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    if found {
        return Ok(false);
    }
    let (from, to) = month.bounds();
    // The name and the bounds are made here from numbers, never from input.
    let create =
        format!("CREATE TABLE \"{name}\" PARTITION OF cdrs FOR VALUES FROM ({from}) TO ({to})");
    tx.execute(AssertSqlSafe(create)).await.map_err(|e| {
        StoreError::Database(format!("cannot create the CDR partition {name}: {e}"))
    })?;
    Ok(true)
}

/// Writes one CDR unless its attempt has one, in `tx`.
pub(super) async fn insert_one(
    tx: &mut Transaction<'static, Postgres>,
    row: &CdrRow,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(q::INSERT_ONE)
        .bind(row.attempt_id)
        .bind(row.campaign_id)
        .bind(ms(row.started_at))
        .bind(row.cdr.outcome.as_str())
        .bind(row.cdr.sip_status.map(i32::from))
        .bind(Json(&row.cdr))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A batch as column arrays (as the caller gave it), with the months it names.
#[derive(Default)]
struct Columns<'a> {
    attempt_id: Vec<i64>,
    campaign_id: Vec<i64>,
    started_at: Vec<i64>,
    outcome: Vec<&'static str>,
    sip_status: Vec<Option<i32>>,
    cdr: Vec<Json<&'a Cdr>>,
    months: BTreeSet<Month>,
}

impl PgStore {
    pub(super) fn knows(&self, month: Month) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&month)
    }

    pub(super) fn learn(&self, month: Month) {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(month);
    }

    pub(super) fn forget(&self, month: Month) {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&month);
    }

    /// Creates the month's partition unless it exists; `true` when it created it.
    async fn ensure_partition(&self, month: Month) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let created = ensure_partition_in(&mut tx, month).await?;
        tx.commit().await.map_err(|e| {
            StoreError::Database(format!(
                "cannot create the CDR partition {}: {e}",
                month.name()
            ))
        })?;
        self.learn(month);
        Ok(created)
    }

    /// Creates the CDR partitions of the month of `now` and of the `months_ahead` months after
    /// it, those missing; returns the names of those it created. Run at connect; running it
    /// again (daily, say) keeps partitions ahead of time.
    pub async fn ensure_cdr_partitions(
        &self,
        now: Timestamp,
        months_ahead: u32,
    ) -> Result<Vec<String>> {
        let first = Month::of(now);
        let ahead = i32::try_from(months_ahead).unwrap_or(i32::MAX).min(1200);
        let mut created = Vec::new();
        for i in 0..=ahead {
            let month = Month(first.0.saturating_add(i));
            if self.ensure_partition(month).await? {
                created.push(month.name());
            }
        }
        Ok(created)
    }

    /// The monthly partitions of `cdrs`, oldest first (partitions with other names are left
    /// out).
    pub async fn cdr_partitions(&self) -> Result<Vec<CdrPartition>> {
        let names: Vec<String> = sqlx::query_scalar(q::PARTITIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut list: Vec<(Month, CdrPartition)> = names
            .into_iter()
            .filter_map(|name| {
                let month = Month::parse(&name)?;
                let from = month.start()?;
                Some((
                    month,
                    CdrPartition {
                        name,
                        from,
                        until: month.next().start(),
                    },
                ))
            })
            .collect();
        list.sort_by_key(|(m, _)| *m);
        Ok(list.into_iter().map(|(_, p)| p).collect())
    }

    /// Retention: detaches and drops every monthly partition whose month ended at or before
    /// `cutoff` (all its CDRs started before it); returns their names, oldest first. The
    /// attempt rows stay, without their CDRs. Partitions this store did not name are left
    /// alone.
    pub async fn drop_cdr_partitions_before(&self, cutoff: Timestamp) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        for p in self.cdr_partitions().await? {
            if p.until.is_none_or(|end| end > cutoff) {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(db)?;
            sqlx::query(q::PARTITION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let name = &p.name;
            // Names come from the catalog and match this store's pattern (checked by parse).
            let detach = format!("ALTER TABLE cdrs DETACH PARTITION \"{name}\"");
            let drop = format!("DROP TABLE \"{name}\"");
            for sql in [detach, drop] {
                tx.execute(AssertSqlSafe(sql)).await.map_err(|e| {
                    StoreError::Database(format!("cannot drop the CDR partition {name}: {e}"))
                })?;
            }
            tx.commit().await.map_err(db)?;
            if let Some(month) = Month::parse(name) {
                self.forget(month);
            }
            dropped.push(p.name);
        }
        Ok(dropped)
    }

    /// [`crate::Store::insert_cdrs`]: one statement for the whole batch.
    ///
    /// The partitions of the months the caller gives are made first (when this process has not
    /// seen them); the statement then files each CDR under its attempt's start when the attempt
    /// is known, which is the same month unless the caller's start was off, or the partition
    /// was dropped by another node since: then the months are looked up and made, and the
    /// statement runs again.
    pub(super) async fn cdr_insert_batch(&self, batch: &[CdrRow]) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut c = Columns::default();
        for r in batch {
            c.months.insert(Month::of(r.started_at));
            c.attempt_id.push(r.attempt_id);
            c.campaign_id.push(r.campaign_id);
            c.started_at.push(ms(r.started_at));
            c.outcome.push(r.cdr.outcome.as_str());
            c.sip_status.push(r.cdr.sip_status.map(i32::from));
            c.cdr.push(Json(&r.cdr));
        }
        for month in &c.months {
            if !self.knows(*month) {
                self.ensure_partition(*month).await?;
            }
        }
        match self.insert_columns(&c).await {
            Ok(n) => return Ok(n),
            Err(e) if is_missing_partition(&e) => {}
            Err(e) => return Err(db(e)),
        }
        // Every month the batch files a CDR under, checked in the database.
        let months: Vec<i64> = sqlx::query_scalar(q::MONTHS_OF)
            .bind(&c.attempt_id)
            .bind(&c.started_at)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let months = months
            .into_iter()
            .map(|start| super::ts(start).map(Month::of))
            .collect::<Result<BTreeSet<_>>>()?;
        for month in months {
            self.forget(month);
            self.ensure_partition(month).await?;
        }
        self.insert_columns(&c).await.map_err(db)
    }

    async fn insert_columns(&self, c: &Columns<'_>) -> std::result::Result<u64, sqlx::Error> {
        Ok(sqlx::query(q::INSERT_BATCH)
            .bind(&c.attempt_id)
            .bind(&c.campaign_id)
            .bind(&c.started_at)
            .bind(&c.outcome)
            .bind(&c.sip_status)
            .bind(&c.cdr)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// [`crate::Store::count_cdrs`].
    pub(super) async fn cdr_count(&self, campaign: Option<CampaignId>) -> Result<u64> {
        let row = match campaign {
            None => sqlx::query(q::COUNT_ALL).fetch_one(&self.pool).await,
            Some(c) => {
                sqlx::query(q::COUNT_CAMPAIGN)
                    .bind(c)
                    .fetch_one(&self.pool)
                    .await
            }
        }
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn months_and_their_partitions() {
        let m = Month::of(at("2026-01-31T23:59:59.999Z"));
        assert_eq!(m.name(), "cdrs_y2026m01");
        assert_eq!(Month::of(at("2026-02-01T00:00:00Z")), m.next());
        assert_eq!(
            m.bounds(),
            ("1767225600000".to_string(), "1769904000000".to_string())
        );
        assert_eq!(
            Month::of(at("2026-12-15T00:00:00Z")).next().name(),
            "cdrs_y2027m01"
        );
        assert_eq!(Month::parse("cdrs_y2026m01"), Some(m));
        for other in [
            "cdrs_y2026m13",
            "cdrs_y2026m1",
            "cdrs_2026m01",
            "cdrs_y2026m01x",
            "cdrs",
        ] {
            assert_eq!(Month::parse(other), None, "{other}");
        }
        let last = Month::of(Timestamp::MAX);
        assert_eq!(last.bounds().1, "MAXVALUE");
        assert_eq!(Month::of(Timestamp::MIN).bounds().0, "MINVALUE");
    }
}
