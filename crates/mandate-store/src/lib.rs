//! Mandate's persistence on embedded SQLite: the receipt ledger and the
//! state database.
//!
//! [`Ledger`] is the gateway's handle: it appends receipts through one writer
//! thread that commits them in groups (one transaction and one fsync for
//! every receipt waiting at that moment), and answers only after the commit,
//! so an acknowledged receipt is on disk. [`LedgerReader`] reads the same
//! database, also while a gateway writes to it.
//!
//! [`TaskStore`] is the gateway's state database, a file of its own
//! (`state.db`): tasks, the credentials issued under them, revocations,
//! each task's session history ([`tasks`]), the sessions kept for agents
//! without a task ([`sessions`]), approvals ([`approvals`]) and token
//! exchanges.
//!
//! PostgreSQL for several gateway instances is not here yet.

pub mod approvals;
mod exchanges;
mod ledger;
mod ledger_schema;
mod reader;
pub mod sessions;
mod state_schema;
mod state_writer;
pub mod tasks;
mod writer;

use std::path::PathBuf;

pub use approvals::ApprovalRecord;
pub use exchanges::ExchangeRecord;
pub use ledger::{Appended, Ledger, LedgerConfig, ReceiptProof};
pub use reader::{ExportSummary, LedgerReader, ReceiptQuery, StoredCheckpoint, StoredReceipt};
pub use sessions::SessionDecision;
pub use tasks::{
    CallResult, CredentialRecord, END_REASON_ENDED, END_REASON_EXPIRED, HistoryEntry, Revocation,
    TaskRecord, TaskStore,
};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    /// SQLite reported an error on the state database (tasks, credentials,
    /// revocations, session history).
    #[error("state database: {0}")]
    State(rusqlite::Error),
    /// No task of this id is recorded.
    #[error("no task `{0}`")]
    TaskNotFound(String),
    /// No decision of this id is recorded (in the task's history).
    #[error("no decision `{0}`")]
    DecisionNotFound(String),
    /// The write contradicts what is recorded: the id exists already, or a
    /// result was reported twice.
    #[error("{0}")]
    Conflict(String),
    /// The task has ended: nothing more is issued under it.
    #[error("task `{task_id}` has ended ({reason}): nothing more is issued under it")]
    TaskEnded {
        /// The task's id.
        task_id: String,
        /// Why it ended (`ended`, `expired`, …).
        reason: String,
    },
    /// The record to write is inconsistent (a credential whose parent is not
    /// in its task, a depth that does not follow its parent, …).
    #[error("invalid record: {0}")]
    Invalid(String),
    /// A write to the state database was not committed (the disk failed,
    /// or the writer stopped): nothing of it is stored.
    #[error("state database: the write was not committed: {0}")]
    Commit(String),
}
