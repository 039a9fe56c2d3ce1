//! Approvals in the state database: each pending request for a person's
//! approval, how it was resolved, and which call it released.
//!
//! The transitions themselves are decided by [`mandate_core::Approval`];
//! this module stores them. Every change is a compare-and-swap on the
//! status ([`TaskStore::update_approval`]), so two approvers answering at
//! once, or an approval released twice at once, change it only once.

use chrono::{DateTime, Utc};
use mandate_core::{Approval, ApprovalId, ApprovalStatus, Requester, TaskId};
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StateError;
use crate::tasks::{
    TaskStore, id_col, json_col, json_text, optional_id_col, query_all, time_col, time_text,
};

/// The columns read into an [`ApprovalRecord`], in [`approval_row`]'s
/// order. Schema 6's migration (`state_schema.rs`) copies the same
/// columns, with `agent`, from the rebuilt table.
pub(crate) const COLUMNS: &str = "id, decision_id, request_sha256, requester, task_id, status, created_at, \
     expires_at, resolved_at, resolved_by, reason, released_by, summary, receipt";

/// An approval with what the gateway keeps beside its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The state machine's view.
    pub approval: Approval,
    /// The task the request was made under, if any: a task Mandate
    /// started, or without a task credential whatever the request named in
    /// `context.task.id` (so text, not a [`TaskId`]).
    pub task_id: Option<String>,
    /// What an approver is shown: tool, arguments (as receipts keep them),
    /// agent and chain, task intent, policies and reasons.
    pub summary: Value,
    /// The receipt of the decision that asked (a template for the receipt
    /// of the resolution).
    pub receipt: Value,
}

