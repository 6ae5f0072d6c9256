//! The behaviour every [`Store`] implementation must have.
//!
//! `store_suite!(backend, async { Fixture::new(store) })` expands to a module `backend` with one
//! `#[tokio::test]` per behaviour; each test builds a fresh store with the expression and runs
//! the matching case of [`cases`], which only speaks the trait. It is invoked below for SQLite
//! in memory, SQLite on a file (WAL), the in-memory store and PostgreSQL (feature `postgres`:
//! the server at `OUTCALL_TEST_POSTGRES_URL`, one fresh schema per test, dropped after it).
//! The last tests (no plaintext number in the database file) are specific to the file backend.

use jiff::Timestamp;
use outcall_domain::campaign::{CampaignSpec, CampaignStatus, ContactState};
use outcall_domain::{CallState, Cdr, HangupParty, Outcome};
use outcall_store::sqlite::SqliteStore;
use outcall_store::{
    AddResult, AttemptStart, ContactNext, NewContact, Store, StoreError, TrunkRecord,
};
use serde_json::json;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A store under test, with whatever must outlive it (a temporary directory, a container).
pub struct Fixture<S: Store> {
    pub store: Arc<S>,
    _guard: Option<Box<dyn Any + Send>>,
}

impl<S: Store> Fixture<S> {
    pub fn new(store: S) -> Self {
        Fixture {
            store: Arc::new(store),
            _guard: None,
        }
    }

    pub fn with_guard(store: S, guard: impl Any + Send) -> Self {
        Fixture {
            store: Arc::new(store),
            _guard: Some(Box::new(guard)),
        }
    }
}

/// One `#[tokio::test]` per case of [`cases`], each on a fresh store built by `$build`.
macro_rules! store_suite {
    ($backend:ident, $build:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            store_suite!(@cases $build;
                trunks_upsert_and_list,
                campaign_round_trips_whole_spec,
                missing_rows_are_not_found,
                campaign_status_is_compare_and_set,
                add_contacts_counts_duplicates,
                due_contacts_by_priority_then_due_time,
                defer_moves_only_pending_contacts,
                begin_attempt_claims_a_contact_once,
                concurrent_begin_attempt_yields_exactly_one,
                finish_attempt_retries_then_finishes,
                finish_attempt_twice_conflicts,
                frequency_counts_across_campaigns,
                open_attempts_lists_only_dialing,
                unfinished_and_next_due,
                due_backlog_counts_running_campaigns,
                campaign_counts_by_state_and_outcome,
                list_attempts_pages_by_cursor,
                query_attempts_filters_and_counts_by_hour,
                list_contacts_pages_and_filters_by_state,
                add_100k_contacts_in_one_call,
                blacklist_exact_prefix_scope_and_expiry,
                number_status_learns_and_ages_out,
                erase_scrubs_contacts_and_cdrs_everywhere,
                sealed_numbers_page_and_reseal,
                contact_hashes_page_and_exist,
                users_create_update_and_conflict,
                api_keys_create_and_revoke,
                audit_appends_filters_and_purges,
                idempotency_key_claimed_once,
                webhook_outbox_takes_due_events_in_order_per_attempt,
                webhook_outbox_retries_gives_up_and_requeues,
                webhook_outbox_lists_by_status_and_campaign_with_cursor,
                webhook_outbox_purges_old_finished_deliveries,
                campaign_spec_update_is_compare_and_set,
                delete_campaign_removes_what_it_owns_in_one_go,
                caller_id_pools_upsert_list_and_delete_unless_used,
                events_append_filter_page_and_purge,
                events_page_size_is_capped_and_bad_severity_refused,
                insert_cdrs_is_idempotent_and_keeps_unknown_attempts,
                cdr_of_finish_attempt_then_insert_cdrs_is_stored_once,
                cdr_inserted_before_finish_shows_after_finish_without_cdr,
                insert_10k_cdrs_in_one_batch,
                purge_cdrs_before_keeps_newer_months,
            );
        }
    };
    (@cases $build:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $build.await;
                super::cases::$case(fixture.store.clone()).await;
            }
        )*
    };
}

store_suite!(sqlite_memory, async {
    Fixture::new(SqliteStore::open_in_memory().await.expect("open in memory"))
});

store_suite!(memory, async {
    Fixture::new(outcall_store::memory::MemoryStore::new())
});

#[cfg(feature = "postgres")]
store_suite!(postgres, async { pg::fixture().await });

/// A PostgreSQL store in a schema of its own, on the test server.
#[cfg(feature = "postgres")]
mod pg {
    use super::Fixture;
    use outcall_store::postgres::{PgOptions, PgStore};
    use sqlx::{Connection, Executor};

    /// The test server: `OUTCALL_TEST_POSTGRES_URL`, else the local one.
    pub fn url() -> String {
        std::env::var("OUTCALL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Drops its schema (and everything in it) when the test ends, passed or failed.
    pub struct Schema(String);

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

    /// A unique schema name for this test process.
    pub fn schema_name(tag: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("outcall_{tag}_{}_{nanos}", std::process::id())
    }

    pub async fn fixture() -> Fixture<PgStore> {
        let name = schema_name("suite");
        let guard = Schema(name.clone());
        let store = PgStore::connect_schema(&url(), &name, PgOptions::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} (OUTCALL_TEST_POSTGRES_URL) is needed for this test: {e}",
                    url()
                )
            });
        Fixture::with_guard(store, guard)
    }
}

store_suite!(sqlite_file, async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("outcall.db"))
        .await
        .expect("open file");
    Fixture::with_guard(store, dir)
});

/// Instants at whole milliseconds (the stores' precision).
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

/// A spec with every field set away from its default.
fn spec(name: &str) -> CampaignSpec {
    serde_json::from_value(json!({
        "name": name,
        "trunks": ["sipp", "backup"],
        "caller_ids": ["02150000000", "02150000001"],
        "prompt": "remind.wav",
        "after_prompt": "stay",
        "dtmf": { "keys": { "1": "confirm", "2": "repeat", "#": "hangup" }, "max_repeats": 2 },
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
        "ring_timeout_secs": 25,
        "max_duration_secs": 90,
        "retry": {
            "rules": { "busy": { "delay_secs": 600, "retries": 3 },
                       "no_answer": { "delay_secs": 7200, "retries": 2 } },
            "max_attempts": 4
        },
        "frequency_caps": [{ "max_calls": 3, "per_secs": 86400 }],
        "record": true
    }))
    .expect("spec")
}

/// A protected contact: blind index and ciphertext are opaque bytes derived from `n`.
fn contact(n: u32, priority: i32) -> NewContact {
    NewContact {
        number_hash: format!("hash-{n}").into_bytes(),
        number_enc: [0xA5, 0x5A]
            .iter()
            .chain(n.to_be_bytes().iter())
            .copied()
            .collect(),
        masked: format!("+86138****{:04}", n % 10_000),
        time_zone: if n % 2 == 1 {
            None
        } else {
            Some("Asia/Shanghai".to_string())
        },
        priority,
        variables: json!({ "name": format!("customer {n}"), "amount": n }),
        region: outcall_store::Region {
            province: (n % 3 != 2).then(|| {
                if n.is_multiple_of(3) {
                    "广东"
                } else {
                    "北京"
                }
                .to_string()
            }),
            city: n.is_multiple_of(3).then(|| "深圳".to_string()),
            carrier: Some("china_mobile".into()),
        },
        trace_id: None,
    }
}

fn cdr(outcome: Outcome, sip_status: Option<u16>) -> Cdr {
    Cdr {
        attempt_id: "a-1".into(),
        trace_id: "t-1".into(),
        call_id: "c-1@outcall".into(),
        trunk: "sipp".into(),
        node: "node-a".into(),
        caller_id: "02150000000".into(),
        callee: "138****5678".into(),
        final_state: CallState::Completed,
        outcome,
        sip_status,
        q850_cause: Some(16),
        queued_at_ms: Some(1_000),
        dispatched_at_ms: None,
        invite_at_ms: Some(1_010),
        ring_at_ms: Some(1_100),
        early_media_at_ms: None,
        answer_at_ms: Some(3_000),
        end_at_ms: Some(9_000),
        setup_ms: Some(90),
        duration_ms: 7_990,
        billsec: 6,
        hangup_by: Some(HangupParty::Local),
        early_media: false,
        dtmf: "1".into(),
        recording: None,
        rtp_packets_sent: 300,
        rtp_packets_received: 298,
        rtp_packets_lost: 2,
    }
}

mod cases {
    pub use super::access_cases::*;
    pub use super::campaign_admin_cases::*;
    pub use super::cdr_cases::*;
    pub use super::event_cases::*;
    pub use super::webhook_cases::*;

    /// A campaign of contacts 0..4: provinces 广东 (0, 3), 北京 (1), none (2).
    async fn id_for_provinces<S: Store>(s: &S) -> i64 {
        let id = campaign(s, "provinces").await;
        let batch: Vec<_> = (0..4).map(|i| contact(i, 0)).collect();
        s.add_contacts(id, &batch, t(0)).await.unwrap();
        let c = s
            .get_contact(s.due_contacts(id, t(0), 10).await.unwrap()[0].id)
            .await
            .unwrap();
        assert_eq!(c.region.province.as_deref(), Some("广东"));
        assert_eq!(c.region.city.as_deref(), Some("深圳"));
        assert_eq!(c.region.carrier.as_deref(), Some("china_mobile"));
        id
    }

    use super::*;

    async fn campaign<S: Store>(s: &S, name: &str) -> i64 {
        s.create_campaign(&spec(name), t(0)).await.unwrap().id
    }

    /// A campaign with `n` contacts (priority 0), returning the campaign and contact ids.
    async fn with_contacts<S: Store>(s: &S, name: &str, n: u32) -> (i64, Vec<i64>) {
        let id = campaign(s, name).await;
        let batch: Vec<_> = (0..n).map(|i| contact(i, 0)).collect();
        assert_eq!(
            s.add_contacts(id, &batch, t(0)).await.unwrap().added,
            u64::from(n)
        );
        let due = s.due_contacts(id, t(0), n + 1).await.unwrap();
        (id, due.iter().map(|c| c.id).collect())
    }

    async fn begin<S: Store>(s: &S, contact: i64, now: Timestamp) -> AttemptStart {
        s.begin_attempt(contact, "node-a", now)
            .await
            .unwrap()
            .expect("contact was pending")
    }

    pub async fn trunks_upsert_and_list<S: Store>(s: Arc<S>) {
        assert!(s.list_trunks().await.unwrap().is_empty());
        let b = TrunkRecord {
            name: "b".into(),
            config: json!({ "host": "10.0.0.2" }),
        };
        let mut a = TrunkRecord {
            name: "a".into(),
            config: json!({ "host": "10.0.0.1" }),
        };
        s.upsert_trunk(&b).await.unwrap();
        s.upsert_trunk(&a).await.unwrap();
        a.config = json!({ "host": "10.0.0.9", "channels": 30 });
        s.upsert_trunk(&a).await.unwrap();
        assert_eq!(s.list_trunks().await.unwrap(), vec![a, b]);
    }

    pub async fn campaign_round_trips_whole_spec<S: Store>(s: Arc<S>) {
        let spec = spec("reminders");
        let created = s.create_campaign(&spec, t(5)).await.unwrap();
        assert_eq!(created.status, CampaignStatus::Draft);
        assert_eq!(created.spec, spec);
        assert_eq!((created.created_at, created.updated_at), (t(5), t(5)));
        let got = s.get_campaign(created.id).await.unwrap();
        assert_eq!(got, created);
        assert_eq!(got.spec.windows.as_ref().unwrap().holidays.len(), 1);
        assert_eq!(got.spec.max_cps, 2.5);
        let other = s
            .create_campaign(&super::spec("second"), t(6))
            .await
            .unwrap();
        assert!(other.id > created.id);
        let all = s.list_campaigns().await.unwrap();
        assert_eq!(all, vec![created, other]);
    }

    pub async fn missing_rows_are_not_found<S: Store>(s: Arc<S>) {
        assert!(matches!(
            s.get_campaign(404).await,
            Err(StoreError::NotFound {
                what: "campaign",
                id: 404
            })
        ));
        assert!(matches!(
            s.get_contact(405).await,
            Err(StoreError::NotFound {
                what: "contact",
                id: 405
            })
        ));
        assert!(matches!(
            s.add_contacts(406, &[contact(1, 0)], t(0)).await,
            Err(StoreError::NotFound {
                what: "campaign",
                id: 406
            })
        ));
        assert!(matches!(
            s.finish_attempt(
                407,
                Outcome::Busy,
                None,
                None,
                ContactNext::Retry { due_at: t(1) },
                t(1)
            )
            .await,
            Err(StoreError::NotFound {
                what: "attempt",
                id: 407
            })
        ));
        assert!(matches!(
            s.defer_contact(408, t(1)).await,
            Err(StoreError::NotFound {
                what: "contact",
                id: 408
            })
        ));
        assert_eq!(s.begin_attempt(409, "node-a", t(0)).await.unwrap(), None);
        assert!(s.open_attempts().await.unwrap().is_empty());
    }

