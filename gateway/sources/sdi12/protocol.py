"""SDI-12 v1.4 commands and answers, as text. Pure: no I/O, no clock.

The gateway talks to an SDI-12 interface (a USB or RS-232 adapter) that does the line's break,
marking and 1200 baud 7E1 itself: the gateway writes a command's text (``0M!``) and reads each
answer as one line (``00013`` + CR LF). This module builds the commands and checks every answer
against the command it answers; a refused answer comes back as a :class:`Refused` with a reason
word, never an exception.

The standard's sequence for one measurement (section 4.4): ``aM!`` is answered ``atttn`` (ttt
seconds until the values are ready, n values, 0-9); the sensor sends the service request ``a``
when they are (or the recorder waits ttt seconds); then ``aD0!``, ``aD1!``, ... each return some
of the values until all n are read. ``aC!`` (concurrent) is answered ``atttnn`` (up to 99 values)
and sends no service request, so other sensors may be addressed meanwhile. The values part of
one D answer holds at most 35 characters after ``aM!`` and 75 after ``aC!``. ``aMC!``/``aCC!``
ask the sensor to append to each D answer a CRC-16 (reflected polynomial 0xA001, initial value
0) of the whole answer before it, in three characters ``0x40 | six bits`` (section 4.4.12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ADDRESSES = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MEASURES = ("M", "C", *(f"{k}{i}" for k in "MC" for i in range(1, 10)))
MAX_DATA_COMMANDS = 10  # aD0! .. aD9!
MAX_VALUES = {"M": 9, "C": 99}  # what atttn and atttnn can announce
MAX_VALUES_CHARS = {"M": 35, "C": 75}  # the values part of one D answer
MAX_ANSWER = 100  # bytes of any answer this module reads (aI! is at most 35, a D answer 81)
CRC_CHARS = 3

Reason = Literal[
    "wrong_address",  # an answer from another sensor (or the wrong one answering)
    "bad_crc",  # the CRC does not match the answer
    "malformed",  # not the shape the command calls for
    "too_long",  # longer than the standard allows for that answer
    "too_many_values",  # more values than announced
    "not_ascii",  # bytes outside printable ASCII
    "late",  # an answer that came after its command's timeout (counted on its sender)
    "truncated",  # an answer cut short: no line end came
]


@dataclass(frozen=True, slots=True)
class Refused:
    """An answer that was not taken, and why (a reason word and a detail for a person)."""

    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Announced:
    """The answer to a measurement command: values ready in ``seconds``, ``count`` of them."""

    seconds: int
    count: int


@dataclass(frozen=True, slots=True)
class Identification:
    """The answer to ``aI!``: ``allccccccccmmmmmmvvvxxx...``."""

    address: str
    sdi12_version: str  # "14" for 1.4
    vendor: str
    model: str
    version: str
    extra: str  # serial number or other, up to 13 characters

    def __str__(self) -> str:
        version = f"{self.sdi12_version[:-1]}.{self.sdi12_version[-1:]}"
        text = f"SDI-12 {version}, {self.vendor} {self.model} v{self.version}"
        return f"{text}, {self.extra}" if self.extra else text


# -- commands ----------------------------------------------------------------------------------


def acknowledge(address: str) -> str:
    return f"{address}!"


def identify(address: str) -> str:
    return f"{address}I!"


def start(address: str, measure: str, crc: bool) -> str:
    """``aM!``, ``aMC!``, ``aC3!``, ``aCC3!``: the kind letter, C for a CRC, then the index."""
    kind, index = measure[0], measure[1:]
    return f"{address}{kind}{'C' if crc else ''}{index}!"


def send_data(address: str, index: int) -> str:
    return f"{address}D{index}!"


def concurrent(measure: str) -> bool:
    return measure[0] == "C"


# -- the CRC -----------------------------------------------------------------------------------


def _crc_of_byte(byte: int) -> int:
    crc = byte
    for _ in range(8):
        crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_CRC_TABLE = tuple(_crc_of_byte(byte) for byte in range(256))  # a byte at a time, not a bit


def crc16(data: bytes) -> int:
    """SDI-12's CRC (section 4.4.12.1; CRC-16/ARC): reflected polynomial 0xA001, initial 0."""
    crc, table = 0, _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc_text(data: str) -> str:
    """The three characters a sensor appends to ``data`` (section 4.4.12.2)."""
    crc = crc16(data.encode("ascii"))
    return "".join(chr(0x40 | (crc >> shift) & 0x3F) for shift in (12, 6, 0))


# -- answers -----------------------------------------------------------------------------------


def decode(raw: bytes) -> str | Refused:
    """An answer line's text without its line end, or why it is refused."""
    if len(raw) > MAX_ANSWER:
        return Refused("too_long", f"more than {MAX_ANSWER} bytes")
    text = raw.rstrip(b"\r\n")
    if any(b < 0x20 or b > 0x7E for b in text):
        return Refused("not_ascii", repr(text[:40]))
    return text.decode("ascii")


def address_of(answer: str) -> str | None:
    """The address an answer starts with, None if it starts with none."""
    return answer[0] if answer and answer[0] in ADDRESSES else None


def parse_acknowledge(answer: str, address: str) -> Refused | None:
    """``a``: the sensor is there."""
    return _check_address(answer, address) or (
        None if answer == address else Refused("malformed", f"{answer!r} is not {address!r}")
    )


