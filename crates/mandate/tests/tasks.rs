//! End-to-end tests of tasks over HTTP: the real `mandate serve`, an identity
//! provider made up here (an Ed25519 key, its JWKS in a file, JWTs signed
//! with it), task credentials checked offline with Mandate's public key, and
//! the attacks that must fail, each leaving no trace.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use biscuit_auth::builder::{fact, int, string};
use biscuit_auth::{Biscuit, BlockBuilder};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate_auth::{TaskAuthority, TaskGrant, VerifiedCredential};
use reqwest::Method;
use serde_json::{Value, json};
use util::tasks::{
    AUDIENCE, Gateway, HUMAN, ISSUER, Idp, METADATA, RESOURCE, ROOT_AGENT, SUB_AGENT,
    SUB_SUB_AGENT, assert_insufficient_scope, assert_invalid_token, claims, epoch, gateway,
    gateway_with, text,
};
use util::{Launch, openapi_validator, poll_until};

impl Gateway {
    /// Starts `task()` for the root agent; returns the 201 body.
    fn start_task(&self, patch: &Value) -> Value {
        let mut body = task();
        util::merge(&mut body, patch);
        let reply = self.start(&self.idp.token(ROOT_AGENT), &body);
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()
    }
}

/// A task body: three tools, two labels, a recipient list, ten minutes, two
/// delegation hops.
fn task() -> Value {
    json!({
        "intent": "answer customer questions about their orders",
        "tools": ["mail/read_inbox", "mail/send_email", "web/fetch_url"],
        "labels": ["customer", "internal"],
        "params": { "allowed_recipients": ["carol@example.com"] },
        "ttl_seconds": 600,
        "max_depth": 2
    })
}

/// The root agent's call of `mail/delete_email` (a tool the forged
/// credentials below grant), as sent under a credential.
fn delete_email() -> Value {
    json!({
        "principal": { "id": ROOT_AGENT },
        "action": { "server": "mail", "tool": "delete_email" }
    })
}

