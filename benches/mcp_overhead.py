#!/usr/bin/env python3
"""Overhead of the MCP gateway on one `tools/call` round trip.

Measures the `echo` tool of the reference server `server-everything`:

* stdio: the server directly, then behind `mandate mcp wrap`;
* streamable HTTP: the server directly, then behind `mandate mcp proxy`;

with a real `mandate serve` deciding every call through the gateway
(allowed, receipt durable on disk before the answer). The client is plain
JSON-RPC over pipes and `http.client` (no SDK), one call at a time, so the
difference between the two columns is what the gateway adds: the
decision request and its durable receipt, the relay, and (HTTP) one more
hop. Prints p50/p99 per mode and setup.

Two modes (`--mode`, default `both`), each with a `mandate serve` and a data
directory of its own:

* agent: the gateway is a configured agent (`--agent` and a `[task]` in its
  config) and sends the task and its own session history with every decision;
* credential: the gateway presents a task credential (`--credential-file`).
  `mandate serve` trusts a throwaway identity provider (as in
  benches/http_credential_load.sh), the agent's identity token starts a task
  declaring `ev/echo` (`POST /v1/tasks`), and the server reads the task and
  its history itself; each allowed call's result is then reported
  (`POST /v1/decisions/{id}/result`). Wrap and proxy each get a fresh task, so
  each measurement starts with an empty history; afterwards the task's
  history must hold one allowed `ev/echo` decision per call. Needs PyJWT and
  cryptography (`pip install pyjwt cryptography`).

    cargo build --release -p mandate
    npm ci --prefix tests/mcp
    python3 benches/mcp_overhead.py [--calls 200] [--mode agent|credential|both]
        [--mandate target/release/mandate] [--agentgateway BIN]

With `--agentgateway BIN`, the same run also measures agentgateway
(https://github.com/agentgateway/agentgateway), an MCP gateway of another
project, as mode `agentgateway`: configured with no policies (no
authentication, no authorization rules, no CORS; its admin, stats and
readiness servers off), one MCP backend of one target, in front of
server-everything over stdio (the gateway spawns it) and over streamable
HTTP. Its clients speak streamable HTTP to it in both cases, so its stdio
row's added time includes an HTTP hop that `mandate mcp wrap` does not
have. The direct column of each row is the server on that row's upstream
transport. agentgateway is not part of this repository; build it elsewhere,
for the benchmark only:

    git clone https://github.com/agentgateway/agentgateway ../agentgateway
    cd ../agentgateway && git checkout 75b4e6ce6e0e
    apt-get install -y protobuf-compiler    # its build script needs protoc
    cargo build --release --locked -p agentgateway-app --bin agentgateway

(its Cargo.toml patches crates from git forks on GitHub and GitLab, which the
build fetches), then pass `--agentgateway ../agentgateway/target/release/agentgateway`.

Only loopback addresses are used (agentgateway's listener binds the wildcard
address, having no setting for it, but is only reached on loopback); every
loop is bounded.
"""

import argparse
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVERYTHING = os.path.join(
    ROOT, "tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
POLICIES = os.path.join(ROOT, "tests/mcp/policies")
# The server's name in every decision: the proxy's upstream and wrap's --name
# (otherwise the server's own `mcp-servers-everything`), so a task credential
# names the tool `ev/echo` on both transports.
SERVER = "ev"
WARMUP = 20
ISSUER = "https://idp.bench"
PLANNER = "spiffe://example.org/agent/planner"
INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "0"},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def percentiles(samples):
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000
    return pick(0.50), pick(0.99)


class Stdio:
    def __init__(self, command):
        self.p = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.n = 0

    def call(self, method, params):
        self.n += 1
        msg = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise SystemExit("the server exited")
            answer = json.loads(line)
            if answer.get("id") == self.n:
                return answer

    def notify(self, method):
        self.p.stdin.write(
            (json.dumps({"jsonrpc": "2.0", "method": method}) + "\n").encode()
        )
        self.p.stdin.flush()

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()


