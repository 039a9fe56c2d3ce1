#!/usr/bin/env python3
"""Soak test: mixed load on `mandate serve` and the MCP gateway for a long
run, sampling memory, descriptors, database sizes and decision latency.

Not part of the test suite. It builds nothing: give it a release binary.

    cargo build --release -p mandate
    python3 -m pip install -r tests/mcp/requirements.txt cryptography==48.0.0
    python3 benches/soak.py target/release/mandate [--minutes 30] [--csv /tmp/soak.csv]
        [--workers 3] [--sample-seconds 30]

(Python 3.11. `mcp` is the official MCP SDK the gateway tests use, pinned in
tests/mcp/requirements.txt; `cryptography` signs the agents' identity tokens.)

What runs, all on 127.0.0.1, in a temporary directory removed at the end:

* `mandate serve` with the example policy pack (seeded into its data
  directory), an OIDC issuer whose JWKS file this script writes (it signs
  EdDSA identity tokens itself), one approver, `approval_ttl_seconds = 20`,
  and `decide_access = "callers"` with one caller token (so decisions
  without a credential authenticate as a caller);
* `tests/mcp/notes_server.py` (Python SDK, streamable HTTP) behind
  `mandate mcp proxy` in agent mode (a `[task]` in its config, the caller
  token, one `[[clients]]` token), driven by a second copy of this script
  (`--mcp-client`, the MCP SDK's client) opening a session, making 30
  `tools/call`s (allowed reads, undeclared tools denied, writes that wait
  for a person), closing it, and again;
* `--workers` threads, each looping over one task's life: identity token,
  `POST /v1/tasks`, delegation to a sub-agent, decisions under both
  credentials (allow, deny, approval_required), reported results, approvals
  approved (and released: the call again with `approval_id`), denied, or
  left alone (withdrawn when the task ends, or expired when it outlives
  them), `GET /v1/tasks/{id}`, then `DELETE /v1/tasks/{id}` (one task in
  seven is left to expire instead); plus, in the same loop, decisions
  without a credential on a fresh `context.session.id`;
* an approver thread that answers the approvals the MCP gateway waits for
  (approve, deny, or leave them until the gateway withdraws them).

Every `--sample-seconds` it prints one row: RSS (VmRSS) and open descriptors
(/proc/PID/fd) of `mandate serve` and of the gateway, the sizes of
ledger.db, state.db and their -wal files, decisions per second (the
server's `mandate_decisions_total`, all sources) and p50/p99 of
`POST /v1/decide` as the workers saw it in that window, MCP calls per
second. `--csv` writes the same rows.

At the end it checks against the sample taken after warm-up (the first
5 minutes, or a sixth of the run when shorter): the last RSS within +20 %
or +20 MiB of it (whichever is larger), the last descriptor count within
+10, for both processes; and that neither process died. Exit 0 when all
hold, 1 otherwise, naming what failed. Every loop is bounded by the run
time; every child is stopped at the end, on errors and on Ctrl-C.
"""

import argparse
import base64
import collections
import csv
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTES_SERVER = os.path.join(ROOT, "tests/mcp/notes_server.py")
ISSUER = "https://idp.soak"
HUMAN = "alice@example.com"
APPROVER = "soak-approver@example.com"
MCP_AGENT = "spiffe://example.org/agent/soak-mcp"
APPROVAL_TTL = 20
PAST = {"approve": "approved", "deny": "denied"}
MIB = 1024 * 1024

READ = {"readOnlyHint": True, "openWorldHint": False}
SEND = {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}
DELETE = {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False}
FETCH = {"readOnlyHint": True, "openWorldHint": True}
TOOLS = ["mail/read_inbox", "mail/send_email", "mail/delete_email", "web/fetch_url"]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited before listening (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what}: nothing listens on 127.0.0.1:{port} after {timeout} s")


