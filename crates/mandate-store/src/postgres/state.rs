//! The state store on PostgreSQL: tasks, credentials and revocations,
//! history and sessions, agent sessions, approvals and token exchanges,
//! shared by every instance on the database.
//!
//! The tables and the stored forms are SQLite's (`state.db`): times as
//! fixed-width RFC 3339 text, lists and objects as JSON text, so a record
//! reads back equal to what was written and the migration from SQLite
//! copies rows as they are.
//!
//! # Concurrency
//!
//! SQLite has one writer; here several instances write at once, under
//! `READ COMMITTED`. What SQLite's single writer ordered is ordered by row
//! locks on the task:
//!
//! * recording a decision or a result locks its task's row (`FOR UPDATE`):
//!   the session summary is read, folded and written by one transaction at
//!   a time, and a decision is either before the task's end or refused;
//! * ending a task locks the same row, so once an end is committed no
//!   decision, delegation or exchange under the task can be;
//! * a delegation or an exchange locks it `FOR SHARE` (they do not touch
//!   the summary);
//! * approvals change by compare-and-set on their status, which PostgreSQL
//!   evaluates under the row lock: of two instances releasing one approval,
//!   one changes it.
//!
//! Unique keys that another instance may take between a check and an
//! insert (a task id, a revocation id, a decision id) are reported as
//! [`StateError::Conflict`] either way.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use mandate_core::provenance::Grounds;
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, DecisionId, IdError, Requester, SessionId,
    SessionSummary, TaskId, ToolAnnotations,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::notify;
use crate::state_store::{EndedTask, StateStore, TaskDetails};
use crate::tasks::{
    END_REASON_EXPIRED, check_end_reason, check_new_task, decision_of, delegated_parent, json_text,
    parse_time, time_text,
};
use crate::{
    ApprovalRecord, ApprovalsLock, CallResult, CredentialRecord, ExchangeRecord, HistoryEntry,
    Revocation, SessionDecision, StateChange, StateError, TaskRecord,
};

/// The state of every instance, in one PostgreSQL database.
#[derive(Clone)]
pub struct PgState {
    pool: Pool,
    changes: tokio::sync::broadcast::Sender<StateChange>,
    /// Keeps the change listener running while this state is in use.
    _alive: std::sync::Arc<()>,
}

impl std::fmt::Debug for PgState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgState").finish_non_exhaustive()
    }
}

impl PgState {
    pub(crate) fn new(
        pool: Pool,
        changes: tokio::sync::broadcast::Sender<StateChange>,
        alive: std::sync::Arc<()>,
    ) -> Self {
        Self {
            pool,
            changes,
            _alive: alive,
        }
    }

    async fn client(&self) -> Result<Object, StateError> {
        self.pool
            .get()
            .await
            .map_err(|e| StateError::Unavailable(format!("PostgreSQL: {e}")))
    }

    /// The row `sql` finds with `params`, read by `read`, if any.
    async fn query_one<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&cached(&client, sql).await?, params)
            .await
            .map_err(pg)?;
        row.as_ref().map(read).transpose()
    }

    /// Every row `sql` finds with `params`, read by `read`, in order.
    async fn query_all<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(&cached(&client, sql).await?, params)
            .await
            .map_err(pg)?;
        rows.iter().map(read).collect()
    }

    /// Runs `f` in a transaction and commits it; a failure rolls it back.
    async fn write<T>(
        &self,
        f: impl for<'c, 't> AsyncFnOnce(&'c Transaction<'t>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let value = f(&tx).await?;
        tx.commit()
            .await
            .map_err(|e| StateError::Commit(e.to_string()))?;
        Ok(value)
    }
}

/// `sql` prepared once per connection (the pool's statement cache): each
/// later use is one round trip instead of two (prepare, then execute),
/// which is what bounds this path (docs/PERFORMANCE.md).
async fn cached(client: &impl GenericClient, sql: &str) -> Result<Statement, StateError> {
    client.prepare_cached(sql).await.map_err(pg)
}

const TASK_COLUMNS: &str = "id, agent, on_behalf_of, intent, tools, labels, params, audience, \
     max_depth, created_at, expires_at, ended_at, end_reason, root_revocation_id";

const CREDENTIAL_COLUMNS: &str = "task_id, revocation_id, parent_revocation_id, agent, depth, \
     tools, labels, issued_at, expires_at";

const HISTORY_COLUMNS: &str = "decision_id, task_id, agent, server, tool, decision, decided_at, \
     result_status, result_labels, result_at, annotations";

const APPROVAL_COLUMNS: &str = "id, decision_id, request_sha256, requester, task_id, status, \
     created_at, expires_at, resolved_at, resolved_by, reason, released_by, summary, receipt";

