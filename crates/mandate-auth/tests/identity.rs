#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Workload identity tokens, signed with real keys generated here: the tokens
//! that must verify, and the attacks that must fail with their exact reason.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, TimeZone, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate_auth::identity::{
    IdentityConfigError, IdentityError, IdentityVerifier, IssuerConfig, VerifiedIdentity,
    parse_jwks,
};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "https://mandate.example.com";
const TRUST_DOMAIN: &str = "prod.example.org";
const STAGING_DOMAIN: &str = "staging.example.org";
const STAGING_ISSUER: &str = "https://spire.staging.example.org";

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_900_000_000, 0).unwrap()
}

/// Seconds since the epoch, `offset` seconds from `now()`.
fn at(offset: i64) -> i64 {
    now().timestamp() + offset
}

/// A private key that signs tokens, and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
    jwk: Value,
    /// The raw public key, for the algorithm-confusion attack.
    public: Vec<u8>,
}

impl Signer {
    fn ed25519(kid: &str) -> Self {
        let secret = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let public = secret.verifying_key().to_bytes().to_vec();
        Self {
            alg: Algorithm::EdDSA,
            kid: Some(kid.to_owned()),
            key: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": kid, "x": B64.encode(&public),
            }),
            public,
        }
    }

    fn p256(kid: &str) -> Self {
        let secret = p256::SecretKey::random(&mut OsRng);
        let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret).unwrap();
        let point = secret.public_key().to_encoded_point(false);
        Self {
            alg: Algorithm::ES256,
            kid: Some(kid.to_owned()),
            key: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
                "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap()),
            }),
            public: point.as_bytes().to_vec(),
        }
    }

    /// A 2048-bit RSA key (generated once: it takes a while in debug builds).
    /// Its JWK has no `alg`, so RS* and PS* may verify.
    fn rsa(kid: &str, alg: Algorithm) -> Self {
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        let secret = KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap());
        let der = secret.to_pkcs1_der().unwrap();
        let n = secret.n().to_bytes_be();
        Self {
            alg,
            kid: Some(kid.to_owned()),
            key: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "kid": kid,
                "n": B64.encode(&n), "e": B64.encode(secret.e().to_bytes_be()),
            }),
            public: n,
        }
    }

    fn without_kid(mut self) -> Self {
        self.kid = None;
        self.jwk.as_object_mut().unwrap().remove("kid");
        self
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).unwrap()
    }
}

fn jwks(signers: &[&Signer]) -> JwkSet {
    let keys: Vec<&Value> = signers.iter().map(|s| &s.jwk).collect();
    parse_jwks(&json!({ "keys": keys }).to_string()).unwrap()
}

/// An agent's token from the OIDC issuer, acting for alice.
fn oidc_claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "agent:mail-assistant",
        "aud": ["https://other.example.com", AUDIENCE],
        "iat": at(-10),
        "exp": at(300),
        "jti": "tok-1",
        "obo": "alice@example.com",
        "team": "mail",
        "scope": "mail.read mail.send",
    })
}

/// A JWT-SVID of the production trust domain (no `iss`, as SPIRE issues them
/// by default).
fn svid_claims(sub: &str) -> Value {
    json!({ "sub": sub, "aud": [AUDIENCE], "iat": at(-5), "exp": at(120) })
}

/// The keys and the verifier every test starts from.
struct Fixture {
    oidc: Signer,
    oidc_ec: Signer,
    svid: Signer,
    staging: Signer,
    verifier: IdentityVerifier,
}

fn fixture() -> Fixture {
    let oidc = Signer::ed25519("ed-1");
    let oidc_ec = Signer::p256("ec-1");
    let svid = Signer::p256("svid-1");
    let staging = Signer::p256("staging-1");

    let oidc_config =
        IssuerConfig::oidc(ISSUER, vec![AUDIENCE.to_owned()], jwks(&[&oidc, &oidc_ec]))
            .with_on_behalf_of_claim("obo")
            .with_max_lifetime(Duration::from_secs(3600));

    // A SPIFFE bundle as SPIRE serves it: `use: jwt-svid`, plus an X.509
    // authority that must be skipped.
    let mut svid_jwk = svid.jwk.clone();
    svid_jwk["use"] = json!("jwt-svid");
    let x509 = Signer::p256("x509-authority");
    let mut x509_jwk = x509.jwk.clone();
    x509_jwk["use"] = json!("x509-svid");
    let bundle = json!({
        "keys": [svid_jwk, x509_jwk],
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300,
    });
    let svid_config = IssuerConfig::spiffe(
        TRUST_DOMAIN,
        vec![AUDIENCE.to_owned()],
        parse_jwks(&bundle.to_string()).unwrap(),
    );

    // A trust domain whose SPIRE sets `iss`.
    let staging_config =
        IssuerConfig::spiffe(STAGING_DOMAIN, vec![AUDIENCE.to_owned()], jwks(&[&staging]))
            .with_issuer(STAGING_ISSUER);

    let verifier = IdentityVerifier::new(vec![oidc_config, svid_config, staging_config]).unwrap();
    Fixture {
        oidc,
        oidc_ec,
        svid,
        staging,
        verifier,
    }
}

