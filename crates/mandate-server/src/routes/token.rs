//! `POST /v1/token`: RFC 8693 token exchange. A task credential, and an
//! allowed decision made under it, are exchanged for a short-lived JWT for
//! one downstream resource that only takes JWTs.
//!
//! The request is an OAuth token request (`application/x-www-form-urlencoded`,
//! RFC 6749 §3.2 and RFC 8693 §2.1); the answers are OAuth's: a token
//! response (RFC 8693 §2.2.1) or an error (RFC 6749 §5.2), both with
//! `Cache-Control: no-store`. No client authenticates: the subject token is
//! the only credential, and a request that tries client authentication (an
//! `Authorization` header) is refused `401 invalid_client`. Nothing is
//! minted, or recorded, on any error.
//!
//! Checked in order, each with its error:
//!
//! 1. `Authorization` header: `401 invalid_client`.
//! 2. Form body, each parameter at most once: `invalid_request` (413 for
//!    a body over `max_body_bytes`).
//! 3. `grant_type` is token exchange: `unsupported_grant_type`.
//! 4. `subject_token` present, of type Mandate task credential; an
//!    `actor_token` is not accepted; `requested_token_type` absent or JWT;
//!    `decision_id` present: `invalid_request`.
//! 5. The target: one `resource` (or `audience`), configured exactly:
//!    `invalid_target`.
//! 6. The subject token verifies as a task credential, not revoked:
//!    `invalid_request` (RFC 8693 §2.2.2 says so for any unacceptable subject
//!    token).
//! 7. The decision: in a task's history, made under this credential, an
//!    `allow`, for a tool of the resource, not older than the resource's
//!    token lifetime, not exchanged before: `invalid_grant` (`invalid_target`
//!    for a tool the resource does not serve).
//! 8. `scope` within the credential's and the resource's tools, including the
//!    decided tool: `invalid_scope`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mandate_auth::exchange::{
    JWT_TOKEN_TYPE, TASK_CREDENTIAL_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT_TYPE,
};
use mandate_auth::{DecidedCall, ExchangeError, ExchangeRequest, VerifiedCredential};
use mandate_core::DecisionId;
use mandate_store::{ExchangeRecord, StateError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::AppState;
use crate::tasks::Tasks;

/// A token exchange request (RFC 8693 §2.1), form-encoded.
// Only its schema is used: the form is parsed by hand, to refuse a repeated
// parameter (RFC 6749 §3.2).
#[allow(dead_code)]
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_type: String,
    /// The agent's task credential (Biscuit, base64url).
    pub subject_token: String,
    /// `urn:mandate:token-type:task-credential`.
    pub subject_token_type: String,
    /// The downstream resource the token is for (RFC 8707), exactly as
    /// configured. One.
    pub resource: Option<String>,
    /// Same as `resource` (RFC 8693); if both are sent they must be equal.
    pub audience: Option<String>,
    /// The tools the token is for, space-separated `server/tool`: within the
    /// credential's and the resource's tools, including the decided tool.
    /// Default: the decided tool alone.
    pub scope: Option<String>,
    /// `urn:ietf:params:oauth:token-type:jwt` (the default and only type).
    pub requested_token_type: Option<String>,
    /// The id of the `allow` decision, made under this credential, of the
    /// call the token is for. Each decision is exchanged once.
    pub decision_id: String,
}

/// A token response (RFC 8693 §2.2.1).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT for the downstream resource.
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:jwt`.
    pub issued_token_type: String,
    /// `Bearer`: the downstream resource takes it as a bearer token.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The tools it is for, space-separated.
    pub scope: String,
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type`, `invalid_scope`, `invalid_target`,
    /// `server_error` or `temporarily_unavailable`.
    pub error: String,
    /// What went wrong and what to change.
    pub error_description: String,
}

