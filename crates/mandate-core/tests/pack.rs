//! The core's public interface, used as a caller would.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;

use chrono::{DateTime, Utc};
use mandate_core::testing::TestSuite;
use mandate_core::{CallRequest, Decision, DecisionRequest, PolicyPack, PolicySource, Severity};
use serde_json::{Value, json};

fn example_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies"
    ))
}

fn example_pack() -> PolicyPack {
    let dir = example_dir();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            sources.push(PolicySource::new(
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let schema = std::fs::read_to_string(dir.join("schema.cedarschema")).unwrap();
    PolicyPack::load(
        &sources,
        Some(&PolicySource::new("schema.cedarschema", schema)),
    )
    .unwrap()
}

fn call(v: Value) -> CallRequest {
    CallRequest::try_from(serde_json::from_value::<DecisionRequest>(v).unwrap()).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .into()
}

#[test]
fn example_pack_passes_its_own_tests() {
    let pack = example_pack();
    let text = std::fs::read_to_string(example_dir().join("tests/mailer.json")).unwrap();
    let results = TestSuite::parse(&text).unwrap().run(&pack, now());
    assert!(results.len() >= 10);
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}: {}", r.name, r.message))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_failing_test_case_is_reported_as_failed() {
    let pack = example_pack();
    let suite = TestSuite::parse(
        r#"{"cases": [{"name": "wrong", "expect": "allow", "request": {
            "principal": {"id": "a"}, "action": {"server": "s", "tool": "nope"}}}]}"#,
    )
    .unwrap();
    let results = suite.run(&pack, now());
    assert!(!results[0].passed);
    assert_eq!(results[0].actual, Some(Decision::Deny));
    assert!(
        results[0].message.contains("expected allow, got deny"),
        "{}",
        results[0].message
    );
}

fn load(policy: &str, schema: Option<&str>) -> Result<PolicyPack, mandate_core::LoadError> {
    let schema = schema.map(|s| PolicySource::new("schema.cedarschema", s));
    PolicyPack::load(&[PolicySource::new("p.cedar", policy)], schema.as_ref())
}

#[test]
fn an_erroring_forbid_makes_a_deny_not_an_allow() {
    // `n + 1` overflows for the largest Long: Cedar raises an error in the
    // forbid and skips it, which alone would allow. Mandate must deny.
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("limit") forbid (principal, action, resource)
        when { context.arguments has n && context.arguments.n + 1 > 100 };
        "#,
        Some("type Arguments = { n?: Long };"),
    )
    .unwrap();
    let mk = |n: i64| {
        call(
            json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"}, "arguments": {"n": n}}),
        )
    };
    assert_eq!(pack.decide(&mk(5), now()).decision, Decision::Allow);
    assert_eq!(pack.decide(&mk(500), now()).policies, ["limit"]);
    let verdict = pack.decide(&mk(i64::MAX), now());
    assert_eq!(verdict.decision, Decision::Deny);
    assert_eq!(verdict.errors.len(), 1);
    assert_eq!(verdict.errors[0].policy, "limit");
}

#[test]
fn a_value_of_the_wrong_type_cannot_sidestep_a_forbid() {
    // Cedar's `==` across types is false, not an error: without the schema
    // check, a list holding the forbidden address would be allowed.
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("no-mallory") forbid (principal, action, resource)
        when { context.arguments has to && context.arguments.to == "mallory@evil.example" };
        "#,
        Some("type Arguments = { to?: String }; type AgentAttributes = { team?: String };"),
    )
    .unwrap();
    let mk = |to: Value| {
        call(
            json!({"principal": {"id": "a"}, "action": {"server": "mail", "tool": "send"}, "arguments": {"to": to}}),
        )
    };
    assert_eq!(
        pack.decide(&mk(json!("carol@example.com")), now()).decision,
        Decision::Allow
    );
    assert_eq!(
        pack.decide(&mk(json!("mallory@evil.example")), now())
            .policies,
        ["no-mallory"]
    );
    for sneaky in [
        json!(["mallory@evil.example"]),
        json!({"addr": "mallory@evil.example"}),
        json!(7),
    ] {
        let verdict = pack.decide(&mk(sneaky.clone()), now());
        assert_eq!(verdict.decision, Decision::Deny, "{sneaky}");
        assert!(verdict.policies.is_empty());
        assert_eq!(verdict.errors.len(), 1, "{sneaky}");
    }
    // Principal attributes are checked the same way.
    let agent = |team: Value| {
        call(
            json!({"principal": {"id": "a", "attributes": {"team": team}}, "action": {"server": "s", "tool": "t"}}),
        )
    };
    assert_eq!(
        pack.decide(&agent(json!("ops")), now()).decision,
        Decision::Allow
    );
    assert_eq!(
        pack.decide(&agent(json!(["ops"])), now()).decision,
        Decision::Deny
    );
    // Attributes the schema does not declare are invisible to policies and
    // do not get in the way.
    let extra = call(
        json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
        "arguments": {"to": "carol@example.com", "unknown": [1, "x"]}}),
    );
    assert_eq!(pack.decide(&extra, now()).decision, Decision::Allow);
}

