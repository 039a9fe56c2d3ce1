//! What happens to approvals, on the gateway's state: the gate every
//! `approval_required` decision passes (open, wait, release or refuse),
//! the release undone when its call's receipt failed, the sweep that
//! expires the unanswered, the withdrawal of an ended task's approvals, and
//! recording a resolution (receipt first, then status).
//!
//! The types and settings these work with are in [`approvals`](crate::approvals).

use chrono::{DateTime, Utc};
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, Decision, DecisionId, PolicyPack, ReleaseError, TaskId,
    Verdict,
};
use mandate_ledger::receipt::ApprovalRef;
use mandate_ledger::{Outcome, Receipt, ReceiptError};
use mandate_store::{ApprovalRecord, StateError};

use crate::approvals::{APPROVAL_POLICY, Opening, request_binding, resolution_receipt};
use crate::state::AppState;

/// Why the approval gate could not pass a decision: no decision is made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GateError {
    /// The request cannot be bound to an approval (its canonical form
    /// failed): the request is refused.
    #[error("{0}")]
    Binding(#[from] ReceiptError),
    /// The state database could not read or store the approval.
    #[error(transparent)]
    Store(#[from] StateError),
}

/// What the approval gate made of one decision.
pub(crate) enum Gate {
    /// Not an approval matter: the outcome is not `approval_required`.
    Pass,
    /// A new approval, opened once the decision's receipt is durable.
    Open(Opening),
    /// The request waits on an approval that is still pending.
    Waiting(Approval),
    /// A repeat of a request that already waits on a pending approval
    /// (asked without an approval id): it waits on the same one.
    Joined(Approval),
    /// An approval released the call (it is stored as used already).
    Released(Approval),
    /// The approval named does not release the call; the outcome is a deny.
    Refused(Option<Approval>),
}

impl Gate {
    /// The approval a receipt names for this gate.
    pub(crate) fn approval_ref(&self, decision_id: &DecisionId) -> Option<ApprovalRef> {
        match self {
            Gate::Pass | Gate::Refused(None) => None,
            Gate::Open(opening) => Some(ApprovalRef {
                id: opening.id.to_string(),
                requested_by: decision_id.to_string(),
            }),
            Gate::Waiting(a) | Gate::Joined(a) | Gate::Released(a) | Gate::Refused(Some(a)) => {
                Some(ApprovalRef {
                    id: a.id.to_string(),
                    requested_by: a.decision_id.to_string(),
                })
            }
        }
    }
}

/// Passes a decision through the approval gate. Only an `approval_required`
/// verdict is touched: without `approval_id` it opens an approval (or, when
/// the same request already waits on a pending one, joins it); with one
/// that approved exactly this request, the verdict becomes `allow` and the
/// approval is used up; with one that does not, the verdict becomes a deny
/// ([`APPROVAL_POLICY`]). `draft` is the decision's receipt before the
/// verdict is recorded in it; `pack` is the one that decided (its gates
/// set the approval's lifetime); `task` is the task of the credential the
/// call was made under, if any.
// One argument over clippy's limit: `task` joined the seven the gate
// already took, and a struct for them would serve this one call.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn gate(
    state: &AppState,
    pack: &PolicyPack,
    approval_id: Option<String>,
    verdict: &mut Verdict,
    draft: &Receipt,
    task: Option<&TaskId>,
    decision_id: &DecisionId,
    now: DateTime<Utc>,
) -> Result<Gate, GateError> {
    if verdict.decision != Decision::ApprovalRequired {
        return Ok(Gate::Pass);
    }
    let binding = request_binding(draft)?;
    let refuse = |verdict: &mut Verdict, reason: String| {
        *verdict = Verdict {
            decision: Decision::Deny,
            policies: vec![APPROVAL_POLICY.to_owned()],
            reasons: vec![reason],
            errors: Vec::new(),
        };
    };
    let Some(approval_id) = approval_id else {
        let asking = Asking::of(draft, task);
        return open_or_join(state, pack, verdict, binding, asking, now, refuse).await;
    };
    let tasks = state.tasks();
    let guard = state.approvals().lock(tasks.store()).await?;
    // The request's text is parsed here, where it is looked up: text that
    // is not an approval id names no approval, as any unknown id.
    let stored = match ApprovalId::new(approval_id.as_str()) {
        Ok(id) => tasks.store().approval(&id).await?,
        Err(_) => None,
    };
    let Some(record) = stored else {
        refuse(verdict, format!("there is no approval `{approval_id}`"));
        return Ok(Gate::Refused(None));
    };
    let asked_all = asks_about(&record, &verdict.policies);
    let approval = record.approval;
    match approval.release(&binding, decision_id, now) {
        // A gate the person was not asked about asks now (the session may
        // have changed since): a new approval, the old one stays unused.
        Ok(_) if !asked_all => {
            drop(guard);
            let asking = Asking::of(draft, task);
            open_or_join(state, pack, verdict, binding, asking, now, refuse).await
        }
        Ok(used) => {
            let stored = tasks
                .store()
                .update_approval(ApprovalStatus::Approved, &used)
                .await?;
            if !stored {
                refuse(verdict, "the approval was used by another call".to_owned());
                return Ok(Gate::Refused(Some(approval)));
            }
            let mut reasons = vec![format!(
                "approved by {}: {}",
                used.resolved_by.as_deref().unwrap_or_default(),
                used.reason.as_deref().unwrap_or_default()
            )];
            reasons.append(&mut verdict.reasons);
            *verdict = Verdict {
                decision: Decision::Allow,
                policies: std::mem::take(&mut verdict.policies),
                reasons,
                errors: Vec::new(),
            };
            Ok(Gate::Released(used))
        }
        Err(ReleaseError::Pending) => Ok(Gate::Waiting(approval)),
        Err(e) => {
            refuse(verdict, e.to_string());
            Ok(Gate::Refused(Some(approval)))
        }
    }
}

