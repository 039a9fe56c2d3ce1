//! Reading the ledger: receipts, checkpoints, the tree, exports.
//!
//! A [`LedgerReader`] is one SQLite connection. Under WAL it reads a
//! consistent snapshot while the server keeps writing, so `mandate receipts
//! export` and `prove` work against a running gateway.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mandate_ledger::export::EXPORT_FORMAT;
use mandate_ledger::{ExportLine, Hash, LeafSource, SignedCheckpoint, TiledTree};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::value::RawValue;

use crate::journal::{JournalEntry, JournalQuery, JournaledDecision};
use crate::{LedgerError, ledger_schema};

/// What [`LedgerReader::search`] looks for; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptQuery {
    /// Task id.
    pub task: Option<String>,
    /// The principal's id.
    pub agent: Option<String>,
    /// The tool, as `server/tool`, or a bare tool name matching it on any
    /// server (a server name never holds `/`).
    pub tool: Option<String>,
    /// The outcome (`allow`, `deny`, `approval_required`, `approved`, …).
    pub decision: Option<String>,
    /// The receipt kind (`decision`, `approval`).
    pub kind: Option<String>,
    /// Only receipts with an index below this one (for paging).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// A receipt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Leaf index.
    pub index: u64,
    /// The decision's id.
    pub decision_id: String,
    /// Canonical JSON of the receipt.
    pub body: String,
    /// Ed25519 signature over the receipt.
    pub signature: Vec<u8>,
}

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    /// The signed checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// When it was signed (RFC 3339).
    pub created_at: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ExportSummary {
    /// Receipt lines written.
    pub receipts: u64,
    /// Checkpoint lines written.
    pub checkpoints: u64,
}

/// Read access to a ledger database.
pub struct LedgerReader {
    conn: Connection,
}