class Idp:
    """A throwaway identity provider: an Ed25519 key, its JWKS file, and
    EdDSA identity tokens signed here."""

    def __init__(self, work, audience):
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        except ImportError:
            raise SystemExit("needs cryptography: python3 -m pip install cryptography==48.0.0")
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.jwks = os.path.join(work, "idp-jwks.json")
        with open(self.jwks, "w") as f:
            json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": "soak",
                                 "alg": "EdDSA", "use": "sig"}]}, f)
        self.audience = audience
        self.lock = threading.Lock()

    def token(self, sub):
        now = int(time.time())
        header = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "soak"}).encode())
        claims = b64(json.dumps({"iss": ISSUER, "sub": sub, "aud": self.audience, "iat": now - 5,
                                 "exp": now + 300, "obo": HUMAN, "team": "soak"}).encode())
        signing_input = f"{header}.{claims}".encode()
        with self.lock:
            signature = self.key.sign(signing_input)
        return f"{header}.{claims}.{b64(signature)}"


def new_token(prefix):
    token = prefix + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


# --- process sampling -------------------------------------------------------

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# --- HTTP -------------------------------------------------------------------

class Client:
    """One keep-alive connection to `mandate serve`, reopened on error and
    every `renew` requests (so connection churn is part of the load)."""

    def __init__(self, port, renew=200):
        self.port, self.renew, self.used, self.c = port, renew, 0, None

    def request(self, method, path, token=None, body=None, timeout=30):
        if self.c is None or self.used >= self.renew:
            self.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            self.used = 0
        self.used += 1
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            self.c.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = self.c.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, {"raw": data[:200].decode(errors="replace")}

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


