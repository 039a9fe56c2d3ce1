#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! The [`StateStore`] contract, run against both backends: embedded SQLite
//! (`SqliteState`) and PostgreSQL (`PgState`, on a real server the tests
//! start). Each contract is one async function; `both!` makes a SQLite and
//! a PostgreSQL test of it. What only several instances can show (writers
//! racing through separate pools) runs on PostgreSQL alone, at the end.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mandate_core::provenance::{Grounds, Source};
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, Decision, DecisionId, Requester, Resolution, SessionId,
    TaskId, ToolAnnotations,
};
use mandate_store::postgres::PgStore;
use mandate_store::{
    ApprovalRecord, CallResult, CredentialRecord, END_REASON_ENDED, END_REASON_EXPIRED,
    ExchangeRecord, HistoryEntry, SessionDecision, SqliteState, StateError, StateStore, TaskRecord,
};
use serde_json::json;

/// A store under test, with what keeps it alive.
struct Backend {
    store: Arc<dyn StateStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteState::open(&dir.path().join("state.db")).unwrap();
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn postgres() -> Backend {
    let url = test_postgres::shared().database();
    let store = PgStore::connect(&url).await.unwrap();
    Backend {
        store: Arc::new(store.state()),
        _dir: None,
    }
}

/// A SQLite and a PostgreSQL test of each contract.
macro_rules! both {
    ($($contract:ident),* $(,)?) => {$(
        mod $contract {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let backend = super::sqlite().await;
                super::$contract(&*backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let backend = super::postgres().await;
                super::$contract(&*backend.store).await;
            }
        }
    )*};
}

both!(
    a_task_round_trips_with_its_root_credential,
    delegations_follow_their_parents_and_stop_at_the_end,
    ending_revokes_every_credential_once,
    no_decision_is_recorded_after_the_end_and_the_end_is_not_before_any,
    end_expired_ends_only_open_tasks_whose_ttl_ran_out,
    history_takes_one_result_per_decision_and_folds_the_session,
    grounds_of_the_start_and_of_results_fold_into_the_session,
    a_decision_is_exchanged_once_and_never_after_the_end,
    agent_sessions_fold_their_decisions,
    approvals_list_count_and_change_only_from_the_expected_status,
    pending_approvals_are_found_by_the_request_they_bind,
);

fn tid(text: &str) -> TaskId {
    text.parse().unwrap()
}

fn did(text: &str) -> DecisionId {
    text.parse().unwrap()
}

fn aid(text: &str) -> ApprovalId {
    text.parse().unwrap()
}

/// A fixed time with nanoseconds, so round trips check full precision.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + Duration::nanoseconds(123_456_789)
}

