#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! The state database on a real file: tasks with their credentials,
//! revocation on end (durable, idempotent, by TTL), session history with
//! results and its summary, reopen, migrations, and two connections
//! writing at once.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mandate_core::{Decision, DecisionId, SessionInput, SessionSummary, TaskId};
use mandate_store::{
    CallResult, CredentialRecord, END_REASON_ENDED, END_REASON_EXPIRED, HistoryEntry, StateError,
    TaskRecord, TaskStore,
};
use rusqlite::Connection;

/// A fixed time with nanoseconds, so round trips check full precision.
/// A task id as the store takes it.
fn tid(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

/// A decision id as the store takes it.
fn did(id: &str) -> DecisionId {
    DecisionId::new(id).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + Duration::nanoseconds(123_456_789)
}

fn task(id: &str, expires_at: DateTime<Utc>) -> (TaskRecord, CredentialRecord) {
    let root_id = format!("{id}-root");
    let mut params = serde_json::Map::new();
    params.insert(
        "recipients".to_owned(),
        serde_json::json!(["ops@example.org"]),
    );
    let task = TaskRecord {
        id: tid(id),
        agent: "spiffe://example.org/planner".to_owned(),
        on_behalf_of: Some("alice@example.org".to_owned()),
        intent: "summarise the incident and mail ops".to_owned(),
        tools: vec!["mail/send".to_owned(), "tickets/read".to_owned()],
        labels: vec!["internal".to_owned()],
        params,
        audience: "https://mandate.example.org".to_owned(),
        max_depth: 2,
        created_at: t0(),
        expires_at,
        ended_at: None,
        end_reason: None,
        root_revocation_id: root_id.clone(),
    };
    let root = CredentialRecord {
        task_id: tid(id),
        revocation_id: root_id,
        parent_revocation_id: None,
        agent: task.agent.clone(),
        depth: 0,
        tools: task.tools.clone(),
        labels: task.labels.clone(),
        issued_at: t0(),
        expires_at,
    };
    (task, root)
}

fn delegation(task_id: &str, id: &str, parent: &str, depth: u32) -> CredentialRecord {
    CredentialRecord {
        task_id: tid(task_id),
        revocation_id: id.to_owned(),
        parent_revocation_id: Some(parent.to_owned()),
        agent: format!("spiffe://example.org/{id}"),
        depth,
        tools: vec!["tickets/read".to_owned()],
        labels: vec!["internal".to_owned()],
        issued_at: t0() + Duration::seconds(i64::from(depth)),
        expires_at: t0() + Duration::minutes(5),
    }
}

fn decision(task_id: &str, id: &str, tool: &str, n: i64) -> HistoryEntry {
    HistoryEntry {
        decision_id: did(id),
        task_id: tid(task_id),
        agent: "spiffe://example.org/planner".to_owned(),
        server: "tickets".to_owned(),
        tool: tool.to_owned(),
        decision: Decision::Allow,
        decided_at: t0() + Duration::milliseconds(n),
        result: None,
        annotations: None,
    }
}

/// MCP annotations as a JSON object.
fn annotations(value: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    match value {
        serde_json::Value::Object(map) => Some(map),
        other => panic!("not an object: {other}"),
    }
}

fn result(status: &str, labels: &[&str]) -> CallResult {
    CallResult {
        status: status.to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        reported_at: t0() + Duration::seconds(1),
        grounds: Default::default(),
    }
}

/// A store with task `id` (root credential `id-root`) expiring in an hour.
fn started(path: &Path, id: &str) -> (TaskStore, TaskRecord, CredentialRecord) {
    let store = TaskStore::open(path).unwrap();
    let (task, root) = task(id, t0() + Duration::hours(1));
    store.create_task(&task, &root).unwrap();
    (store, task, root)
}

#[test]
fn a_task_round_trips_with_its_root_credential() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, task, root) = started(&path, "t1");

    let stored = store.task(&tid("t1")).unwrap().unwrap();
    assert_eq!(stored, task, "every field, times to the nanosecond");
    assert!(!stored.is_ended());
    assert_eq!(store.credentials(&tid("t1")).unwrap(), vec![root.clone()]);
    assert!(store.task(&tid("t2")).unwrap().is_none());
    assert!(store.credentials(&tid("t2")).unwrap().is_empty());

    // The same id again is a conflict, and changes nothing.
    let mut again = task.clone();
    again.intent = "something else".to_owned();
    let err = store.create_task(&again, &root).unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert_eq!(store.task(&tid("t1")).unwrap().unwrap().intent, task.intent);

    // A root credential that does not belong to its task is refused whole:
    // no task row is left behind either.
    let (t3, root3) = self::task("t3", t0() + Duration::hours(1));
    for bad in [
        CredentialRecord {
            depth: 1,
            ..root3.clone()
        },
        CredentialRecord {
            parent_revocation_id: Some("t1-root".to_owned()),
            ..root3.clone()
        },
        CredentialRecord {
            task_id: tid("t1"),
            ..root3.clone()
        },
        CredentialRecord {
            revocation_id: "other".to_owned(),
            ..root3.clone()
        },
    ] {
        let err = store.create_task(&t3, &bad).unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)), "{err}");
    }
    // A new task whose root revocation id is already recorded: refused in
    // the transaction, the task row rolled back.
    let reused = TaskRecord {
        root_revocation_id: "t1-root".to_owned(),
        ..t3.clone()
    };
    let reused_root = CredentialRecord {
        revocation_id: "t1-root".to_owned(),
        ..root3.clone()
    };
    let err = store.create_task(&reused, &reused_root).unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert!(store.task(&tid("t3")).unwrap().is_none(), "rolled back");
    store.create_task(&t3, &root3).unwrap();
}

