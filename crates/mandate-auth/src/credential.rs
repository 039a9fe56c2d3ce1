//! Biscuit task credentials: minted by Mandate for one task, verifiable
//! offline by any tool holding Mandate's public key, and narrowed (never
//! widened) for each sub-agent.
//!
//! # What a credential holds
//!
//! A credential is a [Biscuit](https://www.biscuitsec.org) token (format v3,
//! Datalog 3.3). Every block is signed by Mandate's authority key
//! ([`TaskAuthority`]):
//!
//! * **Block 0** (the authority block) describes the task and its root agent:
//!
//!   ```text
//!   task("<task id>");  hop("<root agent>", 0);  on_behalf_of("<human>");
//!   task_audience("<audience>");  max_depth(<n>);
//!   hop_expires(0, <date>);  hop_tool(0, "<server/tool>");  hop_label(0, "<label>");
//!   ```
//!
//! * **Block `d`** (`d` ≥ 1) is one delegation hop, a *third-party block*
//!   signed by the authority key and bound to the token it was appended to:
//!   `hop("<sub-agent>", d)`, `hop_expires(d, …)`, `hop_tool(d, …)`,
//!   `hop_label(d, …)`. A holder can append first-party blocks on its own,
//!   but cannot produce the authority's external signature, so identities and
//!   depths in third-party blocks are trustworthy; Biscuit's third-party
//!   signature covers the previous block's signature, so a hop block cannot be
//!   lifted onto another token either.
//!
//! Every block also carries checks, so that a tool verifying the token on its
//! own (offline, with any Biscuit implementation) enforces it. The verifier
//! supplies `time(<now>)`, `tool("<server/tool>")`, `audience("<its
//! audience>")` and, for labelled data, `label("<label>")` facts:
//!
//! ```text
//! check if time($time), $time < <expiry of this block>;
//! check if tool($tool), <tools of this block>.contains($tool) or tools_checked_per_call(true);
//! reject if label($label), !<labels of this block>.contains($label);
//! check if audience("<audience>");                  // block 0 only
//! check if max_depth($max), $max >= <d>;            // hop blocks only
//! ```
//!
//! `tools_checked_per_call(true)` is how Mandate's own gateway says "I verify
//! the credential once, before knowing which tool will be called, and check
//! the tool per call against [`VerifiedCredential::tools`]". A verifier that
//! supplies neither `tool` nor that fact is denied: forgetting the tool fails
//! closed.
//!
//! # Verification rules ([`CredentialVerifier`])
//!
//! * The signature chain must verify with the authority's public key.
//! * Every block after the first must be a third-party block signed by the
//!   authority key. Blocks a holder appended (first-party blocks, or
//!   third-party blocks signed by anyone else) are **rejected**
//!   ([`CredentialError::UntrustedBlock`]): fail closed. Attenuating a
//!   credential goes through Mandate ([`TaskAuthority::delegate`]), which
//!   records the sub-agent's identity.
//! * Facts are read only from the authority block and the authority's
//!   third-party blocks (`trusting authority, ed25519/<key>`).
//! * Effective tools and labels are the intersection over all hops, the
//!   effective expiry is the earliest one, the last hop's depth must not
//!   exceed `max_depth`, and the audience must be the verifier's.
//! * The Datalog evaluation runs with explicit limits ([`DatalogLimits`]);
//!   hitting one is an error, never an allow.
//!
//! # Revocation
//!
//! A credential has one revocation id per block (hex of the block's
//! signature, as every Biscuit implementation computes it). A delegated
//! credential contains its parent's blocks, hence its parent's ids:
//! revoking the root block's id (`revocation_ids[0]`) revokes the task's
//! credential and every credential delegated from it; revoking a hop's id
//! revokes that sub-agent's credential and everything delegated below it,
//! leaving the parent usable.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{Term, boolean, fact, int, string};
use biscuit_auth::error::{Format, Token as BiscuitError};
use biscuit_auth::{
    Algorithm, Authorizer, AuthorizerBuilder, AuthorizerLimits, Biscuit, BlockBuilder, KeyPair,
    PrivateKey,
};
use chrono::{DateTime, Utc};
use mandate_core::time::rfc3339;
use mandate_core::{TaskId, names};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use biscuit_auth::PublicKey;

/// Longest credential accepted, in characters of its base64 form. Mandate's
/// credentials are a few hundred bytes per hop; anything far larger is
/// refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Checks carried by every block, for offline verifiers.
const NARROWING_CHECKS: &str = r#"
check if time($time), $time < {expires};
check if tool($tool), {tools}.contains($tool) or tools_checked_per_call(true);
reject if label($label), !{labels}.contains($label);
"#;

/// Checks carried by the authority block only.
const AUTHORITY_CHECKS: &str = "check if audience({audience});";

/// Checks carried by each delegation hop block.
const HOP_CHECKS: &str = "check if max_depth($max), $max >= {depth};";

