//! The decision request: what a caller sends, and its validated form.
//!
//! [`DecisionRequest`] is the wire shape (JSON, unknown fields rejected).
//! [`CallRequest`] is the same call after validation at the edge, with its free
//! JSON already turned into Cedar values, so the decision path cannot fail on
//! input any more.

use cedar_policy_core::ast::Value as CedarValue;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::amounts::CallAmounts;
use crate::cedar_value;
use crate::decision::Decision;
use crate::names::{self, NameError};
use crate::provenance::{self, CallProvenance, Lookup};
use crate::session::{SessionId, SessionSummary};
use crate::value_kind::ValueKind;

/// A request for a decision on one tool call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The agent that attempts the call.
    pub principal: PrincipalInput,
    /// The tool being called.
    pub action: ToolCall,
    /// The call's arguments, as the tool would receive them.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub arguments: Map<String, Value>,
    /// The task and session the call belongs to.
    #[serde(default)]
    pub context: ContextInput,
    /// The approval this call was waiting for: with an approved approval for
    /// exactly this request, an `approval_required` outcome becomes `allow`
    /// (once). It never turns a deny into an allow.
    // Text, not an `ApprovalId`: an id that names no approval, even an
    // empty one, has always been decided (a deny, with its receipt) rather
    // than refused as malformed. The approval gate parses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// The agent's identity and attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PrincipalInput {
    /// Workload identity, such as `spiffe://example.org/agent/mailer`: a
    /// SPIFFE ID or another agent id ([`names::agent`]).
    pub id: String,
    /// The person the agent acts for, if any; never merged into `id`.
    /// Normalised to NFC ([`names::person`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Free attributes (for example verified token claims), typed by the pack's schema.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: Map<String, Value>,
}

/// The tool being called.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The server (MCP server or tool provider) that offers the tool:
    /// 1 to 64 of `a-z 0-9 _ - .` ([`names::server`]).
    pub server: String,
    /// The tool's name: 1 to 128 of `A-Z a-z 0-9 _ - .` ([`names::tool`]).
    pub tool: String,
    /// MCP tool annotations; missing hints take the MCP defaults.
    #[serde(default)]
    pub annotations: ToolAnnotations,
}

/// MCP tool annotations. Unknown annotation fields are ignored, as MCP clients do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// The tool does not change its environment (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// The tool may destroy or overwrite data (default true unless read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// Repeating the call has no further effect (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// The tool reaches an open world of external entities (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
    /// Whether the tool's output is trusted content: Mandate's own, not an
    /// MCP annotation, set from the operator's tool catalog (the MCP
    /// gateway's `[tools]`). Unset: untrusted exactly when the tool reaches
    /// an open world.
    #[serde(
        default,
        rename = "mandate/output",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<OutputTrust>,
    /// The arguments that name a destination, by dotted path, with the
    /// kind of value each names: Mandate's own, from the operator's tool
    /// catalog. Each one's provenance is in `context.provenance`.
    #[serde(
        default,
        rename = "mandate/arguments",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub arguments: BTreeMap<String, ValueKind>,
    /// Field names of the tool's output that hold free text, beyond the
    /// usual ones (`body`, `text`, …): Mandate's own, from the catalog.
    #[serde(
        default,
        rename = "mandate/textFields",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub text_fields: Vec<String>,
    /// The arguments that hold an amount (of money, or anything a pack
    /// caps), by dotted path: Mandate's own, from the catalog. Policies
    /// read the largest as `context.amounts.max`.
    #[serde(
        default,
        rename = "mandate/amounts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub amounts: Vec<String>,
}

/// Whether what a tool returns can carry instructions Mandate must not let
/// steer the session (a web page, a mail from a stranger) or not (the
/// confirmation of a mail sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputTrust {
    /// The output is the operator's or a trusted system's: it taints
    /// nothing.
    Trusted,
    /// The output may hold anyone's content: an allowed call labels the
    /// session `untrusted`.
    Untrusted,
}

impl ToolAnnotations {
    /// Whether the tool reaches an open world of external entities:
    /// `openWorldHint`, true unless the tool says otherwise (the MCP default).
    pub fn open_world(&self) -> bool {
        self.open_world_hint.unwrap_or(true)
    }