fn task(id: &str, expires_at: DateTime<Utc>) -> (TaskRecord, CredentialRecord) {
    let root_id = format!("{id}-root");
    let mut params = serde_json::Map::new();
    params.insert("recipients".to_owned(), json!(["ops@example.org"]));
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

/// Starts task `id`, expiring in an hour.
async fn started(store: &dyn StateStore, id: &str) -> TaskRecord {
    let (task, root) = task(id, t0() + Duration::hours(1));
    store.create_task(task.clone(), root).await.unwrap();
    task
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

fn result(labels: &[&str]) -> CallResult {
    CallResult {
        status: "ok".to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        reported_at: t0() + Duration::seconds(1),
        grounds: Default::default(),
    }
}

async fn a_task_round_trips_with_its_root_credential(store: &dyn StateStore) {
    let (task, root) = task("t1", t0() + Duration::hours(1));
    store.create_task(task.clone(), root.clone()).await.unwrap();
    assert_eq!(store.task(&tid("t1")).await.unwrap(), Some(task.clone()));
    assert_eq!(store.task(&tid("nope")).await.unwrap(), None);
    let details = store.task_details(&tid("t1")).await.unwrap().unwrap();
    assert_eq!(details.task, task);
    assert_eq!(details.credentials, vec![root.clone()]);
    assert!(details.history.is_empty());
    let (read, session) = store.task_context(&tid("t1")).await.unwrap().unwrap();
    assert_eq!(read, task);
    assert_eq!(session.calls, 0);

    // The same id, or the same root credential, is a conflict.
    let err = store
        .create_task(task.clone(), root.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let (mut other, mut other_root) = self::task("t2", t0() + Duration::hours(1));
    other.root_revocation_id = root.revocation_id.clone();
    other_root.revocation_id = root.revocation_id.clone();
    let err = store.create_task(other, other_root).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    // A root credential that is not the task's is invalid.
    let (t3, mut wrong) = self::task("t3", t0() + Duration::hours(1));
    wrong.depth = 1;
    let err = store.create_task(t3, wrong).await.unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err}");
    assert_eq!(
        store.task(&tid("t3")).await.unwrap(),
        None,
        "nothing was written"
    );

    // Listed newest first; only open ones when asked.
    let (mut later, later_root) = self::task("t4", t0() + Duration::hours(1));
    later.created_at = t0() + Duration::seconds(1);
    store.create_task(later, later_root).await.unwrap();
    let listed: Vec<String> = store
        .list_tasks(false, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.task.id.to_string())
        .collect();
    assert_eq!(listed, ["t4", "t1"]);
    store
        .end_task(&tid("t4"), t0() + Duration::seconds(2), END_REASON_ENDED)
        .await
        .unwrap();
    let open: Vec<String> = store
        .list_tasks(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.task.id.to_string())
        .collect();
    assert_eq!(open, ["t1"]);
}

async fn delegations_follow_their_parents_and_stop_at_the_end(store: &dyn StateStore) {
    started(store, "t1").await;
    let a = delegation("t1", "a", "t1-root", 1);
    let b = delegation("t1", "b", "a", 2);
    store.add_credential(a.clone()).await.unwrap();
    store.add_credential(b.clone()).await.unwrap();
    let details = store.task_details(&tid("t1")).await.unwrap().unwrap();
    let ids: Vec<&str> = details
        .credentials
        .iter()
        .map(|c| c.revocation_id.as_str())
        .collect();
    assert_eq!(ids, ["t1-root", "a", "b"], "issue order");
    assert_eq!(details.credentials[2], b);

    for (bad, why) in [
        (delegation("t1", "c", "b", 3), "deeper than max_depth"),
        (delegation("t1", "d", "t1-root", 2), "a depth that skips"),
        (
            delegation("t1", "e", "nobody", 1),
            "a parent not in the task",
        ),
    ] {
        let err = store.add_credential(bad).await.unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)), "{why}: {err}");
    }
    let err = store.add_credential(a.clone()).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .add_credential(delegation("nope", "f", "x", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");

    store
        .end_task(&tid("t1"), t0() + Duration::seconds(5), END_REASON_ENDED)
        .await
        .unwrap();
    let err = store
        .add_credential(delegation("t1", "g", "t1-root", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskEnded { .. }), "{err}");
}

async fn ending_revokes_every_credential_once(store: &dyn StateStore) {
    started(store, "t1").await;
    started(store, "t2").await;
    store
        .add_credential(delegation("t1", "a", "t1-root", 1))
        .await
        .unwrap();
    let at = t0() + Duration::seconds(30);
    let ended = store
        .end_task(&tid("t1"), at, END_REASON_ENDED)
        .await
        .unwrap();
    assert_eq!(ended.revoked, ["t1-root", "a"]);
    assert_eq!(ended.task.ended_at, Some(at));
    assert_eq!(ended.task.end_reason.as_deref(), Some(END_REASON_ENDED));
    // Again: nothing changes, the same answer.
    let again = store
        .end_task(&tid("t1"), at + Duration::seconds(9), "other")
        .await
        .unwrap();
    assert_eq!(again.revoked, ended.revoked);
    assert_eq!(again.task, ended.task);

    let revocations = store.revocations().await.unwrap();
    let ids: Vec<&str> = revocations
        .iter()
        .map(|r| r.revocation_id.as_str())
        .collect();
    assert_eq!(ids, ["t1-root", "a"]);
    assert!(revocations.iter().all(|r| r.revoked_at == at));
    let held = store.revoked_ids(t0()).await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(
        store
            .revoked_ids(t0() + Duration::hours(2))
            .await
            .unwrap()
            .is_empty(),
        "ids of expired tasks are not held"
    );

    let err = store
        .end_task(&tid("nope"), at, END_REASON_ENDED)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");
    let err = store.end_task(&tid("t2"), at, "").await.unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err}");
}

