//! The log's Merkle tree as a server keeps it: tile heads in memory, leaves
//! on disk.
//!
//! [`MerkleTree`](crate::MerkleTree) holds every stored hash, about 64 bytes
//! per leaf: right for an auditor checking an export, wrong for a server
//! whose log grows for as long as it runs. [`TiledTree`] keeps only what it
//! cannot cheaply read back: the hashes of complete subtrees of
//! [`TILE_WIDTH`] leaves and more (a 256th of the leaves' count, about a
//! quarter of a byte per leaf), and the leaf hashes of the last, incomplete
//! tile. A hash inside a complete tile is recomputed from its leaf hashes,
//! which the caller's [`LeafSource`] (the ledger's database) reads, when a
//! root or proof of an older size needs it: at most 255 leaf hashes per
//! hash. The root of the whole tree needs no read at all.
//!
//! The hashes, roots and proofs are those of [`MerkleTree`](crate::MerkleTree)
//! (RFC 6962 via `tlog_tiles`), which the tests check size by size.

use std::cell::RefCell;

use tlog_tiles::{Hash, HashReader};

use crate::merkle::{self, StoredHashes};
use crate::proof::{ConsistencyProof, InclusionProof, ProofError};

/// Height of the bottom tiles whose inner hashes are not kept.
pub const TILE_HEIGHT: u8 = 8;

/// Leaves in a bottom tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// Where the leaf hashes of the tree come from when a proof needs them.
pub trait LeafSource {
    /// The leaf hashes of indexes `start .. start + count`, in order. Only
    /// leaves of the tree of the size asked for are ever requested.
    fn leaf_hashes(&self, start: u64, count: u64) -> Result<Vec<Hash>, String>;
}

/// An append-only Merkle tree that keeps its tile heads in memory and reads
/// leaf hashes from a [`LeafSource`].
#[derive(Debug, Clone, Default)]
pub struct TiledTree {
    leaves: u64,
    /// `heads[k][n]`: hash of the `n`-th complete subtree of
    /// `2^(TILE_HEIGHT + k)` leaves.
    heads: Vec<Vec<Hash>>,
    /// Leaf hashes of the incomplete tile at the end (fewer than
    /// [`TILE_WIDTH`]).
    open: Vec<Hash>,
}

impl TiledTree {
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

    /// Hashes held in memory, for tests and metrics: tile heads plus the
    /// open tile's leaves.
    pub fn hashes_in_memory(&self) -> usize {
        self.heads.iter().map(Vec::len).sum::<usize>() + self.open.len()
    }

    /// Appends a leaf given its leaf hash; returns the leaf's index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.leaves;
        self.leaves += 1;
        self.open.push(leaf_hash);
        if self.open.len() as u64 == TILE_WIDTH {
            let mut hash = subtree_hash(&self.open);
            self.open.clear();
            for k in 0.. {
                if self.heads.len() == k {
                    self.heads.push(Vec::new());
                }
                let Some(level) = self.heads.get_mut(k) else {
                    break;
                };
                level.push(hash);
                match level.as_slice() {
                    [.., left, right] if level.len() % 2 == 0 => {
                        hash = tlog_tiles::node_hash(*left, *right);
                    }
                    _ => break,
                }
            }
        }
        index
    }

    /// Root hash of the whole tree, from memory alone.
    pub fn head(&self) -> Hash {
        let reader = self.reader(&NoLeaves);
        // Every hash of the whole tree's root is a tile head or in the open
        // tile: the read cannot fail.
        tlog_tiles::tree_hash(self.leaves, &reader).unwrap_or(tlog_tiles::EMPTY_HASH)
    }

    /// Root hash of the tree's first `size` leaves.
    pub fn root(&self, size: u64, source: &impl LeafSource) -> Result<Hash, ProofError> {
        merkle::root(&self.reader(source), size)
    }

    /// Proof that leaf `index` is in the tree of the first `size` leaves.
    pub fn prove_inclusion(
        &self,
        index: u64,
        size: u64,
        source: &impl LeafSource,
    ) -> Result<InclusionProof, ProofError> {
        merkle::prove_inclusion(&self.reader(source), index, size)
    }

    /// Proof that the tree of the first `from` leaves is a prefix of the
    /// tree of the first `to` leaves.
    pub fn prove_consistency(
        &self,
        from: u64,
        to: u64,
        source: &impl LeafSource,
    ) -> Result<ConsistencyProof, ProofError> {
        merkle::prove_consistency(&self.reader(source), from, to)
    }

    fn reader<'a, S: LeafSource>(&'a self, source: &'a S) -> Reader<'a, S> {
        Reader {
            tree: self,
            source,
            failure: RefCell::new(None),
        }
    }
}

/// The stored hashes of a [`TiledTree`], as `tlog_tiles` reads them.
struct Reader<'a, S> {
    tree: &'a TiledTree,
    source: &'a S,
    /// Why the source could not be read, reported instead of the proof
    /// error `tlog_tiles` makes of it.
    failure: RefCell<Option<String>>,
}

impl<S: LeafSource> StoredHashes for Reader<'_, S> {
    fn leaves(&self) -> u64 {
        self.tree.leaves
    }

    fn failed(&self) -> ProofError {
        match self.failure.borrow_mut().take() {
            Some(why) => ProofError::Leaves(why),
            None => ProofError::Invalid,
        }
    }
}

