//! The receipt log on PostgreSQL, shared by every instance on the database.
//!
//! # Sequencing
//!
//! Each instance has one writer task that takes every receipt waiting and
//! commits them together (group commit, as the SQLite ledger does). The
//! index is part of what is signed, so a group is signed for the indices
//! it will have, and goes in with one statement ([`APPEND`]) that advances
//! the one row of `log_head` (the number of receipts committed) by the
//! group's size only if the head stands where the group was signed to
//! start, and inserts the receipts and their journal rows only if it did.
//! One statement is one transaction even outside any other, so the head
//! never moves without its receipts: the log has one sequence with no gaps
//! and no duplicates, whatever fails between two statements.
//!
//! Where the group starts comes from one of three plans ([`Plan`]). An
//! instance alone on the log (its last group found no other instance's
//! receipt before its own) predicts it: the index after its own tree, one
//! round trip. Otherwise it takes the head's row lock first (`SELECT … FOR
//! UPDATE`, with the read of the leaves other instances appended), signs,
//! appends and commits: two round trips (a group that signs a checkpoint
//! reads the newest stored one in between), and while it holds the lock no
//! other instance appends. That lock is the log's bottleneck under load:
//! instances take turns, each turn sharing one commit among every receipt
//! the instance has waiting. Decision ids are fresh, so a group does not
//! look its ids up first: the unique index on `receipts.decision_id`
//! refuses a group holding one the log has, and that group alone is made
//! again with a look-up under the lock, refusing only the receipt that
//! clashed.
//!
//! An append answers only after the commit: an acknowledged receipt is in
//! the database. A failed or uncertain commit answers an error and leaves
//! nothing in memory; whatever did commit is read back with the next group.
//!
//! # The tree and checkpoints
//!
//! Each instance keeps the tree's tile heads ([`TiledTree`]) for what it
//! knows to be committed, and catches up on receipts other instances
//! appended by reading their leaf hashes, under the lock before its own
//! group, and before proving anything. Periodic checkpoints are signed by
//! one instance at a time, the holder of a lease in `checkpoint_lease`; an
//! instance asked for a checkpoint covering the newest receipts (a proof
//! was asked for) signs one under the head lock. All sign with the log's one
//! key, which the first instance records and every later one must match.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Object, Pool};
use mandate_ledger::{
    ConsistencyProof, Hash, InclusionProof, LeafSource, LogKey, LogVerifier, Receipt,
    SignedCheckpoint, TiledTree,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::journal::{
    JournalEntry, JournalQuery, JournalRetention, JournaledDecision, PRUNE_STEP, Pruning,
};
use crate::ledger::check_newest;
use crate::writer::Sealed;
use crate::{Appended, LedgerConfig, LedgerError, ReceiptProof, ReceiptQuery, StoredReceipt};

/// A request to the writer task.
enum Command {
    Append(
        Box<(Receipt, Option<JournalEntry>)>,
        oneshot::Sender<Result<Appended, LedgerError>>,
    ),
    Checkpoint(oneshot::Sender<Result<SignedCheckpoint, LedgerError>>),
    Close(oneshot::Sender<Result<SignedCheckpoint, LedgerError>>),
}

/// The receipt log in a PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgLog {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    key: LogKey,
    verifier: LogVerifier,
    /// What this instance knows to be committed, in every instance's order.
    tree: RwLock<TiledTree>,
    latest: RwLock<SignedCheckpoint>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why the last write to the database failed, until one succeeds.
    failing: Mutex<Option<String>>,
    /// The journal's stored bytes, as of this instance's last append or
    /// pruning.
    journal_bytes: std::sync::atomic::AtomicU64,
    /// Groups that predicted their start wrongly ([`Plan::Predict`]).
    mispredicted: std::sync::atomic::AtomicU64,
}

