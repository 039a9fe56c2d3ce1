//! Decisions under task credentials, over HTTP against the real `mandate
//! serve` with the example pack: the whole story of a task (an agent
//! authenticates, starts a task, delegates, its sub-agent oversteps, a
//! result brings untrusted content that steps up a later mail, the task
//! ends and its credentials are useless), what a call under a credential
//! may and may not say about itself, and how results are reported.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use serde_json::{Value, json};
use util::tasks::{
    Gateway, HUMAN, ROOT_AGENT, SUB_AGENT, assert_insufficient_scope, assert_invalid_token,
    delegation_of, gateway, text,
};
use util::{Launch, Reply};

const INTENT: &str = "answer customer questions about their orders";

/// The task of the story: read mail, send mail, fetch web pages; mail goes
/// to carol only; one delegation hop.
fn task() -> Value {
    json!({
        "intent": INTENT,
        "tools": ["mail/read_inbox", "mail/send_email", "web/fetch"],
        "labels": ["customer"],
        "params": { "allowed_recipients": ["carol@example.com"] },
        "ttl_seconds": 600,
        "max_depth": 1
    })
}

/// A call by `agent` as an integration sends it under a credential: no
/// task, no session, no person (Mandate fills them).
fn call(agent: &str, server: &str, tool: &str, annotations: &Value, arguments: &Value) -> Value {
    json!({
        "principal": { "id": agent },
        "action": { "server": server, "tool": tool, "annotations": annotations },
        "arguments": arguments,
    })
}

/// `mail/read_inbox`: read-only, closed world.
fn read_inbox(agent: &str) -> Value {
    call(
        agent,
        "mail",
        "read_inbox",
        &json!({ "readOnlyHint": true, "openWorldHint": false }),
        &json!({ "folder": "inbox" }),
    )
}

/// `mail/send_email` to `to`: outbound (open world), not destructive.
fn send_email(agent: &str, to: &str) -> Value {
    call(
        agent,
        "mail",
        "send_email",
        &json!({ "readOnlyHint": false, "destructiveHint": false, "openWorldHint": true }),
        &json!({ "to": to, "subject": "Your order", "body": "It shipped." }),
    )
}

/// `web/fetch`: read-only, open world by the MCP default.
fn fetch(agent: &str) -> Value {
    call(
        agent,
        "web",
        "fetch",
        &json!({ "readOnlyHint": true }),
        &json!({ "url": "https://shop.example.com/orders/42" }),
    )
}

/// Asserts a decision with its outcome and determining policies; returns
/// its id.
fn assert_decision(reply: &Reply, decision: &str, policies: &[&str]) -> String {
    let v = reply.decision();
    assert_eq!(v["decision"], decision, "{v}");
    assert_eq!(v["policies"], json!(policies), "{v}");
    text(&v, "decision_id").to_owned()
}

