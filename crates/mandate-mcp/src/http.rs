//! The streamable HTTP proxy: fronts MCP servers that speak streamable HTTP,
//! relaying every request and stream and deciding each `tools/call` first.
//!
//! Each upstream `NAME=URL` is served at `/NAME/mcp`; with exactly one
//! upstream it is also served at `/mcp`. With several, `/mcp` is the merged
//! endpoint (`http/merged.rs`): one MCP server with the tools of every upstream,
//! named `NAME__tool`. On `/NAME/mcp` the proxy is transparent to the
//! protocol's HTTP layer: `POST`, `GET` (the server's SSE stream) and
//! `DELETE` go to the upstream with the client's headers (`Mcp-Session-Id`,
//! `MCP-Protocol-Version`, `Accept`, `Authorization`, `Last-Event-ID`…), and
//! the upstream's status, headers and body come back, SSE streams passed
//! through as they arrive. Sessions are the upstream's: the proxy keys its
//! own per-session state (agent-mode history) by the `Mcp-Session-Id` the
//! upstream issued.
//!
//! Intercepted, as in the stdio wrapper: `tools/call` requests (decided;
//! a denied call is answered by the proxy and never reaches the upstream),
//! `tools/list` results (annotations learned, hidden tools removed) and the
//! results of allowed calls (recorded, and the decision added to their
//! `_meta`: [`crate::meta`]), in JSON answers and in SSE streams alike. A
//! JSON-RPC batch (an array, allowed by protocol version 2025-03-26 only)
//! is refused with a JSON-RPC error: its calls could not be decided one by
//! one without rewriting the batch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::ListenerExt as _;
use futures_util::StreamExt as _;
use rmcp::model::ErrorCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Catalog, Lookup};
use crate::jsonrpc::{self, IdKey, Message, ToolCall};
use crate::merge;
use crate::pep::{Allowed, Gate, Pep, Session};
use crate::trace::TraceContext;

mod clients;
mod merged;
mod sessions;

pub use sessions::DEFAULT_SESSION_IDLE;
use sessions::SessionTable;

/// The session header of streamable HTTP.
const SESSION_HEADER: &str = "mcp-session-id";
/// How long the proxy waits for its own `tools/list`.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One upstream MCP server.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Its name: the path prefix and `action.server` in decisions.
    pub name: String,
    /// Its streamable HTTP endpoint, such as `http://127.0.0.1:3001/mcp`.
    pub url: String,
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The upstreams.
    pub upstreams: Vec<UpstreamSpec>,
    /// The bound on one request body (and on a JSON answer the proxy reads).
    pub max_message_bytes: usize,
    /// How long a client session may stay idle before the proxy ends it
    /// ([`DEFAULT_SESSION_IDLE`]).
    pub session_idle: Duration,
}

/// Why the proxy cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// An upstream is named twice, or its name cannot be a path segment or
    /// a server name.
    #[error(
        "invalid upstream `{0}`: names must be unique, and a server name is 1 to 64 lowercase ASCII letters, digits, `_`, `-` and `.`"
    )]
    Upstream(String),
    /// With several upstreams, a name that would make the merged endpoint's
    /// tool names (`NAME__tool`) ambiguous.
    #[error(
        "invalid upstream `{0}`: with several upstreams, tools are named NAME__tool on /mcp, so a name must not contain `__` nor end with `_`"
    )]
    Separator(String),
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Serving failed.
    #[error("MCP proxy: {0}")]
    Io(#[from] std::io::Error),
}

struct Upstream {
    spec: UpstreamSpec,
    catalog: Catalog,
    /// The sessions this upstream issued through the proxy.
    sessions: SessionTable<Arc<Session>>,
    /// Calls without a session id (a stateless upstream issues none): they
    /// are all the configured agent's, so they share one session rather
    /// than each starting from an empty history.
    stateless: Arc<Session>,
}

struct Proxy {
    pep: Arc<Pep>,
    http: reqwest::Client,
    upstreams: HashMap<String, Arc<Upstream>>,
    /// The upstreams' names, in the order given.
    order: Vec<String>,
    single: Option<String>,
    /// The sessions of the merged endpoint, by the id the proxy issued.
    merged: SessionTable<Arc<merged::Merged>>,
    max: usize,
}

