"""The write frames (functions 5, 6, 16) in Modbus TCP and RTU, against the Modbus
specification's examples and pymodbus's own CRC; the echo checks of their answers."""

from __future__ import annotations

import pytest
from pymodbus.framer.rtu import FramerRTU

from gateway.codec import mbap, rtu


def test_mbap_write_requests() -> None:
    # Modbus application protocol v1.1b3, 6.5, 6.6, 6.12 (with an MBAP header, unit 1)
    assert mbap.write_request(7, 1, 5, 0xAC, [1]).hex() == "000700000006010500acff00"
    assert mbap.write_request(7, 1, 6, 1, [3]).hex() == "00070000000601060001" + "0003"
    assert mbap.write_request(7, 1, 16, 1, [0x000A, 0x0102]).hex() == (
        "00070000000b" + "01" + "10000100020400" + "0a0102"
    )


def test_rtu_write_request_carries_the_crc_pymodbus_computes() -> None:
    frame = rtu.write_request(1, 6, 1, [3])
    assert frame[:-2].hex() == "010600010003"
    assert frame[-2:] == FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("function", "words", "answer"),
    [(5, [1], "0500acff00"), (6, [3], "0600ac0003"), (16, [1, 2], "1000ac0002")],
)
def test_an_answer_that_echoes_the_write_passes(
    function: int, words: list[int], answer: str
) -> None:
    mbap.check_write_answer(bytes.fromhex(answer), function, 0xAC, words)


def test_an_exception_answer_and_a_wrong_echo() -> None:
    with pytest.raises(mbap.ExceptionAnswer) as caught:
        mbap.check_write_answer(bytes.fromhex("8602"), 6, 0xAC, [3])
    assert caught.value.code == 2
    with pytest.raises(mbap.FramingError):
        mbap.check_write_answer(bytes.fromhex("0600ac0004"), 6, 0xAC, [3])  # another value


def test_rtu_write_answers_partial_whole_and_broken() -> None:
    answer = rtu.with_crc(bytes.fromhex("01060001" + "0003"))
    assert rtu.next_write_answer(answer[:5], 1, 6) == (None, 0)
    assert rtu.next_write_answer(answer, 1, 6) == (answer[1:-2], 8)
    exception = rtu.with_crc(bytes.fromhex("018602"))
    assert rtu.next_write_answer(exception, 1, 6) == (exception[1:-2], 5)
    with pytest.raises(rtu.CrcError):
        rtu.next_write_answer(answer[:-1] + b"\x00", 1, 6)
    with pytest.raises(mbap.FramingError):
        rtu.next_write_answer(answer, 2, 6)
