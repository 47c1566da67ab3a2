"""Exact encoding of a value to write: the inverse of ``registers.decode``. Pure: no I/O.

:func:`encode_exact` turns an engineering value (after scale and offset, as a sample shows it)
into the coil or the registers that the point's decoding reads back as *the same value*, for
every type, byte order, scale, offset and ``bit``. It never rounds: a value the registers
cannot hold exactly (23.75 on a point scaled by 0.1, 70000 in a uint16, 0.1 in an int16, a
string too long or not ASCII) is :class:`Refused`, with the reason word of SPEC's results
(``bad_request`` for a value of the wrong kind, ``out_of_range`` for one the point cannot
hold) and a line for a person. The last step decodes what was encoded and compares, so the
round trip is a postcondition, not a hope.

A ``bit`` point's register is shared with other points: the encoding names the bit and its
state, and :func:`set_bit` makes the new register from the one read just before (the source
does that read-modify-write under its bus lock).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

from gateway.codec.registers import (
    _FORMATS,
    DecodeError,
    RegisterPoint,
    _reorder,
    decode,
    encode_string,
)
from gateway.model import Value

_RANGES = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}  # fmt: skip


class Refused(ValueError):
    """The value cannot be written to the point: ``reason`` is a result's reason word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Encoded:
    """What goes on the wire for one write.

    ``table`` ``coil``: ``words`` is ``(1,)`` or ``(0,)`` (function 5). ``holding``: the
    registers from ``address`` (function 6 for one, 16 for more); with ``bit`` set, only that
    bit of the one register changes (``words`` is then ``(1,)`` or ``(0,)``, its new state).
    """

    table: str
    address: int
    words: tuple[int, ...]
    bit: int | None = None

    @property
    def function(self) -> int:
        if self.table == "coil":
            return 5
        return 6 if len(self.words) == 1 else 16


def set_bit(word: int, bit: int, on: bool) -> int:
    """``word`` with only ``bit`` changed."""
    return (word | (1 << bit)) if on else (word & ~(1 << bit) & 0xFFFF)


def encode_exact(point: RegisterPoint, value: object) -> Encoded:
    """The coil or registers that decode back to exactly ``value``, or raise Refused."""
    if point.table not in ("coil", "holding"):
        raise Refused("not_writable", f"{point.name} is on the {point.table} table (read-only)")
    if point.type == "bool":
        if not isinstance(value, bool):
            raise Refused("bad_request", f"{point.name} takes true or false, not {value!r}")
        if point.table == "holding" and point.bit is not None:
            return Encoded("holding", point.address, (int(value),), point.bit)
        return Encoded(point.table, point.address, (int(value),))
    if point.type == "string":
        if not isinstance(value, str):
            raise Refused("bad_request", f"{point.name} takes a string, not {value!r}")
        if not value.isascii():
            raise Refused("out_of_range", f"{point.name}: {value!r} is not ASCII")
        if len(value) > 2 * point.width:
            raise Refused(
                "out_of_range", f"{point.name}: {value!r} is longer than {2 * point.width}"
            )
        return _checked(point, value, encode_string(point, value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("bad_request", f"{point.name} takes a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Refused("bad_request", f"{point.name}: {value} is not a number to write")
    raw = _raw(point, value)
    try:
        data = struct.pack(_FORMATS[point.type], raw)
    except (struct.error, OverflowError):
        raise Refused("out_of_range", _range_text(point, value)) from None
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if point.width > 1:
        words = _reorder(words, point.byte_order)  # each swap is its own inverse
    return _checked(point, value, words)


def _raw(point: RegisterPoint, value: int | float) -> int | float:
    """The register's number for ``value``: (value - offset) / scale, exactly, or Refused."""
    integer = point.type in _RANGES
    if point.scale == 1.0 and point.offset == 0.0:
        if not integer:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise Refused("out_of_range", f"{point.name} ({point.type}) holds whole numbers")
        raw_int = int(value)
    else:
        with localcontext() as context:
            context.prec = 80  # exact for every value a 64-bit register and a double hold
            try:
                exact = (Decimal(repr(value)) - Decimal(repr(point.offset))) / Decimal(
                    repr(point.scale)
                )
            except InvalidOperation:  # pragma: no cover - finite inputs, a non-zero scale
                raise Refused("out_of_range", f"{point.name}: {value!r}") from None
            if not integer:
                return float(exact)
            if exact != exact.to_integral_value():
                raise Refused(
                    "out_of_range",
                    f"{point.name}: {value!r} is not a step of scale {point.scale!r}"
                    + (f" from offset {point.offset!r}" if point.offset else ""),
                )
            raw_int = int(exact)
    low, high = _RANGES[point.type]
    if not low <= raw_int <= high:
        raise Refused("out_of_range", _range_text(point, value))
    return raw_int


def _checked(point: RegisterPoint, value: Value, words: list[int]) -> Encoded:
    """The encoding, once decoding it gives ``value`` back exactly."""
    try:
        back = decode(point, words)
    except DecodeError as exc:
        raise Refused("out_of_range", f"{point.name}: {value!r} cannot be held ({exc})") from None
    if back != value or isinstance(back, str) != isinstance(value, str):
        raise Refused(
            "out_of_range",
            f"{point.name}: {value!r} cannot be held exactly by a {point.type}"
            f" (it would read back as {back!r})",
        )
    return Encoded(point.table, point.address, tuple(words))


def _range_text(point: RegisterPoint, value: object) -> str:
    return f"{point.name}: {value!r} is outside what a {point.type} holds"