#[test]
fn provenance_inputs_are_checked_and_a_bad_one_changes_nothing() {
    let gw = gateway();
    let started = gw.start_task(&json!({
        "tools": ["mail/read_inbox", "mail/send_email"],
        "prompt": "Send the quarterly report to Dave@Example.com",
    }));
    let credential = text(&started, "credential").to_owned();
    let send = |annotations: Value, context: Value| {
        json!({
            "principal": { "id": ROOT_AGENT },
            "action": { "server": "mail", "tool": "send_email", "annotations": annotations },
            "arguments": { "to": "dave@example.com" },
            "context": context,
        })
    };
    let catalog = json!({ "destructiveHint": false, "mandate/arguments": { "to": "email" } });
    // The server fills `context.provenance`; a caller may not.
    let reply = gw.decide(
        &credential,
        &send(
            catalog.clone(),
            json!({ "provenance": { "to": { "kind": "email", "source": "prompt" } } }),
        ),
    );
    reply.assert_error(422, "field_not_allowed");
    assert!(reply.body.contains("context.provenance"), "{}", reply.body);
    for (annotations, message) in [
        (
            json!({ "mandate/arguments": { "to": "fax" } }),
            "unknown variant `fax`",
        ),
        (
            json!({ "mandate/arguments": { "to..x": "email" } }),
            "is not an argument path",
        ),
        (
            json!({ "mandate/textFields": ["body text"] }),
            "is not a field name",
        ),
    ] {
        let reply = gw.decide(&credential, &send(annotations.clone(), json!({})));
        reply.assert_error(422, "invalid_request");
        assert!(
            reply.body.contains(message),
            "{annotations}: {}",
            reply.body
        );
    }
    let history = |gw: &util::tasks::Gateway| {
        gw.show(text(&started, "task_id"), &credential).json()["history"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(history(&gw), 0, "a refused request is no decision");

    // The prompt's address grounds the send, case-folded.
    let allowed = gw.decide(&credential, &send(catalog, json!({})));
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.json()["decision"], "allow", "{}", allowed.body);
    let decision_id = text(&allowed.json(), "decision_id").to_owned();
    let receipt = gw.receipt(&decision_id);
    assert_eq!(receipt["decision"], "allow", "{receipt}");

    // A report's values are bounded.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "value": format!("u{i}@example.com"), "field": "text" }))
        .collect();
    gw.report(
        &decision_id,
        &credential,
        &json!({ "status": "ok", "values": many }),
    )
    .assert_error(422, "invalid_request");
    gw.report(
        &decision_id,
        &credential,
        &json!({ "status": "ok", "values": [{ "value": "a".repeat(513), "field": "text" }] }),
    )
    .assert_error(422, "invalid_request");
    gw.report(
        &decision_id,
        &credential,
        &json!({ "status": "ok", "values": [{ "value": "a@example.com", "field": "header" }] }),
    )
    .assert_error(422, "invalid_request");
    // Another hop of the task may report the status, but not what the
    // result named: a sub-agent does not ground its delegator's sends.
    let delegated = gw.delegate(
        text(&started, "task_id"),
        &credential,
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"], "ttl_seconds": 300 }),
    );
    assert_eq!(delegated.status, 201, "{}", delegated.body);
    let sub = text(&delegated.json(), "credential").to_owned();
    let reply = gw.report(
        &decision_id,
        &sub,
        &json!({ "status": "ok", "values": [{ "value": "mallory@evil.example", "field": "structured" }] }),
    );
    assert_insufficient_scope(&reply, "only that agent reports the destinations");
    // Nothing was recorded: the one report that is right still goes in.
    let reply = gw.report(&decision_id, &credential, &json!({ "status": "ok" }));
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// The story
// ---------------------------------------------------------------------------

#[test]
fn start_delegate_show_and_end_a_task() {
    let gw = gateway();
    let verifier = gw.verifier();

    // An agent authenticates with its JWT and starts a task.
    let reply = gw.start(&gw.idp.token(ROOT_AGENT), &task());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let started = reply.json();
    let task_id = text(&started, "task_id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&task_id).unwrap().get_version_num(),
        7
    );
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/v1/tasks/{task_id}").as_str())
    );
    let root = text(&started, "credential").to_owned();
    let expires_at = time(&started["expires_at"]);
    let lifetime = expires_at - Utc::now();
    assert!(
        lifetime <= chrono::Duration::seconds(600) && lifetime > chrono::Duration::seconds(590),
        "{lifetime}"
    );

    // The credential verifies offline with the published key alone.
    let offline: VerifiedCredential = verifier.verify(&root, Utc::now()).unwrap();
    assert_eq!(offline.task_id.as_str(), task_id);
    assert_eq!(offline.root_agent, ROOT_AGENT);
    assert_eq!(offline.on_behalf_of.as_deref(), Some(HUMAN));
    assert_eq!(
        offline.tools,
        set(&["mail/read_inbox", "mail/send_email", "web/fetch_url"])
    );
    assert_eq!(offline.labels, set(&["customer", "internal"]));
    assert_eq!(offline.max_depth, 2);
    assert_eq!(offline.expires_at, expires_at);
    assert_eq!(offline.revocation_ids, [text(&started, "revocation_id")]);

    // The root agent delegates to a sub-agent with fewer tools and labels.
    let reply = gw.delegate(
        &task_id,
        &root,
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox", "mail/send_email"], "labels": ["customer"], "ttl_seconds": 300 }),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let delegated = reply.json();
    assert_eq!(delegated["depth"], 1);
    let sub = text(&delegated, "credential").to_owned();
    let offline = verifier.verify(&sub, Utc::now()).unwrap();
    assert_eq!(offline.task_id.as_str(), task_id);
    assert_eq!(offline.holder().unwrap().agent, SUB_AGENT);
    assert_eq!(offline.chain.len(), 2);
    assert_eq!(offline.tools, set(&["mail/read_inbox", "mail/send_email"]));
    assert_eq!(offline.labels, set(&["customer"]));
    assert_eq!(offline.expires_at, time(&delegated["expires_at"]));
    assert!(offline.expires_at < expires_at);
    assert_eq!(
        offline.revocation_ids.last().unwrap(),
        text(&delegated, "revocation_id")
    );

    // The sub-agent narrows further, for a sub-sub-agent (depth 2), without
    // a ttl: it keeps the sub-agent's expiry.
    let reply = gw.delegate(
        &task_id,
        &sub,
        &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox"] }),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let subsub = reply.json();
    assert_eq!(subsub["depth"], 2);
    assert_eq!(subsub["expires_at"], delegated["expires_at"]);
    let subsub_credential = text(&subsub, "credential").to_owned();

    // The task, with its delegation tree, seen with any hop's credential.
    let view = gw.show(&task_id, &subsub_credential);
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view, gw.show(&task_id, &root).json());
    assert_eq!(view["id"], task_id.as_str());
    assert_eq!(view["agent"], ROOT_AGENT);
    assert_eq!(view["on_behalf_of"], HUMAN);
    assert_eq!(view["intent"], task()["intent"]);
    assert_eq!(view["params"], task()["params"]);
    assert_eq!(view["audience"], AUDIENCE);
    assert_eq!(view["max_depth"], 2);
    assert_eq!(view["state"], "open");
    assert_eq!(view["ended_at"], Value::Null);
    assert_eq!(view["history"], json!([]));
    let tree: Vec<(Value, Value, Value, Value, Value)> = view["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["revoked"], false, "{c}");
            (
                c["agent"].clone(),
                c["depth"].clone(),
                c["revocation_id"].clone(),
                c["parent_revocation_id"].clone(),
                c["tools"].clone(),
            )
        })
        .collect();
    assert_eq!(
        tree,
        [
            (
                json!(ROOT_AGENT),
                json!(0),
                started["revocation_id"].clone(),
                Value::Null,
                json!(["mail/read_inbox", "mail/send_email", "web/fetch_url"])
            ),
            (
                json!(SUB_AGENT),
                json!(1),
                delegated["revocation_id"].clone(),
                started["revocation_id"].clone(),
                json!(["mail/read_inbox", "mail/send_email"])
            ),
            (
                json!(SUB_SUB_AGENT),
                json!(2),
                subsub["revocation_id"].clone(),
                delegated["revocation_id"].clone(),
                json!(["mail/read_inbox"])
            ),
        ]
    );

    // A sub-agent cannot end the task.
    assert_insufficient_scope(
        &gw.end(&task_id, &sub),
        "only the task's root credential or its root agent can end the task",
    );
    assert_eq!(gw.show(&task_id, &root).json()["state"], "open");
    assert!(gw.revocations().is_empty());

    // The root credential ends it: every credential is revoked at once.
    let reply = gw.end(&task_id, &root);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ended = reply.json();
    let ids = [
        started["revocation_id"].clone(),
        delegated["revocation_id"].clone(),
        subsub["revocation_id"].clone(),
    ];
    assert_eq!(ended["task_id"], task_id.as_str());
    assert_eq!(ended["end_reason"], "ended");
    assert_eq!(ended["revoked"], json!(ids));
    for credential in [&root, &sub, &subsub_credential] {
        assert_invalid_token(&gw.show(&task_id, credential), "revoked");
        assert_invalid_token(
            &gw.delegate(
                &task_id,
                credential,
                &json!({ "agent": "x", "tools": ["mail/read_inbox"] }),
            ),
            "revoked",
        );
        assert_invalid_token(&gw.end(&task_id, credential), "revoked");
    }

    // The revocation list names them all, for offline verifiers.
    let listed: Vec<(Value, Value)> = gw
        .revocations()
        .iter()
        .map(|r| {
            assert_eq!(time(&r["revoked_at"]), time(&ended["ended_at"]));
            (r["revocation_id"].clone(), r["task_id"].clone())
        })
        .collect();
    let expected: Vec<(Value, Value)> = ids.iter().map(|id| (id.clone(), json!(task_id))).collect();
    assert_eq!(listed, expected);

    // The root agent still sees the ended task with its identity token, and
    // ending it again answers the same.
    let jwt = gw.idp.token(ROOT_AGENT);
    let view = gw.show(&task_id, &jwt);
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["state"], "ended");
    assert_eq!(view["end_reason"], "ended");
    assert!(
        view["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked"] == true)
    );
    let again = gw.end(&task_id, &jwt);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), ended);
    assert_eq!(gw.rows("credentials"), 3);
}

