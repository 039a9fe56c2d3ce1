//! End-to-end tests of `mandate serve`: the real binary, over real HTTP.
//!
//! Each test starts its own server (port 0, own tempdir) through the harness
//! in `util`, so the tests run in parallel and share nothing.

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

use reqwest::Method;
use serde_json::{Value, json};
use util::{
    Launch, Reply, Server, copy_dir, example_pack, mailer, metric, openapi_validator, send_email,
};

/// Bounded wait for a policy change to take effect (reload interval: 100 ms).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A valid policy that turns the example's allowed `read_inbox` into a deny.
const BLOCK_READ_INBOX: &str = r#"// Switches one tool off.
@id("no-read-inbox")
@reason("read_inbox is switched off")
forbid (principal, action == Mandate::Action::"call_tool", resource)
when { resource.name == "read_inbox" };
"#;

/// A policy with a syntax error on line 3 (column 19).
const BROKEN: &str = "// A policy with a syntax error on line 3.\n@id(\"broken\")\nforbid (principal action, resource);\n";

fn destructive_delete() -> Value {
    mailer(&json!({
        "action": {
            "tool": "delete_email",
            "annotations": { "readOnlyHint": false, "destructiveHint": true }
        },
        "arguments": { "id": "msg-42" }
    }))
}

fn undeclared_tool() -> Value {
    mailer(&json!({ "action": { "tool": "export_contacts" } }))
}

fn after_untrusted_content() -> Value {
    let mut request = send_email("carol@example.com");
    util::merge(
        &mut request,
        &json!({ "context": { "session": { "history": [
            { "server": "web", "tool": "fetch_url", "decision": "allow", "labels": ["untrusted"] }
        ] } } }),
    );
    request
}

/// `request` serialized and padded with trailing whitespace (still valid
/// JSON) to exactly `len` bytes.
fn padded(request: &Value, len: usize) -> String {
    let mut body = request.to_string();
    assert!(body.len() <= len, "request is already {} bytes", body.len());
    body.extend(std::iter::repeat_n(' ', len - body.len()));
    body
}

