//! Who is calling, and under which task: verified workload identity tokens
//! ([`identity`]), Biscuit task credentials ([`credential`]), the JWTs
//! Mandate mints for downstream tools in exchange for them ([`exchange`]),
//! and static tokens configured by digest, for people and proxy clients
//! ([`static_token`]).
//!
//! Pure: keys and revocation lists are handed in; fetching a JWKS over the
//! network or storing tasks happens at the edges (`mandate-server`,
//! `mandate-store`).

pub mod credential;
pub mod exchange;
pub mod identity;
pub mod static_token;

pub use credential::{
    CredentialError, CredentialVerifier, DatalogLimits, Delegation, Hop, TaskAuthority,
    TaskCredential, TaskGrant, VerificationCache, VerifiedCredential, Widening,
};
pub use exchange::{
    AccessTokenClaims, Actor, DecidedCall, Downstream, ExchangeConfigError, ExchangeError,
    ExchangeRequest, IssuedToken, PublicJwk, TokenExchange, TokenSigner,
};
pub use identity::{
    IdentityConfigError, IdentityError, IdentityVerifier, IssuerConfig, IssuerKind,
    VerifiedIdentity, parse_jwks,
};
pub use static_token::{TokenDigest, new_token};
