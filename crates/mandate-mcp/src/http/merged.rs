//! The merged endpoint: with several upstreams, `/mcp` is one MCP server
//! whose tools are those of every upstream, named `NAME__tool`.
//!
//! Unlike the per-upstream endpoints, this one is not a relay: the proxy is
//! the client's MCP server. `initialize` opens one session with every
//! upstream (each issues its own `Mcp-Session-Id`) and gives the client a
//! session id of the proxy's own (random) that maps to them; `tools/list` is
//! the union of the upstreams' listings, renamed and filtered as on
//! `/NAME/mcp`; `tools/call` of `NAME__tool` is decided exactly as a call of
//! `tool` on `/NAME/mcp` and, allowed, sent to that upstream's session under
//! its own name. A call's answer is an SSE stream of the proxy's own when
//! the upstream streams it and the client accepts one: progress and log
//! messages pass, other notifications do not; requests an upstream sends
//! while it works (sampling, elicitation, roots) are answered with an error
//! and not passed on, since their ids are the upstream's and the client
//! could not answer them to the right one. Other answers are JSON. A
//! cancellation of a call being decided stops it here; of a call already
//! sent, it goes on to that call's upstream and ends the call's answer.
//! Resources, prompts, completion and logging are per server: the client is
//! told to use `/NAME/mcp`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use rmcp::model::ErrorCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    LIST_TIMEOUT, Proxy, SESSION_HEADER, Upstream, Watch, Watcher, cancelled, is_sse, read_answer,
    rpc,
};
use crate::catalog;
use crate::jsonrpc::{self, IdKey, Message};
use crate::merge::{self, SEPARATOR};

/// How long the proxy waits for an upstream to answer `initialize`: longer
/// than for a listing, since an upstream may start its server for the
/// session then (a stdio server behind a bridge, say).
const INITIALIZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
use crate::pep::Gate;

/// The protocol version header of streamable HTTP.
const VERSION_HEADER: &str = "mcp-protocol-version";
/// The version asked of upstreams when the client names none.
const DEFAULT_VERSION: &str = "2025-06-18";

/// One client session of the merged endpoint.
pub(super) struct Merged {
    /// The upstreams' sessions, in the order the upstreams were given.
    links: Vec<Link>,
    /// Its `tools/call`s in progress.
    calls: Arc<CallsInProgress>,
}

/// A session's `tools/call`s in progress (being decided, or sent and not
/// yet answered), by the client's request id: what a cancellation of one
/// stops, and which upstream it goes on to.
#[derive(Default)]
struct CallsInProgress(Mutex<Calls>);

#[derive(Default)]
struct Calls {
    by_id: HashMap<IdKey, Arc<CallState>>,
    /// The session ended: no call starts any more.
    closed: bool,
}

struct CallState {
    /// The index of the call's upstream link.
    link: usize,
    /// Fired when the client cancels the call.
    cancelled: CancellationToken,
    /// Set before the call is sent upstream: from then on a cancellation
    /// goes on to the upstream too.
    sent: AtomicBool,
}

impl CallsInProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes call `id`, for link `link`, as in progress; why not if a call
    /// of that id already is (a client must not reuse one) or the session
    /// ended.
    fn start(self: &Arc<Self>, id: IdKey, link: usize) -> Result<CallInProgress, &'static str> {
        let state = Arc::new(CallState {
            link,
            cancelled: CancellationToken::new(),
            sent: AtomicBool::new(false),
        });
        let mut calls = self.lock();
        if calls.closed {
            return Err("the session ended: send `initialize` again");
        }
        if calls.by_id.contains_key(&id) {
            return Err("the request id is already in use by a call in progress");
        }
        calls.by_id.insert(id.clone(), state.clone());
        Ok(CallInProgress {
            calls: self.clone(),
            id,
            state,
        })
    }

    /// Whether any call is in progress.
    fn any(&self) -> bool {
        !self.lock().by_id.is_empty()
    }

    /// Cancels every call in progress, and any that would start (the
    /// session ends).
    fn cancel_all(&self) {
        let mut calls = self.lock();
        calls.closed = true;
        for state in calls.by_id.values() {
            state.cancelled.cancel();
        }
    }

    /// Cancels call `id`, if it is in progress; the link of its upstream if
    /// the call may have been sent there.
    fn cancel(&self, id: &IdKey) -> Option<usize> {
        let state = self.lock().by_id.get(id).cloned()?;
        state.cancelled.cancel();
        state.sent.load(Ordering::SeqCst).then_some(state.link)
    }
}

