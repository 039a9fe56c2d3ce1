#!/usr/bin/env python3
"""Verify a Mandate task credential with biscuit-python, independently of Mandate.

This is what a tool does offline with nothing but Mandate's public key: parse
the Biscuit token (checking every signature), give the authorizer the facts of
the call about to happen, and let the token's own checks decide.

Usage:
    verify_credential.py --public-key HEX --tool SERVER/TOOL --audience AUD \
        [--now UNIX_SECONDS] [--label LABEL ...] [--token TOKEN]

The token is read from --token or, if absent, from stdin. Prints one JSON
object: {"ok": true, "task": ..., "hops": [[agent, depth], ...]} or
{"ok": false, "error": "..."}. Exit status 0 either way; 2 if biscuit-python
is missing.

Requires biscuit-python==0.4.0: scripts/test installs it into the virtual
environment <target>/test-venv, which the Rust test runs this script with.
"""

import argparse
import datetime
import json
import sys

PIP_LINE = "scripts/test (it installs biscuit-python==0.4.0 into <target>/test-venv)"

try:
    from biscuit_auth import AuthorizerBuilder, Biscuit, PublicKey, Rule
except ImportError as exc:  # pragma: no cover - exercised by the Rust test
    print(json.dumps({"ok": False, "error": f"biscuit_auth not importable ({exc}); run: {PIP_LINE}"}))
    sys.exit(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public-key", required=True, help="Mandate's public key, hex (ed25519/ prefix allowed)")
    parser.add_argument("--tool", required=True, help="the tool being called, server/tool")
    parser.add_argument("--audience", required=True, help="the audience this verifier accepts")
    parser.add_argument("--now", type=int, help="current time, Unix seconds (default: the clock)")
    parser.add_argument("--label", action="append", default=[], help="a data label the call touches (repeatable)")
    parser.add_argument("--token", help="the credential (default: read from stdin)")
    args = parser.parse_args()

    token = (args.token if args.token is not None else sys.stdin.read()).strip()
    key_hex = args.public_key.strip()
    if key_hex.startswith("ed25519/"):
        key_hex = key_hex[len("ed25519/"):]
    now = (
        datetime.datetime.fromtimestamp(args.now, tz=datetime.timezone.utc)
        if args.now is not None
        else datetime.datetime.now(tz=datetime.timezone.utc)
    )

    try:
        # biscuit-python 0.4 wants the algorithm prefix: "ed25519/<hex>".
        public_key = PublicKey(f"ed25519/{key_hex}")
        biscuit = Biscuit.from_base64(token, public_key)
    except Exception as exc:  # signature, format or key errors
        print(json.dumps({"ok": False, "error": f"token rejected: {type(exc).__name__}: {exc}"}))
        return 0

    # Only Mandate-signed blocks: the authority block, and third-party blocks
    # signed by Mandate's key. A holder-appended block is refused.
    for index in range(1, biscuit.block_count()):
        external = biscuit.block_external_key(index)
        # (biscuit-python 0.4 returns a PublicKey here, though its stubs say str.)
        if external is None or bytes(external.to_bytes()) != bytes(public_key.to_bytes()):
            print(json.dumps({"ok": False, "error": f"block {index} was not signed by Mandate"}))
            return 0

    builder = AuthorizerBuilder(
        "time({now}); tool({tool}); audience({audience}); allow if task($task);",
        {"now": now, "tool": args.tool, "audience": args.audience},
    )
    for label in args.label:
        builder.add_code("label({label});", {"label": label})
    # biscuit's default time limit (1 ms) is below a busy machine's scheduling
    # jitter, so a valid token could be refused for being slow to check. Use
    # the limits Mandate's own verifier uses (DatalogLimits::default()).
    limits = builder.limits()
    limits.max_facts = 10_000
    limits.max_iterations = 100
    limits.max_time = datetime.timedelta(milliseconds=50)
    builder.set_limits(limits)

    try:
        authorizer = builder.build(biscuit)
        authorizer.authorize()
    except Exception as exc:  # a failed check, no matching policy, or a run limit
        print(json.dumps({"ok": False, "error": f"denied: {type(exc).__name__}: {exc}"}))
        return 0

    task = [f.terms[0] for f in authorizer.query(Rule("data($t) <- task($t)"))]
    hops = authorizer.query(
        Rule(
            "data($agent, $depth) <- hop($agent, $depth) trusting authority, {key}",
            None,
            {"key": public_key},
        )
    )
    chain = sorted(([f.terms[0], f.terms[1]] for f in hops), key=lambda hop: hop[1])
    print(json.dumps({"ok": True, "task": task[0] if task else None, "hops": chain}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