/// Limits on one Datalog evaluation of a credential.
///
/// Biscuit's default time limit is 1 ms. A Mandate credential evaluates in
/// well under that (about 0.2 ms including the signature checks), but on a
/// loaded 2-core machine a thread can be preempted for several milliseconds
/// in the middle of an evaluation, and the 1 ms limit then denies valid
/// credentials now and then. The default here is 50 ms: far above any honest
/// evaluation (Mandate's blocks contain facts and checks, no rules), still a
/// firm bound on a hostile token. Hitting any limit is
/// [`CredentialError::LimitExceeded`], a deny.
///
/// In biscuit-auth 6, `max_facts` and `max_iterations` only bound facts
/// *derived by rules*; the facts a token carries are bounded by
/// [`MAX_TOKEN_LEN`] instead. Mandate's blocks carry no rules, and blocks it
/// did not sign are refused before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatalogLimits {
    /// Wall-clock budget for the whole evaluation.
    pub max_time: Duration,
    /// Most facts the evaluation may hold (token facts plus the verifier's).
    pub max_facts: u64,
    /// Most rule-application rounds.
    pub max_iterations: u64,
}

impl Default for DatalogLimits {
    fn default() -> Self {
        Self {
            max_time: Duration::from_millis(50),
            max_facts: 10_000,
            max_iterations: 100,
        }
    }
}

impl From<DatalogLimits> for AuthorizerLimits {
    fn from(limits: DatalogLimits) -> Self {
        AuthorizerLimits {
            max_facts: limits.max_facts,
            max_iterations: limits.max_iterations,
            max_time: limits.max_time,
        }
    }
}

/// Why a credential was refused, or could not be minted or delegated. Each
/// message is meant for a 401/403 response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The token is not a well-formed Mandate task credential (bad base64,
    /// bad protobuf, too large, missing or inconsistent facts).
    #[error("malformed task credential: {0}")]
    Malformed(String),
    /// A signature in the token does not verify with the authority's key.
    #[error(
        "task credential signature does not verify: the token was altered, forged, or signed by another authority"
    )]
    BadSignature,
    /// The credential's effective expiry has passed.
    #[error("task credential expired at {}", rfc3339(.expired_at))]
    Expired {
        /// The earliest expiry over all hops.
        expired_at: DateTime<Utc>,
    },
    /// The credential was issued for another audience.
    #[error("task credential is for audience `{found}`, not `{expected}`")]
    WrongAudience {
        /// The verifier's audience.
        expected: String,
        /// The credential's audience.
        found: String,
    },
    /// One of the credential's revocation ids is revoked (its task ended, or
    /// it or one of its ancestors was revoked).
    #[error("task credential has been revoked")]
    Revoked,
    /// The delegation chain is (or would become) deeper than the task allows.
    #[error("delegation depth {depth} exceeds the task's maximum depth of {max_depth}")]
    TooDeep {
        /// Depth of the (requested) last hop.
        depth: u32,
        /// The task's maximum delegation depth.
        max_depth: u32,
    },
    /// A delegation asked for more than the delegating credential holds.
    #[error("a delegation can only narrow a credential; this one would widen it: {0}")]
    Widening(Widening),
    /// A block was not issued by Mandate: appended by a holder (first-party)
    /// or signed by another key. Such blocks are rejected, never evaluated.
    #[error(
        "block {index} of the task credential was not issued by Mandate ({reason}); only Mandate-signed blocks are accepted"
    )]
    UntrustedBlock {
        /// Index of the block (0 is the authority block).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A Datalog check carried by the credential failed.
    #[error("task credential denied by its own checks: {0}")]
    CheckFailed(String),
    /// The Datalog evaluation hit a run limit (time, facts, iterations).
    #[error("task credential evaluation hit a Datalog run limit ({0}): denied")]
    LimitExceeded(String),
    /// The grant or delegation asked for is itself invalid (empty ids, an
    /// expiry before 1970 or already passed).
    #[error("invalid task grant or delegation: {0}")]
    InvalidRequest(String),
    /// Key material could not be parsed.
    #[error("invalid authority key: {0}")]
    InvalidKey(String),
    /// Biscuit refused to build or extend a token (should not happen).
    #[error("task credential could not be built: {0}")]
    Internal(String),
}

/// What a refused delegation would have widened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Widening {
    /// Tools the delegating credential does not hold.
    #[error("tools not held by the delegating credential: {}", .0.join(", "))]
    Tools(Vec<String>),
    /// Labels outside the delegating credential's data scope.
    #[error("labels outside the delegating credential's scope: {}", .0.join(", "))]
    Labels(Vec<String>),
    /// An expiry later than the delegating credential's.
    #[error(
        "expiry {} is later than the delegating credential's expiry {}",
        rfc3339(.requested),
        rfc3339(.current)
    )]
    Expiry {
        /// The expiry asked for.
        requested: DateTime<Utc>,
        /// The delegating credential's effective expiry.
        current: DateTime<Utc>,
    },
}