#[async_trait]
impl StateStore for PgState {
    async fn create_task(
        &self,
        task: TaskRecord,
        root: CredentialRecord,
    ) -> Result<(), StateError> {
        check_new_task(&task, &root)?;
        let t = TaskText::new(&task)?;
        let c = CredentialText::new(&root)?;
        self.write(async |tx| {
            if tx
                .query_opt(&cached(tx, "SELECT 1 FROM tasks WHERE id = $1").await?, &[&task.id.as_str()])
                .await
                .map_err(pg)?
                .is_some()
            {
                return Err(StateError::Conflict(format!(
                    "task `{}` already exists",
                    task.id
                )));
            }
            refuse_recorded(tx, &root.revocation_id).await?;
            tx.execute(
                &cached(tx, "INSERT INTO tasks (id, agent, on_behalf_of, intent, tools, labels, params, audience,
                     max_depth, created_at, expires_at, root_revocation_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)").await?,
                &[
                    &task.id.as_str(),
                    &task.agent,
                    &task.on_behalf_of,
                    &task.intent,
                    &t.tools,
                    &t.labels,
                    &t.params,
                    &task.audience,
                    &i64::from(task.max_depth),
                    &t.created_at,
                    &t.expires_at,
                    &task.root_revocation_id,
                ],
            )
            .await
            .map_err(|e| unique_is_conflict(e, || format!("task `{}` already exists", task.id)))?;
            insert_credential(tx, &root, &c).await
        })
        .await
    }

    async fn ground_task(&self, id: &TaskId, grounds: Grounds) -> Result<(), StateError> {
        if grounds.is_empty() {
            return Ok(());
        }
        self.write(async |tx| {
            // Locked as a decision locks it: the session folds in turn.
            let locked = tx
                .execute(
                    &cached(tx, "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE").await?,
                    &[&id.as_str()],
                )
                .await
                .map_err(pg)?;
            if locked == 0 {
                return Err(StateError::TaskNotFound(id.clone()));
            }
            let mut summary = session_of(tx, id).await?;
            summary.grounds.merge(grounds.clone());
            store_session(tx, id, &summary).await
        })
        .await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StateError> {
        let client = self.client().await?;
        task_of(&client, id).await
    }

    async fn task_details(&self, id: &TaskId) -> Result<Option<TaskDetails>, StateError> {
        // One snapshot for the task and what hangs off it.
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let Some(task) = task_of(&tx, id).await? else {
            return Ok(None);
        };
        let details = details(&tx, task).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(details))
    }

