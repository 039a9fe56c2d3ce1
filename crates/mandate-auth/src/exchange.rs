//! RFC 8693 token exchange: a task credential and an allowed decision made
//! under it go in, a short-lived JWT for one downstream resource comes out.
//!
//! A caller's token is never passed through to a tool. Where a downstream
//! tool only takes JWTs, the agent exchanges its task credential for a token
//! minted by Mandate for that tool and that call ([`TokenExchange::exchange`]):
//!
//! * **one resource** (RFC 8707): `aud` is a configured [`Downstream`]
//!   resource, named exactly; any other is `invalid_target`;
//! * **narrowed** (RFC 6749 §3.3 `scope`): the tools in `scope` are within
//!   both the credential's tools and the resource's, and include the decided
//!   call's tool; by default `scope` is that tool alone;
//! * **bound to one call**: the request names an `allow` decision made under
//!   the very credential presented, for a tool of the resource, no older than
//!   the resource's token lifetime. (That a decision is exchanged only once is
//!   recorded by the caller, in the state database.)
//! * **short-lived**: `exp` is the earlier of now plus the resource's
//!   lifetime and the credential's expiry.
//!
//! # Claims (RFC 8693 §4, RFC 9068 §2.2)
//!
//! The token is a JWS (`alg: EdDSA`, `typ: at+jwt`, `kid`) signed by a key
//! of Mandate's ([`TokenSigner`]), published as a JWKS. Its claims
//! ([`AccessTokenClaims`]): `iss` (Mandate's resource identifier), `aud`
//! (the downstream resource), `sub`, `act`, `client_id`, `scope`, `iat`,
//! `nbf`, `exp`, `jti`, and the private claims `task_id` and `decision_id`.
//!
//! `sub` is whom the whole delegation acts for: the human of the task
//! (`on_behalf_of`) when it has one, else the task's root agent. `act` is the
//! chain of actors (RFC 8693 §4.1): the outermost `act` is the current actor,
//! the credential's holder; each nested `act` the one before it, down to the
//! root agent when the subject is the human (the root agent is the subject,
//! not an actor, otherwise). A task without a human and without delegation
//! has no `act`. `client_id` (RFC 9068) is the holder: the party that asked
//! for the token.
//!
//! Pure: the clock is passed in, the token id is chosen by the caller, and
//! nothing here reads or writes state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credential::{TaskAuthority, VerifiedCredential};
use mandate_core::{Decision, DecisionId, TaskId};

/// `grant_type` of an RFC 8693 token exchange.
pub const TOKEN_EXCHANGE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 token type of a JWT: the only token type Mandate issues.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The `subject_token_type` of a Mandate task credential (a Biscuit token).
/// RFC 8693 §3 allows token type identifiers of one's own.
pub const TASK_CREDENTIAL_TOKEN_TYPE: &str = "urn:mandate:token-type:task-credential";

/// The JWS `typ` of the tokens: an RFC 9068 JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A downstream resource's token lifetime unless configured.
pub const DEFAULT_DOWNSTREAM_TTL: Duration = Duration::from_secs(60);

/// The longest lifetime a downstream resource may be configured with.
pub const MAX_DOWNSTREAM_TTL: Duration = Duration::from_secs(3600);

/// The longest resource identifier, tool name or scope accepted, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// Most tools in a resource, or in a requested scope.
const MAX_TOOLS: usize = 256;

/// Domain separation of the token signing key derived from the task key.
const DERIVATION_LABEL: &[u8] = b"mandate token exchange signing key v1\0";

/// One downstream resource that takes Mandate-minted JWTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    resource: String,
    tools: BTreeSet<String>,
    ttl: Duration,
}