async fn no_decision_is_recorded_after_the_end_and_the_end_is_not_before_any(
    store: &dyn StateStore,
) {
    started(store, "t1").await;
    // A decision clocked after the caller's end but written before it.
    store
        .record_decision(decision("t1", "d1", "read", 5_000), None)
        .await
        .unwrap();
    let ended = store
        .end_task(&tid("t1"), t0() + Duration::seconds(1), END_REASON_ENDED)
        .await
        .unwrap();
    assert_eq!(
        ended.task.ended_at,
        Some(t0() + Duration::milliseconds(5_000))
    );
    let err = store
        .record_decision(decision("t1", "d2", "read", 6_000), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskEnded { .. }), "{err}");
    let err = store
        .record_decision(decision("nope", "d3", "read", 0), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");
    assert_eq!(store.decision(&did("d2")).await.unwrap(), None);
}

async fn end_expired_ends_only_open_tasks_whose_ttl_ran_out(store: &dyn StateStore) {
    for (id, minutes) in [("soon", 1), ("sooner", 0), ("later", 60)] {
        let (task, root) = task(id, t0() + Duration::minutes(minutes));
        store.create_task(task, root).await.unwrap();
    }
    store
        .end_task(&tid("soon"), t0(), END_REASON_ENDED)
        .await
        .unwrap();
    let ended = store
        .end_expired(t0() + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(ended, vec![(tid("sooner"), vec!["sooner-root".to_owned()])]);
    let sooner = store.task(&tid("sooner")).await.unwrap().unwrap();
    assert_eq!(sooner.end_reason.as_deref(), Some(END_REASON_EXPIRED));
    assert_eq!(
        store
            .task(&tid("soon"))
            .await
            .unwrap()
            .unwrap()
            .end_reason
            .as_deref(),
        Some(END_REASON_ENDED),
        "an ended task keeps its reason"
    );
    assert!(
        store
            .task(&tid("later"))
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );
}

async fn history_takes_one_result_per_decision_and_folds_the_session(store: &dyn StateStore) {
    started(store, "t1").await;
    let mut first = decision("t1", "d1", "search", 1);
    first.annotations = match json!({"readOnlyHint": true, "openWorldHint": true}) {
        serde_json::Value::Object(map) => Some(map),
        _ => unreachable!(),
    };
    store
        .record_decision(first.clone(), Some("t1-root".to_owned()))
        .await
        .unwrap();
    let mut second = decision("t1", "d2", "send", 2);
    second.decision = Decision::Deny;
    store.record_decision(second.clone(), None).await.unwrap();
    let err = store
        .record_decision(first.clone(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");

    let reported = store
        .record_result(&did("d1"), result(&["untrusted"]))
        .await
        .unwrap();
    assert_eq!(reported.result, Some(result(&["untrusted"])));
    let err = store
        .record_result(&did("d1"), result(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .record_result(&did("nope"), result(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::DecisionNotFound(_)), "{err}");

    let details = store.task_details(&tid("t1")).await.unwrap().unwrap();
    let ids: Vec<&str> = details
        .history
        .iter()
        .map(|h| h.decision_id.as_str())
        .collect();
    assert_eq!(ids, ["d1", "d2"]);
    assert_eq!(
        details.history[0],
        HistoryEntry {
            result: Some(result(&["untrusted"])),
            ..first.clone()
        }
    );
    let (_, session) = store.task_context(&tid("t1")).await.unwrap().unwrap();
    assert_eq!(session.calls, 2);
    assert_eq!(session.denials, 1);
    assert!(session.labels.contains("untrusted"));

    let (entry, credential) = store.decided_call(&did("d1")).await.unwrap().unwrap();
    assert_eq!(entry.decision_id.as_str(), "d1");
    assert_eq!(credential.as_deref(), Some("t1-root"));
    assert_eq!(
        store.decided_call(&did("d2")).await.unwrap().unwrap().1,
        None
    );
    assert_eq!(store.decided_call(&did("nope")).await.unwrap(), None);

    // A result after the end is still taken (the call began before it).
    store
        .end_task(&tid("t1"), t0() + Duration::seconds(3), END_REASON_ENDED)
        .await
        .unwrap();
    store.record_result(&did("d2"), result(&[])).await.unwrap();
}

async fn grounds_of_the_start_and_of_results_fold_into_the_session(store: &dyn StateStore) {
    started(store, "t1").await;
    let grounds = |pairs: &[(Source, &str)]| {
        let mut grounds = Grounds::default();
        for (source, digest) in pairs {
            grounds.insert(*source, (*digest).to_owned());
        }
        grounds
    };
    store
        .ground_task(&tid("t1"), grounds(&[(Source::Prompt, "p1")]))
        .await
        .unwrap();
    let err = store
        .ground_task(&tid("nope"), grounds(&[(Source::Prompt, "p1")]))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskNotFound(_)), "{err}");

    store
        .record_decision(decision("t1", "d1", "read_mail", 1), None)
        .await
        .unwrap();
    let reported = CallResult {
        grounds: grounds(&[
            (Source::UntrustedStructured, "s1"),
            (Source::UntrustedText, "p1"),
        ]),
        ..result(&[])
    };
    store.record_result(&did("d1"), reported).await.unwrap();

    let (_, session) = store.task_context(&tid("t1")).await.unwrap().unwrap();
    // A value keeps the best source it was seen from.
    assert_eq!(session.grounds.source_of("p1"), Some(Source::Prompt));
    assert_eq!(
        session.grounds.source_of("s1"),
        Some(Source::UntrustedStructured)
    );
    assert_eq!(session.grounds.len(), 2);
    // Not kept in the history: read back, a result has none.
    let details = store.task_details(&tid("t1")).await.unwrap().unwrap();
    assert!(
        details.history[0]
            .result
            .as_ref()
            .unwrap()
            .grounds
            .is_empty()
    );
}

async fn a_decision_is_exchanged_once_and_never_after_the_end(store: &dyn StateStore) {
    started(store, "t1").await;
    store
        .record_decision(decision("t1", "d1", "send", 1), Some("t1-root".to_owned()))
        .await
        .unwrap();
    store
        .record_decision(decision("t1", "d2", "send", 2), Some("t1-root".to_owned()))
        .await
        .unwrap();
    let exchange = |decision: &str, jti: &str| ExchangeRecord {
        decision_id: did(decision),
        task_id: tid("t1"),
        credential: "t1-root".to_owned(),
        resource: "https://tools.example.com/mail".to_owned(),
        token_id: jti.to_owned(),
        scope: vec!["mail/send".to_owned()],
        exchanged_at: t0() + Duration::seconds(1),
        expires_at: t0() + Duration::seconds(61),
    };
    store.record_exchange(exchange("d1", "j1")).await.unwrap();
    let err = store
        .record_exchange(exchange("d1", "j2"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let err = store
        .record_exchange(exchange("nope", "j3"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::DecisionNotFound(_)), "{err}");
    store
        .end_task(&tid("t1"), t0() + Duration::seconds(5), END_REASON_ENDED)
        .await
        .unwrap();
    let err = store
        .record_exchange(exchange("d2", "j4"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::TaskEnded { .. }), "{err}");
}

fn decided(session: &str, tool: &str, decision: Decision, open_world: bool) -> SessionDecision {
    SessionDecision {
        agent: "spiffe://example.org/researcher".to_owned(),
        session: session.parse::<SessionId>().unwrap(),
        server: "srv".to_owned(),
        tool: tool.to_owned(),
        decision,
        annotations: Some(ToolAnnotations {
            read_only_hint: Some(true),
            destructive_hint: Some(false),
            idempotent_hint: None,
            open_world_hint: Some(open_world),
            ..ToolAnnotations::default()
        }),
        decided_at: t0(),
    }
}

async fn agent_sessions_fold_their_decisions(store: &dyn StateStore) {
    let agent = "spiffe://example.org/researcher";
    let one: SessionId = "research-1".parse().unwrap();
    let two: SessionId = "research-2".parse().unwrap();
    assert_eq!(store.agent_session(agent, &one).await.unwrap().calls, 0);
    store
        .record_session_decision(decided("research-1", "fetch", Decision::Allow, true))
        .await
        .unwrap();
    store
        .record_session_decision(decided("research-1", "write", Decision::Deny, false))
        .await
        .unwrap();
    let summary = store.agent_session(agent, &one).await.unwrap();
    assert_eq!(summary.calls, 2);
    assert_eq!(summary.denials, 1);
    assert!(summary.labels.contains("untrusted"), "{summary:?}");
    assert_eq!(store.agent_session(agent, &two).await.unwrap().calls, 0);
    assert_eq!(
        store
            .agent_session("spiffe://example.org/other", &one)
            .await
            .unwrap()
            .calls,
        0
    );
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 123_456_789).unwrap()
}

fn approval(id: &str, at: i64, ttl: i64, task: Option<&str>) -> ApprovalRecord {
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
        task_id: task.map(str::to_owned),
        summary: json!({"tool": "send_email", "arguments": {"to": "bob@example.com"}}),
        receipt: json!({"v": 1, "index": 7, "kind": "decision"}),
    }
}

async fn approvals_list_count_and_change_only_from_the_expected_status(store: &dyn StateStore) {
    let a1 = approval("a1", 0, 300, Some("t1"));
    store.create_approval(a1.clone()).await.unwrap();
    store
        .create_approval(approval("a2", 10, 5, Some("t1")))
        .await
        .unwrap();
    store
        .create_approval(approval("a3", 5, 300, None))
        .await
        .unwrap();
    assert_eq!(store.approval(&aid("a1")).await.unwrap(), Some(a1.clone()));
    assert_eq!(store.approval(&aid("nope")).await.unwrap(), None);
    assert!(
        store.create_approval(a1.clone()).await.is_err(),
        "no overwrite"
    );

    let ids = |records: Vec<ApprovalRecord>| -> Vec<String> {
        records
            .into_iter()
            .map(|r| r.approval.id.to_string())
            .collect()
    };
    // At t(20), a2 (expiring at t(15)) is expired though still stored pending.
    let now = t(20);
    assert_eq!(
        ids(store.approvals(None, now, 10).await.unwrap()),
        ["a2", "a3", "a1"]
    );
    assert_eq!(
        ids(store
            .approvals(Some(ApprovalStatus::Pending), now, 10)
            .await
            .unwrap()),
        ["a3", "a1"]
    );
    assert_eq!(
        ids(store
            .approvals(Some(ApprovalStatus::Expired), now, 10)
            .await
            .unwrap()),
        ["a2"]
    );
    assert_eq!(ids(store.approvals(None, now, 1).await.unwrap()), ["a2"]);
    assert_eq!(ids(store.due_approvals(now, 10).await.unwrap()), ["a2"]);
    assert_eq!(
        ids(store
            .pending_approvals_of_task(&tid("t1"), 10)
            .await
            .unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        store.open_approvals_of("agent/mailer", now).await.unwrap(),
        2
    );
    assert_eq!(
        store.open_approvals_of("agent/other", now).await.unwrap(),
        0
    );
    assert_eq!(
        store.open_approvals_of_task(&tid("t1"), now).await.unwrap(),
        1
    );

    let approved = a1
        .approval
        .resolve("bob", Resolution::Approve, "fine", t(1), false)
        .unwrap();
    let denied = a1
        .approval
        .resolve("carol", Resolution::Deny, "no", t(1), false)
        .unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Pending, &approved)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_approval(ApprovalStatus::Pending, &denied)
            .await
            .unwrap(),
        "a second resolution changes nothing"
    );
    let used = approved.release("sha256:a1", &did("d2"), t(2)).unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Approved, &used)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_approval(ApprovalStatus::Approved, &used)
            .await
            .unwrap()
    );
    assert_eq!(
        store.approval(&aid("a1")).await.unwrap().unwrap().approval,
        used
    );
    assert_eq!(
        ids(store
            .approvals(Some(ApprovalStatus::Used), now, 10)
            .await
            .unwrap()),
        ["a1"]
    );
}

