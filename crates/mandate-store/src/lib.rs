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
//! The server sees neither type: it holds a [`StateStore`] and a
//! [`ReceiptLog`], the two traits a backend implements ([`SqliteState`] and
//! [`Ledger`] here). Each store has its own error type, [`StateError`] and
//! [`LedgerError`]. [`postgres`] serves the same traits from one
//! PostgreSQL database, for several gateway instances.

pub mod approvals;
mod error;
mod exchanges;
pub mod journal;
mod ledger;
mod ledger_schema;
pub mod postgres;
mod reader;
mod receipt_log;
pub mod sessions;
mod state_schema;
mod state_store;
mod state_writer;
pub mod tasks;
mod writer;

pub use approvals::ApprovalRecord;
pub use error::{LedgerError, StateError};
pub use exchanges::ExchangeRecord;
pub use journal::{JournalEntry, JournalQuery, JournalRetention, JournaledDecision};
pub use ledger::{Appended, Ledger, LedgerConfig, ReceiptProof};
pub use reader::{ExportSummary, LedgerReader, ReceiptQuery, StoredCheckpoint, StoredReceipt};
pub use receipt_log::ReceiptLog;
pub use sessions::SessionDecision;
pub use state_store::{
    ApprovalsLock, EndedTask, SqliteState, StateChange, StateStore, TaskDetails,
};
pub use tasks::{
    CallResult, CredentialRecord, END_REASON_ENDED, END_REASON_EXPIRED, HistoryEntry, Revocation,
    TaskRecord, TaskStore,
};