impl<S: LeafSource> Reader<'_, S> {
    /// The stored hash `(level, n)`: a tile head, or recomputed from leaves.
    fn hash(&self, level: u8, n: u64) -> Result<Hash, String> {
        let tree = self.tree;
        if level >= TILE_HEIGHT {
            return usize::try_from(n)
                .ok()
                .and_then(|n| tree.heads.get(usize::from(level - TILE_HEIGHT))?.get(n))
                .copied()
                .ok_or_else(|| format!("no subtree {n} of height {level}"));
        }
        let count = 1u64 << level;
        let first = n
            .checked_mul(count)
            .filter(|first| first + count <= tree.leaves)
            .ok_or_else(|| format!("no subtree {n} of height {level}"))?;
        let open_start = tree.leaves - tree.open.len() as u64;
        if first >= open_start {
            let from = usize::try_from(first - open_start).map_err(|e| e.to_string())?;
            let to = from + usize::try_from(count).map_err(|e| e.to_string())?;
            let leaves = tree
                .open
                .get(from..to)
                .ok_or_else(|| format!("no leaves {from}..{to} in the open tile"))?;
            return Ok(subtree_hash(leaves));
        }
        let leaves = self.source.leaf_hashes(first, count)?;
        if leaves.len() as u64 != count {
            return Err(format!(
                "{} leaf hashes read from index {first}, expected {count}",
                leaves.len()
            ));
        }
        Ok(subtree_hash(&leaves))
    }
}

impl<S: LeafSource> HashReader for Reader<'_, S> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                let (level, n) = tlog_tiles::split_stored_hash_index(index);
                self.hash(level, n).map_err(|why| {
                    *self.failure.borrow_mut() = Some(why);
                    tlog_tiles::Error::InvalidProof
                })
            })
            .collect()
    }
}

/// A source for the whole tree's root, which reads no leaves.
struct NoLeaves;

impl LeafSource for NoLeaves {
    fn leaf_hashes(&self, start: u64, count: u64) -> Result<Vec<Hash>, String> {
        Err(format!(
            "leaves {start}..{} are not in memory",
            start + count
        ))
    }
}

/// The RFC 6962 hash of a complete subtree: `leaves.len()` is a power of
/// two.
fn subtree_hash(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => tlog_tiles::EMPTY_HASH,
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(leaves.len() / 2);
            tlog_tiles::node_hash(subtree_hash(left), subtree_hash(right))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::cell::Cell;

    use super::*;
    use crate::MerkleTree;

    /// Leaf hashes as a database would serve them, counting what is read.
    struct Disk {
        leaves: Vec<Hash>,
        read: Cell<u64>,
    }

    impl LeafSource for Disk {
        fn leaf_hashes(&self, start: u64, count: u64) -> Result<Vec<Hash>, String> {
            self.read.set(self.read.get() + count);
            let range = usize::try_from(start).unwrap()..usize::try_from(start + count).unwrap();
            self.leaves
                .get(range)
                .map(<[Hash]>::to_vec)
                .ok_or_else(|| "beyond the disk".to_owned())
        }
    }

    fn leaf(i: u64) -> Hash {
        tlog_tiles::record_hash(&i.to_be_bytes())
    }

    #[test]
    fn roots_and_proofs_are_those_of_the_full_tree() {
        let leaves = 3 * TILE_WIDTH + 37;
        let mut full = MerkleTree::new();
        let mut tiled = TiledTree::new();
        let disk = Disk {
            leaves: (0..leaves).map(leaf).collect(),
            read: Cell::new(0),
        };
        for i in 0..leaves {
            assert_eq!(full.push(leaf(i)), tiled.push(leaf(i)));
            assert_eq!(tiled.head(), full.root(i + 1).unwrap(), "head at {}", i + 1);
        }
        let sizes = [
            1, 2, 3, 7, 8, 255, 256, 257, 511, 512, 513, 700, 768, leaves,
        ];
        for size in sizes {
            assert_eq!(tiled.root(size, &disk).unwrap(), full.root(size).unwrap());
            for index in [0, size / 3, size / 2, size - 1] {
                assert_eq!(
                    tiled.prove_inclusion(index, size, &disk).unwrap(),
                    full.prove_inclusion(index, size).unwrap(),
                    "inclusion of {index} in {size}"
                );
            }
            for from in [0, 1, size / 2, size - 1, size] {
                assert_eq!(
                    tiled.prove_consistency(from, size, &disk).unwrap(),
                    full.prove_consistency(from, size).unwrap(),
                    "consistency {from} -> {size}"
                );
            }
        }
        assert!(tiled.root(leaves + 1, &disk).is_err());
    }

    #[test]
    fn memory_is_a_tile_head_per_tile_and_the_whole_root_reads_nothing() {
        let disk = Disk {
            leaves: Vec::new(),
            read: Cell::new(0),
        };
        let mut tiled = TiledTree::new();
        for i in 0..(20 * TILE_WIDTH + 5) {
            tiled.push(leaf(i));
        }
        // 20 tiles: 20 + 10 + 5 + 2 + 1 heads, and 5 open leaves.
        assert_eq!(tiled.hashes_in_memory(), 38 + 5);
        tiled.root(tiled.len(), &disk).unwrap();
        assert_eq!(disk.read.get(), 0);
    }

    #[test]
    fn a_source_that_fails_is_reported_not_taken_for_a_bad_proof() {
        struct Broken;
        impl LeafSource for Broken {
            fn leaf_hashes(&self, _: u64, _: u64) -> Result<Vec<Hash>, String> {
                Err("disk on fire".to_owned())
            }
        }
        let mut tiled = TiledTree::new();
        for i in 0..(2 * TILE_WIDTH) {
            tiled.push(leaf(i));
        }
        let error = tiled
            .prove_inclusion(3, 2 * TILE_WIDTH, &Broken)
            .unwrap_err();
        assert!(
            matches!(&error, ProofError::Leaves(why) if why == "disk on fire"),
            "{error}"
        );
    }
}
