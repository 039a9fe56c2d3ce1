//! `GET /.well-known/oauth-protected-resource`: how to call Mandate as an
//! OAuth 2.1 protected resource (RFC 9728), and how to verify its task
//! credentials offline. `GET /.well-known/jwks.json`: the keys that verify
//! the JWTs Mandate mints for downstream tools (`POST /v1/token`).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use mandate_auth::exchange::TASK_CREDENTIAL_TOKEN_TYPE;
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// The `format` of Mandate's task credentials.
const CREDENTIAL_FORMAT: &str = "biscuit-v3";

/// Protected resource metadata (RFC 9728 §2), with one extension.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProtectedResource {
    /// This server's resource identifier (`resource` setting): the audience
    /// agents' identity tokens should name (RFC 8707).
    pub resource: String,
    /// The configured identity issuers (OIDC issuers, and SPIFFE trust
    /// domains configured with an `issuer`).
    pub authorization_servers: Vec<String>,
    /// `["header"]`: tokens go in `Authorization: Bearer`, nowhere else.
    pub bearer_methods_supported: Vec<String>,
    /// `Mandate`.
    pub resource_name: String,
    /// The JWKS of the JWTs Mandate mints for downstream tools.
    pub jwks_uri: String,
    /// Mandate's extension: what verifies its task credentials offline.
    pub mandate_task_credentials: TaskCredentialsMetadata,
    /// Mandate's extension: where to exchange a task credential for a JWT
    /// for a downstream tool (RFC 8693).
    pub mandate_token_exchange: TokenExchangeMetadata,
}

/// How to exchange a task credential for a downstream tool's JWT.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenExchangeMetadata {
    /// The token endpoint (`POST /v1/token`).
    pub token_endpoint: String,
    /// The `iss` of the tokens.
    pub issuer: String,
    /// The `subject_token_type` of a task credential.
    pub subject_token_type: String,
}

/// What an offline verifier needs for Mandate's task credentials.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCredentialsMetadata {
    /// `biscuit-v3`: Biscuit tokens, base64url.
    pub format: String,
    /// The authority's public key, `ed25519/<hex>`: the root key of every
    /// task credential. Obtain it from the operator too, rather than trust
    /// this field alone.
    pub public_key: String,
    /// The audience the credentials are minted for (`audience` setting).
    pub audience: String,
    /// Where to fetch the revocation list.
    pub revocation_list: String,
}

/// Protected resource metadata (RFC 9728).
///
/// Unauthenticated. Every `401` and `403` from a task endpoint points here
/// in its `WWW-Authenticate` challenge (`resource_metadata`).
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "tasks",
    responses((status = 200, description = "The metadata", body = ProtectedResource)))]
pub(crate) async fn protected_resource(State(state): State<AppState>) -> Json<ProtectedResource> {
    let tasks = state.tasks();
    Json(ProtectedResource {
        resource: tasks.resource().resource().to_owned(),
        authorization_servers: tasks.resource().authorization_servers().to_vec(),
        bearer_methods_supported: vec!["header".to_owned()],
        resource_name: "Mandate".to_owned(),
        jwks_uri: tasks.resource().jwks_uri(),
        mandate_token_exchange: TokenExchangeMetadata {
            token_endpoint: tasks.resource().token_endpoint(),
            issuer: tasks.exchange().issuer().to_owned(),
            subject_token_type: TASK_CREDENTIAL_TOKEN_TYPE.to_owned(),
        },
        mandate_task_credentials: TaskCredentialsMetadata {
            format: CREDENTIAL_FORMAT.to_owned(),
            public_key: tasks.credentials().public_key(),
            audience: tasks.credentials().audience().to_owned(),
            revocation_list: format!(
                "{}/v1/revocations",
                tasks.resource().resource().trim_end_matches('/')
            ),
        },
    })
}

/// A JWK Set (RFC 7517 §5).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A public key (RFC 7517, RFC 8037).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key id (RFC 7638 thumbprint), the tokens' `kid`.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    /// `EdDSA`.
    pub alg: String,
}

/// The keys that verify the JWTs Mandate mints for downstream tools.
///
/// Unauthenticated. A downstream tool verifies a token's signature with
/// the key named by its `kid`, then its `iss`, `aud` (the tool's own
/// resource identifier), `exp` and `scope`.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tasks",
    responses((status = 200, description = "The JWK Set", body = Jwks)))]
pub(crate) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let jwk = state.tasks().exchange().signer().jwk();
    (
        [(header::CONTENT_TYPE, "application/json")],
        Json(Jwks {
            keys: vec![Jwk {
                kty: jwk.kty,
                crv: jwk.crv,
                x: jwk.x,
                kid: jwk.kid,
                key_use: jwk.key_use,
                alg: jwk.alg,
            }],
        }),
    )
}