/// Whose pending approvals count against `max_pending_approvals_per_agent`.
enum Asking<'a> {
    /// A call under a task credential: the task's, which no other caller
    /// can add to (a verified identity, not a name in a body).
    Task(&'a TaskId),
    /// A call without one: the agent the request names.
    Agent(&'a str),
}

impl<'a> Asking<'a> {
    fn of(draft: &'a Receipt, task: Option<&'a TaskId>) -> Self {
        // Only a verified credential names a task here.
        match task {
            Some(task) => Asking::Task(task),
            None => Asking::Agent(&draft.principal.id),
        }
    }
}

/// Whether the person asked for `record` was asked about every gate in
/// `gates` (the policies that required approval), as its summary lists them.
fn asks_about(record: &ApprovalRecord, gates: &[String]) -> bool {
    let asked: Vec<String> = record
        .summary
        .get("policies")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    gates.iter().all(|gate| asked.contains(gate))
}

/// How many pending approvals of one request a repeat looks through for one
/// that asks about its gates. More than one exists only when identical
/// requests raced, or the session changed which gates a request needs.
const JOIN_CANDIDATES: usize = 8;

/// The pending approval the same request already waits on, if one asks
/// about every gate this decision needs: a retried or repeated call joins it
/// instead of putting a second card for the same thing before the
/// approvers (one approval, released once). Otherwise a new approval, as
/// [`open_new`] opens it.
///
/// Two identical requests decided at the same moment can still each open
/// one: the approval is stored after the decision's receipt, outside any
/// lock the lookup could hold.
async fn open_or_join(
    state: &AppState,
    pack: &PolicyPack,
    verdict: &mut Verdict,
    binding: String,
    asking: Asking<'_>,
    now: DateTime<Utc>,
    refuse: impl Fn(&mut Verdict, String),
) -> Result<Gate, GateError> {
    let pending = state
        .tasks()
        .store()
        .pending_approvals_for(&binding, now, JOIN_CANDIDATES)
        .await?;
    if let Some(record) = pending
        .into_iter()
        .find(|record| asks_about(record, &verdict.policies))
    {
        verdict.reasons.push(format!(
            "the same request already waits for approval `{}`",
            record.approval.id
        ));
        return Ok(Gate::Joined(record.approval));
    }
    open_new(state, pack, verdict, binding, asking, now, refuse).await
}

/// A new approval for `verdict`, unless the asker (the task, or the agent
/// without one) has too many pending already (then the verdict becomes a
/// deny).
async fn open_new(
    state: &AppState,
    pack: &PolicyPack,
    verdict: &mut Verdict,
    binding: String,
    asking: Asking<'_>,
    now: DateTime<Utc>,
    refuse: impl Fn(&mut Verdict, String),
) -> Result<Gate, GateError> {
    let limit = state.approvals().settings().max_pending_per_agent;
    let tasks = state.tasks();
    let (pending, who) = match asking {
        Asking::Task(task_id) => {
            let pending = tasks.store().open_approvals_of_task(task_id, now).await;
            (pending, format!("task `{task_id}`"))
        }
        Asking::Agent(agent) => {
            let pending = tasks.store().open_approvals_of(agent, now).await;
            (pending, format!("`{agent}`"))
        }
    };
    let pending = pending?;
    if pending >= limit {
        refuse(
            verdict,
            format!(
                "{who} already has {pending} approvals waiting for a person or withdrawn before their expiry (at most {limit}, `max_pending_approvals_per_agent`); wait for them to be answered or to expire"
            ),
        );
        return Ok(Gate::Refused(None));
    }
    let ttl = state.approvals().ttl(pack.approval_ttl(&verdict.policies));
    Ok(Gate::Open(Opening {
        id: ApprovalId::mint(),
        binding,
        ttl,
        arguments_read: pack.arguments_read().iter().cloned().collect(),
    }))
}

/// Puts a released approval back to `approved` when the released call's
/// receipt could not be written (the call was answered 503, not run).
pub(crate) async fn unrelease(state: &AppState, used: &Approval) {
    let approved = Approval {
        status: ApprovalStatus::Approved,
        released_by: None,
        ..used.clone()
    };
    let _guard = match state.approvals().lock(state.tasks().store()).await {
        Ok(guard) => guard,
        Err(e) => {
            tracing::error!(approval_id = %used.id, error = %e, "a released approval could not be put back after its call was refused (the approvals lock is unavailable); it stays used");
            return;
        }
    };
    let restored = state
        .tasks()
        .store()
        .update_approval(ApprovalStatus::Used, &approved)
        .await;
    if !matches!(restored, Ok(true)) {
        tracing::error!(approval_id = %used.id, "a released approval could not be put back after its call was refused; it stays used");
    }
}

/// How many due approvals one sweep expires; the rest wait for the next.
const SWEEP_BATCH: usize = 100;

/// Expires the approvals due at `now`; returns how many. One that fails is
/// logged and left for the next sweep; the others go on.
pub async fn expire_due(state: &AppState, now: DateTime<Utc>) -> Result<usize, String> {
    let due = state
        .tasks()
        .store()
        .due_approvals(now, SWEEP_BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let expired = resolve_each(state, due, now, "expired", |approval| approval.expire(now)).await;
    Ok(expired)
}

/// Why the approvals of an ended task leave the queue.
pub const TASK_ENDED: &str = "the task ended: its calls can no longer run";

/// Withdraws every pending approval asked under task `task_id`, which has
/// just ended (its credentials are revoked, so no approval could release
/// its call any more): each gets a resolution receipt (`withdrawn`, with the
/// reason [`TASK_ENDED`]) and leaves the queue, so that no reviewer answers
/// a request that can no longer run. Returns how many; one that fails is
/// logged and left to expire.
pub(crate) async fn withdraw_for_ended_task(
    state: &AppState,
    task_id: &TaskId,
    now: DateTime<Utc>,
) -> usize {
    let pending = match state
        .tasks()
        .store()
        .pending_approvals_of_task(task_id, usize::MAX)
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(%task_id, error = %e, "cannot read the ended task's approvals; they stay until they expire");
            return 0;
        }
    };
    resolve_each(state, pending, now, "withdrawn", |approval| {
        approval.withdraw(TASK_ENDED, now).ok()
    })
    .await
}