    pub async fn campaign_status_is_compare_and_set<S: Store>(s: Arc<S>) {
        use CampaignStatus as St;
        let id = campaign(&*s, "cas").await;
        let running = s
            .set_campaign_status(id, St::Draft, St::Running, t(10))
            .await
            .unwrap();
        assert_eq!(running.status, St::Running);
        assert_eq!((running.created_at, running.updated_at), (t(0), t(10)));
        assert_eq!(s.get_campaign(id).await.unwrap(), running);

        let err = s
            .set_campaign_status(id, St::Draft, St::Canceled, t(11))
            .await
            .unwrap_err();
        match err {
            StoreError::Conflict(msg) => {
                assert_eq!(msg, format!("campaign {id} is running, not draft"))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            s.get_campaign(id).await.unwrap().status,
            St::Running,
            "unchanged"
        );

        assert!(matches!(
            s.set_campaign_status(999, St::Draft, St::Running, t(12))
                .await,
            Err(StoreError::NotFound {
                what: "campaign",
                id: 999
            })
        ));
        let paused = s
            .set_campaign_status(id, St::Running, St::Paused, t(13))
            .await
            .unwrap();
        assert_eq!(paused.status, St::Paused);
    }

    pub async fn add_contacts_counts_duplicates<S: Store>(s: Arc<S>) {
        let id = campaign(&*s, "dups").await;
        // 1 appears twice in the batch
        let first = vec![contact(1, 0), contact(2, 5), contact(1, 9), contact(3, 0)];
        assert_eq!(
            s.add_contacts(id, &first, t(20)).await.unwrap(),
            AddResult {
                added: 3,
                duplicates: 1
            }
        );
        // 2 and 3 are already there
        let second = vec![contact(2, 0), contact(3, 0), contact(4, 0)];
        assert_eq!(
            s.add_contacts(id, &second, t(30)).await.unwrap(),
            AddResult {
                added: 1,
                duplicates: 2
            }
        );
        assert_eq!(
            s.add_contacts(id, &[], t(30)).await.unwrap(),
            AddResult::default()
        );
        // the same numbers in another campaign are new there
        let other = campaign(&*s, "other").await;
        assert_eq!(
            s.add_contacts(other, &first, t(20)).await.unwrap(),
            AddResult {
                added: 3,
                duplicates: 1
            }
        );

        let due = s.due_contacts(id, t(100), 100).await.unwrap();
        assert_eq!(due.len(), 4);
        let c2 = due.iter().find(|c| c.number_hash == b"hash-2").unwrap();
        let want = contact(2, 5);
        assert_eq!(c2.campaign_id, id);
        assert_eq!(c2.number_enc, want.number_enc);
        assert_eq!(c2.masked, want.masked);
        assert_eq!(c2.time_zone.as_deref(), Some("Asia/Shanghai"));
        assert_eq!(c2.priority, 5);
        assert_eq!(c2.variables, want.variables);
        assert_eq!(c2.state, ContactState::Pending);
        assert_eq!(c2.due_at, t(20));
        assert_eq!(c2.attempts, 0);
        assert_eq!((c2.last_outcome, c2.final_outcome), (None, None));
        let c1 = due.iter().find(|c| c.number_hash == b"hash-1").unwrap();
        assert_eq!(
            (c1.priority, c1.time_zone.clone()),
            (0, None),
            "the first of the batch won"
        );
        let c4 = due.iter().find(|c| c.number_hash == b"hash-4").unwrap();
        assert_eq!(c4.due_at, t(30));
        assert_eq!(&s.get_contact(c2.id).await.unwrap(), c2);
    }

    pub async fn due_contacts_by_priority_then_due_time<S: Store>(s: Arc<S>) {
        let id = campaign(&*s, "order").await;
        let other = campaign(&*s, "noise").await;
        s.add_contacts(other, &[contact(99, 100)], t(0))
            .await
            .unwrap();
        let batch = vec![
            contact(1, 0),
            contact(2, 5),
            contact(3, 5),
            contact(4, 0),
            contact(5, 9),
        ];
        s.add_contacts(id, &batch, t(0)).await.unwrap();
        let all = s.due_contacts(id, t(0), 10).await.unwrap();
        let by_hash = |h: &str| {
            all.iter()
                .find(|c| c.number_hash == h.as_bytes())
                .unwrap()
                .id
        };
        let (c1, c2, c3, c4, c5) = (
            by_hash("hash-1"),
            by_hash("hash-2"),
            by_hash("hash-3"),
            by_hash("hash-4"),
            by_hash("hash-5"),
        );
        // within priority 5, 3 is due before 2; within 0, 1 and 4 share a due time: id order
        s.defer_contact(c2, t(50)).await.unwrap();
        s.defer_contact(c3, t(40)).await.unwrap();
        s.defer_contact(c5, t(500)).await.unwrap();

        let ids =
            |v: Vec<outcall_store::ContactRecord>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.due_contacts(id, t(100), 10).await.unwrap()),
            vec![c3, c2, c1, c4]
        );
        assert_eq!(
            ids(s.due_contacts(id, t(1000), 10).await.unwrap()),
            vec![c5, c3, c2, c1, c4]
        );
        assert_eq!(
            ids(s.due_contacts(id, t(45), 10).await.unwrap()),
            vec![c3, c1, c4]
        );
        assert_eq!(
            ids(s.due_contacts(id, t(1000), 2).await.unwrap()),
            vec![c5, c3]
        );
        assert_eq!(
            ids(s.due_contacts(id, t(40), 10).await.unwrap()),
            vec![c3, c1, c4],
            "at or before"
        );
        // a dialing contact is not due
        begin(&*s, c3, t(100)).await;
        assert_eq!(
            ids(s.due_contacts(id, t(100), 10).await.unwrap()),
            vec![c2, c1, c4]
        );
    }

    pub async fn defer_moves_only_pending_contacts<S: Store>(s: Arc<S>) {
        let (_, ids) = with_contacts(&*s, "defer", 2).await;
        s.defer_contact(ids[0], t(77)).await.unwrap();
        assert_eq!(s.get_contact(ids[0]).await.unwrap().due_at, t(77));
        begin(&*s, ids[1], t(1)).await;
        s.defer_contact(ids[1], t(88)).await.unwrap();
        let dialing = s.get_contact(ids[1]).await.unwrap();
        assert_eq!(
            (dialing.state, dialing.due_at),
            (ContactState::Dialing, t(0))
        );
    }

    pub async fn begin_attempt_claims_a_contact_once<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "once", 1).await;
        let start = s
            .begin_attempt(ids[0], "node-a", t(3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(start.seq, 1);
        assert_eq!(s.begin_attempt(ids[0], "node-b", t(4)).await.unwrap(), None);
        let c = s.get_contact(ids[0]).await.unwrap();
        assert_eq!((c.state, c.attempts), (ContactState::Dialing, 1));
        let attempts = s.list_attempts(id, None, 10).await.unwrap();
        assert_eq!(attempts.len(), 1, "the refused call created nothing");
        let a = &attempts[0];
        assert_eq!(
            (a.id, a.contact_id, a.campaign_id, a.seq),
            (start.attempt_id, ids[0], id, 1)
        );
        assert_eq!(
            (a.node.as_str(), a.started_at, a.ended_at),
            ("node-a", t(3), None)
        );
        assert_eq!(
            (a.outcome, a.cause.clone(), a.cdr.clone()),
            (None, None, None)
        );
    }

    pub async fn concurrent_begin_attempt_yields_exactly_one<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "race", 1).await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                let contact = ids[0];
                tokio::spawn(
                    async move { s.begin_attempt(contact, &format!("node-{i}"), t(1)).await },
                )
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().is_some() {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        assert_eq!(s.get_contact(ids[0]).await.unwrap().attempts, 1);
        assert_eq!(s.list_attempts(id, None, 100).await.unwrap().len(), 1);
        assert_eq!(s.open_attempts().await.unwrap().len(), 1);
    }

    pub async fn finish_attempt_retries_then_finishes<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "retry", 1).await;
        let c = ids[0];
        let first = begin(&*s, c, t(1)).await;
        let busy = cdr(Outcome::Busy, Some(486));
        s.finish_attempt(
            first.attempt_id,
            Outcome::Busy,
            None,
            Some(&busy),
            ContactNext::Retry { due_at: t(600) },
            t(2),
        )
        .await
        .unwrap();
        let after = s.get_contact(c).await.unwrap();
        assert_eq!(after.state, ContactState::Pending);
        assert_eq!(after.due_at, t(600));
        assert_eq!(
            (after.last_outcome, after.final_outcome),
            (Some(Outcome::Busy), None)
        );
        assert_eq!(after.attempts, 1);
        assert!(s.due_contacts(id, t(599), 10).await.unwrap().is_empty());
        assert_eq!(s.due_contacts(id, t(600), 10).await.unwrap().len(), 1);
        assert_eq!(
            s.outcome_counts(c).await.unwrap(),
            BTreeMap::from([(Outcome::Busy, 1)])
        );

        let second = begin(&*s, c, t(600)).await;
        assert_eq!(second.seq, 2);
        assert_ne!(second.attempt_id, first.attempt_id);
        // open attempts are not counted by outcome
        assert_eq!(
            s.outcome_counts(c).await.unwrap(),
            BTreeMap::from([(Outcome::Busy, 1)])
        );
        s.finish_attempt(
            second.attempt_id,
            Outcome::Busy,
            None,
            None,
            ContactNext::Retry { due_at: t(1200) },
            t(601),
        )
        .await
        .unwrap();
        let third = begin(&*s, c, t(1200)).await;
        assert_eq!(third.seq, 3);
        let answered = cdr(Outcome::AnsweredHuman, Some(200));
        s.finish_attempt(
            third.attempt_id,
            Outcome::AnsweredHuman,
            None,
            Some(&answered),
            ContactNext::Done {
                outcome: Outcome::AnsweredHuman,
            },
            t(1210),
        )
        .await
        .unwrap();
        let done = s.get_contact(c).await.unwrap();
        assert_eq!(done.state, ContactState::Done);
        assert_eq!(done.final_outcome, Some(Outcome::AnsweredHuman));
        assert_eq!(done.last_outcome, Some(Outcome::AnsweredHuman));
        assert_eq!(done.attempts, 3);
        assert_eq!(
            s.outcome_counts(c).await.unwrap(),
            BTreeMap::from([(Outcome::Busy, 2), (Outcome::AnsweredHuman, 1)])
        );
        assert_eq!(
            s.begin_attempt(c, "node-a", t(2000)).await.unwrap(),
            None,
            "done is final"
        );

        let attempts = s.list_attempts(id, None, 10).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(attempts[0].cdr.as_ref(), Some(&busy));
        assert_eq!(attempts[0].ended_at, Some(t(2)));
        assert_eq!(attempts[1].cdr, None);
        assert_eq!(attempts[2].cdr.as_ref(), Some(&answered));
        assert_eq!(attempts[2].outcome, Some(Outcome::AnsweredHuman));

        // done with a final outcome other than the attempt's (a cap reached on a busy line)
        let (_, ids) = with_contacts(&*s, "capped", 1).await;
        let a = begin(&*s, ids[0], t(1)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::Failed,
            Some("node_restart"),
            None,
            ContactNext::Done {
                outcome: Outcome::Blocked,
            },
            t(2),
        )
        .await
        .unwrap();
        let c = s.get_contact(ids[0]).await.unwrap();
        assert_eq!(
            (c.last_outcome, c.final_outcome),
            (Some(Outcome::Failed), Some(Outcome::Blocked))
        );
    }

    pub async fn finish_attempt_twice_conflicts<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "twice", 1).await;
        let a = begin(&*s, ids[0], t(1)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::NoAnswer,
            None,
            None,
            ContactNext::Retry { due_at: t(100) },
            t(30),
        )
        .await
        .unwrap();
        let err = s
            .finish_attempt(
                a.attempt_id,
                Outcome::Busy,
                Some("node_restart"),
                None,
                ContactNext::Done {
                    outcome: Outcome::Busy,
                },
                t(40),
            )
            .await
            .unwrap_err();
        match err {
            StoreError::Conflict(msg) => {
                assert_eq!(msg, format!("attempt {} is already finished", a.attempt_id))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // nothing of the second call was applied
        let c = s.get_contact(ids[0]).await.unwrap();
        assert_eq!(
            (c.state, c.due_at, c.final_outcome),
            (ContactState::Pending, t(100), None)
        );
        let rec = &s.list_attempts(id, None, 10).await.unwrap()[0];
        assert_eq!(
            (rec.outcome, rec.ended_at, rec.cause.clone()),
            (Some(Outcome::NoAnswer), Some(t(30)), None)
        );
    }

    pub async fn frequency_counts_across_campaigns<S: Store>(s: Arc<S>) {
        let a = campaign(&*s, "a").await;
        let b = campaign(&*s, "b").await;
        s.add_contacts(a, &[contact(7, 0), contact(8, 0)], t(0))
            .await
            .unwrap();
        s.add_contacts(b, &[contact(7, 0)], t(0)).await.unwrap();
        let in_a = s.due_contacts(a, t(0), 10).await.unwrap();
        let a7 = in_a.iter().find(|c| c.number_hash == b"hash-7").unwrap().id;
        let a8 = in_a.iter().find(|c| c.number_hash == b"hash-8").unwrap().id;
        let b7 = s.due_contacts(b, t(0), 10).await.unwrap()[0].id;

        let x = begin(&*s, a7, t(100)).await;
        s.finish_attempt(
            x.attempt_id,
            Outcome::Busy,
            None,
            None,
            ContactNext::Retry { due_at: t(200) },
            t(110),
        )
        .await
        .unwrap();
        begin(&*s, a7, t(200)).await; // still open: counts too
        begin(&*s, b7, t(300)).await;
        begin(&*s, a8, t(300)).await;

        let h7 = b"hash-7".as_slice();
        assert_eq!(s.attempts_to_number_since(h7, t(0)).await.unwrap(), 3);
        assert_eq!(
            s.attempts_to_number_since(h7, t(100)).await.unwrap(),
            3,
            "at or after"
        );
        assert_eq!(s.attempts_to_number_since(h7, t(101)).await.unwrap(), 2);
        assert_eq!(s.attempts_to_number_since(h7, t(300)).await.unwrap(), 1);
        assert_eq!(s.attempts_to_number_since(h7, t(301)).await.unwrap(), 0);
        assert_eq!(
            s.attempts_to_number_since(b"hash-8", t(0)).await.unwrap(),
            1
        );
        assert_eq!(
            s.attempts_to_number_since(b"hash-9", t(0)).await.unwrap(),
            0
        );
    }

    pub async fn open_attempts_lists_only_dialing<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "open", 3).await;
        let a0 = begin(&*s, ids[0], t(1)).await;
        let a1 = s
            .begin_attempt(ids[1], "node-b", t(2))
            .await
            .unwrap()
            .unwrap();
        let a2 = begin(&*s, ids[2], t(3)).await;
        s.finish_attempt(
            a1.attempt_id,
            Outcome::Busy,
            None,
            None,
            ContactNext::Done {
                outcome: Outcome::Busy,
            },
            t(4),
        )
        .await
        .unwrap();
        let open = s.open_attempts().await.unwrap();
        assert_eq!(
            open.iter().map(|o| o.attempt_id).collect::<Vec<_>>(),
            vec![a0.attempt_id, a2.attempt_id]
        );
        let o = &open[1];
        assert_eq!(
            (o.contact_id, o.campaign_id, o.seq, o.started_at),
            (ids[2], id, 1, t(3))
        );
        assert_eq!(o.node, "node-a");
        // recovery closes them
        for o in &open {
            s.finish_attempt(
                o.attempt_id,
                Outcome::Failed,
                Some("node_restart"),
                None,
                ContactNext::Retry { due_at: t(10) },
                t(5),
            )
            .await
            .unwrap();
        }
        assert!(s.open_attempts().await.unwrap().is_empty());
        let rec = s.list_attempts(id, None, 10).await.unwrap();
        assert_eq!(rec[0].cause.as_deref(), Some("node_restart"));
    }

    pub async fn unfinished_and_next_due<S: Store>(s: Arc<S>) {
        let id = campaign(&*s, "progress").await;
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 0);
        assert_eq!(s.next_due(id).await.unwrap(), None);
        s.add_contacts(id, &[contact(1, 0), contact(2, 0), contact(3, 0)], t(10))
            .await
            .unwrap();
        let ids: Vec<_> = s
            .due_contacts(id, t(10), 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 3);
        assert_eq!(s.next_due(id).await.unwrap(), Some(t(10)));

        s.defer_contact(ids[0], t(50)).await.unwrap();
        s.defer_contact(ids[1], t(40)).await.unwrap();
        let a = begin(&*s, ids[2], t(11)).await; // dialing: not due, but unfinished
        assert_eq!(s.next_due(id).await.unwrap(), Some(t(40)));
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 3);
        s.finish_attempt(
            a.attempt_id,
            Outcome::Rejected,
            None,
            None,
            ContactNext::Done {
                outcome: Outcome::Rejected,
            },
            t(12),
        )
        .await
        .unwrap();
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 2);
        for (i, c) in ids[..2].iter().enumerate() {
            let a = begin(&*s, *c, t(60)).await;
            assert_eq!(s.next_due(id).await.unwrap(), (i == 0).then(|| t(40)));
            s.finish_attempt(
                a.attempt_id,
                Outcome::EmptyNumber,
                None,
                None,
                ContactNext::Done {
                    outcome: Outcome::EmptyNumber,
                },
                t(61),
            )
            .await
            .unwrap();
        }
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 0);
        assert_eq!(s.next_due(id).await.unwrap(), None);
    }

    pub async fn due_backlog_counts_running_campaigns<S: Store>(s: Arc<S>) {
        let running = campaign(&*s, "running").await;
        let draft = campaign(&*s, "draft").await;
        assert_eq!(s.due_backlog(t(100)).await.unwrap(), (0, None));
        s.add_contacts(
            running,
            &[contact(1, 0), contact(2, 0), contact(3, 0)],
            t(10),
        )
        .await
        .unwrap();
        s.add_contacts(draft, &[contact(4, 0)], t(5)).await.unwrap();
        // Not running yet: nothing is backlog.
        assert_eq!(s.due_backlog(t(100)).await.unwrap(), (0, None));
        s.set_campaign_status(
            running,
            CampaignStatus::Draft,
            CampaignStatus::Running,
            t(10),
        )
        .await
        .unwrap();
        assert_eq!(s.due_backlog(t(9)).await.unwrap(), (0, None));
        assert_eq!(s.due_backlog(t(20)).await.unwrap(), (3, Some(t(10))));
        let ids: Vec<_> = s
            .due_contacts(running, t(20), 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        s.defer_contact(ids[0], t(200)).await.unwrap();
        begin(&*s, ids[1], t(21)).await; // dialing: no longer waiting
        assert_eq!(s.due_backlog(t(30)).await.unwrap(), (1, Some(t(10))));
        assert_eq!(s.due_backlog(t(300)).await.unwrap(), (2, Some(t(10))));
    }

    pub async fn campaign_counts_by_state_and_outcome<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "counts", 5).await;
        let (other, other_ids) = with_contacts(&*s, "noise", 1).await;
        begin(&*s, other_ids[0], t(1)).await;
        let empty = s.campaign_counts(id).await.unwrap();
        assert_eq!(empty.contacts, BTreeMap::from([("pending".to_string(), 5)]));
        assert!(empty.final_outcomes.is_empty() && empty.attempt_outcomes.is_empty());
        assert_eq!(empty.attempts, 0);

        // 0: busy then answered (done); 1: busy (retry); 2: dialing; 3: empty number (done)
        let a = begin(&*s, ids[0], t(1)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::Busy,
            None,
            None,
            ContactNext::Retry { due_at: t(2) },
            t(2),
        )
        .await
        .unwrap();
        let a = begin(&*s, ids[0], t(3)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::AnsweredHuman,
            None,
            None,
            ContactNext::Done {
                outcome: Outcome::AnsweredHuman,
            },
            t(4),
        )
        .await
        .unwrap();
        let a = begin(&*s, ids[1], t(1)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::Busy,
            None,
            None,
            ContactNext::Retry { due_at: t(600) },
            t(2),
        )
        .await
        .unwrap();
        begin(&*s, ids[2], t(5)).await;
        let a = begin(&*s, ids[3], t(1)).await;
        s.finish_attempt(
            a.attempt_id,
            Outcome::EmptyNumber,
            None,
            None,
            ContactNext::Done {
                outcome: Outcome::EmptyNumber,
            },
            t(2),
        )
        .await
        .unwrap();

        let counts = s.campaign_counts(id).await.unwrap();
        let map = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            counts.contacts,
            map(&[("pending", 2), ("dialing", 1), ("done", 2)])
        );
        assert_eq!(
            counts.final_outcomes,
            map(&[("answered_human", 1), ("empty_number", 1)])
        );
        assert_eq!(
            counts.attempt_outcomes,
            map(&[("busy", 2), ("answered_human", 1), ("empty_number", 1)])
        );
        assert_eq!(counts.attempts, 5);
        let noise = s.campaign_counts(other).await.unwrap();
        assert_eq!(
            (noise.attempts, noise.contacts.get("dialing")),
            (1, Some(&1))
        );
        // Attribution is stored with each contact and counted by province.
        let provinces = s
            .campaign_counts(id_for_provinces(&*s).await)
            .await
            .unwrap()
            .provinces;
        assert_eq!(provinces.get("广东"), Some(&2));
        assert_eq!(provinces.get("北京"), Some(&1));
        assert_eq!(provinces.get("unknown"), Some(&1));
    }

    pub async fn list_contacts_pages_and_filters_by_state<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "list", 5).await;
        let (_, other) = with_contacts(&*s, "other", 2).await;
        begin(&*s, ids[1], t(0)).await;
        let all = s.list_contacts(id, None, 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
        assert!(all.iter().all(|c| !other.contains(&c.id)));
        let page = s.list_contacts(id, None, ids[1], 2).await.unwrap();
        assert_eq!(
            page.iter().map(|c| c.id).collect::<Vec<_>>(),
            [ids[2], ids[3]]
        );
        let dialing = s
            .list_contacts(id, Some(ContactState::Dialing), 0, 100)
            .await
            .unwrap();
        assert_eq!(dialing.iter().map(|c| c.id).collect::<Vec<_>>(), [ids[1]]);
        assert_eq!(dialing[0].attempts, 1);
    }

    pub async fn query_attempts_filters_and_counts_by_hour<S: Store>(s: Arc<S>) {
        use outcall_store::AttemptQuery;
        let (a, a_ids) = with_contacts(&*s, "query-a", 3).await;
        let (b, b_ids) = with_contacts(&*s, "query-b", 2).await;
        let finish = |id, o: Outcome, at| {
            let s = s.clone();
            async move {
                s.finish_attempt(
                    id,
                    o,
                    None,
                    Some(&cdr(o, None)),
                    ContactNext::Done { outcome: o },
                    at,
                )
                .await
                .unwrap()
            }
        };
        let a0 = begin(&*s, a_ids[0], t(0)).await.attempt_id;
        finish(a0, Outcome::Busy, t(5)).await;
        let b0 = begin(&*s, b_ids[0], t(10)).await.attempt_id;
        finish(b0, Outcome::NoAnswer, t(40)).await;
        let a1 = begin(&*s, a_ids[1], t(3600)).await.attempt_id;
        finish(a1, Outcome::NoAnswer, t(3630)).await;
        let a2 = begin(&*s, a_ids[2], t(7300)).await.attempt_id;
        let ids = |q: AttemptQuery| {
            let s = s.clone();
            async move {
                s.query_attempts(&AttemptQuery { limit: 100, ..q })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|x| x.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(AttemptQuery::default()).await, [a0, b0, a1, a2]);
        assert_eq!(
            ids(AttemptQuery {
                campaign_id: Some(a),
                ..Default::default()
            })
            .await,
            [a0, a1, a2]
        );
        assert_eq!(
            ids(AttemptQuery {
                outcome: Some(Outcome::NoAnswer),
                ..Default::default()
            })
            .await,
            [b0, a1]
        );
        assert_eq!(
            ids(AttemptQuery {
                number_hash: Some(b"hash-0".to_vec()),
                ..Default::default()
            })
            .await,
            [a0, b0],
            "one number across campaigns"
        );
        assert_eq!(
            ids(AttemptQuery {
                since: Some(t(3600)),
                ..Default::default()
            })
            .await,
            [a1, a2]
        );
        assert_eq!(
            ids(AttemptQuery {
                until: Some(t(3600)),
                campaign_id: Some(b),
                ..Default::default()
            })
            .await,
            [b0]
        );
        assert_eq!(
            ids(AttemptQuery {
                after: b0,
                ..Default::default()
            })
            .await,
            [a1, a2]
        );
        let page = s
            .query_attempts(&AttemptQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        let hours: Vec<_> = s
            .attempts_by_hour(a)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.hour, h.outcome, h.attempts))
            .collect();
        assert_eq!(
            hours,
            [
                (t(0), "busy".to_string(), 1),
                (t(3600), "no_answer".to_string(), 1),
                (t(7200), "in_progress".to_string(), 1),
            ]
        );
    }

    pub async fn list_attempts_pages_by_cursor<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "paging", 5).await;
        let (other, other_ids) = with_contacts(&*s, "noise", 2).await;
        let mut started = Vec::new();
        for (i, c) in ids.iter().enumerate() {
            let a = begin(&*s, *c, t(i as i64)).await.attempt_id;
            started.push(a);
            // interleaved ids: an attempt of the other campaign between two of this one
            let noise = begin(&*s, other_ids[i % 2], t(0)).await.attempt_id;
            let record = cdr(Outcome::NoAnswer, Some(480 + i as u16));
            s.finish_attempt(
                a,
                Outcome::NoAnswer,
                None,
                Some(&record),
                ContactNext::Done {
                    outcome: Outcome::NoAnswer,
                },
                t(100),
            )
            .await
            .unwrap();
            s.finish_attempt(
                noise,
                Outcome::Busy,
                None,
                None,
                ContactNext::Retry { due_at: t(0) },
                t(1),
            )
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s.list_attempts(id, cursor, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            cursor = Some(page.last().unwrap().id);
            seen.extend(page);
        }
        assert_eq!(seen.iter().map(|a| a.id).collect::<Vec<_>>(), started);
        assert!(seen.iter().all(|a| a.campaign_id == id));
        for (i, a) in seen.iter().enumerate() {
            let cdr = a.cdr.as_ref().expect("cdr stored");
            assert_eq!(cdr.sip_status, Some(480 + i as u16));
            assert_eq!(cdr, &super::cdr(Outcome::NoAnswer, Some(480 + i as u16)));
        }
        assert_eq!(
            s.list_attempts(id, Some(started[2]), 100)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(s.list_attempts(other, None, 100).await.unwrap().len(), 5);
        assert!(s
            .list_attempts(id, Some(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn blacklist_exact_prefix_scope_and_expiry<S: Store>(s: Arc<S>) {
        use outcall_store::NewBlacklistEntry;
        let a = campaign(&*s, "bl-a").await;
        let b = campaign(&*s, "bl-b").await;
        let entry =
            |campaign_id, hash: Option<&[u8]>, prefix: Option<&str>, expires: Option<i64>| {
                NewBlacklistEntry {
                    campaign_id,
                    number_hash: hash.map(|h| h.to_vec()),
                    number_enc: hash.map(|_| b"sealed".to_vec()),
                    prefix: prefix.map(str::to_string),
                    label: "x".into(),
                    reason: "customer asked".into(),
                    source: "test".into(),
                    expires_at: expires.map(t),
                }
            };
        let added = s
            .add_blacklist(
                &[
                    entry(None, Some(b"h-global"), None, None),
                    entry(Some(a), Some(b"h-only-a"), None, None),
                    entry(None, None, Some("+86170"), None),
                    entry(None, Some(b"h-expired"), None, Some(50)),
                ],
                t(0),
            )
            .await
            .unwrap();
        assert_eq!(added, 4);
        let m = |c, h: &'static [u8], n: &'static str, at| {
            let s = s.clone();
            async move {
                s.blacklist_match(c, h, n, t(at))
                    .await
                    .unwrap()
                    .map(|r| r.kind)
            }
        };
        assert_eq!(
            m(a, b"h-global", "+8613800000000", 10).await.as_deref(),
            Some("exact")
        );
        assert_eq!(
            m(b, b"h-global", "+8613800000000", 10).await.as_deref(),
            Some("exact")
        );
        assert_eq!(
            m(a, b"h-only-a", "+8613800000001", 10).await.as_deref(),
            Some("exact")
        );
        assert_eq!(
            m(b, b"h-only-a", "+8613800000001", 10).await,
            None,
            "scoped to campaign a"
        );
        assert_eq!(
            m(b, b"other", "+8617012345678", 10).await.as_deref(),
            Some("prefix")
        );
        assert_eq!(m(b, b"other", "+8613912345678", 10).await, None);
        assert_eq!(
            m(a, b"h-expired", "+8613800000002", 10).await.as_deref(),
            Some("exact")
        );
        assert_eq!(
            m(a, b"h-expired", "+8613800000002", 50).await,
            None,
            "expired"
        );
        assert_eq!(s.list_blacklist(Some(a), t(100)).await.unwrap().len(), 3);
        assert_eq!(s.list_blacklist(Some(b), t(10)).await.unwrap().len(), 3);
        let all = s.list_blacklist(None, t(100)).await.unwrap();
        assert_eq!(all.len(), 4);
        s.remove_blacklist(all[0].id).await.unwrap();
        assert_eq!(
            m(a, b"h-global", "+8613800000000", 10).await,
            None,
            "removed"
        );
        assert!(matches!(
            s.remove_blacklist(all[0].id).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    pub async fn number_status_learns_and_ages_out<S: Store>(s: Arc<S>) {
        assert_eq!(s.number_status(b"n1", t(0)).await.unwrap(), None);
        s.record_number_outcome(b"n1", Outcome::Busy, None, t(10))
            .await
            .unwrap();
        let st = s.number_status(b"n1", t(0)).await.unwrap().unwrap();
        assert_eq!(
            (st.status.as_str(), st.last_outcome, st.attempts),
            ("unknown", Outcome::Busy, 1)
        );
        s.record_number_outcome(b"n1", Outcome::EmptyNumber, Some("empty"), t(20))
            .await
            .unwrap();
        s.record_number_outcome(b"n1", Outcome::NoAnswer, None, t(30))
            .await
            .unwrap();
        let st = s.number_status(b"n1", t(0)).await.unwrap().unwrap();
        assert_eq!(
            st.status, "empty",
            "a status is kept until another replaces it"
        );
        assert_eq!(
            (st.last_outcome, st.attempts, st.answered),
            (Outcome::NoAnswer, 3, 0)
        );
        assert_eq!(st.updated_at, t(30));
        assert_eq!(
            s.number_status(b"n1", t(31)).await.unwrap(),
            None,
            "aged out"
        );
        s.record_number_outcome(b"n1", Outcome::AnsweredHuman, Some("valid"), t(40))
            .await
            .unwrap();
        let st = s.number_status(b"n1", t(31)).await.unwrap().unwrap();
        assert_eq!((st.status.as_str(), st.answered), ("valid", 1));
        assert_eq!(s.number_status(b"n2", t(0)).await.unwrap(), None);
        // Paging through the numbers with a status.
        for h in [b"e1", b"e2", b"e3"] {
            s.record_number_outcome(h, Outcome::EmptyNumber, Some("empty"), t(50))
                .await
                .unwrap();
        }
        let first = s.numbers_with_status("empty", t(0), b"", 2).await.unwrap();
        assert_eq!(first, vec![b"e1".to_vec(), b"e2".to_vec()]);
        let rest = s
            .numbers_with_status("empty", t(0), &first[1], 2)
            .await
            .unwrap();
        assert_eq!(rest, vec![b"e3".to_vec()]);
        assert!(s
            .numbers_with_status("empty", t(51), b"", 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            s.numbers_with_status("valid", t(0), b"", 10).await.unwrap(),
            vec![b"n1".to_vec()]
        );
    }

    pub async fn erase_scrubs_contacts_and_cdrs_everywhere<S: Store>(s: Arc<S>) {
        let a = campaign(&*s, "erase-a").await;
        let b = campaign(&*s, "erase-b").await;
        for c in [a, b] {
            s.add_contacts(c, &[contact(7, 0), contact(8, 0)], t(0))
                .await
                .unwrap();
        }
        let due = s.due_contacts(a, t(1), 10).await.unwrap();
        let target = due.iter().find(|c| c.number_hash == b"hash-7").unwrap().id;
        let start = s.begin_attempt(target, "n", t(2)).await.unwrap().unwrap();
        let mut record = cdr(Outcome::AnsweredHuman, Some(200));
        record.recording = Some("/rec/1.wav".into());
        let next = ContactNext::Done {
            outcome: Outcome::AnsweredHuman,
        };
        s.finish_attempt(
            start.attempt_id,
            Outcome::AnsweredHuman,
            None,
            Some(&record),
            next,
            t(3),
        )
        .await
        .unwrap();
        s.record_number_outcome(b"hash-7", Outcome::AnsweredHuman, Some("valid"), t(3))
            .await
            .unwrap();
        let r = s.erase_number(b"hash-7").await.unwrap();
        assert_eq!((r.contacts, r.attempts), (2, 1));
        assert_eq!(r.recordings, vec!["/rec/1.wav".to_string()]);
        let erased = s.get_contact(target).await.unwrap();
        assert_eq!(erased.masked, "[erased]");
        assert!(erased.number_enc.is_empty());
        assert_ne!(erased.number_hash, b"hash-7".to_vec());
        assert_eq!(erased.state, ContactState::Done);
        let at = s.list_attempts(a, None, 10).await.unwrap();
        let c = at[0].cdr.as_ref().unwrap();
        assert_eq!(
            (c.callee.as_str(), c.recording.as_deref()),
            ("[erased]", None)
        );
        assert_eq!(s.number_status(b"hash-7", t(0)).await.unwrap(), None);
        assert_eq!(
            s.attempts_to_number_since(b"hash-7", t(0)).await.unwrap(),
            0
        );
        // Campaign b's copy is done (never dialed) and the other number is untouched.
        let counts = s.campaign_counts(b).await.unwrap();
        assert_eq!(counts.final_outcomes.get("blocked"), Some(&1));
        assert_eq!(counts.contacts.get("pending"), Some(&1));
        assert_eq!(s.erase_number(b"hash-7").await.unwrap().contacts, 0);
    }

    pub async fn sealed_numbers_page_and_reseal<S: Store>(s: Arc<S>) {
        let (_, ids) = with_contacts(&*s, "seal", 5).await;
        let page = s.sealed_numbers("contacts", 0, 3).await.unwrap();
        assert_eq!(
            page.iter().map(|p| p.id).collect::<Vec<_>>(),
            ids[..3].to_vec()
        );
        let rest = s.sealed_numbers("contacts", page[2].id, 10).await.unwrap();
        assert_eq!(rest.len(), 2);
        s.reseal_number("contacts", ids[0], b"new-seal")
            .await
            .unwrap();
        assert_eq!(
            s.get_contact(ids[0]).await.unwrap().number_enc,
            b"new-seal".to_vec()
        );
        assert!(matches!(
            s.reseal_number("contacts", 999_999, b"x").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(s
            .sealed_numbers("blacklist", 0, 10)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn contact_hashes_page_and_exist<S: Store>(s: Arc<S>) {
        let (id, ids) = with_contacts(&*s, "hashes", 5).await;
        let other = campaign(&*s, "other").await;
        let page = s.contact_hashes(id, 0, 3).await.unwrap();
        assert_eq!(
            page.iter().map(|p| p.0).collect::<Vec<_>>(),
            ids[..3].to_vec()
        );
        assert_eq!(page[0].1, b"hash-0".to_vec());
        assert_eq!(s.contact_hashes(id, page[2].0, 10).await.unwrap().len(), 2);
        assert!(s.contact_hashes(other, 0, 10).await.unwrap().is_empty());
        assert!(s.contact_exists(id, b"hash-4").await.unwrap());
        assert!(!s.contact_exists(id, b"hash-5").await.unwrap());
        assert!(!s.contact_exists(other, b"hash-4").await.unwrap());
    }

    pub async fn add_100k_contacts_in_one_call<S: Store>(s: Arc<S>) {
        let id = campaign(&*s, "bulk").await;
        let batch: Vec<_> = (0..100_000).map(|i| contact(i, (i % 3) as i32)).collect();
        let started = std::time::Instant::now();
        let res = s.add_contacts(id, &batch, t(0)).await.unwrap();
        eprintln!("add_contacts: 100000 contacts in {:?}", started.elapsed());
        assert_eq!(
            res,
            AddResult {
                added: 100_000,
                duplicates: 0
            }
        );
        assert_eq!(s.unfinished_contacts(id).await.unwrap(), 100_000);
        let again = s.add_contacts(id, &batch[..1000], t(1)).await.unwrap();
        assert_eq!(
            again,
            AddResult {
                added: 0,
                duplicates: 1000
            }
        );
        let due = s.due_contacts(id, t(0), 10).await.unwrap();
        assert_eq!(due.len(), 10);
        assert!(due.iter().all(|c| c.priority == 2));
    }
}

/// The database file (and its WAL) never holds a number in clear: only the blind index, the
/// ciphertext and the masked form reach the store.
#[tokio::test]
async fn sqlite_file_holds_no_plaintext_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outcall.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let id = store
        .create_campaign(&spec("privacy"), t(0))
        .await
        .unwrap()
        .id;
    let clear = "13812345678";
    let contacts: Vec<_> = (0..50)
        .map(|i: u8| NewContact {
            // what outcall-pool would produce: an HMAC and an AES-GCM ciphertext (opaque)
            number_hash: (0..32).map(|j| j ^ i ^ 0x5C).collect(),
            number_enc: (0..40).map(|j: u8| j.wrapping_mul(37) ^ i).collect(),
            masked: "+86138****5678".into(),
            time_zone: Some("Asia/Shanghai".into()),
            priority: 0,
            variables: json!({ "name": "customer" }),
            region: Default::default(),
            trace_id: None,
        })
        .collect();
    store.add_contacts(id, &contacts, t(0)).await.unwrap();
    let c = store.due_contacts(id, t(0), 1).await.unwrap()[0].id;
    let a = store
        .begin_attempt(c, "node-a", t(1))
        .await
        .unwrap()
        .unwrap();
    let record = cdr(Outcome::AnsweredHuman, Some(200));
    store
        .finish_attempt(
            a.attempt_id,
            Outcome::AnsweredHuman,
            None,
            Some(&record),
            ContactNext::Done {
                outcome: Outcome::AnsweredHuman,
            },
            t(2),
        )
        .await
        .unwrap();
    store.close().await;

    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        scanned += bytes.len();
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{} holds the number in clear",
            entry.path().display()
        );
    }
    assert!(scanned > 0);
    let db = std::fs::read(&path).unwrap();
    assert!(
        db.windows(14).any(|w| w == b"+86138****5678"),
        "the masked form is there, so the scan did see the rows"
    );
}

/// A file store reopens with its data: migrations are recorded, not run twice; WAL is on.
#[tokio::test]
async fn sqlite_file_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outcall.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let created = store.create_campaign(&spec("durable"), t(0)).await.unwrap();
    store
        .add_contacts(created.id, &[contact(1, 0)], t(0))
        .await
        .unwrap();
    assert!(
        dir.path().join("outcall.db-wal").exists(),
        "journal mode is wal"
    );
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_campaign(created.id).await.unwrap(), created);
    assert_eq!(store.unfinished_contacts(created.id).await.unwrap(), 1);
    store.close().await;
}

/// A database written before CDRs had their own table (schema version 9, the CDR in a column
/// of `attempts`) opens with its CDRs where they were: migration 10 moves them.
#[tokio::test]
async fn sqlite_upgrade_keeps_the_cdrs_of_attempts() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use sqlx::{Connection, SqlSafeStr};
    let old: [(i64, &str, &'static str); 9] = [
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
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outcall.db");
    let record = cdr(Outcome::Busy, Some(486));
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let migrations = old
            .iter()
            .map(|&(v, d, sql)| {
                Migration::new(
                    v,
                    d.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO campaigns (id, name, status, spec, priority, created_at, updated_at)
             VALUES (1, 'old', 'completed', ?1, 0, 0, 0)",
        )
        .bind(serde_json::to_string(&spec("old")).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO contacts (id, campaign_id, number_hash, number_enc, masked, state, due_at,
                                   attempts, final_outcome)
             VALUES (1, 1, x'01', x'02', '+86138****0001', 'done', 0, 2, 'busy')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO attempts (id, campaign_id, contact_id, number_hash, seq, node, state,
                                   started_at, ended_at, outcome, sip_status, cdr)
             VALUES (1, 1, 1, x'01', 1, 'node-a', 'finished', 1000, 2000, 'busy', 486, ?1),
                    (2, 1, 1, x'01', 2, 'node-a', 'finished', 3000, 4000, 'failed', NULL, NULL)",
        )
        .bind(serde_json::to_string(&record).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let attempts = store.list_attempts(1, None, 10).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].cdr.as_ref(), Some(&record));
    assert_eq!(attempts[1].cdr, None);
    assert_eq!(store.count_cdrs(Some(1)).await.unwrap(), 1);
    let again = outcall_store::CdrRow {
        attempt_id: 1,
        campaign_id: 1,
        started_at: Timestamp::from_millisecond(1000).unwrap(),
        cdr: cdr(Outcome::AnsweredHuman, Some(200)),
    };
    assert_eq!(
        store.insert_cdrs(&[again]).await.unwrap(),
        0,
        "already there"
    );
    store.close().await;
}

/// Users, API keys, the audit log and idempotency keys.
mod access_cases {
    use super::t;
    use outcall_store::access::{
        AuditQuery, IdempotencyClaim, NewApiKey, NewAuditEntry, NewUser, UserUpdate,
    };
    use outcall_store::{Store, StoreError};
    use serde_json::json;
    use std::sync::Arc;

    fn user(name: &str, role: &str) -> NewUser {
        NewUser {
            username: name.into(),
            password_hash: format!("hash-of-{name}"),
            role: role.into(),
        }
    }

    pub async fn users_create_update_and_conflict<S: Store>(s: Arc<S>) {
        assert_eq!(s.count_users().await.unwrap(), 0);
        let a = s.create_user(&user("ann", "admin"), t(0)).await.unwrap();
        let b = s.create_user(&user("bob", "auditor"), t(1)).await.unwrap();
        assert_ne!(a.id, b.id);
        assert!(matches!(
            s.create_user(&user("ann", "agent"), t(2)).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.count_users().await.unwrap(), 2);
        let found = s.user_by_name("bob").await.unwrap().unwrap();
        assert_eq!(found, b);
        assert_eq!(found.password_hash, "hash-of-bob");
        assert!(s.user_by_name("carol").await.unwrap().is_none());
        let changed = s
            .update_user(
                b.id,
                &UserUpdate {
                    role: Some("operator".into()),
                    disabled: Some(true),
                    ..Default::default()
                },
                t(5),
            )
            .await
            .unwrap();
        assert_eq!(changed.role, "operator");
        assert!(changed.disabled);
        assert_eq!(changed.password_hash, "hash-of-bob", "kept");
        assert_eq!(changed.updated_at, t(5));
        assert_eq!(s.get_user(b.id).await.unwrap(), changed);
        let names: Vec<_> = s
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["ann", "bob"]);
        assert!(matches!(
            s.update_user(999, &UserUpdate::default(), t(6)).await,
            Err(StoreError::NotFound { what: "user", .. })
        ));
    }

    pub async fn api_keys_create_and_revoke<S: Store>(s: Arc<S>) {
        let k = s
            .create_api_key(
                &NewApiKey {
                    name: "crm".into(),
                    role: "operator".into(),
                    secret_hash: vec![7; 32],
                    created_by: "user:ann".into(),
                },
                t(0),
            )
            .await
            .unwrap();
        let got = s.get_api_key(k.id).await.unwrap().unwrap();
        assert_eq!(got.secret_hash, vec![7; 32]);
        assert_eq!(got.revoked_at, None);
        let r = s.revoke_api_key(k.id, t(10)).await.unwrap();
        assert_eq!(r.revoked_at, Some(t(10)));
        let again = s.revoke_api_key(k.id, t(20)).await.unwrap();
        assert_eq!(again.revoked_at, Some(t(10)), "first revocation time stays");
        assert_eq!(s.list_api_keys().await.unwrap().len(), 1);
        assert!(s.get_api_key(k.id + 1).await.unwrap().is_none());
    }

    pub async fn audit_appends_filters_and_purges<S: Store>(s: Arc<S>) {
        for (i, (actor, action)) in [
            ("user:ann", "auth.login"),
            ("user:bob", "contacts.import"),
            ("user:ann", "campaign.delete"),
            ("key:3", "contacts.import"),
        ]
        .into_iter()
        .enumerate()
        {
            s.append_audit(&NewAuditEntry {
                at: t(i as i64 * 100),
                actor: actor.into(),
                role: Some("admin".into()),
                action: action.into(),
                target: Some(format!("campaign:{i}")),
                outcome: "ok".into(),
                detail: json!({ "i": i }),
                ip: Some("127.0.0.1".into()),
                request_id: Some(format!("req-{i}")),
            })
            .await
            .unwrap();
        }
        let all = s
            .list_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].detail, json!({ "i": 1 }));
        assert_eq!(all[1].request_id.as_deref(), Some("req-1"));
        let imports = s
            .list_audit(&AuditQuery {
                limit: 100,
                action: Some("contacts.import".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            imports.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
            ["user:bob", "key:3"]
        );
        let ann_after_first = s
            .list_audit(&AuditQuery {
                after: all[0].id,
                limit: 100,
                actor: Some("user:ann".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ann_after_first.len(), 1);
        assert_eq!(ann_after_first[0].action, "campaign.delete");
        let window = s
            .list_audit(&AuditQuery {
                limit: 100,
                since: Some(t(100)),
                until: Some(t(300)),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(window.len(), 2);
        assert_eq!(s.purge_audit(t(200)).await.unwrap(), 2);
        let left = s
            .list_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].at, t(200));
    }

    pub async fn idempotency_key_claimed_once<S: Store>(s: Arc<S>) {
        let h = [1u8; 32];
        assert_eq!(
            s.idempotency_claim("user:ann POST /v1/calls", "k1", &h, t(0))
                .await
                .unwrap(),
            IdempotencyClaim::New
        );
        assert_eq!(
            s.idempotency_claim("user:ann POST /v1/calls", "k1", &h, t(1))
                .await
                .unwrap(),
            IdempotencyClaim::InProgress {
                request_hash: h.to_vec()
            }
        );
        // Another scope has its own keys.
        assert_eq!(
            s.idempotency_claim("user:bob POST /v1/calls", "k1", &h, t(1))
                .await
                .unwrap(),
            IdempotencyClaim::New
        );
        s.idempotency_complete("user:ann POST /v1/calls", "k1", 201, "{\"id\":1}")
            .await
            .unwrap();
        assert_eq!(
            s.idempotency_claim("user:ann POST /v1/calls", "k1", &[9; 32], t(2))
                .await
                .unwrap(),
            IdempotencyClaim::Done {
                request_hash: h.to_vec(),
                status: 201,
                body: "{\"id\":1}".into()
            }
        );
        // A released claim (the request failed) can be made again; a done one cannot.
        s.idempotency_release("user:bob POST /v1/calls", "k1")
            .await
            .unwrap();
        s.idempotency_release("user:ann POST /v1/calls", "k1")
            .await
            .unwrap();
        assert_eq!(
            s.idempotency_claim("user:bob POST /v1/calls", "k1", &h, t(3))
                .await
                .unwrap(),
            IdempotencyClaim::New
        );
        assert!(matches!(
            s.idempotency_claim("user:ann POST /v1/calls", "k1", &h, t(3))
                .await
                .unwrap(),
            IdempotencyClaim::Done { .. }
        ));
        assert_eq!(s.idempotency_purge(t(1)).await.unwrap(), 1);
    }
}

/// The webhook outbox: enqueue, take due (leased, oldest pending of each attempt first),
/// delivered, failed tries, give up, re-queue, listing.
mod webhook_cases {
    use super::t;
    use jiff::Timestamp;
    use outcall_store::{
        NewWebhookEvent, Store, StoreError, WebhookFailure, WebhookQuery, WebhookStatus,
    };
    use serde_json::json;
    use std::sync::Arc;

    fn event(id: &str, campaign: i64, attempt: i64, kind: &str, at: Timestamp) -> NewWebhookEvent {
        NewWebhookEvent {
            event_id: id.into(),
            campaign_id: campaign,
            attempt_id: attempt,
            event: kind.into(),
            url: format!("https://hooks.example.com/c{campaign}"),
            payload: json!({
                "event_id": id, "event": kind, "attempt_id": attempt,
                "number": "+86138****5678", "cdr": null, "nested": { "b": [1, 2.5, "x"] }
            }),
            created_at: at,
            next_attempt_at: at,
        }
    }

    fn failure(at: Timestamp, retry_at: Option<Timestamp>) -> WebhookFailure {
        WebhookFailure {
            at,
            error: "HTTP 500".into(),
            http_status: Some(500),
            retry_at,
        }
    }

    fn ids(list: &[outcall_store::WebhookDelivery]) -> Vec<&str> {
        list.iter().map(|d| d.event_id.as_str()).collect()
    }

    pub async fn webhook_outbox_takes_due_events_in_order_per_attempt<S: Store>(s: Arc<S>) {
        let a1 = s
            .enqueue_webhook(&event("a-init", 1, 10, "initiated", t(0)))
            .await
            .unwrap();
        s.enqueue_webhook(&event("a-ring", 1, 10, "ringing", t(1)))
            .await
            .unwrap();
        s.enqueue_webhook(&event("b-init", 1, 11, "initiated", t(1)))
            .await
            .unwrap();
        s.enqueue_webhook(&event("c-later", 2, 12, "initiated", t(60)))
            .await
            .unwrap();
        // The same event id again: not added twice.
        assert_eq!(
            s.enqueue_webhook(&event("a-init", 1, 10, "initiated", t(5)))
                .await
                .unwrap(),
            a1
        );
        assert_eq!(
            s.list_webhooks(&WebhookQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
            4
        );
        let stored = s.get_webhook(a1).await.unwrap();
        assert_eq!(
            stored.payload,
            event("a-init", 1, 10, "initiated", t(0)).payload
        );
        assert_eq!(
            (stored.status, stored.tries, stored.created_at),
            (WebhookStatus::Pending, 0, t(0))
        );
        assert_eq!(s.next_webhook_due().await.unwrap(), Some(t(0)));

        // Bounded, earliest first; the ringing event waits behind its attempt's initiated one.
        let first = s.take_due_webhooks(t(2), t(32), 1).await.unwrap();
        assert_eq!(ids(&first), ["a-init"]);
        let rest = s.take_due_webhooks(t(2), t(32), 10).await.unwrap();
        assert_eq!(
            ids(&rest),
            ["b-init"],
            "a-ring waits for a-init; c-later is not due"
        );
        // Leased: nothing is taken twice while the lease runs.
        assert!(s
            .take_due_webhooks(t(3), t(33), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.next_webhook_due().await.unwrap(), Some(t(32)));

        s.webhook_delivered(a1, t(4), 204).await.unwrap();
        let d = s.get_webhook(a1).await.unwrap();
        assert_eq!(
            (d.status, d.tries, d.last_http_status, d.delivered_at),
            (WebhookStatus::Delivered, 1, Some(204), Some(t(4)))
        );
        // Delivered twice (a late duplicate): nothing changes.
        s.webhook_delivered(a1, t(9), 200).await.unwrap();
        assert_eq!(s.get_webhook(a1).await.unwrap().delivered_at, Some(t(4)));
        assert_eq!(
            ids(&s.take_due_webhooks(t(4), t(34), 10).await.unwrap()),
            ["a-ring"]
        );

        // A dispatcher that died mid-try: its lease runs out and the event is due again.
        let again = s.take_due_webhooks(t(33), t(63), 10).await.unwrap();
        assert_eq!(ids(&again), ["b-init"]);
        assert_eq!(again[0].next_attempt_at, t(63));
        // Everything is due again: returned in id order.
        assert_eq!(
            ids(&s.take_due_webhooks(t(64), t(94), 10).await.unwrap()),
            ["a-ring", "b-init", "c-later"]
        );
        assert!(matches!(
            s.webhook_delivered(999, t(5), 200).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    pub async fn webhook_outbox_retries_gives_up_and_requeues<S: Store>(s: Arc<S>) {
        let first = s
            .enqueue_webhook(&event("x-init", 1, 20, "initiated", t(0)))
            .await
            .unwrap();
        let next = s
            .enqueue_webhook(&event("x-done", 1, 20, "completed", t(0)))
            .await
            .unwrap();
        assert_eq!(s.take_due_webhooks(t(0), t(30), 10).await.unwrap().len(), 1);
        let st = s
            .webhook_failed(first, &failure(t(1), Some(t(3))))
            .await
            .unwrap();
        assert_eq!(st, WebhookStatus::Pending);
        let d = s.get_webhook(first).await.unwrap();
        assert_eq!(
            (
                d.tries,
                d.last_error.as_deref(),
                d.last_http_status,
                d.next_attempt_at
            ),
            (1, Some("HTTP 500"), Some(500), t(3))
        );
        // Not before its retry time, and the completed event still waits behind it.
        assert!(s
            .take_due_webhooks(t(2), t(32), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.next_webhook_due().await.unwrap(), Some(t(3)));
        assert_eq!(
            ids(&s.take_due_webhooks(t(3), t(33), 10).await.unwrap()),
            ["x-init"]
        );
        let conn = WebhookFailure {
            at: t(4),
            error: "connection refused".into(),
            http_status: None,
            retry_at: None,
        };
        assert_eq!(
            s.webhook_failed(first, &conn).await.unwrap(),
            WebhookStatus::Failed
        );
        let d = s.get_webhook(first).await.unwrap();
        assert_eq!(
            (
                d.status,
                d.tries,
                d.last_error.as_deref(),
                d.last_http_status
            ),
            (WebhookStatus::Failed, 2, Some("connection refused"), None)
        );
        assert!(matches!(
            s.webhook_failed(first, &failure(t(5), None)).await,
            Err(StoreError::Conflict(_))
        ));
        // Given up: the attempt's next event goes out.
        assert_eq!(
            ids(&s.take_due_webhooks(t(5), t(35), 10).await.unwrap()),
            ["x-done"]
        );
        s.webhook_delivered(next, t(6), 200).await.unwrap();

        // An operator re-queues the failed one: pending, due now, tries from 0.
        let r = s.requeue_webhook(first, t(7)).await.unwrap();
        assert_eq!(
            (
                r.status,
                r.tries,
                r.next_attempt_at,
                r.last_error.as_deref()
            ),
            (WebhookStatus::Pending, 0, t(7), Some("connection refused"))
        );
        assert_eq!(
            ids(&s.take_due_webhooks(t(7), t(37), 10).await.unwrap()),
            ["x-init"]
        );
        s.webhook_delivered(first, t(8), 200).await.unwrap();
        assert_eq!(s.get_webhook(first).await.unwrap().tries, 1);
        assert_eq!(s.next_webhook_due().await.unwrap(), None);
        for id in [first, next] {
            assert!(matches!(
                s.requeue_webhook(id, t(9)).await,
                Err(StoreError::Conflict(m)) if m.contains("only failed deliveries")
            ));
        }
        assert!(matches!(
            s.requeue_webhook(12345, t(9)).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.get_webhook(12345).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    pub async fn webhook_outbox_purges_old_finished_deliveries<S: Store>(s: Arc<S>) {
        let delivered = s
            .enqueue_webhook(&event("old-ok", 1, 1, "completed", t(0)))
            .await
            .unwrap();
        s.webhook_delivered(delivered, t(10), 200).await.unwrap();
        let failed = s
            .enqueue_webhook(&event("old-fail", 1, 2, "completed", t(0)))
            .await
            .unwrap();
        s.webhook_failed(failed, &failure(t(20), None))
            .await
            .unwrap();
        let recent = s
            .enqueue_webhook(&event("new-ok", 1, 3, "completed", t(0)))
            .await
            .unwrap();
        s.webhook_delivered(recent, t(500), 200).await.unwrap();
        s.enqueue_webhook(&event("old-pending", 1, 4, "completed", t(0)))
            .await
            .unwrap();
        assert_eq!(s.purge_webhooks(t(100)).await.unwrap(), 2);
        let left = s
            .list_webhooks(&WebhookQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            ids(&left),
            ["new-ok", "old-pending"],
            "pending always stays"
        );
        // A purged event id may come again (its row is gone): it is a new delivery.
        s.enqueue_webhook(&event("old-ok", 1, 1, "completed", t(600)))
            .await
            .unwrap();
        assert_eq!(s.purge_webhooks(t(100)).await.unwrap(), 0);
    }

    pub async fn webhook_outbox_lists_by_status_and_campaign_with_cursor<S: Store>(s: Arc<S>) {
        let mut all = Vec::new();
        for i in 0..9i64 {
            let campaign = 1 + i % 3; // campaigns 1, 2, 3
            let id = s
                .enqueue_webhook(&event(
                    &format!("e{i}"),
                    campaign,
                    100 + i,
                    "completed",
                    t(i),
                ))
                .await
                .unwrap();
            all.push(id);
        }
        let due = s.take_due_webhooks(t(100), t(130), 100).await.unwrap();
        assert_eq!(due.len(), 9, "one event per attempt: all due");
        for (i, id) in all.iter().enumerate() {
            match i % 3 {
                0 => s.webhook_delivered(*id, t(101), 200).await.unwrap(),
                1 => {
                    s.webhook_failed(*id, &failure(t(101), None)).await.unwrap();
                }
                _ => {
                    s.webhook_failed(*id, &failure(t(101), Some(t(200))))
                        .await
                        .unwrap();
                }
            }
        }
        let q = |status, campaign_id, after, limit| WebhookQuery {
            status,
            campaign_id,
            after,
            limit,
        };
        let everything = s.list_webhooks(&q(None, None, None, 100)).await.unwrap();
        assert_eq!(everything.iter().map(|d| d.id).collect::<Vec<_>>(), all);
        // Campaign 2 holds e1, e4, e7: all given up.
        let failed = s
            .list_webhooks(&q(Some(WebhookStatus::Failed), None, None, 100))
            .await
            .unwrap();
        assert_eq!(ids(&failed), ["e1", "e4", "e7"]);
        assert!(failed.iter().all(|d| d.campaign_id == 2 && d.tries == 1));
        let pending3 = s
            .list_webhooks(&q(Some(WebhookStatus::Pending), Some(3), None, 100))
            .await
            .unwrap();
        assert_eq!(ids(&pending3), ["e2", "e5", "e8"]);
        assert!(s
            .list_webhooks(&q(Some(WebhookStatus::Delivered), Some(2), None, 100))
            .await
            .unwrap()
            .is_empty());
        // Cursor paging: two at a time.
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = s.list_webhooks(&q(None, None, after, 2)).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().map(|d| d.id);
            pages.extend(page.into_iter().map(|d| d.id));
        }
        assert_eq!(pages, all);
        let tail = s
            .list_webhooks(&q(
                Some(WebhookStatus::Delivered),
                Some(1),
                Some(all[0]),
                10,
            ))
            .await
            .unwrap();
        assert_eq!(ids(&tail), ["e3", "e6"]);
    }
}

/// Changing a campaign's spec (compare-and-set on its status), deleting a campaign with what it
/// owns, caller-ID pools.
mod campaign_admin_cases {
    use super::{cdr, contact, spec, t};
    use outcall_domain::campaign::{CampaignSpec, CampaignStatus};
    use outcall_domain::Outcome;
    use outcall_store::{
        ContactNext, NewBlacklistEntry, NewCallerIdPool, NewWebhookEvent, Store, StoreError,
        WebhookQuery,
    };
    use serde_json::json;
    use std::sync::Arc;

    use CampaignStatus as St;
    const EDITABLE: [St; 2] = [St::Draft, St::Paused];
    const DELETABLE: [St; 3] = [St::Draft, St::Completed, St::Canceled];

    fn pool(name: &str, numbers: &[&str]) -> NewCallerIdPool {
        NewCallerIdPool {
            name: name.into(),
            description: Some(format!("{name} lines")),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn pooled(name: &str, pool: &str) -> CampaignSpec {
        let mut s = spec(name);
        s.caller_ids.clear();
        s.caller_id_pool = Some(pool.into());
        s
    }

    fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
        match r {
            Err(StoreError::Conflict(m)) => m,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    fn event(id: &str, campaign: i64, attempt: i64) -> NewWebhookEvent {
        NewWebhookEvent {
            event_id: id.into(),
            campaign_id: campaign,
            attempt_id: attempt,
            event: "completed".into(),
            url: "https://hooks.example.com/x".into(),
            payload: json!({ "event_id": id }),
            created_at: t(0),
            next_attempt_at: t(0),
        }
    }

    fn blacklisted(campaign: Option<i64>, n: u32) -> NewBlacklistEntry {
        NewBlacklistEntry {
            campaign_id: campaign,
            number_hash: Some(format!("hash-{n}").into_bytes()),
            number_enc: Some(vec![1, 2, 3]),
            prefix: None,
            label: format!("+86138****{n:04}"),
            reason: "asked".into(),
            source: "test".into(),
            expires_at: None,
        }
    }

    pub async fn campaign_spec_update_is_compare_and_set<S: Store>(s: Arc<S>) {
        let created = s.create_campaign(&spec("before"), t(0)).await.unwrap();
        let id = created.id;
        let mut next = spec("after");
        next.priority = 2;
        next.max_cps = 7.5;
        let updated = s
            .update_campaign_spec(id, &next, &EDITABLE, t(10))
            .await
            .unwrap();
        assert_eq!(updated.spec, next);
        assert_eq!(updated.status, St::Draft);
        assert_eq!((updated.created_at, updated.updated_at), (t(0), t(10)));
        assert_eq!(s.get_campaign(id).await.unwrap(), updated);
        assert_eq!(s.list_campaigns().await.unwrap(), vec![updated.clone()]);

        s.set_campaign_status(id, St::Draft, St::Running, t(11))
            .await
            .unwrap();
        let m = conflict(
            s.update_campaign_spec(id, &spec("again"), &EDITABLE, t(12))
                .await,
        );
        assert_eq!(m, format!("campaign {id} is running, not draft or paused"));
        assert_eq!(s.get_campaign(id).await.unwrap().spec, next, "unchanged");
        s.set_campaign_status(id, St::Running, St::Paused, t(13))
            .await
            .unwrap();
        let paused = s
            .update_campaign_spec(id, &spec("paused edit"), &EDITABLE, t(14))
            .await
            .unwrap();
        assert_eq!(
            (paused.status, paused.spec.name.as_str()),
            (St::Paused, "paused edit")
        );
        assert!(matches!(
            s.update_campaign_spec(999, &next, &EDITABLE, t(15)).await,
            Err(StoreError::NotFound {
                what: "campaign",
                id: 999
            })
        ));

        // A campaign may only name a pool that exists, created or updated.
        let m = conflict(s.create_campaign(&pooled("p", "sales"), t(16)).await);
        assert_eq!(m, "caller-ID pool `sales` does not exist");
        let m = conflict(
            s.update_campaign_spec(id, &pooled("p", "sales"), &EDITABLE, t(16))
                .await,
        );
        assert_eq!(m, "caller-ID pool `sales` does not exist");
        assert_eq!(s.list_campaigns().await.unwrap().len(), 1);
        s.upsert_caller_id_pool(&pool("sales", &["02150000001"]), t(17))
            .await
            .unwrap();
        let with_pool = s
            .update_campaign_spec(id, &pooled("p", "sales"), &EDITABLE, t(18))
            .await
            .unwrap();
        assert_eq!(with_pool.spec.caller_id_pool.as_deref(), Some("sales"));
        assert_eq!(
            s.get_campaign(id).await.unwrap().spec.caller_id_pool,
            Some("sales".into())
        );
        let other = s
            .create_campaign(&pooled("q", "sales"), t(19))
            .await
            .unwrap();
        assert_eq!(other.spec.caller_id_pool.as_deref(), Some("sales"));
    }

    pub async fn delete_campaign_removes_what_it_owns_in_one_go<S: Store>(s: Arc<S>) {
        let a = s.create_campaign(&spec("doomed"), t(0)).await.unwrap().id;
        let b = s.create_campaign(&spec("kept"), t(0)).await.unwrap().id;
        for c in [a, b] {
            let batch: Vec<_> = (0..4).map(|i| contact(i, 0)).collect();
            s.add_contacts(c, &batch, t(0)).await.unwrap();
        }
        // Two finished attempts in each campaign, the first of each recorded.
        for c in [a, b] {
            let due = s.due_contacts(c, t(1), 10).await.unwrap();
            for (i, contact) in due.iter().take(2).enumerate() {
                let start = s
                    .begin_attempt(contact.id, "n", t(2))
                    .await
                    .unwrap()
                    .unwrap();
                let mut record = cdr(Outcome::AnsweredHuman, Some(200));
                if i == 0 {
                    record.recording = Some(format!("/rec/{c}/{}.wav", start.attempt_id));
                }
                s.finish_attempt(
                    start.attempt_id,
                    Outcome::AnsweredHuman,
                    None,
                    Some(&record),
                    ContactNext::Done {
                        outcome: Outcome::AnsweredHuman,
                    },
                    t(3),
                )
                .await
                .unwrap();
            }
        }
        let a_attempts = s.list_attempts(a, None, 10).await.unwrap();
        assert_eq!(a_attempts.len(), 2);
        let recording = format!("/rec/{a}/{}.wav", a_attempts[0].id);
        // Webhook deliveries: a's pending one goes, its delivered one stays as history.
        let pending = s
            .enqueue_webhook(&event("a-1", a, a_attempts[0].id))
            .await
            .unwrap();
        let delivered = s
            .enqueue_webhook(&event("a-2", a, a_attempts[1].id))
            .await
            .unwrap();
        s.webhook_delivered(delivered, t(4), 200).await.unwrap();
        let b_event = s.enqueue_webhook(&event("b-1", b, 999)).await.unwrap();
        // Blacklist: a global entry, one of a's, one of b's.
        s.add_blacklist(
            &[
                blacklisted(None, 1),
                blacklisted(Some(a), 2),
                blacklisted(Some(b), 3),
            ],
            t(0),
        )
        .await
        .unwrap();
        assert_eq!(
            s.attempts_to_number_since(b"hash-0", t(0)).await.unwrap(),
            2
        );

        // Not while it runs, nor with a call on the wire.
        s.set_campaign_status(a, St::Draft, St::Running, t(5))
            .await
            .unwrap();
        let m = conflict(s.delete_campaign(a, &DELETABLE).await);
        assert_eq!(
            m,
            format!("campaign {a} is running, not draft or completed or canceled")
        );
        let on_wire = s
            .due_contacts(a, t(5), 10)
            .await
            .unwrap()
            .first()
            .unwrap()
            .id;
        let open = s.begin_attempt(on_wire, "n", t(5)).await.unwrap().unwrap();
        s.set_campaign_status(a, St::Running, St::Canceled, t(6))
            .await
            .unwrap();
        let m = conflict(s.delete_campaign(a, &DELETABLE).await);
        assert!(m.contains("1 call(s) in progress"), "{m}");
        assert_eq!(
            s.list_attempts(a, None, 10).await.unwrap().len(),
            3,
            "untouched"
        );
        s.finish_attempt(
            open.attempt_id,
            Outcome::Canceled,
            None,
            None,
            ContactNext::Done {
                outcome: Outcome::Canceled,
            },
            t(7),
        )
        .await
        .unwrap();

        let r = s.delete_campaign(a, &DELETABLE).await.unwrap();
        assert_eq!(
            (r.contacts, r.attempts, r.webhooks, r.blacklist),
            (4, 3, 1, 1)
        );
        assert_eq!(r.recordings, vec![recording]);

        assert!(matches!(
            s.get_campaign(a).await,
            Err(StoreError::NotFound {
                what: "campaign",
                ..
            })
        ));
        assert!(matches!(
            s.get_contact(on_wire).await,
            Err(StoreError::NotFound {
                what: "contact",
                ..
            })
        ));
        assert!(s.list_attempts(a, None, 10).await.unwrap().is_empty());
        assert!(s.due_contacts(a, t(100), 10).await.unwrap().is_empty());
        assert!(!s.contact_exists(a, b"hash-0").await.unwrap());
        assert_eq!(s.unfinished_contacts(a).await.unwrap(), 0);
        assert_eq!(
            s.list_campaigns()
                .await
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            vec![b]
        );
        // Only b's attempt to the number is still counted by frequency caps.
        assert_eq!(
            s.attempts_to_number_since(b"hash-0", t(0)).await.unwrap(),
            1
        );
        let hooks = s
            .list_webhooks(&WebhookQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            hooks.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![delivered, b_event]
        );
        assert!(matches!(
            s.get_webhook(pending).await,
            Err(StoreError::NotFound { .. })
        ));
        let bl = s.list_blacklist(None, t(0)).await.unwrap();
        assert_eq!(
            bl.iter().map(|e| e.campaign_id).collect::<Vec<_>>(),
            vec![None, Some(b)]
        );
        // Campaign b is whole.
        let counts = s.campaign_counts(b).await.unwrap();
        assert_eq!(
            (counts.attempts, counts.contacts.values().sum::<u64>()),
            (2, 4)
        );
        assert_eq!(s.list_attempts(b, None, 10).await.unwrap().len(), 2);

        assert!(matches!(
            s.delete_campaign(a, &DELETABLE).await,
            Err(StoreError::NotFound {
                what: "campaign",
                ..
            })
        ));
        // A draft goes as well; the next campaign gets a new id.
        let draft = s.create_campaign(&spec("draft"), t(8)).await.unwrap().id;
        assert_eq!(
            s.delete_campaign(draft, &DELETABLE).await.unwrap(),
            Default::default()
        );
        let next = s.create_campaign(&spec("next"), t(9)).await.unwrap().id;
        assert!(next > draft);
    }

    pub async fn caller_id_pools_upsert_list_and_delete_unless_used<S: Store>(s: Arc<S>) {
        assert!(s.list_caller_id_pools().await.unwrap().is_empty());
        assert_eq!(s.get_caller_id_pool("sales").await.unwrap(), None);
        let (sales, created) = s
            .upsert_caller_id_pool(&pool("sales", &["02150000001", "+862150000002"]), t(1))
            .await
            .unwrap();
        assert!(created);
        assert_eq!((sales.created_at, sales.updated_at), (t(1), t(1)));
        assert_eq!(sales.numbers, ["02150000001", "+862150000002"]);
        assert_eq!(sales.description.as_deref(), Some("sales lines"));
        let mut replacement = pool("sales", &["02150000009"]);
        replacement.description = None;
        let (replaced, created) = s.upsert_caller_id_pool(&replacement, t(2)).await.unwrap();
        assert!(!created);
        assert_eq!(replaced.numbers, ["02150000009"]);
        assert_eq!(replaced.description, None);
        assert_eq!((replaced.created_at, replaced.updated_at), (t(1), t(2)));
        assert_eq!(
            s.get_caller_id_pool("sales").await.unwrap(),
            Some(replaced.clone())
        );
        let (alpha, _) = s
            .upsert_caller_id_pool(&pool("alpha", &["100"]), t(3))
            .await
            .unwrap();
        assert_eq!(
            s.list_caller_id_pools().await.unwrap(),
            vec![alpha, replaced]
        );

        // In use by a campaign that is not finished: kept.
        let c = s
            .create_campaign(&pooled("c", "sales"), t(4))
            .await
            .unwrap()
            .id;
        let d = s
            .create_campaign(&pooled("d", "sales"), t(4))
            .await
            .unwrap()
            .id;
        s.set_campaign_status(d, St::Draft, St::Running, t(5))
            .await
            .unwrap();
        let m = conflict(s.delete_caller_id_pool("sales").await);
        assert_eq!(
            m,
            format!(
                "caller-ID pool `sales` is used by campaign(s) {c}, {d}, not completed or canceled"
            )
        );
        s.set_campaign_status(c, St::Draft, St::Canceled, t(6))
            .await
            .unwrap();
        s.set_campaign_status(d, St::Running, St::Completed, t(6))
            .await
            .unwrap();
        assert!(s.delete_caller_id_pool("sales").await.unwrap());
        assert!(!s.delete_caller_id_pool("sales").await.unwrap());
        assert_eq!(s.get_caller_id_pool("sales").await.unwrap(), None);
        assert_eq!(s.list_caller_id_pools().await.unwrap().len(), 1);
    }
}

/// System events: append, filters, cursor paging (oldest first), page cap, retention.
mod event_cases {
    use super::t;
    use jiff::Timestamp;
    use outcall_store::events::{kind, severity, MAX_EVENTS_PAGE};
    use outcall_store::{EventQuery, NewSystemEvent, Store, StoreError, SystemEvent};
    use serde_json::json;
    use std::sync::Arc;

    fn ev(at: Timestamp, kind: &str, subject: &str, sev: &str) -> NewSystemEvent {
        NewSystemEvent {
            at,
            kind: kind.into(),
            subject: subject.into(),
            severity: sev.into(),
            message: format!("{subject}: {kind}"),
            details: json!({ "trunk": subject, "factor": 0.5, "nested": { "list": [1, "x", null] } }),
        }
    }

    fn ids(list: &[SystemEvent]) -> Vec<i64> {
        list.iter().map(|e| e.id).collect()
    }

    fn q() -> EventQuery {
        EventQuery {
            limit: 100,
            ..EventQuery::default()
        }
    }

    pub async fn events_append_filter_page_and_purge<S: Store>(s: Arc<S>) {
        let input = [
            ev(t(0), kind::TRUNK_DEGRADED, "carrier-a", severity::WARNING),
            ev(
                t(10),
                kind::TRUNK_CIRCUIT_OPEN,
                "carrier-a",
                severity::CRITICAL,
            ),
            ev(t(20), kind::TRUNK_DEGRADED, "carrier-b", severity::WARNING),
            ev(
                t(30),
                kind::TRUNK_CIRCUIT_HALF_OPEN,
                "carrier-a",
                severity::INFO,
            ),
            ev(
                t(40),
                kind::TRUNK_CIRCUIT_CLOSED,
                "carrier-a",
                severity::INFO,
            ),
            ev(t(50), kind::TRUNK_RECOVERED, "carrier-b", severity::INFO),
        ];
        let mut stored = Vec::new();
        for e in &input {
            let got = s.append_event(e).await.unwrap();
            let want = SystemEvent {
                id: got.id,
                at: e.at,
                kind: e.kind.clone(),
                subject: e.subject.clone(),
                severity: e.severity.clone(),
                message: e.message.clone(),
                details: e.details.clone(),
            };
            assert_eq!(got, want);
            stored.push(got);
        }
        assert!(
            stored.windows(2).all(|w| w[0].id < w[1].id),
            "ids grow in append order"
        );

        // Everything, oldest first, exactly as appended.
        assert_eq!(s.list_events(&q()).await.unwrap(), stored);

        let by_kind = s
            .list_events(&EventQuery {
                kind: Some(kind::TRUNK_DEGRADED.into()),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(ids(&by_kind), [stored[0].id, stored[2].id]);

        let by_subject = s
            .list_events(&EventQuery {
                subject: Some("carrier-a".into()),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(
            ids(&by_subject),
            [stored[0].id, stored[1].id, stored[3].id, stored[4].id]
        );

        let both = s
            .list_events(&EventQuery {
                kind: Some(kind::TRUNK_DEGRADED.into()),
                subject: Some("carrier-b".into()),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(ids(&both), [stored[2].id]);

        // `since` is inclusive.
        let since = s
            .list_events(&EventQuery {
                since: Some(t(30)),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(ids(&since), ids(&stored[3..]));

        // Pages of two by cursor, with a filter.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .list_events(&EventQuery {
                    subject: Some("carrier-a".into()),
                    after_id: after,
                    limit: 2,
                    ..EventQuery::default()
                })
                .await
                .unwrap();
            assert!(page.len() <= 2);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.id);
            seen.extend(ids(&page));
        }
        assert_eq!(seen, ids(&by_subject));

        assert!(s
            .list_events(&EventQuery {
                kind: Some("alert.firing".into()),
                ..q()
            })
            .await
            .unwrap()
            .is_empty());

        // Retention: strictly older than `before` goes.
        assert_eq!(s.purge_events(t(20)).await.unwrap(), 2);
        assert_eq!(s.list_events(&q()).await.unwrap(), stored[2..].to_vec());
        assert_eq!(s.purge_events(t(20)).await.unwrap(), 0);

        // Ids are never reused after a purge.
        let next = s
            .append_event(&ev(
                t(60),
                kind::TRUNK_DEGRADED,
                "carrier-c",
                severity::WARNING,
            ))
            .await
            .unwrap();
        assert!(next.id > stored.last().unwrap().id);
    }

    pub async fn events_page_size_is_capped_and_bad_severity_refused<S: Store>(s: Arc<S>) {
        let bad = ev(t(0), kind::TRUNK_DEGRADED, "carrier-a", "fatal");
        assert!(matches!(
            s.append_event(&bad).await,
            Err(StoreError::Conflict(_))
        ));
        let empty_kind = ev(t(0), "", "carrier-a", severity::INFO);
        assert!(matches!(
            s.append_event(&empty_kind).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.list_events(&q()).await.unwrap().is_empty());

        let n = MAX_EVENTS_PAGE as i64 + 5;
        for i in 0..n {
            s.append_event(&ev(
                t(i),
                kind::TRUNK_DEGRADED,
                "carrier-a",
                severity::WARNING,
            ))
            .await
            .unwrap();
        }
        let all = EventQuery {
            limit: 5000,
            ..EventQuery::default()
        };
        let first = s.list_events(&all).await.unwrap();
        assert_eq!(
            first.len(),
            MAX_EVENTS_PAGE as usize,
            "limit capped at 1000"
        );
        let rest = s
            .list_events(&EventQuery {
                after_id: first.last().map(|e| e.id),
                ..all
            })
            .await
            .unwrap();
        assert_eq!(rest.len(), 5);
        // A limit of 0 still returns one event.
        let one = s
            .list_events(&EventQuery {
                limit: 0,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&one), [first[0].id]);
    }
}

/// CDRs stored apart from attempts: batches from the ingest, idempotent by attempt id, kept for
/// attempts not known yet, shown with their attempts, and retention.
mod cdr_cases {
    use super::{cdr, contact, spec, t};
    use jiff::Timestamp;
    use outcall_domain::{Cdr, Outcome};
    use outcall_store::{CdrPurge, CdrRow, ContactNext, Store};
    use std::sync::Arc;

    /// A campaign with `n` contacts, each with an attempt begun at `t(i)`: (campaign, attempts).
    async fn begun<S: Store>(s: &S, name: &str, n: u32) -> (i64, Vec<i64>) {
        let id = s.create_campaign(&spec(name), t(0)).await.unwrap().id;
        let batch: Vec<_> = (0..n).map(|i| contact(i, 0)).collect();
        s.add_contacts(id, &batch, t(0)).await.unwrap();
        let due = s.due_contacts(id, t(0), n + 1).await.unwrap();
        let mut attempts = Vec::new();
        for (i, c) in due.iter().enumerate() {
            let a = s
                .begin_attempt(c.id, "node-a", t(i as i64))
                .await
                .unwrap()
                .expect("pending");
            attempts.push(a.attempt_id);
        }
        (id, attempts)
    }

    fn row(attempt_id: i64, campaign_id: i64, started_at: Timestamp, cdr: Cdr) -> CdrRow {
        CdrRow {
            attempt_id,
            campaign_id,
            started_at,
            cdr,
        }
    }

    fn cdr_n(n: u16) -> Cdr {
        let mut c = cdr(Outcome::NoAnswer, Some(480));
        c.attempt_id = n.to_string();
        c.q850_cause = Some(n);
        c
    }

    async fn cdr_of<S: Store>(s: &S, campaign: i64, attempt: i64) -> Option<Cdr> {
        s.list_attempts(campaign, None, 10_000)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.id == attempt)
            .expect("the attempt is listed")
            .cdr
    }

    /// Ids no store here hands out in a test: CDRs of attempts it does not know.
    const UNKNOWN: i64 = 900_000_000;

    pub async fn insert_cdrs_is_idempotent_and_keeps_unknown_attempts<S: Store>(s: Arc<S>) {
        let (id, attempts) = begun(&*s, "ingest", 3).await;
        assert_eq!(s.count_cdrs(None).await.unwrap(), 0);
        let mut batch: Vec<CdrRow> = attempts
            .iter()
            .enumerate()
            .map(|(i, a)| row(*a, id, t(i as i64), cdr_n(i as u16)))
            .collect();
        // An attempt this store has not seen (its row may come later from another node).
        batch.push(row(UNKNOWN, id, t(5), cdr_n(9)));
        // The same attempt twice in one batch: the first is kept.
        batch.push(row(attempts[0], id, t(0), cdr_n(99)));
        assert_eq!(s.insert_cdrs(&batch).await.unwrap(), 4);
        assert_eq!(
            s.insert_cdrs(&batch).await.unwrap(),
            0,
            "the same batch again"
        );
        assert_eq!(s.insert_cdrs(&[]).await.unwrap(), 0);
        assert_eq!(s.count_cdrs(None).await.unwrap(), 4);
        assert_eq!(s.count_cdrs(Some(id)).await.unwrap(), 4);
        assert_eq!(s.count_cdrs(Some(id + 1)).await.unwrap(), 0);
        // Shown with their attempts, still open.
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(cdr_of(&*s, id, *a).await, Some(cdr_n(i as u16)));
        }
        assert_eq!(s.open_attempts().await.unwrap().len(), 3);
        assert_eq!(s.list_attempts(id, None, 100).await.unwrap().len(), 3);
    }

    pub async fn cdr_of_finish_attempt_then_insert_cdrs_is_stored_once<S: Store>(s: Arc<S>) {
        let (id, attempts) = begun(&*s, "both-paths", 1).await;
        let a = attempts[0];
        let first = cdr(Outcome::Busy, Some(486));
        s.finish_attempt(
            a,
            Outcome::Busy,
            None,
            Some(&first),
            ContactNext::Retry { due_at: t(600) },
            t(2),
        )
        .await
        .unwrap();
        assert_eq!(s.count_cdrs(None).await.unwrap(), 1);
        // The bus brings the same attempt's CDR, once with its start, once with another
        // (a month later) and another campaign: neither is a second CDR.
        let late = cdr_n(7);
        assert_eq!(
            s.insert_cdrs(&[row(a, id, t(0), late.clone())])
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            s.insert_cdrs(&[row(a, id + 50, t(40 * 86_400), late)])
                .await
                .unwrap(),
            0
        );
        assert_eq!(s.count_cdrs(None).await.unwrap(), 1);
        assert_eq!(s.count_cdrs(Some(id)).await.unwrap(), 1);
        assert_eq!(cdr_of(&*s, id, a).await, Some(first));
        let rec = &s.list_attempts(id, None, 10).await.unwrap()[0];
        assert_eq!(
            (rec.outcome, rec.ended_at),
            (Some(Outcome::Busy), Some(t(2)))
        );
    }

    pub async fn cdr_inserted_before_finish_shows_after_finish_without_cdr<S: Store>(s: Arc<S>) {
        let (id, attempts) = begun(&*s, "early-cdr", 2).await;
        let early = cdr(Outcome::AnsweredHuman, Some(200));
        assert_eq!(
            s.insert_cdrs(&[
                row(attempts[0], id, t(0), early.clone()),
                row(attempts[1], id, t(1), cdr_n(1)),
            ])
            .await
            .unwrap(),
            2
        );
        let done = ContactNext::Done {
            outcome: Outcome::AnsweredHuman,
        };
        // The scheduler closes the attempt without a CDR (the call's report went by the bus).
        s.finish_attempt(attempts[0], Outcome::AnsweredHuman, None, None, done, t(9))
            .await
            .unwrap();
        let rec = s.list_attempts(id, None, 10).await.unwrap();
        assert_eq!(rec[0].cdr.as_ref(), Some(&early));
        assert_eq!(
            (rec[0].outcome, rec[0].ended_at),
            (Some(Outcome::AnsweredHuman), Some(t(9)))
        );
        // Closed with a CDR of its own: the one already stored stays.
        s.finish_attempt(
            attempts[1],
            Outcome::AnsweredHuman,
            None,
            Some(&cdr(Outcome::AnsweredHuman, Some(200))),
            done,
            t(9),
        )
        .await
        .unwrap();
        assert_eq!(cdr_of(&*s, id, attempts[1]).await, Some(cdr_n(1)));
        assert_eq!(s.count_cdrs(Some(id)).await.unwrap(), 2);
        // Both paths reach the same CDRs: a query by outcome or number sees them.
        let q = outcall_store::AttemptQuery {
            campaign_id: Some(id),
            limit: 10,
            ..Default::default()
        };
        let listed = s.query_attempts(&q).await.unwrap();
        assert!(listed.iter().all(|a| a.cdr.is_some()), "{listed:?}");
    }

    pub async fn insert_10k_cdrs_in_one_batch<S: Store>(s: Arc<S>) {
        let (id, attempts) = begun(&*s, "bulk-cdrs", 100).await;
        // 100 known attempts and 9,900 not known here, over two months.
        let batch: Vec<CdrRow> = (0..10_000i64)
            .map(|i| {
                let attempt = attempts.get(i as usize).copied().unwrap_or(UNKNOWN + i);
                row(attempt, id, t(i * 500), cdr_n((i % 1000) as u16))
            })
            .collect();
        let started = std::time::Instant::now();
        assert_eq!(s.insert_cdrs(&batch).await.unwrap(), 10_000);
        eprintln!("insert_cdrs: 10000 CDRs in {:?}", started.elapsed());
        assert_eq!(s.count_cdrs(None).await.unwrap(), 10_000);
        assert_eq!(s.count_cdrs(Some(id)).await.unwrap(), 10_000);
        assert_eq!(s.insert_cdrs(&batch[..1000]).await.unwrap(), 0);
        assert_eq!(s.count_cdrs(None).await.unwrap(), 10_000);
        let listed = s.list_attempts(id, None, 1000).await.unwrap();
        assert_eq!(listed.len(), 100);
        for (i, a) in listed.iter().enumerate() {
            assert_eq!(a.cdr.as_ref(), Some(&cdr_n(i as u16)), "attempt {}", a.id);
        }
    }

    pub async fn purge_cdrs_before_keeps_newer_months<S: Store>(s: Arc<S>) {
        const DAY: i64 = 86_400;
        let (id, attempts) = begun(&*s, "retention", 1).await;
        s.finish_attempt(
            attempts[0],
            Outcome::Busy,
            None,
            Some(&cdr(Outcome::Busy, Some(486))),
            ContactNext::Retry { due_at: t(10) },
            t(5),
        )
        .await
        .unwrap();
        // January (the attempt above and one more), February, March 2026.
        s.insert_cdrs(&[
            row(UNKNOWN + 1, id, t(20 * DAY), cdr_n(1)),
            row(UNKNOWN + 2, id, t(35 * DAY), cdr_n(2)),
            row(UNKNOWN + 3, id, t(65 * DAY), cdr_n(3)),
        ])
        .await
        .unwrap();
        assert_eq!(s.count_cdrs(None).await.unwrap(), 4);
        let february: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let purge = s.purge_cdrs_before(february).await.unwrap();
        let by_rows = CdrPurge {
            deleted: 2,
            dropped_partitions: vec![],
        };
        let by_partition = CdrPurge {
            deleted: 0,
            dropped_partitions: vec!["cdrs_y2026m01".into()],
        };
        assert!(purge == by_rows || purge == by_partition, "{purge:?}");
        assert_eq!(
            s.count_cdrs(None).await.unwrap(),
            2,
            "February and March stay"
        );
        // The attempt row stays, without its CDR.
        let rec = &s.list_attempts(id, None, 10).await.unwrap()[0];
        assert_eq!((rec.outcome, rec.cdr.as_ref()), (Some(Outcome::Busy), None));
        assert_eq!(
            s.purge_cdrs_before(february).await.unwrap(),
            CdrPurge::default()
        );
        assert_eq!(s.count_cdrs(None).await.unwrap(), 2);
    }
}
