#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! The SQLite ledger on a real database file: group commit, recovery,
//! refusal of a contradictory log, export.

use std::time::Duration;

use mandate_core::Decision;
use mandate_ledger::receipt::{CallRef, Principal, RECEIPT_VERSION};
use mandate_ledger::{LogKey, Receipt, SignedCheckpoint};
use mandate_store::{Ledger, LedgerConfig, LedgerError, LedgerReader};
use rusqlite::Connection;

fn receipt(n: usize) -> Receipt {
    Receipt {
        v: RECEIPT_VERSION,
        index: 0,
        kind: "decision".to_owned(),
        decision_id: format!("decision-{n}"),
        time: "2026-11-23T12:00:00.000000Z".to_owned(),
        principal: Principal {
            id: "spiffe://example.org/agent".to_owned(),
            on_behalf_of: None,
        },
        delegation: Vec::new(),
        task: None,
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

fn config() -> LedgerConfig {
    LedgerConfig {
        checkpoint_interval: Duration::from_secs(3600),
        max_batch: 64,
        ..LedgerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_contiguous_indices_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&path, key.clone(), config()).unwrap();
    assert_eq!(
        ledger.latest_checkpoint().size,
        0,
        "a new log starts with a size-0 checkpoint"
    );

    let mut tasks = Vec::new();
    for n in 0..300 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            ledger.append(receipt(n), None).await
        }));
    }
    let mut indices = Vec::new();
    for task in tasks {
        indices.push(task.await.unwrap().unwrap().index);
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..300).collect::<Vec<u64>>());
    assert_eq!(ledger.size(), 300);

    // Every acknowledged receipt is readable with a proof against a checkpoint.
    let found = ledger.receipt("decision-17").await.unwrap().unwrap();
    assert_eq!(found.checkpoint.size, 300);
    let opened = SignedCheckpoint::open(ledger.verifier(), &found.checkpoint.note).unwrap();
    found
        .proof
        .verify(
            mandate_ledger::receipt::leaf_hash(found.receipt.body.as_bytes()),
            opened.root,
        )
        .unwrap();
    assert!(ledger.receipt("no-such-decision").await.unwrap().is_none());
    let root_300 = ledger.root(300).unwrap();
    ledger.close().await.unwrap();
    assert!(matches!(
        ledger.append(receipt(999), None).await,
        Err(LedgerError::Closed)
    ));
    drop(ledger);

    // Reopen: same tree, appends continue at 300.
    let ledger = Ledger::open(&path, key, config()).unwrap();
    assert_eq!(ledger.size(), 300);
    assert_eq!(ledger.root(300).unwrap(), root_300);
    let next = ledger.append(receipt(300), None).await.unwrap();
    assert_eq!(next.index, 300);
    let checkpoint = ledger.checkpoint().await.unwrap();
    assert_eq!(checkpoint.size, 301);
    let consistency = ledger.consistency(300, 301).unwrap();
    consistency
        .verify(root_300, checkpoint.root)
        .expect("the grown log extends the old one");
}

#[tokio::test]
async fn another_key_cannot_continue_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&path, key, config()).unwrap();
    ledger.append(receipt(0), None).await.unwrap();
    ledger.close().await.unwrap();
    drop(ledger);

    let other = LogKey::generate("mandate.local/test").unwrap();
    let err = Ledger::open(&path, other, config()).err().unwrap();
    assert!(matches!(err, LedgerError::KeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_log_with_a_removed_or_altered_leaf_refuses_to_open() {
    for damage in [
        "DELETE FROM receipts WHERE idx = 4",
        "DELETE FROM receipts WHERE idx = 9",
        "UPDATE receipts SET leaf_hash = zeroblob(32) WHERE idx = 3",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let key = LogKey::generate("mandate.local/test").unwrap();
        let ledger = Ledger::open(&path, key.clone(), config()).unwrap();
        for n in 0..10 {
            ledger.append(receipt(n), None).await.unwrap();
        }
        ledger.close().await.unwrap();
        drop(ledger);

        Connection::open(&path)
            .unwrap()
            .execute(damage, [])
            .unwrap();
        let err = Ledger::open(&path, key, config()).err().unwrap();
        assert!(matches!(err, LedgerError::Corrupt(_)), "{damage}: {err}");
    }
}

#[tokio::test]
async fn receipts_committed_after_the_last_checkpoint_get_one_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&path, key.clone(), config()).unwrap();
    for n in 0..5 {
        ledger.append(receipt(n), None).await.unwrap();
    }
    assert_eq!(ledger.latest_checkpoint().size, 0, "not due yet");
    ledger.close().await.unwrap();
    drop(ledger);
    // As after a crash between a commit and the next checkpoint.
    let removed = Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM checkpoints WHERE size > 0", [])
        .unwrap();
    assert_eq!(removed, 1);

    let ledger = Ledger::open(&path, key, config()).unwrap();
    assert_eq!(ledger.latest_checkpoint().size, 5);
}

