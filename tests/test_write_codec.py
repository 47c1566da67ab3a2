"""The exact encoder of writes (``codec.writes``): golden vectors both ways, refusals, and a
round-trip property: whatever it encodes decodes back to the very value asked for."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.registers import decode
from gateway.codec.writes import Encoded, Refused, encode_exact, set_bit
from gateway.sources.modbus.points import ModbusPoint


def point(type_: str, table: str = "holding", **keys: object) -> ModbusPoint:
    return ModbusPoint.model_validate(
        {"name": "p", "table": table, "address": 10, "type": type_, **keys}
    )


# (type, byte order, scale, offset, value, the registers on the wire)
GOLDEN = [
    ("uint16", "ABCD", 1.0, 0.0, 0x0102, (0x0102,)),
    ("int16", "ABCD", 1.0, 0.0, -2, (0xFFFE,)),
    ("int16", "ABCD", 0.1, 0.0, 23.7, (237,)),
    ("uint16", "ABCD", 0.5, -40.0, -20.0, (40,)),
    ("int32", "ABCD", 1.0, 0.0, 0x01020304, (0x0102, 0x0304)),
    ("int32", "CDAB", 1.0, 0.0, 0x01020304, (0x0304, 0x0102)),
    ("int32", "BADC", 1.0, 0.0, 0x01020304, (0x0201, 0x0403)),
    ("int32", "DCBA", 1.0, 0.0, 0x01020304, (0x0403, 0x0201)),
    ("uint32", "ABCD", 0.01, 0.0, 1234.56, (0x0001, 0xE240)),
    ("float32", "ABCD", 1.0, 0.0, 12.5, (0x4148, 0x0000)),
    ("float32", "CDAB", 1.0, 0.0, 12.5, (0x0000, 0x4148)),
    ("float32", "BADC", 1.0, 0.0, 12.3, (0x4441, 0xCDCC)),
    ("float32", "DCBA", 1.0, 0.0, 12.3, (0xCDCC, 0x4441)),
    ("int64", "ABCD", 1.0, 0.0, 0x0102030405060708, (0x0102, 0x0304, 0x0506, 0x0708)),
    ("int64", "CDAB", 1.0, 0.0, 0x0102030405060708, (0x0708, 0x0506, 0x0304, 0x0102)),
    ("uint64", "DCBA", 1.0, 0.0, 0x0102030405060708, (0x0807, 0x0605, 0x0403, 0x0201)),
    ("float64", "ABCD", 1.0, 0.0, 1.5, (0x3FF8, 0, 0, 0)),
    ("float64", "BADC", 1.0, 0.0, 1.5, (0xF83F, 0, 0, 0)),
]


Golden = tuple[str, str, float, float, float, tuple[int, ...]]


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_vectors_both_ways(case: Golden) -> None:
    type_, order, scale, offset, value, words = case
    p = point(type_, byte_order=order, scale=scale, offset=offset)
    encoded = encode_exact(p, value)
    assert encoded == Encoded("holding", 10, words)
    assert encoded.function == (6 if len(words) == 1 else 16)
    assert decode(p, list(words)) == value


def test_a_coil_is_function_5_and_a_bit_names_its_bit() -> None:
    coil = encode_exact(point("bool", "coil"), True)
    assert coil == Encoded("coil", 10, (1,)) and coil.function == 5
    assert encode_exact(point("bool", "coil"), False).words == (0,)
    bit = encode_exact(point("bool", bit=3), True)
    assert bit == Encoded("holding", 10, (1,), 3)
    assert encode_exact(point("bool"), True) == Encoded("holding", 10, (1,))


def test_set_bit_changes_only_that_bit() -> None:
    assert set_bit(0b1010_0000_0000_0101, 1, True) == 0b1010_0000_0000_0111
    assert set_bit(0b1010_0000_0000_0111, 0, False) == 0b1010_0000_0000_0110
    assert set_bit(0xFFFF, 15, False) == 0x7FFF


def test_strings_both_byte_orders() -> None:
    ab = point("string", length=2)
    assert encode_exact(ab, "SLOW").words == (0x534C, 0x4F57)
    ba = point("string", length=2, byte_order="BA")
    assert encode_exact(ba, "SLOW").words == (0x4C53, 0x574F)
    assert encode_exact(ab, "AB").words == (0x4142, 0)


@pytest.mark.parametrize(
    ("keys", "value", "reason"),
    [
        ({"type": "uint16"}, 70000, "out_of_range"),
        ({"type": "uint16"}, -1, "out_of_range"),
        ({"type": "int16"}, 0.5, "out_of_range"),
        ({"type": "int16", "scale": 0.1}, 23.75, "out_of_range"),  # never rounded to 23.7/23.8
        ({"type": "uint16", "scale": 0.5, "offset": -40}, -20.2, "out_of_range"),
        ({"type": "float32"}, 1e39, "out_of_range"),
        ({"type": "float32"}, 0.1 + 0.2, "out_of_range"),  # 0.30000000000000004 is no float32
        ({"type": "float32"}, 1e-50, "out_of_range"),
        ({"type": "string", "length": 1}, "ABC", "out_of_range"),
        ({"type": "string", "length": 2}, "né", "out_of_range"),
        ({"type": "string", "length": 2}, "AB ", "out_of_range"),  # the space would be lost
        ({"type": "uint16"}, True, "bad_request"),
        ({"type": "uint16"}, "12", "bad_request"),
        ({"type": "float32"}, math.nan, "bad_request"),
        ({"type": "bool"}, 1, "bad_request"),
        ({"type": "string", "length": 2}, 12, "bad_request"),
    ],
)
def test_unrepresentable_values_are_refused(
    keys: dict[str, object], value: object, reason: str
) -> None:
    with pytest.raises(Refused) as caught:
        encode_exact(point(str(keys.pop("type")), **keys), value)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_read_only_tables_refuse() -> None:
    with pytest.raises(Refused) as caught:
        encode_exact(point("uint16", "input"), 1)
    assert caught.value.reason == "not_writable"


ORDERS = st.sampled_from(["ABCD", "DCBA", "BADC", "CDAB"])


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64"]),
    order=ORDERS,
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.5, 2.0, 10.0, -1.0]),
    offset=st.sampled_from([0.0, -40.0, 273.15, 0.5]),
    raw=st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
)
def test_every_decoded_integer_value_encodes_back(
    type_: str, order: str, scale: float, offset: float, raw: int
) -> None:
    """Every value a sample can show for an integer point can be written back exactly."""
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "int64": ">q", "uint64": ">Q"}[type_]  # fmt: skip
    try:
        data = struct.pack(fmt, raw)
    except struct.error:
        return
    p = point(type_, byte_order=order, scale=scale, offset=offset)
    wire = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if p.width > 1:
        wire = {"ABCD": wire, "CDAB": wire[::-1],
                "BADC": [((w & 0xFF) << 8) | (w >> 8) for w in wire],
                "DCBA": [((w & 0xFF) << 8) | (w >> 8) for w in wire[::-1]]}[order]  # fmt: skip
    value = decode(p, wire)
    try:
        encoded = encode_exact(p, value)
    except Refused as exc:
        # past 15 significant digits a scaled value (a double) no longer names one register
        # value exactly: it is refused rather than written as a neighbour
        assert exc.reason == "out_of_range"
        assert isinstance(value, float) and abs(value) >= 1e12
        return
    assert decode(p, list(encoded.words)) == value
    if scale == 1.0 and offset == 0.0:
        assert list(encoded.words) == wire


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(["float32", "float64"]),
    order=ORDERS,
    value=st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.floats(allow_nan=False, allow_infinity=False),
    scale=st.sampled_from([1.0, 0.1, 2.0]),
)
def test_a_float_encodes_exactly_or_is_refused(
    type_: str, order: str, value: float, scale: float
) -> None:
    p = point(type_, byte_order=order, scale=scale)
    try:
        encoded = encode_exact(p, value)
    except Refused as exc:
        assert exc.reason == "out_of_range"
        return
    assert decode(p, list(encoded.words)) == value


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8))
def test_a_string_round_trips(text: str) -> None:
    p = point("string", length=4)
    assert decode(p, list(encode_exact(p, text).words)) == text