impl PgLog {
    /// Opens the log in the database behind `pool`, signing with `key`.
    ///
    /// The first instance records the key; a later one with another key is
    /// refused ([`LedgerError::KeyMismatch`]). Recovery is the SQLite
    /// ledger's: the tree is rebuilt from the stored leaf hashes, which
    /// must run 0, 1, 2, … without gaps, and the newest checkpoint must
    /// verify with the key and match the tree; a checkpoint is then signed
    /// for any receipt committed after it.
    pub async fn open(pool: Pool, key: LogKey, config: LedgerConfig) -> Result<Self, LedgerError> {
        let verifier = key.verifier();
        let client = get(&pool).await?;
        record_key(&client, &key, &verifier).await?;
        let tree = read_tree(&client).await?;
        let newest = newest_checkpoint(&client).await?;
        let journal_bytes: i64 = client
            .query_one("SELECT journal_bytes FROM log_head", &[])
            .await?
            .try_get(0)?;
        drop(client);
        let latest = match newest {
            Some(stored) => {
                let leaves = PgLeaves::new(pool.clone());
                let verifier = verifier.clone();
                let (opened, tree) = tokio::task::spawn_blocking(move || {
                    check_newest(&verifier, &tree, &leaves, &stored).map(|c| (c, tree))
                })
                .await
                .map_err(|e| LedgerError::Io(std::io::Error::other(e)))??;
                (opened, tree)
            }
            None => {
                // An empty log's first checkpoint; any instance may sign it.
                let empty = SignedCheckpoint::sign(&key, 0, tree.head())?;
                (empty, tree)
            }
        };
        let (latest, tree) = latest;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            key,
            verifier,
            tree: RwLock::new(tree),
            latest: RwLock::new(latest),
            commands: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            failing: Mutex::new(None),
            journal_bytes: std::sync::atomic::AtomicU64::new(
                u64::try_from(journal_bytes).unwrap_or(0),
            ),
            mispredicted: std::sync::atomic::AtomicU64::new(0),
        });
        let writer = Writer {
            inner: Arc::clone(&inner),
            holder: uuid::Uuid::now_v7().to_string(),
            checkpoint_interval: config.checkpoint_interval,
            max_batch: config.max_batch.max(1),
            retention: config.journal,
            alone: AtomicBool::new(false),
        };
        let handle = tokio::spawn(writer.run(rx));
        *inner.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        let log = Self { inner };
        log.checkpoint().await?;
        Ok(log)
    }

    /// The log's public key.
    pub fn verifier(&self) -> &LogVerifier {
        &self.inner.verifier
    }

    /// Receipts this instance knows to be committed (by any instance).
    pub fn size(&self) -> u64 {
        self.inner.tree().len()
    }

    /// The newest checkpoint this instance has seen.
    pub fn latest_checkpoint(&self) -> SignedCheckpoint {
        self.inner.latest()
    }

    /// Groups of receipts this instance signed for the indices after its
    /// own tree, expecting to be alone on the log, that found the head
    /// elsewhere and were signed again: another instance had appended (or
    /// an earlier group whose answer was lost had committed). A measure of
    /// how often instances append in turn.
    pub fn mispredicted_groups(&self) -> u64 {
        self.inner.mispredicted.load(Ordering::Relaxed)
    }

    /// Appends `receipt` (the log assigns its `index`), with its decision's
    /// journal entry if it has one, and answers once both are committed.
    pub async fn append(
        &self,
        receipt: Receipt,
        journal: Option<JournalEntry>,
    ) -> Result<Appended, LedgerError> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Append(Box::new((receipt, journal)), ack))?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// A checkpoint covering every receipt committed (by any instance)
    /// before the call.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Checkpoint(ack))?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// The receipt of `decision_id`, without a proof.
    pub async fn stored(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError> {
        let client = get(&self.inner.pool).await?;
        let row = client
            .query_opt(
                "SELECT idx, decision_id, body, signature FROM receipts WHERE decision_id = $1",
                &[&decision_id],
            )
            .await?;
        row.map(|row| stored_receipt(&row)).transpose()
    }

    /// The receipt of `decision_id` with its inclusion proof against a
    /// checkpoint that covers it (signing one if needed).
    pub async fn receipt(&self, decision_id: &str) -> Result<Option<ReceiptProof>, LedgerError> {
        let Some(receipt) = self.stored(decision_id).await? else {
            return Ok(None);
        };
        let mut checkpoint = self.inner.latest();
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
    /// proof when the newest checkpoint this instance has seen covers it.
    pub async fn search(
        &self,
        query: ReceiptQuery,
    ) -> Result<Vec<(StoredReceipt, Option<ReceiptProof>)>, LedgerError> {
        let client = get(&self.inner.pool).await?;
        let before = query.before.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT idx, decision_id, body, signature FROM receipts
                 WHERE ($1::text IS NULL OR task_id = $1)
                   AND ($2::text IS NULL OR principal = $2)
                   AND ($3::text IS NULL OR tool = $3
                        OR (strpos($3, '/') = 0 AND split_part(tool, '/', 2) = $3))
                   AND ($4::text IS NULL OR decision = $4)
                   AND ($5::text IS NULL OR kind = $5)
                   AND ($6::bigint IS NULL OR idx < $6)
                 ORDER BY idx DESC LIMIT $7",
                &[
                    &query.task,
                    &query.agent,
                    &query.tool,
                    &query.decision,
                    &query.kind,
                    &before,
                    &limit,
                ],
            )
            .await?;
        drop(client);
        let found = rows
            .iter()
            .map(stored_receipt)
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint = self.inner.latest();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            found
                .into_iter()
                .map(|receipt| {
                    if receipt.index >= checkpoint.size {
                        return Ok((receipt, None));
                    }
                    let proof = this.prove_inclusion(receipt.index, checkpoint.size)?;
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
    /// `to`; both within the newest checkpoint (of any instance: one this
    /// instance has not seen yet is caught up on first).
    pub async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError> {
        let mut signed = self.inner.latest().size;
        if to > signed {
            // Another instance may have signed it: catch up before refusing.
            signed = self.checkpoint().await?.size;
        }
        if to > signed {
            return Err(LedgerError::BeyondCheckpoint { asked: to, signed });
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let leaves = PgLeaves::new(this.inner.pool.clone());
            Ok(this.inner.tree().prove_consistency(from, to, &leaves)?)
        })
        .await
        .map_err(|e| LedgerError::Io(std::io::Error::other(e)))?
    }

    /// Signs a last checkpoint and stops the writer. Appends after this fail
    /// with [`LedgerError::Closed`].
    pub async fn close(&self) -> Result<SignedCheckpoint, LedgerError> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Close(ack))?;
        let result = answer.await.map_err(|_| LedgerError::Closed)?;
        self.inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        result
    }

    /// Blocks on the database: call it off the async runtime.
    fn prove_inclusion(&self, index: u64, size: u64) -> Result<InclusionProof, LedgerError> {
        let leaves = PgLeaves::new(self.inner.pool.clone());
        Ok(self.inner.tree().prove_inclusion(index, size, &leaves)?)
    }

    fn send(&self, command: Command) -> Result<(), LedgerError> {
        let commands = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match commands.as_ref() {
            Some(tx) => tx.send(command).map_err(|_| LedgerError::Closed),
            None => Err(LedgerError::Closed),
        }
    }
}

impl Inner {
    fn tree(&self) -> std::sync::RwLockReadGuard<'_, TiledTree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn latest(&self) -> SignedCheckpoint {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds the committed leaves `start ..` to the tree, skipping those it
    /// has already (a group's catch-up may have read them first).
    fn extend(&self, start: u64, leaves: &[Hash]) -> Result<(), LedgerError> {
        let mut tree = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        let Some(skip) = tree.len().checked_sub(start) else {
            return Err(LedgerError::Corrupt(format!(
                "leaves from {start} arrived for a tree of {} receipts: the log would have a gap",
                tree.len()
            )));
        };
        for leaf in leaves
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        {
            tree.push(*leaf);
        }
        Ok(())
    }

    /// Records how the last write went.
    fn wrote(&self, result: Result<(), String>) {
        *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = result.err();
    }

    /// Keeps `checkpoint` as the newest if it is newer.
    fn saw(&self, checkpoint: SignedCheckpoint) {
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        if checkpoint.size > latest.size {
            *latest = checkpoint;
        }
    }
}

/// The instance's single writer.
struct Writer {
    inner: Arc<Inner>,
    /// This instance's name in the checkpoint lease.
    holder: String,
    checkpoint_interval: Duration,
    max_batch: usize,
    retention: JournalRetention,
    /// Whether the last group found no other instance's receipt before its
    /// own: then the next one predicts where it starts ([`Plan::Predict`]).
    alone: AtomicBool,
}

