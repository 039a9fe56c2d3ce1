//! Bearer tokens, and the answers that refuse them: RFC 6750 challenges
//! pointing at the RFC 9728 protected resource metadata.
//!
//! * No token (or another scheme): `401`, `WWW-Authenticate: Bearer
//!   resource_metadata="…"` without an error (RFC 6750 §3.1).
//! * A token that does not verify: `401`, `error="invalid_token"` with the
//!   reason as `error_description`.
//! * A valid token that does not allow the request: `403`,
//!   `error="insufficient_scope"`.
//! * More than one `Authorization` header: `400`, `error="invalid_request"`.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use mandate_auth::{CredentialError, IdentityError};

use crate::error::ApiError;
use crate::state::AppState;
use crate::tasks::Tasks;

/// The longest `error_description` sent; the body carries the whole message.
const MAX_DESCRIPTION: usize = 200;

/// The token of an `Authorization: Bearer` header. Extracting it refuses
/// the request (401) when no identity issuer is configured, so every task
/// endpoint fails closed without one.
///
/// As `Option<Bearer>`, a request without an `Authorization` header gives
/// `None` (whether or not issuers are configured); a header that is there
/// is checked as above.
pub(crate) struct Bearer(pub String);

impl Bearer {
    /// Whether the token is a JWT (three dot-separated parts) rather than a
    /// task credential (Biscuit base64url, which has no dots).
    pub(crate) fn is_jwt(&self) -> bool {
        self.0.contains('.')
    }

    /// The bearer token of `headers`; `None` without an `Authorization`
    /// header.
    fn from_headers(headers: &HeaderMap, tasks: &Tasks) -> Result<Option<Self>, ApiError> {
        match bearer_of(headers) {
            Ok(token) => Ok(token.map(Self)),
            Err(BearerProblem::Several) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "send exactly one `Authorization` header",
            )
            .with_challenge(challenge(
                tasks,
                Some(("invalid_request", "more than one Authorization header")),
            ))),
            Err(BearerProblem::OtherScheme) => Err(missing_token(
                tasks,
                "only bearer tokens are accepted: send `Authorization: Bearer <token>`",
            )),
            Err(BearerProblem::Empty) => Err(invalid_token(
                tasks,
                "invalid_token",
                "the bearer token is empty",
            )),
        }
    }
}

/// Why an `Authorization` header gives no bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerProblem {
    /// More than one `Authorization` header.
    Several,
    /// A scheme other than `Bearer`.
    OtherScheme,
    /// `Bearer` with nothing after it.
    Empty,
}

/// The bearer token of `headers` (trimmed), `None` without an
/// `Authorization` header. Each caller answers the problems in its own
/// terms (agents' endpoints with RFC 6750 challenges naming the resource).
pub fn bearer_of(headers: &HeaderMap) -> Result<Option<String>, BearerProblem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(BearerProblem::Several),
    };
    bearer_token(value.to_str().unwrap_or_default()).map(Some)
}

/// The token of one `Authorization` header value (`Bearer <token>`, the
/// scheme in any case), trimmed.
pub fn bearer_token(value: &str) -> Result<String, BearerProblem> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerProblem::OtherScheme);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(BearerProblem::Empty);
    }
    Ok(token.to_owned())
}

/// 401 unless an identity issuer is configured.
fn require_issuers(tasks: &Tasks) -> Result<(), ApiError> {
    if !tasks.identities().is_empty() {
        return Ok(());
    }
    Err(invalid_token(
        tasks,
        "no_identity_issuer",
        "no identity issuer is configured on this server, so no agent can authenticate: configure `issuers` (see docs/configuration.md)",
    ))
}

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tasks = state.tasks();
        require_issuers(tasks)?;
        Self::from_headers(&parts.headers, tasks)?.ok_or_else(|| {
            missing_token(
                tasks,
                "send `Authorization: Bearer <token>`: an identity token (JWT) or a task credential",
            )
        })
    }
}

