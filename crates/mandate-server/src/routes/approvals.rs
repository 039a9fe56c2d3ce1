//! Approvals for people: the queue, one approval (with a long poll for the
//! agent waiting on it), approve and deny, withdraw (for the requester);
//! and the approver's views of receipts and tasks that the console is built
//! on.
//!
//! | Request | Who |
//! |---|---|
//! | `GET /v1/approvals` | approver |
//! | `GET /v1/approvals/{id}` | anyone with the id (status); approver (all) |
//! | `POST /v1/approvals/{id}/approve`, `/deny` | approver |
//! | `POST /v1/approvals/{id}/withdraw` | the requester |
//! | `GET /v1/approvers/me` | approver |
//! | `GET /v1/receipts` | approver |
//! | `GET /v1/tasks` | approver |

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use mandate_core::api::{ApprovalList, ApprovalView, ResolveApproval, TaskView, WithdrawApproval};
use mandate_core::{Approval, ApprovalError, ApprovalId, ApprovalStatus, Resolution};
use mandate_store::{ApprovalRecord, ReceiptQuery};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::approval_flow::{RecordError, Recorded, record_resolution};
use crate::approvals::{MAX_WAIT, approval_detail};
use crate::auth::{Bearer, BearerProblem, bearer_of, credential_refused, insufficient_scope};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJsonOrEmpty, ApiQuery};
use crate::routes::store_failed;
use crate::routes::tasks::task_view;
use crate::state::AppState;

/// The most items a list answers with.
const MAX_LIMIT: usize = 500;

/// An authenticated approver: the name their token is configured under.
pub(crate) struct Approver(pub String);

impl FromRequestParts<AppState> for Approver {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.approvals().has_approvers() {
            return Err(unauthorized(
                "no_approvers",
                "no approver is configured on this server: add `[[approvers]]` (see docs/approvals.md)",
            ));
        }
        let token = bearer_token(&parts.headers)?.ok_or_else(|| {
            unauthorized(
                "missing_token",
                "send `Authorization: Bearer <approver token>`",
            )
        })?;
        state
            .approvals()
            .approver(&token)
            .map(|name| Self(name.to_owned()))
            .ok_or_else(|| {
                unauthorized(
                    "invalid_token",
                    "not an approver token (agents' task credentials and identity tokens never approve); check the token",
                )
            })
    }
}

impl OptionalFromRequestParts<AppState> for Approver {
    type Rejection = ApiError;

    /// `None` unless the request carries a valid approver token: the
    /// status of an approval is shown to anyone holding its id, including
    /// an agent presenting its own credential.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        let token = bearer_token(&parts.headers)?;
        Ok(token.and_then(|t| state.approvals().approver(&t).map(|n| Self(n.to_owned()))))
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    bearer_of(headers).map_err(|problem| match problem {
        BearerProblem::Several => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send exactly one `Authorization` header",
        ),
        BearerProblem::OtherScheme | BearerProblem::Empty => unauthorized(
            "missing_token",
            "only bearer tokens are accepted: send `Authorization: Bearer <approver token>`",
        ),
    })
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    let challenge = if code == "invalid_token" {
        r#"Bearer realm="mandate-approvers", error="invalid_token""#
    } else {
        r#"Bearer realm="mandate-approvers""#
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message).with_challenge(challenge)
}

/// Filters of `GET /v1/approvals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ApprovalFilter {
    /// `pending` (default), `approved`, `denied`, `expired`, `used`,
    /// `withdrawn` or `all`.
    status: Option<String>,
    /// At most this many (default 100, at most 500).
    limit: Option<usize>,
}

/// List approvals, newest first: by default the pending queue.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    params(ApprovalFilter),
    security(("approver" = [])),
    responses(
        (status = 200, description = "The approvals", body = ApprovalList),
        (status = 400, description = "`invalid_query`: a query parameter that is not of its type (`limit=-1`) or is repeated", body = ErrorBody),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
        (status = 422, description = "An unknown status", body = ErrorBody),
        (status = 503, description = "The state database cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _approver: Approver,
    ApiQuery(filter): ApiQuery<ApprovalFilter>,
) -> Result<Json<ApprovalList>, ApiError> {
    let status = match filter.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!(
                    "unknown status `{s}`; use pending, approved, denied, expired, used, withdrawn or all"
                ),
            )
        })?),
    };
    let limit = filter.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let now = Utc::now();
    let tasks = state.tasks();
    let records = tasks
        .store()
        .approvals(status, now, limit)
        .await
        .map_err(|e| store_failed(tasks, e))?;
    let items = records.iter().map(|r| approval_detail(r, now)).collect();
    Ok(Json(ApprovalList { items }))
}

