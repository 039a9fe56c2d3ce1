//! Mandate's receipts and the tamper-evident log that holds them.
//!
//! Every decision becomes a [`Receipt`]. Its canonical bytes (RFC 8785 JSON)
//! are signed with the log's Ed25519 key and appended as a leaf to an RFC
//! 6962 Merkle tree ([`MerkleTree`]; a server keeps it as a [`TiledTree`]). The tree head is published as a signed
//! checkpoint in the C2SP `tlog-checkpoint` / `signed-note` formats
//! ([`checkpoint`]), so inclusion and consistency can be proved to anyone
//! holding the public key ([`proof`]).
//!
//! This crate does no I/O: storage lives in `mandate-store`. An auditor needs
//! only this crate to check an exported log offline ([`verify`]).

pub mod bundle;
pub mod checkpoint;
pub mod export;
pub mod key;
pub mod merkle;
pub mod proof;
pub mod receipt;
pub mod tiled;
pub mod verify;

pub use bundle::{BundleError, ReceiptBundle};
pub use checkpoint::{CheckpointError, SignedCheckpoint};
pub use export::ExportLine;
pub use key::{KeyError, LogKey, LogVerifier};
pub use merkle::MerkleTree;
pub use proof::{ConsistencyProof, InclusionProof, ProofError};
pub use receipt::{
    CallRef, DelegationHop, Entry, Outcome, Principal, Receipt, ReceiptError, ShadowOutcome,
    TaskRef, canonical_json, digest_bytes, digest_json, redact,
};
pub use tiled::{LeafSource, TiledTree};
pub use tlog_tiles::Hash;
pub use verify::{Problem, Report, VerifiedCheckpoint, verify_export};