#[test]
fn the_root_agent_may_end_its_task_with_its_identity_token_and_no_one_else() {
    let gw = gateway();
    let started = gw.start_task(&json!({}));
    let id = text(&started, "task_id");

    assert_insufficient_scope(
        &gw.end(id, &gw.idp.token(SUB_AGENT)),
        &format!("`{SUB_AGENT}` is not the root agent of task `{id}`"),
    );
    assert_insufficient_scope(
        &gw.show(id, &gw.idp.token(SUB_AGENT)),
        "is not the root agent",
    );
    gw.end("no-such-task", &gw.idp.token(ROOT_AGENT))
        .assert_error(404, "task_not_found");
    assert!(gw.revocations().is_empty());

    let reply = gw.end(id, &gw.idp.token(ROOT_AGENT));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_invalid_token(&gw.show(id, text(&started, "credential")), "revoked");
    assert_eq!(gw.revocations().len(), 1);
}

// ---------------------------------------------------------------------------
// Delegation cannot widen
// ---------------------------------------------------------------------------

#[test]
fn a_delegation_cannot_add_a_tool_a_label_or_lifetime_nor_go_deeper() {
    let gw = gateway();
    let started = gw.start_task(&json!({}));
    let id = text(&started, "task_id");
    let root = text(&started, "credential");
    let sub = gw.delegate(
        id,
        root,
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"], "labels": ["customer"], "ttl_seconds": 120 }),
    );
    assert_eq!(sub.status, 201, "{}", sub.body);
    let sub = text(&sub.json(), "credential").to_owned();
    let before = gw.rows("credentials");
    assert_eq!(before, 2);

    // A sub-agent credential that tries to add a tool, a label or lifetime.
    assert_insufficient_scope(
        &gw.delegate(
            id,
            &sub,
            &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox", "mail/send_email"] }),
        ),
        "tools not held by the delegating credential: mail/send_email",
    );
    assert_insufficient_scope(
        &gw.delegate(
            id,
            &sub,
            &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox"], "labels": ["internal"] }),
        ),
        "labels outside the delegating credential's scope: internal",
    );
    assert_insufficient_scope(
        &gw.delegate(
            id,
            &sub,
            &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox"], "ttl_seconds": 300 }),
        ),
        "is later than the delegating credential's expiry",
    );
    assert_insufficient_scope(
        &gw.delegate(
            id,
            &sub,
            &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox"], "ttl_seconds": 100_000_000 }),
        ),
        "outlives the delegating credential",
    );
    // The root credential cannot add a tool the task does not have either.
    assert_insufficient_scope(
        &gw.delegate(
            id,
            root,
            &json!({ "agent": SUB_AGENT, "tools": ["mail/delete_email"] }),
        ),
        "tools not held by the delegating credential: mail/delete_email",
    );

    // Two hops are allowed; a third is too deep.
    let subsub = gw.delegate(
        id,
        &sub,
        &json!({ "agent": SUB_SUB_AGENT, "tools": ["mail/read_inbox"] }),
    );
    assert_eq!(subsub.status, 201, "{}", subsub.body);
    let subsub = text(&subsub.json(), "credential").to_owned();
    assert_insufficient_scope(
        &gw.delegate(
            id,
            &subsub,
            &json!({ "agent": "spiffe://example.org/agent/deep", "tools": ["mail/read_inbox"] }),
        ),
        "delegation depth 3 exceeds the task's maximum depth of 2",
    );

    // A task started without max_depth allows no delegation at all.
    let flat = gw.start_task(&json!({ "max_depth": null }));
    assert_insufficient_scope(
        &gw.delegate(
            text(&flat, "task_id"),
            text(&flat, "credential"),
            &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
        ),
        "exceeds the task's maximum depth of 0",
    );

    // Invalid delegations are 422, and none of the refusals left a trace.
    for (body, message) in [
        (
            json!({ "agent": "", "tools": ["mail/read_inbox"] }),
            "`agent`",
        ),
        (json!({ "agent": SUB_AGENT, "tools": [] }), "`tools`"),
        (
            json!({ "agent": SUB_AGENT, "tools": ["read_inbox"] }),
            "write `server/tool`",
        ),
        (
            json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"], "ttl_seconds": 0 }),
            "`ttl_seconds`",
        ),
        (
            json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"], "max_depth": 5 }),
            "unknown field `max_depth`",
        ),
    ] {
        let reply = gw.delegate(id, root, &body);
        reply.assert_error(422, "invalid_request");
        assert!(reply.body.contains(message), "{body}: {}", reply.body);
    }
    assert_eq!(gw.rows("credentials"), before + 1 + 1);
    let tree = gw.show(id, root).json();
    assert_eq!(tree["credentials"].as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------
// Attacks on the identity token
// ---------------------------------------------------------------------------

#[test]
fn bad_identity_tokens_are_refused_with_the_reason_and_start_nothing() {
    let gw = gateway();
    let body = task();

    // No token, or another scheme: a challenge without an error (RFC 6750 §3.1).
    for reply in [
        gw.server.call(Method::POST, "/v1/tasks", None, Some(&body)),
        gw.server.send_with_header(
            Method::POST,
            "/v1/tasks",
            ("authorization", "Basic YWdlbnQ6c2VjcmV0"),
        ),
    ] {
        reply.assert_error(401, "missing_token");
        assert_eq!(
            reply.header("www-authenticate").unwrap(),
            format!("Bearer resource_metadata=\"{METADATA}\"")
        );
    }

    let header = |alg: &str| {
        URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "typ": "JWT", "kid": "idp-1" }).to_string())
    };
    let payload = URL_SAFE_NO_PAD.encode(claims(ROOT_AGENT).to_string());
    let unsigned = format!("{}.{payload}.", header("none"));

    let impostor = Idp::new("idp-1");
    // The algorithm-confusion attack: HMAC with the public key as secret.
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("idp-1".to_owned());
    let confused = jsonwebtoken::encode(
        &hs256,
        &claims(ROOT_AGENT),
        &EncodingKey::from_secret(&gw.idp.key.verifying_key().to_bytes()),
    )
    .unwrap();

    let mut wrong_audience = claims(ROOT_AGENT);
    wrong_audience["aud"] = json!("https://other.test");
    let mut expired = claims(ROOT_AGENT);
    expired["iat"] = json!(epoch(-600));
    expired["exp"] = json!(epoch(-120));
    let mut unknown_issuer = claims(ROOT_AGENT);
    unknown_issuer["iss"] = json!("https://evil.test");
    let mut swapped = gw.idp.token(ROOT_AGENT);
    let cut = swapped.rfind('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(&swapped[cut + 1..]).unwrap();
    signature[0] ^= 1;
    swapped.replace_range(cut + 1.., &URL_SAFE_NO_PAD.encode(signature));
    // A task credential is not an identity token.
    let credential = gw.start_task(&json!({}))["credential"].clone();

    for (token, reason) in [
        (unsigned, "unsigned tokens (alg none) are never accepted"),
        (
            format!("{}.{payload}.", header("NONE")),
            "unsigned tokens (alg none) are never accepted",
        ),
        (confused, "algorithm `HS256` is not accepted"),
        (impostor.token(ROOT_AGENT), "the signature does not verify"),
        (swapped, "the signature does not verify"),
        (
            gw.idp.sign(&wrong_audience),
            "the token is not meant for this service (audience)",
        ),
        (gw.idp.sign(&expired), "the token expired at"),
        (
            gw.idp.sign(&unknown_issuer),
            "issuer `https://evil.test` is not trusted",
        ),
        (credential.as_str().unwrap().to_owned(), "malformed token"),
        ("a.b.c".to_owned(), "malformed token"),
    ] {
        let reply = gw.start(&token, &body);
        assert_invalid_token(&reply, reason);
        assert!(
            text(&reply.json(), "message").starts_with("the identity token is refused: "),
            "{}",
            reply.body
        );
    }
    // Authentication comes before the body: a bad body with a bad token is a 401.
    assert_invalid_token(
        &gw.start("x.y.z", &json!({ "nonsense": true })),
        "malformed token",
    );

    // Only the one legitimate task was started.
    assert_eq!(gw.rows("tasks"), 1);
    assert_eq!(gw.rows("credentials"), 1);
}

