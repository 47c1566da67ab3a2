"""Serial ASCII lines: a framer (bytes in, lines out) and the line parsers. Pure, no I/O.

:class:`LineFramer` is fed whatever the port delivered and hands back complete lines, decoded
as UTF-8 and without their ``line_end``. A line longer than ``max_length`` is never buffered:
the framer reports it once and skips to the next ``line_end``. Lines that are too long or not
UTF-8 come back as :class:`FrameError` values, so the caller counts them and carries on. The
result does not depend on how the byte stream was chopped into reads.

:func:`make_parser` turns a source's ``parse`` section and points into a function
``line -> {point: value}``. A line is used whole or not at all: a missing point or a value that
is not a strict decimal number raises :class:`~gateway.errors.ParseError` with a short reason.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.codec.numbers import Scale, decimals, text_decimals
from gateway.errors import ParseError

MAX_LINE_LENGTH = 4096


class LineFormat(Protocol):
    """How a line is read (the serial kind's ``parse:`` section is one)."""

    @property
    def kind(self) -> Literal["regex", "kv", "csv", "json"]: ...
    @property
    def regex(self) -> str | None: ...  # with kind regex: a named group per point
    @property
    def fields(self) -> Sequence[str] | None: ...  # with kind csv: the column names, in order


class LinePoint(Protocol):
    """What the parser reads of a point (the serial kind's points are such)."""

    @property
    def name(self) -> str: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...


# A plain decimal number: optional sign, digits with an optional fraction (or a bare fraction),
# optional exponent. No hex, no underscores, no "nan"/"inf", no locale separators.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_KV_SEPARATORS = re.compile(r"[\s,;]+")
_KV_EQUALS = re.compile(r"\s*=\s*")
_SHOWN = 40  # characters of an offending value quoted in a reason


@dataclass(frozen=True, slots=True)
class FrameError:
    """A line the framer could not hand back as text (too long, not UTF-8): a value, not raised."""

    reason: str

    def __str__(self) -> str:
        return self.reason


class LineFramer:
    """Splits a byte stream into lines ending with ``line_end``; memory is bounded by max_length."""

    def __init__(self, line_end: bytes = b"\n", max_length: int = MAX_LINE_LENGTH) -> None:
        if not line_end:
            raise ValueError("line_end must not be empty")
        self._end = line_end
        self._max = max_length
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for line_end
        self._skipping = False  # inside a too-long line, already reported

    def feed(self, data: bytes) -> list[str | FrameError]:
        """Add bytes; return the lines they complete (decoded) and FrameErrors, in order."""
        out: list[str | FrameError] = []
        self._buf += data
        end, keep = self._end, len(self._end) - 1
        start = 0
        while True:
            found = self._buf.find(end, max(start, self._scanned))
            if found < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                out.append(self._decode(bytes(self._buf[start:found])))
            start = self._scanned = found + len(end)
        del self._buf[:start]
        self._scanned = max(0, len(self._buf) - keep)
        # What is left is one unfinished line. If it can no longer fit, report it once and keep
        # only the bytes that could be the start of a split line_end.
        if len(self._buf) - keep > self._max or (self._skipping and len(self._buf) > keep):
            if not self._skipping:
                out.append(FrameError(f"line longer than {self._max} bytes"))
                self._skipping = True
            del self._buf[: len(self._buf) - keep]
            self._scanned = 0
        return out

    def reset(self) -> None:
        """Forget an unfinished line (e.g. before a new request in poll mode)."""
        self._buf.clear()
        self._scanned = 0
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished line."""
        return len(self._buf)

    def _decode(self, raw: bytes) -> str | FrameError:
        if len(raw) > self._max:
            return FrameError(f"line longer than {self._max} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return FrameError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start})")


def unescape(text: str) -> bytes:
    """``'MEAS?\\r\\n'`` as typed on a command line -> ``b'MEAS?\\r\\n'``; other text as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("unicode_escape").encode("latin-1")


# ---------------------------------------------------------------------------------------------
# Parsers


def parse_number(text: str) -> float:
    """A strict decimal number (sign and exponent allowed); anything else raises ValueError."""
    token = text.strip()
    if not _NUMBER.fullmatch(token):
        raise ValueError(f"{_short(token)!r} is not a number")
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{_short(token)!r} is out of range")
    return value


def make_parser(
    parse: LineFormat, points: Sequence[LinePoint]
) -> Callable[[str], dict[str, float]]:
    """A function ``line -> {point: raw * scale + offset}``; it raises ParseError.

    A scaled value is rounded as ``codec.numbers.Scale`` says, so it carries no float noise.
    """
    extract = _extractor(parse)
    specs = [(p.name, Scale(p.scale, p.offset)) for p in points]

    def parser(line: str) -> dict[str, float]:
        found = extract(line)
        values: dict[str, float] = {}
        for name, scale in specs:
            raw = found.get(name)
            if raw is None:
                raise ParseError(f"{name}: missing")
            try:
                number = parse_number(raw) if isinstance(raw, str) else _json_number(raw)
            except ValueError as exc:
                raise ParseError(f"{name}: {exc}") from None
            if scale.identity:
                values[name] = number
                continue
            # rounded to the decimals the sensor wrote plus the scale's: 237 x 0.1 is 23.7
            written = text_decimals(raw) if isinstance(raw, str) else decimals(number)
            value = scale.of_float(number, written)
            if not math.isfinite(value):
                raise ParseError(f"{name}: out of range after scale and offset")
            values[name] = value
        return values

    return parser


Found = dict[str, object]  # point name -> its text (or, for JSON, its decoded value)


def _extractor(parse: LineFormat) -> Callable[[str], Found]:
    kind = parse.kind
    if kind == "regex":
        return _regex_extractor(re.compile(parse.regex or ""))
    if kind == "csv":
        return _csv_extractor(list(parse.fields or []))
    if kind == "json":
        return _json_fields
    return _kv_fields


def _regex_extractor(pattern: re.Pattern[str]) -> Callable[[str], Found]:
    def extract(line: str) -> Found:
        match = pattern.search(line)
        if match is None:
            raise ParseError(f"does not match the regex: {_short(line.strip())!r}")
        return {k: v for k, v in match.groupdict().items() if v is not None}

    return extract


def _kv_fields(line: str) -> Found:
    found: Found = {}
    for token in _KV_SEPARATORS.split(_KV_EQUALS.sub("=", line.strip())):
        key, sep, value = token.partition("=")
        if not sep:
            continue  # a status word or a unit between pairs; only pairs name points
        if key in found:
            raise ParseError(f"{key}: given twice")
        found[key] = value
    return found


def _csv_extractor(fields: list[str]) -> Callable[[str], Found]:
    def extract(line: str) -> Found:
        try:
            columns = next(csv.reader([line.strip()]))
        except (csv.Error, StopIteration) as exc:
            raise ParseError(f"not CSV: {exc}") from None
        if len(columns) != len(fields):
            raise ParseError(f"{len(columns)} columns, expected {len(fields)}")
        return dict(zip(fields, columns, strict=True))

    return extract


def _json_fields(line: str) -> Found:
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not JSON: {_short(str(exc))}") from None
    if not isinstance(data, dict):
        raise ParseError("JSON is not an object")
    return data


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _json_number(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{_short(json.dumps(raw))} is not a number")
    try:
        value = float(raw)
    except OverflowError:
        raise ValueError("out of range") from None
    if not math.isfinite(value):
        raise ValueError("out of range")
    return value


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
