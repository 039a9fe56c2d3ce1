//! Moving a single-process deployment onto PostgreSQL: every row of
//! `state.db` and `ledger.db`, as stored, into an empty Mandate database.
//!
//! Rows are copied, not re-created: receipts keep their index, body,
//! signature and leaf hash, checkpoints their signed notes, history and
//! credentials their sequence numbers (a decision's position in its
//! session). So the log on PostgreSQL is the same log: it verifies against
//! checkpoints signed before the move, and the instance that opens it
//! checks the newest one against the copied leaves, as any start does.
//!
//! Everything goes in one transaction: the database ends up with all of it
//! or none of it.

use std::path::Path;

use deadpool_postgres::{GenericClient, Transaction};
use rusqlite::{Connection, OpenFlags, Row};
use tokio_postgres::types::ToSql;

use super::log::{INSERT_JOURNAL, JournalRow, insert_journal_rows};
use crate::{LedgerError, StateError, TaskStore};

/// What an import copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    /// Receipts (the log's size).
    pub receipts: u64,
    /// Signed checkpoints.
    pub checkpoints: u64,
    /// Tasks.
    pub tasks: u64,
    /// Approvals.
    pub approvals: u64,
    /// Decision journal entries.
    pub journaled: u64,
}

/// Why an import did not happen; nothing was written to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The state database could not be opened or read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The ledger could not be opened or read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// PostgreSQL refused a write.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The target holds Mandate data already.
    #[error(
        "the PostgreSQL database holds {0} already: import only into an empty Mandate database"
    )]
    NotEmpty(String),
}

/// A table copied from SQLite: its columns, in the same order on both
/// sides, and how to read each as a PostgreSQL value.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// `ORDER BY` on the SQLite side (inserts in that order).
    order: &'static str,
    /// An identity column whose values are copied (and whose sequence is
    /// moved past them).
    identity: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
}

use Kind::{Int, OptText, Text};

