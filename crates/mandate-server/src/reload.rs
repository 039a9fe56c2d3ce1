//! Watching the policy directory and swapping packs atomically.
//!
//! The directory is re-read on an interval (and on SIGHUP); when its texts
//! changed, the new pack is validated in full before it replaces the old one.
//! Polling is deliberate: it behaves the same on every filesystem, including
//! the symlink swaps of Kubernetes ConfigMaps, where change events mislead.

use std::time::Duration;

use chrono::Utc;
use mandate_core::{PolicyProblem, Severity};

use crate::policy_dir::{self, PackSources};
use crate::state::{AppState, ReloadStatus};

/// Runs forever, reloading `state`'s policy directory when it changes.
pub async fn watch(state: AppState, mut current: PackSources, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {},
                () = hup => tracing::info!("SIGHUP: reloading policies"),
            }
        }
        #[cfg(not(unix))]
        tick.tick().await;
        if let Some(sources) = reload_once(&state, &current) {
            current = sources;
        }
    }
}

/// Reloads if the directory's texts differ from `current`; returns the new
/// texts when they were read (whether or not they loaded).
pub fn reload_once(state: &AppState, current: &PackSources) -> Option<PackSources> {
    let dir = state.policy_dir().to_owned();
    let sources = match policy_dir::read(&dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the policy directory; keeping the policies in force");
            // Report it once in /v1/health, not on every tick.
            if state.last_reload().is_none_or(|last| last.ok) {
                state.record_reload(ReloadStatus {
                    at: Utc::now(),
                    ok: false,
                    problems: vec![PolicyProblem {
                        severity: Severity::Error,
                        file: dir.display().to_string(),
                        line: None,
                        column: None,
                        policy: None,
                        message: e.to_string(),
                    }],
                });
            }
            return None;
        }
    };
    if &sources == current {
        return None;
    }
    match sources.load() {
        Ok(pack) => {
            tracing::info!(version = %pack.version(), policies = ?pack.counts(), "policies reloaded");
            for w in pack.warnings() {
                tracing::warn!("{w}");
            }
            state.swap_pack(pack, Utc::now());
        }
        Err(e) => {
            for p in &e.problems {
                tracing::warn!("{p}");
            }
            tracing::warn!("policy reload rejected; keeping the policies in force");
            state.record_reload(ReloadStatus {
                at: Utc::now(),
                ok: false,
                problems: e.problems,
            });
        }
    }
    Some(sources)
}
