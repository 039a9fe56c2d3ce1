//! The receipt boundary: [`ReceiptLog`] is the append-only, signed Merkle
//! log of decisions as the gateway uses it. [`Ledger`] (`ledger.db`, one
//! writer thread with group commit) is the embedded implementation; the
//! server holds only `Arc<dyn ReceiptLog>`.
//!
//! The contract every implementation keeps: `append` answers only once the
//! receipt is durable (an acknowledged receipt is never lost), indices are
//! dense and in acknowledgement order, and every checkpoint is signed with
//! the one key [`verifier`](ReceiptLog::verifier) names.

use async_trait::async_trait;
use mandate_ledger::{ConsistencyProof, LogVerifier, Receipt, SignedCheckpoint};

use crate::{
    Appended, JournalEntry, Ledger, LedgerError, ReceiptProof, ReceiptQuery, StoredReceipt,
};

/// The receipt log as the gateway uses it.
#[async_trait]
pub trait ReceiptLog: Send + Sync {
    /// The log's public key.
    fn verifier(&self) -> &LogVerifier;

    /// Receipts committed so far.
    fn size(&self) -> u64;

    /// Why the log stopped accepting receipts, if it did.
    fn failure(&self) -> Option<String>;

    /// The newest signed checkpoint (it may not cover the last few receipts).
    fn latest_checkpoint(&self) -> SignedCheckpoint;

    /// Bytes the decision journal holds, as retention counts them, as of
    /// this instance's last write or pruning.
    fn journal_bytes(&self) -> u64;

    /// Appends `receipt` (the log assigns its `index`), with its decision's
    /// journal entry if it has one, in one commit; answers once both are
    /// durable.
    async fn append(
        &self,
        receipt: Receipt,
        journal: Option<JournalEntry>,
    ) -> Result<Appended, LedgerError>;

    /// A checkpoint covering every receipt committed before the call.
    async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError>;

    /// The receipt of `decision_id` as stored, without a proof.
    async fn stored(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError>;

    /// The receipt of `decision_id` with its inclusion proof against a
    /// checkpoint that covers it.
    async fn receipt(&self, decision_id: &str) -> Result<Option<ReceiptProof>, LedgerError>;

    /// Receipts matching `query`, newest first, each with its inclusion
    /// proof when the newest checkpoint covers it.
    async fn search(
        &self,
        query: ReceiptQuery,
    ) -> Result<Vec<(StoredReceipt, Option<ReceiptProof>)>, LedgerError>;

    /// Proof that the tree of size `from` is a prefix of the tree of size
    /// `to`; both within the newest checkpoint.
    async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError>;

    /// Signs a last checkpoint and stops accepting receipts.
    async fn close(&self) -> Result<SignedCheckpoint, LedgerError>;
}

#[async_trait]
impl ReceiptLog for Ledger {
    fn verifier(&self) -> &LogVerifier {
        Ledger::verifier(self)
    }

    fn size(&self) -> u64 {
        Ledger::size(self)
    }

    fn failure(&self) -> Option<String> {
        Ledger::failure(self)
    }

    fn latest_checkpoint(&self) -> SignedCheckpoint {
        Ledger::latest_checkpoint(self)
    }

    fn journal_bytes(&self) -> u64 {
        Ledger::journal_bytes(self)
    }

    async fn append(
        &self,
        receipt: Receipt,
        journal: Option<JournalEntry>,
    ) -> Result<Appended, LedgerError> {
        Ledger::append(self, receipt, journal).await
    }

    async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        Ledger::checkpoint(self).await
    }

    async fn stored(&self, decision_id: &str) -> Result<Option<StoredReceipt>, LedgerError> {
        Ledger::stored(self, decision_id).await
    }

    async fn receipt(&self, decision_id: &str) -> Result<Option<ReceiptProof>, LedgerError> {
        Ledger::receipt(self, decision_id).await
    }

    async fn search(
        &self,
        query: ReceiptQuery,
    ) -> Result<Vec<(StoredReceipt, Option<ReceiptProof>)>, LedgerError> {
        Ledger::search(self, query).await
    }

    async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError> {
        // Reads up to a tile of leaf hashes from disk: off the runtime.
        let this = self.clone();
        tokio::task::spawn_blocking(move || Ledger::consistency(&this, from, to))
            .await
            .map_err(|e| LedgerError::Io(std::io::Error::other(e)))?
    }

    async fn close(&self) -> Result<SignedCheckpoint, LedgerError> {
        Ledger::close(self).await
    }
}