/// A `tools/call` in progress, until its answer ends (dropped).
pub(super) struct CallInProgress {
    calls: Arc<CallsInProgress>,
    id: IdKey,
    state: Arc<CallState>,
}

impl CallInProgress {
    /// Fired when the client cancels the call.
    pub(super) fn cancelled(&self) -> &CancellationToken {
        &self.state.cancelled
    }

    /// Notes that the call is about to be sent upstream; `false` if the
    /// client cancelled it already. Either this sees the cancellation or
    /// the cancellation sees the call sent (and goes on upstream).
    fn sending(&self) -> bool {
        self.state.sent.store(true, Ordering::SeqCst);
        !self.state.cancelled.is_cancelled()
    }
}

impl Drop for CallInProgress {
    fn drop(&mut self) {
        self.calls.lock().by_id.remove(&self.id);
    }
}

/// What the watcher of a merged endpoint call's SSE answer holds.
pub(super) struct MergedCall {
    /// The headers of the proxy's session with the call's upstream.
    pub(super) headers: HeaderMap,
    /// The call, in progress while its answer is read.
    pub(super) call: CallInProgress,
}

/// The proxy's session with one upstream, for one client session.
struct Link {
    upstream: Arc<Upstream>,
    /// The `Mcp-Session-Id` the upstream issued, if it issued one.
    session_id: Option<String>,
    /// The protocol version the upstream answered.
    version: String,
}

impl Link {
    /// The headers of a request of this session.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&self.version) {
            headers.insert(VERSION_HEADER, v);
        }
        if let Some(id) = &self.session_id
            && let Ok(v) = HeaderValue::from_str(id)
        {
            headers.insert(SESSION_HEADER, v);
        }
        headers
    }
}

/// A JSON-RPC answer with status 200.
fn ok(message: Value) -> Response {
    rpc(StatusCode::OK, message)
}