/// What Mandate grants when it starts a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGrant {
    /// The task's id.
    pub task_id: TaskId,
    /// The root agent's verified identity (workload identity subject).
    pub agent: String,
    /// The human the agent acts for, kept apart from the agent's identity.
    pub on_behalf_of: Option<String>,
    /// Tools the task may call, as `server/tool`.
    pub tools: BTreeSet<String>,
    /// Data labels in the task's scope.
    pub labels: BTreeSet<String>,
    /// End of the task's lifetime; truncated to whole seconds (Biscuit dates
    /// have one-second precision).
    pub expires_at: DateTime<Utc>,
    /// How many delegation hops may follow the root agent (0: none).
    pub max_depth: u32,
    /// Who the credential is for (RFC 8707 resource, e.g. Mandate's URL).
    pub audience: String,
}

/// A narrowing of a credential for a sub-agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The sub-agent's verified identity.
    pub agent: String,
    /// Tools kept: a subset of the delegating credential's tools.
    pub tools: BTreeSet<String>,
    /// Labels kept: a subset of the delegating credential's labels; `None`
    /// keeps them all.
    pub labels: Option<BTreeSet<String>>,
    /// The sub-agent's expiry: not later than the delegating credential's;
    /// truncated to whole seconds.
    pub expires_at: DateTime<Utc>,
}

/// A minted or delegated credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCredential {
    /// The Biscuit token, base64url as Biscuit serializes it.
    pub token: String,
    /// Hex revocation ids, one per block, authority block first.
    pub revocation_ids: Vec<String>,
    /// The credential's effective expiry.
    pub expires_at: DateTime<Utc>,
}

/// One hop of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The agent at this hop.
    pub agent: String,
    /// Depth from the task's root agent (0 for the root).
    pub depth: u32,
}

/// What a verified credential allows, read from Mandate-signed facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedCredential {
    /// The task's id.
    pub task_id: TaskId,
    /// The task's root agent.
    pub root_agent: String,
    /// The human the task acts for.
    pub on_behalf_of: Option<String>,
    /// The delegation chain, root first; the last hop holds this credential.
    pub chain: Vec<Hop>,
    /// Effective tools: the intersection over all hops.
    pub tools: BTreeSet<String>,
    /// Effective data labels: the intersection over all hops.
    pub labels: BTreeSet<String>,
    /// Effective expiry: the earliest over all hops.
    pub expires_at: DateTime<Utc>,
    /// The task's maximum delegation depth.
    pub max_depth: u32,
    /// The audience the credential was issued for.
    pub audience: String,
    /// Hex revocation ids, one per block, authority block first.
    pub revocation_ids: Vec<String>,
}

impl VerifiedCredential {
    /// Whether the credential allows calling `tool` (`server/tool`).
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }

    /// Whether `label` is within the credential's data scope.
    pub fn allows_label(&self, label: &str) -> bool {
        self.labels.contains(label)
    }

    /// Whether the credential has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// The hop holding this credential (the root agent if not delegated).
    pub fn holder(&self) -> Option<&Hop> {
        self.chain.last()
    }
}

/// Mandate's root Ed25519 key pair: mints and delegates task credentials.
pub struct TaskAuthority {
    keypair: KeyPair,
    limits: DatalogLimits,
}