    /// Whether the tool's output is untrusted content: `mandate/output` if
    /// set, else whether it reaches an open world. Reaching the open world
    /// and returning what the open world wrote are different things: a
    /// mail sent is the first, a mail read the second.
    pub fn untrusted_output(&self) -> bool {
        match self.output {
            Some(OutputTrust::Trusted) => false,
            Some(OutputTrust::Untrusted) => true,
            None => self.open_world(),
        }
    }
}

/// The task and session around the call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContextInput {
    /// The task the agent works on.
    #[serde(default)]
    pub task: TaskInput,
    /// What happened earlier in the task.
    #[serde(default)]
    pub session: SessionInput,
    /// Decision time. Only offline evaluation (`mandate check`, policy tests)
    /// may set it; the server always uses its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// Free attributes, typed by the pack's schema (`Extra`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub extra: Map<String, Value>,
    /// Where each destination argument came from. The server fills it
    /// (from the task and its session); only offline evaluation (`mandate
    /// check`, policy tests) may set it. Unset offline, only the task's
    /// parameters ground a destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<CallProvenance>,
}

/// The task: intent, declared tools, data labels and free parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// Task id, if the caller has one.
    // Text, not a `TaskId`: without a task credential it is the caller's
    // own name for its task (any text up to 1024 bytes, empty for none).
    #[serde(default)]
    pub id: String,
    /// What the task is for, in words.
    #[serde(default)]
    pub intent: String,
    /// Names of the tools the task declared, bare (without server).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Labels of the data the task works with, such as `confidential`
    /// ([`names::label`]).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Free parameters, such as `allowed_recipients`, typed by the pack's schema.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Map<String, Value>,
    /// The delegation chain of the task credential the call was made under,
    /// root first: depths `0, 1, 2, …`, and the last hop is the principal.
    /// Empty when the call was not made under a delegated credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<HopInput>,
}

impl TaskInput {
    /// Whether nothing is set: no id, intent, tools, labels, params or chain.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
            && self.intent.is_empty()
            && self.tools.is_empty()
            && self.labels.is_empty()
            && self.params.is_empty()
            && self.chain.is_empty()
    }
}

/// One hop of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HopInput {
    /// The agent at this hop (a workload identity, like `principal.id`).
    pub agent: String,
    /// Depth from the task's root agent: 0 for the root.
    pub depth: u32,
}

/// Session history: earlier calls of the task and the data labels that
/// entered it, either entry by entry (`history`, `labels`) or already
/// condensed (`summary`), not both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// Earlier calls, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Labels of data that entered the session, such as `untrusted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The session condensed, as a caller keeping its own session (or the
    /// server, for a task) keeps it: its size does not grow with the
    /// number of calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SessionSummary>,
    /// A session the server keeps for the principal (`POST /v1/decide`
    /// without a task credential): the server fills `summary` from it and
    /// records the decision into it, so that every gateway of the agent
    /// shares one session. Not to be sent with `history`, `labels` or
    /// `summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub id: Option<SessionId>,
}

impl SessionInput {
    /// Whether nothing is set: no history, no labels and no summary.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
            && self.labels.is_empty()
            && self.summary.is_none()
            && self.id.is_none()
    }
}

/// One earlier call in the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// The server of the earlier call.
    #[serde(default)]
    pub server: String,
    /// The tool of the earlier call.
    pub tool: String,
    /// What was decided for it.
    pub decision: Decision,
    /// Labels of the data its result brought into the session.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The MCP annotations the earlier call was decided with, from which its
    /// action class (`read`, `write`, `destructive`) is derived. Without
    /// them the entry has no known action class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// Why a decision request was rejected before evaluation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A required text field is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field holds a value Mandate does not accept.
    #[error("`{path}`: {message}")]
    Invalid {
        /// Where in the request.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Free JSON nests deeper than allowed.
    #[error("`{path}` nests deeper than {max} levels")]
    TooDeep {
        /// Where the limit was passed.
        path: String,
        /// The limit.
        max: usize,
    },
    /// A value does not have the type the policy pack's schema declares.
    #[error("{message}")]
    Undeclared {
        /// What is wrong, with the path.
        message: String,
    },
}

