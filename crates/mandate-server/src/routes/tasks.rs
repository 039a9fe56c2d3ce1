//! Tasks: start one for an authenticated agent, show it with its delegation
//! tree, delegate it to a sub-agent, end it; and the revocation list that
//! offline verifiers fetch.
//!
//! Who may do what:
//!
//! | Request | Bearer token |
//! | --- | --- |
//! | `POST /v1/tasks` | the agent's identity token (JWT); its subject becomes the task's root agent |
//! | `GET /v1/tasks/{id}` | a credential of this task (any hop), or the root agent's identity token |
//! | `POST /v1/tasks/{id}/delegate` | the delegating agent's credential of this task |
//! | `DELETE /v1/tasks/{id}` | the task's root credential (depth 0), or the root agent's identity token |
//! | `GET /v1/revocations` | none |

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode, header};
use chrono::{DateTime, TimeDelta, Utc};
use mandate_auth::{Delegation, TaskGrant, VerifiedCredential, VerifiedIdentity};
use mandate_core::api::{
    CredentialView, DelegateTask, Delegated, HistoryView, ResultView, StartTask, TaskEnded,
    TaskStarted, TaskView,
};
use mandate_core::provenance::{Grounds, MAX_FIELD_BYTES};
use mandate_core::value_kind::whole_values;
use mandate_core::{PolicyPack, TaskId, names};
use mandate_store::{
    CredentialRecord, END_REASON_EXPIRED, EndedTask, HistoryEntry, TaskDetails, TaskRecord,
};
use serde::{Deserialize, Serialize};

use crate::approval_flow;
use crate::auth::{
    Bearer, credential_refused, identity_refused, insufficient_scope, invalid_token,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::routes::{internal, store_failed, task_id, task_not_found};
use crate::state::AppState;
use crate::tasks::{MAX_DELEGATION_DEPTH, Tasks};

/// Longest intent, in bytes.
const MAX_INTENT_BYTES: usize = 4096;

/// Most tools, or labels, in one request.
const MAX_ITEMS: usize = 256;

/// What a [`StartTask`] asks for, once [`check_start`] has passed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTerms {
    /// The tools, each a `server/tool` name.
    pub tools: BTreeSet<String>,
    /// The data labels.
    pub labels: BTreeSet<String>,
    /// When the task ends: the request's `ttl_seconds` from `now`.
    pub expires_at: DateTime<Utc>,
}

/// Checks a task to start, as `POST /v1/tasks` does once the body is
/// parsed and before anything is minted or stored: a non-empty intent,
/// well-formed tool and label names, a delegation depth and a lifetime
/// within bounds (`max_ttl`: the server's `task_max_ttl_seconds`), and
/// params that every decision under the task can evaluate with `pack`.
///
/// Public so that the request's parser and checks can be exercised
/// without a server (the `task_request` fuzz target, `fuzz/`).
pub fn check_start(
    task: &StartTask,
    pack: &PolicyPack,
    max_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<TaskTerms, ApiError> {
    non_empty_text("intent", &task.intent, MAX_INTENT_BYTES)?;
    let tools = tool_names("tools", &task.tools)?;
    let labels = label_names("labels", &task.labels)?;
    if task.max_depth > MAX_DELEGATION_DEPTH {
        return Err(invalid(format!(
            "`max_depth` {} is deeper than the {MAX_DELEGATION_DEPTH} hops allowed",
            task.max_depth
        )));
    }
    let expires_at = task_expiry(max_ttl, now, task.ttl_seconds)?;
    // Every decision of the task will carry its params: params no
    // decision could evaluate are refused now, naming the parameter, not
    // at each call (where they would blame a field the caller may not set).
    pack.check_task_params(&task.params, "params")
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(prompt) = &task.prompt {
        non_empty_text("prompt", prompt, MAX_PROMPT_BYTES)?;
    }
    if task.grounded_values.len() > MAX_GROUNDED_VALUES {
        return Err(invalid(format!(
            "`grounded_values` holds {} values; at most {MAX_GROUNDED_VALUES} are allowed",
            task.grounded_values.len()
        )));
    }
    for (i, value) in task.grounded_values.iter().enumerate() {
        non_empty_text(&format!("grounded_values[{i}]"), value, MAX_FIELD_BYTES)?;
        if whole_values(value).is_empty() {
            return Err(invalid(format!(
                "`grounded_values[{i}]` is not an e-mail address, account, URL or host, handle or phone number (nor a list of them separated by `,` or `;`)"
            )));
        }
    }
    Ok(TaskTerms {
        tools,
        labels,
        expires_at,
    })
}

/// One decision of a task's history as the API shows it.
pub(crate) fn history_view(entry: HistoryEntry) -> HistoryView {
    HistoryView {
        decision_id: entry.decision_id,
        agent: entry.agent,
        server: entry.server,
        tool: entry.tool,
        decision: entry.decision,
        decided_at: entry.decided_at,
        annotations: entry.annotations,
        result: entry.result.map(|r| ResultView {
            status: r.status,
            labels: r.labels,
            reported_at: r.reported_at,
        }),
    }
}

/// The revocation list.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationList {
    /// Every revoked credential, in the order revoked.
    pub revocations: Vec<RevocationView>,
}

