//! What only the PostgreSQL store does: monthly CDR partitions (made ahead, made on demand,
//! dropped by retention), several nodes' pools on one schema racing for the same rows, migrations
//! run once, the audit log refusing changes in the database itself, one schema per pool.
//!
//! Every test runs against the server at `OUTCALL_TEST_POSTGRES_URL`
//! (`postgres://postgres@127.0.0.1:5432/test` by default) in a schema of its own, dropped when
//! the test ends; a test fails when the server cannot be reached.
#![cfg(feature = "postgres")]

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use outcall_domain::campaign::CampaignSpec;
use outcall_domain::{CallState, Cdr, HangupParty, Outcome};
use outcall_store::access::AccessStore;
use outcall_store::postgres::{PgOptions, PgStore};
use outcall_store::{
    CdrRow, ContactNext, NewContact, NewWebhookEvent, Store, StoreError, WebhookStatus,
};
use serde_json::json;
use sqlx::{Connection, Executor, Row};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

fn url() -> String {
    std::env::var("OUTCALL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test, dropped (with everything in it) when the test ends.
struct Schema(String);

impl Schema {
    fn new(tag: &str) -> Schema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Schema(format!("outcall_{tag}_{}_{nanos}", std::process::id()))
    }

    async fn store(&self) -> PgStore {
        self.store_with(PgOptions::default()).await
    }

    async fn store_with(&self, opts: PgOptions) -> PgStore {
        PgStore::connect_schema(&url(), &self.0, opts)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} (OUTCALL_TEST_POSTGRES_URL) is needed for this test: {e}",
                    url()
                )
            })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        // A runtime of its own: the test's may be shutting down.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url()).await?;
                let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn spec(name: &str) -> CampaignSpec {
    serde_json::from_value(json!({ "name": name, "trunks": ["sipp"] })).unwrap()
}

fn contact(n: u32) -> NewContact {
    NewContact {
        number_hash: format!("hash-{n}").into_bytes(),
        number_enc: n.to_be_bytes().to_vec(),
        masked: format!("+86138****{:04}", n % 10_000),
        time_zone: None,
        priority: 0,
        variables: json!({ "n": n }),
        region: Default::default(),
        trace_id: None,
    }
}

fn cdr(n: u64) -> Cdr {
    Cdr {
        attempt_id: n.to_string(),
        trace_id: format!("trace-{n}"),
        call_id: format!("{n}@outcall"),
        trunk: "sipp".into(),
        node: "node-a".into(),
        caller_id: "02150000000".into(),
        callee: "138****5678".into(),
        final_state: CallState::Completed,
        outcome: Outcome::AnsweredHuman,
        sip_status: Some(200),
        q850_cause: Some(16),
        queued_at_ms: Some(1_000),
        dispatched_at_ms: Some(1_005),
        invite_at_ms: Some(1_010),
        ring_at_ms: Some(1_100),
        early_media_at_ms: None,
        answer_at_ms: Some(3_000),
        end_at_ms: Some(9_000 + n),
        setup_ms: Some(90),
        duration_ms: 7_990,
        billsec: 6,
        hangup_by: Some(HangupParty::Remote),
        early_media: false,
        dtmf: "1#".into(),
        recording: None,
        rtp_packets_sent: 300,
        rtp_packets_received: 298,
        rtp_packets_lost: 2,
    }
}

/// A CDR of an attempt the store does not know (`n` above any id a test hands out).
fn orphan(n: i64, campaign: i64, started_at: Timestamp) -> CdrRow {
    CdrRow {
        attempt_id: 1_000_000_000 + n,
        campaign_id: campaign,
        started_at,
        cdr: cdr(n as u64),
    }
}

/// Each partition of `cdrs` holding rows, with how many.
async fn rows_by_partition(s: &PgStore) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT p.relname::text AS name, COUNT(*) AS n
         FROM cdrs c JOIN pg_class p ON p.oid = c.tableoid
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("name"), r.get("n")))
    .collect()
}