#[test]
fn invalid_tasks_are_refused_and_start_nothing() {
    let gw = gateway_with("task_max_ttl_seconds = 900");
    let token = gw.idp.token(ROOT_AGENT);
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    for (patch, message) in [
        // Params every decision of the task would refuse: refused at start,
        // naming the parameter.
        (json!({ "params": { "deep": deep } }), "`params.deep"),
        (
            json!({ "params": { "allowed_recipients": "carol@example.com" } }),
            "`params.allowed_recipients` must be",
        ),
        (json!({ "intent": "  " }), "`intent` must not be empty"),
        (
            json!({ "tools": [] }),
            "`tools` must name at least one tool",
        ),
        (
            json!({ "tools": ["mail/read_inbox", "send_email"] }),
            "`tools[1]`: tool name `send_email` does not name its server: write `server/tool`",
        ),
        (json!({ "tools": ["/x"] }), "server name `` is empty"),
        (
            json!({ "tools": ["mail/wip\u{435}_mailbox"] }),
            "`tools[0]`: tool name `wip\\\\u{435}_mailbox` has the non-ASCII character U+0435",
        ),
        (
            json!({ "labels": ["Confidential"] }),
            "the uppercase letter `C`",
        ),
        (json!({ "labels": ["ok", ""] }), "`labels[1]`"),
        (
            json!({ "ttl_seconds": 0 }),
            "`ttl_seconds` must be at least 1",
        ),
        (
            json!({ "ttl_seconds": 901 }),
            "`ttl_seconds` 901 is longer than this server allows (`task_max_ttl_seconds` = 900)",
        ),
        (json!({ "max_depth": 17 }), "`max_depth` 17 is deeper than"),
        (json!({ "params": [1] }), "params"),
        (json!({ "prompt": " " }), "`prompt` must not be empty"),
        (
            json!({ "prompt": "x".repeat(16 * 1024 + 1) }),
            "`prompt` is longer than 16384 bytes",
        ),
        (
            json!({ "grounded_values": ["carol@example.com", "see the attached list"] }),
            "`grounded_values[1]` is not an e-mail address",
        ),
        (
            json!({ "grounded_values": vec!["carol@example.com"; 257] }),
            "`grounded_values` holds 257 values; at most 256",
        ),
        (
            json!({ "grounded_values": "carol@example.com" }),
            "grounded_values",
        ),
        (json!({ "agent": "someone-else" }), "unknown field `agent`"),
        (
            json!({ "ttl_seconds": null }),
            "missing field `ttl_seconds`",
        ),
    ] {
        let mut body = task();
        util::merge(&mut body, &patch);
        let reply = gw.start(&token, &body);
        reply.assert_error(422, "invalid_request");
        assert!(reply.body.contains(message), "{patch}: {}", reply.body);
    }
    gw.server
        .send_with_header(
            Method::POST,
            "/v1/tasks",
            ("authorization", &format!("Bearer {token}")),
        )
        .assert_error(415, "unsupported_media_type");
    assert_eq!(gw.rows("tasks"), 0);

    let started = gw.start_task(&json!({ "ttl_seconds": 900 }));
    assert!(time(&started["expires_at"]) - Utc::now() <= chrono::Duration::seconds(900));

    // A number Cedar cannot hold, in a parameter the pack's schema does not
    // declare, can matter to no policy: the task starts (one the schema
    // declares would be refused, as above for a mistyped one).
    gw.start_task(&json!({ "params": { "rate": 0.00001 } }));
}