/// One revoked credential.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationView {
    /// The revocation id (hex) of the credential's last block. A Biscuit
    /// verifier refuses any token with a revoked id among its blocks' ids.
    pub revocation_id: String,
    /// The task it belonged to.
    #[schema(value_type = String)]
    pub task_id: TaskId,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
}

/// Start a task for the authenticated agent and issue its root credential.
///
/// The bearer token is the agent's workload identity token (a JWT from a
/// configured issuer). Its subject becomes the task's root agent; the human
/// it acts for (the issuer's `on_behalf_of` claim) is kept apart.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = StartTask,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The task started", body = TaskStarted,
            headers(("location" = String, description = "`/v1/tasks/{task_id}`"))),
        (status = 400, description = "The body is not valid JSON, or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "No identity token, an identity token that does not verify, or no identity issuer configured", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge naming the resource metadata"))),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The JSON is not a valid task, or its `params` are not what the policy pack's schema declares (a declared number Cedar cannot hold included)", body = ErrorBody),
        (status = 503, description = "The state database cannot record the task", body = ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    bearer: Bearer,
    body: Result<ApiJson<StartTask>, ApiError>,
) -> Result<(StatusCode, [(HeaderName, String); 1], Json<TaskStarted>), ApiError> {
    let tasks = state.tasks();
    let now = Utc::now();
    let agent = agent_identity(tasks, &bearer, now).await?;
    let ApiJson(request) = body?;
    let TaskTerms {
        tools,
        labels,
        expires_at,
    } = check_start(&request, &state.pack(), tasks.max_ttl(), now)?;

    let task_id = TaskId::mint();
    let grant = TaskGrant {
        task_id: task_id.clone(),
        agent: agent.subject.clone(),
        on_behalf_of: agent.on_behalf_of.clone(),
        tools,
        labels,
        expires_at,
        max_depth: request.max_depth,
        audience: tasks.credentials().audience().to_owned(),
    };
    let credential = tasks
        .credentials()
        .authority()
        .mint(&grant)
        .map_err(|e| credential_refused(tasks, &e))?;
    let revocation_id = last_id(&credential.revocation_ids)?;
    let task = TaskRecord {
        id: task_id.clone(),
        agent: grant.agent.clone(),
        on_behalf_of: grant.on_behalf_of.clone(),
        intent: request.intent,
        tools: grant.tools.iter().cloned().collect(),
        labels: grant.labels.iter().cloned().collect(),
        params: request.params,
        audience: grant.audience.clone(),
        max_depth: grant.max_depth,
        created_at: now,
        expires_at: credential.expires_at,
        ended_at: None,
        end_reason: None,
        root_revocation_id: revocation_id.clone(),
    };
    let root = CredentialRecord {
        task_id: task_id.clone(),
        revocation_id: revocation_id.clone(),
        parent_revocation_id: None,
        agent: grant.agent.clone(),
        depth: 0,
        tools: task.tools.clone(),
        labels: task.labels.clone(),
        issued_at: now,
        expires_at: credential.expires_at,
    };
    tasks
        .store()
        .create_task(task, root)
        .await
        .map_err(|e| store_failed(tasks, e))?;
    // A second write: a task whose grounds were lost to a failure here is
    // stricter, never looser (its destinations are unseen), and its
    // credential is not answered.
    let grounds = Grounds::of_task_start(
        tasks.grounding_key(),
        request.prompt.as_deref().unwrap_or_default(),
        &request.grounded_values,
    );
    tasks
        .store()
        .ground_task(&task_id, grounds)
        .await
        .map_err(|e| store_failed(tasks, e))?;

    tracing::info!(%task_id, agent = %grant.agent, expires_at = %credential.expires_at, "task started");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/tasks/{task_id}"))],
        Json(TaskStarted {
            task_id,
            credential: credential.token,
            expires_at: credential.expires_at,
            revocation_id,
        }),
    ))
}

