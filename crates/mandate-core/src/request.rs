//! The decision request: what a caller sends, and its validated form.
//!
//! [`DecisionRequest`] is the wire shape (JSON, unknown fields rejected).
//! [`CallRequest`] is the same call after validation at the edge, with its free
//! JSON already turned into Cedar values, so the decision path cannot fail on
//! input any more.

use std::collections::BTreeSet;

use cedar_policy_core::ast::Value as CedarValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cedar_value;
use crate::decision::Decision;

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
}

/// The agent's identity and attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PrincipalInput {
    /// Workload identity, such as `spiffe://example.org/agent/mailer`.
    pub id: String,
    /// The person the agent acts for, if any; never merged into `id`.
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
    /// The server (MCP server or tool provider) that offers the tool; no `/`.
    pub server: String,
    /// The tool's name.
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
}

/// The task: intent, declared tools, data labels and free parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// Task id, if the caller has one.
    #[serde(default)]
    pub id: String,
    /// What the task is for, in words.
    #[serde(default)]
    pub intent: String,
    /// Names of the tools the task declared.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Labels of the data the task works with, such as `confidential`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Free parameters, such as `allowed_recipients`, typed by the pack's schema.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Map<String, Value>,
}

/// Session history: earlier calls of the task and the data labels that entered it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// Earlier calls, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Labels of data that entered the session, such as `untrusted`.
    #[serde(default)]
    pub labels: Vec<String>,
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
    /// A number Cedar cannot represent faithfully.
    #[error(
        "number `{number}` at `{path}` cannot be represented in Cedar (integers must fit in 64 bits; other numbers may have at most 4 fractional digits)"
    )]
    Number {
        /// Where in the request.
        path: String,
        /// The number as sent.
        number: String,
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
    pub(crate) session: Session,
    pub(crate) extra: CedarValue,
    pub(crate) time: Option<DateTime<Utc>>,
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
            open_world: a.open_world_hint.unwrap_or(true),
        }
    }
}

/// Session history condensed into what policies read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub tools_called: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    pub calls: i64,
    pub denials: i64,
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

/// Longest identity, server or tool name accepted.
const MAX_NAME: usize = 1024;

fn name(field: &'static str, value: &str) -> Result<(), RequestError> {
    if value.is_empty() {
        return Err(RequestError::Empty { field });
    }
    if value.len() > MAX_NAME {
        return Err(RequestError::Invalid {
            path: field.to_owned(),
            message: format!("longer than {MAX_NAME} bytes"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(RequestError::Invalid {
            path: field.to_owned(),
            message: "contains control characters".into(),
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
        } = request;
        name("principal.id", &principal.id)?;
        if let Some(person) = &principal.on_behalf_of {
            name("principal.on_behalf_of", person)?;
        }
        name("action.server", &action.server)?;
        name("action.tool", &action.tool)?;
        if action.server.contains('/') {
            return Err(RequestError::Invalid {
                path: "action.server".into(),
                message: "must not contain `/` (tools are named `server/tool`)".into(),
            });
        }
        let ContextInput {
            task,
            session,
            time,
            extra,
        } = context;
        let mut condensed = Session::default();
        condensed.labels.extend(session.labels);
        for entry in session.history {
            condensed.calls += 1;
            condensed.labels.extend(entry.labels);
            match entry.decision {
                Decision::Allow => {
                    condensed.tools_called.insert(entry.tool);
                }
                Decision::Deny => condensed.denials += 1,
                Decision::ApprovalRequired => {}
            }
        }
        Ok(CallRequest {
            trust_domain: trust_domain(&principal.id),
            principal_attributes: cedar_value::record(
                &principal.attributes,
                "principal.attributes",
            )?,
            principal: principal.id,
            on_behalf_of: principal.on_behalf_of,
            hints: Hints::from(&action.annotations),
            server: action.server,
            tool: action.tool,
            arguments: cedar_value::record(&arguments, "arguments")?,
            task_params: cedar_value::record(&task.params, "context.task.params")?,
            task,
            session: condensed,
            extra: cedar_value::record(&extra, "context.extra")?,
            time,
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
    fn empty_names_and_slashes_are_rejected() {
        let err = parse(json!({"principal": {"id": ""}, "action": {"server": "s", "tool": "t"}}))
            .unwrap_err();
        assert_eq!(err, "`principal.id` must not be empty");
        let err =
            parse(json!({"principal": {"id": "a"}, "action": {"server": "a/b", "tool": "t"}}))
                .unwrap_err();
        assert!(
            err.starts_with("`action.server`: must not contain `/`"),
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
        assert_eq!(call.session.calls, 2);
        assert_eq!(call.session.denials, 1);
        assert_eq!(
            call.session.tools_called.iter().collect::<Vec<_>>(),
            ["fetch"]
        );
        assert_eq!(
            call.session.labels.iter().collect::<Vec<_>>(),
            ["confidential", "untrusted"]
        );
    }
}