/// Checks the upstreams' names: unique server names (1 to 64 lowercase
/// ASCII letters, digits, `-`, `_` and `.`); with several upstreams, without `__` and not
/// ending with `_` (the merged endpoint names tools `NAME__tool`).
pub fn check_upstreams(upstreams: &[UpstreamSpec]) -> Result<(), ProxyError> {
    let mut seen = std::collections::HashSet::new();
    for spec in upstreams {
        if !merge::valid_server_name(&spec.name) || !seen.insert(spec.name.as_str()) {
            return Err(ProxyError::Upstream(spec.name.clone()));
        }
        if upstreams.len() > 1 && !merge::prefixable(&spec.name) {
            return Err(ProxyError::Separator(spec.name.clone()));
        }
    }
    Ok(())
}

/// The proxy's router, for serving or for tests.
pub fn router(pep: Arc<Pep>, options: ProxyOptions) -> Result<Router, ProxyError> {
    check_upstreams(&options.upstreams)?;
    let mut upstreams = HashMap::new();
    for spec in &options.upstreams {
        upstreams.insert(
            spec.name.clone(),
            Arc::new(Upstream {
                spec: spec.clone(),
                catalog: Catalog::default(),
                sessions: SessionTable::new(options.session_idle),
                stateless: Arc::default(),
            }),
        );
    }
    let single = match options.upstreams.as_slice() {
        [only] => Some(only.name.clone()),
        _ => None,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    let proxy = Arc::new(Proxy {
        pep,
        http,
        upstreams,
        order: options.upstreams.iter().map(|u| u.name.clone()).collect(),
        single,
        merged: SessionTable::new(options.session_idle),
        max: options.max_message_bytes,
    });
    Ok(Router::new()
        .route("/mcp", any(single_upstream))
        .route("/{name}/mcp", any(named_upstream))
        .layer(axum::middleware::from_fn_with_state(
            proxy.clone(),
            clients::require_client,
        ))
        .with_state(proxy))
}

/// Serves the proxy on `listener` until the task is dropped.
pub async fn serve(
    pep: Arc<Pep>,
    options: ProxyOptions,
    listener: TcpListener,
) -> Result<(), ProxyError> {
    let app = router(pep, options)?;
    // Small answers must not wait for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

async fn single_upstream(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.single.clone() {
        Some(name) => proxy.relay(&name, request).await,
        None => proxy.merged(request).await,
    }
}

async fn named_upstream(
    State(proxy): State<Arc<Proxy>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    proxy.relay(&name, request).await
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// A JSON-RPC message as an HTTP answer.
fn rpc(status: StatusCode, message: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        message.to_string(),
    )
        .into_response()
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// What to do with the answer to a forwarded request.
enum Watch {
    /// Nothing: pass it through.
    None,
    /// A `tools/list`: learn and filter.
    List { id: Value, first_page: bool },
    /// An allowed `tools/call`: record its outcome, and add the decision to
    /// its result.
    Call { id: Value, allowed: Allowed },
}

impl Proxy {
    async fn relay(self: &Arc<Self>, name: &str, request: Request) -> Response {
        let Some(upstream) = self.upstreams.get(name).cloned() else {
            return plain(StatusCode::NOT_FOUND, "no such MCP server on this proxy");
        };
        let (parts, body) = request.into_parts();
        let session_id = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        drop(upstream.sessions.sweep(|_| false));
        let session = match &session_id {
            None => upstream.stateless.clone(),
            Some(id) => match upstream.sessions.get(id) {
                Some(session) => session,
                // Not issued through this proxy, ended, or idle too long:
                // the client must initialize again (MCP: 404).
                None => {
                    return rpc(
                        StatusCode::NOT_FOUND,
                        jsonrpc::error(
                            None,
                            ErrorCode::INVALID_REQUEST,
                            "no such session (it ended, was idle too long, or was opened before the proxy restarted): send `initialize` again without Mcp-Session-Id",
                        ),
                    );
                }
            },
        };
        if parts.method == Method::DELETE
            && let Some(id) = &session_id
        {
            upstream.sessions.remove(id);
        }
        if parts.method != Method::POST {
            let upstream_request = self.forward(&upstream, &parts.method, &parts.headers, None);
            return self.pass(upstream_request, &upstream, Watch::None).await;
        }

        let (bytes, message) = match self.read_body(body).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
        let (watch, body) = match jsonrpc::classify(&message) {
            Message::Invalid { id, reason } => {
                return rpc(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::error(id.as_ref(), ErrorCode::INVALID_REQUEST, reason),
                );
            }
            Message::Request { id, method } if method == jsonrpc::TOOLS_CALL => {
                let call = match jsonrpc::tool_call(&message) {
                    Ok(call) => call,
                    Err(reason) => {
                        return rpc(
                            StatusCode::OK,
                            jsonrpc::error(Some(&id), ErrorCode::INVALID_PARAMS, reason),
                        );
                    }
                };
                let shown = call.name.clone();
                let decision = self.gate(&upstream, &parts.headers, call, &shown);
                let Some(gate) = unless_cancelled(&session, IdKey::of(&id), decision).await else {
                    // Cancelled while it was decided: it never goes
                    // upstream, and (MCP) a cancelled request is not
                    // answered: the stream ends empty.
                    tracing::debug!(id = %id, "tools/call cancelled while it was being decided; dropped");
                    return cancelled();
                };
                match gate {
                    Gate::Deny(denied) => {
                        return rpc(StatusCode::OK, jsonrpc::result(&id, denied.result()));
                    }
                    // What was checked is what goes upstream (with the
                    // call's trace context, when tracing).
                    Gate::Allow(allowed) => {
                        let mut forwarded = message.clone();
                        allowed.propagate_into(&mut forwarded);
                        let mut headers = parts.headers.clone();
                        allowed.propagate_into_headers(&mut headers);
                        let upstream_request = self.forward(
                            &upstream,
                            &parts.method,
                            &headers,
                            Some(Bytes::from(forwarded.to_string())),
                        );
                        return self
                            .pass(upstream_request, &upstream, Watch::Call { id, allowed })
                            .await;
                    }
                }
            }
            Message::Request { id, method } if method == jsonrpc::TOOLS_LIST => (
                Watch::List {
                    id,
                    first_page: catalog::is_first_page(&message),
                },
                bytes,
            ),
            Message::Notification { method } => {
                if method == "notifications/tools/list_changed" {
                    upstream.catalog.invalidate();
                }
                // The upstream never saw a call still being decided: the
                // cancellation is the proxy's to act on.
                if method == jsonrpc::CANCELLED
                    && let Some(request) = jsonrpc::cancelled_request(&message)
                    && session.cancel_deciding(&IdKey::of(request))
                {
                    return StatusCode::ACCEPTED.into_response();
                }
                (Watch::None, bytes)
            }
            _ => (Watch::None, bytes),
        };
        let upstream_request = self.forward(&upstream, &parts.method, &parts.headers, Some(body));
        self.pass(upstream_request, &upstream, watch).await
    }

    /// A client's request body, bounded and parsed; the error answer when it
    /// is too large (413) or not JSON (400).
    async fn read_body(&self, body: Body) -> Result<(Bytes, Value), Response> {
        let Ok(bytes) = axum::body::to_bytes(body, self.max).await else {
            let mut refusal = rpc(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::error(
                    None,
                    ErrorCode::INVALID_REQUEST,
                    format!("the request body is larger than {} bytes", self.max),
                ),
            );
            // The rest of the body is unread, so hyper closes the connection;
            // saying so keeps the client from reusing it for its next request.
            refusal
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(refusal);
        };
        match jsonrpc::parse_client(&bytes) {
            Ok(message) => Ok((bytes, message)),
            Err(e) => Err(rpc(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(
                    None,
                    ErrorCode::PARSE_ERROR,
                    format!("the body is not valid JSON: {e}"),
                ),
            )),
        }
    }

    /// The request to the upstream: the client's method, headers (less the
    /// connection's own) and body.
    fn forward(
        &self,
        upstream: &Upstream,
        method: &Method,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method.clone(), &upstream.spec.url);
        for (name, value) in headers {
            if !hop_by_hop(name) {
                request = request.header(name, value);
            }
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request
    }

    /// Sends the request upstream and passes the answer back, watching it
    /// for the response `watch` names.
    async fn pass(
        self: &Arc<Self>,
        request: reqwest::RequestBuilder,
        upstream: &Arc<Upstream>,
        watch: Watch,
    ) -> Response {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(upstream = %upstream.spec.name, error = %e, "the MCP server cannot be reached");
                let id = match &watch {
                    Watch::List { id, .. } | Watch::Call { id, .. } => Some(id.clone()),
                    Watch::None => None,
                };
                return rpc(
                    StatusCode::BAD_GATEWAY,
                    jsonrpc::error(
                        id.as_ref(),
                        ErrorCode::INTERNAL_ERROR,
                        format!("the MCP server `{}` cannot be reached", upstream.spec.name),
                    ),
                );
            }
        };
        let status = response.status();
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        // A session the upstream issued (on `initialize`) is one the proxy
        // serves from now on.
        let issued = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(id) = issued.filter(|_| status.is_success()) {
            upstream.sessions.issued(id, Arc::default);
        }
        let sse = is_sse(&response);

        if matches!(watch, Watch::None) {
            let mut answer = Response::new(Body::from_stream(response.bytes_stream()));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            return answer;
        }
        let watcher = Watcher {
            proxy: self.clone(),
            upstream: upstream.clone(),
            watch: Some(watch),
            merged: None,
            passed: false,
        };
        let body = if sse {
            watcher.sse(response)
        } else {
            match watcher.json(response).await {
                Ok(bytes) => Body::from(bytes),
                Err(reason) => {
                    return rpc(
                        StatusCode::BAD_GATEWAY,
                        jsonrpc::error(None, ErrorCode::INTERNAL_ERROR, reason),
                    );
                }
            }
        };
        let mut answer = Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        answer
    }

    /// Decides one checked `tools/call` of `upstream`'s tool `call.name`,
    /// with the annotations it was listed with (listing the upstream's tools
    /// with `headers` if it has not been seen) and the configuration's
    /// overrides; a deny names the tool `shown`, as the client called it.
    async fn gate(
        &self,
        upstream: &Upstream,
        headers: &HeaderMap,
        call: ToolCall,
        shown: &str,
    ) -> Gate {
        let name = &upstream.spec.name;
        // The client's trace context: in the call's `_meta`, else in the
        // HTTP request's headers.
        let trace = call.trace.or(|| TraceContext::of_headers(headers));
        let known = self.annotations(upstream, headers, &call.name).await;
        let annotations = self.pep.annotations(name, &call.name, known.as_ref());
        self.pep
            .decide(name, &call.name, shown, annotations, call.arguments, &trace)
            .await
    }

    /// Reports the outcome of an allowed call ([`Pep::record_result`]):
    /// `response` is the answer that reached the client, if one did.
    fn record(&self, allowed: Allowed, failed: bool, response: Option<&Value>) {
        self.pep.record_result(allowed, failed, response);
    }

    /// The gateway's own `tools/list` request for page `page` of
    /// `upstream`'s tools, with the id its answer will carry.
    fn list_request(
        &self,
        upstream: &Upstream,
        headers: &HeaderMap,
        page: usize,
        params: Value,
    ) -> (Value, reqwest::RequestBuilder) {
        let id = Value::String(format!("mandate-list-{}-{page}", uuid::Uuid::new_v4()));
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": jsonrpc::TOOLS_LIST, "params": params});
        let request = self
            .forward(
                upstream,
                &Method::POST,
                headers,
                Some(Bytes::from(body.to_string())),
            )
            .timeout(LIST_TIMEOUT);
        (id, request)
    }

    /// The annotations `tool` was listed with; lists the upstream's tools
    /// (in the client's session) if it has not been seen.
    async fn annotations(
        &self,
        upstream: &Upstream,
        headers: &HeaderMap,
        tool: &str,
    ) -> Option<Value> {
        match upstream.catalog.lookup(tool) {
            Lookup::Listed(annotations) => return annotations,
            Lookup::Unlisted => return None,
            Lookup::Unknown => {}
        }
        // A listing cut short leaves the tool unknown: it is decided
        // without annotations (the MCP defaults).
        let _ = catalog::list_pages(
            |page, params| {
                let (id, request) = self.list_request(upstream, headers, page, params);
                async move { ask(request, &id, self.max).await.ok_or(()) }
            },
            |result, last| upstream.catalog.learn(&result, last),
        )
        .await;
        match upstream.catalog.lookup(tool) {
            Lookup::Listed(annotations) => annotations,
            _ => None,
        }
    }
}

impl Upstream {
    /// Reads one `tools/list` result of this upstream: learns its tools
    /// (`complete` when it is a whole listing), removes those the task may
    /// never call and renames the others with `rename`. Returns whether the
    /// result changed.
    fn listed(
        &self,
        pep: &Pep,
        result: &mut Value,
        complete: bool,
        rename: impl Fn(&str) -> Option<String>,
    ) -> bool {
        self.catalog.learn(result, complete);
        catalog::filter_tools(pep, &self.spec.name, result, rename)
    }
}

/// Sends a request of the proxy's own and reads the result of `id`, from a
/// JSON answer or an SSE stream.
async fn ask(request: reqwest::RequestBuilder, id: &Value, max: usize) -> Option<Value> {
    let response = request.send().await.ok()?;
    let message = read_answer(response, id, max, |_| {}).await.ok()?;
    message.get("result").cloned()
}

/// Reads the response to the request `id` from an upstream's answer: a JSON
/// body, or the first message with that id on an SSE stream (the rest of
/// the stream is dropped). Requests the server sends on the stream are
/// handed to `on_request`; other messages (progress…) are dropped.
async fn read_answer(
    response: reqwest::Response,
    id: &Value,
    max: usize,
    mut on_request: impl FnMut(Value),
) -> Result<Value, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("it answered HTTP {status}"));
    }
    let sse = is_sse(&response);
    let mut stream = response.bytes_stream();
    if !sse {
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("its answer was cut off: {e}"))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max {
                return Err(format!("its answer is larger than {max} bytes"));
            }
        }
        let message: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("its answer is not JSON: {e}"))?;
        return match jsonrpc::classify(&message) {
            Message::Response { id: got } if IdKey::of(&got) == IdKey::of(id) => Ok(message),
            _ => Err("its answer is not the response to the request".to_owned()),
        };
    }
    let mut events = SseSplitter::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("its stream was cut off: {e}"))?;
        for event in events.push(&chunk) {
            let Some(message) = event.message() else {
                continue;
            };
            match jsonrpc::classify(&message) {
                Message::Response { id: got } if IdKey::of(&got) == IdKey::of(id) => {
                    return Ok(message);
                }
                Message::Request { .. } => on_request(message),
                _ => {}
            }
        }
        if events.buffered() > max {
            return Err(format!("an event of its stream is larger than {max} bytes"));
        }
    }
    Err("its stream ended without the response".to_owned())
}