/// Exchange a task credential for a JWT for one downstream resource.
///
/// RFC 8693 token exchange, bound to one call: `decision_id` names an
/// `allow` decision made under the same credential for a tool of the
/// resource, exchanged at most once and within the resource's token
/// lifetime. The token's `sub` is the task's person (else its root agent),
/// `act` the delegation chain with the holder outermost, `aud` the resource,
/// `exp` at most the resource's lifetime and never after the credential's
/// expiry. It verifies with `GET /.well-known/jwks.json`. No client
/// authentication: the subject token is the credential.
#[utoipa::path(post, path = "/v1/token", tag = "tasks",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token", body = TokenResponse,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_target`, `invalid_grant` or `invalid_scope`: nothing was minted", body = OAuthError),
        (status = 401, description = "`invalid_client`: the request tried client authentication (an `Authorization` header)", body = OAuthError,
            headers(("www-authenticate" = String, description = "A challenge in the scheme the client used"))),
        (status = 413, description = "`invalid_request`: the body is larger than `max_body_bytes`", body = OAuthError),
        (status = 500, description = "`server_error`: deny the call", body = OAuthError),
        (status = 503, description = "`temporarily_unavailable`: the state database cannot answer; nothing was minted", body = OAuthError),
    ))]
pub(crate) async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match exchange(&state, &headers, body).await {
        Ok(response) => no_store((StatusCode::OK, axum::Json(response)).into_response()),
        Err(refusal) => {
            tracing::debug!(error = refusal.error, description = %refusal.description, "token exchange refused");
            refusal.into_response()
        }
    }
}

async fn exchange(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<TokenResponse, Refusal> {
    let params = form(headers, body)?;
    let request = Exchange::from_params(&params)?;
    let tasks = state.tasks();
    let now = Utc::now();
    let credential = request.subject_credential(tasks, now)?;
    let decision = decided_call(tasks, &request.decision_id).await?;
    let token_id = Uuid::now_v7().to_string();
    let issued = tasks
        .exchange()
        .exchange(
            &ExchangeRequest {
                credential: &credential,
                resource: request.resource,
                scope: request.scope,
                decision: &decision,
                token_id: &token_id,
            },
            now,
        )
        .map_err(|e| from_exchange(&e))?;
    // Once: the decision's exchange is on disk before the token leaves, and a
    // second exchange of it is refused. A task that ended meanwhile is too.
    let record = ExchangeRecord {
        decision_id: decision.decision_id.clone(),
        task_id: decision.task_id.clone(),
        credential: credential
            .revocation_ids
            .last()
            .cloned()
            .unwrap_or_default(),
        resource: request.resource.to_owned(),
        token_id: token_id.clone(),
        scope: issued.scope.clone(),
        exchanged_at: now,
        expires_at: issued.expires_at,
    };
    record_once(tasks, record).await?;

    tracing::info!(
        task_id = %credential.task_id,
        decision_id = %decision.decision_id,
        resource = %request.resource,
        token_id = %token_id,
        expires_at = %issued.expires_at,
        "token exchanged for a downstream resource"
    );
    let expires_in = u64::try_from((issued.expires_at - now).num_seconds().max(0)).unwrap_or(0);
    Ok(TokenResponse {
        access_token: issued.token,
        issued_token_type: JWT_TOKEN_TYPE.to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in,
        scope: issued.claims.scope,
    })
}

/// The request's form, once the request is one this endpoint reads: no
/// client authentication, a body within the limit, sent as a form.
fn form(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Params, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Err(Refusal::invalid_client(value));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the body is larger than the configured limit (`max_body_bytes`)",
            )
        } else {
            Refusal::bad("invalid_request", "the body could not be read")
        }
    })?;
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !form_type.is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
        return Err(Refusal::bad(
            "invalid_request",
            "send the parameters as `application/x-www-form-urlencoded` (RFC 6749 §3.2)",
        ));
    }
    Params::parse(&body)
}