/// Asserts the refusal and its reason, and that the message fits an RFC 6750
/// `error_description` (printable ASCII, no `"` or `\`).
#[track_caller]
fn assert_refused(result: Result<VerifiedIdentity, IdentityError>, reason: &str) -> IdentityError {
    let error = match result {
        Ok(identity) => panic!("expected `{reason}`, but the token verified: {identity:?}"),
        Err(error) => error,
    };
    assert_eq!(error.reason(), reason, "{error}");
    assert_eq!(error.error_code(), "invalid_token");
    let message = error.to_string();
    assert!(
        message
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
        "not a valid error_description: {message}"
    );
    error
}

/// A token assembled by hand, for headers jsonwebtoken would not produce.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

// ---------------------------------------------------------------- accepted

#[test]
fn oidc_token_gives_subject_attributes_and_a_separate_on_behalf_of() {
    let f = fixture();
    let token = f.oidc.sign(&oidc_claims());
    let identity = f.verifier.verify(&token, now()).unwrap();

    assert_eq!(identity.subject, "agent:mail-assistant");
    assert_eq!(identity.issuer, ISSUER);
    assert_eq!(identity.audience, AUDIENCE);
    assert_eq!(identity.trust_domain, None);
    assert_eq!(identity.expires_at.timestamp(), at(300));
    assert_eq!(identity.token_id.as_deref(), Some("tok-1"));

    // The human is carried apart: not the subject, not an attribute.
    assert_eq!(identity.on_behalf_of.as_deref(), Some("alice@example.com"));
    assert_ne!(identity.subject, "alice@example.com");
    assert!(!identity.claims.contains_key("obo"));

    // The other claims are the principal's attributes; registered ones are
    // fields, not attributes.
    assert_eq!(identity.claims.get("team"), Some(&json!("mail")));
    assert_eq!(
        identity.claims.get("scope"),
        Some(&json!("mail.read mail.send"))
    );
    for registered in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"] {
        assert!(!identity.claims.contains_key(registered), "{registered}");
    }
    assert_eq!(identity.claims.len(), 2);
}

#[test]
fn on_behalf_of_may_be_an_actor_object_and_may_be_absent() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["obo"] = json!({ "sub": "bob@example.com" });
    let identity = f.verifier.verify(&f.oidc.sign(&claims), now()).unwrap();
    assert_eq!(identity.on_behalf_of.as_deref(), Some("bob@example.com"));

    claims.as_object_mut().unwrap().remove("obo");
    let identity = f.verifier.verify(&f.oidc.sign(&claims), now()).unwrap();
    assert_eq!(identity.on_behalf_of, None);

    claims["obo"] = json!(42);
    assert_refused(f.verifier.verify(&f.oidc.sign(&claims), now()), "malformed");
}

#[test]
fn es256_token_verifies_with_the_p256_key() {
    let f = fixture();
    let identity = f
        .verifier
        .verify(&f.oidc_ec.sign(&oidc_claims()), now())
        .unwrap();
    assert_eq!(identity.subject, "agent:mail-assistant");
}

