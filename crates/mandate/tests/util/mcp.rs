//! Harness for the MCP gateway tests: real MCP peers from the registries
//! (the official Python and TypeScript SDK clients, the reference servers
//! `server-everything`, `server-filesystem` and `mcp-server-fetch`, and
//! `supergateway`, which serves a stdio server over streamable HTTP),
//! installed by `scripts/test` (`npm ci --prefix tests/mcp`; the Python
//! packages of `tests/mcp/requirements.txt` into the virtual environment
//! `<target>/test-venv`). A missing package fails the test with the set-up
//! command; nothing skips.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::tasks::{Gateway, gateway_with, task_of};

/// How long one SDK client run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The agent of the tests.
pub const AGENT: &str = "spiffe://example.org/agent/files";

/// `tests/mcp` at the repository root.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp")
}

const SETUP: &str = "the MCP test peers are not installed: run `scripts/test` once from the \
repository root (it runs `npm ci --prefix tests/mcp` and installs tests/mcp/requirements.txt into \
the virtual environment <target>/test-venv, where the tests find it)";

/// Panics (fails the test) unless the npm and pip packages are installed.
pub fn require_peers() {
    let modules = peers_dir().join("node_modules/@modelcontextprotocol");
    for package in ["sdk", "server-everything", "server-filesystem"] {
        assert!(
            modules.join(package).join("package.json").is_file(),
            "{SETUP} (missing @modelcontextprotocol/{package})"
        );
    }
    let python = Command::new(python())
        .args(["-c", "import mcp"])
        .output()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run `{}`: {e})", python()));
    assert!(
        python.status.success(),
        "{SETUP} (python cannot import `mcp`: {})",
        String::from_utf8_lossy(&python.stderr)
    );
}

/// [`require_peers`], and the reference fetch server (`mcp-server-fetch`).
pub fn require_fetch_server() {
    require_peers();
    let python = Command::new(python())
        .args(["-c", "import mcp_server_fetch"])
        .output()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run `{}`: {e})", python()));
    assert!(
        python.status.success(),
        "{SETUP} (python cannot import `mcp_server_fetch`: {})",
        String::from_utf8_lossy(&python.stderr)
    );
}

/// The Python interpreter of the tests: `MANDATE_TEST_PYTHON`, else the
/// virtual environment `scripts/test` makes in the build directory
/// (`<target>/test-venv`, so `cargo test` finds it too). Without either the
/// test fails, saying how to make it; it never falls back to the system's
/// Python, whose packages are not the pinned ones.
pub fn python() -> String {
    if let Ok(python) = std::env::var("MANDATE_TEST_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python for the MCP tests: `{}` does not exist. Run `scripts/test` once from the \
         repository root: it makes that virtual environment and installs the pinned packages \
         (tests/mcp/requirements.txt, biscuit-python), after which `cargo test` finds it. Or set \
         MANDATE_TEST_PYTHON to a Python that has them.",
        venv.display()
    );
    venv.display().to_string()
}

/// The command that runs the filesystem server on `root`.
pub fn filesystem_server(root: &Path) -> Vec<String> {
    vec![
        "node".to_owned(),
        peers_dir()
            .join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
            .display()
            .to_string(),
        root.display().to_string(),
    ]
}

/// The command that runs the everything server over stdio.
pub fn everything_server() -> Vec<String> {
    vec![
        "node".to_owned(),
        everything_js().display().to_string(),
        "stdio".to_owned(),
    ]
}

