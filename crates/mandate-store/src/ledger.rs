//! The gateway's handle on the ledger: open and recover, append, prove.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mandate_ledger::{
    ConsistencyProof, Hash, InclusionProof, LogKey, LogVerifier, Receipt, ReceiptBundle,
    SignedCheckpoint, TiledTree,
};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::journal::{JournalEntry, JournalRetention};
use crate::reader::{LedgerReader, ReceiptQuery, StoredReceipt, meta};
use crate::writer::{Command, Prepared, Writer, insert_checkpoint, journal_bytes};
use crate::{LedgerError, ledger_schema};

/// How the ledger writes.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Longest time a committed receipt waits for a signed checkpoint.
    /// Reading a receipt's proof or the checkpoint signs one at once.
    pub checkpoint_interval: Duration,
    /// Most receipts committed in one transaction.
    pub max_batch: usize,
    /// How much of the decision journal is kept.
    pub journal: JournalRetention,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(5),
            max_batch: 1024,
            journal: JournalRetention::default(),
        }
    }
}

/// A receipt that is durable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Appended {
    /// Its leaf index.
    pub index: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
}

/// A receipt with the proof that the newest checkpoint includes it.
#[derive(Debug, Clone)]
pub struct ReceiptProof {
    /// The receipt as stored.
    pub receipt: StoredReceipt,
    /// Its inclusion proof against `checkpoint`.
    pub proof: InclusionProof,
    /// The checkpoint the proof is against.
    pub checkpoint: SignedCheckpoint,
}

impl ReceiptProof {
    /// The receipt with its proofs, as handed to a third party.
    pub fn into_bundle(self, verifier: &LogVerifier) -> Result<ReceiptBundle, LedgerError> {
        let receipt = serde_json::value::RawValue::from_string(self.receipt.body).map_err(|e| {
            LedgerError::Corrupt(format!(
                "receipt {} is not valid JSON: {e}",
                self.receipt.index
            ))
        })?;
        Ok(ReceiptBundle {
            receipt,
            signature: BASE64.encode(&self.receipt.signature),
            inclusion_proof: self.proof,
            checkpoint: self.checkpoint.note,
            verifier_key: verifier.as_text().to_owned(),
        })
    }
}

/// State the writer and the readers share.
pub(crate) struct Shared {
    /// The journal's stored bytes, as the writer last recorded them.
    pub(crate) journal_bytes: AtomicU64,
    /// The log's tree: tile heads and the open tile in memory; proofs read
    /// older leaf hashes through the ledger's reader.
    pub(crate) tree: RwLock<TiledTree>,
    committed: AtomicU64,
    latest: RwLock<SignedCheckpoint>,
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// Receipts committed to disk.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The newest signed checkpoint.
    pub(crate) fn latest(&self) -> SignedCheckpoint {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a commit of `added` receipts (and a checkpoint signed with them).
    pub(crate) fn advance(&self, added: u64, checkpoint: Option<SignedCheckpoint>) {
        self.committed.fetch_add(added, Ordering::AcqRel);
        if let Some(checkpoint) = checkpoint {
            *self.latest.write().unwrap_or_else(PoisonError::into_inner) = checkpoint;
        }
    }

    /// Why the ledger stopped accepting receipts, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(why);
    }
}

/// Hands out leaf indices in the order receipts reach the writer.
struct Sequencer {
    next: u64,
    commands: Option<Sender<Command>>,
}