impl fmt::Debug for TaskAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskAuthority")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl TaskAuthority {
    /// A new random key pair.
    pub fn generate() -> Self {
        Self::from_keypair(KeyPair::new())
    }

    /// The key pair with this 32-byte Ed25519 private key.
    pub fn from_private_key(bytes: &[u8]) -> Result<Self, CredentialError> {
        let private = PrivateKey::from_bytes(bytes, Algorithm::Ed25519)
            .map_err(|e| CredentialError::InvalidKey(e.to_string()))?;
        Ok(Self::from_keypair(KeyPair::from(&private)))
    }

    /// The key pair with this hex Ed25519 private key (as written by
    /// [`private_key_hex`](Self::private_key_hex)); an `ed25519-private/`
    /// prefix is accepted.
    pub fn from_private_key_hex(hex: &str) -> Result<Self, CredentialError> {
        let hex = hex.trim();
        let hex = hex.strip_prefix("ed25519-private/").unwrap_or(hex);
        let private = PrivateKey::from_bytes_hex(hex, Algorithm::Ed25519)
            .map_err(|e| CredentialError::InvalidKey(e.to_string()))?;
        Ok(Self::from_keypair(KeyPair::from(&private)))
    }

    fn from_keypair(keypair: KeyPair) -> Self {
        Self {
            keypair,
            limits: DatalogLimits::default(),
        }
    }

    /// Replaces the Datalog limits used when verifying a token to delegate.
    pub fn with_limits(mut self, limits: DatalogLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The private key as 64 hex digits, for a key file. Keep it secret.
    pub fn private_key_hex(&self) -> String {
        self.keypair.private().to_bytes_hex()
    }

    /// A secret for another purpose, derived from the private key: SHA-256
    /// of `label` (naming the purpose and its version, ending in NUL) and
    /// the key. Stable for the key, so every instance sharing the key
    /// derives the same secret, and it reveals nothing of the key.
    pub fn derive_secret(&self, label: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(label);
        hasher.update(self.keypair.private().to_bytes().as_slice());
        hasher.finalize().into()
    }

    /// The public key, which verifies every credential this authority issues.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The public key as 64 hex digits (what offline verifiers configure).
    pub fn public_key_hex(&self) -> String {
        self.keypair.public().to_bytes_hex()
    }

    /// A verifier for this authority's credentials, for `audience`.
    pub fn verifier(&self, audience: impl Into<String>) -> CredentialVerifier {
        CredentialVerifier::new(self.public_key(), audience).with_limits(self.limits)
    }

    /// Mints the credential of a new task.
    pub fn mint(&self, grant: &TaskGrant) -> Result<TaskCredential, CredentialError> {
        non_empty("task id", grant.task_id.as_str())?;
        checked(names::agent(&grant.agent))?;
        non_empty("audience", &grant.audience)?;
        if let Some(human) = &grant.on_behalf_of {
            non_empty("on_behalf_of", human)?;
        }
        every(&grant.tools, names::tool_ref)?;
        every(&grant.labels, names::label)?;
        let (expires_at, expires) = whole_seconds(grant.expires_at)?;

        let mut builder = Biscuit::builder()
            .fact(fact("task", &[string(grant.task_id.as_str())]))
            .and_then(|b| b.fact(fact("hop", &[string(&grant.agent), int(0)])))
            .and_then(|b| b.fact(fact("task_audience", &[string(&grant.audience)])))
            .and_then(|b| b.fact(fact("max_depth", &[int(i64::from(grant.max_depth))])))
            .and_then(|b| b.fact(fact("hop_expires", &[int(0), Term::Date(expires)])))
            .map_err(internal)?;
        if let Some(human) = &grant.on_behalf_of {
            builder = builder
                .fact(fact("on_behalf_of", &[string(human)]))
                .map_err(internal)?;
        }
        for tool in &grant.tools {
            builder = builder
                .fact(fact("hop_tool", &[int(0), string(tool)]))
                .map_err(internal)?;
        }
        for label in &grant.labels {
            builder = builder
                .fact(fact("hop_label", &[int(0), string(label)]))
                .map_err(internal)?;
        }
        let mut params = narrowing_params(expires, &grant.tools, &grant.labels);
        params.insert("audience".to_owned(), string(&grant.audience));
        let token = builder
            .code_with_params(NARROWING_CHECKS, params.clone(), HashMap::new())
            .and_then(|b| b.code_with_params(AUTHORITY_CHECKS, params, HashMap::new()))
            .and_then(|b| b.build(&self.keypair))
            .map_err(internal)?;
        credential(&token, expires_at)
    }

    /// Issues a narrowed credential for a sub-agent, from the credential
    /// `token` held by the delegating agent.
    ///
    /// The token is verified first (signature, Mandate-signed blocks only,
    /// not expired at `now`; its own audience is kept). The delegation is
    /// refused if it would go deeper than the task's `max_depth`
    /// ([`CredentialError::TooDeep`]) or widen the tools, the labels or the
    /// lifetime ([`CredentialError::Widening`]). The sub-agent's identity and
    /// depth go into a third-party block signed by this authority.
    ///
    /// Checking that the caller is the agent holding `token` (the last hop)
    /// is the caller's job.
    pub fn delegate(
        &self,
        token: &str,
        delegation: &Delegation,
        now: DateTime<Utc>,
    ) -> Result<TaskCredential, CredentialError> {
        let public_key = self.public_key();
        let biscuit = parse(token, &public_key)?;
        check_blocks(&biscuit, &public_key)?;
        let audience = authority_audience(&biscuit, self.limits)?;
        let current = evaluate(&biscuit, &public_key, &audience, now, self.limits)?;

        checked(names::agent(&delegation.agent))?;
        every(&delegation.tools, names::tool_ref)?;
        let depth = u32::try_from(current.chain.len())
            .map_err(|_| CredentialError::Malformed("delegation chain too long".to_owned()))?;
        if depth > current.max_depth {
            return Err(CredentialError::TooDeep {
                depth,
                max_depth: current.max_depth,
            });
        }
        let added_tools: Vec<String> = delegation
            .tools
            .difference(&current.tools)
            .cloned()
            .collect();
        if !added_tools.is_empty() {
            return Err(CredentialError::Widening(Widening::Tools(added_tools)));
        }
        let labels = match &delegation.labels {
            Some(labels) => {
                every(labels, names::label)?;
                let added: Vec<String> = labels.difference(&current.labels).cloned().collect();
                if !added.is_empty() {
                    return Err(CredentialError::Widening(Widening::Labels(added)));
                }
                labels.clone()
            }
            None => current.labels.clone(),
        };
        let (expires_at, expires) = whole_seconds(delegation.expires_at)?;
        if expires_at > current.expires_at {
            return Err(CredentialError::Widening(Widening::Expiry {
                requested: expires_at,
                current: current.expires_at,
            }));
        }
        if expires_at <= now {
            return Err(CredentialError::InvalidRequest(format!(
                "the delegation's expiry {} has already passed",
                rfc3339(&expires_at)
            )));
        }

        let d = int(i64::from(depth));
        let mut block = BlockBuilder::new()
            .fact(fact("hop", &[string(&delegation.agent), d.clone()]))
            .and_then(|b| b.fact(fact("hop_expires", &[d.clone(), Term::Date(expires)])))
            .map_err(internal)?;
        for tool in &delegation.tools {
            block = block
                .fact(fact("hop_tool", &[d.clone(), string(tool)]))
                .map_err(internal)?;
        }
        for label in &labels {
            block = block
                .fact(fact("hop_label", &[d.clone(), string(label)]))
                .map_err(internal)?;
        }
        let mut params = narrowing_params(expires, &delegation.tools, &labels);
        params.insert("depth".to_owned(), d);
        let block = block
            .code_with_params(NARROWING_CHECKS, params.clone(), HashMap::new())
            .and_then(|b| b.code_with_params(HOP_CHECKS, params, HashMap::new()))
            .map_err(internal)?;

        let signed = biscuit
            .third_party_request()
            .and_then(|request| request.create_block(&self.keypair.private(), block))
            .and_then(|signed| biscuit.append_third_party(public_key, signed))
            .map_err(|e| match e {
                BiscuitError::AppendOnSealed => CredentialError::InvalidRequest(
                    "the credential is sealed and cannot be delegated".to_owned(),
                ),
                other => internal(other),
            })?;
        credential(&signed, expires_at)
    }
}

