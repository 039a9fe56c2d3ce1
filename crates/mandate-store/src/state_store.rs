//! The state boundary: [`StateStore`] is everything the gateway keeps
//! besides receipts (tasks, credentials and revocations, history, agent
//! sessions, approvals, token exchanges), as async calls a backend answers.
//!
//! [`SqliteState`] is the embedded default: the synchronous [`TaskStore`]
//! (`state.db`, one writer thread with group commit) run on tokio's blocking
//! pool, so that no handler blocks a runtime thread on the disk. A backend
//! for several instances implements the same trait; the server holds only
//! `Arc<dyn StateStore>` and never sees which one it has.
//!
//! Each method's doc is its contract: what it returns in which order, what
//! it refuses and with which [`StateError`] variant (the server maps those
//! variants to answers). Where it wraps a [`TaskStore`] method, that
//! method's doc says the same at more length.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mandate_core::provenance::Grounds;
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, DecisionId, SessionId, SessionSummary, TaskId,
};

use crate::{
    ApprovalRecord, CallResult, CredentialRecord, ExchangeRecord, HistoryEntry, Revocation,
    SessionDecision, StateError, TaskRecord, TaskStore,
};

/// A task with everything issued and decided under it, as the task
/// endpoints show it.
#[derive(Debug, Clone)]
pub struct TaskDetails {
    /// The task.
    pub task: TaskRecord,
    /// Its credentials, in issue order.
    pub credentials: Vec<CredentialRecord>,
    /// Its decisions, in the order recorded.
    pub history: Vec<HistoryEntry>,
}

/// A task as ended, with the revocation ids of every credential issued
/// under it (in issue order).
#[derive(Debug, Clone)]
pub struct EndedTask {
    /// The task, with its end recorded.
    pub task: TaskRecord,
    /// The revocation ids of all its credentials.
    pub revoked: Vec<String>,
}

/// A change made through another instance that this one must learn of, so
/// that waiters wake and caches follow (see [`StateStore::changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChange {
    /// An approval was created or changed status.
    Approvals,
    /// Credentials were revoked (a task ended).
    Revocations,
    /// Changes may have been missed (the store lost its connection for a
    /// while): re-read whatever is cached.
    All,
}

/// Held while an approval is resolved, released or expired: with several
/// instances, a lock in the database that every instance takes (one
/// process on SQLite needs none beyond the server's own). Dropping it
/// releases it.
#[must_use = "the lock is released when dropped"]
pub struct ApprovalsLock {
    pub(crate) held: Option<crate::postgres::HeldLock>,
}

impl ApprovalsLock {
    /// A lock that holds nothing: for a store only one process uses.
    pub fn local() -> Self {
        Self { held: None }
    }
}

impl std::fmt::Debug for ApprovalsLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalsLock")
            .field("shared", &self.held.is_some())
            .finish()
    }
}

