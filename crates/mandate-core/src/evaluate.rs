//! One decision: a validated call, mapped onto the schema, through both sets.

use std::cell::RefCell;
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    Request, Response,
};
use cedar_policy_core::ast::{
    Context as CoreContext, Entity, EntityUIDEntry, PartialValue, Request as CoreRequest, Value,
    ValueKind,
};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::validator::types::Type;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::amounts::CallAmounts;
use crate::cedar_value::{self, DATETIME, DECIMAL, extension_value};
use crate::decision::{Decision, EvaluationProblem, Verdict};
use crate::declared::{DeclaredTypes, project};
use crate::index::Scope;
use crate::pack::PolicyPack;
use crate::provenance;
use crate::request::{CallRequest, RequestError};

static AUTHORIZER: LazyLock<Authorizer> = LazyLock::new(Authorizer::new);

/// Entity types and the one action of the schema, parsed once.
pub(crate) struct Names {
    pub agent: EntityTypeName,
    pub server: EntityTypeName,
    pub tool: EntityTypeName,
    pub call_tool: EntityUid,
}

fn type_name(name: &str) -> EntityTypeName {
    // INVARIANT: the names are literals that parse; checked by a unit test.
    EntityTypeName::from_str(name).unwrap_or_else(|_| unreachable_name(name))
}

#[cold]
fn unreachable_name(name: &str) -> EntityTypeName {
    #[allow(clippy::panic)]
    {
        panic!("built-in entity type `{name}` does not parse")
    }
}

pub(crate) static NAMES: LazyLock<Names> = LazyLock::new(|| Names {
    agent: type_name("Mandate::Agent"),
    server: type_name("Mandate::Server"),
    tool: type_name("Mandate::Tool"),
    call_tool: EntityUid::from_type_name_and_id(
        type_name("Mandate::Action"),
        EntityId::new("call_tool"),
    ),
});

/// Why a call could not be put to Cedar. Either way the decision is a deny.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request's values do not have the types the pack's schema declares.
    Schema(String),
    /// The request could not be expressed in Cedar at all.
    Mapping(String),
}

impl CallError {
    /// The deny a call that cannot be put to Cedar gets.
    pub(crate) fn into_verdict(self) -> Verdict {
        let (reason, message) = match self {
            CallError::Schema(m) => (
                "the request's values do not have the types the policy pack's schema declares; Mandate denies what policies cannot see as declared",
                m,
            ),
            CallError::Mapping(m) => (
                "the request could not be expressed in Cedar; Mandate denies what it cannot evaluate",
                m,
            ),
        };
        Verdict {
            decision: Decision::Deny,
            policies: Vec::new(),
            reasons: vec![reason.to_owned()],
            errors: vec![EvaluationProblem {
                policy: String::new(),
                message,
            }],
        }
    }
}

/// A call as Cedar sees it.
pub(crate) struct CedarCall {
    pub request: Request,
    pub entities: Entities,
    pub principal: EntityUid,
    pub resource: EntityUid,
    pub server: EntityUid,
}

fn string_set<'a, S: AsRef<str> + 'a>(items: impl IntoIterator<Item = S>) -> Value {
    Value::set(items.into_iter().map(|s| Value::from(s.as_ref())), None)
}

/// A count as a Cedar long; counts past `i64::MAX` stay at the maximum.
fn long(count: u64) -> Value {
    Value::from(i64::try_from(count).unwrap_or(i64::MAX))
}

fn known(uid: &EntityUid) -> EntityUIDEntry {
    EntityUIDEntry::known(uid.clone().into(), None)
}

thread_local! {
    /// The last decision time and its Cedar value: parsing a datetime costs
    /// more than a decision, and a busy server decides many times a millisecond.
    static NOW: RefCell<Option<(DateTime<Utc>, Value)>> = const { RefCell::new(None) };
}

