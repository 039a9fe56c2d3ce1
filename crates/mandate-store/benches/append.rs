//! Receipt ledger cost: what one receipt costs the writer, and how many
//! durable receipts a second the group-committing ledger takes.
//!
//! - criterion group `receipt`: the writer's CPU per receipt, without I/O:
//!   canonical JSON (RFC 8785), the Ed25519 signature, the leaf hash.
//! - then a plain timed run of `Ledger::append` on a real SQLite file
//!   (WAL, `synchronous = FULL`, so every commit is an fsync) from 1, 8, 32
//!   and 128 concurrent callers, printing throughput and p50/p99 latency of
//!   an append (from the call until the receipt is on disk).
//!
//! Run: `cargo bench -p mandate-store --bench append`. The database lives in
//! a temporary directory on the same file system as `TMPDIR`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mandate_core::Decision;
use mandate_ledger::receipt::{CallRef, Principal, RECEIPT_VERSION, TaskRef, leaf_hash};
use mandate_ledger::{LogKey, Receipt};
use mandate_store::{Ledger, LedgerConfig};
use serde_json::json;

/// A receipt shaped like the example pack's `send_email` decision.
fn receipt(n: u64) -> Receipt {
    Receipt {
        v: RECEIPT_VERSION,
        index: n,
        kind: "decision".to_owned(),
        decision_id: format!("01a20880-6981-749d-ae19-{n:012}"),
        time: "2026-11-23T13:02:43.086784Z".to_owned(),
        principal: Principal {
            id: "spiffe://example.org/agent/mailer".to_owned(),
            on_behalf_of: Some("alice@example.com".to_owned()),
        },
        delegation: Vec::new(),
        task: Some(TaskRef {
            id: "task-7".to_owned(),
            intent_sha256:
                "sha256:56b37c706193239da1e23552419e1a195f926f50ee452d5d1c3a85bf7fd2047c".to_owned(),
        }),
        session: None,
        arguments_omitted_bytes: None,
        call: CallRef {
            server: "mail".to_owned(),
            tool: "send_email".to_owned(),
            action: "call_tool".to_owned(),
        },
        arguments_sha256: "sha256:c3166a37a951643b159989d0821649463c0aa827e17f2773f8a46e68cccd1390"
            .to_owned(),
        arguments: Some(
            json!({"to": "bob@example.com", "subject": "minutes", "body": "as requested"}),
        ),
        context_sha256: "sha256:e60311ce707199b3628b60f5e4f4f2af3d3b5ee0023ab9cb80be6d3f8eff4682"
            .to_owned(),
        policy_version: "5d52db0b9e1ca00dabf8cd5883608b731e6b818f6a0d6143277e231052df5fff"
            .to_owned(),
        policies: vec!["declared-tools".to_owned(), "recipient-allowed".to_owned()],
        decision: Decision::Allow.into(),
        reasons: vec!["the tool is declared for the task".to_owned()],
        errors: Vec::new(),
        approver: None,
        approval: None,
        shadow: Vec::new(),
    }
}

fn per_receipt_cpu(c: &mut Criterion) {
    let key = LogKey::generate("mandate.local/bench").unwrap();
    let r = receipt(12_345);
    let canonical = r.canonical().unwrap();
    let mut group = c.benchmark_group("receipt");
    group.bench_function("canonical", |b| {
        b.iter(|| black_box(&r).canonical().unwrap())
    });
    group.bench_function("sign", |b| b.iter(|| key.sign_entry(black_box(&canonical))));
    group.bench_function("leaf_hash", |b| b.iter(|| leaf_hash(black_box(&canonical))));
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Appends from `callers` concurrent tasks for `run`; returns (receipts/s, p50, p99).
fn durable_appends(callers: usize, run: Duration) -> (f64, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = LogKey::generate("mandate.local/bench").unwrap();
        let ledger =
            Ledger::open(&dir.path().join("ledger.db"), key, LedgerConfig::default()).unwrap();
        let deadline = Arc::new(Instant::now() + run);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let ledger = ledger.clone();
            let deadline = Arc::clone(&deadline);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = caller as u64;
                while Instant::now() < *deadline {
                    let t = Instant::now();
                    ledger.append(receipt(n), None).await.unwrap();
                    latencies.push(t.elapsed());
                    n += callers as u64;
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        ledger.close().await.unwrap();
        all.sort_unstable();
        (
            all.len() as f64 / elapsed.as_secs_f64(),
            percentile(&all, 0.50),
            percentile(&all, 0.99),
        )
    })
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    per_receipt_cpu(&mut criterion);
    criterion.final_summary();

    println!();
    println!("durable appends (SQLite WAL, synchronous=FULL, group commit), 3 s each:");
    println!("| callers | receipts/s | append p50 | append p99 |");
    println!("| --- | --- | --- | --- |");
    for callers in [1, 8, 32, 128] {
        let (rate, p50, p99) = durable_appends(callers, Duration::from_secs(3));
        println!(
            "| {callers} | {rate:.0} | {:.0} µs | {:.0} µs |",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
}
