//! `GET /v1/health`: is the server up, and which policies are in force.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::{AppState, ReloadStatus};

/// The server's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the last policy reload was rejected (the
    /// previous policies are still in force).
    pub status: &'static str,
    /// The policies in force.
    pub policies: PoliciesInForce,
    /// The last reload attempt since start, if any.
    pub last_reload: Option<ReloadStatus>,
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
    let status = if last_reload.as_ref().is_some_and(|r| !r.ok) {
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
    })
}