/// A token exchange request, its parameters checked (RFC 8693 §2.1).
struct Exchange<'a> {
    /// The task credential to exchange.
    subject_token: &'a str,
    /// The decision the token is for.
    decision_id: DecisionId,
    /// The downstream resource (RFC 8707), named by `resource` or `audience`.
    resource: &'a str,
    /// The scope asked for, if any.
    scope: Option<&'a str>,
}

impl<'a> Exchange<'a> {
    /// The request `params` make, or why it is not one this server grants.
    fn from_params(params: &'a Params) -> Result<Self, Refusal> {
        match params.get("grant_type") {
            None => return Err(Refusal::missing("grant_type")),
            Some(TOKEN_EXCHANGE_GRANT_TYPE) => {}
            Some(other) => {
                return Err(Refusal::bad(
                    "unsupported_grant_type",
                    format!(
                        "grant type `{}` is not supported; use `{TOKEN_EXCHANGE_GRANT_TYPE}`",
                        printable(other)
                    ),
                ));
            }
        }
        let subject_token = params
            .get("subject_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::missing("subject_token"))?;
        match params.get("subject_token_type") {
            None => return Err(Refusal::missing("subject_token_type")),
            Some(TASK_CREDENTIAL_TOKEN_TYPE) => {}
            Some(other) => {
                return Err(Refusal::bad(
                    "invalid_request",
                    format!(
                        "`subject_token_type` `{}` is not accepted: only task credentials are exchanged (`{TASK_CREDENTIAL_TOKEN_TYPE}`); start a task (POST /v1/tasks) with an identity token and exchange its credential",
                        printable(other)
                    ),
                ));
            }
        }
        if params.get("actor_token").is_some() || params.get("actor_token_type").is_some() {
            return Err(Refusal::bad(
                "invalid_request",
                "`actor_token` is not accepted: the actors are the credential's delegation chain",
            ));
        }
        if let Some(requested) = params.get("requested_token_type")
            && requested != JWT_TOKEN_TYPE
        {
            return Err(Refusal::bad(
                "invalid_request",
                format!(
                    "`requested_token_type` `{}` is not issued; the only type is `{JWT_TOKEN_TYPE}`",
                    printable(requested)
                ),
            ));
        }
        let decision_id = params
            .get("decision_id")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| Refusal::missing("decision_id"))?;
        // At most 128 bytes, no control characters (`DecisionId`).
        let decision_id = DecisionId::new(decision_id)
            .map_err(|_| Refusal::bad("invalid_request", "`decision_id` is not a decision id"))?;
        let resource = match (params.get("resource"), params.get("audience")) {
            (None, None) => return Err(Refusal::missing("resource")),
            (Some(resource), None) | (None, Some(resource)) => resource,
            (Some(resource), Some(audience)) if resource == audience => resource,
            (Some(_), Some(_)) => {
                return Err(Refusal::bad(
                    "invalid_target",
                    "`resource` and `audience` name different targets; a token is for one resource",
                ));
            }
        };

        Ok(Self {
            subject_token,
            decision_id,
            resource,
            scope: params.get("scope"),
        })
    }

    /// The subject token verified as a task credential of this server, now.
    fn subject_credential(
        &self,
        tasks: &Tasks,
        now: DateTime<Utc>,
    ) -> Result<Arc<VerifiedCredential>, Refusal> {
        if tasks.exchange().downstream(self.resource).is_none() {
            return Err(from_exchange(&ExchangeError::UnknownResource(printable(
                self.resource,
            ))));
        }
        if self.subject_token.contains('.') {
            return Err(Refusal::bad(
                "invalid_request",
                "the subject token is a JWT, not a task credential: identity tokens are not exchanged; start a task (POST /v1/tasks) and exchange its credential",
            ));
        }
        tasks
            .credentials()
            .verify_credential(self.subject_token, now)
            .map_err(|e| {
                Refusal::bad(
                    "invalid_request",
                    format!("the subject token is refused: {e}"),
                )
            })
    }
}