impl Writer {
    async fn run(self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(self.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let first = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            let periodic = first.is_none();
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < self.max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut receipts = Vec::new();
            let mut waiters = Vec::new();
            let mut closing = None;
            for command in batch {
                match command {
                    Command::Append(receipt, ack) => receipts.push((*receipt, ack)),
                    Command::Checkpoint(ack) => waiters.push(ack),
                    Command::Close(ack) => closing = Some(ack),
                }
            }
            let sign = if !waiters.is_empty() || closing.is_some() {
                true
            } else if periodic {
                match self.lease().await {
                    Ok(held) => {
                        self.inner.wrote(Ok(()));
                        // The lease holder prunes the journal too: one
                        // instance at a time, on the checkpoints' schedule.
                        if held && let Err(e) = self.prune_journal().await {
                            tracing::warn!(error = %e, "could not prune the decision journal; trying again at the next checkpoint");
                        }
                        held
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the checkpoint lease");
                        self.inner.wrote(Err(e.to_string()));
                        false
                    }
                }
            } else {
                false
            };
            if receipts.is_empty() && !sign {
                continue;
            }
            let (acks, receipts): (Vec<_>, Vec<_>) =
                receipts.into_iter().map(|(r, ack)| (ack, r)).unzip();
            let outcome = self.commit(receipts, sign).await;
            self.inner
                .wrote(outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
            let outcome = match outcome {
                Ok((appended, checkpoint)) => {
                    for (ack, appended) in acks.into_iter().zip(appended) {
                        let _ = ack.send(appended);
                    }
                    Ok(checkpoint)
                }
                Err(e) => {
                    tracing::error!(error = %e, "receipt log write failed; the receipts of this group were not acknowledged");
                    let text = e.to_string();
                    for ack in acks {
                        let _ = ack.send(Err(LedgerError::Unavailable(text.clone())));
                    }
                    Err(text)
                }
            };
            let answer = || match &outcome {
                Ok(_) => Ok(self.inner.latest()),
                Err(text) => Err(LedgerError::Unavailable(text.clone())),
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

    /// Takes or renews the checkpoint lease; whether this instance holds it.
    async fn lease(&self) -> Result<bool, LedgerError> {
        let client = get(&self.inner.pool).await?;
        // Three intervals: a holder that stops renewing is replaced after
        // missing two.
        let seconds = self.checkpoint_interval.as_secs_f64() * 3.0;
        let row = client
            .query_opt(
                "INSERT INTO checkpoint_lease (holder, until)
                 VALUES ($1, now() + make_interval(secs => $2))
                 ON CONFLICT (one) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                 WHERE checkpoint_lease.holder = EXCLUDED.holder OR checkpoint_lease.until < now()
                 RETURNING holder",
                &[&self.holder, &seconds],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Commits `receipts` after every receipt committed so far (by any
    /// instance), and signs a checkpoint over the result when `sign` and the
    /// newest stored one does not cover it. Answers each receipt in order: a
    /// receipt whose decision id the log holds already (another instance
    /// wrote it) is refused alone, the rest of the group goes in.
    async fn commit(
        &self,
        receipts: Vec<(Receipt, Option<JournalEntry>)>,
        sign: bool,
    ) -> Result<Committed, LedgerError> {
        // Each plan falls back to a slower one that cannot fail the same way,
        // so a group takes at most three attempts.
        let mut plan = if !sign && self.alone.load(Ordering::Relaxed) {
            Plan::Predict
        } else {
            Plan::Reserve
        };
        loop {
            plan = match (self.commit_group(&receipts, sign, plan).await?, plan) {
                (Attempt::Committed(committed), _) => return Ok(committed),
                (Attempt::Mispredicted, Plan::Predict) => Plan::Reserve,
                (Attempt::Clashed, Plan::Predict | Plan::Reserve) => Plan::LookUp,
                (attempt, plan) => {
                    return Err(LedgerError::Corrupt(format!(
                        "a group of receipts was refused ({attempt:?}) after {plan:?}, which rules that out"
                    )));
                }
            };
        }
    }

    /// One attempt at [`Self::commit`] by `plan`. Nothing is committed
    /// unless it answers [`Attempt::Committed`].
    ///
    /// Round trips, not the flush, bound this path (docs/PERFORMANCE.md), so
    /// the transaction is begun and ended by hand, each time in one batch
    /// with the statements around it (see [`Plan`]).
    async fn commit_group(
        &self,
        receipts: &[(Receipt, Option<JournalEntry>)],
        sign: bool,
        plan: Plan,
    ) -> Result<Attempt, LedgerError> {
        let open = InTransaction::new(get(&self.inner.pool).await?);
        let client = open.client()?;
        let statements = GroupStatements::prepare(client).await?;
        let known = self.inner.tree().len();

        if plan == Plan::Predict {
            // Signed for the indices after what this instance knows, and
            // appended in one statement (its own transaction) that changes
            // nothing unless the head stands at `known`.
            let (answers, group) = choose(receipts, std::collections::HashSet::new());
            let sealed = seal(&self.inner.key, &group, known)?;
            let journal = journal_rows(&sealed, &group);
            let appended = append(client, &statements.append, known, &sealed, &journal).await;
            // No transaction was begun.
            open.ended();
            return match appended {
                Ok(Some(bytes)) => Ok(Attempt::Committed(
                    self.committed(known, sealed, answers, None, bytes)?,
                )),
                Ok(None) => {
                    self.inner.mispredicted.fetch_add(1, Ordering::Relaxed);
                    Ok(Attempt::Mispredicted)
                }
                Err(e) if is_decision_id_clash(&e) => Ok(Attempt::Clashed),
                Err(e) => Err(e),
            };
        }

        // The head's lock, and under it the leaves other instances committed
        // since this instance last looked (and, for a look-up, which of the
        // group's ids the log holds: with no other instance appending, all
        // that can clash). Were `BEGIN` refused, these reads would run
        // outside a transaction and change nothing.
        let ids: Vec<&str> = match plan {
            Plan::LookUp => receipts
                .iter()
                .map(|(r, _)| r.decision_id.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let from = i64::try_from(known).unwrap_or(i64::MAX);
        let from: [&(dyn ToSql + Sync); 1] = [&from];
        let ids: [&(dyn ToSql + Sync); 1] = [&ids];
        let (begin, head, leaves, stored) = tokio::join!(
            biased;
            client.batch_execute("BEGIN"),
            client.query_one(&statements.lock, &[]),
            client.query(&statements.leaves_from, &from),
            client.query(&statements.lookup, &ids),
        );
        begin?;
        let start: i64 = head?.try_get(0)?;
        let start = u64::try_from(start)
            .map_err(|_| LedgerError::Corrupt(format!("the log's head holds size {start}")))?;
        let Some(behind) = start.checked_sub(known) else {
            return Err(LedgerError::Corrupt(format!(
                "the log holds {start} receipts where this instance saw {known} committed"
            )));
        };
        // Committed, so they go into the tree whatever happens to this group.
        let leaves = leaf_rows(&leaves?, known, behind)?;
        self.inner.extend(known, &leaves)?;
        // Predict next time only if no other instance appended since.
        self.alone.store(behind == 0, Ordering::Relaxed);
        let taken = stored?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<_, _>>()?;

        let (answers, group) = choose(receipts, taken);
        let sealed = seal(&self.inner.key, &group, start)?;
        let journal = journal_rows(&sealed, &group);
        let new_size = start + sealed.len() as u64;
        let checkpoint = match sign {
            true => self.checkpoint_for(client, &sealed, new_size).await?,
            false => None,
        };
        let (appended, recorded, commit) = tokio::join!(
            biased;
            append(client, &statements.append, start, &sealed, &journal),
            async {
                let Some(Checkpoint::Signed(signed)) = &checkpoint else {
                    return Ok(1);
                };
                let size = i64::try_from(signed.size).unwrap_or(i64::MAX);
                let root = signed.root.0.as_slice();
                client
                    .execute(&statements.record_checkpoint, &[&size, &root, &signed.note])
                    .await
            },
            client.batch_execute("COMMIT"),
        );
        // An answered `COMMIT` ends the transaction: committed if every
        // statement before it succeeded, rolled back if one failed. An
        // unanswered one leaves it uncertain, and the connection is closed.
        commit?;
        open.ended();
        let bytes = match appended {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(LedgerError::Corrupt(format!(
                    "the log's head moved from {start} while this instance held its lock"
                )));
            }
            Err(e) if is_decision_id_clash(&e) => return Ok(Attempt::Clashed),
            Err(e) => return Err(e),
        };
        if recorded? != 1 {
            return Err(LedgerError::Corrupt(format!(
                "the checkpoint of size {new_size} was not recorded"
            )));
        }
        let checkpoint = checkpoint.map(|(Checkpoint::Signed(c) | Checkpoint::Stored(c))| c);
        Ok(Attempt::Committed(
            self.committed(start, sealed, answers, checkpoint, bytes)?,
        ))
    }

    /// Records a committed group and answers its receipts.
    fn committed(
        &self,
        start: u64,
        sealed: Vec<(Receipt, Sealed)>,
        answers: Vec<Result<usize, LedgerError>>,
        checkpoint: Option<SignedCheckpoint>,
        journal_bytes: i64,
    ) -> Result<Committed, LedgerError> {
        self.inner
            .journal_bytes
            .store(u64::try_from(journal_bytes).unwrap_or(0), Ordering::Relaxed);
        let leaves: Vec<Hash> = sealed.iter().map(|(_, seal)| seal.leaf).collect();
        self.inner.extend(start, &leaves)?;
        if let Some(checkpoint) = &checkpoint {
            self.inner.saw(checkpoint.clone());
        }
        let appended = answers
            .into_iter()
            .map(|answer| {
                answer.and_then(|i| {
                    sealed
                        .get(i)
                        .map(|(receipt, seal)| Appended {
                            index: receipt.index,
                            leaf_hash: seal.leaf,
                        })
                        .ok_or(LedgerError::Closed)
                })
            })
            .collect();
        Ok((appended, checkpoint))
    }

    /// Under the head's lock: a checkpoint over the log with `sealed` (its
    /// receipts ending at `new_size`), the newest stored one if it covers
    /// that already, otherwise one signed now, to be recorded with the
    /// group.
    async fn checkpoint_for(
        &self,
        client: &Object,
        sealed: &[(Receipt, Sealed)],
        new_size: u64,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        let stored = newest_checkpoint(client).await?;
        if let Some(stored) = stored.filter(|c| c.size >= new_size) {
            return Ok(Some(Checkpoint::Stored(SignedCheckpoint::open(
                &self.inner.verifier,
                &stored.note,
            )?)));
        }
        // The root of the tree with this group, computed on a copy: the
        // shared tree only ever holds committed leaves.
        let mut tree = self.inner.tree().clone();
        for (_, seal) in sealed {
            tree.push(seal.leaf);
        }
        if tree.len() != new_size {
            return Err(LedgerError::Corrupt(format!(
                "the tree holds {} receipts where {new_size} were expected",
                tree.len()
            )));
        }
        let signed = SignedCheckpoint::sign(&self.inner.key, new_size, tree.head())?;
        Ok(Some(Checkpoint::Signed(signed)))
    }
}

/// A checkpoint for a group, as [`Writer::checkpoint_for`] found it.
enum Checkpoint {
    /// The newest stored one, which covers the group already.
    Stored(SignedCheckpoint),
    /// Signed now; recorded in the group's transaction.
    Signed(SignedCheckpoint),
}

/// What a committed group answers: each receipt's outcome, in order, and
/// the checkpoint signed with it, if one was asked for.
type Committed = (Vec<Result<Appended, LedgerError>>, Option<SignedCheckpoint>);

/// How a group finds where it starts in the log and whether the log holds
/// one of its decision ids already. Decision ids are fresh, so the first
/// two plans assume none is held and let the unique index on
/// `receipts.decision_id` say otherwise. Either way the group goes in with
/// one statement, [`APPEND`], which changes nothing unless the log's head
/// stands where the group was signed to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Alone on the log (the last group found no other instance's receipt
    /// before its own), the instance predicts that the group starts where
    /// its tree ends, signs it first and sends [`APPEND`] alone, its own
    /// transaction: one round trip.
    Predict,
    /// `BEGIN` with the head's row lock and the read of leaves other
    /// instances committed; then, signed, [`APPEND`] with `COMMIT`. Two round
    /// trips, both under the lock.
    Reserve,
    /// As [`Plan::Reserve`], with a look-up of the group's ids under the
    /// lock in the first batch: no clash possible.
    LookUp,
}

/// How one attempt at a group ended.
#[derive(Debug)]
enum Attempt {
    Committed(Committed),
    /// The log holds one of the group's decision ids: nothing committed.
    Clashed,
    /// Another instance appended first: nothing committed.
    Mispredicted,
}

/// Whether `e` is the unique index on `receipts.decision_id` refusing a
/// decision id the log holds already.
fn is_decision_id_clash(e: &LedgerError) -> bool {
    let LedgerError::Postgres(e) = e else {
        return false;
    };
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|e| e.constraint()) == Some("receipts_decision_id_key")
}

/// The receipts of a group that go in: each answer names its receipt's
/// place in the group, or refuses a decision id in `taken` or repeated.
type Chosen<'a> = (
    Vec<Result<usize, LedgerError>>,
    Vec<(&'a Receipt, Option<&'a JournalEntry>)>,
);

fn choose(
    receipts: &[(Receipt, Option<JournalEntry>)],
    mut taken: std::collections::HashSet<String>,
) -> Chosen<'_> {
    let mut answers = Vec::with_capacity(receipts.len());
    let mut group = Vec::with_capacity(receipts.len());
    for (receipt, entry) in receipts {
        if !taken.insert(receipt.decision_id.clone()) {
            answers.push(Err(LedgerError::Duplicate(receipt.decision_id.clone())));
            continue;
        }
        answers.push(Ok(group.len()));
        group.push((receipt, entry.as_ref()));
    }
    (answers, group)
}

/// `group` signed for the indices `start ..`, in order.
fn seal(
    key: &LogKey,
    group: &[(&Receipt, Option<&JournalEntry>)],
    start: u64,
) -> Result<Vec<(Receipt, Sealed)>, LedgerError> {
    let mut sealed = Vec::with_capacity(group.len());
    for (receipt, _) in group {
        let mut receipt = (*receipt).clone();
        receipt.index = start + sealed.len() as u64;
        let seal = Sealed::new(&receipt, key)?;
        sealed.push((receipt, seal));
    }
    Ok(sealed)
}

/// The journal rows of `group`, whose receipts are `sealed`.
fn journal_rows<'a>(
    sealed: &'a [(Receipt, Sealed)],
    group: &[(&Receipt, Option<&'a JournalEntry>)],
) -> Vec<JournalRow<'a>> {
    sealed
        .iter()
        .zip(group)
        .filter_map(|((r, _), (_, entry))| {
            entry.map(|entry| JournalRow {
                index: r.index,
                time: &r.time,
                task_id: r.task.as_ref().map(|t| t.id.as_str()),
                tool: format!("{}/{}", r.call.server, r.call.tool),
                decision_id: &r.decision_id,
                entry,
            })
        })
        .collect()
}

/// The statements of a group, prepared once per connection.
struct GroupStatements {
    lock: tokio_postgres::Statement,
    lookup: tokio_postgres::Statement,
    leaves_from: tokio_postgres::Statement,
    append: tokio_postgres::Statement,
    record_checkpoint: tokio_postgres::Statement,
}

impl GroupStatements {
    /// Prepared before the group's first batch: a statement given as text
    /// would be prepared on first use, a round trip of its own that would
    /// also let a later statement of the batch (`COMMIT`) overtake it.
    async fn prepare(client: &Object) -> Result<Self, LedgerError> {
        Ok(Self {
            lock: client
                .prepare_cached("SELECT size FROM log_head FOR UPDATE")
                .await?,
            lookup: client
                .prepare_cached("SELECT decision_id FROM receipts WHERE decision_id = ANY($1)")
                .await?,
            leaves_from: client
                .prepare_cached("SELECT idx, leaf_hash FROM receipts WHERE idx >= $1 ORDER BY idx")
                .await?,
            append: client.prepare_cached(APPEND).await?,
            // Only if the head reached the checkpoint's size: were the
            // group's append not sent, a checkpoint over receipts the log
            // does not have would not go in either (one over no new receipt
            // still covers exactly what the log has).
            record_checkpoint: client
                .prepare_cached(
                    "INSERT INTO checkpoints (size, root, note)
                     SELECT $1::bigint, $2::bytea, $3::text
                     WHERE (SELECT size FROM log_head) = $1::bigint",
                )
                .await?,
        })
    }
}

/// A pooled connection inside a transaction begun by hand. Unless the
/// transaction is known to have ended, dropping it closes the connection
/// instead of returning it to the pool, and PostgreSQL rolls the
/// transaction back: no connection is handed out again inside a stray
/// transaction (`tokio_postgres::Transaction` does the same with a
/// `ROLLBACK` on drop).
struct InTransaction {
    client: Option<Object>,
}

impl InTransaction {
    fn new(client: Object) -> Self {
        Self {
            client: Some(client),
        }
    }

    fn client(&self) -> Result<&Object, LedgerError> {
        self.client.as_ref().ok_or(LedgerError::Closed)
    }

    /// The transaction has ended (committed or rolled back); the connection
    /// may go back to the pool.
    fn ended(mut self) {
        drop(self.client.take());
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl Writer {
    /// Removes the oldest journal entries that are older than the retention
    /// age or over its size, at most [`PRUNE_STEP`] of them, under the head
    /// lock (which holds the journal's byte count). Receipts are never
    /// touched.
    async fn prune_journal(&self) -> Result<(), LedgerError> {
        if self.retention.max_age.is_none() && self.retention.max_bytes.is_none() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let mut client = get(&self.inner.pool).await?;
        // Cheap test first, without the lock: most rounds find nothing.
        let oldest: Option<String> = client
            .query_opt("SELECT time FROM journal ORDER BY idx LIMIT 1", &[])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let total: i64 = client
            .query_one("SELECT journal_bytes FROM log_head", &[])
            .await?
            .try_get(0)?;
        let bytes = |b: i64| u64::try_from(b).unwrap_or(0);
        if !Pruning::new(&self.retention, now, bytes(total)).is_due(oldest.as_deref()) {
            return Ok(());
        }
        let tx = client.transaction().await?;
        let total: i64 = tx
            .query_one("SELECT journal_bytes FROM log_head FOR UPDATE", &[])
            .await?
            .try_get(0)?;
        let rows = tx
            .query(
                "SELECT idx, time, bytes FROM journal ORDER BY idx LIMIT $1",
                &[&PRUNE_STEP],
            )
            .await?;
        let mut pruning = Pruning::new(&self.retention, now, bytes(total));
        for row in &rows {
            let (idx, time, size): (i64, String, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !pruning.take(idx, &time, bytes(size)) {
                break;
            }
        }
        let Some((last, removed)) = pruning.through() else {
            return Ok(());
        };
        let removed = i64::try_from(removed).unwrap_or(i64::MAX);
        tx.execute("DELETE FROM journal WHERE idx <= $1", &[&last])
            .await?;
        let left: i64 = tx
            .query_one(
                "UPDATE log_head SET journal_bytes = greatest(journal_bytes - $1, 0)
                 RETURNING journal_bytes",
                &[&removed],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        self.inner.journal_bytes.store(
            u64::try_from(left).unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::debug!(
            through = last,
            bytes = removed,
            "pruned the decision journal"
        );
        Ok(())
    }
}

/// Journaled decisions matching `query`, oldest first, from one snapshot;
/// see [`super::PgStore::journal`].
pub(crate) async fn journal(
    client: &mut Object,
    query: &JournalQuery,
    mut each: impl FnMut(JournaledDecision) -> Result<(), LedgerError>,
) -> Result<u64, LedgerError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let index = |i: Option<u64>| i.map(|i| i64::try_from(i).unwrap_or(i64::MAX));
    let mut next = index(query.from_index).unwrap_or(0);
    let to = index(query.to_index);
    let statement = tx
        .prepare(
            "SELECT idx, decision_id, time, task_id, tool, request, redacted, scope, decision,
                    policies, policy_version, outcome
             FROM journal
             WHERE idx >= $1 AND ($2::text IS NULL OR time >= $2)
               AND ($3::bigint IS NULL OR idx <= $3) AND ($4::text IS NULL OR task_id = $4)
             ORDER BY idx LIMIT 10000",
        )
        .await?;
    let mut count = 0;
    loop {
        let rows = tx
            .query(&statement, &[&next, &query.since, &to, &query.task])
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        next = last.try_get::<_, i64>(0)?.saturating_add(1);
        for row in &rows {
            each(journaled(row)?)?;
            count += 1;
        }
    }
    tx.commit().await?;
    Ok(count)
}

/// A journal row, read.
fn journaled(row: &tokio_postgres::Row) -> Result<JournaledDecision, LedgerError> {
    let index: i64 = row.try_get(0)?;
    let index = u64::try_from(index)
        .map_err(|_| LedgerError::Corrupt(format!("journal row with index {index}")))?;
    let redacted: Option<String> = row.try_get(6)?;
    let scope: Option<String> = row.try_get(7)?;
    let decision: String = row.try_get(8)?;
    let outcome: String = row.try_get(11)?;
    let policies: String = row.try_get(9)?;
    let entry = JournalEntry::from_columns(
        row.try_get(5)?,
        redacted.as_deref(),
        scope.as_deref(),
        (&decision, &outcome),
        &policies,
        row.try_get(10)?,
    )
    .map_err(|e| LedgerError::Corrupt(format!("journal entry {index}: {e}")))?;
    Ok(JournaledDecision {
        index,
        decision_id: row.try_get(1)?,
        time: row.try_get(2)?,
        task_id: row.try_get(3)?,
        tool: row.try_get(4)?,
        entry,
    })
}

/// One journal row to insert: the receipt fields it is filed under, and
/// the entry.
pub(crate) struct JournalRow<'a> {
    pub(crate) index: u64,
    pub(crate) time: &'a str,
    pub(crate) task_id: Option<&'a str>,
    pub(crate) tool: String,
    pub(crate) decision_id: &'a str,
    pub(crate) entry: &'a JournalEntry,
}

/// Inserts a group of journal rows in one statement; see [`insert_journal_rows`].
pub(crate) const INSERT_JOURNAL: &str =
    "INSERT INTO journal (idx, time, bytes, task_id, tool, decision_id, decision,
                          outcome, policy_version, policies, scope, redacted, request)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                          $11::text[], $12::text[], $13::text[])";

/// Inserts journal rows in one statement, [`INSERT_JOURNAL`] prepared.
pub(crate) async fn insert_journal_rows(
    tx: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    rows: &[JournalRow<'_>],
) -> Result<(), LedgerError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(insert, &JournalColumns::of(rows).params())
        .await?;
    Ok(())
}

/// Journal rows as the arrays `unnest` takes, in [`INSERT_JOURNAL`]'s
/// column order.
struct JournalColumns<'a> {
    idx: Vec<i64>,
    time: Vec<&'a str>,
    bytes: Vec<i64>,
    task: Vec<Option<&'a str>>,
    tool: Vec<&'a str>,
    decision_id: Vec<&'a str>,
    decision: Vec<&'a str>,
    outcome: Vec<&'a str>,
    version: Vec<&'a str>,
    policies: Vec<String>,
    scope: Vec<Option<String>>,
    redacted: Vec<Option<String>>,
    request: Vec<&'a str>,
}

impl<'a> JournalColumns<'a> {
    fn of(rows: &'a [JournalRow<'a>]) -> Self {
        let mut columns = Self {
            idx: Vec::with_capacity(rows.len()),
            time: Vec::with_capacity(rows.len()),
            bytes: Vec::with_capacity(rows.len()),
            task: Vec::with_capacity(rows.len()),
            tool: Vec::with_capacity(rows.len()),
            decision_id: Vec::with_capacity(rows.len()),
            decision: Vec::with_capacity(rows.len()),
            outcome: Vec::with_capacity(rows.len()),
            version: Vec::with_capacity(rows.len()),
            policies: Vec::with_capacity(rows.len()),
            scope: Vec::with_capacity(rows.len()),
            redacted: Vec::with_capacity(rows.len()),
            request: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let entry = row.entry;
            columns
                .idx
                .push(i64::try_from(row.index).unwrap_or(i64::MAX));
            columns.time.push(row.time);
            columns
                .bytes
                .push(i64::try_from(entry.stored_bytes()).unwrap_or(i64::MAX));
            columns.task.push(row.task_id);
            columns.tool.push(row.tool.as_str());
            columns.decision_id.push(row.decision_id);
            columns.decision.push(entry.decision.as_str());
            columns.outcome.push(entry.outcome.as_str());
            columns.version.push(entry.policy_version.as_str());
            let (redacted, scope, policies) = entry.list_columns();
            columns.policies.push(policies);
            columns.scope.push(scope);
            columns.redacted.push(redacted);
            columns.request.push(entry.request.as_str());
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.idx,
            &self.time,
            &self.bytes,
            &self.task,
            &self.tool,
            &self.decision_id,
            &self.decision,
            &self.outcome,
            &self.version,
            &self.policies,
            &self.scope,
            &self.redacted,
            &self.request,
        ]
    }
}

/// Sealed receipts as the arrays `unnest` takes, in the receipts table's
/// column order (see [`APPEND`]).
struct ReceiptColumns<'a> {
    idx: Vec<i64>,
    decision_id: Vec<&'a str>,
    leaf: Vec<&'a [u8]>,
    body: Vec<&'a str>,
    signature: Vec<&'a [u8]>,
    time: Vec<&'a str>,
    principal: Vec<&'a str>,
    task: Vec<Option<&'a str>>,
    tool: Vec<String>,
    decision: Vec<&'a str>,
    kind: Vec<&'a str>,
}

impl<'a> ReceiptColumns<'a> {
    fn of(sealed: &'a [(Receipt, Sealed)]) -> Self {
        let mut columns = Self {
            idx: Vec::with_capacity(sealed.len()),
            decision_id: Vec::with_capacity(sealed.len()),
            leaf: Vec::with_capacity(sealed.len()),
            body: Vec::with_capacity(sealed.len()),
            signature: Vec::with_capacity(sealed.len()),
            time: Vec::with_capacity(sealed.len()),
            principal: Vec::with_capacity(sealed.len()),
            task: Vec::with_capacity(sealed.len()),
            tool: Vec::with_capacity(sealed.len()),
            decision: Vec::with_capacity(sealed.len()),
            kind: Vec::with_capacity(sealed.len()),
        };
        for (r, seal) in sealed {
            columns.idx.push(i64::try_from(r.index).unwrap_or(i64::MAX));
            columns.decision_id.push(r.decision_id.as_str());
            columns.leaf.push(seal.leaf.0.as_slice());
            columns.body.push(seal.canonical.as_str());
            columns.signature.push(seal.signature.as_slice());
            columns.time.push(r.time.as_str());
            columns.principal.push(r.principal.id.as_str());
            columns.task.push(r.task.as_ref().map(|t| t.id.as_str()));
            columns
                .tool
                .push(format!("{}/{}", r.call.server, r.call.tool));
            columns.decision.push(r.decision.as_str());
            columns.kind.push(r.kind.as_str());
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.idx,
            &self.decision_id,
            &self.leaf,
            &self.body,
            &self.signature,
            &self.time,
            &self.principal,
            &self.task,
            &self.tool,
            &self.decision,
            &self.kind,
        ]
    }
}

/// Appends a group in one statement, so in one transaction even outside
/// any other: advances the head by the group's size only if it stands at
/// `$3`, and inserts the receipts (`$4 ..`) and journal rows (`$15 ..`)
/// only if it did. Answers the journal's byte count after the group (NULL
/// when the head stood elsewhere and nothing changed) and the rows
/// inserted.
const APPEND: &str = "
    WITH head AS (
        UPDATE log_head SET size = size + $1, journal_bytes = journal_bytes + $2
        WHERE size = $3
        RETURNING journal_bytes
    ), receipts_in AS (
        INSERT INTO receipts (idx, decision_id, leaf_hash, body, signature, time, principal,
                              task_id, tool, decision, kind)
        SELECT * FROM unnest($4::bigint[], $5::text[], $6::bytea[], $7::text[], $8::bytea[],
                             $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                             $14::text[])
        WHERE EXISTS (SELECT FROM head)
        RETURNING 1
    ), journal_in AS (
        INSERT INTO journal (idx, time, bytes, task_id, tool, decision_id, decision,
                             outcome, policy_version, policies, scope, redacted, request)
        SELECT * FROM unnest($15::bigint[], $16::text[], $17::bigint[], $18::text[], $19::text[],
                             $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                             $25::text[], $26::text[], $27::text[])
        WHERE EXISTS (SELECT FROM head)
        RETURNING 1
    )
    SELECT (SELECT journal_bytes FROM head),
           (SELECT count(*) FROM receipts_in),
           (SELECT count(*) FROM journal_in)";

/// A group appended with [`APPEND`]: the head's journal bytes after it, or
/// `None` when the head did not stand where the group was signed to start.
async fn append(
    client: &Object,
    statement: &tokio_postgres::Statement,
    start: u64,
    sealed: &[(Receipt, Sealed)],
    journal: &[JournalRow<'_>],
) -> Result<Option<i64>, LedgerError> {
    let receipts = ReceiptColumns::of(sealed);
    let entries = JournalColumns::of(journal);
    let count = i64::try_from(sealed.len()).unwrap_or(i64::MAX);
    let added: u64 = journal.iter().map(|row| row.entry.stored_bytes()).sum();
    let added = i64::try_from(added).unwrap_or(i64::MAX);
    let start = i64::try_from(start).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&count, &added, &start];
    params.extend(receipts.params());
    params.extend(entries.params());
    let row = client.query_one(statement, &params).await?;
    let bytes: Option<i64> = row.try_get(0)?;
    let (receipts_in, journal_in): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
    let entries = i64::try_from(journal.len()).unwrap_or(i64::MAX);
    let expected = if bytes.is_some() {
        (count, entries)
    } else {
        (0, 0)
    };
    if (receipts_in, journal_in) != expected {
        return Err(LedgerError::Corrupt(format!(
            "appending {count} receipts inserted {receipts_in} (and {journal_in} journal rows)"
        )));
    }
    Ok(bytes)
}

/// The log as an export, from one snapshot; see [`super::PgStore::export`].
pub(crate) async fn export(
    client: &mut Object,
    out: &mut dyn std::io::Write,
    mut progress: impl FnMut(u64),
) -> Result<crate::ExportSummary, LedgerError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut meta = std::collections::HashMap::new();
    for row in tx.query("SELECT key, value FROM mandate_meta", &[]).await? {
        meta.insert(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
    }
    let origin = meta.remove("origin").unwrap_or_default();
    let verifier_key = meta.remove("verifier_key").unwrap_or_default();
    let checkpoints = tx
        .query("SELECT size, note FROM checkpoints ORDER BY size", &[])
        .await?
        .iter()
        .map(|row| {
            let size: i64 = row.try_get(0)?;
            Ok((u64::try_from(size).unwrap_or(0), row.try_get(1)?))
        })
        .collect::<Result<Vec<(u64, String)>, LedgerError>>()?;
    let mut writer = crate::reader::ExportWriter::start(out, origin, verifier_key, checkpoints)?;
    let mut next: i64 = 0;
    loop {
        let rows = tx
            .query(
                "SELECT idx, decision_id, body, signature FROM receipts
                 WHERE idx >= $1 ORDER BY idx LIMIT 10000",
                &[&next],
            )
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        next = last.try_get::<_, i64>(0)? + 1;
        for row in &rows {
            writer.receipt(stored_receipt(row)?)?;
        }
        progress(next.unsigned_abs());
    }
    let summary = writer.finish()?;
    tx.commit().await?;
    Ok(summary)
}

/// A connection from the pool, or why there is none.
async fn get(pool: &Pool) -> Result<Object, LedgerError> {
    pool.get()
        .await
        .map_err(|e| LedgerError::Unavailable(format!("PostgreSQL: {e}")))
}

/// Records the log's key on first open; refuses another key later.
async fn record_key(
    client: &Object,
    key: &LogKey,
    verifier: &LogVerifier,
) -> Result<(), LedgerError> {
    // Two instances opening an empty database at once: the first insert
    // wins, the second reads what it wrote.
    client
        .execute(
            "INSERT INTO mandate_meta (key, value) VALUES ('origin', $1), ('verifier_key', $2)
             ON CONFLICT (key) DO NOTHING",
            &[&key.name(), &verifier.as_text()],
        )
        .await?;
    let stored: String = client
        .query_one(
            "SELECT value FROM mandate_meta WHERE key = 'verifier_key'",
            &[],
        )
        .await?
        .try_get(0)?;
    if stored == verifier.as_text() {
        Ok(())
    } else {
        Err(LedgerError::KeyMismatch {
            stored,
            configured: verifier.as_text().to_owned(),
        })
    }
}

/// The tree of every stored receipt, checking that indices run 0, 1, 2, …
async fn read_tree(client: &Object) -> Result<TiledTree, LedgerError> {
    let size: i64 = client
        .query_one("SELECT size FROM log_head", &[])
        .await?
        .try_get(0)?;
    let size = u64::try_from(size).unwrap_or(0);
    let mut tree = TiledTree::new();
    // In slices, so that a long log is never one result in memory.
    const SLICE: u64 = 65_536;
    while tree.len() < size {
        let start = tree.len();
        let leaves = leaf_hashes(client, start, SLICE.min(size - start)).await?;
        if leaves.is_empty() {
            break;
        }
        for leaf in leaves {
            tree.push(leaf);
        }
    }
    if tree.len() != size {
        return Err(LedgerError::Corrupt(format!(
            "the log's head says {size} receipts but {} are stored without a gap",
            tree.len()
        )));
    }
    Ok(tree)
}

/// Leaf hashes of indices `start .. start + count`, which must all be
/// stored.
async fn leaf_hashes(
    client: &impl GenericClient,
    start: u64,
    count: u64,
) -> Result<Vec<Hash>, LedgerError> {
    let from = i64::try_from(start).unwrap_or(i64::MAX);
    let to = i64::try_from(start.saturating_add(count)).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT idx, leaf_hash FROM receipts WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            &[&from, &to],
        )
        .await?;
    leaf_rows(&rows, start, count)
}

/// The leaf hashes in `rows` (`idx`, `leaf_hash`), which must be those of
/// indices `start .. start + count` in order.
fn leaf_rows(
    rows: &[tokio_postgres::Row],
    start: u64,
    count: u64,
) -> Result<Vec<Hash>, LedgerError> {
    let mut leaves = Vec::with_capacity(rows.len());
    for (expected, row) in (start..).zip(rows) {
        let index: i64 = row.try_get(0)?;
        if u64::try_from(index).ok() != Some(expected) {
            return Err(LedgerError::Corrupt(format!(
                "receipt index {index} where {expected} was expected: the log has a gap"
            )));
        }
        let bytes: &[u8] = row.try_get(1)?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| {
            LedgerError::Corrupt(format!("leaf hash of receipt {index} is not 32 bytes"))
        })?;
        leaves.push(Hash(hash));
    }
    if leaves.len() as u64 != count {
        return Err(LedgerError::Corrupt(format!(
            "{} of the receipts {start}..{} are stored: the log has a gap",
            leaves.len(),
            start.saturating_add(count)
        )));
    }
    Ok(leaves)
}

