//! Approvals in the state database: round trip, the queue's order, the
//! expiry scan, compare-and-swap updates, and the upgrades of schema-2 and
//! schema-5 databases.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use chrono::{DateTime, Duration, Utc};
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, DecisionId, Requester, Resolution, TaskId,
};
use mandate_store::{ApprovalRecord, TaskStore};
use rusqlite::Connection;
use serde_json::json;

/// A task id as the store takes it.
fn tid(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

/// A decision id as the store takes it.
fn did(id: &str) -> DecisionId {
    DecisionId::new(id).unwrap()
}

/// An approval id as the store takes it.
fn aid(id: &str) -> ApprovalId {
    ApprovalId::new(id).unwrap()
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 123_456_789).unwrap()
}

fn record(id: &str, at: i64, ttl: i64) -> ApprovalRecord {
    ApprovalRecord {
        approval: Approval::new(
            aid(id),
            did(&format!("decision-{id}")),
            format!("sha256:{id}"),
            Requester {
                agent: "agent/mailer".into(),
                chain: vec!["agent/planner".into()],
                on_behalf_of: Some("alice".into()),
            },
            t(at),
            Duration::seconds(ttl),
        ),
        task_id: Some("task-1".into()),
        summary: json!({"tool": "send_email", "arguments": {"to": "bob@example.com"}}),
        receipt: json!({"v": 1, "index": 7, "kind": "decision"}),
    }
}

#[test]
fn an_approval_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    let a = record("a1", 0, 300);
    store.create_approval(&a).unwrap();
    assert_eq!(store.approval(&aid("a1")).unwrap(), Some(a.clone()));
    assert_eq!(store.approval(&aid("nope")).unwrap(), None);
    // The same id twice is refused, not overwritten.
    assert!(store.create_approval(&a).is_err());
    drop(store);
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(store.approval(&aid("a1")).unwrap(), Some(a));
}

#[test]
fn the_queue_is_newest_first_and_filtered_by_stored_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    for (id, at) in [("a1", 0), ("a2", 10), ("a3", 5)] {
        store.create_approval(&record(id, at, 300)).unwrap();
    }
    let denied = record("a3", 5, 300)
        .approval
        .resolve("bob", Resolution::Deny, "no", t(6), false)
        .unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Pending, &denied)
            .unwrap()
    );
    let ids = |status| -> Vec<String> {
        store
            .approvals(status, t(7), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.approval.id.to_string())
            .collect()
    };
    assert_eq!(ids(None), ["a2", "a3", "a1"]);
    assert_eq!(ids(Some(ApprovalStatus::Pending)), ["a2", "a1"]);
    assert_eq!(ids(Some(ApprovalStatus::Denied)), ["a3"]);
    assert_eq!(store.approvals(None, t(7), 1).unwrap().len(), 1);
    // At a time past a2's and a1's expiry, unswept, they show as expired.
    let at = |status, secs| -> Vec<String> {
        store
            .approvals(Some(status), t(secs), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.approval.id.to_string())
            .collect()
    };
    assert_eq!(at(ApprovalStatus::Expired, 305), ["a1"]);
    assert_eq!(at(ApprovalStatus::Pending, 305), ["a2"]);
    assert_eq!(at(ApprovalStatus::Expired, 400), ["a2", "a1"]);
    assert!(at(ApprovalStatus::Pending, 400).is_empty());
}

#[test]
fn due_approvals_are_the_pending_ones_past_their_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    store.create_approval(&record("early", 0, 10)).unwrap();
    store.create_approval(&record("late", 0, 100)).unwrap();
    store.create_approval(&record("answered", 0, 10)).unwrap();
    let approved = record("answered", 0, 10)
        .approval
        .resolve("bob", Resolution::Approve, "ok", t(1), false)
        .unwrap();
    store
        .update_approval(ApprovalStatus::Pending, &approved)
        .unwrap();
    let due: Vec<String> = store
        .due_approvals(t(10), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.approval.id.to_string())
        .collect();
    assert_eq!(due, ["early"]);
    assert!(store.due_approvals(t(9), 10).unwrap().is_empty());
    assert_eq!(store.due_approvals(t(100), 1).unwrap().len(), 1);
}

#[test]
fn a_tasks_pending_approvals_are_its_own_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    for (id, at, task) in [
        ("p2", 5, "task-1"),
        ("p1", 0, "task-1"),
        ("answered", 1, "task-1"),
        ("other", 2, "task-2"),
    ] {
        let mut r = record(id, at, 300);
        r.task_id = Some(task.into());
        store.create_approval(&r).unwrap();
    }
    let approved = record("answered", 1, 300)
        .approval
        .resolve("bob", Resolution::Approve, "ok", t(2), false)
        .unwrap();
    store
        .update_approval(ApprovalStatus::Pending, &approved)
        .unwrap();
    let ids = |task: &str, limit: usize| -> Vec<String> {
        store
            .pending_approvals_of_task(&tid(task), limit)
            .unwrap()
            .into_iter()
            .map(|r| r.approval.id.to_string())
            .collect()
    };
    assert_eq!(ids("task-1", 10), ["p1", "p2"]);
    assert_eq!(ids("task-1", 1), ["p1"]);
    assert_eq!(ids("task-2", 10), ["other"]);
    assert!(ids("task-3", 10).is_empty());
}