impl Downstream {
    /// A downstream resource: `resource` is an absolute URI without fragment
    /// (RFC 8707 §2), compared exactly; `tools` (`server/tool`, at least one)
    /// are the tools it serves; `ttl` (1 s to [`MAX_DOWNSTREAM_TTL`]) is the
    /// lifetime of its tokens, and the longest age of a decision exchanged
    /// for one.
    pub fn new(
        resource: impl Into<String>,
        tools: impl IntoIterator<Item = String>,
        ttl: Duration,
    ) -> Result<Self, ExchangeConfigError> {
        let resource = resource.into();
        if !is_absolute_uri(&resource) {
            return Err(ExchangeConfigError::InvalidResource(resource));
        }
        let tools: BTreeSet<String> = tools.into_iter().collect();
        if tools.is_empty() || tools.len() > MAX_TOOLS {
            return Err(ExchangeConfigError::NoTools(resource));
        }
        if let Some(tool) = tools.iter().find(|t| !is_tool(t)) {
            return Err(ExchangeConfigError::InvalidTool {
                resource,
                tool: tool.clone(),
            });
        }
        if ttl.as_secs() == 0 || ttl > MAX_DOWNSTREAM_TTL || ttl.subsec_nanos() != 0 {
            return Err(ExchangeConfigError::InvalidTtl {
                resource,
                ttl_secs: ttl.as_secs(),
            });
        }
        Ok(Self {
            resource,
            tools,
            ttl,
        })
    }

    /// The resource identifier: the tokens' `aud`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The tools it serves, `server/tool`.
    pub fn tools(&self) -> &BTreeSet<String> {
        &self.tools
    }

    /// The lifetime of its tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Why the token exchange configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeConfigError {
    /// A resource that is not an absolute URI without fragment.
    #[error(
        "downstream resource `{0}` must be an absolute URI (such as `https://tools.example.com/mail`) without fragment, at most 1024 bytes"
    )]
    InvalidResource(String),
    /// A resource without tools, or with too many.
    #[error("downstream resource `{0}` must name from 1 to 256 tools, as `server/tool`")]
    NoTools(String),
    /// A tool name that is not `server/tool`.
    #[error(
        "downstream resource `{resource}`: tool `{tool}` is not `server/tool` with a server name of `a-z 0-9 _ - .` and a tool name of `A-Z a-z 0-9 _ - .`"
    )]
    InvalidTool {
        /// The resource.
        resource: String,
        /// The tool.
        tool: String,
    },
    /// A lifetime out of range.
    #[error(
        "downstream resource `{resource}`: `ttl_seconds` {ttl_secs} must be from 1 to 3600 (tokens for tools are short-lived)"
    )]
    InvalidTtl {
        /// The resource.
        resource: String,
        /// The lifetime asked for, in seconds.
        ttl_secs: u64,
    },
    /// The same resource configured twice.
    #[error("downstream resource `{0}` is configured twice")]
    DuplicateResource(String),
    /// The issuer is not an absolute URI.
    #[error("token issuer `{0}` must be an absolute URI")]
    InvalidIssuer(String),
    /// The task key could not be read to derive the token key.
    #[error("cannot derive the token signing key: {0}")]
    InvalidKey(String),
}

/// Mandate's key for the JWTs it mints: Ed25519, signing with `EdDSA`.
///
/// Not the task credential key itself: [`derive`](Self::derive) derives it
/// from that key (SHA-256 over a label and the private key), so that no key
/// signs in two formats, and no key file is added.
pub struct TokenSigner {
    key: SigningKey,
    kid: String,
    x: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// The signer with this 32-byte Ed25519 private key (seed).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
        // RFC 7638 thumbprint: the required members, sorted, no spaces.
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        Self { key, kid, x }
    }

    /// The signer derived from the task credential key of `authority`.
    pub fn derive(authority: &TaskAuthority) -> Result<Self, ExchangeConfigError> {
        Ok(Self::from_seed(&authority.derive_secret(DERIVATION_LABEL)))
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 8037).
    pub fn jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: self.x.clone(),
            kid: self.kid.clone(),
            key_use: "sig".to_owned(),
            alg: "EdDSA".to_owned(),
        }
    }

    /// A JWS compact serialization of `claims`: header (`alg`, `typ`, `kid`),
    /// payload, Ed25519 signature.
    fn sign(&self, claims: &AccessTokenClaims) -> Result<String, ExchangeError> {
        let header =
            serde_json::json!({ "alg": "EdDSA", "typ": ACCESS_TOKEN_TYP, "kid": self.kid });
        let payload =
            serde_json::to_vec(claims).map_err(|e| ExchangeError::Signing(e.to_string()))?;
        let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.key.sign(jws.as_bytes());
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(jws)
    }
}

/// A public key as a JWK (RFC 7517, RFC 8037 `OKP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key id.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    /// `EdDSA`.
    pub alg: String,
}

