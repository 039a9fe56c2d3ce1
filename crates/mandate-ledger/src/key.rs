//! The log's Ed25519 key, in the signed-note key formats.
//!
//! The private key is kept as a signed-note signer key
//! (`PRIVATE+KEY+<name>+<id>+<base64>`), the public key is published as a
//! signed-note verifier key (`<name>+<id>+<base64>`), so the tools that
//! read transparency-log checkpoints can check Mandate's. The key name is the
//! log's origin line.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use signed_note::{StandardSigner, StandardVerifier};

use crate::receipt::Entry;

/// Signed-note algorithm byte for Ed25519.
const ALG_ED25519: u8 = 1;

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not a signed-note Ed25519 signer key.
    #[error(
        "not a signed-note Ed25519 private key (expected `PRIVATE+KEY+<name>+<id>+<base64>`): {0}"
    )]
    Signer(String),
    /// The text is not a signed-note Ed25519 verifier key.
    #[error("not a signed-note Ed25519 verifier key (expected `<name>+<id>+<base64>`): {0}")]
    Verifier(String),
    /// The key name cannot be a log origin.
    #[error("`{0}` cannot name a key: it must be non-empty, without spaces or `+`")]
    Name(String),
}

/// The log's private key: signs receipts and checkpoints.
#[derive(Clone)]
pub struct LogKey {
    signer: StandardSigner,
    signing_key: SigningKey,
    name: String,
    text: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("LogKey").field("name", &self.name).finish()
    }
}

impl LogKey {
    /// A new random key named `name` (the log's origin).
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Name(name.to_owned()));
        }
        let (skey, _) = signed_note::generate_key(&mut rand_core::OsRng, name);
        Self::parse(&skey)
    }

    /// A new random key for a new log, named `<prefix>/<8 random hex digits>`
    /// so that two logs started with default settings never share an origin.
    pub fn generate_for_new_log(prefix: &str) -> Result<Self, KeyError> {
        use rand_core::RngCore as _;
        let mut tag = [0u8; 4];
        rand_core::OsRng.fill_bytes(&mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        Self::generate(&format!("{prefix}/{tag}"))
    }

    /// Reads a signed-note signer key (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let signer = StandardSigner::new(text).map_err(|e| {
            KeyError::Signer(
                match e {
                    signed_note::SignerError::Alg => "not an Ed25519 key",
                    signed_note::SignerError::Id => "the key id does not match the key",
                    _ => "malformed",
                }
                .to_owned(),
            )
        })?;
        // StandardSigner has checked the layout and the key id; take the seed back out.
        let mut parts = text.splitn(5, '+');
        let (name, key64) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(_), Some(_), Some(name), Some(_), Some(key64)) => (name, key64),
            _ => return Err(KeyError::Signer("missing fields".to_owned())),
        };
        let bytes = BASE64
            .decode(key64)
            .map_err(|e| KeyError::Signer(e.to_string()))?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, seed)) => seed
                .try_into()
                .map_err(|_| KeyError::Signer("Ed25519 seed is not 32 bytes".to_owned()))?,
            _ => return Err(KeyError::Signer("not an Ed25519 key".to_owned())),
        };
        Ok(Self {
            signer,
            signing_key: SigningKey::from_bytes(&seed),
            name: name.to_owned(),
            text: text.to_owned(),
        })
    }

    /// The signer key text, for the key file. Keep it secret.
    pub fn to_private_text(&self) -> &str {
        &self.text
    }

    /// The key's name, which is the log's origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, for verifiers.
    pub fn verifier(&self) -> LogVerifier {
        let text =
            signed_note::new_ed25519_verifier_key(&self.name, &self.signing_key.verifying_key());
        LogVerifier {
            // Built from a valid key, so it parses.
            note: StandardVerifier::new(&text).ok(),
            verifying_key: self.signing_key.verifying_key(),
            name: self.name.clone(),
            text,
        }
    }

    /// Signs a receipt's canonical bytes.
    pub fn sign_entry(&self, canonical: &[u8]) -> Vec<u8> {
        self.signing_key
            .sign(&Entry::signed_message(canonical))
            .to_bytes()
            .to_vec()
    }

    /// The signed-note signer for checkpoints.
    pub(crate) fn note_signer(&self) -> &StandardSigner {
        &self.signer
    }
}

/// The log's public key: checks receipt and checkpoint signatures.
#[derive(Clone)]
pub struct LogVerifier {
    note: Option<StandardVerifier>,
    verifying_key: VerifyingKey,
    name: String,
    text: String,
}

impl std::fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl LogVerifier {
    /// Reads a signed-note verifier key (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let note = StandardVerifier::new(text).map_err(|e| {
            KeyError::Verifier(
                match e {
                    signed_note::VerifierError::Alg => "not an Ed25519 key",
                    signed_note::VerifierError::Id => "the key id does not match the key",
                    _ => "malformed",
                }
                .to_owned(),
            )
        })?;
        let mut parts = text.splitn(3, '+');
        let (name, key64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(_), Some(key64)) => (name, key64),
            _ => return Err(KeyError::Verifier("missing fields".to_owned())),
        };
        let bytes = BASE64
            .decode(key64)
            .map_err(|e| KeyError::Verifier(e.to_string()))?;
        let public: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, public)) => public
                .try_into()
                .map_err(|_| KeyError::Verifier("Ed25519 key is not 32 bytes".to_owned()))?,
            _ => return Err(KeyError::Verifier("not an Ed25519 key".to_owned())),
        };
        let verifying_key =
            VerifyingKey::from_bytes(&public).map_err(|e| KeyError::Verifier(e.to_string()))?;
        Ok(Self {
            note: Some(note),
            verifying_key,
            name: name.to_owned(),
            text: text.to_owned(),
        })
    }

    /// The verifier key text (`<name>+<id>+<base64>`).
    pub fn as_text(&self) -> &str {
        &self.text
    }

    /// The key's name, which is the log's origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifying_key.to_bytes()
    }

    /// Whether `signature` is this key's signature of a receipt's canonical bytes.
    pub fn verify_entry(&self, canonical: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.verifying_key
            .verify(&Entry::signed_message(canonical), &signature)
            .is_ok()
    }

    /// The signed-note verifier for checkpoints.
    pub(crate) fn note_verifier(&self) -> Option<&StandardVerifier> {
        self.note.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_survives_its_text_form_and_signs_verifiably() {
        let key = LogKey::generate("mandate.local/test").unwrap();
        let again = LogKey::parse(&format!("  {}\n", key.to_private_text())).unwrap();
        let verifier = LogVerifier::parse(key.verifier().as_text()).unwrap();
        assert_eq!(verifier.name(), "mandate.local/test");
        let signature = again.sign_entry(b"{\"a\":1}");
        assert!(verifier.verify_entry(b"{\"a\":1}", &signature));
        assert!(!verifier.verify_entry(b"{\"a\":2}", &signature));
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_key_texts_are_refused() {
        assert!(LogKey::parse("PRIVATE+KEY+x+00000000+AAAA").is_err());
        assert!(LogVerifier::parse("x+00000000+AAAA").is_err());
        assert!(LogKey::generate("has space").is_err());
        let key = LogKey::generate("a").unwrap();
        // A verifier key is not a private key and the other way round.
        assert!(LogKey::parse(key.verifier().as_text()).is_err());
        assert!(LogVerifier::parse(key.to_private_text()).is_err());
    }
}