fn everything_js() -> PathBuf {
    peers_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// A Mandate server deciding with the MCP test pack (`tests/mcp/policies`),
/// with an identity issuer so that tasks can be started.
pub fn mandate() -> Gateway {
    mandate_with_pack("policies")
}

/// The same with another pack of `tests/mcp` (such as `policies-taint`).
pub fn mandate_with_pack(pack: &str) -> Gateway {
    let pack = peers_dir().join(pack).canonicalize().unwrap();
    gateway_with(&format!("policies = {:?}", pack.display().to_string()))
}

/// A started task: its id and root credential.
pub struct Task {
    pub id: String,
    pub credential: String,
}

/// Starts a task of [`AGENT`] with `tools` (`server/tool`).
pub fn start_task(gateway: &Gateway, tools: &[&str]) -> Task {
    let started = gateway.start_task_of(AGENT, &task_of("tidy the notes folder", tools, 600));
    Task {
        id: started.task_id.into(),
        credential: started.credential,
    }
}

/// The wrap's tool catalog of [`filesystem_session`]: the listing reaches
/// the open world, so its output is untrusted.
pub const LISTING_OPEN_WORLD: &str = "[tools.\"list_directory\"]\nopen_world = true\n";

/// One agent session on the filesystem server under a task credential,
/// through `mandate mcp wrap` with `catalog` as its config: a read, a write
/// of a protected file, an allowed write, a listing (with
/// [`LISTING_OPEN_WORLD`], its result taints the session), a write after
/// it, and a tool the credential does not grant. `out` is the SDK client's
/// report; `files` holds `root`.
pub struct FilesystemSession {
    pub files: tempfile::TempDir,
    pub root: PathBuf,
    pub task: Task,
    pub out: Value,
}

/// Runs [`FilesystemSession`]'s calls with `sdk` through `gateway`.
pub fn filesystem_session(gateway: &Gateway, sdk: Sdk, catalog: &str) -> FilesystemSession {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "hello notes\n").unwrap();
    std::fs::write(root.join("protected.txt"), "keep me\n").unwrap();
    let task = start_task(
        gateway,
        &["fs/read_text_file", "fs/write_file", "fs/list_directory"],
    );
    let credential_file = files.path().join("credential");
    std::fs::write(&credential_file, &task.credential).unwrap();
    let config = files.path().join("mcp.toml");
    std::fs::write(&config, catalog).unwrap();
    let path = |name: &str| root.join(name).display().to_string();
    let plan = json!([
        {"op": "call", "tool": "read_text_file", "arguments": {"path": path("notes.txt")}},
        {"op": "call", "tool": "write_file", "arguments": {"path": path("protected.txt"), "content": "pwned"}},
        {"op": "call", "tool": "write_file", "arguments": {"path": path("new.txt"), "content": "written"}},
        {"op": "call", "tool": "list_directory", "arguments": {"path": root.display().to_string()}},
        {"op": "call", "tool": "write_file", "arguments": {"path": path("late.txt"), "content": "too late"}},
        {"op": "call", "tool": "get_file_info", "arguments": {"path": path("notes.txt")}},
    ]);
    let command = wrap_command(
        gateway,
        &[
            "--name",
            "fs",
            "--credential-file",
            credential_file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &filesystem_server(&root),
    );
    let out = run_stdio(sdk, &plan, &command);
    FilesystemSession {
        files,
        root,
        task,
        out,
    }
}

/// `mandate mcp wrap` with `args`, then `-- server…`.
pub fn wrap_command(gateway: &Gateway, args: &[&str], server: &[String]) -> Vec<String> {
    let mut command = vec![
        env!("CARGO_BIN_EXE_mandate").to_owned(),
        "mcp".to_owned(),
        "wrap".to_owned(),
        "--gateway".to_owned(),
        format!("http://{}", gateway.server.addr()),
    ];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    command.push("--".to_owned());
    command.extend(server.iter().cloned());
    command
}

/// Which SDK client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// `mcp` on PyPI.
    Python,
    /// `@modelcontextprotocol/sdk` on npm.
    Node,
}

impl Sdk {
    pub const BOTH: [Sdk; 2] = [Sdk::Python, Sdk::Node];
}

/// Runs the SDK client on `plan` against a stdio server command.
pub fn run_stdio(sdk: Sdk, plan: &Value, command: &[String]) -> Value {
    let mut args = vec![plan.to_string(), "stdio".to_owned()];
    args.extend(command.iter().cloned());
    run_client(sdk, &args, &json!({}))
}

