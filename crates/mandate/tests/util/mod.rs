//! Harness for end-to-end tests: runs the real `mandate serve` binary as a
//! user would, learns its port from the JSON log, and talks HTTP to it.
//!
//! Every server gets its own working directory (a tempdir), an environment
//! without inherited `MANDATE_*` variables, and a stderr reader thread that
//! keeps the pipe drained and the lines for assertions. The child is killed
//! when its [`Server`] is dropped.

// Not every test binary uses every helper; tests may panic and index freely.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub mod mcp;
pub mod tasks;
pub mod web;

/// How long a server may take to start listening (or a failing start to exit).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The message `mandate serve` logs once it accepts connections.
const LISTENING: &str = "mandate is listening";

/// The example pack in the repository (the one `serve` seeds).
pub fn example_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes `text` to `path` atomically (a hidden temp file, then a rename), so
/// a polling reader never sees half a file. Hidden files are not policies.
pub fn write_atomic(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The token that `approvals token` or `mcp client-token` printed (TOML
/// output: the token is the commented second line).
pub fn printed_token(toml: &str) -> String {
    toml.lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no token in: {toml}"))
        .trim_start_matches('#')
        .trim()
        .to_owned()
}

/// Calls `probe` until it returns `Some`, or panics after `timeout` with `what`
/// and the last value seen.
pub fn poll_until<T, L: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, L>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// A way to start `mandate`: arguments, environment, working directory.
#[derive(Debug)]
pub struct Launch {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Working directory of the child; relative paths land here.
    workdir: TempDir,
}

impl Launch {
    /// `mandate serve --listen 127.0.0.1:0 --data-dir DATA_DIR --log-format json`.
    pub fn serve(data_dir: &Path) -> Self {
        Self::bare()
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
    }

    /// `mandate serve` and nothing else (settings come from elsewhere).
    pub fn bare() -> Self {
        Self {
            args: vec!["serve".into()],
            env: Vec::new(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        for a in args {
            self.args.push(a.as_ref().to_owned());
        }
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    fn spawn(&self) -> (Child, Logs) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MANDATE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        (child, Logs::drain(stderr))
    }

    /// Starts the server and waits until it listens; panics with its stderr
    /// if it does not within [`STARTUP_TIMEOUT`].
    pub fn start(self) -> Server {
        let (mut child, logs) = self.spawn();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match logs.fresh.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_address(&line) {
                        break addr;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mandate did not start listening within {STARTUP_TIMEOUT:?} ({:?}); stderr:\n{}",
                        self.args,
                        logs.text()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "mandate exited before listening ({status:?}, {:?}); stderr:\n{}",
                        self.args,
                        logs.text()
                    );
                }
            }
        };
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Server {
            child,
            addr,
            logs,
            client,
            _launch: self,
        }
    }

    /// Runs a start that is expected to fail: waits (bounded) for the exit and
    /// returns its status and stderr. Panics if the server starts listening.
    pub fn run_to_exit(self) -> (ExitStatus, String) {
        let (mut child, logs) = self.spawn();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline || logs.lines().iter().any(|l| is_listening(l)) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mandate was expected to exit but is still running ({:?}); stderr:\n{}",
                    self.args,
                    logs.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        logs.finish();
        (status, logs.text())
    }
}

fn is_listening(line: &str) -> bool {
    listening_address(line).is_some()
}

/// The address of a JSON "mandate is listening" log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != LISTENING {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

/// A child's stderr, read line by line in the background.
#[derive(Debug)]
struct Logs {
    all: Arc<Mutex<Vec<String>>>,
    fresh: Receiver<String>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Logs {
    fn drain(stderr: impl std::io::Read + Send + 'static) -> Self {
        let all = Arc::new(Mutex::new(Vec::new()));
        let (tx, fresh) = mpsc::channel();
        let sink = Arc::clone(&all);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                // Nobody listens once the server is up; that is fine.
                let _ = tx.send(line);
            }
        });
        Self {
            all,
            fresh,
            reader: Mutex::new(Some(reader)),
        }
    }

    /// Waits for the reader to reach end of file (the child has exited).
    fn finish(&self) {
        if let Some(reader) = self.reader.lock().unwrap().take() {
            let _ = reader.join();
        }
    }

    fn lines(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// One HTTP answer, read in full.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// A response header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}: {}", self.status, self.body))
    }

    /// Asserts a 200 decision and returns it.
    pub fn decision(&self) -> Value {
        assert_eq!(self.status, 200, "expected a decision, got: {}", self.body);
        self.json()
    }

    /// Asserts an API error `{"error": code, "message": ...}` with `status`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "error content type: {:?}",
            self.content_type
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "message"], "body: {v}");
        assert_eq!(v["error"], code, "body: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "empty message: {v}"
        );
    }
}