class Stats:
    """Counters and the current window's decision latencies, shared by the
    worker threads and the sampler."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.counts = collections.Counter()
        self.unexpected = collections.Counter()

    def decided(self, seconds):
        with self.lock:
            self.latencies.append(seconds)

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def odd(self, what):
        with self.lock:
            self.unexpected[what] += 1

    def window(self):
        with self.lock:
            lat, self.latencies = self.latencies, []
        return lat


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Worker(threading.Thread):
    """Loops over task lives until the deadline."""

    def __init__(self, n, port, idp, caller_token, approver_token, stats, deadline, stop):
        super().__init__(daemon=True, name=f"worker-{n}")
        self.n, self.idp, self.stats, self.deadline, self.stop = n, idp, stats, deadline, stop
        self.caller_token, self.approver_token = caller_token, approver_token
        self.http = Client(port)
        self.rng = random.Random(n)
        self.root = f"spiffe://example.org/agent/soak-planner-{n}"
        self.sub = f"spiffe://example.org/agent/soak-mailer-{n}"
        self.loose = f"spiffe://example.org/agent/soak-loose-{n}"
        self.error = None

    def live(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def run(self):
        cycle = 0
        try:
            while self.live():
                try:
                    self.task_life(cycle)
                    self.without_credential(cycle)
                except (OSError, http.client.HTTPException) as e:
                    if self.live():
                        self.stats.odd(f"connection error: {type(e).__name__}")
                        time.sleep(0.5)
                cycle += 1
        except Exception as e:  # reported by the main thread
            self.error = f"{type(e).__name__}: {e}"
            self.stop.set()
        finally:
            self.http.close()

    # One decision, timed; returns the answer's JSON (or None).
    def decide(self, token, body, expect):
        t = time.perf_counter()
        status, answer = self.http.request("POST", "/v1/decide", token, body)
        self.stats.decided(time.perf_counter() - t)
        if status != 200:
            self.stats.odd(f"decide {status} {answer.get('error') if answer else ''}")
            return None
        outcome = answer["decision"]
        self.stats.count(f"decide {outcome}")
        if expect and outcome not in expect:
            self.stats.odd(f"decide {outcome}, expected {'/'.join(expect)}")
        return answer

    def report(self, token, answer):
        if answer and answer["decision"] == "allow":
            status, body = self.http.request(
                "POST", f"/v1/decisions/{answer['decision_id']}/result", token,
                {"status": "ok", "labels": []})
            self.stats.count("result")
            if status != 200:
                self.stats.odd(f"result {status} {body.get('error') if body else ''}")

    def approval(self, token, request, answer, report=True):
        """Approve (and release), deny, or leave the approval an
        `approval_required` answer opened. `report`: report the released
        call's result (only calls under a credential have a history)."""
        if not answer or answer["decision"] != "approval_required" or "approval_id" not in answer:
            return
        aid = answer["approval_id"]
        r = self.rng.random()
        if r < 0.45:
            verb = "approve"
        elif r < 0.7:
            verb = "deny"
        else:
            self.stats.count("approval left")
            return
        status, body = self.http.request("POST", f"/v1/approvals/{aid}/{verb}", self.approver_token,
                                         {"reason": f"soak {verb}"})
        if status != 200:
            self.stats.odd(f"{verb} {status} {body.get('error') if body else ''}")
            return
        self.stats.count(f"approval {PAST[verb]}")
        status, body = self.http.request("GET", f"/v1/approvals/{aid}?wait=5s")
        if status != 200:
            self.stats.odd(f"approval get {status}")
        again = self.decide(token, {**request, "approval_id": aid},
                            ["allow"] if verb == "approve" else ["deny"])
        if verb == "approve" and report:
            self.report(token, again)

    def task_life(self, cycle):
        expires = cycle % 7 == 3  # left to expire (and its approvals with it)
        status, task = self.http.request("POST", "/v1/tasks", self.idp.token(self.root), {
            "intent": "answer customer questions (soak)",
            "tools": TOOLS,
            "params": {"allowed_recipients": ["carol@example.com"]},
            "ttl_seconds": 30 if expires else 600,
            "max_depth": 1,
        })
        if status != 201:
            self.stats.odd(f"task start {status} {task.get('error') if task else ''}")
            time.sleep(0.5)
            return
        self.stats.count("task started")
        tid, root = task["task_id"], task["credential"]
        status, sub = self.http.request("POST", f"/v1/tasks/{tid}/delegate", root, {
            "agent": self.sub, "tools": TOOLS[:3], "ttl_seconds": 25 if expires else 300})
        if status != 201:
            self.stats.odd(f"delegate {status} {sub.get('error') if sub else ''}")
            return
        self.stats.count("delegated")
        sub = sub["credential"]

        def call(who, tool, annotations, arguments=None):
            server, name = tool.split("/")
            return {"principal": {"id": who}, "action": {"server": server, "tool": name,
                                                         "annotations": annotations},
                    "arguments": arguments or {}}

        read_r = call(self.root, "mail/read_inbox", READ, {"folder": "inbox"})
        read_s = call(self.sub, "mail/read_inbox", READ, {"folder": "inbox"})
        stranger = {"to": "mallory@evil.example", "subject": "hi", "body": "x"}
        carol = {"to": "carol@example.com", "subject": "Your order", "body": f"cycle {cycle}"}
        self.report(root, self.decide(root, read_r, ["allow"]))
        self.report(sub, self.decide(sub, read_s, ["allow"]))
        self.decide(root, call(self.root, "mail/send_email", SEND, stranger), ["deny"])
        self.decide(sub, call(self.sub, "mail/send_email", SEND, stranger), ["deny"])
        self.report(root, self.decide(root, call(self.root, "mail/send_email", SEND, carol), ["allow"]))
        for token, who in ((root, self.root), (sub, self.sub)):
            req = call(who, "mail/delete_email", DELETE, {"id": f"msg-{cycle}"})
            self.approval(token, req, self.decide(token, req, ["approval_required"]))
        # An open-world read taints the task: the next send waits for a person.
        self.report(root, self.decide(root, call(self.root, "web/fetch_url", FETCH,
                                                 {"url": "https://example.com/"}), ["allow"]))
        req = call(self.root, "mail/send_email", SEND, carol)
        self.approval(root, req, self.decide(root, req, ["approval_required"]))
        status, _ = self.http.request("GET", f"/v1/tasks/{tid}", sub)
        if status != 200:
            self.stats.odd(f"task show {status}")
        if expires:
            self.stats.count("task left to expire")
            return
        status, body = self.http.request("DELETE", f"/v1/tasks/{tid}", root)
        if status != 200:
            self.stats.odd(f"task end {status} {body.get('error') if body else ''}")
        else:
            self.stats.count("task ended")

    def without_credential(self, cycle):
        session = f"soak-{self.n}-{cycle}"

        def call(tool, annotations, arguments):
            server, name = tool.split("/")
            return {"principal": {"id": self.loose, "on_behalf_of": HUMAN},
                    "action": {"server": server, "tool": name, "annotations": annotations},
                    "arguments": arguments,
                    "context": {"task": {"id": f"loose-{self.n}", "intent": "soak without a credential",
                                         "tools": ["read_inbox", "send_email", "fetch_url"],
                                         "params": {"allowed_recipients": ["carol@example.com"]}},
                                "session": {"id": session}}}

        t = self.caller_token
        self.decide(t, call("mail/read_inbox", READ, {"folder": "inbox"}), ["allow"])
        self.decide(t, call("mail/send_email", SEND, {"to": "mallory@evil.example", "subject": "s",
                                                      "body": "b"}), ["deny"])
        self.decide(t, call("web/fetch_url", FETCH, {"url": "https://example.com/"}), ["allow"])
        req = call("mail/send_email", SEND, {"to": "carol@example.com", "subject": "s", "body": "b"})
        # Denied instead once this agent has 20 approvals waiting.
        self.approval(t, req, self.decide(t, req, ["approval_required", "deny"]), report=False)


