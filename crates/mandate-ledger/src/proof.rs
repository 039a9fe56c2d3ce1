//! Inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2), as JSON
//! with base64 hashes, and their verification.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tlog_tiles::Hash;

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof does not link the leaf or old tree to the root.
    #[error("the proof does not verify")]
    Invalid,
    /// A tree size beyond the log's current size was asked for.
    #[error("tree size {size} is beyond the log's {leaves} entries")]
    BeyondTree {
        /// Size asked for.
        size: u64,
        /// Entries in the log.
        leaves: u64,
    },
    /// A leaf index not inside the tree size.
    #[error("index {index} is not inside a tree of size {size}")]
    IndexOutOfRange {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The leaf hashes a proof needs could not be read from storage.
    #[error("the log's leaf hashes cannot be read: {0}")]
    Leaves(String),
    /// A consistency proof from a larger tree to a smaller one.
    #[error("cannot prove consistency from size {from} back to size {to}")]
    Backwards {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
}

/// Proof that one leaf is in a tree of a given size (RFC 6962 audit path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Size of the tree the proof is against.
    pub tree_size: u64,
    /// Audit path, leaf side first, base64.
    #[serde(serialize_with = "hashes_out", deserialize_with = "hashes_in")]
    pub hashes: Vec<Hash>,
}

/// Proof that a tree of size `from` is a prefix of the tree of size `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Older tree size.
    pub from: u64,
    /// Newer tree size.
    pub to: u64,
    /// Consistency path (RFC 6962 `PROOF(m, D[n])`), base64.
    #[serde(serialize_with = "hashes_out", deserialize_with = "hashes_in")]
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that `leaf_hash` is leaf `self.index` of the tree whose root is `root`.
    pub fn verify(&self, leaf_hash: Hash, root: Hash) -> Result<(), ProofError> {
        if self.index >= self.tree_size {
            return Err(ProofError::IndexOutOfRange {
                index: self.index,
                size: self.tree_size,
            });
        }
        tlog_tiles::check_record(&self.hashes, self.tree_size, root, self.index, leaf_hash)
            .map_err(|_| ProofError::Invalid)
    }
}

impl ConsistencyProof {
    /// Checks that the tree with root `old_root` (size `from`) is a prefix of
    /// the tree with root `new_root` (size `to`).
    pub fn verify(&self, old_root: Hash, new_root: Hash) -> Result<(), ProofError> {
        if self.from > self.to {
            return Err(ProofError::Backwards {
                from: self.from,
                to: self.to,
            });
        }
        if self.from == 0 {
            // Every tree extends the empty tree.
            return if self.hashes.is_empty() && old_root == tlog_tiles::EMPTY_HASH {
                Ok(())
            } else {
                Err(ProofError::Invalid)
            };
        }
        if self.from == self.to {
            return if self.hashes.is_empty() && old_root == new_root {
                Ok(())
            } else {
                Err(ProofError::Invalid)
            };
        }
        tlog_tiles::check_tree(&self.hashes, self.to, new_root, self.from, old_root)
            .map_err(|_| ProofError::Invalid)
    }
}

/// A hash as standard base64, the encoding checkpoints use.
pub fn hash_to_base64(hash: &Hash) -> String {
    BASE64.encode(hash.0)
}

/// Parses a standard-base64 SHA-256 hash.
pub fn hash_from_base64(text: &str) -> Option<Hash> {
    let bytes = BASE64.decode(text).ok()?;
    let array: [u8; 32] = bytes.try_into().ok()?;
    Some(Hash(array))
}

fn hashes_out<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hashes.iter().map(hash_to_base64))
}

fn hashes_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            hash_from_base64(t).ok_or_else(|| serde::de::Error::custom("not a base64 SHA-256 hash"))
        })
        .collect()
}
