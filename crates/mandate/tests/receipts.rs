//! End-to-end tests of the receipt ledger on the real binary: receipts of
//! acknowledged decisions survive SIGKILL, exports and proofs verify offline
//! and name what was tampered with, argument values stay out of receipts and
//! telemetry when configured so, and the key and ledger files are private.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mandate_ledger::proof::hash_from_base64;
use mandate_ledger::{
    ConsistencyProof, Hash, LogKey, LogVerifier, ReceiptBundle, SignedCheckpoint,
};
use serde_json::{Value, json};
use util::{Launch, Server};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Exit codes documented in `mandate --help`.
const OK: i32 = 0;
const FAILURE: i32 = 1;
const INPUT: i32 = 2;

/// What one run of the binary produced.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

/// Runs `mandate ARGS` to completion, with no `MANDATE_*` variables inherited.
fn mandate<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MANDATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Output {
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("{cmd:?} was killed by a signal")),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The example requests of the tutorial, with the decision the example pack
/// gives each.
const EXAMPLES: [(&str, &str); 3] = [
    ("read-inbox", "allow"),
    ("send-to-stranger", "deny"),
    ("delete-email", "approval_required"),
];

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/requests")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The example requests as (body, expected decision), ready to send.
fn example_bodies() -> Vec<(String, &'static str)> {
    EXAMPLES
        .iter()
        .map(|&(name, decision)| (example(name).to_string(), decision))
        .collect()
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A checkpoint as `GET /v1/checkpoint` hands it out (JSON).
#[derive(Debug, Clone)]
struct Checkpoint {
    size: u64,
    root: Hash,
    note: String,
}

/// Parses a `GET /v1/checkpoint` JSON body; checks that the note is signed
/// by `verifier` and says what the JSON says.
fn parse_checkpoint(body: &Value, verifier: &LogVerifier) -> Checkpoint {
    let size = body["size"].as_u64().unwrap_or_else(|| panic!("{body}"));
    let root = hash_from_base64(body["root"].as_str().unwrap()).unwrap();
    let note = body["note"].as_str().unwrap().to_owned();
    let opened = SignedCheckpoint::open(verifier, &note)
        .unwrap_or_else(|e| panic!("checkpoint does not open ({e}): {body}"));
    assert_eq!((opened.size, opened.root), (size, root), "{body}");
    assert_eq!(body["verifier_key"], verifier.as_text(), "{body}");
    Checkpoint { size, root, note }
}

/// `GET /v1/checkpoint` as JSON.
fn get_checkpoint(server: &Server, verifier: &LogVerifier) -> Checkpoint {
    let response = http_client()
        .get(server.url("/v1/checkpoint"))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    parse_checkpoint(&response.json().unwrap(), verifier)
}

/// `GET /v1/receipts/{id}`, verified with `verifier`: returns the receipt
/// JSON and the size of the checkpoint it is proved against.
fn verified_receipt(server: &Server, verifier: &LogVerifier, decision_id: &str) -> (Value, u64) {
    fetch_verified_receipt(
        &http_client(),
        &server.url("/v1/receipts/"),
        verifier,
        decision_id,
    )
}

/// [`verified_receipt`] with a given client and `http://ADDR/v1/receipts/`.
fn fetch_verified_receipt(
    client: &reqwest::blocking::Client,
    receipts_url: &str,
    verifier: &LogVerifier,
    decision_id: &str,
) -> (Value, u64) {
    let response = client
        .get(format!("{receipts_url}{decision_id}"))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().unwrap();
    assert_eq!(status, 200, "receipt of {decision_id}: {body}");
    let bundle: ReceiptBundle = serde_json::from_str(&body).unwrap();
    let checkpoint = bundle
        .verify(verifier)
        .unwrap_or_else(|e| panic!("bundle of {decision_id} does not verify: {e}"));
    assert_eq!(bundle.verifier_key, verifier.as_text());
    (
        serde_json::from_str(bundle.receipt.get()).unwrap(),
        checkpoint.size,
    )
}

/// The verifier key of the ledger in `data_dir`, from `mandate keys show`.
fn key_of(data_dir: &Path) -> String {
    let out = mandate([
        OsStr::new("keys"),
        "show".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]);
    out.assert_code(OK);
    out.stdout.trim().to_owned()
}

/// `mandate receipts export --data-dir DIR -o FILE`.
fn export(data_dir: &Path, file: &Path) {
    let out = mandate([
        OsStr::new("receipts"),
        "export".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
        "-o".as_ref(),
        file.as_os_str(),
    ]);
    out.assert_code(OK);
}

/// `mandate receipts verify FILE --key KEY --json [--checkpoint T]...`.
fn verify_json(file: &Path, key: &str, trusted: &[PathBuf]) -> (Output, Value) {
    let mut args: Vec<&OsStr> = vec![
        "receipts".as_ref(),
        "verify".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.as_ref(),
        "--json".as_ref(),
    ];
    for t in trusted {
        args.push("--checkpoint".as_ref());
        args.push(t.as_os_str());
    }
    let out = mandate(args);
    let report = out.json();
    (out, report)
}

/// The problems of a report, as JSON values.
fn problems(report: &Value) -> Vec<Value> {
    report["problems"].as_array().unwrap().clone()
}

/// The `kind`s of a report's problems, in order.
fn kinds(report: &Value) -> Vec<String> {
    problems(report)
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// One line of an export, sorted out.
#[derive(Debug)]
enum Line {
    Header,
    Receipt { index: u64, decision_id: String },
    Checkpoint { size: u64 },
}

fn parse_line(text: &str) -> Line {
    let v: Value = serde_json::from_str(text).unwrap();
    match v["type"].as_str().unwrap() {
        "log" => Line::Header,
        "receipt" => Line::Receipt {
            index: v["receipt"]["index"].as_u64().unwrap(),
            decision_id: v["receipt"]["decision_id"].as_str().unwrap().to_owned(),
        },
        "checkpoint" => Line::Checkpoint {
            size: v["size"].as_u64().unwrap(),
        },
        other => panic!("unknown export line type {other}: {text}"),
    }
}

/// Position (0-based) of the receipt line with `index`.
fn receipt_position(lines: &[String], index: u64) -> usize {
    lines
        .iter()
        .position(|l| matches!(parse_line(l), Line::Receipt { index: i, .. } if i == index))
        .unwrap_or_else(|| panic!("no receipt {index} in the export"))
}

/// Position (0-based) of the checkpoint line of `size`.
fn checkpoint_position(lines: &[String], size: u64) -> usize {
    lines
        .iter()
        .position(|l| matches!(parse_line(l), Line::Checkpoint { size: s } if s == size))
        .unwrap_or_else(|| panic!("no checkpoint of size {size} in the export"))
}

/// Replaces the last character of a UUID (a hex digit) by another hex digit.
fn flip_last_hex_digit(id: &str) -> String {
    let (head, last) = id.split_at(id.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

/// A small deterministic pseudo-random sequence (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// 1. Crash: SIGKILL under load, restart, repeat
// ---------------------------------------------------------------------------

/// A decision a client was told about (a 200 with a decision).
#[derive(Debug, Clone)]
struct Acked {
    decision_id: String,
    decision: String,
    receipt_index: u64,
    /// The example the client sent.
    tool: String,
}

/// Sends the example requests to `url` until `stop`; returns every decision
/// acknowledged with a 200, and every other status seen (there must be none:
/// a killed server answers nothing).
fn client_loop(
    url: String,
    requests: Arc<Vec<(String, &'static str)>>,
    first: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> (Vec<Acked>, Vec<String>) {
    let client = http_client();
    let mut acked = Vec::new();
    let mut unexpected = Vec::new();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        let (body, expected) = &requests[n % requests.len()];
        n += 1;
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send();
        let response = match sent {
            Ok(response) => response,
            Err(_) => {
                // The server is gone (killed); wait for the stop flag.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let status = response.status().as_u16();
        // A body cut short by the kill is no acknowledgement.
        let Ok(text) = response.text() else { continue };
        if status != 200 {
            unexpected.push(format!("{status}: {text}"));
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        assert_eq!(v["decision"], *expected, "decision for {body}");
        let request: Value = serde_json::from_str(body).unwrap();
        acked.push(Acked {
            decision_id: v["decision_id"].as_str().unwrap().to_owned(),
            decision: v["decision"].as_str().unwrap().to_owned(),
            receipt_index: v["receipt_index"]
                .as_u64()
                .unwrap_or_else(|| panic!("no receipt_index: {v}")),
            tool: request["action"]["tool"].as_str().unwrap().to_owned(),
        });
        acks.fetch_add(1, Ordering::Relaxed);
    }
    (acked, unexpected)
}

/// Fetches `GET /v1/checkpoint` until `stop`, which signs one at once when
/// receipts are not covered yet; returns every checkpoint handed out.
fn checkpoint_loop(url: String, verifier: LogVerifier, stop: Arc<AtomicBool>) -> Vec<Checkpoint> {
    let client = http_client();
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(40));
        let Ok(response) = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
        else {
            continue;
        };
        if response.status().as_u16() != 200 {
            continue;
        }
        if let Ok(body) = response.json::<Value>() {
            seen.push(parse_checkpoint(&body, &verifier));
        }
    }
    seen
}

#[test]
fn acknowledged_decisions_survive_sigkill_and_the_log_stays_one_history() {
    const ROUNDS: usize = 8;
    const CLIENTS: usize = 8;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let requests = Arc::new(example_bodies());
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);

    let mut acked: Vec<Acked> = Vec::new();
    // Every checkpoint handed out, in the order they were handed out: the
    // one each start signs, and those asked for under load.
    let mut handed_out: Vec<Checkpoint> = Vec::new();
    // The newest checkpoint handed out before each kill.
    let mut last_before_kill: Vec<Checkpoint> = Vec::new();
    let mut verifier: Option<LogVerifier> = None;

    let start = |round: usize| {
        // Half the rounds also sign checkpoints on a short timer, so that
        // kills land between receipts and checkpoints in both ways.
        // Every call here that needs approval opens one: lift the cap on
        // pending approvals per agent so that they stay approval_required.
        let launch =
            Launch::serve(&data).env("MANDATE_MAX_PENDING_APPROVALS_PER_AGENT", "1000000000");
        if round % 2 == 1 {
            launch.args(["--checkpoint-interval-ms", "50"]).start()
        } else {
            launch.start()
        }
    };

    for round in 0..ROUNDS {
        let server = start(round);
        let health = server.health();
        let key = health["receipts"]["verifier_key"].as_str().unwrap();
        let v = verifier.get_or_insert_with(|| LogVerifier::parse(key).unwrap());
        assert_eq!(key, v.as_text(), "the log key changed across a restart");
        let v = v.clone();

        // After a crash, the start signs a checkpoint over everything
        // committed, which includes every acknowledged receipt.
        let first = get_checkpoint(&server, &v);
        let acked_end = acked.iter().map(|a| a.receipt_index + 1).max().unwrap_or(0);
        assert!(
            first.size >= acked_end,
            "round {round}: the log restarted at size {} but receipt {} was acknowledged",
            first.size,
            acked_end - 1
        );
        assert_eq!(health["receipts"]["size"], first.size, "{health}");
        assert_eq!(
            health["receipts"]["checkpoint_size"], first.size,
            "{health}"
        );
        handed_out.push(first);

        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let clients: Vec<JoinHandle<(Vec<Acked>, Vec<String>)>> = (0..CLIENTS)
            .map(|t| {
                let (url, requests, stop, acks) = (
                    server.url("/v1/decide"),
                    Arc::clone(&requests),
                    Arc::clone(&stop),
                    Arc::clone(&acks),
                );
                std::thread::spawn(move || client_loop(url, requests, t, stop, acks))
            })
            .collect();
        let poller = {
            let (url, v, stop) = (server.url("/v1/checkpoint"), v.clone(), Arc::clone(&stop));
            std::thread::spawn(move || checkpoint_loop(url, v, stop))
        };

        // Kill under load: after a random while, once decisions are being
        // acknowledged (on a loaded machine the first ones can take longer
        // than the while).
        std::thread::sleep(Duration::from_millis(rng.between(150, 300)));
        util::poll_until(
            Duration::from_secs(20),
            "a first acknowledged decision",
            || match acks.load(Ordering::Relaxed) {
                0 => Err(0),
                n => Ok(n),
            },
        );
        let log = server.kill();
        stop.store(true, Ordering::Relaxed);

        let mut round_acked = 0;
        for client in clients {
            let (mut got, unexpected) = client.join().unwrap();
            assert!(
                unexpected.is_empty(),
                "round {round}: non-200 answers while the server ran: {unexpected:?}\nserver log:\n{log}"
            );
            round_acked += got.len();
            acked.append(&mut got);
        }
        // Nothing acknowledged would mean the kill hit an idle server.
        assert!(
            round_acked > 0,
            "round {round}: no decision acknowledged\n{log}"
        );
        handed_out.extend(poller.join().unwrap());
        last_before_kill.push(handed_out.last().unwrap().clone());
        eprintln!("round {round}: {round_acked} decisions acknowledged before SIGKILL");
    }

    // The final server, on the data directory that was killed ROUNDS times.
    let server = start(ROUNDS);
    let verifier = verifier.unwrap();
    let health = server.health();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["receipts"]["verifier_key"], verifier.as_text());
    let size = health["receipts"]["size"].as_u64().unwrap();
    assert!(
        size >= acked.len() as u64,
        "{size} receipts for {} acknowledged decisions",
        acked.len()
    );
    let last = get_checkpoint(&server, &verifier);
    assert_eq!(last.size, size);
    handed_out.push(last);

    // No two acknowledged decisions share an id or a log position: a
    // restart never handed out an index again.
    let ids: HashSet<&str> = acked.iter().map(|a| a.decision_id.as_str()).collect();
    assert_eq!(ids.len(), acked.len(), "a decision id was handed out twice");
    let indices: HashSet<u64> = acked.iter().map(|a| a.receipt_index).collect();
    assert_eq!(
        indices.len(),
        acked.len(),
        "a receipt index was handed out twice"
    );

    // Every acknowledged decision has its receipt, signed by the log key,
    // proved included in a signed checkpoint, saying what the client was
    // told. (Two threads: signature checks are slow in debug builds.)
    let receipts_url = server.url("/v1/receipts/");
    std::thread::scope(|scope| {
        for part in acked.chunks(acked.len().div_ceil(2)) {
            let (receipts_url, verifier) = (&receipts_url, &verifier);
            scope.spawn(move || {
                let client = http_client();
                for a in part {
                    let (receipt, proved_size) =
                        fetch_verified_receipt(&client, receipts_url, verifier, &a.decision_id);
                    assert_eq!(receipt["decision_id"], a.decision_id.as_str());
                    assert_eq!(receipt["decision"], a.decision.as_str(), "{receipt}");
                    assert_eq!(receipt["index"], a.receipt_index, "{receipt}");
                    assert_eq!(receipt["call"]["tool"], a.tool.as_str(), "{receipt}");
                    assert_eq!(proved_size, size);
                }
            });
        }
    });
    // Every checkpoint ever handed out is extended by the next one: the
    // restarts never forked or rewrote the history.
    for pair in handed_out.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.size <= b.size,
            "checkpoint sizes went backwards: {} then {}",
            a.size,
            b.size
        );
        let reply = server.get(&format!(
            "/v1/proofs/consistency?from={}&to={}",
            a.size, b.size
        ));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let proof: ConsistencyProof = serde_json::from_str(&reply.body).unwrap();
        assert_eq!((proof.from, proof.to), (a.size, b.size));
        proof.verify(a.root, b.root).unwrap_or_else(|e| {
            panic!(
                "checkpoint {} is not a prefix of checkpoint {}: {e}",
                a.size, b.size
            )
        });
    }

    // The CLI sees the same key, and the whole log (exported while the
    // server runs) holds every checkpoint handed out and verifies: every
    // receipt signed, every checkpoint consistent with the one before, and
    // the log extends the newest checkpoint handed out before each kill.
    assert_eq!(key_of(&data), verifier.as_text());
    let log = dir.path().join("log.jsonl");
    export(&data, &log);
    let exported: Vec<String> = read_lines(&log);
    let notes: HashSet<String> = exported
        .iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["type"] == "checkpoint").then(|| v["note"].as_str().unwrap().to_owned())
        })
        .collect();
    for c in &handed_out {
        assert!(
            notes.contains(&c.note),
            "checkpoint {} handed out but not in the log",
            c.size
        );
    }
    let mut trusted = Vec::new();
    for (round, c) in last_before_kill.iter().enumerate() {
        let path = dir.path().join(format!("trusted-{round}.txt"));
        std::fs::write(&path, &c.note).unwrap();
        trusted.push(path);
    }
    let (out, report) = verify_json(&log, verifier.as_text(), &trusted);
    out.assert_code(OK);
    assert_eq!(problems(&report), Vec::<Value>::new(), "{report}");
    assert_eq!(report["receipts"], size, "{report}");
    assert_eq!(report["checkpoints"], notes.len(), "{report}");
    assert_eq!(report["checkpoint"]["size"], size, "{report}");
    assert!(
        report["checkpoints"].as_u64().unwrap() > ROUNDS as u64,
        "{report}"
    );
}

