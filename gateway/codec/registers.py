"""Modbus register decoding and request planning. Pure: no I/O.

``decode`` turns the words a device answered into one point's clean value (type,
``byte_order``, ``bit``, ``scale``, ``offset``; ``codec.numbers`` takes the float noise out), or
for ``type: string`` the ASCII text of ``length`` registers; ``encode`` is its inverse, used by
the simulated sensors.
``plan_requests`` reads a device's points in the fewest requests the protocol (and the
device's read limits: ``plan_device``) allows; ``halve_request`` splits a request a device
refused.

Byte orders name where the bytes of the big-endian value ``A B C D`` sit in the registers as
they come off the wire: ``ABCD`` (big-endian words and bytes), ``CDAB`` (word swap), ``BADC``
(byte swap inside each word) and ``DCBA`` (both). For 64-bit types the same two swaps apply to
all four words. Single-register types ignore ``byte_order``: a register is always big-endian.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.codec.numbers import Scale, decimals, shortest_float32
from gateway.model import Value

MAX_REGISTERS = 125  # per read request (function codes 3 and 4)
MAX_BITS = 2000  # per read request (function codes 1 and 2)
TABLE_ORDER = ("coil", "discrete", "holding", "input")


class RegisterPoint(Protocol):
    """What the codec reads of a point: the Modbus kind's ``ModbusPoint`` is one."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> str: ...  # coil, discrete, input or holding
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> str: ...  # bool, int16 ... float64, string
    @property
    def bit(self) -> int | None: ...
    @property
    def byte_order(self) -> str: ...  # ABCD, DCBA, BADC, CDAB; AB or BA for a string
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def width(self) -> int: ...  # registers (or bits) it occupies


@dataclass(frozen=True)
class ReadLimits:
    """A device's effective read limits (docs/reference.md "Modbus points", since v0.2)."""

    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    max_gap: int = 16
    pause: float = 0.0
    one_request_per_point: bool = False


# type -> struct format of the big-endian value
_FORMATS = {
    "int16": ">h", "uint16": ">H",
    "int32": ">i", "uint32": ">I", "float32": ">f",
    "int64": ">q", "uint64": ">Q", "float64": ">d",
}  # fmt: skip


class DecodeError(ValueError):
    """The registers hold no usable value for the point (NaN, infinity, wrong length)."""


def _reorder(words: Sequence[int], byte_order: str) -> list[int]:
    """Undo (or apply: each swap is its own inverse) a byte order on a list of words."""
    out = list(words)
    if byte_order in ("CDAB", "DCBA"):
        out.reverse()
    if byte_order in ("BADC", "DCBA"):
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def decode(point: RegisterPoint, words: Sequence[int]) -> Value:
    """The value of ``point`` from its registers (``point.width`` words, first one first)."""
    if len(words) != point.width:
        raise DecodeError(f"{point.name}: expected {point.width} registers, got {len(words)}")
    if point.type == "bool":
        if point.bit is not None:
            return bool((words[0] >> point.bit) & 1)
        return words[0] != 0
    if point.type == "string":
        return decode_string(point, words)
    ordered = words if point.width == 1 else _reorder(words, point.byte_order)
    raw_bytes = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)
    (raw,) = struct.unpack(_FORMATS[point.type], raw_bytes)
    return finisher(point)(raw)


def decode_string(point: RegisterPoint, words: Sequence[int]) -> str:
    """ASCII, two characters a register (high byte first; ``BA`` swaps them), with trailing
    NULs and spaces stripped. Bytes that are not ASCII are a DecodeError."""
    order: Literal["big", "little"] = "big" if point.byte_order != "BA" else "little"
    raw = b"".join((w & 0xFFFF).to_bytes(2, order) for w in words).rstrip(b"\x00 ")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{point.name}: not ASCII (byte 0x{raw[exc.start]:02x} at {exc.start})"
        ) from None