/// Verifies task credentials for one audience, with the authority's public
/// key only (no private key, no state).
#[derive(Debug, Clone)]
pub struct CredentialVerifier {
    public_key: PublicKey,
    audience: String,
    limits: DatalogLimits,
    fingerprint: [u8; 32],
}

impl CredentialVerifier {
    /// A verifier for credentials issued by `public_key` for `audience`, with
    /// the default [`DatalogLimits`].
    pub fn new(public_key: PublicKey, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        let mut hasher = Sha256::new();
        hasher.update(public_key.to_bytes());
        hasher.update([0]);
        hasher.update(audience.as_bytes());
        Self {
            public_key,
            audience,
            limits: DatalogLimits::default(),
            fingerprint: hasher.finalize().into(),
        }
    }

    /// A verifier from the authority's public key as hex (an `ed25519/`
    /// prefix is accepted).
    pub fn from_public_key_hex(
        hex: &str,
        audience: impl Into<String>,
    ) -> Result<Self, CredentialError> {
        let hex = hex.trim();
        let hex = hex.strip_prefix("ed25519/").unwrap_or(hex);
        let key = PublicKey::from_bytes_hex(hex, Algorithm::Ed25519)
            .map_err(|e| CredentialError::InvalidKey(e.to_string()))?;
        Ok(Self::new(key, audience))
    }

    /// Replaces the Datalog run limits.
    pub fn with_limits(mut self, limits: DatalogLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The audience this verifier expects.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The authority's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Verifies `token` at `now`: signatures, Mandate-signed blocks only,
    /// audience, depth, expiry, and the token's own Datalog checks (run once,
    /// with `time(now)`). Revocation is not checked here: see
    /// [`VerificationCache::get_or_verify`] or check
    /// [`VerifiedCredential::revocation_ids`].
    pub fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedCredential, CredentialError> {
        let biscuit = parse(token, &self.public_key)?;
        check_blocks(&biscuit, &self.public_key)?;
        evaluate(&biscuit, &self.public_key, &self.audience, now, self.limits)
    }
}

/// Caches verified credentials by the SHA-256 digest of the token, until
/// they expire, and checks revocation on every call, cached or not.
///
/// Bounded: when full, expired entries are dropped first, then the entry
/// expiring soonest. Failed verifications are not cached. Thread-safe.
#[derive(Debug)]
pub struct VerificationCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
    verifications: AtomicU64,
}

#[derive(Debug)]
struct CacheEntry {
    verifier: [u8; 32],
    credential: Arc<VerifiedCredential>,
}

