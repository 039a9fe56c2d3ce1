//! Workload identity: the JWT an agent presents, verified offline.
//!
//! An agent proves what it is with a JWT: a token from an OIDC issuer, checked
//! against that issuer's JWKS, or a SPIFFE JWT-SVID, checked against the trust
//! domain's JWT bundle (also a JWKS). [`IdentityVerifier::verify`] checks the
//! token and returns a [`VerifiedIdentity`]: the subject becomes the principal,
//! the remaining claims its attributes. The human the agent acts for
//! (`on_behalf_of`, from a configured claim) is carried apart and never merges
//! into the agent's identity or attributes.
//!
//! Pure: the caller loads the JWKS (file or URL) and passes it in, and passes
//! the current time to every call. Nothing here reads a clock, a file or the
//! network. To follow key rotations, the caller builds a new verifier with
//! the new sets ([`IssuerConfig::with_keys`]); an issuer whose keys are not
//! fetched yet is configured [`with_keys_pending`](IssuerConfig::with_keys_pending)
//! and refuses every token ([`IdentityError::KeysUnavailable`]), and
//! [`IdentityVerifier::issuer_index`] tells which issuer's keys a token with
//! an unknown `kid` needs.
//!
//! # What is checked, in order
//!
//! 1. Shape: at most [`MAX_TOKEN_BYTES`], three base64url segments, JSON
//!    objects for header and payload, no `crit` header.
//! 2. `alg`: `none` (any case) is refused, and so is every symmetric (`HS*`)
//!    algorithm: the keys here are public, and a public key must never serve as
//!    an HMAC secret (the classic algorithm-confusion attack). Only RS256,
//!    RS384, RS512, PS256, PS384, PS512, ES256, ES384 and EdDSA are accepted.
//! 3. Issuer selection, from the still unverified payload: the configured
//!    issuer whose `issuer` equals `iss`; else, when `sub` is a SPIFFE ID, the
//!    SPIFFE issuer of its trust domain. The choice only decides which keys may
//!    verify the token; every claim is checked again after the signature.
//! 4. Key selection by `kid`. A token without `kid` (or with a `kid` the set
//!    does not name) is verified with the only key of a one-key set that has no
//!    `kid` itself; otherwise the key is unknown.
//! 5. The header `alg` must be one the key allows: the JWK's own `alg` when it
//!    has one, else the algorithms of its type (RSA: RS* and PS*; EC: the
//!    curve's ES*; OKP Ed25519: EdDSA).
//! 6. Signature, then the claims: `exp`, `aud` and `sub` present (and `iss`
//!    when the issuer has one), `aud` naming one of the configured audiences,
//!    `iss` equal to the configured issuer. `jsonwebtoken` performs these, with
//!    its own clock checks switched off (it reads the system clock).
//! 7. Time against the `now` passed in: `exp` not passed, `nbf` and `iat` not in
//!    the future, each with the issuer's leeway; `exp - iat` within the
//!    configured maximum lifetime.
//! 8. For SPIFFE: `sub` is a valid SPIFFE ID of a workload (`spiffe://` trust
//!    domain, non-empty path) in the configured trust domain.
//!
//! # SPIFFE and `iss`
//!
//! The JWT-SVID standard does not define `iss`, and a SPIFFE bundle names no
//! issuer. A SPIFFE issuer is therefore selected by the trust domain of `sub`.
//! Its `issuer` may be left empty (the default of [`IssuerConfig::spiffe`]):
//! then `iss` is neither required nor checked, and the verified identity's
//! issuer is the token's `iss` or, without one, `spiffe://<trust domain>`. When
//! it is set (SPIRE's `jwt_issuer`), `iss` is required and must match. As the
//! standard asks, only the RS*, PS* and ES* algorithms verify JWT-SVIDs
//! (Ed25519 keys in a SPIFFE bundle are skipped), and the header may carry only
//! `alg`, `kid` and `typ` (`JWT` or `JOSE`). ES512 (P-521) is not supported
//! (`jsonwebtoken` lacks it); such keys are skipped with a warning.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mandate_core::names;
use serde::Serialize;
use serde_json::{Map, Value};

/// The JWKS type [`IssuerConfig::keys`] holds, re-exported so that callers need
/// no direct `jsonwebtoken` dependency.
pub use jsonwebtoken::jwk::JwkSet;

/// The clock skew tolerated by default on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway an issuer may be configured with.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// RSA moduli shorter than this are refused.
const MIN_RSA_BITS: usize = 2048;

/// RSA moduli longer than this cannot be verified by the `rsa` crate.
const MAX_RSA_BITS: usize = 4096;

/// Registered claims surfaced as fields of [`VerifiedIdentity`], never as
/// attributes.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The RSA signature algorithms.
const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// What kind of token an issuer hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKind {
    /// An OIDC (or plain OAuth) issuer: JWTs verified against its JWKS,
    /// selected by their `iss`.
    Oidc,
    /// A SPIFFE trust domain: JWT-SVIDs whose `sub` is a SPIFFE ID in this
    /// trust domain, verified against the domain's JWT bundle.
    Spiffe {
        /// The trust domain, such as `prod.example.org` (no `spiffe://`).
        trust_domain: String,
    },
}

