//! Three `mandate serve` processes on one PostgreSQL database (a real
//! server the tests start), as a deployment behind a load balancer runs
//! them: any instance answers any request. A task started on one is used,
//! delegated, reported on and ended on the others; an end is refused by
//! every instance; an approval opened on one is listed and resolved on
//! another, wakes a long poll on a third, and releases one call however
//! many instances race for it; the receipts of all form one log that any
//! instance proves and `mandate receipts verify` checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use util::tasks::{Idp, ROOT_AGENT, SUB_AGENT, write_config};
use util::{Launch, Reply, Server, copy_dir, example_pack, merge, poll_until};

const APPROVER: &str = "bob@example.com";
const APPROVER_TOKEN: &str = "mnd_apr_bob-cluster-token-0123456789abcdef";

/// Instances on one database, each with a data directory of its own and
/// the keys of the first.
struct Cluster {
    instances: Vec<Server>,
    url: String,
    idp: Idp,
    dir: tempfile::TempDir,
}

/// The config every instance here runs with: `idp` trusted, the example
/// pack, one approver.
fn config(dir: &Path, idp: &Idp) -> std::path::PathBuf {
    let digest: String = Sha256::digest(APPROVER_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_config(
        dir,
        idp,
        &format!(
            "policies = {:?}\n\n[[approvers]]\nname = {APPROVER:?}\ntoken_sha256 = {digest:?}\n",
            example_pack().display().to_string()
        ),
    )
}

fn cluster(size: usize) -> Cluster {
    let url = test_postgres::shared().database();
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    let config = config(dir.path(), &idp);
    let launch = |n: usize| {
        Launch::serve(&dir.path().join(format!("data-{n}")))
            .arg("--config")
            .arg(&config)
            .env("MANDATE_STORE", &url)
            .start()
    };
    let mut instances = vec![launch(0)];
    // Every instance signs with the keys the first generated.
    for n in 1..size {
        copy_dir(
            &dir.path().join("data-0").join("keys"),
            &dir.path().join(format!("data-{n}")).join("keys"),
        );
        instances.push(launch(n));
    }
    Cluster {
        instances,
        url,
        idp,
        dir,
    }
}

impl Cluster {
    fn at(&self, n: usize) -> &Server {
        &self.instances[n % self.instances.len()]
    }
}

/// `GET /v1/checkpoint` of `server` as JSON (size, root, note, key).
fn checkpoint_of(server: &Server) -> Value {
    reqwest::blocking::Client::new()
        .get(server.url("/v1/checkpoint"))
        .header("accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn post(server: &Server, path: &str, token: Option<&str>, body: &Value) -> Reply {
    server.call(Method::POST, path, token, Some(body))
}

/// `POST /v1/decide` of `request` at `url`, from any thread (a server
/// handle stays on the test's own): the status and the body.
fn decide_at(url: &str, request: &Value) -> (u16, Value) {
    let reply = reqwest::blocking::Client::new()
        .post(url)
        .json(request)
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().unwrap())
}

fn read_inbox(agent: &str) -> Value {
    json!({
        "principal": { "id": agent },
        "action": {
            "server": "mail",
            "tool": "read_inbox",
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "openWorldHint": false }
        }
    })
}

