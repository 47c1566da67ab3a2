"""SDI-12's commands and answers, pure: golden vectors from the standard (v1.4 sections 4.4.8 and
4.4.12.3 print the answers with their CRC characters) and from a vendor's manual."""

from __future__ import annotations

import pytest

from gateway.sources.sdi12 import protocol
from gateway.sources.sdi12.protocol import (
    MAX_ANSWER,
    Announced,
    Collected,
    Identification,
    Lines,
    Refused,
)

# Every one is an answer as the standard or a manual prints it, its last three characters the CRC.
CRC_VECTORS = [
    "0+3.14OqZ",  # SDI-12 1.4, 4.4.12.3 a
    "0+3.14+2.718+1.414Ipz",  # 4.4.12.3 b
    "0+1.11+2.22+3.33+4.44+5.55+6.66I]q",  # 4.4.12.3 c, first D answer
    "0+7.77+8.88+9.99IvW",  # 4.4.12.3 c, second
    "0+3.14+2.718IWO",  # 4.4.12.3 d
    "0AP@",  # 4.4.8.1: an answer with no values, still with its CRC
    "1+2.7+85.2-0.2-2.7+770.5CAH",  # Vaisala WMT700 user guide, 1MC! then 1D0!
]


@pytest.mark.parametrize("answer", CRC_VECTORS)
def test_the_crc_of_each_printed_answer_is_the_one_printed(answer: str) -> None:
    assert protocol.crc_text(answer[:-3]) == answer[-3:]


def test_the_crc_is_crc16_arc() -> None:
    # the catalogue's check value of CRC-16/ARC (reflected 0xA001, initial 0) over "123456789"
    assert protocol.crc16(b"123456789") == 0xBB3D
    assert protocol.crc_text("") == "@@@"  # 0x40 | 0 three times


@pytest.mark.parametrize(
    ("address", "measure", "crc", "command"),
    [
        ("0", "M", False, "0M!"),
        ("0", "M", True, "0MC!"),
        ("3", "M7", False, "3M7!"),
        ("1", "M2", True, "1MC2!"),
        ("a", "C", False, "aC!"),
        ("Z", "C", True, "ZCC!"),
        ("2", "C4", True, "2CC4!"),
    ],
)
def test_measurement_commands(address: str, measure: str, crc: bool, command: str) -> None:
    assert protocol.start(address, measure, crc) == command


def test_other_commands() -> None:
    assert protocol.acknowledge("5") == "5!"
    assert protocol.identify("b") == "bI!"
    assert [protocol.send_data("0", i) for i in (0, 1, 9)] == ["0D0!", "0D1!", "0D9!"]
    assert protocol.MEASURES[:2] == ("M", "C") and len(protocol.MEASURES) == 20


@pytest.mark.parametrize(
    ("answer", "measure", "announced"),
    [
        ("00001", "M", Announced(0, 1)),  # 4.4.8.4 a
        ("00053", "M", Announced(5, 3)),  # b
        ("00359", "M", Announced(35, 9)),  # c
        ("00101", "M2", Announced(10, 1)),
        ("001320", "C", Announced(13, 20)),  # atttnn: two digits of count
        ("099999", "C3", Announced(999, 99)),
    ],
)
def test_announced(answer: str, measure: str, announced: Announced) -> None:
    assert protocol.parse_announced(answer, "0", measure) == announced


@pytest.mark.parametrize(
    ("answer", "measure", "reason"),
    [
        ("10013", "M", "wrong_address"),
        ("0013", "M", "malformed"),  # a digit short
        ("001320", "M", "malformed"),  # atttnn to an M
        ("00013", "C", "malformed"),  # atttn to a C
        ("0X013", "M", "malformed"),
        ("", "M", "malformed"),
    ],
)
def test_announced_refused(answer: str, measure: str, reason: str) -> None:
    refused = protocol.parse_announced(answer, "0", measure)
    assert isinstance(refused, Refused) and refused.reason == reason


@pytest.mark.parametrize(
    ("answer", "crc", "measure", "values"),
    [
        ("0+3.14", False, "M", [3.14]),
        ("0+3.14+2.718+1.414", False, "M", [3.14, 2.718, 1.414]),
        ("0+3.14+2.718+1.414Ipz", True, "M", [3.14, 2.718, 1.414]),
        ("0AP@", True, "M", []),
        ("0", False, "M", []),  # no (more) values
        ("0-1.5+0-.5+7.", False, "M", [-1.5, 0.0, -0.5, 7.0]),
        ("0+1234567-9999999", False, "C", [1234567.0, -9999999.0]),
        ("0" + "+1.11" * 15, False, "C", [1.11] * 15),  # 75 characters: a C answer's limit
    ],
)
def test_data(answer: str, crc: bool, measure: str, values: list[float]) -> None:
    assert protocol.parse_data(answer, "0", crc=crc, measure=measure) == values