#[tokio::test]
async fn export_writes_header_receipts_and_checkpoints_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&path, key.clone(), config()).unwrap();
    for n in 0..3 {
        ledger.append(receipt(n), None).await.unwrap();
    }
    ledger.checkpoint().await.unwrap();
    ledger.append(receipt(3), None).await.unwrap();
    ledger.close().await.unwrap();

    let reader = LedgerReader::open(&path).unwrap();
    let mut out = Vec::new();
    let summary = reader.export(&mut out, |_| {}).unwrap();
    assert_eq!((summary.receipts, summary.checkpoints), (4, 3));
    let kinds: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v["type"].as_str().unwrap() {
                "checkpoint" => format!("checkpoint:{}", v["size"]),
                "receipt" => format!("receipt:{}", v["receipt"]["index"]),
                other => other.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "log",
            "checkpoint:0",
            "receipt:0",
            "receipt:1",
            "receipt:2",
            "checkpoint:3",
            "receipt:3",
            "checkpoint:4"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_write_nothing_more_is_written_and_the_log_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let key = LogKey::generate("mandate.local/test").unwrap();
    let ledger = Ledger::open(&path, key.clone(), config()).unwrap();
    ledger.append(receipt(0), None).await.unwrap();

    // The commit that carries receipt 2 and a checkpoint over it fails after
    // the receipt's leaf went into the in-memory tree (its checkpoint insert
    // raises); afterwards a checkpoint over the receipts actually stored
    // would not match the trigger's condition and could be written.
    let blocker = Connection::open(&path).unwrap();
    blocker
        .execute_batch(
            "CREATE TRIGGER fail_third BEFORE INSERT ON checkpoints
             WHEN NEW.size = 3 AND (SELECT COUNT(*) FROM receipts) = 3
             BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
        )
        .unwrap();
    // Hold the write lock so that the writer waits inside receipt 1's commit
    // while receipt 2 and a checkpoint request queue up behind it: they then
    // arrive in one group.
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.append(receipt(1), None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.append(receipt(2), None).await }
    });
    let head = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.checkpoint().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    blocker.execute_batch("COMMIT").unwrap();

    assert_eq!(first.await.unwrap().unwrap().index, 1);
    assert!(matches!(third.await.unwrap(), Err(LedgerError::Failed(_))));
    assert!(matches!(head.await.unwrap(), Err(LedgerError::Failed(_))));
    assert!(ledger.failure().is_some());
    // Nothing more is written: no receipt, and above all no checkpoint over
    // the leaf that never reached the disk.
    assert!(matches!(
        ledger.checkpoint().await,
        Err(LedgerError::Failed(_))
    ));
    assert!(matches!(
        ledger.append(receipt(3), None).await,
        Err(LedgerError::Failed(_))
    ));
    let _ = ledger.close().await;
    drop(ledger);

    let newest: i64 = blocker
        .query_row("SELECT MAX(size) FROM checkpoints", [], |r| r.get(0))
        .unwrap();
    assert!(
        newest <= 2,
        "a checkpoint covers a receipt never stored: {newest}"
    );
    blocker.execute_batch("DROP TRIGGER fail_third").unwrap();
    drop(blocker);

    // Restart recovers from what is on disk and goes on.
    let ledger = Ledger::open(&path, key, config()).unwrap();
    assert_eq!(ledger.size(), 2);
    assert_eq!(ledger.append(receipt(2), None).await.unwrap().index, 2);
}