/// A call Mandate decided under a task credential, as its task's history
/// recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedCall {
    /// The decision's id.
    pub decision_id: DecisionId,
    /// The task it was made under.
    pub task_id: TaskId,
    /// The revocation id (hex, last block) of the credential it was made
    /// under; `None` if not recorded.
    pub credential: Option<String>,
    /// The tool, `server/tool`.
    pub tool: String,
    /// The outcome.
    pub decision: Decision,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
}

/// What an exchange asks for.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The verified (and not revoked) credential presented as
    /// `subject_token`.
    pub credential: &'a VerifiedCredential,
    /// The RFC 8707 `resource`.
    pub resource: &'a str,
    /// The `scope` as sent (space-separated tools), if sent.
    pub scope: Option<&'a str>,
    /// The decision named by `decision_id`.
    pub decision: &'a DecidedCall,
    /// The new token's `jti`.
    pub token_id: &'a str,
}

/// The claims of a token Mandate mints for a downstream resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Mandate's resource identifier.
    pub iss: String,
    /// The human the task acts for, else the task's root agent.
    pub sub: String,
    /// The downstream resource.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before (the time of issue).
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// The token's id.
    pub jti: String,
    /// The agent that asked for the token: the credential's holder.
    pub client_id: String,
    /// The tools the token is for, space-separated.
    pub scope: String,
    /// The actors, current one outermost (RFC 8693 §4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The task the credential belongs to.
    pub task_id: TaskId,
    /// The decision the token was exchanged for.
    pub decision_id: DecisionId,
}

/// One actor of an RFC 8693 `act` chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor.
    pub sub: String,
    /// The actor before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The actors from the outermost (current) one inwards.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            out.push(&actor.sub);
            next = actor.act.as_deref();
        }
        out
    }
}

/// A minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Its claims.
    pub claims: AccessTokenClaims,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
    /// The tools in its scope, sorted.
    pub scope: Vec<String>,
}

/// Why no token was minted. [`error_code`](Self::error_code) is the RFC 6749
/// §5.2 / RFC 8693 §2.2.2 error each maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The credential has expired (it verified a moment ago).
    #[error("the subject token (task credential) has expired")]
    CredentialExpired,
    /// The resource is not a configured downstream resource.
    #[error(
        "`{0}` is not a downstream resource of this server; tokens are minted only for the configured resources, named exactly"
    )]
    UnknownResource(String),
    /// The decided call's tool is not one the resource serves.
    #[error("decision `{decision_id}` is for `{tool}`, which resource `{resource}` does not serve")]
    ToolNotServed {
        /// The decision.
        decision_id: DecisionId,
        /// Its tool.
        tool: String,
        /// The resource.
        resource: String,
    },
    /// `scope` is not a space-separated list of tool names.
    #[error("`scope` {0}")]
    MalformedScope(&'static str),
    /// `scope` names tools other than the one the decision allowed.
    #[error(
        "`scope` may name only the tool of the decided call; not decided: {} (decide each call, then exchange for it)",
        .0.join(", ")
    )]
    ScopeWidening(Vec<String>),
    /// `scope` leaves out the tool of the decided call.
    #[error("`scope` must include `{0}`, the tool of the decided call")]
    ScopeWithoutDecidedTool(String),
    /// The decision was made under another task.
    #[error("decision `{0}` was made under another task")]
    DecisionOfAnotherTask(DecisionId),
    /// The decision was made under another credential of the task.
    #[error("decision `{0}` was not made under the credential presented")]
    DecisionOfAnotherCredential(DecisionId),
    /// The decision was not an allow.
    #[error("decision `{decision_id}` was `{decision}`; only an allowed call gets a token")]
    DecisionNotAllowed {
        /// The decision.
        decision_id: DecisionId,
        /// Its outcome.
        decision: Decision,
    },
    /// The decision is older than the resource's token lifetime.
    #[error(
        "decision `{decision_id}` is older than {max_age_secs} s (the resource's token lifetime): decide the call again"
    )]
    DecisionTooOld {
        /// The decision.
        decision_id: DecisionId,
        /// The resource's lifetime, in seconds.
        max_age_secs: u64,
    },
    /// The token could not be encoded (a bug).
    #[error("the token could not be encoded: {0}")]
    Signing(String),
}