#[test]
fn an_erroring_approval_policy_denies() {
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("gate") @approval("big")
        permit (principal, action, resource) when { context.arguments has n && context.arguments.n + 1 > 10 };
        "#,
        Some("type Arguments = { n?: Long };"),
    )
    .unwrap();
    let mk = |n: i64| {
        call(
            json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"}, "arguments": {"n": n}}),
        )
    };
    assert_eq!(pack.decide(&mk(1), now()).decision, Decision::Allow);
    assert_eq!(
        pack.decide(&mk(100), now()).decision,
        Decision::ApprovalRequired
    );
    let overflow = pack.decide(&mk(i64::MAX), now());
    assert_eq!(overflow.decision, Decision::Deny);
    assert_eq!(overflow.errors[0].policy, "gate");
}

#[test]
fn invalid_policies_are_located() {
    let err = load("permit (principal, action, resource);\n\npermit (principal, action, resource)\n  when { context.arguments.nope == 1 };", None)
        .unwrap_err();
    let errors: Vec<_> = err
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, "p.cedar");
    assert_eq!(errors[0].line, Some(4), "{}", errors[0]);
    assert_eq!(errors[0].policy.as_deref(), Some("p.cedar#2"));
    assert!(errors[0].message.contains("nope"), "{}", errors[0].message);

    let err = load("permit (principal, action, resource)\nwhen { true", None).unwrap_err();
    assert_eq!(err.problems[0].file, "p.cedar");
    assert_eq!(err.problems[0].line, Some(2), "{}", err.problems[0]);
}

