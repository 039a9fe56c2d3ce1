"""Offline verification of real receipt bundles and checkpoints."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

import mandate
from conftest import Server
from mandate.verify import (
    VerifierKey,
    canonical_json,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_checkpoint,
    verify_consistency,
    verify_receipt_bundle,
)

REQUEST = {
    "principal": {"id": "spiffe://example.org/agent/mailer", "on_behalf_of": "alice@example.com"},
    "action": {"server": "mail", "tool": "send_email"},
    "arguments": {"to": "mallory@evil.example", "subject": "ünïcode ✓", "amount": 12.5},
    "context": {"task": {"id": "task-7", "tools": ["send_email"], "params": {}}},
}


@pytest.fixture(scope="module")
def bundles(server: Server) -> list[dict[str, Any]]:
    client = server.client()
    ids = [client.decide(REQUEST)["decision_id"] for _ in range(5)]
    return [dict(client.receipt(i)) for i in ids]


def test_real_bundles_verify_with_the_operators_key(
    server: Server, bundles: list[dict[str, Any]]
) -> None:
    key = server.verifier_key()
    for bundle in bundles:
        checkpoint = verify_receipt_bundle(bundle, key)
        assert checkpoint.size == bundle["inclusion_proof"]["tree_size"]
        assert checkpoint.origin == key.split("+")[0]
    # As the server sent it, text in, too.
    assert verify_receipt_bundle(json.dumps(bundles[0]), key).size >= 1
    assert bundles[0]["receipt"]["decision"] == "deny"


def test_the_checkpoint_verifies(server: Server) -> None:
    key = server.verifier_key()
    served = server.client().checkpoint()
    checkpoint = verify_checkpoint(served["note"], key)
    assert checkpoint.size == served["size"]
    assert base64.b64encode(checkpoint.root).decode() == served["root"]


def tampered(bundle: dict[str, Any], change: str) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    if change == "decision":
        out["receipt"]["decision"] = "allow"
    elif change == "argument":
        out["receipt"]["arguments"]["to"] = "carol@example.com"
    elif change == "index":
        out["receipt"]["index"] += 1
        out["inclusion_proof"]["index"] += 1
    elif change == "proof":
        hashes = out["inclusion_proof"]["hashes"]
        raw = bytearray(base64.b64decode(hashes[0]))
        raw[0] ^= 1
        hashes[0] = base64.b64encode(bytes(raw)).decode()
    elif change == "checkpoint":
        out["checkpoint"] = out["checkpoint"].replace(
            f"\n{out['inclusion_proof']['tree_size']}\n",
            f"\n{out['inclusion_proof']['tree_size'] + 1}\n",
            1,
        )
    elif change == "signature":
        out["signature"] = base64.b64encode(bytes(64)).decode()
    return out


@pytest.mark.parametrize(
    "change", ["decision", "argument", "index", "proof", "checkpoint", "signature"]
)
def test_a_tampered_bundle_is_refused(
    server: Server, bundles: list[dict[str, Any]], change: str
) -> None:
    key = server.verifier_key()
    bundle = bundles[2]
    verify_receipt_bundle(bundle, key)
    with pytest.raises(mandate.VerificationError):
        verify_receipt_bundle(tampered(bundle, change), key)


def test_a_duplicate_name_in_the_receipt_is_refused(
    server: Server, bundles: list[dict[str, Any]]
) -> None:
    text = json.dumps(bundles[0])
    forged = text.replace('"receipt": {', '"receipt": {"decision": "allow", ', 1)
    with pytest.raises(mandate.VerificationError, match="duplicate"):
        verify_receipt_bundle(forged, server.verifier_key())


def test_another_key_is_refused(server: Server, bundles: list[dict[str, Any]]) -> None:
    key = VerifierKey.parse(server.verifier_key())
    other = VerifierKey(key.name, key.key_id, bytes(32))
    with pytest.raises(mandate.VerificationError):
        verify_receipt_bundle(bundles[0], other)
    # The key id must match the key.
    text = server.verifier_key()
    name, key_id, raw = text.split("+", 2)
    with pytest.raises(mandate.VerificationError):
        VerifierKey.parse(f"{name}+{'00000000' if key_id != '00000000' else '11111111'}+{raw}")


def test_rfc6962_proofs_of_every_leaf_of_small_trees() -> None:
    # An independent check of the path walk: build trees of every size up
    # to 9 by RFC 6962's definition and prove every leaf.
    def mth(leaves: list[bytes]) -> bytes:
        if len(leaves) == 1:
            return leaf_hash(leaves[0])
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return node_hash(mth(leaves[:k]), mth(leaves[k:]))

    def path(m: int, leaves: list[bytes]) -> list[bytes]:
        if len(leaves) == 1:
            return []
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        if m < k:
            return [*path(m, leaves[:k]), mth(leaves[k:])]
        return [*path(m - k, leaves[k:]), mth(leaves[:k])]

    for size in range(1, 10):
        leaves = [bytes([i]) for i in range(size)]
        root = mth(leaves)
        for index in range(size):
            proof = path(index, leaves)
            assert root_from_inclusion_proof(index, size, leaf_hash(leaves[index]), proof) == root
            if proof:
                with pytest.raises(mandate.VerificationError):
                    root_from_inclusion_proof(index, size, leaf_hash(leaves[index]), proof[:-1])


def test_canonical_json_follows_rfc8785() -> None:
    # Keys sort by UTF-16 code units: U+1F600 (D83D DE00) before U+FF01.
    value = {"b": [1, 2.5, 1e21, 1e-7, -0.0], "a": "é\n\u0001", "\uff01": 1, "\U0001f600": 2}
    expected = '{"a":"é\\n\\u0001","b":[1,2.5,1e+21,1e-7,0],"\U0001f600":2,"\uff01":1}'
    assert canonical_json(value) == expected.encode()


def test_consistency_proofs_between_real_checkpoints_verify_and_tampering_fails(
    server: Server,
) -> None:
    key = server.verifier_key()
    client = server.client()
    # A checkpoint after each of several decisions: sizes with and without
    # powers of two, so that every branch of the check is taken.
    checkpoints = []
    for _ in range(9):
        client.decide(REQUEST)
        checkpoints.append(verify_checkpoint(client.checkpoint()["note"], key))
    sizes = [c.size for c in checkpoints]
    assert sizes == sorted(set(sizes)), sizes
    for i, old in enumerate(checkpoints):
        for later in checkpoints[i:]:
            verify_consistency(old, later, client.consistency(old.size, later.size))
    old, new = checkpoints[1], checkpoints[-1]
    proof: dict[str, Any] = dict(client.consistency(old.size, new.size))
    # A changed hash, a proof for other sizes, the checkpoints swapped.
    bad = copy.deepcopy(proof)
    raw = bytearray(base64.b64decode(bad["hashes"][0]))
    raw[0] ^= 1
    bad["hashes"][0] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(mandate.VerificationError):
        verify_consistency(old, new, bad)
    with pytest.raises(mandate.VerificationError):
        verify_consistency(checkpoints[0], new, proof)
    with pytest.raises(mandate.VerificationError):
        verify_consistency(new, old, proof)
    # A checkpoint whose root is not the log's at its size (another log's,
    # or a rewritten one) does not extend.
    forged = mandate.verify.Checkpoint(old.origin, old.size, b"\x00" * 32, old.note)
    with pytest.raises(mandate.VerificationError):
        verify_consistency(forged, new, proof)
