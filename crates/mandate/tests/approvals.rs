//! Approvals over HTTP against the real `mandate serve` with the example
//! pack (whose `destructive-needs-approval` gate asks a person before
//! `mail/delete_email`): an approval releases exactly one call with exactly
//! the approved arguments, no answer before expiry is a deny, agents and
//! the person the task acts for cannot approve, a deny's reason reaches the
//! agent and the receipt, the webhook is signed, the requester may withdraw
//! a request it gave up on, and the CLI drives it all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use util::{Launch, Reply, Server, example_pack, merge, metric, openapi_validator};

const AGENT: &str = "spiffe://example.org/agent/mailer";
const PERSON: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const BOB_TOKEN: &str = "mnd_apr_bob-test-token-0123456789abcdef";
const ALICE_TOKEN: &str = "mnd_apr_alice-test-token-0123456789abcdef";
/// The person the task acts for again, spelt in capitals: still her.
const SHOUTING_ALICE: &str = "ALICE@Example.com";
const SHOUTING_ALICE_TOKEN: &str = "mnd_apr_shouting-alice-token-0123456789";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Config lines: the three approvers and `extra`.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let mut text = format!("{extra}\n");
    for (name, token) in [
        (BOB, BOB_TOKEN),
        (PERSON, ALICE_TOKEN),
        (SHOUTING_ALICE, SHOUTING_ALICE_TOKEN),
    ] {
        text.push_str(&format!(
            "\n[[approvers]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(token)
        ));
    }
    let path = dir.join("mandate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Gateway {
    server: Server,
    _dir: tempfile::TempDir,
}

fn gateway(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), extra);
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(example_pack())
        .start();
    Gateway { server, _dir: dir }
}

/// The example's destructive call: needs a person's approval.
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

fn with_approval(request: &Value, approval_id: &str) -> Value {
    let mut request = request.clone();
    request["approval_id"] = json!(approval_id);
    request
}

impl Gateway {
    /// Asks for `request` and returns the approval id it opened.
    fn ask(&self, request: &Value) -> (Value, String) {
        let reply = self.server.decide(request);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["decision"], "approval_required", "{answer}");
        assert_eq!(answer["policies"], json!(["destructive-needs-approval"]));
        let id = answer["approval_id"]
            .as_str()
            .expect("approval_id")
            .to_owned();
        (answer, id)
    }

    fn resolve(&self, id: &str, verb: &str, token: Option<&str>, reason: &str) -> Reply {
        self.server.call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/{verb}"),
            token,
            Some(&json!({ "reason": reason })),
        )
    }

    fn approval(&self, id: &str, token: Option<&str>, wait: &str) -> Value {
        let reply = self.server.call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}?wait={wait}"),
            token,
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    fn receipt(&self, id: &str) -> Value {
        let reply = self.server.get(&format!("/v1/receipts/{id}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["receipt"].clone()
    }

    fn search(&self, query: &str) -> Vec<Value> {
        let reply = self.server.call(
            reqwest::Method::GET,
            &format!("/v1/receipts?{query}"),
            Some(BOB_TOKEN),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["items"].as_array().unwrap().clone()
    }
}

#[test]
fn an_approval_releases_one_call_with_exactly_the_approved_arguments() {
    let gw = gateway("");
    let request = delete_email("msg-1");
    let (asked, id) = gw.ask(&request);
    let asked_id = asked["decision_id"].as_str().unwrap();

    // The receipt of the ask names the approval.
    let receipt = gw.receipt(asked_id);
    assert_eq!(receipt["decision"], "approval_required");
    assert_eq!(receipt["approval"]["id"], id.as_str());

    // Submitting again before anyone answered waits on the same approval.
    let again = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(again["decision"], "approval_required");
    assert_eq!(again["approval_id"], id.as_str());

    // The approver sees what is asked.
    let detail = gw.approval(&id, Some(BOB_TOKEN), "0s");
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["summary"]["tool"], "delete_email");
    assert_eq!(detail["summary"]["arguments"], json!({"id": "msg-1"}));
    assert_eq!(detail["summary"]["agent"], AGENT);
    assert_eq!(detail["summary"]["on_behalf_of"], PERSON);
    // No task credential: the agent and its person are only asserted.
    assert_eq!(detail["summary"]["verified"], false);
    // The example pack's policies read `to` and `cc` (recipients.cedar).
    assert_eq!(detail["summary"]["arguments_read"], json!(["cc", "to"]));
    assert_eq!(
        detail["summary"]["task"]["intent"],
        "answer customer questions about their orders"
    );
    assert_eq!(
        detail["summary"]["reasons"],
        json!(["the tool can destroy or overwrite data"])
    );
    // Without an approver token only the status shows.
    let status = gw.approval(&id, None, "0s");
    assert_eq!(status["status"], "pending");
    assert!(status.get("summary").is_none(), "{status}");

    // A waiting agent is woken by the approval.
    let waiter = {
        let url = gw.server.url(&format!("/v1/approvals/{id}?wait=30s"));
        std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
                .get(url)
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let approved = gw.resolve(&id, "approve", Some(BOB_TOKEN), "msg-1 is spam");
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["status"], "approved");
    let woken = waiter.join().unwrap();
    assert_eq!(woken["status"], "approved");
    assert_eq!(woken["resolved_by"], BOB);
    assert_eq!(woken["reason"], "msg-1 is spam");

    // Once approved it cannot be resolved again.
    gw.resolve(&id, "deny", Some(BOB_TOKEN), "changed my mind")
        .assert_error(409, "not_pending");

    // Other arguments under the same approval: denied, and the approval is
    // still there for the approved call.
    let other = gw
        .server
        .decide(&with_approval(&delete_email("msg-2"), &id))
        .json();
    assert_eq!(other["decision"], "deny");
    assert_eq!(other["policies"], json!(["mandate:approval"]));
    assert!(
        other["reasons"][0]
            .as_str()
            .unwrap()
            .contains("differs from the one that was approved"),
        "{other}"
    );

    // The approved call is released, naming the approver.
    let released = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(released["decision"], "allow", "{released}");
    assert_eq!(released["approver"], BOB);
    assert_eq!(released["approval_id"], id.as_str());
    let receipt = gw.receipt(released["decision_id"].as_str().unwrap());
    assert_eq!(receipt["kind"], "decision");
    assert_eq!(receipt["decision"], "allow");
    assert_eq!(receipt["approver"], BOB);
    assert_eq!(receipt["approval"]["id"], id.as_str());
    assert_eq!(receipt["approval"]["requested_by"], asked_id);

    // Single use: a replay of the same call is denied.
    let replay = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(replay["decision"], "deny");
    assert!(
        replay["reasons"][0]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{replay}"
    );
    let detail = gw.approval(&id, Some(BOB_TOKEN), "0s");
    assert_eq!(detail["status"], "used");
    assert_eq!(detail["released_by"], released["decision_id"]);

    // The resolution has its own receipt: the approval id, approver, reason.
    let resolution = gw.receipt(&id);
    assert_eq!(resolution["kind"], "approval");
    assert_eq!(resolution["decision"], "approved");
    assert_eq!(resolution["approver"], BOB);
    assert_eq!(resolution["reasons"], json!(["msg-1 is spam"]));
    assert_eq!(resolution["call"]["tool"], "delete_email");

    // Each step is counted.
    let metrics = gw.server.metrics();
    for (event, n) in [("opened", 1.0), ("approved", 1.0), ("released", 1.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!("mandate_approvals_total{{event=\"{event}\"}}")
            ),
            Some(n),
            "{event}"
        );
    }
}

