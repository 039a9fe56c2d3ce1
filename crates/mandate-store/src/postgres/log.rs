//! The receipt log on PostgreSQL, shared by every instance on the database.
//!
//! # Sequencing
//!
//! Each instance has one writer task that takes every receipt waiting and
//! commits them in one transaction (group commit, as the SQLite ledger
//! does). The transaction first advances the one row of `log_head`, which
//! holds the number of receipts committed, by the group's size, and so
//! takes that row's lock: while it holds the lock no other instance can
//! append, so the indices it reserved (`size`, `size + 1`, …) follow the
//! last committed receipt of any instance, and, since the reservation
//! commits or rolls back with the receipts, the log has one sequence with
//! no gaps and no duplicates. The index is part of what is signed, so
//! receipts are signed under the lock; the lock is held for the signing,
//! one insert of the whole group and the commit. That lock is the log's
//! bottleneck: instances take turns, each turn shares one commit among
//! every receipt the instance has waiting.
//!
//! Decision ids are fresh, so a group does not look its ids up first: the
//! unique index on `receipts.decision_id` refuses a group holding one the
//! log has, and that group alone is tried again with a look-up under the
//! lock, refusing only the receipt that clashed.
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
    /// has already (another path may have read them first).
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

        // With a look-up, the lock is taken first so that what the look-up
        // finds is all that can clash: no other instance appends meanwhile.
        let mut taken = std::collections::HashSet::new();
        if plan == Plan::LookUp {
            let ids: Vec<&str> = receipts
                .iter()
                .map(|(r, _)| r.decision_id.as_str())
                .collect();
            let lookup: [&(dyn ToSql + Sync); 1] = [&ids];
            let (begin, lock, stored) = tokio::join!(
                client.batch_execute("BEGIN"),
                client.query_one(&statements.lock, &[]),
                client.query(&statements.lookup, &lookup),
            );
            begin?;
            lock?;
            for row in stored? {
                taken.insert(row.try_get::<_, String>(0)?);
            }
        }
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
        let count = i64::try_from(group.len()).unwrap_or(i64::MAX);
        let added: u64 = group
            .iter()
            .filter_map(|(_, entry)| entry.map(JournalEntry::stored_bytes))
            .sum();
        let added = i64::try_from(added).unwrap_or(i64::MAX);
        let reserve = async {
            let row = client
                .query_one(&statements.reserve, &[&count, &added])
                .await?;
            let (start, bytes) = (row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?);
            let start = u64::try_from(start)
                .map_err(|_| LedgerError::Corrupt(format!("the log's head holds size {start}")))?;
            Ok::<_, LedgerError>((start, bytes))
        };

        if plan == Plan::Predict {
            // Signed for the indices after what this instance knows, and
            // sent with the reservation: if another instance appended
            // meanwhile, the index `known` is taken and the log's primary key
            // refuses the group.
            let sealed = seal(&self.inner.key, &group, known)?;
            let journal = journal_of(&group);
            let (begin, reserved, inserted, journaled, commit) = tokio::join!(
                client.batch_execute("BEGIN"),
                reserve,
                insert_receipts(client, &statements.insert_receipts, &sealed),
                insert_journal(client, &statements.insert_journal, &sealed, &journal),
                client.batch_execute("COMMIT"),
            );
            commit?;
            open.ended();
            begin?;
            let (start, journal_bytes) = reserved?;
            let refused = refusal(inserted.and(journaled))?;
            if start != known {
                return match refused {
                    Some(_) => Ok(Attempt::Mispredicted),
                    None => Err(LedgerError::Corrupt(format!(
                        "receipts signed for index {known} were committed at {start}"
                    ))),
                };
            }
            if let Some(attempt) = refused {
                return Ok(attempt);
            }
            return Ok(Attempt::Committed(self.committed(
                start,
                sealed,
                answers,
                None,
                journal_bytes,
            )?));
        }

        // The leaves read after the reservation, under the lock: every
        // receipt committed before this group, and none of its own.
        let from = i64::try_from(known).unwrap_or(i64::MAX);
        let from: [&(dyn ToSql + Sync); 1] = [&from];
        let leaves = client.query(&statements.leaves_from, &from);
        let (reserved, leaves) = if plan == Plan::LookUp {
            tokio::join!(reserve, leaves)
        } else {
            // A `BEGIN` that fails leaves the statements after it failing
            // too (the session is in an aborted transaction, or gone), so
            // the reservation never runs outside the transaction.
            let (begin, reserved, leaves) =
                tokio::join!(client.batch_execute("BEGIN"), reserve, leaves);
            begin?;
            (reserved, leaves)
        };
        let (start, journal_bytes) = reserved?;
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

        let sealed = seal(&self.inner.key, &group, start)?;
        let journal = journal_of(&group);
        let new_size = start + sealed.len() as u64;
        let checkpoint = if sign {
            self.checkpoint_in(client, &sealed, new_size).await?
        } else {
            None
        };
        let (inserted, journaled, commit) = tokio::join!(
            insert_receipts(client, &statements.insert_receipts, &sealed),
            insert_journal(client, &statements.insert_journal, &sealed, &journal),
            client.batch_execute("COMMIT"),
        );
        // An answered `COMMIT` ends the transaction: committed if every
        // statement before it succeeded, rolled back if one failed. An
        // unanswered one leaves it uncertain, and the connection is closed.
        commit?;
        open.ended();
        match refusal(inserted.and(journaled))? {
            Some(Attempt::Mispredicted) => Err(LedgerError::Corrupt(format!(
                "index {start} was taken under the log's lock"
            ))),
            Some(attempt) => Ok(attempt),
            None => Ok(Attempt::Committed(self.committed(
                start,
                sealed,
                answers,
                checkpoint,
                journal_bytes,
            )?)),
        }
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

    /// Within the group's transaction: a checkpoint over the log with
    /// `sealed` (its newest `new_size` receipts' last), signed and inserted
    /// unless the newest stored one covers it already.
    async fn checkpoint_in(
        &self,
        client: &Object,
        sealed: &[(Receipt, Sealed)],
        new_size: u64,
    ) -> Result<Option<SignedCheckpoint>, LedgerError> {
        let stored = newest_checkpoint(client).await?;
        if let Some(stored) = stored.filter(|c| c.size >= new_size) {
            return Ok(Some(SignedCheckpoint::open(
                &self.inner.verifier,
                &stored.note,
            )?));
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
        client
            .execute(
                "INSERT INTO checkpoints (size, root, note) VALUES ($1, $2, $3)",
                &[
                    &i64::try_from(new_size).unwrap_or(i64::MAX),
                    &signed.root.0.as_slice(),
                    &signed.note,
                ],
            )
            .await?;
        Ok(Some(signed))
    }
}

