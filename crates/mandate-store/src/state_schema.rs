//! The state database's schema (`state.db`): its version, the tables of
//! the current version, and every migration from older versions, in order.
//!
//! Every table of the state database is defined here, whichever module
//! queries it ([`tasks`](crate::tasks), [`approvals`](crate::approvals),
//! `exchanges.rs`, [`sessions`](crate::sessions)), so a schema change is
//! made in one file: the version, a `migrate_to_N` step, and its calls in
//! [`ensure_current`]. The ledger's schema is apart, in `ledger_schema.rs`:
//! the two are separate files with versions of their own.
//!
//! A new database gets the current tables at once; an older one is brought
//! up step by step in one transaction, so it is either migrated entirely
//! or left as it was.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::StateError;
use crate::approvals::COLUMNS as APPROVAL_COLUMNS;
use crate::tasks::query_all;

/// `PRAGMA application_id` of a state database ("MNDS"). A database without
/// it (for example the receipt ledger) is refused, not written to.
const APPLICATION_ID: i32 = 0x4d4e_4453;

/// Schema version stored in `PRAGMA user_version`. Version 1 had no
/// `history.annotations`, version 2 no `approvals`, version 3 no
/// `history.credential` and `token_exchanges`, version 4 no `sessions`,
/// version 5 no `withdrawn` approvals, version 6 no `agent_sessions`,
/// version 7 no index of pending approvals by request; [`ensure_current`]
/// adds them.
const SCHEMA_VERSION: i64 = 8;

/// Tasks, credentials, revocations and history, as a new database gets
/// them (with schema 2's `history.annotations`; schema 4's
/// `history.credential` is added by [`migrate_to_4`], as in an older one).
const CREATE_TASKS: &str = "
-- One row per task. tools, labels: JSON arrays; params: JSON object.
-- ended_at and end_reason are set together, once.
CREATE TABLE tasks (
    id                 TEXT    PRIMARY KEY,
    agent              TEXT    NOT NULL,
    on_behalf_of       TEXT,
    intent             TEXT    NOT NULL,
    tools              TEXT    NOT NULL,
    labels             TEXT    NOT NULL,
    params             TEXT    NOT NULL,
    audience           TEXT    NOT NULL,
    max_depth          INTEGER NOT NULL,
    created_at         TEXT    NOT NULL,
    expires_at         TEXT    NOT NULL,
    ended_at           TEXT,
    end_reason         TEXT,
    root_revocation_id TEXT    NOT NULL UNIQUE,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) STRICT;

-- What end_expired scans: open tasks by expiry.
CREATE INDEX tasks_open_by_expiry ON tasks (expires_at) WHERE ended_at IS NULL;

-- One row per credential issued, in issue order (seq). revocation_id is the
-- hex id of the credential's last block; the root credential has no parent.
CREATE TABLE credentials (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    revocation_id        TEXT    NOT NULL UNIQUE,
    task_id              TEXT    NOT NULL REFERENCES tasks (id),
    parent_revocation_id TEXT    REFERENCES credentials (revocation_id),
    agent                TEXT    NOT NULL,
    depth                INTEGER NOT NULL,
    tools                TEXT    NOT NULL,
    labels               TEXT    NOT NULL,
    issued_at            TEXT    NOT NULL,
    expires_at           TEXT    NOT NULL
) STRICT;

CREATE INDEX credentials_by_task ON credentials (task_id, seq);

-- Revoked credentials, in the order they were revoked.
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    revocation_id TEXT    NOT NULL UNIQUE REFERENCES credentials (revocation_id),
    task_id       TEXT    NOT NULL REFERENCES tasks (id),
    revoked_at    TEXT    NOT NULL
) STRICT;

-- Each task's decisions in the order they were recorded (seq), with the
-- call's result once reported (result_labels: JSON array). annotations: the
-- MCP tool annotations the call was decided with (JSON object), if known.
CREATE TABLE history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id   TEXT    NOT NULL UNIQUE,
    task_id       TEXT    NOT NULL REFERENCES tasks (id),
    agent         TEXT    NOT NULL,
    server        TEXT    NOT NULL,
    tool          TEXT    NOT NULL,
    decision      TEXT    NOT NULL,
    decided_at    TEXT    NOT NULL,
    result_status TEXT,
    result_labels TEXT,
    result_at     TEXT,
    annotations   TEXT,
    CHECK ((result_status IS NULL) = (result_at IS NULL)),
    CHECK ((result_status IS NULL) = (result_labels IS NULL))
) STRICT;