// ---------------------------------------------------------------------------
// 2. Export, verify and prove on the command line, with tampering
// ---------------------------------------------------------------------------

/// A ledger with 14 decisions and, with `--checkpoint-interval-ms` out of
/// the way, checkpoints exactly at 0 (first start), 6 and 12 (asked for) and
/// 14 (graceful stop), as an export lays them out:
///
/// ```text
///  1 header       9 cp 6         16 cp 12
///  2 cp 0        10-15 r6..r11   17 r12
///  3-8 r0..r5                    18 r13
///                                19 cp 14
/// ```
struct Fixture {
    dir: tempfile::TempDir,
    data: PathBuf,
    key: String,
    /// The export.
    log: PathBuf,
    lines: Vec<String>,
    /// The checkpoint of size 12 as `GET /v1/checkpoint` gave it, in a file.
    checkpoint_12: PathBuf,
    /// Decision ids, by receipt index.
    ids: Vec<String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Launch::serve(&data)
        .args(["--checkpoint-interval-ms", "3600000"])
        .start();
    let key = server.health()["receipts"]["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let verifier = LogVerifier::parse(&key).unwrap();
    let mut ids = Vec::new();
    let mut decide = |n: usize| {
        let (name, decision) = EXAMPLES[n % EXAMPLES.len()];
        let d = server.decide(&example(name)).decision();
        assert_eq!(d["decision"], decision);
        assert_eq!(d["receipt_index"], n, "{d}");
        ids.push(d["decision_id"].as_str().unwrap().to_owned());
    };
    for n in 0..6 {
        decide(n);
    }
    assert_eq!(get_checkpoint(&server, &verifier).size, 6);
    for n in 6..12 {
        decide(n);
    }
    let reply = server.get("/v1/checkpoint");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("text/plain")
    );
    let checkpoint_12 = dir.path().join("checkpoint-12.txt");
    std::fs::write(&checkpoint_12, &reply.body).unwrap();
    assert_eq!(
        SignedCheckpoint::open(&verifier, &reply.body).unwrap().size,
        12
    );
    for n in 12..14 {
        decide(n);
    }