#[test]
fn a_task_moves_between_instances_and_its_end_is_refused_by_all() {
    let c = cluster(3);
    let started = post(
        c.at(0),
        "/v1/tasks",
        Some(&c.idp.token(ROOT_AGENT)),
        &json!({
            "intent": "answer customer questions about their orders",
            "tools": ["mail/read_inbox", "mail/send_email"],
            "ttl_seconds": 600,
            "max_depth": 2
        }),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    let started = started.json();
    let task_id = started["task_id"].as_str().unwrap().to_owned();
    let root = started["credential"].as_str().unwrap().to_owned();

    // Delegated on the second instance, used on the third.
    let delegated = post(
        c.at(1),
        &format!("/v1/tasks/{task_id}/delegate"),
        Some(&root),
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
    );
    assert_eq!(delegated.status, 201, "{}", delegated.body);
    let sub = delegated.json()["credential"].as_str().unwrap().to_owned();
    let decided = post(c.at(2), "/v1/decide", Some(&root), &read_inbox(ROOT_AGENT));
    assert_eq!(decided.status, 200, "{}", decided.body);
    let decided = decided.json();
    assert_eq!(decided["decision"], "allow", "{decided}");
    let decision_id = decided["decision_id"].as_str().unwrap().to_owned();

    // Its result reported on the first, seen on the second.
    let reported = post(
        c.at(0),
        &format!("/v1/decisions/{decision_id}/result"),
        Some(&root),
        &json!({ "status": "ok", "labels": ["customer"] }),
    );
    assert_eq!(reported.status, 200, "{}", reported.body);
    let shown = c.at(1).call(
        Method::GET,
        &format!("/v1/tasks/{task_id}"),
        Some(&root),
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.body);
    let history = &shown.json()["history"];
    assert_eq!(history[0]["decision_id"], decision_id.as_str(), "{history}");
    assert_eq!(history[0]["result"]["labels"], json!(["customer"]));

    // Ended on the third: the very next decision and delegation on the
    // others are refused (they read the task's end from the database).
    let ended = c.at(2).call(
        Method::DELETE,
        &format!("/v1/tasks/{task_id}"),
        Some(&root),
        None,
    );
    assert_eq!(ended.status, 200, "{}", ended.body);
    let refused = post(c.at(0), "/v1/decide", Some(&sub), &read_inbox(SUB_AGENT));
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("revoked"), "{}", refused.body);
    let refused = post(
        c.at(1),
        &format!("/v1/tasks/{task_id}/delegate"),
        Some(&root),
        &json!({ "agent": "spiffe://example.org/agent/x", "tools": ["mail/read_inbox"] }),
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    // Every instance lists the revocations, and soon refuses the
    // credentials everywhere (it hears the end announced).
    for n in 0..3 {
        let listed = c.at(n).get("/v1/revocations").json();
        assert_eq!(
            listed["revocations"].as_array().unwrap().len(),
            2,
            "{listed}"
        );
        poll_until(Duration::from_secs(30), "the end heard", || {
            let shown = c.at(n).call(
                Method::GET,
                &format!("/v1/tasks/{task_id}"),
                Some(&sub),
                None,
            );
            if shown.status == 401 && shown.body.contains("revoked") {
                Ok(())
            } else {
                Err(shown.body)
            }
        });
    }
}

fn delete_email(id: &str) -> Value {
    let mut request: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/requests/delete-email.json"),
        )
        .unwrap(),
    )
    .unwrap();
    merge(&mut request, &json!({ "arguments": { "id": id } }));
    request
}