impl LedgerReader {
    /// Opens the ledger at `path` read-only. The file must exist.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::Missing(path.to_owned()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::from_connection(conn)
    }

    pub(crate) fn from_connection(conn: Connection) -> Result<Self, LedgerError> {
        ledger_schema::configure_reader(&conn)?;
        Ok(Self { conn })
    }

    /// The verifier key the ledger was created with.
    pub fn verifier_key(&self) -> Result<Option<String>, LedgerError> {
        meta(&self.conn, "verifier_key")
    }

    /// Number of receipts.
    pub fn len(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM receipts", [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the ledger holds no receipt.
    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        Ok(self.len()? == 0)
    }

    /// The receipt of decision `decision_id`.
    pub fn receipt(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT idx, decision_id, body, signature FROM receipts WHERE decision_id = ?1",
            )?
            .query_row(params![decision_id], stored_receipt)
            .optional()?)
    }

    /// Journaled decisions matching `query`, oldest first, each handed to
    /// `each` as it is read (a replay of millions never holds them all);
    /// returns how many. A ledger of schema 1 has no journal: none.
    pub fn journal(
        &self,
        query: &JournalQuery,
        mut each: impl FnMut(JournaledDecision) -> Result<(), LedgerError>,
    ) -> Result<u64, LedgerError> {
        if !ledger_schema::has_journal(&self.conn)? {
            return Ok(0);
        }
        let index = |i: Option<u64>| i.map(|i| i64::try_from(i).unwrap_or(i64::MAX));
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, decision_id, time, task_id, tool, request, redacted, scope, decision,
                    policies, policy_version, outcome
             FROM journal
             WHERE (?1 IS NULL OR time >= ?1) AND (?2 IS NULL OR idx >= ?2)
               AND (?3 IS NULL OR idx <= ?3) AND (?4 IS NULL OR task_id = ?4)
             ORDER BY idx",
        )?;
        let mut rows = stmt.query(params![
            query.since,
            index(query.from_index),
            index(query.to_index),
            query.task
        ])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            each(journaled(row)?)?;
            count += 1;
        }
        Ok(count)
    }

    /// Receipts matching `query`, newest first.
    pub fn search(&self, query: &ReceiptQuery) -> Result<Vec<StoredReceipt>, LedgerError> {
        // Every filter is optional: `?n IS NULL OR column = ?n` keeps one
        // prepared statement for all combinations.
        let before = query.before.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, decision_id, body, signature FROM receipts
             WHERE (?1 IS NULL OR task_id = ?1)
               AND (?2 IS NULL OR principal = ?2)
               AND (?3 IS NULL OR tool = ?3
                    OR (instr(?3, '/') = 0 AND substr(tool, instr(tool, '/') + 1) = ?3))
               AND (?4 IS NULL OR decision = ?4)
               AND (?5 IS NULL OR json_extract(body, '$.kind') = ?5)
               AND (?6 IS NULL OR idx < ?6)
             ORDER BY idx DESC LIMIT ?7",
        )?;
        let rows = stmt.query_map(
            params![
                query.task,
                query.agent,
                query.tool,
                query.decision,
                query.kind,
                before,
                limit
            ],
            stored_receipt,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The receipt at leaf `index`.
    pub fn receipt_at(&self, index: u64) -> Result<Option<StoredReceipt>, LedgerError> {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        Ok(self
            .conn
            .prepare_cached(
                "SELECT idx, decision_id, body, signature FROM receipts WHERE idx = ?1",
            )?
            .query_row(params![index], stored_receipt)
            .optional()?)
    }

    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, root, note, created_at FROM checkpoints ORDER BY size")?;
        let rows = stmt.query_map([], stored_checkpoint)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT size, root, note, created_at FROM checkpoints ORDER BY size DESC LIMIT 1",
            )?
            .query_row([], stored_checkpoint)
            .optional()?)
    }

    /// Rebuilds the Merkle tree from the stored leaf hashes, checking that
    /// indices run 0, 1, 2, … without gaps. The tree keeps its tile heads;
    /// its proofs read leaf hashes back through this reader ([`LeafSource`]).
    pub fn tree(&self) -> Result<TiledTree, LedgerError> {
        let mut tree = TiledTree::new();
        let mut stmt = self
            .conn
            .prepare("SELECT idx, leaf_hash FROM receipts ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let index: i64 = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            if u64::try_from(index).ok() != Some(tree.len()) {
                return Err(LedgerError::Corrupt(format!(
                    "receipt index {index} follows {} receipts: the log has a gap",
                    tree.len()
                )));
            }
            let hash: [u8; 32] = hash.try_into().map_err(|_| {
                LedgerError::Corrupt(format!("leaf hash of receipt {index} is not 32 bytes"))
            })?;
            tree.push(Hash(hash));
        }
        Ok(tree)
    }

    /// Writes the whole ledger as JSON Lines ([`ExportLine`]) from one
    /// consistent snapshot: a header, then receipts in log order, each
    /// checkpoint right after the receipt that completes its tree.
    /// `progress` is called with the number of receipts written so far.
    pub fn export(
        &self,
        out: &mut dyn Write,
        mut progress: impl FnMut(u64),
    ) -> Result<ExportSummary, LedgerError> {
        // A read transaction pins one snapshot for the whole export.
        let snapshot = self.conn.unchecked_transaction()?;
        let checkpoints: Vec<(u64, String)> = self
            .checkpoints()?
            .into_iter()
            .map(|c| (c.checkpoint.size, c.checkpoint.note))
            .collect();
        let mut export = ExportWriter::start(
            out,
            meta(&snapshot, "origin")?.unwrap_or_default(),
            meta(&snapshot, "verifier_key")?.unwrap_or_default(),
            checkpoints,
        )?;
        let mut stmt = snapshot
            .prepare("SELECT idx, decision_id, body, signature FROM receipts ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let receipt = stored_receipt(row)?;
            let written = export.receipt(receipt)?;
            if written % 10_000 == 0 {
                progress(written);
            }
        }
        let summary = export.finish()?;
        progress(summary.receipts);
        Ok(summary)
    }
}

/// Writes an export ([`ExportLine`]s) as receipts arrive in log order: the
/// header first, each checkpoint right after the receipt that completes its
/// tree. Every backend's export goes through it, so they write the same.
pub(crate) struct ExportWriter<'a> {
    out: &'a mut dyn Write,
    /// Checkpoints not written yet, by size, smallest first.
    pending: std::collections::VecDeque<(u64, String)>,
    summary: ExportSummary,
}

impl<'a> ExportWriter<'a> {
    /// Writes the header (and any checkpoint of the empty log).
    pub(crate) fn start(
        out: &'a mut dyn Write,
        origin: String,
        verifier_key: String,
        mut checkpoints: Vec<(u64, String)>,
    ) -> Result<Self, LedgerError> {
        checkpoints.sort_by_key(|(size, _)| *size);
        write_line(
            out,
            &ExportLine::Log {
                format: EXPORT_FORMAT.to_owned(),
                origin,
                verifier_key,
            },
        )?;
        let mut export = Self {
            out,
            pending: checkpoints.into(),
            summary: ExportSummary::default(),
        };
        export.checkpoints_due()?;
        Ok(export)
    }

