//! `POST /v1/decide`: one tool call in, one decision out.
//!
//! Without an `Authorization` header the request carries its own task and
//! session context, or names a session the server keeps for the agent
//! (`context.session.id`): the summary is filled from it and the decision
//! recorded into it before the answer, as for a task. With `Authorization: Bearer <task credential>` the call
//! is decided under that task:
//!
//! 1. the credential is verified (from the cache, and against the revoked
//!    ids on every call), and the principal must be its holder;
//! 2. Mandate fills `context.task` from the task record and the credential
//!    (its effective tools, its delegation chain) and `context.session` from
//!    the task's session summary, kept with its history (one row, however
//!    long the task); the request may not set them;
//! 3. a tool the credential does not grant is denied before any policy runs
//!    (policy id [`CREDENTIAL_SCOPE`]);
//! 4. the receipt names the task and the delegation chain, and the decision
//!    joins the task's history before the answer leaves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use mandate_auth::{CredentialError, VerifiedCredential};
use mandate_core::{
    CallRequest, Decision, DecisionRequest, DecisionResponse, HopInput, SessionId, SessionInput,
    TaskInput, Verdict,
};
use mandate_store::{HistoryEntry as RecordedEntry, SessionDecision, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::approvals::{self, Asker, Gate};
use crate::auth::{Bearer, credential_refused, insufficient_scope, invalid_token};
use crate::callers::DecideAccess;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::receipts::{record_delegation, record_verdict};
use crate::routes::tasks::store_failed;
use crate::state::AppState;
use crate::tasks::Tasks;

/// The policy id of a deny because the task credential the call was made
/// under does not grant the tool. It is enforced in code, before Cedar, so
/// no policy can permit what the credential does not hold.
pub const CREDENTIAL_SCOPE: &str = "mandate:credential-scope";

/// Decide whether a tool call may proceed.
///
/// A deny is a normal answer (200). Any other status means no decision was
/// made, and the caller must treat the call as denied.
///
/// With `Authorization: Bearer <task credential>`, the call is decided under
/// the credential's task: the principal must be the credential's holder,
/// `context.task` and `context.session` come from the task, the credential
/// and the task's history (the request may not set them), a tool the
/// credential does not grant is denied (`mandate:credential-scope`), and the
/// decision is recorded in the task's history.
#[utoipa::path(post, path = "/v1/decide", tag = "decisions",
    request_body = DecisionRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = DecisionResponse),
        (status = 400, description = "The body is not valid JSON, or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "A task credential that does not verify (expired, revoked, forged, another audience), of a task that ended, or an identity token instead of a credential; or `caller_required`: no credential and no caller's token where the server requires one (beyond loopback by default)", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the principal (or `on_behalf_of`) is not the credential's holder (or the task's person)", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The JSON is not a valid decision request, or it sets a field the server fills (`context.time`; `context.task` and `context.session` under a credential; `context.session.id` with a session of the caller's own)", body = ErrorBody),
        (status = 500, description = "Mandate failed to decide: deny the call", body = ErrorBody),
        (status = 503, description = "The decision could not be recorded in the receipt ledger, or the task's state (or the agent's session) could not be read or written: deny the call", body = ErrorBody),
    ))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    bearer: Result<Option<Bearer>, ApiError>,
    body: Result<ApiJson<DecisionRequest>, ApiError>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let started = Instant::now();
    let rejected = |e: &ApiError| {
        if e.status().is_client_error() {
            state.metrics().count_rejected(e.code());
        }
    };
    // The token is checked before the body: a refused token gets its 401
    // whatever the body says. A configured caller's token authenticates an
    // enforcement point deciding without a task credential; any other is
    // a task credential.
    let (credential, caller) = match bearer.inspect_err(rejected)? {
        Some(bearer) => match state.callers().caller(&bearer.0) {
            Some(caller) => (None, Some(caller)),
            None => (
                Some(task_credential(state.tasks(), &bearer).inspect_err(rejected)?),
                None,
            ),
        },
        None => (None, None),
    };
    if credential.is_none() && caller.is_none() && state.callers().access() == DecideAccess::Callers
    {
        let refused = invalid_token(
            state.tasks(),
            "caller_required",
            "this server decides without a task credential only for configured callers: present a task credential, or a caller's token (`[[callers]]`, `mandate callers token`) as `Authorization: Bearer`",
        );
        rejected(&refused);
        return Err(refused);
    }
    let ApiJson(mut request) = body.inspect_err(rejected)?;
    if request.context.time.is_some() {
        state.metrics().count_rejected("field_not_allowed");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            "`context.time` is set by the server's clock; remove it (only `mandate check` and policy tests take a time)",
        ));
    }
    let agent_session = match &credential {
        Some(credential) => {
            fill_from_task(state.tasks(), credential, &mut request)
                .await
                .inspect_err(rejected)?;
            None
        }
        None => fill_from_agent_session(state.tasks(), &mut request)
            .await
            .inspect_err(rejected)?,
    };
    // The server's clock goes into the request, so that the receipt's
    // context digest covers exactly what was evaluated.
    let now = Utc::now();
    request.context.time = Some(now);
    let approval_id = request.approval_id.take();
    let draft = state
        .receipts()
        .draft(&request, now)
        .map_err(|e| invalid_request(&state, e))?;
    let annotations = request.action.annotations.clone();
    let asker = Asker::of(&request);
    let call = CallRequest::try_from(request).map_err(|e| invalid_request(&state, e))?;
    let pack = state.pack();
    let tool = format!("{}/{}", call.server(), call.tool());
    let mut verdict = match &credential {
        // The credential is the hard limit, whatever the policies say: they
        // see bare tool names, and a pack may permit more than was granted.
        Some(credential) if !credential.allows_tool(&tool) => outside_scope(&tool),
        _ => pack.decide(&call, now),
    };
    let decision_id = Uuid::now_v7().to_string();
    let mut receipt = draft;
    if let Some(credential) = &credential {
        record_delegation(&mut receipt, &credential.chain);
    }
    // An approval can only turn `approval_required` into `allow` (or into a
    // deny when it does not cover this request); it never touches a deny.
    let gate = approvals::gate(
        &state,
        approval_id,
        &mut verdict,
        &receipt,
        &decision_id,
        now,
    )
    .await
    .inspect_err(rejected)?;
    record_verdict(&mut receipt, &decision_id, &verdict, pack.version());
    receipt.approval = gate.approval_ref(&decision_id);
    if let Gate::Released(approval) = &gate {
        receipt.approver.clone_from(&approval.resolved_by);
    }
    let opening = matches!(gate, Gate::Open { .. }).then(|| receipt.clone());

    // No answer leaves before its receipt is on disk: a caller never acts on
    // a decision the log could lose.
    let appending = Instant::now();
    let appended = match state.ledger().append(receipt).await {
        Ok(appended) => appended,
        Err(e) => {
            tracing::error!(error = %e, %decision_id, "receipt not recorded; answering 503");
            state.metrics().count_receipt_failure();
            // The call is not released after all: the approval may release
            // it on a later try.
            if let Gate::Released(approval) = &gate {
                approvals::unrelease(&state, approval).await;
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "receipt_unavailable",
                "the decision could not be recorded in the receipt ledger; treat this call as denied",
            ));
        }
    };
    state
        .metrics()
        .observe_receipt_append(appending.elapsed().as_secs_f64());

    // Nor before it is in the task's history, which later decisions of the
    // task are made on: a call the history would not show could be followed
    // by one that policies would have stepped up.
    if let Some(credential) = &credential {
        let made_under = credential.revocation_ids.last().cloned();
        let entry = RecordedEntry {
            decision_id: decision_id.clone(),
            task_id: credential.task_id.clone(),
            agent: holder(state.tasks(), credential)?.to_owned(),
            server: call.server().to_owned(),
            tool: call.tool().to_owned(),
            decision: verdict.decision.as_str().to_owned(),
            decided_at: now,
            result: None,
            annotations: match serde_json::to_value(&annotations) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            },
        };
        state
            .tasks()
            // With the credential it was made under, which a token exchange
            // of this decision must present (POST /v1/token).
            .store(move |store| store.record_decision_under(&entry, made_under.as_deref()))
            .await
            .map_err(|e| {
                // The task ended while this was being decided: its end is
                // acknowledged, so nothing is given under it any more.
                if let StoreError::TaskEnded { .. } = e {
                    tracing::info!(%decision_id, "the task ended while the call was decided; refused");
                    return invalid_token(
                        state.tasks(),
                        "invalid_token",
                        &format!("{}: {e}", CredentialError::Revoked),
                    );
                }
                tracing::error!(error = %e, %decision_id, "decision not recorded in its task's history; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "state_unavailable",
                    "the decision could not be recorded in the task's history; treat this call as denied",
                )
            })?;
    }

    // Likewise for an agent's session: every gateway of the agent decides
    // on it, and an allowed open-world call taints it here, before the
    // answer releases the call.
    if let Some(session) = agent_session {
        let decided = SessionDecision {
            agent: call.principal().to_owned(),
            session,
            server: call.server().to_owned(),
            tool: call.tool().to_owned(),
            decision: verdict.decision,
            annotations: Some(annotations.clone()),
            decided_at: now,
        };
        state
            .tasks()
            .store(move |store| store.record_session_decision(decided))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, %decision_id, "decision not recorded in the agent's session; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "state_unavailable",
                    "the decision could not be recorded in the agent's session; treat this call as denied",
                )
            })?;
    }

    // The approval is stored before the answer names it, so that the
    // agent can wait on it at once.
    let mut response = DecisionResponse::new(decision_id, verdict);
    response.receipt_index = Some(appended.index);
    match gate {
        Gate::Open { id, binding, ttl } => {
            let Some(mut asked) = opening else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the approval's receipt went missing; treat this call as denied",
                ));
            };
            asked.index = appended.index;
            let verdict = Verdict {
                decision: response.decision,
                policies: response.policies.clone(),
                reasons: response.reasons.clone(),
                errors: Vec::new(),
            };
            let record = approvals::open(id, &asked, binding, asker, &verdict, now, ttl)
                .map_err(|e| invalid_request(&state, e))?;
            response.approval_id = Some(record.approval.id.clone());
            response.approval_expires_at = Some(record.approval.expires_at);
            let to_store = record.clone();
            state
                .tasks()
                .store(move |store| store.create_approval(&to_store))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, decision_id = %response.decision_id, "approval not stored; answering 503");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "state_unavailable",
                        "the approval could not be stored; treat this call as denied",
                    )
                })?;
            state.metrics().count_approval("opened");
            state.approvals().announce(&record, now);
            state.approvals().changed();
        }
        Gate::Waiting(approval) => {
            response.approval_id = Some(approval.id);
            response.approval_expires_at = Some(approval.expires_at);
        }
        Gate::Released(approval) => {
            response.approval_id = Some(approval.id);
            response.approver = approval.resolved_by;
            state.metrics().count_approval("released");
            state.approvals().changed();
        }
        Gate::Pass | Gate::Refused(_) => {}
    }
    state
        .metrics()
        .observe_decision(response.decision, started.elapsed().as_secs_f64());
    tracing::debug!(
        decision_id = %response.decision_id,
        decision = %response.decision,
        server = call.server(),
        tool = call.tool(),
        task_id = credential.as_ref().map(|c| c.task_id.as_str()),
        receipt_index = appended.index,
        "decided"
    );
    Ok(Json(response))
}