class Approver(threading.Thread):
    """Answers the approvals the MCP gateway holds calls for."""

    def __init__(self, port, token, stats, deadline, stop):
        super().__init__(daemon=True, name="approver")
        self.http = Client(port)
        self.token, self.stats, self.deadline, self.stop = token, stats, deadline, stop
        self.seen = collections.OrderedDict()
        self.rng = random.Random(99)
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    self.round()
                except (OSError, http.client.HTTPException) as e:
                    self.stats.odd(f"approver connection error: {type(e).__name__}")
                self.stop.wait(0.5)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.stop.set()
        finally:
            self.http.close()

    def round(self):
        status, body = self.http.request("GET", "/v1/approvals?status=pending&limit=100", self.token)
        if status != 200:
            self.stats.odd(f"approvals list {status}")
            return
        for item in body["items"]:
            aid = item["id"]
            if aid in self.seen or MCP_AGENT not in json.dumps(item):
                continue
            self.seen[aid] = True
            while len(self.seen) > 1000:
                self.seen.popitem(last=False)
            r = self.rng.random()
            verb = "approve" if r < 0.5 else "deny" if r < 0.75 else None
            if verb is None:
                self.stats.count("mcp approval left")
                continue
            status, _ = self.http.request("POST", f"/v1/approvals/{aid}/{verb}", self.token,
                                          {"reason": f"soak {verb}"})
            if status == 200:
                self.stats.count(f"mcp approval {PAST[verb]}")
            elif status != 409:  # withdrawn meanwhile by the gateway
                self.stats.odd(f"mcp {verb} {status}")


# --- the MCP client (a separate process: asyncio, the SDK) ---------------------