/// A decision request that passed validation, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub(crate) principal: String,
    pub(crate) trust_domain: String,
    pub(crate) on_behalf_of: Option<String>,
    pub(crate) principal_attributes: CedarValue,
    pub(crate) server: String,
    pub(crate) tool: String,
    pub(crate) hints: Hints,
    pub(crate) arguments: CedarValue,
    pub(crate) task: TaskInput,
    pub(crate) task_params: CedarValue,
    pub(crate) chain: Vec<HopInput>,
    pub(crate) session: Session,
    pub(crate) extra: CedarValue,
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) provenance: CallProvenance,
    /// The argument paths the catalog declares as destinations, sent or not.
    pub(crate) declared_destinations: Vec<String>,
    pub(crate) amounts: CallAmounts,
}

/// Tool hints with MCP defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl From<&ToolAnnotations> for Hints {
    fn from(a: &ToolAnnotations) -> Self {
        let read_only = a.read_only_hint.unwrap_or(false);
        Hints {
            read_only,
            // MCP: destructiveHint defaults to true and means nothing for read-only tools.
            destructive: a.destructive_hint.unwrap_or(!read_only),
            idempotent: a.idempotent_hint.unwrap_or(false),
            open_world: a.open_world(),
        }
    }
}

impl Hints {
    /// The class of action the hints describe. MCP gives `destructiveHint`
    /// meaning only for tools that are not read-only, so read-only wins.
    pub(crate) fn action_class(self) -> ActionClass {
        if self.read_only {
            ActionClass::Read
        } else if self.destructive {
            ActionClass::Destructive
        } else {
            ActionClass::Write
        }
    }
}

/// What kind of change a call makes, derived from its MCP hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    /// `readOnlyHint`: the tool does not change its environment.
    Read,
    /// Not read-only and not destructive: the tool adds or changes things.
    Write,
    /// Not read-only and destructive (the MCP default).
    Destructive,
}

impl ActionClass {
    /// The name policies see (`resource.action_class`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Read => "read",
            ActionClass::Write => "write",
            ActionClass::Destructive => "destructive",
        }
    }
}

/// The session as one call sees it: the summary, and how often this
/// call's tool was used.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub summary: SessionSummary,
    pub uses_of_this_tool: u64,
}

impl Session {
    /// The session of `session` for a call of `tool` on `server`. A history
    /// is folded into a summary, linear in its length: it comes from the
    /// caller.
    fn for_call(session: SessionInput, server: &str, tool: &str) -> Self {
        let summary = SessionSummary::from(session);
        Session {
            uses_of_this_tool: summary.uses_of(server, tool),
            summary,
        }
    }
}

impl CallRequest {
    /// The agent's identity.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The server of the tool being called.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The tool being called.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The decision time the request carries, if it set one (offline use only).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
}

/// Longest task id a caller may send.
const MAX_TASK_ID: usize = 1024;

/// The longest task intent, in bytes: the same bound `POST /v1/tasks` puts
/// on a task's intent. An approval shows the intent to its approver and
/// keeps it, so it must stay a sentence, not a document.
const MAX_INTENT: usize = 4096;

/// Free text that is kept (a task's id and intent): any characters, but
/// bounded, so that a request cannot make Mandate store megabytes of it.
fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), RequestError> {
    if value.len() > max {
        return Err(RequestError::Invalid {
            path: field.to_owned(),
            message: format!("must be at most {max} bytes, but is {}", value.len()),
        });
    }
    Ok(())
}

/// A name checked against its grammar, refused at `path`.
fn named(path: impl Into<String>, checked: Result<(), NameError>) -> Result<(), RequestError> {
    checked.map_err(|e| RequestError::Invalid {
        path: path.into(),
        message: e.to_string(),
    })
}

/// A required name: empty is reported as missing, anything else must pass
/// its grammar.
fn required(
    field: &'static str,
    value: &str,
    check: fn(&str) -> Result<(), NameError>,
) -> Result<(), RequestError> {
    if value.is_empty() {
        return Err(RequestError::Empty { field });
    }
    named(field, check(value))
}

/// Checks every label of `labels`, reported as `path[i]`.
fn labels<'a>(
    path: &str,
    labels: impl IntoIterator<Item = &'a String>,
) -> Result<(), RequestError> {
    for (i, label) in labels.into_iter().enumerate() {
        named(format!("{path}[{i}]"), names::label(label))?;
    }
    Ok(())
}