/// Resolves each of `records` into what `next` makes of it (`None`: leave
/// it), one at a time under the approvals lock and re-read under it (it
/// may have been answered meanwhile; approvers need not wait for a whole
/// batch). Counts each new resolution as `event`; returns how many were
/// resolved. One that fails is logged and left as it was.
async fn resolve_each(
    state: &AppState,
    records: Vec<ApprovalRecord>,
    now: DateTime<Utc>,
    event: &'static str,
    next: impl Fn(&Approval) -> Option<Approval>,
) -> usize {
    let mut resolved = 0;
    for record in records {
        let id = record.approval.id.clone();
        let _guard = match state.approvals().lock(state.tasks().store()).await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, event, "cannot take the approvals lock; the approval stays as it is");
                continue;
            }
        };
        let current = match state.tasks().store().approval(&id).await {
            Ok(Some(current)) => current,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, event, "cannot read an approval to resolve; it stays as it is");
                continue;
            }
        };
        let Some(resolution) = next(&current.approval) else {
            continue;
        };
        match record_resolution(state, current, resolution, now).await {
            Ok(Recorded::Stored(_)) => {
                state.metrics().count_approval(event);
                resolved += 1;
            }
            Ok(Recorded::AlreadyLogged(_)) => resolved += 1,
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, event, "cannot resolve an approval; it stays as it is");
            }
        }
    }
    if resolved > 0 {
        state.approvals().changed();
    }
    resolved
}

