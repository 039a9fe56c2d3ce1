#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! The decision journal on both backends (SQLite's ledger.db and a real
//! PostgreSQL server the tests start): written with its receipt, read back
//! as written, filtered, and pruned by size and by age without touching a
//! receipt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use mandate_core::Decision;
use mandate_ledger::receipt::{CallRef, Principal, RECEIPT_VERSION, TaskRef};
use mandate_ledger::{LogKey, Receipt};
use mandate_store::journal::Redacted;
use mandate_store::postgres::PgStore;
use mandate_store::{
    JournalEntry, JournalQuery, JournalRetention, JournaledDecision, Ledger, LedgerConfig,
    LedgerReader, ReceiptLog,
};

/// Receipt `n`, decided at `time`; even ones belong to `task-even`.
fn receipt(n: usize, time: &str) -> Receipt {
    Receipt {
        v: RECEIPT_VERSION,
        index: 0,
        kind: "decision".to_owned(),
        decision_id: format!("decision-{n}"),
        time: time.to_owned(),
        principal: Principal {
            id: "spiffe://example.org/agent".to_owned(),
            on_behalf_of: None,
        },
        delegation: Vec::new(),
        task: n.is_multiple_of(2).then(|| TaskRef {
            id: "task-even".to_owned(),
            intent_sha256: "sha256:00".to_owned(),
        }),
        session: None,
        arguments_omitted_bytes: None,
        call: CallRef {
            server: "mail".to_owned(),
            tool: "send".to_owned(),
            action: "call_tool".to_owned(),
        },
        arguments_sha256: "sha256:00".to_owned(),
        arguments: None,
        context_sha256: "sha256:00".to_owned(),
        policy_version: "sha256:00".to_owned(),
        policies: vec!["p".to_owned()],
        decision: Decision::Allow.into(),
        reasons: Vec::new(),
        errors: Vec::new(),
        approver: None,
        approval: None,
        shadow: Vec::new(),
    }
}