/// One trusted issuer of workload identity tokens.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` the tokens carry. Required for OIDC. For SPIFFE it may be
    /// empty, and then `iss` is not checked (see the module documentation).
    pub issuer: String,
    /// The `aud` values accepted: a token must name at least one. At least one
    /// is required, for example Mandate's resource identifier (RFC 8707).
    pub audiences: Vec<String>,
    /// The issuer's public keys. Symmetric keys are refused.
    pub keys: JwkSet,
    /// OIDC or SPIFFE.
    pub kind: IssuerKind,
    /// The claim naming the human the agent acts for, such as `obo` or
    /// `act_for`. Its value is reported as
    /// [`VerifiedIdentity::on_behalf_of`] and left out of the attributes.
    /// `None` by default.
    pub on_behalf_of_claim: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`: [`DEFAULT_LEEWAY`] by
    /// default, at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// The longest lifetime (`exp - iat`) accepted. When set, tokens must carry
    /// `iat`. `None` by default.
    pub max_lifetime: Option<Duration>,
    /// The keys are still to be fetched (a JWKS URL not reached yet): `keys`
    /// is ignored, and every token of this issuer is refused with
    /// [`IdentityError::KeysUnavailable`]. `false` by default.
    pub keys_pending: bool,
}

impl IssuerConfig {
    /// An OIDC issuer with the default leeway, no `on_behalf_of` claim and no
    /// lifetime limit.
    pub fn oidc(issuer: impl Into<String>, audiences: Vec<String>, keys: JwkSet) -> Self {
        Self {
            issuer: issuer.into(),
            audiences,
            keys,
            kind: IssuerKind::Oidc,
            on_behalf_of_claim: None,
            leeway: DEFAULT_LEEWAY,
            max_lifetime: None,
            keys_pending: false,
        }
    }

    /// A SPIFFE trust domain with no `iss` requirement, the default leeway, no
    /// `on_behalf_of` claim and no lifetime limit.
    pub fn spiffe(trust_domain: impl Into<String>, audiences: Vec<String>, keys: JwkSet) -> Self {
        Self {
            issuer: String::new(),
            audiences,
            keys,
            kind: IssuerKind::Spiffe {
                trust_domain: trust_domain.into(),
            },
            on_behalf_of_claim: None,
            leeway: DEFAULT_LEEWAY,
            max_lifetime: None,
            keys_pending: false,
        }
    }

    /// The same, requiring this `iss`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The same, reading the human the agent acts for from `claim`.
    #[must_use]
    pub fn with_on_behalf_of_claim(mut self, claim: impl Into<String>) -> Self {
        self.on_behalf_of_claim = Some(claim.into());
        self
    }

    /// The same, with this leeway.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The same, refusing tokens that live longer than `max_lifetime`.
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// The same, with these keys (and no longer pending).
    #[must_use]
    pub fn with_keys(mut self, keys: JwkSet) -> Self {
        self.keys = keys;
        self.keys_pending = false;
        self
    }

    /// The same, without keys until they are fetched: every token of this
    /// issuer is refused ([`IdentityError::KeysUnavailable`]), never accepted
    /// on an empty key set.
    #[must_use]
    pub fn with_keys_pending(mut self) -> Self {
        self.keys = JwkSet { keys: Vec::new() };
        self.keys_pending = true;
        self
    }

    /// How errors and warnings name this issuer.
    fn label(&self) -> String {
        match &self.kind {
            IssuerKind::Spiffe { trust_domain } if self.issuer.is_empty() => {
                format!("spiffe://{trust_domain}")
            }
            _ => self.issuer.clone(),
        }
    }
}

/// Parses a JWKS document (`{"keys": [...]}`), such as a file's contents or a
/// `jwks_uri` response. Unknown members (a SPIFFE bundle's
/// `spiffe_refresh_hint`, say) are ignored.
pub fn parse_jwks(json: &str) -> Result<JwkSet, IdentityConfigError> {
    serde_json::from_str(json).map_err(|e| IdentityConfigError::InvalidJwks(e.to_string()))
}

/// An identity the token proved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifiedIdentity {
    /// `sub`: the agent, the principal of its calls. A SPIFFE ID for
    /// JWT-SVIDs.
    pub subject: String,
    /// `iss`; for a SPIFFE token without one, `spiffe://<trust domain>`.
    pub issuer: String,
    /// The trust domain, for JWT-SVIDs.
    pub trust_domain: Option<String>,
    /// The configured audience the token named (the first, in the token's
    /// order).
    pub audience: String,
    /// `exp`.
    pub expires_at: DateTime<Utc>,
    /// The human the agent acts for, from the issuer's `on_behalf_of` claim.
    /// Never part of `subject` or `claims`.
    pub on_behalf_of: Option<String>,
    /// Every other claim (not `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`
    /// or the `on_behalf_of` claim): the principal's attributes.
    pub claims: Map<String, Value>,
    /// `jti`, if the token has one.
    pub token_id: Option<String>,
}