/// The partitions attached to `cdrs`, from the catalog.
async fn attached(s: &PgStore) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'cdrs'::regclass",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// A campaign with `n` contacts, their ids in order.
async fn campaign_with(s: &PgStore, name: &str, n: u32, now: Timestamp) -> (i64, Vec<i64>) {
    let id = s.create_campaign(&spec(name), now).await.unwrap().id;
    let batch: Vec<_> = (0..n).map(contact).collect();
    assert_eq!(
        s.add_contacts(id, &batch, now).await.unwrap().added,
        u64::from(n)
    );
    let ids = s
        .list_contacts(id, None, 0, n + 1)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    (id, ids)
}

#[tokio::test]
async fn cdrs_of_two_months_land_in_two_partitions() {
    let schema = Schema::new("months");
    let s = schema.store().await;
    let (id, contacts) = campaign_with(&s, "months", 1, at("2026-03-01T00:00:00Z")).await;
    // One through the attempt's close (March), two through the ingest (March, April).
    let a = s
        .begin_attempt(contacts[0], "node-a", at("2026-03-31T23:59:59.999Z"))
        .await
        .unwrap()
        .unwrap();
    s.finish_attempt(
        a.attempt_id,
        Outcome::AnsweredHuman,
        None,
        Some(&cdr(1)),
        ContactNext::Done {
            outcome: Outcome::AnsweredHuman,
        },
        at("2026-04-01T00:01:00Z"),
    )
    .await
    .unwrap();
    let written = s
        .insert_cdrs(&[
            orphan(2, id, at("2026-03-15T10:00:00Z")),
            orphan(3, id, at("2026-04-01T00:00:00Z")),
        ])
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(
        rows_by_partition(&s).await,
        [
            ("cdrs_y2026m03".to_string(), 2),
            ("cdrs_y2026m04".to_string(), 1)
        ],
        "a CDR is filed under its attempt's start, by calendar month (UTC)"
    );
    let parts = attached(&s).await;
    assert!(parts.contains("cdrs_y2026m03") && parts.contains("cdrs_y2026m04"));
    let listed = s.cdr_partitions().await.unwrap();
    let march = listed.iter().find(|p| p.name == "cdrs_y2026m03").unwrap();
    assert_eq!(
        (march.from, march.until),
        (at("2026-03-01T00:00:00Z"), Some(at("2026-04-01T00:00:00Z")))
    );
    let got = s.list_attempts(id, None, 10).await.unwrap();
    assert_eq!(got[0].cdr.as_ref(), Some(&cdr(1)));
}

