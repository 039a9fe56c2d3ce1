//! The delegation chain and the session history, as policies read them:
//! real policies, loaded with strict validation, decided on real requests.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use chrono::{DateTime, Utc};
use mandate_core::{CallRequest, Decision, DecisionRequest, PolicyPack, PolicySource, Verdict};
use serde_json::{Value, json};

const PLANNER: &str = "spiffe://example.org/agent/planner";
const RESEARCHER: &str = "spiffe://example.org/agent/researcher";
const MAILER: &str = "spiffe://example.org/agent/mailer";
const FETCHER: &str = "spiffe://example.org/agent/fetcher";

fn load(policies: &str) -> PolicyPack {
    PolicyPack::load(&[PolicySource::new("p.cedar", policies)], None).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .into()
}

/// A call of `mail/send` by the last agent of `agents` (root first), in a
/// session with `history`.
fn call(agents: &[&str], history: Value) -> CallRequest {
    let chain: Vec<Value> = agents
        .iter()
        .enumerate()
        .map(|(depth, agent)| json!({"agent": agent, "depth": depth}))
        .collect();
    let request = json!({
        "principal": {"id": agents.last().unwrap()},
        "action": {"server": "mail", "tool": "send", "annotations": {"destructiveHint": false}},
        "context": {"task": {"chain": chain}, "session": {"history": history}}
    });
    CallRequest::try_from(serde_json::from_value::<DecisionRequest>(request).unwrap()).unwrap()
}

/// A call of `server/tool` with `annotations` by the mailer, not delegated.
fn tool_call(server: &str, tool: &str, annotations: Value, history: Value) -> CallRequest {
    let request = json!({
        "principal": {"id": MAILER},
        "action": {"server": server, "tool": tool, "annotations": annotations},
        "context": {"session": {"history": history}}
    });
    CallRequest::try_from(serde_json::from_value::<DecisionRequest>(request).unwrap()).unwrap()
}

fn decide(pack: &PolicyPack, call: &CallRequest) -> Verdict {
    let verdict = pack.decide(call, now());
    assert!(verdict.errors.is_empty(), "{verdict:?}");
    verdict
}

fn outcome(verdict: &Verdict) -> (Decision, Vec<String>) {
    (verdict.decision, verdict.policies.clone())
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

const ALLOW_ALL: &str = r#"@id("all") permit (principal, action, resource);"#;

#[test]
fn a_forbid_on_depth_stops_deep_delegation() {
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("max-two-hops") forbid (principal, action, resource) when {{ context.task.depth > 1 }};"#
    ));
    let d = |agents: &[&str]| outcome(&decide(&pack, &call(agents, json!([])))).0;
    assert_eq!(d(&[MAILER]), Decision::Allow);
    assert_eq!(d(&[PLANNER, MAILER]), Decision::Allow);
    let verdict = decide(&pack, &call(&[PLANNER, RESEARCHER, MAILER], json!([])));
    assert_eq!(outcome(&verdict), (Decision::Deny, ids(&["max-two-hops"])));
}

#[test]
fn an_approval_on_depth_asks_a_person_for_deep_calls() {
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("deep") @approval("two or more delegations away from the task's agent")
        permit (principal, action, resource) when {{ context.task.depth > 1 }};"#
    ));
    let d = |agents: &[&str]| outcome(&decide(&pack, &call(agents, json!([]))));
    assert_eq!(d(&[PLANNER, MAILER]), (Decision::Allow, ids(&["all"])));
    assert_eq!(
        d(&[PLANNER, RESEARCHER, MAILER]),
        (Decision::ApprovalRequired, ids(&["deep"]))
    );
}

#[test]
fn policies_read_each_hop_of_the_chain() {
    // Only tasks started by the planner may send mail; the planner's direct
    // sub-agents are trusted more than anyone further down.
    let pack = load(&format!(
        r#"
        @id("planner-tasks") permit (principal, action, resource)
        when {{ context.task.chain.contains({{agent: "{PLANNER}", depth: 0}}) }};

        @id("not-below-the-planner") @approval("not a direct sub-agent of the planner")
        permit (principal, action, resource)
        unless {{ context.task.depth == 0 ||
                  context.task.chain.contains({{agent: "{PLANNER}", depth: context.task.depth - 1}}) }};

        @id("no-fetcher-in-the-chain") forbid (principal, action, resource)
        when {{ context.task.chain_agents.contains("{FETCHER}") }};

        @id("root-is-named") forbid (principal, action, resource)
        unless {{ context.task.root_agent == "{PLANNER}" }};
        "#
    ));
    let d = |agents: &[&str]| outcome(&decide(&pack, &call(agents, json!([]))));
    // Without a chain the principal is the root, at depth 0.
    assert_eq!(d(&[PLANNER]), (Decision::Allow, ids(&["planner-tasks"])));
    assert_eq!(
        d(&[PLANNER, MAILER]),
        (Decision::Allow, ids(&["planner-tasks"]))
    );
    assert_eq!(
        d(&[PLANNER, RESEARCHER, MAILER]),
        (Decision::ApprovalRequired, ids(&["not-below-the-planner"]))
    );
    // The planner at depth 1 is not the root.
    assert_eq!(
        d(&[MAILER, PLANNER]),
        (Decision::Deny, ids(&["root-is-named"]))
    );
    assert_eq!(d(&[MAILER]), (Decision::Deny, ids(&["root-is-named"])));
    // Any hop, at any depth.
    assert_eq!(
        d(&[PLANNER, FETCHER, MAILER]),
        (Decision::Deny, ids(&["no-fetcher-in-the-chain"]))
    );
}