/// The newest stored checkpoint, as stored (not yet verified).
async fn newest_checkpoint(
    client: &impl GenericClient,
) -> Result<Option<SignedCheckpoint>, LedgerError> {
    let row = client
        .query_opt(
            "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1",
            &[],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let size: i64 = row.try_get(0)?;
    let root: &[u8] = row.try_get(1)?;
    let root: [u8; 32] = root
        .try_into()
        .map_err(|_| LedgerError::Corrupt("a checkpoint's root is not 32 bytes".to_owned()))?;
    Ok(Some(SignedCheckpoint {
        size: u64::try_from(size).unwrap_or(0),
        root: Hash(root),
        note: row.try_get(2)?,
    }))
}

fn stored_receipt(row: &tokio_postgres::Row) -> Result<StoredReceipt, LedgerError> {
    let index: i64 = row.try_get(0)?;
    Ok(StoredReceipt {
        index: u64::try_from(index)
            .map_err(|_| LedgerError::Corrupt(format!("receipt index {index}")))?,
        decision_id: row.try_get(1)?,
        body: row.try_get(2)?,
        signature: row.try_get(3)?,
    })
}

/// Leaf hashes for proofs, read from the database. Its calls block: only
/// ever used on tokio's blocking pool.
struct PgLeaves {
    pool: Pool,
    runtime: Option<tokio::runtime::Handle>,
}

impl PgLeaves {
    fn new(pool: Pool) -> Self {
        Self {
            pool,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

impl LeafSource for PgLeaves {
    fn leaf_hashes(&self, start: u64, count: u64) -> Result<Vec<Hash>, String> {
        let Some(runtime) = &self.runtime else {
            return Err("no async runtime to read leaf hashes on".to_owned());
        };
        runtime
            .block_on(async {
                let client = get(&self.pool).await?;
                leaf_hashes(&client, start, count).await
            })
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl crate::ReceiptLog for PgLog {
    fn verifier(&self) -> &LogVerifier {
        PgLog::verifier(self)
    }

    fn size(&self) -> u64 {
        PgLog::size(self)
    }

    /// Why the last write failed, until one succeeds. A failed write fails
    /// its group only (the next group starts from what the database holds),
    /// so the log recovers by itself when the database does.
    fn failure(&self) -> Option<String> {
        self.inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn latest_checkpoint(&self) -> SignedCheckpoint {
        PgLog::latest_checkpoint(self)
    }

    fn journal_bytes(&self) -> u64 {
        self.inner
            .journal_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn append(
        &self,
        receipt: Receipt,
        journal: Option<JournalEntry>,
    ) -> Result<Appended, LedgerError> {
        PgLog::append(self, receipt, journal).await
    }

    async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        PgLog::checkpoint(self).await
    }

    async fn stored(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError> {
        PgLog::stored(self, decision_id).await
    }

    async fn receipt(&self, decision_id: &str) -> Result<Option<ReceiptProof>, LedgerError> {
        PgLog::receipt(self, decision_id).await
    }

    async fn search(
        &self,
        query: ReceiptQuery,
    ) -> Result<Vec<(StoredReceipt, Option<ReceiptProof>)>, LedgerError> {
        PgLog::search(self, query).await
    }

    async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError> {
        PgLog::consistency(self, from, to).await
    }

    async fn close(&self) -> Result<SignedCheckpoint, LedgerError> {
        PgLog::close(self).await
    }
}