/// Asserts a decision's outcome and determining policies, and the shape every
/// decision has; returns its id.
fn assert_decision(reply: &Reply, decision: &str, policies: &[&str]) -> uuid::Uuid {
    let v = reply.decision();
    assert_eq!(v["decision"], decision, "{v}");
    assert_eq!(v["policies"], json!(policies), "{v}");
    let reasons = v["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty(), "{v}");
    assert!(
        reasons
            .iter()
            .all(|r| r.as_str().is_some_and(|r| !r.is_empty())),
        "{v}"
    );
    assert_eq!(v["errors"], json!([]), "{v}");
    let id = uuid::Uuid::parse_str(v["decision_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7, "{v}");
    id
}

/// A pack directory: a copy of the example pack in `root/name`.
fn pack_copy(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    copy_dir(&example_pack(), &dir);
    dir
}

#[test]
fn every_outcome_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data")).start();

    let reply = server.decide(&mailer(&json!({})));
    assert!(
        reply
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{reply:?}"
    );
    let ids = [
        assert_decision(&reply, "allow", &["declared-tools"]),
        assert_decision(
            &server.decide(&mailer(&json!({}))),
            "allow",
            &["declared-tools"],
        ),
        assert_decision(
            &server.decide(&send_email("carol@example.com")),
            "allow",
            &["declared-tools"],
        ),
        assert_decision(
            &server.decide(&undeclared_tool()),
            "deny",
            &["undeclared-tool"],
        ),
        assert_decision(
            &server.decide(&send_email("mallory@evil.example")),
            "deny",
            &["recipient-allowed"],
        ),
        assert_decision(
            &server.decide(&destructive_delete()),
            "approval_required",
            &["destructive-needs-approval"],
        ),
        assert_decision(
            &server.decide(&after_untrusted_content()),
            "approval_required",
            &["untrusted-content-step-up"],
        ),
    ];
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "decision ids repeat: {ids:?}");
}

#[test]
fn bad_input_is_a_4xx_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data")).start();
    let before = server.health();
    let json_ct = Some("application/json");

    let mut nested_args = json!(1);
    for _ in 0..40 {
        nested_args = json!({ "a": nested_args });
    }
    let very_deep = {
        let valid = mailer(&json!({})).to_string();
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        // Put the deep array in as the value of `arguments.a`.
        let inner = valid.strip_suffix('}').unwrap();
        format!("{inner},\"arguments\":{{\"a\":{deep}}}}}")
    };
    let over_default_limit = padded(&mailer(&json!({})), 1024 * 1024 + 1);

    let json_cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            r#"{"principal": {"id": "a"},"#.to_owned(),
            400,
            "invalid_json",
        ),
        ("empty body", String::new(), 400, "invalid_json"),
        (
            "wrong type of principal.id",
            mailer(&json!({ "principal": { "id": 42 } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "wrong type of context.task.tools",
            mailer(&json!({ "context": { "task": { "tools": "read_inbox" } } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "missing principal",
            mailer(&json!({ "principal": null })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "missing action.tool",
            mailer(&json!({ "action": { "tool": null } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "unknown top-level field",
            mailer(&json!({ "decision": "allow" })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "unknown field in context.task",
            mailer(&json!({ "context": { "task": { "approved": true } } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "empty principal id",
            mailer(&json!({ "principal": { "id": "" } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "slash in action.server",
            mailer(&json!({ "action": { "server": "mail/evil" } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "context.time set",
            mailer(&json!({ "context": { "time": "2026-11-23T10:00:00Z" } })).to_string(),
            422,
            "field_not_allowed",
        ),
        (
            "context.provenance set",
            mailer(&json!({ "context": { "provenance": { "to": { "kind": "email", "source": "prompt" } } } })).to_string(),
            422,
            "field_not_allowed",
        ),
        (
            "a summary bringing grounds",
            mailer(&json!({ "context": { "session": { "summary": { "grounds": { "prompt": ["0123456789abcdef01234567"] } } } } })).to_string(),
            422,
            "field_not_allowed",
        ),
        (
            "a catalog path that is no path",
            mailer(&json!({ "action": { "annotations": { "mandate/amounts": ["a..b"] } } })).to_string(),
            422,
            "invalid_request",
        ),
        (
            "arguments nested 40 levels",
            mailer(&json!({ "arguments": { "a": nested_args } })).to_string(),
            422,
            "invalid_request",
        ),
        ("body nested 10000 levels", very_deep, 400, "invalid_json"),
        (
            "body over the default 1 MiB limit",
            over_default_limit,
            413,
            "body_too_large",
        ),
    ];
    for (name, body, status, code) in &json_cases {
        let reply = server.decide_raw(body.clone(), json_ct);
        assert!(
            reply.status == *status,
            "{name}: expected {status} {code}, got {} {}",
            reply.status,
            reply.body
        );
        reply.assert_error(*status, code);
        // A body left unread ends the connection, and the answer says so:
        // a client that reused it would lose its next request to the close.
        if *status == 413 {
            assert_eq!(
                reply.header("connection").as_deref(),
                Some("close"),
                "{name}"
            );
        }
    }

    // The messages say what to fix.
    let deep = server.decide(&mailer(&json!({ "arguments": { "a": nested_args } })));
    assert!(
        deep.json()["message"].as_str().unwrap().contains("32"),
        "{deep:?}"
    );

    let valid = mailer(&json!({})).to_string();
    server
        .decide_raw(valid.clone(), None)
        .assert_error(415, "unsupported_media_type");
    server
        .decide_raw(valid.clone(), Some("text/plain"))
        .assert_error(415, "unsupported_media_type");
    server
        .get("/v1/decide")
        .assert_error(405, "method_not_allowed");
    server
        .request(Method::DELETE, "/v1/health")
        .assert_error(405, "method_not_allowed");
    server.get("/v1/nope").assert_error(404, "not_found");
    server
        .request(Method::POST, "/v2/decide")
        .assert_error(404, "not_found");

    // Nothing was decided, nothing changed, and the server still works.
    let metrics = server.metrics();
    assert!(
        !metrics.contains("mandate_decisions_total{"),
        "a bad request was decided:\n{metrics}"
    );
    let after = server.health();
    assert_eq!(after["status"], "ok", "{after}");

    // A number Cedar cannot hold that the pack's schema does not declare
    // can matter to no policy: the call is decided as without it, and the
    // receipt keeps it as sent.
    let plain = server.decide(&mailer(&json!({}))).json();
    let number = server.decide(&mailer(&json!({ "arguments": { "amount": 0.123456 } })));
    assert_eq!(number.status, 200, "{number:?}");
    let number = number.json();
    assert_eq!(number["decision"], plain["decision"], "{number}");
    let receipt = server
        .get(&format!(
            "/v1/receipts/{}",
            number["decision_id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(
        receipt["receipt"]["arguments"]["amount"],
        json!(0.123456),
        "{receipt}"
    );
    assert_eq!(after["policies"], before["policies"]);
    assert_eq!(after["last_reload"], Value::Null);
    assert_decision(
        &server.decide_raw(valid, json_ct),
        "allow",
        &["declared-tools"],
    );
    assert_decision(
        &server.decide(&undeclared_tool()),
        "deny",
        &["undeclared-tool"],
    );
}

#[test]
fn request_data_of_the_wrong_type_is_denied_before_any_policy_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data")).start();
    // The example pack's schema declares `to?: String` and `cc?: Set<String>`.
    let mut listed = send_email("carol@example.com");
    listed["arguments"]["to"] = json!(["carol@example.com", "mallory@evil.example"]);
    let mut cc_string = send_email("carol@example.com");
    cc_string["arguments"]["cc"] = json!("mallory@evil.example");
    for (request, path) in [(listed, "`arguments.to`"), (cc_string, "`arguments.cc`")] {
        let v = server.decide(&request).decision();
        assert_eq!(v["decision"], "deny", "{v}");
        assert_eq!(v["policies"], json!([]), "{v}");
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{v}");
        assert_eq!(errors[0]["policy"], "", "{v}");
        assert!(
            errors[0]["message"].as_str().unwrap().starts_with(path),
            "{v}"
        );
    }
    // Attributes the schema does not declare are dropped, not an error.
    let mut extra = send_email("carol@example.com");
    extra["arguments"]["priority"] = json!([1, "high"]);
    assert_decision(&server.decide(&extra), "allow", &["declared-tools"]);
}

#[test]
fn max_body_bytes_flag_limits_the_body() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data"))
        .args(["--max-body-bytes", "2048"])
        .start();
    let request = mailer(&json!({}));
    server
        .decide_raw(padded(&request, 4096), Some("application/json"))
        .assert_error(413, "body_too_large");
    assert_decision(
        &server.decide_raw(padded(&request, 2048), Some("application/json")),
        "allow",
        &["declared-tools"],
    );
    assert_decision(&server.decide(&request), "allow", &["declared-tools"]);
}

#[test]
fn metrics_count_decisions_and_rejections_without_request_content() {
    const CANARY: &str = "canary-5f1d2c8e-do-not-export";
    const BODY_LIMIT: usize = 4096;
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data"))
        .args(["--max-body-bytes", &BODY_LIMIT.to_string()])
        .start();

    let mut canary_mail = send_email("carol@example.com");
    canary_mail["arguments"]["subject"] = json!(CANARY);
    let allowed = [
        mailer(&json!({})),
        canary_mail,
        mailer(&json!({ "context": { "task": { "labels": ["confidential"] } } })),
    ];
    for request in &allowed {
        assert_eq!(server.decide(request).decision()["decision"], "allow");
    }
    let mut canary_deny = send_email("mallory@evil.example");
    canary_deny["arguments"]["body"] = json!(CANARY);
    // `cc` must be a set: a type mismatch is a decision (deny), not a rejection.
    let mut mistyped = send_email("carol@example.com");
    mistyped["arguments"]["cc"] = json!(CANARY);
    for request in [undeclared_tool(), canary_deny, mistyped] {
        assert_eq!(server.decide(&request).decision()["decision"], "deny");
    }
    assert_eq!(
        server.decide(&destructive_delete()).decision()["decision"],
        "approval_required"
    );
    server
        .decide(&mailer(
            &json!({ "principal": { "id": "" }, "arguments": { "note": CANARY } }),
        ))
        .assert_error(422, "invalid_request");
    server
        .decide(&mailer(
            &json!({ "context": { "time": "2026-11-23T10:00:00Z" } }),
        ))
        .assert_error(422, "field_not_allowed");
    // Bodies rejected before they parse as a request are counted too.
    server
        .decide_raw(
            format!(r#"{{"principal": {{"id": "{CANARY}"}},"#),
            Some("application/json"),
        )
        .assert_error(400, "invalid_json");
    server
        .decide_raw(
            mailer(&json!({ "arguments": { "note": CANARY } })).to_string(),
            Some("text/plain"),
        )
        .assert_error(415, "unsupported_media_type");
    server
        .decide_raw(mailer(&json!({})).to_string(), None)
        .assert_error(415, "unsupported_media_type");
    server
        .decide_raw(
            padded(
                &mailer(&json!({ "arguments": { "note": CANARY } })),
                2 * BODY_LIMIT,
            ),
            Some("application/json"),
        )
        .assert_error(413, "body_too_large");
    server
        .decide(&mailer(&json!({ CANARY: "unknown top-level field" })))
        .assert_error(422, "invalid_request");
    // Not a decision request: not counted.
    server
        .get("/v1/decide")
        .assert_error(405, "method_not_allowed");

    let text = server.metrics();
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no `{series}` in:\n{text}"));
    assert_eq!(value(r#"mandate_decisions_total{decision="allow"}"#), 3.0);
    assert_eq!(value(r#"mandate_decisions_total{decision="deny"}"#), 3.0);
    assert_eq!(
        value(r#"mandate_decisions_total{decision="approval_required"}"#),
        1.0
    );
    assert_eq!(value("mandate_decision_duration_seconds_count"), 7.0);
    assert_eq!(
        value(r#"mandate_decision_duration_seconds_bucket{le="+Inf"}"#),
        7.0
    );
    // Every rejected decide request, by its error code: one empty principal id
    // and one unknown field are `invalid_request`.
    for (code, count) in [
        ("invalid_request", 2.0),
        ("field_not_allowed", 1.0),
        ("invalid_json", 1.0),
        ("unsupported_media_type", 2.0),
        ("body_too_large", 1.0),
    ] {
        assert_eq!(
            value(&format!(
                r#"mandate_requests_rejected_total{{error="{code}",front_end="http"}}"#
            )),
            count,
            "{code}"
        );
    }
    let rejected: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mandate_requests_rejected_total{"))
        .collect();
    assert_eq!(rejected.len(), 5, "unexpected rejection series:\n{text}");
    assert_eq!(value(r#"mandate_policies{set="base"}"#), 5.0);
    assert_eq!(value(r#"mandate_policies{set="approval"}"#), 4.0);

    assert!(
        !text.contains(CANARY),
        "metrics leak request content:\n{text}"
    );
    assert!(
        !text.contains("mallory"),
        "metrics leak request content:\n{text}"
    );
    let logs = server.log_lines();
    assert!(
        !logs.iter().any(|l| l.contains(CANARY)),
        "logs leak request content:\n{}",
        logs.join("\n")
    );
}

#[test]
fn policies_hot_reload_and_a_bad_edit_keeps_the_old_set() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = pack_copy(tmp.path(), "pack");
    let server = Launch::serve(&tmp.path().join("data"))
        .arg("--policies")
        .arg(&pack)
        .args(["--reload-interval-ms", "100"])
        .start();
    let read_inbox = mailer(&json!({}));
    let carol = send_email("carol@example.com");
    assert_decision(&server.decide(&read_inbox), "allow", &["declared-tools"]);
    let initial = server.health();
    assert_eq!(initial["status"], "ok");
    assert_eq!(initial["last_reload"], Value::Null);

    // A change that turns an allow into a deny takes effect without a restart.
    util::write_atomic(&pack.join("block.cedar"), BLOCK_READ_INBOX);
    let denied = util::poll_until(RELOAD_TIMEOUT, "the new policy to deny", || {
        let v = server.decide(&read_inbox).decision();
        if v["decision"] == "deny" {
            Ok(v)
        } else {
            Err(v)
        }
    });
    assert_eq!(denied["policies"], json!(["no-read-inbox"]));
    assert_eq!(denied["reasons"], json!(["read_inbox is switched off"]));
    let reloaded = server.health();
    assert_eq!(reloaded["status"], "ok", "{reloaded}");
    assert_eq!(reloaded["last_reload"]["ok"], true, "{reloaded}");
    assert_eq!(reloaded["policies"]["base"], 6, "{reloaded}");
    assert_ne!(
        reloaded["policies"]["version"],
        initial["policies"]["version"]
    );

    // An invalid file is rejected as a whole; the set in force stays.
    let broken = pack.join("broken.cedar");
    util::write_atomic(&broken, BROKEN);
    let degraded = util::poll_until(RELOAD_TIMEOUT, "health to say degraded", || {
        let h = server.health();
        if h["status"] == "degraded" {
            Ok(h)
        } else {
            Err(h)
        }
    });
    assert_eq!(degraded["last_reload"]["ok"], false, "{degraded}");
    assert_eq!(degraded["policies"], reloaded["policies"], "{degraded}");
    let problems = degraded["last_reload"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.cedar"))
            && p["line"] == 3),
        "no problem names broken.cedar line 3: {degraded}"
    );
    assert_health_matches_openapi(&server, &degraded);
    assert_decision(&server.decide(&read_inbox), "deny", &["no-read-inbox"]);
    assert_decision(&server.decide(&carol), "allow", &["declared-tools"]);
    assert_decision(
        &server.decide(&destructive_delete()),
        "approval_required",
        &["destructive-needs-approval"],
    );
    // The log line is read from the server's stderr by another thread: it
    // may arrive after the health endpoint already says degraded.
    util::poll_until(
        RELOAD_TIMEOUT,
        "the log to name the file and line (broken.cedar:3)",
        || {
            let logs = server.log_lines();
            if logs.iter().any(|l| l.contains("broken.cedar:3")) {
                Ok(())
            } else {
                Err(logs.join("\n"))
            }
        },
    );

    // Fixing the file puts the new set in force and clears the degradation.
    util::write_atomic(
        &broken,
        "@id(\"fixed\")\n@reason(\"fixed\")\nforbid (principal, action, resource) when { resource.name == \"wipe_mailbox\" };\n",
    );
    let fixed = util::poll_until(RELOAD_TIMEOUT, "health to say ok again", || {
        let h = server.health();
        if h["status"] == "ok" { Ok(h) } else { Err(h) }
    });
    assert_eq!(fixed["last_reload"]["ok"], true, "{fixed}");
    assert_eq!(fixed["last_reload"]["problems"], json!([]), "{fixed}");
    assert_eq!(fixed["policies"]["base"], 7, "{fixed}");
    assert_decision(&server.decide(&read_inbox), "deny", &["no-read-inbox"]);
    assert_decision(&server.decide(&carol), "allow", &["declared-tools"]);

    let text = server.metrics();
    assert!(
        metric(&text, r#"mandate_policy_reloads_total{result="ok"}"#) >= Some(2.0),
        "{text}"
    );
    assert!(
        metric(&text, r#"mandate_policy_reloads_total{result="error"}"#) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"mandate_policies{set="base"}"#),
        Some(7.0),
        "{text}"
    );
}

#[test]
fn startup_with_an_invalid_pack_exits_2_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = pack_copy(tmp.path(), "pack");
    std::fs::write(pack.join("broken.cedar"), BROKEN).unwrap();
    let (status, stderr) = Launch::serve(&tmp.path().join("data"))
        .arg("--policies")
        .arg(&pack)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("broken.cedar:3:"), "stderr:\n{stderr}");
}

#[test]
fn startup_with_an_unreadable_policy_directory_exits_2_with_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-pack");
    let (status, stderr) = Launch::serve(&tmp.path().join("data"))
        .arg("--policies")
        .arg(&missing)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{stderr}");
    assert!(
        lines[0].starts_with("error: cannot read `") && lines[0].contains("no-such-pack"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn an_unreadable_policy_directory_on_reload_degrades_health_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = pack_copy(tmp.path(), "pack");
    let server = Launch::serve(&tmp.path().join("data"))
        .arg("--policies")
        .arg(&pack)
        .args(["--reload-interval-ms", "100"])
        .start();
    let away = tmp.path().join("pack.away");
    std::fs::rename(&pack, &away).unwrap();
    let degraded = util::poll_until(RELOAD_TIMEOUT, "health to say degraded", || {
        let h = server.health();
        if h["status"] == "degraded" {
            Ok(h)
        } else {
            Err(h)
        }
    });
    let problems = degraded["last_reload"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{degraded}");
    assert_eq!(
        problems[0]["file"],
        json!(pack.to_str().unwrap()),
        "{degraded}"
    );
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot read"),
        "{degraded}"
    );
    assert_health_matches_openapi(&server, &degraded);
    // The pack in force still decides.
    assert_decision(
        &server.decide(&mailer(&json!({}))),
        "allow",
        &["declared-tools"],
    );

    // Recorded (and logged) once, not on every tick: after several more
    // intervals the same report stands and one failed reload was counted.
    std::thread::sleep(Duration::from_millis(800));
    let warned = server
        .log_messages()
        .iter()
        .filter(|m| m.starts_with("cannot read the policy directory"))
        .count();
    assert_eq!(warned, 1);
    assert_eq!(server.health()["last_reload"], degraded["last_reload"]);
    let text = server.metrics();
    assert_eq!(
        metric(&text, r#"mandate_policy_reloads_total{result="error"}"#),
        Some(1.0),
        "{text}"
    );

    // The same pack, readable again, clears the degradation without a change.
    std::fs::rename(&away, &pack).unwrap();
    util::poll_until(RELOAD_TIMEOUT, "health to recover", || {
        let h = server.health();
        if h["status"] == "ok" { Ok(h) } else { Err(h) }
    });
    assert_decision(
        &server.decide(&mailer(&json!({}))),
        "allow",
        &["declared-tools"],
    );

    // Unreadable again after a success: reported again.
    std::fs::rename(&pack, &away).unwrap();
    util::poll_until(RELOAD_TIMEOUT, "health to say degraded again", || {
        let h = server.health();
        if h["status"] == "degraded" {
            Ok(h)
        } else {
            Err(h)
        }
    });

    // A readable, changed pack loads and clears it too.
    std::fs::rename(&away, &pack).unwrap();
    util::write_atomic(&pack.join("block.cedar"), BLOCK_READ_INBOX);
    util::poll_until(RELOAD_TIMEOUT, "health to say ok again", || {
        let h = server.health();
        if h["status"] == "ok" { Ok(h) } else { Err(h) }
    });
    assert_decision(
        &server.decide(&mailer(&json!({}))),
        "deny",
        &["no-read-inbox"],
    );
}

/// What the config tests set: a pack copy with `read_inbox` blocked (so a
/// decision shows which pack is in force) and a data directory.
struct Custom {
    tmp: tempfile::TempDir,
    pack: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Custom {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pack = pack_copy(tmp.path(), "pack");
        std::fs::write(pack.join("block.cedar"), BLOCK_READ_INBOX).unwrap();
        let data = tmp.path().join("data");
        Self { tmp, pack, data }
    }

    /// A config file with `lines` plus `log_format = "json"` (the harness reads JSON logs).
    fn config(&self, lines: &[(&str, Value)]) -> std::path::PathBuf {
        let mut text = String::from("log_format = \"json\"\n");
        for (key, value) in lines {
            // JSON strings and integers are valid TOML values.
            text.push_str(&format!("{key} = {value}\n"));
        }
        let path = self.tmp.path().join("mandate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path_value(path: &Path) -> Value {
        json!(path.to_str().unwrap())
    }

    /// The server runs this pack, this data dir, a 2048-byte body limit, and
    /// does not listen on the default port.
    fn assert_in_effect(&self, server: &Server) {
        assert_ne!(server.addr().port(), 8181);
        let health = server.health();
        assert_eq!(
            health["policies"]["directory"],
            Self::path_value(&self.pack),
            "{health}"
        );
        assert!(self.data.is_dir(), "the data directory was not created");
        assert!(
            !self.data.join("policies").exists(),
            "the example pack was seeded although --policies is set"
        );
        let request = mailer(&json!({}));
        assert_decision(&server.decide(&request), "deny", &["no-read-inbox"]);
        assert_decision(
            &server.decide_raw(padded(&request, 2000), Some("application/json")),
            "deny",
            &["no-read-inbox"],
        );
        server
            .decide_raw(padded(&request, 4096), Some("application/json"))
            .assert_error(413, "body_too_large");
    }
}

#[test]
fn config_file_sets_listen_body_limit_and_policies() {
    let custom = Custom::new();
    let config = custom.config(&[
        ("listen", json!("127.0.0.1:0")),
        ("max_body_bytes", json!(2048)),
        ("policies", Custom::path_value(&custom.pack)),
        ("data_dir", Custom::path_value(&custom.data)),
    ]);
    let server = Launch::bare().arg("--config").arg(&config).start();
    custom.assert_in_effect(&server);
}

#[test]
fn environment_sets_listen_data_dir_policies_and_body_limit() {
    let custom = Custom::new();
    let server = Launch::bare()
        .env("MANDATE_LISTEN", "127.0.0.1:0")
        .env("MANDATE_MAX_BODY_BYTES", "2048")
        .env("MANDATE_POLICIES", &custom.pack)
        .env("MANDATE_DATA_DIR", &custom.data)
        .env("MANDATE_LOG_FORMAT", "json")
        // Other tools' variables (here Kubernetes service links) are not settings.
        .env("MANDATE_SERVICE_HOST", "10.0.0.1")
        .env("MANDATE_PORT", "tcp://10.0.0.1:8181")
        .start();
    custom.assert_in_effect(&server);
}

#[test]
fn listen_takes_a_host_name_from_the_flag_the_environment_and_the_config_file() {
    // `localhost` resolves to loopback; IPv4 first, where 127.0.0.1 would listen.
    let flag = tempfile::tempdir().unwrap();
    let server = Launch::bare()
        .args([
            "--listen",
            "localhost:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(flag.path())
        .start();
    assert_eq!(server.addr().ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(server.health()["status"], "ok");

    let env = tempfile::tempdir().unwrap();
    let server = Launch::bare()
        .env("MANDATE_LISTEN", "localhost:0")
        .env("MANDATE_LOG_FORMAT", "json")
        .env("MANDATE_DATA_DIR", env.path())
        .start();
    assert_eq!(server.addr().ip(), std::net::Ipv4Addr::LOCALHOST);

    let custom = Custom::new();
    let config = custom.config(&[
        ("listen", json!("localhost:0")),
        ("data_dir", Custom::path_value(&custom.data)),
    ]);
    let server = Launch::bare().arg("--config").arg(&config).start();
    assert_eq!(server.addr().ip(), std::net::Ipv4Addr::LOCALHOST);

    // What is not HOST:PORT is refused before anything starts, saying so.
    let bad = tempfile::tempdir().unwrap();
    let (status, stderr) = Launch::bare()
        .args(["--listen", "localhost", "--data-dir"])
        .arg(bad.path().join("data"))
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
    assert!(!bad.path().join("data").exists());
}

#[test]
fn flag_beats_env_beats_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("mandate.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nmax_body_bytes = 1024\n",
    )
    .unwrap();
    let request = mailer(&json!({}));
    let small = request.to_string();
    let medium = padded(&request, 1536);
    let large = padded(&request, 4096);
    let ct = Some("application/json");
    let launch = || {
        Launch::serve(&tmp.path().join("data"))
            .arg("--config")
            .arg(&config)
    };

    // File alone: 1024 (not the 1 MiB default).
    let server = launch().start();
    assert_eq!(
        server.decide_raw(small.clone(), ct).decision()["decision"],
        "allow"
    );
    server
        .decide_raw(medium.clone(), ct)
        .assert_error(413, "body_too_large");
    drop(server);

    // Environment over file: 8192.
    let server = launch().env("MANDATE_MAX_BODY_BYTES", "8192").start();
    assert_eq!(
        server.decide_raw(large.clone(), ct).decision()["decision"],
        "allow"
    );
    drop(server);

    // Flag over environment and file: 2048.
    let server = launch()
        .env("MANDATE_MAX_BODY_BYTES", "8192")
        .args(["--max-body-bytes", "2048"])
        .start();
    assert_eq!(
        server.decide_raw(medium, ct).decision()["decision"],
        "allow"
    );
    server
        .decide_raw(large, ct)
        .assert_error(413, "body_too_large");
}

#[test]
fn unknown_config_key_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("mandate.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_body_size = 2048\n").unwrap();
    let (status, stderr) = Launch::serve(&tmp.path().join("data"))
        .arg("--config")
        .arg(&config)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("max_body_size"), "stderr:\n{stderr}");
}

#[test]
fn first_start_creates_the_data_dir_and_seeds_the_example_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nested").join("data");
    let seeded = data.join("policies");
    let server = Launch::serve(&data).start();
    assert!(
        server
            .log_messages()
            .iter()
            .any(|m| m.starts_with("wrote the example policy pack")),
        "{:?}",
        server.log_lines()
    );
    let health = server.health();
    assert_eq!(
        health["policies"]["directory"],
        json!(seeded.to_str().unwrap())
    );
    assert_eq!(health["policies"]["base"], 5);
    assert_eq!(health["policies"]["approval"], 4);
    for name in [
        "schema.cedarschema",
        "tools.cedar",
        "data.cedar",
        "recipients.cedar",
        "approvals.cedar",
        "tests/mailer.json",
    ] {
        let expected = std::fs::read_to_string(example_pack().join(name)).unwrap();
        let actual = std::fs::read_to_string(seeded.join(name))
            .unwrap_or_else(|e| panic!("{name} was not seeded: {e}"));
        assert_eq!(actual, expected, "{name} differs from examples/policies");
    }
    drop(server);

    // A second start keeps the operator's edits and seeds nothing.
    std::fs::write(seeded.join("block.cedar"), BLOCK_READ_INBOX).unwrap();
    let server = Launch::serve(&data).start();
    assert!(
        !server
            .log_messages()
            .iter()
            .any(|m| m.starts_with("wrote the example policy pack")),
        "{:?}",
        server.log_lines()
    );
    assert_decision(
        &server.decide(&mailer(&json!({}))),
        "deny",
        &["no-read-inbox"],
    );
}

#[test]
fn seeding_never_overwrites_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seeded = data.join("policies");
    // An operator's schema and tests are in place before any policy.
    let schema = format!(
        "// mine\n{}",
        std::fs::read_to_string(example_pack().join("schema.cedarschema")).unwrap()
    );
    let tests = r#"{"cases": []}"#;
    std::fs::create_dir_all(seeded.join("tests")).unwrap();
    std::fs::write(seeded.join("schema.cedarschema"), &schema).unwrap();
    std::fs::write(seeded.join("tests/mailer.json"), tests).unwrap();

    let server = Launch::serve(&data).start();
    assert!(
        server
            .log_messages()
            .iter()
            .any(|m| m.starts_with("wrote the example policy pack")),
        "{:?}",
        server.log_lines()
    );
    assert_eq!(
        std::fs::read_to_string(seeded.join("schema.cedarschema")).unwrap(),
        schema
    );
    assert_eq!(
        std::fs::read_to_string(seeded.join("tests/mailer.json")).unwrap(),
        tests
    );
    for name in [
        "tools.cedar",
        "data.cedar",
        "recipients.cedar",
        "approvals.cedar",
    ] {
        assert_eq!(
            std::fs::read_to_string(seeded.join(name)).unwrap(),
            std::fs::read_to_string(example_pack().join(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(server.health()["policies"]["base"], 5);
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at `{}`)", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the OpenAPI document: {errors:?}\n{instance}"
    );
}

fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
}

fn assert_health_matches_openapi(server: &Server, health: &Value) {
    let doc = server.get("/v1/openapi.json").json();
    let validator = openapi_validator(&doc, response_schema(&doc, "/v1/health", "get", "200"));
    assert_valid(&validator, health, "the health body");
}

#[test]
fn openapi_lists_the_served_routes_and_matches_real_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data"))
        .args(["--max-body-bytes", "4096"])
        .start();
    let reply = server.get("/v1/openapi.json");
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );

    // Exactly the routes the server serves, and it serves them all.
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = [
        ("/v1/decide", "post"),
        ("/v1/decisions/{id}/result", "post"),
        ("/v1/tasks", "post"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/tasks/{id}", "delete"),
        ("/v1/tasks/{id}/delegate", "post"),
        ("/v1/revocations", "get"),
        ("/v1/tasks", "get"),
        ("/v1/approvals", "get"),
        ("/v1/approvals/{id}", "get"),
        ("/v1/approvals/{id}/approve", "post"),
        ("/v1/approvals/{id}/deny", "post"),
        ("/v1/approvals/{id}/withdraw", "post"),
        ("/v1/approvers/me", "get"),
        ("/v1/receipts", "get"),
        ("/v1/token", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-protected-resource", "get"),
        ("/v1/checkpoint", "get"),
        ("/v1/receipts/{decision_id}", "get"),
        ("/v1/proofs/consistency", "get"),
        ("/v1/health", "get"),
        ("/v1/openapi.json", "get"),
        ("/metrics", "get"),
    ]
    .iter()
    .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
    .collect();
    assert_eq!(listed, served);
    let first = server.decide(&mailer(&json!({}))).json();
    let decision_id = first["decision_id"].as_str().unwrap();
    for (path, method) in &listed {
        let path = match path.as_str() {
            "/v1/receipts/{decision_id}" => format!("/v1/receipts/{decision_id}"),
            "/v1/proofs/consistency" => "/v1/proofs/consistency?from=0&to=1".to_owned(),
            other => other.replace("{id}", "some-task"),
        };
        let path = &path;
        let reply = match method.as_str() {
            "post" if path == "/v1/decide" => server.decide(&mailer(&json!({}))),
            "get" => server.get(path),
            other => server.request(
                Method::from_bytes(other.to_uppercase().as_bytes()).unwrap(),
                path,
            ),
        };
        if path == "/v1/approvals/some-task" && method == "get" {
            // Anyone may ask an approval's status by its id.
            reply.assert_error(404, "not_found");
        } else if path == "/v1/approvals/some-task/withdraw" {
            // The requester's, not an approver's, and it needs no body.
            reply.assert_error(404, "not_found");
        } else if path.starts_with("/v1/approv")
            || path == "/v1/receipts"
            || (path == "/v1/tasks" && method == "get")
        {
            // No approver is configured here: the approver's endpoints fail
            // closed (tests/approvals.rs covers them with approvers).
            reply.assert_error(401, "no_approvers");
        } else if path.starts_with("/v1/tasks") || path.starts_with("/v1/decisions") {
            // No identity issuer is configured here: every task endpoint
            // fails closed (tests/tasks.rs covers them with issuers).
            reply.assert_error(401, "no_identity_issuer");
        } else if path == "/v1/token" {
            // An OAuth token request without its form (tests/token_exchange.rs).
            assert_eq!(reply.status, 400, "{method} {path}: {}", reply.body);
            assert_eq!(reply.json()["error"], "invalid_request", "{}", reply.body);
        } else {
            assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        }
        server
            .request(Method::PUT, path)
            .assert_error(405, "method_not_allowed");
    }

    // Real decisions match the 200 schema of /v1/decide.
    let decision = openapi_validator(&doc, response_schema(&doc, "/v1/decide", "post", "200"));
    assert!(
        !decision.is_valid(&json!({ "decision": "maybe" })),
        "the validator accepts anything"
    );
    let accepted = [
        mailer(&json!({})),
        undeclared_tool(),
        destructive_delete(),
        after_untrusted_content(),
    ];
    for request in &accepted {
        let v = server.decide(request).decision();
        assert_valid(&decision, &v, "a decision response");
    }

    // The requests the server accepted match the request body schema.
    let body = &doc["paths"]["/v1/decide"]["post"]["requestBody"];
    assert_eq!(body["required"], true);
    let request_schema = openapi_validator(&doc, &body["content"]["application/json"]["schema"]);
    for request in &accepted {
        assert_valid(&request_schema, request, "an accepted request");
    }
    for rejected in [
        mailer(&json!({ "principal": null })),
        mailer(&json!({ "decision": "allow" })),
        mailer(&json!({ "principal": { "id": 42 } })),
    ] {
        assert!(
            !request_schema.is_valid(&rejected),
            "schema accepts {rejected}"
        );
        server
            .decide(&rejected)
            .assert_error(422, "invalid_request");
    }

    // Real error bodies match the schema declared for their status.
    let valid = mailer(&json!({})).to_string();
    let errors = [
        ("400", server.decide_raw("{", Some("application/json"))),
        (
            "413",
            server.decide_raw(padded(&mailer(&json!({})), 8192), Some("application/json")),
        ),
        ("415", server.decide_raw(valid, None)),
        (
            "422",
            server.decide(&mailer(&json!({ "principal": { "id": "" } }))),
        ),
    ];
    for (status, reply) in &errors {
        assert_eq!(reply.status.to_string(), *status, "{}", reply.body);
        let validator =
            openapi_validator(&doc, response_schema(&doc, "/v1/decide", "post", status));
        assert_valid(&validator, &reply.json(), &format!("a {status} error body"));
    }
    let error_body = openapi_validator(&doc, &json!({ "$ref": "#/components/schemas/ErrorBody" }));
    for reply in [server.get("/nope"), server.get("/v1/decide")] {
        assert_valid(&error_body, &reply.json(), "a 404/405 error body");
    }

    // A 500 is declared too (a caller must deny on it), with an ErrorBody.
    let internal = response_schema(&doc, "/v1/decide", "post", "500");
    assert!(internal.is_object(), "no 500 for /v1/decide");
    let internal = openapi_validator(&doc, internal);
    let body = json!({
        "error": "internal",
        "message": "mandate failed to decide; treat this call as denied"
    });
    assert_valid(&internal, &body, "a 500 error body");

    // /metrics is declared with the media type it is served with.
    let declared: Vec<&String> = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(declared, ["application/openmetrics-text"]);
    let served = server.get("/metrics").content_type.unwrap();
    assert!(
        served.starts_with("application/openmetrics-text;"),
        "{served}"
    );

    // The health body matches its schema.
    let health = server.health();
    assert_health_matches_openapi(&server, &health);
}

/// A fetch of a web page as the mail assistant, in the session the server
/// keeps (`context.session.id`).
fn in_session(mut request: Value, session: &str) -> Value {
    util::merge(
        &mut request,
        &json!({ "context": { "session": { "id": session } } }),
    );
    request
}

fn web_fetch() -> Value {
    mailer(&json!({
        "action": {
            "server": "web",
            "tool": "fetch_url",
            "annotations": { "readOnlyHint": true, "openWorldHint": true }
        },
        "arguments": { "url": "https://example.org/page" }
    }))
}

/// Decisions naming `context.session.id` share the agent's session on the
/// server: an allowed open-world fetch labels it `untrusted` at once (no
/// result is ever reported), so the next mail, sent as another request
/// (another gateway), waits for a person; the receipts name the session.
/// Another session of the agent, and the same id under another agent, stay
/// clean; a request naming a session may not bring its own.
#[test]
fn an_agents_session_is_kept_by_the_server_and_tainted_as_a_fetch_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::serve(&tmp.path().join("data")).start();

    let mail = in_session(send_email("carol@example.com"), "run-1");
    assert_eq!(server.decide(&mail).decision()["decision"], "allow");
    let fetched = server.decide(&in_session(web_fetch(), "run-1")).decision();
    assert_eq!(fetched["decision"], "allow", "{fetched}");
    let receipt = server
        .get(&format!(
            "/v1/receipts/{}",
            fetched["decision_id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(receipt["receipt"]["session"], "run-1", "{receipt}");

    let stepped = server.decide(&mail).decision();
    assert_eq!(stepped["decision"], "approval_required", "{stepped}");
    assert_eq!(stepped["policies"], json!(["untrusted-content-step-up"]));

    // The same agent's other session, and another agent's `run-1`.
    let other_run = in_session(send_email("carol@example.com"), "run-2");
    assert_eq!(server.decide(&other_run).decision()["decision"], "allow");
    let mut other_agent = mail.clone();
    other_agent["principal"]["id"] = json!("spiffe://example.org/agent/other");
    assert_eq!(server.decide(&other_agent).decision()["decision"], "allow");
    // Without a session id the request's own (empty) session is used, and
    // its receipt names none.
    let own = server.decide(&send_email("carol@example.com")).decision();
    assert_eq!(own["decision"], "allow");
    let receipt = server
        .get(&format!(
            "/v1/receipts/{}",
            own["decision_id"].as_str().unwrap()
        ))
        .json();
    assert!(receipt["receipt"].get("session").is_none(), "{receipt}");

    let mut both = mail.clone();
    both["context"]["session"]["labels"] = json!([]);
    both["context"]["session"]["summary"] = json!({});
    server.decide(&both).assert_error(422, "field_not_allowed");
    for bad in ["", "a b", "run\u{2011}1", "x".repeat(129).as_str()] {
        server
            .decide(&in_session(send_email("carol@example.com"), bad))
            .assert_error(422, "invalid_request");
    }
}

/// `mandate callers token` as JSON: (name, token, digest).
fn new_caller(name: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["callers", "token", "--name", name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(made["token"].as_str().unwrap().starts_with("mnd_caller_"));
    (
        made["token"].as_str().unwrap().to_owned(),
        made["token_sha256"].as_str().unwrap().to_owned(),
    )
}

/// Beyond loopback, by default, a decision without a task credential needs
/// a configured caller's token: without one it is `401 caller_required`
/// and decides nothing; the start-up log says so.
#[test]
fn beyond_loopback_decisions_without_a_credential_need_a_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Launch::bare()
        .args([
            "--listen",
            "0.0.0.0:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .start();
    let refused = server.decide(&mailer(&json!({})));
    refused.assert_error(401, "caller_required");
    assert!(refused.header("www-authenticate").is_some());
    assert_eq!(
        server.health()["receipts"]["size"],
        0,
        "nothing was decided"
    );
    assert!(
        server
            .log_messages()
            .iter()
            .any(|m| m.contains("only configured callers")),
        "{:?}",
        server.log_messages()
    );
}

/// With `decide_access = "callers"`, a configured caller's token lets an
/// enforcement point decide without a task credential; no token, or an
/// unknown one, is refused.
#[test]
fn a_configured_caller_decides_without_a_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let (token, digest) = new_caller("desktop-gateway");
    let config = tmp.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!("decide_access = \"callers\"\n[[callers]]\nname = \"desktop-gateway\"\ntoken_sha256 = \"{digest}\"\n"),
    )
    .unwrap();
    let server = Launch::serve(&tmp.path().join("data"))
        .arg("--config")
        .arg(&config)
        .start();
    let request = mailer(&json!({}));
    server.decide(&request).assert_error(401, "caller_required");
    let call = |token: &str| server.call(Method::POST, "/v1/decide", Some(token), Some(&request));
    let allowed = call(&token);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.json()["decision"], "allow");
    // Any other token is taken for a task credential, which this server
    // (no identity issuer) cannot have issued.
    call("mnd_caller_not-a-caller").assert_error(401, "no_identity_issuer");
}

/// The sizes of the files in `dir` (not recursive), added up.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A receipt keeps a copy of the arguments only up to
/// `receipt_max_argument_bytes`: beyond it, the digest and the size. So
/// twenty decisions with arguments near the body limit cost the disk a
/// small fraction of what they sent.
#[test]
fn large_arguments_are_kept_as_a_digest_and_a_size_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Launch::serve(&data).start();
    let before = dir_bytes(&data);
    let big = "x".repeat(900 * 1024);
    let mut ids = Vec::new();
    for n in 0..20 {
        let request = mailer(&json!({ "arguments": { "n": n, "blob": big } }));
        let decided = server.decide(&request).decision();
        assert_eq!(decided["decision"], "allow", "{decided}");
        ids.push(decided["decision_id"].as_str().unwrap().to_owned());
    }
    let receipt = server.get(&format!("/v1/receipts/{}", ids[0])).json()["receipt"].clone();
    assert!(receipt.get("arguments").is_none(), "{receipt}");
    assert!(receipt["arguments_omitted_bytes"].as_u64().unwrap() > 900 * 1024);
    assert!(
        receipt["arguments_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let grown = dir_bytes(&data) - before;
    assert!(
        grown < 2 * 1024 * 1024,
        "20 decisions of 900 KiB arguments grew the data directory by {grown} bytes"
    );
    // A small copy is kept as it was.
    let small = server
        .decide(&mailer(&json!({ "arguments": { "a": 1 } })))
        .decision();
    let receipt = server
        .get(&format!(
            "/v1/receipts/{}",
            small["decision_id"].as_str().unwrap()
        ))
        .json()["receipt"]
        .clone();
    assert_eq!(receipt["arguments"], json!({ "a": 1 }));
    assert!(receipt.get("arguments_omitted_bytes").is_none());
}

#[test]
fn a_second_server_on_a_data_directory_in_use_refuses_to_start_and_names_the_holder() {
    let data = tempfile::tempdir().unwrap();
    let first = Launch::serve(data.path()).start();
    let (status, stderr) = Launch::serve(data.path()).run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid())) && stderr.contains("mandate.lock"),
        "{stderr}"
    );
    // The refused start changed nothing for the one that runs.
    assert_eq!(first.get("/v1/health").status, 200);
    assert_eq!(first.decide(&send_email("carol@example.com")).status, 200);

    // A crash leaves the file but not the lock: the next start proceeds.
    first.kill();
    let second = Launch::serve(data.path()).start();
    let receipt = second.decide(&send_email("carol@example.com")).json();
    assert_eq!(receipt["receipt_index"], 1, "{receipt}");
}

#[test]
fn connection_limits_come_from_the_environment_and_bad_ones_stop_the_start() {
    let data = tempfile::tempdir().unwrap();
    let (status, stderr) = Launch::serve(data.path())
        .env("MANDATE_IDLE_TIMEOUT_MS", "1000")
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`idle_timeout_ms` must be more than 60000"),
        "{stderr}"
    );
    let (status, stderr) = Launch::serve(data.path())
        .env("MANDATE_MAX_CONNECTIONS", "0")
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");

    let server = Launch::serve(data.path())
        .env("MANDATE_MAX_CONNECTIONS", "4")
        .env("MANDATE_HEADER_TIMEOUT_MS", "2000")
        .env("MANDATE_BODY_TIMEOUT_MS", "2000")
        .start();
    assert_eq!(server.get("/v1/health").status, 200);
    assert_eq!(server.decide(&send_email("carol@example.com")).status, 200);
}

/// Forbids on a tool, a server and an agent, and their look-alikes (other
/// scripts, fullwidth forms, invisible and bidirectional characters, odd
/// whitespace, case, percent-encoding): the real names are denied by their
/// forbid; every look-alike is refused with a 422 that says what is wrong,
/// and leaves no receipt.
#[test]
fn look_alike_names_are_refused_before_any_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = pack_copy(tmp.path(), "pack");
    std::fs::write(
        pack.join("names.cedar"),
        r#"@id("no-wipe") @reason("wiping is off")
forbid (principal, action, resource == Mandate::Tool::"mail/wipe_mailbox");
@id("no-bank") @reason("no banking")
forbid (principal, action, resource in Mandate::Server::"bank");
@id("no-evil") @reason("not this agent")
forbid (principal == Mandate::Agent::"spiffe://example.org/agent/evil", action, resource);
"#,
    )
    .unwrap();
    let server = Launch::serve(&tmp.path().join("data"))
        .arg("--policies")
        .arg(&pack)
        .start();
    let with_tool = |tool: &str| {
        mailer(&json!({
            "action": { "tool": tool },
            "context": { "task": { "tools": [tool] } }
        }))
    };
    let with_server = |server: &str| mailer(&json!({ "action": { "server": server } }));
    let with_agent = |agent: &str| mailer(&json!({ "principal": { "id": agent } }));

    assert_decision(
        &server.decide(&with_tool("wipe_mailbox")),
        "deny",
        &["no-wipe"],
    );
    assert_decision(&server.decide(&with_server("bank")), "deny", &["no-bank"]);
    assert_decision(
        &server.decide(&with_agent("spiffe://example.org/agent/evil")),
        "deny",
        &["no-evil"],
    );
    let decided = server.health()["receipts"]["size"].clone();
    assert_eq!(decided, 3);

    let look_alikes = [
        with_tool("wip\u{435}_mailbox"),
        with_tool("\u{ff57}ipe_mailbox"),
        with_tool("wipe\u{200b}_mailbox"),
        with_tool("wipe_mailbox "),
        with_tool("wipe_mailbox\u{a0}"),
        with_tool("wipe_mail\u{ad}box"),
        with_tool("\u{202e}xobliam_epiw"),
        with_tool("wipe%5Fmailbox"),
        with_server("BANK"),
        with_server("b\u{430}nk"),
        with_server("bank\u{feff}"),
        with_agent("spiffe://example.org/agent/\u{435}vil"),
        with_agent("SPIFFE://example.org/agent/evil"),
        with_agent("spiffe://example.org/agent/%65vil"),
        with_agent("spiffe://example.org/agent/evil\u{2066}"),
        mailer(&json!({ "context": { "task": { "labels": ["Confidential"] } } })),
        mailer(&json!({ "principal": { "on_behalf_of": "alice@example.com\u{200b}" } })),
    ];
    for request in &look_alikes {
        let reply = server.decide(request);
        reply.assert_error(422, "invalid_request");
        let message = reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            [" has ", " is not a SPIFFE ID"]
                .iter()
                .any(|m| message.contains(m)),
            "{request}: {message}"
        );
    }
    assert_eq!(
        server.health()["receipts"]["size"],
        decided,
        "a refused look-alike left a receipt"
    );
}
