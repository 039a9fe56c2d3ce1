//! Tasks, their credentials, revocations and session history, on embedded
//! SQLite.
//!
//! A [`TaskStore`] is the gateway's state database (`DATA_DIR/state.db`),
//! a file of its own: the receipt ledger (`ledger.db`) is not touched. It
//! keeps:
//!
//! * **tasks** ([`TaskRecord`]): what was granted when a task started, and
//!   when and why it ended;
//! * **credentials** ([`CredentialRecord`]): one row per credential issued
//!   under a task (the root credential, then each delegation), in issue
//!   order, each naming its parent, so the delegation tree can be shown;
//! * **revocations** ([`Revocation`]): the revocation id of every credential
//!   of every ended task, what `GET /v1/revocations` serves to offline
//!   verifiers;
//! * **history** ([`HistoryEntry`]): each task's decisions in the order they
//!   were recorded, with the MCP annotations each call was decided with and
//!   what the call returned once an integration reports it ([`CallResult`]);
//! * **sessions** ([`SessionSummary`](mandate_core::SessionSummary)): each
//!   task's history condensed into what policies read, folded forward in
//!   the transaction that records a decision or a result (`sessions.rs`).
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = FULL`, like the ledger:
//! every write runs in a `BEGIN IMMEDIATE` transaction (in a savepoint of
//! its own, as one of a group committed together, like the ledger's
//! receipts), and a method returns only after the commit is on disk. Ending
//! a task revokes its credentials, so the end must be durable before anyone
//! is told about it.
//!
//! `BEGIN IMMEDIATE` takes the write lock up front, so each write's checks
//! (does the task exist, has it ended, is the parent credential in it) and
//! its insert are atomic even with another connection on the same file.
//!
//! # Concurrency
//!
//! The API is synchronous (the server calls it from `spawn_blocking`),
//! except that [`SqliteState`](crate::SqliteState) sends the writes of the
//! decision path (a decision, a result, an agent's session) to the writer
//! itself and awaits the commit, so that no blocking thread sits waiting
//! on each (two thread hand-offs fewer per write). A `TaskStore` owns two
//! connections: writes go to a writer thread that owns
//! one and commits whatever waits in one transaction (`state_writer.rs`);
//! reads run one at a time on the other, behind a mutex. In WAL mode a
//! reader sees every committed write and never waits for a writer's commit
//! (and its fsync), so decisions reading a task's session are not held up
//! by others recording theirs. It is `Send + Sync`. Several stores (or
//! processes) may open the same file; SQLite's locks and a busy timeout
//! order them.
//!
//! # Times
//!
//! Times are stored as RFC 3339 text in UTC with nanoseconds
//! (`2026-11-23T12:00:00.123456789Z`): fixed width, so text order is time
//! order and `expires_at <= now` works in SQL, and a record reads back equal
//! to what was written. Years outside 0000–9999 are refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use mandate_core::provenance::Grounds;
use mandate_core::{Decision, DecisionId, IdError, TaskId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StateError;
use crate::state_writer::StateWriter;

/// `end_reason` of a task ended by a caller (`DELETE /v1/tasks/{id}`).
pub const END_REASON_ENDED: &str = "ended";

/// `end_reason` of a task ended because its TTL ran out.
pub const END_REASON_EXPIRED: &str = "expired";

/// A task as recorded when it started, with its end once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: TaskId,
    /// The root agent's verified identity.
    pub agent: String,
    /// The human the agent acts for, kept apart from the agent's identity.
    pub on_behalf_of: Option<String>,
    /// What the task is for, as the agent declared it.
    pub intent: String,
    /// Tools the task may call (`server/tool`).
    pub tools: Vec<String>,
    /// Data labels in the task's scope.
    pub labels: Vec<String>,
    /// Free parameters of the task (for example allowed recipients).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Who the task's credentials are for (RFC 8707 resource).
    pub audience: String,
    /// How many delegation hops may follow the root agent.
    pub max_depth: u32,
    /// When the task started.
    pub created_at: DateTime<Utc>,
    /// When the task's TTL runs out.
    pub expires_at: DateTime<Utc>,
    /// When the task ended; `None` while it is open.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended: [`END_REASON_ENDED`], [`END_REASON_EXPIRED`], or
    /// another reason the gateway chose.
    pub end_reason: Option<String>,
    /// Revocation id of the root credential (its authority block).
    pub root_revocation_id: String,
}

impl TaskRecord {
    /// Whether the task has ended.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }
}

/// One credential issued under a task: the root credential or a delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The task it was issued under.
    pub task_id: TaskId,
    /// Hex revocation id of the credential's last block (the block that
    /// names this credential's holder).
    pub revocation_id: String,
    /// Revocation id of the credential it was delegated from; `None` for the
    /// root credential.
    pub parent_revocation_id: Option<String>,
    /// The agent holding it.
    pub agent: String,
    /// Its depth: 0 for the root agent, parent's depth + 1 for a delegation.
    pub depth: u32,
    /// Its effective tools.
    pub tools: Vec<String>,
    /// Its effective data labels.
    pub labels: Vec<String>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// A revoked credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Hex revocation id of the credential's last block.
    pub revocation_id: String,
    /// The task it belonged to.
    pub task_id: TaskId,
    /// When it was revoked (when its task ended).
    pub revoked_at: DateTime<Utc>,
}

/// What a call returned, as an integration reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// `ok` or `error`.
    pub status: String,
    /// Labels of the data the call brought into the session (for example
    /// `untrusted`, `confidential`).
    pub labels: Vec<String>,
    /// When the result was reported.
    pub reported_at: DateTime<Utc>,
    /// Keyed digests of the values the result named, by where they were
    /// seen: folded into the task's session, not kept in its history (read
    /// back, a result has none).
    #[serde(default, skip_serializing_if = "Grounds::is_empty")]
    pub grounds: Grounds,
}

/// One decision in a task's session history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The decision's id (the receipt's `decision_id`).
    pub decision_id: DecisionId,
    /// The task it was made under.
    pub task_id: TaskId,
    /// The agent that made the call (the credential's holder).
    pub agent: String,
    /// The tool's server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// The outcome.
    pub decision: Decision,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// What the call returned, once reported.
    pub result: Option<CallResult>,
    /// The MCP tool annotations the call was decided with (`readOnlyHint`,
    /// `openWorldHint`, …), as a JSON object; `None` if unknown. Later
    /// decisions derive the call's action class from them, and whether its
    /// result is open-world content.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The gateway's state database: tasks, credentials, revocations, history.
#[derive(Debug)]
pub struct TaskStore {
    /// Every write goes through it (group commit, `state_writer.rs`).
    writer: StateWriter,
    /// Read-only; see "Concurrency" above.
    reader: Mutex<Connection>,
}

impl TaskStore {
    /// Opens the state database at `path`, creating the file and its schema
    /// if needed (the directory must exist).
    ///
    /// A database that is not a Mandate state database (for example the
    /// receipt ledger), or one of a newer schema, is refused with
    /// [`StateError::Unsupported`] and left as it is.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let conn = Connection::open(path).map_err(StateError::Sqlite)?;
        init(conn, path)
    }

    /// Records a new task with its root credential, in one transaction.
    ///
    /// Refused with [`StateError::Conflict`] if the task id or the
    /// credential's revocation id is recorded already, and with
    /// [`StateError::Invalid`] if the task is already ended or the root
    /// credential does not belong to it (other task id, a parent, a depth
    /// other than 0, another agent, a revocation id other than the task's
    /// `root_revocation_id`).
    pub fn create_task(
        &self,
        task: &TaskRecord,
        root: &CredentialRecord,
    ) -> Result<(), StateError> {
        check_new_task(task, root)?;
        let (task, root) = (task.clone(), root.clone());
        self.write(move |conn| {
            let row = TaskRow::new(&task)?;
            let credential = CredentialRow::new(&root)?;
            if exists(conn, "SELECT 1 FROM tasks WHERE id = ?1", task.id.as_str())? {
                return Err(StateError::Conflict(format!(
                    "task `{}` already exists",
                    task.id
                )));
            }
            // Before the task row, whose root_revocation_id is unique too.
            credential.refuse_recorded(conn)?;
            row.insert(conn)?;
            credential.insert(conn)
        })
    }

    /// Adds `grounds` to task `id`'s session.
    pub fn ground_task(&self, id: &TaskId, grounds: &Grounds) -> Result<(), StateError> {
        let (id, grounds) = (id.clone(), grounds.clone());
        self.write(move |conn| {
            if !exists(conn, "SELECT 1 FROM tasks WHERE id = ?1", id.as_str())? {
                return Err(StateError::TaskNotFound(id));
            }
            crate::sessions::ground(conn, id.as_str(), &grounds)
        })
    }

    /// The task `id`.
    pub fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StateError> {
        self.read(|conn| {
            query_one(
                conn,
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                params![id.as_str()],
                task_row,
            )
        })
    }

    /// Tasks, newest first, at most `limit`; only open ones (not ended)
    /// when `open_only`.
    pub fn list_tasks(&self, open_only: bool, limit: usize) -> Result<Vec<TaskRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 = 0 OR ended_at IS NULL)
                     ORDER BY created_at DESC, id DESC LIMIT ?2"
                ),
                params![i64::from(open_only), limit],
                task_row,
            )
        })
    }

    /// Every credential issued under task `task_id`, in issue order (the root
    /// credential first); empty for an unknown task.
    pub fn credentials(&self, task_id: &TaskId) -> Result<Vec<CredentialRecord>, StateError> {
        self.read(|conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE task_id = ?1 ORDER BY seq"
                ),
                params![task_id.as_str()],
                credential_row,
            )
        })
    }

    /// Records a credential delegated under an open task.
    ///
    /// Refused with [`StateError::TaskNotFound`] for an unknown task,
    /// [`StateError::TaskEnded`] if the task has ended,
    /// [`StateError::Invalid`] if the parent is missing or not a credential
    /// of the task, the depth is not the parent's + 1 or exceeds the task's
    /// `max_depth`, and [`StateError::Conflict`] if the revocation id is
    /// recorded already.
    ///
    /// Narrowing (tools, labels, expiry within the parent's) is what
    /// `mandate-auth` enforces when it issues the credential; it is not
    /// checked again here.
    pub fn add_credential(&self, credential: &CredentialRecord) -> Result<(), StateError> {
        let parent_id = delegated_parent(credential)?.to_owned();
        let credential = credential.clone();
        self.write(move |conn| {
            let row = CredentialRow::new(&credential)?;
            let task: Option<(u32, Option<String>)> = conn
                .query_row(
                    "SELECT max_depth, end_reason FROM tasks WHERE id = ?1",
                    params![credential.task_id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((max_depth, end_reason)) = task else {
                return Err(StateError::TaskNotFound(credential.task_id.clone()));
            };
            if let Some(reason) = end_reason {
                return Err(StateError::TaskEnded {
                    task_id: credential.task_id.clone(),
                    reason,
                });
            }
            let parent_depth: Option<u32> = conn
                .query_row(
                    "SELECT depth FROM credentials WHERE revocation_id = ?1 AND task_id = ?2",
                    params![parent_id, credential.task_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(parent_depth) = parent_depth else {
                return Err(StateError::Invalid(format!(
                    "parent credential `{parent_id}` is not a credential of task `{}`",
                    credential.task_id
                )));
            };
            if Some(credential.depth) != parent_depth.checked_add(1) {
                return Err(StateError::Invalid(format!(
                    "credential `{}` has depth {}, its parent has depth {parent_depth}",
                    credential.revocation_id, credential.depth
                )));
            }
            if credential.depth > max_depth {
                return Err(StateError::Invalid(format!(
                    "credential `{}` has depth {}, task `{}` allows {max_depth}",
                    credential.revocation_id, credential.depth, credential.task_id
                )));
            }
            row.insert(conn)
        })
    }

    /// Ends task `id` at `at` for `reason` ([`END_REASON_ENDED`] when a
    /// caller ends it) and revokes every credential issued under it. Returns
    /// the revocation ids of all the task's credentials, in issue order.
    ///
    /// Idempotent: ending an ended task changes nothing (its `ended_at`,
    /// reason and revocation times stay) and returns the same ids.
    /// [`StateError::TaskNotFound`] for an unknown task.
    pub fn end_task(
        &self,
        id: &TaskId,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<String>, StateError> {
        check_end_reason(reason)?;
        let (id, at, reason) = (id.clone(), time_text(&at)?, reason.to_owned());
        self.write(move |conn| end_in(conn, &id, &at, &reason))
    }

    /// Ends (reason [`END_REASON_EXPIRED`], at `now`) every open task whose
    /// `expires_at` is not after `now`, in one transaction. Returns each
    /// ended task's id with its revocation ids, earliest expiry first.
    pub fn end_expired(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TaskId, Vec<String>)>, StateError> {
        let now = time_text(&now)?;
        self.write(move |conn| {
            let expired = query_all(
                conn,
                "SELECT id FROM tasks WHERE ended_at IS NULL AND expires_at <= ?1
                 ORDER BY expires_at, id",
                params![now],
                |row| id_col(row, 0),
            )?;
            expired
                .into_iter()
                .map(|id| {
                    let ids = end_in(conn, &id, &now, END_REASON_EXPIRED)?;
                    Ok((id, ids))
                })
                .collect()
        })
    }

    /// Every revoked credential, in the order revoked.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StateError> {
        self.read(|conn| {
            query_all(
                conn,
                "SELECT revocation_id, task_id, revoked_at FROM revocations ORDER BY seq",
                [],
                |row| {
                    Ok(Revocation {
                        revocation_id: row.get(0)?,
                        task_id: id_col(row, 1)?,
                        revoked_at: time_col(row, 2, "revoked_at")?,
                    })
                },
            )
        })
    }

    /// The revocation ids of the revoked credentials of tasks that have
    /// not expired at `now`, each with its task's expiry: no credential of
    /// a task outlives it, and an expired credential is refused for its
    /// expiry, revoked or not. So the ids a server must hold in memory are
    /// bounded by the tasks alive, not by every task ever ended.
    pub fn revoked_ids(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StateError> {
        let now = time_text(&now)?;
        self.read(|conn| {
            let rows: Vec<(String, DateTime<Utc>)> = query_all(
                conn,
                "SELECT r.revocation_id, t.expires_at
                 FROM revocations r JOIN tasks t ON t.id = r.task_id
                 WHERE t.expires_at > ?1",
                [&now],
                |row| Ok((row.get(0)?, time_col(row, 1, "expires_at")?)),
            )?;
            Ok(rows.into_iter().collect())
        })
    }

    /// Appends a decision to its task's history (with its result, if
    /// `entry.result` is set).
    ///
    /// [`StateError::TaskNotFound`] for an unknown task, [`StateError::Conflict`]
    /// if the decision id is recorded already, [`StateError::TaskEnded`] if
    /// the task has ended. The end and the history are written by one
    /// writer, so a decision is recorded either before the end (and the end
    /// is stamped no earlier than it) or not at all: once the end of a task
    /// is acknowledged, no decision under it can be given.
    pub fn record_decision(&self, entry: &HistoryEntry) -> Result<(), StateError> {
        self.record_decision_under(entry, None)
    }

    /// [`record_decision`](Self::record_decision), recording also the
    /// credential the decision was made under (the hex revocation id of its
    /// last block), which a token exchange checks
    /// ([`decided_call`](Self::decided_call)).
    pub fn record_decision_under(
        &self,
        entry: &HistoryEntry,
        credential: Option<&str>,
    ) -> Result<(), StateError> {
        self.write(decision_write(entry, credential)?)
    }

    /// Records what the call of decision `decision_id` returned, and returns
    /// the history entry with it.
    ///
    /// [`StateError::DecisionNotFound`] if no decision `decision_id` is recorded (a
    /// decision made without a task has no history), and
    /// [`StateError::Conflict`] if its result was reported already: a
    /// result is reported once. A result is accepted after the task ended,
    /// since a call allowed before the end may finish after it. Which
    /// decisions may take a result (a denied call did not run) is the
    /// gateway's choice; see [`decision`](Self::decision).
    pub fn record_result(
        &self,
        decision_id: &DecisionId,
        result: CallResult,
    ) -> Result<HistoryEntry, StateError> {
        self.write(result_write(decision_id, result))
    }

    /// The history entry of decision `decision_id`.
    pub fn decision(&self, decision_id: &DecisionId) -> Result<Option<HistoryEntry>, StateError> {
        self.read(|conn| history_entry(conn, decision_id.as_str()))
    }

    /// Task `task_id`'s decisions in the order they were recorded; empty
    /// for an unknown task.
    pub fn history(&self, task_id: &TaskId) -> Result<Vec<HistoryEntry>, StateError> {
        self.read(|conn| {
            query_all(
                conn,
                &format!("SELECT {HISTORY_COLUMNS} FROM history WHERE task_id = ?1 ORDER BY seq"),
                params![task_id.as_str()],
                history_row,
            )
        })
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (shared with the other
    /// writes waiting: group commit) and returns once it is committed
    /// durably; if `f` fails, its changes are rolled back.
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StateError> + Send + 'static,
    {
        self.writer.write(f)
    }

    /// [`write`](Self::write) for a task: awaits the commit without
    /// holding a thread.
    pub(crate) async fn write_async<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StateError> + Send + 'static,
    {
        self.writer.write_async(f).await
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        f(&self.reader.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The write [`TaskStore::record_decision_under`] runs: checks the task is
/// open and the decision new, inserts the history row and folds it into the
/// task's session.
pub(crate) fn decision_write(
    entry: &HistoryEntry,
    credential: Option<&str>,
) -> Result<impl FnOnce(&Connection) -> Result<(), StateError> + Send + 'static, StateError> {
    let decided_at = time_text(&entry.decided_at)?;
    let annotations = entry
        .annotations
        .as_ref()
        .map(|a| json_text(a, "annotations"))
        .transpose()?;
    let (entry, credential) = (entry.clone(), credential.map(str::to_owned));
    Ok(move |conn: &Connection| {
        let result = entry.result.as_ref().map(ResultRow::new).transpose()?;
        let end: Option<Option<String>> = conn
            .prepare_cached("SELECT end_reason FROM tasks WHERE id = ?1")?
            .query_row(params![entry.task_id.as_str()], |row| row.get(0))
            .optional()?;
        match end {
            None => {
                return Err(StateError::TaskNotFound(entry.task_id.clone()));
            }
            Some(Some(reason)) => {
                return Err(StateError::TaskEnded {
                    task_id: entry.task_id.clone(),
                    reason,
                });
            }
            Some(None) => {}
        }
        if exists(
            conn,
            "SELECT 1 FROM history WHERE decision_id = ?1",
            entry.decision_id.as_str(),
        )? {
            return Err(StateError::Conflict(format!(
                "decision `{}` is already recorded",
                entry.decision_id
            )));
        }
        conn.prepare_cached(
            "INSERT INTO history (decision_id, task_id, agent, server, tool, decision,
                 decided_at, result_status, result_labels, result_at, annotations, credential)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            entry.decision_id.as_str(),
            entry.task_id.as_str(),
            entry.agent,
            entry.server,
            entry.tool,
            entry.decision.as_str(),
            decided_at,
            result.as_ref().map(|r| r.status),
            result.as_ref().map(|r| r.labels.as_str()),
            result.as_ref().map(|r| r.reported_at.as_str()),
            annotations,
            credential,
        ])?;
        crate::sessions::fold_decision(conn, conn.last_insert_rowid(), &entry)
    })
}

/// The write [`TaskStore::record_result`] runs.
pub(crate) fn result_write(
    decision_id: &DecisionId,
    result: CallResult,
) -> impl FnOnce(&Connection) -> Result<HistoryEntry, StateError> + Send + 'static {
    let id = decision_id.clone();
    move |conn: &Connection| {
        let row = ResultRow::new(&result)?;
        let decision_id = id.as_str();
        let Some(entry) = history_entry(conn, decision_id)? else {
            return Err(StateError::DecisionNotFound(id));
        };
        if entry.result.is_some() {
            return Err(StateError::Conflict(format!(
                "the result of decision `{decision_id}` was already reported"
            )));
        }
        conn.prepare_cached(
            "UPDATE history SET result_status = ?2, result_labels = ?3, result_at = ?4
             WHERE decision_id = ?1",
        )?
        .execute(params![
            decision_id,
            row.status,
            row.labels,
            row.reported_at
        ])?;
        let seq: i64 = conn
            .prepare_cached("SELECT seq FROM history WHERE decision_id = ?1")?
            .query_row(params![decision_id], |row| row.get(0))?;
        crate::sessions::fold_result(conn, entry.task_id.as_str(), seq, &result)?;
        Ok(HistoryEntry {
            result: Some(result),
            ..entry
        })
    }
}

/// The checks of a new task and its root credential that need no database:
/// every backend refuses the same records with the same errors.
pub(crate) fn check_new_task(task: &TaskRecord, root: &CredentialRecord) -> Result<(), StateError> {
    if task.ended_at.is_some() || task.end_reason.is_some() {
        return Err(StateError::Invalid(format!(
            "task `{}` cannot be created ended",
            task.id
        )));
    }
    let mismatch = if root.task_id != task.id {
        Some(format!("belongs to task `{}`", root.task_id))
    } else if root.parent_revocation_id.is_some() {
        Some("has a parent".to_owned())
    } else if root.depth != 0 {
        Some(format!("has depth {}", root.depth))
    } else if root.agent != task.agent {
        Some(format!("is held by `{}`", root.agent))
    } else if root.revocation_id != task.root_revocation_id {
        Some(format!(
            "has revocation id `{}`, the task names `{}`",
            root.revocation_id, task.root_revocation_id
        ))
    } else {
        None
    };
    if let Some(mismatch) = mismatch {
        return Err(StateError::Invalid(format!(
            "the root credential of task `{}` {mismatch}",
            task.id
        )));
    }
    check_credential(root)
}

/// A credential needs a revocation id.
pub(crate) fn check_credential(credential: &CredentialRecord) -> Result<(), StateError> {
    if credential.revocation_id.is_empty() {
        return Err(StateError::Invalid(
            "a credential needs a revocation id".to_owned(),
        ));
    }
    Ok(())
}

/// A delegated credential names its parent; returns the parent's id.
pub(crate) fn delegated_parent(credential: &CredentialRecord) -> Result<&str, StateError> {
    check_credential(credential)?;
    credential.parent_revocation_id.as_deref().ok_or_else(|| {
        StateError::Invalid(format!(
            "credential `{}` has no parent: the root credential is recorded with its task",
            credential.revocation_id
        ))
    })
}

/// An end needs a reason.
pub(crate) fn check_end_reason(reason: &str) -> Result<(), StateError> {
    if reason.is_empty() {
        return Err(StateError::Invalid(
            "a task needs a reason to end".to_owned(),
        ));
    }
    Ok(())
}

/// Connection settings and schema: WAL, a sync on every commit, foreign
/// keys, and the tables brought to the current schema
/// ([`state_schema`](crate::state_schema)).
fn init(mut conn: Connection, path: &Path) -> Result<TaskStore, StateError> {
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Unsupported(format!(
            "the state database {} refused WAL mode (journal_mode is `{mode}`)",
            path.display()
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    crate::state_schema::ensure_current(&mut conn, path)?;
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.execute_batch("PRAGMA busy_timeout = 5000;")?;
    Ok(TaskStore {
        writer: StateWriter::start(conn)?,
        reader: Mutex::new(reader),
    })
}

/// Ends task `task` (if open) and returns its credentials' revocation ids.
fn end_in(
    conn: &Connection,
    task: &TaskId,
    at: &str,
    reason: &str,
) -> Result<Vec<String>, StateError> {
    let id = task.as_str();
    let ended: Option<Option<String>> = conn
        .query_row(
            "SELECT ended_at FROM tasks WHERE id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()?;
    let Some(ended) = ended else {
        return Err(StateError::TaskNotFound(task.clone()));
    };
    if ended.is_none() {
        // No decision recorded before the end is later than it: a decision
        // made (clocked) after the caller's end but written before it
        // moves the end to its own time. Times are fixed-width RFC 3339.
        let latest: Option<String> = conn
            .prepare_cached("SELECT MAX(decided_at) FROM history WHERE task_id = ?1")?
            .query_row(params![id], |row| row.get(0))?;
        let at = latest
            .filter(|l| l.as_str() > at)
            .unwrap_or_else(|| at.to_owned());
        conn.prepare_cached("UPDATE tasks SET ended_at = ?2, end_reason = ?3 WHERE id = ?1")?
            .execute(params![id, at, reason])?;
        conn.prepare_cached(
            "INSERT INTO revocations (revocation_id, task_id, revoked_at)
             SELECT revocation_id, task_id, ?2 FROM credentials WHERE task_id = ?1 ORDER BY seq",
        )?
        .execute(params![id, at])?;
    }
    query_all(
        conn,
        "SELECT revocation_id FROM credentials WHERE task_id = ?1 ORDER BY seq",
        params![id],
        |row| Ok(row.get::<_, String>(0)?),
    )
}

fn exists(conn: &Connection, sql: &str, id: &str) -> Result<bool, StateError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(row)?);
    }
    Ok(out)
}

fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Option<T>, StateError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(read).transpose()
}

pub(crate) fn history_entry(
    conn: &Connection,
    decision_id: &str,
) -> Result<Option<HistoryEntry>, StateError> {
    query_one(
        conn,
        &format!("SELECT {HISTORY_COLUMNS} FROM history WHERE decision_id = ?1"),
        params![decision_id],
        history_row,
    )
}

// Writing: records checked and encoded before the transaction starts.

/// A time as stored: RFC 3339, UTC, nanoseconds, fixed width.
pub(crate) fn time_text(time: &DateTime<Utc>) -> Result<String, StateError> {
    if !(0..=9999).contains(&time.year()) {
        return Err(StateError::Invalid(format!(
            "time {time} is outside the years 0000-9999"
        )));
    }
    Ok(time.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

pub(crate) fn json_text<T: Serialize + ?Sized>(
    value: &T,
    what: &str,
) -> Result<String, StateError> {
    serde_json::to_string(value)
        .map_err(|e| StateError::Invalid(format!("{what} cannot be encoded: {e}")))
}

struct TaskRow<'a> {
    task: &'a TaskRecord,
    tools: String,
    labels: String,
    params: String,
    created_at: String,
    expires_at: String,
}

impl<'a> TaskRow<'a> {
    fn new(task: &'a TaskRecord) -> Result<Self, StateError> {
        Ok(Self {
            task,
            tools: json_text(&task.tools, "tools")?,
            labels: json_text(&task.labels, "labels")?,
            params: json_text(&task.params, "params")?,
            created_at: time_text(&task.created_at)?,
            expires_at: time_text(&task.expires_at)?,
        })
    }

    fn insert(&self, conn: &Connection) -> Result<(), StateError> {
        let t = self.task;
        conn.prepare_cached(
            "INSERT INTO tasks (id, agent, on_behalf_of, intent, tools, labels, params, audience,
                 max_depth, created_at, expires_at, root_revocation_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            t.id.as_str(),
            t.agent,
            t.on_behalf_of,
            t.intent,
            self.tools,
            self.labels,
            self.params,
            t.audience,
            t.max_depth,
            self.created_at,
            self.expires_at,
            t.root_revocation_id,
        ])?;
        Ok(())
    }
}

struct CredentialRow<'a> {
    credential: &'a CredentialRecord,
    tools: String,
    labels: String,
    issued_at: String,
    expires_at: String,
}

impl<'a> CredentialRow<'a> {
    fn new(credential: &'a CredentialRecord) -> Result<Self, StateError> {
        check_credential(credential)?;
        Ok(Self {
            credential,
            tools: json_text(&credential.tools, "tools")?,
            labels: json_text(&credential.labels, "labels")?,
            issued_at: time_text(&credential.issued_at)?,
            expires_at: time_text(&credential.expires_at)?,
        })
    }

    /// [`StateError::Conflict`] if the revocation id is recorded already.
    fn refuse_recorded(&self, conn: &Connection) -> Result<(), StateError> {
        let id = &self.credential.revocation_id;
        if exists(
            conn,
            "SELECT 1 FROM credentials WHERE revocation_id = ?1",
            id,
        )? {
            return Err(StateError::Conflict(format!(
                "credential `{id}` is already recorded"
            )));
        }
        Ok(())
    }

    /// Inserts the credential; [`StateError::Conflict`] if its revocation
    /// id is recorded already.
    fn insert(&self, conn: &Connection) -> Result<(), StateError> {
        self.refuse_recorded(conn)?;
        let c = self.credential;
        conn.prepare_cached(
            "INSERT INTO credentials (revocation_id, task_id, parent_revocation_id, agent, depth,
                 tools, labels, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            c.revocation_id,
            c.task_id.as_str(),
            c.parent_revocation_id,
            c.agent,
            c.depth,
            self.tools,
            self.labels,
            self.issued_at,
            self.expires_at,
        ])?;
        Ok(())
    }
}

struct ResultRow<'a> {
    status: &'a str,
    labels: String,
    reported_at: String,
}

impl<'a> ResultRow<'a> {
    fn new(result: &'a CallResult) -> Result<Self, StateError> {
        Ok(Self {
            status: &result.status,
            labels: json_text(&result.labels, "result labels")?,
            reported_at: time_text(&result.reported_at)?,
        })
    }
}

// Reading: columns in the order the row readers expect them.

const TASK_COLUMNS: &str = "id, agent, on_behalf_of, intent, tools, labels, params, audience, \
     max_depth, created_at, expires_at, ended_at, end_reason, root_revocation_id";

const CREDENTIAL_COLUMNS: &str = "task_id, revocation_id, parent_revocation_id, agent, depth, \
     tools, labels, issued_at, expires_at";

const HISTORY_COLUMNS: &str = "decision_id, task_id, agent, server, tool, decision, decided_at, \
     result_status, result_labels, result_at, annotations";

fn task_row(row: &Row<'_>) -> Result<TaskRecord, StateError> {
    Ok(TaskRecord {
        id: id_col(row, 0)?,
        agent: row.get(1)?,
        on_behalf_of: row.get(2)?,
        intent: row.get(3)?,
        tools: json_col(row, 4, "tools")?,
        labels: json_col(row, 5, "labels")?,
        params: json_col(row, 6, "params")?,
        audience: row.get(7)?,
        max_depth: row.get(8)?,
        created_at: time_col(row, 9, "created_at")?,
        expires_at: time_col(row, 10, "expires_at")?,
        ended_at: row
            .get::<_, Option<String>>(11)?
            .map(|t| parse_time(&t, "ended_at"))
            .transpose()?,
        end_reason: row.get(12)?,
        root_revocation_id: row.get(13)?,
    })
}

fn credential_row(row: &Row<'_>) -> Result<CredentialRecord, StateError> {
    Ok(CredentialRecord {
        task_id: id_col(row, 0)?,
        revocation_id: row.get(1)?,
        parent_revocation_id: row.get(2)?,
        agent: row.get(3)?,
        depth: row.get(4)?,
        tools: json_col(row, 5, "tools")?,
        labels: json_col(row, 6, "labels")?,
        issued_at: time_col(row, 7, "issued_at")?,
        expires_at: time_col(row, 8, "expires_at")?,
    })
}

fn history_row(row: &Row<'_>) -> Result<HistoryEntry, StateError> {
    let status: Option<String> = row.get(7)?;
    let result = match status {
        Some(status) => Some(CallResult {
            status,
            labels: json_col(row, 8, "result labels")?,
            reported_at: time_col(row, 9, "result_at")?,
            // Folded into the session when reported, not kept here.
            grounds: Grounds::default(),
        }),
        None => None,
    };
    Ok(HistoryEntry {
        decision_id: id_col(row, 0)?,
        task_id: id_col(row, 1)?,
        agent: row.get(2)?,
        server: row.get(3)?,
        tool: row.get(4)?,
        decision: decision_col(row, 5)?,
        decided_at: time_col(row, 6, "decided_at")?,
        result,
        annotations: row
            .get::<_, Option<String>>(10)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| {
                    StateError::Corrupt(format!("stored annotations `{text}` are not valid: {e}"))
                })
            })
            .transpose()?,
    })
}

/// An id as stored, parsed as the id it is (`TaskId`, `DecisionId`, …):
/// text that is not one is a corrupt row.
pub(crate) fn id_col<T>(row: &Row<'_>, idx: usize) -> Result<T, StateError>
where
    T: TryFrom<String, Error = IdError>,
{
    T::try_from(row.get::<_, String>(idx)?).map_err(|e| StateError::Corrupt(format!("stored {e}")))
}

/// An id column that may be `NULL`, parsed as [`id_col`] parses one.
pub(crate) fn optional_id_col<T>(row: &Row<'_>, idx: usize) -> Result<Option<T>, StateError>
where
    T: TryFrom<String, Error = IdError>,
{
    row.get::<_, Option<String>>(idx)?
        .map(|text| T::try_from(text).map_err(|e| StateError::Corrupt(format!("stored {e}"))))
        .transpose()
}

pub(crate) fn parse_time(text: &str, what: &str) -> Result<DateTime<Utc>, StateError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StateError::Corrupt(format!("{what} `{text}` is not an RFC 3339 time: {e}")))
}

pub(crate) fn time_col(row: &Row<'_>, idx: usize, what: &str) -> Result<DateTime<Utc>, StateError> {
    parse_time(&row.get::<_, String>(idx)?, what)
}

pub(crate) fn json_col<T: DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
    what: &str,
) -> Result<T, StateError> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| StateError::Corrupt(format!("stored {what} `{text}` are not valid: {e}")))
}

/// A stored decision's outcome (`allow`, `deny`, `approval_required`).
fn decision_col(row: &Row<'_>, index: usize) -> Result<Decision, StateError> {
    decision_of(&row.get::<_, String>(index)?)
}

/// The outcome named by stored text.
pub(crate) fn decision_of(text: &str) -> Result<Decision, StateError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StateError::Corrupt(format!("`{text}` is not a decision")))
}