#[test]
fn approval_forbids_duplicates_and_empty_packs_are_rejected() {
    let err = load(
        r#"@approval("x") forbid (principal, action, resource);"#,
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`@approval` marks a permit"),
        "{err}"
    );
    let err = load(r#"@id("a") permit (principal, action, resource); @id("a") permit (principal, action, resource);"#, None)
        .unwrap_err();
    assert!(err.to_string().contains("duplicate policy id"), "{err}");
    assert!(load("// nothing here\n", None).is_err());
}

#[test]
fn a_sliced_pack_decides_like_the_whole_pack() {
    // Policies scoped to many tools and agents; the index must evaluate only
    // the ones that can apply and still give Cedar's answer.
    let mut text = String::from("@id(\"base\") permit (principal, action, resource);\n");
    for i in 0..500 {
        text.push_str(&format!(
            "@id(\"tool-{i}\") forbid (principal, action, resource == Mandate::Tool::\"srv/tool{i}\") when {{ context.arguments has n && context.arguments.n == {i} }};\n\
             @id(\"agent-{i}\") forbid (principal == Mandate::Agent::\"agent{i}\", action, resource in Mandate::Server::\"locked\");\n\
             @id(\"gate-{i}\") @approval(\"tool {i}\") permit (principal == Mandate::Agent::\"agent{i}\", action, resource);\n"
        ));
    }
    let pack = load(&text, Some("type Arguments = { n?: Long };")).unwrap();
    let mk = |agent: &str, server: &str, tool: &str, n: i64| {
        call(
            json!({"principal": {"id": agent}, "action": {"server": server, "tool": tool}, "arguments": {"n": n}}),
        )
    };
    let d = |c| pack.decide(&c, now());
    assert_eq!(d(mk("x", "srv", "tool7", 7)).policies, ["tool-7"]);
    assert_eq!(d(mk("x", "srv", "tool7", 8)).decision, Decision::Allow);
    assert_eq!(d(mk("agent3", "locked", "t", 0)).policies, ["agent-3"]);
    assert_eq!(d(mk("agent3", "open", "t", 0)).policies, ["gate-3"]);
    assert_eq!(
        d(mk("agent3", "open", "t", 0)).decision,
        Decision::ApprovalRequired
    );
    assert_eq!(
        d(mk("agent9999", "locked", "t", 0)).decision,
        Decision::Allow
    );
}

#[test]
fn explain_names_the_failing_condition() {
    let pack = example_pack();
    let c = call(json!({
        "principal": {"id": "a"},
        "action": {"server": "mail", "tool": "send_email", "annotations": {"destructiveHint": false}},
        "arguments": {"to": "mallory@evil.example"},
        "context": {"task": {"tools": ["send_email"], "params": {"allowed_recipients": ["carol@example.com"]}}}
    }));
    let explanation = pack.explain(&c, now());
    assert_eq!(explanation.verdict.decision, Decision::Deny);
    let recipient = explanation
        .policies
        .iter()
        .find(|p| p.id == "recipient-allowed")
        .unwrap();
    assert!(recipient.satisfied && recipient.scope_matched);
    let declared = explanation
        .policies
        .iter()
        .find(|p| p.id == "undeclared-tool")
        .unwrap();
    assert!(!declared.satisfied);
    assert_eq!(declared.conditions[0].kind, "unless");
    assert!(
        declared.conditions[0]
            .text
            .contains("context.task.tools.contains(resource.name)"),
        "{}",
        declared.conditions[0].text
    );
}

#[test]
fn test_cases_judge_denies_from_errors_by_their_policies() {
    // A deny caused by an erroring policy, or by request data the schema does
    // not allow, is a deny like any other: a case that expects it passes, and
    // `policies` tells the two apart.
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("limit") forbid (principal, action, resource)
        when { context.arguments has n && context.arguments.n + 1 > 100 };
        "#,
        Some("type Arguments = { n?: Long };"),
    )
    .unwrap();
    let suite = TestSuite::parse(&format!(
        r#"{{
            "defaults": {{"principal": {{"id": "a"}}, "action": {{"server": "s", "tool": "t"}}}},
            "cases": [
                {{"name": "overflow", "request": {{"arguments": {{"n": {max}}}}},
                  "expect": "deny", "policies": ["limit"]}},
                {{"name": "overflow, outcome only", "request": {{"arguments": {{"n": {max}}}}},
                  "expect": "deny"}},
                {{"name": "a string for a Long", "request": {{"arguments": {{"n": "5"}}}},
                  "expect": "deny", "policies": []}},
                {{"name": "overflow pinned to no policy", "request": {{"arguments": {{"n": {max}}}}},
                  "expect": "deny", "policies": []}}
            ]
        }}"#,
        max = i64::MAX
    ))
    .unwrap();
    let results = suite.run(&pack, now());
    let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
    assert_eq!(passed, [true, true, true, false], "{results:#?}");
    // A failing case lists the errors of its decision.
    assert!(
        results[3]
            .message
            .contains("expected policies [], got [\"limit\"]")
            && results[3].message.contains("evaluation error in `limit`"),
        "{}",
        results[3].message
    );
}

/// The report on `recipient-allowed` for a mail sent `to` and `cc` the given
/// addresses when only carol is allowed.
fn recipient_report(to: &str, cc: &str) -> mandate_core::PolicyReport {
    let pack = example_pack();
    let c = call(json!({
        "principal": {"id": "a"},
        "action": {"server": "mail", "tool": "send_email", "annotations": {"destructiveHint": false}},
        "arguments": {"to": to, "cc": [cc]},
        "context": {"task": {"tools": ["send_email"], "params": {"allowed_recipients": ["carol@example.com"]}}}
    }));
    let explanation = pack.explain(&c, now());
    assert_eq!(explanation.verdict.decision, Decision::Deny);
    explanation
        .policies
        .into_iter()
        .find(|p| p.id == "recipient-allowed")
        .unwrap()
}

#[test]
fn explain_shows_which_part_of_a_condition_decided() {
    // A stranger in `cc` only: the `cc` half of the `||` decided, not `to`.
    let report = recipient_report("carol@example.com", "mallory@evil.example");
    assert!(report.satisfied);
    assert_eq!(
        report.summary(),
        "applies: its scope matches and its `when` condition is true"
    );
    let part = report.conditions[0].decided_by.clone().unwrap();
    assert!(part.value);
    assert!(part.text.contains("context.arguments.cc"), "{}", part.text);
    assert!(!part.text.contains("context.arguments.to"), "{}", part.text);

    // A stranger in `to`: the left half decided, and `cc` is not named.
    let report = recipient_report("mallory@evil.example", "carol@example.com");
    let part = report.conditions[0].decided_by.clone().unwrap();
    assert!(part.text.contains("context.arguments.to"), "{}", part.text);
    assert!(!part.text.contains("context.arguments.cc"), "{}", part.text);
}

