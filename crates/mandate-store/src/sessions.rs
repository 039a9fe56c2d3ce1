//! Each task's session, condensed ([`SessionSummary`]) and kept up to date
//! with its history.
//!
//! A decision under a task credential is made on the task's session: how
//! often each tool was used, the action classes used, the labels that came
//! in. Replaying the task's history for that would make every decision
//! slower than the one before it, so the summary is folded forward in the
//! same transaction that records a decision or a result, and a decision
//! reads one row. The history stays the record of what happened; a summary
//! can always be rebuilt from it (schema 5 does, for tasks recorded
//! before it).

use chrono::{DateTime, Utc};
use mandate_core::provenance::Grounds;
use mandate_core::{Decision, SessionId, SessionSummary, TaskId, ToolAnnotations};
use rusqlite::{Connection, OptionalExtension, params};

use crate::StateError;
use crate::tasks::{
    CallResult, HistoryEntry, TaskStore, decision_of, json_text, query_all, time_text,
};

/// A decision made in an agent's session, to record into it.
#[derive(Debug, Clone)]
pub struct SessionDecision {
    /// The agent (`principal.id`).
    pub agent: String,
    /// The session's id.
    pub session: SessionId,
    /// The tool's server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// What was decided.
    pub decision: Decision,
    /// The annotations the call was decided with (`None`: unknown).
    pub annotations: Option<ToolAnnotations>,
    /// When.
    pub decided_at: DateTime<Utc>,
}

impl TaskStore {
    /// Task `task_id`'s session, condensed: empty for a task without
    /// history (or an unknown task).
    pub fn session(&self, task_id: &TaskId) -> Result<SessionSummary, StateError> {
        self.read(|conn| load(conn, task_id.as_str()))
    }

    /// Agent `agent`'s session `session`, condensed: empty for a session
    /// nothing was decided in yet.
    pub fn agent_session(
        &self,
        agent: &str,
        session: &SessionId,
    ) -> Result<SessionSummary, StateError> {
        self.read(|conn| load_agent(conn, agent, session.as_str()))
    }

    /// Records a decision into its agent's session (creating the session),
    /// committed durably before it returns: an allowed call of an open-world
    /// tool taints the session here ([`SessionSummary::record_decision`]).
    /// The summary is folded in the writer's transaction, so decisions of
    /// the session made concurrently (by several gateways) all count.
    pub fn record_session_decision(&self, decided: SessionDecision) -> Result<(), StateError> {
        self.write(session_decision_write(decided)?)
    }
}

/// The write [`TaskStore::record_session_decision`] runs.
pub(crate) fn session_decision_write(
    decided: SessionDecision,
) -> Result<impl FnOnce(&Connection) -> Result<(), StateError> + Send + 'static, StateError> {
    let at = time_text(&decided.decided_at)?;
    Ok(move |conn: &Connection| {
        let session = decided.session.as_str();
        let mut summary = load_agent(conn, &decided.agent, session)?;
        let position = summary.calls.saturating_add(1);
        summary.record_decision(
            position,
            &decided.server,
            &decided.tool,
            decided.decision,
            decided.annotations.as_ref(),
        );
        let text = json_text(&summary, "session summary")?;
        conn.prepare_cached(
            "INSERT INTO agent_sessions (agent, session, summary, started_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (agent, session)
             DO UPDATE SET summary = excluded.summary, updated_at = excluded.updated_at",
        )?
        .execute(params![decided.agent, session, text, at])?;
        Ok(())
    })
}

fn load_agent(conn: &Connection, agent: &str, session: &str) -> Result<SessionSummary, StateError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT summary FROM agent_sessions WHERE agent = ?1 AND session = ?2")?
        .query_row(params![agent, session], |row| row.get(0))
        .optional()?;
    text.map_or_else(
        || Ok(SessionSummary::default()),
        |text| parse(&text, "session summary"),
    )
}

