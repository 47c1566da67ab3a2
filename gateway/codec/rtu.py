"""Modbus RTU framing for the four read functions, as serial-to-Ethernet converters pass it
over TCP (``framing: rtu``). Pure: bytes in, values out.

A request is unit, function, address, count and the CRC-16 (low byte first). An answer has no
length header: its length follows from what was asked (unit, function, byte count, data, CRC;
or unit, function | 0x80, exception code, CRC: 5 bytes). Nothing in an RTU stream marks where
a frame starts, so bytes that are not the answer to what was asked (:class:`mbap.FramingError`)
or a CRC that does not match (:class:`CrcError`) leave the stream untrustworthy: the client
drops the link and starts again on a fresh one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from gateway.codec.mbap import FUNCTION, FramingError, write_pdu

_REQUEST = struct.Struct(">BBHH")
EXCEPTION_LENGTH = 5


class CrcError(FramingError):
    """A frame whose CRC does not match its bytes (line noise, a converter losing bytes)."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def read_request(unit: int, table: str, address: int, count: int) -> bytes:
    return with_crc(_REQUEST.pack(unit, FUNCTION[table], address, count))


def answer_length(buffer: bytes | bytearray, unit: int, table: str, count: int) -> int | None:
    """How many bytes the answer to this read takes, once the first bytes tell (None before);
    FramingError when the buffer cannot start such an answer."""
    if len(buffer) < 2:
        return None
    function = FUNCTION[table]
    if buffer[0] != unit:
        raise FramingError(f"answer from unit {buffer[0]}, asked unit {unit} (or garbage)")
    if buffer[1] == function | 0x80:
        return EXCEPTION_LENGTH
    if buffer[1] != function:
        raise FramingError(f"function {buffer[1]} in the answer to function {function}")
    if len(buffer) < 3:
        return None
    expected = (count + 7) // 8 if function <= 2 else 2 * count
    if buffer[2] != expected:
        raise FramingError(f"byte count {buffer[2]}, expected {expected}")
    return 3 + expected + 2


def next_answer(
    buffer: bytes | bytearray, unit: int, table: str, count: int
) -> tuple[bytes | None, int]:
    """The PDU (function code first) of the answer at the start of ``buffer`` and the bytes it
    took; (None, 0) while it is partial. Raises FramingError or CrcError."""
    length = answer_length(buffer, unit, table, count)
    if length is None or len(buffer) < length:
        return None, 0
    frame = bytes(buffer[:length])
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise CrcError(f"CRC error in a {length}-byte answer from unit {unit}")
    return frame[1:-2], length


WRITE_ANSWER_LENGTH = 8  # unit, function, address, value or count, CRC


def write_request(unit: int, function: int, address: int, words: Sequence[int]) -> bytes:
    return with_crc(bytes([unit]) + write_pdu(function, address, words))


def next_write_answer(
    buffer: bytes | bytearray, unit: int, function: int
) -> tuple[bytes | None, int]:
    """The PDU of the answer to a write (functions 5, 6, 16) and the bytes it took; (None, 0)
    while partial. Raises FramingError or CrcError; the echo itself is checked by the caller
    (``mbap.check_write_answer``)."""
    if len(buffer) < 2:
        return None, 0
    if buffer[0] != unit:
        raise FramingError(f"answer from unit {buffer[0]}, asked unit {unit} (or garbage)")
    if buffer[1] == function | 0x80:
        length = EXCEPTION_LENGTH
    elif buffer[1] == function:
        length = WRITE_ANSWER_LENGTH
    else:
        raise FramingError(f"function {buffer[1]} in the answer to function {function}")
    if len(buffer) < length:
        return None, 0
    frame = bytes(buffer[:length])
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise CrcError(f"CRC error in a {length}-byte answer from unit {unit}")
    return frame[1:-2], length
