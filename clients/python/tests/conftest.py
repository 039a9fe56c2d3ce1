"""A real `mandate serve` for the tests, and an identity provider it trusts.

As crates/mandate/tests/util/tasks.rs does for the Rust tests: an Ed25519
key made up here signs the agents' JWTs, and its JWKS is in a file the
server's config names (`[[issuers]] jwks_file`). One approver is configured
by the SHA-256 of its token. The server is the binary `MANDATE_BIN` names
(the Rust wrapper test passes the one cargo built); without it the tests
fail, they never skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import mandate

ISSUER = "https://idp.test"
RESOURCE = "https://mandate.test"
ROOT_AGENT = "spiffe://example.org/agent/planner"
SUB_AGENT = "spiffe://example.org/agent/mailer"
HUMAN = "alice@example.com"
APPROVER = "bob@example.com"
APPROVER_TOKEN = "mnd_approver_python_sdk_tests_bob"
STARTUP_TIMEOUT = 60.0
#: A downstream tool that takes Mandate-minted JWTs (`POST /v1/token`).
DOWNSTREAM = "https://tools.example.test/mail"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Idp:
    """The test identity provider: signs agents' identity tokens (EdDSA)."""

    def __init__(self, kid: str = "idp-1") -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = kid

    def jwks(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "use": "sig",
                    "alg": "EdDSA",
                    "kid": self.kid,
                    "x": _b64url(public),
                }
            ]
        }

    def token(self, sub: str) -> str:
        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "JWT", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "sub": sub,
            "aud": RESOURCE,
            "iat": now - 5,
            "exp": now + 600,
            "obo": HUMAN,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self.key.sign(signing_input.encode())
        return signing_input + "." + _b64url(signature)


@dataclass
class Server:
    url: str
    idp: Idp
    data: Path
    logs: list[str]

    def client(self) -> mandate.Client:
        return mandate.Client(self.url)

    def task(self, **kwargs: Any) -> mandate.Task:
        """`mandate.task(...)` on this server as the root agent."""
        kwargs.setdefault("identity_token", self.idp.token(ROOT_AGENT))
        kwargs.setdefault("base_url", self.url)
        return mandate.task(**kwargs)

    def verifier_key(self) -> str:
        """The log's verifier key, read as an operator would give it: from
        `mandate keys show` on the data directory, not from the server."""
        shown = subprocess.run(
            [mandate_bin(), "keys", "show", "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return shown.stdout.strip()


def mandate_bin() -> str:
    path = os.environ.get("MANDATE_BIN")
    if not path:
        pytest.fail(
            "MANDATE_BIN is not set: point it at a `mandate` binary (cargo build -p mandate; "
            "crates/mandate/tests/python_sdk.rs sets it)"
        )
    return path


def _listening(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    fields = entry.get("fields", {}) if isinstance(entry, dict) else {}
    if fields.get("message") == "mandate is listening":
        address = fields.get("address")
        return str(address) if address else None
    return None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory) as started:
        yield started


@contextlib.contextmanager
def serve(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[Server]:
    """A `mandate serve` of its own, with `extra` arguments."""
    binary = mandate_bin()
    root = tmp_path_factory.mktemp("mandate")
    idp = Idp()
    jwks = root / "idp-jwks.json"
    jwks.write_text(json.dumps(idp.jwks()))
    digest = hashlib.sha256(APPROVER_TOKEN.encode()).hexdigest()
    config = root / "mandate.toml"
    config.write_text(
        f'resource = "{RESOURCE}"\n'
        "approval_ttl_seconds = 120\n"
        "\n[[issuers]]\n"
        f'issuer = "{ISSUER}"\n'
        f"jwks_file = {json.dumps(str(jwks))}\n"
        'on_behalf_of_claim = "obo"\n'
        "\n[[downstream]]\n"
        f'resource = "{DOWNSTREAM}"\n'
        'tools = ["mail/read_inbox"]\n'
        "\n[[approvers]]\n"
        f'name = "{APPROVER}"\n'
        f'token_sha256 = "{digest}"\n'
    )
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    env["RUST_LOG"] = "info"
    process = subprocess.Popen(
        [
            binary,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
            str(data),
            "--config",
            str(config),
            *extra,
        ],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    logs: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            logs.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    address = None
    while address is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            pytest.fail("mandate did not start listening in time:\n" + "".join(logs))
        if line is None:
            process.wait()
            pytest.fail(
                f"mandate exited ({process.returncode}) before listening:\n" + "".join(logs)
            )
        address = _listening(line)
    try:
        yield Server(f"http://{address}", idp, data, logs)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def approve_next(server: Server, task_id: str, *, deny: bool = False, timeout: float = 30.0) -> str:
    """As a person would, from another thread: waits for a pending approval
    of a call of task `task_id`, approves (or denies) it, returns its id."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=10) as http:
        headers = {"authorization": f"Bearer {APPROVER_TOKEN}"}
        while time.monotonic() < deadline:
            pending = http.get("/v1/approvals", params={"status": "pending"}, headers=headers)
            pending.raise_for_status()
            for item in pending.json()["items"]:
                if item.get("task_id") == task_id:
                    verb = "deny" if deny else "approve"
                    answer = http.post(
                        f"/v1/approvals/{item['id']}/{verb}",
                        headers=headers,
                        json={"reason": f"{verb} from the test"},
                    )
                    answer.raise_for_status()
                    return str(item["id"])
            time.sleep(0.1)
    raise AssertionError(f"no pending approval in task {task_id} within {timeout} s")