// ---------------------------------------------------------------------------
// Attacks on the task credential
// ---------------------------------------------------------------------------

#[test]
fn forged_resigned_extended_or_misdirected_credentials_are_refused() {
    let gw = gateway();
    let started = gw.start_task(&json!({}));
    let id = text(&started, "task_id");
    let root = text(&started, "credential");
    let other = gw.start_task(&json!({}));
    let grant = |audience: &str| TaskGrant {
        task_id: mandate_core::TaskId::new(id).unwrap(),
        agent: ROOT_AGENT.to_owned(),
        on_behalf_of: None,
        tools: set(&["mail/read_inbox", "mail/delete_email"]),
        labels: set(&[]),
        expires_at: Utc::now() + chrono::Duration::seconds(3000),
        max_depth: 5,
        audience: audience.to_owned(),
    };

    // Forged: a byte of the signed task id changed.
    let mut bytes = URL_SAFE.decode(root).unwrap();
    let at = bytes
        .windows(id.len())
        .position(|w| w == id.as_bytes())
        .unwrap();
    bytes[at + id.len() - 1] ^= 1;
    let forged = URL_SAFE.encode(&bytes);
    // Re-signed: the same kind of token, with more tools and a longer life,
    // signed by another key.
    let resigned = TaskAuthority::generate()
        .mint(&grant(AUDIENCE))
        .unwrap()
        .token;
    // Extended by its holder: a block appended offline, granting a tool.
    let public = gw.authority().public_key();
    let appended = Biscuit::from_base64(root, public)
        .unwrap()
        .append(
            BlockBuilder::new()
                .fact(fact("hop_tool", &[int(0), string("mail/delete_email")]))
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    // Signed with Mandate's own key, but for another audience.
    let elsewhere = gw
        .authority()
        .mint(&grant("https://other.test"))
        .unwrap()
        .token;

    for (token, reason) in [
        (forged.as_str(), "signature does not verify"),
        (resigned.as_str(), "signature does not verify"),
        (
            appended.as_str(),
            "block 1 of the task credential was not issued by Mandate",
        ),
        (
            elsewhere.as_str(),
            "task credential is for audience `https://other.test`, not `mandate`",
        ),
        ("AAAA", "malformed task credential"),
    ] {
        assert_invalid_token(&gw.show(id, token), reason);
        assert_invalid_token(
            &gw.delegate(
                id,
                token,
                &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
            ),
            reason,
        );
        assert_invalid_token(&gw.end(id, token), reason);
        assert_invalid_token(&gw.decide(token, &delete_email()), reason);
        assert_invalid_token(
            &gw.report(
                "01a2088f-0000-7000-8000-000000000000",
                token,
                &json!({ "status": "ok" }),
            ),
            reason,
        );
    }

    // A genuine credential presented for a different task.
    for reply in [
        gw.show(text(&other, "task_id"), root),
        gw.end(text(&other, "task_id"), root),
        gw.delegate(
            text(&other, "task_id"),
            root,
            &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
        ),
    ] {
        assert_insufficient_scope(
            &reply,
            &format!("the credential is for task `{id}`, not for task"),
        );
    }

    // No trace: both tasks open, one credential each, nothing revoked, no
    // decision.
    assert_eq!(gw.rows("credentials"), 2);
    assert_eq!(gw.rows("history"), 0);
    assert_eq!(gw.server.health()["receipts"]["size"], 0);
    assert!(gw.revocations().is_empty());
    assert_eq!(gw.show(id, root).json()["state"], "open");
    assert_eq!(
        gw.show(text(&other, "task_id"), text(&other, "credential"))
            .json()["state"],
        "open"
    );
}

#[test]
fn an_expired_credential_is_refused_and_its_task_ends_on_its_own() {
    let gw = gateway();
    let started = gw.start_task(&json!({ "ttl_seconds": 1 }));
    let id = text(&started, "task_id");
    let root = text(&started, "credential");
    std::thread::sleep(Duration::from_secs(2));

    assert_invalid_token(&gw.show(id, root), "task credential expired at");
    assert_invalid_token(
        &gw.delegate(
            id,
            root,
            &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
        ),
        "task credential expired at",
    );
    assert_invalid_token(
        &gw.decide(root, &delete_email()),
        "task credential expired at",
    );
    assert_eq!(gw.rows("credentials"), 1);
    assert_eq!(gw.rows("history"), 0);

    // The server ends the task and revokes its credential within seconds.
    let listed = poll_until(
        Duration::from_secs(10),
        "the expired task's revocation",
        || {
            let listed = gw.revocations();
            if listed.is_empty() {
                Err(listed)
            } else {
                Ok(listed)
            }
        },
    );
    assert_eq!(listed[0]["revocation_id"], started["revocation_id"]);
    assert_eq!(listed[0]["task_id"], id);
    let view = gw.show(id, &gw.idp.token(ROOT_AGENT)).json();
    assert_eq!(view["state"], "expired");
    assert_eq!(view["end_reason"], "expired");
    assert_eq!(view["credentials"][0]["revoked"], true);
}

// ---------------------------------------------------------------------------
// Configuration, metadata, restarts
// ---------------------------------------------------------------------------

#[test]
fn without_an_identity_issuer_the_task_endpoints_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::serve(&dir.path().join("data")).start();
    let idp = Idp::new("idp-1");
    let reply = server.call(
        Method::POST,
        "/v1/tasks",
        Some(&idp.token(ROOT_AGENT)),
        Some(&task()),
    );
    reply.assert_error(401, "no_identity_issuer");
    assert!(
        text(&reply.json(), "message").contains("no identity issuer is configured"),
        "{}",
        reply.body
    );
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://127.0.0.1:0/.well-known/oauth-protected-resource\", error=\"invalid_token\", error_description=\"no identity issuer is configured"),
        "{challenge}"
    );
    for (method, path) in [
        (Method::GET, "/v1/tasks/any"),
        (Method::DELETE, "/v1/tasks/any"),
        (Method::POST, "/v1/tasks/any/delegate"),
    ] {
        server
            .call(method, path, None, None)
            .assert_error(401, "no_identity_issuer");
    }
    // Decisions work as before.
    server.decide(&util::mailer(&json!({}))).decision();
    let meta = server.get("/.well-known/oauth-protected-resource").json();
    assert_eq!(meta["authorization_servers"], json!([]));
    assert_eq!(meta["resource"], "http://127.0.0.1:0");
    assert_eq!(
        server.get("/v1/revocations").json(),
        json!({ "revocations": [] })
    );
}