fn datetime(now: DateTime<Utc>) -> Result<Value, String> {
    let now = now.trunc_subsecs(3);
    NOW.with_borrow_mut(|cached| {
        if let Some((at, value)) = cached.as_ref()
            && *at == now
        {
            return Ok(value.clone());
        }
        let text = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let value = extension_value(&DATETIME, &text)
            .ok_or_else(|| format!("cannot represent time `{text}`"))?;
        *cached = Some((now, value.clone()));
        Ok(value)
    })
}

/// Builds the Cedar request and entities for a validated call.
///
/// Every value is built directly; nothing is parsed or evaluated here but the
/// decision time (cached).
///
/// The free parts of the request (agent attributes, arguments, task params,
/// extra) are projected onto what the pack declares and type-checked against
/// the pack's `schema` (see the `declared` module).
pub(crate) fn cedar_call(
    call: &CallRequest,
    now: DateTime<Utc>,
    declared: &DeclaredTypes,
) -> Result<CedarCall, CallError> {
    let free = project_free_data(call, declared)?;
    let principal = agent_uid(call);
    let server = server_uid(call);
    let resource = tool_uid(call);
    let entities = call_entities(call, &principal, &resource, &server, free.agent_attributes)?;
    let context = call_context(call, free.task_params, free.arguments, free.extra, now)?;
    Ok(CedarCall {
        request: call_tool_request(&principal, &resource, context),
        entities,
        principal,
        resource,
        server,
    })
}

/// The free parts of a call, projected onto the types the pack declares.
struct FreeData {
    /// `principal.attributes`.
    agent_attributes: Value,
    /// `context.arguments`.
    arguments: Value,
    /// `context.task.params`.
    task_params: Value,
    /// `context.extra`.
    extra: Value,
}

/// Projects the call's free parts onto the types the pack's schema declares,
/// refusing a value of another type (see the `declared` module). Paths in
/// errors are the request's own.
fn project_free_data(call: &CallRequest, declared: &DeclaredTypes) -> Result<FreeData, CallError> {
    let checked =
        |value: &Value, ty: &Type, path: &str| project(value, ty, path).map_err(CallError::Schema);
    Ok(FreeData {
        agent_attributes: checked(
            &call.principal_attributes,
            &declared.agent_attributes,
            "principal.attributes",
        )?,
        arguments: checked(&call.arguments, &declared.arguments, "arguments")?,
        task_params: checked(
            &call.task_params,
            &declared.task_params,
            "context.task.params",
        )?,
        extra: checked(&call.extra, &declared.extra, "context.extra")?,
    })
}

/// The calling agent's entity id (`Mandate::Agent`).
fn agent_uid(call: &CallRequest) -> EntityUid {
    EntityUid::from_type_name_and_id(NAMES.agent.clone(), EntityId::new(&call.principal))
}

/// The tool's server's entity id (`Mandate::Server`).
fn server_uid(call: &CallRequest) -> EntityUid {
    EntityUid::from_type_name_and_id(NAMES.server.clone(), EntityId::new(&call.server))
}

/// The tool's entity id (`Mandate::Tool`), `SERVER/TOOL`: tool names are
/// only unique within their server.
fn tool_uid(call: &CallRequest) -> EntityUid {
    EntityUid::from_type_name_and_id(
        NAMES.tool.clone(),
        EntityId::new(format!("{}/{}", call.server, call.tool)),
    )
}

/// The call's entities: the agent, the tool and the tool's server.
fn call_entities(
    call: &CallRequest,
    principal: &EntityUid,
    resource: &EntityUid,
    server: &EntityUid,
    agent_attributes: Value,
) -> Result<Entities, CallError> {
    let entities = [
        agent_entity(call, principal, agent_attributes),
        tool_entity(call, resource, server),
        Entity::with_uid(server.clone().into()),
    ];
    // INVARIANT: the only edge is tool -> server, so the hierarchy is already
    // transitively closed.
    CoreEntities::from_entities(
        entities,
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        Extensions::all_available(),
    )
    .map(Entities::from)
    .map_err(|e| CallError::Mapping(e.to_string()))
}