/// What a committed group answers: each receipt's outcome, in order, and
/// the checkpoint signed with it, if one was asked for.
type Committed = (Vec<Result<Appended, LedgerError>>, Option<SignedCheckpoint>);

/// How a group finds where it starts in the log and whether the log holds
/// one of its decision ids already. Decision ids are fresh, so the first
/// two plans assume none is held and let the unique index on
/// `receipts.decision_id` say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Alone on the log (the last group found no other instance's receipt
    /// before its own), the instance predicts that the group starts where
    /// its tree ends, signs it first and sends it in one batch: `BEGIN`,
    /// the reservation, the inserts, `COMMIT`. One round trip; the log's
    /// primary key refuses a wrong prediction.
    Predict,
    /// `BEGIN` with the reservation of the group's indices (which takes the
    /// head's row lock) and the read of leaves other instances committed;
    /// then, signed, the inserts with `COMMIT`. Two round trips, one under
    /// the lock.
    Reserve,
    /// The head's lock and a look-up of the ids first, then as
    /// [`Plan::Reserve`]: three round trips, and no clash possible.
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

/// Why the group's inserts were refused, if they were: `Ok(None)` when
/// they went in, an attempt to make again when PostgreSQL refused them for
/// a reason another plan avoids, the error otherwise.
fn refusal(inserted: Result<(), LedgerError>) -> Result<Option<Attempt>, LedgerError> {
    match inserted {
        Ok(()) => Ok(None),
        Err(LedgerError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            match e.as_db_error().and_then(|e| e.constraint()) {
                Some("receipts_decision_id_key") => Ok(Some(Attempt::Clashed)),
                Some("receipts_pkey") => Ok(Some(Attempt::Mispredicted)),
                _ => Err(LedgerError::Postgres(e)),
            }
        }
        Err(e) => Err(e),
    }
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

/// The journal entries of `group`, each with its receipt's place in it.
fn journal_of<'a>(
    group: &[(&Receipt, Option<&'a JournalEntry>)],
) -> Vec<(usize, &'a JournalEntry)> {
    group
        .iter()
        .enumerate()
        .filter_map(|(at, (_, entry))| entry.map(|entry| (at, entry)))
        .collect()
}

/// The statements of a group's transaction, prepared once per connection.
struct GroupStatements {
    lock: tokio_postgres::Statement,
    lookup: tokio_postgres::Statement,
    reserve: tokio_postgres::Statement,
    leaves_from: tokio_postgres::Statement,
    insert_receipts: tokio_postgres::Statement,
    insert_journal: tokio_postgres::Statement,
}

impl GroupStatements {
    /// Prepared before the transaction's first batch: a statement given as
    /// text would be prepared on first use, a round trip of its own that
    /// would also let a later statement of the batch (`COMMIT`) overtake it.
    async fn prepare(client: &Object) -> Result<Self, LedgerError> {
        Ok(Self {
            lock: client
                .prepare_cached("SELECT size FROM log_head FOR UPDATE")
                .await?,
            lookup: client
                .prepare_cached("SELECT decision_id FROM receipts WHERE decision_id = ANY($1)")
                .await?,
            reserve: client
                .prepare_cached(
                    "UPDATE log_head SET size = size + $1, journal_bytes = journal_bytes + $2
                     RETURNING size - $1, journal_bytes",
                )
                .await?,
            leaves_from: client
                .prepare_cached("SELECT idx, leaf_hash FROM receipts WHERE idx >= $1 ORDER BY idx")
                .await?,
            insert_receipts: client.prepare_cached(INSERT_RECEIPTS).await?,
            insert_journal: client.prepare_cached(INSERT_JOURNAL).await?,
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

/// Inserts the journal entries of a group of sealed receipts
/// (`(position in sealed, entry)`) in one statement.
async fn insert_journal(
    tx: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    sealed: &[(Receipt, Sealed)],
    journal: &[(usize, &JournalEntry)],
) -> Result<(), LedgerError> {
    let mut rows = Vec::with_capacity(journal.len());
    for (at, entry) in journal {
        let Some((r, _)) = sealed.get(*at) else {
            return Err(LedgerError::Corrupt(
                "a journal entry lost its receipt".to_owned(),
            ));
        };
        rows.push(JournalRow {
            index: r.index,
            time: &r.time,
            task_id: r.task.as_ref().map(|t| t.id.as_str()),
            tool: format!("{}/{}", r.call.server, r.call.tool),
            decision_id: &r.decision_id,
            entry,
        });
    }
    insert_journal_rows(tx, insert, &rows).await
}

/// Inserts a group of journal rows in one statement; see [`insert_journal_rows`].
pub(crate) const INSERT_JOURNAL: &str =
    "INSERT INTO journal (idx, time, bytes, task_id, tool, decision_id, decision,
                          outcome, policy_version, policies, scope, redacted, request)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                          $11::text[], $12::text[], $13::text[])";

/// Inserts a group of receipts in one statement; see [`insert_receipts`].
const INSERT_RECEIPTS: &str =
    "INSERT INTO receipts (idx, decision_id, leaf_hash, body, signature, time, principal, task_id, tool, decision, kind)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::text[],
                          $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])";

/// Inserts journal rows in one statement, [`INSERT_JOURNAL`] prepared.
pub(crate) async fn insert_journal_rows(
    tx: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    rows: &[JournalRow<'_>],
) -> Result<(), LedgerError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut idx, mut time, mut bytes, mut task, mut tool, mut decision_id) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut outcome = Vec::with_capacity(n);
    let (mut decision, mut version, mut policies, mut scope, mut redacted, mut request) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        let entry = row.entry;
        idx.push(i64::try_from(row.index).unwrap_or(i64::MAX));
        time.push(row.time);
        bytes.push(i64::try_from(entry.stored_bytes()).unwrap_or(i64::MAX));
        task.push(row.task_id);
        tool.push(row.tool.as_str());
        decision_id.push(row.decision_id);
        decision.push(entry.decision.as_str());
        outcome.push(entry.outcome.as_str());
        version.push(entry.policy_version.as_str());
        let (red, sc, pol) = entry.list_columns();
        policies.push(pol);
        scope.push(sc);
        redacted.push(red);
        request.push(entry.request.as_str());
    }
    tx.execute(
        insert,
        &[
            &idx,
            &time,
            &bytes,
            &task,
            &tool,
            &decision_id,
            &decision,
            &outcome,
            &version,
            &policies,
            &scope,
            &redacted,
            &request,
        ],
    )
    .await?;
    Ok(())
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

/// Inserts a group of sealed receipts in one statement, [`INSERT_RECEIPTS`]
/// prepared.
async fn insert_receipts(
    tx: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    sealed: &[(Receipt, Sealed)],
) -> Result<(), LedgerError> {
    let mut idx = Vec::with_capacity(sealed.len());
    let mut decision_id = Vec::with_capacity(sealed.len());
    let mut leaf = Vec::with_capacity(sealed.len());
    let mut body = Vec::with_capacity(sealed.len());
    let mut signature = Vec::with_capacity(sealed.len());
    let mut time = Vec::with_capacity(sealed.len());
    let mut principal = Vec::with_capacity(sealed.len());
    let mut task = Vec::with_capacity(sealed.len());
    let mut tool = Vec::with_capacity(sealed.len());
    let mut decision = Vec::with_capacity(sealed.len());
    let mut kind = Vec::with_capacity(sealed.len());
    for (r, seal) in sealed {
        idx.push(i64::try_from(r.index).unwrap_or(i64::MAX));
        decision_id.push(r.decision_id.as_str());
        leaf.push(seal.leaf.0.as_slice());
        body.push(seal.canonical.as_str());
        signature.push(seal.signature.as_slice());
        time.push(r.time.as_str());
        principal.push(r.principal.id.as_str());
        task.push(r.task.as_ref().map(|t| t.id.as_str()));
        tool.push(format!("{}/{}", r.call.server, r.call.tool));
        decision.push(r.decision.as_str());
        kind.push(r.kind.as_str());
    }
    tx.execute(
        insert,
        &[
            &idx,
            &decision_id,
            &leaf,
            &body,
            &signature,
            &time,
            &principal,
            &task,
            &tool,
            &decision,
            &kind,
        ],
    )
    .await?;
    Ok(())
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
