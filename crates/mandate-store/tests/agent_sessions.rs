#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! Agents' sessions in the state database: one per agent and session id,
//! shared by every writer, tainted as an open-world call is allowed,
//! surviving a reopen, and added to an older database.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use mandate_core::{Decision, SessionId, ToolAnnotations};
use mandate_store::{SessionDecision, TaskStore};
use rusqlite::Connection;

const AGENT: &str = "spiffe://example.org/agent/web";

fn id(text: &str) -> SessionId {
    text.parse().unwrap()
}

fn annotations(read_only: bool, open_world: bool) -> Option<ToolAnnotations> {
    Some(ToolAnnotations {
        read_only_hint: Some(read_only),
        destructive_hint: Some(false),
        idempotent_hint: None,
        open_world_hint: Some(open_world),
        ..ToolAnnotations::default()
    })
}

fn decided(
    agent: &str,
    session: &str,
    tool: &str,
    decision: Decision,
    open_world: bool,
) -> SessionDecision {
    SessionDecision {
        agent: agent.to_owned(),
        session: id(session),
        server: "srv".to_owned(),
        tool: tool.to_owned(),
        decision,
        annotations: annotations(true, open_world),
        decided_at: Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap(),
    }
}

#[test]
fn an_allowed_open_world_call_taints_the_agents_session_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(
        store.agent_session(AGENT, &id("research-1")).unwrap().calls,
        0
    );

    store
        .record_session_decision(decided(AGENT, "research-1", "read", Decision::Allow, false))
        .unwrap();
    store
        .record_session_decision(decided(AGENT, "research-1", "fetch", Decision::Deny, true))
        .unwrap();
    let summary = store.agent_session(AGENT, &id("research-1")).unwrap();
    assert_eq!((summary.calls, summary.denials), (2, 1));
    assert!(
        summary.labels.is_empty(),
        "a denied fetch brought nothing in"
    );

    store
        .record_session_decision(decided(AGENT, "research-1", "fetch", Decision::Allow, true))
        .unwrap();
    let summary = store.agent_session(AGENT, &id("research-1")).unwrap();
    assert!(summary.labels.contains("untrusted"));
    assert!(summary.new_labels.contains("untrusted"));
    assert_eq!(summary.uses_of("srv", "fetch"), 1);

    // Another session of the agent, and the same session id of another
    // agent, are other sessions.
    assert_eq!(
        store.agent_session(AGENT, &id("research-2")).unwrap().calls,
        0
    );
    assert_eq!(
        store
            .agent_session("spiffe://example.org/agent/other", &id("research-1"))
            .unwrap()
            .calls,
        0
    );
}

#[test]
fn writers_at_once_lose_no_decision_and_a_reopened_store_keeps_the_taint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Arc::new(TaskStore::open(&path).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    store
                        .record_session_decision(decided(
                            AGENT,
                            "s",
                            "fetch",
                            Decision::Allow,
                            n == 3,
                        ))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(store);
    let store = TaskStore::open(&path).unwrap();
    let summary = store.agent_session(AGENT, &id("s")).unwrap();
    assert_eq!(summary.calls, 80);
    assert_eq!(summary.uses_of("srv", "fetch"), 80);
    assert!(summary.labels.contains("untrusted"));
}

#[test]
fn a_schema_6_database_gains_agent_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(TaskStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE agent_sessions; PRAGMA user_version = 6;")
        .unwrap();
    let store = TaskStore::open(&path).unwrap();
    store
        .record_session_decision(decided(AGENT, "s", "fetch", Decision::Allow, true))
        .unwrap();
    assert!(
        store
            .agent_session(AGENT, &id("s"))
            .unwrap()
            .labels
            .contains("untrusted")
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 8);
}
