//! Signed checkpoints: the tree head, as a C2SP `tlog-checkpoint` body in a
//! C2SP `signed-note`.
//!
//! ```text
//! mandate.local/1a2b3c4d        <- origin (the key's name)
//! 1024                          <- tree size
//! 3bE0...base64 root hash...=   <- RFC 6962 root of the first 1024 leaves
//!
//! — mandate.local/1a2b3c4d AbCd...base64(key id || Ed25519 signature)...
//! ```

use signed_note::{Note, Verifier as _, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::key::{LogKey, LogVerifier};

/// A tree head signed by the log key.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash of the first `size` leaves.
    pub root: Hash,
    /// The whole signed note, as published.
    pub note: String,
}

/// Why a checkpoint could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not a signed note, or its body is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature by the given key verifies.
    #[error("no valid signature by {0}: the checkpoint was not signed by this log's key")]
    BadSignature(String),
    /// The checkpoint names another log.
    #[error("checkpoint is for log `{found}`, expected `{expected}`")]
    WrongOrigin {
        /// Origin line in the checkpoint.
        found: String,
        /// The verifier key's name.
        expected: String,
    },
}

impl SignedCheckpoint {
    /// Signs the head of a tree of `size` leaves with root `root`.
    pub fn sign(key: &LogKey, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        let body = Checkpoint::new(key.name(), size, root, "")
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let mut note = Note::new(&body.to_bytes(), &[])
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        note.add_sigs(&[key.note_signer()])
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let note = String::from_utf8(note.to_bytes())
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Ok(Self { size, root, note })
    }

    /// Parses a signed checkpoint and checks it was signed by `verifier`'s key
    /// for `verifier`'s log.
    pub fn open(verifier: &LogVerifier, note: &str) -> Result<Self, CheckpointError> {
        let parsed = Note::from_bytes(note.as_bytes())
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let Some(note_verifier) = verifier.note_verifier() else {
            return Err(CheckpointError::BadSignature(verifier.as_text().to_owned()));
        };
        let list = VerifierList::new(vec![Box::new(note_verifier.clone())]);
        let (verified, _unknown) = parsed
            .verify(&list)
            .map_err(|_| CheckpointError::BadSignature(verifier.as_text().to_owned()))?;
        if !verified
            .iter()
            .any(|s| s.name() == note_verifier.name() && s.id() == note_verifier.key_id())
        {
            return Err(CheckpointError::BadSignature(verifier.as_text().to_owned()));
        }
        let body = Checkpoint::from_bytes(parsed.text())
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        if body.origin() != verifier.name() {
            return Err(CheckpointError::WrongOrigin {
                found: body.origin().to_owned(),
                expected: verifier.name().to_owned(),
            });
        }
        Ok(Self {
            size: body.size(),
            root: *body.hash(),
            note: note.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let key = LogKey::generate("mandate.local/test").unwrap();
        let root = tlog_tiles::record_hash(b"x");
        let signed = SignedCheckpoint::sign(&key, 1, root).unwrap();
        assert!(signed.note.starts_with("mandate.local/test\n1\n"));
        assert!(signed.note.contains("\n\n\u{2014} mandate.local/test "));

        let opened = SignedCheckpoint::open(&key.verifier(), &signed.note).unwrap();
        assert_eq!(opened, signed);

        let other = LogKey::generate("mandate.local/test").unwrap();
        assert!(matches!(
            SignedCheckpoint::open(&other.verifier(), &signed.note),
            Err(CheckpointError::BadSignature(_))
        ));
        let forged = signed.note.replacen("\n1\n", "\n2\n", 1);
        assert!(SignedCheckpoint::open(&key.verifier(), &forged).is_err());
    }
}
