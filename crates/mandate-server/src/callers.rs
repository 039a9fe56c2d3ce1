//! Who may ask for decisions without a task credential.
//!
//! A decision under a task credential is authenticated by the credential.
//! One without it trusts its body (the agent it names, the task context it
//! carries): on a loopback address that is the local developer's own
//! process, but beyond loopback anyone who reaches the port could decide in
//! any agent's name. There, only configured callers may: enforcement
//! points (the MCP gateway in agent mode, a framework's middleware) that
//! present their own token, `Authorization: Bearer mnd_caller_…`, known by
//! its SHA-256 (`[[callers]]`).

use std::net::SocketAddr;

use mandate_auth::TokenDigest;

/// Prefix of callers' tokens, so that a leaked one is recognisable.
pub const CALLER_TOKEN_PREFIX: &str = "mnd_caller_";

/// Who may ask for a decision without a task credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecideAccess {
    /// Anyone who reaches the address (the default on loopback).
    Anyone,
    /// Only a configured caller (the default beyond loopback).
    Callers,
}

impl DecideAccess {
    /// The default for a server whose decision front ends listen on
    /// `listeners` (the HTTP API, and the gRPC API where it is on): anyone
    /// only when every one of them is on loopback.
    pub fn default_for(listeners: impl IntoIterator<Item = SocketAddr>) -> Self {
        if listeners.into_iter().all(|a| a.ip().is_loopback()) {
            DecideAccess::Anyone
        } else {
            DecideAccess::Callers
        }
    }
}

/// A configured caller.
#[derive(Debug, Clone)]
pub struct Caller {
    name: String,
    token_sha256: TokenDigest,
}

/// Why the callers' configuration is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallersError {
    /// A caller without a name.
    #[error("a `[[callers]]` entry has an empty `name`")]
    EmptyName,
    /// A digest that is not 64 hex digits.
    #[error("caller `{0}`: `token_sha256` must be 64 hex digits (the SHA-256 of its token)")]
    Digest(String),
    /// Two callers with one name or one token.
    #[error(
        "caller `{0}` is configured twice (by name or by token): give each caller its own name and token"
    )]
    Duplicate(String),
}

/// The decision API's access rule and its callers.
#[derive(Debug, Clone)]
pub struct Callers {
    access: DecideAccess,
    callers: Vec<Caller>,
}

impl Default for Callers {
    /// Anyone may decide, and there are no callers: a server on loopback.
    fn default() -> Self {
        Self {
            access: DecideAccess::Anyone,
            callers: Vec::new(),
        }
    }
}

impl Callers {
    /// `access`, with the callers `(name, hex SHA-256 of the token)`.
    pub fn new(
        access: DecideAccess,
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CallersError> {
        let mut callers: Vec<Caller> = Vec::new();
        for (name, digest) in entries {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(CallersError::EmptyName);
            }
            let token_sha256 = TokenDigest::parse_hex(&digest)
                .ok_or_else(|| CallersError::Digest(name.clone()))?;
            if callers
                .iter()
                .any(|c| c.name == name || c.token_sha256 == token_sha256)
            {
                return Err(CallersError::Duplicate(name));
            }
            callers.push(Caller { name, token_sha256 });
        }
        Ok(Self { access, callers })
    }

    /// Who may decide without a task credential.
    pub fn access(&self) -> DecideAccess {
        self.access
    }

    /// How many callers are configured.
    pub fn len(&self) -> usize {
        self.callers.len()
    }

    /// Whether no caller is configured.
    pub fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }

    /// The caller whose token is `token`, if one is configured with it.
    pub fn caller(&self, token: &str) -> Option<&str> {
        let digest = TokenDigest::of(token);
        self.callers
            .iter()
            .find(|c| c.token_sha256 == digest)
            .map(|c| c.name.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_open_and_anything_else_asks_for_callers() {
        let at = |s: &str| DecideAccess::default_for([s.parse().unwrap()]);
        assert_eq!(at("127.0.0.1:8181"), DecideAccess::Anyone);
        assert_eq!(at("[::1]:8181"), DecideAccess::Anyone);
        assert_eq!(at("0.0.0.0:8181"), DecideAccess::Callers);
        assert_eq!(at("10.1.2.3:8181"), DecideAccess::Callers);
        // One listener beyond loopback (a gRPC API on all interfaces, say)
        // is enough to ask for callers.
        let both =
            |a: &str, b: &str| DecideAccess::default_for([a.parse().unwrap(), b.parse().unwrap()]);
        assert_eq!(
            both("127.0.0.1:8181", "127.0.0.1:8183"),
            DecideAccess::Anyone
        );
        assert_eq!(
            both("127.0.0.1:8181", "0.0.0.0:8183"),
            DecideAccess::Callers
        );
    }

    #[test]
    fn callers_are_known_by_their_tokens_digest_only() {
        let (token, digest) = mandate_auth::new_token(CALLER_TOKEN_PREFIX);
        let callers = Callers::new(
            DecideAccess::Callers,
            [("desktop".to_owned(), digest.to_hex())],
        )
        .unwrap();
        assert_eq!(callers.caller(&token), Some("desktop"));
        assert_eq!(callers.caller(&digest.to_hex()), None);
        assert_eq!(callers.caller(&format!("{token}x")), None);
        let twice = [
            ("a".to_owned(), digest.to_hex()),
            ("b".to_owned(), digest.to_hex()),
        ];
        assert!(matches!(
            Callers::new(DecideAccess::Callers, twice),
            Err(CallersError::Duplicate(_))
        ));
        assert!(Callers::new(DecideAccess::Callers, [(" ".to_owned(), digest.to_hex())]).is_err());
        assert!(Callers::new(DecideAccess::Callers, [("x".to_owned(), "abc".to_owned())]).is_err());
    }
}
