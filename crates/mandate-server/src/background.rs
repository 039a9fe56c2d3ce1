//! The loops a running server keeps going beside its requests: issuers'
//! keys refreshed as they fall due, the policy directory watched, expired
//! tasks ended and unanswered approvals expired, and (with a store several
//! instances share) their changes followed. [`spawn`] starts them all
//! on the current tokio runtime; each runs until the process stops.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mandate_store::StateChange;
use tokio::sync::broadcast;

use crate::approval_flow;
use crate::policy_dir::PackSources;
use crate::reload::{self, Target};
use crate::state::AppState;

/// How often tasks whose TTL ran out are ended and their credentials
/// revoked.
pub const TASK_SWEEP: Duration = Duration::from_secs(2);

/// How often unanswered approvals past their expiry are expired (each gets
/// its receipt). Waiting agents see `expired` at the expiry itself.
pub const APPROVAL_SWEEP: Duration = Duration::from_secs(1);

/// How often issuers' keys are checked for being due a refresh.
const KEY_TICK: Duration = Duration::from_secs(1);

/// Starts every background loop of `state`: the policy directory (whose
/// texts in force are `sources`) and each shadow pack's (whose texts are
/// `shadow_sources`, in the order of `state.shadows()`) are re-read every
/// `reload_interval`.
pub fn spawn(
    state: &AppState,
    sources: PackSources,
    shadow_sources: Vec<PackSources>,
    reload_interval: Duration,
) {
    tokio::spawn(refresh_keys(state.clone()));
    tokio::spawn(reload::watch(
        state.clone(),
        Target::Live,
        sources,
        reload_interval,
    ));
    for (shadow, sources) in state.shadows().packs().iter().zip(shadow_sources) {
        tokio::spawn(reload::watch(
            state.clone(),
            Target::Shadow(Arc::clone(shadow)),
            sources,
            reload_interval,
        ));
    }
    tokio::spawn(expire_tasks(state.clone(), TASK_SWEEP));
    tokio::spawn(expire_approvals(state.clone(), APPROVAL_SWEEP));
    if let Some(changes) = state.tasks().store().changes() {
        tokio::spawn(follow_changes(state.clone(), changes));
    }
}

/// Follows what other instances sharing the store change: approval long
/// polls and the console wake, revoked ids are read again.
async fn follow_changes(state: AppState, mut changes: broadcast::Receiver<StateChange>) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            // Fell behind: whatever was missed, read everything again.
            Err(broadcast::error::RecvError::Lagged(_)) => StateChange::All,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if matches!(change, StateChange::Approvals | StateChange::All) {
            state.approvals().changed();
        }
        if matches!(change, StateChange::Revocations | StateChange::All)
            && let Err(e) = state.tasks().credentials().reload_revoked(Utc::now()).await
        {
            tracing::warn!(error = %e, "could not read the revoked credentials another instance announced; decisions still find their task ended");
        }
    }
}

/// Refreshes the issuers' keys as they fall due.
async fn refresh_keys(state: AppState) {
    let mut ticker = tokio::time::interval(KEY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        state.tasks().identities().refresh_due().await;
    }
}

/// Ends expired tasks every `interval`.
async fn expire_tasks(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = state.tasks().credentials().end_expired(Utc::now()).await {
            tracing::warn!(error = %e, "could not end expired tasks; retrying");
        }
    }
}

/// Expires unanswered approvals every `interval`: each gets the receipt of
/// its expiry, then its new status.
async fn expire_approvals(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = approval_flow::expire_due(&state, Utc::now()).await {
            tracing::warn!(error = %e, "could not expire approvals; retrying");
        }
    }
}