#[test]
fn rsa_key_without_alg_verifies_rs256_and_ps256_and_a_pinned_one_only_its_own() {
    let rs = Signer::rsa("rsa-1", Algorithm::RS256);
    let ps = Signer::rsa("rsa-1", Algorithm::PS256);
    let verifier = IdentityVerifier::new(vec![IssuerConfig::oidc(
        ISSUER,
        vec![AUDIENCE.to_owned()],
        jwks(&[&rs]),
    )])
    .unwrap();
    verifier.verify(&rs.sign(&oidc_claims()), now()).unwrap();
    verifier.verify(&ps.sign(&oidc_claims()), now()).unwrap();

    // The JWK pins RS256: a PS256 token with the same key is refused.
    let mut pinned = rs.jwk.clone();
    pinned["alg"] = json!("RS256");
    let set = parse_jwks(&json!({ "keys": [pinned] }).to_string()).unwrap();
    let verifier = IdentityVerifier::new(vec![IssuerConfig::oidc(
        ISSUER,
        vec![AUDIENCE.to_owned()],
        set,
    )])
    .unwrap();
    verifier.verify(&rs.sign(&oidc_claims()), now()).unwrap();
    assert_refused(
        verifier.verify(&ps.sign(&oidc_claims()), now()),
        "alg_not_allowed",
    );
}

#[test]
fn spiffe_svid_verifies_and_fills_the_trust_domain() {
    let f = fixture();
    let sub = "spiffe://prod.example.org/ns/agents/sa/mail";
    let identity = f
        .verifier
        .verify(&f.svid.sign(&svid_claims(sub)), now())
        .unwrap();
    assert_eq!(identity.subject, sub);
    assert_eq!(identity.trust_domain.as_deref(), Some(TRUST_DOMAIN));
    assert_eq!(identity.issuer, "spiffe://prod.example.org");
    assert_eq!(identity.audience, AUDIENCE);
    assert!(identity.claims.is_empty());

    // The X.509 authority of the bundle was skipped, and said so.
    assert_eq!(f.verifier.warnings().len(), 1);
    assert!(f.verifier.warnings()[0].contains("x509-authority"));
}

#[test]
fn spiffe_svid_with_a_configured_issuer_verifies() {
    let f = fixture();
    let mut claims = svid_claims("spiffe://staging.example.org/agent");
    claims["iss"] = json!(STAGING_ISSUER);
    let identity = f.verifier.verify(&f.staging.sign(&claims), now()).unwrap();
    assert_eq!(identity.issuer, STAGING_ISSUER);
    assert_eq!(identity.trust_domain.as_deref(), Some(STAGING_DOMAIN));
}

#[test]
fn a_single_key_without_kid_verifies_a_token_without_kid() {
    let signer = Signer::ed25519("unused").without_kid();
    let verifier = IdentityVerifier::new(vec![IssuerConfig::oidc(
        ISSUER,
        vec![AUDIENCE.to_owned()],
        jwks(&[&signer]),
    )])
    .unwrap();
    verifier
        .verify(&signer.sign(&oidc_claims()), now())
        .unwrap();
}

// ---------------------------------------------------------------- attacks

#[test]
fn alg_none_is_refused() {
    let f = fixture();
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({ "alg": alg, "kid": "ed-1" }), &oidc_claims(), "");
        assert_refused(f.verifier.verify(&token, now()), "alg_none");
    }
    // With the real token's signature pasted on, still unsigned.
    let real = f.oidc.sign(&oidc_claims());
    let signature = real.rsplit('.').next().unwrap();
    let token = raw_token(&json!({ "alg": "none" }), &oidc_claims(), signature);
    assert_refused(f.verifier.verify(&token, now()), "alg_none");
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture();
    // The classic confusion: the attacker knows the public key and uses it as
    // an HMAC secret, hoping the verifier feeds the same bytes to HMAC.
    for secret in [
        f.oidc.public.clone(),
        f.oidc.jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        f.oidc.jwk.to_string().into_bytes(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed-1".to_owned());
        let token =
            jsonwebtoken::encode(&header, &oidc_claims(), &EncodingKey::from_secret(&secret))
                .unwrap();
        assert_refused(f.verifier.verify(&token, now()), "alg_not_allowed");
    }
    let rsa = Signer::rsa("rsa-1", Algorithm::RS256);
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("rsa-1".to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &oidc_claims(),
        &EncodingKey::from_secret(&rsa.public),
    )
    .unwrap();
    assert_refused(f.verifier.verify(&token, now()), "alg_not_allowed");
}

