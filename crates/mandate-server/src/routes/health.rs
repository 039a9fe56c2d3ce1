//! `GET /v1/health`: is the server up, and which policies are in force.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::{AppState, ReloadStatus};

/// The server's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; `degraded` when the last policy reload was rejected (the
    /// previous policies are still in force); `failing` when the receipt
    /// ledger stopped accepting receipts (every decision is answered 503).
    pub status: &'static str,
    /// The policies in force.
    pub policies: PoliciesInForce,
    /// The last reload attempt since start, if any.
    pub last_reload: Option<ReloadStatus>,
    /// The receipt ledger.
    pub receipts: ReceiptsHealth,
}

/// The receipt ledger's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptsHealth {
    /// Receipts recorded.
    pub size: u64,
    /// Receipts covered by the newest signed checkpoint.
    pub checkpoint_size: u64,
    /// The log's verifier key.
    pub verifier_key: String,
    /// Why the ledger stopped accepting receipts, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The pack in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoliciesInForce {
    /// Digest of the pack's sources.
    pub version: String,
    /// Where the pack is loaded from.
    pub directory: String,
    /// When it was loaded.
    pub loaded_at: DateTime<Utc>,
    /// Policies in the base set.
    pub base: usize,
    /// Policies in the approval gate.
    pub approval: usize,
}

/// Report health and the policies in force.
#[utoipa::path(get, path = "/v1/health", tag = "meta",
    responses((status = 200, description = "Health and policies in force", body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let pack = state.pack();
    let (base, approval) = pack.counts();
    let last_reload = state.last_reload();
    let ledger = state.ledger();
    let failure = ledger.failure();
    let status = if failure.is_some() {
        "failing"
    } else if last_reload.as_ref().is_some_and(|r| !r.ok) {
        "degraded"
    } else {
        "ok"
    };
    Json(Health {
        status,
        policies: PoliciesInForce {
            version: pack.version().to_owned(),
            directory: state.policy_dir().display().to_string(),
            loaded_at: state.loaded_at(),
            base,
            approval,
        },
        last_reload,
        receipts: ReceiptsHealth {
            size: ledger.size(),
            checkpoint_size: ledger.latest_checkpoint().size,
            verifier_key: ledger.verifier().as_text().to_owned(),
            failure,
        },
    })
}
