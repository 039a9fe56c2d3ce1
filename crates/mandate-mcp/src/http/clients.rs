//! Who may use the proxy: with `[[clients]]` configured, every request must
//! carry `Proxy-Authorization: Bearer <token>` with a configured client's
//! token, or it is answered `407` and goes nowhere. Without `[[clients]]`
//! any client is served (bind the proxy to loopback then).
//!
//! `Proxy-Authorization` rather than `Authorization`: the latter is the
//! upstream's (the proxy passes it on, for servers with their own OAuth),
//! while the former is, by HTTP's own rules, the credential of the proxy in
//! between and is never forwarded.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rmcp::model::ErrorCode;

use super::{Proxy, rpc};
use crate::jsonrpc;

/// The challenge of a `407`.
const CHALLENGE: &str = r#"Bearer realm="mandate-mcp-proxy""#;

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
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty()),
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
    tracing::warn!(%peer, reason = why, "request refused: unknown client");
    let mut answer = rpc(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        jsonrpc::error(
            None,
            ErrorCode::INVALID_REQUEST,
            format!(
                "this MCP proxy serves configured clients only ({why}): send `Proxy-Authorization: Bearer <client token>` (`mandate mcp client-token` makes one)"
            ),
        ),
    );
    answer.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    answer
}