/// `?wait=` of `GET /v1/approvals/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Wait {
    /// Hold the answer while the approval is pending, up to this long
    /// (`30s`, at most `60s`).
    wait: Option<String>,
}

/// Show one approval; with `?wait=30s`, answer when it stops being pending
/// or the wait is over.
///
/// Without an approver token only the status fields are shown: the agent
/// waiting on its approval polls here with the id it was given.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id"), Wait),
    security((), ("approver" = [])),
    responses(
        (status = 200, description = "The approval", body = ApprovalView),
        (status = 400, description = "`invalid_query`: a query parameter that is not of its type (`limit=-1`) or is repeated", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 422, description = "`wait` is not a duration", body = ErrorBody),
        (status = 503, description = "The state database cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    approver: Option<Approver>,
    ApiQuery(wait): ApiQuery<Wait>,
) -> Result<Json<ApprovalView>, ApiError> {
    let wait = match wait.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!("`wait={text}` is not a duration; write e.g. `wait=30s`"),
                )
            })?
            .min(MAX_WAIT),
    };
    // Long polls are capped; past the cap the answer comes at once.
    let permit = if wait.is_zero() {
        None
    } else {
        state.approvals().waiter()
    };
    let wait = if permit.is_some() {
        wait
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so that no change between the read and the
    // wait is missed.
    let mut changes = state.approvals().subscribe();
    let id = approval_id(&id)?;
    loop {
        let record = load(&state, &id).await?;
        let now = Utc::now();
        let status = record.approval.status_at(now);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if status != ApprovalStatus::Pending || left.is_zero() {
            return Ok(Json(match approver {
                Some(_) => approval_detail(&record, now),
                None => ApprovalView::status(&record.approval, now),
            }));
        }
        // Wake at a change, at the deadline, or at the expiry (which needs
        // no change to be stored to show).
        let to_expiry = (record.approval.expires_at - now)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let _ = tokio::time::timeout(left.min(to_expiry), changes.changed()).await;
    }
}

/// Approve a pending approval.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = ResolveApproval,
    security(("approver" = [])),
    responses(
        (status = 200, description = "The approval, approved", body = ApprovalView),
        (status = 400, description = "The body is not valid JSON, or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
        (status = 403, description = "`self_approval`: the approver is an agent of the request, or (unless allowed) the person its task acts for", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "It is no longer pending (resolved, expired, used or withdrawn)", body = ErrorBody),
        (status = 422, description = "`reason_required`: no reason given; `reason_too_long`: a reason over 4096 bytes; `invalid_request`: a body with other fields", body = ErrorBody),
        (status = 503, description = "The resolution could not be recorded; nothing changed", body = ErrorBody),
    ))]
pub(crate) async fn approve(
    state: State<AppState>,
    id: Path<String>,
    approver: Approver,
    body: Result<ApiJsonOrEmpty<ResolveApproval>, ApiError>,
) -> Result<Json<ApprovalView>, ApiError> {
    resolve(state, id, approver, body?.0, Resolution::Approve).await
}

/// Deny a pending approval.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = ResolveApproval,
    security(("approver" = [])),
    responses(
        (status = 200, description = "The approval, denied", body = ApprovalView),
        (status = 400, description = "The body is not valid JSON, or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
        (status = 403, description = "`self_approval`: the approver is an agent of the request, or (unless allowed) the person its task acts for", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "It is no longer pending (resolved, expired, used or withdrawn)", body = ErrorBody),
        (status = 422, description = "`reason_required`: no reason given; `reason_too_long`: a reason over 4096 bytes; `invalid_request`: a body with other fields", body = ErrorBody),
        (status = 503, description = "The resolution could not be recorded; nothing changed", body = ErrorBody),
    ))]
pub(crate) async fn deny(
    state: State<AppState>,
    id: Path<String>,
    approver: Approver,
    body: Result<ApiJsonOrEmpty<ResolveApproval>, ApiError>,
) -> Result<Json<ApprovalView>, ApiError> {
    resolve(state, id, approver, body?.0, Resolution::Deny).await
}