CREATE INDEX history_by_task ON history (task_id, seq);
";

/// The approvals table (schema 3; schema 6 added `withdrawn`).
const CREATE_APPROVALS: &str = "
-- One row per approval. requester: JSON (agent, chain, on_behalf_of);
-- summary: what an approver is shown (JSON); receipt: the receipt of the
-- request that asked, the template of the resolution's receipt (JSON).
CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,
    decision_id    TEXT NOT NULL UNIQUE,
    request_sha256 TEXT NOT NULL,
    requester      TEXT NOT NULL,
    agent          TEXT NOT NULL,
    task_id        TEXT,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used', 'withdrawn')),
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    resolved_at    TEXT,
    resolved_by    TEXT,
    reason         TEXT,
    released_by    TEXT,
    summary        TEXT NOT NULL,
    receipt        TEXT NOT NULL
) STRICT;

-- What the expiry sweep scans, and the queue; those that count against an
-- agent's limit (pending, or withdrawn before their expiry).
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_open_by_agent ON approvals (agent, expires_at)
    WHERE status IN ('pending', 'withdrawn');
CREATE INDEX approvals_by_time ON approvals (created_at);
";

/// Schema 4: the credential of each decision (`history.credential`, added
/// by [`migrate_to_4`]: the hex revocation id of its last block, `NULL` for
/// decisions recorded before schema 4), and the exchanges.
const CREATE_EXCHANGES: &str = "
-- One row per decision exchanged for a downstream token (RFC 8693): a
-- decision is exchanged at most once. scope: JSON array of tools.
CREATE TABLE IF NOT EXISTS token_exchanges (
    decision_id  TEXT PRIMARY KEY REFERENCES history (decision_id),
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    credential   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    token_id     TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL,
    exchanged_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) STRICT;
";

/// Schema 5: one summary per task that has history. A task without a row
/// has an empty session.
const CREATE_SESSIONS: &str = "
-- Each task's session condensed (mandate_core::SessionSummary as JSON),
-- folded forward with every history row and result; positions are
-- history.seq.
CREATE TABLE IF NOT EXISTS sessions (
    task_id TEXT PRIMARY KEY REFERENCES tasks (id),
    summary TEXT NOT NULL
) STRICT;
";

/// Schema 7: the sessions Mandate keeps for agents that decide without a
/// task credential, by agent and session id.
const CREATE_AGENT_SESSIONS: &str = "
-- An agent's named session (context.session.id), condensed
-- (mandate_core::SessionSummary as JSON). Positions are summary.calls.
CREATE TABLE IF NOT EXISTS agent_sessions (
    agent      TEXT NOT NULL,
    session    TEXT NOT NULL,
    summary    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agent, session)
) STRICT;
";

/// Brings the state database on `conn` to [`SCHEMA_VERSION`]: creates the
/// schema in an empty database, migrates an older one, and leaves a current
/// one as it is. `path` is only named in errors.
///
/// A database that is not a state database (another `application_id`), or
/// of a newer schema, is refused with [`StateError::Unsupported`] and left
/// untouched.
pub(crate) fn ensure_current(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    // Immediate: two processes opening a new file do not both create it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application_id: i32 = tx.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let objects: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))?;
    if application_id == 0 && objects == 0 {
        tx.execute_batch(CREATE_TASKS)?;
        tx.execute_batch(CREATE_APPROVALS)?;
        migrate_to_4(&tx)?;
        migrate_to_5(&tx)?;
        migrate_to_7(&tx)?;
        migrate_to_8(&tx)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    } else if application_id != APPLICATION_ID {
        return Err(StateError::Unsupported(format!(
            "{} is not a Mandate state database (tasks live in state.db, receipts in ledger.db)",
            path.display()
        )));
    } else if (1..=7).contains(&version) {
        // Steps 2 and 3 fail if run twice and step 5 reads all history, so
        // they run only from below their version; steps 4, 6, 7 and 8 check
        // what exists, so they run from any older version.
        if version == 1 {
            migrate_to_2(&tx)?;
        }
        if version <= 2 {
            migrate_to_3(&tx)?;
        }
        migrate_to_4(&tx)?;
        if version <= 4 {
            migrate_to_5(&tx)?;
        }
        migrate_to_6(&tx)?;
        migrate_to_7(&tx)?;
        migrate_to_8(&tx)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    } else if version != SCHEMA_VERSION {
        return Err(StateError::Unsupported(format!(
            "the state database {} has schema {version}; this build knows schema {SCHEMA_VERSION}",
            path.display()
        )));
    }
    tx.commit()?;
    Ok(())
}