#[test]
fn no_answer_before_expiry_is_a_deny() {
    let gw = gateway("approval_ttl_seconds = 1");
    let request = delete_email("msg-3");
    let (asked, id) = gw.ask(&request);
    let created = chrono::DateTime::parse_from_rfc3339(
        gw.approval(&id, None, "0s")["created_at"].as_str().unwrap(),
    )
    .unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(asked["approval_expires_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(expires - created, chrono::Duration::seconds(1));

    // The wait answers at the expiry with `expired`, not at its own end.
    let waited = gw.approval(&id, None, "20s");
    assert_eq!(waited["status"], "expired");

    // Too late to approve; and the waiting call is denied.
    gw.resolve(&id, "approve", Some(BOB_TOKEN), "sorry, late")
        .assert_error(409, "not_pending");
    let late = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(late["decision"], "deny");
    assert_eq!(late["policies"], json!(["mandate:approval"]));
    assert!(
        late["reasons"][0].as_str().unwrap().contains("expired"),
        "{late}"
    );

    // The expiry is in the log, with no approver.
    let expired = util::poll_until(Duration::from_secs(10), "the expiry receipt", || {
        let found = gw.search("kind=approval&decision=expired");
        found.first().cloned().ok_or(found)
    });
    assert_eq!(expired["receipt"]["decision_id"], id.as_str());
    assert!(expired["receipt"].get("approver").is_none());
    assert_eq!(gw.approval(&id, Some(BOB_TOKEN), "0s")["status"], "expired");
}

#[test]
fn a_gate_sets_its_own_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    util::copy_dir(&example_pack(), &policies);
    let gates = policies.join("approvals.cedar");
    let text = std::fs::read_to_string(&gates).unwrap().replacen(
        "@approval(\"the tool can destroy or overwrite data\")",
        "@approval(\"the tool can destroy or overwrite data\")\n@approval_expires(\"7m\")",
        1,
    );
    std::fs::write(&gates, text).unwrap();
    let config = config(dir.path(), "");
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(&policies)
        .start();
    let answer = server.decide(&delete_email("msg-4")).json();
    let id = answer["approval_id"].as_str().unwrap();
    let view = server.get(&format!("/v1/approvals/{id}")).json();
    let created =
        chrono::DateTime::parse_from_rfc3339(view["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::minutes(7));
}

#[test]
fn agents_and_the_person_the_task_acts_for_cannot_approve() {
    let gw = gateway("");
    let (_, id) = gw.ask(&delete_email("msg-5"));

    // No token, a made-up token, an agent's identity token or credential:
    // not approvers.
    gw.resolve(&id, "approve", None, "let me")
        .assert_error(401, "missing_token");
    for token in [
        "mnd_apr_guess",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWlsZXIifQ.c2ln",
        "En0KEwoEbWFpbBgDIgkKBwgKEgMYgAgSJAgAEiD",
    ] {
        let reply = gw.resolve(&id, "approve", Some(token), "let me");
        reply.assert_error(401, "invalid_token");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|h| h.contains("invalid_token")),
            "{reply:?}"
        );
    }
    // The person the task acts for: not without allow_self_approval, however
    // her name is spelt.
    let reply = gw.resolve(&id, "approve", Some(ALICE_TOKEN), "my own task");
    reply.assert_error(403, "self_approval");
    assert!(reply.body.contains("allow_self_approval"), "{}", reply.body);
    gw.resolve(&id, "approve", Some(SHOUTING_ALICE_TOKEN), "my own task")
        .assert_error(403, "self_approval");
    // A reason is required.
    gw.resolve(&id, "approve", Some(BOB_TOKEN), "  ")
        .assert_error(422, "reason_required");
    // A reason is a sentence, not a document: it is kept forever.
    let reply = gw.resolve(&id, "deny", Some(BOB_TOKEN), &"x".repeat(900 * 1024));
    reply.assert_error(422, "reason_too_long");
    assert!(
        reply.body.contains("`reason`") && reply.body.contains("4096"),
        "{}",
        reply.body
    );
    // None of it changed anything.
    assert_eq!(gw.approval(&id, None, "0s")["status"], "pending");
    assert!(gw.search("kind=approval").is_empty());

    // With self-approval allowed, the person may.
    let gw = gateway("allow_self_approval = true");
    let (_, id) = gw.ask(&delete_email("msg-6"));
    let reply = gw.resolve(&id, "approve", Some(ALICE_TOKEN), "my own task, checked");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["resolved_by"], PERSON);
}