/// Why a token was refused. Every variant is an RFC 6750 `invalid_token`
/// (HTTP 401); [`reason`](Self::reason) tells them apart. The messages fit a
/// `WWW-Authenticate` `error_description`: printable ASCII without `"` or `\`,
/// and values from the token appear only sanitised and truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not a well-formed signed JWT.
    #[error("malformed token: {detail}")]
    Malformed {
        /// What is wrong.
        detail: &'static str,
    },
    /// The header says `alg: none`: an unsigned token.
    #[error("unsigned tokens (alg none) are never accepted")]
    AlgNone,
    /// The algorithm is not accepted: symmetric, unknown, or not the key's.
    #[error("algorithm `{alg}` is not accepted {detail}")]
    AlgNotAllowed {
        /// The header's `alg` (sanitised).
        alg: String,
        /// Why.
        detail: &'static str,
    },
    /// No configured issuer has this `iss` (or trust domain).
    #[error("issuer `{issuer}` is not trusted")]
    UnknownIssuer {
        /// The token's `iss` (sanitised).
        issuer: String,
    },
    /// The token's `iss` is not the one its issuer is configured with.
    #[error("the token's issuer does not match the configured issuer")]
    WrongIssuer,
    /// The issuer has no key with this `kid`.
    #[error("no trusted key {}", match .kid {
        Some(kid) => format!("has kid `{kid}`"),
        None => "matches a token without kid".to_owned(),
    })]
    UnknownKey {
        /// The token's `kid` (sanitised), if any.
        kid: Option<String>,
    },
    /// The signature does not verify with the issuer's key.
    #[error("the signature does not verify")]
    BadSignature,
    /// The token's `aud` names none of the accepted audiences.
    #[error("the token is not meant for this service (audience)")]
    WrongAudience,
    /// A required claim is missing (or not of the required type).
    #[error("required claim `{claim}` is missing")]
    MissingClaim {
        /// The claim.
        claim: String,
    },
    /// `exp` has passed (beyond the leeway).
    #[error("the token expired at {}", rfc3339(.expired_at))]
    Expired {
        /// The token's `exp`.
        expired_at: DateTime<Utc>,
    },
    /// `nbf` or `iat` lies in the future (beyond the leeway).
    #[error("the token is not valid before {} (`{claim}`)", rfc3339(.valid_from))]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// Its value.
        valid_from: DateTime<Utc>,
    },
    /// `exp - iat` exceeds the issuer's maximum lifetime.
    #[error("the token lives {lifetime_secs} s, longer than the {max_secs} s allowed")]
    LifetimeTooLong {
        /// `exp - iat`, in seconds.
        lifetime_secs: i64,
        /// The configured maximum, in seconds.
        max_secs: u64,
    },
    /// The SPIFFE ID belongs to another trust domain.
    #[error("trust domain `{trust_domain}` is not trusted here")]
    WrongTrustDomain {
        /// The token's trust domain (sanitised).
        trust_domain: String,
    },
    /// A SPIFFE issuer's token whose `sub` is not a workload's SPIFFE ID.
    #[error("the subject is not a valid SPIFFE ID of a workload")]
    InvalidSpiffeId,
    /// The issuer's keys have not been fetched yet (its JWKS URL could not
    /// be read since the server started): no token of it is accepted.
    #[error("the keys of issuer `{issuer}` are not available yet (its JWKS could not be fetched)")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
    },
}

impl IdentityError {
    /// A short, stable machine code: `malformed`, `alg_none`,
    /// `alg_not_allowed`, `unknown_issuer`, `wrong_issuer`, `unknown_key`,
    /// `bad_signature`, `wrong_audience`, `missing_claim`, `expired`,
    /// `not_yet_valid`, `lifetime_too_long`, `wrong_trust_domain`,
    /// `invalid_spiffe_id`, `keys_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::AlgNone => "alg_none",
            Self::AlgNotAllowed { .. } => "alg_not_allowed",
            Self::UnknownIssuer { .. } => "unknown_issuer",
            Self::WrongIssuer => "wrong_issuer",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim { .. } => "missing_claim",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::LifetimeTooLong { .. } => "lifetime_too_long",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::InvalidSpiffeId => "invalid_spiffe_id",
            Self::KeysUnavailable { .. } => "keys_unavailable",
        }
    }

    /// The RFC 6750 error code: `invalid_token` for every variant.
    pub fn error_code(&self) -> &'static str {
        "invalid_token"
    }

    fn malformed(detail: &'static str) -> Self {
        Self::Malformed { detail }
    }

    fn missing(claim: &str) -> Self {
        Self::MissingClaim {
            claim: claim.to_owned(),
        }
    }
}

/// Why an issuer configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityConfigError {
    /// The JWKS document does not parse.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    /// An OIDC issuer without `issuer`.
    #[error("an OIDC issuer needs its `issuer` (the tokens' `iss`)")]
    MissingIssuer,
    /// A trust domain name that is not valid.
    #[error("`{0}` is not a valid SPIFFE trust domain (lowercase letters, digits, `.`, `-`, `_`)")]
    InvalidTrustDomain(String),
    /// Two issuers with the same `issuer`.
    #[error("issuer `{0}` is configured twice")]
    DuplicateIssuer(String),
    /// Two SPIFFE issuers for the same trust domain.
    #[error("trust domain `{0}` is configured twice")]
    DuplicateTrustDomain(String),
    /// No accepted audience, or an empty one.
    #[error("issuer `{0}`: at least one non-empty audience is required")]
    NoAudience(String),
    /// A leeway above [`MAX_LEEWAY`].
    #[error("issuer `{issuer}`: leeway {leeway:?} exceeds the maximum {max:?}")]
    LeewayTooLarge {
        /// The issuer.
        issuer: String,
        /// The configured leeway.
        leeway: Duration,
        /// [`MAX_LEEWAY`].
        max: Duration,
    },
    /// A maximum lifetime of zero, or too large to represent.
    #[error("issuer `{0}`: the maximum lifetime must be positive and finite")]
    InvalidMaxLifetime(String),
    /// The `on_behalf_of` claim is empty or a registered claim.
    #[error(
        "issuer `{issuer}`: `{claim}` cannot name the human an agent acts for (empty or a registered claim)"
    )]
    InvalidOnBehalfOfClaim {
        /// The issuer.
        issuer: String,
        /// The claim.
        claim: String,
    },
    /// A symmetric key (`kty: oct`, or an `HS*` algorithm) in a JWKS.
    #[error(
        "issuer `{issuer}`: key `{kid}` is symmetric; only public keys are accepted (HS* would let anyone holding the key mint tokens)"
    )]
    SymmetricKey {
        /// The issuer.
        issuer: String,
        /// The key's `kid`, or `-`.
        kid: String,
    },
    /// The key's `alg` does not fit its type or curve.
    #[error("issuer `{issuer}`: key `{kid}` declares alg {alg} which does not fit the key")]
    KeyAlgorithmMismatch {
        /// The issuer.
        issuer: String,
        /// The key's `kid`, or `-`.
        kid: String,
        /// The declared `alg`.
        alg: String,
    },
    /// Key material that cannot verify anything.
    #[error("issuer `{issuer}`: key `{kid}` is invalid: {reason}")]
    InvalidKey {
        /// The issuer.
        issuer: String,
        /// The key's `kid`, or `-`.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// Two keys with the same `kid`.
    #[error("issuer `{issuer}`: kid `{kid}` appears twice")]
    DuplicateKeyId {
        /// The issuer.
        issuer: String,
        /// The `kid`.
        kid: String,
    },
    /// No key of the set can verify tokens.
    #[error("issuer `{0}`: the JWKS has no usable signature key")]
    NoUsableKeys(String),
}