    async fn list_tasks(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<TaskDetails>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let rows = tx
            .query(
                &cached(
                    &tx,
                    &format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE (NOT $1 OR ended_at IS NULL)
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                    ),
                )
                .await?,
                &[&open_only, &limit],
            )
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(details(&tx, task_row(row)?).await?);
        }
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn task_context(
        &self,
        task_id: &TaskId,
    ) -> Result<Option<(TaskRecord, SessionSummary)>, StateError> {
        self.query_one(
            &format!(
                "SELECT {TASK_COLUMNS}, s.summary FROM tasks t
                 LEFT JOIN sessions s ON s.task_id = t.id WHERE t.id = $1"
            ),
            &[&task_id.as_str()],
            |row| {
                let summary: Option<String> = row.try_get(14).map_err(pg)?;
                let summary = match summary {
                    Some(text) => parse(&text, "session summary")?,
                    None => SessionSummary::default(),
                };
                Ok((task_row(row)?, summary))
            },
        )
        .await
    }

    async fn add_credential(&self, credential: CredentialRecord) -> Result<(), StateError> {
        let parent_id = delegated_parent(&credential)?.to_owned();
        let c = CredentialText::new(&credential)?;
        self.write(async |tx| {
            let task = tx
                .query_opt(
                    &cached(
                        tx,
                        "SELECT max_depth, end_reason FROM tasks WHERE id = $1 FOR SHARE",
                    )
                    .await?,
                    &[&credential.task_id.as_str()],
                )
                .await
                .map_err(pg)?;
            let Some(task) = task else {
                return Err(StateError::TaskNotFound(credential.task_id.clone()));
            };
            let max_depth: i64 = task.try_get(0).map_err(pg)?;
            if let Some(reason) = task.try_get::<_, Option<String>>(1).map_err(pg)? {
                return Err(StateError::TaskEnded {
                    task_id: credential.task_id.clone(),
                    reason,
                });
            }
            let parent = tx
                .query_opt(
                    &cached(
                        tx,
                        "SELECT depth FROM credentials WHERE revocation_id = $1 AND task_id = $2",
                    )
                    .await?,
                    &[&parent_id, &credential.task_id.as_str()],
                )
                .await
                .map_err(pg)?;
            let Some(parent) = parent else {
                return Err(StateError::Invalid(format!(
                    "parent credential `{parent_id}` is not a credential of task `{}`",
                    credential.task_id
                )));
            };
            let parent_depth: i64 = parent.try_get(0).map_err(pg)?;
            if i64::from(credential.depth) != parent_depth + 1 {
                return Err(StateError::Invalid(format!(
                    "credential `{}` has depth {}, its parent has depth {parent_depth}",
                    credential.revocation_id, credential.depth
                )));
            }
            if i64::from(credential.depth) > max_depth {
                return Err(StateError::Invalid(format!(
                    "credential `{}` has depth {}, task `{}` allows {max_depth}",
                    credential.revocation_id, credential.depth, credential.task_id
                )));
            }
            insert_credential(tx, &credential, &c).await
        })
        .await
    }

    async fn end_task(
        &self,
        id: &TaskId,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<EndedTask, StateError> {
        check_end_reason(reason)?;
        let at = time_text(&at)?;
        self.write(async |tx| {
            let revoked = end_in(tx, id, &at, reason).await?;
            notify::announce(tx, notify::REVOCATIONS).await?;
            let task = task_of(tx, id)
                .await?
                .ok_or_else(|| StateError::TaskNotFound(id.to_owned()))?;
            Ok(EndedTask { task, revoked })
        })
        .await
    }

    async fn end_expired(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TaskId, Vec<String>)>, StateError> {
        let now = time_text(&now)?;
        self.write(async |tx| {
            // Instances sweep at once: each takes the tasks the others have
            // not locked, and a task another one ended meanwhile is open no
            // more when its lock is granted.
            let expired = tx
                .query(
                    &cached(
                        tx,
                        "SELECT id FROM tasks WHERE ended_at IS NULL AND expires_at <= $1
                     ORDER BY expires_at, id FOR UPDATE SKIP LOCKED",
                    )
                    .await?,
                    &[&now],
                )
                .await
                .map_err(pg)?;
            let mut out = Vec::with_capacity(expired.len());
            for row in expired {
                let id: TaskId = id_at(&row, 0)?;
                let ids = end_in(tx, &id, &now, END_REASON_EXPIRED).await?;
                out.push((id, ids));
            }
            if !out.is_empty() {
                notify::announce(tx, notify::REVOCATIONS).await?;
            }
            Ok(out)
        })
        .await
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StateError> {
        self.query_all(
            "SELECT revocation_id, task_id, revoked_at FROM revocations ORDER BY seq",
            &[],
            |row| {
                Ok(Revocation {
                    revocation_id: row.try_get(0).map_err(pg)?,
                    task_id: id_at(row, 1)?,
                    revoked_at: time_col(row, 2, "revoked_at")?,
                })
            },
        )
        .await
    }

    async fn revoked_ids(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StateError> {
        let now = time_text(&now)?;
        let rows = self
            .query_all(
                "SELECT r.revocation_id, t.expires_at
                 FROM revocations r JOIN tasks t ON t.id = r.task_id
                 WHERE t.expires_at > $1",
                &[&now],
                |row| Ok((row.try_get(0).map_err(pg)?, time_col(row, 1, "expires_at")?)),
            )
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn record_decision(
        &self,
        entry: HistoryEntry,
        credential: Option<String>,
    ) -> Result<(), StateError> {
        let decided_at = time_text(&entry.decided_at)?;
        let annotations = entry
            .annotations
            .as_ref()
            .map(|a| json_text(a, "annotations"))
            .transpose()?;
        let result = entry.result.as_ref().map(ResultText::new).transpose()?;
        let parsed_annotations = entry
            .annotations
            .as_ref()
            .map(|map| {
                serde_json::from_value::<ToolAnnotations>(serde_json::Value::Object(map.clone()))
                    .map_err(|e| StateError::Invalid(format!("annotations: {e}")))
            })
            .transpose()?;
        self.write(async |tx| {
            lock_open_task(tx, &entry.task_id).await?;
            let conflict = || format!("decision `{}` is already recorded", entry.decision_id);
            if tx
                .query_opt(
                    &cached(tx, "SELECT 1 FROM history WHERE decision_id = $1").await?,
                    &[&entry.decision_id.as_str()],
                )
                .await
                .map_err(pg)?
                .is_some()
            {
                return Err(StateError::Conflict(conflict()));
            }
            let seq: i64 = tx
                .query_one(
                    &cached(tx, "INSERT INTO history (decision_id, task_id, agent, server, tool, decision,
                         decided_at, result_status, result_labels, result_at, annotations, credential)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     RETURNING seq").await?,
                    &[
                        &entry.decision_id.as_str(),
                        &entry.task_id.as_str(),
                        &entry.agent,
                        &entry.server,
                        &entry.tool,
                        &entry.decision.as_str(),
                        &decided_at,
                        &result.as_ref().map(|r| r.status),
                        &result.as_ref().map(|r| r.labels.as_str()),
                        &result.as_ref().map(|r| r.reported_at.as_str()),
                        &annotations,
                        &credential,
                    ],
                )
                .await
                .map_err(|e| unique_is_conflict(e, conflict))?
                .try_get(0)
                .map_err(pg)?;
            let position = position(seq)?;
            let mut summary = session_of(tx, &entry.task_id).await?;
            summary.record_decision(
                position,
                &entry.server,
                &entry.tool,
                entry.decision,
                parsed_annotations.as_ref(),
            );
            if let Some(result) = &entry.result {
                summary.record_labels(position, result.labels.iter().cloned());
            }
            store_session(tx, &entry.task_id, &summary).await
        })
        .await
    }

    async fn record_result(
        &self,
        decision_id: &DecisionId,
        result: CallResult,
    ) -> Result<HistoryEntry, StateError> {
        let text = ResultText::new(&result)?;
        let entry = self
            .write(async |tx| {
                let Some(task_id) = tx
                    .query_opt(
                        &cached(tx, "SELECT task_id FROM history WHERE decision_id = $1").await?,
                        &[&decision_id.as_str()],
                    )
                    .await
                    .map_err(pg)?
                else {
                    return Err(StateError::DecisionNotFound(decision_id.clone()));
                };
                let task_id: TaskId = id_at(&task_id, 0)?;
                // The task first, as a decision locks it: results and
                // decisions of one task fold into its summary in turn.
                tx.execute(
                    &cached(tx, "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE").await?,
                    &[&task_id.as_str()],
                )
                .await
                .map_err(pg)?;
                let row = tx
                    .query_one(
                        &cached(
                            tx,
                            &format!(
                                "SELECT {HISTORY_COLUMNS}, seq FROM history WHERE decision_id = $1"
                            ),
                        )
                        .await?,
                        &[&decision_id.as_str()],
                    )
                    .await
                    .map_err(pg)?;
                let entry = history_row(&row)?;
                if entry.result.is_some() {
                    return Err(StateError::Conflict(format!(
                        "the result of decision `{decision_id}` was already reported"
                    )));
                }
                let seq: i64 = row.try_get(11).map_err(pg)?;
                tx.execute(
                    &cached(
                        tx,
                        "UPDATE history SET result_status = $2, result_labels = $3, result_at = $4
                     WHERE decision_id = $1",
                    )
                    .await?,
                    &[
                        &decision_id.as_str(),
                        &text.status,
                        &text.labels,
                        &text.reported_at,
                    ],
                )
                .await
                .map_err(pg)?;
                if !(result.labels.is_empty() && result.grounds.is_empty()) {
                    let mut summary = session_of(tx, &task_id).await?;
                    summary.record_labels(position(seq)?, result.labels.iter().cloned());
                    summary.grounds.merge(result.grounds.clone());
                    store_session(tx, &task_id, &summary).await?;
                }
                Ok(entry)
            })
            .await?;
        Ok(HistoryEntry {
            result: Some(result),
            ..entry
        })
    }

    async fn decision(&self, decision_id: &DecisionId) -> Result<Option<HistoryEntry>, StateError> {
        self.query_one(
            &format!("SELECT {HISTORY_COLUMNS} FROM history WHERE decision_id = $1"),
            &[&decision_id.as_str()],
            history_row,
        )
        .await
    }

    async fn decided_call(
        &self,
        decision_id: &DecisionId,
    ) -> Result<Option<(HistoryEntry, Option<String>)>, StateError> {
        self.query_one(
            &format!("SELECT {HISTORY_COLUMNS}, credential FROM history WHERE decision_id = $1"),
            &[&decision_id.as_str()],
            |row| Ok((history_row(row)?, row.try_get(11).map_err(pg)?)),
        )
        .await
    }

    async fn record_exchange(&self, record: ExchangeRecord) -> Result<(), StateError> {
        let scope = json_text(&record.scope, "scope")?;
        let exchanged_at = time_text(&record.exchanged_at)?;
        let expires_at = time_text(&record.expires_at)?;
        self.write(async |tx| {
            let task = tx
                .query_opt(
                    &cached(
                        tx,
                        "SELECT t.end_reason FROM history h JOIN tasks t ON t.id = h.task_id
                     WHERE h.decision_id = $1 AND h.task_id = $2 FOR SHARE OF t",
                    )
                    .await?,
                    &[&record.decision_id.as_str(), &record.task_id.as_str()],
                )
                .await
                .map_err(pg)?;
            let Some(task) = task else {
                return Err(StateError::DecisionNotFound(record.decision_id.clone()));
            };
            if let Some(reason) = task.try_get::<_, Option<String>>(0).map_err(pg)? {
                return Err(StateError::TaskEnded {
                    task_id: record.task_id.clone(),
                    reason,
                });
            }
            let used = || {
                format!(
                    "decision `{}` was exchanged for a token already",
                    record.decision_id
                )
            };
            let inserted = tx
                .execute(
                    &cached(
                        tx,
                        "INSERT INTO token_exchanges (decision_id, task_id, credential, resource,
                         token_id, scope, exchanged_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (decision_id) DO NOTHING",
                    )
                    .await?,
                    &[
                        &record.decision_id.as_str(),
                        &record.task_id.as_str(),
                        &record.credential,
                        &record.resource,
                        &record.token_id,
                        &scope,
                        &exchanged_at,
                        &expires_at,
                    ],
                )
                .await
                .map_err(|e| unique_is_conflict(e, used))?;
            if inserted == 0 {
                return Err(StateError::Conflict(used()));
            }
            Ok(())
        })
        .await
    }

    async fn agent_session(
        &self,
        agent: &str,
        session: &SessionId,
    ) -> Result<SessionSummary, StateError> {
        let summary = self
            .query_one(
                "SELECT summary FROM agent_sessions WHERE agent = $1 AND session = $2",
                &[&agent, &session.as_str()],
                |row| parse(&row.try_get::<_, String>(0).map_err(pg)?, "session summary"),
            )
            .await?;
        Ok(summary.unwrap_or_default())
    }

    async fn record_session_decision(&self, decided: SessionDecision) -> Result<(), StateError> {
        let at = time_text(&decided.decided_at)?;
        let empty = json_text(&SessionSummary::default(), "session summary")?;
        self.write(async |tx| {
            let session = decided.session.as_str();
            // Create the row if need be, then lock it: decisions of one
            // session made through several instances fold in turn.
            tx.execute(
                &cached(tx, "INSERT INTO agent_sessions (agent, session, summary, started_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (agent, session) DO NOTHING").await?,
                &[&decided.agent, &session, &empty, &at],
            )
            .await
            .map_err(pg)?;
            let text: String = tx
                .query_one(
                    &cached(tx, "SELECT summary FROM agent_sessions WHERE agent = $1 AND session = $2 FOR UPDATE").await?,
                    &[&decided.agent, &session],
                )
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)?;
            let mut summary: SessionSummary = parse(&text, "session summary")?;
            let position = summary.calls.saturating_add(1);
            summary.record_decision(
                position,
                &decided.server,
                &decided.tool,
                decided.decision,
                decided.annotations.as_ref(),
            );
            tx.execute(
                &cached(tx, "UPDATE agent_sessions SET summary = $3, updated_at = $4
                 WHERE agent = $1 AND session = $2").await?,
                &[
                    &decided.agent,
                    &session,
                    &json_text(&summary, "session summary")?,
                    &at,
                ],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), StateError> {
        let a = &record.approval;
        let requester = json_text(&a.requester, "requester")?;
        let created_at = time_text(&a.created_at)?;
        let expires_at = time_text(&a.expires_at)?;
        let summary = json_text(&record.summary, "summary")?;
        let receipt = json_text(&record.receipt, "receipt")?;
        let client = self.client().await?;
        client
            .execute(
                &cached(&client, "INSERT INTO approvals (id, decision_id, request_sha256, requester, task_id, status,
                     created_at, expires_at, summary, receipt, agent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)").await?,
                &[
                    &a.id.as_str(),
                    &a.decision_id.as_str(),
                    &a.request_sha256,
                    &requester,
                    &record.task_id,
                    &a.status.as_str(),
                    &created_at,
                    &expires_at,
                    &summary,
                    &receipt,
                    &a.requester.agent,
                ],
            )
            .await
            .map_err(|e| unique_is_conflict(e, || format!("approval `{}` exists", a.id)))?;
        notify::announce(&client, notify::APPROVALS).await
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRecord>, StateError> {
        self.query_one(
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"),
            &[&id.as_str()],
            approval_row,
        )
        .await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let now = time_text(&now)?;
        let status_text = status.map(ApprovalStatus::as_str);
        // One condition per asked status, each as the partial indexes state
        // it (as on SQLite).
        let (condition, params): (&str, Vec<&(dyn ToSql + Sync)>) = match (status, &status_text) {
            (None, _) => ("TRUE", vec![&limit]),
            (Some(ApprovalStatus::Pending), _) => {
                ("status = 'pending' AND expires_at > $2", vec![&limit, &now])
            }
            (Some(ApprovalStatus::Expired), _) => (
                "(status = 'expired' OR (status = 'pending' AND expires_at <= $2))",
                vec![&limit, &now],
            ),
            (Some(_), status) => ("status = $2", vec![&limit, status]),
        };
        self.query_all(
            &format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE {condition}
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            ),
            &params,
            approval_row,
        )
        .await
    }

    async fn open_approvals_of(&self, agent: &str, now: DateTime<Utc>) -> Result<u64, StateError> {
        self.count(
            "SELECT count(*) FROM approvals
             WHERE agent = $1 AND status IN ('pending', 'withdrawn') AND expires_at > $2",
            agent,
            now,
        )
        .await
    }

    async fn open_approvals_of_task(
        &self,
        task_id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        self.count(
            "SELECT count(*) FROM approvals
             WHERE task_id = $1 AND status IN ('pending', 'withdrawn') AND expires_at > $2",
            task_id.as_str(),
            now,
        )
        .await
    }

    async fn pending_approvals_of_task(
        &self,
        task_id: &TaskId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_all(
            &format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE status = 'pending' AND task_id = $1 ORDER BY created_at LIMIT $2"
            ),
            &[&task_id.as_str(), &limit],
            approval_row,
        )
        .await
    }

    async fn pending_approvals_for(
        &self,
        binding: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let now = time_text(&now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_all(
            &format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE status = 'pending' AND request_sha256 = $1 AND expires_at > $2
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            ),
            &[&binding, &now, &limit],
            approval_row,
        )
        .await
    }

    async fn due_approvals(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let now = time_text(&now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_all(
            &format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
            ),
            &[&now, &limit],
            approval_row,
        )
        .await
    }

    async fn update_approval(
        &self,
        from: ApprovalStatus,
        approval: &Approval,
    ) -> Result<bool, StateError> {
        let resolved_at = approval.resolved_at.as_ref().map(time_text).transpose()?;
        let client = self.client().await?;
        let changed = client
            .execute(
                &cached(
                    &client,
                    "UPDATE approvals SET status = $3, resolved_at = $4, resolved_by = $5,
                     reason = $6, released_by = $7
                 WHERE id = $1 AND status = $2",
                )
                .await?,
                &[
                    &approval.id.as_str(),
                    &from.as_str(),
                    &approval.status.as_str(),
                    &resolved_at,
                    &approval.resolved_by,
                    &approval.reason,
                    &approval.released_by.as_ref().map(DecisionId::as_str),
                ],
            )
            .await
            .map_err(pg)?;
        if changed == 1 {
            notify::announce(&client, notify::APPROVALS).await?;
        }
        Ok(changed == 1)
    }

    async fn lock_approvals(&self) -> Result<ApprovalsLock, StateError> {
        notify::lock_approvals(&self.pool).await
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StateChange>> {
        Some(self.changes.subscribe())
    }
}

impl PgState {
    /// A `count(*)` of approvals keyed by `key` and `now`.
    async fn count(&self, sql: &str, key: &str, now: DateTime<Utc>) -> Result<u64, StateError> {
        let now = time_text(&now)?;
        let client = self.client().await?;
        let n: i64 = client
            .query_one(sql, &[&key, &now])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// A read-only transaction over one snapshot.
async fn snapshot(client: &mut Object) -> Result<Transaction<'_>, StateError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

async fn task_of(
    client: &impl GenericClient,
    id: &TaskId,
) -> Result<Option<TaskRecord>, StateError> {
    let row = client
        .query_opt(
            &cached(
                client,
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
            )
            .await?,
            &[&id.as_str()],
        )
        .await
        .map_err(pg)?;
    row.as_ref().map(task_row).transpose()
}

async fn details(client: &impl GenericClient, task: TaskRecord) -> Result<TaskDetails, StateError> {
    let credentials = client
        .query(
            &cached(
                client,
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE task_id = $1 ORDER BY seq"
                ),
            )
            .await?,
            &[&task.id.as_str()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(credential_row)
        .collect::<Result<_, _>>()?;
    let history = client
        .query(
            &cached(
                client,
                &format!("SELECT {HISTORY_COLUMNS} FROM history WHERE task_id = $1 ORDER BY seq"),
            )
            .await?,
            &[&task.id.as_str()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(history_row)
        .collect::<Result<_, _>>()?;
    Ok(TaskDetails {
        task,
        credentials,
        history,
    })
}

/// Locks task `id` for a write that folds its session; refuses an unknown
/// or ended task.
async fn lock_open_task(tx: &Transaction<'_>, id: &TaskId) -> Result<(), StateError> {
    let row = tx
        .query_opt(
            &cached(tx, "SELECT end_reason FROM tasks WHERE id = $1 FOR UPDATE").await?,
            &[&id.as_str()],
        )
        .await
        .map_err(pg)?;
    match row {
        None => Err(StateError::TaskNotFound(id.clone())),
        Some(row) => match row.try_get::<_, Option<String>>(0).map_err(pg)? {
            Some(reason) => Err(StateError::TaskEnded {
                task_id: id.clone(),
                reason,
            }),
            None => Ok(()),
        },
    }
}

/// Ends task `id` (if open) and returns its credentials' revocation ids.
async fn end_in(
    tx: &Transaction<'_>,
    id: &TaskId,
    at: &str,
    reason: &str,
) -> Result<Vec<String>, StateError> {
    let row = tx
        .query_opt(
            &cached(tx, "SELECT ended_at FROM tasks WHERE id = $1 FOR UPDATE").await?,
            &[&id.as_str()],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        return Err(StateError::TaskNotFound(id.clone()));
    };
    let ended: Option<String> = row.try_get(0).map_err(pg)?;
    if ended.is_none() {
        // As on SQLite: no decision recorded before the end is later than
        // it (fixed-width times compare as text).
        let latest: Option<String> = tx
            .query_one(
                &cached(tx, "SELECT max(decided_at) FROM history WHERE task_id = $1").await?,
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        let at = latest
            .filter(|l| l.as_str() > at)
            .unwrap_or_else(|| at.to_owned());
        tx.execute(
            &cached(
                tx,
                "UPDATE tasks SET ended_at = $2, end_reason = $3 WHERE id = $1",
            )
            .await?,
            &[&id.as_str(), &at, &reason],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            &cached(
                tx,
                "INSERT INTO revocations (revocation_id, task_id, revoked_at)
             SELECT revocation_id, task_id, $2 FROM credentials WHERE task_id = $1 ORDER BY seq",
            )
            .await?,
            &[&id.as_str(), &at],
        )
        .await
        .map_err(pg)?;
    }
    let rows = tx
        .query(
            &cached(
                tx,
                "SELECT revocation_id FROM credentials WHERE task_id = $1 ORDER BY seq",
            )
            .await?,
            &[&id.as_str()],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(|row| row.try_get(0).map_err(pg)).collect()
}

async fn refuse_recorded(tx: &Transaction<'_>, revocation_id: &str) -> Result<(), StateError> {
    if tx
        .query_opt(
            &cached(tx, "SELECT 1 FROM credentials WHERE revocation_id = $1").await?,
            &[&revocation_id],
        )
        .await
        .map_err(pg)?
        .is_some()
    {
        return Err(StateError::Conflict(format!(
            "credential `{revocation_id}` is already recorded"
        )));
    }
    Ok(())
}

async fn insert_credential(
    tx: &Transaction<'_>,
    credential: &CredentialRecord,
    text: &CredentialText,
) -> Result<(), StateError> {
    refuse_recorded(tx, &credential.revocation_id).await?;
    tx.execute(
        &cached(
            tx,
            "INSERT INTO credentials (revocation_id, task_id, parent_revocation_id, agent, depth,
             tools, labels, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?,
        &[
            &credential.revocation_id,
            &credential.task_id.as_str(),
            &credential.parent_revocation_id,
            &credential.agent,
            &i64::from(credential.depth),
            &text.tools,
            &text.labels,
            &text.issued_at,
            &text.expires_at,
        ],
    )
    .await
    .map_err(|e| {
        unique_is_conflict(e, || {
            format!(
                "credential `{}` is already recorded",
                credential.revocation_id
            )
        })
    })?;
    Ok(())
}

async fn session_of(tx: &Transaction<'_>, task_id: &TaskId) -> Result<SessionSummary, StateError> {
    let row = tx
        .query_opt(
            &cached(tx, "SELECT summary FROM sessions WHERE task_id = $1").await?,
            &[&task_id.as_str()],
        )
        .await
        .map_err(pg)?;
    match row {
        Some(row) => parse(&row.try_get::<_, String>(0).map_err(pg)?, "session summary"),
        None => Ok(SessionSummary::default()),
    }
}

async fn store_session(
    tx: &Transaction<'_>,
    task_id: &TaskId,
    summary: &SessionSummary,
) -> Result<(), StateError> {
    tx.execute(
        &cached(
            tx,
            "INSERT INTO sessions (task_id, summary) VALUES ($1, $2)
         ON CONFLICT (task_id) DO UPDATE SET summary = EXCLUDED.summary",
        )
        .await?,
        &[&task_id.as_str(), &json_text(summary, "session summary")?],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

// Records as stored: checked and encoded before the transaction starts.

struct TaskText {
    tools: String,
    labels: String,
    params: String,
    created_at: String,
    expires_at: String,
}

impl TaskText {
    fn new(task: &TaskRecord) -> Result<Self, StateError> {
        Ok(Self {
            tools: json_text(&task.tools, "tools")?,
            labels: json_text(&task.labels, "labels")?,
            params: json_text(&task.params, "params")?,
            created_at: time_text(&task.created_at)?,
            expires_at: time_text(&task.expires_at)?,
        })
    }
}

struct CredentialText {
    tools: String,
    labels: String,
    issued_at: String,
    expires_at: String,
}

impl CredentialText {
    fn new(credential: &CredentialRecord) -> Result<Self, StateError> {
        Ok(Self {
            tools: json_text(&credential.tools, "tools")?,
            labels: json_text(&credential.labels, "labels")?,
            issued_at: time_text(&credential.issued_at)?,
            expires_at: time_text(&credential.expires_at)?,
        })
    }
}

struct ResultText<'a> {
    status: &'a str,
    labels: String,
    reported_at: String,
}

impl<'a> ResultText<'a> {
    fn new(result: &'a CallResult) -> Result<Self, StateError> {
        Ok(Self {
            status: &result.status,
            labels: json_text(&result.labels, "result labels")?,
            reported_at: time_text(&result.reported_at)?,
        })
    }
}

// Reading rows, columns in the order of the `*_COLUMNS` lists.

fn task_row(row: &Row) -> Result<TaskRecord, StateError> {
    Ok(TaskRecord {
        id: id_at(row, 0)?,
        agent: row.try_get(1).map_err(pg)?,
        on_behalf_of: row.try_get(2).map_err(pg)?,
        intent: row.try_get(3).map_err(pg)?,
        tools: json_col(row, 4, "tools")?,
        labels: json_col(row, 5, "labels")?,
        params: json_col(row, 6, "params")?,
        audience: row.try_get(7).map_err(pg)?,
        max_depth: small(row, 8, "max_depth")?,
        created_at: time_col(row, 9, "created_at")?,
        expires_at: time_col(row, 10, "expires_at")?,
        ended_at: opt_time_col(row, 11, "ended_at")?,
        end_reason: row.try_get(12).map_err(pg)?,
        root_revocation_id: row.try_get(13).map_err(pg)?,
    })
}

fn credential_row(row: &Row) -> Result<CredentialRecord, StateError> {
    Ok(CredentialRecord {
        task_id: id_at(row, 0)?,
        revocation_id: row.try_get(1).map_err(pg)?,
        parent_revocation_id: row.try_get(2).map_err(pg)?,
        agent: row.try_get(3).map_err(pg)?,
        depth: small(row, 4, "depth")?,
        tools: json_col(row, 5, "tools")?,
        labels: json_col(row, 6, "labels")?,
        issued_at: time_col(row, 7, "issued_at")?,
        expires_at: time_col(row, 8, "expires_at")?,
    })
}

fn history_row(row: &Row) -> Result<HistoryEntry, StateError> {
    let status: Option<String> = row.try_get(7).map_err(pg)?;
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
    let annotations: Option<String> = row.try_get(10).map_err(pg)?;
    Ok(HistoryEntry {
        decision_id: id_at(row, 0)?,
        task_id: id_at(row, 1)?,
        agent: row.try_get(2).map_err(pg)?,
        server: row.try_get(3).map_err(pg)?,
        tool: row.try_get(4).map_err(pg)?,
        decision: decision_of(&row.try_get::<_, String>(5).map_err(pg)?)?,
        decided_at: time_col(row, 6, "decided_at")?,
        result,
        annotations: annotations
            .map(|text| parse(&text, "annotations"))
            .transpose()?,
    })
}

fn approval_row(row: &Row) -> Result<ApprovalRecord, StateError> {
    let status: String = row.try_get(5).map_err(pg)?;
    let status = ApprovalStatus::parse(&status)
        .ok_or_else(|| StateError::Corrupt(format!("approval status `{status}` is unknown")))?;
    let requester: Requester = json_col(row, 3, "approval requester")?;
    Ok(ApprovalRecord {
        approval: Approval {
            id: id_at(row, 0)?,
            decision_id: id_at(row, 1)?,
            request_sha256: row.try_get(2).map_err(pg)?,
            requester,
            status,
            created_at: time_col(row, 6, "approval created_at")?,
            expires_at: time_col(row, 7, "approval expires_at")?,
            resolved_at: opt_time_col(row, 8, "approval resolved_at")?,
            resolved_by: row.try_get(9).map_err(pg)?,
            reason: row.try_get(10).map_err(pg)?,
            released_by: opt_id_at(row, 11)?,
        },
        task_id: row.try_get(4).map_err(pg)?,
        summary: json_col(row, 12, "approval summary")?,
        receipt: json_col(row, 13, "approval receipt")?,
    })
}

/// An id as stored, parsed as the id it is; one that does not parse is
/// corrupt.
fn id_at<T>(row: &Row, idx: usize) -> Result<T, StateError>
where
    T: TryFrom<String, Error = IdError>,
{
    T::try_from(row.try_get::<_, String>(idx).map_err(pg)?)
        .map_err(|e| StateError::Corrupt(format!("stored {e}")))
}

/// An id column that may be `NULL`, parsed as [`id_at`] parses one.
fn opt_id_at<T>(row: &Row, idx: usize) -> Result<Option<T>, StateError>
where
    T: TryFrom<String, Error = IdError>,
{
    row.try_get::<_, Option<String>>(idx)
        .map_err(pg)?
        .map(|text| T::try_from(text).map_err(|e| StateError::Corrupt(format!("stored {e}"))))
        .transpose()
}

fn time_col(row: &Row, idx: usize, what: &str) -> Result<DateTime<Utc>, StateError> {
    parse_time(&row.try_get::<_, String>(idx).map_err(pg)?, what)
}

fn opt_time_col(row: &Row, idx: usize, what: &str) -> Result<Option<DateTime<Utc>>, StateError> {
    row.try_get::<_, Option<String>>(idx)
        .map_err(pg)?
        .map(|t| parse_time(&t, what))
        .transpose()
}

fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row,
    idx: usize,
    what: &str,
) -> Result<T, StateError> {
    parse(&row.try_get::<_, String>(idx).map_err(pg)?, what)
}

fn small(row: &Row, idx: usize, what: &str) -> Result<u32, StateError> {
    let n: i64 = row.try_get(idx).map_err(pg)?;
    u32::try_from(n).map_err(|_| StateError::Corrupt(format!("stored {what} {n} is out of range")))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StateError> {
    serde_json::from_str(text)
        .map_err(|e| StateError::Corrupt(format!("stored {what} `{text}` are not valid: {e}")))
}

fn position(seq: i64) -> Result<u64, StateError> {
    u64::try_from(seq).map_err(|_| StateError::Corrupt(format!("history seq {seq} is negative")))
}

fn pg(e: tokio_postgres::Error) -> StateError {
    StateError::Postgres(e)
}

/// A unique key taken (by another instance between our check and our
/// insert) is a conflict, like one the check found.
fn unique_is_conflict(e: tokio_postgres::Error, what: impl FnOnce() -> String) -> StateError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StateError::Conflict(what())
    } else {
        pg(e)
    }
}