    /// Writes the next receipt; returns how many are written.
    pub(crate) fn receipt(&mut self, receipt: StoredReceipt) -> Result<u64, LedgerError> {
        let raw = RawValue::from_string(receipt.body).map_err(|e| {
            LedgerError::Corrupt(format!("receipt {} is not valid JSON: {e}", receipt.index))
        })?;
        write_line(
            self.out,
            &ExportLine::Receipt {
                receipt: raw,
                signature: BASE64.encode(&receipt.signature),
            },
        )?;
        self.summary.receipts += 1;
        self.checkpoints_due()?;
        Ok(self.summary.receipts)
    }

    /// Flushes; the counts written.
    pub(crate) fn finish(self) -> Result<ExportSummary, LedgerError> {
        self.out.flush()?;
        Ok(self.summary)
    }

    fn checkpoints_due(&mut self) -> Result<(), LedgerError> {
        while let Some((size, _)) = self.pending.front()
            && *size <= self.summary.receipts
        {
            if let Some((size, note)) = self.pending.pop_front() {
                write_line(self.out, &ExportLine::Checkpoint { size, note })?;
                self.summary.checkpoints += 1;
            }
        }
        Ok(())
    }
}

fn write_line(out: &mut dyn Write, line: &ExportLine) -> Result<(), LedgerError> {
    serde_json::to_writer(&mut *out, line)
        .map_err(|e| LedgerError::Io(std::io::Error::other(e)))?;
    out.write_all(b"\n")?;
    Ok(())
}

pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<String>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT value FROM ledger_meta WHERE key = ?1")?
        .query_row(params![key], |row| row.get(0))
        .optional()?)
}

fn stored_receipt(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceipt> {
    let index: i64 = row.get(0)?;
    Ok(StoredReceipt {
        index: u64::try_from(index).unwrap_or(0),
        decision_id: row.get(1)?,
        body: row.get(2)?,
        signature: row.get(3)?,
    })
}

fn stored_checkpoint(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    let size: i64 = row.get(0)?;
    let root: Vec<u8> = row.get(1)?;
    let root: [u8; 32] = root.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "checkpoint root is not 32 bytes".into(),
        )
    })?;
    Ok(StoredCheckpoint {
        checkpoint: SignedCheckpoint {
            size: u64::try_from(size).unwrap_or(0),
            root: Hash(root),
            note: row.get(2)?,
        },
        created_at: row.get(3)?,
    })
}

impl LeafSource for LedgerReader {
    fn leaf_hashes(&self, start: u64, count: u64) -> Result<Vec<Hash>, String> {
        let range = |n: u64| i64::try_from(n).map_err(|e| e.to_string());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT leaf_hash FROM receipts WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![range(start)?, range(start + count)?], |row| {
                row.get::<_, Vec<u8>>(0)
            })
            .map_err(|e| e.to_string())?;
        rows.map(|row| {
            let bytes = row.map_err(|e| e.to_string())?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "a stored leaf hash is not 32 bytes".to_owned())?;
            Ok(Hash(hash))
        })
        .collect()
    }
}

/// A journal row, read.
fn journaled(row: &rusqlite::Row<'_>) -> Result<JournaledDecision, LedgerError> {
    let index: i64 = row.get(0)?;
    let index = u64::try_from(index)
        .map_err(|_| LedgerError::Corrupt(format!("journal row with index {index}")))?;
    let redacted: Option<String> = row.get(6)?;
    let scope: Option<String> = row.get(7)?;
    let decision: String = row.get(8)?;
    let outcome: String = row.get(11)?;
    let policies: String = row.get(9)?;
    let entry = JournalEntry::from_columns(
        row.get(5)?,
        redacted.as_deref(),
        scope.as_deref(),
        (&decision, &outcome),
        &policies,
        row.get(10)?,
    )
    .map_err(|e| LedgerError::Corrupt(format!("journal entry {index}: {e}")))?;
    Ok(JournaledDecision {
        index,
        decision_id: row.get(1)?,
        time: row.get(2)?,
        task_id: row.get(3)?,
        tool: row.get(4)?,
        entry,
    })
}