/// A running `mandate serve`, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
    logs: Logs,
    client: reqwest::blocking::Client,
    /// Keeps the working directory alive as long as the server.
    _launch: Launch,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL, as a crash or an OOM kill would (no
    /// shutdown code runs), waits for it, and returns its whole stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.logs.finish();
        self.logs.text()
    }

    /// Stops the server gracefully (SIGTERM, as a service manager would),
    /// waits for it to exit (bounded by [`STARTUP_TIMEOUT`]), and returns its
    /// exit status and whole stderr. Runs `kill -TERM PID` (Unix).
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill`: {e}"));
        assert!(sent.success(), "`kill -TERM` failed: {sent:?}");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mandate did not exit within {STARTUP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.logs.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.logs.finish();
        (status, self.logs.text())
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The stderr lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// The `fields.message` of every JSON log line so far.
    pub fn log_messages(&self) -> Vec<String> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Reply {
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("request failed: {e}; stderr:\n{}", self.logs.text()));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response.headers().clone();
        let body = response.text().unwrap();
        Reply {
            status,
            content_type,
            body,
            headers,
        }
    }

    /// Any method on any path, without a body, with one header.
    pub fn send_with_header(
        &self,
        method: reqwest::Method,
        path: &str,
        (name, value): (&str, &str),
    ) -> Reply {
        self.send(
            self.client
                .request(method, self.url(path))
                .header(name, value),
        )
    }

    /// Any method on any path, with `Authorization: Bearer TOKEN` if a
    /// token is given and a JSON body if one is given.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        self.send(request)
    }

    /// `POST /v1/decide` with a raw body and, if given, a content type.
    pub fn decide_raw(&self, body: impl Into<Vec<u8>>, content_type: Option<&str>) -> Reply {
        let mut request = self.client.post(self.url("/v1/decide")).body(body.into());
        if let Some(ct) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(request)
    }

    /// `POST /v1/decide` with a JSON body.
    pub fn decide(&self, request: &Value) -> Reply {
        self.decide_raw(request.to_string(), Some("application/json"))
    }

    /// `POST PATH` with a raw body, a content type if given, and extra
    /// headers.
    pub fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body.into());
        if let Some(ct) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    /// Any method on any path, without a body.
    pub fn request(&self, method: reqwest::Method, path: &str) -> Reply {
        self.send(self.client.request(method, self.url(path)))
    }

    /// `GET PATH`.
    pub fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path)
    }

    /// `GET /v1/health` as JSON (asserting 200).
    pub fn health(&self) -> Value {
        let reply = self.get("/v1/health");
        assert_eq!(reply.status, 200, "health: {}", reply.body);
        reply.json()
    }

    /// `GET /metrics` (asserting 200).
    pub fn metrics(&self) -> String {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "metrics: {}", reply.body);
        reply.body
    }
}

/// The value of one series in a Prometheus text exposition, such as
/// `mandate_decisions_total{decision="allow"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// RFC 7396 merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (key, value) in p {
                if value.is_null() {
                    t.remove(key);
                } else {
                    merge(t.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => {
            if let Some(p) = patch.as_object() {
                *target = Value::Object(serde_json::Map::new());
                merge(target, &Value::Object(p.clone()));
            } else {
                *target = patch.clone();
            }
        }
    }
}

/// The mail assistant's call from `examples/policies/tests/mailer.json` (a
/// declared read-only, closed-world tool: allowed by the example pack), with
/// `patch` merged in. No `context.time`: the server sets it.
pub fn mailer(patch: &Value) -> Value {
    let mut request = json!({
        "principal": { "id": "spiffe://example.org/agent/mailer", "on_behalf_of": "alice@example.com" },
        "action": {
            "server": "mail",
            "tool": "read_inbox",
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        "context": {
            "task": {
                "id": "task-1",
                "intent": "answer customer questions about their orders",
                "tools": ["read_inbox", "send_email", "delete_email", "fetch_url", "draft_reply"],
                "params": { "allowed_recipients": ["carol@example.com", "dave@example.com"] }
            }
        }
    });
    merge(&mut request, patch);
    request
}

/// Annotations of the example's `send_email` (outbound, not destructive).
pub fn send_email(to: &str) -> Value {
    mailer(&json!({
        "action": {
            "tool": "send_email",
            "annotations": { "readOnlyHint": false, "destructiveHint": false, "openWorldHint": true }
        },
        "arguments": { "to": to, "subject": "Your order", "body": "It shipped." }
    }))
}

/// A validator for `schema` (a fragment of the OpenAPI document `doc`, such as
/// `{"$ref": "#/components/schemas/Health"}`), with the document's components
/// in scope. OpenAPI 3.1 schemas are JSON Schema draft 2020-12.
pub fn openapi_validator(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
) -> jsonschema::Validator {
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "not OpenAPI 3.1: {}",
        doc["openapi"]
    );
    assert!(schema.is_object(), "no schema: {schema}");
    let root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": doc["components"],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("invalid schema {schema}: {e}"))
}
