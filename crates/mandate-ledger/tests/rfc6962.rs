//! Our RFC 6962 tree and proofs, checked against an independent
//! implementation: the `ct-merkle` crate, with `sha2`'s SHA-256.
//!
//! For every tree size up to 70 the roots must agree, and every inclusion
//! and consistency proof we make must verify in `ct-merkle` (and be the very
//! proof it makes itself), while the same proof with any one hash altered
//! must fail there and in our own verifiers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{
    ConsistencyProof as CtConsistencyProof, InclusionProof as CtInclusionProof, RootHash,
};
use mandate_ledger::{Entry, Hash, MerkleTree};
use sha2_011::Sha256;

const MAX: u64 = 70;

/// Leaf data: the canonical bytes of 70 receipts.
fn leaves() -> Vec<Vec<u8>> {
    (0..MAX)
        .map(|i| common::receipt(i, "allow").canonical().unwrap())
        .collect()
}

fn our_tree(leaves: &[Vec<u8>]) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for (index, canonical) in (0..).zip(leaves) {
        let entry = Entry {
            index,
            canonical: canonical.clone(),
            signature: Vec::new(),
        };
        tree.push(entry.leaf_hash());
    }
    tree
}

fn leaf_hash(data: &[u8]) -> Hash {
    Entry {
        index: 0,
        canonical: data.to_vec(),
        signature: Vec::new(),
    }
    .leaf_hash()
}

fn ct_root(root: Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new(root.0.into(), size)
}

fn concat(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// `hashes` with the `which`-th one's first byte flipped.
fn altered(hashes: &[Hash], which: usize) -> Vec<Hash> {
    let mut hashes = hashes.to_vec();
    hashes[which].0[0] ^= 0x01;
    hashes
}

#[test]
fn roots_match_ct_merkle_for_every_size() {
    let leaves = leaves();
    let ours = our_tree(&leaves);
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    assert_eq!(
        theirs.root().as_bytes().as_slice(),
        ours.root(0).unwrap().0.as_slice()
    );
    for (size, leaf) in (1..).zip(&leaves) {
        theirs.push(leaf.clone());
        assert_eq!(
            theirs.root(),
            ct_root(ours.root(size).unwrap(), size),
            "size {size}"
        );
    }
    assert_eq!(theirs.len(), MAX);
}

#[test]
fn inclusion_proofs_verify_in_ct_merkle_and_altered_ones_fail() {
    let leaves = leaves();
    let ours = our_tree(&leaves);
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut checked = 0;
    for size in 1..=MAX {
        theirs.push(leaves[usize::try_from(size - 1).unwrap()].clone());
        let root = ours.root(size).unwrap();
        let ct_root = ct_root(root, size);
        for index in 0..size {
            let leaf = &leaves[usize::try_from(index).unwrap()];
            let proof = ours.prove_inclusion(index, size).unwrap();
            assert_eq!((proof.index, proof.tree_size), (index, size));
            let bytes = concat(&proof.hashes);
            assert_eq!(
                bytes,
                theirs
                    .prove_inclusion(usize::try_from(index).unwrap())
                    .as_bytes(),
                "inclusion of {index} in {size}"
            );
            let ct_proof = CtInclusionProof::<Sha256>::try_from_bytes(bytes).unwrap();
            ct_root
                .verify_inclusion(leaf, index, &ct_proof)
                .unwrap_or_else(|e| panic!("inclusion of {index} in {size}: {e}"));
            proof.verify(leaf_hash(leaf), root).unwrap();

            // Another leaf, or the leaf at another index, does not verify.
            let other = &leaves[usize::try_from((index + 1) % MAX).unwrap()];
            assert!(ct_root.verify_inclusion(other, index, &ct_proof).is_err());
            assert!(proof.verify(leaf_hash(other), root).is_err());
            if size > 1 {
                let elsewhere = (index + 1) % size;
                assert!(
                    ct_root
                        .verify_inclusion(leaf, elsewhere, &ct_proof)
                        .is_err()
                );
                let mut moved = proof.clone();
                moved.index = elsewhere;
                assert!(moved.verify(leaf_hash(leaf), root).is_err());
            }

            for which in 0..proof.hashes.len() {
                let hashes = altered(&proof.hashes, which);
                let ct_bad =
                    CtInclusionProof::<Sha256>::from_digests(hashes.iter().map(|h| (&h.0).into()));
                assert!(
                    ct_root.verify_inclusion(leaf, index, &ct_bad).is_err(),
                    "altered hash {which} of inclusion of {index} in {size}"
                );
                let mut bad = proof.clone();
                bad.hashes = hashes;
                assert!(bad.verify(leaf_hash(leaf), root).is_err());
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn consistency_proofs_verify_in_ct_merkle_and_altered_ones_fail() {
    let leaves = leaves();
    let ours = our_tree(&leaves);
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut checked = 0;
    for to in 1..=MAX {
        theirs.push(leaves[usize::try_from(to - 1).unwrap()].clone());
        let new_root = ours.root(to).unwrap();
        let ct_new = ct_root(new_root, to);
        for from in 1..to {
            let old_root = ours.root(from).unwrap();
            let ct_old = ct_root(old_root, from);
            let proof = ours.prove_consistency(from, to).unwrap();
            assert_eq!((proof.from, proof.to), (from, to));
            let bytes = concat(&proof.hashes);
            assert_eq!(
                bytes,
                theirs
                    .prove_consistency(usize::try_from(to - from).unwrap())
                    .as_bytes(),
                "consistency of {from} with {to}"
            );
            let ct_proof = CtConsistencyProof::<Sha256>::try_from_bytes(bytes).unwrap();
            ct_new
                .verify_consistency(&ct_old, &ct_proof)
                .unwrap_or_else(|e| panic!("consistency of {from} with {to}: {e}"));
            proof.verify(old_root, new_root).unwrap();

            // The roots of other trees do not verify.
            let unrelated = leaf_hash(b"unrelated");
            assert!(
                ct_new
                    .verify_consistency(&ct_root(unrelated, from), &ct_proof)
                    .is_err()
            );
            assert!(proof.verify(unrelated, new_root).is_err());
            assert!(proof.verify(old_root, unrelated).is_err());

            for which in 0..proof.hashes.len() {
                let hashes = altered(&proof.hashes, which);
                let ct_bad = CtConsistencyProof::<Sha256>::try_from_bytes(concat(&hashes)).unwrap();
                assert!(
                    ct_new.verify_consistency(&ct_old, &ct_bad).is_err(),
                    "altered hash {which} of consistency of {from} with {to}"
                );
                let mut bad = proof.clone();
                bad.hashes = hashes;
                assert!(bad.verify(old_root, new_root).is_err());
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn trivial_consistency_proofs_are_checked_too() {
    let leaves = leaves();
    let ours = our_tree(&leaves);
    let root = ours.root(MAX).unwrap();
    // From the empty tree, and from a tree to itself: no hashes needed.
    let empty = ours.prove_consistency(0, MAX).unwrap();
    assert!(empty.hashes.is_empty());
    empty.verify(ours.root(0).unwrap(), root).unwrap();
    assert!(empty.verify(root, root).is_err());
    let same = ours.prove_consistency(MAX, MAX).unwrap();
    same.verify(root, root).unwrap();
    assert!(same.verify(ours.root(MAX - 1).unwrap(), root).is_err());
    assert!(ours.prove_consistency(MAX, MAX - 1).is_err());
    assert!(ours.prove_consistency(1, MAX + 1).is_err());
    assert!(ours.prove_inclusion(MAX, MAX).is_err());
}
