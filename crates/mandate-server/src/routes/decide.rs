//! `POST /v1/decide`: one tool call in, one decision out.
//!
//! The handler reads the protocol: the bearer token says under what the
//! call is decided (a task credential, a configured caller's token, or
//! none where the server allows it), the body is the decision request, and
//! the [`Decider`] does the rest (see [`crate::decider`] for the steps).
//! Its errors become HTTP statuses here, once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use mandate_auth::VerifiedCredential;
use mandate_core::{DecisionRequest, DecisionResponse};

use crate::auth::{Bearer, credential_refused, insufficient_scope, invalid_token};
use crate::callers::DecideAccess;
use crate::decider::{Authority, DecideError, Decider};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::routes::store_failed;
use crate::state::AppState;
use crate::tasks::Tasks;

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
    let rejected = |e: &ApiError| {
        if e.status().is_client_error() {
            state.metrics().count_rejected(e.code());
        }
    };
    // The token is checked before the body: a refused token gets its 401
    // whatever the body says.
    let authority = authority(&state, bearer.inspect_err(rejected)?).inspect_err(rejected)?;
    let ApiJson(request) = body.inspect_err(rejected)?;
    let decided = Decider::new(state.clone())
        .decide(&authority, request, Utc::now())
        .await
        .map_err(|e| refusal(state.tasks(), e))
        .inspect_err(rejected)?;
    let response = decided.response;
    tracing::debug!(
        decision_id = %response.decision_id,
        decision = %response.decision,
        server = decided.server,
        tool = decided.tool,
        task_id = match &authority {
            Authority::Task(credential) => Some(credential.task_id.as_str()),
            Authority::Request => None,
        },
        receipt_index = response.receipt_index,
        "decided"
    );
    Ok(Json(response))
}

/// Under what the bearer token lets the call be decided. A configured
/// caller's token authenticates an enforcement point deciding without a
/// task credential; any other is a task credential. Without a token, only
/// where the server lets anyone decide (`decide_access`).
fn authority(state: &AppState, bearer: Option<Bearer>) -> Result<Authority, ApiError> {
    let tasks = state.tasks();
    match bearer {
        Some(bearer) if state.callers().caller(&bearer.0).is_some() => Ok(Authority::Request),
        Some(bearer) => Ok(Authority::Task(task_credential(tasks, &bearer)?)),
        None if state.callers().access() == DecideAccess::Callers => Err(invalid_token(
            tasks,
            "caller_required",
            "this server decides without a task credential only for configured callers: present a task credential, or a caller's token (`[[callers]]`, `mandate callers token`) as `Authorization: Bearer`",
        )),
        None => Ok(Authority::Request),
    }
}

/// What a decision refused means over HTTP.
fn refusal(tasks: &Tasks, error: DecideError) -> ApiError {
    let message = error.to_string();
    match error {
        DecideError::InvalidCredential(_) => invalid_token(tasks, "invalid_token", &message),
        DecideError::NotHolder(_) => insufficient_scope(tasks, &message),
        DecideError::FieldNotAllowed(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            message,
        ),
        DecideError::InvalidRequest(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
        }
        DecideError::ReceiptUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "receipt_unavailable",
            "the decision could not be recorded in the receipt ledger; treat this call as denied",
        ),
        DecideError::StateUnavailable(what) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
            format!("{what}; treat this call as denied"),
        ),
        DecideError::Store(e) => store_failed(tasks, e),
        DecideError::Internal(what) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what}; treat this call as denied"),
        ),
    }
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
        .credentials()
        .verify_credential(&bearer.0, Utc::now())
        .map_err(|e| credential_refused(tasks, &e))
}