/// Whether an upstream's answer is an SSE stream.
fn is_sse(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// Watches one answer for the response to a watched request.
struct Watcher {
    proxy: Arc<Proxy>,
    upstream: Arc<Upstream>,
    watch: Option<Watch>,
    /// Set on the merged endpoint, which is the client's server, not a
    /// relay: the proxy's own session with the upstream and the call in
    /// progress. Requests the upstream sends are answered there (not passed
    /// on), events lose the upstream's ids (the client cannot resume a
    /// stream there), a stream that ends without the response ends with an
    /// error answer of the proxy's own, and one the client cancels just
    /// ends.
    merged: Option<merged::MergedCall>,
    /// Whether anything from the upstream reached the client before the
    /// watched response: progress and log messages are text the upstream
    /// wrote, so a call that sent any is reported as one that returned,
    /// even if it then failed. (Taint does not depend on it: the server
    /// labelled the session when it allowed an open-world call.)
    passed: bool,
}

impl Watcher {
    /// Applies the watch to a response message, if it is the one watched;
    /// returns the message to pass on when it changed.
    async fn on_message(&mut self, message: &mut Value) -> bool {
        let id = match &self.watch {
            Some(Watch::List { id, .. } | Watch::Call { id, .. }) => id,
            _ => return false,
        };
        if !matches!(jsonrpc::classify(message), Message::Response { id: ref got } if IdKey::of(got) == IdKey::of(id))
        {
            return false;
        }
        match self.watch.take() {
            Some(Watch::List { first_page, .. }) => match message.get_mut("result") {
                Some(result) => {
                    let complete = first_page && !catalog::has_more(result);
                    self.upstream
                        .listed(&self.proxy.pep, result, complete, |_| None)
                }
                None => false,
            },
            Some(Watch::Call { allowed, .. }) => {
                let failed = jsonrpc::call_failed(message) && !self.passed;
                let changed = allowed.decision.add_to_response(message);
                self.proxy.record(allowed, failed, Some(message));
                changed
            }
            _ => false,
        }
    }

    /// A JSON answer: read whole (bounded), watched, passed on.
    async fn json(mut self, response: reqwest::Response) -> Result<Bytes, String> {
        let answer = self.read_json(response).await;
        // Not the call's response: an error means nothing was passed on (a
        // POST's answer never comes on another stream); a body passed on as
        // it came may still carry what the upstream wrote.
        self.settle(answer.is_err()).await;
        answer
    }

    async fn read_json(&mut self, response: reqwest::Response) -> Result<Bytes, String> {
        let mut bytes = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("the MCP server's answer was cut off: {e}"))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > self.proxy.max {
                return Err(format!(
                    "the MCP server's answer is larger than {} bytes",
                    self.proxy.max
                ));
            }
        }
        let Ok(mut message) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(Bytes::from(bytes));
        };
        if self.on_message(&mut message).await {
            return Ok(Bytes::from(message.to_string()));
        }
        Ok(Bytes::from(bytes))
    }

    /// An SSE stream: passed on event by event as it arrives; the watched
    /// response's event is rewritten when it changed.
    fn sse(mut self, response: reqwest::Response) -> Body {
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            self.pass_events(response, &tx).await;
            // The stream ended (or the client left) before the call's
            // response: it may still reach the client on a resumed `GET`
            // stream, which the proxy does not watch, so the session counts
            // it as a call that returned (an open-world one labels the
            // session `untrusted`) rather than miss what may have entered.
            // Recorded before the client sees the stream end, as a
            // response is.
            self.settle(false).await;
            drop(tx);
        });
        Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    /// Passes the events of an SSE answer on to `tx` as they arrive.
    async fn pass_events(
        &mut self,
        response: reqwest::Response,
        tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut stream = response.bytes_stream();
        let mut events = SseSplitter::default();
        // Why the stream ended early, if it did, and whether it broke
        // (then the client sees the error) or was closed by the proxy.
        let cancellation = self
            .merged
            .as_ref()
            .map(|merged| merged.call.cancelled().clone())
            .unwrap_or_default();
        let early: Option<(String, Option<std::io::Error>)> = loop {
            let Some(next) = cancellation.run_until_cancelled(stream.next()).await else {
                // The client cancelled the call (merged endpoint): MCP
                // answers no cancelled request, so the stream just ends;
                // the call returned if anything of it reached the client.
                self.settle(!self.passed).await;
                return;
            };
            let chunk = match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    break Some((
                        format!("its stream was cut off: {e}"),
                        Some(std::io::Error::other(e)),
                    ));
                }
                None => break None,
            };
            for event in events.push(&chunk) {
                let Some(out) = self.pass_event(event).await else {
                    continue;
                };
                if tx.send(Ok(out)).await.is_err() {
                    return; // the client went away
                }
                if self.merged.is_some() && self.watch.is_none() {
                    return; // the response is out: the proxy's stream ends
                }
            }
            if events.buffered() > self.proxy.max {
                tracing::warn!(
                    "an SSE event from the MCP server is over the size bound; stream closed"
                );
                let why = format!(
                    "an event of its stream is larger than {} bytes",
                    self.proxy.max
                );
                break Some((why, None));
            }
        };
        if self.merged.is_some() {
            let why = early.map_or_else(
                || "its stream ended without the response".to_owned(),
                |(why, _)| why,
            );
            if let Some(answer) = self.unanswered(&why).await {
                let _ = tx.send(Ok(sse_message(&answer))).await;
            }
            return;
        }
        match early {
            None => {
                let rest = events.rest();
                if !rest.is_empty() {
                    let _ = tx.send(Ok(rest)).await;
                }
            }
            Some((_, Some(broken))) => {
                let _ = tx.send(Err(broken)).await;
            }
            Some((_, None)) => {}
        }
    }

    /// Records the watched call, if its response was not seen, as `failed`
    /// (nothing it returned reached the client) or not.
    async fn settle(&mut self, failed: bool) {
        if let Some(Watch::Call { allowed, .. }) = self.watch.take() {
            self.proxy.record(allowed, failed, None);
        }
    }

    /// What of one event goes on to the client, if anything.
    async fn pass_event(&mut self, event: SseEvent) -> Option<Bytes> {
        let Some(mut message) = event.message() else {
            // Comments, keep-alives, priming events: on the merged
            // endpoint's own stream, a bare comment keeps the connection
            // alive without the upstream's event id.
            return Some(match self.merged {
                Some(_) => Bytes::from_static(b":\n\n"),
                None => event.raw,
            });
        };
        let watching = self.watch.is_some();
        let changed = watching && self.on_message(&mut message).await;
        let response = watching && self.watch.is_none();
        if let Some(call) = &self.merged
            && !response
        {
            // The merged endpoint passes a call's progress and log
            // messages; requests are answered here, anything else (other
            // notifications, stray responses) is the upstream's business.
            match jsonrpc::classify(&message) {
                Message::Request { .. } => {
                    self.proxy.refuse(&self.upstream, &call.headers, &message);
                    return None;
                }
                Message::Notification { method }
                    if MERGED_NOTIFICATIONS.contains(&method.as_str()) => {}
                _ => return None,
            }
        }
        if !response {
            self.passed = true;
        }
        Some(match (&self.merged, changed) {
            (Some(_), _) => sse_message(&message),
            (None, true) => event.with_data(&message.to_string()),
            (None, false) => event.raw,
        })
    }

    /// The merged endpoint's answer when the upstream's stream ended
    /// without the watched call's response: the call is recorded as
    /// failed unless something of the upstream's already reached the
    /// client, and the client gets an error rather than a stream that ends
    /// unanswered.
    async fn unanswered(&mut self, why: &str) -> Option<Value> {
        let id = match &self.watch {
            Some(Watch::Call { id, .. }) => id.clone(),
            _ => return None,
        };
        let name = self.upstream.spec.name.clone();
        tracing::warn!(upstream = %name, reason = %why, "no answer from the MCP server");
        self.settle(!self.passed).await;
        Some(jsonrpc::error(
            Some(&id),
            ErrorCode::INTERNAL_ERROR,
            format!("no answer from the MCP server `{name}`: {why}"),
        ))
    }
}

