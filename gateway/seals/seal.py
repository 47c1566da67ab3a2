"""The seal object: what is signed, how seals chain, and how one is checked. Pure.

``{"gateway", "n", "from_seq", "to_seq", "leaves", "root", "prev", "unsealed", "ts", "key",
"sig"}``: ``root`` the RFC 9162 root of the leaves of seqs ``from_seq..to_seq``; ``prev`` the
SHA-256 of the previous seal's signed bytes (64 zeros for n = 1); ``sig`` the Ed25519 signature
of the JCS bytes of the object without ``sig`` (its *signed bytes*).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from gateway.keys import PublicKey, SigningKey
from gateway.seals.merkle import root

FIRST_PREV = "0" * 64
MAX_LEAVES = 10_000  # a seal is made at once when this many leaves wait


def signed_bytes(seal: Mapping[str, Any]) -> bytes:
    """The JCS bytes of the seal object without ``sig``."""
    return rfc8785.dumps({key: value for key, value in seal.items() if key != "sig"})


def chain_hash(seal: Mapping[str, Any]) -> str:
    """What the next seal's ``prev`` is."""
    return hashlib.sha256(signed_bytes(seal)).hexdigest()


@dataclass(frozen=True, slots=True)
class SealInput:
    """What the buffer decides: the range, its leaves in seq order, and its crash ranges."""

    n: int
    from_seq: int
    to_seq: int
    leaves: Sequence[bytes]
    unsealed: Sequence[tuple[int, int]]
    prev: str
    ts_ms: int


def make_seal(gateway: str, key: SigningKey, what: SealInput) -> dict[str, Any]:
    seal: dict[str, Any] = {
        "gateway": gateway,
        "n": what.n,
        "from_seq": what.from_seq,
        "to_seq": what.to_seq,
        "leaves": len(what.leaves),
        "root": root(what.leaves).hex(),
        "prev": what.prev,
        "unsealed": [[a, b] for a, b in what.unsealed],
        "ts": what.ts_ms,
        "key": key.public.fingerprint,
    }
    seal["sig"] = base64.b64encode(key.sign(signed_bytes(seal))).decode("ascii")
    return seal


def signature_ok(seal: Mapping[str, Any], key: PublicKey) -> bool:
    sig = seal.get("sig")
    if not isinstance(sig, str):
        return False
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        message = signed_bytes(seal)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return False
    return key.verifies(message, raw)
