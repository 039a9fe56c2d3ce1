//! `POST /v1/decisions/{id}/result`: what an allowed call returned, reported
//! by the integration that ran it, into its task's history.
//!
//! The labels a result brings (such as `untrusted`) enter the task's session:
//! every later decision of the task sees them in `context.session`. A tool
//! that reaches the open world (MCP `openWorldHint`, true unless the tool
//! said otherwise when the call was decided) returns content from outside:
//! its result is labelled `untrusted` whatever the report says.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use mandate_core::api::HistoryView;
use mandate_core::{Decision, DecisionId, ToolAnnotations};
use mandate_store::{CallResult, HistoryEntry, StateError};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Bearer, credential_refused, insufficient_scope, invalid_token};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::routes::store_failed;
use crate::routes::tasks::{history_view, label_names};
use crate::state::AppState;

/// The label an open-world tool's result always carries.
pub const UNTRUSTED: &str = "untrusted";

/// What a call returned.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportResult {
    /// Whether the call succeeded.
    pub status: ResultStatus,
    /// Labels of the data the call returned, such as `untrusted` or
    /// `confidential`: short names, at most 256. An open-world tool's result
    /// is labelled `untrusted` in any case.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The tool returned a result.
    Ok,
    /// The tool failed.
    Error,
}

impl ResultStatus {
    fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Error => "error",
        }
    }
}

/// Report what an allowed call returned.
///
/// The bearer token is a credential of the decision's task (any hop). Only
/// a decision that was `allow` has a result (the other calls did not run),
/// and it is reported once. The result's labels enter the task's session
/// for every later decision; an open-world tool's result is labelled
/// `untrusted` whatever the report says.
#[utoipa::path(post, path = "/v1/decisions/{id}/result", tag = "decisions",
    params(("id" = String, Path, description = "The decision's id, as `POST /v1/decide` returned it")),
    request_body = ReportResult,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision's history entry, with its result", body = HistoryView),
        (status = 400, description = "The body is not valid JSON, or more than one `Authorization` header", body = ErrorBody),
        (status = 401, description = "No credential, or one that does not verify (expired, revoked, forged, another audience): its task ended", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 403, description = "`insufficient_scope`: the decision was made under another task", body = ErrorBody,
            headers(("www-authenticate" = String, description = "RFC 6750 challenge"))),
        (status = 404, description = "No decision with this id in any task's history", body = ErrorBody),
        (status = 409, description = "The decision was not `allow` (the call did not run), or its result was reported already", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The JSON is not a valid result", body = ErrorBody),
        (status = 503, description = "The state database cannot record the result", body = ErrorBody),
    ))]
pub(crate) async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bearer: Bearer,
    body: Result<ApiJson<ReportResult>, ApiError>,
) -> Result<Json<HistoryView>, ApiError> {
    let tasks = state.tasks();
    let now = Utc::now();
    if bearer.is_jwt() {
        return Err(invalid_token(
            tasks,
            "invalid_token",
            "a result is reported with a task credential of the decision's task, not an identity token",
        ));
    }
    let credential = tasks
        .credentials()
        .verify_credential(&bearer.0, now)
        .map_err(|e| credential_refused(tasks, &e))?;
    let ApiJson(report) = body?;
    let mut labels = label_names("labels", &report.labels)?;

    // Text that is not a decision id names no decision.
    let decision_id = DecisionId::new(id.as_str()).map_err(|_| decision_not_found(&id))?;
    let entry = tasks
        .store()
        .decision(&decision_id)
        .await
        .map_err(|e| store_failed(tasks, e))?
        .ok_or_else(|| decision_not_found(&id))?;
    if entry.task_id != credential.task_id {
        return Err(insufficient_scope(
            tasks,
            &format!(
                "decision `{id}` was made under another task; the credential is for task `{}`",
                credential.task_id
            ),
        ));
    }
    if entry.decision != Decision::Allow {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "decision_not_allowed",
            format!(
                "decision `{id}` was `{}`: the call did not run, so it has no result",
                entry.decision
            ),
        ));
    }
    if untrusted_output(&entry) {
        labels.insert(UNTRUSTED.to_owned());
    }

    let result = CallResult {
        status: report.status.as_str().to_owned(),
        labels: labels.into_iter().collect(),
        reported_at: now,
    };
    let entry = tasks
        .store()
        .record_result(&decision_id, result)
        .await
        .map_err(|e| match e {
            // Another report won the race since the entry was read.
            StateError::Conflict(_) => already_reported(&id),
            StateError::DecisionNotFound(_) => decision_not_found(&id),
            e => store_failed(tasks, e),
        })?;
    tracing::info!(decision_id = %id, task_id = %entry.task_id, status = report.status.as_str(), "call result recorded");
    Ok(Json(history_view(entry)))
}

/// Whether the call's output is untrusted, by the annotations it was
/// decided with ([`ToolAnnotations::untrusted_output`]): unknown or
/// unreadable annotations take the MCP default, open world, untrusted.
fn untrusted_output(entry: &HistoryEntry) -> bool {
    entry.annotations.as_ref().is_none_or(|annotations| {
        serde_json::from_value::<ToolAnnotations>(Value::Object(annotations.clone()))
            .map_or(true, |a| a.untrusted_output())
    })
}

fn decision_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "decision_not_found",
        format!(
            "no decision `{id}` in any task's history (only decisions made under a task credential have one)"
        ),
    )
}

fn already_reported(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "result_already_reported",
        format!("the result of decision `{id}` was already reported; a result is reported once"),
    )
}
