//! Mandate's decision core.
//!
//! This crate turns one attempted tool call into a [`Decision`]: it validates
//! the call at the edge ([`DecisionRequest`] into [`CallRequest`]), maps it onto
//! Mandate's Cedar schema, and evaluates it against a loaded [`PolicyPack`].
//! It does no I/O: callers hand it policy texts, the time and the request.
//!
//! Three outcomes come from two Cedar policy sets, evaluated in order:
//!
//! 1. the **base set** (every policy without an `@approval` annotation): a
//!    Cedar deny here is final;
//! 2. the **approval gate** (permits annotated `@approval("why")`): when one
//!    matches an allowed call, the call needs a person's approval.
//!
//! Any evaluation error in either set makes the decision a deny.
//!
//! ```
//! use mandate_core::{CallRequest, Decision, DecisionRequest, PolicyPack, PolicySource};
//!
//! let pack = PolicyPack::load(
//!     &[PolicySource::new(
//!         "tools.cedar",
//!         r#"permit (principal, action, resource)
//!            when { context.task.tools.contains(resource.name) };"#,
//!     )],
//!     None,
//! )
//! .unwrap();
//! let request: DecisionRequest = serde_json::from_str(
//!     r#"{
//!         "principal": {"id": "spiffe://example.org/agent/reader"},
//!         "action": {"server": "docs", "tool": "search", "annotations": {"readOnlyHint": true}},
//!         "context": {"task": {"intent": "find the runbook", "tools": ["search"]}}
//!     }"#,
//! )
//! .unwrap();
//! let call = CallRequest::try_from(request).unwrap();
//! let verdict = pack.decide(&call, chrono::DateTime::UNIX_EPOCH);
//! assert_eq!(verdict.decision, Decision::Allow);
//! ```

mod amounts;
pub mod api;
pub mod approval;
mod cedar_value;
mod decision;
mod declared;
mod evaluate;
mod explain;
pub mod ids;
mod index;
pub mod json;
pub mod names;
mod pack;
pub mod provenance;
mod reads;
mod request;
pub mod schema;
mod session;
pub mod testing;
pub mod time;
pub mod value_kind;

pub use approval::{
    Approval, ApprovalError, ApprovalStatus, MAX_APPROVAL_TTL, MAX_REASON_BYTES, ReleaseError,
    Requester, Resolution,
};
pub use decision::{Decision, DecisionResponse, EvaluationProblem, Verdict};
pub use explain::{
    ConditionOutcome, ConditionReport, DecidingPart, Explanation, PolicyReport, ScopePart,
};
pub use ids::{ApprovalId, DecisionId, IdError, TaskId};
pub use pack::{LoadError, PolicyKind, PolicyPack, PolicyProblem, PolicySource, Severity};
pub use request::{
    ActionClass, CallRequest, ContextInput, DecisionRequest, HistoryEntry, HopInput, OutputTrust,
    PrincipalInput, RequestError, SessionInput, TaskInput, ToolAnnotations, ToolCall,
};
pub use session::{SessionId, SessionSummary, UNTRUSTED};
pub use value_kind::ValueKind;