/// The decision `decision_id` as its task's history recorded it, with the
/// credential it was made under.
async fn decided_call(tasks: &Tasks, decision_id: &DecisionId) -> Result<DecidedCall, Refusal> {
    let decided = tasks
        .store()
        .decided_call(decision_id)
        .await
        .map_err(unavailable)?;
    let Some((entry, made_under)) = decided else {
        return Err(Refusal::bad(
            "invalid_grant",
            format!(
                "no decision `{}` in any task's history (only decisions made under a task credential can be exchanged)",
                printable(decision_id.as_str())
            ),
        ));
    };
    Ok(DecidedCall {
        decision_id: entry.decision_id,
        task_id: entry.task_id,
        credential: made_under,
        tool: format!("{}/{}", entry.server, entry.tool),
        decision: entry.decision,
        decided_at: entry.decided_at,
    })
}

/// Stores the exchange of a decision, refusing a second one of it, or one
/// whose task ended meanwhile.
async fn record_once(tasks: &Tasks, record: ExchangeRecord) -> Result<(), Refusal> {
    let decision_id = record.decision_id.clone();
    tasks
        .store()
        .record_exchange(record)
        .await
        .map_err(|e| match e {
            StateError::Conflict(_) => Refusal::bad(
                "invalid_grant",
                format!(
                    "decision `{decision_id}` was exchanged for a token already; each decision is exchanged once: decide the call again"
                ),
            ),
            StateError::TaskEnded { task_id, .. } => Refusal::bad(
                "invalid_request",
                format!("the subject token is refused: task credential has been revoked (task `{task_id}` ended)"),
            ),
            StateError::DecisionNotFound(_) => Refusal::bad(
                "invalid_grant",
                format!("no decision `{decision_id}` in the task's history"),
            ),
            other => unavailable(other),
        })
}

/// The form's parameters, each at most once (RFC 6749 §3.2).
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let mut params = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.contains_key(name.as_ref()) {
                return Err(Refusal::bad(
                    "invalid_request",
                    format!(
                        "`{}` is sent more than once; each parameter is sent once",
                        printable(&name)
                    ),
                ));
            }
            params.insert(name.into_owned(), value.into_owned());
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// An OAuth error answer.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
    challenge: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    /// `400` with `error`.
    fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    fn missing(parameter: &str) -> Self {
        Self::bad(
            "invalid_request",
            format!("`{parameter}` is required (RFC 8693 token exchange; see docs/http-api.md)"),
        )
    }

    /// `401 invalid_client`, challenging in the scheme the client used
    /// (RFC 6749 §5.2).
    fn invalid_client(authorization: &HeaderValue) -> Self {
        let scheme: String = authorization
            .to_str()
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(32)
            .collect();
        let scheme = if scheme.is_empty() {
            "Basic".to_owned()
        } else {
            scheme
        };
        Self {
            challenge: Some(format!("{scheme} realm=\"mandate\"")),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "this token endpoint authenticates no client: send no `Authorization` header; the subject token (the task credential, in the body) is the credential",
            )
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = OAuthError {
            error: self.error.to_owned(),
            error_description: self.description,
        };
        let mut response = no_store((self.status, axum::Json(body)).into_response());
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// RFC 6749 §5.1: token responses, and errors alike, are not cached.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn from_exchange(error: &ExchangeError) -> Refusal {
    match error {
        ExchangeError::Signing(_) => {
            tracing::error!(%error, "a token could not be minted");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mandate failed to mint the token; see the server log",
            )
        }
        ExchangeError::CredentialExpired => Refusal::bad(
            error.error_code(),
            format!("the subject token is refused: {error}"),
        ),
        _ => Refusal::bad(error.error_code(), error.to_string()),
    }
}

fn unavailable(error: StateError) -> Refusal {
    tracing::error!(%error, "state database unavailable for a token exchange");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the state database cannot answer now; nothing was minted; see the server log",
    )
}

/// A value from the request, safe to quote: at most 200 characters, control
/// characters replaced.
fn printable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 200 {
        out.push_str("...");
    }
    out
}