/// Folds the decision just recorded as history row `seq` (and its result,
/// if it came with one) into its task's summary, in the caller's
/// transaction.
pub(crate) fn fold_decision(
    conn: &Connection,
    seq: i64,
    entry: &HistoryEntry,
) -> Result<(), StateError> {
    let annotations = entry
        .annotations
        .as_ref()
        .map(|map| {
            serde_json::from_value::<ToolAnnotations>(serde_json::Value::Object(map.clone()))
                .map_err(|e| StateError::Invalid(format!("annotations: {e}")))
        })
        .transpose()?;
    let position = position(seq)?;
    let mut summary = load(conn, entry.task_id.as_str())?;
    summary.record_decision(
        position,
        &entry.server,
        &entry.tool,
        entry.decision,
        annotations.as_ref(),
    );
    if let Some(result) = &entry.result {
        summary.record_labels(position, result.labels.iter().cloned());
    }
    store(conn, entry.task_id.as_str(), &summary)
}

/// Folds the labels and grounds of the result reported for history row
/// `seq` into task `task_id`'s summary, in the caller's transaction.
pub(crate) fn fold_result(
    conn: &Connection,
    task_id: &str,
    seq: i64,
    result: &CallResult,
) -> Result<(), StateError> {
    if result.labels.is_empty() && result.grounds.is_empty() {
        return Ok(());
    }
    let mut summary = load(conn, task_id)?;
    summary.record_labels(position(seq)?, result.labels.iter().cloned());
    summary.grounds.merge(result.grounds.clone());
    store(conn, task_id, &summary)
}

/// Adds `grounds` to task `task_id`'s summary, in the caller's transaction.
pub(crate) fn ground(
    conn: &Connection,
    task_id: &str,
    grounds: &Grounds,
) -> Result<(), StateError> {
    if grounds.is_empty() {
        return Ok(());
    }
    let mut summary = load(conn, task_id)?;
    summary.grounds.merge(grounds.clone());
    store(conn, task_id, &summary)
}

/// Folds the summary of every task that has history but no summary yet,
/// in the caller's transaction: schema 5's migration (`state_schema.rs`)
/// runs it to summarize the tasks recorded before it. Idempotent.
pub(crate) fn fold_missing(conn: &Connection) -> Result<(), StateError> {
    let rows = query_all(
        conn,
        "SELECT h.task_id, h.seq, h.server, h.tool, h.decision, h.annotations, h.result_labels
         FROM history h LEFT JOIN sessions s ON s.task_id = h.task_id
         WHERE s.task_id IS NULL ORDER BY h.task_id, h.seq",
        [],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        },
    )?;
    let mut current: Option<(String, SessionSummary)> = None;
    for (task_id, seq, server, tool, decision, annotations, labels) in rows {
        if current.as_ref().is_none_or(|(id, _)| *id != task_id) {
            if let Some((id, summary)) = current.take() {
                store(conn, &id, &summary)?;
            }
            current = Some((task_id.clone(), SessionSummary::default()));
        }
        let Some((_, summary)) = current.as_mut() else {
            continue;
        };
        let annotations = annotations
            .map(|text| parse::<ToolAnnotations>(&text, "annotations"))
            .transpose()?;
        let position = position(seq)?;
        summary.record_decision(
            position,
            &server,
            &tool,
            decision_of(&decision)?,
            annotations.as_ref(),
        );
        if let Some(labels) = labels {
            summary.record_labels(position, parse::<Vec<String>>(&labels, "result labels")?);
        }
    }
    if let Some((id, summary)) = current {
        store(conn, &id, &summary)?;
    }
    Ok(())
}

fn load(conn: &Connection, task_id: &str) -> Result<SessionSummary, StateError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT summary FROM sessions WHERE task_id = ?1")?
        .query_row(params![task_id], |row| row.get(0))
        .optional()?;
    text.map_or_else(
        || Ok(SessionSummary::default()),
        |text| parse(&text, "session summary"),
    )
}

fn store(conn: &Connection, task_id: &str, summary: &SessionSummary) -> Result<(), StateError> {
    let text = json_text(summary, "session summary")?;
    conn.prepare_cached(
        "INSERT INTO sessions (task_id, summary) VALUES (?1, ?2)
         ON CONFLICT (task_id) DO UPDATE SET summary = excluded.summary",
    )?
    .execute(params![task_id, text])?;
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StateError> {
    serde_json::from_str(text)
        .map_err(|e| StateError::Corrupt(format!("stored {what} `{text}` are not valid: {e}")))
}

fn position(seq: i64) -> Result<u64, StateError> {
    u64::try_from(seq).map_err(|_| StateError::Corrupt(format!("history seq {seq} is negative")))
}