#[test]
fn an_approval_opened_on_one_instance_is_resolved_on_another_and_used_once() {
    let c = cluster(3);
    let request = delete_email("msg-7");
    let asked = c.at(0).decide(&request);
    assert_eq!(asked.status, 200, "{}", asked.body);
    let asked = asked.json();
    assert_eq!(asked["decision"], "approval_required", "{asked}");
    let id = asked["approval_id"].as_str().unwrap().to_owned();

    // Listed on the second.
    let listed = c.at(1).call(
        Method::GET,
        "/v1/approvals?status=pending",
        Some(APPROVER_TOKEN),
        None,
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains(&id), "{}", listed.body);

    // A long poll on the third wakes when the second approves: well
    // before its wait runs out (it is told, it does not poll the table).
    let poll_url = c.at(2).url(&format!("/v1/approvals/{id}?wait=60s"));
    let poller = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = reqwest::blocking::Client::new()
            .get(poll_url)
            .timeout(Duration::from_secs(120))
            .send()
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.text().unwrap(), started.elapsed())
    });
    poll_until(
        Duration::from_secs(30),
        "the long poll to be waiting",
        || match util::metric(&c.at(2).metrics(), "mandate_approval_long_polls") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(other),
        },
    );
    let approved = post(
        c.at(1),
        &format!("/v1/approvals/{id}/approve"),
        Some(APPROVER_TOKEN),
        &json!({ "reason": "ok" }),
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    let (status, body, waited) = poller.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "approved", "{body}");
    assert!(
        waited < Duration::from_secs(50),
        "the poll on another instance woke when the approval was resolved, not when its wait ran out ({waited:?})"
    );

    // Three instances race to release it: exactly one call is allowed.
    let mut released = request.clone();
    released["approval_id"] = json!(id);
    let racers: Vec<_> = (0..3)
        .map(|n| {
            let url = c.at(n).url("/v1/decide");
            let body = released.clone();
            std::thread::spawn(move || decide_at(&url, &body))
        })
        .collect();
    let outcomes: Vec<String> = racers
        .into_iter()
        .map(|racer| {
            let (status, answer) = racer.join().unwrap();
            assert_eq!(status, 200, "{answer}");
            answer["decision"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|d| *d == "allow").count(),
        1,
        "{outcomes:?}"
    );
}