/// Verifies the bearer token as a task credential, now.
fn task_credential(tasks: &Tasks, bearer: &Bearer) -> Result<Arc<VerifiedCredential>, ApiError> {
    if bearer.is_jwt() {
        return Err(invalid_token(
            tasks,
            "invalid_token",
            "decisions are made under a task credential, not an identity token: start a task with the identity token (POST /v1/tasks) and present its credential",
        ));
    }
    tasks
        .verify_credential(&bearer.0, Utc::now())
        .map_err(|e| credential_refused(tasks, &e))
}

/// The agent holding `credential`: the last hop of its chain.
fn holder<'a>(tasks: &Tasks, credential: &'a VerifiedCredential) -> Result<&'a str, ApiError> {
    credential
        .holder()
        .map(|hop| hop.agent.as_str())
        .ok_or_else(|| invalid_token(tasks, "invalid_token", "the task credential names no agent"))
}

/// Checks that `request` is made by the credential's holder for the task's
/// person and leaves the task and session to Mandate; then fills them from
/// the task record, the credential and the task's history.
async fn fill_from_task(
    tasks: &Tasks,
    credential: &VerifiedCredential,
    request: &mut DecisionRequest,
) -> Result<(), ApiError> {
    let holder = holder(tasks, credential)?;
    let principal = &mut request.principal;
    if principal.id != holder {
        return Err(insufficient_scope(
            tasks,
            &format!(
                "the credential is held by `{holder}`; `principal.id` is `{}`",
                principal.id
            ),
        ));
    }
    match (&principal.on_behalf_of, &credential.on_behalf_of) {
        (None, person) => principal.on_behalf_of.clone_from(person),
        (Some(sent), Some(person)) if sent == person => {}
        (Some(sent), Some(person)) => {
            return Err(insufficient_scope(
                tasks,
                &format!(
                    "task `{}` acts for `{person}`; `principal.on_behalf_of` is `{sent}`",
                    credential.task_id
                ),
            ));
        }
        (Some(sent), None) => {
            return Err(insufficient_scope(
                tasks,
                &format!(
                    "task `{}` acts for no one; `principal.on_behalf_of` is `{sent}`",
                    credential.task_id
                ),
            ));
        }
    }
    for (field, set, source) in [
        (
            "context.task",
            !request.context.task.is_empty(),
            "the task credential and its task",
        ),
        (
            "context.session",
            !request.context.session.is_empty(),
            "the task's history",
        ),
    ] {
        if set {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "field_not_allowed",
                format!(
                    "`{field}` is filled from {source} when a task credential is presented; remove it"
                ),
            ));
        }
    }

    let task_id = credential.task_id.clone();
    let (task, session) = tasks
        .store(move |store| Ok((store.task(&task_id)?, store.session(&task_id)?)))
        .await
        .map_err(|e| store_failed(tasks, e))?;
    let Some(task) = task else {
        return Err(invalid_token(
            tasks,
            "invalid_token",
            &format!(
                "the credential's task `{}` is not known to this server",
                credential.task_id
            ),
        ));
    };
    // The task may have ended after the credential was checked against the
    // revoked ids: its end is on disk before the ids are revoked in memory.
    if task.is_ended() {
        return Err(invalid_token(
            tasks,
            "invalid_token",
            &format!("{}: task `{}` has ended", CredentialError::Revoked, task.id),
        ));
    }

    request.context.task = TaskInput {
        id: task.id,
        intent: task.intent,
        tools: bare_tools(&credential.tools),
        labels: task.labels,
        params: task.params,
        chain: credential
            .chain
            .iter()
            .map(|hop| HopInput {
                agent: hop.agent.clone(),
                depth: hop.depth,
            })
            .collect(),
    };
    request.context.session = SessionInput {
        summary: Some(session),
        ..SessionInput::default()
    };
    Ok(())
}