#[test]
fn an_algorithm_other_than_the_keys_is_refused() {
    let f = fixture();
    // Signed by the P-256 key but naming the Ed25519 key's kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ed-1".to_owned());
    let token = f.oidc_ec.sign_with(&header, &oidc_claims());
    assert_refused(f.verifier.verify(&token, now()), "alg_not_allowed");

    // The EC key with a header claiming ES384.
    let token = f.oidc_ec.sign(&oidc_claims());
    let (_, rest) = token.split_once('.').unwrap();
    let header = B64.encode(json!({ "alg": "ES384", "kid": "ec-1" }).to_string());
    assert_refused(
        f.verifier.verify(&format!("{header}.{rest}"), now()),
        "alg_not_allowed",
    );

    // Unknown algorithms.
    let token = raw_token(
        &json!({ "alg": "ES512", "kid": "ec-1" }),
        &oidc_claims(),
        "AA",
    );
    assert_refused(f.verifier.verify(&token, now()), "alg_not_allowed");
}

#[test]
fn a_token_signed_by_another_key_under_the_same_kid_is_refused() {
    let f = fixture();
    let impostor = Signer::ed25519("ed-1");
    assert_refused(
        f.verifier.verify(&impostor.sign(&oidc_claims()), now()),
        "bad_signature",
    );
    // A changed payload under a real signature.
    let token = f.oidc.sign(&oidc_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = oidc_claims();
    claims["sub"] = json!("agent:admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    assert_refused(f.verifier.verify(&forged, now()), "bad_signature");
}

#[test]
fn an_unknown_kid_is_refused() {
    let f = fixture();
    let stranger = Signer::ed25519("ed-2");
    assert_refused(
        f.verifier.verify(&stranger.sign(&oidc_claims()), now()),
        "unknown_key",
    );
    // No kid, and the issuer has two keys: no guessing.
    let no_kid = Signer::ed25519("x").without_kid();
    assert_refused(
        f.verifier.verify(&no_kid.sign(&oidc_claims()), now()),
        "unknown_key",
    );
}

#[test]
fn a_hostile_kid_does_not_leak_into_the_message() {
    let f = fixture();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("\"bad\\kid\r\nSet-Cookie: x=1 ".repeat(10));
    let token = f.oidc.sign_with(&header, &oidc_claims());
    let error = assert_refused(f.verifier.verify(&token, now()), "unknown_key");
    assert!(error.to_string().len() < 200);
}

#[test]
fn a_wrong_audience_is_refused() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["aud"] = json!("https://other.example.com");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "wrong_audience",
    );
    claims["aud"] = json!(["https://a.example.com", "https://b.example.com"]);
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "wrong_audience",
    );
    claims["aud"] = json!([]);
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "wrong_audience",
    );

    claims.as_object_mut().unwrap().remove("aud");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "missing_claim",
    );

    let mut claims = svid_claims("spiffe://prod.example.org/agent");
    claims["aud"] = json!("spiffe://prod.example.org/reports");
    assert_refused(
        f.verifier.verify(&f.svid.sign(&claims), now()),
        "wrong_audience",
    );
}

#[test]
fn a_wrong_issuer_is_refused() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["iss"] = json!("https://evil.example.com");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "unknown_issuer",
    );

    claims.as_object_mut().unwrap().remove("iss");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "missing_claim",
    );

    // An issuer must be a string, not a list to pick from.
    claims["iss"] = json!([ISSUER]);
    assert_refused(f.verifier.verify(&f.oidc.sign(&claims), now()), "malformed");

    // A SPIFFE trust domain that requires `iss`: another one, or none, fails
    // even with the right key.
    let mut claims = svid_claims("spiffe://staging.example.org/agent");
    claims["iss"] = json!("https://spire.evil.example.com");
    assert_refused(
        f.verifier.verify(&f.staging.sign(&claims), now()),
        "wrong_issuer",
    );
    claims.as_object_mut().unwrap().remove("iss");
    assert_refused(
        f.verifier.verify(&f.staging.sign(&claims), now()),
        "missing_claim",
    );
}