/// The agent's entity: its trust domain, its declared attributes and, when
/// it acts for a person, `on_behalf_of`.
fn agent_entity(call: &CallRequest, principal: &EntityUid, attributes: Value) -> Entity {
    let value = |v: Value| PartialValue::Value(v);
    let mut attrs = vec![
        (
            "trust_domain".into(),
            value(Value::from(call.trust_domain.as_str())),
        ),
        ("attributes".into(), value(attributes)),
    ];
    if let Some(person) = &call.on_behalf_of {
        attrs.push(("on_behalf_of".into(), value(Value::from(person.as_str()))));
    }
    Entity::new_with_attr_partial_value(
        principal.clone().into(),
        attrs,
        HashSet::new(),
        HashSet::new(),
        [],
    )
}

/// The tool's entity: its name, its server, its MCP hints and the action
/// class they give, with the server as its one parent.
fn tool_entity(call: &CallRequest, resource: &EntityUid, server: &EntityUid) -> Entity {
    let value = |v: Value| PartialValue::Value(v);
    let h = call.hints;
    let attrs = [
        ("name".into(), value(Value::from(call.tool.as_str()))),
        ("server".into(), value(Value::from(call.server.as_str()))),
        ("read_only".into(), value(Value::from(h.read_only))),
        ("destructive".into(), value(Value::from(h.destructive))),
        ("idempotent".into(), value(Value::from(h.idempotent))),
        ("open_world".into(), value(Value::from(h.open_world))),
        (
            "action_class".into(),
            value(Value::from(h.action_class().as_str())),
        ),
    ];
    Entity::new_with_attr_partial_value(
        resource.clone().into(),
        attrs,
        HashSet::new(),
        HashSet::from([server.clone().into()]),
        [],
    )
}

/// The call's context: the task, the session, the arguments, the decision
/// time and the caller's extra context.
fn call_context(
    call: &CallRequest,
    task_params: Value,
    arguments: Value,
    extra: Value,
    now: DateTime<Utc>,
) -> Result<CoreContext, CallError> {
    let context = Value::record(
        [
            ("task", task_context(call, task_params)),
            ("session", session_context(call)),
            ("arguments", arguments),
            ("time", time_context(now)?),
            ("extra", extra),
            ("provenance", provenance_context(call)),
            ("amounts", amounts_context(call.amounts)?),
        ],
        None,
    );
    let ValueKind::Record(attrs) = context.value else {
        return Err(CallError::Mapping("the context is not a record".into()));
    };
    Ok(CoreContext::Value(attrs))
}

/// `context.task`: the task's id, intent, tools, labels and declared params,
/// and the delegation chain that led to this agent.
fn task_context(call: &CallRequest, params: Value) -> Value {
    let task = &call.task;
    // INVARIANT: validation leaves a chain of at least one hop (the principal).
    let root_agent = call.chain.first().map_or("", |hop| hop.agent.as_str());
    let depth = call.chain.last().map_or(0, |hop| hop.depth);
    Value::record(
        [
            ("id", Value::from(task.id.as_str())),
            ("intent", Value::from(task.intent.as_str())),
            ("tools", string_set(&task.tools)),
            ("labels", string_set(&task.labels)),
            ("params", params),
            ("chain", delegation_chain(call)),
            (
                "chain_agents",
                string_set(call.chain.iter().map(|hop| &hop.agent)),
            ),
            ("depth", Value::from(i64::from(depth))),
            ("root_agent", Value::from(root_agent)),
        ],
        None,
    )
}

/// `context.task.chain`: each hop of the delegation chain as an agent and
/// its depth.
fn delegation_chain(call: &CallRequest) -> Value {
    Value::set(
        call.chain.iter().map(|hop| {
            Value::record(
                [
                    ("agent", Value::from(hop.agent.as_str())),
                    ("depth", Value::from(i64::from(hop.depth))),
                ],
                None,
            )
        }),
        None,
    )
}

