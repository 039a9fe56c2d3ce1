//! Replay throughput: journaled decisions read from a real `ledger.db` and
//! evaluated again against a candidate pack, as `mandate policy replay`
//! does (the same [`Replay`], the same reader).
//!
//! The journal is built first: `REPLAY_DECISIONS` (default 1 000 000)
//! decisions made from the example requests (`examples/requests`, with
//! varying recipients, paths and times), appended through the ledger with
//! their journal entries. Set `REPLAY_LEDGER=path` to keep that ledger and
//! reuse it on the next run. The candidate is the example pack with one
//! more forbid (no inbox reads), so about a third of the decisions change.
//!
//! Printed: decisions per second on one thread and on every core, and per
//! core; the reading alone (no evaluation) for comparison.
//!
//! Run: `cargo bench -p mandate-server --bench replay`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use mandate_core::{Decision, DecisionRequest, PolicyPack};
use mandate_ledger::LogKey;
use mandate_ledger::receipt::{CallRef, Principal, RECEIPT_VERSION, Receipt, TaskRef};
use mandate_server::replay::Replay;
use mandate_server::{policy_dir, receipts::canonical_request};
use mandate_store::{JournalEntry, JournalQuery, Ledger, LedgerConfig, LedgerReader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pack(dir: &Path) -> PolicyPack {
    policy_dir::read(dir).unwrap().load().unwrap()
}

/// Decision `n`: one of the example requests, varied.
fn request(n: u64, templates: &[DecisionRequest]) -> DecisionRequest {
    let mut request = templates[(n % templates.len() as u64) as usize].clone();
    if let Some(to) = request.arguments.get_mut("to") {
        *to = format!("user{}@example.com", n % 7).into();
    }
    if let Some(path) = request.arguments.get_mut("path") {
        *path = format!("/mail/{n}").into();
    }
    request.context.task.id = format!("task-{}", n % 1000);
    request.context.time = Some(Utc::now());
    request
}

fn build(path: &Path, count: u64) {
    let templates: Vec<DecisionRequest> = ["read-inbox", "send-to-stranger", "delete-email"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(
                repo()
                    .join("examples/requests")
                    .join(format!("{name}.json")),
            )
            .unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let live = pack(&repo().join("examples/policies"));
    let key = LogKey::generate("mandate.local/replay-bench").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = Ledger::open(path, key, LedgerConfig::default()).unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let mut n = 0;
        while n < count {
            let mut group = Vec::new();
            for _ in 0..1024.min(count - n) {
                let request = request(n, &templates);
                let canonical = canonical_request(&request).unwrap();
                let call = mandate_core::CallRequest::try_from(request.clone()).unwrap();
                let verdict = live.decide(&call, request.context.time.unwrap());
                let receipt = receipt(n, &request, verdict.decision);
                let entry = JournalEntry {
                    request: String::from_utf8(canonical).unwrap(),
                    redacted: Vec::new(),
                    scope: None,
                    decision: verdict.decision,
                    outcome: verdict.decision,
                    policies: verdict.policies,
                    policy_version: live.version().to_owned(),
                };
                let ledger = ledger.clone();
                group.push(tokio::spawn(async move {
                    ledger.append(receipt, Some(entry)).await.unwrap()
                }));
                n += 1;
            }
            for appended in group {
                appended.await.unwrap();
            }
            if n % 100_000 == 0 {
                eprintln!("journaled {n} decisions");
            }
        }
        ledger.close().await.unwrap();
    });
    eprintln!(
        "built a journal of {count} decisions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn receipt(n: u64, request: &DecisionRequest, decision: Decision) -> Receipt {
    Receipt {
        v: RECEIPT_VERSION,
        index: 0,
        kind: "decision".to_owned(),
        decision_id: format!("decision-{n}"),
        time: request
            .context
            .time
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        principal: Principal {
            id: request.principal.id.clone(),
            on_behalf_of: request.principal.on_behalf_of.clone(),
        },
        delegation: Vec::new(),
        task: Some(TaskRef {
            id: request.context.task.id.clone(),
            intent_sha256: "sha256:00".to_owned(),
        }),
        session: None,
        call: CallRef {
            server: request.action.server.clone(),
            tool: request.action.tool.clone(),
            action: "call_tool".to_owned(),
        },
        arguments_sha256: "sha256:00".to_owned(),
        arguments: None,
        arguments_omitted_bytes: None,
        context_sha256: "sha256:00".to_owned(),
        policy_version: "sha256:00".to_owned(),
        policies: Vec::new(),
        decision: decision.into(),
        reasons: Vec::new(),
        errors: Vec::new(),
        approver: None,
        approval: None,
        shadow: Vec::new(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` asks for nothing here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: u64 = std::env::var("REPLAY_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().unwrap();
    let path = std::env::var_os("REPLAY_LEDGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().join("ledger.db"));
    if !path.exists() {
        build(&path, count);
    }

    let candidate_dir = temp.path().join("candidate");
    std::fs::create_dir_all(&candidate_dir).unwrap();
    for entry in std::fs::read_dir(repo().join("examples/policies")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), candidate_dir.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(
        candidate_dir.join("reads.cedar"),
        "@id(\"no-reads\")\nforbid (principal, action, resource) when { resource.name == \"read_inbox\" };\n",
    )
    .unwrap();
    let candidate = pack(&candidate_dir);
    let reader = LedgerReader::open(&path).unwrap();

    // REPLAY_ONE_THREAD=1 runs the one-thread replay alone (for a profiler).
    let only_one = std::env::var_os("REPLAY_ONE_THREAD").is_some();
    let started = Instant::now();
    let read = reader
        .journal(&JournalQuery::default(), |entry| {
            std::hint::black_box(entry);
            Ok(())
        })
        .unwrap();
    let reading = started.elapsed();
    println!(
        "read only:        {read} decisions in {:.2} s, {:.0} decisions/s",
        reading.as_secs_f64(),
        per_second(read, reading)
    );

    if only_one {
        sample_replay(&candidate, &reader, 1);
        return;
    }
    // Where one thread's time goes, on the first 100 000 entries in memory.
    let mut sample = Vec::new();
    reader
        .journal(
            &JournalQuery {
                to_index: Some(99_999),
                ..JournalQuery::default()
            },
            |entry| {
                sample.push(entry.entry.request);
                Ok(())
            },
        )
        .unwrap();
    let step = |name: &str, f: &dyn Fn(&str)| {
        let started = Instant::now();
        for request in &sample {
            f(request);
        }
        let took = started.elapsed();
        println!(
            "  {name}: {:.2} us per decision",
            took.as_secs_f64() * 1e6 / sample.len().max(1) as f64
        );
    };
    println!("one thread, cumulative, over {} decisions:", sample.len());
    step("parse the request", &|r| {
        std::hint::black_box(serde_json::from_str::<DecisionRequest>(r).unwrap());
    });
    step("+ build the Cedar request", &|r| {
        let request: DecisionRequest = serde_json::from_str(r).unwrap();
        std::hint::black_box(mandate_core::CallRequest::try_from(request).unwrap());
    });
    step("+ decide", &|r| {
        let request: DecisionRequest = serde_json::from_str(r).unwrap();
        let now = request.context.time.unwrap();
        let call = mandate_core::CallRequest::try_from(request).unwrap();
        std::hint::black_box(candidate.decide(&call, now));
    });

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for threads in [1, cores] {
        sample_replay(&candidate, &reader, threads);
    }
    println!(
        "machine: {cores} core(s), {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| info
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned()))
            .unwrap_or_else(|| "unknown CPU".to_owned())
    );
}

/// One replay of the whole journal on `threads` threads, timed and printed.
fn sample_replay(candidate: &PolicyPack, reader: &LedgerReader, threads: usize) {
    let started = Instant::now();
    let report = Replay::new(candidate, 3, threads)
        .run(&|_| {}, |feed| {
            reader
                .journal(&JournalQuery::default(), |entry| {
                    feed(entry);
                    Ok(())
                })
                .map(drop)
        })
        .unwrap();
    let took = started.elapsed();
    println!(
        "replay, {threads} thread(s): {} decisions ({} changed) in {:.2} s, {:.0} decisions/s, {:.0} per core",
        report.replayed,
        report.changed,
        took.as_secs_f64(),
        per_second(report.replayed, took),
        per_second(report.replayed, took) / threads as f64
    );
}

fn per_second(count: u64, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(f64::EPSILON)
}
