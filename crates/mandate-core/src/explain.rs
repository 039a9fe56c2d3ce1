//! Why a decision came out as it did: per policy, did the scope match and
//! what did each `when` / `unless` condition evaluate to.
//!
//! Each condition is evaluated on its own, as a permit with an open scope, so
//! the report shows the first condition that failed as well as any error.

use cedar_policy::{Authorizer, Decision as CedarDecision, Policy, PolicyId, PolicySet};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::decision::Verdict;
use crate::evaluate::cedar_call;
use crate::pack::{PolicyKind, PolicyPack};
use crate::request::CallRequest;

/// A decision together with a report on every policy of the pack.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The decision, exactly as [`PolicyPack::decide`] makes it.
    #[serde(skip)]
    pub verdict: Verdict,
    /// One report per policy, in load order.
    pub policies: Vec<PolicyReport>,
}

/// How one policy fared.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// The policy's id.
    pub id: String,
    /// Base set or approval gate.
    pub kind: PolicyKind,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// File and line where the policy starts.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Whether principal, action and resource matched.
    pub scope_matched: bool,
    /// Each condition, in order (evaluated only when the scope matched).
    pub conditions: Vec<ConditionReport>,
    /// Whether the policy as a whole was satisfied.
    pub satisfied: bool,
}

/// One `when` or `unless` clause.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// `when` or `unless`.
    pub kind: String,
    /// The clause's Cedar text.
    pub text: String,
    /// What it came to.
    pub outcome: ConditionOutcome,
}

/// The outcome of one clause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "message")]
pub enum ConditionOutcome {
    /// The clause lets the policy apply (`when` true, `unless` false).
    Holds,
    /// The clause stops the policy from applying.
    Fails,
    /// Evaluating the clause raised an error.
    Error(String),
}

const OPEN_SCOPE: &str = r#"{"op": "All"}"#;

impl PolicyPack {
    /// Decides `call` like [`PolicyPack::decide`] and reports on every policy.
    pub fn explain(&self, call: &CallRequest, now: DateTime<Utc>) -> Explanation {
        // One Cedar call serves the decision and every policy's report.
        let cedar = match cedar_call(call, call.time().unwrap_or(now), &self.declared) {
            Ok(cedar) => cedar,
            Err(e) => {
                return Explanation {
                    verdict: e.into_verdict(),
                    policies: Vec::new(),
                };
            }
        };
        let verdict = self.verdict(call, &cedar);
        let authorizer = Authorizer::new();
        // A permit made from parts of the policy: does it allow, or error?
        let check = |id: &PolicyId,
                     principal: &Value,
                     action: &Value,
                     resource: &Value,
                     conditions: Value| {
            let est = json!({
                "effect": "permit", "principal": principal, "action": action, "resource": resource,
                "conditions": conditions,
            });
            let policy = Policy::from_json(Some(id.clone()), est).map_err(|e| e.to_string())?;
            let set = PolicySet::from_policies([policy]).map_err(|e| e.to_string())?;
            let response = authorizer.is_authorized(&cedar.request, &set, &cedar.entities);
            match response.diagnostics().errors().next() {
                Some(e) => Err(e.to_string()),
                None => Ok(response.decision() == CedarDecision::Allow),
            }
        };
        let open: Value = serde_json::from_str(OPEN_SCOPE).unwrap_or_default();
        let policies = self
            .all
            .iter()
            .map(|policy| {
                let origin = self.origins.get(policy.id());
                let est = policy.to_json().unwrap_or_default();
                let field = |v: &'_ Value, key: &str| v.get(key).cloned().unwrap_or_default();
                let scope_matched = check(
                    policy.id(),
                    &field(&est, "principal"),
                    &field(&est, "action"),
                    &field(&est, "resource"),
                    json!([]),
                )
                .unwrap_or(false);
                let mut conditions = Vec::new();
                if scope_matched {
                    for condition in field(&est, "conditions").as_array().into_iter().flatten() {
                        let kind = field(condition, "kind")
                            .as_str()
                            .unwrap_or("when")
                            .to_owned();
                        let body = &field(condition, "body");
                        let as_when = json!([{"kind": "when", "body": body}]);
                        let text = clause_text(body);
                        let outcome = match check(policy.id(), &open, &open, &open, as_when) {
                            Err(e) => ConditionOutcome::Error(e),
                            Ok(value) if value == (kind == "when") => ConditionOutcome::Holds,
                            Ok(_) => ConditionOutcome::Fails,
                        };
                        conditions.push(ConditionReport {
                            kind,
                            text,
                            outcome,
                        });
                    }
                }
                let satisfied = scope_matched
                    && conditions
                        .iter()
                        .all(|c| c.outcome == ConditionOutcome::Holds);
                PolicyReport {
                    id: policy.id().to_string(),
                    kind: origin.map_or(PolicyKind::Base, |o| o.kind),
                    effect: match policy.effect() {
                        cedar_policy::Effect::Permit => "permit",
                        cedar_policy::Effect::Forbid => "forbid",
                    },
                    file: origin.map(|o| o.file.clone()).unwrap_or_default(),
                    line: origin.map_or(0, |o| o.line),
                    scope_matched,
                    conditions,
                    satisfied,
                }
            })
            .collect();
        Explanation { verdict, policies }
    }
}

/// The Cedar text of a condition body, printed through a one-clause policy.
fn clause_text(body: &Value) -> String {
    let est = json!({
        "effect": "permit",
        "principal": {"op": "All"}, "action": {"op": "All"}, "resource": {"op": "All"},
        "conditions": [{"kind": "when", "body": body}],
    });
    let Ok(policy) = Policy::from_json(None, est) else {
        return body.to_string();
    };
    let text = policy.to_string();
    match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) if start < end => text.get(start + 1..end).map_or_else(
            || text.clone(),
            |t| t.split_whitespace().collect::<Vec<_>>().join(" "),
        ),
        _ => text,
    }
}