impl ExchangeError {
    /// The OAuth error code: `invalid_request` (the subject token),
    /// `invalid_target` (the resource), `invalid_scope`, `invalid_grant`
    /// (the decision: like an authorization code, it is bound to the
    /// credential, short-lived and used once) or `server_error`.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::CredentialExpired => "invalid_request",
            Self::UnknownResource(_) | Self::ToolNotServed { .. } => "invalid_target",
            Self::MalformedScope(_) | Self::ScopeWidening(_) | Self::ScopeWithoutDecidedTool(_) => {
                "invalid_scope"
            }
            Self::DecisionOfAnotherTask(_)
            | Self::DecisionOfAnotherCredential(_)
            | Self::DecisionNotAllowed { .. }
            | Self::DecisionTooOld { .. } => "invalid_grant",
            Self::Signing(_) => "server_error",
        }
    }
}

/// Mints tokens for the configured downstream resources.
#[derive(Debug)]
pub struct TokenExchange {
    issuer: String,
    signer: TokenSigner,
    downstream: BTreeMap<String, Downstream>,
}

impl TokenExchange {
    /// Tokens issued by `issuer` (Mandate's resource identifier), signed by
    /// `signer`, for the `downstream` resources (none: every exchange is
    /// `invalid_target`).
    pub fn new(
        issuer: impl Into<String>,
        signer: TokenSigner,
        downstream: Vec<Downstream>,
    ) -> Result<Self, ExchangeConfigError> {
        let issuer = issuer.into();
        if !is_absolute_uri(&issuer) {
            return Err(ExchangeConfigError::InvalidIssuer(issuer));
        }
        let mut by_resource = BTreeMap::new();
        for d in downstream {
            if by_resource.contains_key(&d.resource) {
                return Err(ExchangeConfigError::DuplicateResource(d.resource));
            }
            by_resource.insert(d.resource.clone(), d);
        }
        Ok(Self {
            issuer,
            signer,
            downstream: by_resource,
        })
    }

    /// The tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing key.
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// The downstream resource named exactly `resource`.
    pub fn downstream(&self, resource: &str) -> Option<&Downstream> {
        self.downstream.get(resource)
    }

    /// The configured downstream resources.
    pub fn resources(&self) -> impl Iterator<Item = &Downstream> {
        self.downstream.values()
    }