#[test]
fn the_protected_resource_metadata_describes_the_server() {
    let gw = gateway();
    let meta = gw.metadata();
    assert_eq!(
        meta,
        json!({
            "resource": RESOURCE,
            "authorization_servers": [ISSUER],
            "bearer_methods_supported": ["header"],
            "resource_name": "Mandate",
            "jwks_uri": format!("{RESOURCE}/.well-known/jwks.json"),
            "mandate_task_credentials": {
                "format": "biscuit-v3",
                "public_key": format!("ed25519/{}", gw.authority().public_key_hex()),
                "audience": AUDIENCE,
                "revocation_list": format!("{RESOURCE}/v1/revocations"),
            },
            "mandate_token_exchange": {
                "token_endpoint": format!("{RESOURCE}/v1/token"),
                "issuer": RESOURCE,
                "subject_token_type": "urn:mandate:token-type:task-credential",
            }
        })
    );

    // A resource with a path has its metadata under that path too (RFC 9728 §3.1).
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::serve(&dir.path().join("data"))
        .args([
            "--resource",
            "https://gw.test/mandate",
            "--audience",
            "tasks.gw.test",
        ])
        .start();
    let at_path = server.get("/.well-known/oauth-protected-resource/mandate");
    assert_eq!(at_path.status, 200, "{}", at_path.body);
    assert_eq!(at_path.json()["resource"], "https://gw.test/mandate");
    assert_eq!(
        at_path.json()["mandate_task_credentials"]["audience"],
        "tasks.gw.test"
    );
    assert_eq!(
        at_path.json(),
        server.get("/.well-known/oauth-protected-resource").json()
    );
    let challenge = server
        .call(Method::POST, "/v1/tasks", None, None)
        .header("www-authenticate")
        .unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource/mandate\""),
        "{challenge}"
    );
}