/// The notifications of a call the merged endpoint passes to its client.
const MERGED_NOTIFICATIONS: [&str; 2] = ["notifications/progress", "notifications/message"];

/// One JSON-RPC message as an SSE event of the proxy's own.
fn sse_message(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// Splits an SSE byte stream into events (blocks ended by a blank line),
/// keeping each event's bytes as they came.
#[derive(Debug, Default)]
struct SseSplitter {
    buffer: Vec<u8>,
}

/// One SSE event.
#[derive(Debug)]
struct SseEvent {
    /// The event's bytes, blank line included.
    raw: Bytes,
}

impl SseSplitter {
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end).collect();
            events.push(SseEvent {
                raw: Bytes::from(raw),
            });
        }
        events
    }

    fn buffered(&self) -> usize {
        self.buffer.len()
    }

    fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buffer))
    }
}

/// The end (exclusive) of the first complete event in `buffer`: after the
/// first blank line (`\n\n`, `\r\n\r\n` or `\r\r`).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buffer.len() {
        let rest = buffer.get(i..)?;
        if rest.starts_with(b"\r\n\r\n") {
            return Some(i + 4);
        }
        if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            return Some(i + 2);
        }
        i += 1;
    }
    None
}

impl SseEvent {
    /// The event's data lines, joined with newlines as SSE defines.
    fn data(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.raw).ok()?;
        let mut data: Option<String> = None;
        for line in text.split(['\n', '\r']) {
            if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                }
            }
        }
        data
    }

    /// The event's JSON-RPC message, if its data is one.
    fn message(&self) -> Option<Value> {
        serde_json::from_str(&self.data()?).ok()
    }

    /// The same event (its `id:`, `event:` and `retry:` lines) with other
    /// data.
    fn with_data(&self, data: &str) -> Bytes {
        let text = String::from_utf8_lossy(&self.raw);
        let mut out = String::new();
        for line in text.split(['\n', '\r']) {
            if line.is_empty() || line.starts_with("data:") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        for line in data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// The answer to a call the client cancelled before its answer began: MCP
/// answers no cancelled request, so the stream ends with nothing on it.
fn cancelled() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::empty(),
    )
        .into_response()
}