/// `context.session`: what already happened in the session, and whether
/// this call is the first of its tool or of its action class.
fn session_context(call: &CallRequest) -> Value {
    let session = &call.session;
    let summary = &session.summary;
    let class = call.hints.action_class();
    Value::record(
        [
            ("tools_called", string_set(summary.tools_called())),
            ("labels", string_set(&summary.labels)),
            ("new_labels", string_set(&summary.new_labels)),
            (
                "action_classes",
                Value::set(
                    summary
                        .action_classes
                        .iter()
                        .map(|c| Value::from(c.as_str())),
                    None,
                ),
            ),
            ("calls", long(summary.calls)),
            ("denials", long(summary.denials)),
            ("uses_of_this_tool", long(session.uses_of_this_tool)),
            (
                "first_use_of_tool",
                Value::from(session.uses_of_this_tool == 0),
            ),
            (
                "first_use_of_action_class",
                Value::from(!summary.action_classes.contains(&class)),
            ),
        ],
        None,
    )
}

/// `context.provenance`: where each destination argument came from, and
/// the worst of them.
fn provenance_context(call: &CallRequest) -> Value {
    let provenance = &call.provenance;
    Value::record(
        [
            ("declared", string_set(&call.declared_destinations)),
            ("worst", Value::from(provenance::worst(provenance))),
            (
                "destinations",
                Value::set(
                    provenance.iter().map(|(argument, p)| {
                        Value::record(
                            [
                                ("argument", Value::from(argument.as_str())),
                                ("kind", Value::from(p.kind.as_str())),
                                ("source", Value::from(p.source.as_str())),
                            ],
                            None,
                        )
                    }),
                    None,
                ),
            ),
            (
                "sources",
                Value::set(
                    provenance
                        .values()
                        .map(|p| p.source)
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .map(|source| Value::from(source.as_str())),
                    None,
                ),
            ),
        ],
        None,
    )
}

/// `context.amounts`: the largest amount the call moves, as a decimal.
fn amounts_context(amounts: CallAmounts) -> Result<Value, CallError> {
    let max = extension_value(&DECIMAL, &amounts.max_text())
        .ok_or_else(|| CallError::Mapping("an amount is not a Cedar decimal".into()))?;
    Ok(Value::record(
        [
            ("declared", Value::from(amounts.declared)),
            ("max", max),
            ("unreadable", Value::from(amounts.unreadable)),
        ],
        None,
    ))
}

/// `context.time`: the decision time, as a Cedar datetime.
fn time_context(now: DateTime<Utc>) -> Result<Value, CallError> {
    Ok(Value::record(
        [("now", datetime(now).map_err(CallError::Mapping)?)],
        None,
    ))
}

/// The request: this agent calls `call_tool` on this tool, in this context.
/// Built unchecked: every part was built to the schema's shape above.
fn call_tool_request(principal: &EntityUid, resource: &EntityUid, context: CoreContext) -> Request {
    CoreRequest::new_unchecked(
        known(principal),
        known(&NAMES.call_tool),
        known(resource),
        Some(context),
    )
    .into()
}

impl PolicyPack {
    /// Checks a task's free parameters as every decision under the task
    /// will see them (`context.task.params`): representable in Cedar and of
    /// the types this pack's schema declares. Task params that fail here
    /// would have every decision of the task refused, so a task is checked
    /// when it starts; `path` names the params in errors.
    pub fn check_task_params(
        &self,
        params: &serde_json::Map<String, serde_json::Value>,
        path: &str,
    ) -> Result<(), RequestError> {
        let value = cedar_value::record(params, path)?;
        project(&value, &self.declared.task_params, path)
            .map(|_| ())
            .map_err(|message| RequestError::Undeclared { message })
    }

    /// Decides one call at time `now` (the call's own `time`, if set, wins:
    /// only offline tools let callers set it).
    ///
    /// Never fails: a call that cannot be mapped, and any policy that errors,
    /// make the decision a deny, with the problem in [`Verdict::errors`].
    pub fn decide(&self, call: &CallRequest, now: DateTime<Utc>) -> Verdict {
        match cedar_call(call, call.time.unwrap_or(now), &self.declared) {
            Ok(cedar) => self.verdict(call, &cedar),
            Err(e) => e.into_verdict(),
        }
    }

