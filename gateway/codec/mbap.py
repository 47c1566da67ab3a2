"""Modbus TCP framing (MBAP) for the four read functions and the writes (5, 6, 16). Pure:
bytes in, values out.

A request is the 7-byte MBAP header (transaction id, protocol 0, length, unit) and the PDU
(function, address, count). An answer is the same header and either the function, a byte count
and the data, or the function with bit 7 set and an exception code. What is not exactly that is
a :class:`FramingError`: the stream cannot be trusted after it, so the client drops the link.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import NamedTuple

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit
_REQUEST = struct.Struct(">HHHBBHH")
MAX_LENGTH = 254  # unit + the largest PDU (253 bytes)


class FramingError(ValueError):
    """Bytes that are not a Modbus TCP answer to what was asked."""


class ExceptionAnswer(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception code {code}")
        self.code = code


class Frame(NamedTuple):
    tid: int
    unit: int
    pdu: bytes  # function code first


def read_request(tid: int, unit: int, table: str, address: int, count: int) -> bytes:
    return _REQUEST.pack(tid, 0, 6, unit, FUNCTION[table], address, count)


def next_frame(buffer: bytes | bytearray) -> tuple[Frame | None, int]:
    """The first whole frame in ``buffer`` and how many bytes it took; (None, 0) while partial."""
    if len(buffer) < HEADER.size:
        return None, 0
    tid, protocol, length, unit = HEADER.unpack_from(buffer)
    if protocol != 0 or not 2 <= length <= MAX_LENGTH:
        raise FramingError(f"not a Modbus TCP header (protocol {protocol}, length {length})")
    end = HEADER.size - 1 + length
    if len(buffer) < end:
        return None, 0
    return Frame(tid, unit, bytes(buffer[HEADER.size : end])), end


def read_values(frame: Frame, unit: int, table: str, count: int) -> list[int] | list[bool]:
    """The registers or bits a read answer carries; raises ExceptionAnswer or FramingError."""
    if frame.unit != unit:
        raise FramingError(f"answer from unit {frame.unit}, asked unit {unit}")
    return pdu_values(frame.pdu, table, count)


def pdu_values(pdu: bytes, table: str, count: int) -> list[int] | list[bool]:
    """The registers or bits of a read answer's PDU (function code first), whatever framed it
    (MBAP here, RTU in ``codec.rtu``); raises ExceptionAnswer or FramingError."""
    function = FUNCTION[table]
    if pdu[0] == function | 0x80 and len(pdu) == 2:
        raise ExceptionAnswer(pdu[1])
    bits = function <= 2
    expected = (count + 7) // 8 if bits else 2 * count
    if pdu[0] != function or len(pdu) != 2 + expected or pdu[1] != expected:
        raise FramingError(f"answer {pdu[:2].hex()}.. ({len(pdu)} bytes) to function {function}")
    if bits:
        return [bool(pdu[2 + (i >> 3)] >> (i & 7) & 1) for i in range(count)]
    return list(_registers(count).unpack_from(pdu, 2))


@functools.lru_cache(maxsize=128)
def _registers(count: int) -> struct.Struct:
    """The big-endian words of a read of ``count`` registers (1..125), compiled once."""
    return struct.Struct(f">{count}H")


# ---------------------------------------------------------------------------------------------
# Writes (since v0.3): function 5 (one coil), 6 (one register), 16 (several registers)

_COIL_ON = 0xFF00


def write_pdu(function: int, address: int, words: Sequence[int]) -> bytes:
    """The PDU of a write: a coil's state (``words`` ``(1,)`` or ``(0,)``) or registers."""
    if function == 5:
        return struct.pack(">BHH", 5, address, _COIL_ON if words[0] else 0)
    if function == 6:
        return struct.pack(">BHH", 6, address, words[0])
    count = len(words)
    return struct.pack(f">BHHB{count}H", 16, address, count, 2 * count, *words)


def write_request(tid: int, unit: int, function: int, address: int, words: Sequence[int]) -> bytes:
    pdu = write_pdu(function, address, words)
    return HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu


def check_write_answer(pdu: bytes, function: int, address: int, words: Sequence[int]) -> None:
    """A write's answer echoes the request (5, 6: address and value; 16: address and count);
    raises ExceptionAnswer, or FramingError when it is not that echo."""
    if len(pdu) == 2 and pdu[0] == function | 0x80:
        raise ExceptionAnswer(pdu[1])
    expected = (
        write_pdu(function, address, words)[:5]
        if function != 16
        else (struct.pack(">BHH", 16, address, len(words)))
    )
    if pdu != expected:
        raise FramingError(f"answer {pdu[:5].hex()} to a write of function {function}")