#[test]
fn a_deny_with_a_reason_reaches_the_agent_and_the_receipt() {
    let gw = gateway("");
    let request = delete_email("msg-7");
    let (_, id) = gw.ask(&request);
    let reply = gw.resolve(
        &id,
        "deny",
        Some(BOB_TOKEN),
        "that mail is evidence; keep it",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status = gw.approval(&id, None, "5s");
    assert_eq!(status["status"], "denied");
    assert_eq!(status["reason"], "that mail is evidence; keep it");

    let answer = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(answer["decision"], "deny");
    assert!(
        answer["reasons"][0]
            .as_str()
            .unwrap()
            .contains("denied by bob@example.com: that mail is evidence; keep it"),
        "{answer}"
    );

    let found = gw.search("kind=approval&tool=mail/delete_email&decision=denied");
    assert_eq!(found.len(), 1, "{found:?}");
    // A bare tool name finds the same; another server's name finds nothing.
    let bare = gw.search("kind=approval&tool=delete_email&decision=denied");
    assert_eq!(bare.len(), 1, "{bare:?}");
    assert_eq!(bare[0]["receipt"], found[0]["receipt"]);
    assert!(gw.search("kind=approval&tool=web/delete_email").is_empty());
    let receipt = &found[0]["receipt"];
    assert_eq!(receipt["decision_id"], id.as_str());
    assert_eq!(receipt["approver"], BOB);
    assert_eq!(
        receipt["reasons"],
        json!(["that mail is evidence; keep it"])
    );
    // The search shows each receipt's proof status; a checkpoint covers it
    // after the next signing.
    let proved = util::poll_until(
        Duration::from_secs(10),
        "a checkpoint over the receipt",
        || {
            let found = gw.search("kind=approval");
            let status = found[0]["proof"]["status"].clone();
            if status == "verified" {
                Ok(found)
            } else {
                Err(status)
            }
        },
    );
    assert!(proved[0]["proof"]["checkpoint_size"].as_u64().unwrap() > 0);
}

/// The requester withdraws an approval nobody answered yet (its call was
/// cancelled): it leaves the queue, nobody can resolve it any more, the call
/// sent again is denied, and the receipt log records the withdrawal.
#[test]
fn a_requester_withdraws_an_approval_nobody_answered() {
    let gw = gateway("max_pending_approvals_per_agent = 1");
    let request = delete_email("msg-9");
    let (_, id) = gw.ask(&request);
    let withdraw = |id: &str, body: &Value| {
        gw.server.call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/withdraw"),
            None,
            Some(body),
        )
    };
    withdraw(&id, &json!({"reason": 7})).assert_error(422, "invalid_request");
    withdraw(&id, &json!({"reason": "x".repeat(4097)})).assert_error(422, "reason_too_long");
    withdraw("no-such-approval", &json!({})).assert_error(404, "not_found");
    // A withdrawal needs no body at all.
    gw.server
        .call(
            reqwest::Method::POST,
            "/v1/approvals/no-such-approval/withdraw",
            None,
            None,
        )
        .assert_error(404, "not_found");
    assert_eq!(gw.approval(&id, None, "0s")["status"], "pending");

    let reply = withdraw(&id, &json!({"reason": "the user cancelled the call"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let withdrawn = reply.json();
    assert_eq!(withdrawn["status"], "withdrawn");
    assert_eq!(withdrawn["reason"], "the user cancelled the call");
    assert_eq!(withdrawn["resolved_by"], Value::Null);

    let queue = gw.server.call(
        reqwest::Method::GET,
        "/v1/approvals?status=pending",
        Some(BOB_TOKEN),
        None,
    );
    assert_eq!(queue.json()["items"], json!([]));
    let listed = gw.server.call(
        reqwest::Method::GET,
        "/v1/approvals?status=withdrawn",
        Some(BOB_TOKEN),
        None,
    );
    assert_eq!(listed.json()["items"][0]["id"], id.as_str());
    withdraw(&id, &json!({})).assert_error(409, "not_pending");
    gw.resolve(&id, "approve", Some(BOB_TOKEN), "too late")
        .assert_error(409, "not_pending");

    let answer = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(
        answer["reasons"][0]
            .as_str()
            .unwrap()
            .contains("withdrawn by its requester"),
        "{answer}"
    );
    let receipt = gw.receipt(&id);
    assert_eq!(receipt["kind"], "approval");
    assert_eq!(receipt["decision"], "withdrawn");
    assert_eq!(receipt["reasons"], json!(["the user cancelled the call"]));
    assert_eq!(receipt["approver"], Value::Null);
    assert_eq!(
        metric(
            &gw.server.metrics(),
            r#"mandate_approvals_total{event="withdrawn"}"#
        ),
        Some(1.0)
    );
    // It still counts against the agent's limit (1 here) until it would
    // have expired: asking and withdrawing cannot flood the reviewers.
    let next = gw.server.decide(&delete_email("msg-10")).json();
    assert_eq!(next["decision"], "deny", "{next}");
    assert!(
        next["reasons"][0]
            .as_str()
            .unwrap()
            .contains("withdrawn before their expiry"),
        "{next}"
    );
}

/// A task of the root agent with a sub-agent whose first read of the inbox
/// steps up to a person: the task, both credentials, the read request and
/// the approval it opened.
struct SubAgentAsks {
    task_id: String,
    root: String,
    sub: String,
    read: Value,
    approval_id: String,
}

fn sub_agent_asks(gw: &util::tasks::Gateway) -> SubAgentAsks {
    use util::tasks::{ROOT_AGENT, SUB_AGENT, delegation_of, task_of};
    let task = mandate_core::api::StartTask {
        max_depth: 1,
        ..task_of("tidy the inbox", &["mail/read_inbox"], 600)
    };
    let started = gw.start_task_of(ROOT_AGENT, &task);
    let (task_id, root) = (started.task_id.to_string(), started.credential);
    let sub = gw
        .delegate_task(
            &task_id,
            &root,
            &delegation_of(SUB_AGENT, &["mail/read_inbox"]),
        )
        .credential;
    // The sub-agent's first use of a tool in the task steps up to a person.
    let read = json!({
        "principal": { "id": SUB_AGENT },
        "action": {
            "server": "mail", "tool": "read_inbox",
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        "arguments": { "folder": "inbox" }
    });
    let asked = gw.decide(&sub, &read).json();
    assert_eq!(asked["decision"], "approval_required", "{asked}");
    assert_eq!(asked["policies"], json!(["sub-agent-new-tool-step-up"]));
    let approval_id = asked["approval_id"].as_str().unwrap().to_owned();
    SubAgentAsks {
        task_id,
        root,
        sub,
        read,
        approval_id,
    }
}

/// An approval asked for under a task credential is withdrawn only with the
/// credential it was asked under: not the task's root, not another task's,
/// not another credential under the requester's name.
#[test]
fn under_a_task_credential_only_the_requester_withdraws() {
    use util::tasks::{ROOT_AGENT, SUB_AGENT, gateway_with, text};
    let gw = gateway_with("");
    let SubAgentAsks {
        task_id,
        root,
        approval_id: id,
        sub,
        ..
    } = sub_agent_asks(&gw);
    let other = gw
        .start(
            &gw.idp.token(ROOT_AGENT),
            &json!({"intent": "another", "tools": ["mail/read_inbox"], "ttl_seconds": 600}),
        )
        .json();
    let other = text(&other, "credential").to_owned();
    let withdraw = |token: Option<&str>| {
        gw.server.call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/withdraw"),
            token,
            Some(&json!({})),
        )
    };

    // The same agent's name on another credential of the task (the root
    // can delegate under any name) is not the credential that asked.
    let namesake = gw.delegate(
        &task_id,
        &root,
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
    );
    assert_eq!(namesake.status, 201, "{}", namesake.body);
    let namesake = text(&namesake.json(), "credential").to_owned();

    withdraw(None).assert_error(401, "missing_token");
    withdraw(Some(&namesake)).assert_error(403, "insufficient_scope");
    withdraw(Some("not-a-credential")).assert_error(401, "invalid_token");
    // The task's root agent did not ask; another task's credential is not
    // this task's.
    withdraw(Some(&root)).assert_error(403, "insufficient_scope");
    withdraw(Some(&other)).assert_error(403, "insufficient_scope");
    assert_eq!(
        gw.server.get(&format!("/v1/approvals/{id}")).json()["status"],
        "pending"
    );
    let reply = withdraw(Some(&sub));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "withdrawn");
    assert_eq!(
        reply.json()["reason"],
        "withdrawn by the requester",
        "the default reason"
    );
}

#[test]
fn approver_endpoints_need_an_approver_and_answer_as_documented() {
    // Without approvers, nobody can approve: the endpoints say why.
    let dir = tempfile::tempdir().unwrap();
    let bare = Launch::serve(&dir.path().join("data"))
        .arg("--policies")
        .arg(example_pack())
        .start();
    bare.call(reqwest::Method::GET, "/v1/approvals", Some(BOB_TOKEN), None)
        .assert_error(401, "no_approvers");

    let gw = gateway("");
    let (_, id) = gw.ask(&delete_email("msg-8"));
    let doc = gw.server.get("/v1/openapi.json").json();
    let check = |path: &str, method: &str, status: &str, body: &Value| {
        let schema = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]
            ["schema"];
        let validator = openapi_validator(&doc, schema);
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {errors:?}\n{body}"
        );
    };
    // A query that does not parse, and an approve or deny without a body,
    // answer in the API's error format, as the OpenAPI document says.
    for path in ["/v1/approvals", "/v1/receipts", "/v1/tasks"] {
        let reply = gw.server.call(
            reqwest::Method::GET,
            &format!("{path}?limit=-1"),
            Some(BOB_TOKEN),
            None,
        );
        reply.assert_error(400, "invalid_query");
        check(path, "get", "400", &reply.json());
    }
    gw.server
        .call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}?wait=1s&wait=2s"),
            None,
            None,
        )
        .assert_error(400, "invalid_query");
    for verb in ["approve", "deny"] {
        let reply = gw.server.call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/{verb}"),
            Some(BOB_TOKEN),
            None,
        );
        reply.assert_error(422, "reason_required");
        check(
            &format!("/v1/approvals/{{id}}/{verb}"),
            "post",
            "422",
            &reply.json(),
        );
    }
    let list = gw
        .server
        .call(reqwest::Method::GET, "/v1/approvals", Some(BOB_TOKEN), None);
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["items"][0]["id"], id.as_str());
    check("/v1/approvals", "get", "200", &list);
    check(
        "/v1/approvals/{id}",
        "get",
        "200",
        &gw.approval(&id, Some(BOB_TOKEN), "0s"),
    );
    check(
        "/v1/approvals/{id}",
        "get",
        "200",
        &gw.approval(&id, None, "0s"),
    );
    let me = gw
        .server
        .call(
            reqwest::Method::GET,
            "/v1/approvers/me",
            Some(BOB_TOKEN),
            None,
        )
        .json();
    assert_eq!(me["name"], BOB);
    check("/v1/approvers/me", "get", "200", &me);
    let receipts = json!({ "items": gw.search("") });
    check("/v1/receipts", "get", "200", &receipts);
    let denied = gw.resolve(&id, "deny", Some(BOB_TOKEN), "no").json();
    check("/v1/approvals/{id}/deny", "post", "200", &denied);
    let conflict = gw.resolve(&id, "approve", Some(BOB_TOKEN), "yes");
    conflict.assert_error(409, "not_pending");
    check(
        "/v1/approvals/{id}/approve",
        "post",
        "409",
        &conflict.json(),
    );

    // Bad input changes nothing and says what to fix.
    gw.server
        .call(
            reqwest::Method::GET,
            "/v1/approvals?status=maybe",
            Some(BOB_TOKEN),
            None,
        )
        .assert_error(422, "invalid_request");
    gw.server
        .call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}?wait=forever"),
            None,
            None,
        )
        .assert_error(422, "invalid_request");
    gw.server
        .call(
            reqwest::Method::GET,
            "/v1/approvals/no-such-approval",
            None,
            None,
        )
        .assert_error(404, "not_found");
    let (_, open) = gw.ask(&delete_email("msg-9"));
    let reply = gw.server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{open}/approve"),
        Some(BOB_TOKEN),
        Some(&json!({ "reason": "ok", "extra": true })),
    );
    reply.assert_error(422, "invalid_request");
    let reply = gw.server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{open}/approve"),
        Some(BOB_TOKEN),
        Some(&json!({ "reason": 5 })),
    );
    reply.assert_error(422, "invalid_request");
    assert_eq!(gw.approval(&open, None, "0s")["status"], "pending");
    // An approval id that does not exist denies the call.
    let answer = gw
        .server
        .decide(&with_approval(&delete_email("msg-9"), "no-such-approval"))
        .json();
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["policies"], json!(["mandate:approval"]));
}