#[test]
fn task_bodies_match_the_openapi_document() {
    let gw = gateway();
    let doc = gw.server.get("/v1/openapi.json").json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/tasks"]["post"]["security"],
        json!([{ "bearer": [] }])
    );
    // A task credential is optional for a decision.
    assert_eq!(
        doc["paths"]["/v1/decide"]["post"]["security"],
        json!([{}, { "bearer": [] }])
    );

    let started = gw.start(&gw.idp.token(ROOT_AGENT), &task());
    let started_body = started.json();
    let id = text(&started_body, "task_id");
    let root = text(&started_body, "credential");
    let delegated = gw.delegate(
        id,
        root,
        &json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox"] }),
    );
    let call = json!({
        "principal": { "id": ROOT_AGENT },
        "action": { "server": "mail", "tool": "read_inbox", "annotations": { "readOnlyHint": true } }
    });
    let decided = gw.decide(root, &call);
    let decision_id = text(&decided.json(), "decision_id").to_owned();
    let refused_decision = gw.decide("AAAA", &call);
    let reported = gw.report(&decision_id, root, &json!({ "status": "ok" }));
    let reported_again = gw.report(&decision_id, root, &json!({ "status": "ok" }));
    let shown = gw.show(id, root);
    assert_eq!(shown.json()["history"].as_array().unwrap().len(), 1);
    let forbidden = gw.end(id, text(&delegated.json(), "credential"));
    let unauthorized = gw.show(id, "AAAA");
    let ended = gw.end(id, root);
    for (path, method, reply) in [
        ("/v1/tasks", "post", &started),
        ("/v1/tasks/{id}/delegate", "post", &delegated),
        ("/v1/decide", "post", &decided),
        ("/v1/decide", "post", &refused_decision),
        ("/v1/decisions/{id}/result", "post", &reported),
        ("/v1/decisions/{id}/result", "post", &reported_again),
        ("/v1/tasks/{id}", "get", &shown),
        ("/v1/tasks/{id}", "get", &unauthorized),
        ("/v1/tasks/{id}", "delete", &forbidden),
        ("/v1/tasks/{id}", "delete", &ended),
        ("/v1/revocations", "get", &gw.server.get("/v1/revocations")),
        (
            "/.well-known/oauth-protected-resource",
            "get",
            &gw.server.get("/.well-known/oauth-protected-resource"),
        ),
    ] {
        let status = reply.status.to_string();
        let schema = &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]
            ["schema"];
        let validator = openapi_validator(&doc, schema);
        let errors: Vec<String> = validator
            .iter_errors(&reply.json())
            .map(|e| format!("{e} (at `{}`)", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {errors:?}\n{}",
            reply.body
        );
    }
}

#[test]
fn keys_and_revocations_survive_a_restart() {
    let gw = gateway();
    let kept = gw.start_task(&json!({}));
    let ended = gw.start_task(&json!({}));
    let reply = gw.end(text(&ended, "task_id"), text(&ended, "credential"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let key = std::fs::read_to_string(gw.data.join("keys").join("tasks.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&gw.data.join("keys").join("tasks.key")), 0o600);
        assert_eq!(mode(&gw.data.join("state.db")), 0o600);
    }

    let Gateway {
        server,
        data,
        dir,
        idp,
    } = gw;
    drop(server.kill());
    let server = Launch::serve(&data)
        .arg("--config")
        .arg(dir.path().join("mandate.toml"))
        .start();
    let gw = Gateway {
        server,
        data,
        dir,
        idp,
    };
    assert_eq!(
        std::fs::read_to_string(gw.data.join("keys").join("tasks.key")).unwrap(),
        key
    );
    // The open task's credential still verifies; the ended one's is still revoked.
    let reply = gw.show(text(&kept, "task_id"), text(&kept, "credential"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_invalid_token(
        &gw.show(text(&ended, "task_id"), text(&ended, "credential")),
        "revoked",
    );
}

/// A first start generates the task key quietly; a key lost after tasks
/// were started is replaced with a warning, and the old credentials stop
/// verifying (fail closed).
#[test]
fn a_lost_task_key_is_replaced_with_a_warning_only_when_credentials_were_issued() {
    const LOST: &str = "the task signing key is missing";
    let gw = gateway();
    assert!(
        !gw.server.log_messages().iter().any(|m| m.contains(LOST)),
        "a first start warned about a missing key: {:?}",
        gw.server.log_messages()
    );
    let started = gw.start_task(&json!({}));
    let Gateway {
        server,
        data,
        dir,
        idp,
    } = gw;
    drop(server.kill());
    std::fs::remove_file(data.join("keys").join("tasks.key")).unwrap();
    let server = Launch::serve(&data)
        .arg("--config")
        .arg(dir.path().join("mandate.toml"))
        .start();
    let gw = Gateway {
        server,
        data,
        dir,
        idp,
    };
    assert!(
        gw.server.log_messages().iter().any(|m| m.contains(LOST)),
        "no warning for a key lost after tasks were started: {:?}",
        gw.server.log_messages()
    );
    let reply = gw.show(text(&started, "task_id"), text(&started, "credential"));
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[test]
fn issuers_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("env-key");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks().to_string()).unwrap();
    let server = Launch::serve(&dir.path().join("data"))
        .env(
            "MANDATE_ISSUERS",
            format!("[{{issuer = \"{ISSUER}\", audiences = [\"mandate\"], jwks_file = {jwks:?}}}]"),
        )
        .env("MANDATE_TASK_MAX_TTL_SECONDS", "60")
        .start();
    let mut claims = claims(ROOT_AGENT);
    claims["aud"] = json!(["mandate"]);
    let token = idp.sign(&claims);
    let reply = server.call(Method::POST, "/v1/tasks", Some(&token), Some(&task()));
    reply.assert_error(422, "invalid_request");
    assert!(
        reply.body.contains("`task_max_ttl_seconds` = 60"),
        "{}",
        reply.body
    );
    let mut body = task();
    body["ttl_seconds"] = json!(60);
    let reply = server.call(Method::POST, "/v1/tasks", Some(&token), Some(&body));
    assert_eq!(reply.status, 201, "{}", reply.body);
    // Without `on_behalf_of_claim`, `obo` is an ordinary claim: no human.
    let view = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", text(&reply.json(), "task_id")),
            Some(text(&reply.json(), "credential")),
            None,
        )
        .json();
    assert_eq!(view["on_behalf_of"], Value::Null);
}

#[test]
fn identity_configuration_mistakes_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks().to_string()).unwrap();
    let hs_jwks = dir.path().join("hs.json");
    std::fs::write(
        &hs_jwks,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#,
    )
    .unwrap();
    let bad_key = dir.path().join("tasks.key");
    std::fs::write(&bad_key, "not hex\n").unwrap();
    for (config, message) in [
        (
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\njwks_url = \"http://idp.test/jwks\"\n"),
            "`http://idp.test/jwks` must be an https:// URL",
        ),
        (
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\n"),
            "`jwks_file` or `jwks_url` is required",
        ),
        (
            format!("[[issuers]]\njwks_file = {jwks:?}\n"),
            "an OIDC issuer needs `issuer`",
        ),
        (
            format!("[[issuers]]\nkind = \"spiffe\"\njwks_file = {jwks:?}\n"),
            "a SPIFFE issuer needs `trust_domain`",
        ),
        (
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"/nonexistent/jwks.json\"\n"),
            "cannot read the JWKS `/nonexistent/jwks.json`",
        ),
        (
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\njwks_file = {hs_jwks:?}\n"),
            "is symmetric",
        ),
        (
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\njwks_file = {jwks:?}\nkid = \"x\"\n"),
            "unknown key `kid`, expected one of `kind`, `issuer`,",
        ),
        (
            format!("task_signing_key_file = {bad_key:?}\n"),
            "is not a task signing key",
        ),
        (
            "task_signing_key_file = \"/nonexistent/tasks.key\"\n".to_owned(),
            "cannot read the task signing key",
        ),
        (
            "resource = \"mandate.test\"\n".to_owned(),
            "`resource` `mandate.test` must be an absolute",
        ),
        (
            "task_max_ttl_seconds = 0\n".to_owned(),
            "`task_max_ttl_seconds` must be positive",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &config).unwrap();
        let (status, stderr) = Launch::serve(&dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.contains(message),
            "{config}\nwanted `{message}` in:\n{stderr}"
        );
    }
}