async fn pending_approvals_are_found_by_the_request_they_bind(store: &dyn StateStore) {
    // Four approvals of one request (b1..b4) and one of another: b2 expires
    // at t(15), b3 is answered, b4 is the newest.
    let of_request = |id: &str, at: i64, ttl: i64| {
        let mut record = approval(id, at, ttl, None);
        record.approval.request_sha256 = "sha256:the-request".into();
        record
    };
    for record in [
        of_request("b1", 0, 300),
        of_request("b2", 10, 5),
        of_request("b3", 20, 300),
        of_request("b4", 30, 300),
        approval("other", 40, 300, None),
    ] {
        store.create_approval(record).await.unwrap();
    }
    let answered = store
        .approval(&aid("b3"))
        .await
        .unwrap()
        .unwrap()
        .approval
        .resolve("bob", Resolution::Deny, "no", t(21), false)
        .unwrap();
    assert!(
        store
            .update_approval(ApprovalStatus::Pending, &answered)
            .await
            .unwrap()
    );

    let ids = |records: Vec<ApprovalRecord>| -> Vec<String> {
        records
            .into_iter()
            .map(|r| r.approval.id.to_string())
            .collect()
    };
    let now = t(50);
    // Pending and not yet expired, newest first; the limit holds.
    assert_eq!(
        ids(store
            .pending_approvals_for("sha256:the-request", now, 10)
            .await
            .unwrap()),
        ["b4", "b1"]
    );
    assert_eq!(
        ids(store
            .pending_approvals_for("sha256:the-request", now, 1)
            .await
            .unwrap()),
        ["b4"]
    );
    // Before its expiry b2 counts too.
    assert_eq!(
        ids(store
            .pending_approvals_for("sha256:the-request", t(12), 10)
            .await
            .unwrap()),
        ["b4", "b2", "b1"]
    );
    assert_eq!(
        ids(store
            .pending_approvals_for("sha256:other", now, 10)
            .await
            .unwrap()),
        ["other"]
    );
    assert!(
        store
            .pending_approvals_for("sha256:unknown", now, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

// Several instances: separate pools on one database, racing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_recording_at_once_lose_no_decision_of_a_session() {
    let url = test_postgres::shared().database();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(PgStore::connect(&url).await.unwrap().state());
    }
    started(&stores[0], "t1").await;
    let mut calls = Vec::new();
    for n in 0..60 {
        let store = stores[n % 3].clone();
        calls.push(tokio::spawn(async move {
            let mut entry = decision("t1", &format!("d{n}"), "read", n as i64);
            if n % 10 == 0 {
                entry.result = Some(result(&[&format!("label-{n}")]));
            }
            store.record_decision(entry, None).await.unwrap();
            store
                .record_session_decision(decided("shared", "fetch", Decision::Allow, false))
                .await
                .unwrap();
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    let (_, session) = stores[1].task_context(&tid("t1")).await.unwrap().unwrap();
    assert_eq!(session.calls, 60, "every instance's decisions were folded");
    for n in (0..60).step_by(10) {
        assert!(
            session.labels.contains(&format!("label-{n}")),
            "{session:?}"
        );
    }
    let shared: SessionId = "shared".parse().unwrap();
    let agent_session = stores[2]
        .agent_session("spiffe://example.org/researcher", &shared)
        .await
        .unwrap();
    assert_eq!(agent_session.calls, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_instances_releasing_one_approval_exactly_one_does() {
    let url = test_postgres::shared().database();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(PgStore::connect(&url).await.unwrap().state());
    }
    for round in 0..10 {
        let id = format!("a{round}");
        let record = approval(&id, 0, 300, None);
        stores[0].create_approval(record.clone()).await.unwrap();
        let approved = record
            .approval
            .resolve("bob", Resolution::Approve, "fine", t(1), false)
            .unwrap();
        assert!(
            stores[1]
                .update_approval(ApprovalStatus::Pending, &approved)
                .await
                .unwrap()
        );
        let mut racers = Vec::new();
        for n in 0..6 {
            let store = stores[n % 3].clone();
            let used = approved
                .release(&format!("sha256:{id}"), &did(&format!("d{n}")), t(2))
                .unwrap();
            racers.push(tokio::spawn(async move {
                store
                    .update_approval(ApprovalStatus::Approved, &used)
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for racer in racers {
            won += usize::from(racer.await.unwrap());
        }
        assert_eq!(won, 1, "round {round}: exactly one release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_an_end_is_committed_no_instance_records_a_decision_under_the_task() {
    let url = test_postgres::shared().database();
    let a = PgStore::connect(&url).await.unwrap().state();
    let b = PgStore::connect(&url).await.unwrap().state();
    for round in 0..5 {
        let id = format!("t{round}");
        started(&a, &id).await;
        let deciding = {
            let b = b.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut recorded = Vec::new();
                for n in 0..40 {
                    match b
                        .record_decision(decision(&id, &format!("{id}-d{n}"), "read", n), None)
                        .await
                    {
                        Ok(()) => recorded.push(n),
                        Err(StateError::TaskEnded { .. }) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                recorded
            })
        };
        tokio::task::yield_now().await;
        let ended = a.end_task(&tid(&id), t0(), END_REASON_ENDED).await.unwrap();
        let recorded = deciding.await.unwrap();
        let history = a.task_details(&tid(&id)).await.unwrap().unwrap().history;
        assert_eq!(
            history.len(),
            recorded.len(),
            "every acknowledged decision, no other"
        );
        // The end is no earlier than any decision recorded before it.
        let last = history.iter().map(|h| h.decided_at).max();
        assert!(last.is_none_or(|last| ended.task.ended_at.unwrap() >= last));
        // And none is recorded after.
        let err = b
            .record_decision(decision(&id, &format!("{id}-late"), "read", 99), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::TaskEnded { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_hear_each_others_approvals_and_revocations() {
    use mandate_store::StateChange;
    let url = test_postgres::shared().database();
    let a = PgStore::connect(&url).await.unwrap().state();
    let b = PgStore::connect(&url).await.unwrap().state();
    let mut heard = b.changes().expect("a shared store announces changes");
    // The listener connects in the background: announce until it hears.
    let wait = |heard: &mut tokio::sync::broadcast::Receiver<StateChange>, want: StateChange| {
        let mut heard = heard.resubscribe();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), async move {
                loop {
                    if heard.recv().await.unwrap() == want {
                        return;
                    }
                }
            })
            .await
            .expect("the change was announced")
        }
    };
    let listening = wait(&mut heard, StateChange::Approvals);
    let mut n = 0;
    let announced = async {
        loop {
            a.create_approval(approval(&format!("a{n}"), 0, 300, None))
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = listening => {},
        () = announced => unreachable!(),
    }
    let revoked = wait(&mut heard, StateChange::Revocations);
    started(&a, "t1").await;
    a.end_task(&tid("t1"), t0(), END_REASON_ENDED)
        .await
        .unwrap();
    revoked.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_lock_is_held_by_one_instance_at_a_time() {
    let url = test_postgres::shared().database();
    let a = PgStore::connect(&url).await.unwrap().state();
    let b = PgStore::connect(&url).await.unwrap().state();
    let held = a.lock_approvals().await.unwrap();
    let waiting = tokio::spawn(async move { b.lock_approvals().await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second instance waits");
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("released on drop")
        .unwrap()
        .unwrap();
}