/// Runs the Python SDK client on a `sessions` plan (`tests/mcp/client.py`):
/// an agent that opens, uses and closes several named MCP sessions itself,
/// within `timeout`. The client's stderr (where the stdio servers' own
/// stderr goes: the gateway's complaints) is added as `"stderr"`.
pub fn run_sessions(plan: &Value, timeout: Duration) -> Value {
    let (mut out, stderr) = run_client_logged(
        Sdk::Python,
        &[plan.to_string(), "sessions".to_owned()],
        &json!({}),
        timeout,
    );
    out["stderr"] = Value::String(stderr);
    out
}

/// Runs the SDK client on `plan` against a streamable HTTP endpoint.
pub fn run_http(sdk: Sdk, plan: &Value, url: &str) -> Value {
    run_http_with(sdk, plan, url, &json!({}))
}

/// The same, adding `headers` (a JSON object) to every request.
pub fn run_http_with(sdk: Sdk, plan: &Value, url: &str, headers: &Value) -> Value {
    run_client(
        sdk,
        &[plan.to_string(), "http".to_owned(), url.to_owned()],
        headers,
    )
}

fn run_client(sdk: Sdk, args: &[String], headers: &Value) -> Value {
    run_client_logged(sdk, args, headers, CLIENT_TIMEOUT).0
}

/// The client's result and its stderr.
fn run_client_logged(
    sdk: Sdk,
    args: &[String],
    headers: &Value,
    timeout: Duration,
) -> (Value, String) {
    let (program, script) = match sdk {
        Sdk::Python => (python(), "client.py"),
        Sdk::Node => ("node".to_owned(), "client.mjs"),
    };
    let mut child = Command::new(&program)
        .arg(peers_dir().join(script))
        .args(args)
        .env("MCP_TEST_HEADERS", headers.to_string())
        .current_dir(peers_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run `{program}`: {e})"));
    let (stdout, stderr) = wait_output(&mut child, timeout, &format!("the {sdk:?} client"));
    let line = stdout.lines().last().unwrap_or("");
    let out = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("the {sdk:?} client printed no result ({e}); stdout:\n{stdout}\nstderr:\n{stderr}")
    });
    (out, stderr)
}

/// Waits (bounded) for a child to exit and returns its stdout and stderr.
pub fn wait_output(child: &mut Child, timeout: Duration, what: &str) -> (String, String) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "{what} failed ({status}); stdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

/// The step records of a client run.
pub fn steps(out: &Value) -> &Vec<Value> {
    out["steps"].as_array().unwrap()
}

/// The decision id a tool error names ("Decision <id>.").
pub fn decision_id(text: &str) -> String {
    let at = text
        .find("Decision ")
        .unwrap_or_else(|| panic!("no decision id in: {text}"));
    text[at + "Decision ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect()
}

/// The `_meta` key under which the gateway tells the client its decision.
pub const DECISION_META: &str = "mandate/decision";

/// The decision the gateway put in a call step's result (`_meta`, under
/// [`DECISION_META`], as the SDK client read it), checked against the
/// server: its outcome is `decision`, and the receipt its `decision_id`
/// names is that decision's, at its `receipt_index`. Returns the receipt.
pub fn receipt_in_meta(gateway: &Gateway, step: &Value, decision: &str) -> Value {
    let meta = &step["meta"][DECISION_META];
    assert_eq!(
        meta["decision"], decision,
        "no `{decision}` under `_meta.{DECISION_META}` of the call's result: {step}"
    );
    let id = meta["decision_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no decision id in the result's `_meta`: {step}"));
    let index = meta["receipt_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no receipt index in the result's `_meta`: {step}"));
    let receipt = gateway.receipt(id);
    assert_eq!(receipt["decision_id"], id, "{receipt}");
    assert_eq!(receipt["decision"], decision, "{step}: {receipt}");
    assert_eq!(receipt["index"], index, "{step}: {receipt}");
    receipt
}

