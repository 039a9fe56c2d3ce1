//! Watching the policy directory (and each shadow pack's) and swapping packs
//! atomically.
//!
//! Each directory is re-read on an interval (and on SIGHUP); when its texts
//! changed, the new pack is validated in full before it replaces the old one.
//! Polling is deliberate: it behaves the same on every filesystem, including
//! the symlink swaps of Kubernetes ConfigMaps, where change events mislead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mandate_core::{PolicyProblem, Severity};

use crate::policy_dir::{self, PackSources};
use crate::shadow::ShadowPack;
use crate::state::{AppState, ReloadStatus};

/// Which pack a watcher keeps current.
pub enum Target {
    /// The pack in force: its reloads are reported in `/v1/health` and
    /// `mandate_policy_reloads_total`.
    Live,
    /// A shadow pack: its reloads are logged.
    Shadow(Arc<ShadowPack>),
}

impl Target {
    fn dir(&self, state: &AppState) -> PathBuf {
        match self {
            Target::Live => state.policy_dir().to_owned(),
            Target::Shadow(shadow) => shadow.dir().to_owned(),
        }
    }

    /// How the logs name it: the live pack's messages are the ones
    /// documented (docs/configuration.md); a shadow pack's name it.
    fn label(&self) -> String {
        match self {
            Target::Live => "policies".to_owned(),
            Target::Shadow(shadow) => format!("shadow pack `{}`", shadow.name()),
        }
    }

    fn unreadable_message(&self) -> String {
        match self {
            Target::Live => {
                "cannot read the policy directory; keeping the policies in force".to_owned()
            }
            Target::Shadow(_) => format!(
                "cannot read the directory of the {}; keeping it as it was",
                self.label()
            ),
        }
    }

    fn rejected_message(&self) -> String {
        match self {
            Target::Live => "policy reload rejected; keeping the policies in force".to_owned(),
            Target::Shadow(_) => format!(
                "reload of the {} rejected; keeping it as it was",
                self.label()
            ),
        }
    }
}

/// Runs forever, reloading `target`'s directory when it changes; its texts
/// in force are `current`.
pub async fn watch(state: AppState, target: Target, current: PackSources, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut watcher = Watcher {
        state,
        target,
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
                () = hup => tracing::info!("SIGHUP: reloading {}", watcher.target.label()),
            }
        }
        #[cfg(not(unix))]
        tick.tick().await;
        watcher.reload();
    }
}

/// A policy directory as last seen.
struct Watcher {
    state: AppState,
    /// Whose directory it is.
    target: Target,
    /// The texts last read (in force, or rejected).
    current: PackSources,
    /// Whether the last read failed.
    unreadable: bool,
}

impl Watcher {
    /// Reloads when the directory's texts changed, or when it can be read
    /// again after it could not (so that /v1/health recovers).
    fn reload(&mut self) {
        let dir = self.target.dir(&self.state);
        let label = self.target.label();
        let sources = match policy_dir::read(&dir) {
            Ok(s) => s,
            Err(e) => {
                // Reported once when it starts, not on every tick.
                if !self.unreadable {
                    tracing::warn!(error = %e, "{}", self.target.unreadable_message());
                }
                if !self.unreadable && matches!(self.target, Target::Live) {
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
                tracing::info!(version = %pack.version(), policies = ?pack.counts(), "{label} reloaded");
                for w in pack.warnings() {
                    tracing::warn!("{w}");
                }
                match &self.target {
                    Target::Live => self.state.swap_pack(pack, Utc::now()),
                    Target::Shadow(shadow) => shadow.swap(pack),
                }
            }
            Err(e) => {
                for p in &e.problems {
                    tracing::warn!("{p}");
                }
                tracing::warn!("{}", self.target.rejected_message());
                if matches!(self.target, Target::Live) {
                    self.state.record_reload(ReloadStatus {
                        at: Utc::now(),
                        ok: false,
                        problems: e.problems,
                    });
                }
            }
        }
        self.current = sources;
    }
}