#[test]
fn an_expired_token_is_refused_beyond_the_leeway_only() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["iat"] = json!(at(-600));
    claims["exp"] = json!(at(-31));
    let error = assert_refused(f.verifier.verify(&f.oidc.sign(&claims), now()), "expired");
    assert_eq!(
        error,
        IdentityError::Expired {
            expired_at: Utc.timestamp_opt(at(-31), 0).unwrap()
        }
    );
    // At exactly exp + leeway it is over.
    claims["exp"] = json!(at(-30));
    assert_refused(f.verifier.verify(&f.oidc.sign(&claims), now()), "expired");

    // 10 s past exp is within the default 30 s leeway.
    claims["exp"] = json!(at(-10));
    let identity = f.verifier.verify(&f.oidc.sign(&claims), now()).unwrap();
    assert_eq!(identity.expires_at.timestamp(), at(-10));

    // The clock is the one passed in, not the system's: the same token a
    // day later is expired, and one from 1970 is fine at its own time.
    claims["exp"] = json!(at(300));
    let token = f.oidc.sign(&claims);
    f.verifier.verify(&token, now()).unwrap();
    assert_refused(
        f.verifier
            .verify(&token, now() + chrono::TimeDelta::days(1)),
        "expired",
    );
    let mut old = oidc_claims();
    old["iat"] = json!(1_000);
    old["exp"] = json!(2_000);
    f.verifier
        .verify(&f.oidc.sign(&old), Utc.timestamp_opt(1_500, 0).unwrap())
        .unwrap();
}

#[test]
fn extreme_times_neither_panic_nor_pass_unchecked() {
    let f = fixture();
    let sub = "spiffe://prod.example.org/agent";
    // The last second chrono can represent: valid (no lifetime limit here).
    let mut claims = svid_claims(sub);
    claims["exp"] = json!(DateTime::<Utc>::MAX_UTC.timestamp());
    f.verifier.verify(&f.svid.sign(&claims), now()).unwrap();
    // Beyond it, or not an integer of seconds: malformed.
    for exp in [json!(i64::MAX), json!(1e300), json!(-1e300)] {
        claims["exp"] = exp;
        let result = f.verifier.verify(&f.svid.sign(&claims), now());
        assert!(result.is_err(), "{:?}", claims["exp"]);
    }
    claims["exp"] = json!(i64::MAX);
    assert_refused(f.verifier.verify(&f.svid.sign(&claims), now()), "malformed");
    // A fractional exp counts down, a fractional nbf up.
    let mut claims = svid_claims(sub);
    claims["exp"] = json!(at(-30) as f64 + 0.9);
    assert_refused(f.verifier.verify(&f.svid.sign(&claims), now()), "expired");
    let mut claims = svid_claims(sub);
    claims["nbf"] = json!(at(30) as f64 + 0.1);
    assert_refused(
        f.verifier.verify(&f.svid.sign(&claims), now()),
        "not_yet_valid",
    );
    // The lifetime limit cannot be dodged with a huge exp.
    let mut claims = oidc_claims();
    claims["exp"] = json!(DateTime::<Utc>::MAX_UTC.timestamp());
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "lifetime_too_long",
    );
}

#[test]
fn a_token_without_exp_is_refused() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims.as_object_mut().unwrap().remove("exp");
    let error = assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "missing_claim",
    );
    assert_eq!(
        error,
        IdentityError::MissingClaim {
            claim: "exp".to_owned()
        }
    );
    // Not a number is no better.
    claims["exp"] = json!("tomorrow");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "missing_claim",
    );

    let mut claims = svid_claims("spiffe://prod.example.org/agent");
    claims.as_object_mut().unwrap().remove("exp");
    assert_refused(
        f.verifier.verify(&f.svid.sign(&claims), now()),
        "missing_claim",
    );
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["nbf"] = json!(at(60));
    let error = assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "not_yet_valid",
    );
    assert!(matches!(
        error,
        IdentityError::NotYetValid { claim: "nbf", .. }
    ));

    // Within the leeway, accepted.
    claims["nbf"] = json!(at(20));
    f.verifier.verify(&f.oidc.sign(&claims), now()).unwrap();

    // Issued in the future.
    let mut claims = oidc_claims();
    claims["iat"] = json!(at(120));
    let error = assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "not_yet_valid",
    );
    assert!(matches!(
        error,
        IdentityError::NotYetValid { claim: "iat", .. }
    ));
}

#[test]
fn a_token_living_longer_than_allowed_is_refused() {
    let f = fixture();
    let mut claims = oidc_claims();
    claims["iat"] = json!(at(-10));
    claims["exp"] = json!(at(-10 + 3601));
    let error = assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "lifetime_too_long",
    );
    assert_eq!(
        error,
        IdentityError::LifetimeTooLong {
            lifetime_secs: 3601,
            max_secs: 3600
        }
    );
    claims["exp"] = json!(at(-10 + 3600));
    f.verifier.verify(&f.oidc.sign(&claims), now()).unwrap();

    // With a maximum lifetime, `iat` is required.
    claims.as_object_mut().unwrap().remove("iat");
    assert_refused(
        f.verifier.verify(&f.oidc.sign(&claims), now()),
        "missing_claim",
    );
}