/// Starts the story's task for the root agent: (task id, root credential).
fn start(gw: &Gateway, body: &Value) -> (String, String) {
    let reply = gw.start(&gw.idp.token(ROOT_AGENT), body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let started = reply.json();
    (
        text(&started, "task_id").to_owned(),
        text(&started, "credential").to_owned(),
    )
}

/// Delegates `tools` of task `id` to the sub-agent: its credential.
fn delegate(gw: &Gateway, id: &str, credential: &str, tools: &[&str]) -> String {
    gw.delegate_task(id, credential, &delegation_of(SUB_AGENT, tools))
        .credential
}

#[test]
fn the_whole_story_of_a_task() {
    let gw = gateway();

    // The agent authenticates with its JWT and starts a task.
    let (task_id, root) = start(&gw, &task());

    // Under its credential the agent reads the inbox, and mails carol: the
    // task's tools and recipients come from the task, not from the request.
    let read = assert_decision(
        &gw.decide(&root, &read_inbox(ROOT_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let mailed = assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "carol@example.com")),
        "allow",
        &["declared-tools"],
    );
    assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "mallory@evil.example")),
        "deny",
        &["recipient-allowed"],
    );

    // It delegates to a sub-agent with fewer tools: no mail sending.
    let sub = delegate(&gw, &task_id, &root, &["mail/read_inbox", "web/fetch"]);

    // The sub-agent's mail is outside its credential: denied before any
    // policy, though the task (and the pack) would allow it.
    let reply = gw.decide(&sub, &send_email(SUB_AGENT, "carol@example.com"));
    let overstep = assert_decision(&reply, "deny", &["mandate:credential-scope"]);
    assert_eq!(
        reply.json()["reasons"],
        json!(["the task credential does not grant the tool `mail/send_email`"])
    );

    // The sub-agent reads the inbox (a tool the task used already), and
    // reports that the mail it read is untrusted content.
    let sub_read = assert_decision(
        &gw.decide(&sub, &read_inbox(SUB_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let reply = gw.report(
        &sub_read,
        &sub,
        &json!({ "status": "ok", "labels": ["untrusted"] }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entry = reply.json();
    assert_eq!(entry["decision_id"], sub_read.as_str());
    assert_eq!(entry["agent"], SUB_AGENT);
    assert_eq!(entry["result"]["status"], "ok");
    assert_eq!(entry["result"]["labels"], json!(["untrusted"]));

    // The same mail to carol that was allowed now waits for a person: the
    // untrusted content in the session is the only change.
    let stepped_up = assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "carol@example.com")),
        "approval_required",
        &["untrusted-content-step-up"],
    );

    // The task shows its history in order, each entry with its annotations.
    let reply = gw.show(&task_id, &root);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let history = reply.json()["history"].as_array().unwrap().clone();
    let summary: Vec<(String, String, String)> = history
        .iter()
        .map(|h| {
            (
                text(h, "agent").to_owned(),
                format!("{}/{}", text(h, "server"), text(h, "tool")),
                text(h, "decision").to_owned(),
            )
        })
        .collect();
    let expected = [
        (ROOT_AGENT, "mail/read_inbox", "allow"),
        (ROOT_AGENT, "mail/send_email", "allow"),
        (ROOT_AGENT, "mail/send_email", "deny"),
        (SUB_AGENT, "mail/send_email", "deny"),
        (SUB_AGENT, "mail/read_inbox", "allow"),
        (ROOT_AGENT, "mail/send_email", "approval_required"),
    ]
    .map(|(a, t, d)| (a.to_owned(), t.to_owned(), d.to_owned()));
    assert_eq!(summary, expected);
    assert_eq!(history[0]["decision_id"], read.as_str());
    assert_eq!(
        history[0]["annotations"],
        json!({ "readOnlyHint": true, "openWorldHint": false })
    );
    assert_eq!(history[4]["result"]["labels"], json!(["untrusted"]));
    assert!(history[5]["result"].is_null());

    // Every receipt names the task and the chain of the credential used.
    let intent_sha256 = mandate_ledger::digest_bytes(INTENT.as_bytes());
    for (decision_id, chain, principal) in [
        (
            &mailed,
            json!([{ "agent": ROOT_AGENT, "depth": 0 }]),
            ROOT_AGENT,
        ),
        (
            &overstep,
            json!([{ "agent": ROOT_AGENT, "depth": 0 }, { "agent": SUB_AGENT, "depth": 1 }]),
            SUB_AGENT,
        ),
        (
            &sub_read,
            json!([{ "agent": ROOT_AGENT, "depth": 0 }, { "agent": SUB_AGENT, "depth": 1 }]),
            SUB_AGENT,
        ),
        (
            &stepped_up,
            json!([{ "agent": ROOT_AGENT, "depth": 0 }]),
            ROOT_AGENT,
        ),
    ] {
        let receipt = gw.receipt(decision_id);
        assert_eq!(receipt["delegation"], chain, "{receipt}");
        assert_eq!(
            receipt["task"],
            json!({ "id": task_id, "intent_sha256": intent_sha256 }),
            "{receipt}"
        );
        assert_eq!(
            receipt["principal"],
            json!({ "id": principal, "on_behalf_of": HUMAN }),
            "{receipt}"
        );
    }
    let receipt = gw.receipt(&overstep);
    assert_eq!(receipt["decision"], "deny");
    assert_eq!(receipt["policies"], json!(["mandate:credential-scope"]));

    // Ending the task makes both credentials useless.
    let reply = gw.end(&task_id, &root);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let history_rows = gw.rows("history");
    for (credential, request) in [
        (&root, read_inbox(ROOT_AGENT)),
        (&sub, read_inbox(SUB_AGENT)),
    ] {
        assert_invalid_token(&gw.decide(credential, &request), "revoked");
    }
    assert_invalid_token(
        &gw.report(&stepped_up, &root, &json!({ "status": "ok" })),
        "revoked",
    );
    assert_eq!(gw.rows("history"), history_rows, "no trace of a refusal");
}

#[test]
fn an_open_world_tools_result_is_untrusted_whatever_the_report_says() {
    let gw = gateway();
    let (_, root) = start(&gw, &task());

    // A closed-world tool's result reported without labels brings none: the
    // next mail is still allowed.
    let read = assert_decision(
        &gw.decide(&root, &read_inbox(ROOT_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let reply = gw.report(&read, &root, &json!({ "status": "ok" }));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["labels"], json!([]));
    assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "carol@example.com")),
        "allow",
        &["declared-tools"],
    );

    // A fetch from the web (open world by default) brings untrusted content,
    // even if the integration reports no label, and even if the call failed.
    let fetched = assert_decision(
        &gw.decide(&root, &fetch(ROOT_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let reply = gw.report(
        &fetched,
        &root,
        &json!({ "status": "error", "labels": ["customer"] }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["status"], "error");
    assert_eq!(
        reply.json()["result"]["labels"],
        json!(["customer", "untrusted"])
    );
    assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "carol@example.com")),
        "approval_required",
        &["untrusted-content-step-up"],
    );
}

#[test]
fn results_are_reported_once_for_allowed_calls_of_the_same_task() {
    let gw = gateway();
    let (task_id, root) = start(&gw, &task());
    let (_, other) = start(&gw, &task());
    let sub = delegate(&gw, &task_id, &root, &["mail/read_inbox"]);

    // A sub-agent's first use of a tool the task has not used waits for a
    // person (the example pack's `sub-agent-new-tool-step-up`): the session
    // is the task's, across hops.
    assert_decision(
        &gw.decide(&sub, &read_inbox(SUB_AGENT)),
        "approval_required",
        &["sub-agent-new-tool-step-up"],
    );
    assert_decision(
        &gw.decide(&root, &read_inbox(ROOT_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let allowed = assert_decision(
        &gw.decide(&sub, &read_inbox(SUB_AGENT)),
        "allow",
        &["declared-tools"],
    );
    let denied = assert_decision(
        &gw.decide(&root, &send_email(ROOT_AGENT, "mallory@evil.example")),
        "deny",
        &["recipient-allowed"],
    );
    let ok = json!({ "status": "ok", "labels": ["confidential"] });

    // Only a credential of the decision's task; not an identity token.
    assert_insufficient_scope(&gw.report(&allowed, &other, &ok), "another task");
    assert_invalid_token(
        &gw.report(&allowed, &gw.idp.token(ROOT_AGENT), &ok),
        "not an identity token",
    );
    gw.server
        .call(
            reqwest::Method::POST,
            &format!("/v1/decisions/{allowed}/result"),
            None,
            Some(&ok),
        )
        .assert_error(401, "missing_token");
    // Only valid bodies.
    for bad in [
        json!({ "status": "done" }),
        json!({ "labels": ["untrusted"] }),
        json!({ "status": "ok", "labels": [""] }),
        json!({ "status": "ok", "extra": 1 }),
    ] {
        gw.report(&allowed, &root, &bad)
            .assert_error(422, "invalid_request");
    }
    // Only decisions in a task's history, and only allowed ones.
    gw.report("01a2088f-0000-7000-8000-000000000000", &root, &ok)
        .assert_error(404, "decision_not_found");
    // Text that cannot be a decision id (over 128 bytes) names none either.
    gw.report(&"d".repeat(129), &root, &ok)
        .assert_error(404, "decision_not_found");
    let without_task = gw.server.decide(&util::mailer(&json!({}))).decision();
    gw.report(text(&without_task, "decision_id"), &root, &ok)
        .assert_error(404, "decision_not_found");
    gw.report(&denied, &root, &ok)
        .assert_error(409, "decision_not_allowed");

    // Any hop of the task may report it, once.
    let reply = gw.report(&allowed, &root, &ok);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["labels"], json!(["confidential"]));
    gw.report(&allowed, &sub, &json!({ "status": "error" }))
        .assert_error(409, "result_already_reported");
    let history = gw.show(&task_id, &root).json()["history"].clone();
    assert_eq!(history[2]["decision_id"], allowed.as_str());
    assert_eq!(history[2]["result"]["status"], "ok");
}

#[test]
fn a_call_under_a_credential_cannot_speak_for_its_task() {
    let gw = gateway();
    let (task_id, root) = start(&gw, &task());
    let history_rows = gw.rows("history");
    let receipts = gw.server.health()["receipts"]["size"].clone();

    // Only the credential's holder, for the task's person.
    let mut impostor = read_inbox(SUB_AGENT);
    assert_insufficient_scope(
        &gw.decide(&root, &impostor),
        &format!("the credential is held by `{ROOT_AGENT}`"),
    );
    impostor = read_inbox(ROOT_AGENT);
    impostor["principal"]["on_behalf_of"] = json!("mallory@evil.example");
    assert_insufficient_scope(&gw.decide(&root, &impostor), &format!("acts for `{HUMAN}`"));

    // The task and the session are Mandate's to fill.
    for (field, value) in [
        ("task", json!({ "tools": ["send_email"] })),
        (
            "task",
            json!({ "chain": [{ "agent": ROOT_AGENT, "depth": 0 }] }),
        ),
        ("session", json!({ "labels": ["trusted"] })),
        ("session", json!({ "history": [] , "labels": ["x"] })),
    ] {
        let mut request = read_inbox(ROOT_AGENT);
        request["context"] = json!({ field: value });
        let reply = gw.decide(&root, &request);
        reply.assert_error(422, "field_not_allowed");
        assert!(
            text(&reply.json(), "message").contains(&format!("`context.{field}`")),
            "{}",
            reply.body
        );
    }

    // Only task credentials verify: no identity token, no garbage.
    assert_invalid_token(
        &gw.decide(&gw.idp.token(ROOT_AGENT), &read_inbox(ROOT_AGENT)),
        "not an identity token",
    );
    assert_invalid_token(&gw.decide("AAAA", &read_inbox(ROOT_AGENT)), "");

    // Nothing of the refusals is recorded: no receipt, no history.
    assert_eq!(gw.rows("history"), history_rows);
    assert_eq!(gw.server.health()["receipts"]["size"], receipts);

    // The person may be named if it is the task's; the decision is recorded.
    let mut request = read_inbox(ROOT_AGENT);
    request["principal"]["on_behalf_of"] = json!(HUMAN);
    assert_decision(&gw.decide(&root, &request), "allow", &["declared-tools"]);
    assert_eq!(gw.rows("history"), history_rows + 1);
    let history = gw.show(&task_id, &root).json()["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 1);
}

#[test]
fn without_an_identity_issuer_a_credential_is_refused_and_plain_decisions_still_work() {
    let data = tempfile::tempdir().unwrap();
    let server = Launch::serve(data.path()).start();
    let request = util::mailer(&json!({}));
    let reply = server.call(
        reqwest::Method::POST,
        "/v1/decide",
        Some("EtkFCuwECgR0YXNr"),
        Some(&request),
    );
    reply.assert_error(401, "no_identity_issuer");
    assert!(reply.header("www-authenticate").is_some());
    assert_eq!(server.decide(&request).decision()["decision"], "allow");
}

#[test]
fn a_decision_the_history_cannot_record_is_not_given() {
    let gw = gateway();
    let (task_id, root) = start(&gw, &task());
    let receipts = gw.server.health()["receipts"]["size"].as_u64().unwrap();

    // The state database refuses history rows from now on (a full disk, an
    // I/O error): a trigger installed beside the server.
    rusqlite::Connection::open(gw.data.join("state.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_history BEFORE INSERT ON history
             BEGIN SELECT RAISE(FAIL, 'history refused'); END;",
        )
        .unwrap();
    let reply = gw.decide(&root, &read_inbox(ROOT_AGENT));
    reply.assert_error(503, "state_unavailable");
    assert!(
        text(&reply.json(), "message").contains("treat this call as denied"),
        "{}",
        reply.body
    );
    // The receipt was written first: the log shows a decision that was
    // never given, as after any failure between the two.
    assert_eq!(
        gw.server.health()["receipts"]["size"].as_u64().unwrap(),
        receipts + 1
    );
    let history = gw.show(&task_id, &root).json()["history"].clone();
    assert_eq!(history, json!([]));
}