impl Proxy {
    /// `/mcp` with several upstreams.
    pub(super) async fn merged(self: &Arc<Self>, request: Request) -> Response {
        // Sessions idle too long end here as if the client had ended them;
        // one with a call in progress (a long tool, an approval wait) is
        // not idle.
        for idle in self.merged.sweep(|merged| merged.calls.any()) {
            let proxy = self.clone();
            tokio::spawn(async move { proxy.end(&idle).await });
        }
        let (parts, body) = request.into_parts();
        let session_id = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if parts.method == Method::DELETE {
            let Some(id) = session_id else {
                return (StatusCode::BAD_REQUEST, "no Mcp-Session-Id").into_response();
            };
            let gone = self.merged.remove(&id);
            return match gone {
                Some(merged) => {
                    self.end(&merged).await;
                    StatusCode::OK.into_response()
                }
                None => (StatusCode::NOT_FOUND, "no such session").into_response(),
            };
        }
        if parts.method != Method::POST {
            // No stream of the proxy's own: nothing is ever sent unasked.
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static("POST, DELETE"))],
            )
                .into_response();
        }
        let (_, message) = match self.read_body(body).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
        let (id, method) = match jsonrpc::classify(&message) {
            Message::Invalid { id, reason } => {
                return rpc(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::error(id.as_ref(), ErrorCode::INVALID_REQUEST, reason),
                );
            }
            Message::Request { id, method } => (id, method),
            Message::Notification { method } => {
                let merged = self.find(session_id.as_deref());
                match (method.as_str(), merged) {
                    ("notifications/initialized", Some(merged)) => {
                        self.notify_initialized(&merged).await;
                    }
                    // A call still being decided never goes upstream; a
                    // call already sent is cancelled upstream too, and its
                    // answer ends here at once.
                    (jsonrpc::CANCELLED, Some(merged)) => {
                        if let Some(request) = jsonrpc::cancelled_request(&message) {
                            let sent = merged.calls.cancel(&IdKey::of(request));
                            if let Some(link) = sent.and_then(|i| merged.links.get(i)) {
                                tokio::spawn(self.notify(link, &message));
                            }
                        }
                    }
                    _ => {}
                }
                return StatusCode::ACCEPTED.into_response();
            }
            // The proxy sends the client no requests: nothing to answer.
            Message::Response { .. } => return StatusCode::ACCEPTED.into_response(),
        };
        if method == "initialize" {
            return self.initialize(&id, &message).await;
        }
        let Some(merged) = self.find(session_id.as_deref()) else {
            let (status, reason) = match session_id {
                None => (
                    StatusCode::BAD_REQUEST,
                    "no Mcp-Session-Id: send `initialize` first",
                ),
                Some(_) => (
                    StatusCode::NOT_FOUND,
                    "no such session (it ended): send `initialize` again",
                ),
            };
            return rpc(
                status,
                jsonrpc::error(Some(&id), ErrorCode::INVALID_REQUEST, reason),
            );
        };
        match method.as_str() {
            "ping" => ok(jsonrpc::result(&id, json!({}))),
            jsonrpc::TOOLS_LIST => self.list(&id, &merged).await,
            jsonrpc::TOOLS_CALL => {
                self.call(&id, &message, &merged, accepts_sse(&parts.headers))
                    .await
            }
            other => ok(jsonrpc::error(
                Some(&id),
                ErrorCode::METHOD_NOT_FOUND,
                format!(
                    "`{other}` is not served by the merged endpoint /mcp, which serves tools only: use /NAME/mcp for one server's resources, prompts, completion and logging (servers: {})",
                    self.order.join(", ")
                ),
            )),
        }
    }

    /// The session `id` names, if it is open.
    fn find(&self, id: Option<&str>) -> Option<Arc<Merged>> {
        self.merged.get(id?)
    }

    /// Opens a session with every upstream, then one with the client.
    async fn initialize(&self, id: &Value, message: &Value) -> Response {
        let params = message.get("params");
        let version = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERSION)
            .to_owned();
        let client_info = params
            .and_then(|p| p.get("clientInfo"))
            .cloned()
            .unwrap_or_else(
                || json!({"name": "mandate-mcp-proxy", "version": env!("CARGO_PKG_VERSION")}),
            );
        let opened = futures_util::future::join_all(self.order.iter().map(|name| {
            let upstream = self.upstreams.get(name).cloned();
            self.open(upstream, &version, &client_info)
        }))
        .await;
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for (name, link) in self.order.iter().zip(opened) {
            match link {
                Ok(link) => links.push(link),
                Err(reason) => failures.push(format!("`{name}`: {reason}")),
            }
        }
        if !failures.is_empty() {
            self.close(&links).await;
            return ok(jsonrpc::error(
                Some(id),
                ErrorCode::INTERNAL_ERROR,
                format!(
                    "the MCP servers behind /mcp could not all be initialized ({})",
                    failures.join("; ")
                ),
            ));
        }
        let agreed = merge::agreed_version(&version, links.iter().map(|l| l.version.as_str()));
        let session_id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.merged.issued(&session_id, || {
            Arc::new(Merged {
                links,
                calls: Arc::default(),
            })
        });
        let result = json!({
            "protocolVersion": agreed,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "mandate-mcp-proxy", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!(
                "Tools of the MCP servers {}, named SERVER{SEPARATOR}tool. Every call is authorized by Mandate.",
                self.order.join(", ")
            ),
        });
        let mut answer = ok(jsonrpc::result(id, result));
        if let Ok(v) = HeaderValue::from_str(&session_id) {
            answer.headers_mut().insert(SESSION_HEADER, v);
        }
        answer
    }

    /// Initializes one upstream.
    async fn open(
        &self,
        upstream: Option<Arc<Upstream>>,
        version: &str,
        client_info: &Value,
    ) -> Result<Link, String> {
        let upstream = upstream.ok_or("unknown upstream")?;
        let id = Value::String(format!("mandate-init-{}", uuid::Uuid::new_v4()));
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": client_info},
        });
        let mut link = Link {
            upstream,
            session_id: None,
            version: version.to_owned(),
        };
        let response = self
            .forward(
                &link.upstream,
                &Method::POST,
                &link.headers(),
                Some(Bytes::from(body.to_string())),
            )
            .timeout(INITIALIZE_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("it cannot be reached ({e})"))?;
        link.session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = read_answer(response, &id, self.max, |_| {}).await?;
        let Some(result) = answer.get("result") else {
            return Err(format!(
                "it refused: {}",
                answer.get("error").unwrap_or(&Value::Null)
            ));
        };
        if let Some(v) = result.get("protocolVersion").and_then(Value::as_str) {
            v.clone_into(&mut link.version);
        }
        Ok(link)
    }

    /// Sends `notifications/initialized` to every upstream of a session.
    async fn notify_initialized(&self, merged: &Merged) {
        let message = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        futures_util::future::join_all(merged.links.iter().map(|link| self.notify(link, &message)))
            .await;
    }

    /// Sends a notification to the proxy's session with one upstream; a
    /// failure is logged (a notification has no answer to give).
    fn notify(&self, link: &Link, message: &Value) -> impl Future<Output = ()> + Send + 'static {
        let request = self
            .forward(
                &link.upstream,
                &Method::POST,
                &link.headers(),
                Some(Bytes::from(message.to_string())),
            )
            .timeout(LIST_TIMEOUT)
            .send();
        let name = link.upstream.spec.name.clone();
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        async move {
            match request.await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(upstream = %name, %method, status = %r.status(), "the MCP server refused a notification");
                }
                Err(e) => {
                    tracing::warn!(upstream = %name, %method, error = %e, "the MCP server cannot be reached");
                }
            }
        }
    }

    /// Ends a client session: its calls in progress (their answers end,
    /// those still decided never go upstream), then its upstream sessions.
    async fn end(&self, merged: &Merged) {
        merged.calls.cancel_all();
        self.close(&merged.links).await;
    }

    /// Ends the upstreams' sessions (`DELETE`).
    async fn close(&self, links: &[Link]) {
        futures_util::future::join_all(links.iter().filter(|l| l.session_id.is_some()).map(
            |link| {
                let request = self
                    .forward(&link.upstream, &Method::DELETE, &link.headers(), None)
                    .timeout(LIST_TIMEOUT)
                    .send();
                async move {
                    if let Err(e) = request.await {
                        tracing::debug!(upstream = %link.upstream.spec.name, error = %e, "cannot end the MCP server's session");
                    }
                }
            },
        ))
        .await;
    }

    /// Every upstream's tools, renamed `NAME__tool`, hidden ones removed.
    async fn list(&self, id: &Value, merged: &Merged) -> Response {
        let listings =
            futures_util::future::join_all(merged.links.iter().map(|link| self.list_one(link)))
                .await;
        let mut tools = Vec::new();
        for (link, listing) in merged.links.iter().zip(listings) {
            match listing {
                Ok(mut some) => tools.append(&mut some),
                Err(reason) => {
                    return ok(jsonrpc::error(
                        Some(id),
                        ErrorCode::INTERNAL_ERROR,
                        format!(
                            "the tools of the MCP server `{}` cannot be listed: {reason}",
                            link.upstream.spec.name
                        ),
                    ));
                }
            }
        }
        ok(jsonrpc::result(id, json!({"tools": tools})))
    }

    /// One upstream's whole listing, learned, filtered and renamed.
    async fn list_one(&self, link: &Link) -> Result<Vec<Value>, String> {
        let upstream = &link.upstream;
        let prefix = merge::prefix(&upstream.spec.name);
        let mut tools = Vec::new();
        catalog::list_pages(
            |page, params| {
                let (id, request) = self.list_request(upstream, &link.headers(), page, params);
                async move {
                    let response = request
                        .send()
                        .await
                        .map_err(|e| format!("it cannot be reached ({e})"))?;
                    let answer = read_answer(response, &id, self.max, |_| {}).await?;
                    answer.get("result").cloned().ok_or_else(|| {
                        format!(
                            "it answered {}",
                            answer.get("error").unwrap_or(&Value::Null)
                        )
                    })
                }
            },
            |mut result, last| {
                upstream.listed(&self.pep, &mut result, last, |name| {
                    Some(format!("{prefix}{name}"))
                });
                if let Some(Value::Array(page_tools)) = result.get_mut("tools") {
                    tools.append(page_tools);
                }
            },
        )
        .await?;
        Ok(tools)
    }

    /// A `tools/call` of `NAME__tool`: decided as a call of `tool` on
    /// `/NAME/mcp`, and, allowed, sent to that upstream's session. When the
    /// upstream answers with an SSE stream and the client accepts one, the
    /// call's progress and log messages are passed on as they come, on a
    /// stream of the proxy's own; otherwise the answer is JSON.
    async fn call(
        self: &Arc<Self>,
        id: &Value,
        message: &Value,
        merged: &Merged,
        sse: bool,
    ) -> Response {
        let mut call = match jsonrpc::tool_call(message) {
            Ok(call) => call,
            Err(reason) => {
                return ok(jsonrpc::error(Some(id), ErrorCode::INVALID_PARAMS, reason));
            }
        };
        let target = merge::split(&call.name, self.order.iter().map(String::as_str)).and_then(
            |(server, tool)| {
                let (index, link) = merged
                    .links
                    .iter()
                    .enumerate()
                    .find(|(_, l)| l.upstream.spec.name == server)?;
                Some((index, link, tool.to_owned()))
            },
        );
        let Some((index, link, tool)) = target else {
            return ok(jsonrpc::error(
                Some(id),
                ErrorCode::INVALID_PARAMS,
                format!(
                    "unknown tool `{}`: tools on /mcp are named SERVER{SEPARATOR}tool, and the servers are {}",
                    call.name,
                    self.order.join(", ")
                ),
            ));
        };
        let shown = std::mem::replace(&mut call.name, tool);
        // What was checked is what goes upstream, under the tool's own name.
        let mut forwarded = message.clone();
        if let Some(params) = forwarded.get_mut("params").and_then(Value::as_object_mut) {
            params.insert("name".to_owned(), Value::String(call.name.clone()));
        }
        // In progress from here: a cancellation that comes after the
        // decision still finds the call.
        let in_progress = match merged.calls.start(IdKey::of(id), index) {
            Ok(call) => call,
            Err(why) => {
                return ok(jsonrpc::error(
                    Some(id),
                    ErrorCode::INVALID_REQUEST,
                    format!("request id {id} cannot run: {why}"),
                ));
            }
        };
        let headers = link.headers();
        let decision = self.gate(&link.upstream, &headers, call, &shown);
        // The call's token ends the decision, approval wait included, when
        // the client cancels the call or its session ends.
        let Some(gate) = in_progress.cancelled().run_until_cancelled(decision).await else {
            tracing::debug!(id = %id, "tools/call cancelled while it was being decided; dropped");
            return cancelled();
        };
        let allowed = match gate {
            Gate::Deny(denied) => return ok(jsonrpc::result(id, denied.result())),
            Gate::Allow(allowed) => allowed,
        };
        allowed.propagate_into(&mut forwarded);
        let mut headers = headers;
        allowed.propagate_into_headers(&mut headers);
        if !in_progress.sending() {
            // Cancelled between the decision and now: nothing ran.
            self.record(allowed, true, None);
            return cancelled();
        }
        let name = link.upstream.spec.name.clone();
        let send = self
            .forward(
                &link.upstream,
                &Method::POST,
                &headers,
                Some(Bytes::from(forwarded.to_string())),
            )
            .send();
        let Some(sent) = in_progress.cancelled().run_until_cancelled(send).await else {
            // Cancelled before the upstream answered: nothing of it reached
            // the client.
            self.record(allowed, true, None);
            return cancelled();
        };
        let answer = match sent {
            Ok(response) if sse && response.status().is_success() && is_sse(&response) => {
                let watcher = Watcher {
                    proxy: self.clone(),
                    upstream: link.upstream.clone(),
                    watch: Some(Watch::Call {
                        id: id.clone(),
                        allowed,
                    }),
                    merged: Some(MergedCall {
                        headers,
                        call: in_progress,
                    }),
                    passed: false,
                };
                return (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    )],
                    watcher.sse(response),
                )
                    .into_response();
            }
            Ok(response) => {
                let read = read_answer(response, id, self.max, |request| {
                    self.refuse(&link.upstream, &headers, &request);
                });
                match in_progress.cancelled().run_until_cancelled(read).await {
                    Some(answer) => answer,
                    None => {
                        // Cancelled by the client: nothing of the upstream's
                        // reached it.
                        self.record(allowed, true, None);
                        return cancelled();
                    }
                }
            }
            Err(e) => Err(format!("it cannot be reached ({e})")),
        };
        let mut answer = answer.unwrap_or_else(|reason| {
            tracing::warn!(upstream = %name, %reason, "no answer from the MCP server");
            jsonrpc::error(
                Some(id),
                ErrorCode::INTERNAL_ERROR,
                format!("no answer from the MCP server `{name}`: {reason}"),
            )
        });
        // A JSON answer is not seen by a watcher: the decision goes in here
        // (an error answer, the upstream's or ours, has no `_meta`).
        allowed.decision.add_to_response(&mut answer);
        let failed = jsonrpc::call_failed(&answer);
        self.record(allowed, failed, Some(&answer));
        ok(answer)
    }

    /// Answers a request an upstream sent while working on a call: `ping`
    /// with an empty result, anything else (sampling, elicitation, roots)
    /// with an error, since the merged endpoint relays nothing from the
    /// upstreams to the client but their answers and notifications.
    /// `headers` are those of the proxy's session with `upstream`.
    pub(super) fn refuse(&self, upstream: &Arc<Upstream>, headers: &HeaderMap, request: &Value) {
        let Some(id) = request.get("id") else {
            return;
        };
        let answer = if request.get("method").and_then(Value::as_str) == Some("ping") {
            jsonrpc::result(id, json!({}))
        } else {
            jsonrpc::error(
                Some(id),
                ErrorCode::METHOD_NOT_FOUND,
                "requests from the server are not relayed by Mandate's merged endpoint /mcp; connect the client to /NAME/mcp",
            )
        };
        let request = self
            .forward(
                upstream,
                &Method::POST,
                headers,
                Some(Bytes::from(answer.to_string())),
            )
            .timeout(LIST_TIMEOUT);
        let name = upstream.spec.name.clone();
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                tracing::debug!(upstream = %name, error = %e, "cannot answer the MCP server's request");
            }
        });
    }
}

/// Whether the client takes an SSE stream as the answer to its POST.
fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}
