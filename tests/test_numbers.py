"""Clean numbers (codec/numbers.py): shortest float32, exact scaling. Golden vectors and a
reference search over every float32 hypothesis draws."""

from __future__ import annotations

import decimal
import math
import struct
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.codec.numbers import Scale, decimals, shortest_float32, text_decimals

F32 = struct.Struct(">f")


def f32(bits: int) -> float:
    return F32.unpack(struct.pack(">I", bits))[0]


def as_f32(x: float) -> float:
    return F32.unpack(F32.pack(x))[0]


def digits(x: float) -> int:
    """Significant digits of repr(x)."""
    mantissa = repr(abs(x)).split("e")[0].replace(".", "").strip("0")
    return max(1, len(mantissa))


def reference_digits(x: float) -> int:
    """The fewest significant digits of any decimal that reads back as the float32 ``x``
    (every p-digit decimal either side of ``x``, p = 1..9, checked through struct)."""
    if x == 0.0:
        return 1
    exact = Decimal(x)
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        for p in range(1, 10):
            step = Decimal(1).scaleb(exact.adjusted() - p + 1)
            for candidate in (exact.quantize(step, ROUND_FLOOR),
                              exact.quantize(step, ROUND_CEILING)):  # fmt: skip
                try:
                    if as_f32(float(candidate)) == x:
                        return p
                except OverflowError:
                    continue
    raise AssertionError(f"no decimal of up to 9 digits reads back as {x!r}")


# float32 bits -> repr of the clean value
GOLDEN_F32 = [
    (0x4144CCCD, "12.3"),  # 12.300000190734863 as Python reads the float32
    (0x3DCCCCCD, "0.1"),
    (0x43668000, "230.5"),
    (0xC1480000, "-12.5"),
    (0x3F800000, "1.0"),
    (0x00000000, "0.0"),
    (0x80000000, "-0.0"),
    (0x33D6BF95, "1e-07"),
    (0x4B800000, "16777216.0"),  # 2**24: the float32 step is 2 above it, 1 below
    (0x4B800001, "16777218.0"),
    (0x7F7FFFFF, "3.4028235e+38"),  # the largest float32
    (0x00800000, "1.1754944e-38"),  # the smallest normal float32
    (0x00000001, "1e-45"),  # the smallest subnormal
    (0x3F9D70A4, "1.23"),
    (0x4640E400, "12345.0"),
    (0x4CA7A8D4, "87901860.0"),  # 87901856: 7 digits and a zero read back
]


@pytest.mark.parametrize(("bits", "text"), GOLDEN_F32)
def test_shortest_float32_golden(bits: int, text: str) -> None:
    value = shortest_float32(f32(bits))
    assert repr(value) == text
    assert as_f32(value) == f32(bits)


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 0xFFFFFFFF))
@example(0x4CA7A8D4)  # a large integer float32
@example(0x3F800000)
def test_shortest_float32_reads_back_and_is_shortest(bits: int) -> None:
    x = f32(bits)
    if not math.isfinite(x):
        return
    value = shortest_float32(x)
    assert as_f32(value) == x
    assert digits(value) == reference_digits(x), (hex(bits), x, value)


@settings(max_examples=500, deadline=None)
@given(st.integers(-3000, 3000), st.integers(0, 3))
def test_shortest_float32_of_short_decimals_is_that_decimal(n: int, places: int) -> None:
    """What a device wrote as 23.7 into a float32 comes back as 23.7."""
    written = n / 10**places
    assert shortest_float32(as_f32(written)) == written


# (raw, scale, offset, expected value with its type)
GOLDEN_SCALE: list[tuple[int | float, float, float, int | float]] = [
    (237, 0.1, 0.0, 23.7),
    (653, 0.1, -40.0, 25.3),
    (12.3, 0.1, 0.0, 1.23),
    (237, 1.0, 0.0, 237),  # identity: an int stays an int
    (237, 2.0, -40.0, 434),  # no decimals arise: still an int
    (-2, 0.5, -40.0, -41.0),
    (4, 0.5, 0.0, 2.0),  # a scale with decimals makes every value a float
    (1, 0.001, 0.0, 0.001),
    (65535, 0.01, 0.0, 655.35),
    (3, 0.1, 0.05, 0.35),  # at least the offset's decimals
    (10, 1.0, 0.25, 10.25),
    (1.5, 0.1, 0.0, 0.15),
    (230.5, 1.0, -0.5, 230.0),
    (7, 1e-05, 0.0, 7e-05),
    (-32768, 0.1, 0.0, -3276.8),
]


@pytest.mark.parametrize(("raw", "scale", "offset", "expected"), GOLDEN_SCALE)
def test_scale_golden(raw: float, scale: float, offset: float, expected: float) -> None:
    sc = Scale(scale, offset)
    value = sc.of_float(raw, decimals(raw)) if isinstance(raw, float) else sc.of_int(raw)
    assert value == expected
    assert type(value) is type(expected)
    assert repr(value) == repr(expected)


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**31), 2**31), st.sampled_from([0.1, 0.01, 0.001, 0.5, 2.5, 0.25]),
       st.sampled_from([0.0, -40.0, 273.15, 0.5]))  # fmt: skip
def test_scaled_integers_are_the_exact_decimal_rounded_once(
    raw: int, scale: float, offset: float
) -> None:
    exact = Decimal(raw) * Decimal(repr(scale)) + Decimal(repr(offset))
    assert Scale(scale, offset).of_int(raw) == float(exact)


def test_a_huge_integer_result_becomes_a_float_or_overflows() -> None:
    assert isinstance(Scale(1e300, 0.0).of_int(65535), float)
    with pytest.raises(OverflowError):
        Scale(1e300, 0.0).of_int(10**10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("23.70", 2), ("12", 0), ("-0.5", 1), ("1.5e-07", 8), ("1e+16", 0), ("2.5E3", 0),
     (" 7.25 ", 2), ("+12.", 0)],
)  # fmt: skip
def test_text_decimals(text: str, expected: int) -> None:
    assert text_decimals(text) == expected


def test_decimals_of_floats() -> None:
    assert [decimals(x) for x in (2.0, 0.1, 0.001, 1e-05, 1e300, 12.34)] == [0, 1, 3, 5, 0, 2]