#[test]
fn a_spiffe_id_from_another_trust_domain_is_refused() {
    let f = fixture();
    // No `iss`: selected by trust domain, and no bundle for this one.
    let claims = svid_claims("spiffe://evil.example.org/agent");
    let error = assert_refused(
        f.verifier.verify(&f.svid.sign(&claims), now()),
        "wrong_trust_domain",
    );
    assert_eq!(
        error,
        IdentityError::WrongTrustDomain {
            trust_domain: "evil.example.org".to_owned()
        }
    );

    // Selected by `iss` (staging), signed by staging's key, naming a workload
    // of the production trust domain: staging cannot speak for production.
    let mut claims = svid_claims("spiffe://prod.example.org/agent");
    claims["iss"] = json!(STAGING_ISSUER);
    assert_refused(
        f.verifier.verify(&f.staging.sign(&claims), now()),
        "wrong_trust_domain",
    );
}

#[test]
fn a_subject_that_is_not_a_spiffe_id_is_refused_for_a_spiffe_issuer() {
    let f = fixture();
    let mut claims = svid_claims("agent-7");
    claims["iss"] = json!(STAGING_ISSUER);
    assert_refused(
        f.verifier.verify(&f.staging.sign(&claims), now()),
        "invalid_spiffe_id",
    );
    for sub in [
        "spiffe://prod.example.org",
        "spiffe://prod.example.org/",
        "spiffe://prod.example.org/a/../b",
        "spiffe://prod.example.org/a//b",
        "spiffe://prod.example.org/a?b",
        "spiffe://prod.example.org/a#b",
        "spiffe://prod.example.org/a b",
    ] {
        assert_refused(
            f.verifier.verify(&f.svid.sign(&svid_claims(sub)), now()),
            "invalid_spiffe_id",
        );
    }
    // Scheme and trust domain are case-sensitive: no bundle for these.
    for sub in ["SPIFFE://prod.example.org/a", "spiffe://Prod.example.org/a"] {
        let result = f.verifier.verify(&f.svid.sign(&svid_claims(sub)), now());
        assert!(result.is_err(), "{sub}");
    }
}

#[test]
fn a_jwt_svid_header_carries_only_alg_kid_and_typ() {
    let f = fixture();
    let claims = svid_claims("spiffe://prod.example.org/agent");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("svid-1".to_owned());
    header.jku = Some("https://evil.example.com/jwks.json".to_owned());
    assert_refused(
        f.verifier
            .verify(&f.svid.sign_with(&header, &claims), now()),
        "malformed",
    );
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("svid-1".to_owned());
    header.typ = Some("at+jwt".to_owned());
    assert_refused(
        f.verifier
            .verify(&f.svid.sign_with(&header, &claims), now()),
        "malformed",
    );
    header.typ = Some("JOSE".to_owned());
    f.verifier
        .verify(&f.svid.sign_with(&header, &claims), now())
        .unwrap();
}

#[test]
fn critical_headers_are_refused() {
    let f = fixture();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed-1".to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    assert_refused(
        f.verifier
            .verify(&f.oidc.sign_with(&header, &oidc_claims()), now()),
        "malformed",
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let f = fixture();
    let valid = f.oidc.sign(&oidc_claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let not_json = B64.encode("not json");
    let array = B64.encode("[1,2]");
    let too_long = format!("{valid}{}", "A".repeat(17 * 1024));
    for token in [
        "",
        "garbage",
        "garbage.garbage",
        &format!("{}.{}", parts[0], parts[1]),
        &format!("{valid}.{}", parts[2]),
        "...",
        &format!("%%%.{}.{}", parts[1], parts[2]),
        &format!("{not_json}.{}.{}", parts[1], parts[2]),
        &format!("{array}.{}.{}", parts[1], parts[2]),
        &format!("{}.{not_json}.{}", parts[0], parts[2]),
        &format!("{}.{array}.{}", parts[0], parts[2]),
        &format!("{} {}", parts[0], parts[1]),
        &too_long,
    ] {
        assert_refused(f.verifier.verify(token, now()), "malformed");
    }
    // A signature that is not base64url.
    let token = format!("{}.{}.!!!", parts[0], parts[1]);
    assert!(f.verifier.verify(&token, now()).is_err());
    // The untouched token still verifies.
    f.verifier.verify(&valid, now()).unwrap();
}

#[test]
fn duplicate_registered_claims_are_refused() {
    let f = fixture();
    // Two `aud` members: a parser that keeps the first and one that keeps the
    // last would disagree. Signed for real.
    let header = B64.encode(json!({ "alg": "EdDSA", "kid": "ed-1" }).to_string());
    let payload = format!(
        r#"{{"iss":"{ISSUER}","sub":"agent","aud":"{AUDIENCE}","aud":"https://other.example.com","exp":{}}}"#,
        at(300)
    );
    let message = format!("{header}.{}", B64.encode(payload));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &f.oidc.key, Algorithm::EdDSA).unwrap();
    assert_refused(
        f.verifier.verify(&format!("{message}.{signature}"), now()),
        "malformed",
    );
}

