//! The bodies of the task and approval endpoints of Mandate's HTTP API.
//!
//! The server parses the requests and writes the answers with these types,
//! and `mandate-client` sends and reads them, so that a change to the
//! contract is a compile error in both rather than a failure at run time.
//! Request bodies reject unknown fields, as the server always has.
//!
//! | Request | Body | Answer |
//! | --- | --- | --- |
//! | `POST /v1/tasks` | [`StartTask`] | [`TaskStarted`] |
//! | `GET /v1/tasks/{id}` | | [`TaskView`] |
//! | `POST /v1/tasks/{id}/delegate` | [`DelegateTask`] | [`Delegated`] |
//! | `DELETE /v1/tasks/{id}` | | [`TaskEnded`] |
//! | `GET /v1/approvals` | | [`ApprovalList`] |
//! | `GET /v1/approvals/{id}` | | [`ApprovalView`] |
//! | `POST /v1/approvals/{id}/approve`, `/deny` | [`ResolveApproval`] | [`ApprovalView`] |
//! | `POST /v1/approvals/{id}/withdraw` | [`WithdrawApproval`] | [`ApprovalView`] |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::approval::{Approval, ApprovalStatus};
use crate::decision::Decision;
use crate::ids::{ApprovalId, DecisionId, TaskId};
use crate::value_kind::ValueKind;

/// A task to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    /// What the task is for, in words. Not empty; at most 4096 bytes.
    pub intent: String,
    /// Tools the task may call, as `server/tool`. At least one.
    pub tools: Vec<String>,
    /// Labels of the data in the task's scope, such as `confidential`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Free parameters of the task, such as `allowed_recipients`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Map<String, Value>,
    /// The task's lifetime in seconds: from 1 to the server's
    /// `task_max_ttl_seconds`.
    pub ttl_seconds: u64,
    /// How many delegation hops may follow the root agent: 0 (the default:
    /// no delegation) to 16.
    #[serde(default)]
    pub max_depth: u32,
    /// The user's instruction the task carries out, as the person wrote
    /// it: at most 16 KiB. The destinations it names (addresses, accounts,
    /// URLs, handles, phone numbers) ground the task's calls as `prompt`.
    /// Only keyed digests of those values are kept, not the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Values the task may send to, each a whole value or a list of them
    /// (`"a@example.com, b@example.com"`): at most 256, each at most 512
    /// bytes. They ground the task's calls as `task_params`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grounded_values: Vec<String>,
}

/// A started task and its root credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStarted {
    /// The task's id (a UUIDv7).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task_id: TaskId,
    /// The root agent's task credential: a Biscuit token, base64url.
    /// Present it as `Authorization: Bearer <credential>`.
    pub credential: String,
    /// When the task and its credential expire (whole seconds).
    pub expires_at: DateTime<Utc>,
    /// The credential's revocation id (hex), as `GET /v1/revocations` lists
    /// it once the task ends.
    pub revocation_id: String,
}

/// A narrower credential to issue for a sub-agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DelegateTask {
    /// The sub-agent's identity, such as its SPIFFE ID.
    pub agent: String,
    /// Tools the sub-agent may call: a non-empty subset of the delegating
    /// credential's tools.
    pub tools: Vec<String>,
    /// Data labels kept: a subset of the delegating credential's labels.
    /// Absent: all of them.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// The sub-agent credential's lifetime in seconds; it may not outlive
    /// the delegating credential. Absent: until the delegating credential
    /// expires.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A credential issued for a sub-agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delegated {
    /// The sub-agent's task credential (Biscuit, base64url).
    pub credential: String,
    /// When it expires (whole seconds).
    pub expires_at: DateTime<Utc>,
    /// Its revocation id: the id of its last block (hex).
    pub revocation_id: String,
    /// Its depth: 1 for a sub-agent of the root agent, and so on.
    pub depth: u32,
}

/// A task, its delegation tree and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    /// The task's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: TaskId,
    /// The root agent: the subject of the identity token that started it.
    pub agent: String,
    /// The human the root agent acts for, if its token named one.
    pub on_behalf_of: Option<String>,
    /// What the task is for.
    pub intent: String,
    /// Tools the task may call.
    pub tools: Vec<String>,
    /// Data labels in the task's scope.
    pub labels: Vec<String>,
    /// The task's free parameters.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Map<String, Value>,
    /// The audience of the task's credentials.
    pub audience: String,
    /// How many delegation hops may follow the root agent.
    pub max_depth: u32,
    /// When the task started.
    pub created_at: DateTime<Utc>,
    /// When its TTL runs out.
    pub expires_at: DateTime<Utc>,
    /// `open`, `ended` (a caller ended it) or `expired` (its TTL ran out).
    pub state: String,
    /// When it ended, if it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended: `ended` or `expired`.
    pub end_reason: Option<String>,
    /// Every credential issued under the task, in issue order, the root
    /// credential first; each names its parent: the delegation tree.
    pub credentials: Vec<CredentialView>,
    /// The task's decisions, in the order they were recorded.
    pub history: Vec<HistoryView>,
}

/// One credential of a task's delegation tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialView {
    /// Its revocation id (hex).
    pub revocation_id: String,
    /// The revocation id of the credential it was delegated from; `null` for
    /// the root credential.
    pub parent_revocation_id: Option<String>,
    /// The agent holding it.
    pub agent: String,
    /// 0 for the root agent, the parent's depth + 1 for a delegation.
    pub depth: u32,
    /// Its effective tools.
    pub tools: Vec<String>,
    /// Its effective data labels.
    pub labels: Vec<String>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Whether it is revoked (its task ended).
    pub revoked: bool,
}