/// Checks, records (receipt first, then the new status) and announces a
/// resolution, all under the approvals lock.
async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Approver(approver): Approver,
    body: ResolveApproval,
    resolution: Resolution,
) -> Result<Json<ApprovalView>, ApiError> {
    let approvals = state.approvals();
    let id = approval_id(&id)?;
    let _guard = approvals
        .lock(state.tasks().store())
        .await
        .map_err(|e| store_failed(state.tasks(), e))?;
    let record = load(&state, &id).await?;
    let now = Utc::now();
    let resolved = record
        .approval
        .resolve(
            &approver,
            resolution,
            &body.reason,
            now,
            approvals.settings().allow_self_approval,
        )
        .map_err(|e| refused(&e))?;
    let record = record_change(&state, record, resolved, now).await?;
    tracing::info!(approval_id = %id, approver = %approver, status = %record.approval.status, "approval resolved");
    Ok(Json(approval_detail(&record, now)))
}

/// Withdraw a pending approval: the requester no longer wants the call (its
/// client cancelled it, say), so nobody need answer. The approval becomes
/// `withdrawn`, which denies like `denied`, and its receipt is recorded.
///
/// An approval asked for under a task credential is withdrawn only with a
/// credential of that task held by the same agent (`Authorization: Bearer`);
/// one asked for without a credential names an agent nobody verified, so
/// holding its id is enough, as for its status. Withdrawing can only take
/// away: it never lets a call run.
#[utoipa::path(post, path = "/v1/approvals/{id}/withdraw", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = WithdrawApproval,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The approval, withdrawn (status fields only)", body = ApprovalView),
        (status = 400, description = "A body that is not valid JSON (the body is optional), or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "An approval asked for under a credential, and no credential, or one that does not verify", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: a credential of another task or another agent", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "It is no longer pending (resolved, expired, used or withdrawn)", body = ErrorBody),
        (status = 422, description = "`reason_too_long`: a reason over 4096 bytes; `invalid_request`: a body with other fields", body = ErrorBody),
        (status = 503, description = "The withdrawal could not be recorded; nothing changed", body = ErrorBody),
    ))]
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bearer: Option<Bearer>,
    body: Result<ApiJsonOrEmpty<WithdrawApproval>, ApiError>,
) -> Result<Json<ApprovalView>, ApiError> {
    let body = body?.0;
    // Who may withdraw is checked before the lock: verifying a credential
    // costs a signature check and a read, which approvals need not wait for.
    let id = approval_id(&id)?;
    let asked = load(&state, &id).await?;
    requester_only(&state, &asked, bearer.as_ref()).await?;
    let approvals = state.approvals();
    let _guard = approvals
        .lock(state.tasks().store())
        .await
        .map_err(|e| store_failed(state.tasks(), e))?;
    let record = load(&state, &id).await?;
    let now = Utc::now();
    let withdrawn = record
        .approval
        .withdraw(body.reason.as_deref().unwrap_or_default(), now)
        .map_err(|e| refused(&e))?;
    let record = record_change(&state, record, withdrawn, now).await?;
    tracing::info!(approval_id = %id, agent = %record.approval.requester.agent, "approval withdrawn by its requester");
    Ok(Json(ApprovalView::status(&record.approval, now)))
}

/// Refuses anyone but the requester of an approval asked for under a task
/// credential: the caller must present the very credential the call was
/// decided under (the decision records its revocation id), so neither
/// another agent of the task nor another credential named like the
/// requester withdraws it. An approval asked for without a credential
/// names an agent nobody verified: holding its id is enough.
async fn requester_only(
    state: &AppState,
    record: &ApprovalRecord,
    bearer: Option<&Bearer>,
) -> Result<(), ApiError> {
    let verified = record
        .receipt
        .get("delegation")
        .and_then(Value::as_array)
        .is_some_and(|chain| !chain.is_empty());
    if !verified {
        return Ok(());
    }
    let tasks = state.tasks();
    let bearer = bearer.ok_or_else(|| {
        crate::auth::missing_token(
            tasks,
            "this approval was asked for under a task credential: send that credential as `Authorization: Bearer <credential>` to withdraw it",
        )
    })?;
    let credential = tasks
        .credentials()
        .verify_credential(&bearer.0, Utc::now())
        .map_err(|e| credential_refused(tasks, &e))?;
    let decided = tasks
        .store()
        .decided_call(&record.approval.decision_id)
        .await
        .map_err(|e| store_failed(tasks, e))?;
    let made_under = decided.and_then(|(_, credential)| credential);
    if made_under.is_none() || made_under.as_ref() != credential.revocation_ids.last() {
        return Err(insufficient_scope(
            tasks,
            "only the credential the call was asked under can withdraw this approval",
        ));
    }
    Ok(())
}