// ---------------------------------------------------------------- configuration

fn config_error(configs: Vec<IssuerConfig>) -> IdentityConfigError {
    IdentityVerifier::new(configs).unwrap_err()
}

fn oidc_with(keys: Value) -> IssuerConfig {
    IssuerConfig::oidc(
        ISSUER,
        vec![AUDIENCE.to_owned()],
        parse_jwks(&json!({ "keys": keys }).to_string()).unwrap(),
    )
}

#[test]
fn a_jwks_with_a_symmetric_key_is_refused() {
    let ed = Signer::ed25519("ed-1");
    let oct = json!({ "kty": "oct", "kid": "hmac-1", "k": B64.encode(b"shared secret") });
    let error = config_error(vec![oidc_with(json!([ed.jwk, oct]))]);
    assert!(
        matches!(error, IdentityConfigError::SymmetricKey { ref kid, .. } if kid == "hmac-1"),
        "{error}"
    );

    // Even without `k`, and even marked for another use.
    let oct = json!({ "kty": "oct", "kid": "hmac-2", "use": "enc" });
    let error = config_error(vec![oidc_with(json!([ed.jwk, oct]))]);
    assert!(
        matches!(error, IdentityConfigError::SymmetricKey { .. }),
        "{error}"
    );

    // An asymmetric key that claims an HS algorithm.
    let mut hs = ed.jwk.clone();
    hs["alg"] = json!("HS256");
    let error = config_error(vec![oidc_with(json!([hs]))]);
    assert!(
        matches!(error, IdentityConfigError::SymmetricKey { .. }),
        "{error}"
    );
}

#[test]
fn keys_that_cannot_verify_safely_are_refused() {
    // An Ed25519 key of 16 bytes (jsonwebtoken would panic slicing it).
    let short =
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": "short", "x": B64.encode([7u8; 16]) });
    let error = config_error(vec![oidc_with(json!([short]))]);
    assert!(
        matches!(error, IdentityConfigError::InvalidKey { .. }),
        "{error}"
    );

    // A 1024-bit RSA modulus.
    let mut n = vec![0xc5u8; 128];
    n[127] = 0x01;
    let small = json!({ "kty": "RSA", "kid": "small", "n": B64.encode(&n), "e": "AQAB" });
    let error = config_error(vec![oidc_with(json!([small]))]);
    assert!(
        matches!(error, IdentityConfigError::InvalidKey { .. }),
        "{error}"
    );

    // A P-256 point not on the curve.
    let off_curve = json!({
        "kty": "EC", "crv": "P-256", "kid": "off",
        "x": B64.encode([1u8; 32]), "y": B64.encode([2u8; 32]),
    });
    let error = config_error(vec![oidc_with(json!([off_curve]))]);
    assert!(
        matches!(error, IdentityConfigError::InvalidKey { .. }),
        "{error}"
    );

    // A P-256 key that declares ES384.
    let mut mismatch = Signer::p256("ec").jwk;
    mismatch["alg"] = json!("ES384");
    let error = config_error(vec![oidc_with(json!([mismatch]))]);
    assert!(
        matches!(error, IdentityConfigError::KeyAlgorithmMismatch { .. }),
        "{error}"
    );
}

