//! `POST /v1/decide`: one tool call in, one decision out.
//!
//! The handler reads the protocol: the bearer token says under what the
//! call is decided (a task credential, a configured caller's token, or
//! none where the server allows it), the body is the decision request, and
//! the [`Decider`] does the rest (see [`crate::decider`] for the steps).
//! Its errors become HTTP statuses here, once.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use mandate_core::{DecisionRequest, DecisionResponse};

use crate::auth::{Bearer, credential_refused, insufficient_scope, invalid_token};
use crate::decider::{Authority, AuthorityError, DecideError, Decider};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::tasks::Tasks;
use crate::telemetry::{DecisionSpan, FrontEnd};
use tracing::Instrument as _;

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
    headers: HeaderMap,
    bearer: Result<Option<Bearer>, ApiError>,
    body: Result<ApiJson<DecisionRequest>, ApiError>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let span = DecisionSpan::start(FrontEnd::Http, &headers);
    decide_in(&state, bearer, body, &span)
        .instrument(span.span().clone())
        .await
        .inspect_err(|e| span.refused(e.code()))
}

async fn decide_in(
    state: &AppState,
    bearer: Result<Option<Bearer>, ApiError>,
    body: Result<ApiJson<DecisionRequest>, ApiError>,
    span: &DecisionSpan,
) -> Result<Json<DecisionResponse>, ApiError> {
    let rejected = |e: &ApiError| {
        if e.status().is_client_error() {
            state
                .metrics()
                .count_rejected(FrontEnd::Http.as_str(), e.code());
        }
    };
    // The token is checked before the body: a refused token gets its 401
    // whatever the body says.
    let bearer = bearer.inspect_err(rejected)?;
    let decider = Decider::new(state.clone());
    let authority = decider
        .authority(bearer.as_ref().map(|b| b.0.as_str()), Utc::now())
        .map_err(|e| unauthorised(state.tasks(), e))
        .inspect_err(rejected)?;
    let ApiJson(request) = body.inspect_err(rejected)?;
    let decided = decider
        .decide(&authority, request, Utc::now())
        .await
        .map_err(|e| refusal(state.tasks(), e))
        .inspect_err(rejected)?;
    span.decided(&decided, &authority);
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

/// What a refused authority means over HTTP.
fn unauthorised(tasks: &Tasks, error: AuthorityError) -> ApiError {
    let message = error.to_string();
    match error {
        AuthorityError::CallerRequired => invalid_token(tasks, "caller_required", &message),
        AuthorityError::IdentityToken => invalid_token(tasks, "invalid_token", &message),
        AuthorityError::Credential(e) => credential_refused(tasks, &e),
    }
}

/// What a decision refused means over HTTP: its status and code, with an
/// RFC 6750 challenge where the credential is the cause.
fn refusal(tasks: &Tasks, error: DecideError) -> ApiError {
    let refused = error.refused();
    match refused.status {
        StatusCode::UNAUTHORIZED => invalid_token(tasks, refused.code, &refused.message),
        StatusCode::FORBIDDEN => insufficient_scope(tasks, &refused.message),
        status => ApiError::new(status, refused.code, refused.message),
    }
}
