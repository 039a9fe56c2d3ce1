//! The stdio wrapper: an MCP server to its client (on the client's stdin
//! and stdout) that runs the real server as a child process and relays
//! every message between them, deciding each `tools/call` first.
//!
//! The relay works on JSON-RPC messages, not on MCP's typed methods: a
//! message the gateway does not intercept is written on as it was read, so
//! every method, capability, notification and extension (progress,
//! cancellation, resources, prompts, sampling, elicitation, roots, and
//! whatever the protocol adds next) passes untouched in both directions.
//! Intercepted are:
//!
//! * `tools/call` (client to server): checked, decided, and forwarded only
//!   when allowed; otherwise answered with a tool error;
//! * the responses to `tools/list`: their annotations are learned, and with
//!   `hide_denied_tools` the tools the task may never call are removed;
//! * the response to an allowed `tools/call`: its outcome is recorded, and
//!   the decision is added to its result's `_meta` ([`crate::meta`]);
//! * `notifications/cancelled` for a call still being decided: the call is
//!   dropped, and the server never sees either;
//! * `initialize`'s response, for the server's name (unless `--name`).
//!
//! Malformed input from the client is answered with a JSON-RPC error when it
//! has an id (and with id `null` when it is not even JSON); malformed input
//! from the server is logged and dropped. Nothing a peer sends can make the
//! gateway panic or forward an unchecked `tools/call`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::ErrorCode;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

mod merged;

pub use merged::wrap_servers;

use crate::catalog::{self, Catalog, Lookup};
use crate::frame::{Frame, read_frame, write_frame};
use crate::jsonrpc::{self, IdKey, Message};
use crate::pep::{Allowed, Gate, Pep, Session};

/// How long the gateway waits for its own `tools/list` (to learn a tool's
/// annotations) before deciding without them.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit once its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct WrapOptions {
    /// The server's program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the server's environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// The server's name in decisions (`action.server`), which must follow
    /// the server-name grammar (`mandate_core::names::server`; decisions
    /// on any other name are refused); `None`: derived from the name the
    /// server gives in its `initialize` answer.
    pub name: Option<String>,
    /// The bound on one message, either way.
    pub max_message_bytes: usize,
    /// What the client's names of this server's tools start with (`fs__`
    /// behind a merged endpoint; empty when the client sees the server's
    /// own names): a deny's text names the tool as the client called it.
    pub tool_prefix: String,
}

/// Why the wrapper stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WrapError {
    /// The server could not be started.
    #[error("cannot start the MCP server `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing a stream failed.
    #[error("MCP stdio relay: {0}")]
    Io(#[from] std::io::Error),
}

/// A request the client sent upstream, awaiting its response.
#[derive(Debug)]
enum Pending {
    Initialize,
    ToolsList { first_page: bool },
    ToolsCall(Allowed),
    Other,
}