/// [`receipt_in_meta`] for a tool error of Mandate's: the decision in
/// `_meta` is also the one its text names.
pub fn denial_in_meta(gateway: &Gateway, step: &Value, decision: &str) -> Value {
    assert_eq!(step["isError"], true, "{step}");
    let receipt = receipt_in_meta(gateway, step, decision);
    let text = step["text"].as_str().unwrap();
    assert_eq!(receipt["decision_id"], decision_id(text), "{step}");
    receipt
}

/// The entries of `tool` in the task's history, oldest first.
pub fn history(gateway: &Gateway, task: &Task, tool: &str) -> Vec<Value> {
    let reply = gateway.show(&task.id, &task.credential);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tool"] == tool)
        .cloned()
        .collect()
}

/// A free port on 127.0.0.1 (released before use: a small race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The everything server over streamable HTTP on a free port.
pub fn everything_http() -> Running {
    let port = free_port();
    let child = Command::new("node")
        .arg(everything_js())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run node: {e})"));
    listening(child, port, "the everything server")
}

/// `tests/mcp/notes_server.py` (Python SDK, stateless streamable HTTP,
/// JSON answers) on a free port, appending the notes it is asked to write
/// to `notes`.
pub fn stateless_http(notes: &Path) -> Running {
    notes_server(notes, &[])
}

/// The same server answering with SSE streams.
pub fn stateless_http_sse(notes: &Path) -> Running {
    notes_server(notes, &["sse"])
}

/// The same server with sessions, answering with SSE streams.
pub fn stateful_http_sse(notes: &Path) -> Running {
    notes_server(notes, &["sse", "stateful"])
}

fn notes_server(notes: &Path, args: &[&str]) -> Running {
    let port = free_port();
    let child = Command::new(python())
        .arg(peers_dir().join("notes_server.py"))
        .arg(port.to_string())
        .arg(notes)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run `{}`: {e})", python()));
    listening(child, port, "the notes server")
}

/// `tests/mcp/notes_server.py` as a stdio server (for `mandate mcp
/// wrap`), appending the notes it is asked to write to `notes`.
pub fn notes_stdio(notes: &Path) -> Vec<String> {
    vec![
        python(),
        peers_dir().join("notes_server.py").display().to_string(),
        "-".to_owned(),
        notes.display().to_string(),
        "stdio".to_owned(),
    ]
}

/// The command that runs the reference fetch server (`mcp-server-fetch`)
/// over stdio, allowed to fetch loopback addresses.
pub fn fetch_server() -> Vec<String> {
    vec![
        python(),
        "-m".to_owned(),
        "mcp_server_fetch".to_owned(),
        "--allow-private-ips".to_owned(),
    ]
}

/// The command line that `supergateway --stdio` runs (through `sh -c`),
/// each word single-quoted.
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stdio MCP server served over streamable HTTP by `supergateway`
/// (npm), as docs/mcp.md says to put one behind `mandate mcp proxy`:
/// `supergateway --stdio "CMD" --outputTransport streamableHttp --stateful
/// --sessionTimeout 7200000 --port N`, with
/// `NODE_OPTIONS=--import=tests/mcp/loopback.mjs` so that it listens on
/// 127.0.0.1 only (it has no flag for that). Its endpoint is
/// `http://ADDR/mcp`; each MCP session gets a server process of its own.
///
/// Ended on drop by closing its stdin, which supergateway takes as the
/// signal to stop its servers (SIGTERM to each one's process group) and
/// exit; killed if it has not exited within [`BRIDGE_STOP`].
pub struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

/// How long a bridge may take to stop its servers and exit (it gives each
/// server five seconds after SIGTERM).
const BRIDGE_STOP: Duration = Duration::from_secs(10);

/// Panics (fails the test) unless supergateway is installed.
pub fn require_supergateway() {
    assert!(
        supergateway_js().is_file(),
        "{SETUP} (missing supergateway)"
    );
}

fn supergateway_js() -> PathBuf {
    peers_dir().join("node_modules/supergateway/dist/index.js")
}