/// The state tables, parents before children (foreign keys).
const STATE_TABLES: &[Table] = &[
    Table {
        name: "tasks",
        columns: &[
            ("id", Text),
            ("agent", Text),
            ("on_behalf_of", OptText),
            ("intent", Text),
            ("tools", Text),
            ("labels", Text),
            ("params", Text),
            ("audience", Text),
            ("max_depth", Int),
            ("created_at", Text),
            ("expires_at", Text),
            ("ended_at", OptText),
            ("end_reason", OptText),
            ("root_revocation_id", Text),
        ],
        order: "created_at, id",
        identity: None,
    },
    Table {
        name: "credentials",
        columns: &[
            ("seq", Int),
            ("revocation_id", Text),
            ("task_id", Text),
            ("parent_revocation_id", OptText),
            ("agent", Text),
            ("depth", Int),
            ("tools", Text),
            ("labels", Text),
            ("issued_at", Text),
            ("expires_at", Text),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "revocations",
        columns: &[
            ("seq", Int),
            ("revocation_id", Text),
            ("task_id", Text),
            ("revoked_at", Text),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "history",
        columns: &[
            ("seq", Int),
            ("decision_id", Text),
            ("task_id", Text),
            ("agent", Text),
            ("server", Text),
            ("tool", Text),
            ("decision", Text),
            ("decided_at", Text),
            ("result_status", OptText),
            ("result_labels", OptText),
            ("result_at", OptText),
            ("annotations", OptText),
            ("credential", OptText),
        ],
        order: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "sessions",
        columns: &[("task_id", Text), ("summary", Text)],
        order: "task_id",
        identity: None,
    },
    Table {
        name: "agent_sessions",
        columns: &[
            ("agent", Text),
            ("session", Text),
            ("summary", Text),
            ("started_at", Text),
            ("updated_at", Text),
        ],
        order: "agent, session",
        identity: None,
    },
    Table {
        name: "approvals",
        columns: &[
            ("id", Text),
            ("decision_id", Text),
            ("request_sha256", Text),
            ("requester", Text),
            ("agent", Text),
            ("task_id", OptText),
            ("status", Text),
            ("created_at", Text),
            ("expires_at", Text),
            ("resolved_at", OptText),
            ("resolved_by", OptText),
            ("reason", OptText),
            ("released_by", OptText),
            ("summary", Text),
            ("receipt", Text),
        ],
        order: "created_at, id",
        identity: None,
    },
    Table {
        name: "token_exchanges",
        columns: &[
            ("decision_id", Text),
            ("task_id", Text),
            ("credential", Text),
            ("resource", Text),
            ("token_id", Text),
            ("scope", Text),
            ("exchanged_at", Text),
            ("expires_at", Text),
        ],
        order: "rowid",
        identity: None,
    },
];

/// Rows copied per statement.
const CHUNK: usize = 1000;

/// Copies `state_db` and `ledger_db` into the empty Mandate database `tx`
/// is a transaction on (migrated to the current schema), inside that
/// transaction. `progress` is called with the receipts copied so far.
///
/// The state database is brought to the current SQLite schema first (as
/// `mandate serve` would on start); the ledger must be of the schema this
/// build reads.
pub(crate) async fn import(
    tx: &Transaction<'_>,
    state_db: &Path,
    ledger_db: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Imported, ImportError> {
    for (table, what) in [
        ("receipts", "receipts"),
        ("tasks", "tasks"),
        ("approvals", "approvals"),
    ] {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if n > 0 {
            return Err(ImportError::NotEmpty(format!("{n} {what}")));
        }
    }

    // Opening migrates an older state database to the current schema.
    drop(TaskStore::open(state_db)?);
    let state = read_only(state_db).map_err(StateError::Sqlite)?;
    let ledger = crate::LedgerReader::open(ledger_db)?;
    drop(ledger);
    let log = read_only(ledger_db).map_err(LedgerError::Sqlite)?;

    let mut imported = Imported::default();
    for table in STATE_TABLES {
        let copied = copy_table(tx, &state, table).await.map_err(|e| match e {
            Copy::Sqlite(e) => ImportError::State(StateError::Sqlite(e)),
            Copy::Postgres(e) => ImportError::Postgres(e),
        })?;
        match table.name {
            "tasks" => imported.tasks = copied,
            "approvals" => imported.approvals = copied,
            _ => {}
        }
    }

    // The log: its key and origin, every receipt, every checkpoint, its head.
    for key in ["origin", "verifier_key"] {
        let value: Option<String> = log
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = ?1",
                [key],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(LedgerError::Sqlite)?;
        if let Some(value) = value {
            tx.execute(
                "INSERT INTO mandate_meta (key, value) VALUES ($1, $2)",
                &[&key, &value],
            )
            .await?;
        }
    }
    let mut after: i64 = -1;
    loop {
        let rows = read_receipts(&log, after).map_err(LedgerError::Sqlite)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.idx;
        insert_receipts(tx, &rows).await?;
        imported.receipts += rows.len() as u64;
        progress(imported.receipts);
    }
    // The decision journal, as kept (a ledger of schema 1 has none).
    let reader = crate::LedgerReader::open(ledger_db)?;
    let mut journal_bytes: u64 = 0;
    let mut from = 0;
    while from < imported.receipts {
        let mut chunk = Vec::new();
        reader.journal(
            &crate::JournalQuery {
                from_index: Some(from),
                to_index: Some(from + CHUNK as u64 - 1),
                ..crate::JournalQuery::default()
            },
            |entry| {
                chunk.push(entry);
                Ok(())
            },
        )?;
        let rows: Vec<JournalRow<'_>> = chunk
            .iter()
            .map(|j| JournalRow {
                index: j.index,
                time: &j.time,
                task_id: j.task_id.as_deref(),
                tool: j.tool.clone(),
                decision_id: &j.decision_id,
                entry: &j.entry,
            })
            .collect();
        let insert = tx.prepare_cached(INSERT_JOURNAL).await?;
        insert_journal_rows(tx, &insert, &rows).await?;
        journal_bytes += chunk.iter().map(|j| j.entry.stored_bytes()).sum::<u64>();
        imported.journaled += chunk.len() as u64;
        from += CHUNK as u64;
    }
    tx.execute(
        "UPDATE log_head SET size = $1, journal_bytes = $2",
        &[
            &i64::try_from(imported.receipts).unwrap_or(i64::MAX),
            &i64::try_from(journal_bytes).unwrap_or(i64::MAX),
        ],
    )
    .await?;
    let checkpoints = {
        let mut stmt = log
            .prepare("SELECT size, root, note, created_at FROM checkpoints ORDER BY size")
            .map_err(LedgerError::Sqlite)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(LedgerError::Sqlite)?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(LedgerError::Sqlite)?
    };
    for (size, root, note, created_at) in &checkpoints {
        tx.execute(
            "INSERT INTO checkpoints (size, root, note, created_at)
             VALUES ($1, $2, $3, $4::text::timestamptz)",
            &[size, root, note, created_at],
        )
        .await?;
    }
    imported.checkpoints = checkpoints.len() as u64;
    Ok(imported)
}

fn read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

enum Copy {
    Sqlite(rusqlite::Error),
    Postgres(tokio_postgres::Error),
}

/// Copies `table` in chunks; returns how many rows.
async fn copy_table(tx: &Transaction<'_>, from: &Connection, table: &Table) -> Result<u64, Copy> {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let list = names.join(", ");
    let rows: Vec<Vec<Value>> = {
        let mut stmt = from
            .prepare(&format!(
                "SELECT {list} FROM {} ORDER BY {}",
                table.name, table.order
            ))
            .map_err(Copy::Sqlite)?;
        let rows = stmt
            .query_map([], |row| read_row(row, table.columns))
            .map_err(Copy::Sqlite)?;
        rows.collect::<Result<_, _>>().map_err(Copy::Sqlite)?
    };
    let overriding = if table.identity.is_some() {
        "OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    for chunk in rows.chunks(CHUNK) {
        let width = names.len();
        let mut placeholders = Vec::with_capacity(chunk.len());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * width);
        for (r, row) in chunk.iter().enumerate() {
            let cells: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            placeholders.push(format!("({})", cells.join(", ")));
            for value in row {
                params.push(value.as_sql());
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {} ({list}) {overriding} VALUES {}",
                table.name,
                placeholders.join(", ")
            ),
            &params,
        )
        .await
        .map_err(Copy::Postgres)?;
    }
    if let Some(identity) = table.identity {
        // Later rows continue after the copied ones.
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{0}', '{identity}'),
                               coalesce((SELECT max({identity}) FROM {0}), 0) + 1, false)",
                table.name
            ),
            &[],
        )
        .await
        .map_err(Copy::Postgres)?;
    }
    Ok(rows.len() as u64)
}

