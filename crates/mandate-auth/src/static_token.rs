//! Static bearer tokens configured by their digest: approvers' tokens for
//! the server, clients' tokens for the MCP proxy. A configuration holds only
//! each token's SHA-256, so reading it grants nothing, and a token is
//! checked by hashing it and comparing digests (which leaks nothing usable
//! about the token through timing).

use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Deserializer};
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn parse_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        // from_str_radix alone would take a sign ("+f").
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = text.get(2 * i..2 * i + 2)?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(out))
    }

    /// The digest as 64 lowercase hex digits, as configured.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Whether `token` is the token of this digest.
    pub fn matches(&self, token: &str) -> bool {
        Self::of(token) == *self
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({})", self.to_hex())
    }
}

/// From configuration: 64 hex digits.
impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_hex(&text).ok_or_else(|| {
            serde::de::Error::custom("expected 64 hex digits (the SHA-256 of the token)")
        })
    }
}

/// A new random token (`prefix` then 32 random bytes, base64url) and its
/// digest, to configure.
pub fn new_token(prefix: &str) -> (String, TokenDigest) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = TokenDigest::of(&token);
    (token, digest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_its_digest_only() {
        let (token, digest) = new_token("mnd_test_");
        assert!(token.starts_with("mnd_test_"));
        assert!(digest.matches(&token));
        assert!(!digest.matches(&format!("{token}x")));
        assert!(!digest.matches(&digest.to_hex()));
        assert_eq!(TokenDigest::parse_hex(&digest.to_hex()), Some(digest));
        // SHA-256("abc"), from FIPS 180-2.
        assert_eq!(
            TokenDigest::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_64_hex_digits_parse() {
        assert!(TokenDigest::parse_hex("abc").is_none());
        assert!(TokenDigest::parse_hex(&"g".repeat(64)).is_none());
        assert!(TokenDigest::parse_hex(&"0".repeat(65)).is_none());
        assert!(TokenDigest::parse_hex(&"+f".repeat(32)).is_none());
        assert!(TokenDigest::parse_hex(&format!(" {} ", "A".repeat(64))).is_some());
        let parsed: Result<TokenDigest, _> = serde_json::from_str("\"abc\"");
        assert!(parsed.is_err());
    }
}
