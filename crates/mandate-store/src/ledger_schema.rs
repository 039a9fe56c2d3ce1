//! The ledger's tables and connection settings (`ledger.db`); the state
//! database's schema is in `state_schema.rs`.

use rusqlite::Connection;

use crate::LedgerError;

/// Schema version stored in `PRAGMA user_version`: 1, the log; 2, the
/// decision journal beside it. A reader takes either (a ledger of schema 1
/// has no journal yet).
const SCHEMA_VERSION: i64 = 2;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per receipt; idx is the Merkle leaf index. The columns after
-- `signature` copy fields of the body so that receipts can be searched.
CREATE TABLE IF NOT EXISTS receipts (
    idx         INTEGER PRIMARY KEY,
    decision_id TEXT    NOT NULL UNIQUE,
    leaf_hash   BLOB    NOT NULL,
    body        TEXT    NOT NULL,
    signature   BLOB    NOT NULL,
    time        TEXT    NOT NULL,
    principal   TEXT    NOT NULL,
    task_id     TEXT,
    tool        TEXT    NOT NULL,
    decision    TEXT    NOT NULL
) STRICT;

-- The decision journal (journal.rs): one row per decision receipt, written
-- in the receipt's transaction, pruned by age and size without touching
-- `receipts`. The small columns come first, so that pruning, which reads
-- them oldest first, stays on the table's own pages.
CREATE TABLE IF NOT EXISTS journal (
    idx            INTEGER PRIMARY KEY,
    time           TEXT    NOT NULL,
    bytes          INTEGER NOT NULL,
    task_id        TEXT,
    tool           TEXT    NOT NULL,
    decision_id    TEXT    NOT NULL,
    decision       TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    policy_version TEXT    NOT NULL,
    policies       TEXT    NOT NULL,
    scope          TEXT,
    redacted       TEXT,
    request        TEXT    NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB    NOT NULL,
    note       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
) STRICT;
";

/// Settings for the writer connection: WAL, and a sync on every commit, so
/// that a committed receipt survives power loss, not only a process crash.
pub(crate) fn configure_writer(conn: &Connection) -> Result<(), LedgerError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Unsupported(format!(
            "the database refused WAL mode (journal_mode is `{mode}`)"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::Unsupported(format!(
            "the ledger was written by a newer Mandate (schema {version}, this build knows {SCHEMA_VERSION})"
        )));
    }
    conn.execute_batch(CREATE)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Settings for a reader connection.
pub(crate) fn configure_reader(conn: &Connection) -> Result<(), LedgerError> {
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(LedgerError::Unsupported(format!(
            "no Mandate ledger of schema 1 to {SCHEMA_VERSION} here (found schema {version})"
        )));
    }
    Ok(())
}

/// Whether the ledger has a decision journal (schema 2 and later).
pub(crate) fn has_journal(conn: &Connection) -> Result<bool, LedgerError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    Ok(version >= 2)
}
