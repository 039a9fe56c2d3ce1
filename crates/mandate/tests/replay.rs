//! `mandate policy replay` against the journal of a real `mandate serve`:
//! traffic through the HTTP API and the MCP gateway, candidate packs that
//! tighten and loosen specific rules, exact transition counts; redaction
//! visible in what the journal kept and honoured by the replay; retention
//! pruning the journal and never the receipts; exit codes for CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use util::mcp::{
    AGENT, FilesystemSession, LISTING_OPEN_WORLD, Sdk, filesystem_session, mandate, require_peers,
    steps,
};
use util::{Launch, Server, copy_dir, example_pack, mailer, merge, send_email};

/// What `mandate` printed and its exit code.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn mandate_cli(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .env_remove("MANDATE_STORE")
        .env_remove("MANDATE_DATA_DIR")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `mandate policy replay --candidate DIR --data-dir DATA --json` and more.
fn replay(candidate: &Path, data: &Path, more: &[&str]) -> Run {
    let mut args = vec![
        "policy",
        "replay",
        "--candidate",
        candidate.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    mandate_cli(&args)
}

/// The transition `from -> to` of a JSON report, if any decision made it.
fn transition<'a>(report: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["from"] == from && t["to"] == to)
}

/// `from -> to` counts, as `(from, to, count)`, in the report's order.
fn counts(report: &Value) -> Vec<(String, String, u64)> {
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_owned(),
                t["to"].as_str().unwrap().to_owned(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|(f, t, n)| ((*f).to_owned(), (*t).to_owned(), *n))
        .collect()
}

/// A forbid the candidates add: the inbox is never read.
const NO_READS: &str = r#"
@id("no-reads")
@reason("the candidate reads no inbox")
forbid (principal, action == Mandate::Action::"call_tool", resource)
when { resource.name == "read_inbox" };
"#;

/// A forbid on a mail's body, which the live pack never reads (the
/// candidate declares `body` in its schema).
const NO_REFUNDS: &str = r#"
@id("no-refunds")
@reason("the candidate sends no mail about refunds")
forbid (principal, action == Mandate::Action::"call_tool", resource)
when { context.arguments has body && context.arguments.body like "*refund*" };
"#;

/// The example pack, tightened (no inbox reads, no mail about refunds) and
/// loosened (no recipient rule), in `dir/candidate`.
fn candidate(dir: &Path) -> PathBuf {
    let candidate = dir.join("candidate");
    copy_dir(&example_pack(), &candidate);
    std::fs::remove_file(candidate.join("recipients.cedar")).unwrap();
    std::fs::write(candidate.join("reads.cedar"), NO_READS).unwrap();
    std::fs::write(candidate.join("refunds.cedar"), NO_REFUNDS).unwrap();
    let schema = candidate.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(
        &schema,
        text.replace("to?: String,", "to?: String,\n  body?: String,"),
    )
    .unwrap();
    candidate
}

/// A server on the example pack with `config` as its config file, in a
/// new directory; its data directory is `DIR/data`.
fn serve(config: &str) -> (tempfile::TempDir, PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("mandate.toml");
    std::fs::write(&file, config).unwrap();
    let server = Launch::serve(&data)
        .arg("--config")
        .arg(&file)
        .arg("--policies")
        .arg(example_pack())
        .start();
    (dir, data, server)
}

fn decide(server: &Server, request: &Value, expected: &str) -> String {
    let reply = server.decide(request);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["decision"], expected, "{answer}");
    answer["decision_id"].as_str().unwrap().to_owned()
}

fn with(mut request: Value, patch: &Value) -> Value {
    merge(&mut request, patch);
    request
}