/// Schema 2: the annotations of history entries. Schema 1's entries keep
/// none (unknown), as they were recorded without them.
fn migrate_to_2(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch("ALTER TABLE history ADD COLUMN annotations TEXT;")?;
    Ok(())
}

/// Schema 3: creates the approvals table in a schema-2 database.
fn migrate_to_3(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch(CREATE_APPROVALS)?;
    Ok(())
}

/// Adds schema 4 (the credential of each decision, and token exchanges;
/// schema 3 had neither) to a schema 3 database (new or migrated), in the
/// caller's transaction. Idempotent: what exists already is kept.
fn migrate_to_4(conn: &Connection) -> Result<(), StateError> {
    let has_credential = !query_all(
        conn,
        "SELECT 1 FROM pragma_table_info('history') WHERE name = 'credential'",
        [],
        |_| Ok(()),
    )?
    .is_empty();
    if !has_credential {
        conn.execute_batch("ALTER TABLE history ADD COLUMN credential TEXT;")?;
    }
    conn.execute_batch(CREATE_EXCHANGES)?;
    Ok(())
}

/// Adds schema 5 to a schema 4 database (new or migrated), in the caller's
/// transaction: the table, and the summary of every task with history,
/// folded from it (schema 4 had no session summaries). Idempotent.
fn migrate_to_5(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch(CREATE_SESSIONS)?;
    // The fold lives beside the one run on every decision, so a migrated
    // summary is computed exactly as a live one.
    crate::sessions::fold_missing(conn)
}

/// Schema 6: `withdrawn` joins the statuses an approval may have (schema
/// 5's approvals could not be withdrawn). SQLite cannot change a CHECK
/// constraint in place, so the table is rebuilt (within the caller's
/// transaction) and its rows copied as they are.
fn migrate_to_6(conn: &Connection) -> Result<(), StateError> {
    let check: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'approvals'",
        [],
        |row| row.get(0),
    )?;
    if check.contains("'withdrawn'") {
        return Ok(()); // created by this schema already
    }
    conn.execute_batch(&format!(
        "ALTER TABLE approvals RENAME TO approvals_5;
         DROP INDEX approvals_pending;
         DROP INDEX approvals_pending_by_agent;
         DROP INDEX approvals_by_time;
         {CREATE_APPROVALS}
         INSERT INTO approvals ({APPROVAL_COLUMNS}, agent) SELECT {APPROVAL_COLUMNS}, agent FROM approvals_5;
         DROP TABLE approvals_5;"
    ))?;
    Ok(())
}

/// Schema 7, in the caller's transaction: the agents' sessions (schema 6
/// kept none; the MCP gateway did), then what a task's approvals are
/// counted by (calls under a task credential count against their task's
/// limit; schema 6 counted approvals by agent only). Idempotent.
fn migrate_to_7(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch(CREATE_AGENT_SESSIONS)?;
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS approvals_open_by_task ON approvals (task_id, expires_at)
             WHERE status IN ('pending', 'withdrawn');",
    )?;
    Ok(())
}

/// Schema 8, in the caller's transaction: the pending approvals by the
/// request they are bound to, which a repeat of the same request looks up
/// to wait on the approval already asked (schema 7 opened another).
/// Idempotent.
fn migrate_to_8(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS approvals_pending_by_request ON approvals (request_sha256)
             WHERE status = 'pending';",
    )?;
    Ok(())
}
