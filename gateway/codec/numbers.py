"""Clean numbers: values as a person wrote them, without binary-float noise. Pure.

A float32 register holding 12.3 is the double 12.300000190734863 once Python reads it, and a
raw 237 scaled by 0.1 is 23.700000000000003. docs/reference.md ("Samples and delivery") wants
``12.3`` and ``23.7``, so every value passes through here once, when it is decoded:

- :func:`shortest_float32` is the float with the fewest digits that reads back as the same
  float32;
- :class:`Scale` computes ``raw * scale + offset`` rounded to d decimals, d = the decimals of
  the raw value as written (0 for an integer) + the decimals of ``scale``, and at least the
  decimals of ``offset``. An integer raw value is scaled in exact integer arithmetic (``scale``
  and ``offset`` as integers over ``10**d``, one correctly rounded division at the end), so the
  result is the double nearest the exact decimal; when d is 0 the value stays an int.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_P10 = [10.0**k for k in range(23)]  # exact doubles
_INT_LIMIT = 1 << 64  # an exact integer result larger than this is given as a float
_ulp, _frexp, _log10, _floor = math.ulp, math.frexp, math.log10, math.floor


def shortest_float32(x: float) -> float:
    """The double with the fewest significant digits that reads back as the float32 ``x``.

    ``x`` is a finite float32 value held in a double (as ``struct`` unpacks it); its repr is
    then the short text (``12.3``). The p-digit decimal nearest ``x`` is tried for p = 6, 7, 8
    against the interval of reals that round to ``x`` as a float32; 6 digits always read back
    unique (FLT_DIG), 9 always read back. Pure float arithmetic: a third of the cost of
    formatting and re-parsing text for each p.
    """
    ax = -x if x < 0.0 else x
    if not 1e-14 < ax < 1e15:  # where 10**k is no longer exact: the slow, sure way
        return float(_float32_text(x))
    half = _ulp(x) * 268435456.0  # half a float32 step is 2**28 double steps
    lo, hi = x - half, x + half
    mantissa = _frexp(x)[0]
    if mantissa == 0.5:  # a power of two: the float32 step below it is half as wide
        lo = x - half * 0.5
    elif mantissa == -0.5:
        hi = x + half * 0.5
    e = _floor(_log10(ax))
    for p in (6, 7, 8):
        k = p - 1 - e
        if k >= 0:
            scale = _P10[k]
            y = round(x * scale) / scale  # correctly rounded: both operands are exact
        else:
            scale = _P10[-k]
            y = round(x / scale) * scale
        if lo < y < hi or (y in (lo, hi) and _even(x)):  # a tie rounds to even
            return y
    return float(_float32_text(x, 9))


def _even(x: float) -> bool:
    return not _U32.unpack(_F32.pack(x))[0] & 1


_SPECS_NORMAL = ("%.6g", "%.7g", "%.8g")
_SPECS_SUBNORMAL = tuple(f"%.{p}g" for p in range(1, 9))  # fewer bits: fewer digits may do
_FLT_MIN = 1.1754943508222875e-38  # the smallest normal float32


def _float32_text(x: float, digits: int = 0) -> str:
    if digits:
        return format(x, f".{digits}g")
    pack, unpack = _F32.pack, _F32.unpack
    for spec in _SPECS_NORMAL if abs(x) >= _FLT_MIN else _SPECS_SUBNORMAL:
        text = spec % x  # "%" is the fastest of the formatters
        try:
            if unpack(pack(float(text)))[0] == x:
                return text
        except OverflowError:  # rounded up past the largest float32
            continue
    return format(x, ".9g")


def text_decimals(text: str) -> int:
    """Decimals of a number as written: ``'23.70'`` 2, ``'12'`` 0, ``'1.5e-07'`` 8, ``'1e3'`` 0."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    fraction = mantissa.partition(".")[2]
    try:
        shift = int(exponent) if exponent else 0
    except ValueError:
        shift = 0
    return max(0, len(fraction) - shift)


def decimals(x: float) -> int:
    """Decimals of ``repr(x)`` (Python's shortest round-trip text); ``2.0`` has none."""
    if not math.isfinite(x) or (x == int(x) and abs(x) < 1e16):
        return 0
    return text_decimals(repr(x))


class Scale:
    """``raw * scale + offset`` without float noise, precomputed for one point."""

    __slots__ = ("_decimals", "_o", "_offset", "_offset_decimals", "_q", "_s", "_scale", "identity")

    def __init__(self, scale: float, offset: float) -> None:
        self.identity = scale == 1.0 and offset == 0.0
        self._scale, self._offset = scale, offset
        scale_decimals, self._offset_decimals = decimals(scale), decimals(offset)
        self._decimals = scale_decimals
        d = max(scale_decimals, self._offset_decimals)  # for an integer raw value
        self._q: int = 10**d
        self._s = int(Decimal(repr(scale)).scaleb(d))  # exact: scale has at most d decimals
        self._o = int(Decimal(repr(offset)).scaleb(d))

    def of_int(self, raw: int) -> int | float:
        """An integer raw value scaled: an int when no decimals arise, else the nearest float.

        Raises OverflowError when the result is too large for a float.
        """
        n = raw * self._s + self._o
        if self._q == 1 and -_INT_LIMIT < n < _INT_LIMIT:
            return n
        return n / self._q

    def of_float(self, raw: float, raw_decimals: int) -> float:
        """A float raw value (with ``raw_decimals`` as written) scaled and rounded."""
        value = raw * self._scale + self._offset
        if not math.isfinite(value):
            return value
        return round(value, max(raw_decimals + self._decimals, self._offset_decimals))