#[test]
fn explain_follows_and_or_and_not_to_the_deciding_operand() {
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("gate") forbid (principal, action, resource)
        when { context.arguments has n && context.arguments.n > 10 && context.arguments.n < 20 }
        unless { !(context.arguments has ok) || (context.arguments has ok && context.arguments.ok) };
        "#,
        Some("type Arguments = { n?: Long, ok?: Bool };"),
    )
    .unwrap();
    let explain = |arguments: Value| {
        let c = call(json!({
            "principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
            "arguments": arguments,
        }));
        pack.explain(&c, now())
            .policies
            .into_iter()
            .find(|p| p.id == "gate")
            .unwrap()
    };

    // `n > 10` is the first false operand of the `&&` chain; `n < 20` is
    // true but was never needed, and `has n` was true.
    let gate = explain(json!({"n": 5}));
    assert_eq!(
        gate.summary(),
        "does not apply: its `when` condition is false"
    );
    let when = &gate.conditions[0];
    assert_eq!(when.value(), Some(false));
    assert_eq!(
        when.decided_by,
        Some(mandate_core::DecidingPart {
            text: "context.arguments.n > 10".into(),
            value: false
        })
    );

    // No `n`: the guard decided, and the operands after it (which would
    // raise an error on their own) were not evaluated.
    let gate = explain(json!({}));
    let part = gate.conditions[0].decided_by.clone().unwrap();
    assert_eq!(part.text, "context.arguments has n");
    assert!(!part.value);

    // A true `&&` needed every operand: no narrower part. The `unless`
    // expression `!(has ok) || (has ok && ok)` is true through its `!`, so the deciding
    // part is `has ok` being false.
    let gate = explain(json!({"n": 15}));
    assert_eq!(gate.conditions[0].decided_by, None);
    assert_eq!(gate.conditions[1].value(), Some(true));
    assert_eq!(
        gate.conditions[1].decided_by,
        Some(mandate_core::DecidingPart {
            text: "context.arguments has ok".into(),
            value: false
        })
    );
    assert_eq!(
        gate.summary(),
        "does not apply: its `unless` condition is true"
    );

    // With `ok: false` the `unless` is false and the forbid applies.
    let gate = explain(json!({"n": 15, "ok": false}));
    assert!(gate.satisfied);
    assert_eq!(
        gate.summary(),
        "applies: its scope matches and its `when` condition is true and its `unless` condition is false"
    );
}

#[test]
fn explain_names_the_part_of_the_scope_that_did_not_match() {
    let pack = load(
        r#"
        @id("pay") permit (principal, action == Mandate::Action::"call_tool", resource in Mandate::Server::"payments");
        @id("agent") permit (principal == Mandate::Agent::"b", action, resource in Mandate::Server::"payments");
        "#,
        None,
    )
    .unwrap();
    let c = call(json!({"principal": {"id": "a"}, "action": {"server": "crm", "tool": "lookup"}}));
    let explanation = pack.explain(&c, now());
    let pay = &explanation.policies[0];
    assert!(!pay.scope_matched);
    assert_eq!(pay.scope_mismatch, [mandate_core::ScopePart::Resource]);
    assert_eq!(
        pay.summary(),
        "out of scope: its resource does not match this call"
    );
    let agent = &explanation.policies[1];
    assert_eq!(
        agent.scope_mismatch,
        [
            mandate_core::ScopePart::Principal,
            mandate_core::ScopePart::Resource
        ]
    );
    assert_eq!(
        agent.summary(),
        "out of scope: its principal and resource do not match this call"
    );
}