#[test]
fn delegations_are_recorded_in_issue_order_under_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, root) = started(&path, "t1");
    let (other, other_root) = task("t2", t0() + Duration::hours(1));
    store.create_task(&other, &other_root).unwrap();

    // root ─┬─ a ── b
    //       └─ c
    let a = delegation("t1", "a", "t1-root", 1);
    let b = delegation("t1", "b", "a", 2);
    let c = delegation("t1", "c", "t1-root", 1);
    for credential in [&a, &b, &c] {
        store.add_credential(credential).unwrap();
    }
    let tree = store.credentials(&tid("t1")).unwrap();
    assert_eq!(tree, vec![root, a.clone(), b.clone(), c]);
    assert_eq!(
        store.credentials(&tid("t2")).unwrap(),
        vec![other_root],
        "another task's tree is its own"
    );

    // A parent from another task, an unknown parent, no parent, a depth
    // that does not follow the parent, or one past max_depth (2): refused.
    for bad in [
        delegation("t1", "x", "t2-root", 1),
        delegation("t1", "x", "nowhere", 1),
        CredentialRecord {
            parent_revocation_id: None,
            ..delegation("t1", "x", "a", 2)
        },
        delegation("t1", "x", "a", 1),
        delegation("t1", "x", "b", 3),
    ] {
        let err = store.add_credential(&bad).unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)), "{err}");
    }
    let err = store
        .add_credential(&delegation("t1", "b", "a", 2))
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .add_credential(&delegation("t9", "x", "t1-root", 1))
        .unwrap_err();
    assert!(
        matches!(err, StateError::TaskNotFound(ref id) if id.as_str() == "t9"),
        "{err}"
    );
    assert_eq!(
        store.credentials(&tid("t1")).unwrap().len(),
        4,
        "nothing added"
    );
}

#[test]
fn no_credential_is_added_to_an_ended_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, root) = started(&path, "t1");
    store
        .add_credential(&delegation("t1", "a", "t1-root", 1))
        .unwrap();
    store
        .end_task(&tid("t1"), t0() + Duration::minutes(1), END_REASON_ENDED)
        .unwrap();

    let err = store
        .add_credential(&delegation("t1", "b", "t1-root", 1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::TaskEnded { ref task_id, ref reason } if task_id.as_str() == "t1" && reason == "ended"
        ),
        "{err}"
    );
    let ids: Vec<String> = store
        .credentials(&tid("t1"))
        .unwrap()
        .into_iter()
        .map(|c| c.revocation_id)
        .collect();
    assert_eq!(ids, vec![root.revocation_id, "a".to_owned()]);
}

