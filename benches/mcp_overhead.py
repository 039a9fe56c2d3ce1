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
hop. Prints p50/p99 per setup.

    cargo build --release -p mandate
    npm ci --prefix tests/mcp
    python3 benches/mcp_overhead.py [--calls 200] [--mandate target/release/mandate]

Only loopback addresses are used; every loop is bounded.
"""

import argparse
import http.client
import json
import os
import re
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
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
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
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "method": method}) + "\n").encode())
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
            for data in re.findall(r"^data: ?(.*)$", body, re.M):
                m = json.loads(data)
                if m.get("id") == msg.get("id"):
                    return m
            return None
        return json.loads(body) if body else None

    def call(self, method, params):
        self.n += 1
        return self.post({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params})

    def notify(self, method):
        self.post({"jsonrpc": "2.0", "method": method})

    def close(self):
        self.c.close()


def measure(client, calls):
    assert "result" in client.call("initialize", INIT)
    client.notify("notifications/initialized")
    args = {"name": "echo", "arguments": {"message": "hello"}}
    for _ in range(20):  # warm up (connections, the tool catalog)
        client.call("tools/call", args)
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        answer = client.call("tools/call", args)
        samples.append(time.perf_counter() - t)
        assert answer["result"]["content"][0]["text"] == "Echo: hello", answer
    client.close()
    return percentiles(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--mandate", default=os.path.join(ROOT, "target/release/mandate"))
    a = ap.parse_args()
    procs = []
    try:
        data = tempfile.mkdtemp()
        gport = free_port()
        procs.append(subprocess.Popen(
            [a.mandate, "serve", "--listen", f"127.0.0.1:{gport}", "--data-dir", data,
             "--policies", POLICIES],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"}))
        wait_port(gport)
        config = os.path.join(data, "mcp.toml")
        with open(config, "w") as f:
            f.write('[task]\nintent = "bench"\ntools = ["echo"]\n')
        gate = ["--gateway", f"http://127.0.0.1:{gport}", "--agent", "spiffe://bench/agent",
                "--config", config]

        rows = []
        direct = measure(Stdio(["node", EVERYTHING, "stdio"]), a.calls)
        wrapped = measure(Stdio([a.mandate, "mcp", "wrap", *gate, "--", "node", EVERYTHING, "stdio"]), a.calls)
        rows.append(("stdio", direct, wrapped))

        eport = free_port()
        procs.append(subprocess.Popen(["node", EVERYTHING, "streamableHttp"],
                                      env={**os.environ, "PORT": str(eport)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(eport)
        pport = free_port()
        procs.append(subprocess.Popen(
            [a.mandate, "mcp", "proxy", "--listen", f"127.0.0.1:{pport}", *gate,
             "--upstream", f"ev=http://127.0.0.1:{eport}/mcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(pport)
        direct = measure(Http(eport, "/mcp"), a.calls)
        proxied = measure(Http(pport, "/mcp"), a.calls)
        rows.append(("streamable HTTP", direct, proxied))

        print(f"tools/call round trip, {a.calls} sequential calls (ms)")
        print(f"{'transport':<16} {'direct p50':>10} {'p99':>7} {'gateway p50':>12} {'p99':>7} {'added p50':>10} {'p99':>7}")
        for name, (d50, d99), (g50, g99) in rows:
            print(f"{name:<16} {d50:>10.3f} {d99:>7.3f} {g50:>12.3f} {g99:>7.3f} {g50 - d50:>10.3f} {g99 - d99:>7.3f}")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
