//! The answer to one attempted call.

use serde::{Deserialize, Serialize};

use crate::ids::{ApprovalId, DecisionId};

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The call may proceed.
    Allow,
    /// The call must not proceed.
    Deny,
    /// The call may proceed only after a person approves it.
    ApprovalRequired,
}

impl Decision {
    /// The wire name of the outcome (`allow`, `deny`, `approval_required`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::ApprovalRequired => "approval_required",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy that failed to evaluate. Any such problem turns the decision into a deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationProblem {
    /// Id of the policy that failed.
    pub policy: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for EvaluationProblem {
    /// `evaluation error in `ID`: message`, or `error: message` when no policy is to blame
    /// (the request did not match the pack's schema).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.policy.is_empty() {
            write!(f, "error: {}", self.message)
        } else {
            write!(f, "evaluation error in `{}`: {}", self.policy, self.message)
        }
    }
}

/// What the policy pack says about one call, before it is given an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The outcome.
    pub decision: Decision,
    /// Ids of the policies that determined the outcome: the matching forbids
    /// for a deny, the matching approval policies for `approval_required`, the
    /// matching permits for an allow. Empty for a deny because nothing permits.
    pub policies: Vec<String>,
    /// Human-readable reasons, one per determining policy, or one for the default.
    pub reasons: Vec<String>,
    /// Policies that failed to evaluate; non-empty implies a deny.
    pub errors: Vec<EvaluationProblem>,
}

/// The decision as Mandate reports it to callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionResponse {
    /// The outcome.
    pub decision: Decision,
    /// Unique id of this decision (a UUIDv7, ordered by time).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub decision_id: DecisionId,
    /// Ids of the policies that determined the outcome.
    pub policies: Vec<String>,
    /// Human-readable reasons for the outcome.
    pub reasons: Vec<String>,
    /// Policies that failed to evaluate (any makes the decision a deny).
    pub errors: Vec<EvaluationProblem>,
    /// Position of the decision's receipt in the receipt log; absent where
    /// no receipt is written (offline evaluation with `mandate check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_index: Option<u64>,
    /// For `approval_required`: the approval opened for this call (wait on
    /// `GET /v1/approvals/{id}`, then submit the request again with it).
    /// For an `allow` released by an approval: the approval that released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub approval_id: Option<ApprovalId>,
    /// For `approval_required`: when the approval expires unanswered (a deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// For an `allow` released by an approval: who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

impl DecisionResponse {
    /// Pairs a verdict with the id the edge minted for it.
    pub fn new(decision_id: DecisionId, verdict: Verdict) -> Self {
        Self {
            decision: verdict.decision,
            decision_id,
            policies: verdict.policies,
            reasons: verdict.reasons,
            errors: verdict.errors,
            receipt_index: None,
            approval_id: None,
            approval_expires_at: None,
            approver: None,
        }
    }
}
