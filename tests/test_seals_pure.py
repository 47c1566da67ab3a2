"""Leaves, the Merkle Tree Hash and seals, against published vectors and an independent check."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys import SigningKey
from gateway.model import AlarmEvent, Gap, Sample
from gateway.seals import items, merkle
from gateway.seals.seal import (
    FIRST_PREV,
    SealInput,
    chain_hash,
    make_seal,
    signature_ok,
    signed_bytes,
)
from gateway.uplink import json_format

# transparency-dev/merkle testonly/constants.go (from Certificate Transparency's C++ tests)
LEAF_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", range(1, 9))
def test_merkle_tree_hash_matches_certificate_transparency_vectors(size: int) -> None:
    leaves = [merkle.leaf_hash(data) for data in LEAF_INPUTS[:size]]
    assert merkle.root(leaves).hex() == ROOTS[size - 1]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.root([]).hex() == EMPTY_ROOT


def _reference_mth(data: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 written out from the text, over raw leaf data."""
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(data[:k]) + _reference_mth(data[k:])).digest()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 9, 16, 17, 100, 1000])
def test_merkle_tree_hash_matches_the_rfc_text_for_any_size(size: int) -> None:
    data = [i.to_bytes(4, "big") for i in range(size)]
    assert merkle.root([merkle.leaf_hash(d) for d in data]) == _reference_mth(data)


# golden: an item, its canonical bytes and leaf hash (the same vector is in docs/transparency.md)
GOLDEN_SAMPLE = Sample("meter-1", 1760000000000, {"power_w": 1234.5, "ok": True, "n": 7})
GOLDEN_BYTES = (
    b'{"device":"meter-1","seq":42,"ts":1760000000000,"values":{"n":7,"ok":true,"power_w":1234.5}}'
)


def test_golden_sample_canonical_bytes_and_leaf() -> None:
    obj = items.sample_object(42, GOLDEN_SAMPLE)
    assert items.canonical(obj) == GOLDEN_BYTES
    assert items.stored_leaf(42, GOLDEN_SAMPLE) == hashlib.sha256(b"\x00" + GOLDEN_BYTES).digest()


def test_the_gateway_leaf_equals_the_leaf_a_reader_computes_from_the_published_json() -> None:
    """What the buffer hashes is what format json publishes, read back as JSON by anyone."""
    unsynced = Sample("dev ü", 1, {"t": 0.1, "big": 1e21, "neg": -0.0, "s": "a\u2028b"}, False)
    message = json.loads(json_format.samples_message("gw", [], historical=False))
    assert message["samples"] == []
    for seq, sample in [(1, GOLDEN_SAMPLE), (2, unsynced)]:
        published = json.loads(json_format.sample_json(seq, sample))
        assert items.leaf_of("sample", published) == items.stored_leaf(seq, sample)
    event = AlarmEvent("river/level>3.2", "raised", 3.25, "critical", 5)
    payload = json.loads(json_format.alarm_message("gw", 9, event))
    assert "gateway" in payload
    assert items.leaf_of("alarm", payload) == items.stored_leaf(9, event)
    gap = Gap(1, 10, 20, 11, "evicted_max_size")
    payload = json.loads(json_format.gap_message("gw", gap))
    assert items.item_object("gap", payload) == {
        "from_seq": 10,
        "to_seq": 20,
        "reason": "evicted_max_size",
    }
    assert items.leaf_of("gap", payload) == items.gap_leaf(gap)


def test_crash_leaf_bytes() -> None:
    assert (
        items.canonical(items.crash_object(5, 9)) == b'{"from_seq":5,"to_seq":9,"unsealed":"crash"}'
    )


def _seal(key: SigningKey, n: int, prev: str) -> dict[str, object]:
    leaves = [items.stored_leaf(s, GOLDEN_SAMPLE) for s in range(10, 13)]
    return make_seal("gw-1", key, SealInput(n, 10, 12, leaves, [], prev, 1760000000123))


def test_seal_signature_covers_every_field_and_chains() -> None:
    key = SigningKey(bytes(range(32)))
    first = _seal(key, 1, FIRST_PREV)
    assert signature_ok(first, key.public)
    assert first["prev"] == FIRST_PREV and first["leaves"] == 3 and first["unsealed"] == []
    assert signed_bytes(first) == rfc8785.dumps({k: v for k, v in first.items() if k != "sig"})
    assert b'"sig"' not in signed_bytes(first)
    for field, value in [("root", "00" * 32), ("to_seq", 13), ("n", 2), ("unsealed", [[1, 2]])]:
        assert not signature_ok(first | {field: value}, key.public), field
    second = _seal(key, 2, chain_hash(first))
    assert second["prev"] == hashlib.sha256(signed_bytes(first)).hexdigest()
    assert not signature_ok(first, SigningKey(bytes(32)).public)
    assert not signature_ok(first | {"sig": "not base64!"}, key.public)


def test_an_integer_beyond_2_53_is_sealed_with_its_exact_digits() -> None:
    """An SNMP Counter64 is published exactly; its leaf is over the same digits."""
    sample = Sample("ups", 5, {"octets": 2**64 - 1, "n": [2**60, -(2**60)]})
    published = json.loads(json_format.sample_json(3, sample))
    assert items.canonical(published) == (
        b'{"device":"ups","seq":3,"ts":5,"values":{"n":[1152921504606846976,'
        b'-1152921504606846976],"octets":18446744073709551615}}'
    )
    assert items.leaf_of("sample", published) == items.stored_leaf(3, sample)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 1e-4, 9.999e-5, 1e16, 1e21, -0.0, 123.0, 5e-324, 1.7976931348623157e308]),
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x3F)),
)
_objects = st.recursive(
    _values,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _objects, max_size=6))
def test_the_fast_canonical_path_writes_exactly_what_rfc8785_writes(obj: dict[str, object]) -> None:
    try:
        expected = rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError:  # lone surrogates: neither path may make bytes
        with pytest.raises((rfc8785.CanonicalizationError, UnicodeEncodeError)):
            items.canonical(obj)
        return
    assert items.canonical(obj) == expected
