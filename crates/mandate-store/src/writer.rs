//! The ledger's single writer: group commit.
//!
//! Callers hand over receipts already indexed and signed
//! ([`crate::ledger::Ledger::append`] does that under a short lock, so that
//! the signing runs on the callers' threads, in parallel with this thread's
//! fsync). The writer takes everything waiting and commits the whole group
//! in one transaction (one fsync under `synchronous = FULL`). Only then does
//! it answer, so a caller never hears of a receipt that is not on disk. Under
//! load groups grow and the fsync cost is shared; with one caller a group is
//! one receipt.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use mandate_ledger::{Hash, LogKey, Receipt, SignedCheckpoint};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::LedgerError;
use crate::journal::{JournalEntry, JournalRetention, PRUNE_STEP, Pruning};
use crate::ledger::{Appended, Shared};

/// A request to the writer.
pub(crate) enum Command {
    /// Append a receipt, indexed and signed in sequence.
    Append(Box<Prepared>),
    /// Sign a checkpoint covering every committed receipt, if the newest does not.
    Checkpoint(oneshot::Sender<Result<SignedCheckpoint, LedgerError>>),
    /// Sign a last checkpoint and stop.
    Close(oneshot::Sender<Result<SignedCheckpoint, LedgerError>>),
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) key: LogKey,
    pub(crate) shared: Arc<Shared>,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) max_batch: usize,
    pub(crate) retention: JournalRetention,
    /// Stored bytes of the journal's entries (`journal_bytes` in
    /// `ledger_meta`, kept in the same transactions as the entries).
    pub(crate) journal_bytes: u64,
}

/// A receipt ready to insert: indexed, canonical, signed.
pub(crate) struct Prepared {
    pub(crate) receipt: Receipt,
    pub(crate) journal: Option<JournalEntry>,
    pub(crate) canonical: String,
    pub(crate) signature: Vec<u8>,
    pub(crate) leaf: Hash,
    pub(crate) ack: oneshot::Sender<Result<Appended, LedgerError>>,
}

impl Prepared {
    /// Canonical bytes, signature and leaf hash of `receipt`, whose `index`
    /// is set.
    pub(crate) fn new(
        receipt: Receipt,
        journal: Option<JournalEntry>,
        key: &LogKey,
        ack: oneshot::Sender<Result<Appended, LedgerError>>,
    ) -> Result<Self, LedgerError> {
        let Sealed {
            canonical,
            signature,
            leaf,
        } = Sealed::new(&receipt, key)?;
        Ok(Self {
            receipt,
            journal,
            canonical,
            signature,
            leaf,
            ack,
        })
    }
}

/// A receipt's stored form: its canonical JSON, the log key's signature
/// over it, and its Merkle leaf hash. Every backend stores these three.
pub(crate) struct Sealed {
    pub(crate) canonical: String,
    pub(crate) signature: Vec<u8>,
    pub(crate) leaf: Hash,
}

impl Sealed {
    /// Seals `receipt`, whose `index` is set (it is part of what is signed).
    pub(crate) fn new(receipt: &Receipt, key: &LogKey) -> Result<Self, LedgerError> {
        let canonical = receipt.canonical()?;
        let signature = key.sign_entry(&canonical);
        let leaf = mandate_ledger::receipt::leaf_hash(&canonical);
        // Canonical JSON is UTF-8 by construction.
        let canonical =
            String::from_utf8(canonical).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        Ok(Self {
            canonical,
            signature,
            leaf,
        })
    }
}

