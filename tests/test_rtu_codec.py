"""RTU framing (codec/rtu.py): golden frames with their CRC, answers cut from a stream."""

from __future__ import annotations

import pytest
from pymodbus.framer.rtu import FramerRTU

from gateway.codec import mbap, rtu


@pytest.mark.parametrize(
    ("frame", "crc"),
    [
        ("01030000000a", "c5cd"),  # the classic "read 10 holding registers of unit 1"
        ("1103006b0003", "7687"),  # the Modbus over serial line spec's example
        ("010304000100", None),
        ("", "ffff"),
    ],
)
def test_crc16_golden_and_against_pymodbus(frame: str, crc: str | None) -> None:
    data = bytes.fromhex(frame)
    if crc is not None:
        assert rtu.crc16(data).to_bytes(2, "little").hex() == crc
    # pymodbus gives the CRC as the two bytes read big-endian: the same bytes on the wire
    assert rtu.crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


def test_read_requests() -> None:
    assert rtu.read_request(1, "holding", 0, 10).hex() == "01030000000ac5cd"
    assert rtu.read_request(0x11, "holding", 0x6B, 3).hex() == "1103006b00037687"
    assert rtu.read_request(2, "coil", 19, 37)[:6].hex() == "020100130025"


def test_an_answer_is_cut_from_a_stream_in_pieces() -> None:
    answer = rtu.with_crc(bytes.fromhex("0103040001fffe"))
    for cut in range(len(answer)):
        assert rtu.next_answer(answer[:cut], 1, "holding", 2) == (None, 0)
    pdu, used = rtu.next_answer(answer + b"\x01", 1, "holding", 2)
    assert used == len(answer) == 9
    assert pdu is not None and mbap.pdu_values(pdu, "holding", 2) == [1, 0xFFFE]


def test_bits_and_exceptions() -> None:
    bits = rtu.with_crc(bytes([1, 2, 2, 0b1100_1101, 0b1]))
    pdu, _ = rtu.next_answer(bits, 1, "discrete", 9)
    assert pdu is not None
    assert mbap.pdu_values(pdu, "discrete", 9) == [True, False, True, True, False, False,
                                                   True, True, True]  # fmt: skip
    refused = rtu.with_crc(bytes([7, 0x84, 3]))
    pdu, used = rtu.next_answer(refused, 7, "input", 60)
    assert used == 5 and pdu is not None
    with pytest.raises(mbap.ExceptionAnswer) as caught:
        mbap.pdu_values(pdu, "input", 60)
    assert caught.value.code == 3


def test_a_wrong_crc_is_a_crc_error() -> None:
    answer = bytearray(rtu.with_crc(bytes.fromhex("0103020102")))
    answer[3] ^= 0x10  # one bit flipped on the line
    with pytest.raises(rtu.CrcError):
        rtu.next_answer(answer, 1, "holding", 1)
    assert issubclass(rtu.CrcError, mbap.FramingError)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x02\x03\x02\x00\x01", "another unit"),
        (b"\x01\x04\x02\x00\x01", "another function"),
        (b"\x01\x03\x04\x00\x01", "a byte count for 2 registers, 1 asked"),
        (b"\xff\xff\xff", "garbage"),
    ],
)
def test_what_is_not_the_answer_is_a_framing_error(data: bytes, why: str) -> None:
    with pytest.raises(mbap.FramingError):
        rtu.next_answer(data, 1, "holding", 1)
