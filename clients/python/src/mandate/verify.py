"""Offline verification of Mandate's receipts and checkpoints.

Nothing here talks to the server: give it a receipt bundle (as
`GET /v1/receipts/{decision_id}` or `mandate receipts prove` return it) or a
checkpoint (`GET /v1/checkpoint`) and the log's verifier key, obtained from
the operator (`mandate keys show`), never from the bundle itself.

The formats (docs/receipts.md): a receipt is signed (Ed25519) over
`"mandate receipt v1\\n"` followed by its RFC 8785 canonical JSON; those
bytes are a leaf of an RFC 6962 Merkle tree; the tree head is a C2SP
`tlog-checkpoint` in a C2SP signed note; the verifier key is
`<origin>+<key id hex>+<base64(0x01 || public key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._errors import VerificationError

RECEIPT_SIGNATURE_CONTEXT = b"mandate receipt v1\n"
_ED25519 = 0x01
_SIGNATURE_PREFIX = "\u2014 "


@dataclass(frozen=True)
class VerifierKey:
    """A log's verifier key: its origin (the key's name), 4-byte key id and
    Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not parts[0]:
            raise VerificationError(f"not a verifier key (`name+id+key`): {text!r}")
        name, hex_id, encoded = parts
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as e:
            raise VerificationError(f"malformed verifier key {text!r}: {e}") from e
        if len(key_id) != 4 or len(raw) != 33 or raw[0] != _ED25519:
            raise VerificationError(f"not an Ed25519 verifier key: {text!r}")
        key = cls(name, key_id, raw[1:])
        if key.computed_id() != key_id:
            raise VerificationError(f"the verifier key's id does not match its key: {text!r}")
        return key

    def computed_id(self) -> bytes:
        digest = hashlib.sha256(
            self.name.encode() + b"\n" + bytes([_ED25519]) + self.public_key
        ).digest()
        return digest[:4]

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the log's origin, its size and Merkle root."""

    origin: str
    size: int
    root: bytes
    note: str


def _key(key: str | VerifierKey) -> VerifierKey:
    return key if isinstance(key, VerifierKey) else VerifierKey.parse(key)


def verify_checkpoint(note: str, key: str | VerifierKey) -> Checkpoint:
    """Checks a checkpoint's signed note with the log's verifier key and
    returns what it says. Raises `VerificationError` unless the note carries
    a valid signature by that key and is a checkpoint of that log."""
    verifier = _key(key)
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise VerificationError("malformed checkpoint: not a signed note")
    text, signatures = note[: split + 1], note[split + 2 :]
    signed = False
    for line in signatures.splitlines():
        if not line.startswith(_SIGNATURE_PREFIX):
            raise VerificationError(f"malformed signature line: {line!r}")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if name != verifier.name:
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as e:
            raise VerificationError(f"malformed signature line: {line!r}") from e
        if raw[:4] == verifier.key_id and verifier.verify(raw[4:], text.encode()):
            signed = True
    if not signed:
        raise VerificationError(
            f"no valid signature by {verifier.name}: the checkpoint was not signed by this key"
        )
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise VerificationError("malformed checkpoint: origin, size and root expected")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if origin != verifier.name:
        raise VerificationError(f"checkpoint is for log `{origin}`, expected `{verifier.name}`")
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise VerificationError(f"malformed checkpoint size: {size_text!r}")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise VerificationError(f"malformed checkpoint root: {root_text!r}") from e
    if len(root) != 32:
        raise VerificationError("malformed checkpoint root: not 32 bytes")
    return Checkpoint(origin, int(size_text), root, note)


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """The root an RFC 6962 audit path leads to (RFC 9162, section 2.1.3.2).
    Raises `VerificationError` if the path cannot be one of a tree of `size`."""
    if index < 0 or index >= size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise VerificationError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_consistency(
    old: Checkpoint, new: Checkpoint, proof: Mapping[str, Any] | list[bytes]
) -> None:
    """Checks that checkpoint `new` extends checkpoint `old` without rewriting
    any receipt, with the RFC 6962 consistency proof between their sizes (as
    `GET /v1/proofs/consistency?from=OLD&to=NEW` returns it, or its hashes
    decoded). Verify both checkpoints with the log's key first
    (`verify_checkpoint`). Raises `VerificationError` if the proof does not
    lead from `old`'s root to `new`'s (RFC 9162, section 2.1.4.2)."""
    if old.origin != new.origin:
        raise VerificationError(
            f"the checkpoints are of two logs (`{old.origin}` and `{new.origin}`)"
        )
    if isinstance(proof, Mapping):
        if proof.get("from") != old.size or proof.get("to") != new.size:
            raise VerificationError(
                f"the proof is from size {proof.get('from')} to {proof.get('to')}, "
                f"not from {old.size} to {new.size}"
            )
        raw = proof.get("hashes")
        if not isinstance(raw, list):
            raise VerificationError("the proof has no list of `hashes`")
        hashes = [_b64(h, "a consistency proof hash") for h in raw]
    else:
        hashes = list(proof)
    if any(len(h) != 32 for h in hashes):
        raise VerificationError("a consistency proof hash is not 32 bytes")
    first, second = old.size, new.size
    if first > second:
        raise VerificationError(f"size {second} cannot extend the larger size {first}")
    if first == second:
        if hashes or old.root != new.root:
            raise VerificationError("two checkpoints of one size must have one root and no proof")
        return
    if first == 0:
        # Every tree extends the empty one.
        if hashes:
            raise VerificationError("a proof from the empty tree must be empty")
        return
    if not hashes:
        raise VerificationError("the consistency proof is empty")
    if first & (first - 1) == 0:
        hashes = [old.root, *hashes]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the consistency proof is shorter than the tree is deep")
    if fr != old.root:
        raise VerificationError(
            "the consistency proof does not lead to the older checkpoint's root"
        )
    if sr != new.root:
        raise VerificationError(
            "the consistency proof does not lead to the newer checkpoint's root"
        )


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of a parsed JSON value."""
    return _canonical(value).encode()


def _canonical(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2**53:
            # JCS writes numbers as IEEE doubles.
            return _number(float(value))
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: str(k).encode("utf-16-be"))
        items = (f"{json.dumps(str(k), ensure_ascii=False)}:{_canonical(value[k])}" for k in keys)
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    raise VerificationError(f"not JSON: {type(value).__name__}")


def _number(value: float) -> str:
    """ECMAScript's Number.prototype.toString, as RFC 8785 requires."""
    if not math.isfinite(value):
        raise VerificationError("JSON has no NaN or infinity")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, _, exponent = text.partition("e")
    if mantissa.endswith(".0"):
        mantissa = mantissa[:-2]
    power = int(exponent)
    if -7 < power < 21:
        # Within ECMAScript's fixed-notation range: write it out.
        return format(value, "f").rstrip("0").rstrip(".")
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise VerificationError(f"{what} is not valid base64") from e


