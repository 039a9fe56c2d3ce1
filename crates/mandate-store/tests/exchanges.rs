#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! Token exchanges in the state database: the credential each decision was
//! made under, one exchange per decision, none after the task ended, and a
//! schema 3 database migrated without losing its history.

use chrono::{DateTime, Duration, TimeZone, Utc};
use mandate_core::{Decision, DecisionId, TaskId};
use mandate_store::{
    CredentialRecord, END_REASON_ENDED, ExchangeRecord, HistoryEntry, StateError, TaskRecord,
    TaskStore,
};
use rusqlite::Connection;

/// A task id as the store takes it.
fn tid(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

/// A decision id as the store takes it.
fn did(id: &str) -> DecisionId {
    DecisionId::new(id).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn open_task(store: &TaskStore, id: &str) {
    let root_id = format!("{id}-root");
    let task = TaskRecord {
        id: tid(id),
        agent: "spiffe://example.org/planner".to_owned(),
        on_behalf_of: None,
        intent: "mail ops".to_owned(),
        tools: vec!["mail/send".to_owned()],
        labels: Vec::new(),
        params: serde_json::Map::new(),
        audience: "mandate".to_owned(),
        max_depth: 0,
        created_at: t0(),
        expires_at: t0() + Duration::hours(1),
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
        labels: Vec::new(),
        issued_at: t0(),
        expires_at: task.expires_at,
    };
    store.create_task(&task, &root).unwrap();
}

fn decision(task_id: &str, id: &str) -> HistoryEntry {
    HistoryEntry {
        decision_id: did(id),
        task_id: tid(task_id),
        agent: "spiffe://example.org/planner".to_owned(),
        server: "mail".to_owned(),
        tool: "send".to_owned(),
        decision: Decision::Allow,
        decided_at: t0(),
        result: None,
        annotations: None,
    }
}

fn exchange(task_id: &str, decision_id: &str, jti: &str) -> ExchangeRecord {
    ExchangeRecord {
        decision_id: did(decision_id),
        task_id: tid(task_id),
        credential: format!("{task_id}-root"),
        resource: "https://tools.example.com/mail".to_owned(),
        token_id: jti.to_owned(),
        scope: vec!["mail/send".to_owned()],
        exchanged_at: t0() + Duration::seconds(1),
        expires_at: t0() + Duration::seconds(61),
    }
}

#[test]
fn a_decision_is_exchanged_once_and_never_after_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    open_task(&store, "t1");
    store
        .record_decision_under(&decision("t1", "d1"), Some("t1-root"))
        .unwrap();
    store.record_decision(&decision("t1", "d2")).unwrap();

    let (entry, credential) = store.decided_call(&did("d1")).unwrap().unwrap();
    assert_eq!(entry, decision("t1", "d1"));
    assert_eq!(credential.as_deref(), Some("t1-root"));
    assert_eq!(store.decided_call(&did("d2")).unwrap().unwrap().1, None);
    assert_eq!(store.decided_call(&did("nope")).unwrap(), None);

    store.record_exchange(&exchange("t1", "d1", "j1")).unwrap();
    assert_eq!(
        store.exchanges(&tid("t1")).unwrap(),
        vec![exchange("t1", "d1", "j1")]
    );
    let again = store
        .record_exchange(&exchange("t1", "d1", "j2"))
        .unwrap_err();
    assert!(matches!(again, StateError::Conflict(_)), "{again}");

    // A decision that is not in that task's history.
    let unknown = store
        .record_exchange(&exchange("t1", "nope", "j3"))
        .unwrap_err();
    assert!(
        matches!(unknown, StateError::DecisionNotFound(_)),
        "{unknown}"
    );
    open_task(&store, "t2");
    let foreign = store
        .record_exchange(&exchange("t2", "d2", "j4"))
        .unwrap_err();
    assert!(
        matches!(foreign, StateError::DecisionNotFound(_)),
        "{foreign}"
    );

    store
        .end_task(&tid("t1"), t0() + Duration::seconds(2), END_REASON_ENDED)
        .unwrap();
    let ended = store
        .record_exchange(&exchange("t1", "d2", "j5"))
        .unwrap_err();
    assert!(matches!(ended, StateError::TaskEnded { .. }), "{ended}");
    assert_eq!(store.exchanges(&tid("t1")).unwrap().len(), 1);
}

#[test]
fn a_schema_3_database_gains_credentials_and_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = TaskStore::open(&path).unwrap();
    open_task(&store, "t1");
    store.record_decision(&decision("t1", "d1")).unwrap();
    drop(store);
    // What schema 3 was: the same tables without these.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE sessions; DROP TABLE token_exchanges;
             ALTER TABLE history DROP COLUMN credential; PRAGMA user_version = 3;",
        )
        .unwrap();

    let store = TaskStore::open(&path).unwrap();
    assert_eq!(
        store.history(&tid("t1")).unwrap(),
        vec![decision("t1", "d1")]
    );
    assert_eq!(store.decided_call(&did("d1")).unwrap().unwrap().1, None);
    store
        .record_decision_under(&decision("t1", "d2"), Some("t1-root"))
        .unwrap();
    store.record_exchange(&exchange("t1", "d2", "j1")).unwrap();
    drop(store);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 8);
    // Opening again changes nothing.
    let store = TaskStore::open(&path).unwrap();
    assert_eq!(store.exchanges(&tid("t1")).unwrap().len(), 1);
}