impl TaskStore {
    /// Stores a new approval.
    pub fn create_approval(&self, record: &ApprovalRecord) -> Result<(), StateError> {
        let a = &record.approval;
        let row = (
            json_text(&a.requester, "requester")?,
            time_text(&a.created_at)?,
            time_text(&a.expires_at)?,
            json_text(&record.summary, "summary")?,
            json_text(&record.receipt, "receipt")?,
        );
        let record = record.clone();
        self.write(move |conn| {
            let a = &record.approval;
            conn.prepare_cached(
                "INSERT INTO approvals (id, decision_id, request_sha256, requester, task_id, status,
                     created_at, expires_at, summary, receipt, agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                a.id.as_str(),
                a.decision_id.as_str(),
                a.request_sha256,
                row.0,
                record.task_id,
                a.status.as_str(),
                row.1,
                row.2,
                row.3,
                row.4,
                a.requester.agent,
            ])?;
            Ok(())
        })
    }

    /// Approval `id`, if there is one.
    pub fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRecord>, StateError> {
        self.read(|conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"))?
                .query_row(params![id.as_str()], |row| Ok(approval_row(row)))
                .optional()?
                .transpose()
        })
    }

    /// Approvals, newest first, at most `limit`; only those whose status at
    /// `now` is `status` when given. A pending approval past its expiry is
    /// `expired` at `now`, whether or not the expiry sweep stored it yet.
    pub fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let now = time_text(&now)?;
        // One condition per asked status, each stated as an index states
        // it: a single query choosing by parameter read the whole table for
        // the pending queue, which the console polls.
        let (condition, status) = match status {
            None => ("1 = 1", None),
            Some(ApprovalStatus::Pending) => ("status = 'pending' AND expires_at > ?1", None),
            Some(ApprovalStatus::Expired) => (
                "(status = 'expired' OR (status = 'pending' AND expires_at <= ?1))",
                None,
            ),
            Some(other) => ("status = ?3", Some(other.as_str())),
        };
        self.read(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM approvals WHERE {condition}
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            );
            match status {
                Some(status) => query_all(conn, &sql, params![now, limit, status], approval_row),
                None => query_all(conn, &sql, params![now, limit], approval_row),
            }
        })
    }

    /// How many approvals of `agent` count against its limit at `now`: the
    /// pending ones, and the withdrawn ones until they would have expired
    /// (else asking and withdrawing in a loop would flood the reviewers).
    pub fn open_approvals_of(&self, agent: &str, now: DateTime<Utc>) -> Result<u64, StateError> {
        let now = time_text(&now)?;
        self.read(|conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM approvals
                     WHERE agent = ?1 AND status IN ('pending', 'withdrawn') AND expires_at > ?2",
                )?
                .query_row(params![agent, now], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// The pending approvals asked under task `task_id`, oldest first, at
    /// most `limit`.
    pub fn pending_approvals_of_task(
        &self,
        task_id: &TaskId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            query_all(
                conn,
                &format!(
                    // `status IN (...)` repeats the condition of the
                    // partial index `approvals_open_by_task`: SQLite uses a
                    // partial index only when the query states its WHERE,
                    // and without it this read (at every task's end) walked
                    // every approval ever recorded.
                    "SELECT {COLUMNS} FROM approvals
                     WHERE status IN ('pending', 'withdrawn') AND status = 'pending'
                       AND task_id = ?1
                     ORDER BY created_at LIMIT ?2"
                ),
                params![task_id.as_str(), limit],
                approval_row,
            )
        })
    }

    /// How many approvals asked under task `task_id` count against the
    /// limit at `now`, as [`open_approvals_of`](Self::open_approvals_of)
    /// counts an agent's.
    pub fn open_approvals_of_task(
        &self,
        task_id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        let now = time_text(&now)?;
        self.read(|conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM approvals
                     WHERE task_id = ?1 AND status IN ('pending', 'withdrawn') AND expires_at > ?2",
                )?
                .query_row(params![task_id.as_str(), now], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// The approvals still pending at `now` for the request bound to
    /// `binding`, newest first, at most `limit`.
    pub fn pending_approvals_for(
        &self,
        binding: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let now = time_text(&now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            query_all(
                conn,
                // `status = 'pending'` states the partial index
                // `approvals_pending_by_request`'s condition, so it is used.
                &format!(
                    "SELECT {COLUMNS} FROM approvals
                     WHERE status = 'pending' AND request_sha256 = ?1 AND expires_at > ?2
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ),
                params![binding, now, limit],
                approval_row,
            )
        })
    }

    /// Pending approvals whose expiry is at or before `now`, soonest
    /// first, at most `limit`.
    pub fn due_approvals(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let now = time_text(&now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at <= ?1
                     ORDER BY expires_at LIMIT ?2"
                ),
                params![now, limit],
                approval_row,
            )
        })
    }

    /// Stores `approval`'s new state if the stored status is still `from`;
    /// returns whether it was stored. A `false` means someone else changed
    /// it first, and nothing was written.
    pub fn update_approval(
        &self,
        from: ApprovalStatus,
        approval: &Approval,
    ) -> Result<bool, StateError> {
        let resolved_at = approval.resolved_at.as_ref().map(time_text).transpose()?;
        let approval = approval.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE approvals SET status = ?3, resolved_at = ?4, resolved_by = ?5,
                         reason = ?6, released_by = ?7
                     WHERE id = ?1 AND status = ?2",
                )?
                .execute(params![
                    approval.id.as_str(),
                    from.as_str(),
                    approval.status.as_str(),
                    resolved_at,
                    approval.resolved_by,
                    approval.reason,
                    approval.released_by.as_ref().map(|id| id.as_str()),
                ])?;
            Ok(changed == 1)
        })
    }
}

fn approval_row(row: &Row<'_>) -> Result<ApprovalRecord, StateError> {
    let status: String = row.get(5)?;
    let status = ApprovalStatus::parse(&status)
        .ok_or_else(|| StateError::Corrupt(format!("approval status `{status}` is unknown")))?;
    let requester: Requester = json_col(row, 3, "approval requester")?;
    let resolved_at = row
        .get::<_, Option<String>>(8)?
        .map(|t| crate::tasks::parse_time(&t, "approval resolved_at"))
        .transpose()?;
    Ok(ApprovalRecord {
        approval: Approval {
            id: id_col(row, 0)?,
            decision_id: id_col(row, 1)?,
            request_sha256: row.get(2)?,
            requester,
            status,
            created_at: time_col(row, 6, "approval created_at")?,
            expires_at: time_col(row, 7, "approval expires_at")?,
            resolved_at,
            resolved_by: row.get(9)?,
            reason: row.get(10)?,
            released_by: optional_id_col(row, 11)?,
        },
        task_id: row.get(4)?,
        summary: json_col(row, 12, "approval summary")?,
        receipt: json_col(row, 13, "approval receipt")?,
    })
}
