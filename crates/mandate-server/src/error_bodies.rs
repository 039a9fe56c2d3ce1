//! Every error the router answers has the API's JSON error body.
//!
//! Handlers and Mandate's extractors answer `{"error", "message"}`
//! themselves; this layer catches what others produce (a rejection of an
//! axum extractor, which is plain text, or a layer's bare status) and puts
//! it in the same shape, so that a caller can always read `error`. The
//! original text, if any, becomes the message.

use axum::body::{Body, to_bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The longest original text kept as the message.
const MAX_MESSAGE: usize = 1024;

/// Rewrites an error response that is not JSON into the API's error body.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let headers = response.headers().clone();
    let text = to_bytes(response.into_body(), MAX_MESSAGE)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    });
    let mut answer = ApiError::new(status, code(status), message).into_response();
    // Keep what the status needs (`Allow` of a 405, `Retry-After`, …).
    for (name, value) in &headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

fn is_json(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// A stable code for a status whose producer gave none.
pub(crate) fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}