#[test]
fn first_use_of_a_tool_is_one_short_approval_policy() {
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("new-tool") @approval("first use of this tool in the task")
        permit (principal, action, resource) when {{ context.session.first_use_of_tool }};"#
    ));
    let d = |history: Value| outcome(&decide(&pack, &call(&[MAILER], history))).0;
    assert_eq!(d(json!([])), Decision::ApprovalRequired);
    assert_eq!(
        d(json!([{"server": "mail", "tool": "send", "decision": "allow"}])),
        Decision::Allow
    );
    // An approval that was not granted, and a denial, are not uses.
    assert_eq!(
        d(json!([
            {"server": "mail", "tool": "send", "decision": "approval_required"},
            {"server": "mail", "tool": "send", "decision": "deny"}
        ])),
        Decision::ApprovalRequired
    );
    // Another server's tool of the same name is another tool.
    assert_eq!(
        d(json!([{"server": "web", "tool": "send", "decision": "allow"}])),
        Decision::ApprovalRequired
    );
}

#[test]
fn uses_of_this_tool_limit_calls_per_task() {
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("two-mails-per-task") forbid (principal, action, resource == Mandate::Tool::"mail/send")
        when {{ context.session.uses_of_this_tool >= 2 }};"#
    ));
    let sent = json!({"server": "mail", "tool": "send", "decision": "allow"});
    let other = json!({"server": "mail", "tool": "read", "decision": "allow"});
    let d = |history: Value| outcome(&decide(&pack, &call(&[MAILER], history)));
    assert_eq!(d(json!([sent, other, other])).0, Decision::Allow);
    assert_eq!(
        d(json!([sent, other, sent])),
        (Decision::Deny, ids(&["two-mails-per-task"]))
    );
}

#[test]
fn untrusted_content_in_the_session_is_one_short_approval_policy() {
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("after-untrusted") @approval("untrusted content entered the session")
        permit (principal, action, resource) when {{ context.session.labels.contains("untrusted") }};
        @id("just-arrived") @approval("new data entered the session since the last allowed call")
        permit (principal, action, resource) when {{ !context.session.new_labels.isEmpty() }};"#
    ));
    let fetched =
        json!({"server": "web", "tool": "fetch", "decision": "allow", "labels": ["untrusted"]});
    let read = json!({"server": "mail", "tool": "read", "decision": "allow"});
    let refused = json!({"server": "mail", "tool": "send", "decision": "deny"});
    let d = |history: Value| outcome(&decide(&pack, &call(&[MAILER], history)));
    assert_eq!(d(json!([read])), (Decision::Allow, ids(&["all"])));
    assert_eq!(
        d(json!([read, fetched])),
        (
            Decision::ApprovalRequired,
            ids(&["after-untrusted", "just-arrived"])
        )
    );
    // A denied attempt does not make the label old.
    assert_eq!(
        d(json!([read, fetched, refused])),
        (
            Decision::ApprovalRequired,
            ids(&["after-untrusted", "just-arrived"])
        )
    );
    // Once a call ran with it in the session, the label is no longer new,
    // but it stays in the session.
    assert_eq!(
        d(json!([fetched, read])),
        (Decision::ApprovalRequired, ids(&["after-untrusted"]))
    );
}

#[test]
fn a_new_class_of_action_can_step_up() {
    // The first destructive call of a task needs a person; the next ones do not.
    let pack = load(&format!(
        r#"{ALLOW_ALL}
        @id("first-destructive") @approval("the task's first destructive call")
        permit (principal, action, resource)
        when {{ resource.action_class == "destructive" && context.session.first_use_of_action_class }};
        @id("write-after-reads") @approval("the task only read so far")
        permit (principal, action, resource)
        when {{ resource.action_class == "write" && !context.session.action_classes.contains("write") &&
                context.session.action_classes.contains("read") }};"#
    ));
    let read = json!({"server": "mail", "tool": "read", "decision": "allow", "annotations": {"readOnlyHint": true}});
    let deleted =
        json!({"server": "mail", "tool": "delete", "decision": "allow", "annotations": {}});
    let unknown = json!({"server": "mail", "tool": "purge", "decision": "allow"});
    let d = |annotations: Value, history: Value| {
        outcome(&decide(
            &pack,
            &tool_call("mail", "delete", annotations, history),
        ))
    };
    // No annotations: destructive, by the MCP defaults.
    assert_eq!(
        d(json!({}), json!([read])),
        (Decision::ApprovalRequired, ids(&["first-destructive"]))
    );
    // A history entry without annotations has no known class.
    assert_eq!(
        d(json!({}), json!([unknown])),
        (Decision::ApprovalRequired, ids(&["first-destructive"]))
    );
    assert_eq!(
        d(json!({}), json!([read, deleted])),
        (Decision::Allow, ids(&["all"]))
    );
    assert_eq!(
        d(json!({"destructiveHint": false}), json!([read])),
        (Decision::ApprovalRequired, ids(&["write-after-reads"]))
    );
    assert_eq!(
        d(json!({"readOnlyHint": true}), json!([])),
        (Decision::Allow, ids(&["all"]))
    );
}

#[test]
fn strict_validation_knows_the_shapes() {
    let rejects = |condition: &str| {
        let text = format!("permit (principal, action, resource) when {{ {condition} }};");
        PolicyPack::load(&[PolicySource::new("p.cedar", text)], None).is_err()
    };
    // Hops are records, not agent names.
    assert!(rejects(r#"context.task.chain.contains("x")"#));
    assert!(rejects(r#"context.task.depth == "1""#));
    assert!(rejects("context.session.first_use"));
    assert!(rejects("context.session.new_labels.contains(1)"));
    assert!(!rejects(
        r#"context.task.chain.contains({agent: "x", depth: 0}) && context.session.uses_of_this_tool < 3"#
    ));
}