/// Records a change of a pending approval (receipt first, then the new
/// status; the caller holds the approvals lock), counts it and wakes those
/// waiting on it.
async fn record_change(
    state: &AppState,
    record: ApprovalRecord,
    next: Approval,
    now: chrono::DateTime<Utc>,
) -> Result<ApprovalRecord, ApiError> {
    let approvals = state.approvals();
    let id = record.approval.id.clone();
    let record = match record_resolution(state, record, next, now).await {
        Ok(Recorded::Stored(record)) => record,
        Ok(Recorded::AlreadyLogged(record)) => {
            approvals.changed();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_pending",
                format!(
                    "the approval is already {} (the receipt log records it); reload it",
                    record.approval.status
                ),
            ));
        }
        Err(RecordError::Ledger(e)) => {
            tracing::error!(error = %e, approval_id = %id, "approval receipt not recorded");
            state.metrics().count_receipt_failure();
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "receipt_unavailable",
                "the resolution could not be recorded in the receipt ledger; nothing changed, try again",
            ));
        }
        Err(RecordError::State(e)) => {
            tracing::error!(error = %e, approval_id = %id, "approval receipt written, status not stored");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                "the resolution is in the receipt log but its status could not be stored; send it again to apply it",
            ));
        }
        Err(RecordError::Changed) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_pending",
                "the approval changed while it was being resolved; reload it",
            ));
        }
    };
    state
        .metrics()
        .count_approval(record.approval.status.as_str());
    approvals.changed();
    Ok(record)
}

fn refused(e: &ApprovalError) -> ApiError {
    let (status, code) = match e {
        ApprovalError::NotPending(_) | ApprovalError::Expired(_) => {
            (StatusCode::CONFLICT, "not_pending")
        }
        ApprovalError::AgentApprover(_) | ApprovalError::SelfApproval(_) => {
            (StatusCode::FORBIDDEN, "self_approval")
        }
        ApprovalError::ReasonRequired => (StatusCode::UNPROCESSABLE_ENTITY, "reason_required"),
        ApprovalError::ReasonTooLong => (StatusCode::UNPROCESSABLE_ENTITY, "reason_too_long"),
    };
    ApiError::new(status, code, e.to_string())
}

async fn load(state: &AppState, id: &ApprovalId) -> Result<ApprovalRecord, ApiError> {
    let tasks = state.tasks();
    tasks
        .store()
        .approval(id)
        .await
        .map_err(|e| store_failed(tasks, e))?
        .ok_or_else(|| approval_not_found(id.as_str()))
}

/// The approval a path names. Text that is not an approval id names no
/// approval, and is answered as any unknown approval is.
fn approval_id(id: &str) -> Result<ApprovalId, ApiError> {
    ApprovalId::new(id).map_err(|_| approval_not_found(id))
}

/// `404 not_found` for an approval.
fn approval_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no approval `{id}`"),
    )
}

/// Who an approver token belongs to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The approver's configured name.
    pub name: String,
    /// Always `approver`.
    pub role: &'static str,
}

/// Who the approver token belongs to (the console's sign-in check).
#[utoipa::path(get, path = "/v1/approvers/me", tag = "approvals",
    security(("approver" = [])),
    responses(
        (status = 200, description = "The approver", body = WhoAmI),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
    ))]
pub(crate) async fn me(Approver(name): Approver) -> Json<WhoAmI> {
    Json(WhoAmI {
        name,
        role: "approver",
    })
}

/// Filters of `GET /v1/receipts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReceiptFilter {
    /// Task id.
    task: Option<String>,
    /// The agent (principal id).
    agent: Option<String>,
    /// The tool: `server/tool`, or a bare name for that tool on any server.
    tool: Option<String>,
    /// The outcome: `allow`, `deny`, `approval_required`, or for approval
    /// receipts `approved`, `denied`, `expired`, `withdrawn`.
    decision: Option<String>,
    /// `decision` or `approval`.
    kind: Option<String>,
    /// Only receipts with a lower index (the next page).
    before: Option<u64>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// One receipt found, with the status of its inclusion proof.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FoundReceipt {
    /// Its position in the log.
    pub index: u64,
    /// The receipt.
    #[schema(value_type = Object)]
    pub receipt: Value,
    /// Whether the newest checkpoint provably includes it.
    pub proof: ProofStatus,
}