def verify_receipt_bundle(
    bundle: Mapping[str, Any] | str | bytes, key: str | VerifierKey
) -> Checkpoint:
    """Checks a receipt bundle offline with the log's verifier key: the
    receipt's signature, its checkpoint's signature, and the inclusion proof
    of the receipt in that checkpoint's tree. Returns the checkpoint; raises
    `VerificationError` naming what does not verify.

    The bundle's own `verifier_key` is ignored: pass the key you trust."""
    if isinstance(bundle, (str, bytes)):
        try:
            bundle = json.loads(bundle, object_pairs_hook=_unique)
        except ValueError as e:
            raise VerificationError(f"the bundle is not valid JSON: {e}") from e
    if not isinstance(bundle, Mapping):
        raise VerificationError("the bundle is not a JSON object")
    verifier = _key(key)
    receipt = bundle.get("receipt")
    if not isinstance(receipt, Mapping):
        raise VerificationError("the bundle has no receipt object")
    canonical = canonical_json(receipt)
    signature = _b64(bundle.get("signature"), "the receipt's signature")
    if not verifier.verify(signature, RECEIPT_SIGNATURE_CONTEXT + canonical):
        raise VerificationError(
            "the receipt's signature does not verify: the receipt was changed or forged"
        )
    proof = bundle.get("inclusion_proof")
    if not isinstance(proof, Mapping):
        raise VerificationError("the bundle has no inclusion proof")
    index, size, hashes = proof.get("index"), proof.get("tree_size"), proof.get("hashes")
    if not isinstance(index, int) or not isinstance(size, int) or not isinstance(hashes, list):
        raise VerificationError("malformed inclusion proof")
    if receipt.get("index") != index:
        raise VerificationError(
            f"the receipt says index {receipt.get('index')}, the proof is for index {index}"
        )
    note = bundle.get("checkpoint")
    if not isinstance(note, str):
        raise VerificationError("the bundle has no checkpoint")
    checkpoint = verify_checkpoint(note, verifier)
    if checkpoint.size != size:
        raise VerificationError(
            f"the proof is against tree size {size}, the checkpoint has size {checkpoint.size}"
        )
    path = [_b64(h, "a proof hash") for h in hashes]
    root = root_from_inclusion_proof(index, size, leaf_hash(canonical), path)
    if root != checkpoint.root:
        raise VerificationError("the inclusion proof does not verify against the checkpoint's root")
    return checkpoint


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8785 input has unique names: a receipt with a second
    # "decision" before its signed one must not pass.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise VerificationError(f"duplicate key `{k}` in the bundle")
        out[k] = v
    return out


__all__ = [
    "Checkpoint",
    "VerifierKey",
    "canonical_json",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "verify_checkpoint",
    "verify_receipt_bundle",
]
