//! Several stdio MCP servers behind one stdio endpoint (`mandate mcp wrap`
//! with `[[servers]]`): one MCP server to the client, with the tools of
//! every server named `NAME__tool` ([`crate::merge`]).
//!
//! Each server runs behind a relay of its own ([`wrap`]), exactly as a
//! `mandate mcp wrap -- CMD` of it would, connected to this front by an
//! in-process pipe: every `tools/call` is decided there (as server `NAME`,
//! tool `tool`), annotations are learned there, hidden tools removed there.
//! The front only merges and routes:
//!
//! * `initialize` opens every server (the client's version when all take
//!   it, else the oldest answered) and answers as `mandate-mcp-wrap` with
//!   the capabilities `{"tools": {"listChanged": false}}`;
//!   `notifications/initialized` goes to every server, `ping` is answered;
//! * `tools/list` is every server's whole listing, renamed;
//! * `tools/call` of `NAME__tool` goes to `NAME`'s relay as `tool`, and its
//!   progress and log notifications come back; `notifications/cancelled`
//!   follows its call;
//! * anything else is `-32601` (resources and prompts need one wrap per
//!   server); requests a server sends (sampling, roots, elicitation) are
//!   answered with an error, as on the HTTP merged endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::ErrorCode;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::{EXIT_GRACE, LIST_TIMEOUT, WrapError, WrapOptions, lock, wrap};
use crate::catalog;
use crate::frame::{Frame, read_frame, write_frame};
use crate::jsonrpc::{self, IdKey, Message};
use crate::merge;
use crate::pep::Pep;

/// The buffer of the in-process pipe between the front and a relay.
const PIPE_BYTES: usize = 256 * 1024;
/// The protocol version asked of the servers when the client names none.
const DEFAULT_VERSION: &str = "2025-06-18";

/// One server behind the front.
struct Link {
    name: String,
    to_relay: mpsc::UnboundedSender<Vec<u8>>,
}

struct Front {
    links: Vec<Link>,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
    /// The front's own requests to the relays, by id.
    internal: Mutex<HashMap<IdKey, oneshot::Sender<Value>>>,
    /// Ids of the front's own requests start with it: a client's cannot.
    internal_prefix: String,
    next_internal: AtomicU64,
    /// The client's `tools/call`s sent to a relay and not answered yet.
    calls: Mutex<HashMap<IdKey, usize>>,
    max: usize,
}

