//! What every handler shares: the pack in force, reload status, the
//! receipt ledger, metrics, and tasks with their identities and credentials.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use mandate_core::{PolicyPack, PolicyProblem};
use mandate_store::ReceiptLog;
use serde::Serialize;

use crate::approvals::Approvals;
use crate::callers::Callers;
use crate::journal::JournalSettings;
use crate::metrics::Metrics;
use crate::receipts::ReceiptSettings;
use crate::shadow::Shadows;
use crate::tasks::Tasks;

/// How the last attempt to load the policy directory went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadStatus {
    /// When the attempt was made.
    pub at: DateTime<Utc>,
    /// Whether the new pack is in force.
    pub ok: bool,
    /// Problems that rejected it (empty when `ok`).
    #[schema(value_type = Vec<Object>)]
    pub problems: Vec<PolicyProblem>,
}

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pack: ArcSwap<PolicyPack>,
    loaded_at: ArcSwap<DateTime<Utc>>,
    policy_dir: PathBuf,
    last_reload: Mutex<Option<ReloadStatus>>,
    metrics: Metrics,
    ledger: Arc<dyn ReceiptLog>,
    receipts: ReceiptSettings,
    journal: JournalSettings,
    tasks: Tasks,
    approvals: Approvals,
    callers: Callers,
    shadows: Shadows,
}

impl AppState {
    /// State serving `pack`, loaded from `policy_dir` at `now`, recording
    /// receipts in `ledger`, with `tasks` for the task endpoints and
    /// `approvals` for calls that need a person.
    pub fn new(
        pack: PolicyPack,
        policy_dir: PathBuf,
        now: DateTime<Utc>,
        ledger: Arc<dyn ReceiptLog>,
        receipts: ReceiptSettings,
        tasks: Tasks,
        approvals: Approvals,
    ) -> Self {
        let metrics = Metrics::new();
        metrics.set_policy_counts(pack.counts());
        Self {
            inner: Arc::new(Inner {
                pack: ArcSwap::from_pointee(pack),
                loaded_at: ArcSwap::from_pointee(now),
                policy_dir,
                last_reload: Mutex::new(None),
                metrics,
                ledger,
                receipts,
                journal: JournalSettings::default(),
                tasks,
                approvals,
                callers: Callers::default(),
                shadows: Shadows::default(),
            }),
        }
    }

    /// The state with `callers` deciding who may ask for decisions without
    /// a task credential (by default anyone: a server on loopback). Call
    /// before the state is shared.
    #[must_use]
    pub fn with_callers(mut self, callers: Callers) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.callers = callers,
            // Shared already: keep what is set rather than half-apply.
            None => tracing::error!("callers set on a state already shared; ignored"),
        }
        self
    }

    /// The state with `shadows` evaluated beside the live pack on every
    /// decision (none by default). Call before the state is shared.
    #[must_use]
    pub fn with_shadows(mut self, shadows: Shadows) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.shadows = shadows,
            None => tracing::error!("shadow packs set on a state already shared; ignored"),
        }
        self
    }

    /// The state keeping the decision journal as `journal` says (by
    /// default every request, unredacted). Call before the state is shared.
    #[must_use]
    pub fn with_journal(mut self, journal: JournalSettings) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.journal = journal,
            None => tracing::error!("journal settings set on a state already shared; ignored"),
        }
        self
    }

    /// What the decision journal keeps.
    pub fn journal(&self) -> &JournalSettings {
        &self.inner.journal
    }

    /// The shadow packs evaluated beside the live pack.
    pub fn shadows(&self) -> &Shadows {
        &self.inner.shadows
    }

    /// Who may ask for decisions without a task credential.
    pub fn callers(&self) -> &Callers {
        &self.inner.callers
    }

    /// The pack in force; a decision keeps the one it started with.
    pub fn pack(&self) -> Arc<PolicyPack> {
        self.inner.pack.load_full()
    }

    /// When the pack in force was loaded.
    pub fn loaded_at(&self) -> DateTime<Utc> {
        **self.inner.loaded_at.load()
    }

    /// The directory policies are loaded from.
    pub fn policy_dir(&self) -> &std::path::Path {
        &self.inner.policy_dir
    }

    /// Puts a new pack in force, atomically for all later decisions.
    pub fn swap_pack(&self, pack: PolicyPack, now: DateTime<Utc>) {
        self.inner.metrics.set_policy_counts(pack.counts());
        self.inner.pack.store(Arc::new(pack));
        self.inner.loaded_at.store(Arc::new(now));
        self.record_reload(ReloadStatus {
            at: now,
            ok: true,
            problems: Vec::new(),
        });
    }

    /// Records a reload attempt (a failed one leaves the pack in force).
    pub fn record_reload(&self, status: ReloadStatus) {
        self.inner.metrics.count_reload(status.ok);
        if let Ok(mut last) = self.inner.last_reload.lock() {
            *last = Some(status);
        }
    }

    /// The last reload attempt, if any happened since start.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.inner.last_reload.lock().ok().and_then(|l| l.clone())
    }

    /// The receipt log.
    pub fn ledger(&self) -> &dyn ReceiptLog {
        self.inner.ledger.as_ref()
    }

    /// What receipts keep of a request.
    pub fn receipts(&self) -> &ReceiptSettings {
        &self.inner.receipts
    }

    /// Identity issuers, task credentials, the state database and the
    /// revoked credential ids.
    pub fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// Approvers, the approval lock and change notifications.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