/// Decides call `id` of a session, unless the client cancels it meanwhile
/// (`None`): the cancellation ends the decision at once, approval wait
/// included, and the call never goes upstream.
async fn unless_cancelled<T>(
    session: &Session,
    id: IdKey,
    decision: impl Future<Output = T>,
) -> Option<T> {
    let deciding = Deciding::start(session, id);
    let outcome = deciding.cancellation.run_until_cancelled(decision).await;
    if deciding.finish() { None } else { outcome }
}

/// A call being decided in a session; ends its decision when finished or,
/// if the client goes away mid-decision, when dropped.
struct Deciding<'a> {
    session: &'a Session,
    id: Option<IdKey>,
    cancellation: CancellationToken,
}

impl<'a> Deciding<'a> {
    fn start(session: &'a Session, id: IdKey) -> Self {
        let cancellation = session.start_deciding(id.clone());
        Self {
            session,
            id: Some(id),
            cancellation,
        }
    }

    /// Ends the decision; whether the call was cancelled meanwhile.
    fn finish(mut self) -> bool {
        self.id
            .take()
            .is_none_or(|id| self.session.finish_deciding(&id))
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.session.finish_deciding(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_checked() {
        let specs = |names: &[&str]| -> Vec<UpstreamSpec> {
            names
                .iter()
                .map(|n| UpstreamSpec {
                    name: (*n).to_owned(),
                    url: "http://127.0.0.1:1/mcp".to_owned(),
                })
                .collect()
        };
        assert!(check_upstreams(&specs(&["a__b"])).is_ok());
        assert!(check_upstreams(&specs(&["a", "b-c.d_e"])).is_ok());
        for bad in [&["a", "a"][..], &["a", ""], &["a", "b/c"]] {
            assert!(matches!(
                check_upstreams(&specs(bad)),
                Err(ProxyError::Upstream(_))
            ));
        }
        for bad in [&["a", "b__c"][..], &["a", "b_"]] {
            assert!(matches!(
                check_upstreams(&specs(bad)),
                Err(ProxyError::Separator(_))
            ));
        }
    }

    #[test]
    fn splits_events_and_rewrites_data() {
        let mut splitter = SseSplitter::default();
        let mut events = splitter.push(b"id: 1\nevent: message\ndata: {\"a\":");
        assert!(events.is_empty());
        events.extend(splitter.push(b"1}\n\n: comment\r\n\r\ndata: x"));
        assert_eq!(events.len(), 2);
        let first = &events[0];
        assert_eq!(first.message(), Some(json!({"a": 1})));
        let rewritten = first.with_data("{\"b\":2}");
        assert_eq!(
            &rewritten[..],
            b"id: 1\nevent: message\ndata: {\"b\":2}\n\n"
        );
        assert_eq!(events[1].data(), None);
        assert_eq!(&splitter.rest()[..], b"data: x");
    }
}