#[test]
fn ending_revokes_every_credential_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    let (open, open_root) = task("t2", t0() + Duration::hours(1));
    store.create_task(&open, &open_root).unwrap();
    store
        .add_credential(&delegation("t1", "a", "t1-root", 1))
        .unwrap();
    store
        .add_credential(&delegation("t1", "b", "a", 2))
        .unwrap();

    let ended_at = t0() + Duration::minutes(2);
    let ids = store
        .end_task(&tid("t1"), ended_at, END_REASON_ENDED)
        .unwrap();
    assert_eq!(ids, vec!["t1-root", "a", "b"], "every id, issue order");
    drop(store);

    // After a reopen (as after a restart) the end and the revocations hold.
    let store = TaskStore::open(&path).unwrap();
    let revoked = store.revoked_ids(DateTime::<Utc>::UNIX_EPOCH).unwrap();
    for id in &ids {
        assert!(revoked.contains_key(id), "{id} revoked after reopen");
    }
    assert!(
        !revoked.contains_key("t2-root"),
        "an open task's credential is not revoked"
    );
    let revocations = store.revocations().unwrap();
    assert_eq!(revocations.len(), 3);
    assert!(
        revocations
            .iter()
            .all(|r| r.task_id.as_str() == "t1" && r.revoked_at == ended_at)
    );
    let task = store.task(&tid("t1")).unwrap().unwrap();
    assert_eq!(task.ended_at, Some(ended_at));
    assert_eq!(task.end_reason.as_deref(), Some(END_REASON_ENDED));
    assert!(!store.task(&tid("t2")).unwrap().unwrap().is_ended());
}

#[test]
fn no_decision_is_recorded_after_the_end_and_the_end_is_not_before_any() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = started(&dir.path().join("state.db"), "t1");
    // Clocked after the caller's end, written before it.
    store
        .record_decision(&decision("t1", "d1", "read", 5_000))
        .unwrap();
    store
        .end_task(&tid("t1"), t0() + Duration::seconds(1), END_REASON_ENDED)
        .unwrap();
    let ended_at = store.task(&tid("t1")).unwrap().unwrap().ended_at.unwrap();
    assert_eq!(ended_at, t0() + Duration::milliseconds(5_000));
    let refused = store
        .record_decision(&decision("t1", "d2", "read", 6_000))
        .unwrap_err();
    assert!(matches!(refused, StateError::TaskEnded { .. }), "{refused}");
    assert_eq!(store.history(&tid("t1")).unwrap().len(), 1);
}

#[test]
fn ending_twice_changes_nothing_and_returns_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    store
        .add_credential(&delegation("t1", "a", "t1-root", 1))
        .unwrap();
    let first_at = t0() + Duration::minutes(1);
    let first = store
        .end_task(&tid("t1"), first_at, END_REASON_ENDED)
        .unwrap();
    let revocations = store.revocations().unwrap();

    let second = store
        .end_task(
            &tid("t1"),
            first_at + Duration::minutes(5),
            "context changed",
        )
        .unwrap();
    assert_eq!(second, first);
    let task = store.task(&tid("t1")).unwrap().unwrap();
    assert_eq!(task.ended_at, Some(first_at), "ended_at unchanged");
    assert_eq!(task.end_reason.as_deref(), Some(END_REASON_ENDED));
    assert_eq!(store.revocations().unwrap(), revocations, "no new rows");

    let err = store
        .end_task(&tid("nope"), first_at, END_REASON_ENDED)
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");
}

