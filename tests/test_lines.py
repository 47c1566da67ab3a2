"""The serial line framer and parsers: tables of bytes -> lines and lines -> values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codec.lines import FrameError, LineFramer, make_parser, parse_number
from gateway.errors import ParseError
from gateway.sources.serial.config import ParseConfig, SerialPoint

TOO_LONG = FrameError("line longer than 4096 bytes")


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[str | FrameError]:
    out: list[str | FrameError] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


@pytest.mark.parametrize(
    ("line_end", "chunks", "expected"),
    [
        (b"\n", [b"a=1\nb=2\n"], ["a=1", "b=2"]),
        (b"\n", [b"a=1\nb="], ["a=1"]),  # the unfinished line waits
        (b"\n", [b"a=", b"1", b"\n"], ["a=1"]),
        (b"\r\n", [b"a=1\r\nb=2\r\n"], ["a=1", "b=2"]),
        (b"\r\n", [b"a=1\r", b"\nb=2\r", b"\n"], ["a=1", "b=2"]),  # line end split across reads
        (b"\r\n", [b"a=1\r\r\n"], ["a=1\r"]),
        (b"\r\n", [b"a=1\nb=2\r\n"], ["a=1\nb=2"]),  # a bare LF is part of a CRLF line
        (b"\n", [b"a=1\r\n"], ["a=1\r"]),  # CRLF sensor on an LF config: parsers strip the CR
        (b"\n", [b"\n\n"], ["", ""]),  # empty lines are lines; the source skips them
        (b"\r\n", [b"\r\n"], [""]),
        (b"END", [b"a=1E", b"N", b"Db=2END"], ["a=1", "b=2"]),
        (b"\n", [b"x" * 4096 + b"\n"], ["x" * 4096]),  # exactly the limit is fine
        (b"\n", [b"x" * 4097 + b"\nok\n"], [TOO_LONG, "ok"]),
        (b"\n", [b"x" * 3000, b"x" * 1097, b"\nok\n"], [TOO_LONG, "ok"]),
        (b"\n", [b"x" * 5000, b"x" * 5000, b"x\n", b"ok\n"], [TOO_LONG, "ok"]),  # reported once
        (b"\r\n", [b"x" * 4096 + b"\r", b"\nok\r\n"], ["x" * 4096, "ok"]),
        (b"\n", [b"LAeq=\xff\xfe\nok\n"], [FrameError("not UTF-8 (byte 0xff at 5)"), "ok"]),
        (b"\n", [b"caf\xc3", b"\xa9\n"], ["café"]),  # a character split across reads
        (b"\n", [b"\xc3\n"], [FrameError("not UTF-8 (byte 0xc3 at 0)")]),
    ],
)
def test_framer(line_end: bytes, chunks: list[bytes], expected: list[str | FrameError]) -> None:
    assert feed_all(LineFramer(line_end), chunks) == expected


def test_framer_does_not_buffer_a_long_line() -> None:
    framer = LineFramer(b"\r\n")
    for _ in range(100):
        framer.feed(b"y" * 10_000)
        assert framer.pending <= 4096 + 1
    assert framer.feed(b"\r\nok\r\n") == ["ok"]


def test_framer_reset_forgets_a_partial_line() -> None:
    framer = LineFramer()
    framer.feed(b"half a li")
    framer.reset()
    assert framer.feed(b"whole\n") == ["whole"]


STREAM = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"\r\n", b"\r", b"\n", b"\xff", b"\xc3\xa9", b"x" * 3000]),
    ),
    max_size=20,
).map(b"".join)


@given(data=STREAM, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_chunking_does_not_change_the_lines(data: bytes, cuts: list[int]) -> None:
    for line_end in (b"\n", b"\r\n"):
        whole = LineFramer(line_end, max_length=4096).feed(data)
        points = sorted({c % (len(data) + 1) for c in cuts})
        chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
        assert feed_all(LineFramer(line_end, max_length=4096), chunks) == whole


@given(data=STREAM)
def test_byte_by_byte_gives_the_same_lines(data: bytes) -> None:
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed_all(LineFramer(b"\r\n"), chunks) == LineFramer(b"\r\n").feed(data)


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12.0),
        ("-3.5", -3.5),
        ("+0.25", 0.25),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("-2.5E-2", -0.025),
        (" 7 ", 7.0),
    ],
)
def test_strict_numbers(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "nan", "NaN", "inf", "-Infinity", "1e999", "0x1F", "1_000", "1,5", "12dB", "--1", "1e",
     "e3", ".", "٣", "__import__('os')"],
)  # fmt: skip
def test_not_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


# ---------------------------------------------------------------------------------------------
# Parsers

NOISE = [SerialPoint(name="laeq", unit="dBA"), SerialPoint(name="lamax", unit="dBA")]
REGEX = ParseConfig(regex=r"LAeq=(?P<laeq>\S+) LAmax=(?P<lamax>\S+)")
KV = ParseConfig(format="kv")
CSV = ParseConfig(format="csv", fields=["laeq", "status", "lamax"])
JSON = ParseConfig(format="json")


@pytest.mark.parametrize(
    ("parse", "line", "expected"),
    [
        (REGEX, "LAeq=54.2 LAmax=61.0", {"laeq": 54.2, "lamax": 61.0}),
        (REGEX, "#12 LAeq=54.2 LAmax=61.0 OK\r", {"laeq": 54.2, "lamax": 61.0}),
        (REGEX, "LAeq=-3 LAmax=1e2", {"laeq": -3.0, "lamax": 100.0}),
        (KV, "laeq=54.2 lamax=61", {"laeq": 54.2, "lamax": 61.0}),
        (KV, "laeq=54.2,lamax=61;extra=x", {"laeq": 54.2, "lamax": 61.0}),
        (KV, "OK laeq = 54.2; lamax=6.1e1\r", {"laeq": 54.2, "lamax": 61.0}),
        (KV, "laeq=-0.5 lamax=-1.5E+1", {"laeq": -0.5, "lamax": -15.0}),
        (CSV, "54.2,ok,61.0", {"laeq": 54.2, "lamax": 61.0}),
        (CSV, ' 54.2 , "ok" , -6.1e1 \r', {"laeq": 54.2, "lamax": -61.0}),
        (JSON, '{"laeq": 54.2, "lamax": 61}', {"laeq": 54.2, "lamax": 61.0}),
        (JSON, '{"laeq": 5, "lamax": "61", "sn": "A1", "ok": true}', {"laeq": 5.0, "lamax": 61.0}),
        (JSON, '{"laeq": -1e1, "lamax": 0}', {"laeq": -10.0, "lamax": 0.0}),
    ],
)  # fmt: skip
def test_parsers(parse: ParseConfig, line: str, expected: dict[str, float]) -> None:
    assert make_parser(parse, NOISE)(line) == expected


@pytest.mark.parametrize(
    ("parse", "line", "reason"),
    [
        (REGEX, "LAeq=54.2", "does not match the regex"),
        (REGEX, "LAeq=nan LAmax=61.0", "laeq: 'nan' is not a number"),
        (REGEX, "LAeq=54,2 LAmax=61.0", "laeq: '54,2' is not a number"),
        (KV, "laeq=54.2", "lamax: missing"),
        (KV, "laeq=54.2 lamax=NaN", "lamax: 'NaN' is not a number"),
        (KV, "laeq=54.2 lamax=inf", "lamax: 'inf' is not a number"),
        (KV, "laeq=54.2dB lamax=61", "laeq: '54.2dB' is not a number"),
        (KV, "laeq=1 laeq=2 lamax=3", "laeq: given twice"),
        (KV, "", "laeq: missing"),
        (CSV, "54.2,ok", "2 columns, expected 3"),
        (CSV, "54.2,ok,61,9", "4 columns, expected 3"),
        (CSV, "laeq,status,lamax", "laeq: 'laeq' is not a number"),
        (CSV, "54.2,ok,", "lamax: '' is not a number"),
        (JSON, '{"laeq": 54.2}', "lamax: missing"),
        (JSON, '{"laeq": 54.2, "lamax": null}', "lamax: missing"),
        (JSON, '{"laeq": NaN, "lamax": 1}', "not JSON: NaN is not a number"),
        (JSON, '{"laeq": true, "lamax": 1}', "laeq: true is not a number"),
        (JSON, '{"laeq": 1e999, "lamax": 1}', "laeq: out of range"),
        (JSON, '[54.2, 61]', "JSON is not an object"),
        (JSON, '{"laeq": 54.2', "not JSON"),
    ],
)  # fmt: skip
def test_parse_errors(parse: ParseConfig, line: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        make_parser(parse, NOISE)(line)
    assert str(caught.value).startswith(reason)


def test_scale_and_offset_apply_to_every_format() -> None:
    points = [SerialPoint(name="t", scale=0.1, offset=-40), SerialPoint(name="h")]
    assert make_parser(KV, points)("t=650 h=40") == pytest.approx({"t": 25.0, "h": 40.0})
    csv = ParseConfig(format="csv", fields=["h", "t"])
    assert make_parser(csv, points)("40,650") == pytest.approx({"t": 25.0, "h": 40.0})


@pytest.mark.parametrize(
    ("line", "scale", "offset", "expected"),
    [("t=653", 0.1, -40.0, 25.3), ("t=237", 0.1, 0.0, 23.7), ("t=12.3", 0.1, 0.0, 1.23),
     ("t=23.70", 1.0, 0.5, 24.2), ("t=5", 0.001, 0.0, 0.005), ("t=21.5", 1.0, 0.0, 21.5)],
)  # fmt: skip
def test_scaled_values_carry_no_float_noise(
    line: str, scale: float, offset: float, expected: float
) -> None:
    points = [SerialPoint(name="t", scale=scale, offset=offset)]
    assert repr(make_parser(KV, points)(line)["t"]) == repr(expected)
    text = '{"t": ' + line[2:] + "}"
    assert repr(make_parser(ParseConfig(format="json"), points)(text)["t"]) == repr(expected)


def test_a_value_that_overflows_after_scaling_is_an_error() -> None:
    parser = make_parser(KV, [SerialPoint(name="x", scale=1e9)])  # the largest scale allowed
    with pytest.raises(ParseError, match="out of range"):
        parser("x=1e300")
    assert math.isfinite(parser("x=1")["x"])
