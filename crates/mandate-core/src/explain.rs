//! Why a decision came out as it did: per policy, did the scope match (and
//! if not, which part of it), what did each `when` / `unless` condition come
//! to, and which part of a condition decided that.
//!
//! Each condition is evaluated on its own, as a permit with an open scope, so
//! the report shows the first condition that failed as well as any error.
//! Within a condition, `&&`, `||` and `!` are followed down to the operand
//! that decided the value, evaluating operands left to right as Cedar does,
//! so an operand Cedar would not have evaluated is never evaluated here.

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Entities, Policy, PolicyId, PolicySet, Request,
};
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
    /// The parts of the scope that did not match this call, each checked on
    /// its own (empty when the scope matched).
    pub scope_mismatch: Vec<ScopePart>,
    /// Each condition, in order (evaluated only when the scope matched).
    pub conditions: Vec<ConditionReport>,
    /// Whether the policy as a whole was satisfied.
    pub satisfied: bool,
}

/// One of the three parts of a policy's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopePart {
    /// `principal …`
    Principal,
    /// `action …`
    Action,
    /// `resource …`
    Resource,
}

impl ScopePart {
    /// The part's name as written in Cedar.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Action => "action",
            Self::Resource => "resource",
        }
    }
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
    /// The narrowest part of the clause that decided its value, when that
    /// is narrower than the whole clause: the first false operand of a false
    /// `&&`, the first true operand of a true `||`, followed down through
    /// `!`. Absent when every operand was needed or evaluation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidingPart>,
}

/// A sub-expression of a clause and the value it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidingPart {
    /// The sub-expression's Cedar text.
    pub text: String,
    /// What it evaluated to.
    pub value: bool,
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

impl ConditionReport {
    /// The value of the clause's expression (not of the clause: an `unless`
    /// whose expression is true fails), or `None` when it raised an error.
    pub fn value(&self) -> Option<bool> {
        let is_when = self.kind == "when";
        match self.outcome {
            ConditionOutcome::Holds => Some(is_when),
            ConditionOutcome::Fails => Some(!is_when),
            ConditionOutcome::Error(_) => None,
        }
    }
}

impl PolicyReport {
    /// In words: whether the policy applied to the call, and why.
    pub fn summary(&self) -> String {
        if !self.scope_matched {
            let parts: Vec<&str> = self.scope_mismatch.iter().map(|p| p.as_str()).collect();
            return match parts.as_slice() {
                [] => "out of scope: its scope does not match this call".to_owned(),
                [one] => format!("out of scope: its {one} does not match this call"),
                [init @ .., last] => format!(
                    "out of scope: its {} and {last} do not match this call",
                    init.join(", ")
                ),
            };
        }
        let decisive = self
            .conditions
            .iter()
            .find(|c| c.outcome != ConditionOutcome::Holds);
        match decisive {
            None if self.conditions.is_empty() => {
                "applies: its scope matches and it has no conditions".to_owned()
            }
            None => format!(
                "applies: its scope matches and {}",
                describe_all(&self.conditions)
            ),
            Some(c) => match (&c.outcome, c.value()) {
                (ConditionOutcome::Error(_), _) | (_, None) => format!(
                    "failed: its `{}` condition could not be evaluated, and a policy \
                     that fails makes the decision deny",
                    c.kind
                ),
                (_, Some(value)) => {
                    format!("does not apply: its `{}` condition is {value}", c.kind)
                }
            },
        }
    }
}

/// "its `when` condition is true", "its `when` condition is true and its
/// `unless` condition is false", …
fn describe_all(conditions: &[ConditionReport]) -> String {
    let parts: Vec<String> = conditions
        .iter()
        .map(|c| {
            let value = c.value().map_or("?".to_owned(), |v| v.to_string());
            format!("its `{}` condition is {value}", c.kind)
        })
        .collect();
    parts.join(" and ")
}

const OPEN_SCOPE: &str = r#"{"op": "All"}"#;

/// Evaluates parts of one policy against one request, as one-policy permits.
struct Probe<'a> {
    authorizer: Authorizer,
    request: &'a Request,
    entities: &'a Entities,
    open: Value,
}