#[test]
fn end_expired_ends_only_open_tasks_whose_ttl_ran_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = TaskStore::open(&path).unwrap();
    let now = t0() + Duration::hours(1);
    for (id, expires_at) in [
        ("past", now - Duration::minutes(10)),
        ("exactly-now", now),
        ("future", now + Duration::nanoseconds(1)),
        ("ended-by-caller", now - Duration::minutes(20)),
    ] {
        let (task, root) = task(id, expires_at);
        store.create_task(&task, &root).unwrap();
    }
    store
        .add_credential(&delegation("past", "past-sub", "past-root", 1))
        .unwrap();
    let caller_end = now - Duration::minutes(30);
    store
        .end_task(&tid("ended-by-caller"), caller_end, END_REASON_ENDED)
        .unwrap();

    let ended = store.end_expired(now).unwrap();
    assert_eq!(
        ended,
        vec![
            (
                tid("past"),
                vec!["past-root".to_owned(), "past-sub".to_owned()]
            ),
            (tid("exactly-now"), vec!["exactly-now-root".to_owned()]),
        ],
        "earliest expiry first; ended tasks are not ended again"
    );
    for id in ["past", "exactly-now"] {
        let task = store.task(&tid(id)).unwrap().unwrap();
        assert_eq!(task.ended_at, Some(now));
        assert_eq!(task.end_reason.as_deref(), Some(END_REASON_EXPIRED));
    }
    assert!(!store.task(&tid("future")).unwrap().unwrap().is_ended());
    let by_caller = store.task(&tid("ended-by-caller")).unwrap().unwrap();
    assert_eq!(by_caller.ended_at, Some(caller_end));
    assert_eq!(by_caller.end_reason.as_deref(), Some(END_REASON_ENDED));
    let revoked = store.revoked_ids(DateTime::<Utc>::UNIX_EPOCH).unwrap();
    assert!(revoked.contains_key("past-sub") && revoked.contains_key("exactly-now-root"));
    assert!(!revoked.contains_key("future-root"));
    // A server holds only the ids of tasks that have not expired: those of
    // expired tasks are refused for their expiry.
    assert!(store.revoked_ids(now).unwrap().is_empty());

    assert!(store.end_expired(now).unwrap().is_empty(), "nothing twice");
    let later = store.end_expired(now + Duration::seconds(1)).unwrap();
    assert_eq!(later, vec![(tid("future"), vec!["future-root".to_owned()])]);
}

#[test]
fn history_keeps_decision_order_and_takes_one_result_per_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    let (other, other_root) = task("t2", t0() + Duration::hours(1));
    store.create_task(&other, &other_root).unwrap();

    // Interleaved with another task's decisions; recorded order is kept
    // even where decided_at is not increasing.
    store
        .record_decision(&decision("t1", "d1", "read", 5))
        .unwrap();
    store
        .record_decision(&decision("t2", "x1", "read", 6))
        .unwrap();
    store
        .record_decision(&decision("t1", "d2", "search", 4))
        .unwrap();
    let with_result = HistoryEntry {
        result: Some(result("ok", &[])),
        annotations: annotations(serde_json::json!({"readOnlyHint": true})),
        ..decision("t1", "d3", "read", 7)
    };
    store.record_decision(&with_result).unwrap();
    let order: Vec<String> = store
        .history(&tid("t1"))
        .unwrap()
        .into_iter()
        .map(|e| e.decision_id.to_string())
        .collect();
    assert_eq!(order, vec!["d1", "d2", "d3"]);
    assert_eq!(store.history(&tid("t1")).unwrap()[2], with_result);
    assert_eq!(store.history(&tid("t1")).unwrap()[0].annotations, None);
    assert_eq!(store.history(&tid("t2")).unwrap().len(), 1);
    assert!(store.history(&tid("t9")).unwrap().is_empty());

    // A result is recorded once, against a known decision.
    let reported = store
        .record_result(&did("d2"), result("ok", &["untrusted"]))
        .unwrap();
    assert_eq!(reported.decision_id.as_str(), "d2");
    assert_eq!(reported.result, Some(result("ok", &["untrusted"])));
    assert_eq!(store.decision(&did("d2")).unwrap(), Some(reported.clone()));
    assert_eq!(store.history(&tid("t1")).unwrap()[1], reported);
    let err = store
        .record_result(&did("d2"), result("error", &[]))
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .record_result(&did("d3"), result("ok", &[]))
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert_eq!(
        store.decision(&did("d2")).unwrap().unwrap().result,
        Some(result("ok", &["untrusted"])),
        "the first report stands"
    );
    let err = store
        .record_result(&did("d-none"), result("ok", &[]))
        .unwrap_err();
    assert!(
        matches!(err, StateError::DecisionNotFound(ref id) if id.as_str() == "d-none"),
        "{err}"
    );

    // A decision id is recorded once, under a known task.
    let err = store
        .record_decision(&decision("t1", "d1", "read", 8))
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .record_decision(&decision("t9", "d9", "read", 8))
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");

    // A call allowed before the end may finish after it: its result is
    // still recorded.
    store
        .end_task(&tid("t1"), t0() + Duration::minutes(1), END_REASON_ENDED)
        .unwrap();
    let late = store
        .record_result(&did("d1"), result("error", &["confidential"]))
        .unwrap();
    assert_eq!(late.result.unwrap().labels, vec!["confidential"]);
}

