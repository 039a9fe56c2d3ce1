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
pub async fn watch(state: AppState, current: PackSources, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut watcher = Watcher {
        state,
        current,
        unreadable: false,
    };
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
        watcher.reload();
    }
}

/// The policy directory as last seen.
struct Watcher {
    state: AppState,
    /// The texts last read (in force, or rejected).
    current: PackSources,
    /// Whether the last read failed.
    unreadable: bool,
}

impl Watcher {
    /// Reloads when the directory's texts changed, or when it can be read
    /// again after it could not (so that /v1/health recovers).
    fn reload(&mut self) {
        let dir = self.state.policy_dir().to_owned();
        let sources = match policy_dir::read(&dir) {
            Ok(s) => s,
            Err(e) => {
                // Reported once when it starts, not on every tick.
                if !self.unreadable {
                    tracing::warn!(error = %e, "cannot read the policy directory; keeping the policies in force");
                    self.state.record_reload(ReloadStatus {
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
                self.unreadable = true;
                return;
            }
        };
        let was_unreadable = std::mem::take(&mut self.unreadable);
        if sources == self.current && !was_unreadable {
            return;
        }
        match sources.load() {
            Ok(pack) => {
                tracing::info!(version = %pack.version(), policies = ?pack.counts(), "policies reloaded");
                for w in pack.warnings() {
                    tracing::warn!("{w}");
                }
                self.state.swap_pack(pack, Utc::now());
            }
            Err(e) => {
                for p in &e.problems {
                    tracing::warn!("{p}");
                }
                tracing::warn!("policy reload rejected; keeping the policies in force");
                self.state.record_reload(ReloadStatus {
                    at: Utc::now(),
                    ok: false,
                    problems: e.problems,
                });
            }
        }
        self.current = sources;
    }
}