/// Verifies workload identity tokens against the configured issuers.
#[derive(Debug, Clone)]
pub struct IdentityVerifier {
    issuers: Vec<Issuer>,
    warnings: Vec<String>,
}

/// An issuer, validated and with its keys decoded.
#[derive(Debug, Clone)]
struct Issuer {
    /// How messages name it.
    label: String,
    /// The required `iss`; empty for a SPIFFE issuer without one.
    issuer: String,
    audiences: Vec<String>,
    trust_domain: Option<String>,
    keys: Vec<VerifyKey>,
    on_behalf_of_claim: Option<String>,
    leeway: TimeDelta,
    max_lifetime: Option<(TimeDelta, u64)>,
}

/// A public key and the algorithms it may verify.
#[derive(Debug, Clone)]
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl IdentityVerifier {
    /// Validates the configuration and decodes the keys.
    ///
    /// Refused: an OIDC issuer without `issuer`, an invalid trust domain,
    /// duplicate issuers or trust domains, no audience, a leeway above
    /// [`MAX_LEEWAY`], a symmetric key or `HS*` algorithm anywhere, a key whose
    /// `alg` does not fit it, invalid key material (RSA under 2048 or over
    /// 4096 bits included), duplicate `kid`s, and a JWKS with no usable key.
    /// Keys that are not for signatures (`use: enc`, `x509-svid`, `key_ops`
    /// without `verify`) or of an unsupported kind (P-521, Ed448) are skipped
    /// and reported by [`warnings`](Self::warnings). No issuers at all is
    /// allowed: every token is then refused.
    pub fn new(configs: Vec<IssuerConfig>) -> Result<Self, IdentityConfigError> {
        // jsonwebtoken picks its crypto backend from its features and panics
        // when it cannot decide (both `rust_crypto` and `aws_lc_rs` enabled by
        // feature unification). Installing ours first avoids that; if another
        // provider is installed already, it stays.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );

        let mut warnings = Vec::new();
        let mut issuers = Vec::with_capacity(configs.len());
        let mut seen_issuers = HashSet::new();
        let mut seen_domains = HashSet::new();
        for config in configs {
            let issuer = Issuer::compile(config, &mut warnings)?;
            if !issuer.issuer.is_empty() && !seen_issuers.insert(issuer.issuer.clone()) {
                return Err(IdentityConfigError::DuplicateIssuer(issuer.issuer));
            }
            if let Some(domain) = &issuer.trust_domain
                && !seen_domains.insert(domain.clone())
            {
                return Err(IdentityConfigError::DuplicateTrustDomain(domain.clone()));
            }
            issuers.push(issuer);
        }
        Ok(Self { issuers, warnings })
    }

    /// Keys skipped while loading, one line each, for the operator's log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The position, in the configuration given to [`new`](Self::new), of
    /// the issuer whose keys would verify `token` (chosen as
    /// [`verify`](Self::verify) does, from the unverified payload); `None`
    /// if no issuer would. For a caller that refreshes that issuer's keys
    /// when a token names a key it does not know.
    pub fn issuer_index(&self, token: &str) -> Option<usize> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let payload = json_segment(token.split('.').nth(1)?, "payload").ok()?;
        let issuer = self.route(&payload).ok()?;
        self.issuers.iter().position(|i| std::ptr::eq(i, issuer))
    }

    /// Verifies `token` at time `now` (see the module documentation for every
    /// check, in order).
    pub fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IdentityError::malformed("longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::malformed(
                "a JWT has three dot-separated parts",
            ));
        };
        let header = json_segment(header, "the header is not base64url-encoded JSON")?;
        let alg = header_algorithm(&header)?;
        if header.contains_key("crit") {
            return Err(IdentityError::malformed(
                "critical header parameters (crit) are not supported",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(IdentityError::malformed("kid is not a string")),
        };
        let unverified = json_segment(payload, "the payload is not base64url-encoded JSON")?;

        let issuer = self.route(&unverified)?;
        if issuer.trust_domain.is_some() {
            check_svid_header(&header)?;
        }
        let key = issuer.key(kid)?;
        if !key.algorithms.contains(&alg) {
            return Err(IdentityError::AlgNotAllowed {
                alg: format!("{alg:?}"),
                detail: "for this key",
            });
        }

        // Signature, presence of the required claims, `aud` and `iss`. The
        // time checks are off: jsonwebtoken would read the system clock
        // (`validation::validate` calls `get_current_timestamp()` only when
        // `validate_exp` or `validate_nbf` is set); they follow with `now`.
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.validate_aud = true;
        validation.set_audience(&issuer.audiences);
        let mut required = vec!["exp", "aud", "sub"];
        if !issuer.issuer.is_empty() {
            validation.set_issuer(&[issuer.issuer.as_str()]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let verified = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| from_jwt_error(e, alg))?;
        issuer.check_claims(verified.claims, now)
    }

    /// Picks the issuer whose keys may verify this (unverified) payload.
    fn route(&self, payload: &Map<String, Value>) -> Result<&Issuer, IdentityError> {
        let iss = payload.get("iss");
        if let Some(Value::String(iss)) = iss
            && let Some(issuer) = self
                .issuers
                .iter()
                .find(|i| !i.issuer.is_empty() && i.issuer == *iss)
        {
            return Ok(issuer);
        }
        let domain = payload
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|sub| sub.strip_prefix("spiffe://"))
            .map(|rest| rest.split('/').next().unwrap_or_default());
        if let Some(domain) = domain {
            if let Some(issuer) = self
                .issuers
                .iter()
                .find(|i| i.trust_domain.as_deref() == Some(domain))
            {
                return Ok(issuer);
            }
            if self.issuers.iter().any(|i| i.trust_domain.is_some()) {
                return Err(IdentityError::WrongTrustDomain {
                    trust_domain: sanitize(domain),
                });
            }
        }
        match iss {
            None => Err(IdentityError::missing("iss")),
            Some(Value::String(iss)) => Err(IdentityError::UnknownIssuer {
                issuer: sanitize(iss),
            }),
            Some(_) => Err(IdentityError::malformed("iss is not a string")),
        }
    }
}