/// Show a task with its delegation tree and history.
///
/// The bearer token is a credential of this task (any hop), the identity
/// token of the task's root agent (which also shows an ended task), or an
/// approver token.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 401, description = "No token, or a token that does not verify (expired, revoked, forged, another audience)", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "The credential is for another task, or the identity is not the task's root agent", body = ErrorBody),
        (status = 404, description = "No such task (identity tokens only)", body = ErrorBody),
        (status = 503, description = "The state database cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bearer: Bearer,
) -> Result<Json<TaskView>, ApiError> {
    let tasks = state.tasks();
    let now = Utc::now();
    let caller = match state.approvals().approver(&bearer.0) {
        Some(name) => Caller::Approver(name.to_owned()),
        None => caller(tasks, &bearer, &id, now).await?,
    };
    let task_id = task_id(&id)?;
    let details = tasks
        .store()
        .task_details(&task_id)
        .await
        .map_err(|e| store_failed(tasks, e))?
        .ok_or_else(|| task_not_found(&id))?;
    caller.authorize(tasks, &details.task)?;
    Ok(Json(task_view(tasks, details, now)))
}

/// Issue a narrower credential of this task for a sub-agent.
///
/// The bearer token is the delegating agent's credential of this task. The
/// new credential can only narrow it: a subset of its tools and labels, a
/// lifetime within its own, one hop deeper, within the task's `max_depth`.
#[utoipa::path(post, path = "/v1/tasks/{id}/delegate", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    request_body = DelegateTask,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The sub-agent's credential", body = Delegated),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "No credential, or one that does not verify (expired, revoked, forged, another audience), or the task ended", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the delegation would widen the credential (tools, labels, lifetime) or go deeper than `max_depth`, or the credential is for another task", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The JSON is not a valid delegation", body = ErrorBody),
        (status = 503, description = "The state database cannot record the credential", body = ErrorBody),
    ))]
pub(crate) async fn delegate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bearer: Bearer,
    body: Result<ApiJson<DelegateTask>, ApiError>,
) -> Result<(StatusCode, Json<Delegated>), ApiError> {
    let tasks = state.tasks();
    let now = Utc::now();
    let Caller::Credential(parent) = caller(tasks, &bearer, &id, now).await? else {
        return Err(invalid_token(
            tasks,
            "invalid_token",
            "delegating needs the delegating agent's task credential, not an identity token",
        ));
    };
    let ApiJson(request) = body?;

    name("agent", &request.agent, names::agent)?;
    let tools = tool_names("tools", &request.tools)?;
    let labels = request
        .labels
        .as_deref()
        .map(|labels| label_names("labels", labels))
        .transpose()?;
    let expires_at = match request.ttl_seconds {
        None => parent.expires_at,
        Some(ttl) => delegation_expiry(tasks, &parent, now, ttl)?,
    };
    let delegation = Delegation {
        agent: request.agent,
        tools,
        labels,
        expires_at,
    };
    let issued = tasks
        .credentials()
        .authority()
        .delegate(&bearer.0, &delegation, now)
        .map_err(|e| credential_refused(tasks, &e))?;

    let depth = u32::try_from(parent.chain.len()).map_err(|_| internal("chain too long"))?;
    let revocation_id = last_id(&issued.revocation_ids)?;
    let record = CredentialRecord {
        // The path's task: `caller` matched the credential with it.
        task_id: parent.task_id.clone(),
        revocation_id: revocation_id.clone(),
        parent_revocation_id: Some(last_id(&parent.revocation_ids)?),
        agent: delegation.agent.clone(),
        depth,
        tools: delegation.tools.iter().cloned().collect(),
        labels: delegation
            .labels
            .as_ref()
            .unwrap_or(&parent.labels)
            .iter()
            .cloned()
            .collect(),
        issued_at: now,
        expires_at: issued.expires_at,
    };
    // If the task ended since the credential was verified, the store refuses
    // the record (task_ended) and the new credential is never handed out.
    tasks
        .store()
        .add_credential(record)
        .await
        .map_err(|e| store_failed(tasks, e))?;

    tracing::info!(task_id = %id, agent = %delegation.agent, depth, "credential delegated");
    Ok((
        StatusCode::CREATED,
        Json(Delegated {
            credential: issued.token,
            expires_at: issued.expires_at,
            revocation_id,
            depth,
        }),
    ))
}