    /// Both policy sets on a call already put to Cedar.
    pub(crate) fn verdict(&self, call: &CallRequest, cedar: &CedarCall) -> Verdict {
        let server = [cedar.server.clone()];
        let scope = Scope {
            principal: &cedar.principal,
            principal_ancestors: &[],
            action: &NAMES.call_tool,
            resource: &cedar.resource,
            resource_ancestors: &server,
        };

        let base =
            AUTHORIZER.is_authorized(&cedar.request, &self.base.slice(&scope), &cedar.entities);
        if let Some(verdict) = self.failed(&base) {
            return verdict;
        }
        let determining = sorted_reasons(&base);
        if base.decision() == CedarDecision::Deny {
            let reasons = if determining.is_empty() {
                vec![format!(
                    "no policy permits `{}` on `{}` for this task",
                    call.tool, call.server
                )]
            } else {
                determining
                    .iter()
                    .map(|id| self.reason(id, "forbidden by policy"))
                    .collect()
            };
            return Verdict {
                decision: Decision::Deny,
                policies: ids(&determining),
                reasons,
                errors: Vec::new(),
            };
        }

        let gate = AUTHORIZER.is_authorized(
            &cedar.request,
            &self.approval.slice(&scope),
            &cedar.entities,
        );
        if let Some(verdict) = self.failed(&gate) {
            return verdict;
        }
        let gates = sorted_reasons(&gate);
        if gate.decision() == CedarDecision::Allow {
            let reasons = gates.iter().map(|id| self.approval_reason(id)).collect();
            return Verdict {
                decision: Decision::ApprovalRequired,
                policies: ids(&gates),
                reasons,
                errors: Vec::new(),
            };
        }
        let reasons = determining
            .iter()
            .map(|id| self.reason(id, "permitted by policy"))
            .collect();
        Verdict {
            decision: Decision::Allow,
            policies: ids(&determining),
            reasons,
            errors: Vec::new(),
        }
    }

    /// A deny verdict when any policy errored: Cedar skips an erroring policy,
    /// which for a forbid would turn into an allow. Mandate does not.
    fn failed(&self, response: &Response) -> Option<Verdict> {
        let mut errors: Vec<EvaluationProblem> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => EvaluationProblem {
                    policy: e.policy_id().to_string(),
                    message: e.inner().to_string(),
                },
            })
            .collect();
        if errors.is_empty() {
            return None;
        }
        errors.sort_by(|a, b| a.policy.cmp(&b.policy));
        let reasons = errors
            .iter()
            .map(|e| {
                format!(
                    "policy `{}` could not be evaluated ({}); Mandate denies when any policy fails",
                    e.policy, e.message
                )
            })
            .collect();
        Some(Verdict {
            decision: Decision::Deny,
            policies: errors.iter().map(|e| e.policy.clone()).collect(),
            reasons,
            errors,
        })
    }

    fn reason(&self, id: &PolicyId, fallback: &str) -> String {
        self.origins
            .get(id)
            .and_then(|o| o.reason.clone())
            .unwrap_or_else(|| format!("{fallback} `{id}`"))
    }

    fn approval_reason(&self, id: &PolicyId) -> String {
        self.reason(id, "approval required by policy")
    }
}

fn sorted_reasons(response: &Response) -> Vec<PolicyId> {
    let mut ids: Vec<PolicyId> = response.diagnostics().reason().cloned().collect();
    ids.sort();
    ids
}

fn ids(ids: &[PolicyId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_names_parse() {
        assert_eq!(
            NAMES.call_tool.to_string(),
            r#"Mandate::Action::"call_tool""#
        );
        assert_eq!(NAMES.tool.to_string(), "Mandate::Tool");
    }
}