#[test]
fn a_number_cedar_cannot_hold_matters_only_where_the_schema_declares_it() {
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("cap") forbid (principal, action, resource)
        when { context.arguments has limit && context.arguments.limit.greaterThan(decimal("100.0")) };
        "#,
        Some("type Arguments = { limit?: decimal };"),
    )
    .unwrap();
    let decide = |arguments: Value| {
        let c = call(json!({
            "principal": {"id": "a"}, "action": {"server": "bank", "tool": "pay"},
            "arguments": arguments,
        }));
        pack.decide(&c, now())
    };
    // Undeclared: no policy can read it, so it changes nothing.
    let undeclared = decide(json!({"amount": 3.333333, "huge": 1e300}));
    assert_eq!(undeclared.decision, Decision::Allow, "{undeclared:?}");
    // Declared: refused before any policy runs, naming the number and where.
    let declared = decide(json!({"limit": 100.00001}));
    assert_eq!(declared.decision, Decision::Deny);
    assert!(declared.policies.is_empty(), "{declared:?}");
    assert!(
        declared.errors[0]
            .message
            .contains("number `100.00001` at `arguments.limit`"),
        "{declared:?}"
    );
    // A set of them is refused too, element by element.
    let pack_of_sets = load(
        r#"@id("all") permit (principal, action, resource);"#,
        Some("type Arguments = { rates?: Set<decimal> };"),
    )
    .unwrap();
    let c = call(json!({
        "principal": {"id": "a"}, "action": {"server": "bank", "tool": "pay"},
        "arguments": {"rates": [1.5, 0.123456]},
    }));
    assert_eq!(pack_of_sets.decide(&c, now()).decision, Decision::Deny);
}

#[test]
fn explain_names_the_erroring_policy() {
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("limit") forbid (principal, action, resource)
        when { context.arguments has n && context.arguments.n + 1 > 100 };
        "#,
        Some("type Arguments = { n?: Long };"),
    )
    .unwrap();
    let c = call(json!({
        "principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
        "arguments": {"n": i64::MAX}
    }));
    let explanation = pack.explain(&c, now());
    assert_eq!(explanation.verdict.policies, ["limit"]);
    let limit = explanation
        .policies
        .iter()
        .find(|p| p.id == "limit")
        .unwrap();
    let mandate_core::ConditionOutcome::Error(message) = &limit.conditions[0].outcome else {
        panic!("{limit:?}");
    };
    assert!(message.contains("policy `limit`"), "{message}");

    // Request data of the wrong type is denied before any policy runs, so
    // there is nothing to explain.
    let mistyped = call(json!({
        "principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
        "arguments": {"n": "5"}
    }));
    let explanation = pack.explain(&mistyped, now());
    assert_eq!(explanation.verdict.decision, Decision::Deny);
    assert!(explanation.verdict.policies.is_empty());
    assert_eq!(explanation.verdict.errors.len(), 1);
    assert_eq!(explanation.verdict.errors[0].policy, "");
    assert!(
        explanation.verdict.errors[0]
            .message
            .starts_with("`arguments.n` must be an integer"),
        "{:?}",
        explanation.verdict.errors
    );
    assert!(explanation.policies.is_empty());
}

/// Every JSON path of the example requests, replaced by each value of the
/// wrong kind: each result is either a clear request error or a verdict, and
/// a mistyped value the pack declares never turns a deny into an allow.
#[test]
fn mutated_requests_never_panic_and_mistyped_declared_values_never_allow() {
    fn paths(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| paths(v, format!("{at}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| paths(v, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(0.123456),
        json!(1e300),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!(["x", 2]),
        deep,
    ];
    let pack = example_pack();
    let dir = example_dir().join("../requests");
    let mut decided = 0;
    for file in [
        "read-inbox.json",
        "send-to-stranger.json",
        "delete-email.json",
    ] {
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let mut all = Vec::new();
        paths(&original, String::new(), &mut all);
        for path in all.iter().filter(|p| !p.is_empty()) {
            for replacement in &replacements {
                let mut mutated = original.clone();
                *mutated.pointer_mut(path).unwrap() = replacement.clone();
                let Ok(request) = serde_json::from_value::<DecisionRequest>(mutated) else {
                    continue;
                };
                let Ok(call) = CallRequest::try_from(request) else {
                    continue;
                };
                let verdict = pack.decide(&call, now());
                decided += 1;
                // `to` is declared a String: anything else must not be allowed.
                if path == "/arguments/to" && !replacement.is_string() && !replacement.is_null() {
                    assert_ne!(
                        verdict.decision,
                        Decision::Allow,
                        "{file} {path} = {replacement}"
                    );
                }
            }
        }
    }
    assert!(
        decided > 100,
        "only {decided} mutated requests reached a decision"
    );
}

#[test]
fn an_approval_gate_can_set_how_long_its_approvals_wait() {
    let pack = load(
        r#"
        @id("base")
        permit (principal, action, resource);
        @id("slow") @approval("big payments") @approval_expires("15m")
        permit (principal, action, resource);
        @id("fast") @approval("urgent") @approval_expires("90s")
        permit (principal, action, resource);
        @id("default") @approval("anything")
        permit (principal, action, resource);
        "#,
        None,
    )
    .unwrap();
    let ttl = |ids: &[&str]| pack.approval_ttl(ids).map(|d| d.as_secs());
    assert_eq!(ttl(&["slow"]), Some(900));
    // The shortest of the gates that asked wins.
    assert_eq!(ttl(&["slow", "fast", "default"]), Some(90));
    assert_eq!(ttl(&["default"]), None);
    assert_eq!(ttl(&["base", "unknown"]), None);

    for (policy, message) in [
        (
            r#"@approval("x") @approval_expires("soon") permit (principal, action, resource);"#,
            "is not a duration",
        ),
        (
            r#"@approval("x") @approval_expires("0s") permit (principal, action, resource);"#,
            "is not a duration",
        ),
        (
            r#"@approval_expires("5m") permit (principal, action, resource);"#,
            "belongs on an `@approval` permit",
        ),
        (
            r#"@approval("x") @approval_expires("8days") permit (principal, action, resource);"#,
            "longer than a week",
        ),
    ] {
        let problems = load(policy, None).unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p.message.contains(message)),
            "{policy}: {problems:?}"
        );
    }
}