/// Receives one HTTP request on `listener` and answers 204; returns its
/// headers (lower-cased names) and body.
fn receive_one(listener: &TcpListener) -> (Vec<(String, String)>, Vec<u8>) {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("POST "), "{line}");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        .unwrap();
    (headers, body)
}

#[test]
fn a_new_approval_is_announced_to_the_webhook_signed() {
    const SECRET: &str = "webhook-secret-0123456789";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/mandate", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let signed = config(dir.path(), &format!("approval_webhook_url = \"{url}\""));
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&signed)
        .arg("--policies")
        .arg(example_pack())
        .env("MANDATE_APPROVAL_WEBHOOK_SECRET", SECRET)
        .start();
    let answer = server.decide(&delete_email("msg-10")).json();
    let (headers, body) = receive_one(&listener);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
    };
    let timestamp = header("x-mandate-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header("x-mandate-signature"), format!("v1={expected}"));
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "approval.pending");
    assert_eq!(event["approval"]["id"], answer["approval_id"]);
    assert_eq!(event["approval"]["summary"]["tool"], "delete_email");
    // The timestamp is the send time, in seconds.
    let sent: i64 = timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent).abs() < 60);

    // A URL without a secret is refused at start, saying what to set.
    let dir = tempfile::tempdir().unwrap();
    let unsigned = config(dir.path(), &format!("approval_webhook_url = \"{url}\""));
    let (status, stderr) = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&unsigned)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("MANDATE_APPROVAL_WEBHOOK_SECRET"),
        "{stderr}"
    );
}

