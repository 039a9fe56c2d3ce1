//! Handlers, one module per resource.

pub(crate) mod approvals;
pub(crate) mod console;
pub(crate) mod decide;
pub(crate) mod health;
pub(crate) mod ledger;
pub(crate) mod results;
pub(crate) mod tasks;
pub(crate) mod token;
pub(crate) mod well_known;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use mandate_core::TaskId;
use mandate_store::StateError;

use crate::auth::invalid_token;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tasks::Tasks;

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus metrics", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics()
        .set_long_polls(state.approvals().long_polls());
    state
        .metrics()
        .set_journal_bytes(state.ledger().journal_bytes());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/openapi.json",
    )
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /v1/openapi.json",
    )
}

/// What a store failure means for the caller.
pub(crate) fn store_failed(tasks: &Tasks, error: StateError) -> ApiError {
    match error {
        StateError::TaskNotFound(id) => task_not_found(id.as_str()),
        e @ StateError::TaskEnded { .. } => invalid_token(tasks, "task_ended", &e.to_string()),
        e @ (StateError::Invalid(_) | StateError::Conflict(_)) => {
            tracing::error!(error = %e, "the state database refused a task record");
            internal("the task could not be recorded")
        }
        e => {
            tracing::error!(error = %e, "state database unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                "the state database cannot answer now; see the server log",
            )
        }
    }
}

/// `404 task_not_found`.
pub(crate) fn task_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "task_not_found",
        format!("no task `{id}`"),
    )
}

/// The task a path names. Text that is not a task id names no task, and is
/// answered as any unknown task is (`404 task_not_found`).
pub(crate) fn task_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::new(id).map_err(|_| task_not_found(id))
}

/// `500 internal`, logged with `what` (the caller sees no detail).
pub(crate) fn internal(what: &str) -> ApiError {
    tracing::error!("{what}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "mandate failed to handle the task; see the server log",
    )
}