impl Writer {
    /// Runs until every sender is gone or `Close` arrives.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut last_checkpoint = Instant::now();
        loop {
            let wait = self
                .checkpoint_interval
                .saturating_sub(last_checkpoint.elapsed())
                .max(Duration::from_millis(1));
            let first = match commands.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.checkpoint_if_behind();
                    return;
                }
            };
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < self.max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }

            let mut prepared = Vec::new();
            let mut waiters = Vec::new();
            let mut closing = None;
            let base = self.shared.committed();
            for command in batch {
                match command {
                    Command::Append(p) => {
                        // The sequencer hands out indices in channel order;
                        // anything else is a bug, and the log must not get a gap.
                        if p.receipt.index != base + prepared.len() as u64 {
                            self.shared.fail(format!(
                                "receipt index {} arrived where {} was expected",
                                p.receipt.index,
                                base + prepared.len() as u64
                            ));
                        }
                        prepared.push(*p);
                    }
                    Command::Checkpoint(ack) => waiters.push(ack),
                    Command::Close(ack) => closing = Some(ack),
                }
            }

            let due = !waiters.is_empty()
                || closing.is_some()
                || last_checkpoint.elapsed() >= self.checkpoint_interval;
            match self.commit(prepared, due) {
                Ok(signed) => {
                    if signed {
                        last_checkpoint = Instant::now();
                    }
                    // The journal is pruned on the checkpoints' schedule,
                    // a bounded step at a time, so that no step holds
                    // receipts back for long.
                    if due && let Err(e) = self.prune_journal() {
                        tracing::warn!(error = %e, "could not prune the decision journal; trying again at the next checkpoint");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "ledger write failed; refusing further receipts until restart");
                    self.shared.fail(e.to_string());
                }
            }
            let answer = || match self.shared.failure() {
                Some(failure) => Err(LedgerError::Failed(failure)),
                None => Ok(self.shared.latest()),
            };
            for ack in waiters {
                let _ = ack.send(answer());
            }
            if let Some(ack) = closing {
                let _ = ack.send(answer());
                return;
            }
        }
    }

    /// Commits `prepared` (and a checkpoint when `checkpoint_due`) in one
    /// transaction, then answers each append. Returns whether a checkpoint was signed.
    fn commit(
        &mut self,
        prepared: Vec<Prepared>,
        checkpoint_due: bool,
    ) -> Result<bool, LedgerError> {
        // After a failed write the shared tree may hold leaves that never
        // reached disk: write nothing more, above all no checkpoint over them.
        if let Some(failure) = self.shared.failure() {
            for p in prepared {
                let _ = p.ack.send(Err(LedgerError::Failed(failure.clone())));
            }
            return Ok(false);
        }
        let behind = self.shared.latest().size < self.shared.committed() + prepared.len() as u64;
        if prepared.is_empty() && !(checkpoint_due && behind) {
            return Ok(false);
        }
        let result = self.write(&prepared, checkpoint_due && behind);
        match result {
            Ok(checkpoint) => {
                self.shared
                    .advance(prepared.len() as u64, checkpoint.clone());
                for p in prepared {
                    let _ = p.ack.send(Ok(Appended {
                        index: p.receipt.index,
                        leaf_hash: p.leaf,
                    }));
                }
                Ok(checkpoint.is_some())
            }
            Err(e) => {
                // Fail the ledger before anyone hears of the failure, so that
                // no caller can see an error and then a working ledger.
                self.shared.fail(e.to_string());
                for p in prepared {
                    let _ = p.ack.send(Err(LedgerError::Failed(e.to_string())));
                }
                Err(e)
            }
        }
    }

    fn write(
        &mut self,
        prepared: &[Prepared],
        sign_checkpoint: bool,
    ) -> Result<Option<SignedCheckpoint>, LedgerError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO receipts (idx, decision_id, leaf_hash, body, signature, time, principal, task_id, tool, decision)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for p in prepared {
                let r = &p.receipt;
                insert.execute(params![
                    i64::try_from(r.index).unwrap_or(i64::MAX),
                    r.decision_id,
                    p.leaf.0.as_slice(),
                    p.canonical,
                    p.signature,
                    r.time,
                    r.principal.id,
                    r.task.as_ref().map(|t| t.id.as_str()),
                    format!("{}/{}", r.call.server, r.call.tool),
                    r.decision.as_str(),
                ])?;
            }
            let mut journal = tx.prepare_cached(
                "INSERT INTO journal (idx, time, bytes, task_id, tool, decision_id, decision,
                                      outcome, policy_version, policies, scope, redacted, request)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            let mut added = 0u64;
            for p in prepared {
                let (r, Some(entry)) = (&p.receipt, &p.journal) else {
                    continue;
                };
                let bytes = entry.stored_bytes();
                added = added.saturating_add(bytes);
                let (redacted, scope, policies) = entry.list_columns();
                journal.execute(params![
                    i64::try_from(r.index).unwrap_or(i64::MAX),
                    r.time,
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                    r.task.as_ref().map(|t| t.id.as_str()),
                    format!("{}/{}", r.call.server, r.call.tool),
                    r.decision_id,
                    entry.decision.as_str(),
                    entry.outcome.as_str(),
                    entry.policy_version,
                    policies,
                    scope,
                    redacted,
                    entry.request,
                ])?;
            }
            if added > 0 {
                set_journal_bytes(&tx, self.journal_bytes.saturating_add(added))?;
            }
        }
        // Leaves go into the shared tree before the commit: readers only
        // look at sizes up to what is committed, which these do not change.
        {
            let mut tree = self
                .shared
                .tree
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for p in prepared {
                tree.push(p.leaf);
            }
        }
        // Sign over what this transaction commits, never over whatever else
        // the tree may hold.
        let size = self.shared.committed() + prepared.len() as u64;
        let checkpoint = if sign_checkpoint {
            let tree = self
                .shared
                .tree
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            // The tree holds exactly what is committed plus this
            // transaction (this thread alone pushes to it, and stops after
            // a failed write), so its whole root, held in memory, is the
            // root at `size`: no leaf needs reading back, which a reader
            // could not do before the commit anyway.
            if tree.len() != size {
                return Err(LedgerError::Failed(format!(
                    "the tree holds {} receipts where {size} were expected",
                    tree.len()
                )));
            }
            let root = tree.head();
            drop(tree);
            let signed = SignedCheckpoint::sign(&self.key, size, root)?;
            insert_checkpoint(&tx, &signed)?;
            Some(signed)
        } else {
            None
        };
        tx.commit()?;
        self.journal_bytes = self.journal_bytes.saturating_add(
            prepared
                .iter()
                .filter_map(|p| p.journal.as_ref())
                .map(JournalEntry::stored_bytes)
                .sum(),
        );
        self.shared
            .journal_bytes
            .store(self.journal_bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(checkpoint)
    }

    /// Removes the oldest journal entries that are older than the retention
    /// age or over its size, at most [`PRUNE_STEP`] of them. Receipts are
    /// never touched.
    fn prune_journal(&mut self) -> Result<(), LedgerError> {
        // A failed ledger writes nothing more until it is opened again.
        if self.shared.failure().is_some() {
            return Ok(());
        }
        let mut pruning = Pruning::new(&self.retention, Utc::now(), self.journal_bytes);
        if !pruning.may_remove() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut oldest =
                tx.prepare_cached("SELECT idx, time, bytes FROM journal ORDER BY idx LIMIT ?1")?;
            let mut rows = oldest.query(params![PRUNE_STEP])?;
            while let Some(row) = rows.next()? {
                let (idx, time, bytes): (i64, String, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                if !pruning.take(idx, &time, u64::try_from(bytes).unwrap_or(0)) {
                    break;
                }
            }
        }
        let Some((last, removed)) = pruning.through() else {
            return Ok(());
        };
        tx.execute("DELETE FROM journal WHERE idx <= ?1", params![last])?;
        let left = self.journal_bytes.saturating_sub(removed);
        set_journal_bytes(&tx, left)?;
        tx.commit()?;
        self.journal_bytes = left;
        self.shared
            .journal_bytes
            .store(left, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            through = last,
            bytes = removed,
            "pruned the decision journal"
        );
        Ok(())
    }

    /// Signs a checkpoint if the newest one does not cover every receipt.
    fn checkpoint_if_behind(&mut self) -> Result<bool, LedgerError> {
        self.commit(Vec::new(), true)
    }
}

/// Records the journal's stored bytes.
fn set_journal_bytes(conn: &Connection, bytes: u64) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO ledger_meta (key, value) VALUES ('journal_bytes', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![bytes.to_string()])?;
    Ok(())
}

/// The journal's stored bytes as last recorded.
pub(crate) fn journal_bytes(conn: &Connection) -> Result<u64, LedgerError> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'journal_bytes'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Stores a signed checkpoint.
pub(crate) fn insert_checkpoint(
    conn: &Connection,
    checkpoint: &SignedCheckpoint,
) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        i64::try_from(checkpoint.size).unwrap_or(i64::MAX),
        checkpoint.root.0.as_slice(),
        checkpoint.note,
        Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    ])?;
    Ok(())
}