/// What [`record_resolution`] did.
pub(crate) enum Recorded {
    /// The resolution's receipt is written and the new status stored.
    Stored(ApprovalRecord),
    /// An earlier attempt had written the receipt but not the status: the
    /// status now follows that receipt, and the new resolution was dropped.
    AlreadyLogged(ApprovalRecord),
}

/// Why a resolution was not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The receipt could not be written or read: nothing changed.
    #[error("receipt ledger: {0}")]
    Ledger(String),
    /// The receipt is written; the status is not.
    #[error("state database: {0}")]
    State(String),
    /// The stored status was no longer pending.
    #[error("the approval changed while it was being resolved")]
    Changed,
}

/// Records the resolution of `current` (pending, read under the approvals
/// lock, which the caller holds) into `next`: its receipt first, then its
/// status. The log is the truth: a receipt for this approval left by an
/// attempt whose status write failed is adopted instead of writing another
/// (the receipt id is the approval id, and ids are unique).
pub(crate) async fn record_resolution(
    state: &AppState,
    current: ApprovalRecord,
    next: Approval,
    now: DateTime<Utc>,
) -> Result<Recorded, RecordError> {
    let logged = state
        .ledger()
        .stored(current.approval.id.as_str())
        .await
        .map_err(|e| RecordError::Ledger(e.to_string()))?;
    let (record, recorded) = match logged {
        Some(logged) => {
            let approval = resolved_by_receipt(&current.approval, &logged.body)
                .map_err(RecordError::Ledger)?;
            let record = ApprovalRecord {
                approval,
                ..current
            };
            (record.clone(), Recorded::AlreadyLogged(record))
        }
        None => {
            let record = ApprovalRecord {
                approval: next,
                ..current
            };
            let receipt =
                resolution_receipt(&record, now).map_err(|e| RecordError::Ledger(e.to_string()))?;
            state
                .ledger()
                .append(receipt, None)
                .await
                .map_err(|e| RecordError::Ledger(e.to_string()))?;
            (record.clone(), Recorded::Stored(record))
        }
    };
    let approval = record.approval;
    let stored = state
        .tasks()
        .store()
        .update_approval(ApprovalStatus::Pending, &approval)
        .await
        .map_err(|e| RecordError::State(e.to_string()))?;
    if stored {
        Ok(recorded)
    } else {
        Err(RecordError::Changed)
    }
}

/// `approval` as the resolution receipt `body` says it was resolved.
fn resolved_by_receipt(approval: &Approval, body: &str) -> Result<Approval, String> {
    let receipt: Receipt = serde_json::from_str(body).map_err(|e| {
        format!(
            "the receipt of approval `{}` is unreadable: {e}",
            approval.id
        )
    })?;
    let status = match receipt.decision {
        Outcome::Resolution(s) if s.is_resolved() && s != ApprovalStatus::Used => Some(s),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "receipt `{}` is not an approval's resolution (decision `{}`)",
            approval.id, receipt.decision
        )
    })?;
    let resolved_at = DateTime::parse_from_rfc3339(&receipt.time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("receipt `{}` has a bad time: {e}", approval.id))?;
    Ok(Approval {
        status,
        resolved_at: Some(resolved_at),
        resolved_by: receipt.approver,
        reason: (status != ApprovalStatus::Expired)
            .then(|| receipt.reasons.into_iter().next())
            .flatten(),
        ..approval.clone()
    })
}