/// Runs every server of `servers` behind its own relay and serves them to
/// the client on `client_in` / `client_out` as one MCP server, until the
/// client closes its input; then every server's stdin is closed and each is
/// given a moment to exit.
///
/// Every server's `name` must be set, valid and prefixable
/// ([`merge::prefixable`]); the config checks it.
pub async fn wrap_servers<R, W>(
    pep: Arc<Pep>,
    servers: Vec<WrapOptions>,
    client_in: R,
    client_out: W,
) -> Result<(), WrapError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = servers
        .iter()
        .map(|s| s.max_message_bytes)
        .max()
        .unwrap_or(crate::frame::DEFAULT_MAX_MESSAGE_BYTES);
    let (to_client, mut client_queue) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut links = Vec::new();
    let mut relays = Vec::new();
    let mut readers = Vec::new();
    for (index, mut options) in servers.into_iter().enumerate() {
        let name = options.name.clone().unwrap_or_default();
        options.tool_prefix = merge::prefix(&name);
        let (front_end, relay_end) = tokio::io::duplex(PIPE_BYTES);
        let (relay_in, relay_out) = tokio::io::split(relay_end);
        relays.push(tokio::spawn(wrap(
            pep.clone(),
            options,
            relay_in,
            relay_out,
        )));
        let (from_relay, mut to_relay_end) = tokio::io::split(front_end);
        let (to_relay, mut relay_queue) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(message) = relay_queue.recv().await {
                // An empty message is the signal to close (the client left).
                if message.is_empty() || write_frame(&mut to_relay_end, &message).await.is_err() {
                    break;
                }
            }
            // The relay's input ends (its server exits): a half of an
            // in-process pipe does not close it when dropped, so shut it.
            let _ = to_relay_end.shutdown().await;
        });
        links.push(Link { name, to_relay });
        readers.push((index, from_relay));
    }
    let front = Arc::new(Front {
        links,
        to_client,
        internal: Mutex::default(),
        internal_prefix: format!("mandate-front-{}-", uuid::Uuid::new_v4()),
        next_internal: AtomicU64::new(0),
        calls: Mutex::default(),
        max,
    });
    for (index, from_relay) in readers {
        let front = front.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(from_relay);
            while let Ok(Frame::Line(line)) = read_frame(&mut reader, front.max).await {
                front.on_relay_message(index, &line);
            }
            front.relay_ended(index);
        });
    }
    let client_writer = tokio::spawn(async move {
        let mut out = client_out;
        while let Some(message) = client_queue.recv().await {
            if write_frame(&mut out, &message).await.is_err() {
                break;
            }
        }
    });

    let mut reader = BufReader::new(client_in);
    loop {
        match read_frame(&mut reader, max).await {
            Ok(Frame::Line(line)) => front.on_client_message(&line),
            Ok(Frame::TooLong) => front.answer(jsonrpc::error(
                None,
                ErrorCode::INVALID_REQUEST,
                format!("the message is larger than {max} bytes"),
            )),
            Ok(Frame::End) | Err(_) => break,
        }
    }
    // The client is gone: closing the relays' input lets every server exit
    // (the readers still hold the front, so its senders stay alive).
    for link in &front.links {
        let _ = link.to_relay.send(Vec::new());
    }
    drop(front);
    for relay in relays {
        match tokio::time::timeout(EXIT_GRACE * 2, relay).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "an MCP server behind the wrap failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("an MCP server behind the wrap did not stop in time"),
        }
    }
    let _ = tokio::time::timeout(EXIT_GRACE, client_writer).await;
    Ok(())
}

impl Front {
    fn answer(&self, message: Value) {
        let _ = self.to_client.send(message.to_string().into_bytes());
    }

    fn send(&self, index: usize, message: &Value) {
        if let Some(link) = self.links.get(index) {
            let _ = link.to_relay.send(message.to_string().into_bytes());
        }
    }