impl Default for VerificationCache {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl VerificationCache {
    /// A cache holding at most `capacity` credentials (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            verifications: AtomicU64::new(0),
        }
    }

    /// The verified credential for `token`: from the cache if it was verified
    /// before (by a verifier with the same key and audience) and has not
    /// expired at `now`, otherwise verified with `verifier` and cached.
    ///
    /// `is_revoked` is called on every call with all the token's revocation
    /// ids (authority block first) and must return `true` if any of them is
    /// revoked: the result is then [`CredentialError::Revoked`].
    pub fn get_or_verify(
        &self,
        verifier: &CredentialVerifier,
        token: &str,
        now: DateTime<Utc>,
        is_revoked: impl Fn(&[String]) -> bool,
    ) -> Result<Arc<VerifiedCredential>, CredentialError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = {
            let mut entries = self.lock();
            match entries.get(&key) {
                Some(entry)
                    if entry.verifier == verifier.fingerprint
                        && !entry.credential.is_expired(now) =>
                {
                    Some(Arc::clone(&entry.credential))
                }
                Some(_) => {
                    entries.remove(&key);
                    None
                }
                None => None,
            }
        };
        if let Some(credential) = cached {
            if is_revoked(&credential.revocation_ids) {
                return Err(CredentialError::Revoked);
            }
            return Ok(credential);
        }

        self.verifications.fetch_add(1, Ordering::Relaxed);
        let credential = Arc::new(verifier.verify(token, now)?);
        if is_revoked(&credential.revocation_ids) {
            return Err(CredentialError::Revoked);
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| !entry.credential.is_expired(now));
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.credential.expires_at)
                    .map(|(key, _)| *key);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(
            key,
            CacheEntry {
                verifier: verifier.fingerprint,
                credential: Arc::clone(&credential),
            },
        );
        Ok(credential)
    }

    /// Drops every entry expired at `now` or revoked (`is_revoked` of its
    /// revocation ids); returns how many were dropped. A revoked credential
    /// is never served again, so keeping it until its expiry would only
    /// hold memory for every task ended early.
    pub fn purge(&self, now: DateTime<Utc>, is_revoked: impl Fn(&[String]) -> bool) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, entry| {
            !entry.credential.is_expired(now) && !is_revoked(&entry.credential.revocation_ids)
        });
        before - entries.len()
    }

    /// Number of cached credentials.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many full verifications this cache has run (cache misses).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], CacheEntry>> {
        // The map stays consistent even if a holder panicked.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decodes the token and verifies its signature chain.
fn parse(token: &str, public_key: &PublicKey) -> Result<Biscuit, CredentialError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(CredentialError::Malformed("empty token".to_owned()));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(CredentialError::Malformed(format!(
            "token of {} characters is longer than the limit of {MAX_TOKEN_LEN}",
            token.len()
        )));
    }
    Biscuit::from_base64(token, public_key).map_err(|e| match e {
        BiscuitError::Format(
            Format::Signature(_)
            | Format::SealedSignature
            | Format::InvalidSignatureSize(_)
            | Format::SignatureDeserializationError(_)
            | Format::BlockSignatureDeserializationError(_),
        ) => CredentialError::BadSignature,
        BiscuitError::Format(format) => CredentialError::Malformed(format.to_string()),
        BiscuitError::Base64(e) => CredentialError::Malformed(format!("not base64url: {e}")),
        other => CredentialError::Malformed(other.to_string()),
    })
}