/// Checks the names a caller's session carries: the servers, tools and
/// labels of its history, or of its summary. Session names reach policies
/// (`tools_called`, `labels`) as much as the call's own do.
fn check_session(session: &SessionInput) -> Result<(), RequestError> {
    let path = "context.session";
    labels(&format!("{path}.labels"), &session.labels)?;
    for (i, entry) in session.history.iter().enumerate() {
        let at = format!("{path}.history[{i}]");
        if !entry.server.is_empty() {
            named(format!("{at}.server"), names::server(&entry.server))?;
        }
        named(format!("{at}.tool"), names::tool(&entry.tool))?;
        labels(&format!("{at}.labels"), &entry.labels)?;
    }
    if let Some(summary) = &session.summary {
        let at = format!("{path}.summary");
        labels(&format!("{at}.labels"), &summary.labels)?;
        labels(&format!("{at}.new_labels"), &summary.new_labels)?;
        for (server, tools) in &summary.uses {
            // `""` holds uses recorded without a server.
            if !server.is_empty() {
                named(format!("{at}.uses"), names::server(server))?;
            }
            for tool in tools.keys() {
                named(format!("{at}.uses.{server}"), names::tool(tool))?;
            }
        }
    }
    Ok(())
}

/// Most destination arguments or free-text field names a tool declares.
const MAX_CATALOG_ENTRIES: usize = 64;

/// Checks the catalog a call's annotations carry: destination and amount
/// paths are 1 to 128 bytes of dot-separated names of `A-Z a-z 0-9 _ -`,
/// free-text field names one such name, at most [`MAX_CATALOG_ENTRIES`] of
/// each.
fn check_catalog(annotations: &ToolAnnotations) -> Result<(), RequestError> {
    const PATH: &str =
        "an argument path: 1 to 128 bytes of names of `A-Z a-z 0-9 _ -` joined by `.`";
    check_entries(
        "mandate/arguments",
        annotations.arguments.keys(),
        catalog_path,
        PATH,
    )?;
    check_entries("mandate/amounts", &annotations.amounts, catalog_path, PATH)?;
    check_entries(
        "mandate/textFields",
        &annotations.text_fields,
        |f| f.len() <= 128 && catalog_name(f),
        "a field name: 1 to 128 of `A-Z a-z 0-9 _ -`",
    )
}

/// Checks one list of the catalog: at most [`MAX_CATALOG_ENTRIES`], each
/// `valid` (`grammar` says what that is).
fn check_entries<'a>(
    key: &str,
    entries: impl IntoIterator<Item = &'a String>,
    valid: fn(&str) -> bool,
    grammar: &str,
) -> Result<(), RequestError> {
    let invalid = |message: String| RequestError::Invalid {
        path: format!("action.annotations.{key}"),
        message,
    };
    for (i, entry) in entries.into_iter().enumerate() {
        if i >= MAX_CATALOG_ENTRIES {
            return Err(invalid(format!(
                "has more than {MAX_CATALOG_ENTRIES} entries"
            )));
        }
        if !valid(entry) {
            return Err(invalid(format!(
                "`{}` is not {grammar}",
                entry.escape_debug()
            )));
        }
    }
    Ok(())
}

/// One name of a catalog path or field: `A-Z a-z 0-9 _ -`, not empty.
fn catalog_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A catalog path: names joined by `.`, at most 128 bytes.
fn catalog_path(path: &str) -> bool {
    path.len() <= 128 && path.split('.').all(catalog_name)
}

/// Checks a delegation chain: root first, depths `0, 1, 2, …`, every agent a
/// valid name, and the last hop the principal itself.
fn check_chain(chain: &[HopInput], principal: &str) -> Result<(), RequestError> {
    for (i, hop) in chain.iter().enumerate() {
        let invalid = |field: &str, message: String| RequestError::Invalid {
            path: format!("context.task.chain[{i}].{field}"),
            message,
        };
        names::agent(&hop.agent).map_err(|e| invalid("agent", e.to_string()))?;
        if usize::try_from(hop.depth).ok() != Some(i) {
            return Err(invalid(
                "depth",
                format!(
                    "is {}, expected {i} (hops are listed root first, with depths 0, 1, 2, …)",
                    hop.depth
                ),
            ));
        }
    }
    if let Some(last) = chain.last()
        && last.agent != principal
    {
        return Err(RequestError::Invalid {
            path: "context.task.chain".into(),
            message: format!(
                "the last hop is `{}`, but the chain must end at the principal `{principal}`",
                last.agent
            ),
        });
    }
    Ok(())
}