def encode_string(point: RegisterPoint, text: str) -> list[int]:
    """The registers ``decode_string`` reads ``text`` from, padded with NULs."""
    data = text.encode("ascii")
    if len(data) > 2 * point.width:
        raise ValueError(f"{point.name}: {text!r} is longer than {2 * point.width} characters")
    data = data.ljust(2 * point.width, b"\x00")
    order: Literal["big", "little"] = "big" if point.byte_order != "BA" else "little"
    return [int.from_bytes(data[i : i + 2], order) for i in range(0, len(data), 2)]


Finish = Callable[[Any], Value]


def finisher(point: RegisterPoint) -> Finish:
    """What turns the raw number ``struct`` unpacked for ``point`` into its clean value.

    Integers stay ints; a float32 becomes the shortest float that reads back the same; scale
    and offset are applied without float noise (``codec.numbers``). It raises DecodeError for
    NaN, infinity, or a scaled value out of range. Made once per point, then cached.
    """
    return _finisher(point.name, point.type, point.scale, point.offset)


_MEMO_SIZE = 64  # clean float32 values remembered per point


@functools.lru_cache(maxsize=4096)
def _finisher(name: str, type_: str, scale: float, offset: float) -> Finish:
    sc = Scale(scale, offset)

    def bad(raw: float) -> DecodeError:
        return DecodeError(f"{name}: {type_} register value is {raw}")

    def checked(value: float) -> float:
        if not math.isfinite(value):
            raise DecodeError(f"{name}: scaled value is {value}")
        return value

    if type_ == "float32":
        if sc.identity:
            # A sensor's float32 often repeats (a temperature to 0.1): remember the last few.
            memo: dict[float, float] = {}

            def float32(raw: float) -> Value:
                value = memo.get(raw)
                if value is None:
                    if raw - raw != 0.0:  # NaN or infinity, in one operation
                        raise bad(raw)
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    value = memo[raw] = shortest_float32(raw)
                return value

            return float32

        def float32_scaled(raw: float) -> Value:
            if raw - raw != 0.0:
                raise bad(raw)
            short = shortest_float32(raw)
            return checked(sc.of_float(short, decimals(short)))

        return float32_scaled
    if type_ == "float64":

        def float64(raw: float) -> Value:
            if raw - raw != 0.0:
                raise bad(raw)
            return raw if sc.identity else checked(sc.of_float(raw, decimals(raw)))

        return float64
    if sc.identity:
        return _as_is

    def integer_scaled(raw: int) -> Value:
        try:
            return sc.of_int(raw)
        except OverflowError:
            raise DecodeError(f"{name}: scaled value is out of range") from None

    return integer_scaled


def _as_is(raw: Value) -> Value:
    return raw


def decode_bits(point: RegisterPoint, bits: Sequence[bool]) -> bool:
    """The value of a coil or discrete input point from its one bit."""
    if len(bits) != 1:
        raise DecodeError(f"{point.name}: expected 1 bit, got {len(bits)}")
    return bool(bits[0])


def encode(point: RegisterPoint, value: Value) -> list[int]:
    """The registers that ``decode`` turns into ``value`` (scale and offset undone).

    For a ``bit`` point this is the register with only that bit set (or none); callers that
    share a register between bit points OR them together.
    """
    if point.type == "bool":
        shift = point.bit or 0
        return [(1 << shift) if value else 0]
    if point.type == "string":
        return encode_string(point, str(value))
    if isinstance(value, str):
        raise TypeError(f"{point.name}: a {point.type} point holds a number, not {value!r}")
    raw: int | float = value
    if point.scale != 1.0 or point.offset != 0.0:
        raw = (float(value) - point.offset) / point.scale
    fmt = _FORMATS[point.type]
    number: int | float = float(raw) if point.type.startswith("float") else round(raw)
    data = struct.pack(fmt, number)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words if point.width == 1 else _reorder(words, point.byte_order)


# ---------------------------------------------------------------------------------------------
# Request planning


