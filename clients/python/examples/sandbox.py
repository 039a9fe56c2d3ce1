"""A throwaway Mandate for the examples: `mandate serve` on a free port, in a
temporary directory, trusting an identity provider made up here.

Real deployments have an identity provider (SPIFFE, an OIDC issuer) that
gives each agent its token; here an Ed25519 key generated on the spot signs
the agents' JWTs and its JWKS is the file the server's config names. The
server is the `mandate` binary that `MANDATE_BIN` names, else the one on the
PATH (`cargo install --path crates/mandate --locked`). It runs the example
policy pack, which it writes into its data directory on first start.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ISSUER = "https://idp.example"
RESOURCE = "https://mandate.example"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Sandbox:
    """A running server and the identity provider it trusts."""

    url: str
    key: Ed25519PrivateKey

    def identity_token(self, agent: str, person: str = "alice@example.com") -> str:
        """An identity token for `agent`, acting for `person`."""
        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "JWT", "kid": "example-idp"}
        claims = {
            "iss": ISSUER,
            "sub": agent,
            "aud": RESOURCE,
            "iat": now - 5,
            "exp": now + 600,
            "obo": person,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        return signing_input + "." + _b64url(self.key.sign(signing_input.encode()))


def _binary() -> str:
    found = os.environ.get("MANDATE_BIN") or shutil.which("mandate")
    if not found:
        raise SystemExit(
            "no `mandate` binary: set MANDATE_BIN, or run "
            "`cargo install --path crates/mandate --locked` from the repository"
        )
    return found


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Starts the server; stops it and removes its directory on exit."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with tempfile.TemporaryDirectory(prefix="mandate-example-") as root:
        jwks = Path(root) / "idp-jwks.json"
        jwks.write_text(
            json.dumps(
                {
                    "keys": [
                        {
                            "kty": "OKP",
                            "crv": "Ed25519",
                            "alg": "EdDSA",
                            "kid": "example-idp",
                            "x": _b64url(public),
                        }
                    ]
                }
            )
        )
        config = Path(root) / "mandate.toml"
        config.write_text(
            f'resource = "{RESOURCE}"\n\n[[issuers]]\nissuer = "{ISSUER}"\n'
            f'jwks_file = {json.dumps(str(jwks))}\non_behalf_of_claim = "obo"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
        env["RUST_LOG"] = "info"
        process = subprocess.Popen(
            [
                _binary(),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
                str(Path(root) / "data"),
                "--config",
                str(config),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            yield Sandbox(_wait_until_listening(process), key)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_listening(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == "mandate is listening" and fields.get("address"):
            # Keep reading the log in the background, so that the server
            # never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process,), daemon=True).start()
            return f"http://{fields['address']}"
    raise SystemExit(f"mandate exited ({process.wait()}) before listening")


def _drain(process: subprocess.Popen[str]) -> None:
    for _ in process.stderr or []:
        pass