fn mandate(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MANDATE_") {
            cmd.env_remove(&key);
        }
    }
    if let Some(token) = token {
        cmd.env("MANDATE_APPROVER_TOKEN", token);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_cli_lists_shows_approves_and_denies() {
    let gw = gateway("");
    let server = gw.server.url("");
    let server = server.trim_end_matches('/');
    let (_, first) = gw.ask(&delete_email("msg-11"));
    let (_, second) = gw.ask(&delete_email("msg-12"));

    let (code, out, err) = mandate(&["approvals", "list", "--server", server], Some(BOB_TOKEN));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    assert!(out.contains("mail/delete_email"), "{out}");
    // Asked without a task credential: the agent's name is only asserted.
    assert!(out.contains(&format!("{AGENT} (unverified)")), "{out}");

    let (code, out, err) = mandate(
        &["approvals", "show", &first, "--server", server],
        Some(BOB_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status      pending"), "{out}");
    assert!(out.contains(r#"arguments   {"id":"msg-11"}"#), "{out}");
    assert!(out.contains("for alice@example.com"), "{out}");
    assert!(
        out.contains(
            "identity    NOT VERIFIED: asserted by the caller, not verified (no task credential)"
        ),
        "{out}"
    );
    // No argument of this call is one the policies read.
    assert!(!out.contains("checked "), "{out}");
    // Times are RFC 3339, in UTC.
    let created = out
        .lines()
        .find_map(|l| l.strip_prefix("created at  "))
        .unwrap_or_else(|| panic!("no creation time:\n{out}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
        "{out}"
    );

    // A call with an argument the policies read says which.
    let mut addressed = delete_email("msg-13");
    merge(
        &mut addressed,
        &json!({ "arguments": { "to": "carol@example.com" } }),
    );
    let (_, third) = gw.ask(&addressed);
    let (code, out, err) = mandate(
        &["approvals", "show", &third, "--server", server],
        Some(BOB_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("checked     to (the arguments the policies read)"),
        "{out}"
    );

    let (code, out, err) = mandate(
        &[
            "approvals",
            "approve",
            &first,
            "--reason",
            "spam",
            "--server",
            server,
            "--json",
        ],
        Some(BOB_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["resolved_by"], BOB);

    let (code, out, err) = mandate(
        &[
            "approvals",
            "deny",
            &second,
            "--reason",
            "keep it",
            "--server",
            server,
        ],
        Some(BOB_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("by bob@example.com"), "{out}");

    // Refusals: exit 1 with the server's code; no token: exit 2.
    let (code, _, err) = mandate(
        &[
            "approvals",
            "approve",
            &second,
            "--reason",
            "x",
            "--server",
            server,
        ],
        Some(BOB_TOKEN),
    );
    assert_eq!(code, 1);
    assert!(err.contains("not_pending"), "{err}");
    let (code, _, err) = mandate(
        &[
            "approvals",
            "approve",
            &second,
            "--reason",
            "x",
            "--server",
            server,
        ],
        Some(ALICE_TOKEN),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("not_pending") || err.contains("self_approval"),
        "{err}"
    );
    let (code, _, err) = mandate(&["approvals", "list", "--server", server], None);
    assert_eq!(code, 2);
    assert!(err.contains("MANDATE_APPROVER_TOKEN"), "{err}");

    // `approvals token` makes a token the server accepts once configured.
    let (code, out, err) = mandate(
        &[
            "approvals",
            "token",
            "--name",
            "carol@example.com",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let token = made["token"].as_str().unwrap();
    assert!(token.starts_with("mnd_apr_"));
    assert_eq!(made["token_sha256"], sha256_hex(token));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.toml");
    let (code, toml, _) = mandate(&["approvals", "token", "--name", "carol@example.com"], None);
    assert_eq!(code, 0);
    std::fs::write(&path, &toml).unwrap();
    let token = util::printed_token(&toml);
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&path)
        .start();
    let me = server
        .call(reqwest::Method::GET, "/v1/approvers/me", Some(&token), None)
        .json();
    assert_eq!(me["name"], "carol@example.com");
}

/// The README's approver step: the example config, an approver whose
/// token goes to a file and whose entry is appended to the config, and a
/// server started with it that knows the approver by that token.
#[test]
fn an_approver_made_with_out_is_appended_to_the_example_config_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mandate.toml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mandate.toml");
    std::fs::copy(&example, &config).unwrap();
    let token_file = dir.path().join("me.token");
    let token_arg = token_file.display().to_string();
    let (code, entry, err) = mandate(
        &[
            "approvals",
            "token",
            "--name",
            "you@example.com",
            "--out",
            &token_arg,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert!(token.starts_with("mnd_apr_"), "{token}");
    assert!(!entry.contains(token), "the token is not printed: {entry}");
    assert!(entry.contains(&sha256_hex(token)), "{entry}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `>> mandate.toml`
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&entry);
    std::fs::write(&config, text).unwrap();

    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .start();
    let me = server
        .call(reqwest::Method::GET, "/v1/approvers/me", Some(token), None)
        .json();
    assert_eq!(me["name"], "you@example.com");

    // A token file is never overwritten.
    let (code, out, err) = mandate(
        &[
            "approvals",
            "token",
            "--name",
            "x@example.com",
            "--out",
            &token_arg,
        ],
        None,
    );
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
}

#[test]
fn under_a_task_credential_an_approval_binds_the_credential_and_an_approver_can_end_the_task() {
    use util::tasks::{HUMAN, ROOT_AGENT, SUB_AGENT, gateway_with};
    let extra = format!(
        "[[approvers]]\nname = \"{BOB}\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(BOB_TOKEN)
    );
    let gw = gateway_with(&extra);
    let SubAgentAsks {
        task_id,
        sub,
        read,
        approval_id: id,
        ..
    } = sub_agent_asks(&gw);

    let resolve = |token: &str, reason: &str| {
        gw.server.call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(token),
            Some(&json!({ "reason": reason })),
        )
    };
    // The sub-agent's own credential is no approver token.
    resolve(&sub, "I may").assert_error(401, "invalid_token");
    let detail = gw
        .server
        .call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(BOB_TOKEN),
            None,
        )
        .json();
    assert_eq!(detail["summary"]["on_behalf_of"], HUMAN);
    assert_eq!(detail["summary"]["verified"], true);
    assert_eq!(
        detail["summary"]["chain"],
        json!([{"agent": ROOT_AGENT, "depth": 0}, {"agent": SUB_AGENT, "depth": 1}])
    );
    assert_eq!(detail["task_id"], task_id.as_str());
    let approved = resolve(BOB_TOKEN, "reading is fine");
    assert_eq!(approved.status, 200, "{}", approved.body);

    // Without the credential the same call, naming the task, releases
    // nothing: the approval was given to the credential's delegation chain.
    let mut forged = read.clone();
    forged["approval_id"] = json!(id);
    forged["principal"]["on_behalf_of"] = json!(HUMAN);
    forged["context"] = json!({ "task": {
        "id": task_id,
        "tools": ["read_inbox"],
        "chain": [{"agent": ROOT_AGENT, "depth": 0}, {"agent": SUB_AGENT, "depth": 1}]
    } });
    let refused = gw.server.decide(&forged).json();
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert!(
        refused["reasons"][0]
            .as_str()
            .unwrap()
            .contains("differs from the one that was approved"),
        "{refused}"
    );

    // Released under the same credential; the history shows both steps.
    let mut again = read.clone();
    again["approval_id"] = json!(id);
    let released = gw.decide(&sub, &again).json();
    assert_eq!(released["decision"], "allow", "{released}");
    assert_eq!(released["approver"], BOB);
    let receipt = gw.receipt(released["decision_id"].as_str().unwrap());
    assert_eq!(receipt["approver"], BOB);
    assert_eq!(receipt["delegation"][1]["agent"], SUB_AGENT);

    // An approver sees the task in the list and ends it from the console.
    let tasks = gw
        .server
        .call(reqwest::Method::GET, "/v1/tasks", Some(BOB_TOKEN), None)
        .json();
    let listed = &tasks["items"][0];
    assert_eq!(listed["id"], task_id.as_str());
    assert_eq!(listed["credentials"].as_array().unwrap().len(), 2);
    let decisions: Vec<&str> = listed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["approval_required", "allow"]);
    gw.server
        .call(reqwest::Method::GET, "/v1/tasks", Some(&sub), None)
        .assert_error(401, "invalid_token");
    let ended = gw.server.call(
        reqwest::Method::DELETE,
        &format!("/v1/tasks/{task_id}"),
        Some(BOB_TOKEN),
        None,
    );
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.json()["revoked"].as_array().unwrap().len(), 2);
    gw.decide(&sub, &read).assert_error(401, "invalid_token");
    let active = gw
        .server
        .call(reqwest::Method::GET, "/v1/tasks", Some(BOB_TOKEN), None)
        .json();
    assert!(active["items"].as_array().unwrap().is_empty(), "{active}");
}

#[test]
fn approvers_are_people_and_ttls_are_bounded() {
    for (line, message) in [
        (
            "[[approvers]]\nname = \"spiffe://example.org/agent/mailer\"\ntoken_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
            "is a SPIFFE ID",
        ),
        (
            "approval_ttl_seconds = 10000000000000",
            "approval_ttl_seconds",
        ),
        (
            "max_pending_approvals_per_agent = 0",
            "max_pending_approvals_per_agent",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mandate.toml");
        std::fs::write(&path, line).unwrap();
        let (status, stderr) = Launch::serve(&dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(message), "{line}: {stderr}");
    }
}

#[test]
fn an_approval_covers_only_the_gates_the_person_saw_and_agents_cannot_flood_the_queue() {
    let gw = gateway("max_pending_approvals_per_agent = 2");
    let request = delete_email("msg-20");
    let (_, id) = gw.ask(&request);
    let approved = gw.resolve(&id, "approve", Some(BOB_TOKEN), "fine");
    assert_eq!(approved.status, 200, "{}", approved.body);

    // Untrusted content entered the session since: another gate asks too.
    // The approval does not cover it; a new approval opens, the old one is
    // left as it was.
    let mut tainted = with_approval(&request, &id);
    tainted["context"]["session"] = json!({ "labels": ["untrusted"] });
    let answer = gw.server.decide(&tainted).json();
    assert_eq!(answer["decision"], "approval_required", "{answer}");
    assert_ne!(answer["approval_id"], id.as_str());
    assert!(
        answer["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("untrusted-content-step-up")),
        "{answer}"
    );
    assert_eq!(gw.approval(&id, None, "0s")["status"], "approved");
    // The call as approved is still released.
    let released = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(released["decision"], "allow", "{released}");

    // One new approval is pending; with a second, the agent is at its cap
    // and a third call that needs a person is denied.
    gw.ask(&delete_email("msg-21"));
    let flooded = gw.server.decide(&delete_email("msg-22")).json();
    assert_eq!(flooded["decision"], "deny", "{flooded}");
    assert_eq!(flooded["policies"], json!(["mandate:approval"]));
    assert!(
        flooded["reasons"][0]
            .as_str()
            .unwrap()
            .contains("max_pending_approvals_per_agent"),
        "{flooded}"
    );
}

/// Identical requests while one waits for a person put one card before the
/// approvers, not one per retry: each repeat is answered with the approval
/// already asked, and it releases one call.
#[test]
fn a_repeated_request_waits_on_the_approval_already_asked() {
    let gw = gateway("max_pending_approvals_per_agent = 2");
    let request = delete_email("msg-40");
    let (first, id) = gw.ask(&request);
    // Three retries: the same approval, and none counts against the cap.
    for _ in 0..3 {
        let (answer, again) = gw.ask(&request);
        assert_eq!(again, id, "{answer}");
        assert_eq!(answer["approval_expires_at"], first["approval_expires_at"]);
        let reasons = answer["reasons"].to_string();
        assert!(
            reasons.contains(&format!("already waits for approval `{id}`")),
            "{answer}"
        );
        // The repeat's receipt names the approval and the decision that
        // asked for it.
        let receipt = gw.receipt(answer["decision_id"].as_str().unwrap());
        assert_eq!(receipt["approval"]["id"], id.as_str(), "{receipt}");
        assert_eq!(receipt["approval"]["requested_by"], first["decision_id"]);
    }
    let queue = gw
        .server
        .call(
            reqwest::Method::GET,
            "/v1/approvals?status=pending",
            Some(BOB_TOKEN),
            None,
        )
        .json();
    let ids: Vec<&str> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{queue}");

    // Other arguments are another request: another approval.
    let (_, other) = gw.ask(&delete_email("msg-41"));
    assert_ne!(other, id);

    // Approved once, the approval releases one call; once used it is no
    // longer pending, so the next identical request asks anew.
    let approved = gw.resolve(&id, "approve", Some(BOB_TOKEN), "fine");
    assert_eq!(approved.status, 200, "{}", approved.body);
    let released = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(released["decision"], "allow", "{released}");
    let used = gw.server.decide(&with_approval(&request, &id)).json();
    assert_eq!(used["decision"], "deny", "{used}");
    let (_, anew) = gw.ask(&request);
    assert_ne!(anew, id);
    assert_ne!(anew, other);

    let metrics = gw.server.metrics();
    for (event, n) in [("opened", 3.0), ("joined", 3.0), ("released", 1.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!("mandate_approvals_total{{event=\"{event}\"}}")
            ),
            Some(n),
            "{event}"
        );
    }
}

/// A resolution whose receipt was written but whose status was not (a
/// failed state write) is adopted from the log when the approval is
/// answered again: no second receipt, and the first answer stands. For an
/// approver's approval and for the requester's withdrawal alike.
#[test]
fn a_resolution_in_the_log_but_not_in_the_state_is_adopted_not_written_twice() {
    adopted_from_the_log(
        ("approve", Some(BOB_TOKEN), "fine"),
        json!({"status": "approved", "resolved_by": BOB, "reason": "fine"}),
    );
    adopted_from_the_log(
        ("withdraw", None, "gave up"),
        json!({"status": "withdrawn", "resolved_by": null, "reason": "gave up"}),
    );
}

/// Resolves a new approval with `(verb, token, reason)`, loses its status
/// write, and checks that a later deny adopts the logged resolution,
/// whose status fields are `expected`.
fn adopted_from_the_log(first: (&str, Option<&str>, &str), expected: Value) {
    let (verb, token, reason) = first;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), "");
    let launch = || {
        Launch::serve(&data)
            .arg("--config")
            .arg(&config)
            .arg("--policies")
            .arg(example_pack())
            .start()
    };
    let server = launch();
    let answer = server.decide(&delete_email("msg-30")).json();
    let id = answer["approval_id"].as_str().unwrap().to_owned();
    let reply = server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{id}/{verb}"),
        token,
        Some(&json!({ "reason": reason })),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.terminate();

    // As if the status write had failed after the receipt was written.
    rusqlite::Connection::open(data.join("state.db"))
        .unwrap()
        .execute(
            "UPDATE approvals SET status = 'pending', resolved_at = NULL, resolved_by = NULL, reason = NULL WHERE id = ?1",
            [&id],
        )
        .unwrap();

    let server = launch();
    let reply = server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{id}/deny"),
        Some(BOB_TOKEN),
        Some(&json!({ "reason": "changed my mind" })),
    );
    reply.assert_error(409, "not_pending");
    let already = format!("already {}", expected["status"].as_str().unwrap());
    assert!(reply.body.contains(&already), "{}", reply.body);
    let view = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(BOB_TOKEN),
            None,
        )
        .json();
    for field in ["status", "resolved_by", "reason"] {
        assert_eq!(view[field], expected[field], "{field}: {view}");
    }
    // The ledger took no second receipt for the approval and still works.
    let health = server.health();
    assert_eq!(health["status"], "ok", "{health}");
    let next = server.decide(&delete_email("msg-31"));
    assert_eq!(next.status, 200, "{}", next.body);
}

/// Ending a task withdraws its pending approvals: they leave the queue with
/// a receipt saying the task ended, and an approver can no longer approve
/// them.
#[test]
fn ending_a_task_withdraws_its_pending_approvals() {
    use util::tasks::gateway_with;
    let extra = format!(
        "[[approvers]]\nname = \"{BOB}\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(BOB_TOKEN)
    );
    let gw = gateway_with(&extra);
    let SubAgentAsks {
        task_id,
        approval_id: id,
        ..
    } = sub_agent_asks(&gw);
    let pending = |gw: &util::tasks::Gateway| {
        gw.server
            .call(
                reqwest::Method::GET,
                "/v1/approvals?status=pending",
                Some(BOB_TOKEN),
                None,
            )
            .json()["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(pending(&gw), 1);

    let ended = gw.server.call(
        reqwest::Method::DELETE,
        &format!("/v1/tasks/{task_id}"),
        Some(BOB_TOKEN),
        None,
    );
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(pending(&gw), 0);
    let detail = gw
        .server
        .call(
            reqwest::Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(BOB_TOKEN),
            None,
        )
        .json();
    assert_eq!(detail["status"], "withdrawn", "{detail}");
    assert!(
        detail["reason"]
            .as_str()
            .unwrap()
            .contains("the task ended"),
        "{detail}"
    );
    let approve = gw.server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{id}/approve"),
        Some(BOB_TOKEN),
        Some(&json!({ "reason": "fine" })),
    );
    approve.assert_error(409, "not_pending");
    let receipt = gw.receipt(&id);
    assert_eq!(receipt["kind"], "approval");
    assert_eq!(receipt["decision"], "withdrawn");
}

/// Whoever reaches the port cannot fill a task's approval queue by writing
/// its agent's name into requests without a credential: calls under a task
/// credential count against their task, not against a name in a body.
#[test]
fn a_claimed_name_cannot_fill_a_tasks_approval_queue() {
    use util::tasks::{SUB_AGENT, gateway_with};
    let gw = gateway_with("max_pending_approvals_per_agent = 1");
    // Someone without a credential asks in the sub-agent's name first.
    let mut squatter = delete_email("msg-1");
    squatter["principal"]["id"] = json!(SUB_AGENT);
    let squatted = gw.server.decide(&squatter).json();
    assert_eq!(squatted["decision"], "approval_required", "{squatted}");
    let mut second = delete_email("msg-2");
    second["principal"]["id"] = json!(SUB_AGENT);
    let refused = gw.server.decide(&second).json();
    assert_eq!(refused["decision"], "deny", "{refused}");
    // The sub-agent's own call, under its task's credential, still asks.
    let SubAgentAsks { approval_id, .. } = sub_agent_asks(&gw);
    assert!(!approval_id.is_empty());
}
