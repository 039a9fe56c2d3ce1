//! What went wrong, one type per store: [`LedgerError`] for the receipt log
//! (`ledger.db`), [`StateError`] for the state database (`state.db`). A
//! caller matches the variants of the store it called, and a message says
//! which database failed without a caller relabelling it.

use std::path::PathBuf;

use mandate_core::{DecisionId, TaskId};

/// What went wrong in the receipt ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// SQLite reported an error.
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error.
    #[error("receipt log on PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database could not be reached: nothing was read or written.
    #[error("receipt log unavailable: {0}")]
    Unavailable(String),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// There is no ledger database at the path.
    #[error("no ledger at {0} (it is created by `mandate serve` in its data directory)")]
    Missing(PathBuf),
    /// The stored log contradicts itself; Mandate will not serve it.
    #[error("the ledger is corrupt: {0}")]
    Corrupt(String),
    /// The database is of a kind or version this build cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// The ledger was started with another signing key.
    #[error(
        "the ledger was signed with key `{stored}`, but the configured key is `{configured}`; a log has one key: configure the original key or use a new data directory"
    )]
    KeyMismatch {
        /// Verifier key recorded in the ledger.
        stored: String,
        /// Verifier key of the configured signing key.
        configured: String,
    },
    /// An earlier write failed; no receipt is accepted until restart, which
    /// recovers from what is on disk.
    #[error("the ledger stopped accepting receipts after a write failed: {0}; restart Mandate")]
    Failed(String),
    /// A tree size beyond the newest signed checkpoint was asked for.
    #[error(
        "tree size {asked} is beyond the newest signed checkpoint (size {signed}); GET /v1/checkpoint signs one covering every receipt"
    )]
    BeyondCheckpoint {
        /// Size asked for.
        asked: u64,
        /// Size of the newest checkpoint.
        signed: u64,
    },
    /// The log holds a receipt of this decision id already; this receipt
    /// was not appended (the others of its group were).
    #[error("the receipt log holds a receipt of decision `{0}` already")]
    Duplicate(String),
    /// The ledger was closed.
    #[error("the ledger is closed")]
    Closed,
    /// A receipt could not be encoded.
    #[error(transparent)]
    Receipt(#[from] mandate_ledger::ReceiptError),
    /// A checkpoint could not be signed or opened.
    #[error(transparent)]
    Checkpoint(#[from] mandate_ledger::CheckpointError),
    /// A proof could not be made.
    #[error(transparent)]
    Proof(#[from] mandate_ledger::ProofError),
}

/// What went wrong in the state database (tasks, credentials, revocations,
/// history, sessions, approvals, exchanges).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The database reported an error.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error.
    #[error("state database on PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// What is stored cannot be read back as the record it should be.
    #[error("the state database is corrupt: {0}")]
    Corrupt(String),
    /// The database is of a kind or version this build cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// No task of this id is recorded.
    #[error("no task `{0}`")]
    TaskNotFound(TaskId),
    /// No decision of this id is recorded (in the task's history).
    #[error("no decision `{0}`")]
    DecisionNotFound(DecisionId),
    /// The write contradicts what is recorded: the id exists already, or a
    /// result was reported twice.
    #[error("{0}")]
    Conflict(String),
    /// The task has ended: nothing more is issued under it.
    #[error("task `{task_id}` has ended ({reason}): nothing more is issued under it")]
    TaskEnded {
        /// The task's id.
        task_id: TaskId,
        /// Why it ended (`ended`, `expired`, …).
        reason: String,
    },
    /// The record to write is inconsistent (a credential whose parent is not
    /// in its task, a depth that does not follow its parent, …).
    #[error("invalid record: {0}")]
    Invalid(String),
    /// A write was not committed (the disk failed, or the writer stopped):
    /// nothing of it is stored.
    #[error("state database: the write was not committed: {0}")]
    Commit(String),
    /// The store could not run the call at all (its worker stopped): nothing
    /// was read or written.
    #[error("state database unavailable: {0}")]
    Unavailable(String),
}
