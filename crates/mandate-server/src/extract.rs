//! A JSON body extractor whose rejections speak the API's error format.
//!
//! Bodies are read strictly ([`mandate_core::json`]): a name twice in one
//! object, at any depth, is refused (`400 invalid_json`), because the
//! caller's parser and Mandate's could each take another of the two values;
//! and a body or a field that should be an object must be one (`422
//! invalid_request`), never an array read field by field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use mandate_core::json::{self, ParseError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but strict (see the module documentation), and a bad
/// body becomes an [`ApiError`] that says what to fix.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse(&bytes).map(Self)
    }
}

/// Like [`ApiJson`], for bodies whose every field is optional: no body at
/// all (and no `Content-Type`) is `T::default()`. `POST
/// /v1/approvals/{id}/withdraw` needs nothing, and approve or deny without
/// a body should hear that a reason is required, not that JSON is.
pub(crate) struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = json_content_type(req.headers());
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.is_empty() && (json || !typed) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse(&bytes).map(Self)
    }
}

/// A query string as `T`; a bad one becomes `400 invalid_query` in the
/// API's error format instead of axum's plain-text rejection.
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("the query string is not valid: {}", FirstCause(&rejection)),
            )),
        }
    }
}

/// The body as `T`: JSON without duplicate names, an object at the top,
/// structs from objects only.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = json::from_slice(bytes).map_err(|e| match e {
        ParseError::DuplicateKey(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON for Mandate: {e}: send each key once"),
        ),
        e => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        ),
    })?;
    // serde would read an array as the struct's fields in order.
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the body must be a JSON object with the request's fields by name, not an array or a single value",
        ));
    }
    // A receipt must record what was evaluated, and its canonical form
    // (RFC 8785) writes numbers as doubles.
    json::check_exact_numbers(&value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })?;
    json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("the body is JSON but not a valid request: {e}"),
        )
    })
}

/// `application/json`, or any `application/*+json`, as `axum::Json` takes.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with `Content-Type: application/json`",
    )
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return crate::body_limit::too_large();
    }
    if crate::connections::is_body_timeout(&rejection) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "{}; send the body at once after the headers",
                FirstCause(&rejection)
            ),
        );
    }
    let detail = std::error::Error::source(&rejection)
        .map_or_else(|| rejection.body_text(), ToString::to_string);
    ApiError::new(
        status,
        "bad_body",
        format!("the body could not be read: {detail}"),
    )
}

/// The innermost error's message: the body's own words, not the wrappers'.
struct FirstCause<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for FirstCause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut error = self.0;
        while let Some(source) = error.source() {
            error = source;
        }
        write!(f, "{error}")
    }
}