/// For a request naming a session the server keeps (`context.session.id`),
/// fills `context.session.summary` from the principal's session of that
/// id, and returns the id: the decision is recorded into it. A request
/// naming one may not send its own session.
async fn fill_from_agent_session(
    tasks: &Tasks,
    request: &mut DecisionRequest,
) -> Result<Option<SessionId>, ApiError> {
    let session = &request.context.session;
    let Some(id) = session.id.clone() else {
        return Ok(None);
    };
    if session.summary.is_some() || !session.history.is_empty() || !session.labels.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            "`context.session.id` names a session the server keeps and fills: send no `history`, `labels` or `summary` with it",
        ));
    }
    let (agent, key) = (request.principal.id.clone(), id.clone());
    let summary = tasks
        .store(move |store| store.agent_session(&agent, &key))
        .await
        .map_err(|e| store_failed(tasks, e))?;
    request.context.session.summary = Some(summary);
    Ok(Some(id))
}

/// The credential's tools (`server/tool`) as policies see them: bare tool
/// names, like `resource.name`. The server part is enforced in code
/// ([`CREDENTIAL_SCOPE`]).
fn bare_tools(tools: &BTreeSet<String>) -> Vec<String> {
    let bare: BTreeSet<&str> = tools
        .iter()
        .map(|tool| tool.split_once('/').map_or(tool.as_str(), |(_, name)| name))
        .collect();
    bare.into_iter().map(str::to_owned).collect()
}

/// The deny of a call whose tool the credential does not grant.
fn outside_scope(tool: &str) -> Verdict {
    Verdict {
        decision: Decision::Deny,
        policies: vec![CREDENTIAL_SCOPE.to_owned()],
        reasons: vec![format!(
            "the task credential does not grant the tool `{tool}`"
        )],
        errors: Vec::new(),
    }
}

/// A request that passed parsing but cannot be evaluated: 422, counted.
fn invalid_request(state: &AppState, error: impl std::fmt::Display) -> ApiError {
    state.metrics().count_rejected("invalid_request");
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        error.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_see_bare_tool_names_once() {
        let tools = ["mail/send", "web/send", "web/fetch", "x/a/b"]
            .map(str::to_owned)
            .into();
        assert_eq!(bare_tools(&tools), ["a/b", "fetch", "send"]);
    }
}