impl Issuer {
    fn compile(
        config: IssuerConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Self, IdentityConfigError> {
        let label = config.label();
        let trust_domain = match &config.kind {
            IssuerKind::Oidc => {
                if config.issuer.is_empty() {
                    return Err(IdentityConfigError::MissingIssuer);
                }
                None
            }
            IssuerKind::Spiffe { trust_domain } => {
                if names::trust_domain(trust_domain).is_err() {
                    return Err(IdentityConfigError::InvalidTrustDomain(
                        trust_domain.clone(),
                    ));
                }
                Some(trust_domain.clone())
            }
        };
        if config.audiences.is_empty() || config.audiences.iter().any(String::is_empty) {
            return Err(IdentityConfigError::NoAudience(label));
        }
        if config.leeway > MAX_LEEWAY {
            return Err(IdentityConfigError::LeewayTooLarge {
                issuer: label,
                leeway: config.leeway,
                max: MAX_LEEWAY,
            });
        }
        let leeway = TimeDelta::from_std(config.leeway).map_err(|_| {
            IdentityConfigError::LeewayTooLarge {
                issuer: label.clone(),
                leeway: config.leeway,
                max: MAX_LEEWAY,
            }
        })?;
        let max_lifetime = match config.max_lifetime {
            None => None,
            Some(max) => {
                let delta = TimeDelta::from_std(max)
                    .ok()
                    .filter(|d| *d > TimeDelta::zero())
                    .ok_or_else(|| IdentityConfigError::InvalidMaxLifetime(label.clone()))?;
                Some((delta, max.as_secs()))
            }
        };
        if let Some(claim) = &config.on_behalf_of_claim
            && (claim.is_empty() || REGISTERED_CLAIMS.contains(&claim.as_str()))
        {
            return Err(IdentityConfigError::InvalidOnBehalfOfClaim {
                issuer: label,
                claim: claim.clone(),
            });
        }

        let spiffe = trust_domain.is_some();
        let mut keys: Vec<VerifyKey> = Vec::new();
        let jwks: &[Jwk] = if config.keys_pending {
            &[]
        } else {
            &config.keys.keys
        };
        for jwk in jwks {
            match compile_key(&label, spiffe, jwk)? {
                Compiled::Key(key) => {
                    if let Some(kid) = &key.kid
                        && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                    {
                        return Err(IdentityConfigError::DuplicateKeyId {
                            issuer: label,
                            kid: kid.clone(),
                        });
                    }
                    keys.push(key);
                }
                Compiled::Skipped(why) => warnings.push(format!(
                    "issuer `{label}`: key `{}` skipped: {why}",
                    kid_label(jwk)
                )),
            }
        }
        if keys.is_empty() && !config.keys_pending {
            return Err(IdentityConfigError::NoUsableKeys(label));
        }

        Ok(Self {
            label,
            issuer: config.issuer,
            audiences: config.audiences,
            trust_domain,
            keys,
            on_behalf_of_claim: config.on_behalf_of_claim,
            leeway,
            max_lifetime,
        })
    }

    /// The key named by `kid`, or the only key of a one-key set without kid.
    fn key(&self, kid: Option<&str>) -> Result<&VerifyKey, IdentityError> {
        // INVARIANT: only an issuer whose keys are pending has none.
        if self.keys.is_empty() {
            return Err(IdentityError::KeysUnavailable {
                issuer: sanitize(&self.label),
            });
        }
        if let Some(kid) = kid
            && let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
        {
            return Ok(key);
        }
        match self.keys.as_slice() {
            [only] if only.kid.is_none() => Ok(only),
            _ => Err(IdentityError::UnknownKey {
                kid: kid.map(sanitize),
            }),
        }
    }

    /// The checks that follow a valid signature.
    fn check_claims(
        &self,
        mut claims: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            Some(Value::String(_)) | None => return Err(IdentityError::missing("sub")),
            Some(_) => return Err(IdentityError::malformed("sub is not a string")),
        };
        let token_issuer = match claims.get("iss") {
            None => None,
            Some(Value::String(iss)) => Some(iss.clone()),
            Some(_) => return Err(IdentityError::malformed("iss is not a string")),
        };
        if !self.issuer.is_empty() && token_issuer.as_deref() != Some(self.issuer.as_str()) {
            return Err(IdentityError::WrongIssuer);
        }
        let audience = self.matched_audience(claims.get("aud"))?;

        let expires_at = numeric_date(&claims, "exp", Round::Down)?
            .ok_or_else(|| IdentityError::missing("exp"))?;
        let not_before = numeric_date(&claims, "nbf", Round::Up)?;
        let issued_at = numeric_date(&claims, "iat", Round::Up)?;
        // Checked additions: `DateTime + TimeDelta` panics at the end of
        // chrono's range, and `exp` comes from the token.
        let deadline = expires_at
            .checked_add_signed(self.leeway)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let latest_start = now
            .checked_add_signed(self.leeway)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if now >= deadline {
            return Err(IdentityError::Expired {
                expired_at: expires_at,
            });
        }
        for (claim, at) in [("nbf", not_before), ("iat", issued_at)] {
            if let Some(at) = at
                && at > latest_start
            {
                return Err(IdentityError::NotYetValid {
                    claim,
                    valid_from: at,
                });
            }
        }
        if let Some(issued_at) = issued_at
            && expires_at <= issued_at
        {
            return Err(IdentityError::malformed("exp is not after iat"));
        }
        if let Some((max, max_secs)) = self.max_lifetime {
            let issued_at = issued_at.ok_or_else(|| IdentityError::missing("iat"))?;
            let lifetime = expires_at - issued_at;
            if lifetime > max {
                return Err(IdentityError::LifetimeTooLong {
                    lifetime_secs: lifetime.num_seconds(),
                    max_secs,
                });
            }
        }

        if let Some(domain) = &self.trust_domain {
            let (sub_domain, _path) =
                names::spiffe_id(&subject).map_err(|_| IdentityError::InvalidSpiffeId)?;
            if sub_domain != domain {
                return Err(IdentityError::WrongTrustDomain {
                    trust_domain: sanitize(sub_domain),
                });
            }
        }

        let token_id = match claims.get("jti") {
            None => None,
            Some(Value::String(jti)) => Some(jti.clone()),
            Some(_) => return Err(IdentityError::malformed("jti is not a string")),
        };
        let on_behalf_of = match &self.on_behalf_of_claim {
            None => None,
            Some(claim) => match claims.remove(claim) {
                None => None,
                Some(value) => Some(on_behalf_of(value)?),
            },
        };
        for claim in REGISTERED_CLAIMS {
            claims.remove(claim);
        }

        let issuer = match (token_issuer, &self.trust_domain) {
            (Some(iss), _) => iss,
            (None, Some(domain)) => format!("spiffe://{domain}"),
            (None, None) => self.issuer.clone(),
        };
        Ok(VerifiedIdentity {
            subject,
            issuer,
            trust_domain: self.trust_domain.clone(),
            audience,
            expires_at,
            on_behalf_of,
            claims,
            token_id,
        })
    }