class Http:
    def __init__(self, port, path):
        self.c = http.client.HTTPConnection("127.0.0.1", port)
        self.path = path
        self.session = None
        self.n = 0

    def post(self, msg):
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-06-18",
        }
        if self.session:
            headers["mcp-session-id"] = self.session
        self.c.request("POST", self.path, json.dumps(msg), headers)
        r = self.c.getresponse()
        body = r.read().decode()
        self.session = r.getheader("mcp-session-id") or self.session
        if r.getheader("content-type", "").startswith("text/event-stream"):
            for data in re.findall(r"^data: ?(.*)$", body, re.MULTILINE):
                m = json.loads(data)
                if m.get("id") == msg.get("id"):
                    return m
            return None
        return json.loads(body) if body else None

    def call(self, method, params):
        self.n += 1
        return self.post(
            {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        )

    def notify(self, method):
        self.post({"jsonrpc": "2.0", "method": method})

    def close(self):
        self.c.close()


def echoed(answer):
    # A denied call is a tool result too (isError, Mandate's reason), so the
    # tool's own text is what shows the call was allowed and ran.
    assert answer["result"]["content"][0]["text"] == "Echo: hello", answer


def measure(client, calls):
    assert "result" in client.call("initialize", INIT)
    client.notify("notifications/initialized")
    args = {"name": "echo", "arguments": {"message": "hello"}}
    for _ in range(WARMUP):  # warm up (connections, the tool catalog)
        echoed(client.call("tools/call", args))
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        answer = client.call("tools/call", args)
        samples.append(time.perf_counter() - t)
        echoed(answer)
    client.close()
    return percentiles(samples)


def jwt_libraries():
    # Imported here: agent mode runs without them.
    try:
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        raise SystemExit(
            "credential mode needs PyJWT and cryptography: pip install pyjwt cryptography"
        )
    return jwt, serialization, Ed25519PrivateKey


def identity_provider(work, resource):
    """A throwaway identity provider, as in benches/http_credential_load.sh:
    an Ed25519 key, its JWKS file, and an identity token for the agent that
    starts the tasks. Returns (jwks path, token)."""
    jwt, serialization, Ed25519PrivateKey = jwt_libraries()
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    jwks = os.path.join(work, "jwks.json")
    with open(jwks, "w") as f:
        json.dump(
            {
                "keys": [
                    {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": x,
                        "kid": "bench",
                        "alg": "EdDSA",
                        "use": "sig",
                    }
                ]
            },
            f,
        )
    now = int(time.time())
    # `aud` is the server's resource, by default http:// and its `listen`.
    token = jwt.encode(
        {"iss": ISSUER, "sub": PLANNER, "aud": resource, "iat": now, "exp": now + 3600},
        key,
        algorithm="EdDSA",
        headers={"kid": "bench"},
    )
    return jwks, token


def start_serve(mandate, work, port, jwks):
    """`mandate serve` on its own data directory, with the bench's policies;
    trusting the identity provider when there is one (credential mode)."""
    config = os.path.join(work, "mandate.toml")
    with open(config, "w") as f:
        f.write(
            f'listen = "127.0.0.1:{port}"\n'
            f"data_dir = {json.dumps(os.path.join(work, 'data'))}\n"
            f"policies = {json.dumps(POLICIES)}\n"
        )
        # Tables come after every top-level key.
        if jwks:
            f.write(
                f'\n[[issuers]]\nissuer = "{ISSUER}"\njwks_file = {json.dumps(jwks)}\n'
            )
    p = subprocess.Popen(
        [mandate, "serve", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    wait_port(port)
    return p


def request(port, method, path, token, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    c.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = c.getresponse()
    answer = r.status, r.read().decode()
    c.close()
    return answer


def start_task(port, token):
    """A fresh task, so a measurement starts with an empty history. Returns
    (task id, credential)."""
    status, body = request(
        port,
        "POST",
        "/v1/tasks",
        token,
        {
            "intent": "measure the MCP gateway's overhead",
            # The policies allow a tool the task declares (`declared-tools`);
            # the server gives them the credential's tools as bare names.
            "tools": [f"{SERVER}/echo"],
            "ttl_seconds": 3600,
        },
    )
    if status != 201:
        raise SystemExit(
            f"cannot start a task: POST /v1/tasks answered {status}: {body}"
        )
    task = json.loads(body)
    return task["task_id"], task["credential"]


def check_history(port, token, task_id, calls):
    """Under a credential, the echo text alone does not show that the calls
    were decided in the task: its history must hold each of them, allowed."""
    status, body = request(port, "GET", f"/v1/tasks/{task_id}", token)
    if status != 200:
        raise SystemExit(f"cannot read task {task_id}: GET answered {status}: {body}")
    history = json.loads(body)["history"]
    seen = [(h["server"], h["tool"], h["decision"]) for h in history]
    expected = [(SERVER, "echo", "allow")] * (WARMUP + calls)
    if seen != expected:
        raise SystemExit(
            f"task {task_id}: expected {len(expected)} allowed {SERVER}/echo "
            f"decisions, history has {len(seen)}: {sorted(set(seen))}"
        )


class Agent:
    """The gateway as a configured agent: the task comes from its config."""

    def __init__(self, work, gport):
        self.config = os.path.join(work, "mcp.toml")
        with open(self.config, "w") as f:
            f.write('[task]\nintent = "bench"\ntools = ["echo"]\n')
        self.gport = gport

    def gate(self):
        return [
            "--gateway",
            f"http://127.0.0.1:{self.gport}",
            "--agent",
            "spiffe://bench/agent",
            "--config",
            self.config,
        ]

    def check(self, calls):
        pass


class Credential:
    """The gateway under a task credential, a fresh task for each gate."""

    def __init__(self, work, gport, token):
        self.work, self.gport, self.token = work, gport, token
        self.task_id = None

    def gate(self):
        self.task_id, credential = start_task(self.gport, self.token)
        # In a file, not on the command line (visible to every process).
        path = os.path.join(self.work, f"{self.task_id}.credential")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(credential)
        return [
            "--gateway",
            f"http://127.0.0.1:{self.gport}",
            "--credential-file",
            path,
        ]

    def check(self, calls):
        check_history(self.gport, self.token, self.task_id, calls)


def run_mode(mode, a, procs):
    """Both transports in one mode, against a `mandate serve` of its own."""
    work = tempfile.mkdtemp(prefix=f"mcp-overhead-{mode}-")
    gport = free_port()
    if mode == "credential":
        jwks, token = identity_provider(work, f"http://127.0.0.1:{gport}")
        procs.append(start_serve(a.mandate, work, gport, jwks))
        principal = Credential(work, gport, token)
    else:
        procs.append(start_serve(a.mandate, work, gport, None))
        principal = Agent(work, gport)

    rows = []
    direct = measure(Stdio(["node", EVERYTHING, "stdio"]), a.calls)
    wrap = [
        a.mandate,
        "mcp",
        "wrap",
        *principal.gate(),
        "--name",
        SERVER,
        "--",
        "node",
        EVERYTHING,
        "stdio",
    ]
    wrapped = measure(Stdio(wrap), a.calls)
    principal.check(a.calls)
    rows.append((mode, "stdio", direct, wrapped))

    eport = free_port()
    procs.append(
        subprocess.Popen(
            ["node", EVERYTHING, "streamableHttp"],
            env={**os.environ, "PORT": str(eport)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_port(eport)
    pport = free_port()
    procs.append(
        subprocess.Popen(
            [
                a.mandate,
                "mcp",
                "proxy",
                "--listen",
                f"127.0.0.1:{pport}",
                *principal.gate(),
                "--upstream",
                f"{SERVER}=http://127.0.0.1:{eport}/mcp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_port(pport)
    direct = measure(Http(eport, "/mcp"), a.calls)
    proxied = measure(Http(pport, "/mcp"), a.calls)
    principal.check(a.calls)
    rows.append((mode, "streamable HTTP", direct, proxied))
    return rows


def agentgateway_config(path, port, target):
    """agentgateway's config (JSON, which is YAML): a listener on `port`
    routing every path to an MCP backend of one target, with no policies."""
    backend = {"mcp": {"targets": [{"name": SERVER, **target}]}}
    config = {
        "config": {"adminAddr": "off", "statsAddr": "off", "readinessAddr": "off"},
        "binds": [{"port": port, "listeners": [{"routes": [{"backends": [backend]}]}]}],
    }
    with open(path, "w") as f:
        json.dump(config, f, indent=1)


def start_agentgateway(binary, work, name, target, groups):
    """agentgateway in a process group of its own (a stdio target is its
    child); its output goes to a log in `work`. Returns its port."""
    port = free_port()
    config = os.path.join(work, f"agentgateway-{name}.yaml")
    agentgateway_config(config, port, target)
    with open(os.path.join(work, f"agentgateway-{name}.log"), "w") as log:
        p = subprocess.Popen(
            [binary, "-f", config], stdout=log, stderr=log, start_new_session=True
        )
    groups.append(p)
    deadline = time.time() + 20
    while p.poll() is None and time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return port
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"agentgateway does not listen on {port}; see {log.name}")


def stop_group(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_agentgateway(a, procs, groups):
    """agentgateway (no policies) in front of server-everything, over stdio
    and over streamable HTTP; each beside the server measured directly."""
    work = tempfile.mkdtemp(prefix="mcp-overhead-agentgateway-")
    rows = []
    direct = measure(Stdio(["node", EVERYTHING, "stdio"]), a.calls)
    stdio = {"stdio": {"cmd": "node", "args": [EVERYTHING, "stdio"]}}
    port = start_agentgateway(a.agentgateway, work, "stdio", stdio, groups)
    gated = measure(Http(port, "/mcp"), a.calls)
    stop_group(groups[-1])
    rows.append(("agentgateway", "stdio", direct, gated))

    eport = free_port()
    procs.append(
        subprocess.Popen(
            ["node", EVERYTHING, "streamableHttp"],
            env={**os.environ, "PORT": str(eport)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_port(eport)
    http = {"mcp": {"host": f"http://127.0.0.1:{eport}/mcp"}}
    port = start_agentgateway(a.agentgateway, work, "http", http, groups)
    direct = measure(Http(eport, "/mcp"), a.calls)
    gated = measure(Http(port, "/mcp"), a.calls)
    stop_group(groups[-1])
    rows.append(("agentgateway", "streamable HTTP", direct, gated))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--mode", choices=["agent", "credential", "both"], default="both")
    ap.add_argument("--mandate", default=os.path.join(ROOT, "target/release/mandate"))
    ap.add_argument(
        "--agentgateway",
        metavar="BIN",
        help="also measure agentgateway (no policies), built from its own source",
    )
    a = ap.parse_args()
    modes = ["agent", "credential"] if a.mode == "both" else [a.mode]
    if "credential" in modes:
        jwt_libraries()  # before anything is measured
    procs, groups = [], []
    try:
        rows = []
        for mode in modes:
            rows += run_mode(mode, a, procs)
        if a.agentgateway:
            rows += run_agentgateway(a, procs, groups)
        w = max(10, *(len(row[0]) for row in rows))
        print(f"tools/call round trip, {a.calls} sequential calls (ms)")
        print(
            f"{'mode':<{w}} {'transport':<16} {'direct p50':>10} {'p99':>7} {'gateway p50':>12} {'p99':>7} {'added p50':>10} {'p99':>7}"
        )
        for mode, name, (d50, d99), (g50, g99) in rows:
            print(
                f"{mode:<{w}} {name:<16} {d50:>10.3f} {d99:>7.3f} {g50:>12.3f} {g99:>7.3f} {g50 - d50:>10.3f} {g99 - d99:>7.3f}"
            )
    finally:
        for p in groups:
            stop_group(p)
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
