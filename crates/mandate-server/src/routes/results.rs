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
use mandate_core::api::{MAX_REPORTED_VALUES, ReportedValue, ValueField};
use mandate_core::provenance::{FoundValues, Grounds, MAX_FIELD_BYTES};
use mandate_core::{Decision, DecisionId, OutputTrust, ToolAnnotations};
use mandate_store::{CallResult, HistoryEntry, StateError};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Bearer, credential_refused, insufficient_scope, invalid_token};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::routes::store_failed;
use crate::routes::tasks::{history_view, invalid, label_names};
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
    /// What the call returned (an MCP `CallToolResult`, or any JSON the
    /// tool gave): the destinations it names enter the task's session with
    /// where they were seen. Only keyed digests of them are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    /// Destinations the integration found in the result itself, instead of
    /// (or besides) sending `content`: at most 1,000, each at most 512
    /// bytes.
    #[serde(default)]
    pub values: Vec<ReportedValue>,
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
    // What the result names grounds the whole task's later calls: only
    // the agent that made the call may say what it returned, not another
    // hop of the task (a sub-agent must not ground its delegator's sends).
    let names_values = report.content.is_some() || !report.values.is_empty();
    if names_values
        && credential.holder().map(|hop| hop.agent.as_str()) != Some(entry.agent.as_str())
    {
        return Err(insufficient_scope(
            tasks,
            &format!(
                "decision `{id}` was made by `{}`: only that agent reports the destinations its result names (`content`, `values`)",
                entry.agent
            ),
        ));
    }
    let annotations = annotations_of(&entry);
    let untrusted = annotations
        .as_ref()
        .is_none_or(ToolAnnotations::untrusted_output);
    if untrusted {
        labels.insert(UNTRUSTED.to_owned());
    }
    let found = found_values(&report, annotations.as_ref())?;
    // Grounding loosens decisions, so only the operator's word makes a
    // result trusted: a closed-world tool (a file read) may still return
    // anyone's text, though it taints nothing by default.
    let trusted = annotations
        .as_ref()
        .is_some_and(|a| a.output == Some(OutputTrust::Trusted));
    let mut grounds = Grounds::default();
    grounds.record_found(tasks.grounding_key(), trusted, &found);

    let result = CallResult {
        status: report.status.as_str().to_owned(),
        labels: labels.into_iter().collect(),
        reported_at: now,
        grounds,
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

/// The annotations the call was decided with, which say whether its
/// output is untrusted ([`ToolAnnotations::untrusted_output`]) and which of
/// its fields are free text. Unknown or unreadable ones are `None`: the
/// MCP default, open world, untrusted.
fn annotations_of(entry: &HistoryEntry) -> Option<ToolAnnotations> {
    entry.annotations.as_ref().and_then(|annotations| {
        serde_json::from_value::<ToolAnnotations>(Value::Object(annotations.clone())).ok()
    })
}

/// The values a report names: those in its `content`, and its `values`.
fn found_values(
    report: &ReportResult,
    annotations: Option<&ToolAnnotations>,
) -> Result<FoundValues, ApiError> {
    if report.values.len() > MAX_REPORTED_VALUES {
        return Err(invalid(format!(
            "`values` holds {} values; at most {MAX_REPORTED_VALUES} are allowed",
            report.values.len()
        )));
    }
    let text_fields = annotations.map_or(&[][..], |a| a.text_fields.as_slice());
    let mut found = report
        .content
        .as_ref()
        .map(|content| FoundValues::of_output(content, text_fields))
        .unwrap_or_default();
    for (i, reported) in report.values.iter().enumerate() {
        if reported.value.len() > MAX_FIELD_BYTES {
            return Err(invalid(format!(
                "`values[{i}].value` is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
        found.add_reported(
            &reported.value,
            reported.field == ValueField::Structured,
            reported.kind,
        );
    }
    Ok(found)
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