#[tokio::test]
async fn partitions_are_made_ahead_and_a_cdr_14_months_ahead_is_stored() {
    let schema = Schema::new("ahead");
    let s = schema.store().await;
    let now = Timestamp::now();
    let month = |t: Timestamp| {
        t.to_zoned(TimeZone::UTC)
            .strftime("cdrs_y%Ym%m")
            .to_string()
    };
    let in_months = |n: i64| {
        now.to_zoned(TimeZone::UTC)
            .checked_add(n.months())
            .unwrap()
            .timestamp()
    };
    let names: Vec<String> = s
        .cdr_partitions()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names,
        (0..=3).map(|i| month(in_months(i))).collect::<Vec<_>>(),
        "the current month and 3 ahead, made at connect"
    );
    assert_eq!(
        s.ensure_cdr_partitions(now, 3).await.unwrap(),
        Vec::<String>::new(),
        "already there"
    );
    // The periodic retention pass keeps them ahead (one went missing here).
    let third = month(in_months(3));
    s.pool()
        .execute(sqlx::AssertSqlSafe(format!("DROP TABLE {third}")))
        .await
        .unwrap();
    assert!(!attached(&s).await.contains(&third));
    s.purge_cdrs_before(at("2000-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(attached(&s).await.contains(&third));

    // 14 months ahead: no partition yet; both paths make it on demand.
    let far = in_months(14);
    assert!(!attached(&s).await.contains(&month(far)));
    let (id, contacts) = campaign_with(&s, "far", 1, now).await;
    let a = s
        .begin_attempt(contacts[0], "node-a", far)
        .await
        .unwrap()
        .unwrap();
    s.finish_attempt(
        a.attempt_id,
        Outcome::AnsweredHuman,
        None,
        Some(&cdr(7)),
        ContactNext::Done {
            outcome: Outcome::AnsweredHuman,
        },
        far,
    )
    .await
    .unwrap();
    assert_eq!(
        s.list_attempts(id, None, 10).await.unwrap()[0].cdr.as_ref(),
        Some(&cdr(7))
    );
    let farther = in_months(15);
    assert_eq!(s.insert_cdrs(&[orphan(1, id, farther)]).await.unwrap(), 1);
    assert_eq!(s.count_cdrs(Some(id)).await.unwrap(), 2);
    let parts = attached(&s).await;
    assert!(parts.contains(&month(far)), "{parts:?}");
    assert!(parts.contains(&month(farther)), "{parts:?}");
}

#[tokio::test]
async fn retention_drops_the_old_month_and_keeps_newer_cdrs() {
    let schema = Schema::new("retention");
    let s = schema.store().await;
    let (id, contacts) = campaign_with(&s, "retention", 2, at("2026-01-01T00:00:00Z")).await;
    let mut attempts = Vec::new();
    for (c, when) in contacts
        .iter()
        .zip(["2026-01-20T00:00:00Z", "2026-02-10T00:00:00Z"])
    {
        let a = s
            .begin_attempt(*c, "node-a", at(when))
            .await
            .unwrap()
            .unwrap();
        s.finish_attempt(
            a.attempt_id,
            Outcome::Busy,
            None,
            Some(&cdr(a.attempt_id as u64)),
            ContactNext::Retry { due_at: at(when) },
            at(when),
        )
        .await
        .unwrap();
        attempts.push(a.attempt_id);
    }
    s.insert_cdrs(&[
        orphan(1, id, at("2026-01-31T23:59:59.999Z")),
        orphan(2, id, at("2026-02-01T00:00:00Z")),
        orphan(3, id, at("2026-03-05T00:00:00Z")),
    ])
    .await
    .unwrap();
    assert_eq!(s.count_cdrs(None).await.unwrap(), 5);

    // Mid-February: January ended before the cutoff, February did not.
    let dropped = s
        .drop_cdr_partitions_before(at("2026-02-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(dropped, ["cdrs_y2026m01"]);
    assert_eq!(s.count_cdrs(None).await.unwrap(), 3);
    assert_eq!(
        rows_by_partition(&s).await,
        [
            ("cdrs_y2026m02".to_string(), 2),
            ("cdrs_y2026m03".to_string(), 1)
        ]
    );
    assert!(!attached(&s).await.contains("cdrs_y2026m01"));
    let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass('cdrs_y2026m01')::text")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(gone, None, "detached and dropped");
    // The attempt rows stay; only January's CDR went with its month.
    let listed = s.list_attempts(id, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].cdr, None);
    assert_eq!(listed[1].cdr.as_ref(), Some(&cdr(attempts[1] as u64)));
    assert_eq!(listed[0].outcome, Some(Outcome::Busy));

    // Nothing more to drop; the same cutoff through the trait says which partitions went.
    assert!(s
        .drop_cdr_partitions_before(at("2026-02-15T00:00:00Z"))
        .await
        .unwrap()
        .is_empty());
    let purge = s
        .purge_cdrs_before(at("2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(purge.dropped_partitions, ["cdrs_y2026m02"]);
    assert_eq!(s.count_cdrs(None).await.unwrap(), 1);

    // A late CDR of a dropped month is still stored: its partition is made again.
    assert_eq!(
        s.insert_cdrs(&[orphan(9, id, at("2026-01-10T00:00:00Z"))])
            .await
            .unwrap(),
        1
    );
    assert!(attached(&s).await.contains("cdrs_y2026m01"));
}

#[tokio::test]
async fn a_partition_dropped_by_another_node_is_made_again_on_insert() {
    let schema = Schema::new("stale");
    let a = schema.store().await;
    let b = schema.store().await;
    let (id, contacts) = campaign_with(&a, "stale", 1, at("2026-05-01T00:00:00Z")).await;
    // Node a has written May (and knows its partition); node b's retention drops it.
    a.insert_cdrs(&[orphan(1, id, at("2026-05-02T00:00:00Z"))])
        .await
        .unwrap();
    assert_eq!(
        b.drop_cdr_partitions_before(at("2026-06-01T00:00:00Z"))
            .await
            .unwrap(),
        ["cdrs_y2026m05"]
    );
    // Node a writes May again, through both paths: nothing fails, nothing is lost.
    assert_eq!(
        a.insert_cdrs(&[orphan(2, id, at("2026-05-03T00:00:00Z"))])
            .await
            .unwrap(),
        1
    );
    let start = a
        .begin_attempt(contacts[0], "node-a", at("2026-05-04T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    b.drop_cdr_partitions_before(at("2026-06-01T00:00:00Z"))
        .await
        .unwrap();
    a.finish_attempt(
        start.attempt_id,
        Outcome::AnsweredHuman,
        None,
        Some(&cdr(3)),
        ContactNext::Done {
            outcome: Outcome::AnsweredHuman,
        },
        at("2026-05-04T00:01:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(a.count_cdrs(Some(id)).await.unwrap(), 1);
    assert_eq!(
        a.list_attempts(id, None, 10).await.unwrap()[0].cdr.as_ref(),
        Some(&cdr(3))
    );
}

#[tokio::test]
async fn two_pools_racing_begin_attempt_on_200_contacts_yield_exactly_200_attempts() {
    let schema = Schema::new("race");
    let a = Arc::new(schema.store().await);
    let b = Arc::new(schema.store().await);
    let now = at("2026-06-01T00:00:00Z");
    let (id, contacts) = campaign_with(&a, "race", 200, now).await;
    // Both nodes go for every contact, in opposite orders, many calls in flight.
    let mut tasks = Vec::new();
    for (node, store, order) in [
        ("node-a", a.clone(), contacts.clone()),
        (
            "node-b",
            b.clone(),
            contacts.iter().rev().copied().collect(),
        ),
    ] {
        for c in order {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .begin_attempt(c, node, now)
                    .await
                    .unwrap()
                    .map(|s| (c, s.attempt_id))
            }));
        }
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(w) = t.await.unwrap() {
            won.push(w);
        }
    }
    assert_eq!(won.len(), 200, "one winner per contact");
    let winners: BTreeSet<i64> = won.iter().map(|(c, _)| *c).collect();
    assert_eq!(winners.len(), 200);
    assert_eq!(a.list_attempts(id, None, 1000).await.unwrap().len(), 200);
    assert_eq!(b.open_attempts().await.unwrap().len(), 200);
    for c in a.list_contacts(id, None, 0, 1000).await.unwrap() {
        assert_eq!(c.attempts, 1, "contact {}", c.id);
    }

    // Both nodes close the same attempt: once.
    let (_, attempt) = won[0];
    let close = |s: Arc<PgStore>| async move {
        s.finish_attempt(
            attempt,
            Outcome::Busy,
            None,
            Some(&cdr(1)),
            ContactNext::Retry { due_at: now },
            now,
        )
        .await
    };
    let (x, y) = tokio::join!(close(a.clone()), close(b.clone()));
    let results = [x, y];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(StoreError::Conflict(m)) if m.contains("already finished"))),
        "{results:?}"
    );
    assert_eq!(a.count_cdrs(Some(id)).await.unwrap(), 1);
}

#[tokio::test]
async fn two_dispatchers_never_take_the_same_webhook_delivery() {
    let schema = Schema::new("outbox");
    let a = Arc::new(schema.store().await);
    let b = Arc::new(schema.store().await);
    let now = at("2026-06-01T00:00:00Z");
    for i in 0..300i64 {
        a.enqueue_webhook(&NewWebhookEvent {
            event_id: format!("e{i}"),
            campaign_id: 1,
            attempt_id: i,
            event: "completed".into(),
            url: "https://hooks.example.com/x".into(),
            payload: json!({ "i": i }),
            created_at: now,
            next_attempt_at: now,
        })
        .await
        .unwrap();
    }
    let lease = at("2026-06-01T00:01:00Z");
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let batch = store.take_due_webhooks(now, lease, 7).await.unwrap();
                if batch.is_empty() {
                    break taken;
                }
                taken.extend(batch.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 300, "every delivery taken once");
    assert_eq!(distinct.len(), 300);
    let d = b.get_webhook(all[0]).await.unwrap();
    assert_eq!(
        (d.status, d.next_attempt_at),
        (WebhookStatus::Pending, lease)
    );
}

#[tokio::test]
async fn a_second_connect_runs_no_migration_and_concurrent_first_connects_agree() {
    let schema = Schema::new("migrate");
    // Three nodes start at once on an empty schema: one migrates, the others wait.
    let (x, y, z) = tokio::join!(schema.store(), schema.store(), schema.store());
    let applied = |s: PgStore| async move {
        sqlx::query("SELECT version, checksum, installed_on::text AS at FROM _sqlx_migrations ORDER BY version")
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>("version"),
                    r.get::<Vec<u8>, _>("checksum"),
                    r.get::<String, _>("at"),
                )
            })
            .collect::<Vec<_>>()
    };
    let first = applied(x.clone()).await;
    assert_eq!(
        first.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "every migration once"
    );
    let id = y
        .create_campaign(&spec("kept"), Timestamp::now())
        .await
        .unwrap();
    drop((y, z));
    x.close().await;

    let again = schema.store().await;
    assert_eq!(applied(again.clone()).await, first, "nothing re-applied");
    assert_eq!(again.get_campaign(id.id).await.unwrap(), id);
}