#[test]
fn a_reopened_store_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    let (t2, root2) = task("t2", t0() + Duration::hours(2));
    store.create_task(&t2, &root2).unwrap();
    store
        .add_credential(&delegation("t1", "a", "t1-root", 1))
        .unwrap();
    store
        .record_decision(&decision("t1", "d1", "read", 1))
        .unwrap();
    store
        .record_decision(&decision("t2", "d2", "read", 2))
        .unwrap();
    store
        .record_result(&did("d1"), result("ok", &["untrusted"]))
        .unwrap();
    store
        .end_task(&tid("t2"), t0() + Duration::minutes(3), END_REASON_ENDED)
        .unwrap();

    let snapshot = |store: &TaskStore| {
        (
            ["t1", "t2"].map(|id| {
                (
                    store.task(&tid(id)).unwrap(),
                    store.credentials(&tid(id)).unwrap(),
                    store.history(&tid(id)).unwrap(),
                )
            }),
            store.revocations().unwrap(),
            store.revoked_ids(DateTime::<Utc>::UNIX_EPOCH).unwrap(),
        )
    };
    let before = snapshot(&store);
    drop(store);
    let store = TaskStore::open(&path).unwrap();
    assert_eq!(snapshot(&store), before);

    // The reopened store keeps working where the first one stopped.
    store
        .record_decision(&decision("t1", "d3", "read", 3))
        .unwrap();
    assert_eq!(store.history(&tid("t1")).unwrap().len(), 2);
}