    /// The first of the token's audiences that is configured.
    fn matched_audience(&self, aud: Option<&Value>) -> Result<String, IdentityError> {
        let values: Vec<&str> = match aud {
            None => return Err(IdentityError::missing("aud")),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(auds)) => auds
                .iter()
                .map(|a| {
                    a.as_str()
                        .ok_or(IdentityError::malformed("aud holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(IdentityError::malformed("aud is not a string or array")),
        };
        values
            .into_iter()
            .find(|a| self.audiences.iter().any(|configured| configured == a))
            .map(str::to_owned)
            .ok_or(IdentityError::WrongAudience)
    }
}

/// The outcome of loading one JWK.
enum Compiled {
    Key(VerifyKey),
    Skipped(&'static str),
}

/// Decodes one JWK: its key, and the algorithms it may verify.
fn compile_key(issuer: &str, spiffe: bool, jwk: &Jwk) -> Result<Compiled, IdentityConfigError> {
    let kid = kid_label(jwk);
    let symmetric = || IdentityConfigError::SymmetricKey {
        issuer: issuer.to_owned(),
        kid: kid.clone(),
    };
    let invalid = |reason: &str| IdentityConfigError::InvalidKey {
        issuer: issuer.to_owned(),
        kid: kid.clone(),
        reason: reason.to_owned(),
    };
    match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => return Err(symmetric()),
        AlgorithmParameters::Other(other)
            if other.fields.get("kty").and_then(Value::as_str) == Some("oct") =>
        {
            return Err(symmetric());
        }
        _ => {}
    }

    let pinned = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512) => {
            return Err(symmetric());
        }
        Some(KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256) => {
            return Ok(Compiled::Skipped("an encryption key"));
        }
        Some(alg) => match Algorithm::try_from(alg) {
            Ok(alg) => Some(alg),
            Err(_) => return Ok(Compiled::Skipped("unsupported alg")),
        },
    };
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Other(other)) if other == "jwt-svid" => {}
        Some(_) => return Ok(Compiled::Skipped("not a signature key (use)")),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Ok(Compiled::Skipped("key_ops does not include verify"));
    }

    let (key, algorithms): (DecodingKey, Vec<Algorithm>) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = b64(&rsa.n).ok_or_else(|| invalid("n is not base64url"))?;
            let e = b64(&rsa.e).ok_or_else(|| invalid("e is not base64url"))?;
            let bits = bit_length(&n);
            if bits < MIN_RSA_BITS {
                return Err(invalid("RSA modulus shorter than 2048 bits"));
            }
            if bits > MAX_RSA_BITS {
                return Err(invalid("RSA modulus longer than 4096 bits"));
            }
            let e_bits = bit_length(&e);
            if !(2..=33).contains(&e_bits) || e.last().is_none_or(|last| last % 2 == 0) {
                return Err(invalid("RSA exponent is not a small odd number"));
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (key, RSA_ALGORITHMS.to_vec())
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, len) = match ec.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                EllipticCurve::P521 => {
                    return Ok(Compiled::Skipped("P-521 (ES512) is not supported"));
                }
                _ => return Err(invalid("EC key on a curve that is not P-256 or P-384")),
            };
            let x = b64(&ec.x).ok_or_else(|| invalid("x is not base64url"))?;
            let y = b64(&ec.y).ok_or_else(|| invalid("y is not base64url"))?;
            if x.len() != len || y.len() != len {
                return Err(invalid("EC coordinates of the wrong length"));
            }
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|_| invalid("EC coordinates do not decode"))?;
            (key, vec![alg])
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if !matches!(okp.curve, EllipticCurve::Ed25519) {
                return Ok(Compiled::Skipped("OKP curve other than Ed25519"));
            }
            if spiffe {
                return Ok(Compiled::Skipped("JWT-SVIDs do not allow EdDSA"));
            }
            // jsonwebtoken slices the first 32 bytes without a length check
            // (it panics on fewer, truncates more): check here.
            let x = b64(&okp.x).ok_or_else(|| invalid("x is not base64url"))?;
            if x.len() != 32 {
                return Err(invalid("an Ed25519 key is 32 bytes"));
            }
            let key = DecodingKey::from_ed_components(&okp.x)
                .map_err(|_| invalid("x does not decode"))?;
            (key, vec![Algorithm::EdDSA])
        }
        _ => return Ok(Compiled::Skipped("unsupported key type")),
    };

    let algorithms = match pinned {
        None => algorithms,
        Some(alg) if algorithms.contains(&alg) => vec![alg],
        Some(alg) => {
            return Err(IdentityConfigError::KeyAlgorithmMismatch {
                issuer: issuer.to_owned(),
                kid,
                alg: format!("{alg:?}"),
            });
        }
    };
    // Build a verifier once: it parses the key (EC point on the curve, Ed25519
    // point decompression) and fails on invalid material. An empty signature
    // then fails to verify, which is expected.
    for alg in &algorithms {
        jsonwebtoken::crypto::verify("", b"", &key, *alg)
            .map_err(|_| invalid("the key material does not parse"))?;
    }
    Ok(Compiled::Key(VerifyKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    }))
}

