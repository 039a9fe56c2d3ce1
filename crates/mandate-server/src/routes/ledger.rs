//! The receipt log: checkpoint, receipts with inclusion proofs, consistency proofs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_ledger::proof::hash_to_base64;
use mandate_ledger::{ConsistencyProof, ReceiptBundle};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The newest checkpoint, as JSON.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointBody {
    /// Receipts the checkpoint covers.
    pub size: u64,
    /// Base64 RFC 6962 root hash of those receipts.
    pub root: String,
    /// The signed checkpoint (C2SP `tlog-checkpoint` in a `signed-note`).
    pub note: String,
    /// The log's verifier key (signed-note format).
    pub verifier_key: String,
}

/// Signed checkpoint covering every receipt recorded so far.
///
/// Plain text (the C2SP signed note, as transparency-log tools read it) by
/// default; JSON when the request accepts `application/json`.
#[utoipa::path(get, path = "/v1/checkpoint", tag = "receipts",
    responses(
        (status = 200, description = "The signed checkpoint", content(
            (String = "text/plain"),
            (CheckpointBody = "application/json"),
        )),
        (status = 503, description = "The ledger cannot sign a checkpoint", body = ErrorBody),
    ))]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let checkpoint = state.ledger().checkpoint().await.map_err(unavailable)?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    Ok(if wants_json {
        Json(CheckpointBody {
            size: checkpoint.size,
            root: hash_to_base64(&checkpoint.root),
            note: checkpoint.note,
            verifier_key: state.ledger().verifier().as_text().to_owned(),
        })
        .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            checkpoint.note,
        )
            .into_response()
    })
}

/// A decision's receipt with its inclusion proof against a signed checkpoint.
///
/// Check it offline: the receipt signature and the checkpoint with the log's
/// verifier key, the proof against the checkpoint's root.
#[utoipa::path(get, path = "/v1/receipts/{decision_id}", tag = "receipts",
    params(("decision_id" = String, Path, description = "The decision's id, as `POST /v1/decide` returned it")),
    responses(
        (status = 200, description = "Receipt, signature, inclusion proof and checkpoint", body = Object),
        (status = 404, description = "No receipt for this decision id", body = ErrorBody),
        (status = 503, description = "The ledger cannot be read", body = ErrorBody),
    ))]
pub(crate) async fn receipt(
    State(state): State<AppState>,
    Path(decision_id): Path<String>,
) -> Result<Json<ReceiptBundle>, ApiError> {
    let ledger = state.ledger();
    let found = ledger.receipt(&decision_id).await.map_err(unavailable)?;
    let Some(found) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "receipt_not_found",
            format!("no receipt for decision `{decision_id}`"),
        ));
    };
    Ok(Json(
        found.into_bundle(ledger.verifier()).map_err(unavailable)?,
    ))
}

/// Query of a consistency proof.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size; at most the newest checkpoint's size.
    to: u64,
}

/// Proof that the log of size `from` is a prefix of the log of size `to`
/// (RFC 6962 §2.1.2).
#[utoipa::path(get, path = "/v1/proofs/consistency", tag = "receipts",
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The consistency proof", body = Object),
        (status = 400, description = "Sizes missing, not numbers, backwards, or beyond the newest checkpoint", body = ErrorBody),
    ))]
pub(crate) async fn consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let Query(ConsistencyQuery { from, to }) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{}; use ?from=N&to=M with tree sizes", e.body_text()),
        )
    })?;
    state
        .ledger()
        .consistency(from, to)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_range", e.to_string()))
}

fn unavailable(e: mandate_store::LedgerError) -> ApiError {
    tracing::error!(error = %e, "receipt ledger unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        "the receipt ledger cannot answer now; see the server log",
    )
}