/// Starts supergateway on a free port in front of `server` (a stdio MCP
/// server command), and waits (bounded, polling) until it listens.
pub fn supergateway(server: &[String]) -> Bridge {
    require_supergateway();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("supergateway.log");
    let out = std::fs::File::create(&log).unwrap();
    let port = free_port();
    let loopback = peers_dir().join("loopback.mjs").canonicalize().unwrap();
    let mut child = Command::new("node")
        .arg(supergateway_js())
        .arg("--stdio")
        .arg(shell_words(server))
        .args([
            "--outputTransport",
            "streamableHttp",
            "--stateful",
            "--sessionTimeout",
            "7200000",
            "--port",
        ])
        .arg(port.to_string())
        .env("NODE_OPTIONS", format!("--import={}", loopback.display()))
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{SETUP} (cannot run node: {e})"));
    let stdin = child.stdin.take();
    let mut bridge = Bridge {
        child,
        stdin,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(bridge.addr).is_err() {
        if let Some(status) = bridge.child.try_wait().unwrap() {
            panic!(
                "supergateway exited ({status}) before listening on {}; its log:\n{}",
                bridge.addr,
                bridge.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "supergateway did not listen on {}; its log:\n{}",
            bridge.addr,
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listening = listening_sockets(port);
    assert!(
        listening.iter().all(|a| a == "0100007F"),
        "supergateway listens on {listening:?} (hex, /proc/net/tcp*), not on 127.0.0.1 only: \
         tests/mcp/loopback.mjs no longer keeps it on loopback; its log:\n{}",
        bridge.log()
    );
    bridge
}

/// The local addresses (hex, as /proc/net/tcp and tcp6 write them) of the
/// sockets listening on `port`; empty where /proc has no such files.
fn listening_sockets(port: u16) -> Vec<String> {
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (address, socket_port) = fields.get(1)?.split_once(':')?;
                    (socket_port == port && fields.get(3) == Some(&"0A"))
                        .then(|| address.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Bridge {
    /// The streamable HTTP endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// What supergateway logged so far (the messages it relayed, its
    /// servers' stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + BRIDGE_STOP;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `child` listens on `port`.
fn listening(child: Child, port: u16, what: &str) -> Running {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running { child, addr }
}

/// `mandate mcp proxy` with `args` on a free port; waits until it listens.
pub fn proxy(gateway: &Gateway, args: &[&str]) -> Running {
    proxy_with_env(gateway, args, &[])
}

/// [`proxy`] with environment variables for it (such as `OTEL_*`).
pub fn proxy_with_env(gateway: &Gateway, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp", "proxy", "--listen", "127.0.0.1:0", "--gateway"])
        .arg(format!("http://{}", gateway.server.addr()))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("mandate mcp proxy did not start: {e}"));
        if let Some(addr) = line.strip_prefix("mandate mcp proxy listening on http://") {
            break addr.trim().parse().unwrap();
        }
    };
    // Keep draining stderr so that the proxy never blocks on it.
    std::thread::spawn(move || for _ in rx {});
    Running { child, addr }
}

/// What the everything plan must show, whatever the transport.
pub fn check_everything(sdk: Sdk, gateway: &Gateway, out: &Value, server: &str) {
    let s = steps(out);
    for step in s {
        assert!(step.get("exception").is_none(), "{sdk:?}: {out}");
    }
    assert_eq!(
        s[0]["tools"],
        json!([
            "echo",
            "trigger-long-running-operation",
            "trigger-sampling-request"
        ]),
        "{sdk:?}: {out}"
    );
    assert_eq!(s[1]["text"], "Echo: hi", "{sdk:?}: {out}");
    check_progress(sdk, &s[2], out);
    let sampled = s[3]["text"].as_str().unwrap();
    assert!(sampled.contains("sampled by the"), "{sdk:?}: {out}");
    // Each allowed call's result names its decision, whose receipt is of
    // that call: a plain one, one that streamed progress, one during which
    // the server asked the client.
    for (step, tool) in [
        (&s[1], "echo"),
        (&s[2], "trigger-long-running-operation"),
        (&s[3], "trigger-sampling-request"),
    ] {
        let receipt = receipt_in_meta(gateway, step, "allow");
        assert_eq!(receipt["call"]["tool"], tool, "{sdk:?}: {receipt}");
        assert_eq!(receipt["call"]["server"], server, "{sdk:?}: {receipt}");
    }
    let receipt = denial_in_meta(gateway, &s[4], "deny");
    assert_eq!(receipt["call"]["server"], server, "{receipt}");
    assert!(
        !s[5]["uris"].as_array().unwrap().is_empty(),
        "{sdk:?}: {out}"
    );
    assert_eq!(s[6]["contents"], 1, "{sdk:?}: {out}");
    assert!(
        !s[7]["prompts"].as_array().unwrap().is_empty(),
        "{sdk:?}: {out}"
    );
    assert!(s[8]["messages"].as_u64().unwrap() >= 1, "{sdk:?}: {out}");
}

/// Checks a call step of `trigger-long-running-operation` (3 steps): no
/// error, and its progress seen in order. The server sends progress 1, 2, 3
/// and then its result, and the gateway relays them in order. The
/// TypeScript SDK handles a progress notification a microtask after reading
/// it but a response at once, so when the last progress and the result
/// arrive in one read it drops that progress (as it would on a direct
/// connection): it may see 1 and 2 only.
pub fn check_progress(sdk: Sdk, step: &Value, out: &Value) {
    assert_eq!(step["isError"], false, "{sdk:?}: {out}");
    let progress: Vec<f64> = step["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(
        progress == [1.0, 2.0, 3.0] || (sdk == Sdk::Node && progress == [1.0, 2.0]),
        "{sdk:?}: progress {progress:?}: {out}"
    );
}

/// A Mandate server with the MCP test pack and one approver, `name`, whose
/// token is `token`.
pub fn mandate_with_approver(name: &str, token: &str) -> Gateway {
    let pack = peers_dir().join("policies").canonicalize().unwrap();
    let digest = Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
            token,
        ])
        .output()
        .unwrap();
    let digest = String::from_utf8(digest.stdout).unwrap();
    gateway_with(&format!(
        "policies = {:?}\n\n[[approvers]]\nname = {name:?}\ntoken_sha256 = {:?}\n",
        pack.display().to_string(),
        digest.trim()
    ))
}

/// Waits for the one pending approval and returns its id.
pub fn pending_approval(gateway: &Gateway, approver_token: &str) -> String {
    super::poll_until(Duration::from_secs(60), "a pending approval", || {
        let reply = gateway.server.call(
            reqwest::Method::GET,
            "/v1/approvals?status=pending",
            Some(approver_token),
            None,
        );
        if reply.status != 200 {
            return Err(reply.body);
        }
        let body = reply.json();
        let list = body
            .as_array()
            .or_else(|| body["items"].as_array())
            .cloned()
            .unwrap_or_default();
        list.first()
            .and_then(|a| a["id"].as_str().map(str::to_owned))
            .ok_or(reply.body)
    })
}

/// Waits until the gateway has withdrawn approval `id`, saying `why`, then
/// checks that no approver can answer it any more.
pub fn assert_withdrawn(gateway: &Gateway, approver_token: &str, id: &str, why: &str) {
    let withdrawn = super::poll_until(
        Duration::from_secs(20),
        "the approval to be withdrawn",
        || {
            let status = gateway.server.get(&format!("/v1/approvals/{id}")).json();
            if status["status"] == "withdrawn" {
                Ok(status)
            } else {
                Err(status)
            }
        },
    );
    assert_eq!(withdrawn["reason"], why, "{withdrawn}");
    gateway
        .server
        .call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(approver_token),
            Some(&json!({"reason": "too late"})),
        )
        .assert_error(409, "not_pending");
}

/// Approves or denies an approval (`verdict`: `approve` or `deny`).
pub fn resolve_approval(gateway: &Gateway, approver_token: &str, id: &str, verdict: &str) {
    let reply = gateway.server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{id}/{verdict}"),
        Some(approver_token),
        Some(&json!({"reason": "checked by the MCP gateway test"})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}