impl OptionalFromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        let tasks = state.tasks();
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        // A caller's token is the server's own configuration, not an
        // agent's identity: it needs no identity issuer.
        if let Ok(Some(token)) = bearer_of(&parts.headers)
            && state.callers().caller(&token).is_some()
        {
            return Ok(Some(Self(token)));
        }
        require_issuers(tasks)?;
        Self::from_headers(&parts.headers, tasks)
    }
}

/// `401`: no token was presented.
pub(crate) fn missing_token(tasks: &Tasks, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "missing_token", message)
        .with_challenge(challenge(tasks, None))
}

/// `401 invalid_token`, with `code` in the body.
pub(crate) fn invalid_token(tasks: &Tasks, code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
        .with_challenge(challenge(tasks, Some(("invalid_token", message))))
}

/// `403 insufficient_scope`: the token is valid but does not allow this.
pub(crate) fn insufficient_scope(tasks: &Tasks, message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", message)
        .with_challenge(challenge(tasks, Some(("insufficient_scope", message))))
}

/// An identity token (JWT) that does not verify: `401 invalid_token`.
pub(crate) fn identity_refused(tasks: &Tasks, error: &IdentityError) -> ApiError {
    invalid_token(
        tasks,
        "invalid_token",
        &format!("the identity token is refused: {error}"),
    )
}

/// A task credential that does not verify (`401 invalid_token`), or a
/// delegation it does not allow (`403 insufficient_scope`).
pub(crate) fn credential_refused(tasks: &Tasks, error: &CredentialError) -> ApiError {
    let message = error.to_string();
    match credential_refusal(error) {
        (StatusCode::UNAUTHORIZED, code) => invalid_token(tasks, code, &message),
        (StatusCode::FORBIDDEN, _) => insufficient_scope(tasks, &message),
        (StatusCode::INTERNAL_SERVER_ERROR, code) => {
            tracing::error!(error = %error, "task credential could not be handled");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code,
                "mandate failed to handle the task credential; see the server log",
            )
        }
        (status, code) => ApiError::new(status, code, message),
    }
}

/// The HTTP status and error code for a task credential refused with
/// `error`, for every front end to answer in its own terms: `401
/// invalid_token` for a credential that does not verify, `403
/// insufficient_scope` for a delegation it does not allow, `422
/// invalid_request` for a malformed delegation, `500 internal` for a
/// failure of the server's own.
pub fn credential_refusal(error: &CredentialError) -> (StatusCode, &'static str) {
    match error {
        CredentialError::Widening(_) | CredentialError::TooDeep { .. } => {
            (StatusCode::FORBIDDEN, "insufficient_scope")
        }
        CredentialError::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        CredentialError::InvalidKey(_) | CredentialError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        CredentialError::Malformed(_)
        | CredentialError::BadSignature
        | CredentialError::Expired { .. }
        | CredentialError::WrongAudience { .. }
        | CredentialError::Revoked
        | CredentialError::UntrustedBlock { .. }
        | CredentialError::CheckFailed(_)
        | CredentialError::LimitExceeded(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
    }
}

/// A `WWW-Authenticate: Bearer` challenge naming the resource metadata, and
/// an RFC 6750 error with its description if there is one.
fn challenge(tasks: &Tasks, error: Option<(&str, &str)>) -> String {
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        tasks.resource().metadata_url()
    );
    if let Some((code, description)) = error {
        challenge.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            error_description(description)
        ));
    }
    challenge
}

/// `message` as RFC 6750 allows an `error_description`: printable ASCII
/// without `"` and `\`, shortened to [`MAX_DESCRIPTION`] characters.
fn error_description(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_DESCRIPTION)
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    if message.chars().count() > MAX_DESCRIPTION {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_description;

    #[test]
    fn descriptions_are_safe_in_a_quoted_string() {
        assert_eq!(
            error_description("a \"quoted\" `x` \\ é\n"),
            "a 'quoted' `x` / ??"
        );
        let long = "x".repeat(300);
        assert_eq!(error_description(&long).len(), 203);
    }
}