@dataclass(frozen=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``address``.

    ``points`` are indices into the sequence of points the plan was made from.
    """

    table: str
    address: int
    count: int
    points: tuple[int, ...]


def plan_requests(
    points: Sequence[RegisterPoint],
    *,
    max_gap: int = 16,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[ReadRequest]:
    """The fewest reads that cover every point.

    Points of one table are merged into one request while the unused registers between them
    are at most ``max_gap`` and the request stays within ``max_registers`` (``max_bits`` for
    coil and discrete tables). ``max_gap=-1`` merges only points that share a register (bit
    points), which is how a device that refuses merged reads is read.
    """
    requests: list[ReadRequest] = []
    for table in TABLE_ORDER:
        indices = sorted(
            (i for i, p in enumerate(points) if p.table == table),
            key=lambda i: (points[i].address, i),
        )
        limit = max_bits if table in ("coil", "discrete") else max_registers
        start = end = -1
        members: list[int] = []
        for i in indices:
            point = points[i]
            p_end = point.address + point.width
            if members and point.address - end <= max_gap and max(end, p_end) - start <= limit:
                end = max(end, p_end)
                members.append(i)
                continue
            if members:
                requests.append(ReadRequest(table, start, end - start, tuple(members)))
            start, end, members = point.address, p_end, [i]
        if members:
            requests.append(ReadRequest(table, start, end - start, tuple(members)))
    return requests


def plan_device(points: Sequence[RegisterPoint], limits: ReadLimits) -> list[ReadRequest]:
    """The plan for a device's points within its read limits (SPEC "Modbus points")."""
    return plan_requests(
        points,
        max_gap=-1 if limits.one_request_per_point else limits.max_gap,
        max_registers=limits.max_registers,
        max_bits=limits.max_bits,
    )


def halve_request(request: ReadRequest, points: Sequence[RegisterPoint]) -> list[ReadRequest]:
    """``request`` as two smaller reads, each covering half of its points; ``[request]`` when
    it cannot be split (its points share one register, or it has one point).

    A device that refuses a merged read ("illegal data address" for a bridged gap, "illegal
    data value" for a read longer than it accepts) is read in halves, then halves of those, so
    a meter that takes 20 registers at a time ends up read in pieces of about 20, not one
    request per point. Points that share a register (bit points) stay together.
    """
    groups: list[list[int]] = []  # points of request.points that share registers, in order
    end = -1
    for i in request.points:
        point = points[i]
        if groups and point.address < end:
            groups[-1].append(i)
            end = max(end, point.address + point.width)
            continue
        groups.append([i])
        end = point.address + point.width
    if len(groups) < 2:
        return [request]
    half = len(groups) // 2
    return [_covering(request.table, groups[:half], points),
            _covering(request.table, groups[half:], points)]  # fmt: skip


def _covering(table: str, groups: list[list[int]], points: Sequence[RegisterPoint]) -> ReadRequest:
    members = tuple(i for group in groups for i in group)
    start = min(points[i].address for i in members)
    end = max(points[i].address + points[i].width for i in members)
    return ReadRequest(table, start, end - start, members)


def decode_request(
    request: ReadRequest, points: Sequence[RegisterPoint], data: Sequence[int] | Sequence[bool]
) -> list[tuple[int, Value | DecodeError]]:
    """Each point of ``request`` with its value, or the DecodeError that stopped it."""
    out: list[tuple[int, Value | DecodeError]] = []
    bit_table = request.table in ("coil", "discrete")
    for i in request.points:
        point = points[i]
        lo = point.address - request.address
        chunk = data[lo : lo + point.width]
        try:
            if bit_table:
                value: Value = decode_bits(point, [bool(b) for b in chunk])
            else:
                value = decode(point, [int(w) for w in chunk])
        except DecodeError as exc:
            out.append((i, exc))
        else:
            out.append((i, value))
    return out


class RequestDecoder:
    """``decode_request`` for one request of a plan, compiled once: the same results, faster,
    stored straight into a sample's values by point name.

    The register block is turned into bytes once and every big-endian point (``ABCD``, or a
    single register) comes out of one precompiled ``struct`` format over the whole block; ``bool``
    points are read from their register directly. Points in another byte order, points that
    overlap the struct's fields, bit tables and blocks of an unexpected length or content go
    through :func:`decode_request`'s per-point path, so every result and error is the same.
    """

    def __init__(self, request: ReadRequest, points: Sequence[RegisterPoint]) -> None:
        self.request = request
        self._points = points
        self._generic = request.table in ("coil", "discrete")
        # (request.points position, point index, kind, register offset, bit) for each point;
        # kind: 0 struct field, 1 bool register, 2 per-point decode
        plan: list[tuple[int, int, int, int, int]] = []
        fields: list[tuple[int, int, str]] = []  # (register offset, position, format char)
        for pos, i in enumerate(request.points):
            point = points[i]
            lo = point.address - request.address
            if point.type == "bool":
                plan.append((pos, i, 1, lo, -1 if point.bit is None else point.bit))
            elif point.type == "string":
                plan.append((pos, i, 2, lo, 0))
            elif point.width == 1 or point.byte_order == "ABCD":
                fields.append((lo, pos, _FORMATS[point.type][1]))
                plan.append((pos, i, 0, lo, 0))
            else:
                plan.append((pos, i, 2, lo, 0))
        fmt, end = ">", 0
        slots: dict[int, int] = {}  # request.points position -> index in the unpacked tuple
        for lo, pos, char in sorted(fields):
            if lo < end:  # overlaps the previous field: decode it on its own
                _, i, _, _, _ = plan[pos]
                plan[pos] = (pos, i, 2, lo, 0)
                continue
            fmt += f"{2 * (lo - end)}x" if lo > end else ""
            slots[pos] = len(slots)
            fmt += char
            end = lo + struct.calcsize(">" + char) // 2
        fmt += f"{2 * (request.count - end)}x" if request.count > end else ""
        self._unpack = struct.Struct(fmt).unpack
        self._pack = struct.Struct(f">{request.count}H").pack
        self._plan = [
            (points[i].name, kind, lo, bit, slots.get(pos, 0), points[i], _fast_finisher(points[i]))
            for pos, i, kind, lo, bit in plan
        ]
        # The common request, every point a struct field: one loop that only stores and
        # finishes; None when a point needs the per-point loop.
        self._fields: tuple[tuple[str, int, Finish | None], ...] | None = None
        if all(kind == 0 for _, kind, *_ in self._plan):
            self._fields = tuple(
                (name, slot, finish) for name, _, _, _, slot, _, finish in self._plan
            )

    def decode_into(
        self, data: Sequence[int] | Sequence[bool], values: dict[str, Value]
    ) -> Sequence[DecodeError]:
        """Store each point's value in ``values`` under its name, in request order; the
        DecodeErrors of the points that have none."""
        if self._generic or len(data) != self.request.count:
            return self._store(decode_request(self.request, self._points, data), values)
        try:
            raws = self._unpack(self._pack(*data))
        except struct.error:  # a word out of range or not an int: the slow path says why
            return self._store(decode_request(self.request, self._points, data), values)
        if self._fields is not None:
            try:
                for name, slot, finish in self._fields:
                    values[name] = raws[slot] if finish is None else finish(raws[slot])
            except DecodeError:
                pass  # the per-point loop stores the same values again and says which failed
            else:
                return ()
        errors: list[DecodeError] = []
        for name, kind, lo, bit, slot, point, finish in self._plan:
            try:
                if kind == 0:
                    value = raws[slot] if finish is None else finish(raws[slot])
                elif kind == 1:
                    word = int(data[lo])
                    value = word != 0 if bit < 0 else bool((word >> bit) & 1)
                else:
                    value = decode(point, _words(data, lo, point.width))
            except DecodeError as exc:
                errors.append(exc)
            else:
                values[name] = value
        return errors

    def _store(
        self, results: list[tuple[int, Value | DecodeError]], values: dict[str, Value]
    ) -> list[DecodeError]:
        errors: list[DecodeError] = []
        for i, value in results:
            if isinstance(value, DecodeError):
                errors.append(value)
            else:
                values[self._points[i].name] = value
        return errors


def _fast_finisher(point: RegisterPoint) -> Finish | None:
    """None for a plain integer (its raw value is its value), else the point's finisher."""
    if point.type in ("bool", "string"):
        return None
    if point.scale == 1.0 and point.offset == 0.0 and not point.type.startswith("float"):
        return None
    return finisher(point)


def _words(data: Sequence[int] | Sequence[bool], lo: int, width: int) -> list[int]:
    return [int(w) for w in data[lo : lo + width]]