#[test]
fn two_connections_writing_at_once_lose_nothing() {
    const TASKS: usize = 20;
    const DECISIONS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = Arc::new(TaskStore::open(&path).unwrap());
    let second = Arc::new(TaskStore::open(&path).unwrap());

    // Two stores (two connections) and a second thread on the first store.
    let writers = [
        ("a", Arc::clone(&first)),
        ("b", Arc::clone(&second)),
        ("c", Arc::clone(&first)),
    ];
    let handles: Vec<_> = writers
        .into_iter()
        .map(|(name, store)| {
            std::thread::spawn(move || {
                for n in 0..TASKS {
                    let id = format!("{name}-{n}");
                    let (task, root) = task(&id, t0() + Duration::hours(1));
                    store.create_task(&task, &root).unwrap();
                    for d in 0..DECISIONS {
                        store
                            .record_decision(&decision(&id, &format!("{id}-d{d}"), "read", 0))
                            .unwrap();
                    }
                    if n % 2 == 0 {
                        store.end_task(&tid(&id), t0(), END_REASON_ENDED).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    drop((first, second));

    let store = TaskStore::open(&path).unwrap();
    for name in ["a", "b", "c"] {
        for n in 0..TASKS {
            let id = format!("{name}-{n}");
            assert!(store.task(&tid(&id)).unwrap().is_some(), "{id}");
            let order: Vec<String> = store
                .history(&tid(&id))
                .unwrap()
                .into_iter()
                .map(|e| e.decision_id.to_string())
                .collect();
            let expected: Vec<String> = (0..DECISIONS).map(|d| format!("{id}-d{d}")).collect();
            assert_eq!(order, expected, "{id}");
        }
    }
    assert_eq!(
        store
            .revoked_ids(DateTime::<Utc>::UNIX_EPOCH)
            .unwrap()
            .len(),
        3 * TASKS / 2
    );
    let conn = Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let dangling: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0, "no dangling reference");
}

#[test]
fn another_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();

    // Something else (the receipt ledger, say) in the file: not written to.
    let other = dir.path().join("ledger.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE receipts (idx INTEGER PRIMARY KEY); PRAGMA user_version = 1;")
        .unwrap();
    let err = TaskStore::open(&other).unwrap_err();
    assert!(matches!(err, StateError::Unsupported(_)), "{err}");
    let tables: i64 = Connection::open(&other)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1, "no table added");

    // A state database of a newer schema.
    let newer = dir.path().join("state.db");
    drop(TaskStore::open(&newer).unwrap());
    Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let err = TaskStore::open(&newer).unwrap_err();
    assert!(matches!(err, StateError::Unsupported(_)), "{err}");
}

#[test]
fn a_schema_1_database_gains_history_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    store
        .record_decision(&decision("t1", "d1", "read", 1))
        .unwrap();
    drop(store);
    // What schema 1 was: the same tables without history.annotations, and
    // without what later schemas added.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE sessions; DROP TABLE token_exchanges; DROP TABLE approvals;
             ALTER TABLE history DROP COLUMN credential;
             ALTER TABLE history DROP COLUMN annotations; PRAGMA user_version = 1;",
        )
        .unwrap();

    let store = TaskStore::open(&path).unwrap();
    let history = store.history(&tid("t1")).unwrap();
    assert_eq!(history, vec![decision("t1", "d1", "read", 1)]);
    let annotated = HistoryEntry {
        annotations: annotations(serde_json::json!({"openWorldHint": false})),
        ..decision("t1", "d2", "read", 2)
    };
    store.record_decision(&annotated).unwrap();
    assert_eq!(store.decision(&did("d2")).unwrap(), Some(annotated));
    drop(store);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 8);
}

/// Task `task_id`'s history replayed from the start, as decisions were made
/// before summaries were kept: each result's labels at its own call.
fn replayed(store: &TaskStore, task_id: &str) -> SessionSummary {
    let history = store
        .history(&tid(task_id))
        .unwrap()
        .into_iter()
        .map(|entry| mandate_core::HistoryEntry {
            server: entry.server,
            tool: entry.tool,
            decision: entry.decision,
            labels: entry.result.map(|r| r.labels).unwrap_or_default(),
            annotations: entry
                .annotations
                .map(|a| serde_json::from_value(serde_json::Value::Object(a)).unwrap()),
        })
        .collect();
    let mut summary = SessionSummary::from(SessionInput {
        history,
        ..SessionInput::default()
    });
    summary.last_use = None;
    summary
}

/// The stored summary without its position bookkeeping (history seq, which
/// a replay numbers from 0).
fn summary_of(store: &TaskStore, task_id: &str) -> SessionSummary {
    let mut summary = store.session(&tid(task_id)).unwrap();
    summary.last_use = None;
    summary
}