    // Receipt 13 is on disk but no checkpoint covers it yet: `prove` says so.
    let out = mandate([
        OsStr::new("receipts"),
        "prove".as_ref(),
        ids[13].as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    out.assert_code(FAILURE);
    assert!(out.stderr.contains("not yet covered"), "{}", out.stderr);

    // A graceful stop signs a last checkpoint over every receipt.
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("receipt ledger closed"), "{log}");

    assert_eq!(key_of(&data), key);
    let log = dir.path().join("log.jsonl");
    export(&data, &log);
    let lines = read_lines(&log);
    let layout: Vec<String> = lines
        .iter()
        .map(|l| match parse_line(l) {
            Line::Header => "header".to_owned(),
            Line::Receipt { index, decision_id } => {
                assert_eq!(decision_id, ids[index as usize]);
                format!("r{index}")
            }
            Line::Checkpoint { size } => format!("cp{size}"),
        })
        .collect();
    let expected: Vec<String> = ["header", "cp0"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..6).map(|i| format!("r{i}")))
        .chain(["cp6".to_owned()])
        .chain((6..12).map(|i| format!("r{i}")))
        .chain(["cp12", "r12", "r13", "cp14"].map(str::to_owned))
        .collect();
    assert_eq!(layout, expected);
    Fixture {
        dir,
        data,
        key,
        log,
        lines,
        checkpoint_12,
        ids,
    }
}