    fn server_names(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|l| l.name.as_str())
    }

    fn on_client_message(self: &Arc<Self>, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message = match jsonrpc::parse_client(line) {
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
            Message::Invalid { id: None, reason } if message.get("method").is_some() => {
                tracing::warn!(reason, "the MCP client sent a notification that is not one; dropped");
            }
            Message::Invalid { id, reason } => {
                self.answer(jsonrpc::error(id.as_ref(), ErrorCode::INVALID_REQUEST, reason));
            }
            Message::Request { id, method } => match method.as_str() {
                "initialize" => {
                    let front = self.clone();
                    tokio::spawn(async move { front.initialize(&id, &message).await });
                }
                "ping" => self.answer(jsonrpc::result(&id, json!({}))),
                jsonrpc::TOOLS_LIST => {
                    let front = self.clone();
                    tokio::spawn(async move { front.list(&id).await });
                }
                jsonrpc::TOOLS_CALL => self.call(id, message),
                other => self.answer(jsonrpc::error(
                    Some(&id),
                    ErrorCode::METHOD_NOT_FOUND,
                    format!(
                        "`{other}` is not served here: this gateway merges the tools of several MCP servers; run one `mandate mcp wrap -- CMD` per server for its resources and prompts"
                    ),
                )),
            },
            Message::Notification { method } => match method.as_str() {
                "notifications/initialized" => {
                    for index in 0..self.links.len() {
                        self.send(index, &message);
                    }
                }
                jsonrpc::CANCELLED => {
                    let index = jsonrpc::cancelled_request(&message)
                        .and_then(|id| lock(&self.calls).get(&IdKey::of(id)).copied());
                    if let Some(index) = index {
                        self.send(index, &message);
                    }
                }
                _ => {}
            },
            // The front answers every request a server sends itself.
            Message::Response { id } => {
                tracing::debug!(id = %id, "the MCP client answered a request nobody sent; dropped");
            }
        }
    }

    /// A client's `tools/call` of `NAME__tool`: to `NAME`'s relay, which
    /// decides it, as a call of `tool`.
    fn call(&self, id: Value, mut message: Value) {
        let call = match jsonrpc::tool_call(&message) {
            Ok(call) => call,
            Err(reason) => {
                return self.answer(jsonrpc::error(Some(&id), ErrorCode::INVALID_PARAMS, reason));
            }
        };
        let Some((server, tool)) = merge::split(&call.name, self.server_names()) else {
            let servers: Vec<&str> = self.server_names().collect();
            return self.answer(jsonrpc::error(
                Some(&id),
                ErrorCode::INVALID_PARAMS,
                format!(
                    "unknown tool `{}`: tools here are named SERVER{}tool, and the servers are {}",
                    call.name,
                    merge::SEPARATOR,
                    servers.join(", ")
                ),
            ));
        };
        let Some(index) = self.links.iter().position(|l| l.name == server) else {
            return;
        };
        let tool = tool.to_owned();
        if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
            params.insert("name".to_owned(), Value::String(tool));
        }
        {
            let mut calls = lock(&self.calls);
            let key = IdKey::of(&id);
            if calls.contains_key(&key) {
                drop(calls);
                return self.answer(jsonrpc::error(
                    Some(&id),
                    ErrorCode::INVALID_REQUEST,
                    "a request with this id is already in progress",
                ));
            }
            calls.insert(key, index);
        }
        // What was checked is what goes on: the parsed message.
        self.send(index, &message);
    }

    /// Sends a request of the front's own to relay `index` and waits for
    /// its answer (the whole message).
    async fn ask(&self, index: usize, method: &str, params: Value) -> Result<Value, String> {
        let n = self.next_internal.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("{}{n}", self.internal_prefix));
        let (tx, rx) = oneshot::channel();
        lock(&self.internal).insert(IdKey::of(&id), tx);
        self.send(
            index,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        match tokio::time::timeout(LIST_TIMEOUT, rx).await {
            Ok(Ok(answer)) => match answer.get("error") {
                Some(error) => Err(format!("it answered {error}")),
                None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
            },
            Ok(Err(_)) => Err("it exited".to_owned()),
            Err(_) => {
                lock(&self.internal).remove(&IdKey::of(&id));
                Err(format!("no answer within {}s", LIST_TIMEOUT.as_secs()))
            }
        }
    }

    async fn initialize(&self, id: &Value, message: &Value) {
        let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
        let version = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERSION)
            .to_owned();
        let opened = futures_util::future::join_all(
            (0..self.links.len()).map(|index| self.ask(index, "initialize", params.clone())),
        )
        .await;
        let mut versions = Vec::new();
        let mut failures = Vec::new();
        for (link, answer) in self.links.iter().zip(opened) {
            match answer {
                Ok(result) => versions.push(
                    result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .unwrap_or(&version)
                        .to_owned(),
                ),
                Err(reason) => failures.push(format!("`{}`: {reason}", link.name)),
            }
        }
        if !failures.is_empty() {
            return self.answer(jsonrpc::error(
                Some(id),
                ErrorCode::INTERNAL_ERROR,
                format!(
                    "the MCP servers behind this wrap could not all be initialized ({})",
                    failures.join("; ")
                ),
            ));
        }
        let servers: Vec<&str> = self.server_names().collect();
        self.answer(jsonrpc::result(
            id,
            json!({
                "protocolVersion": merge::agreed_version(&version, versions.iter().map(String::as_str)),
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "mandate-mcp-wrap", "version": env!("CARGO_PKG_VERSION")},
                "instructions": format!(
                    "Tools of the MCP servers {}, named SERVER{}tool. Every call is authorized by Mandate.",
                    servers.join(", "),
                    merge::SEPARATOR
                ),
            }),
        ));
    }

    /// Every server's whole listing, renamed; the relays learned the
    /// annotations and removed the hidden tools on the way.
    async fn list(&self, id: &Value) {
        let listings =
            futures_util::future::join_all((0..self.links.len()).map(|i| self.list_one(i))).await;
        let mut tools = Vec::new();
        for (link, listing) in self.links.iter().zip(listings) {
            match listing {
                Ok(mut some) => tools.append(&mut some),
                Err(reason) => {
                    return self.answer(jsonrpc::error(
                        Some(id),
                        ErrorCode::INTERNAL_ERROR,
                        format!(
                            "the tools of the MCP server `{}` cannot be listed: {reason}",
                            link.name
                        ),
                    ));
                }
            }
        }
        self.answer(jsonrpc::result(id, json!({ "tools": tools })));
    }

    async fn list_one(&self, index: usize) -> Result<Vec<Value>, String> {
        let prefix = self
            .links
            .get(index)
            .map(|l| merge::prefix(&l.name))
            .unwrap_or_default();
        let mut tools = Vec::new();
        catalog::list_pages(
            |_, params| self.ask(index, jsonrpc::TOOLS_LIST, params),
            |mut result, _| {
                if let Some(Value::Array(page)) = result.get_mut("tools") {
                    for tool in page.iter_mut() {
                        if let Some(name) = tool.get("name").and_then(Value::as_str) {
                            let renamed = format!("{prefix}{name}");
                            tool["name"] = Value::String(renamed);
                        }
                    }
                    tools.append(page);
                }
            },
        )
        .await?;
        Ok(tools)
    }

    /// A message relay `index` sent: an answer (the front's own, or a
    /// call's), a notification of a call's progress, or a request of the
    /// server's, which the front answers.
    fn on_relay_message(&self, index: usize, line: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        match jsonrpc::classify(&message) {
            Message::Response { id } => {
                let key = IdKey::of(&id);
                if let Some(waiting) = lock(&self.internal).remove(&key) {
                    let _ = waiting.send(message);
                    return;
                }
                if lock(&self.calls).remove(&key).is_some() {
                    let _ = self.to_client.send(line.to_vec());
                }
            }
            Message::Notification { method } => {
                if matches!(
                    method.as_str(),
                    "notifications/progress" | "notifications/message"
                ) {
                    let _ = self.to_client.send(line.to_vec());
                }
            }
            Message::Request { id, method } => {
                let answer = if method == "ping" {
                    jsonrpc::result(&id, json!({}))
                } else {
                    jsonrpc::error(
                        Some(&id),
                        ErrorCode::METHOD_NOT_FOUND,
                        format!(
                            "`{method}` is not available: the client is behind a merged Mandate gateway"
                        ),
                    )
                };
                self.send(index, &answer);
            }
            Message::Invalid { .. } => {}
        }
    }

    /// Relay `index` stopped (its server exited): its calls in progress
    /// get an error, so that no client waits for them.
    fn relay_ended(&self, index: usize) {
        let name = self.links.get(index).map_or("", |l| l.name.as_str());
        let ended: Vec<IdKey> = {
            let mut calls = lock(&self.calls);
            let keys: Vec<IdKey> = calls
                .iter()
                .filter(|(_, i)| **i == index)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &keys {
                calls.remove(key);
            }
            keys
        };
        for key in ended {
            if let Some(id) = key.id() {
                self.answer(jsonrpc::error(
                    Some(&id),
                    ErrorCode::INTERNAL_ERROR,
                    format!("the MCP server `{name}` exited"),
                ));
            }
        }
    }
}