#[test]
fn the_session_summary_follows_history_and_late_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    let (other, other_root) = task("t2", t0() + Duration::hours(1));
    store.create_task(&other, &other_root).unwrap();
    assert_eq!(
        store.session(&tid("t1")).unwrap(),
        SessionSummary::default()
    );

    let fetch = HistoryEntry {
        annotations: annotations(serde_json::json!({"readOnlyHint": true})),
        ..decision("t1", "d1", "fetch", 1)
    };
    store.record_decision(&fetch).unwrap();
    store
        .record_decision(&decision("t2", "x1", "fetch", 2))
        .unwrap();
    store
        .record_decision(&HistoryEntry {
            decision: Decision::Deny,
            ..decision("t1", "d2", "delete", 3)
        })
        .unwrap();
    store
        .record_decision(&decision("t1", "d3", "send", 4))
        .unwrap();
    // fetch's result arrives after send was allowed: send ran with it in
    // the session, so it is in the session but not new.
    store
        .record_result(&did("d1"), result("ok", &["untrusted"]))
        .unwrap();
    let summary = store.session(&tid("t1")).unwrap();
    assert_eq!((summary.calls, summary.denials), (3, 1));
    assert_eq!(summary.uses_of("tickets", "fetch"), 1);
    assert_eq!(summary.uses_of("tickets", "delete"), 0);
    assert!(summary.labels.contains("untrusted"));
    assert!(summary.new_labels.is_empty());
    assert_eq!(summary_of(&store, "t1"), replayed(&store, "t1"));

    // send's own result is new until the next use.
    store
        .record_result(&did("d3"), result("ok", &["confidential"]))
        .unwrap();
    assert_eq!(
        store.session(&tid("t1")).unwrap().new_labels,
        ["confidential".to_owned()].into()
    );
    assert_eq!(summary_of(&store, "t1"), replayed(&store, "t1"));
    store
        .record_decision(&decision("t1", "d4", "send", 5))
        .unwrap();
    let summary = store.session(&tid("t1")).unwrap();
    assert!(summary.new_labels.is_empty());
    assert_eq!(summary.uses_of("tickets", "send"), 2);
    assert_eq!(summary_of(&store, "t1"), replayed(&store, "t1"));

    // The other task's session is its own; a refused write folds nothing.
    assert_eq!(store.session(&tid("t2")).unwrap().calls, 1);
    let before = store.session(&tid("t1")).unwrap();
    store
        .record_decision(&decision("t1", "d4", "send", 6))
        .unwrap_err();
    store.record_result(&did("d4"), result("ok", &[])).unwrap();
    store
        .record_result(&did("d4"), result("ok", &["untrusted"]))
        .unwrap_err();
    assert_eq!(store.session(&tid("t1")).unwrap(), before);
    assert_eq!(
        store.session(&tid("t1")).unwrap().action_classes.len(),
        1,
        "read, from fetch's annotations"
    );
}

#[test]
fn a_schema_4_database_gains_session_summaries_folded_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    let (other, other_root) = task("t2", t0() + Duration::hours(1));
    store.create_task(&other, &other_root).unwrap();
    for (task, id, tool, n) in [
        ("t1", "d1", "fetch", 1),
        ("t2", "x1", "read", 2),
        ("t1", "d2", "send", 3),
    ] {
        store.record_decision(&decision(task, id, tool, n)).unwrap();
    }
    store
        .record_result(&did("d1"), result("ok", &["untrusted"]))
        .unwrap();
    let expected = (
        store.session(&tid("t1")).unwrap(),
        store.session(&tid("t2")).unwrap(),
    );
    drop(store);
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE sessions; PRAGMA user_version = 4;")
        .unwrap();

    let store = TaskStore::open(&path).unwrap();
    assert_eq!(
        (
            store.session(&tid("t1")).unwrap(),
            store.session(&tid("t2")).unwrap()
        ),
        expected
    );
    assert_eq!(summary_of(&store, "t1"), replayed(&store, "t1"));
}

/// Ids are parsed where they are read back: a row whose id is not one
/// (written by hand here; the store never writes one) is corrupt, not a
/// record.
#[test]
fn a_stored_id_that_is_not_an_id_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (store, _, _) = started(&path, "t1");
    store
        .record_decision(&decision("t1", "d1", "read", 0))
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE history SET decision_id = '' WHERE decision_id = 'd1'",
            [],
        )
        .unwrap();
    let err = store.history(&tid("t1")).unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("decision id `` is empty"), "{err}");
}