    /// Mints the token `request` asks for at `now`, or says why not (see
    /// the module documentation for every check). Whether the decision was
    /// exchanged before is the caller's to check, atomically with recording
    /// this exchange.
    pub fn exchange(
        &self,
        request: &ExchangeRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, ExchangeError> {
        let credential = request.credential;
        let decision = request.decision;
        if credential.is_expired(now) {
            return Err(ExchangeError::CredentialExpired);
        }
        let downstream = self
            .downstream(request.resource)
            .ok_or_else(|| ExchangeError::UnknownResource(request.resource.to_owned()))?;

        if decision.task_id != credential.task_id {
            return Err(ExchangeError::DecisionOfAnotherTask(
                decision.decision_id.clone(),
            ));
        }
        if decision.credential.is_none()
            || decision.credential.as_ref() != credential.revocation_ids.last()
        {
            return Err(ExchangeError::DecisionOfAnotherCredential(
                decision.decision_id.clone(),
            ));
        }
        if decision.decision != Decision::Allow {
            return Err(ExchangeError::DecisionNotAllowed {
                decision_id: decision.decision_id.clone(),
                decision: decision.decision,
            });
        }
        let max_age = downstream.ttl.as_secs();
        let age = now.signed_duration_since(decision.decided_at);
        if age.num_milliseconds() > i64::try_from(max_age.saturating_mul(1000)).unwrap_or(i64::MAX)
        {
            return Err(ExchangeError::DecisionTooOld {
                decision_id: decision.decision_id.clone(),
                max_age_secs: max_age,
            });
        }
        if !downstream.tools.contains(&decision.tool) {
            return Err(ExchangeError::ToolNotServed {
                decision_id: decision.decision_id.clone(),
                tool: decision.tool.clone(),
                resource: downstream.resource.clone(),
            });
        }

        let scope = match request.scope {
            None => BTreeSet::from([decision.tool.clone()]),
            Some(raw) => parse_scope(raw)?,
        };
        if !scope.contains(&decision.tool) {
            return Err(ExchangeError::ScopeWithoutDecidedTool(
                decision.tool.clone(),
            ));
        }
        // Only the tool that was decided: a token for another tool would
        // let the downstream run a call no policy saw, even one the
        // credential and the resource both allow.
        let outside: Vec<String> = scope
            .iter()
            .filter(|tool| **tool != decision.tool)
            .cloned()
            .collect();
        if !outside.is_empty() {
            return Err(ExchangeError::ScopeWidening(outside));
        }

        let issued_at = now.timestamp();
        let ttl = i64::try_from(downstream.ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = issued_at
            .saturating_add(ttl)
            .min(credential.expires_at.timestamp());
        if exp <= issued_at {
            return Err(ExchangeError::CredentialExpired);
        }
        let expires_at =
            DateTime::from_timestamp(exp, 0).ok_or(ExchangeError::CredentialExpired)?;
        let holder = credential
            .holder()
            .map(|hop| hop.agent.clone())
            .unwrap_or_else(|| credential.root_agent.clone());
        let scope: Vec<String> = scope.into_iter().collect();
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: subject(credential).to_owned(),
            aud: downstream.resource.clone(),
            exp,
            nbf: issued_at,
            iat: issued_at,
            jti: request.token_id.to_owned(),
            client_id: holder,
            scope: scope.join(" "),
            act: actors(credential),
            task_id: credential.task_id.clone(),
            decision_id: decision.decision_id.clone(),
        };
        let token = self.signer.sign(&claims)?;
        Ok(IssuedToken {
            token,
            claims,
            expires_at,
            scope,
        })
    }
}

/// The token's subject: the human the task acts for, else its root agent.
fn subject(credential: &VerifiedCredential) -> &str {
    credential
        .on_behalf_of
        .as_deref()
        .unwrap_or(&credential.root_agent)
}

/// The `act` chain: every hop that acts for the subject, the holder
/// outermost. The root agent is an actor only when a human is the subject.
fn actors(credential: &VerifiedCredential) -> Option<Actor> {
    let skip = usize::from(credential.on_behalf_of.is_none());
    credential.chain.iter().skip(skip).fold(None, |inner, hop| {
        Some(Actor {
            sub: hop.agent.clone(),
            act: inner.map(Box::new),
        })
    })
}

/// A requested scope: tool names separated by single spaces (RFC 6749 §3.3),
/// each `server/tool`.
fn parse_scope(raw: &str) -> Result<BTreeSet<String>, ExchangeError> {
    if raw.len() > MAX_NAME_BYTES * 4 {
        return Err(ExchangeError::MalformedScope("is too long"));
    }
    let mut tools = BTreeSet::new();
    for token in raw.split(' ') {
        if token.is_empty() {
            return Err(ExchangeError::MalformedScope(
                "must be tool names separated by single spaces",
            ));
        }
        // RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E.
        if !token
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
            || !is_tool(token)
        {
            return Err(ExchangeError::MalformedScope(
                "names tools as `server/tool` (a server name of `a-z 0-9 _ - .`, a tool name of `A-Z a-z 0-9 _ - .`)",
            ));
        }
        tools.insert(token.to_owned());
    }
    if tools.len() > MAX_TOOLS {
        return Err(ExchangeError::MalformedScope("names too many tools"));
    }
    Ok(tools)
}

/// `server/tool`, each part of its name grammar (`mandate_core::names`).
fn is_tool(tool: &str) -> bool {
    mandate_core::names::tool_ref(tool).is_ok()
}

/// An absolute URI (RFC 3986 §4.3: a scheme, then `:`, then the rest)
/// without fragment, whitespace or control characters.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    uri.len() <= MAX_NAME_BYTES
        && !rest.is_empty()
        && !uri.contains('#')
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Lowercase or uppercase hex digits as bytes.
#[cfg(test)]
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::credential::Hop;
    use chrono::TimeDelta;

    const ISSUER: &str = "https://mandate.example.com";
    const MAIL: &str = "https://tools.example.com/mail";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A credential of task-1 for alice, delegated planner → mailer → reader.
    fn credential(depth: usize, human: bool) -> VerifiedCredential {
        let agents = [
            "spiffe://x/planner",
            "spiffe://x/mailer",
            "spiffe://x/reader",
        ];
        VerifiedCredential {
            task_id: TaskId::new("task-1").unwrap(),
            root_agent: agents[0].to_owned(),
            on_behalf_of: human.then(|| "alice@example.com".to_owned()),
            chain: (0..=depth)
                .map(|d| Hop {
                    agent: agents[d].to_owned(),
                    depth: u32::try_from(d).unwrap(),
                })
                .collect(),
            tools: set(&["mail/send_email", "mail/read_inbox", "web/fetch_url"]),
            labels: BTreeSet::new(),
            expires_at: now() + TimeDelta::seconds(600),
            max_depth: 2,
            audience: "mandate".to_owned(),
            revocation_ids: (0..=depth).map(|d| format!("rev{d}")).collect(),
        }
    }