/// What the gateway keeps besides receipts. Implementations are shared by
/// every handler, so they are `Send + Sync` and take `&self`.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Records a new task with its root credential, both or neither.
    /// [`StateError::Conflict`] if the task id or the credential's
    /// revocation id is recorded already; [`StateError::Invalid`] if the
    /// task is ended or the root credential is not the task's (a parent, a
    /// depth other than 0, another agent or revocation id).
    async fn create_task(&self, task: TaskRecord, root: CredentialRecord)
    -> Result<(), StateError>;

    /// Adds `grounds` (what the task's prompt and grounded values name) to
    /// task `id`'s session, keeping the best source of each value;
    /// [`StateError::TaskNotFound`] if there is no such task.
    async fn ground_task(&self, id: &TaskId, grounds: Grounds) -> Result<(), StateError>;

    /// The task of this id, if any.
    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StateError>;

    /// The task of this id with its credentials and history, if any, read
    /// in one call.
    async fn task_details(&self, id: &TaskId) -> Result<Option<TaskDetails>, StateError>;

    /// Tasks, newest first (only open ones if `open_only`), at most `limit`,
    /// each with its credentials and history.
    async fn list_tasks(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<TaskDetails>, StateError>;

    /// The task of this id and the summary of its session history, read
    /// together: what a decision under a credential needs.
    async fn task_context(
        &self,
        task_id: &TaskId,
    ) -> Result<Option<(TaskRecord, SessionSummary)>, StateError>;

    /// Records a credential delegated under a task.
    /// [`StateError::TaskEnded`] if the task has ended;
    /// [`StateError::Invalid`] if the parent is missing or not the task's,
    /// or the depth is not the parent's + 1 or exceeds the task's
    /// `max_depth`; [`StateError::Conflict`] if the revocation id is
    /// recorded already. Narrowing is checked where the credential is
    /// issued, not here.
    async fn add_credential(&self, credential: CredentialRecord) -> Result<(), StateError>;

    /// Ends the task at `at` for `reason` and revokes every credential issued
    /// under it (revocation ids in issue order); returns the task as ended.
    /// Ending an ended task changes nothing and returns the same.
    /// [`StateError::TaskNotFound`] for an unknown task,
    /// [`StateError::Invalid`] for an empty reason.
    async fn end_task(
        &self,
        id: &TaskId,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<EndedTask, StateError>;

    /// Ends (reason `expired`) every open task whose TTL has run out at
    /// `now`, in one transaction; returns each one's id with its revocation
    /// ids, earliest expiry first.
    async fn end_expired(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TaskId, Vec<String>)>, StateError>;

    /// Every revocation, in the order revoked.
    async fn revocations(&self) -> Result<Vec<Revocation>, StateError>;

    /// The revoked ids whose task has not expired at `now`, each with its
    /// task's expiry.
    async fn revoked_ids(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StateError>;

    /// Records a decision in its task's history and folds it into the task's
    /// session summary, in one transaction, with the revocation id of the
    /// credential it was made under (checked by a token exchange).
    /// [`StateError::TaskNotFound`] for an unknown task,
    /// [`StateError::Conflict`] if the decision id is recorded already,
    /// [`StateError::TaskEnded`] if the task has ended. Ends and decisions
    /// are ordered: once a task's end is acknowledged, no decision under it
    /// is recorded.
    async fn record_decision(
        &self,
        entry: HistoryEntry,
        credential: Option<String>,
    ) -> Result<(), StateError>;

    /// Records the result of a decided call and folds its labels into the
    /// session; returns the entry as updated. [`StateError::DecisionNotFound`]
    /// if the decision is in no task's history, [`StateError::Conflict`] if
    /// its result was reported already. Accepted after the task ended (a
    /// call allowed before the end may finish after it).
    async fn record_result(
        &self,
        decision_id: &DecisionId,
        result: CallResult,
    ) -> Result<HistoryEntry, StateError>;

    /// The history entry of this decision, if it is in a task's history.
    async fn decision(&self, decision_id: &DecisionId) -> Result<Option<HistoryEntry>, StateError>;

    /// The decision with the revocation id of the credential it was made
    /// under (what a token exchange checks).
    async fn decided_call(
        &self,
        decision_id: &DecisionId,
    ) -> Result<Option<(HistoryEntry, Option<String>)>, StateError>;

    /// Records a token exchange of a decision, once, durably.
    /// [`StateError::DecisionNotFound`] if the decision is in no task's
    /// history, [`StateError::TaskEnded`] if its task has ended,
    /// [`StateError::Conflict`] if it was exchanged already.
    async fn record_exchange(&self, record: ExchangeRecord) -> Result<(), StateError>;

    /// The summary of an agent's session outside any task.
    async fn agent_session(
        &self,
        agent: &str,
        session: &SessionId,
    ) -> Result<SessionSummary, StateError>;

    /// Folds a decision into its agent session.
    async fn record_session_decision(&self, decided: SessionDecision) -> Result<(), StateError>;

    /// Records a new approval request. (A duplicate id is not expected:
    /// approval ids are fresh UUIDs; SQLite reports it as
    /// [`StateError::Sqlite`].)
    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), StateError>;

    /// The approval of this id, if any.
    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRecord>, StateError>;

    /// Approvals, newest first, at most `limit`; only those whose status at
    /// `now` is `status` when given. A pending approval past its expiry is
    /// `expired` at `now`, whether or not the expiry sweep stored it yet.
    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError>;

    /// How many approvals of `agent` count against its limit at `now`: the
    /// pending ones, and the withdrawn ones until they would have expired
    /// (else asking and withdrawing in a loop would flood the reviewers).
    async fn open_approvals_of(&self, agent: &str, now: DateTime<Utc>) -> Result<u64, StateError>;

    /// How many approvals asked under task `task_id` count against the limit
    /// at `now`, counted as [`open_approvals_of`](Self::open_approvals_of)
    /// counts an agent's.
    async fn open_approvals_of_task(
        &self,
        task_id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<u64, StateError>;

    /// The pending approvals asked under task `task_id`, oldest first, at
    /// most `limit`.
    async fn pending_approvals_of_task(
        &self,
        task_id: &TaskId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError>;

    /// The approvals still pending at `now` (not yet expired) for the
    /// request bound to `binding` (`request_sha256`), newest first, at most
    /// `limit`: what a repeat of the same request waits on instead of
    /// opening another.
    async fn pending_approvals_for(
        &self,
        binding: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Pending approvals whose expiry is at or before `now`, soonest first,
    /// at most `limit`.
    async fn due_approvals(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Stores `approval`'s new state if the stored status is still `from`
    /// (compare and set); `false` means someone else changed it first and
    /// nothing was written.
    async fn update_approval(
        &self,
        from: ApprovalStatus,
        approval: &Approval,
    ) -> Result<bool, StateError>;

    /// Takes the lock that orders approval resolutions, releases and expiries
    /// across every process using this store; waits for it. A store one
    /// process owns answers [`ApprovalsLock::local`] (the default).
    async fn lock_approvals(&self) -> Result<ApprovalsLock, StateError> {
        Ok(ApprovalsLock::local())
    }

    /// Changes other processes make, as they commit, for a store several
    /// share; `None` (the default) for a store one process owns, whose
    /// changes that process makes itself.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StateChange>> {
        None
    }
}

/// The embedded default: `state.db` through [`TaskStore`]. Reads and most
/// writes run on tokio's blocking pool; the writes of the decision path (a
/// decision, a result, an agent's session) go to the writer thread and are
/// awaited.
#[derive(Debug, Clone)]
pub struct SqliteState {
    db: Arc<TaskStore>,
}

impl SqliteState {
    /// Opens (or creates) the state database at `path`; see
    /// [`TaskStore::open`].
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Ok(Self::new(TaskStore::open(path)?))
    }

    /// Serves an open database.
    pub fn new(db: TaskStore) -> Self {
        Self { db: Arc::new(db) }
    }

    /// Runs `f` on the database in a blocking thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&TaskStore) -> Result<T, StateError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(result) => result,
            // A panic in the database call is the caller's panic (a handler
            // answers 500), not a store error to be retried.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StateError::Unavailable(e.to_string())),
        }
    }
}

#[async_trait]
impl StateStore for SqliteState {
    async fn create_task(
        &self,
        task: TaskRecord,
        root: CredentialRecord,
    ) -> Result<(), StateError> {
        self.run(move |db| db.create_task(&task, &root)).await
    }

    async fn ground_task(&self, id: &TaskId, grounds: Grounds) -> Result<(), StateError> {
        let id = id.clone();
        self.run(move |db| db.ground_task(&id, &grounds)).await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StateError> {
        let id = id.clone();
        self.run(move |db| db.task(&id)).await
    }

    async fn task_details(&self, id: &TaskId) -> Result<Option<TaskDetails>, StateError> {
        let id = id.clone();
        self.run(move |db| match db.task(&id)? {
            Some(task) => details(db, task).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn list_tasks(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<TaskDetails>, StateError> {
        self.run(move |db| {
            db.list_tasks(open_only, limit)?
                .into_iter()
                .map(|task| details(db, task))
                .collect()
        })
        .await
    }

    async fn task_context(
        &self,
        task_id: &TaskId,
    ) -> Result<Option<(TaskRecord, SessionSummary)>, StateError> {
        let id = task_id.clone();
        self.run(move |db| match db.task(&id)? {
            Some(task) => Ok(Some((task, db.session(&id)?))),
            None => Ok(None),
        })
        .await
    }

    async fn add_credential(&self, credential: CredentialRecord) -> Result<(), StateError> {
        self.run(move |db| db.add_credential(&credential)).await
    }

    async fn end_task(
        &self,
        id: &TaskId,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<EndedTask, StateError> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.run(move |db| {
            let revoked = db.end_task(&id, at, &reason)?;
            let task = db.task(&id)?.ok_or(StateError::TaskNotFound(id))?;
            Ok(EndedTask { task, revoked })
        })
        .await
    }

    async fn end_expired(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TaskId, Vec<String>)>, StateError> {
        self.run(move |db| db.end_expired(now)).await
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StateError> {
        self.run(TaskStore::revocations).await
    }

    async fn revoked_ids(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StateError> {
        self.run(move |db| db.revoked_ids(now)).await
    }

    async fn record_decision(
        &self,
        entry: HistoryEntry,
        credential: Option<String>,
    ) -> Result<(), StateError> {
        // Straight to the writer, awaited: no blocking thread waits on it.
        let write = crate::tasks::decision_write(&entry, credential.as_deref())?;
        self.db.write_async(write).await
    }

    async fn record_result(
        &self,
        decision_id: &DecisionId,
        result: CallResult,
    ) -> Result<HistoryEntry, StateError> {
        let write = crate::tasks::result_write(decision_id, result);
        self.db.write_async(write).await
    }

    async fn decision(&self, decision_id: &DecisionId) -> Result<Option<HistoryEntry>, StateError> {
        let id = decision_id.clone();
        self.run(move |db| db.decision(&id)).await
    }

    async fn decided_call(
        &self,
        decision_id: &DecisionId,
    ) -> Result<Option<(HistoryEntry, Option<String>)>, StateError> {
        let id = decision_id.clone();
        self.run(move |db| db.decided_call(&id)).await
    }

    async fn record_exchange(&self, record: ExchangeRecord) -> Result<(), StateError> {
        self.run(move |db| db.record_exchange(&record)).await
    }

    async fn agent_session(
        &self,
        agent: &str,
        session: &SessionId,
    ) -> Result<SessionSummary, StateError> {
        let (agent, session) = (agent.to_owned(), session.clone());
        self.run(move |db| db.agent_session(&agent, &session)).await
    }

    async fn record_session_decision(&self, decided: SessionDecision) -> Result<(), StateError> {
        let write = crate::sessions::session_decision_write(decided)?;
        self.db.write_async(write).await
    }

    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), StateError> {
        self.run(move |db| db.create_approval(&record)).await
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRecord>, StateError> {
        let id = id.clone();
        self.run(move |db| db.approval(&id)).await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        self.run(move |db| db.approvals(status, now, limit)).await
    }

    async fn open_approvals_of(&self, agent: &str, now: DateTime<Utc>) -> Result<u64, StateError> {
        let agent = agent.to_owned();
        self.run(move |db| db.open_approvals_of(&agent, now)).await
    }

    async fn open_approvals_of_task(
        &self,
        task_id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        let id = task_id.clone();
        self.run(move |db| db.open_approvals_of_task(&id, now))
            .await
    }

    async fn pending_approvals_of_task(
        &self,
        task_id: &TaskId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let id = task_id.clone();
        self.run(move |db| db.pending_approvals_of_task(&id, limit))
            .await
    }

    async fn pending_approvals_for(
        &self,
        binding: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let binding = binding.to_owned();
        self.run(move |db| db.pending_approvals_for(&binding, now, limit))
            .await
    }

    async fn due_approvals(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        self.run(move |db| db.due_approvals(now, limit)).await
    }

    async fn update_approval(
        &self,
        from: ApprovalStatus,
        approval: &Approval,
    ) -> Result<bool, StateError> {
        let approval = approval.clone();
        self.run(move |db| db.update_approval(from, &approval))
            .await
    }
}

/// A task's details, read one after another on the database's reader
/// connection (a write may land between them, as it may between two calls).
fn details(db: &TaskStore, task: TaskRecord) -> Result<TaskDetails, StateError> {
    Ok(TaskDetails {
        credentials: db.credentials(&task.id)?,
        history: db.history(&task.id)?,
        task,
    })
}
