//! The decision service in process: the pipeline and the approval gate on
//! the example pack, a temporary SQLite state and ledger, no HTTP.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use mandate_auth::{TaskGrant, VerifiedCredential};
use mandate_core::{
    ApprovalStatus, Decision, DecisionRequest, DecisionResponse, Resolution, TaskId,
};
use mandate_server::decider::CREDENTIAL_SCOPE;
use mandate_server::{AppState, Authority, DecideError, Decider};
use mandate_store::{CredentialRecord, TaskRecord};
use serde_json::{Value, json};

const AGENT: &str = "spiffe://example.org/agent/mailer";

fn request(body: Value) -> DecisionRequest {
    serde_json::from_value(body).unwrap()
}

/// The decision on `body` under `authority`, now: an answer, not an error.
async fn answer(decider: &Decider, authority: &Authority, body: Value) -> DecisionResponse {
    decider
        .decide(authority, request(body), Utc::now())
        .await
        .unwrap()
        .response
}

/// Why `body` under `authority` got no decision.
async fn refusal(decider: &Decider, authority: &Authority, body: Value) -> DecideError {
    decider
        .decide(authority, request(body), Utc::now())
        .await
        .unwrap_err()
}

fn read_inbox() -> Value {
    json!({
        "principal": {"id": AGENT},
        "action": {"server": "mail", "tool": "read_inbox",
                   "annotations": {"readOnlyHint": true, "openWorldHint": false}},
        "context": {"task": {"tools": ["read_inbox"]}}
    })
}

/// A destructive call the example pack sends to a person.
fn delete_message() -> Value {
    json!({
        "principal": {"id": AGENT, "on_behalf_of": "alice@example.com"},
        "action": {"server": "mail", "tool": "delete_message",
                   "annotations": {"destructiveHint": true, "readOnlyHint": false}},
        "arguments": {"id": "m-1"},
        "context": {"task": {"tools": ["delete_message"]}}
    })
}

/// Starts a task for `AGENT` granting `tools` (as `server/tool`), stored as
/// `POST /v1/tasks` stores it; returns its verified root credential.
async fn task(state: &AppState, tools: &[&str]) -> Arc<VerifiedCredential> {
    let tasks = state.tasks();
    let now = Utc::now();
    let grant = TaskGrant {
        task_id: TaskId::mint(),
        agent: AGENT.to_owned(),
        on_behalf_of: None,
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        labels: Default::default(),
        expires_at: now + TimeDelta::minutes(10),
        max_depth: 1,
        audience: tasks.credentials().audience().to_owned(),
    };
    let minted = tasks.credentials().authority().mint(&grant).unwrap();
    let revocation_id = minted.revocation_ids.last().unwrap().clone();
    let record = TaskRecord {
        id: grant.task_id.clone(),
        agent: AGENT.to_owned(),
        on_behalf_of: None,
        intent: "read mail".to_owned(),
        tools: grant.tools.iter().cloned().collect(),
        labels: Vec::new(),
        params: Default::default(),
        audience: grant.audience.clone(),
        max_depth: 1,
        created_at: now,
        expires_at: minted.expires_at,
        ended_at: None,
        end_reason: None,
        root_revocation_id: revocation_id.clone(),
    };
    let root = CredentialRecord {
        task_id: grant.task_id.clone(),
        revocation_id,
        parent_revocation_id: None,
        agent: AGENT.to_owned(),
        depth: 0,
        tools: record.tools.clone(),
        labels: Vec::new(),
        issued_at: now,
        expires_at: minted.expires_at,
    };
    tasks.store().create_task(record, root).await.unwrap();
    tasks
        .credentials()
        .verify_credential(&minted.token, now)
        .unwrap()
}

#[tokio::test]
async fn an_allowed_call_is_answered_with_its_durable_receipt() {
    let (state, _dir) = common::state().await;
    let before = state.ledger().size();
    let decided = Decider::new(state.clone())
        .decide(&Authority::Request, request(read_inbox()), Utc::now())
        .await
        .unwrap();
    assert_eq!(decided.response.decision, Decision::Allow);
    assert_eq!(decided.response.receipt_index, Some(before));
    let stored = state
        .ledger()
        .stored(decided.response.decision_id.as_str())
        .await
        .unwrap()
        .expect("the receipt is in the ledger before the answer");
    let receipt: Value = serde_json::from_str(&stored.body).unwrap();
    assert_eq!(receipt["decision"], "allow");
}