#[test]
fn invalid_issuer_settings_are_refused() {
    let ed = Signer::ed25519("ed-1");
    let base = || IssuerConfig::oidc(ISSUER, vec![AUDIENCE.to_owned()], jwks(&[&ed]));

    let mut no_audience = base();
    no_audience.audiences.clear();
    assert!(matches!(
        config_error(vec![no_audience]),
        IdentityConfigError::NoAudience(_)
    ));

    let mut empty_audience = base();
    empty_audience.audiences = vec![String::new()];
    assert!(matches!(
        config_error(vec![empty_audience]),
        IdentityConfigError::NoAudience(_)
    ));

    let lax = base().with_leeway(Duration::from_secs(301));
    assert!(matches!(
        config_error(vec![lax]),
        IdentityConfigError::LeewayTooLarge { .. }
    ));
    IdentityVerifier::new(vec![base().with_leeway(Duration::from_secs(300))]).unwrap();

    let zero = base().with_max_lifetime(Duration::ZERO);
    assert!(matches!(
        config_error(vec![zero]),
        IdentityConfigError::InvalidMaxLifetime(_)
    ));

    let obo_is_sub = base().with_on_behalf_of_claim("sub");
    assert!(matches!(
        config_error(vec![obo_is_sub]),
        IdentityConfigError::InvalidOnBehalfOfClaim { .. }
    ));

    assert!(matches!(
        config_error(vec![base(), base()]),
        IdentityConfigError::DuplicateIssuer(_)
    ));

    let no_issuer = IssuerConfig::oidc("", vec![AUDIENCE.to_owned()], jwks(&[&ed]));
    assert!(matches!(
        config_error(vec![no_issuer]),
        IdentityConfigError::MissingIssuer
    ));

    let p = Signer::p256("p");
    for domain in [
        "",
        "Prod.example.org",
        "spiffe://prod.example.org",
        "prod.example.org/x",
    ] {
        let spiffe = IssuerConfig::spiffe(domain, vec![AUDIENCE.to_owned()], jwks(&[&p]));
        assert!(
            matches!(
                config_error(vec![spiffe]),
                IdentityConfigError::InvalidTrustDomain(_)
            ),
            "{domain}"
        );
    }
    let spiffe = || IssuerConfig::spiffe(TRUST_DOMAIN, vec![AUDIENCE.to_owned()], jwks(&[&p]));
    assert!(matches!(
        config_error(vec![spiffe(), spiffe()]),
        IdentityConfigError::DuplicateTrustDomain(_)
    ));

    let twin = Signer::ed25519("ed-1");
    let duplicate_kid = IssuerConfig::oidc(ISSUER, vec![AUDIENCE.to_owned()], jwks(&[&ed, &twin]));
    assert!(matches!(
        config_error(vec![duplicate_kid]),
        IdentityConfigError::DuplicateKeyId { .. }
    ));

    assert!(matches!(
        parse_jwks("{\"keys\": 5}"),
        Err(IdentityConfigError::InvalidJwks(_))
    ));
}

#[test]
fn keys_not_for_signatures_are_skipped_and_an_empty_result_refused() {
    let ed = Signer::ed25519("ed-1");
    let mut enc = Signer::p256("enc-1").jwk;
    enc["use"] = json!("enc");
    let mut wrap = Signer::p256("wrap-1").jwk;
    wrap["key_ops"] = json!(["wrapKey"]);
    let p521 = json!({ "kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA" });
    let verifier =
        IdentityVerifier::new(vec![oidc_with(json!([ed.jwk, enc, wrap, p521]))]).unwrap();
    assert_eq!(verifier.warnings().len(), 3, "{:?}", verifier.warnings());
    verifier.verify(&ed.sign(&oidc_claims()), now()).unwrap();

    // JWT-SVIDs do not allow EdDSA: an Ed25519-only bundle has no usable key.
    let spiffe = IssuerConfig::spiffe(TRUST_DOMAIN, vec![AUDIENCE.to_owned()], jwks(&[&ed]));
    assert!(matches!(
        config_error(vec![spiffe]),
        IdentityConfigError::NoUsableKeys(_)
    ));
}

#[test]
fn no_issuers_refuses_every_token() {
    let verifier = IdentityVerifier::new(Vec::new()).unwrap();
    let ed = Signer::ed25519("ed-1");
    assert_refused(
        verifier.verify(&ed.sign(&oidc_claims()), now()),
        "unknown_issuer",
    );
}