/// The header's `alg`, if it is one Mandate accepts at all.
fn header_algorithm(header: &Map<String, Value>) -> Result<Algorithm, IdentityError> {
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(IdentityError::malformed("alg is not a string")),
        None => return Err(IdentityError::malformed("the header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(IdentityError::AlgNone);
    }
    let parsed: Option<Algorithm> = alg.parse().ok();
    match parsed {
        Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
            Err(IdentityError::AlgNotAllowed {
                alg: sanitize(alg),
                detail: "(symmetric algorithms are never accepted)",
            })
        }
        Some(alg) => Ok(alg),
        None => Err(IdentityError::AlgNotAllowed {
            alg: sanitize(alg),
            detail: "(unsupported)",
        }),
    }
}

/// JWT-SVID headers carry only `alg`, `kid` and `typ` (`JWT` or `JOSE`).
fn check_svid_header(header: &Map<String, Value>) -> Result<(), IdentityError> {
    if header
        .keys()
        .any(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
    {
        return Err(IdentityError::malformed(
            "a JWT-SVID header holds only alg, kid and typ",
        ));
    }
    match header.get("typ") {
        None => Ok(()),
        Some(Value::String(typ)) if typ == "JWT" || typ == "JOSE" => Ok(()),
        Some(_) => Err(IdentityError::malformed("a JWT-SVID typ is JWT or JOSE")),
    }
}

/// A base64url segment holding a JSON object.
fn json_segment(segment: &str, detail: &'static str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| IdentityError::malformed(detail))?;
    serde_json::from_slice(&bytes).map_err(|_| IdentityError::malformed(detail))
}

/// How a fractional NumericDate is rounded: towards the stricter answer.
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate claim (seconds since the epoch), if present.
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
    round: Round,
) -> Result<Option<DateTime<Utc>>, IdentityError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let bad = || IdentityError::Malformed {
        detail: match claim {
            "exp" => "exp is not a valid NumericDate",
            "nbf" => "nbf is not a valid NumericDate",
            _ => "iat is not a valid NumericDate",
        },
    };
    let number = value.as_number().ok_or_else(bad)?;
    let seconds = match number.as_i64() {
        Some(seconds) => seconds,
        None => {
            let float = number.as_f64().filter(|f| f.is_finite()).ok_or_else(bad)?;
            let rounded = match round {
                Round::Down => float.floor(),
                Round::Up => float.ceil(),
            };
            // Beyond ±2^53 a float has no sub-second part anyway; chrono's
            // range is far smaller than i64.
            if rounded.abs() > 9.0e15 {
                return Err(bad());
            }
            rounded as i64
        }
    };
    DateTime::from_timestamp(seconds, 0)
        .map(Some)
        .ok_or_else(bad)
}