#[tokio::test]
async fn a_refused_request_writes_nothing() {
    let (state, _dir) = common::state().await;
    let mut body = read_inbox();
    body["context"]["time"] = json!("2026-01-01T00:00:00Z");
    let refused = refusal(&Decider::new(state.clone()), &Authority::Request, body).await;
    assert!(
        matches!(refused, DecideError::FieldNotAllowed(_)),
        "{refused:?}"
    );
    assert_eq!(state.ledger().size(), 0);
}

#[tokio::test]
async fn the_gate_opens_an_approval_waits_on_it_and_releases_the_call_once() {
    let (state, _dir) = common::state().await;
    let decider = Decider::new(state.clone());
    let asked = answer(&decider, &Authority::Request, delete_message()).await;
    assert_eq!(asked.decision, Decision::ApprovalRequired);
    let id = asked.approval_id.clone().expect("an approval is opened");
    let key = id.clone();
    let stored = state
        .tasks()
        .store()
        .approval(&key)
        .await
        .unwrap()
        .expect("the approval is stored before the answer names it");
    assert_eq!(stored.approval.status, ApprovalStatus::Pending);

    // Asked again while pending: the same approval, still waiting.
    let mut again = delete_message();
    again["approval_id"] = json!(id);
    let waiting = answer(&decider, &Authority::Request, again.clone()).await;
    assert_eq!(waiting.decision, Decision::ApprovalRequired);
    assert_eq!(waiting.approval_id.as_ref(), Some(&id));

    // A person approves; the call is released once, naming them.
    let approved = stored
        .approval
        .resolve("bob", Resolution::Approve, "checked", Utc::now(), false)
        .unwrap();
    let changed = state
        .tasks()
        .store()
        .update_approval(ApprovalStatus::Pending, &approved)
        .await
        .unwrap();
    assert!(changed);
    let released = answer(&decider, &Authority::Request, again.clone()).await;
    assert_eq!(released.decision, Decision::Allow);
    assert_eq!(released.approver.as_deref(), Some("bob"));
    let replayed = answer(&decider, &Authority::Request, again).await;
    assert_eq!(replayed.decision, Decision::Deny);
    assert_eq!(replayed.policies, ["mandate:approval"]);
}

#[tokio::test]
async fn an_approval_for_other_arguments_is_a_deny() {
    let (state, _dir) = common::state().await;
    let decider = Decider::new(state.clone());
    let asked = answer(&decider, &Authority::Request, delete_message()).await;
    let mut other = delete_message();
    other["arguments"] = json!({"id": "m-2"});
    other["approval_id"] = json!(asked.approval_id.unwrap());
    let refused = answer(&decider, &Authority::Request, other).await;
    assert_eq!(refused.decision, Decision::Deny);
    assert_eq!(refused.policies, ["mandate:approval"]);
}

#[tokio::test]
async fn a_credential_limits_the_tools_whatever_the_policies_say() {
    let (state, _dir) = common::state().await;
    let credential = task(&state, &["mail/read_inbox"]).await;
    let authority = Authority::Task(credential.clone());
    let decider = Decider::new(state.clone());
    let mut body = read_inbox();
    body["context"] = json!({});
    let allowed = answer(&decider, &authority, body.clone()).await;
    assert_eq!(allowed.decision, Decision::Allow);

    // The same tool name on another server is outside the grant.
    body["action"]["server"] = json!("files");
    let denied = answer(&decider, &authority, body).await;
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.policies, [CREDENTIAL_SCOPE]);

    // Both joined the task's history.
    let task_id = credential.task_id.clone();
    let details = state
        .tasks()
        .store()
        .task_details(&task_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.history.len(), 2);
}

#[tokio::test]
async fn under_a_credential_the_task_context_is_the_servers() {
    let (state, _dir) = common::state().await;
    let authority = Authority::Task(task(&state, &["mail/read_inbox"]).await);
    let decider = Decider::new(state.clone());
    let refused = refusal(&decider, &authority, read_inbox()).await;
    assert!(
        matches!(refused, DecideError::FieldNotAllowed(_)),
        "{refused:?}"
    );

    let mut other_agent = read_inbox();
    other_agent["context"] = json!({});
    other_agent["principal"]["id"] = json!("spiffe://example.org/agent/other");
    let refused = refusal(&decider, &authority, other_agent).await;
    assert!(matches!(refused, DecideError::NotHolder(_)), "{refused:?}");
    assert_eq!(state.ledger().size(), 0);
}