fn entry(n: usize) -> JournalEntry {
    JournalEntry {
        request: format!(r#"{{"n":{n},"padding":"{}"}}"#, "x".repeat(200)),
        redacted: if n.is_multiple_of(3) {
            vec![Redacted {
                path: "body".to_owned(),
                action: "hash".to_owned(),
            }]
        } else {
            Vec::new()
        },
        scope: n
            .is_multiple_of(2)
            .then(|| vec!["mail/send".to_owned(), "mail/read".to_owned()]),
        decision: if n.is_multiple_of(4) {
            Decision::Deny
        } else {
            Decision::ApprovalRequired
        },
        outcome: if n.is_multiple_of(4) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policies: vec![format!("policy-{n}")],
        policy_version: "sha256:live".to_owned(),
    }
}

fn at(seconds: u32) -> String {
    format!("2026-11-23T12:00:{seconds:02}.000000Z")
}

/// One backend: how to open its log and read its journal.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    async fn open(&self, key: &LogKey, retention: JournalRetention) -> Arc<dyn ReceiptLog> {
        let config = LedgerConfig {
            checkpoint_interval: Duration::from_millis(50),
            journal: retention,
            ..LedgerConfig::default()
        };
        match self {
            Backend::Sqlite(dir) => {
                let path = dir.path().join("ledger.db");
                Arc::new(Ledger::open(&path, key.clone(), config).unwrap())
            }
            Backend::Postgres(url) => {
                let store = PgStore::connect(url).await.unwrap();
                Arc::new(store.log(key.clone(), config).await.unwrap())
            }
        }
    }

    async fn journal(&self, query: &JournalQuery) -> Vec<JournaledDecision> {
        let mut found = Vec::new();
        match self {
            Backend::Sqlite(dir) => {
                let reader = LedgerReader::open(&dir.path().join("ledger.db")).unwrap();
                reader
                    .journal(query, |e| {
                        found.push(e);
                        Ok(())
                    })
                    .unwrap();
            }
            Backend::Postgres(url) => {
                let store = PgStore::connect(url).await.unwrap();
                store
                    .journal(query, |e| {
                        found.push(e);
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
        }
        found
    }

    async fn all(&self) -> Vec<u64> {
        self.journal(&JournalQuery::default())
            .await
            .iter()
            .map(|e| e.index)
            .collect()
    }

    /// Waits until the journal holds exactly `indices`.
    async fn until_journal_is(&self, indices: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.all().await;
            if now == indices {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the journal holds {now:?}, expected {indices:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn written_read_filtered_and_pruned(backend: Backend) {
    let keep_all = JournalRetention {
        max_age: None,
        max_bytes: None,
    };
    let key = LogKey::generate("mandate.local/journal").unwrap();
    let log = backend.open(&key, keep_all).await;
    // Ten decisions with an entry each, and two receipts without one
    // (approval resolutions have none).
    for n in 0..12 {
        let journal = (n < 10).then(|| entry(n));
        let appended = log
            .append(receipt(n, &at(u32::try_from(n).unwrap())), journal)
            .await
            .unwrap();
        assert_eq!(appended.index, n as u64);
    }

    let written: u64 = (0..10).map(|n| entry(n).stored_bytes()).sum();
    assert_eq!(log.journal_bytes(), written, "the size retention counts");

    let all = backend.journal(&JournalQuery::default()).await;
    assert_eq!(all.len(), 10);
    for (n, found) in all.iter().enumerate() {
        assert_eq!(found.index, n as u64);
        assert_eq!(found.decision_id, format!("decision-{n}"));
        assert_eq!(found.time, at(u32::try_from(n).unwrap()));
        assert_eq!(found.tool, "mail/send");
        assert_eq!(
            found.task_id.as_deref(),
            n.is_multiple_of(2).then_some("task-even")
        );
        assert_eq!(found.entry, entry(n), "entry {n} reads back as written");
    }

    let since = backend
        .journal(&JournalQuery {
            since: Some(at(6)),
            ..JournalQuery::default()
        })
        .await;
    assert_eq!(
        since.iter().map(|e| e.index).collect::<Vec<_>>(),
        [6, 7, 8, 9]
    );
    let range = backend
        .journal(&JournalQuery {
            from_index: Some(2),
            to_index: Some(5),
            task: Some("task-even".to_owned()),
            ..JournalQuery::default()
        })
        .await;
    assert_eq!(range.iter().map(|e| e.index).collect::<Vec<_>>(), [2, 4]);

    // Size: room for the newest four entries (all of one size here).
    let one = entry(0).stored_bytes();
    log.close().await.unwrap();
    drop(log);
    let log = backend
        .open(
            &key,
            JournalRetention {
                max_age: None,
                max_bytes: Some(4 * one + one / 2),
            },
        )
        .await;
    assert!(log.journal_bytes() > 0, "known from the start");
    backend.until_journal_is(&[6, 7, 8, 9]).await;
    assert_eq!(log.size(), 12, "pruning the journal leaves every receipt");
    let kept: u64 = (6..10).map(|n| entry(n).stored_bytes()).sum();
    assert_eq!(log.journal_bytes(), kept);

    // Age: entries decided before the cutoff go, newer ones stay.
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    for n in 12..14 {
        log.append(receipt(n, &now), Some(entry(n))).await.unwrap();
    }
    log.close().await.unwrap();
    drop(log);
    let log = backend
        .open(
            &key,
            JournalRetention {
                max_age: Some(Duration::from_secs(24 * 3600)),
                max_bytes: None,
            },
        )
        .await;
    backend.until_journal_is(&[12, 13]).await;
    assert_eq!(log.size(), 14);
    for index in 0..14 {
        let stored = log.stored(&format!("decision-{index}")).await.unwrap();
        assert_eq!(stored.unwrap().index, index, "receipt {index} is kept");
    }
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_journal_is_written_read_filtered_and_pruned() {
    written_read_filtered_and_pruned(Backend::Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_journal_is_written_read_filtered_and_pruned() {
    let url = test_postgres::shared().database();
    written_read_filtered_and_pruned(Backend::Postgres(url)).await;
}