/// The human an agent acts for: a non-empty string, or an object with a
/// string `sub` (the shape of RFC 8693's `act`).
fn on_behalf_of(value: Value) -> Result<String, IdentityError> {
    let name = match value {
        Value::String(name) => name,
        Value::Object(mut object) => match object.remove("sub") {
            Some(Value::String(sub)) => sub,
            _ => String::new(),
        },
        _ => String::new(),
    };
    if name.is_empty() {
        return Err(IdentityError::malformed(
            "the on-behalf-of claim is neither a string nor an object with a sub",
        ));
    }
    Ok(name)
}

/// Maps what jsonwebtoken refuses onto the reasons.
fn from_jwt_error(error: jsonwebtoken::errors::Error, alg: Algorithm) -> IdentityError {
    match error.kind() {
        ErrorKind::InvalidSignature => IdentityError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => IdentityError::AlgNotAllowed {
            alg: format!("{alg:?}"),
            detail: "for this key",
        },
        ErrorKind::MissingRequiredClaim(claim) => IdentityError::missing(claim),
        ErrorKind::InvalidAudience => IdentityError::WrongAudience,
        ErrorKind::InvalidIssuer => IdentityError::WrongIssuer,
        // The key material was checked when loading; if it still fails, the
        // token cannot be verified with it.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => IdentityError::BadSignature,
        _ => IdentityError::malformed("the token does not decode"),
    }
}

/// A URL-safe base64 value without padding.
fn b64(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value).ok()
}

/// The bit length of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let mut rest = bytes.iter().skip_while(|b| **b == 0);
    match rest.next() {
        None => 0,
        Some(first) => {
            let remaining = rest.count();
            remaining * 8 + (8 - first.leading_zeros() as usize)
        }
    }
}

/// A time as RFC 3339 (token times are whole seconds).
fn rfc3339(at: &DateTime<Utc>) -> String {
    mandate_core::time::rfc3339(at)
}

/// A key's `kid` for messages.
fn kid_label(jwk: &Jwk) -> String {
    jwk.common.key_id.clone().unwrap_or_else(|| "-".to_owned())
}

/// A value from the token, safe inside an RFC 6750 `error_description`:
/// at most 64 characters, anything outside `[A-Za-z0-9._:/@+-]` replaced.
fn sanitize(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '+' | '-') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if value.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    /// An Ed25519 key with `kid`, its JWKS and a token of it.
    struct Key {
        seed: [u8; 32],
        kid: &'static str,
    }

    impl Key {
        fn jwks(&self) -> JwkSet {
            let public = ed25519_dalek::SigningKey::from_bytes(&self.seed).verifying_key();
            parse_jwks(
                &json!({ "keys": [{
                    "kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(public.to_bytes()),
                }]})
                .to_string(),
            )
            .unwrap()
        }

        fn token(&self) -> String {
            // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend_from_slice(&self.seed);
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(self.kid.to_owned());
            let claims = json!({
                "iss": ISSUER, "sub": "agent-1", "aud": "mandate",
                "exp": now().timestamp() + 60,
            });
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_ed_der(&der),
            )
            .unwrap()
        }
    }

    fn issuer(keys: JwkSet) -> IssuerConfig {
        IssuerConfig::oidc(ISSUER, vec!["mandate".to_owned()], keys)
    }

    #[test]
    fn pending_keys_refuse_every_token_until_keys_arrive() {
        let old = Key {
            seed: [1; 32],
            kid: "old",
        };
        let new = Key {
            seed: [2; 32],
            kid: "new",
        };
        let pending = IdentityVerifier::new(vec![issuer(old.jwks()).with_keys_pending()]).unwrap();
        let error = pending.verify(&old.token(), now()).unwrap_err();
        assert_eq!(error.reason(), "keys_unavailable");
        assert!(error.to_string().contains(ISSUER), "{error}");
        assert_eq!(pending.issuer_index(&old.token()), Some(0));

        // An empty key set is still refused unless pending.
        let empty = JwkSet { keys: Vec::new() };
        assert!(matches!(
            IdentityVerifier::new(vec![issuer(empty.clone())]),
            Err(IdentityConfigError::NoUsableKeys(_))
        ));
        let pending = issuer(empty).with_keys_pending();
        assert!(pending.keys.keys.is_empty());

        // With the keys: the old key verifies, the new kid is unknown.
        let fetched = IdentityVerifier::new(vec![pending.clone().with_keys(old.jwks())]).unwrap();
        assert_eq!(
            fetched.verify(&old.token(), now()).unwrap().subject,
            "agent-1"
        );
        let error = fetched.verify(&new.token(), now()).unwrap_err();
        assert_eq!(error.reason(), "unknown_key");
        assert_eq!(fetched.issuer_index(&new.token()), Some(0));

        // Rotated: the new key verifies, the old one no longer.
        let rotated = IdentityVerifier::new(vec![pending.with_keys(new.jwks())]).unwrap();
        assert!(rotated.verify(&new.token(), now()).is_ok());
        assert_eq!(
            rotated.verify(&old.token(), now()).unwrap_err().reason(),
            "unknown_key"
        );
    }

    #[test]
    fn issuer_index_follows_the_configuration_order() {
        let key = Key {
            seed: [3; 32],
            kid: "k",
        };
        let other = IssuerConfig::oidc(
            "https://other.example",
            vec!["mandate".to_owned()],
            key.jwks(),
        );
        let verifier = IdentityVerifier::new(vec![other, issuer(key.jwks())]).unwrap();
        assert_eq!(verifier.issuer_index(&key.token()), Some(1));
        assert_eq!(verifier.issuer_index("not a token"), None);
        assert_eq!(verifier.issuer_index("a.b.c"), None);
    }
}
