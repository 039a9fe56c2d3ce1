//! `POST /v1/decide`: one tool call in, one decision out.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use mandate_core::{CallRequest, DecisionRequest, DecisionResponse};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::receipts::record_verdict;
use crate::state::AppState;

/// Decide whether a tool call may proceed.
///
/// A deny is a normal answer (200). Any other status means no decision was
/// made, and the caller must treat the call as denied.
#[utoipa::path(post, path = "/v1/decide", tag = "decisions",
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "The decision", body = DecisionResponse),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "The JSON is not a valid decision request", body = ErrorBody),
        (status = 500, description = "Mandate failed to decide: deny the call", body = ErrorBody),
        (status = 503, description = "The decision could not be recorded in the receipt ledger: deny the call", body = ErrorBody),
    ))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    body: Result<ApiJson<DecisionRequest>, ApiError>,
) -> Result<Json<DecisionResponse>, ApiError> {
    let started = Instant::now();
    let ApiJson(mut request) = body.inspect_err(|e| state.metrics().count_rejected(e.code()))?;
    if request.context.time.is_some() {
        state.metrics().count_rejected("field_not_allowed");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            "`context.time` is set by the server's clock; remove it (only `mandate check` and policy tests take a time)",
        ));
    }
    // The server's clock goes into the request, so that the receipt's
    // context digest covers exactly what was evaluated.
    let now = Utc::now();
    request.context.time = Some(now);
    let draft = state.receipts().draft(&request, now).map_err(|e| {
        state.metrics().count_rejected("invalid_request");
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })?;
    let call = CallRequest::try_from(request).map_err(|e| {
        state.metrics().count_rejected("invalid_request");
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })?;
    let pack = state.pack();
    let verdict = pack.decide(&call, now);
    let decision_id = Uuid::now_v7().to_string();
    let mut receipt = draft;
    record_verdict(&mut receipt, &decision_id, &verdict, pack.version());

    // No answer leaves before its receipt is on disk: a caller never acts on
    // a decision the log could lose.
    let appending = Instant::now();
    let appended = state.ledger().append(receipt).await.map_err(|e| {
        tracing::error!(error = %e, %decision_id, "receipt not recorded; answering 503");
        state.metrics().count_receipt_failure();
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "receipt_unavailable",
            "the decision could not be recorded in the receipt ledger; treat this call as denied",
        )
    })?;
    state
        .metrics()
        .observe_receipt_append(appending.elapsed().as_secs_f64());
    let mut response = DecisionResponse::new(decision_id, verdict);
    response.receipt_index = Some(appended.index);
    state
        .metrics()
        .observe_decision(response.decision, started.elapsed().as_secs_f64());
    tracing::debug!(
        decision_id = %response.decision_id,
        decision = %response.decision,
        server = call.server(),
        tool = call.tool(),
        receipt_index = appended.index,
        "decided"
    );
    Ok(Json(response))
}