impl Probe<'_> {
    /// Does a permit with this scope and these conditions allow? An
    /// evaluation error is the error's text.
    fn allows(
        &self,
        id: &PolicyId,
        (principal, action, resource): (&Value, &Value, &Value),
        conditions: Value,
    ) -> Result<bool, String> {
        let est = json!({
            "effect": "permit", "principal": principal, "action": action, "resource": resource,
            "conditions": conditions,
        });
        let policy = Policy::from_json(Some(id.clone()), est).map_err(|e| e.to_string())?;
        let set = PolicySet::from_policies([policy]).map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(self.request, &set, self.entities);
        match response.diagnostics().errors().next() {
            Some(e) => Err(e.to_string()),
            None => Ok(response.decision() == CedarDecision::Allow),
        }
    }

    /// The value of one boolean expression, in an open scope.
    fn value(&self, id: &PolicyId, body: &Value) -> Result<bool, String> {
        let open = (&self.open, &self.open, &self.open);
        self.allows(id, open, json!([{"kind": "when", "body": body}]))
    }

    /// The narrowest operand of `body` that decided its value `value`, if
    /// narrower than `body` itself.
    fn decided_by(&self, id: &PolicyId, body: &Value, value: bool) -> Option<(Value, bool)> {
        let operand = |op: &str, key: &str| body.get(op).and_then(|o| o.get(key));
        // Down into an operand that alone gave the value: itself, or a
        // narrower part of it.
        let down =
            |e: &Value, v: bool| Some(self.decided_by(id, e, v).unwrap_or_else(|| (e.clone(), v)));
        if let (Some(left), Some(right)) = (operand("&&", "left"), operand("&&", "right")) {
            // A false `&&` is decided by its first false operand; a true one
            // needed both.
            if value {
                return None;
            }
            // Left true and the whole false: the right operand was false.
            return match self.value(id, left).ok()? {
                false => down(left, false),
                true => down(right, false),
            };
        }
        if let (Some(left), Some(right)) = (operand("||", "left"), operand("||", "right")) {
            if !value {
                return None;
            }
            return match self.value(id, left).ok()? {
                true => down(left, true),
                false => down(right, true),
            };
        }
        if let Some(arg) = operand("!", "arg") {
            return down(arg, !value);
        }
        None
    }
}

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
        let probe = Probe {
            authorizer: Authorizer::new(),
            request: &cedar.request,
            entities: &cedar.entities,
            open: serde_json::from_str(OPEN_SCOPE).unwrap_or_default(),
        };
        let policies = self
            .all
            .iter()
            .map(|policy| self.report(policy, &probe))
            .collect();
        Explanation { verdict, policies }
    }

    fn report(&self, policy: &Policy, probe: &Probe<'_>) -> PolicyReport {
        let id = policy.id();
        let origin = self.origins.get(id);
        let est = policy.to_json().unwrap_or_default();
        let field = |v: &'_ Value, key: &str| v.get(key).cloned().unwrap_or_default();
        let (principal, action, resource) = (
            field(&est, "principal"),
            field(&est, "action"),
            field(&est, "resource"),
        );
        let scope_matched = probe
            .allows(id, (&principal, &action, &resource), json!([]))
            .unwrap_or(false);
        let open = &probe.open;
        let scope_mismatch = if scope_matched {
            Vec::new()
        } else {
            [
                (ScopePart::Principal, (&principal, open, open)),
                (ScopePart::Action, (open, &action, open)),
                (ScopePart::Resource, (open, open, &resource)),
            ]
            .into_iter()
            .filter(|(_, scope)| !probe.allows(id, *scope, json!([])).unwrap_or(false))
            .map(|(part, _)| part)
            .collect()
        };
        let mut conditions = Vec::new();
        if scope_matched {
            for condition in field(&est, "conditions").as_array().into_iter().flatten() {
                let kind = field(condition, "kind")
                    .as_str()
                    .unwrap_or("when")
                    .to_owned();
                let body = &field(condition, "body");
                let (outcome, decided_by) = match probe.value(id, body) {
                    Err(e) => (ConditionOutcome::Error(e), None),
                    Ok(value) => (
                        if value == (kind == "when") {
                            ConditionOutcome::Holds
                        } else {
                            ConditionOutcome::Fails
                        },
                        probe
                            .decided_by(id, body, value)
                            .map(|(part, value)| DecidingPart {
                                text: clause_text(&part),
                                value,
                            }),
                    ),
                };
                conditions.push(ConditionReport {
                    kind,
                    text: clause_text(body),
                    outcome,
                    decided_by,
                });
            }
        }
        let satisfied = scope_matched
            && conditions
                .iter()
                .all(|c| c.outcome == ConditionOutcome::Holds);
        PolicyReport {
            id: id.to_string(),
            kind: origin.map_or(PolicyKind::Base, |o| o.kind),
            effect: match policy.effect() {
                cedar_policy::Effect::Permit => "permit",
                cedar_policy::Effect::Forbid => "forbid",
            },
            file: origin.map(|o| o.file.clone()).unwrap_or_default(),
            line: origin.map_or(0, |o| o.line),
            scope_matched,
            scope_mismatch,
            conditions,
            satisfied,
        }
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