/// End a task and revoke every credential issued under it.
///
/// Its pending approvals are withdrawn (each with a receipt whose reason
/// says the task ended), so that nobody answers a call that can no longer
/// run.
///
/// The bearer token is the task's root credential (depth 0), the identity
/// token of its root agent, or an approver token; a sub-agent cannot end
/// the task. The revoked
/// credentials are refused from the moment this answers. Ending an ended
/// task with the root agent's identity token answers the same again.
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task ended; its credentials are revoked", body = TaskEnded),
        (status = 401, description = "No token, or a token that does not verify (expired, revoked, forged, another audience)", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: a sub-agent's credential, a credential of another task, or an identity that is not the task's root agent", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "The state database cannot record the end", body = ErrorBody),
    ))]
pub(crate) async fn end(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bearer: Bearer,
) -> Result<Json<TaskEnded>, ApiError> {
    let tasks = state.tasks();
    let now = Utc::now();
    let caller = match state.approvals().approver(&bearer.0) {
        Some(name) => Caller::Approver(name.to_owned()),
        None => caller(tasks, &bearer, &id, now).await?,
    };
    let task_id = task_id(&id)?;
    match &caller {
        Caller::Credential(credential) => {
            if let Some(holder) = credential.holder().filter(|hop| hop.depth > 0) {
                return Err(insufficient_scope(
                    tasks,
                    &format!(
                        "only the task's root credential or its root agent can end the task; this credential is held by `{}` at depth {}",
                        holder.agent, holder.depth
                    ),
                ));
            }
        }
        Caller::Approver(name) => {
            tracing::info!(task_id = %id, approver = %name, "an approver ends the task");
        }
        Caller::Agent(_) => {
            let task = tasks
                .store()
                .task(&task_id)
                .await
                .map_err(|e| store_failed(tasks, e))?
                .ok_or_else(|| task_not_found(&id))?;
            caller.authorize(tasks, &task)?;
        }
    }

    let EndedTask { task, revoked } = tasks
        .credentials()
        .end(&task_id, now)
        .await
        .map_err(|e| store_failed(tasks, e))?;
    tracing::info!(task_id = %id, credentials = revoked.len(), "task ended; its credentials are revoked");
    // Its pending approvals could release nothing any more: out of the
    // queue, each with a receipt saying why.
    let withdrawn = approval_flow::withdraw_for_ended_task(&state, &task_id, now).await;
    if withdrawn > 0 {
        tracing::info!(task_id = %id, approvals = withdrawn, "the ended task's pending approvals are withdrawn");
    }
    Ok(Json(TaskEnded {
        task_id: task.id,
        ended_at: task.ended_at.unwrap_or(now),
        end_reason: task.end_reason.unwrap_or_default(),
        revoked,
    }))
}

