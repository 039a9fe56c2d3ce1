//! What the server's tests share: an application state on the example pack.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mandate_auth::TaskAuthority;
use mandate_ledger::LogKey;
use mandate_server::policy_dir::PackSources;
use mandate_server::{AppState, ReceiptSettings, TaskSettings, Tasks};
use mandate_store::{Ledger, LedgerConfig, SqliteState};

/// The example pack with a fresh ledger; keep the directory alive with the app.
pub async fn state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db"), key, LedgerConfig::default()).unwrap();
    let pack = PackSources::example().load().unwrap();
    let store = SqliteState::open(&dir.path().join("state.db")).unwrap();
    let tasks = Tasks::new(
        Vec::new(),
        TaskAuthority::generate(),
        Arc::new(store),
        TaskSettings {
            audience: "mandate".to_owned(),
            resource: "http://mandate.test".to_owned(),
            max_ttl: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let state = AppState::new(
        pack,
        "<example>".into(),
        Utc::now(),
        Arc::new(ledger),
        ReceiptSettings::new(false, &["body".to_owned()]),
        tasks,
        mandate_server::Approvals::new(mandate_server::ApprovalSettings::default()).unwrap(),
    );
    (state, dir)
}