#[test]
fn replay_reports_exact_transitions_with_redaction_honoured() {
    let (dir, data, server) = serve(
        "[[journal_redact]]\ntool = \"*\"\npath = \"body\"\naction = \"hash\"\n\n\
         [[journal_redact]]\ntool = \"mail/*\"\npath = \"secret\"\naction = \"drop\"\n\n\
         [[journal_redact]]\ntool = \"mail/draft_reply\"\npath = \"body\"\naction = \"keep\"\n",
    );

    // Three mails about a refund to an allowed recipient: allowed live;
    // the candidate would deny them for their body, but the journal kept
    // only its digest, so the replay cannot see it.
    let refund = json!({"arguments": {"body": "about your refund"}});
    let first = decide(
        &server,
        &with(send_email("carol@example.com"), &refund),
        "allow",
    );
    for _ in 0..2 {
        decide(
            &server,
            &with(send_email("dave@example.com"), &refund),
            "allow",
        );
    }
    // Two to a stranger: denied live, allowed by the candidate.
    for _ in 0..2 {
        decide(&server, &send_email("mallory@evil.example"), "deny");
    }
    // Four inbox reads, one with a secret argument: allowed live, denied
    // by the candidate.
    for _ in 0..3 {
        decide(&server, &mailer(&json!({})), "allow");
    }
    let secret = mailer(&json!({"arguments": {"secret": "s3cr3t", "folder": "inbox"}}));
    let read = decide(&server, &secret, "allow");
    // A draft whose body is kept (a more specific rule): the candidate
    // reads it and denies.
    let draft = mailer(&json!({
        "action": {"tool": "draft_reply", "annotations": {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false}},
        "arguments": {"body": "a refund is on its way"}
    }));
    decide(&server, &draft, "allow");
    // A deletion waits for a person, live and in the candidate.
    let delete: Value = serde_json::from_str(
        &std::fs::read_to_string(example_requests().join("delete-email.json")).unwrap(),
    )
    .unwrap();
    decide(&server, &delete, "approval_required");
    let last = decide(&server, &mailer(&json!({})), "allow");

    let journal_size = util::metric(&server.metrics(), "mandate_journal_bytes").unwrap();
    assert!(
        journal_size > 1000.0,
        "twelve entries: {journal_size} bytes"
    );

    let candidate = candidate(dir.path());
    let run = replay(&candidate, &data, &["--json", "--examples", "10"]);
    assert_eq!(run.code, 5, "changes found: {}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["replayed"], 12, "{report}");
    assert_eq!(report["changed"], 8, "{report}");
    assert_eq!(report["unchanged"], 4, "{report}");
    assert_eq!(
        counts(&report),
        owned(&[
            ("allow", "allow", 3),
            ("allow", "deny", 6),
            ("deny", "allow", 2),
            ("approval_required", "approval_required", 1),
        ]),
        "{report}"
    );
    assert_eq!(report["candidate"]["pack"], candidate.display().to_string());

    let tightened = transition(&report, "allow", "deny").unwrap();
    assert_eq!(
        tightened["candidate_policies"],
        json!([{"policy": "no-reads", "count": 5}, {"policy": "no-refunds", "count": 1}]),
        "{tightened}"
    );
    assert_eq!(
        tightened["live_policies"],
        json!([{"policy": "declared-tools", "count": 6}])
    );
    // Examples are the oldest first (up to --examples), explained.
    let examples = tightened["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 6);
    let kept = examples
        .iter()
        .find(|e| e["decision_id"] == read.as_str())
        .unwrap_or_else(|| panic!("the read with a secret is an example: {tightened}"));
    // The secret was dropped before it was stored; the rest is as sent.
    assert_eq!(
        kept["request"]["arguments"],
        json!({"folder": "inbox"}),
        "{kept}"
    );
    assert_eq!(
        kept["redacted"],
        json!([{"path": "secret", "action": "drop"}])
    );
    assert_eq!(kept["candidate"]["policies"], json!(["no-reads"]));
    assert_eq!(
        kept["candidate"]["reasons"],
        json!(["the candidate reads no inbox"])
    );
    let explained: Vec<&str> = kept["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        explained.contains(&"no-reads") && explained.contains(&"declared-tools"),
        "{kept}"
    );
    assert!(
        kept["request"]["context"]["time"].is_string(),
        "the server's clock is kept"
    );
    // An entry with nothing redacted is what the receipt's context digest
    // covers; a redacted one is not.
    let digest_of = |example: &Value| mandate_ledger::digest_json(&example["request"]).unwrap();
    let receipt_of = |example: &Value| {
        let id = example["decision_id"].as_str().unwrap();
        server.get(&format!("/v1/receipts/{id}")).json()["receipt"].clone()
    };
    let plain = &examples[0];
    assert!(plain.get("redacted").is_none(), "{plain}");
    assert_eq!(
        digest_of(plain),
        receipt_of(plain)["context_sha256"],
        "{plain}"
    );
    assert_ne!(digest_of(kept), receipt_of(kept)["context_sha256"]);

    let loosened = transition(&report, "deny", "allow").unwrap();
    assert_eq!(
        loosened["live_policies"],
        json!([{"policy": "recipient-allowed", "count": 2}])
    );

    // Redacted bodies that the candidate reads: every mail sent (the three
    // about a refund, kept as digests and so unchanged, and the two to the
    // stranger) is counted, and a body is its digest, not the text.
    assert_eq!(report["on_redacted"], 5, "{report}");
    assert_eq!(report["changed_on_redacted"], 2, "{report}");
    assert_eq!(loosened["examples"][0]["redacted_read"], json!(["body"]));
    let journal = journaled(&candidate, &data, &first);
    let body = journal["request"]["arguments"]["body"].as_str().unwrap();
    assert!(
        body.starts_with("sha256:") && !body.contains("refund"),
        "{journal}"
    );

    // The text report says the same in words.
    let text = replay(&candidate, &data, &[]);
    assert_eq!(text.code, 5);
    assert_eq!(
        text.stdout.matches("  e.g. ").count(),
        3 + 2,
        "three examples by default (two for the two denies): {}",
        text.stdout
    );
    assert!(
        text.stdout.starts_with(&format!(
            "replayed 12 decisions against `{}`",
            candidate.display()
        )),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("allow -> deny: 6"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("candidate policies: no-reads (5), no-refunds (1)")
    );
    assert!(
        text.stdout
            .contains("live policy `recipient-allowed` is not in the candidate")
    );
    assert!(
        text.stdout
            .contains("5 decision(s) (2 of them changed) were replayed with redacted arguments")
    );

    // The live pack as the candidate changes nothing: exit 0.
    let same = replay(&example_pack(), &data, &["--json"]);
    assert_eq!(same.code, 0, "{}\n{}", same.stdout, same.stderr);
    assert_eq!(same.json()["changed"], 0);
    assert_eq!(same.json()["replayed"], 12);

    // A range of decisions: from the read with a secret to the last one.
    let ranged = replay(
        &candidate,
        &data,
        &["--json", "--from", &read, "--to", &last],
    )
    .json();
    assert_eq!(ranged["replayed"], 4, "{ranged}");
    assert_eq!(
        counts(&ranged),
        owned(&[
            ("allow", "deny", 3),
            ("approval_required", "approval_required", 1),
        ]),
        "{ranged}"
    );
    // Another task's decisions only: none here.
    let other = replay(&candidate, &data, &["--json", "--task", "task-2"]);
    assert_eq!(other.code, 0);
    assert_eq!(other.json()["replayed"], 0);
    // Since an hour ago: everything; since tomorrow: nothing.
    assert_eq!(
        replay(&candidate, &data, &["--json", "--since", "1h"]).json()["replayed"],
        12
    );
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let none = replay(&candidate, &data, &["--json", "--since", &tomorrow]);
    assert_eq!(none.code, 0);
    assert_eq!(none.json()["replayed"], 0);
}

/// The journal entry of `decision`, from a replay against a candidate that
/// changes every decision (it forbids everything).
fn journaled(candidate: &Path, data: &Path, decision: &str) -> Value {
    let strict = candidate.with_file_name("forbid-all");
    copy_dir(&example_pack(), &strict);
    std::fs::write(
        strict.join("all.cedar"),
        "@id(\"nothing\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    let run = replay(&strict, data, &["--json", "--examples", "100"]);
    let report = run.json();
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["examples"].as_array().cloned().unwrap_or_default())
        .find(|e| e["decision_id"] == decision)
        .unwrap_or_else(|| panic!("no example of {decision}: {report}"))
}

fn example_requests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/requests")
}

#[test]
fn bad_input_exits_2_and_says_why() {
    let (dir, data, server) = serve("");
    decide(&server, &mailer(&json!({})), "allow");

    let missing = replay(&dir.path().join("nowhere"), &data, &[]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("nowhere"), "{}", missing.stderr);

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("bad.cedar"), "permit (principal").unwrap();
    let run = replay(&broken, &data, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("does not load"), "{}", run.stderr);

    let unknown = replay(&example_pack(), &data, &["--from", "no-such-decision"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("holds no decision `no-such-decision`"),
        "{}",
        unknown.stderr
    );

    let since = replay(&example_pack(), &data, &["--since", "7y"]);
    assert_eq!(since.code, 2);
    assert!(
        since.stderr.contains("unit must be s, m, h, d or w"),
        "{}",
        since.stderr
    );

    let no_ledger = replay(&example_pack(), &dir.path().join("empty"), &[]);
    assert_eq!(no_ledger.code, 2, "{}", no_ledger.stderr);

    let store = replay(&example_pack(), &data, &["--store", "mysql://x"]);
    assert_eq!(store.code, 2);
    assert!(store.stderr.contains("--store must be"), "{}", store.stderr);
}

#[test]
fn the_journal_is_pruned_by_age_and_the_receipts_stay() {
    let (dir, data, server) = serve("journal_max_age_seconds = 1\ncheckpoint_interval_ms = 100\n");
    for _ in 0..3 {
        decide(&server, &mailer(&json!({})), "allow");
    }
    util::poll_until(Duration::from_secs(30), "the journal's pruning", || {
        let report = replay(&example_pack(), &data, &["--json"]).json();
        if report["replayed"] == 0 {
            Ok(())
        } else {
            Err(report)
        }
    });
    // Every receipt is still there and the log verifies.
    let export = dir.path().join("log.jsonl");
    let out = mandate_cli(&[
        "receipts",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--output",
        export.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["receipts"], 3, "{}", out.stdout);
    let key = mandate_cli(&["keys", "show", "--data-dir", data.to_str().unwrap()]);
    let verified = mandate_cli(&[
        "receipts",
        "verify",
        export.to_str().unwrap(),
        "--key",
        key.stdout.trim(),
        "--json",
    ]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);
    drop(server);
}

#[test]
fn without_a_journal_nothing_is_kept_to_replay() {
    let (dir, data, server) = serve("journal = false\n");
    decide(&server, &mailer(&json!({})), "allow");
    let run = replay(&candidate(dir.path()), &data, &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["replayed"], 0);
}

/// Decisions the MCP gateway asked for under a task credential replay with
/// the context they were made in: the session tainted by an open-world
/// result, and the credential's grant, which no candidate widens.
#[test]
fn gateway_decisions_replay_with_their_session_and_grant() {
    require_peers();
    let gateway = mandate();
    let FilesystemSession { task, out, .. } =
        filesystem_session(&gateway, Sdk::Python, LISTING_OPEN_WORLD);
    let errors: Vec<bool> = steps(&out)
        .iter()
        .map(|s| s["isError"].as_bool().unwrap())
        .collect();
    assert_eq!(errors, [false, true, false, false, true, true], "{out}");

    // The candidate: no reads, no taint rule, and everything else
    // permitted, even what the credential does not grant.
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate");
    copy_dir(&util::mcp::peers_dir().join("policies"), &candidate);
    let tools = std::fs::read_to_string(candidate.join("tools.cedar")).unwrap();
    let at = tools.find("@id(\"untrusted-no-writes\")").unwrap();
    std::fs::write(
        candidate.join("tools.cedar"),
        format!(
            "{}\n@id(\"everything\")\npermit (principal, action, resource);\n\n\
             @id(\"no-reads\")\nforbid (principal, action, resource) when {{ resource.name == \"read_text_file\" }};\n",
            &tools[..at]
        ),
    )
    .unwrap();

    let run = replay(&candidate, &gateway.data, &["--json", "--task", &task.id]);
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["replayed"], 6, "{report}");
    assert_eq!(
        counts(&report),
        owned(&[
            ("allow", "allow", 2),
            ("allow", "deny", 1),
            ("deny", "allow", 1),
            ("deny", "deny", 2),
        ]),
        "the protected write stays denied, and so does the tool the credential does not grant: {report}"
    );
    let untainted = transition(&report, "deny", "allow").unwrap();
    assert_eq!(
        untainted["live_policies"],
        json!([{"policy": "untrusted-no-writes", "count": 1}])
    );
    let example = &untainted["examples"][0];
    assert_eq!(example["tool"], "fs/write_file");
    assert_eq!(example["task_id"], task.id.as_str());
    assert_eq!(example["request"]["principal"]["id"], AGENT);
    let labels = &example["request"]["context"]["session"]["summary"]["labels"];
    assert!(
        labels.as_array().unwrap().iter().any(|l| l == "untrusted"),
        "the session as it was when the call was decided: {example}"
    );

    // A candidate that keeps the taint rule but forbids the listing: as
    // recorded, the late write is still denied (its session was tainted
    // live); recomputed, the listing never ran, nothing tainted the
    // session, and the late write would have been allowed.
    let no_listing = dir.path().join("no-listing");
    copy_dir(&util::mcp::peers_dir().join("policies"), &no_listing);
    std::fs::write(
        no_listing.join("listing.cedar"),
        "@id(\"no-listing\")\nforbid (principal, action, resource) when { resource.name == \"list_directory\" };\n",
    )
    .unwrap();
    let recorded = replay(&no_listing, &gateway.data, &["--json", "--task", &task.id]).json();
    assert_eq!(
        counts(&recorded),
        owned(&[
            ("allow", "allow", 2),
            ("allow", "deny", 1),
            ("deny", "deny", 3)
        ]),
        "{recorded}"
    );
    assert_eq!(recorded["resimulated"], false);
    assert!(recorded.get("session_differs").is_none(), "{recorded}");

    let run = replay(
        &no_listing,
        &gateway.data,
        &["--json", "--task", &task.id, "--resimulate"],
    );
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    let resimulated = run.json();
    assert_eq!(resimulated["resimulated"], true);
    assert_eq!(
        counts(&resimulated),
        owned(&[
            ("allow", "allow", 2),
            ("allow", "deny", 1),
            ("deny", "allow", 1),
            ("deny", "deny", 2),
        ]),
        "{resimulated}"
    );
    assert_eq!(resimulated["session_differs"], 1, "{resimulated}");
    let differs = &resimulated["session_examples"][0];
    assert_eq!(differs["tool"], "fs/write_file", "{differs}");
    assert_eq!(differs["in_recorded_session"], "deny");
    assert_eq!(differs["in_resimulated_session"], "allow");
    assert_eq!(differs["recorded_labels"], json!(["untrusted"]));
    assert_eq!(differs["resimulated_labels"], json!([]));
    let text = replay(
        &no_listing,
        &gateway.data,
        &["--task", &task.id, "--resimulate"],
    );
    assert!(
        text.stdout
            .contains("sessions recomputed under the candidate: 1 decision(s)"),
        "{}",
        text.stdout
    );
}

/// `mandate policy test --record`: journaled decisions become cases in the
/// pack's tests, pinned to the live outcome or to the one they should have
/// had; the arguments are as the journal kept them.
#[test]
fn recorded_decisions_become_policy_tests() {
    let (dir, data, server) = serve(
        "[[journal_redact]]\ntool = \"mail/send_email\"\npath = \"body\"\naction = \"hash\"\n",
    );
    let allowed = decide(&server, &send_email("carol@example.com"), "allow");
    let denied = decide(&server, &send_email("mallory@evil.example"), "deny");
    let read = decide(&server, &mailer(&json!({})), "allow");

    let pack = dir.path().join("pack");
    copy_dir(&example_pack(), &pack);
    let data_dir = data.to_str().unwrap();
    let pack_dir = pack.to_str().unwrap();
    let run = mandate_cli(&[
        "policy",
        "test",
        pack_dir,
        "--data-dir",
        data_dir,
        "--record",
        &allowed,
        &denied,
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("added 2 case(s) to "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("expects allow: passes now"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("(redacted: body)"), "{}", run.stdout);
    let file = pack.join("tests/recorded.json");
    let suite: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0]["expect"], "allow");
    assert_eq!(cases[0]["policies"], json!(["declared-tools"]));
    assert_eq!(cases[1]["expect"], "deny");
    assert_eq!(cases[1]["policies"], json!(["recipient-allowed"]));
    let body = cases[1]["request"]["arguments"]["body"].as_str().unwrap();
    assert!(
        body.starts_with("sha256:"),
        "the body as the journal kept it: {body}"
    );
    assert!(cases[1]["name"].as_str().unwrap().contains(&denied));

    // The whole pack's tests, the recorded ones with them, pass.
    let all = mandate_cli(&["policy", "test", pack_dir]);
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);

    // A read that should not have been allowed: recorded as a deny, it
    // fails until the pack is changed.
    let surprise = mandate_cli(&[
        "policy",
        "test",
        pack_dir,
        "--data-dir",
        data_dir,
        "--record",
        &read,
        "--expect",
        "deny",
        "--json",
    ]);
    assert_eq!(surprise.code, 0, "{}", surprise.stderr);
    let added = surprise.json();
    assert_eq!(added["added"][0]["expect"], "deny", "{added}");
    assert_eq!(added["added"][0]["passes_now"], false, "{added}");
    assert_eq!(added["added"][0]["now"], "allow", "{added}");
    let recorded = file.to_str().unwrap();
    let failing = mandate_cli(&["policy", "test", pack_dir, "--tests", recorded]);
    assert_eq!(failing.code, 1, "{}", failing.stdout);
    std::fs::write(pack.join("reads.cedar"), NO_READS).unwrap();
    let fixed = mandate_cli(&["policy", "test", pack_dir, "--tests", recorded]);
    assert_eq!(fixed.code, 0, "{}\n{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed.stdout.contains("3 passed, 0 failed"),
        "{}",
        fixed.stdout
    );

    // Recording one again changes nothing; an unknown one is refused.
    let again = mandate_cli(&[
        "policy",
        "test",
        pack_dir,
        "--data-dir",
        data_dir,
        "--record",
        &allowed,
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("is recorded in"), "{}", again.stderr);
    let suite: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(suite["cases"].as_array().unwrap().len(), 3);
    let unknown = mandate_cli(&[
        "policy",
        "test",
        pack_dir,
        "--data-dir",
        data_dir,
        "--record",
        "no-such-decision",
    ]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("holds no decision"),
        "{}",
        unknown.stderr
    );
}
