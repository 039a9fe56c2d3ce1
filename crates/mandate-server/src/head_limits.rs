//! Refuses a request line or headers that are too large, in the API's
//! error format.
//!
//! hyper refuses heads beyond its own buffer and header-count limits with
//! a bare status and no body (`414`, `431`). Mandate's limits are lower and
//! checked here, where the answer can say what was too large: hyper's are
//! only the last resort for heads far beyond any real client's.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Longest path and query, in bytes.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in one request.
pub(crate) const MAX_HEADERS: usize = 64;
/// Largest total of header names and values, in bytes.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Answers `414` or `431` for a head over Mandate's limits.
pub(crate) async fn refuse_large_heads(request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query are {uri} bytes, more than the {MAX_URI_BYTES} allowed; send large data in a body"),
        )
        .into_response();
    }
    let headers = request.headers();
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || size > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {} header fields of {size} bytes in all; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are allowed",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}
