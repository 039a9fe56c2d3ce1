//! Refuses a body whose declared length is over `max_body_bytes` before
//! anything reads it.
//!
//! `DefaultBodyLimit` counts bytes as they are read. A client that sends
//! `Expect: 100-continue` waits for the server's go-ahead, and hyper gives
//! it (`100 Continue`) as soon as anyone polls the body: the limit would
//! only bite after the client had been invited to send its megabytes.
//! Checking `Content-Length` first answers `413` at once; the body is never
//! asked for. Bodies without a length (chunked) are still cut off by
//! `DefaultBodyLimit` as they arrive.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The answer to a body over the limit, declared or counted.
pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the body is larger than the configured limit (`max_body_bytes`); send a smaller request",
    )
}

/// Marks an answer given before the request's body was read to its end
/// with `Connection: close`.
///
/// hyper closes such a connection after answering, since the rest of the
/// body would be read as the next request. Saying so in the answer keeps a
/// client from putting the connection back in its pool and losing its next
/// request to the close.
pub(crate) async fn close_when_body_unread(mut response: Response) -> Response {
    let unread = matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    if unread {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Answers `413` for a request whose `Content-Length` exceeds `max`.
pub(crate) async fn refuse_declared_oversize(
    state: AppState,
    max: usize,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(max).unwrap_or(u64::MAX)) {
        // Counted as `POST /v1/decide` counts the rejections it answers itself.
        if request.uri().path() == "/v1/decide" {
            state.metrics().count_rejected("http", "body_too_large");
        }
        return too_large().into_response();
    }
    next.run(request).await
}