/// Refuses any block after the authority block that is not a third-party
/// block signed by the authority key.
fn check_blocks(biscuit: &Biscuit, public_key: &PublicKey) -> Result<(), CredentialError> {
    for (index, key) in biscuit.external_public_keys().iter().enumerate().skip(1) {
        match key {
            Some(key) if key == public_key => {}
            Some(key) => {
                return Err(CredentialError::UntrustedBlock {
                    index,
                    reason: format!("third-party block signed by another key, {key}"),
                });
            }
            None => {
                return Err(CredentialError::UntrustedBlock {
                    index,
                    reason: "first-party block appended by a holder".to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Reads the audience from the authority block (for [`TaskAuthority::delegate`],
/// which keeps the token's own audience).
fn authority_audience(biscuit: &Biscuit, limits: DatalogLimits) -> Result<String, CredentialError> {
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(limits.into())
        .build(biscuit)
        .map_err(evaluation)?;
    exactly_one(
        query(
            &mut authorizer,
            "data($a) <- task_audience($a) trusting authority",
        )?,
        "task_audience",
    )
}

/// Runs the authorizer once at `now` (after [`parse`] and [`check_blocks`]):
/// extracts the trusted facts, checks depth and expiry, then the token's own
/// checks, with `audience` as the expected audience.
fn evaluate(
    biscuit: &Biscuit,
    public_key: &PublicKey,
    audience: &str,
    now: DateTime<Utc>,
    limits: DatalogLimits,
) -> Result<VerifiedCredential, CredentialError> {
    let now_secs = u64::try_from(now.timestamp()).map_err(|_| {
        CredentialError::InvalidRequest(format!("time {} is before 1970", rfc3339(&now)))
    })?;
    let mut authorizer = AuthorizerBuilder::new()
        .fact(fact("time", &[Term::Date(now_secs)]))
        .and_then(|b| b.fact(fact("audience", &[string(audience)])))
        .and_then(|b| b.fact(fact("tools_checked_per_call", &[boolean(true)])))
        .and_then(|b| b.policy("allow if task($task)"))
        .map_err(internal)?
        .set_limits(limits.into())
        .build(biscuit)
        .map_err(evaluation)?;

    let task_id: String = exactly_one(
        query(&mut authorizer, "data($t) <- task($t) trusting authority")?,
        "task",
    )?;
    let task_id = TaskId::new(task_id).map_err(|e| CredentialError::Malformed(e.to_string()))?;
    let found_audience: String = exactly_one(
        query(
            &mut authorizer,
            "data($a) <- task_audience($a) trusting authority",
        )?,
        "task_audience",
    )?;
    let max_depth: i64 = exactly_one(
        query(
            &mut authorizer,
            "data($m) <- max_depth($m) trusting authority",
        )?,
        "max_depth",
    )?;
    let max_depth = u32::try_from(max_depth)
        .map_err(|_| CredentialError::Malformed(format!("max_depth {max_depth} out of range")))?;
    let on_behalf_of: BTreeSet<(String,)> = query(
        &mut authorizer,
        "data($h) <- on_behalf_of($h) trusting authority",
    )?;
    if on_behalf_of.len() > 1 {
        return Err(CredentialError::Malformed(
            "more than one on_behalf_of".to_owned(),
        ));
    }

    let trusted = format!("trusting authority, ed25519/{}", public_key.to_bytes_hex());
    let blocks = biscuit.block_count();
    let hops: BTreeSet<(String, i64)> = query(
        &mut authorizer,
        &format!("data($a, $d) <- hop($a, $d) {trusted}"),
    )?;
    let expiries: BTreeSet<(i64, SystemTime)> = query(
        &mut authorizer,
        &format!("data($d, $e) <- hop_expires($d, $e) {trusted}"),
    )?;
    let hop_tools: BTreeSet<(i64, String)> = query(
        &mut authorizer,
        &format!("data($d, $t) <- hop_tool($d, $t) {trusted}"),
    )?;
    let hop_labels: BTreeSet<(i64, String)> = query(
        &mut authorizer,
        &format!("data($d, $l) <- hop_label($d, $l) {trusted}"),
    )?;

    // One hop and one expiry per block, at depths 0, 1, …
    let mut chain: Vec<Option<Hop>> = vec![None; blocks];
    for (agent, depth) in hops {
        let (index, depth) = depth_index(depth, blocks, "hop")?;
        let slot = chain
            .get_mut(index)
            .ok_or_else(|| bad_depth("hop", depth))?;
        if slot.is_some() {
            return Err(CredentialError::Malformed(format!(
                "two hops at depth {depth}"
            )));
        }
        *slot = Some(Hop { agent, depth });
    }
    let chain: Vec<Hop> = chain
        .into_iter()
        .enumerate()
        .map(|(depth, hop)| {
            hop.ok_or_else(|| CredentialError::Malformed(format!("no hop at depth {depth}")))
        })
        .collect::<Result<_, _>>()?;
    let mut hop_expiry: Vec<Option<DateTime<Utc>>> = vec![None; blocks];
    for (depth, expires) in expiries {
        let (index, depth) = depth_index(depth, blocks, "hop_expires")?;
        let slot = hop_expiry
            .get_mut(index)
            .ok_or_else(|| bad_depth("hop_expires", depth))?;
        if slot.is_some() {
            return Err(CredentialError::Malformed(format!(
                "two expiries at depth {depth}"
            )));
        }
        *slot = Some(DateTime::<Utc>::from(expires));
    }
    let expires_at = hop_expiry
        .into_iter()
        .enumerate()
        .map(|(depth, e)| {
            e.ok_or_else(|| CredentialError::Malformed(format!("no expiry at depth {depth}")))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .ok_or_else(|| CredentialError::Malformed("no expiry".to_owned()))?;
    let tools = intersect(hop_tools, blocks, "hop_tool")?;
    let labels = intersect(hop_labels, blocks, "hop_label")?;

    let root_agent = chain
        .first()
        .map(|hop| hop.agent.clone())
        .ok_or_else(|| CredentialError::Malformed("no root agent".to_owned()))?;
    let depth = chain.last().map_or(0, |hop| hop.depth);
    if depth > max_depth {
        return Err(CredentialError::TooDeep { depth, max_depth });
    }
    if found_audience != audience {
        return Err(CredentialError::WrongAudience {
            expected: audience.to_owned(),
            found: found_audience,
        });
    }
    if now >= expires_at {
        return Err(CredentialError::Expired {
            expired_at: expires_at,
        });
    }

    // The token's own checks, as an offline verifier runs them: a last line
    // of defence behind the Rust checks above.
    authorizer.authorize().map_err(evaluation)?;

    Ok(VerifiedCredential {
        task_id,
        root_agent,
        on_behalf_of: on_behalf_of.into_iter().next().map(|(human,)| human),
        chain,
        tools,
        labels,
        expires_at,
        max_depth,
        audience: found_audience,
        revocation_ids: revocation_ids(biscuit),
    })
}

/// Runs a query against the trusted facts, collecting distinct results.
fn query<T, C>(authorizer: &mut Authorizer, rule: &str) -> Result<C, CredentialError>
where
    T: TryFrom<biscuit_auth::builder::Fact, Error = BiscuitError>,
    C: FromIterator<T>,
{
    let rows: Vec<T> = authorizer.query(rule).map_err(evaluation)?;
    Ok(rows.into_iter().collect())
}

fn exactly_one<T>(rows: BTreeSet<(T,)>, name: &str) -> Result<T, CredentialError> {
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some((value,)), None) => Ok(value),
        (None, _) => Err(CredentialError::Malformed(format!(
            "no `{name}` fact in the authority block"
        ))),
        (Some(_), Some(_)) => Err(CredentialError::Malformed(format!(
            "more than one `{name}` fact"
        ))),
    }
}

/// Intersection over all depths of the per-depth sets `(depth, value)`.
fn intersect(
    rows: BTreeSet<(i64, String)>,
    blocks: usize,
    name: &str,
) -> Result<BTreeSet<String>, CredentialError> {
    let mut per_depth: Vec<BTreeSet<String>> = vec![BTreeSet::new(); blocks];
    for (depth, value) in rows {
        let (index, depth) = depth_index(depth, blocks, name)?;
        per_depth
            .get_mut(index)
            .ok_or_else(|| bad_depth(name, depth))?
            .insert(value);
    }
    let mut sets = per_depth.into_iter();
    let first = sets.next().unwrap_or_default();
    Ok(sets.fold(first, |acc, set| acc.intersection(&set).cloned().collect()))
}

fn depth_index(depth: i64, blocks: usize, name: &str) -> Result<(usize, u32), CredentialError> {
    let small = u32::try_from(depth)
        .map_err(|_| CredentialError::Malformed(format!("`{name}` at invalid depth {depth}")))?;
    let index = usize::try_from(small)
        .map_err(|_| CredentialError::Malformed(format!("`{name}` at invalid depth {depth}")))?;
    if index >= blocks {
        return Err(bad_depth(name, small));
    }
    Ok((index, small))
}

fn bad_depth(name: &str, depth: u32) -> CredentialError {
    CredentialError::Malformed(format!(
        "`{name}` at depth {depth}, beyond the token's blocks"
    ))
}

fn narrowing_params(
    expires: u64,
    tools: &BTreeSet<String>,
    labels: &BTreeSet<String>,
) -> HashMap<String, Term> {
    let set = |values: &BTreeSet<String>| Term::Set(values.iter().map(|v| string(v)).collect());
    HashMap::from([
        ("expires".to_owned(), Term::Date(expires)),
        ("tools".to_owned(), set(tools)),
        ("labels".to_owned(), set(labels)),
    ])
}

fn credential(
    biscuit: &Biscuit,
    expires_at: DateTime<Utc>,
) -> Result<TaskCredential, CredentialError> {
    let token = biscuit.to_base64().map_err(internal)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(CredentialError::InvalidRequest(format!(
            "the credential would be {} characters long, over the limit of {MAX_TOKEN_LEN}: too many tools, labels or hops",
            token.len()
        )));
    }
    Ok(TaskCredential {
        token,
        revocation_ids: revocation_ids(biscuit),
        expires_at,
    })
}

fn revocation_ids(biscuit: &Biscuit) -> Vec<String> {
    biscuit
        .revocation_identifiers()
        .iter()
        .map(|id| hex(id))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Truncates to whole seconds (Biscuit's date precision) and converts.
fn whole_seconds(at: DateTime<Utc>) -> Result<(DateTime<Utc>, u64), CredentialError> {
    let secs = u64::try_from(at.timestamp()).map_err(|_| {
        CredentialError::InvalidRequest(format!("expiry {} is before 1970", rfc3339(&at)))
    })?;
    let truncated = DateTime::from_timestamp(at.timestamp(), 0).ok_or_else(|| {
        CredentialError::InvalidRequest(format!("expiry {} out of range", rfc3339(&at)))
    })?;
    Ok((truncated, secs))
}

fn non_empty(what: &str, value: &str) -> Result<(), CredentialError> {
    if value.trim().is_empty() {
        return Err(CredentialError::InvalidRequest(format!(
            "the {what} is empty"
        )));
    }
    Ok(())
}

/// A name outside its grammar (`mandate_core::names`) is never put in a
/// credential: policies would see it as a different name.
fn checked(name: Result<(), names::NameError>) -> Result<(), CredentialError> {
    name.map_err(|e| CredentialError::InvalidRequest(e.to_string()))
}

fn every(
    values: &BTreeSet<String>,
    check: fn(&str) -> Result<(), names::NameError>,
) -> Result<(), CredentialError> {
    values.iter().try_for_each(|value| checked(check(value)))
}

fn internal(e: BiscuitError) -> CredentialError {
    CredentialError::Internal(e.to_string())
}

/// Maps an evaluation error: a limit is [`CredentialError::LimitExceeded`],
/// anything else a deny with the failed checks.
fn evaluation(e: BiscuitError) -> CredentialError {
    match e {
        BiscuitError::RunLimit(limit) => CredentialError::LimitExceeded(limit.to_string()),
        BiscuitError::FailedLogic(logic) => CredentialError::CheckFailed(logic.to_string()),
        other => CredentialError::CheckFailed(other.to_string()),
    }
}