/// One decision of a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryView {
    /// The decision's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub decision_id: DecisionId,
    /// The agent that made the call.
    pub agent: String,
    /// The tool's server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// The outcome.
    pub decision: Decision,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// The MCP tool annotations the call was decided with: the hints it
    /// sent (`readOnlyHint`, `openWorldHint`, …); `null` if unknown.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub annotations: Option<Map<String, Value>>,
    /// What the call returned, once reported.
    pub result: Option<ResultView>,
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultView {
    /// `ok` or `error`.
    pub status: String,
    /// Labels of the data the call brought into the session.
    pub labels: Vec<String>,
    /// When it was reported.
    pub reported_at: DateTime<Utc>,
}

/// An ended task and the credentials revoked with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskEnded {
    /// The task's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task_id: TaskId,
    /// When it ended (the first time, if it had ended already).
    pub ended_at: DateTime<Utc>,
    /// Why: `ended`, or `expired` if its TTL had run out first.
    pub end_reason: String,
    /// The revocation ids of every credential of the task, in issue order.
    pub revoked: Vec<String>,
}

/// An approval as the API shows it. Anyone holding its id sees the status
/// fields; an approver also sees what was asked (`summary`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalView {
    /// The approval's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: ApprovalId,
    /// Its status now: `pending`, `approved`, `denied`, `expired`, `used` or
    /// `withdrawn`
    /// (a pending approval past its expiry shows `expired`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "pending"))]
    pub status: ApprovalStatus,
    /// The decision that asked for it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub decision_id: DecisionId,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When it expires unanswered.
    pub expires_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who approved or denied it.
    pub resolved_by: Option<String>,
    /// Their reason.
    pub reason: Option<String>,
    /// Approvers only: the decision that released the approved call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub released_by: Option<DecisionId>,
    /// Approvers only: the task the request was made under.
    // Text, not a `TaskId`: without a task credential it is whatever the
    // request named in `context.task.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Approvers only: what was asked (agent, person, delegation chain,
    /// task, tool, arguments as receipts keep them, policies and reasons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub summary: Option<Value>,
    /// Approvers only: digest of what the approval is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sha256: Option<String>,
}

impl ApprovalView {
    /// The status fields of `approval` at `now`: what anyone holding its id
    /// sees.
    pub fn status(approval: &Approval, now: DateTime<Utc>) -> Self {
        Self {
            id: approval.id.clone(),
            status: approval.status_at(now),
            decision_id: approval.decision_id.clone(),
            created_at: approval.created_at,
            expires_at: approval.expires_at,
            resolved_at: approval.resolved_at,
            resolved_by: approval.resolved_by.clone(),
            reason: approval.reason.clone(),
            released_by: None,
            task_id: None,
            summary: None,
            request_sha256: None,
        }
    }
}

/// Approvals, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalList {
    /// The approvals.
    pub items: Vec<ApprovalView>,
}

/// Approve or deny: the reason given with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResolveApproval {
    /// Why; it goes into the receipt and to the agent. Required: without
    /// it (or without a body) the answer is `422 reason_required`.
    #[serde(default)]
    pub reason: String,
}

/// Withdraw: the reason, if the requester gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WithdrawApproval {
    /// Why the request is withdrawn (the call was cancelled, say); it goes
    /// into the receipt. Default: `withdrawn by the requester`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A destination value an integration found in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportedValue {
    /// The value (or a list of values separated by `,` or `;`).
    pub value: String,
    /// Where it was: the whole of a structured field, or inside free text.
    pub field: ValueField,
    /// The kind of value, when the reporter knows it (the MCP gateway
    /// does): the value is then read as that kind only, one value. Unset,
    /// it is read as every kind that accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueKind>,
}

/// The most `values` one result report carries.
pub const MAX_REPORTED_VALUES: usize = 1_000;

/// The kind of place a value was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ValueField {
    /// The whole of a field a system filled (a sender, a participant list).
    Structured,
    /// Inside free text (a body, a page).
    Text,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Optional request fields the server defaults may be left out, and
    /// fields it does not know are refused.
    #[test]
    fn request_bodies_default_what_may_be_absent_and_refuse_the_unknown() {
        let task: StartTask =
            serde_json::from_str(r#"{"intent": "x", "tools": ["a/b"], "ttl_seconds": 60}"#)
                .unwrap();
        assert_eq!(task.labels, Vec::<String>::new());
        assert_eq!(task.max_depth, 0);
        assert!(task.params.is_empty());
        assert!(
            serde_json::from_str::<StartTask>(
                r#"{"intent": "x", "tools": ["a/b"], "ttl_seconds": 60, "ttl": 1}"#
            )
            .is_err()
        );
        let resolve: ResolveApproval = serde_json::from_str("{}").unwrap();
        assert_eq!(resolve, ResolveApproval::default());
        assert!(
            serde_json::from_str::<DelegateTask>(r#"{"agent": "a", "tools": [], "x": 1}"#).is_err()
        );
    }

    /// Status views leave out the approver-only fields; the others are
    /// written even when empty.
    #[test]
    fn status_views_omit_the_approver_fields() {
        let at = DateTime::UNIX_EPOCH;
        let view = ApprovalView {
            id: ApprovalId::new("a1").unwrap(),
            status: ApprovalStatus::Pending,
            decision_id: DecisionId::new("d1").unwrap(),
            created_at: at,
            expires_at: at,
            resolved_at: None,
            resolved_by: None,
            reason: None,
            released_by: None,
            task_id: None,
            summary: None,
            request_sha256: None,
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "a1", "status": "pending", "decision_id": "d1",
                "created_at": "1970-01-01T00:00:00Z", "expires_at": "1970-01-01T00:00:00Z",
                "resolved_at": null, "resolved_by": null, "reason": null,
            })
        );
        assert_eq!(serde_json::from_value::<ApprovalView>(json).unwrap(), view);
    }
}