impl Fixture {
    /// Writes `lines` as a tampered copy of the export and verifies it.
    fn verify_tampered(&self, name: &str, lines: &[String], trusted: &[PathBuf]) -> Value {
        let path = self.dir.path().join(name);
        write_lines(&path, lines);
        let (out, report) = verify_json(&path, &self.key, trusted);
        let expected = if report["problems"].as_array().unwrap().is_empty() {
            OK
        } else {
            FAILURE
        };
        out.assert_code(expected);
        report
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn an_intact_export_verifies_and_every_tampering_is_named() {
    let f = fixture();

    // Intact: text and JSON.
    let out = mandate([
        OsStr::new("receipts"),
        "verify".as_ref(),
        f.log.as_os_str(),
        "--key".as_ref(),
        f.key.as_ref(),
    ]);
    out.assert_code(OK);
    assert!(
        out.stdout
            .starts_with("ok: 14 receipts and 4 checkpoints verify"),
        "{}",
        out.stdout
    );
    let (out, report) = verify_json(&f.log, &f.key, std::slice::from_ref(&f.checkpoint_12));
    out.assert_code(OK);
    assert_eq!(problems(&report), Vec::<Value>::new(), "{report}");
    assert_eq!(report["receipts"], 14);
    assert_eq!(report["checkpoints"], 4);
    assert_eq!(report["checkpoint"]["size"], 14);
    assert_eq!(report["checkpoint"]["line"], 19);

    // One character of receipt 3's decision id (line 6) changed.
    let mut lines = f.lines.clone();
    let at = receipt_position(&lines, 3);
    lines[at] = lines[at].replace(&f.ids[3], &flip_last_hex_digit(&f.ids[3]));
    assert_ne!(lines[at], f.lines[at]);
    let report = f.verify_tampered("changed.jsonl", &lines, &[]);
    assert_eq!(
        problems(&report),
        vec![
            json!({"kind": "changed", "line": 6, "index": 3}),
            json!({"kind": "root_mismatch", "line": 9, "size": 6}),
        ],
        "{report}"
    );
    // ... and the text output says it failed.
    let out = mandate([
        OsStr::new("receipts"),
        "verify".as_ref(),
        f.path("changed.jsonl").as_os_str(),
        "--key".as_ref(),
        f.key.as_ref(),
    ]);
    out.assert_code(FAILURE);
    assert!(out.stdout.contains("FAILED:"), "{}", out.stdout);
    assert!(out.stdout.contains("line 6"), "{}", out.stdout);

    // One character of a reason changed.
    let mut lines = f.lines.clone();
    let at = receipt_position(&lines, 9);
    let reason = "the tool is declared for the task";
    assert!(lines[at].contains(reason), "{}", lines[at]);
    lines[at] = lines[at].replace(reason, "the tool is declared for the tusk");
    let report = f.verify_tampered("reason.jsonl", &lines, &[]);
    assert_eq!(
        problems(&report),
        vec![
            json!({"kind": "changed", "line": 13, "index": 9}),
            json!({"kind": "root_mismatch", "line": 16, "size": 12}),
        ],
        "{report}"
    );

    // Receipt 4 (line 7) deleted.
    let mut lines = f.lines.clone();
    lines.remove(receipt_position(&lines, 4));
    let report = f.verify_tampered("removed.jsonl", &lines, &[]);
    let found = problems(&report);
    assert_eq!(
        found[0],
        json!({"kind": "removed", "index": 4, "count": 1, "before_line": 7}),
        "{report}"
    );
    assert!(
        kinds(&report)[1..].iter().all(|k| k == "root_mismatch"),
        "{report}"
    );

    // Receipts 7 and 8 (lines 11 and 12) swapped: 7 comes too late.
    let mut lines = f.lines.clone();
    let at = receipt_position(&lines, 7);
    lines.swap(at, at + 1);
    let report = f.verify_tampered("reordered.jsonl", &lines, &[]);
    let found = problems(&report);
    assert_eq!(
        found[0],
        json!({"kind": "reordered", "line": 12, "index": 7, "after_index": 8}),
        "{report}"
    );
    assert_eq!(kinds(&report), ["reordered", "root_mismatch"], "{report}");

    // The last two receipts dropped, the checkpoint over 14 kept.
    let mut lines = f.lines.clone();
    let at = receipt_position(&lines, 12);
    lines.drain(at..at + 2);
    let report = f.verify_tampered("truncated.jsonl", &lines, &[]);
    assert_eq!(
        problems(&report),
        vec![
            json!({"kind": "truncated", "entries": 12, "checkpoint_size": 14, "checkpoint_line": 17})
        ],
        "{report}"
    );

    // The tail dropped with every checkpoint that covers it: what is left is
    // a genuine shorter log, and only a checkpoint kept from earlier tells.
    let lines: Vec<String> = f.lines[..receipt_position(&f.lines, 9)].to_vec();
    let report = f.verify_tampered("cut.jsonl", &lines, &[]);
    assert_eq!(problems(&report), Vec::<Value>::new(), "{report}");
    assert_eq!(report["checkpoint"]["size"], 6);
    let report = f.verify_tampered("cut.jsonl", &lines, std::slice::from_ref(&f.checkpoint_12));
    assert_eq!(
        problems(&report),
        vec![
            json!({"kind": "truncated", "entries": 9, "checkpoint_size": 12, "checkpoint_line": null})
        ],
        "{report}"
    );

    // A checkpoint's note edited: its size line says 7 instead of 6.
    let mut lines = f.lines.clone();
    let at = checkpoint_position(&lines, 6);
    assert!(lines[at].contains("\\n6\\n"), "{}", lines[at]);
    lines[at] = lines[at].replacen("\\n6\\n", "\\n7\\n", 1);
    let report = f.verify_tampered("edited-note.jsonl", &lines, &[]);
    assert_eq!(kinds(&report), ["bad_checkpoint"], "{report}");
    assert_eq!(problems(&report)[0]["line"], 9, "{report}");

    // A checkpoint signed by another key with the same origin, over the
    // right size and root: only the key is wrong.
    let origin = LogVerifier::parse(&f.key).unwrap().name().to_owned();
    let other_file = f.path("other.key");
    let out = mandate([
        OsStr::new("keys"),
        "generate".as_ref(),
        "--out".as_ref(),
        other_file.as_os_str(),
        "--origin".as_ref(),
        origin.as_ref(),
        "--json".as_ref(),
    ]);
    out.assert_code(OK);
    assert_eq!(out.json()["origin"], origin.as_str());
    let other = LogKey::parse(&std::fs::read_to_string(&other_file).unwrap()).unwrap();
    assert_eq!(out.json()["verifier_key"], other.verifier().as_text());
    let genuine: Value = serde_json::from_str(&f.lines[at]).unwrap();
    let genuine = SignedCheckpoint::open(
        &LogVerifier::parse(&f.key).unwrap(),
        genuine["note"].as_str().unwrap(),
    )
    .unwrap();
    let forged = SignedCheckpoint::sign(&other, genuine.size, genuine.root).unwrap();
    let mut lines = f.lines.clone();
    lines[at] = json!({"type": "checkpoint", "size": 6, "note": forged.note}).to_string();
    let report = f.verify_tampered("forged.jsonl", &lines, &[]);
    assert_eq!(kinds(&report), ["bad_checkpoint"], "{report}");
    assert_eq!(problems(&report)[0]["line"], 9, "{report}");
    // Nor is it accepted as a trusted checkpoint.
    std::fs::write(f.path("forged.txt"), &forged.note).unwrap();
    let report = f.verify_tampered("intact.jsonl", &f.lines, &[f.path("forged.txt")]);
    assert_eq!(kinds(&report), ["bad_trusted"], "{report}");

    // The wrong key: nothing verifies.
    let (out, report) = verify_json(&f.log, other.verifier().as_text(), &[]);
    out.assert_code(FAILURE);
    let kinds = kinds(&report);
    assert_eq!(
        kinds.iter().filter(|k| *k == "changed").count(),
        14,
        "{report}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "bad_checkpoint").count(),
        4,
        "{report}"
    );
    assert!(kinds.iter().any(|k| k == "key_mismatch"), "{report}");
    assert!(report["checkpoint"].is_null(), "{report}");

    // A key that is not a key: usage error.
    let out = mandate([
        OsStr::new("receipts"),
        "verify".as_ref(),
        f.log.as_os_str(),
        "--key".as_ref(),
        "not-a-key".as_ref(),
    ]);
    out.assert_code(INPUT);
    assert!(out.stderr.contains("key"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn prove_prints_a_bundle_that_verifies_offline() {
    let f = fixture();
    let prove = |id: &str| {
        mandate([
            OsStr::new("receipts"),
            "prove".as_ref(),
            id.as_ref(),
            "--data-dir".as_ref(),
            f.data.as_os_str(),
        ])
    };
    let verify_proof = |path: &Path, key: &str| {
        mandate([
            OsStr::new("receipts"),
            "verify".as_ref(),
            "--proof".as_ref(),
            path.as_os_str(),
            "--key".as_ref(),
            key.as_ref(),
        ])
    };

    for index in [0, 7, 13] {
        let out = prove(&f.ids[index]);
        out.assert_code(OK);
        let bundle: ReceiptBundle = serde_json::from_str(&out.stdout).unwrap();
        let checkpoint = bundle.verify(&LogVerifier::parse(&f.key).unwrap()).unwrap();
        assert_eq!(checkpoint.size, 14);
        assert_eq!(bundle.inclusion_proof.index, index as u64);

        let path = f.path(&format!("bundle-{index}.json"));
        std::fs::write(&path, &out.stdout).unwrap();
        let ok = verify_proof(&path, &f.key);
        ok.assert_code(OK);
        assert!(ok.stdout.starts_with("ok:"), "{}", ok.stdout);

        // One character of the receipt changed.
        let mut tampered = out.json();
        let id = tampered["receipt"]["decision_id"]
            .as_str()
            .unwrap()
            .to_owned();
        tampered["receipt"]["decision_id"] = json!(flip_last_hex_digit(&id));
        let bad = f.path(&format!("bundle-{index}-tampered.json"));
        std::fs::write(&bad, tampered.to_string()).unwrap();
        let failed = verify_proof(&bad, &f.key);
        failed.assert_code(FAILURE);
        assert!(failed.stdout.starts_with("FAILED:"), "{}", failed.stdout);
    }

    // Another log's key rejects a genuine bundle.
    let other = f.path("other.key");
    let out = mandate([
        OsStr::new("keys"),
        "generate".as_ref(),
        "--out".as_ref(),
        other.as_os_str(),
    ]);
    out.assert_code(OK);
    verify_proof(&f.path("bundle-0.json"), out.stdout.trim()).assert_code(FAILURE);

    // An unknown decision id, and a data directory with no ledger.
    let out = prove("01900000-0000-7000-8000-000000000000");
    out.assert_code(INPUT);
    assert!(out.stderr.contains("no receipt"), "{}", out.stderr);
    let empty = f.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = mandate([
        OsStr::new("receipts"),
        "prove".as_ref(),
        f.ids[0].as_ref(),
        "--data-dir".as_ref(),
        empty.as_os_str(),
    ]);
    out.assert_code(INPUT);
    assert!(out.stderr.contains("no ledger"), "{}", out.stderr);
}

#[test]
fn keys_show_prints_the_verifier_key_or_says_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = mandate([
        OsStr::new("keys"),
        "show".as_ref(),
        "--data-dir".as_ref(),
        empty.as_os_str(),
    ]);
    out.assert_code(INPUT);
    assert!(out.stderr.contains("no signing key"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    let data = dir.path().join("data");
    let server = Launch::serve(&data).start();
    let key = server.health()["receipts"]["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = mandate([
        OsStr::new("keys"),
        "show".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--json".as_ref(),
    ]);
    out.assert_code(OK);
    let shown = out.json();
    assert_eq!(shown["verifier_key"], key.as_str(), "{shown}");
    let origin = shown["origin"].as_str().unwrap();
    assert!(origin.starts_with("mandate.local/"), "{shown}");
    assert_eq!(LogVerifier::parse(&key).unwrap().name(), origin);
    assert_eq!(key_of(&data), key);
}

// ---------------------------------------------------------------------------
// 3. Argument values stay out of receipts and telemetry
// ---------------------------------------------------------------------------

/// A value that appears nowhere unless something leaks it.
fn secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("TOPSECRET-{}-{nanos:x}", std::process::id())
}

/// The files in `dir` whose name starts with `prefix` and whose bytes
/// contain `needle`.
fn files_contain(dir: &Path, prefix: &str, needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[test]
fn redacted_arguments_stay_out_of_receipts_logs_and_metrics() {
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Launch::serve(&data)
        .args(["--receipt-redact", "body"])
        .env("RUST_LOG", "debug")
        .start();
    let verifier = LogVerifier::parse(
        server.health()["receipts"]["verifier_key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    // Denied (a stranger) and allowed (an allowed recipient), both carrying
    // the secret in the redacted path.
    let mut ids = Vec::new();
    for (to, decision) in [
        ("mallory@evil.example", "deny"),
        ("carol@example.com", "allow"),
    ] {
        let mut request = example("send-to-stranger");
        request["arguments"] = json!({ "to": to, "subject": "hello", "body": secret });
        let d = server.decide(&request).decision();
        assert_eq!(d["decision"], decision, "{d}");
        assert!(!d.to_string().contains(&secret));
        let id = d["decision_id"].as_str().unwrap().to_owned();

        let reply = server.get(&format!("/v1/receipts/{id}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            !reply.body.contains(&secret),
            "the receipt holds the secret: {}",
            reply.body
        );
        let (receipt, _) = verified_receipt(&server, &verifier, &id);
        assert_eq!(
            receipt["arguments"],
            json!({
                "to": to,
                "subject": "hello",
                "body": { "redacted_sha256": mandate_ledger::digest_json(&json!(secret)).unwrap() },
            }),
            "{receipt}"
        );
        assert_eq!(
            receipt["arguments_sha256"],
            mandate_ledger::digest_json(&request["arguments"]).unwrap(),
            "{receipt}"
        );
        ids.push(id);
    }

    // A request refused before any decision, carrying the secret too.
    let mut refused = example("send-to-stranger");
    refused["arguments"]["body"] = json!(secret);
    refused["context"]["time"] = json!("2025-01-01T00:00:00Z");
    server
        .decide(&refused)
        .assert_error(422, "field_not_allowed");
    // ... and one whose arguments are not an object: the error message may
    // quote the value back to its sender, but not to the log.
    let mut malformed = example("send-to-stranger");
    malformed["arguments"] = json!(secret);
    server
        .decide(&malformed)
        .assert_error(422, "invalid_request");

    let metrics = server.metrics();
    assert!(metrics.contains("mandate_decisions_total"), "{metrics}");
    assert!(!metrics.contains(&secret), "the secret is in /metrics");
    let health = server.get("/v1/health");
    assert!(!health.body.contains(&secret));

    // Not in the ledger files, nor in an export.
    let log = dir.path().join("log.jsonl");
    export(&data, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ids.iter().all(|id| text.contains(id.as_str())));
    assert!(!text.contains(&secret), "the export holds the secret");
    assert_eq!(
        files_contain(&data, "ledger.db", &secret),
        Vec::<PathBuf>::new()
    );

    // Nor anywhere in the server's log, at debug level.
    let stderr = server.kill();
    assert!(
        stderr.contains("\"level\":\"DEBUG\"") && stderr.contains("decided"),
        "the log is not at debug level:\n{stderr}"
    );
    assert!(
        !stderr.contains(&secret),
        "the secret is in the server log:\n{stderr}"
    );
}

#[test]
fn digest_only_receipts_keep_no_arguments() {
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Launch::serve(&data)
        .args(["--receipt-arguments", "digest"])
        .start();
    let verifier = LogVerifier::parse(
        server.health()["receipts"]["verifier_key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut request = example("send-to-stranger");
    request["arguments"]["body"] = json!(secret);
    let d = server.decide(&request).decision();
    let id = d["decision_id"].as_str().unwrap();
    let (receipt, _) = verified_receipt(&server, &verifier, id);
    assert!(receipt.get("arguments").is_none(), "{receipt}");
    assert_eq!(
        receipt["arguments_sha256"],
        mandate_ledger::digest_json(&request["arguments"]).unwrap(),
        "{receipt}"
    );
    assert!(!receipt.to_string().contains(&secret));
    assert!(!receipt.to_string().contains("mallory@evil.example"));
    assert_eq!(receipt["decision"], "deny");
}

// ---------------------------------------------------------------------------
// 4. The key and ledger files
// ---------------------------------------------------------------------------

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn key_and_ledger_are_private_and_the_ledger_refuses_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Launch::serve(&data).start();
    let key = server.health()["receipts"]["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    server.decide(&example("read-inbox")).decision();
    assert_eq!(mode(&data.join("keys")), 0o700);
    assert_eq!(mode(&data.join("keys").join("ledger.key")), 0o600);
    assert_eq!(mode(&data.join("ledger.db")), 0o600);
    // SQLite's side files (while the server runs) hold receipts too.
    for side in ["ledger.db-wal", "ledger.db-shm"] {
        let path = data.join(side);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{side}");
        }
    }
    drop(server.kill());

    // `keys generate` writes a private file and never overwrites one.
    let other = dir.path().join("other.key");
    let args = [
        OsStr::new("keys"),
        "generate".as_ref(),
        "--out".as_ref(),
        other.as_os_str(),
    ];
    let out = mandate(args);
    out.assert_code(OK);
    let other_key = out.stdout.trim().to_owned();
    assert_ne!(other_key, key);
    assert_eq!(mode(&other), 0o600);
    let before = std::fs::read(&other).unwrap();
    let again = mandate(args);
    again.assert_code(INPUT);
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(&other).unwrap(), before);

    // The ledger was started with its own key: another one is refused.
    let (status, stderr) = Launch::serve(&data)
        .arg("--signing-key-file")
        .arg(&other)
        .run_to_exit();
    // A configuration mistake: exit 2.
    assert_eq!(status.code(), Some(INPUT), "{status:?}\n{stderr}");
    assert!(stderr.contains("key"), "{stderr}");
    assert!(
        stderr.contains(&key) && stderr.contains(&other_key),
        "{stderr}"
    );
    assert!(!stderr.contains("mandate is listening"), "{stderr}");

    // ... and nothing was damaged: the original key still opens it.
    let server = Launch::serve(&data).start();
    let health = server.health();
    assert_eq!(health["receipts"]["verifier_key"], key.as_str());
    assert_eq!(health["receipts"]["size"], 1);
    assert_eq!(health["status"], "ok");
}