/// One cell, typed for PostgreSQL.
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(v) => v,
            Value::OptText(v) => v,
            Value::Int(v) => v,
        }
    }
}

fn read_row(row: &Row<'_>, columns: &[(&str, Kind)]) -> rusqlite::Result<Vec<Value>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Text => Value::Text(row.get(i)?),
                OptText => Value::OptText(row.get(i)?),
                Int => Value::Int(row.get(i)?),
            })
        })
        .collect()
}

/// A receipt row as stored in `ledger.db`.
struct ReceiptRow {
    idx: i64,
    decision_id: String,
    leaf_hash: Vec<u8>,
    body: String,
    signature: Vec<u8>,
    time: String,
    principal: String,
    task_id: Option<String>,
    tool: String,
    decision: String,
    kind: String,
}

/// The next receipts after index `after`, at most [`CHUNK`].
fn read_receipts(log: &Connection, after: i64) -> rusqlite::Result<Vec<ReceiptRow>> {
    let mut stmt = log.prepare_cached(
        "SELECT idx, decision_id, leaf_hash, body, signature, time, principal, task_id, tool,
                decision, coalesce(json_extract(body, '$.kind'), 'decision')
         FROM receipts WHERE idx > ?1 ORDER BY idx LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![after, i64::try_from(CHUNK).unwrap_or(i64::MAX)],
        |row| {
            Ok(ReceiptRow {
                idx: row.get(0)?,
                decision_id: row.get(1)?,
                leaf_hash: row.get(2)?,
                body: row.get(3)?,
                signature: row.get(4)?,
                time: row.get(5)?,
                principal: row.get(6)?,
                task_id: row.get(7)?,
                tool: row.get(8)?,
                decision: row.get(9)?,
                kind: row.get(10)?,
            })
        },
    )?;
    rows.collect()
}

async fn insert_receipts(
    tx: &impl GenericClient,
    rows: &[ReceiptRow],
) -> Result<(), tokio_postgres::Error> {
    let idx: Vec<i64> = rows.iter().map(|r| r.idx).collect();
    let decision_id: Vec<&str> = rows.iter().map(|r| r.decision_id.as_str()).collect();
    let leaf: Vec<&[u8]> = rows.iter().map(|r| r.leaf_hash.as_slice()).collect();
    let body: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let signature: Vec<&[u8]> = rows.iter().map(|r| r.signature.as_slice()).collect();
    let time: Vec<&str> = rows.iter().map(|r| r.time.as_str()).collect();
    let principal: Vec<&str> = rows.iter().map(|r| r.principal.as_str()).collect();
    let task: Vec<Option<&str>> = rows.iter().map(|r| r.task_id.as_deref()).collect();
    let tool: Vec<&str> = rows.iter().map(|r| r.tool.as_str()).collect();
    let decision: Vec<&str> = rows.iter().map(|r| r.decision.as_str()).collect();
    let kind: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    tx.execute(
        "INSERT INTO receipts (idx, decision_id, leaf_hash, body, signature, time, principal, task_id, tool, decision, kind)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])",
        &[
            &idx, &decision_id, &leaf, &body, &signature, &time, &principal, &task, &tool,
            &decision, &kind,
        ],
    )
    .await?;
    Ok(())
}