#[tokio::test]
async fn the_audit_log_refuses_changes_except_the_retention_purge() {
    let schema = Schema::new("audit");
    let s = schema.store().await;
    for i in 0..3 {
        s.append_audit(&outcall_store::access::NewAuditEntry {
            at: Timestamp::from_second(1_767_225_600 + i).unwrap(),
            actor: "user:ann".into(),
            action: "auth.login".into(),
            outcome: "ok".into(),
            detail: json!({ "i": i }),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for sql in [
        "UPDATE audit_log SET outcome = 'denied'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = s.pool().execute(sql).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(left, 3);
    assert_eq!(
        s.purge_audit(Timestamp::from_second(1_767_225_602).unwrap())
            .await
            .unwrap(),
        2
    );
    // The purge's permission ended with its transaction.
    assert!(s.pool().execute("DELETE FROM audit_log").await.is_err());
}

#[tokio::test]
async fn every_pooled_connection_works_in_the_schema() {
    let schema = Schema::new("path");
    let s = schema
        .store_with(PgOptions {
            max_connections: 4,
            ..PgOptions::default()
        })
        .await;
    // Four connections held at once: each was opened with the schema's search_path.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(s.pool().acquire().await.unwrap());
    }
    for c in &mut conns {
        let current: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(current, schema.0);
    }
    drop(conns);
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename IN ('contacts', 'attempts', 'cdrs')",
    )
    .bind(&schema.0)
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(tables, 3, "the tables are in the schema, not in public");
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_or_a_bad_schema_is_a_clear_error() {
    let err = PgStore::connect(
        "postgres://outcall:secret@127.0.0.1:1/outcall",
        PgOptions {
            acquire_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL at postgres://outcall:***@127.0.0.1:1/outcall"),
        "{err}"
    );
    assert!(!err.contains("secret"), "no password in messages: {err}");
    let err = PgStore::connect_schema(&url(), "bad name; drop", PgOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema name"), "{err}");
}

/// Throughput of the CDR ingest: `insert_cdrs` (one `INSERT … SELECT FROM UNNEST` per batch)
/// against COPY into a temporary table then one `INSERT … SELECT … ON CONFLICT DO NOTHING`,
/// for batches of 1,000 and 10,000 CDRs of attempts the store knows (what the ingest writes:
/// attempts begun by the schedulers). Run it with
/// `cargo nextest run -p outcall-store --release --test postgres --run-ignored only -E 'test(cdr_ingest_throughput)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn cdr_ingest_throughput() {
    const PER_SIZE: i64 = 100_000;
    let schema = Schema::new("bench");
    let s = schema.store().await;
    let now = Timestamp::now();
    let (campaign, contacts) = campaign_with(&s, "bench", 1, now).await;
    // The attempts, begun over the last 1,000 seconds (two methods, two batch sizes).
    let first: i64 = sqlx::query_scalar(
        "WITH made AS (
             INSERT INTO attempts (campaign_id, contact_id, number_hash, seq, node, state, started_at)
             SELECT $1, $2, decode('00', 'hex'), 1, 'bench', 'dialing', $3 - (g % 1000) * 1000
             FROM generate_series(0, $4 - 1) g
             RETURNING id)
         SELECT MIN(id) FROM made",
    )
    .bind(campaign)
    .bind(contacts[0])
    .bind(now.as_millisecond())
    .bind(4 * PER_SIZE)
    .fetch_one(s.pool())
    .await
    .unwrap();
    let mut next = 0i64;
    let mut batch = |size: i64| {
        let rows: Vec<CdrRow> = (next..next + size)
            .map(|g| CdrRow {
                attempt_id: first + g,
                campaign_id: campaign,
                started_at: Timestamp::from_millisecond(now.as_millisecond() - (g % 1000) * 1000)
                    .unwrap(),
                cdr: cdr(g as u64),
            })
            .collect();
        next += size;
        rows
    };
    for size in [1_000i64, 10_000] {
        let rounds = PER_SIZE / size;
        let mut unnest = Duration::ZERO;
        let mut copy = Duration::ZERO;
        for _ in 0..rounds {
            let rows = batch(size);
            let t = std::time::Instant::now();
            assert_eq!(s.insert_cdrs(&rows).await.unwrap(), size as u64);
            unnest += t.elapsed();
            let rows = batch(size);
            let t = std::time::Instant::now();
            assert_eq!(copy_insert(&s, &rows).await, size as u64);
            copy += t.elapsed();
        }
        let total = (rounds * size) as f64;
        eprintln!(
            "batches of {size}: UNNEST {:.0} rows/s, COPY {:.0} rows/s ({rounds} batches each)",
            total / unnest.as_secs_f64(),
            total / copy.as_secs_f64()
        );
    }
    assert_eq!(s.count_cdrs(Some(campaign)).await.unwrap(), next as u64);
}

/// The COPY way of writing a batch (what `insert_cdrs` was measured against), the same work
/// otherwise: the known attempts looked up (each CDR filed under its attempt), COPY (CSV) into
/// a temporary table, one `INSERT … SELECT … ON CONFLICT DO NOTHING` from it.
async fn copy_insert(s: &PgStore, rows: &[CdrRow]) -> u64 {
    let ids: Vec<i64> = rows.iter().map(|r| r.attempt_id).collect();
    let known: std::collections::HashMap<i64, (i64, i64)> =
        sqlx::query("SELECT id, campaign_id, started_at FROM attempts WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), (r.get("campaign_id"), r.get("started_at"))))
            .collect();
    let mut csv = Vec::with_capacity(rows.len() * 700);
    for r in rows {
        let (campaign, started) = known
            .get(&r.attempt_id)
            .copied()
            .unwrap_or((r.campaign_id, r.started_at.as_millisecond()));
        let json = serde_json::to_string(&r.cdr).unwrap().replace('"', "\"\"");
        let sip = r.cdr.sip_status.map(|s| s.to_string()).unwrap_or_default();
        csv.extend_from_slice(
            format!(
                "{},{campaign},{started},{},{sip},\"{json}\"\n",
                r.attempt_id,
                r.cdr.outcome.as_str(),
            )
            .as_bytes(),
        );
    }
    let mut tx = s.pool().begin().await.unwrap();
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS cdr_copy (attempt_id int8, campaign_id int8,
         started_at int8, outcome text, sip_status int4, cdr jsonb) ON COMMIT DELETE ROWS",
    )
    .await
    .unwrap();
    let mut copy = tx
        .copy_in_raw("COPY cdr_copy FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    copy.send(csv).await.unwrap();
    copy.finish().await.unwrap();
    let n = tx
        .execute("INSERT INTO cdrs SELECT * FROM cdr_copy ON CONFLICT DO NOTHING")
        .await
        .unwrap()
        .rows_affected();
    tx.commit().await.unwrap();
    n
}
