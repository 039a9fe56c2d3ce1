//! `GET /.well-known/oauth-protected-resource`: how to call Mandate as an
//! OAuth 2.1 protected resource (RFC 9728), and how to verify its task
//! credentials offline.

use axum::Json;
use axum::extract::State;
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
    /// Mandate's extension: what verifies its task credentials offline.
    pub mandate_task_credentials: TaskCredentialsMetadata,
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
        resource: tasks.resource().to_owned(),
        authorization_servers: tasks.authorization_servers().to_vec(),
        bearer_methods_supported: vec!["header".to_owned()],
        resource_name: "Mandate".to_owned(),
        mandate_task_credentials: TaskCredentialsMetadata {
            format: CREDENTIAL_FORMAT.to_owned(),
            public_key: tasks.public_key(),
            audience: tasks.audience().to_owned(),
            revocation_list: format!("{}/v1/revocations", tasks.resource().trim_end_matches('/')),
        },
    })
}
