"""Register decoding (golden vectors) and request planning (exact plans)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.registers import (
    DecodeError,
    ReadLimits,
    ReadRequest,
    RequestDecoder,
    decode,
    decode_bits,
    decode_request,
    encode,
    halve_request,
    plan_device,
    plan_requests,
)
from gateway.model import Value
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.sim import PROFILE_NAMES, profile_points


def point(type_: str, address: int = 0, table: str = "holding", **kw: Any) -> ModbusPoint:
    return ModbusPoint(name=kw.pop("name", f"p{address}"), table=table, address=address,
                       type=type_, **kw)  # fmt: skip


def decode_block(points: Sequence[ModbusPoint], words: Sequence[int]) -> dict[str, Value]:
    """What RequestDecoder stores for the block of points read in one request, which decodes
    without an error."""
    (request,) = plan_requests(points)
    values: dict[str, Value] = {}
    assert not RequestDecoder(request, points).decode_into(words, values)
    return values


# words in, value out -- [0x0102, 0x0304] means bytes 01 02 03 04 on the wire
GOLDEN = [
    ("int16", "ABCD", [0x0102], 258),
    ("int16", "DCBA", [0x0102], 258),  # one register: byte_order does not apply
    ("int16", "ABCD", [0xFFFF], -1),
    ("uint16", "ABCD", [0xFFFF], 65535),
    ("uint16", "ABCD", [0x8000], 32768),
    ("int16", "ABCD", [0x8000], -32768),
    ("uint32", "ABCD", [0x0102, 0x0304], 0x01020304),
    ("uint32", "CDAB", [0x0102, 0x0304], 0x03040102),
    ("uint32", "BADC", [0x0102, 0x0304], 0x02010403),
    ("uint32", "DCBA", [0x0102, 0x0304], 0x04030201),
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    ("float32", "ABCD", [0x3F80, 0x0000], 1.0),
    ("float32", "CDAB", [0x0000, 0x3F80], 1.0),
    ("float32", "BADC", [0x803F, 0x0000], 1.0),
    ("float32", "DCBA", [0x0000, 0x803F], 1.0),
    ("float32", "ABCD", [0xC148, 0x0000], -12.5),
    ("uint64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
    ("uint64", "CDAB", [0x0102, 0x0304, 0x0506, 0x0708], 0x0708050603040102),
    ("uint64", "BADC", [0x0102, 0x0304, 0x0506, 0x0708], 0x0201040306050807),
    ("uint64", "DCBA", [0x0102, 0x0304, 0x0506, 0x0708], 0x0807060504030201),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD], -3),
    ("float64", "ABCD", [0x3FF0, 0, 0, 0], 1.0),
    ("float64", "CDAB", [0, 0, 0, 0x3FF0], 1.0),
    ("float64", "BADC", [0xF03F, 0, 0, 0], 1.0),
    ("float64", "DCBA", [0, 0, 0, 0xF03F], 1.0),
]


@pytest.mark.parametrize(("type_", "order", "words", "expected"), GOLDEN)
def test_golden_vectors(type_: str, order: str, words: list[int], expected: float) -> None:
    value = decode(point(type_, byte_order=order), words)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("type_", "order", "words", "expected"), GOLDEN)
def test_encode_is_the_inverse_of_decode(
    type_: str, order: str, words: list[int], expected: float
) -> None:
    p = point(type_, byte_order=order)
    assert decode(p, encode(p, expected)) == expected
    if type_ not in ("int16", "uint16") or order == "ABCD":
        assert encode(p, expected) == words


@pytest.mark.parametrize(
    "words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000], [0xFFFF, 0xFFFF]]
)
def test_nan_and_infinity_are_a_decode_error(words: list[int]) -> None:
    with pytest.raises(DecodeError):
        decode(point("float32"), words)
    assert issubclass(DecodeError, ValueError)


def test_float64_nan_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(point("float64"), [0x7FF8, 0, 0, 0])


def test_wrong_number_of_words_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(point("float32"), [0x3F80])


@pytest.mark.parametrize(("bit", "expected"), [(0, True), (1, False), (3, True), (15, True)])
def test_bit_of_a_register(bit: int, expected: bool) -> None:
    assert decode(point("bool", bit=bit), [0b1000_0000_0000_1001]) is expected


def test_bool_register_without_bit_is_nonzero() -> None:
    assert decode(point("bool"), [0]) is False
    assert decode(point("bool"), [0x0100]) is True


def test_coil_and_discrete_bits() -> None:
    assert decode_bits(point("bool", table="coil"), [True]) is True
    assert decode_bits(point("bool", table="discrete"), [False]) is False
    with pytest.raises(DecodeError):
        decode_bits(point("bool", table="coil"), [])


# (type, words, scale, offset) -> the clean value, exactly, with its type (SPEC "Samples")
CLEAN = [
    ("uint16", [237], 0.1, 0.0, 23.7),
    ("uint16", [653], 0.1, -40.0, 25.3),
    ("uint16", [123], 0.1, 0.0, 12.3),
    ("int16", [0xFFFE], 0.5, -40.0, -41.0),
    ("int16", [0x8000], 0.1, 0.0, -3276.8),
    ("uint16", [10], 0.1, 0.0, 1.0),  # a scale with decimals: always a float
    ("uint16", [237], 2.0, -40.0, 434),  # no decimals arise: an int
    ("uint32", [0, 7], 1.0, 0.0, 7),
    ("int64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD], 1.0, 0.0, -3),
    ("uint64", [0xFFFF] * 4, 1.0, 0.0, 2**64 - 1),
    ("float32", [0x4144, 0xCCCD], 1.0, 0.0, 12.3),  # not 12.300000190734863
    ("float32", [0x4144, 0xCCCD], 0.1, 0.0, 1.23),
    ("float32", [0x3F80, 0x0000], 1000.0, 0.0, 1000.0),
    ("float32", [0x4366, 0x8000], 1.0, -0.5, 230.0),
    ("float64", [0x4028, 0x9999, 0x9999, 0x999A], 1.0, 0.0, 12.3),
    ("float64", [0x4028, 0x9999, 0x9999, 0x999A], 0.1, 0.0, 1.23),
]


@pytest.mark.parametrize(("type_", "words", "scale", "offset", "expected"), CLEAN)
def test_clean_values(
    type_: str, words: list[int], scale: float, offset: float, expected: float
) -> None:
    p = point(type_, scale=scale, offset=offset)
    value = decode(p, words)
    assert (value, type(value), repr(value)) == (expected, type(expected), repr(expected))
    assert decode_block([p], words) == {p.name: expected}


# words -> text: two ASCII bytes a register, high byte first; BA swaps them
STRINGS = [
    ([0x534E, 0x2D31, 0x0000, 0x0000], "ABCD", "SN-1"),  # trailing NULs stripped
    ([0x534E, 0x2D31, 0x2020, 0x2000], "ABCD", "SN-1"),  # and trailing spaces
    ([0x4E53, 0x312D, 0x0000, 0x0000], "BA", "SN-1"),
    ([0x2041, 0x0042, 0x4300, 0x0000], "AB", " A\x00BC"),  # leading space, inner NUL kept
    ([0x0000, 0x0000, 0x0000, 0x0000], "ABCD", ""),
    ([0x5344, 0x4D31, 0x3230, 0x2D4D], "ABCD", "SDM120-M"),  # every byte used
]


@pytest.mark.parametrize(("words", "order", "text"), STRINGS)
def test_string_golden_vectors(words: list[int], order: str, text: str) -> None:
    p = point("string", length=4, byte_order=order)
    assert decode(p, words) == text
    assert decode_block([p], words) == {p.name: text}
    assert decode(p, encode(p, text)) == text


@pytest.mark.parametrize("words", [[0x53C3, 0xA900], [0xFF41, 0x4141], [0x4142, 0x4380]])
def test_a_string_that_is_not_ascii_is_a_decode_error(words: list[int]) -> None:
    p = point("string", length=2)
    with pytest.raises(DecodeError, match="not ASCII"):
        decode(p, words)
    points = [p, point("uint16", 2, name="after")]
    (request,) = plan_requests(points)
    values: dict[str, Value] = {}
    (error,) = RequestDecoder(request, points).decode_into([*words, 7], values)
    assert isinstance(error, DecodeError) and "not ASCII" in str(error)
    assert values == {"after": 7}


def test_a_string_sits_among_numbers_in_one_request() -> None:
    points = [point("uint16", 0, name="a"), point("string", 1, length=3, name="s"),
              point("float32", 4, name="f")]  # fmt: skip
    words = [5, *encode(points[1], "ab"), 0x4144, 0xCCCD]
    (request,) = plan_requests(points)
    assert request.count == 6
    assert decode_block(points, words) == {"a": 5, "s": "ab", "f": 12.3}


def test_encoding_a_string_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 4"):
        encode(point("string", length=2), "abcde")


def test_a_scaled_value_out_of_range_is_a_decode_error() -> None:
    # the config bounds scale to 1e9, but the largest float64 doubled is already past a double
    with pytest.raises(DecodeError, match="scaled value"):
        decode(point("float64", scale=2.0), [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF])


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_is_a_valid_point_list(name: str) -> None:
    points = [ModbusPoint.model_validate(p) for p in profile_points(name)]
    assert plan_requests(points)


# ---------------------------------------------------------------------------------------------
# Planner tables


def u16(address: int, table: str = "holding") -> ModbusPoint:
    return point("uint16", address, table)


PLANS: list[tuple[str, list[ModbusPoint], list[ReadRequest]]] = [
    ("one point", [u16(5)], [ReadRequest("holding", 5, 1, (0,))]),
    (
        "contiguous, out of order",
        [point("float32", 2), u16(0), u16(1)],
        [ReadRequest("holding", 0, 4, (1, 2, 0))],
    ),
    ("gap of 16 is bridged", [u16(0), u16(17)], [ReadRequest("holding", 0, 18, (0, 1))]),
    (
        "gap of 17 is not",
        [u16(0), u16(18)],
        [ReadRequest("holding", 0, 1, (0,)), ReadRequest("holding", 18, 1, (1,))],
    ),
    (
        "tables never merge; coil, discrete, holding, input order",
        [u16(0, "input"), u16(1, "holding"), point("bool", 0, "coil"),
         point("bool", 3, "discrete")],
        [ReadRequest("coil", 0, 1, (2,)), ReadRequest("discrete", 3, 1, (3,)),
         ReadRequest("holding", 1, 1, (1,)), ReadRequest("input", 0, 1, (0,))],
    ),
    (
        "at most 125 registers",
        [u16(a) for a in range(0, 140, 10)],
        [ReadRequest("holding", 0, 121, tuple(range(13))),
         ReadRequest("holding", 130, 1, (13,))],
    ),
    (
        "exactly 125 registers",
        [u16(0), point("float32", 123)],
        [ReadRequest("holding", 0, 1, (0,)), ReadRequest("holding", 123, 2, (1,))],
    ),
    (
        "bit points share a register with each other",
        [point("uint32", 0), point("bool", 8, bit=0, name="a"),
         point("bool", 8, bit=3, name="b")],
        [ReadRequest("holding", 0, 9, (0, 1, 2))],
    ),
    (
        "at most 2000 bits",
        [point("bool", a, "coil", name=f"c{a}") for a in range(0, 2001, 16)],
        [ReadRequest("coil", 0, 1985, tuple(range(125))), ReadRequest("coil", 2000, 1, (125,))],
    ),
    (
        "energy meter layout",
        [ModbusPoint.model_validate(p) for p in profile_points("energy_meter")],
        [ReadRequest("input", 0, 14, (0, 1, 2)), ReadRequest("input", 342, 2, (3,))],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("points", "expected"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(points: list[ModbusPoint], expected: list[ReadRequest]) -> None:
    assert plan_requests(points) == expected


def test_plan_within_limit_with_words_at_the_edge() -> None:
    points = [u16(0), u16(16), u16(32), u16(48)]
    assert plan_requests(points, max_gap=14) == [
        ReadRequest("holding", 0, 1, (0,)), ReadRequest("holding", 16, 1, (1,)),
        ReadRequest("holding", 32, 1, (2,)), ReadRequest("holding", 48, 1, (3,)),
    ]  # fmt: skip
    assert plan_requests(points, max_registers=33) == [
        ReadRequest("holding", 0, 33, (0, 1, 2)),
        ReadRequest("holding", 48, 1, (3,)),
    ]


def test_one_request_per_point_keeps_bits_of_one_register_together() -> None:
    points = [
        u16(0, "input"),
        point("float32", 10),
        point("bool", 14, bit=1, name="x"),
        point("bool", 14, bit=2, name="y"),
        u16(20),
    ]
    (merged, _) = plan_requests(points)
    assert merged == ReadRequest("holding", 10, 11, (1, 2, 3, 4))
    assert plan_device(points, ReadLimits(one_request_per_point=True)) == [
        ReadRequest("holding", 10, 2, (1,)),
        ReadRequest("holding", 14, 1, (2, 3)),
        ReadRequest("holding", 20, 1, (4,)),
        ReadRequest("input", 0, 1, (0,)),
    ]


def test_decoded_value_is_finite_or_raises() -> None:
    value = decode(point("float32", scale=2.0), [0x7F7F, 0xFFFF])  # largest float32, doubled
    assert math.isfinite(float(value))


# ---------------------------------------------------------------------------------------------
# Plan-level decoding: RequestDecoder (one struct per request) gives what decode_request gives

Results = tuple[list[tuple[str, str, Any]], list[str]]


def _comparable(values: dict[str, Value], errors: Sequence[DecodeError]) -> Results:
    """Values by name in the order stored, each with its type (1 != 1.0 != True), and the
    errors by message."""
    assert all(isinstance(e, DecodeError) for e in errors)
    return [(n, type(v).__name__, v) for n, v in values.items()], [str(e) for e in errors]


def _reference(request: ReadRequest, points: Sequence[ModbusPoint], data: Sequence[int]) -> Results:
    """decode_request's results as a sample's values (by name) and its errors."""
    out = decode_request(request, points, data)
    values = {points[i].name: v for i, v in out if not isinstance(v, DecodeError)}
    return _comparable(values, [v for _, v in out if isinstance(v, DecodeError)])


def _decoded(decoder: RequestDecoder, data: Sequence[int] | Sequence[bool]) -> Results:
    values: dict[str, Value] = {}
    errors = decoder.decode_into(data, values)
    return _comparable(values, errors)


def test_request_decoder_golden_vectors_in_one_block() -> None:
    points, words, address = [], [], 3  # the block starts at 3: offsets are relative
    for n, (type_, order, vector, _) in enumerate(GOLDEN):
        points.append(point(type_, address, byte_order=order, name=f"g{n}"))
        words += vector
        address += len(vector)
    (request,) = plan_requests(points)
    values = decode_block(points, words)
    assert list(values.items()) == [(f"g{n}", g[3]) for n, g in enumerate(GOLDEN)]
    assert _decoded(RequestDecoder(request, points), words) == _reference(request, points, words)


def test_request_decoder_on_the_e2e_cabinet_block() -> None:
    points = [ModbusPoint.model_validate(p) for p in profile_points("e2e_cabinet")]
    values = [7, 0, 65535, 300, -12.5, 3.2, 230.5, -1.0, 0.0, 1e-7]
    words = [0] * 14
    for p, v in zip(points, values, strict=True):
        words[p.address : p.address + p.width] = encode(p, v)
    (request,) = plan_requests(points)
    decoder = RequestDecoder(request, points)
    assert _decoded(decoder, words) == _reference(request, points, words)
    out = list(decode_block(points, words).values())
    assert out[:4] == [7, 0, 65535, 300]
    assert out[4:6] == pytest.approx([-12.5, 3.2])
    assert out[6:] == pytest.approx([230.5, -1.0, 0.0, 1e-7])


def test_a_bad_point_in_the_e2e_cabinet_block_costs_only_its_own_value() -> None:
    # every point is a struct field: one fast loop, redone point by point when one fails
    points = [ModbusPoint.model_validate(p) for p in profile_points("e2e_cabinet")]
    points[8] = points[8].model_copy(update={"scale": 1e300})  # f2: out of a float's range
    words = [7, 0, 65535, 300, 0xFF85, 0x0123, 0x4366, 0x8000, 0x7FC0, 0, 0x7F7F, 0xFFFF,
             0x7F80, 0]  # fmt: skip
    (request,) = plan_requests(points)
    decoder = RequestDecoder(request, points)
    values: dict[str, Value] = {"before": 1}  # another request's values stay first
    errors = decoder.decode_into(words, values)
    assert [str(e) for e in errors] == [
        "f1: float32 register value is nan",
        "f2: scaled value is inf",
        "f3: float32 register value is inf",
    ]
    assert list(values.items()) == [
        ("before", 1), ("u0", 7), ("u1", 0), ("u2", 65535), ("u3", 300), ("s0", -12.3),
        ("s1", 29.1), ("f0", 230.5),
    ]  # fmt: skip
    assert _decoded(decoder, words) == _reference(request, points, words)


_TYPES = ["bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64",
          "string"]  # fmt: skip
_WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_NAN_WORDS = [0x7FC0, 0x7F80, 0xFF80, 0x7FF8, 0x7FF0, 0xFFF0, 0x0000, 0xFFFF]
_ASCII_WORDS = [0x4142, 0x2000, 0x0041, 0x2D31]


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[ModbusPoint], list[int]]:
    """Points of one table laid out with gaps (bit points may share a register), and words."""
    points: list[ModbusPoint] = []
    address = draw(st.integers(0, 5))
    # half the time only big-endian numbers: RequestDecoder's one-loop path for struct fields
    fields_only = draw(st.booleans())
    types = [t for t in _TYPES if t not in ("bool", "string")] if fields_only else _TYPES
    orders = ["ABCD"] if fields_only else ["ABCD", "CDAB", "BADC", "DCBA"]
    for n in range(draw(st.integers(1, 12))):
        type_ = draw(st.sampled_from(types))
        kw: dict[str, Any] = {"byte_order": draw(st.sampled_from(orders))}
        if type_ == "bool" and draw(st.booleans()):
            kw["bit"] = draw(st.integers(0, 15))
        elif type_ == "string":
            kw = {
                "byte_order": draw(st.sampled_from(["AB", "BA"])),
                "length": draw(st.integers(1, 3)),
            }
        elif type_ != "bool" and draw(st.booleans()):
            kw["scale"] = draw(st.sampled_from([0.1, 2.0, -1.0, 1e9, 1e300]))
            kw["offset"] = draw(st.sampled_from([0.0, -40.0]))
        scale = kw.pop("scale", 1.0)  # 1e300 is past the config's bound, not the codec's care
        points.append(point(type_, address, name=f"p{n}", **kw).model_copy(update={"scale": scale}))
        shared = type_ == "bool" and draw(st.booleans())  # the next point may reuse the register
        width = kw.get("length") or _WIDTH.get(type_, 4)
        address += (0 if shared else width) + draw(st.integers(0, 3))
    words = draw(st.lists(st.sampled_from(_NAN_WORDS + _ASCII_WORDS) | st.integers(0, 0xFFFF),
                          min_size=address + 4, max_size=address + 4))  # fmt: skip
    return points, words


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_request_decoder_equals_decode_request(block: tuple[list[ModbusPoint], list[int]]) -> None:
    points, words = block
    values: dict[str, Value] = {}  # one sample's, across the requests of the plan, as a poll
    errors: list[DecodeError] = []
    expected: Results = ([], [])
    for request in plan_requests(points):
        data = words[request.address : request.address + request.count]
        decoder = RequestDecoder(request, points)
        reference = _reference(request, points, data)
        assert _decoded(decoder, data) == reference
        assert _decoded(decoder, data) == reference  # again, from the float32 memo
        assert _decoded(decoder, data[:-1]) == _reference(request, points, data[:-1])
        errors += decoder.decode_into(data, values)
        expected[0].extend(reference[0])
        expected[1].extend(reference[1])
    assert _comparable(values, errors) == expected


def test_request_decoder_overlapping_points_and_odd_blocks_match_decode_request() -> None:
    # overlaps are refused by the config, but the decoder must still not mix them up
    points = [point("uint32", 0, name="a"), point("uint16", 1, name="b"),
              point("float32", 1, name="c"), point("int16", 3, name="d")]  # fmt: skip
    request = ReadRequest("holding", 0, 4, (0, 1, 2, 3))
    decoder = RequestDecoder(request, points)
    for data in ([1, 2, 0x3F80, 4], [1, 2, 3], [1, 2, 3, 70000], [1, -2, 3, 4]):
        assert _decoded(decoder, data) == _reference(request, points, data)
    coils = [point("bool", 0, table="coil", name="x"), point("bool", 2, table="coil", name="y")]
    (bits,) = plan_requests(coils)
    assert _decoded(RequestDecoder(bits, coils), [True, False, False]) == (
        [("x", "bool", True), ("y", "bool", False)],
        [],
    )


# ---------------------------------------------------------------------------------------------
# Read limits (plan_device) and the refused-read fallback (halve_request)

LIMITED: list[tuple[str, list[ModbusPoint], ReadLimits, list[tuple[str, int, int]]]] = [
    ("max_registers 8", [u16(a) for a in range(10)], ReadLimits(max_registers=8),
     [("holding", 0, 8), ("holding", 8, 2)]),
    ("a float is never cut", [u16(0), point("float32", 7), u16(9)], ReadLimits(max_registers=8),
     [("holding", 0, 1), ("holding", 7, 3)]),
    ("max_gap 0 bridges nothing", [u16(0), u16(1), u16(3)], ReadLimits(max_gap=0),
     [("holding", 0, 2), ("holding", 3, 1)]),
    ("max_gap 2", [u16(0), u16(3), u16(7)], ReadLimits(max_gap=2),
     [("holding", 0, 4), ("holding", 7, 1)]),
    ("max_bits 16", [point("bool", a, "coil", name=f"c{a}") for a in (0, 15, 16, 31)],
     ReadLimits(max_bits=16), [("coil", 0, 16), ("coil", 16, 16)]),
    ("max_registers leaves bits alone",
     [point("bool", a, "discrete", name=f"d{a}") for a in (0, 10)], ReadLimits(max_registers=1),
     [("discrete", 0, 11)]),
    ("one request per point, shared bits together",
     [u16(0), u16(1), point("bool", 2, bit=0, name="a"), point("bool", 2, bit=5, name="b")],
     ReadLimits(one_request_per_point=True),
     [("holding", 0, 1), ("holding", 1, 1), ("holding", 2, 1)]),
    ("a string is one read", [point("string", 0, length=10), u16(10)], ReadLimits(max_registers=10),
     [("holding", 0, 10), ("holding", 10, 1)]),
]  # fmt: skip


@pytest.mark.parametrize(("points", "limits", "expected"), [c[1:] for c in LIMITED],
                         ids=[c[0] for c in LIMITED])  # fmt: skip
def test_plan_within_read_limits(
    points: list[ModbusPoint], limits: ReadLimits, expected: list[tuple[str, int, int]]
) -> None:
    plan = plan_device(points, limits)
    assert [(r.table, r.address, r.count) for r in plan] == expected
    assert sorted(i for r in plan for i in r.points) == list(range(len(points)))


def test_halve_request() -> None:
    points = [u16(0), point("float32", 6), point("bool", 12, bit=1, name="x"),
              point("bool", 12, bit=2, name="y"), u16(20)]  # fmt: skip
    (merged,) = plan_requests(points)
    assert halve_request(merged, points) == [
        ReadRequest("holding", 0, 8, (0, 1)),
        ReadRequest("holding", 12, 9, (2, 3, 4)),
    ]
    bits = ReadRequest("holding", 12, 1, (2, 3))
    assert halve_request(bits, points) == [bits]  # one register: nothing to split
    single = ReadRequest("holding", 6, 2, (1,))
    assert halve_request(single, points) == [single]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 125))
def test_halving_ends_in_one_read_per_register_group(gaps: list[int], refuse_over: int) -> None:
    """A device refusing every read over N registers is read after a bounded number of
    refusals, every point exactly once, every piece within N (or a single point)."""
    points, address = [], 0
    for n, gap in enumerate(gaps):
        address += gap
        points.append(point("float32" if n % 3 else "uint16", address, name=f"p{n}"))
        address += points[-1].width
    plan, refusals = plan_requests(points), 0
    while True:
        refused = [r for r in plan if r.count > refuse_over and len(halve_request(r, points)) > 1]
        if not refused:
            break
        r = refused[0]
        refusals += 1
        index = plan.index(r)
        plan[index : index + 1] = halve_request(r, points)
    assert sorted(i for r in plan for i in r.points) == list(range(len(points)))
    assert all(r.count <= refuse_over or len(r.points) == 1 for r in plan)
    assert refusals < 2 * len(points)