@pytest.mark.parametrize(
    ("answer", "crc", "measure", "reason"),
    [
        ("0+3.14OqY", True, "M", "bad_crc"),  # one CRC character off
        ("0+3.15OqZ", True, "M", "bad_crc"),  # one digit off
        ("1+3.14", False, "M", "wrong_address"),
        ("0+3.14", True, "M", "bad_crc"),  # asked for a CRC, none came (".14" is no CRC)
        ("0AP", True, "M", "malformed"),  # too short to hold a CRC
        ("03.14", False, "M", "malformed"),  # no sign
        ("0+3.1.4", False, "M", "malformed"),
        ("0+", False, "M", "malformed"),
        ("0+12345678", False, "M", "malformed"),  # 8 digits
        ("0+1,5", False, "M", "malformed"),
        ("0" + "+1.11" * 8, False, "M", "too_long"),  # 40 characters: over an M answer's 35
        ("0" + "+1.11" * 16, False, "C", "too_long"),  # 80: over a C answer's 75
    ],
)
def test_data_refused(answer: str, crc: bool, measure: str, reason: str) -> None:
    refused = protocol.parse_data(answer, "0", crc=crc, measure=measure)
    assert isinstance(refused, Refused) and refused.reason == reason, refused


def test_identification() -> None:
    assert protocol.parse_identification("013NRSYSINCSS10001.0SN2391", "0") == Identification(
        "0", "13", "NRSYSINC", "SS1000", "1.0", "SN2391"
    )
    found = protocol.parse_identification("a14STREETGWRIVER1001", "a")
    assert isinstance(found, Identification)
    assert str(found) == "SDI-12 1.4, STREETGW RIVER1 v001"
    short = protocol.parse_identification("014VENDOR", "0")
    assert isinstance(short, Refused) and short.reason == "malformed"


def test_acknowledge_and_service_request() -> None:
    assert protocol.parse_acknowledge("7", "7") is None
    refused = protocol.parse_acknowledge("8", "7")
    assert isinstance(refused, Refused) and refused.reason == "wrong_address"
    assert protocol.parse_service_request("0", "0")
    assert not protocol.parse_service_request("00", "0")


def test_decode_bounds_and_checks_each_line() -> None:
    assert protocol.decode(b"0+3.14\r") == "0+3.14"
    assert protocol.decode(b"") == ""
    for raw, reason in [(b"0+\xff", "not_ascii"), (b"0\x00", "not_ascii")]:
        refused = protocol.decode(raw)
        assert isinstance(refused, Refused) and refused.reason == reason
    refused = protocol.decode(b"0" * (MAX_ANSWER + 1))
    assert isinstance(refused, Refused) and refused.reason == "too_long"


def test_lines_split_bound_and_keep_the_unfinished() -> None:
    lines = Lines()
    assert lines.feed(b"00013\r\n0") == [b"00013\r"]
    assert lines.pending() == b"0"
    assert lines.feed(b"+1.5\r\n\r\n") == [b"0+1.5\r", b"\r"]
    # an endless line: handed on once, cut, which decode refuses; the rest is skipped
    out = lines.feed(b"x" * 300)
    assert len(out) == 1 and len(out[0]) == MAX_ANSWER + 1
    assert lines.feed(b"y" * 300 + b"\r\n1+2\r\n") == [b"1+2\r"]
    lines.feed(b"0+1.")
    lines.reset()
    assert lines.pending() == b"" and lines.feed(b"5\r\n") == [b"5\r"]


def test_collected_takes_values_over_several_data_commands() -> None:
    collected = Collected(Announced(1, 3))
    assert collected.add([1.2, 11.5]) is None and not collected.complete
    assert collected.next_index == 1
    assert collected.add([12.6]) is None and collected.complete
    assert collected.values == [1.2, 11.5, 12.6]


def test_collected_refuses_more_values_than_announced_and_stops_on_none() -> None:
    collected = Collected(Announced(0, 2))
    too_many = collected.add([1.0, 2.0, 3.0])
    assert isinstance(too_many, Refused) and too_many.reason == "too_many_values"
    assert collected.next_index == 0  # the same D command is asked again
    assert collected.add([1.0]) is None
    stopped = collected.add([])
    assert isinstance(stopped, str) and "aD1! gave no values after 1 of the 2" in stopped


def test_collected_stops_after_d9() -> None:
    collected = Collected(Announced(0, 20))
    outcomes = [collected.add([1.0]) for _ in range(10)]
    assert outcomes[:9] == [None] * 9
    assert outcomes[9] == "aD0! to aD9! gave 10 of 20 values"