struct Relay {
    pep: Arc<Pep>,
    session: Session,
    name: Mutex<Option<String>>,
    catalog: Catalog,
    /// Client requests forwarded upstream.
    pending: Mutex<HashMap<IdKey, Pending>>,
    /// Requests the server sent the client, awaiting the client's answer.
    server_pending: Mutex<HashSet<IdKey>>,
    /// The gateway's own requests to the server.
    internal: Mutex<HashMap<IdKey, oneshot::Sender<Value>>>,
    internal_prefix: String,
    next_internal: AtomicU64,
    tool_prefix: String,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
    to_server: mpsc::UnboundedSender<Vec<u8>>,
    max: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `options.program` and relays between it and the client on
/// `client_in` / `client_out` until the client closes its input (then the
/// server's stdin is closed and the server given a moment to exit) or the
/// server exits. Returns the server's exit status.
pub async fn wrap<R, W>(
    pep: Arc<Pep>,
    options: WrapOptions,
    client_in: R,
    client_out: W,
) -> Result<ExitStatus, WrapError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut child = Command::new(&options.program)
        .args(&options.args)
        .envs(&options.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| WrapError::Spawn {
            program: options.program.to_string_lossy().into_owned(),
            source,
        })?;
    let (Some(mut server_in), Some(server_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(WrapError::Io(std::io::Error::other(
            "the server's pipes are missing",
        )));
    };

    let (to_client, mut client_queue) = mpsc::unbounded_channel::<Vec<u8>>();
    let (to_server, mut server_queue) = mpsc::unbounded_channel::<Vec<u8>>();
    let relay = Arc::new(Relay {
        pep,
        session: Session::default(),
        name: Mutex::new(options.name.clone()),
        catalog: Catalog::default(),
        pending: Mutex::default(),
        server_pending: Mutex::default(),
        internal: Mutex::default(),
        internal_prefix: format!("mandate-{}-", uuid::Uuid::new_v4()),
        next_internal: AtomicU64::new(0),
        tool_prefix: options.tool_prefix.clone(),
        to_client,
        to_server,
        max: options.max_message_bytes,
    });

    // Writers: one task per direction, so that no reader ever blocks on the
    // other side's pipe.
    let client_writer = tokio::spawn(async move {
        let mut out = client_out;
        while let Some(message) = client_queue.recv().await {
            if write_frame(&mut out, &message).await.is_err() {
                break;
            }
        }
    });
    let server_writer = tokio::spawn(async move {
        while let Some(message) = server_queue.recv().await {
            if message.is_empty() {
                break;
            }
            if write_frame(&mut server_in, &message).await.is_err() {
                break;
            }
        }
        // Dropping the pipe closes the server's stdin: its signal to exit.
    });

    let from_server = {
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(server_out);
            loop {
                match read_frame(&mut reader, relay.max).await {
                    Ok(Frame::Line(line)) => relay.from_server(line).await,
                    Ok(Frame::TooLong) => {
                        tracing::warn!(
                            max = relay.max,
                            "the MCP server sent a message over the size bound; dropped"
                        );
                    }
                    Ok(Frame::End) | Err(_) => break,
                }
            }
        })
    };
    let from_client = {
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(client_in);
            loop {
                match read_frame(&mut reader, relay.max).await {
                    Ok(Frame::Line(line)) => relay.from_client(line),
                    Ok(Frame::TooLong) => relay.answer(jsonrpc::error(
                        None,
                        ErrorCode::INVALID_REQUEST,
                        format!("the message is larger than {} bytes", relay.max),
                    )),
                    Ok(Frame::End) | Err(_) => break,
                }
            }
        })
    };

    let mut from_client = from_client;
    let mut from_server = from_server;
    let status = tokio::select! {
        _ = &mut from_client => {
            // The client is gone: once what it sent is written, close the
            // server's stdin (an empty message is the writer's signal) and
            // let the server exit.
            let _ = relay.to_server.send(Vec::new());
            let _ = tokio::time::timeout(EXIT_GRACE, server_writer).await;
            match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    tracing::warn!("the MCP server did not exit after its stdin closed; killing it");
                    child.kill().await?;
                    child.wait().await?
                }
            }
        }
        _ = &mut from_server => {
            relay.fail_pending("the MCP server closed its output (it exited)");
            child.wait().await?
        }
    };
    from_client.abort();
    from_server.abort();
    // Let the last answers reach the client.
    drop(relay);
    let _ = tokio::time::timeout(Duration::from_secs(2), client_writer).await;
    Ok(status)
}

/// The server name decisions use for a server that named itself `name` in
/// its `initialize` answer (`serverInfo.name`, free text such as
/// `example-servers/everything` or `GitHub MCP Server`): lowercased, with
/// every character the server-name grammar refuses replaced by `-`, at
/// most 64 bytes. An operator who writes policies on the name sets it with
/// `--name`, which must already follow the grammar.
fn server_name(name: &str) -> String {
    let derived: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(mandate_core::names::MAX_SERVER)
        .collect();
    if derived.trim_matches('-').is_empty() {
        "mcp".to_owned()
    } else {
        derived
    }
}

impl Relay {
    fn answer(&self, message: Value) {
        let _ = self.to_client.send(message.to_string().into_bytes());
    }

    fn server(&self) -> String {
        lock(&self.name).clone().unwrap_or_else(|| "mcp".to_owned())
    }