/// Trust domain of a SPIFFE ID, or "" for any other identity.
fn trust_domain(id: &str) -> String {
    id.strip_prefix("spiffe://")
        .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

impl TryFrom<DecisionRequest> for CallRequest {
    type Error = RequestError;

    fn try_from(request: DecisionRequest) -> Result<Self, Self::Error> {
        let DecisionRequest {
            principal,
            action,
            arguments,
            context,
            approval_id: _,
        } = request;
        required("principal.id", &principal.id, names::agent)?;
        let on_behalf_of = match &principal.on_behalf_of {
            None => None,
            Some(person) if person.is_empty() => {
                return Err(RequestError::Empty {
                    field: "principal.on_behalf_of",
                });
            }
            Some(person) => Some(names::person(person).map_err(|e| RequestError::Invalid {
                path: "principal.on_behalf_of".into(),
                message: e.to_string(),
            })?),
        };
        required("action.server", &action.server, names::server)?;
        required("action.tool", &action.tool, names::tool)?;
        let ContextInput {
            mut task,
            session,
            time,
            extra,
            provenance,
        } = context;
        check_catalog(&action.annotations)?;
        let provenance = provenance.unwrap_or_else(|| {
            provenance::of_call(
                &arguments,
                &action.annotations.arguments,
                Lookup {
                    params: &task.params,
                    grounds: None,
                },
            )
        });
        bounded_text("context.task.id", &task.id, MAX_TASK_ID)?;
        bounded_text("context.task.intent", &task.intent, MAX_INTENT)?;
        for (i, tool) in task.tools.iter().enumerate() {
            named(format!("context.task.tools[{i}]"), names::tool(tool))?;
        }
        labels("context.task.labels", &task.labels)?;
        check_chain(&task.chain, &principal.id)?;
        check_session(&session)?;
        let mut chain = std::mem::take(&mut task.chain);
        if chain.is_empty() {
            // Not delegated: the principal is the root of its own chain.
            chain.push(HopInput {
                agent: principal.id.clone(),
                depth: 0,
            });
        }
        if session.summary.is_some() && !(session.history.is_empty() && session.labels.is_empty()) {
            return Err(RequestError::Invalid {
                path: "context.session".into(),
                message: "send either `history` and `labels`, or `summary`, not both".into(),
            });
        }
        if session.id.is_some() && !(session.history.is_empty() && session.labels.is_empty()) {
            return Err(RequestError::Invalid {
                path: "context.session".into(),
                message:
                    "`id` names a session the server keeps: send no `history` or `labels` with it"
                        .into(),
            });
        }
        let session = Session::for_call(session, &action.server, &action.tool);
        Ok(CallRequest {
            trust_domain: trust_domain(&principal.id),
            principal_attributes: cedar_value::record(
                &principal.attributes,
                "principal.attributes",
            )?,
            principal: principal.id,
            on_behalf_of,
            hints: Hints::from(&action.annotations),
            server: action.server,
            tool: action.tool,
            arguments: cedar_value::record(&arguments, "arguments")?,
            task_params: cedar_value::record(&task.params, "context.task.params")?,
            task,
            chain,
            session,
            extra: cedar_value::record(&extra, "context.extra")?,
            time,
            provenance,
            amounts: CallAmounts::of(&arguments, &action.annotations.amounts),
            declared_destinations: action.annotations.arguments.into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CallRequest, String> {
        let r: DecisionRequest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        CallRequest::try_from(r).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_hints_take_the_mcp_defaults() {
        assert_eq!(
            Hints::from(&ToolAnnotations::default()),
            Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
                open_world: true
            }
        );
        let ro = ToolAnnotations {
            read_only_hint: Some(true),
            ..Default::default()
        };
        assert!(!Hints::from(&ro).destructive);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse(json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"}, "decision": "allow"}))
            .unwrap_err();
        assert!(err.contains("unknown field `decision`"), "{err}");
    }

    #[test]
    fn a_task_intent_or_id_is_bounded() {
        let request = |task: Value| json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"}, "context": {"task": task}});
        assert!(
            parse(request(
                json!({"id": "t".repeat(1024), "intent": "i".repeat(4096)})
            ))
            .is_ok()
        );
        let err = parse(request(json!({"intent": "i".repeat(4097)}))).unwrap_err();
        assert_eq!(
            err,
            "`context.task.intent`: must be at most 4096 bytes, but is 4097"
        );
        let err = parse(request(json!({"id": "t".repeat(1025)}))).unwrap_err();
        assert!(
            err.starts_with("`context.task.id`: must be at most 1024 bytes"),
            "{err}"
        );
    }

    #[test]
    fn empty_names_and_slashes_are_rejected() {
        let err = parse(json!({"principal": {"id": ""}, "action": {"server": "s", "tool": "t"}}))
            .unwrap_err();
        assert_eq!(err, "`principal.id` must not be empty");
        let err =
            parse(json!({"principal": {"id": "a"}, "action": {"server": "a/b", "tool": "t"}}))
                .unwrap_err();
        assert!(
            err.starts_with("`action.server`: server name `a/b` has `/`, which is not allowed"),
            "{err}"
        );
    }

    #[test]
    fn history_is_condensed() {
        let call = parse(json!({
            "principal": {"id": "spiffe://example.org/agent/a"},
            "action": {"server": "s", "tool": "t"},
            "context": {"session": {"labels": ["confidential"], "history": [
                {"tool": "fetch", "decision": "allow", "labels": ["untrusted"]},
                {"tool": "delete", "decision": "deny"}
            ]}}
        }))
        .unwrap();
        assert_eq!(call.trust_domain, "example.org");
        assert_eq!(call.session.summary.calls, 2);
        assert_eq!(call.session.summary.denials, 1);
        assert_eq!(
            call.session
                .summary
                .tools_called()
                .into_iter()
                .collect::<Vec<_>>(),
            ["fetch"]
        );
        assert_eq!(
            call.session.summary.labels.iter().collect::<Vec<_>>(),
            ["confidential", "untrusted"]
        );
        // The untrusted label came with the last allowed call's result, and
        // the denied call after it did not run: it is still new. The
        // session-level label counts as older than the allowed call.
        assert_eq!(
            call.session.summary.new_labels.iter().collect::<Vec<_>>(),
            ["untrusted"]
        );
        assert_eq!(call.session.uses_of_this_tool, 0);
        assert!(call.session.summary.action_classes.is_empty());
    }

    #[test]
    fn a_summary_and_a_history_are_not_sent_together() {
        let err = parse(json!({
            "principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
            "context": {"session": {"labels": ["untrusted"], "summary": {"calls": 1}}}
        }))
        .unwrap_err();
        assert!(
            err.contains("either `history` and `labels`, or `summary`"),
            "{err}"
        );
        let call = parse(json!({
            "principal": {"id": "a"}, "action": {"server": "s", "tool": "t"},
            "context": {"session": {"summary": {"calls": 4, "uses": {"s": {"t": 3}, "": {"t": 1}}}}}
        }))
        .unwrap();
        assert_eq!(call.session.summary.calls, 4);
        assert_eq!(call.session.uses_of_this_tool, 4);
    }

    fn session_for(server: &str, tool: &str, history: Value) -> Session {
        parse(json!({
            "principal": {"id": "a"},
            "action": {"server": server, "tool": tool},
            "context": {"session": {"history": history}}
        }))
        .unwrap()
        .session
    }

    #[test]
    fn uses_of_a_tool_count_allowed_calls_of_the_same_server_and_name() {
        let history = json!([
            {"server": "mail", "tool": "send", "decision": "allow"},
            {"server": "mail", "tool": "send", "decision": "deny"},
            {"server": "mail", "tool": "send", "decision": "approval_required"},
            {"server": "other", "tool": "send", "decision": "allow"},
            {"tool": "send", "decision": "allow"},
        ]);
        assert_eq!(
            session_for("mail", "send", history.clone()).uses_of_this_tool,
            2
        );
        assert_eq!(
            session_for("other", "send", history.clone()).uses_of_this_tool,
            2
        );
        assert_eq!(
            session_for("third", "send", history.clone()).uses_of_this_tool,
            1
        );
        assert_eq!(session_for("mail", "read", history).uses_of_this_tool, 0);
    }

    #[test]
    fn labels_stay_new_until_a_call_is_allowed_after_them() {
        let new = |history: Value| {
            let session = session_for("s", "t", history);
            session.summary.new_labels.into_iter().collect::<Vec<_>>()
        };
        let fetched = json!({"tool": "fetch", "decision": "allow", "labels": ["untrusted"]});
        assert_eq!(new(json!([fetched])), ["untrusted"]);
        let denied = json!({"tool": "send", "decision": "deny"});
        let waiting = json!({"tool": "send", "decision": "approval_required"});
        assert_eq!(new(json!([fetched, denied, waiting])), ["untrusted"]);
        let allowed = json!({"tool": "read", "decision": "allow", "labels": ["confidential"]});
        assert_eq!(new(json!([fetched, allowed])), ["confidential"]);
        assert!(new(json!([fetched, allowed, allowed])).is_empty());
    }

    #[test]
    fn action_classes_come_from_the_annotations_of_allowed_calls() {
        let session = session_for(
            "s",
            "t",
            json!([
                {"tool": "a", "decision": "allow", "annotations": {"readOnlyHint": true}},
                {"tool": "b", "decision": "allow", "annotations": {"destructiveHint": false}},
                {"tool": "c", "decision": "deny", "annotations": {}},
                {"tool": "d", "decision": "allow"},
            ]),
        );
        assert_eq!(
            session
                .summary
                .action_classes
                .into_iter()
                .collect::<Vec<_>>(),
            [ActionClass::Read, ActionClass::Write]
        );
        let class = |a: Value| {
            Hints::from(&serde_json::from_value::<ToolAnnotations>(a).unwrap()).action_class()
        };
        assert_eq!(class(json!({})), ActionClass::Destructive);
        assert_eq!(
            class(json!({"readOnlyHint": true, "destructiveHint": true})),
            ActionClass::Read
        );
    }

    #[test]
    fn without_a_chain_the_principal_is_the_root() {
        let call = parse(json!({"principal": {"id": "a"}, "action": {"server": "s", "tool": "t"}}))
            .unwrap();
        assert_eq!(
            call.chain,
            [HopInput {
                agent: "a".into(),
                depth: 0
            }]
        );
    }

    #[test]
    fn chains_are_checked() {
        let with_chain = |principal: &str, chain: Value| {
            parse(json!({
                "principal": {"id": principal},
                "action": {"server": "s", "tool": "t"},
                "context": {"task": {"chain": chain}}
            }))
        };
        let call = with_chain(
            "b",
            json!([{"agent": "a", "depth": 0}, {"agent": "b", "depth": 1}]),
        )
        .unwrap();
        assert_eq!(call.chain.len(), 2);

        let err = with_chain(
            "b",
            json!([{"agent": "b", "depth": 1}, {"agent": "a", "depth": 0}]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("`context.task.chain[0].depth`: is 1, expected 0"),
            "{err}"
        );
        let err = with_chain(
            "b",
            json!([{"agent": "a", "depth": 0}, {"agent": "b", "depth": 2}]),
        )
        .unwrap_err();
        assert!(err.starts_with("`context.task.chain[1].depth`"), "{err}");
        let err = with_chain(
            "b",
            json!([{"agent": "", "depth": 0}, {"agent": "b", "depth": 1}]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("`context.task.chain[0].agent`: agent id `` is empty"),
            "{err}"
        );
        let err = with_chain(
            "b",
            json!([{"agent": "a\n", "depth": 0}, {"agent": "b", "depth": 1}]),
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "`context.task.chain[0].agent`: agent id `a\\u{a}` has a control character (U+000A)"
            ),
            "{err}"
        );
        let err = with_chain(
            "c",
            json!([{"agent": "a", "depth": 0}, {"agent": "b", "depth": 1}]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("`context.task.chain`: the last hop is `b`"),
            "{err}"
        );
        let err = with_chain("a", json!([{"agent": "a", "depth": -1}])).unwrap_err();
        assert!(err.contains("expected u32"), "{err}");
        let err = with_chain("a", json!([{"agent": "a", "depth": 0, "extra": 1}])).unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }
}