/// Deciders racing the end of their task: every call answered `allow` was
/// decided no later than the task's end and is in its history, and once
/// the end is acknowledged every decider is refused. The invariant holds
/// in every interleaving; the deciders are let in before the end so that
/// the race is exercised.
#[test]
fn nothing_is_allowed_under_a_task_after_its_end_is_acknowledged() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let gw = gateway();
    let started = gw.start_task(&json!({}));
    let credential = text(&started, "credential").to_owned();
    let task_id = text(&started, "task_id").to_owned();
    let read = json!({
        "principal": { "id": ROOT_AGENT },
        "action": {
            "server": "mail",
            "tool": "read_inbox",
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        }
    });
    let answered = AtomicUsize::new(0);
    let decide_url = gw.server.url("/v1/decide");
    let (allowed, ended_at) = std::thread::scope(|scope| {
        let deciders: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    // A client of its own per decider: four connections.
                    let client = reqwest::blocking::Client::new();
                    let mut allowed = Vec::new();
                    loop {
                        let reply = client
                            .post(&decide_url)
                            .bearer_auth(&credential)
                            .json(&read)
                            .send()
                            .unwrap();
                        let status = reply.status().as_u16();
                        let decision: Value = reply.json().unwrap();
                        if status != 200 {
                            assert_eq!(status, 401, "{decision}");
                            assert_eq!(decision["error"], "invalid_token", "{decision}");
                            return allowed;
                        }
                        assert_eq!(decision["decision"], "allow", "{decision}");
                        allowed.push(text(&decision, "decision_id").to_owned());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        poll_until(Duration::from_secs(30), "20 allowed decisions", || {
            let n = answered.load(Ordering::SeqCst);
            if n >= 20 { Ok(()) } else { Err(n) }
        });
        let ended = gw.server.call(
            Method::DELETE,
            &format!("/v1/tasks/{task_id}"),
            Some(&credential),
            None,
        );
        assert_eq!(ended.status, 200, "{}", ended.body);
        let ended_at = time(&ended.json()["ended_at"]);
        let allowed: Vec<String> = deciders
            .into_iter()
            .flat_map(|d| d.join().unwrap())
            .collect();
        (allowed, ended_at)
    });
    assert!(allowed.len() >= 20);
    let view = gw
        .server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}"),
            Some(&gw.idp.token(ROOT_AGENT)),
            None,
        )
        .json();
    let recorded: HashSet<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["decision_id"].as_str().unwrap())
        .collect();
    for id in &allowed {
        assert!(recorded.contains(id.as_str()), "{id} is not in the history");
        let receipt = gw.receipt(id);
        assert!(
            time(&receipt["time"]) <= ended_at,
            "{id} was decided at {} after the end at {ended_at}",
            receipt["time"]
        );
    }
}