/// The receipt ledger of one gateway. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    sequencer: Mutex<Sequencer>,
    key: LogKey,
    writer: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    reader: Mutex<LedgerReader>,
    verifier: LogVerifier,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`, signing with `key`.
    ///
    /// Recovery happens here: the tree is rebuilt from the stored leaves, the
    /// newest checkpoint must verify with the key and match that tree, and a
    /// checkpoint is signed for any receipt committed after it (a crash
    /// between commit and checkpoint). Anything contradictory refuses to open.
    pub fn open(path: &Path, key: LogKey, config: LedgerConfig) -> Result<Self, LedgerError> {
        let verifier = key.verifier();
        let mut conn = Connection::open(path)?;
        ledger_schema::configure_writer(&conn)?;
        check_or_record_key(&mut conn, &key, &verifier)?;

        let reader = LedgerReader::from_connection(Connection::open(path)?)?;
        let tree = reader.tree()?;
        let latest = match reader.latest_checkpoint()? {
            Some(stored) => Some(check_newest(&verifier, &tree, &reader, &stored.checkpoint)?),
            None => None,
        };
        let latest = match latest {
            Some(c) if c.size == tree.len() => c,
            behind => {
                let checkpoint = SignedCheckpoint::sign(&key, tree.len(), tree.head())?;
                insert_checkpoint(&conn, &checkpoint)?;
                if let Some(old) = behind {
                    tracing::info!(
                        from = old.size,
                        to = checkpoint.size,
                        "signed a checkpoint for receipts committed before the last stop"
                    );
                }
                checkpoint
            }
        };

        let next = tree.len();
        let shared = Arc::new(Shared {
            journal_bytes: AtomicU64::new(journal_bytes(&conn)?),
            committed: AtomicU64::new(tree.len()),
            tree: RwLock::new(tree),
            latest: RwLock::new(latest),
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let journal_bytes = journal_bytes(&conn)?;
        let writer = Writer {
            conn,
            key: key.clone(),
            shared: Arc::clone(&shared),
            checkpoint_interval: config.checkpoint_interval,
            max_batch: config.max_batch.max(1),
            retention: config.journal,
            journal_bytes,
        };
        let handle = std::thread::Builder::new()
            .name("mandate-ledger".to_owned())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            inner: Arc::new(Inner {
                sequencer: Mutex::new(Sequencer {
                    next,
                    commands: Some(tx),
                }),
                key,
                writer: Mutex::new(Some(handle)),
                shared,
                reader: Mutex::new(reader),
                verifier,
            }),
        })
    }

    /// The log's public key.
    pub fn verifier(&self) -> &LogVerifier {
        &self.inner.verifier
    }

    /// Receipts committed so far.
    pub fn size(&self) -> u64 {
        self.inner.shared.committed()
    }

    /// Why the ledger stopped accepting receipts, if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failure()
    }

    /// The newest signed checkpoint (it may not cover the last few receipts).
    pub fn latest_checkpoint(&self) -> SignedCheckpoint {
        self.inner.shared.latest()
    }

    /// Bytes the decision journal holds, as retention counts them.
    pub fn journal_bytes(&self) -> u64 {
        self.inner.shared.journal_bytes.load(Ordering::Relaxed)
    }

    /// Appends `receipt` (its `index` is assigned by the ledger), with its
    /// decision's journal entry if it has one, and returns once both are
    /// committed to disk.
    ///
    /// The receipt is indexed, canonicalised and signed here, on the
    /// caller's thread, under a lock that keeps indices in channel order:
    /// the writer thread is left with the inserts and the fsync.
    pub async fn append(
        &self,
        mut receipt: Receipt,
        journal: Option<JournalEntry>,
    ) -> Result<Appended, LedgerError> {
        let (ack, answer) = oneshot::channel();
        {
            let mut sequencer = self
                .inner
                .sequencer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(failure) = self.inner.shared.failure() {
                return Err(LedgerError::Failed(failure));
            }
            let Some(commands) = sequencer.commands.as_ref() else {
                return Err(LedgerError::Closed);
            };
            receipt.index = sequencer.next;
            let prepared = Prepared::new(receipt, journal, &self.inner.key, ack)?;
            commands
                .send(Command::Append(Box::new(prepared)))
                .map_err(|_| LedgerError::Closed)?;
            sequencer.next += 1;
        }
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// A checkpoint covering every receipt committed before the call.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let latest = self.inner.shared.latest();
        if latest.size >= self.size() {
            return Ok(latest);
        }
        let (ack, answer) = oneshot::channel();
        self.send(Command::Checkpoint(ack))?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// The receipt of `decision_id` as stored, without a proof.
    pub async fn stored(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError> {
        let this = self.clone();
        let id = decision_id.to_owned();
        tokio::task::spawn_blocking(move || {
            this.inner
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .receipt(&id)
        })
        .await
        .map_err(|e| LedgerError::Io(std::io::Error::other(e)))?
    }

    /// The receipt of `decision_id` with its inclusion proof against a
    /// checkpoint that covers it (signing one if needed).
    pub async fn receipt(&self, decision_id: &str) -> Result<Option<ReceiptProof>, LedgerError> {
        let this = self.clone();
        let id = decision_id.to_owned();
        let stored = tokio::task::spawn_blocking(move || {
            this.inner
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .receipt(&id)
        })
        .await
        .map_err(|e| LedgerError::Io(std::io::Error::other(e)))??;
        let Some(receipt) = stored else {
            return Ok(None);
        };
        let mut checkpoint = self.inner.shared.latest();
        if checkpoint.size <= receipt.index {
            checkpoint = self.checkpoint().await?;
        }
        let (index, size) = (receipt.index, checkpoint.size);
        let this = self.clone();
        let proof = tokio::task::spawn_blocking(move || this.prove_inclusion(index, size))
            .await
            .map_err(|e| LedgerError::Io(std::io::Error::other(e)))??;
        Ok(Some(ReceiptProof {
            receipt,
            proof,
            checkpoint,
        }))
    }

    /// Receipts matching `query`, newest first, each with its inclusion
    /// proof against the newest checkpoint when that checkpoint covers it
    /// (`None` for receipts newer than the checkpoint; the next one will).
    pub async fn search(
        &self,
        query: ReceiptQuery,
    ) -> Result<Vec<(StoredReceipt, Option<ReceiptProof>)>, LedgerError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let reader = this
                .inner
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let found = reader.search(&query)?;
            let checkpoint = this.inner.shared.latest();
            let tree = this.tree();
            found
                .into_iter()
                .map(|receipt| {
                    if receipt.index >= checkpoint.size {
                        return Ok((receipt, None));
                    }
                    let proof = tree.prove_inclusion(receipt.index, checkpoint.size, &*reader)?;
                    Ok((
                        receipt.clone(),
                        Some(ReceiptProof {
                            receipt,
                            proof,
                            checkpoint: checkpoint.clone(),
                        }),
                    ))
                })
                .collect()
        })
        .await
        .map_err(|e| LedgerError::Io(std::io::Error::other(e)))?
    }

    /// Proof that the tree of size `from` is a prefix of the tree of size
    /// `to`; both must be within the newest checkpoint.
    pub fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError> {
        let signed = self.inner.shared.latest().size;
        if to > signed {
            return Err(LedgerError::BeyondCheckpoint { asked: to, signed });
        }
        let reader = self.reader();
        Ok(self.tree().prove_consistency(from, to, &*reader)?)
    }

    /// Root of the tree of the first `size` receipts (within the newest checkpoint).
    pub fn root(&self, size: u64) -> Result<Hash, LedgerError> {
        let reader = self.reader();
        Ok(self.tree().root(size, &*reader)?)
    }

    /// Proof that receipt `index` is in the tree of the first `size`
    /// receipts. Blocks on the reader: call it off the async runtime.
    fn prove_inclusion(&self, index: u64, size: u64) -> Result<InclusionProof, LedgerError> {
        let reader = self.reader();
        Ok(self.tree().prove_inclusion(index, size, &*reader)?)
    }

    /// The reader connection, which also serves the tree's leaf hashes.
    /// Taken before the tree's lock, never after it.
    fn reader(&self) -> std::sync::MutexGuard<'_, LedgerReader> {
        self.inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn tree(&self) -> std::sync::RwLockReadGuard<'_, TiledTree> {
        self.inner
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, command: Command) -> Result<(), LedgerError> {
        let sequencer = self
            .inner
            .sequencer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match sequencer.commands.as_ref() {
            Some(tx) => tx.send(command).map_err(|_| LedgerError::Closed),
            None => Err(LedgerError::Closed),
        }
    }

    /// Signs a last checkpoint, stops the writer and waits for it. Appends
    /// after this fail with [`LedgerError::Closed`].
    pub async fn close(&self) -> Result<SignedCheckpoint, LedgerError> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Close(ack))?;
        let result = answer.await.map_err(|_| LedgerError::Closed)?;
        self.inner
            .sequencer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .commands
            .take();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }
}

/// Recovery's check of the newest stored checkpoint against the stored
/// receipts: it must be signed by the log's key, cover no more receipts
/// than are stored, and match the root of the tree at its size. Returns it
/// as opened.
pub(crate) fn check_newest(
    verifier: &LogVerifier,
    tree: &TiledTree,
    leaves: &impl mandate_ledger::LeafSource,
    stored: &SignedCheckpoint,
) -> Result<SignedCheckpoint, LedgerError> {
    let opened = SignedCheckpoint::open(verifier, &stored.note)
        .map_err(|e| LedgerError::Corrupt(format!("newest checkpoint: {e}")))?;
    if opened.size > tree.len() {
        return Err(LedgerError::Corrupt(format!(
            "the newest checkpoint covers {} receipts but only {} are stored: receipts were removed",
            opened.size,
            tree.len()
        )));
    }
    if tree.root(opened.size, leaves)? != opened.root || opened != *stored {
        return Err(LedgerError::Corrupt(format!(
            "the stored receipts do not hash to the newest checkpoint's root at size {}",
            opened.size
        )));
    }
    Ok(opened)
}

/// A log has one key: record it on first open, refuse another later.
fn check_or_record_key(
    conn: &mut Connection,
    key: &LogKey,
    verifier: &LogVerifier,
) -> Result<(), LedgerError> {
    match meta(conn, "verifier_key")? {
        Some(stored) if stored == verifier.as_text() => Ok(()),
        Some(stored) => Err(LedgerError::KeyMismatch {
            stored,
            configured: verifier.as_text().to_owned(),
        }),
        None => {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('origin', ?1), ('verifier_key', ?2)",
                params![key.name(), verifier.as_text()],
            )?;
            tx.commit()?;
            Ok(())
        }
    }
}
