//! Who may use the proxy: with `[[clients]]` configured, every request must
//! carry `Proxy-Authorization: Bearer <token>` with a configured client's
//! token, or it is answered `403` and goes nowhere. Without `[[clients]]`
//! any client is served (bind the proxy to loopback then).
//!
//! `Proxy-Authorization` rather than `Authorization`: the latter is the
//! upstream's (the proxy passes it on, for servers with their own OAuth),
//! while the former is, by HTTP's own rules, the credential of the proxy in
//! between and is never forwarded. `403` rather than `407`: fetch (the
//! TypeScript SDK's transport) turns a `407` into a bare network error, so
//! the client would never see why; and not `401`, which tells an MCP client
//! to start OAuth discovery.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rmcp::model::ErrorCode;

use super::{Proxy, rpc};
use crate::jsonrpc;

/// Lets a request through only from a configured client, when any is.
pub(super) async fn require_client(
    State(proxy): State<Arc<Proxy>>,
    request: Request,
    next: Next,
) -> Response {
    let config = proxy.pep.config();
    if config.clients.is_empty() {
        return next.run(request).await;
    }
    let mut presented = request
        .headers()
        .get_all(header::PROXY_AUTHORIZATION)
        .iter();
    let token = match (presented.next(), presented.next()) {
        (Some(value), None) => value.to_str().ok().and_then(bearer),
        _ => None,
    };
    if let Some(name) = token.and_then(|t| config.client(t)) {
        tracing::trace!(client = %name, "client authenticated");
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    let why = if token.is_some() {
        "not a configured client's token"
    } else {
        "no `Proxy-Authorization: Bearer <token>`"
    };
    // Debug, not warn: anyone who reaches the port could fill the log.
    tracing::debug!(%peer, reason = why, "request refused: unknown client");
    rpc(
        StatusCode::FORBIDDEN,
        jsonrpc::error(
            None,
            ErrorCode::INVALID_REQUEST,
            format!(
                "this MCP proxy serves configured clients only ({why}): send `Proxy-Authorization: Bearer <client token>` (`mandate mcp client-token` makes one)"
            ),
        ),
    )
}

/// The token of a `Bearer` credential (the scheme in any case, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_scheme_is_bearer_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