/// Inclusion proof status of a receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProofStatus {
    /// `verified` (the receipt's signature and its inclusion proof check
    /// out against the newest signed checkpoint), `pending` (newer than the
    /// newest checkpoint) or `failed`.
    pub status: &'static str,
    /// Size of the checkpoint it was checked against.
    pub checkpoint_size: Option<u64>,
}

/// Receipts found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptList {
    /// Newest first.
    pub items: Vec<FoundReceipt>,
}

/// Search receipts, newest first.
#[utoipa::path(get, path = "/v1/receipts", tag = "receipts",
    params(ReceiptFilter),
    security(("approver" = [])),
    responses(
        (status = 200, description = "The receipts", body = ReceiptList),
        (status = 400, description = "`invalid_query`: a query parameter that is not of its type (`limit=-1`) or is repeated", body = ErrorBody),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
        (status = 503, description = "The ledger cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn receipts(
    State(state): State<AppState>,
    _approver: Approver,
    ApiQuery(filter): ApiQuery<ReceiptFilter>,
) -> Result<Json<ReceiptList>, ApiError> {
    let blank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let query = ReceiptQuery {
        task: blank(filter.task),
        agent: blank(filter.agent),
        tool: blank(filter.tool),
        decision: blank(filter.decision),
        kind: blank(filter.kind),
        before: filter.before,
        limit: filter.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
    };
    let found = state.ledger().search(query).await.map_err(|e| {
        tracing::error!(error = %e, "receipt search failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            "the receipt ledger cannot be read; try again",
        )
    })?;
    let verifier = state.ledger().verifier();
    let items = found
        .into_iter()
        .map(|(stored, proof)| {
            let receipt = serde_json::from_str(&stored.body).unwrap_or(Value::Null);
            let proof = match proof {
                None => ProofStatus {
                    status: "pending",
                    checkpoint_size: None,
                },
                Some(proof) => {
                    let size = proof.checkpoint.size;
                    let verified = proof
                        .into_bundle(verifier)
                        .is_ok_and(|bundle| bundle.verify(verifier).is_ok());
                    ProofStatus {
                        status: if verified { "verified" } else { "failed" },
                        checkpoint_size: Some(size),
                    }
                }
            };
            FoundReceipt {
                index: stored.index,
                receipt,
                proof,
            }
        })
        .collect();
    Ok(Json(ReceiptList { items }))
}

/// Filters of `GET /v1/tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskFilter {
    /// `active` (default: tasks not ended) or `all`.
    status: Option<String>,
    /// At most this many (default 100, at most 500).
    limit: Option<usize>,
}

/// Tasks, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskList {
    /// The tasks, each with its delegation tree and history.
    pub items: Vec<TaskView>,
}

/// List tasks with their delegation trees, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(TaskFilter),
    security(("approver" = [])),
    responses(
        (status = 200, description = "The tasks", body = TaskList),
        (status = 400, description = "`invalid_query`: a query parameter that is not of its type (`limit=-1`) or is repeated", body = ErrorBody),
        (status = 401, description = "No approver token, or not one", body = ErrorBody),
        (status = 422, description = "An unknown status", body = ErrorBody),
        (status = 503, description = "The state database cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn tasks(
    State(state): State<AppState>,
    _approver: Approver,
    ApiQuery(filter): ApiQuery<TaskFilter>,
) -> Result<Json<TaskList>, ApiError> {
    let open_only = match filter.status.as_deref().unwrap_or("active") {
        "active" => true,
        "all" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("unknown status `{other}`; use active or all"),
            ));
        }
    };
    let limit = filter.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let tasks = state.tasks();
    let found = tasks
        .store()
        .list_tasks(open_only, limit)
        .await
        .map_err(|e| store_failed(tasks, e))?;
    let now = Utc::now();
    let items = found
        .into_iter()
        .map(|details| task_view(tasks, details, now))
        .collect();
    Ok(Json(TaskList { items }))
}