    /// One message from the client.
    fn from_client(self: &Arc<Self>, line: Vec<u8>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message: Value = match jsonrpc::parse_client(&line) {
            Ok(m) => m,
            Err(e) => {
                return self.answer(jsonrpc::error(
                    None,
                    ErrorCode::PARSE_ERROR,
                    format!("the message is not valid JSON: {e}"),
                ));
            }
        };
        match jsonrpc::classify(&message) {
            // A notification gets no answer, not even an error.
            Message::Invalid { id: None, reason } if message.get("method").is_some() => {
                tracing::warn!(
                    reason,
                    "the MCP client sent a notification that is not one; dropped"
                );
            }
            Message::Invalid { id, reason } => {
                self.answer(jsonrpc::error(
                    id.as_ref(),
                    ErrorCode::INVALID_REQUEST,
                    reason,
                ));
            }
            Message::Request { id, method } => {
                let key = IdKey::of(&id);
                // Both maps under the `pending` lock (taken first, as where
                // a decided call moves from one to the other), so that an id
                // in transit is never missed.
                let in_progress = {
                    let pending = lock(&self.pending);
                    pending.contains_key(&key) || self.session.is_deciding(&key)
                };
                if in_progress {
                    return self.answer(jsonrpc::error(
                        Some(&id),
                        ErrorCode::INVALID_REQUEST,
                        "a request with this id is already in progress",
                    ));
                }
                match method.as_str() {
                    jsonrpc::TOOLS_CALL => self.tools_call(id, key, message),
                    jsonrpc::TOOLS_LIST => {
                        let first_page = catalog::is_first_page(&message);
                        lock(&self.pending).insert(key, Pending::ToolsList { first_page });
                        let _ = self.to_server.send(line);
                    }
                    "initialize" => {
                        lock(&self.pending).insert(key, Pending::Initialize);
                        let _ = self.to_server.send(line);
                    }
                    _ => {
                        lock(&self.pending).insert(key, Pending::Other);
                        let _ = self.to_server.send(line);
                    }
                }
            }
            Message::Notification { method } => {
                // Under the `pending` lock: a call being moved from deciding
                // to the server is queued before this cancellation is.
                let _pending = lock(&self.pending);
                if method == jsonrpc::CANCELLED
                    && let Some(request) = jsonrpc::cancelled_request(&message)
                    && self.session.cancel_deciding(&IdKey::of(request))
                {
                    // The server never saw the call: it is dropped, and
                    // this too.
                    return;
                }
                let _ = self.to_server.send(line);
            }
            Message::Response { id } => {
                if lock(&self.server_pending).remove(&IdKey::of(&id)) {
                    let _ = self.to_server.send(line);
                } else {
                    tracing::warn!(id = %id, "the MCP client answered a request the server never sent; dropped");
                }
            }
        }
    }

    /// A `tools/call` from the client: checked, then decided in its own
    /// task (other messages keep flowing meanwhile).
    fn tools_call(self: &Arc<Self>, id: Value, key: IdKey, message: Value) {
        let call = match jsonrpc::tool_call(&message) {
            Ok(call) => call,
            Err(reason) => {
                return self.answer(jsonrpc::error(Some(&id), ErrorCode::INVALID_PARAMS, reason));
            }
        };
        let cancellation = self.session.start_deciding(key.clone());
        let relay = self.clone();
        tokio::spawn(async move {
            let decision = async {
                let server = relay.server();
                let upstream = relay.annotations(&call.name).await;
                let annotations = relay
                    .pep
                    .annotations(&server, &call.name, upstream.as_ref());
                let shown = format!("{}{}", relay.tool_prefix, call.name);
                relay
                    .pep
                    .decide(
                        &server,
                        &call.name,
                        &shown,
                        annotations,
                        call.arguments,
                        &call.trace,
                    )
                    .await
            };
            // A cancellation ends the decision at once, approval wait
            // included: the client has stopped waiting for the answer.
            let gate = cancellation.run_until_cancelled(decision).await;
            // From deciding to pending, and onto the server's queue, in one
            // step under the `pending` lock: no duplicate id or cancellation
            // slips in between.
            let mut pending = lock(&relay.pending);
            let cancelled = relay.session.finish_deciding(&key);
            let Some(gate) = gate.filter(|_| !cancelled) else {
                tracing::debug!(id = %id, "tools/call cancelled while it was being decided; dropped");
                return;
            };
            match gate {
                Gate::Allow(allowed) => {
                    // What was checked is what goes upstream: the parsed
                    // message, not the bytes (no duplicate keys that another
                    // parser could read differently), with the call's trace
                    // context when tracing.
                    let mut message = message;
                    allowed.propagate_into(&mut message);
                    pending.insert(key, Pending::ToolsCall(allowed));
                    let _ = relay.to_server.send(message.to_string().into_bytes());
                }
                Gate::Deny(denied) => {
                    drop(pending);
                    relay.answer(jsonrpc::result(&id, denied.result()));
                }
            }
        });
    }

    /// The annotations `tool` was listed with; lists the server's tools
    /// first if the tool has not been seen.
    async fn annotations(&self, tool: &str) -> Option<Value> {
        match self.catalog.lookup(tool) {
            Lookup::Listed(annotations) => return annotations,
            Lookup::Unlisted => return None,
            Lookup::Unknown => {}
        }
        // A listing cut short leaves the tool unknown: it is decided
        // without annotations (the MCP defaults).
        let _ = catalog::list_pages(
            |_, params| async move {
                let response = self.ask_server(jsonrpc::TOOLS_LIST, params).await;
                response.and_then(|r| r.get("result").cloned()).ok_or(())
            },
            |result, last| self.catalog.learn(&result, last),
        )
        .await;
        match self.catalog.lookup(tool) {
            Lookup::Listed(annotations) => annotations,
            _ => None,
        }
    }

