//! The approval state machine: what may happen to a call that needs a
//! person's approval, and when.
//!
//! ```text
//! pending ──approve──► approved ──release──► used
//!    │ ├──deny──► denied
//!    │ └──withdraw (the requester)──► withdrawn
//!    └──(expires_at passes)──► expired
//! ```
//!
//! Everything here is pure: the clock, the approver and the request being
//! released are passed in, and a transition returns the new [`Approval`]
//! for the caller to store. The rules:
//!
//! * only a pending approval is resolved, and only before it expires; no
//!   answer in time is `expired`, which is a deny;
//! * the requester may withdraw a pending approval (its call was
//!   abandoned): `withdrawn` is a deny too, so it can only take away;
//! * approvers are people: the requesting agent, any agent in its
//!   delegation chain, and (unless allowed) the person the task acts for
//!   cannot approve;
//! * an approval releases exactly one call, with the request digest it was
//!   raised for, within the approval's lifetime counted from the approval.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{ApprovalId, DecisionId};

/// The longest an approval may wait for a person: a week. Longer settings
/// are refused where they are configured.
pub const MAX_APPROVAL_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The longest reason an approver or a requester may give, in bytes. A
/// reason is stored with the approval, shown in the console and written
/// into the receipt log forever; a sentence or a paragraph is what it is for.
pub const MAX_REASON_BYTES: usize = 4096;

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person approved; the call may be released once.
    Approved,
    /// A person denied.
    Denied,
    /// Nobody answered in time: a deny.
    Expired,
    /// Approved and released; it releases nothing more.
    Used,
    /// The requester withdrew it before anyone answered: a deny.
    Withdrawn,
}

impl ApprovalStatus {
    /// The wire name (`pending`, `approved`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "used" => Self::Used,
            "withdrawn" => Self::Withdrawn,
            _ => return None,
        })
    }

    /// Whether nothing can change it any more, except releasing an approval.
    pub fn is_resolved(self) -> bool {
        self != Self::Pending
    }
}

impl std::fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person's answer to a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Let the call run.
    Approve,
    /// Refuse it.
    Deny,
}

impl Resolution {
    /// The status the answer leads to.
    pub fn status(self) -> ApprovalStatus {
        match self {
            Self::Approve => ApprovalStatus::Approved,
            Self::Deny => ApprovalStatus::Denied,
        }
    }
}

/// Who raised the request, as far as self-approval is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// The agent that attempted the call.
    pub agent: String,
    /// Every agent of its delegation chain (root first), when the call was
    /// made under a task credential.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The person the agent acts for.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// One approval, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id (also the id of the receipt of its resolution).
    pub id: ApprovalId,
    /// The decision that asked for it.
    pub decision_id: DecisionId,
    /// `sha256:` digest of what the approval is bound to: agent, person,
    /// task, server, tool and arguments (see the server's binding).
    pub request_sha256: String,
    /// Who asked.
    pub requester: Requester,
    /// Current status as stored (see [`Approval::status_at`] for the status
    /// at a given time).
    pub status: ApprovalStatus,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When a pending approval turns into `expired`.
    pub expires_at: DateTime<Utc>,
    /// When it was approved, denied, withdrawn or found expired.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The approver, for approved, denied and used approvals.
    pub resolved_by: Option<String>,
    /// The approver's reason.
    pub reason: Option<String>,
    /// The decision that released the approved call.
    pub released_by: Option<DecisionId>,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApprovalError {
    /// It was already approved, denied, expired, used or withdrawn.
    #[error("the approval is already {0}; only a pending approval can be resolved")]
    NotPending(ApprovalStatus),
    /// No one answered before `expires_at`.
    #[error("the approval expired at {}; nobody answered in time, so the call is denied", crate::time::rfc3339(.0))]
    Expired(DateTime<Utc>),
    /// The approver is the agent that asked, or one in its chain.
    #[error("`{0}` is an agent of the request's delegation chain; an agent never approves")]
    AgentApprover(String),
    /// The approver is the person the task acts for.
    #[error(
        "`{0}` is the person this task acts for; self-approval is not allowed (set `allow_self_approval` to permit it)"
    )]
    SelfApproval(String),
    /// No reason given.
    #[error("a reason is required to approve or deny")]
    ReasonRequired,
    /// The reason is longer than [`MAX_REASON_BYTES`].
    #[error("`reason` must be at most {MAX_REASON_BYTES} bytes; say why in fewer words")]
    ReasonTooLong,
}

