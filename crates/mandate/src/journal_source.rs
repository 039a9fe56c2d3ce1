//! Where the commands that read the decision journal (`policy replay`,
//! `policy test --record`) read it: the data directory's `ledger.db`, or
//! the PostgreSQL database instances share.

use std::path::Path;

use anyhow::Context as _;
use mandate_store::postgres::PgStore;
use mandate_store::{JournalQuery, JournaledDecision, LedgerError, LedgerReader};

use crate::exit::Code;
use crate::ledger_files;

/// An open journal.
pub enum JournalSource {
    /// `DATA_DIR/ledger.db`, read-only (also while the server runs).
    Sqlite(LedgerReader),
    /// A shared PostgreSQL database, read on a runtime of its own.
    Postgres {
        runtime: tokio::runtime::Runtime,
        store: PgStore,
    },
}

impl JournalSource {
    /// Opens the journal of `store` (`--store`: unset or `sqlite` for the
    /// data directory's, else a PostgreSQL URL). Prints the problem and
    /// returns the code for bad input (no ledger, a bad `--store`).
    pub fn open(data_dir: &Path, store: Option<&str>) -> anyhow::Result<Result<Self, Code>> {
        let url = match crate::commands::receipts::store_choice(store) {
            Ok(url) => url,
            Err(code) => return Ok(Err(code)),
        };
        match url {
            None => {
                let path = ledger_files::ledger_path(data_dir);
                match LedgerReader::open(&path) {
                    Ok(reader) => Ok(Ok(Self::Sqlite(reader))),
                    Err(e @ (LedgerError::Missing(_) | LedgerError::Unsupported(_))) => {
                        eprintln!("error: {e}");
                        Ok(Err(Code::Input))
                    }
                    Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
                }
            }
            Some(url) => {
                let runtime =
                    tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
                let store = runtime.block_on(PgStore::connect(&url)).with_context(|| {
                    format!("cannot open {}", mandate_store::postgres::redact(&url))
                })?;
                Ok(Ok(Self::Postgres { runtime, store }))
            }
        }
    }

    /// The receipt index of decision `decision_id`, if the log holds it.
    pub fn index_of(&self, decision_id: &str) -> Result<Option<u64>, LedgerError> {
        match self {
            Self::Sqlite(reader) => Ok(reader.receipt(decision_id)?.map(|r| r.index)),
            Self::Postgres { runtime, store } => runtime.block_on(store.receipt_index(decision_id)),
        }
    }

    /// Journaled decisions matching `query`, oldest first, each handed to
    /// `each`.
    pub fn journal(
        &self,
        query: &JournalQuery,
        each: impl FnMut(JournaledDecision) -> Result<(), LedgerError>,
    ) -> Result<u64, LedgerError> {
        match self {
            Self::Sqlite(reader) => reader.journal(query, each),
            Self::Postgres { runtime, store } => runtime.block_on(store.journal(query, each)),
        }
    }

    /// The journal entry of `decision_id`: `Ok(None)` when the log holds
    /// no such decision, `Ok(Some(None))` when it does but the entry is
    /// not kept (pruned, journal off, or not a decision).
    pub fn journaled(
        &self,
        decision_id: &str,
    ) -> Result<Option<Option<JournaledDecision>>, LedgerError> {
        let Some(index) = self.index_of(decision_id)? else {
            return Ok(None);
        };
        let mut found = None;
        self.journal(
            &JournalQuery {
                from_index: Some(index),
                to_index: Some(index),
                ..JournalQuery::default()
            },
            |entry| {
                found = Some(entry);
                Ok(())
            },
        )?;
        Ok(Some(found))
    }
}
