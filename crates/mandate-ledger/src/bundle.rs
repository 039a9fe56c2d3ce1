//! A receipt with everything a third party needs to check it offline: its
//! signature, its inclusion proof, and the signed checkpoint the proof is
//! against. `GET /v1/receipts/{id}` and `mandate receipts prove` return one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mandate_core::json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::key::LogVerifier;
use crate::proof::{InclusionProof, ProofError};
use crate::receipt::{ReceiptError, canonical_json, leaf_hash};

/// A receipt and its proofs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptBundle {
    /// The receipt's canonical JSON, as stored.
    pub receipt: Box<RawValue>,
    /// Base64 Ed25519 signature over the receipt.
    pub signature: String,
    /// Proof that the receipt is leaf `inclusion_proof.index` of the tree in `checkpoint`.
    pub inclusion_proof: InclusionProof,
    /// The signed checkpoint (C2SP signed note) the proof is against.
    pub checkpoint: String,
    /// The log's verifier key, as the server reports it. Check against a key
    /// you trust; never trust this field alone.
    pub verifier_key: String,
}

/// Why a bundle does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The receipt is not valid JSON.
    #[error("the receipt is not valid JSON: {0}")]
    Receipt(#[from] ReceiptError),
    /// The receipt has the same name twice in an object.
    #[error("the receipt is not valid RFC 8785 input: {0}")]
    DuplicateKey(json::DuplicateKeyError),
    /// The receipt's signature is not the log key's.
    #[error("the receipt's signature does not verify: the receipt was changed or forged")]
    Signature,
    /// The receipt claims another leaf index than the proof.
    #[error("the receipt says index {receipt}, the proof is for index {proof}")]
    IndexMismatch {
        /// Index in the receipt.
        receipt: u64,
        /// Index in the proof.
        proof: u64,
    },
    /// The checkpoint is not the log key's.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The proof is for another tree size than the checkpoint's.
    #[error("the proof is against tree size {proof}, the checkpoint has size {checkpoint}")]
    SizeMismatch {
        /// Size in the proof.
        proof: u64,
        /// Size in the checkpoint.
        checkpoint: u64,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("the inclusion proof does not verify against the checkpoint: {0}")]
    Proof(#[from] ProofError),
}

impl ReceiptBundle {
    /// Checks the receipt signature, the checkpoint signature and the
    /// inclusion proof, all with `verifier` (a key the caller trusts).
    /// Returns the opened checkpoint.
    pub fn verify(&self, verifier: &LogVerifier) -> Result<SignedCheckpoint, BundleError> {
        let value: serde_json::Value = serde_json::from_str(self.receipt.get())
            .map_err(|e| BundleError::Receipt(ReceiptError::Canonical(e)))?;
        // Unique names, as RFC 8785 requires: with a duplicate, the value a
        // reader shows could be another than the one that was signed.
        if let Err(json::ParseError::DuplicateKey(e)) =
            json::from_slice(self.receipt.get().as_bytes())
        {
            return Err(BundleError::DuplicateKey(e));
        }
        let canonical = canonical_json(&value)?;
        let signature = BASE64
            .decode(&self.signature)
            .map_err(|_| BundleError::Signature)?;
        if !verifier.verify_entry(&canonical, &signature) {
            return Err(BundleError::Signature);
        }
        let index = value
            .get("index")
            .and_then(serde_json::Value::as_u64)
            .ok_or(ReceiptError::NoIndex)?;
        if index != self.inclusion_proof.index {
            return Err(BundleError::IndexMismatch {
                receipt: index,
                proof: self.inclusion_proof.index,
            });
        }
        let checkpoint = SignedCheckpoint::open(verifier, &self.checkpoint)?;
        if checkpoint.size != self.inclusion_proof.tree_size {
            return Err(BundleError::SizeMismatch {
                proof: self.inclusion_proof.tree_size,
                checkpoint: checkpoint.size,
            });
        }
        self.inclusion_proof
            .verify(leaf_hash(&canonical), checkpoint.root)?;
        Ok(checkpoint)
    }
}