/// Why an approval does not release a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    /// Still waiting for a person.
    #[error("the approval is still pending")]
    Pending,
    /// A person denied it.
    #[error("the approval was denied by {by}: {reason}")]
    Denied {
        /// The approver.
        by: String,
        /// Their reason.
        reason: String,
    },
    /// Nobody answered in time.
    #[error("the approval expired before anyone answered")]
    Expired,
    /// The requester withdrew it.
    #[error("the approval was withdrawn by its requester before anyone answered")]
    Withdrawn,
    /// It already released a call: the decision that it released (none
    /// if that was not recorded).
    #[error(
        "the approval was already used by decision {}; an approval releases one call",
        .0.as_ref().map_or("", DecisionId::as_str)
    )]
    Used(Option<DecisionId>),
    /// The call is not the one that was approved.
    #[error(
        "the request differs from the one that was approved (agent, task, tool or arguments); an approval covers only the exact request"
    )]
    OtherRequest,
    /// Approved, but not released within the approval's lifetime.
    #[error("the approval was given at {} and was not used in time; ask again", crate::time::rfc3339(.0))]
    Stale(DateTime<Utc>),
}

impl Approval {
    /// A new pending approval, raised at `now`, that expires after `ttl`.
    pub fn new(
        id: ApprovalId,
        decision_id: DecisionId,
        request_sha256: String,
        requester: Requester,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Self {
        Self {
            id,
            decision_id,
            request_sha256,
            requester,
            status: ApprovalStatus::Pending,
            created_at: now,
            // A lifetime past the end of time is capped there, not a panic
            // (settings cap it at MAX_APPROVAL_TTL anyway).
            expires_at: now
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            resolved_at: None,
            resolved_by: None,
            reason: None,
            released_by: None,
        }
    }

    /// The status at `now`: a pending approval past its expiry is expired,
    /// whether or not that has been stored yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// The approval once it is found expired at `now`, or `None` if it is
    /// not (yet) expired or was already resolved.
    pub fn expire(&self, now: DateTime<Utc>) -> Option<Self> {
        (self.status == ApprovalStatus::Pending && now >= self.expires_at).then(|| Self {
            status: ApprovalStatus::Expired,
            resolved_at: Some(now),
            ..self.clone()
        })
    }

    /// The approval after `approver` answers `resolution` with `reason`.
    ///
    /// `allow_self_approval` lets the person the task acts for approve; no
    /// setting lets an agent of the request approve.
    pub fn resolve(
        &self,
        approver: &str,
        resolution: Resolution,
        reason: &str,
        now: DateTime<Utc>,
        allow_self_approval: bool,
    ) -> Result<Self, ApprovalError> {
        match self.status_at(now) {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => return Err(ApprovalError::Expired(self.expires_at)),
            other => return Err(ApprovalError::NotPending(other)),
        }
        // Names are compared loosely (case, surrounding space): refusing
        // `Alice@Example.com` for `alice@example.com` errs on the safe side.
        let same = |name: &str| name.trim().eq_ignore_ascii_case(approver.trim());
        let requester = &self.requester;
        if same(&requester.agent) || requester.chain.iter().any(|a| same(a)) {
            return Err(ApprovalError::AgentApprover(approver.to_owned()));
        }
        if !allow_self_approval && requester.on_behalf_of.as_deref().is_some_and(same) {
            return Err(ApprovalError::SelfApproval(approver.to_owned()));
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ApprovalError::ReasonRequired);
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApprovalError::ReasonTooLong);
        }
        Ok(Self {
            status: resolution.status(),
            resolved_at: Some(now),
            resolved_by: Some(approver.to_owned()),
            reason: Some(reason.to_owned()),
            ..self.clone()
        })
    }

    /// The approval after its requester withdraws it at `now`, saying
    /// `reason`: the call that asked was abandoned (cancelled by the client,
    /// say), so nobody need answer. Only a pending approval is withdrawn;
    /// it is then a deny. Who may withdraw is the caller's to check.
    pub fn withdraw(&self, reason: &str, now: DateTime<Utc>) -> Result<Self, ApprovalError> {
        match self.status_at(now) {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => return Err(ApprovalError::Expired(self.expires_at)),
            other => return Err(ApprovalError::NotPending(other)),
        }
        let reason = reason.trim();
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApprovalError::ReasonTooLong);
        }
        Ok(Self {
            status: ApprovalStatus::Withdrawn,
            resolved_at: Some(now),
            resolved_by: None,
            reason: Some(if reason.is_empty() {
                "withdrawn by the requester".to_owned()
            } else {
                reason.to_owned()
            }),
            ..self.clone()
        })
    }

    /// The approval after it releases the call `decision_id`, whose request
    /// digest is `request_sha256`. An approved call must be released within
    /// the approval's lifetime (`expires_at - created_at`) from the approval.
    pub fn release(
        &self,
        request_sha256: &str,
        decision_id: &DecisionId,
        now: DateTime<Utc>,
    ) -> Result<Self, ReleaseError> {
        // Another request learns nothing about this approval's state.
        if request_sha256 != self.request_sha256 {
            return Err(ReleaseError::OtherRequest);
        }
        match self.status_at(now) {
            ApprovalStatus::Pending => return Err(ReleaseError::Pending),
            ApprovalStatus::Expired => return Err(ReleaseError::Expired),
            ApprovalStatus::Withdrawn => return Err(ReleaseError::Withdrawn),
            ApprovalStatus::Denied => {
                return Err(ReleaseError::Denied {
                    by: self.resolved_by.clone().unwrap_or_default(),
                    reason: self.reason.clone().unwrap_or_default(),
                });
            }
            ApprovalStatus::Used => {
                return Err(ReleaseError::Used(self.released_by.clone()));
            }
            ApprovalStatus::Approved => {}
        }
        let approved_at = self.resolved_at.unwrap_or(self.created_at);
        if now >= approved_at + (self.expires_at - self.created_at) {
            return Err(ReleaseError::Stale(approved_at));
        }
        Ok(Self {
            status: ApprovalStatus::Used,
            released_by: Some(decision_id.clone()),
            ..self.clone()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(id: &str) -> DecisionId {
        DecisionId::new(id).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn pending() -> Approval {
        Approval::new(
            ApprovalId::new("a1").unwrap(),
            d("d1"),
            "sha256:aa".into(),
            Requester {
                agent: "agent/mailer".into(),
                chain: vec!["agent/planner".into(), "agent/mailer".into()],
                on_behalf_of: Some("alice".into()),
            },
            t(0),
            Duration::seconds(300),
        )
    }

    #[test]
    fn approve_then_release_once() {
        let approved = pending()
            .resolve("bob", Resolution::Approve, "looks right", t(10), false)
            .unwrap();
        assert_eq!(approved.status, ApprovalStatus::Approved);
        assert_eq!(approved.resolved_by.as_deref(), Some("bob"));
        let used = approved.release("sha256:aa", &d("d2"), t(20)).unwrap();
        assert_eq!(used.status, ApprovalStatus::Used);
        assert_eq!(used.released_by, Some(d("d2")));
        assert_eq!(
            used.release("sha256:aa", &d("d3"), t(21)),
            Err(ReleaseError::Used(Some(d("d2"))))
        );
    }

    #[test]
    fn other_arguments_are_not_released() {
        let approved = pending()
            .resolve("bob", Resolution::Approve, "ok", t(10), false)
            .unwrap();
        assert_eq!(
            approved.release("sha256:bb", &d("d2"), t(11)),
            Err(ReleaseError::OtherRequest)
        );
    }

    #[test]
    fn no_answer_in_time_is_expired_and_denies() {
        let a = pending();
        assert_eq!(a.status_at(t(299)), ApprovalStatus::Pending);
        assert_eq!(a.status_at(t(300)), ApprovalStatus::Expired);
        assert_eq!(a.expire(t(299)), None);
        let expired = a.expire(t(300)).unwrap();
        assert_eq!(expired.status, ApprovalStatus::Expired);
        assert_eq!(
            a.resolve("bob", Resolution::Approve, "late", t(301), false),
            Err(ApprovalError::Expired(t(300)))
        );
        assert_eq!(
            a.release("sha256:aa", &d("d2"), t(301)),
            Err(ReleaseError::Expired)
        );
    }

    #[test]
    fn a_withdrawn_approval_denies_and_cannot_be_resolved() {
        let withdrawn = pending().withdraw("  ", t(10)).unwrap();
        assert_eq!(withdrawn.status, ApprovalStatus::Withdrawn);
        assert_eq!(withdrawn.resolved_at, Some(t(10)));
        assert_eq!(withdrawn.resolved_by, None);
        assert_eq!(
            withdrawn.reason.as_deref(),
            Some("withdrawn by the requester")
        );
        assert_eq!(
            withdrawn.resolve("bob", Resolution::Approve, "ok", t(11), false),
            Err(ApprovalError::NotPending(ApprovalStatus::Withdrawn))
        );
        assert_eq!(
            withdrawn.release("sha256:aa", &d("d2"), t(11)),
            Err(ReleaseError::Withdrawn)
        );
        assert_eq!(
            withdrawn.withdraw("again", t(12)),
            Err(ApprovalError::NotPending(ApprovalStatus::Withdrawn))
        );
        // Only a pending one: not once approved, nor once expired.
        let approved = pending()
            .resolve("bob", Resolution::Approve, "ok", t(10), false)
            .unwrap();
        assert_eq!(
            approved.withdraw("cancelled", t(11)),
            Err(ApprovalError::NotPending(ApprovalStatus::Approved))
        );
        assert_eq!(
            pending().withdraw("cancelled", t(300)),
            Err(ApprovalError::Expired(t(300)))
        );
    }

    #[test]
    fn agents_never_approve() {
        for agent in ["agent/mailer", "agent/planner"] {
            assert_eq!(
                pending().resolve(agent, Resolution::Approve, "me", t(1), true),
                Err(ApprovalError::AgentApprover(agent.into()))
            );
        }
    }

    #[test]
    fn self_approval_only_when_allowed() {
        assert_eq!(
            pending().resolve("alice", Resolution::Approve, "mine", t(1), false),
            Err(ApprovalError::SelfApproval("alice".into()))
        );
        assert_eq!(
            pending().resolve(" Alice", Resolution::Approve, "mine", t(1), false),
            Err(ApprovalError::SelfApproval(" Alice".into()))
        );
        assert_eq!(
            pending().resolve("Agent/Planner", Resolution::Approve, "mine", t(1), true),
            Err(ApprovalError::AgentApprover("Agent/Planner".into()))
        );
        assert!(
            pending()
                .resolve("alice", Resolution::Approve, "mine", t(1), true)
                .is_ok()
        );
    }

    #[test]
    fn resolved_once_with_a_reason() {
        assert_eq!(
            pending().resolve("bob", Resolution::Deny, "  ", t(1), false),
            Err(ApprovalError::ReasonRequired)
        );
        let denied = pending()
            .resolve("bob", Resolution::Deny, "wrong recipient", t(1), false)
            .unwrap();
        assert_eq!(
            denied.resolve("carol", Resolution::Approve, "ok", t(2), false),
            Err(ApprovalError::NotPending(ApprovalStatus::Denied))
        );
        assert_eq!(
            denied.release("sha256:aa", &d("d2"), t(3)),
            Err(ReleaseError::Denied {
                by: "bob".into(),
                reason: "wrong recipient".into()
            })
        );
    }

    #[test]
    fn reasons_are_bounded() {
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(
            pending().resolve("bob", Resolution::Approve, &long, t(1), false),
            Err(ApprovalError::ReasonTooLong)
        );
        assert_eq!(
            pending().withdraw(&long, t(1)),
            Err(ApprovalError::ReasonTooLong)
        );
        let fits = "x".repeat(MAX_REASON_BYTES);
        assert!(
            pending()
                .resolve("bob", Resolution::Approve, &fits, t(1), false)
                .is_ok()
        );
        assert!(pending().withdraw(&fits, t(1)).is_ok());
    }

    #[test]
    fn approved_but_unused_goes_stale() {
        let approved = pending()
            .resolve("bob", Resolution::Approve, "ok", t(100), false)
            .unwrap();
        assert!(approved.release("sha256:aa", &d("d2"), t(399)).is_ok());
        assert_eq!(
            approved.release("sha256:aa", &d("d2"), t(400)),
            Err(ReleaseError::Stale(t(100)))
        );
    }

    /// Reasons carry times as RFC 3339, as the API writes them, never as
    /// `DateTime`'s `Display` (`2026-12-06 14:45:06.090344525 UTC`).
    #[test]
    fn reasons_write_times_as_rfc3339() {
        let at: DateTime<Utc> = "2026-12-06T14:45:06.090344525Z".parse().unwrap();
        assert_eq!(
            ReleaseError::Stale(at).to_string(),
            "the approval was given at 2026-12-06T14:45:06.090344525Z and was not used in time; ask again"
        );
        assert_eq!(
            ApprovalError::Expired(at).to_string(),
            "the approval expired at 2026-12-06T14:45:06.090344525Z; nobody answered in time, so the call is denied"
        );
    }

    #[test]
    fn pending_does_not_release() {
        assert_eq!(
            pending().release("sha256:aa", &d("d2"), t(1)),
            Err(ReleaseError::Pending)
        );
    }

    #[test]
    fn a_lifetime_past_the_end_of_time_is_capped() {
        let a = Approval::new(
            ApprovalId::new("a").unwrap(),
            d("d"),
            "sha256:aa".into(),
            Requester::default(),
            t(0),
            Duration::MAX,
        );
        assert_eq!(a.expires_at, DateTime::<Utc>::MAX_UTC);
        assert_eq!(a.status_at(t(1)), ApprovalStatus::Pending);
    }
}