/// The look-alikes of the names a pack forbids: every one is refused before
/// any policy sees it, while the names themselves meet their forbid.
#[test]
fn look_alike_names_never_reach_a_policy() {
    let pack = PolicyPack::load(
        &[PolicySource::new(
            "names.cedar",
            r#"
            permit (principal, action, resource) when { context.task.tools.contains(resource.name) };
            forbid (principal, action, resource == Mandate::Tool::"mail/wipe_mailbox");
            forbid (principal, action, resource in Mandate::Server::"bank");
            forbid (principal == Mandate::Agent::"spiffe://example.org/evil", action, resource);
            forbid (principal, action, resource) when { context.task.labels.contains("secret") };
            "#,
        )],
        None,
    )
    .unwrap();
    let request = |agent: &str, server: &str, tool: &str, label: &str| {
        json!({
            "principal": {"id": agent},
            "action": {"server": server, "tool": tool},
            "context": {"task": {"tools": [tool], "labels": [label]}}
        })
    };
    let good = ("spiffe://example.org/good", "mail", "send_email", "public");
    let decide = |(agent, server, tool, label): (&str, &str, &str, &str)| {
        let request: DecisionRequest =
            serde_json::from_value(request(agent, server, tool, label)).unwrap();
        CallRequest::try_from(request).map(|call| pack.decide(&call, now()).decision)
    };
    assert_eq!(decide(good), Ok(Decision::Allow));
    let forbidden = [
        (
            "spiffe://example.org/good",
            "mail",
            "wipe_mailbox",
            "public",
        ),
        ("spiffe://example.org/good", "bank", "send_email", "public"),
        ("spiffe://example.org/evil", "mail", "send_email", "public"),
        ("spiffe://example.org/good", "mail", "send_email", "secret"),
    ];
    for names in forbidden {
        assert_eq!(decide(names), Ok(Decision::Deny), "{names:?}");
    }

    // Every kind of look-alike: other scripts, fullwidth forms, invisible
    // and bidirectional characters, odd whitespace, case, percent-encoding.
    let tools = [
        "wip\u{435}_mailbox",
        "\u{ff57}ipe_mailbox",
        "wipe\u{200b}_mailbox",
        "wipe_mailbox\u{200d}",
        "wipe_mailbox ",
        "wipe_mailbox\u{a0}",
        "wipe_mail\u{ad}box",
        "\u{202e}xobliam_epiw",
        "wipe_mailbox\u{2066}",
        "wipe_mailbox\u{feff}",
        "wipe_mailbox\u{fe0f}",
        "wipe_mailbox\u{e0001}",
        "wipe%5Fmailbox",
        "wipe_mailbox\t",
        "mail/wipe_mailbox",
    ];
    let servers = [
        "BANK",
        "Bank",
        "b\u{430}nk",
        "\u{ff42}\u{ff41}\u{ff4e}\u{ff4b}",
        "bank\u{200b}",
        " bank",
        "ban\u{006b}\u{0307}",
        "%62ank",
    ];
    let agents = [
        "spiffe://example.org/\u{435}vil",
        "SPIFFE://example.org/evil",
        "Spiffe://example.org/evil",
        "spiffe://Example.org/evil",
        "spiffe://example.org/%65vil",
        "spiffe://example.org/evil/",
        "spiffe://example.org/./evil",
        "spiffe://example.org/evil\u{200b}",
        "spiffe://example.org/\u{202e}live",
        "spiffe://example.org:8443/evil",
        "spiffe://user@example.org/evil",
    ];
    let labels = ["Secret", "s\u{435}cret", "secret\u{a0}", "se\u{ad}cret"];
    let (agent, server, tool, label) = good;
    let cases = tools
        .iter()
        .map(|t| (agent, "mail", *t, label))
        .chain(servers.iter().map(|s| (agent, *s, tool, label)))
        .chain(agents.iter().map(|a| (*a, server, tool, label)))
        .chain(labels.iter().map(|l| (agent, server, tool, *l)));
    for case in cases {
        let refused = decide(case).expect_err(&format!("{case:?} must be refused"));
        assert!(
            refused.to_string().contains("is 1 to") || refused.to_string().contains("SPIFFE ID"),
            "{case:?}: {refused}"
        );
    }
}