_ANNOUNCED = {"M": re.compile(r"(\d{3})(\d)"), "C": re.compile(r"(\d{3})(\d{2})")}


def parse_announced(answer: str, address: str, measure: str) -> Announced | Refused:
    """``atttn`` (M) or ``atttnn`` (C)."""
    refused = _check_address(answer, address)
    if refused:
        return refused
    match = _ANNOUNCED[measure[0]].fullmatch(answer, 1)
    if match is None:
        shape = "atttn" if measure[0] == "M" else "atttnn"
        return Refused("malformed", f"{answer!r} is not {shape}")
    return Announced(int(match[1]), int(match[2]))


def parse_service_request(answer: str, address: str) -> bool:
    """Is this the service request ``a`` that says an ``aM!`` measurement is ready?"""
    return answer == address


# a value is pd.d: its sign, 1 to 7 digits, at most one decimal point (section 4.4.8, Table 11)
_VALUE = re.compile(r"[+-](?:\d+\.?\d*|\.\d+)")
_VALUES = re.compile(rf"(?:{_VALUE.pattern})*")


def parse_data(answer: str, address: str, *, crc: bool, measure: str) -> list[float] | Refused:
    """The values of one ``aDn!`` answer (none when the sensor has no more, or aborted)."""
    refused = _check_address(answer, address)
    if refused:
        return refused
    if crc:
        if len(answer) < 1 + CRC_CHARS:
            return Refused("malformed", f"{answer!r} has no CRC")
        answer, given = answer[:-CRC_CHARS], answer[-CRC_CHARS:]
        if crc_text(answer) != given:
            return Refused("bad_crc", f"{given!r} does not match {answer!r}")
    values = answer[1:]
    limit = MAX_VALUES_CHARS[measure[0]]
    if len(values) > limit:
        return Refused("too_long", f"{len(values)} characters of values, the limit is {limit}")
    if _VALUES.fullmatch(values) is None:
        return Refused("malformed", f"{values!r} are not SDI-12 values (+d.d-d.d...)")
    found = _VALUE.findall(values)
    for text in found:
        if sum(c.isdigit() for c in text) > 7:
            return Refused("malformed", f"{text!r} has more than 7 digits")
    return [float(text) for text in found]


_IDENTIFICATION = re.compile(r"(\d{2})(.{8})(.{6})(.{3})(.{0,13})")


def parse_identification(answer: str, address: str) -> Identification | Refused:
    refused = _check_address(answer, address)
    if refused:
        return refused
    match = _IDENTIFICATION.fullmatch(answer, 1)
    if match is None:
        return Refused("malformed", f"{answer!r} is not allccccccccmmmmmmvvv...")
    version, vendor, model, sensor_version, extra = match.groups()
    return Identification(
        address, version, vendor.strip(), model.strip(), sensor_version.strip(), extra.strip()
    )


def _check_address(answer: str, address: str) -> Refused | None:
    if not answer:
        return Refused("malformed", "an empty answer")
    if answer[0] != address:
        return Refused("wrong_address", f"answer {answer!r} from address {answer[0]!r}")
    return None


# -- a whole measurement -----------------------------------------------------------------------


class Collected:
    """The values of one measurement, gathered over ``aD0!``, ``aD1!``, ... (pure bookkeeping:
    which D command comes next, and whether every announced value is in)."""

    def __init__(self, announced: Announced) -> None:
        self.announced = announced
        self.values: list[float] = []
        self.next_index = 0

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.announced.count

    def add(self, values: list[float]) -> Refused | str | None:
        """Take one D answer's values: None when taken, a Refused (retry the same D), or why
        the measurement cannot be completed (a sentence: the poll fails)."""
        index = self.next_index
        if not values:
            return (
                f"aD{index}! gave no values after {len(self.values)} of the "
                f"{self.announced.count} announced (measurement aborted or not ready)"
            )
        if len(self.values) + len(values) > self.announced.count:
            return Refused(
                "too_many_values",
                f"aD{index}! gave {len(values)} values, {len(self.values)} of "
                f"{self.announced.count} were already in",
            )
        self.values += values
        self.next_index += 1
        if not self.complete and self.next_index >= MAX_DATA_COMMANDS:
            return f"aD0! to aD9! gave {len(self.values)} of {self.announced.count} values"
        return None


# -- framing -----------------------------------------------------------------------------------


class Lines:
    """Splits what the adapter relays into answer lines (ended by LF; a CR before it is the
    line end's too). A line longer than MAX_ANSWER is handed on as its first MAX_ANSWER + 1
    bytes, which :func:`decode` refuses, and the rest of it is skipped: memory stays bounded."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if self._skipping:
                self._skipping = False
            else:
                lines.append(line)
        if len(buffer) > MAX_ANSWER:
            if not self._skipping:
                lines.append(bytes(buffer[: MAX_ANSWER + 1]))
                self._skipping = True
            buffer.clear()
        return lines

    def pending(self) -> bytes:
        """An unfinished line (a truncated answer, when nothing more comes)."""
        return b"" if self._skipping else bytes(self._buffer)

    def reset(self) -> None:
        self._buffer.clear()
        self._skipping = False
