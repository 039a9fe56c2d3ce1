"""Runs schemathesis against a live `mandate serve`, with and without each
kind of token, and fails on any finding.

    python3 tests/api/schemathesis_run.py MANDATE_BINARY [--max-examples N] [--seed N]

Started by scripts/schemathesis (which makes the virtual environment with
schemathesis, PyJWT and cryptography) and by .ci/run. The server runs on a
free loopback port with a data directory of its own, trusting a throwaway
identity provider (an Ed25519 key whose JWKS file is written here), with an
approver and a caller configured, so that every authenticated operation is
reachable. Each pass sends one kind of `Authorization` header on every
request:

    none        no header (the public endpoints, and 401s elsewhere)
    identity    the root agent's identity token (a JWT): task start and end
    credential  a task credential: decisions, results, delegation, exchange
    approver    an approver's token: the approval queue, tasks, receipts
    caller      a caller's token: decisions without a credential

Checks: not_a_server_error, status_code_conformance and
response_schema_conformance over every operation of the live OpenAPI
document. A fixed seed keeps runs reproducible; the number of examples per
operation is bounded. Exit 0 only when every pass found nothing.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER = "https://idp.schemathesis.test"
ROOT_AGENT = "spiffe://example.org/agent/planner"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_token(mandate, kind):
    """`mandate approvals token` / `mandate callers token`, as JSON."""
    args = [mandate, kind, "token", "--name", f"schemathesis-{kind}", "--json"]
    made = json.loads(subprocess.run(args, check=True, capture_output=True).stdout)
    return made["token"], made["token_sha256"]


def wait_healthy(base, server, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        if server.poll() is not None:
            raise SystemExit(f"mandate serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v1/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mandate serve did not answer /v1/health in time")


def post(base, path, token, body):
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"POST {path} answered {e.code}: {e.read().decode()}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mandate")
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    schemathesis = shutil.which("schemathesis") or os.path.join(
        os.path.dirname(sys.executable), "schemathesis"
    )

    work = tempfile.mkdtemp(prefix="mandate-schemathesis-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwks = os.path.join(work, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                             "kid": "st", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}]}, f)
    now = int(time.time())
    identity = jwt.encode({"iss": ISSUER, "sub": ROOT_AGENT, "aud": base, "iat": now,
                           "exp": now + 7200}, key, algorithm="EdDSA", headers={"kid": "st"})
    approver, approver_sha = new_token(args.mandate, "approvals")
    caller, caller_sha = new_token(args.mandate, "callers")
    config = os.path.join(work, "mandate.toml")
    with open(config, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\n'
                f'data_dir = {json.dumps(os.path.join(work, "data"))}\n'
                f'resource = "{base}"\n'
                f'\n[[issuers]]\nissuer = "{ISSUER}"\njwks_file = {json.dumps(jwks)}\n'
                f'\n[[approvers]]\nname = "auditor@example.com"\ntoken_sha256 = "{approver_sha}"\n'
                f'\n[[callers]]\nname = "schemathesis"\ntoken_sha256 = "{caller_sha}"\n')
    log = open(os.path.join(work, "serve.log"), "w")
    server = subprocess.Popen([args.mandate, "serve", "--config", config],
                              stdout=subprocess.DEVNULL, stderr=log,
                              env={**os.environ, "RUST_LOG": "warn"})
    failed = []
    try:
        wait_healthy(base, server)
        task = post(base, "/v1/tasks", identity, {
            "intent": "answer customer questions about their orders",
            "tools": ["mail/read_inbox", "mail/send_email", "web/fetch_url"],
            "ttl_seconds": 3600,
            "max_depth": 2,
        })
        passes = [
            ("none", None),
            ("identity", identity),
            ("credential", task["credential"]),
            ("approver", approver),
            ("caller", caller),
        ]
        for name, token in passes:
            command = [schemathesis, "run", f"{base}/v1/openapi.json",
                       "--checks", CHECKS,
                       "--max-examples", str(args.max_examples),
                       "--seed", str(args.seed),
                       "--workers", "1",
                       "--generation-database", "none",
                       "--no-color",
                       "--suppress-health-check", "all",
                       "--request-timeout", "30"]
            if token:
                command += ["--header", f"Authorization: Bearer {token}"]
            print(f"== schemathesis: {name}", flush=True)
            # In the scratch directory: schemathesis keeps a cache where it runs.
            if subprocess.run(command, cwd=work).returncode != 0:
                failed.append(name)
            if server.poll() is not None:
                failed.append(f"{name} (the server exited with {server.returncode})")
                break
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    if failed:
        print(f"schemathesis found problems in the passes: {', '.join(failed)}; "
              f"server log: {os.path.join(work, 'serve.log')}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("schemathesis: every pass clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