def mcp_client(url, until, stats_path, token):
    import asyncio

    try:
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
    except ImportError:
        raise SystemExit("needs the MCP SDK: python3 -m pip install -r tests/mcp/requirements.txt")

    counts = collections.Counter()

    def dump():
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(counts, f)
        os.replace(tmp, stats_path)

    async def session_round(n):
        headers = {"Proxy-Authorization": f"Bearer {token}"}
        async with create_mcp_http_client(headers=headers) as http_client:
            async with streamable_http_client(url, http_client=http_client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    await session.list_tools()
                    for i in range(30):
                        if time.time() >= until:
                            return
                        if i % 10 == 9:
                            tool, args = "write_note", {"text": f"soak {n}.{i}"}
                        elif i % 5 == 2:
                            tool, args = "publish_note", {"text": "never"}
                        else:
                            tool, args = "fetch_page", {"url": f"https://example.com/{i}"}
                        result = await session.call_tool(tool, args)
                        error = bool(getattr(result, "is_error", getattr(result, "isError", False)))
                        counts[f"{tool} {'error' if error else 'ok'}"] += 1
                        counts["calls"] += 1
                        dump()
                    counts["sessions"] += 1

    async def main():
        n = 0
        while time.time() < until:
            try:
                await asyncio.wait_for(session_round(n), timeout=max(1.0, until - time.time() + 10))
            except Exception as e:  # counted; the soak goes on
                counts[f"exception {type(e).__name__}"] += 1
                dump()
                await asyncio.sleep(1)
            n += 1
        dump()

    asyncio.run(main())


# --- the run ----------------------------------------------------------------

def metric_sum(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def receipts(port):
    """The receipt log's size, from GET /v1/health."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/v1/health")
        return json.loads(c.getresponse().read())["receipts"]["size"]
    finally:
        c.close()


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


COLUMNS = ["elapsed_s", "serve_rss_mib", "gateway_rss_mib", "serve_fds", "gateway_fds",
           "ledger_db_mib", "ledger_wal_mib", "state_db_mib", "state_wal_mib",
           "decisions_per_s", "decide_p50_ms", "decide_p99_ms", "decide_samples", "mcp_calls_per_s", "receipts"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mandate", nargs="?", help="the release `mandate` binary")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--csv", help="also write the samples to this CSV file")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--sample-seconds", type=float, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # Internal: the MCP client process.
    ap.add_argument("--mcp-client", nargs=4, metavar=("URL", "UNTIL", "STATS", "TOKEN"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mcp_client:
        url, until, stats_path, token = a.mcp_client
        return mcp_client(url, float(until), stats_path, token)
    if not a.mandate:
        ap.error("the path of the mandate binary is required")
    mandate = os.path.abspath(a.mandate)
    if not os.access(mandate, os.X_OK):
        raise SystemExit(f"not an executable: {mandate}")
    try:
        import mcp  # noqa: F401  (checked before anything starts)
    except ImportError:
        raise SystemExit("needs the MCP SDK: python3 -m pip install -r tests/mcp/requirements.txt")

    # SIGINT (even when started in the background, where it is ignored),
    # SIGTERM and SIGHUP stop the run through the finally below.
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    work = tempfile.mkdtemp(prefix="mandate-soak-")
    procs = []
    logs = []
    stop = threading.Event()
    threads = []
    try:
        return run(a, mandate, work, procs, logs, stop, threads)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
        if a.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def start(procs, logs, work, name, argv, **kw):
    log = open(os.path.join(work, f"{name}.log"), "wb")
    logs.append(log)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kw)
    procs.append(p)
    return p


def tail(work, name, lines=20):
    try:
        with open(os.path.join(work, f"{name}.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run(a, mandate, work, procs, logs, stop, threads):
    port = free_port()
    resource = f"http://127.0.0.1:{port}"
    data = os.path.join(work, "data")
    idp = Idp(work, resource)
    approver_token, approver_digest = new_token("mnd_approver_")
    caller_token, caller_digest = new_token("mnd_caller_")
    client_token, client_digest = new_token("mnd_mcp_")
    config = os.path.join(work, "mandate.toml")
    with open(config, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\n'
                f"data_dir = {json.dumps(data)}\n"
                f"approval_ttl_seconds = {APPROVAL_TTL}\n"
                'decide_access = "callers"\n'
                f'\n[[issuers]]\nissuer = "{ISSUER}"\njwks_file = {json.dumps(idp.jwks)}\n'
                'on_behalf_of_claim = "obo"\n'
                f'\n[[approvers]]\nname = "{APPROVER}"\ntoken_sha256 = "{approver_digest}"\n'
                f'\n[[callers]]\nname = "soak"\ntoken_sha256 = "{caller_digest}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    serve = start(procs, logs, work, "serve", [mandate, "serve", "--config", config],
                  env={**env, "RUST_LOG": "warn"})
    wait_port(port, serve, "mandate serve")

    notes_port = free_port()
    notes = start(procs, logs, work, "notes",
                  [sys.executable, NOTES_SERVER, str(notes_port), os.path.join(work, "notes.txt")])
    wait_port(notes_port, notes, "the notes server")

    mcp_config = os.path.join(work, "mcp.toml")
    with open(mcp_config, "w") as f:
        f.write(f'on_behalf_of = "{HUMAN}"\n'
                '[task]\nid = "soak-mcp"\nintent = "read pages and keep notes (soak)"\n'
                'tools = ["fetch_page", "write_note"]\n'
                f'\n[[clients]]\nname = "soak"\ntoken_sha256 = "{client_digest}"\n')
    caller_file = os.path.join(work, "caller.token")
    fd = os.open(caller_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(caller_token)
    gport = free_port()
    gateway = start(procs, logs, work, "gateway",
                    [mandate, "mcp", "proxy", "--listen", f"127.0.0.1:{gport}",
                     "--gateway", resource, "--agent", MCP_AGENT, "--config", mcp_config,
                     "--caller-token-file", caller_file, "--approval-wait", "3s",
                     "--upstream", f"notes=http://127.0.0.1:{notes_port}/mcp"],
                    env={**env, "RUST_LOG": "warn"})
    wait_port(gport, gateway, "mandate mcp proxy")

    seconds = a.minutes * 60
    t0 = time.monotonic()
    deadline = t0 + seconds
    until_wall = time.time() + seconds
    mcp_stats = os.path.join(work, "mcp-stats.json")
    mcp = start(procs, logs, work, "mcp-client",
                [sys.executable, os.path.abspath(__file__), "--mcp-client",
                 f"http://127.0.0.1:{gport}/mcp", str(until_wall), mcp_stats, client_token])

    stats = Stats()
    workers = [Worker(n, port, idp, caller_token, approver_token, stats, deadline, stop)
               for n in range(a.workers)]
    approver = Approver(port, approver_token, stats, deadline, stop)
    threads.extend(workers + [approver])
    for t in threads:
        t.start()

    warmup = min(300.0, seconds / 6)
    print(f"# mandate soak: {a.minutes:g} min, {a.workers} workers, samples every "
          f"{a.sample_seconds:g} s, warm-up {warmup:.0f} s; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; serve pid {serve.pid}, gateway pid {gateway.pid}")
    print(f"{'time':>6} {'RSS serve':>9} {'gateway':>7} {'fds serve':>9} {'gw':>3} "
          f"{'ledger':>7} {'-wal':>6} {'state':>6} {'-wal':>6} {'dec/s':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'mcp/s':>6} {'odd':>5}   (MiB)")
    out = None
    writer = None
    if a.csv:
        out = open(a.csv, "w", newline="")
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
    rows = []
    last_t = t0
    last_decisions = metric_sum(port, "mandate_decisions_total")
    last_mcp = 0
    stats.window()
    died = []
    reported = set()
    try:
        next_sample = t0 + a.sample_seconds
        while True:
            now = time.monotonic()
            end = min(next_sample, deadline)
            while now < end and not stop.is_set():
                time.sleep(min(1.0, end - now))
                now = time.monotonic()
                for p, what, log in ((serve, "mandate serve", "serve"),
                                     (gateway, "mandate mcp proxy", "gateway")):
                    if p.poll() is not None and (what, p, log) not in died:
                        died.append((what, p, log))
                        stop.set()
            if stop.is_set():
                break
            now = time.monotonic()
            span = now - last_t
            decisions = metric_sum(port, "mandate_decisions_total")
            lat = sorted(stats.window())
            mcp_calls = read_json(mcp_stats).get("calls", 0)
            with stats.lock:
                odd = collections.Counter(stats.unexpected)
            row = [round(now - t0),
                   rss_kib(serve.pid) / 1024, rss_kib(gateway.pid) / 1024,
                   fds(serve.pid), fds(gateway.pid),
                   size(os.path.join(data, "ledger.db")) / MIB,
                   size(os.path.join(data, "ledger.db-wal")) / MIB,
                   size(os.path.join(data, "state.db")) / MIB,
                   size(os.path.join(data, "state.db-wal")) / MIB,
                   (decisions - last_decisions) / span,
                   percentile(lat, 0.50) * 1000, percentile(lat, 0.99) * 1000, len(lat),
                   (mcp_calls - last_mcp) / span, receipts(port)]
            last_t, last_decisions, last_mcp = now, decisions, mcp_calls
            rows.append(row)
            m, s = divmod(row[0], 60)
            print(f"{m:>3}:{s:02} {row[1]:>9.1f} {row[2]:>7.1f} {row[3]:>9} {row[4]:>3} "
                  f"{row[5]:>7.1f} {row[6]:>6.1f} {row[7]:>6.1f} {row[8]:>6.1f} {row[9]:>6.0f} "
                  f"{row[10]:>7.2f} {row[11]:>7.2f} {row[13]:>6.1f} {sum(odd.values()):>5}", flush=True)
            for kind in odd.keys() - reported:
                print(f"#   unexpected: {kind}", flush=True)
                reported.add(kind)
            if writer:
                writer.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in row])
                out.flush()
            if now >= deadline:
                break
            next_sample += a.sample_seconds
    finally:
        if out:
            out.close()

    stop.set()
    for t in threads:
        t.join(timeout=40)
    try:
        mcp.wait(30)
    except subprocess.TimeoutExpired:
        pass

    failures = []
    for what, p, log in died:
        failures.append(f"{what} exited (status {p.returncode}):\n{tail(work, log)}")
    if mcp.returncode:
        failures.append(f"the MCP client exited with status {mcp.returncode}:\n{tail(work, 'mcp-client')}")
    for t in threads:
        if t.error:
            failures.append(f"{t.name} failed: {t.error}")
    print("\n# counts:", json.dumps(dict(sorted(stats.counts.items()))))
    print("# MCP client:", json.dumps(read_json(mcp_stats)))
    if stats.unexpected:
        print("# unexpected answers:", json.dumps(dict(stats.unexpected.most_common())))
    base = next((r for r in rows if r[0] >= warmup), None)
    last = rows[-1] if rows else None
    if base is None or last is None or base is last:
        failures.append("too few samples after warm-up to compare (run longer)")
    else:
        bm, lm = base[0] // 60, last[0] // 60
        print(f"# after warm-up ({bm} min) -> end ({lm} min):")
        # What grows by design: the ledger's tree keeps one 32-byte hash per
        # complete 256-receipt tile (and about as many above them).
        n = last[14] - base[14]
        print(f"#   receipts {base[14]} -> {last[14]} (+{n}); the in-memory Merkle tree's share "
              f"of that: about {n * 64 / 256 / MIB:.2f} MiB")
        for name, r, f_ in (("mandate serve", 1, 3), ("mcp proxy", 2, 4)):
            allowed = max(base[r] * 0.2, 20.0)
            grew = last[r] - base[r]
            verdict = "ok" if grew <= allowed else "FAIL"
            print(f"#   {name}: RSS {base[r]:.1f} -> {last[r]:.1f} MiB ({grew:+.1f}, allowed +{allowed:.1f}) {verdict}")
            if verdict != "ok":
                failures.append(f"{name}: RSS grew {grew:+.1f} MiB after warm-up (allowed +{allowed:.1f})")
            dfd = last[f_] - base[f_]
            verdict = "ok" if dfd <= 10 else "FAIL"
            print(f"#   {name}: descriptors {base[f_]} -> {last[f_]} ({dfd:+d}, allowed +10) {verdict}")
            if verdict != "ok":
                failures.append(f"{name}: descriptors grew {dfd:+d} after warm-up (allowed +10)")
    if failures:
        print("# FAILED:\n" + "\n".join(f"#   {f}" for f in failures))
        return 1
    print("# flat: memory and descriptors held after warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