#[test]
fn the_receipts_of_every_instance_form_one_log_that_verifies() {
    let c = cluster(3);
    let callers: Vec<_> = (0..3)
        .map(|n| {
            let url = c.at(n).url("/v1/decide");
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| {
                        let (status, answer) =
                            decide_at(&url, &read_inbox(&format!("agent-{n}-{i}")));
                        assert_eq!(status, 200, "{answer}");
                        answer["decision_id"].as_str().unwrap().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = callers
        .into_iter()
        .flat_map(|caller| caller.join().unwrap())
        .collect();

    // One sequence: every index from 0, once.
    let searched = c.at(1).call(
        Method::GET,
        "/v1/receipts?limit=500",
        Some(APPROVER_TOKEN),
        None,
    );
    assert_eq!(searched.status, 200, "{}", searched.body);
    let mut indices: Vec<u64> = searched.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["receipt"]["index"].as_u64().unwrap())
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..60).collect::<Vec<_>>());

    // Any instance proves any receipt, and the proof verifies offline.
    let checkpoint = checkpoint_of(c.at(0));
    assert_eq!(
        checkpoint["size"], 60,
        "one instance's checkpoint covers all"
    );
    let key = checkpoint["verifier_key"].as_str().unwrap().to_owned();
    // The whole log, exported from the database, verifies offline.
    let export = c.dir.path().join("log.jsonl");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(args)
            .env_remove("MANDATE_STORE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "receipts".as_ref(),
        "export".as_ref(),
        "--store".as_ref(),
        c.url.as_ref(),
        "--output".as_ref(),
        export.as_os_str(),
    ]);
    let verified = run(&[
        "receipts".as_ref(),
        "verify".as_ref(),
        export.as_os_str(),
        "--key".as_ref(),
        key.as_ref(),
    ]);
    assert!(verified.starts_with("ok: 60 receipts"), "{verified}");

    for (n, id) in ids.iter().enumerate().step_by(7) {
        let bundle = c.at(n + 1).get(&format!("/v1/receipts/{id}"));
        assert_eq!(bundle.status, 200, "{}", bundle.body);
        let file = c.dir.path().join(format!("bundle-{n}.json"));
        std::fs::write(&file, &bundle.body).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
            .args(["receipts", "verify", "--proof"])
            .arg(&file)
            .args(["--key", &key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `mandate store migrate` with `args`, as an operator runs it.
fn migrate(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["store", "migrate"])
        .args(args)
        .env_remove("MANDATE_STORE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_single_process_deployment_moves_to_postgres_with_its_log_intact() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    let config = config(dir.path(), &idp);
    let data = dir.path().join("data");

    // A single-process server with a task, decisions and a pending approval.
    let single = Launch::serve(&data).arg("--config").arg(&config).start();
    let started = post(
        &single,
        "/v1/tasks",
        Some(&idp.token(ROOT_AGENT)),
        &json!({ "intent": "triage the inbox", "tools": ["mail/read_inbox"], "ttl_seconds": 600 }),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    let started = started.json();
    let task_id = started["task_id"].as_str().unwrap().to_owned();
    let root = started["credential"].as_str().unwrap().to_owned();
    let decided = post(&single, "/v1/decide", Some(&root), &read_inbox(ROOT_AGENT));
    assert_eq!(decided.json()["decision"], "allow", "{}", decided.body);
    for n in 0..5 {
        assert_eq!(
            single.decide(&read_inbox(&format!("agent-{n}"))).status,
            200
        );
    }
    let asked = single.decide(&delete_email("msg-9")).json();
    let approval_id = asked["approval_id"].as_str().unwrap().to_owned();
    let before = checkpoint_of(&single);
    let old_size = before["size"].as_u64().unwrap();
    assert_eq!(old_size, 7);

    // Not while the server runs.
    let url = test_postgres::shared().database();
    let (code, _, stderr) = migrate(&[
        "--from".as_ref(),
        data.as_os_str(),
        "--to".as_ref(),
        url.as_ref(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("stop it"), "{stderr}");
    let (status, _) = single.terminate();
    assert!(status.success());

    let (code, stdout, stderr) = migrate(&[
        "--from".as_ref(),
        data.as_os_str(),
        "--to".as_ref(),
        url.as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["receipts"], old_size);
    assert_eq!(summary["tasks"], 1);
    assert_eq!(summary["approvals"], 1);
    assert_eq!(
        summary["journaled"], old_size,
        "every decision's journal entry moves"
    );
    // The journal replays from PostgreSQL as it did from the directory.
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["policy", "replay", "--json", "--candidate"])
        .arg(example_pack())
        .args(["--store", &url])
        .env_remove("MANDATE_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "the live pack changes nothing: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let report: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(report["replayed"], old_size, "{report}");
    // Twice is refused, changing nothing.
    let (code, _, stderr) = migrate(&[
        "--from".as_ref(),
        data.as_os_str(),
        "--to".as_ref(),
        url.as_ref(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");

    // The same data directory (its keys) now serves from PostgreSQL.
    let moved = Launch::serve(&data)
        .arg("--config")
        .arg(&config)
        .env("MANDATE_STORE", &url)
        .start();
    let shown = moved.call(
        Method::GET,
        &format!("/v1/tasks/{task_id}"),
        Some(&root),
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.json()["history"].as_array().unwrap().len(), 1);
    let pending = moved.call(
        Method::GET,
        &format!("/v1/approvals/{approval_id}"),
        Some(APPROVER_TOKEN),
        None,
    );
    assert_eq!(pending.json()["status"], "pending", "{}", pending.body);
    let next = post(&moved, "/v1/decide", Some(&root), &read_inbox(ROOT_AGENT)).json();
    assert_eq!(next["receipt_index"], old_size, "the log continues: {next}");

    // The grown log extends the one signed before the move.
    let after = checkpoint_of(&moved);
    assert_eq!(after["verifier_key"], before["verifier_key"]);
    let new_size = after["size"].as_u64().unwrap();
    let proof = moved.get(&format!(
        "/v1/proofs/consistency?from={old_size}&to={new_size}"
    ));
    assert_eq!(proof.status, 200, "{}", proof.body);
    let proof: mandate_ledger::ConsistencyProof = serde_json::from_str(&proof.body).unwrap();
    let root_of =
        |v: &Value| mandate_ledger::proof::hash_from_base64(v["root"].as_str().unwrap()).unwrap();
    proof.verify(root_of(&before), root_of(&after)).unwrap();
}