/// The revocation list, for verifiers that check task credentials offline.
///
/// Every credential of every ended task, in the order revoked. A Biscuit
/// verifier refuses a token any of whose blocks' revocation ids is listed.
/// No authentication: revocation ids identify signatures, they grant
/// nothing.
#[utoipa::path(get, path = "/v1/revocations", tag = "tasks",
    responses(
        (status = 200, description = "The revocation list", body = RevocationList),
        (status = 503, description = "The state database cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn revocations(
    State(state): State<AppState>,
) -> Result<Json<RevocationList>, ApiError> {
    let tasks = state.tasks();
    let revocations = tasks
        .store()
        .revocations()
        .await
        .map_err(|e| store_failed(tasks, e))?;
    Ok(Json(RevocationList {
        revocations: revocations
            .into_iter()
            .map(|r| RevocationView {
                revocation_id: r.revocation_id,
                task_id: r.task_id,
                revoked_at: r.revoked_at,
            })
            .collect(),
    }))
}

/// Who presents a request about a task.
enum Caller {
    /// A verified credential of the task named in the path.
    Credential(Arc<VerifiedCredential>),
    /// The subject of a verified identity token, to compare with the task's
    /// root agent.
    Agent(String),
    /// An approver (a person, from `[[approvers]]`): sees and ends any task.
    Approver(String),
}

impl Caller {
    /// An identity may see (or end) only the tasks it started; a credential
    /// was matched with the task already.
    fn authorize(&self, tasks: &Tasks, task: &TaskRecord) -> Result<(), ApiError> {
        match self {
            Caller::Credential(_) | Caller::Approver(_) => Ok(()),
            Caller::Agent(subject) if *subject == task.agent => Ok(()),
            Caller::Agent(subject) => Err(insufficient_scope(
                tasks,
                &format!("`{subject}` is not the root agent of task `{}`", task.id),
            )),
        }
    }
}

/// Verifies the bearer token for task `id`: a JWT as an agent identity, or
/// a task credential, which must be of this task.
async fn caller(
    tasks: &Tasks,
    bearer: &Bearer,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Caller, ApiError> {
    if bearer.is_jwt() {
        return agent_identity(tasks, bearer, now)
            .await
            .map(|identity| Caller::Agent(identity.subject));
    }
    let credential = tasks
        .credentials()
        .verify_credential(&bearer.0, now)
        .map_err(|e| credential_refused(tasks, &e))?;
    if credential.task_id.as_str() != id {
        return Err(insufficient_scope(
            tasks,
            &format!(
                "the credential is for task `{}`, not for task `{id}`",
                credential.task_id
            ),
        ));
    }
    Ok(Caller::Credential(credential))
}

/// Verifies the bearer token as an agent's identity token.
async fn agent_identity(
    tasks: &Tasks,
    bearer: &Bearer,
    now: DateTime<Utc>,
) -> Result<VerifiedIdentity, ApiError> {
    let mut identity = tasks
        .identities()
        .verify(&bearer.0, now)
        .await
        .map_err(|e| identity_refused(tasks, &e))?;
    let unusable = |what: &str, error: names::NameError| {
        invalid_token(
            tasks,
            "invalid_token",
            &format!("the identity token's {what} cannot name an agent: {error}"),
        )
    };
    names::agent(&identity.subject).map_err(|e| unusable("subject", e))?;
    if let Some(person) = &identity.on_behalf_of {
        let person = names::person(person).map_err(|e| unusable("on-behalf-of claim", e))?;
        identity.on_behalf_of = Some(person);
    }
    Ok(identity)
}

/// The end of a new task's lifetime: `now` plus `ttl_seconds`, within the
/// server's maximum.
fn task_expiry(
    max_ttl: Duration,
    now: DateTime<Utc>,
    ttl_seconds: u64,
) -> Result<DateTime<Utc>, ApiError> {
    let max = max_ttl.as_secs();
    if ttl_seconds == 0 {
        return Err(invalid("`ttl_seconds` must be at least 1"));
    }
    if ttl_seconds > max {
        return Err(invalid(format!(
            "`ttl_seconds` {ttl_seconds} is longer than this server allows (`task_max_ttl_seconds` = {max})"
        )));
    }
    after(now, ttl_seconds).ok_or_else(|| invalid("`ttl_seconds` is out of range"))
}

/// The end of a delegated credential's lifetime: `now` plus `ttl_seconds`,
/// which may not outlive the delegating credential.
fn delegation_expiry(
    tasks: &Tasks,
    parent: &VerifiedCredential,
    now: DateTime<Utc>,
    ttl_seconds: u64,
) -> Result<DateTime<Utc>, ApiError> {
    if ttl_seconds == 0 {
        return Err(invalid("`ttl_seconds` must be at least 1"));
    }
    // Anything past the server's maximum outlives every credential; it is
    // refused as a widening without computing a date out of range.
    match after(now, ttl_seconds).filter(|_| ttl_seconds <= tasks.max_ttl().as_secs()) {
        Some(at) => Ok(at),
        None => Err(insufficient_scope(
            tasks,
            &format!(
                "a delegation can only narrow a credential; this one would widen it: a lifetime of {ttl_seconds} s outlives the delegating credential, which expires at {}",
                parent.expires_at
            ),
        )),
    }
}

fn after(now: DateTime<Utc>, seconds: u64) -> Option<DateTime<Utc>> {
    let seconds = i64::try_from(seconds).ok()?;
    now.checked_add_signed(TimeDelta::try_seconds(seconds)?)
}

/// The view of a task as `GET /v1/tasks/{id}` and `GET /v1/tasks` show it
/// at `now`.
pub(crate) fn task_view(tasks: &Tasks, details: TaskDetails, now: DateTime<Utc>) -> TaskView {
    let TaskDetails {
        task,
        credentials,
        history,
    } = details;
    let state = match (&task.end_reason, task.expires_at <= now) {
        (Some(reason), _) if reason == END_REASON_EXPIRED => "expired",
        (Some(_), _) => "ended",
        (None, true) => "expired",
        (None, false) => "open",
    };
    TaskView {
        state: state.to_owned(),
        credentials: credentials
            .into_iter()
            .map(|c| CredentialView {
                revoked: tasks
                    .credentials()
                    .is_revoked(std::slice::from_ref(&c.revocation_id)),
                revocation_id: c.revocation_id,
                parent_revocation_id: c.parent_revocation_id,
                agent: c.agent,
                depth: c.depth,
                tools: c.tools,
                labels: c.labels,
                issued_at: c.issued_at,
                expires_at: c.expires_at,
            })
            .collect(),
        history: history.into_iter().map(history_view).collect(),
        id: task.id,
        agent: task.agent,
        on_behalf_of: task.on_behalf_of,
        intent: task.intent,
        tools: task.tools,
        labels: task.labels,
        params: task.params,
        audience: task.audience,
        max_depth: task.max_depth,
        created_at: task.created_at,
        expires_at: task.expires_at,
        ended_at: task.ended_at,
        end_reason: task.end_reason,
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

/// The last of a credential's revocation ids: the one naming its holder.
fn last_id(ids: &[String]) -> Result<String, ApiError> {
    ids.last()
        .cloned()
        .ok_or_else(|| internal("a credential without revocation ids"))
}

/// The longest `prompt` a task takes.
const MAX_PROMPT_BYTES: usize = 16 * 1024;

/// The most `grounded_values` a task takes.
const MAX_GROUNDED_VALUES: usize = 256;

fn non_empty_text(field: &str, value: &str, max_bytes: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("`{field}` must not be empty")));
    }
    if value.len() > max_bytes {
        return Err(invalid(format!(
            "`{field}` is longer than {max_bytes} bytes"
        )));
    }
    Ok(())
}

/// A name checked against its grammar (`mandate_core::names`), refused
/// as `422 invalid_request` naming the field.
fn name(
    field: &str,
    value: &str,
    check: fn(&str) -> Result<(), names::NameError>,
) -> Result<(), ApiError> {
    check(value).map_err(|e| invalid(format!("`{field}`: {e}")))
}

/// A non-empty list of tools, each `server/tool`.
fn tool_names(field: &str, tools: &[String]) -> Result<BTreeSet<String>, ApiError> {
    if tools.is_empty() {
        return Err(invalid(format!(
            "`{field}` must name at least one tool, as `server/tool`"
        )));
    }
    if tools.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "`{field}` names more than {MAX_ITEMS} tools"
        )));
    }
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("{field}[{i}]");
        name(&field, tool, names::tool_ref)?;
    }
    Ok(tools.iter().cloned().collect())
}

/// A list of labels, each a name.
pub(crate) fn label_names(field: &str, labels: &[String]) -> Result<BTreeSet<String>, ApiError> {
    if labels.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "`{field}` holds more than {MAX_ITEMS} labels"
        )));
    }
    for (i, label) in labels.iter().enumerate() {
        name(&format!("{field}[{i}]"), label, names::label)?;
    }
    Ok(labels.iter().cloned().collect())
}