/// A policy that names an entity no request can carry is refused with the
/// pack: it would silently never match.
#[test]
fn a_pack_naming_an_impossible_entity_is_refused() {
    for (text, what) in [
        (
            r#"forbid (principal, action, resource in Mandate::Server::"Bank");"#,
            "Bank",
        ),
        (
            r#"forbid (principal, action, resource == Mandate::Tool::"wipe_mailbox");"#,
            "write `server/tool`",
        ),
        (
            r#"forbid (principal, action, resource) when { resource == Mandate::Tool::"bank/wipe mailbox" };"#,
            "whitespace",
        ),
        (
            r#"forbid (principal == Mandate::Agent::"SPIFFE://example.org/evil", action, resource);"#,
            "spiffe://",
        ),
    ] {
        let error = PolicyPack::load(&[PolicySource::new("p.cedar", text)], None).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("can never match a request"), "{message}");
        assert!(message.contains(what), "{what}: {message}");
    }
}

#[test]
fn a_cap_on_amounts_reads_every_tool_the_catalog_declares() {
    let pack = load(
        r#"
        @id("all") permit (principal, action, resource);
        @id("large-amount") forbid (principal, action, resource)
        when { context.amounts.max.greaterThan(decimal("1000.0")) };
        @id("unreadable-amount") forbid (principal, action, resource)
        when { context.amounts.unreadable };
        "#,
        None,
    )
    .unwrap();
    let decide = |tool: &str, annotations: Value, arguments: Value| {
        let c = call(json!({
            "principal": {"id": "a"},
            "action": {"server": "s", "tool": tool, "annotations": annotations},
            "arguments": arguments,
        }));
        let verdict = pack.decide(&c, now());
        (verdict.decision, verdict.policies)
    };
    let transfer = json!({"mandate/amounts": ["amount"]});
    let invoice = json!({"mandate/amounts": ["invoice.total"]});
    assert_eq!(
        decide("transfer", transfer.clone(), json!({"amount": 250.5})),
        (Decision::Allow, vec!["all".to_owned()])
    );
    assert_eq!(
        decide("transfer", transfer.clone(), json!({"amount": "1,000.01"})),
        (Decision::Deny, vec!["large-amount".to_owned()])
    );
    assert_eq!(
        decide(
            "pay_invoice",
            invoice.clone(),
            json!({"invoice": {"total": 5000}})
        ),
        (Decision::Deny, vec!["large-amount".to_owned()])
    );
    // Written in a way Mandate cannot read: the largest amount there is.
    let (decision, mut policies) =
        decide("transfer", transfer.clone(), json!({"amount": "1.000,01"}));
    policies.sort();
    assert_eq!(
        (decision, policies),
        (
            Decision::Deny,
            vec!["large-amount".to_owned(), "unreadable-amount".to_owned()]
        )
    );
    // Undeclared, the same argument is no amount to the pack.
    assert_eq!(
        decide("transfer", json!({}), json!({"amount": 5000})),
        (Decision::Allow, vec!["all".to_owned()])
    );
}