#[test]
fn pending_approvals_are_counted_per_agent_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    store.create_approval(&record("a1", 0, 10)).unwrap();
    store.create_approval(&record("a2", 0, 100)).unwrap();
    assert_eq!(store.open_approvals_of("agent/mailer", t(5)).unwrap(), 2);
    assert_eq!(store.open_approvals_of("agent/mailer", t(10)).unwrap(), 1);
    assert_eq!(store.open_approvals_of("agent/other", t(5)).unwrap(), 0);
}

#[test]
fn an_update_applies_only_from_the_expected_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    let a = record("a1", 0, 300);
    store.create_approval(&a).unwrap();
    let approved = a
        .approval
        .resolve("bob", Resolution::Approve, "fine", t(1), false)
        .unwrap();
    let denied = a
        .approval
        .resolve("carol", Resolution::Deny, "no", t(1), false)
        .unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Pending, &approved)
            .unwrap()
    );
    // A second resolution racing the first changes nothing.
    assert!(
        !store
            .update_approval(ApprovalStatus::Pending, &denied)
            .unwrap()
    );
    let used = approved.release("sha256:a1", &did("d2"), t(2)).unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Approved, &used)
            .unwrap()
    );
    // Released once: a second release finds it used.
    assert!(
        !store
            .update_approval(ApprovalStatus::Approved, &used)
            .unwrap()
    );
    let stored = store.approval(&aid("a1")).unwrap().unwrap().approval;
    assert_eq!(stored, used);
    assert_eq!(stored.resolved_by.as_deref(), Some("bob"));
    assert_eq!(stored.released_by, Some(did("d2")));
}

#[test]
fn a_schema_2_database_gains_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(TaskStore::open(&path).unwrap());
    // What schema 2 was: no approvals, nor what later schemas added.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE sessions; DROP TABLE approvals; DROP TABLE token_exchanges;
             ALTER TABLE history DROP COLUMN credential; PRAGMA user_version = 2;",
        )
        .unwrap();
    let store = TaskStore::open(&path).unwrap();
    store.create_approval(&record("a1", 0, 300)).unwrap();
    assert!(store.approval(&aid("a1")).unwrap().is_some());
}

#[test]
fn a_schema_5_database_keeps_its_approvals_and_can_withdraw_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = TaskStore::open(&path).unwrap();
    let a1 = record("a1", 0, 300);
    store.create_approval(&a1).unwrap();
    drop(store);
    // What schema 5 was: the same approvals table, without `withdrawn`
    // among the statuses its CHECK allows.
    let conn = Connection::open(&path).unwrap();
    let table: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'approvals'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let schema_5 = table.replace(", 'withdrawn'", "");
    assert_ne!(schema_5, table);
    conn.execute_batch(&format!(
        "ALTER TABLE approvals RENAME TO newer;
         DROP INDEX approvals_pending; DROP INDEX approvals_open_by_agent;
         DROP INDEX approvals_by_time;
         {schema_5};
         INSERT INTO approvals SELECT * FROM newer; DROP TABLE newer;
         CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
         CREATE INDEX approvals_pending_by_agent ON approvals (agent) WHERE status = 'pending';
         CREATE INDEX approvals_by_time ON approvals (created_at);
         PRAGMA user_version = 5;"
    ))
    .unwrap();
    assert!(
        conn.execute("UPDATE approvals SET status = 'withdrawn'", [])
            .is_err(),
        "schema 5 refuses the status"
    );
    drop(conn);

    let store = TaskStore::open(&path).unwrap();
    assert_eq!(store.approval(&aid("a1")).unwrap(), Some(a1.clone()));
    let withdrawn = a1
        .approval
        .withdraw("the call was cancelled", t(10))
        .unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Pending, &withdrawn)
            .unwrap()
    );
    let stored = store.approval(&aid("a1")).unwrap().unwrap().approval;
    assert_eq!(stored, withdrawn);
    assert_eq!(stored.status, ApprovalStatus::Withdrawn);
    // No longer in the pending queue.
    assert!(
        store
            .approvals(Some(ApprovalStatus::Pending), t(11), 10)
            .unwrap()
            .is_empty()
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 8);
    let indexes: Vec<String> = {
        let conn = Connection::open(&path).unwrap();
        let mut statement = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'approvals' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        indexes,
        [
            "approvals_by_time",
            "approvals_open_by_agent",
            "approvals_open_by_task",
            "approvals_pending",
            "approvals_pending_by_request",
        ]
    );
    // A withdrawn approval counts against its agent until its expiry.
    assert_eq!(store.open_approvals_of("agent/mailer", t(11)).unwrap(), 1);
    assert_eq!(store.open_approvals_of("agent/mailer", t(300)).unwrap(), 0);
}