    fn decision(credential: &VerifiedCredential, tool: &str) -> DecidedCall {
        DecidedCall {
            decision_id: DecisionId::new("dec-1").unwrap(),
            task_id: credential.task_id.clone(),
            credential: credential.revocation_ids.last().cloned(),
            tool: tool.to_owned(),
            decision: Decision::Allow,
            decided_at: now() - TimeDelta::seconds(2),
        }
    }

    fn exchange() -> TokenExchange {
        let mail = Downstream::new(
            MAIL,
            [
                "mail/send_email".to_owned(),
                "mail/read_inbox".to_owned(),
                "mail/delete".to_owned(),
            ],
            Duration::from_secs(60),
        )
        .unwrap();
        TokenExchange::new(ISSUER, TokenSigner::from_seed(&[7; 32]), vec![mail]).unwrap()
    }

    fn run(
        credential: &VerifiedCredential,
        decision: &DecidedCall,
        resource: &str,
        scope: Option<&str>,
    ) -> Result<IssuedToken, ExchangeError> {
        exchange().exchange(
            &ExchangeRequest {
                credential,
                resource,
                scope,
                decision,
                token_id: "jti-1",
            },
            now(),
        )
    }

    #[test]
    fn act_chain_puts_the_holder_outermost() {
        let sub = credential(2, true);
        let token = run(&sub, &decision(&sub, "mail/send_email"), MAIL, None).unwrap();
        let claims = &token.claims;
        assert_eq!(claims.sub, "alice@example.com");
        assert_eq!(claims.client_id, "spiffe://x/reader");
        assert_eq!(
            claims.act.as_ref().unwrap().chain(),
            [
                "spiffe://x/reader",
                "spiffe://x/mailer",
                "spiffe://x/planner"
            ]
        );

        // Without a human, the root agent is the subject, not an actor.
        let no_human = credential(1, false);
        let token = run(
            &no_human,
            &decision(&no_human, "mail/send_email"),
            MAIL,
            None,
        )
        .unwrap();
        assert_eq!(token.claims.sub, "spiffe://x/planner");
        assert_eq!(
            token.claims.act.as_ref().unwrap().chain(),
            ["spiffe://x/mailer"]
        );

        // The root agent acting for itself: no act at all.
        let root = credential(0, false);
        let token = run(&root, &decision(&root, "mail/send_email"), MAIL, None).unwrap();
        assert_eq!(token.claims.sub, "spiffe://x/planner");
        assert_eq!(token.claims.act, None);
        let json: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(json.get("act").is_none(), "{json}");

        // The root agent acting for alice: act names it.
        let root = credential(0, true);
        let token = run(&root, &decision(&root, "mail/send_email"), MAIL, None).unwrap();
        assert_eq!(
            token.claims.act.as_ref().unwrap().chain(),
            ["spiffe://x/planner"]
        );
    }

    #[test]
    fn claims_and_signature() {
        let sub = credential(1, true);
        let token = run(&sub, &decision(&sub, "mail/send_email"), MAIL, None).unwrap();
        let c = &token.claims;
        assert_eq!(c.iss, ISSUER);
        assert_eq!(c.aud, MAIL);
        assert_eq!((c.iat, c.nbf), (now().timestamp(), now().timestamp()));
        assert_eq!(c.exp, now().timestamp() + 60);
        assert_eq!(c.jti, "jti-1");
        assert_eq!(c.task_id.as_str(), "task-1");
        assert_eq!(c.decision_id.as_str(), "dec-1");
        assert_eq!(c.scope, "mail/send_email");

        // The JWS verifies with the published JWK, by an independent verifier.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        let signer = TokenSigner::from_seed(&[7; 32]);
        let jwk = signer.jwk();
        let header = jsonwebtoken::decode_header(&token.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(jwk.kid.as_str()));
        assert_eq!(header.typ.as_deref(), Some(ACCESS_TOKEN_TYP));
        let key = jsonwebtoken::DecodingKey::from_ed_components(&jwk.x).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.set_audience(&[MAIL]);
        let decoded =
            jsonwebtoken::decode::<AccessTokenClaims>(&token.token, &key, &validation).unwrap();
        assert_eq!(&decoded.claims, c);

        // Another key does not verify it.
        let other = TokenSigner::from_seed(&[8; 32]).jwk();
        let key = jsonwebtoken::DecodingKey::from_ed_components(&other.x).unwrap();
        assert!(
            jsonwebtoken::decode::<AccessTokenClaims>(&token.token, &key, &validation).is_err()
        );
        assert_ne!(other.kid, jwk.kid);
    }

