"""RFC 9162 §2.1: leaf hashes and the Merkle Tree Hash of a list of leaves. Pure.

A leaf is SHA-256(0x00 ‖ bytes), an interior node SHA-256(0x01 ‖ left ‖ right), and a tree of
n > 1 leaves splits at the largest power of two below n, exactly as Certificate Transparency
does, so any RFC 9162 library computes the same root from the same leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of ``leaves`` (already leaf hashes); SHA-256 of nothing when empty."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _subtree(leaves, 0, len(leaves))


def _subtree(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    n = end - start
    if n == 1:
        return leaves[start]
    split = 1 << ((n - 1).bit_length() - 1)  # the largest power of two below n
    return node_hash(_subtree(leaves, start, start + split), _subtree(leaves, start + split, end))
