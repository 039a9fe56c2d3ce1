#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]
//! The receipt log on a real PostgreSQL server (started by the tests):
//! several instances on one database build one log, in order, without
//! gaps; recovery and refusals as on SQLite.

use std::time::Duration;

use mandate_core::Decision;
use mandate_ledger::receipt::{CallRef, Principal, RECEIPT_VERSION, TaskRef};
use mandate_ledger::{LogKey, MerkleTree, Receipt, SignedCheckpoint};
use mandate_store::postgres::{PgLog, PgStore};
use mandate_store::{LedgerConfig, LedgerError, ReceiptLog, ReceiptQuery, StateError};

fn receipt(n: usize) -> Receipt {
    Receipt {
        v: RECEIPT_VERSION,
        index: 0,
        kind: "decision".to_owned(),
        decision_id: format!("decision-{n}"),
        time: "2026-11-23T12:00:00.000000Z".to_owned(),
        principal: Principal {
            id: format!("spiffe://example.org/agent-{}", n % 3),
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
            tool: if n.is_multiple_of(5) { "send" } else { "read" }.to_owned(),
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

/// One instance's log on the database at `url`, signing with `key`.
async fn instance(url: &str, key: &LogKey) -> PgLog {
    PgStore::connect(url)
        .await
        .unwrap()
        .log(key.clone(), config())
        .await
        .unwrap()
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Every stored receipt in index order: indices 0..n, each body naming its
/// own index and signed by the log's key, and the tree over their leaf
/// hashes has `checkpoint`'s root.
async fn assert_one_log(url: &str, key: &LogKey, checkpoint: &SignedCheckpoint) -> u64 {
    let client = raw(url).await;
    let rows = client
        .query(
            "SELECT idx, body, signature FROM receipts ORDER BY idx",
            &[],
        )
        .await
        .unwrap();
    let verifier = key.verifier();
    let mut tree = MerkleTree::new();
    for (expected, row) in rows.iter().enumerate() {
        let idx: i64 = row.get(0);
        let body: &str = row.get(1);
        let signature: &[u8] = row.get(2);
        assert_eq!(idx, expected as i64, "indices run without gaps");
        let parsed: Receipt = serde_json::from_str(body).unwrap();
        assert_eq!(
            parsed.index, expected as u64,
            "the signed body names its index"
        );
        assert!(verifier.verify_entry(body.as_bytes(), signature));
        tree.push(mandate_ledger::receipt::leaf_hash(body.as_bytes()));
    }
    let head: i64 = client
        .query_one("SELECT size FROM log_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        head,
        rows.len() as i64,
        "the head counts exactly the stored receipts"
    );
    let opened = SignedCheckpoint::open(&verifier, &checkpoint.note).unwrap();
    assert_eq!(opened.size, tree.len());
    assert_eq!(opened.root, tree.root(tree.len()).unwrap());
    tree.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_database_build_one_log_without_gaps() {
    let url = test_postgres::shared().database();
    let key = LogKey::generate("mandate.local/test").unwrap();
    // Three instances: three pools, three writers, one database.
    let mut logs = Vec::new();
    for _ in 0..3 {
        let store = PgStore::connect(&url).await.unwrap();
        logs.push(store.log(key.clone(), config()).await.unwrap());
    }
    let mut calls = Vec::new();
    for n in 0..300 {
        let log = logs[n % 3].clone();
        calls.push(tokio::spawn(
            async move { log.append(receipt(n), None).await },
        ));
    }
    let mut indices = Vec::new();
    for call in calls {
        indices.push(call.await.unwrap().unwrap().index);
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..300).collect::<Vec<u64>>(), "one sequence");

    // Any instance proves any receipt, whoever appended it.
    for (n, log) in [(1, &logs[0]), (2, &logs[1]), (3, &logs[2])] {
        let found = log
            .receipt(&format!("decision-{n}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            found.checkpoint.size, 300,
            "the checkpoint covers every instance's receipts"
        );
        let opened = SignedCheckpoint::open(log.verifier(), &found.checkpoint.note).unwrap();
        found
            .proof
            .verify(
                mandate_ledger::receipt::leaf_hash(found.receipt.body.as_bytes()),
                opened.root,
            )
            .unwrap();
    }
    let checkpoint = logs[2].checkpoint().await.unwrap();
    assert_eq!(assert_one_log(&url, &key, &checkpoint).await, 300);

    // Searches read the shared table.
    let query = ReceiptQuery {
        task: Some("task-even".to_owned()),
        tool: Some("send".to_owned()),
        limit: 1000,
        ..ReceiptQuery::default()
    };
    let found = logs[0].search(query).await.unwrap();
    assert_eq!(found.len(), 30, "even and a multiple of 5: 0, 10, …, 290");
    assert!(
        found.windows(2).all(|w| w[0].0.index > w[1].0.index),
        "newest first"
    );
    assert!(found.iter().all(|(_, proof)| proof.is_some()));

    // A consistency proof between two instances' views.
    let old = logs[0].latest_checkpoint();
    for log in &logs {
        log.close().await.unwrap();
    }

    // Reopened, the log continues after the last receipt of any instance.
    let store = PgStore::connect(&url).await.unwrap();
    let log = store.log(key.clone(), config()).await.unwrap();
    assert_eq!(ReceiptLog::size(&log), 300);
    assert_eq!(log.append(receipt(300), None).await.unwrap().index, 300);
    let grown = log.checkpoint().await.unwrap();
    log.consistency(old.size, grown.size)
        .await
        .unwrap()
        .verify(old.root, grown.root)
        .unwrap();
    log.close().await.unwrap();
}

/// Sessions of the test's database left inside a transaction.
async fn stray_transactions(url: &str) -> i64 {
    raw(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_expected_to_be_alone_appends_after_the_other() {
    let url = test_postgres::shared().database();
    let key = LogKey::generate("mandate.local/test").unwrap();
    let a = instance(&url, &key).await;
    let b = instance(&url, &key).await;
    // One after another. An instance predicts where its group starts when
    // its last group found nobody else's receipts before its own: both did
    // at open, so `b`'s first append (2) mispredicts; `a`'s append after it
    // (3) mispredicts, reserves, finds `b`'s receipt and stops predicting;
    // its next (4) finds nobody new and predicts again, which `b`'s append
    // (5) makes wrong for `a`'s last (6).
    let order = [&a, &a, &b, &a, &a, &b, &a];
    for (n, log) in order.iter().enumerate() {
        let appended = log.append(receipt(n), None).await.unwrap();
        assert_eq!(appended.index, n as u64, "append {n}");
    }
    assert_eq!(a.mispredicted_groups(), 2, "a's appends 3 and 6");
    assert_eq!(b.mispredicted_groups(), 1, "b's append 2");
    // Duplicates of receipts the other instance appended, whatever the
    // plan of their group: refused alone, nothing appended.
    for (n, log) in order.iter().enumerate() {
        let other = if std::ptr::eq(*log, &a) { &b } else { &a };
        match other.append(receipt(n), None).await {
            Err(LedgerError::Duplicate(id)) => assert_eq!(id, format!("decision-{n}")),
            other => panic!("a duplicate of decision-{n} was not refused: {other:?}"),
        }
    }
    let checkpoint = a.checkpoint().await.unwrap();
    assert_eq!(checkpoint.size, order.len() as u64);
    assert_eq!(
        assert_one_log(&url, &key, &checkpoint).await,
        order.len() as u64
    );
    assert_eq!(stray_transactions(&url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_cannot_continue_a_log() {
    let url = test_postgres::shared().database();
    let store = PgStore::connect(&url).await.unwrap();
    let log = store
        .log(LogKey::generate("mandate.local/test").unwrap(), config())
        .await
        .unwrap();
    log.append(receipt(0), None).await.unwrap();
    log.close().await.unwrap();
    let other = LogKey::generate("mandate.local/test").unwrap();
    let err = store.log(other, config()).await.err().unwrap();
    assert!(matches!(err, LedgerError::KeyMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_a_removed_or_altered_leaf_refuses_to_open() {
    for damage in [
        "DELETE FROM receipts WHERE idx = 4",
        "DELETE FROM receipts WHERE idx = 9",
        "UPDATE receipts SET leaf_hash = decode(repeat('00', 32), 'hex') WHERE idx = 3",
    ] {
        let url = test_postgres::shared().database();
        let key = LogKey::generate("mandate.local/test").unwrap();
        let store = PgStore::connect(&url).await.unwrap();
        let log = store.log(key.clone(), config()).await.unwrap();
        for n in 0..10 {
            log.append(receipt(n), None).await.unwrap();
        }
        log.close().await.unwrap();
        raw(&url).await.execute(damage, &[]).await.unwrap();
        let err = store.log(key, config()).await.err().unwrap();
        assert!(matches!(err, LedgerError::Corrupt(_)), "{damage}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_or_of_someone_else_is_refused() {
    let url = test_postgres::shared().database();
    PgStore::connect(&url).await.unwrap();
    raw(&url)
        .await
        .execute("UPDATE mandate_schema SET version = version + 1", &[])
        .await
        .unwrap();
    let err = PgStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, StateError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("newer Mandate"), "{err}");

    let url = test_postgres::shared().database();
    raw(&url)
        .await
        .execute("CREATE TABLE receipts (id int)", &[])
        .await
        .unwrap();
    let err = PgStore::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("database of its own"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_once() {
    let url = test_postgres::shared().database();
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        starts.push(tokio::spawn(async move { PgStore::connect(&url).await }));
    }
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let version: i32 = raw(&url)
        .await
        .query_one("SELECT version FROM mandate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, mandate_store::postgres::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PgStore::connect(&format!("postgres://mandate:secret@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err}");
    assert!(
        !err.to_string().contains("secret"),
        "no password in messages: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_id_logged_by_another_instance_is_refused_alone() {
    let url = test_postgres::shared().database();
    let key = LogKey::generate("mandate.local/test").unwrap();
    let a = instance(&url, &key).await;
    let b = instance(&url, &key).await;
    a.append(receipt(0), None).await.unwrap();
    // The same decision twice more, racing fresh ones through both.
    let mut calls = Vec::new();
    for (n, log) in [(0, &b), (0, &a), (1, &b), (2, &a), (3, &b)] {
        let log = log.clone();
        calls.push(tokio::spawn(
            async move { log.append(receipt(n), None).await },
        ));
    }
    let mut indices = vec![0];
    let mut duplicates = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(appended) => indices.push(appended.index),
            Err(LedgerError::Duplicate(id)) => {
                assert_eq!(id, "decision-0");
                duplicates += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(duplicates, 2);
    indices.sort_unstable();
    assert_eq!(
        indices,
        [0, 1, 2, 3],
        "no gap where the duplicates were refused"
    );
    let checkpoint = b.checkpoint().await.unwrap();
    assert_eq!(assert_one_log(&url, &key, &checkpoint).await, 4);
    // A group the unique index refused began its transaction by hand; it
    // ended, and no pooled connection waits inside it.
    assert_eq!(stray_transactions(&url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_proves_consistency_up_to_a_checkpoint_another_signed() {
    let url = test_postgres::shared().database();
    let key = LogKey::generate("mandate.local/test").unwrap();
    let a = instance(&url, &key).await;
    let b = instance(&url, &key).await;
    for n in 0..10 {
        a.append(receipt(n), None).await.unwrap();
    }
    let early = a.checkpoint().await.unwrap();
    for n in 10..25 {
        a.append(receipt(n), None).await.unwrap();
    }
    let late = a.checkpoint().await.unwrap();
    assert!(b.latest_checkpoint().size < late.size, "b has not seen it");
    b.consistency(early.size, late.size)
        .await
        .unwrap()
        .verify(early.root, late.root)
        .unwrap();
}
