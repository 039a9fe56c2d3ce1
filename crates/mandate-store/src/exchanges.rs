//! Token exchanges: which decision was exchanged for a downstream token, by
//! which credential, for which resource; each decision at most once.
//!
//! A decision made under a task credential records the credential it was
//! made under (`history.credential`, the hex revocation id of the
//! credential's last block; `NULL` for decisions recorded before schema 4).
//! `POST /v1/token` checks that the decision named by an exchange was made
//! under the credential presented ([`TaskStore::decided_call`]), then records
//! the exchange ([`TaskStore::record_exchange`]): the `PRIMARY KEY` on the
//! decision id, checked in the same `BEGIN IMMEDIATE` transaction, is what
//! makes a decision usable once.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use mandate_core::{DecisionId, TaskId};

use crate::StateError;
use crate::tasks::{HistoryEntry, TaskStore, id_col, json_text, query_all, time_text};

/// One exchange of a decision for a downstream token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// The decision exchanged.
    pub decision_id: DecisionId,
    /// Its task.
    pub task_id: TaskId,
    /// The revocation id of the credential presented.
    pub credential: String,
    /// The downstream resource the token is for.
    pub resource: String,
    /// The token's `jti`.
    pub token_id: String,
    /// The tools in the token's scope.
    pub scope: Vec<String>,
    /// When the token was minted.
    pub exchanged_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

impl TaskStore {
    /// The history entry of decision `decision_id` with the revocation id of
    /// the credential it was made under (`None` if not recorded).
    pub fn decided_call(
        &self,
        decision_id: &DecisionId,
    ) -> Result<Option<(HistoryEntry, Option<String>)>, StateError> {
        let decision_id = decision_id.as_str();
        self.read(|conn| {
            let Some(entry) = crate::tasks::history_entry(conn, decision_id)? else {
                return Ok(None);
            };
            let credential: Option<String> = conn
                .prepare_cached("SELECT credential FROM history WHERE decision_id = ?1")?
                .query_row(params![decision_id], |row| row.get(0))?;
            Ok(Some((entry, credential)))
        })
    }

    /// Records the exchange of `record.decision_id`, once.
    ///
    /// [`StateError::DecisionNotFound`] if the decision is not in
    /// its task's history, [`StateError::TaskEnded`] if the task has ended
    /// (its credentials are revoked), [`StateError::Conflict`] if the
    /// decision was exchanged already. Durable before it returns.
    pub fn record_exchange(&self, record: &ExchangeRecord) -> Result<(), StateError> {
        let scope = json_text(&record.scope, "scope")?;
        let exchanged_at = time_text(&record.exchanged_at)?;
        let expires_at = time_text(&record.expires_at)?;
        let record = record.clone();
        self.write(move |conn| {
            let task = query_all(
                conn,
                "SELECT tasks.end_reason FROM history JOIN tasks ON tasks.id = history.task_id
                 WHERE history.decision_id = ?1 AND history.task_id = ?2",
                params![record.decision_id.as_str(), record.task_id.as_str()],
                |row| Ok(row.get::<_, Option<String>>(0)?),
            )?;
            let Some(end_reason) = task.into_iter().next() else {
                return Err(StateError::DecisionNotFound(record.decision_id.clone()));
            };
            if let Some(reason) = end_reason {
                return Err(StateError::TaskEnded {
                    task_id: record.task_id.clone(),
                    reason,
                });
            }
            let used = query_all(
                conn,
                "SELECT 1 FROM token_exchanges WHERE decision_id = ?1",
                params![record.decision_id.as_str()],
                |_| Ok(()),
            )?;
            if !used.is_empty() {
                return Err(StateError::Conflict(format!(
                    "decision `{}` was exchanged for a token already",
                    record.decision_id
                )));
            }
            conn.prepare_cached(
                "INSERT INTO token_exchanges (decision_id, task_id, credential, resource,
                     token_id, scope, exchanged_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                record.decision_id.as_str(),
                record.task_id.as_str(),
                record.credential,
                record.resource,
                record.token_id,
                scope,
                exchanged_at,
                expires_at,
            ])?;
            Ok(())
        })
    }

    /// Task `task_id`'s exchanges, in the order they were recorded.
    pub fn exchanges(&self, task_id: &TaskId) -> Result<Vec<ExchangeRecord>, StateError> {
        self.read(|conn| {
            query_all(
                conn,
                "SELECT decision_id, task_id, credential, resource, token_id, scope,
                     exchanged_at, expires_at
                 FROM token_exchanges WHERE task_id = ?1 ORDER BY rowid",
                params![task_id.as_str()],
                |row| {
                    let scope: String = row.get(5)?;
                    Ok(ExchangeRecord {
                        decision_id: id_col(row, 0)?,
                        task_id: id_col(row, 1)?,
                        credential: row.get(2)?,
                        resource: row.get(3)?,
                        token_id: row.get(4)?,
                        scope: serde_json::from_str(&scope).map_err(|e| {
                            StateError::Corrupt(format!("stored scope `{scope}` is not valid: {e}"))
                        })?,
                        exchanged_at: crate::tasks::time_col(row, 6, "exchanged_at")?,
                        expires_at: crate::tasks::time_col(row, 7, "expires_at")?,
                    })
                },
            )
        })
    }
}