    /// A request of the gateway's own to the server; `None` on timeout.
    async fn ask_server(&self, method: &str, params: Value) -> Option<Value> {
        let n = self.next_internal.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("{}{n}", self.internal_prefix));
        let (tx, rx) = oneshot::channel();
        lock(&self.internal).insert(IdKey::of(&id), tx);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let _ = self.to_server.send(request.to_string().into_bytes());
        let answer = tokio::time::timeout(LIST_TIMEOUT, rx).await.ok()?.ok();
        lock(&self.internal).remove(&IdKey::of(&id));
        answer
    }

    /// One message from the server.
    async fn from_server(self: &Arc<Self>, line: Vec<u8>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message: Value = match serde_json::from_slice(&line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the MCP server sent a message that is not JSON; dropped");
                return;
            }
        };
        match jsonrpc::classify(&message) {
            Message::Response { id } => self.server_response(id, line, message).await,
            Message::Request { id, .. } => {
                lock(&self.server_pending).insert(IdKey::of(&id));
                let _ = self.to_client.send(line);
            }
            Message::Notification { method } => {
                if method == "notifications/tools/list_changed" {
                    self.catalog.invalidate();
                }
                let _ = self.to_client.send(line);
            }
            Message::Invalid { reason, .. } => {
                tracing::warn!(
                    reason,
                    "the MCP server sent an invalid JSON-RPC message; dropped"
                );
            }
        }
    }

    async fn server_response(self: &Arc<Self>, id: Value, line: Vec<u8>, mut message: Value) {
        let key = IdKey::of(&id);
        if let Some(waiter) = lock(&self.internal).remove(&key) {
            let _ = waiter.send(message);
            return;
        }
        let pending = lock(&self.pending).remove(&key);
        match pending {
            None => {
                tracing::warn!(id = %id, "the MCP server answered a request the client never sent; dropped");
            }
            Some(Pending::Other) => {
                let _ = self.to_client.send(line);
            }
            Some(Pending::Initialize) => {
                let mut name = lock(&self.name);
                if name.is_none()
                    && let Some(n) = message
                        .pointer("/result/serverInfo/name")
                        .and_then(Value::as_str)
                {
                    *name = Some(server_name(n));
                }
                drop(name);
                let _ = self.to_client.send(line);
            }
            Some(Pending::ToolsList { first_page }) => {
                let server = self.server();
                let changed = match message.get_mut("result") {
                    Some(result) => {
                        self.catalog
                            .learn(result, first_page && !catalog::has_more(result));
                        catalog::filter_tools(&self.pep, &server, result, |_| None)
                    }
                    None => false,
                };
                let bytes = if changed {
                    message.to_string().into_bytes()
                } else {
                    line
                };
                let _ = self.to_client.send(bytes);
            }
            Some(Pending::ToolsCall(allowed)) => {
                let failed = jsonrpc::call_failed(&message);
                // The client learns which decision let the call through
                // (behind a merged endpoint too: its front passes this on).
                let bytes = if allowed.decision.add_to_response(&mut message) {
                    message.to_string().into_bytes()
                } else {
                    line
                };
                let _ = self.to_client.send(bytes);
                self.pep.record_result(allowed, failed, Some(&message));
            }
        }
    }

    /// Answers every request still waiting for the server with an error.
    fn fail_pending(&self, reason: &str) {
        let pending: Vec<IdKey> = lock(&self.pending).drain().map(|(k, _)| k).collect();
        for key in pending {
            if let Some(id) = key.id() {
                self.answer(jsonrpc::error(Some(&id), ErrorCode::INTERNAL_ERROR, reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn a_server_named_in_its_answer_gets_a_name_of_the_grammar() {
        for (given, derived) in [
            ("secure-filesystem-server", "secure-filesystem-server"),
            ("example-servers/everything", "example-servers-everything"),
            ("GitHub MCP Server", "github-mcp-server"),
            ("b\u{430}nk", "b-nk"),
            ("\u{200b}", "mcp"),
            ("", "mcp"),
        ] {
            assert_eq!(server_name(given), derived, "{given:?}");
            assert!(mandate_core::names::server(&server_name(given)).is_ok());
        }
        assert_eq!(server_name(&"x".repeat(100)).len(), 64);
    }
}