    #[test]
    fn the_derivation_is_sha256_of_label_and_private_key() {
        // What deployments' exchange keys were derived with: changing it
        // would change every downstream's key.
        let authority = TaskAuthority::generate();
        let mut hasher = Sha256::new();
        hasher.update(DERIVATION_LABEL);
        hasher.update(decode_hex(&authority.private_key_hex()).unwrap());
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(authority.derive_secret(DERIVATION_LABEL), expected);
    }

    #[test]
    fn derived_key_is_stable_and_not_the_task_key() {
        let authority = TaskAuthority::generate();
        let a = TokenSigner::derive(&authority).unwrap();
        let b = TokenSigner::derive(&authority).unwrap();
        assert_eq!(a.jwk(), b.jwk());
        assert_eq!(a.kid().len(), 43);
        let task_public = URL_SAFE_NO_PAD.encode(decode_hex(&authority.public_key_hex()).unwrap());
        assert_ne!(a.jwk().x, task_public);
        let other = TokenSigner::derive(&TaskAuthority::generate()).unwrap();
        assert_ne!(a.jwk(), other.jwk());
    }

    #[test]
    fn scope_narrows_only() {
        let sub = credential(1, true);
        let call = decision(&sub, "mail/send_email");
        // The decided tool alone.
        let token = run(&sub, &call, MAIL, Some("mail/send_email")).unwrap();
        assert_eq!(token.scope, ["mail/send_email"]);
        assert_eq!(token.claims.scope, "mail/send_email");
        // Another tool that the credential and the resource both allow was
        // not decided: no token covers it.
        assert_eq!(
            run(&sub, &call, MAIL, Some("mail/send_email mail/read_inbox")),
            Err(ExchangeError::ScopeWidening(vec![
                "mail/read_inbox".to_owned()
            ]))
        );

        // The resource serves mail/delete, the credential does not hold it.
        assert_eq!(
            run(&sub, &call, MAIL, Some("mail/send_email mail/delete")),
            Err(ExchangeError::ScopeWidening(vec!["mail/delete".to_owned()]))
        );
        // The credential holds web/fetch_url, the resource does not serve it.
        let err = run(&sub, &call, MAIL, Some("mail/send_email web/fetch_url")).unwrap_err();
        assert_eq!(
            err,
            ExchangeError::ScopeWidening(vec!["web/fetch_url".to_owned()])
        );
        assert_eq!(err.error_code(), "invalid_scope");
        // The decided tool must be in it.
        assert_eq!(
            run(&sub, &call, MAIL, Some("mail/read_inbox")),
            Err(ExchangeError::ScopeWithoutDecidedTool(
                "mail/send_email".to_owned()
            ))
        );
        for bad in [
            "",
            " mail/send_email",
            "mail/send_email  mail/read_inbox",
            "send_email",
            "mail/\"x\"",
        ] {
            let err = run(&sub, &call, MAIL, Some(bad)).unwrap_err();
            assert!(
                matches!(err, ExchangeError::MalformedScope(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn expiry_is_capped_by_the_credential() {
        let mut sub = credential(1, true);
        sub.expires_at = now() + TimeDelta::seconds(20);
        let token = run(&sub, &decision(&sub, "mail/send_email"), MAIL, None).unwrap();
        assert_eq!(token.claims.exp, now().timestamp() + 20);
        assert_eq!(token.expires_at, sub.expires_at);

        // Expiring within this second: nothing to mint.
        sub.expires_at = now() + TimeDelta::milliseconds(500);
        assert_eq!(
            run(&sub, &decision(&sub, "mail/send_email"), MAIL, None),
            Err(ExchangeError::CredentialExpired)
        );
        sub.expires_at = now();
        let err = run(&sub, &decision(&sub, "mail/send_email"), MAIL, None).unwrap_err();
        assert_eq!(err.error_code(), "invalid_request");
    }

    #[test]
    fn refusals() {
        let sub = credential(1, true);
        let call = decision(&sub, "mail/send_email");

        let err = run(&sub, &call, "https://tools.example.com/mail/", None).unwrap_err();
        assert_eq!(
            err,
            ExchangeError::UnknownResource("https://tools.example.com/mail/".to_owned())
        );
        assert_eq!(err.error_code(), "invalid_target");

        let mut other_task = call.clone();
        other_task.task_id = TaskId::new("task-2").unwrap();
        assert_eq!(
            run(&sub, &other_task, MAIL, None),
            Err(ExchangeError::DecisionOfAnotherTask(
                DecisionId::new("dec-1").unwrap()
            ))
        );

        // The parent's credential (same task) and an unrecorded credential.
        let parent = credential(0, true);
        let err = run(&parent, &call, MAIL, None).unwrap_err();
        assert_eq!(
            err,
            ExchangeError::DecisionOfAnotherCredential(DecisionId::new("dec-1").unwrap())
        );
        assert_eq!(err.error_code(), "invalid_grant");
        let mut unrecorded = call.clone();
        unrecorded.credential = None;
        assert!(matches!(
            run(&sub, &unrecorded, MAIL, None),
            Err(ExchangeError::DecisionOfAnotherCredential(_))
        ));

        for outcome in [Decision::Deny, Decision::ApprovalRequired] {
            let mut refused = call.clone();
            refused.decision = outcome;
            let err = run(&sub, &refused, MAIL, None).unwrap_err();
            assert!(
                matches!(err, ExchangeError::DecisionNotAllowed { .. }),
                "{err:?}"
            );
            assert_eq!(err.error_code(), "invalid_grant");
        }

        let mut old = call.clone();
        old.decided_at = now() - TimeDelta::seconds(61);
        assert!(matches!(
            run(&sub, &old, MAIL, None),
            Err(ExchangeError::DecisionTooOld {
                max_age_secs: 60,
                ..
            })
        ));
        old.decided_at = now() - TimeDelta::seconds(60);
        assert!(run(&sub, &old, MAIL, None).is_ok());

        let fetch = decision(&sub, "web/fetch_url");
        let err = run(&sub, &fetch, MAIL, None).unwrap_err();
        assert!(
            matches!(err, ExchangeError::ToolNotServed { .. }),
            "{err:?}"
        );
        assert_eq!(err.error_code(), "invalid_target");
    }

    #[test]
    fn configuration_is_checked() {
        let tools = || vec!["mail/send_email".to_owned()];
        let ttl = Duration::from_secs(60);
        assert!(Downstream::new("urn:example:mail", tools(), ttl).is_ok());
        for bad in [
            "",
            "mail",
            "/mail",
            "https://x/#f",
            "https://x y",
            "1http://x",
        ] {
            assert_eq!(
                Downstream::new(bad, tools(), ttl),
                Err(ExchangeConfigError::InvalidResource(bad.to_owned())),
                "{bad}"
            );
        }
        assert!(matches!(
            Downstream::new(MAIL, Vec::new(), ttl),
            Err(ExchangeConfigError::NoTools(_))
        ));
        assert!(matches!(
            Downstream::new(MAIL, vec!["send_email".to_owned()], ttl),
            Err(ExchangeConfigError::InvalidTool { .. })
        ));
        for ttl in [0, 3601] {
            assert!(matches!(
                Downstream::new(MAIL, tools(), Duration::from_secs(ttl)),
                Err(ExchangeConfigError::InvalidTtl { .. })
            ));
        }
        let d = Downstream::new(MAIL, tools(), ttl).unwrap();
        assert!(matches!(
            TokenExchange::new(ISSUER, TokenSigner::from_seed(&[1; 32]), vec![d.clone(), d]),
            Err(ExchangeConfigError::DuplicateResource(_))
        ));
        assert!(matches!(
            TokenExchange::new("mandate", TokenSigner::from_seed(&[1; 32]), Vec::new()),
            Err(ExchangeConfigError::InvalidIssuer(_))
        ));
    }
}
