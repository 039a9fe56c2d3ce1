//! The RFC 6962 Merkle tree over the log's leaves, held in memory.
//!
//! Hashing and proofs come from `tlog_tiles` (a port of Go's
//! `golang.org/x/mod/sumdb/tlog`): leaves are `SHA-256(0x00 || data)`, nodes
//! `SHA-256(0x01 || left || right)`. The tree keeps every "stored hash" of
//! that scheme (the hashes of all complete subtrees, about two per leaf), so
//! a root, an inclusion proof or a consistency proof costs O(log n) reads.

use tlog_tiles::{Hash, HashReader};

use crate::proof::{ConsistencyProof, InclusionProof, ProofError};

/// An append-only Merkle tree.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// Stored hashes in `tlog` order: leaf `n`'s hashes start at
    /// `stored_hash_index(0, n)`.
    stored: Vec<Hash>,
    leaves: u64,
}

impl HashReader for MerkleTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.stored.get(i))
                    .copied()
                    .ok_or(tlog_tiles::Error::InvalidProof)
            })
            .collect()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// Appends a leaf given its leaf hash; returns the leaf's index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.leaves;
        // Reading only hashes this tree holds cannot fail.
        let hashes =
            tlog_tiles::stored_hashes_for_record_hash(index, leaf_hash, &*self).unwrap_or_default();
        self.stored.extend(hashes);
        self.leaves += 1;
        index
    }

    /// Root hash of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        root(self, size)
    }

    /// Proof that leaf `index` is in the tree of the first `size` leaves.
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Result<InclusionProof, ProofError> {
        prove_inclusion(self, index, size)
    }

    /// Proof that the tree of the first `from` leaves is a prefix of the tree
    /// of the first `to` leaves.
    pub fn prove_consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, ProofError> {
        prove_consistency(self, from, to)
    }
}

impl StoredHashes for MerkleTree {
    fn leaves(&self) -> u64 {
        self.leaves
    }
}

/// Where a tree's stored hashes come from, as roots and proofs read them:
/// every hash in memory ([`MerkleTree`]), or tile heads and leaf hashes
/// read back ([`TiledTree`](crate::TiledTree)).
pub(crate) trait StoredHashes: HashReader {
    /// Leaves in the tree.
    fn leaves(&self) -> u64;

    /// What a failed read means; `tlog_tiles` reports every failure as one
    /// kind of error.
    fn failed(&self) -> ProofError {
        ProofError::Invalid
    }
}

/// Root hash of the first `size` leaves of `tree`.
pub(crate) fn root(tree: &impl StoredHashes, size: u64) -> Result<Hash, ProofError> {
    let leaves = tree.leaves();
    if size > leaves {
        return Err(ProofError::BeyondTree { size, leaves });
    }
    tlog_tiles::tree_hash(size, tree).map_err(|_| tree.failed())
}

/// Proof that leaf `index` is in the tree of the first `size` leaves.
pub(crate) fn prove_inclusion(
    tree: &impl StoredHashes,
    index: u64,
    size: u64,
) -> Result<InclusionProof, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    root(tree, size)?;
    let hashes = tlog_tiles::prove_record(size, index, tree).map_err(|_| tree.failed())?;
    Ok(InclusionProof {
        index,
        tree_size: size,
        hashes,
    })
}

/// Proof that the tree of the first `from` leaves is a prefix of the tree of
/// the first `to` leaves.
pub(crate) fn prove_consistency(
    tree: &impl StoredHashes,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, ProofError> {
    if from > to {
        return Err(ProofError::Backwards { from, to });
    }
    root(tree, to)?;
    let hashes = if from == 0 || from == to {
        Vec::new()
    } else {
        tlog_tiles::prove_tree(to, from, tree).map_err(|_| tree.failed())?
    };
    Ok(ConsistencyProof { from, to, hashes })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn empty_tree_root_is_the_hash_of_nothing() {
        let tree = MerkleTree::new();
        assert_eq!(tree.root(0).unwrap(), tlog_tiles::EMPTY_HASH);
        assert!(tree.root(1).is_err());
    }

    #[test]
    fn roots_of_prefixes_stay_put_as_the_tree_grows() {
        let mut tree = MerkleTree::new();
        let mut roots = Vec::new();
        for i in 0..40u32 {
            tree.push(tlog_tiles::record_hash(&i.to_be_bytes()));
            roots.push(tree.root(tree.len()).unwrap());
        }
        for (size, root) in (1..=40u64).zip(roots) {
            assert_eq!(tree.root(size).unwrap(), root);
        }
    }
}
