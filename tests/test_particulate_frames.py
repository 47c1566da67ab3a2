"""The dust sensors' frame decoder: golden vectors from real sensors and the datasheets, resync on
garbage, and properties against a plain reference model."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sources.particulate.frames import (
    MODELS,
    Command,
    Event,
    FrameDecoder,
    Model,
    Reading,
    Reply,
    active_mode_command,
    pms_reading,
    sds_reading,
    sleep_command,
    wake_command,
)

# A real SDS011 frame (from a C test suite of an SDS011 driver): PM2.5 0x04D4, PM10 0x0A3A.
SDS_REAL = bytes.fromhex("AA C0 D4 04 3A 0A A1 60 1D AB")
# Real PMS5003 frames, as captured by users and quoted in their code and docs, with their
# "atmospheric environment" PM1.0, PM2.5 and PM10 (words 4-6; the CF=1 words come first).
PMS_REAL = [
    ("42 4D 00 1C 00 02 00 0A 00 0A 00 02 00 0A 00 0A 02 46 00 AF 00 31 00 16 00 00 00 00 97 00"
     " 02 AC", (2, 10, 10)),
    ("42 4d 00 1c 00 03 00 04 00 07 00 04 00 05 00 08 03 1b 00 f9 00 1b 00 06 00 03 00 03 9a 00"
     " 02 a2", (4, 5, 8)),
    ("42 4D 00 1C 00 1D 00 31 00 39 00 19 00 29 00 34 06 CF 05 F3 01 58 00 08 00 00 00 00 12 00"
     " 03 E8", (25, 41, 52)),
]  # fmt: skip


def test_a_real_sds011_frame_decodes_to_tenths_of_ug_m3() -> None:
    decoder = FrameDecoder("sds011")
    assert decoder.feed(SDS_REAL) == [Reading(123.6, 261.8, None, SDS_REAL)]
    assert Reading(123.6, 261.8, None, SDS_REAL).values() == {"pm25": 123.6, "pm10": 261.8}


@pytest.mark.parametrize(("hexed", "expected"), PMS_REAL)
def test_real_pms5003_frames_give_the_atmospheric_values(
    hexed: str, expected: tuple[int, int, int]
) -> None:
    frame = bytes.fromhex(hexed)
    [reading] = FrameDecoder("pms5003").feed(frame)
    assert isinstance(reading, Reading)
    assert (reading.pm1, reading.pm25, reading.pm10) == expected
    assert reading.values() == dict(zip(("pm1", "pm25", "pm10"), expected, strict=True))


def test_commands_are_the_datasheets_bytes() -> None:
    # Nova Fitness control protocol V1.3: set sleep / set work / set active reporting, all sensors
    assert sleep_command("sds011") == bytes.fromhex("AA B4 06 01 00" + " 00" * 10 + " FF FF 05 AB")
    assert wake_command("sds011") == bytes.fromhex("AA B4 06 01 01" + " 00" * 10 + " FF FF 06 AB")
    assert active_mode_command("sds011") == bytes.fromhex(
        "AA B4 02 01 00" + " 00" * 10 + " FF FF 01 AB"
    )
    # Plantower PMS5003 manual: sleep, wakeup, active mode
    assert sleep_command("pms5003") == bytes.fromhex("42 4D E4 00 00 01 73")
    assert wake_command("pms5003") == bytes.fromhex("42 4D E4 00 01 01 74")
    assert active_mode_command("pms5003") == bytes.fromhex("42 4D E1 00 01 01 71")


def test_replies_to_commands_are_told_apart_from_readings() -> None:
    sds_sleep_reply = bytes.fromhex("AA C5 06 01 00 00 A1 60 08 AB")
    assert FrameDecoder("sds011").feed(sds_sleep_reply) == [
        Reply(0x06, bytes([1, 0, 0]), sds_sleep_reply)
    ]
    pms_sleep_reply = bytes.fromhex("42 4D 00 04 E4 00 01 77")
    assert FrameDecoder("pms5003").feed(pms_sleep_reply) == [Reply(0xE4, b"\0", pms_sleep_reply)]


@pytest.mark.parametrize("model", MODELS)
def test_the_sensor_side_reads_the_hosts_commands(model: Model) -> None:
    sensor = FrameDecoder(model, "to_sensor")
    events = sensor.feed(b"\x00junk" + sleep_command(model) + wake_command(model))
    assert [e.raw for e in events] == [sleep_command(model), wake_command(model)]
    assert all(isinstance(e, Command) for e in events)


@pytest.mark.parametrize("model", MODELS)
def test_a_bad_checksum_is_counted_and_the_next_frame_still_read(model: Model) -> None:
    good = _reading(model, 12)
    bad = bytearray(good)
    bad[-2] ^= 0x01
    decoder = FrameDecoder(model)
    events = decoder.feed(bytes(bad) + good)
    assert [e.raw for e in events] == [good]
    assert decoder.bad_checksums == 1
    assert decoder.skipped_bytes == len(bad)


@pytest.mark.parametrize("model", MODELS)
def test_a_frame_cut_in_half_is_skipped_and_the_next_one_read(model: Model) -> None:
    first, second = _reading(model, 10), _reading(model, 20)
    decoder = FrameDecoder(model)
    assert decoder.feed(first[: len(first) // 2]) == []  # need more
    events = decoder.feed(second)
    assert [e.raw for e in events] == [second]
    assert decoder.skipped_bytes == len(first) // 2


@pytest.mark.parametrize("model", MODELS)
def test_ten_kilobytes_of_noise_neither_yield_a_frame_nor_grow_the_buffer(model: Model) -> None:
    noise = random.Random(5).randbytes(10_240)
    decoder = FrameDecoder(model)
    found = [e for e in decoder.feed(noise) if _valid_at(model, e.raw, 0) != len(e.raw)]
    assert found == []  # whatever came out is a frame with a valid layout and checksum
    assert decoder.buffered < decoder.max_frame
    after = decoder.feed(_reading(model, 33))
    assert after and after[-1].raw == _reading(model, 33)


def test_a_frame_fed_byte_by_byte_comes_out_once_complete() -> None:
    frame = pms_reading(1, 2, 3)
    decoder = FrameDecoder("pms5003")
    out = [decoder.feed(frame[i : i + 1]) for i in range(len(frame))]
    assert out[:-1] == [[]] * (len(frame) - 1)
    assert [e.raw for e in out[-1]] == [frame]


# ---------------------------------------------------------------------------------------------
# Properties


def _reading(model: Model, level: int) -> bytes:
    if model == "sds011":
        return sds_reading(level / 10 + 1, level / 5 + 2, device_id=level * 7919 & 0xFFFF)
    return pms_reading(level, level * 2, level * 3)


def _valid_at(model: Model, stream: bytes, at: int) -> int:
    """The reference: the size of a valid sensor frame starting at ``at``, else 0. Written from
    the datasheets, independently of the decoder."""
    rest = stream[at:]
    if model == "sds011":
        if len(rest) >= 10 and rest[0] == 0xAA and rest[1] in (0xC0, 0xC5) and rest[9] == 0xAB:
            return 10 if sum(rest[2:8]) % 256 == rest[8] else 0
        return 0
    if len(rest) < 4 or rest[:2] != b"BM" or int.from_bytes(rest[2:4], "big") not in (4, 28):
        return 0
    size = 4 + int.from_bytes(rest[2:4], "big")
    if len(rest) < size:
        return 0
    return (
        size if sum(rest[: size - 2]) % 65536 == int.from_bytes(rest[size - 2 : size], "big") else 0
    )


def _reference(model: Model, stream: bytes) -> list[tuple[int, bytes]]:
    """Every frame a scanner finds going forward: the first valid frame from the cursor, then
    on after its end."""
    found, at = [], 0
    while at < len(stream):
        size = _valid_at(model, stream, at)
        if size:
            found.append((at, stream[at : at + size]))
            at += size
        else:
            at += 1
    return found


def _decode_in_chunks(model: Model, stream: bytes, cuts: Sequence[int]) -> tuple[list[Event], int]:
    """Feed ``stream`` cut at ``cuts``; the events and the most bytes held after any feed."""
    decoder = FrameDecoder(model)
    events: list[Event] = []
    held = 0
    edges = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in itertools.pairwise(edges):
        events += decoder.feed(stream[start:end])
        held = max(held, decoder.buffered)
    return events, held


models = st.sampled_from(MODELS)
levels = st.lists(st.integers(0, 300), min_size=1, max_size=8)
cuts = st.lists(st.integers(0, 10_000), max_size=12)


@settings(max_examples=300, deadline=None)
@given(model=models, frames=levels, garbage=st.data(), cut=cuts)
def test_garbage_without_a_header_byte_loses_no_frame_and_adds_none(
    model: Model, frames: list[int], garbage: st.DataObject, cut: list[int]
) -> None:
    """Garbage that contains no header byte (0xAA / 0x42) cannot start a frame: exactly the
    valid frames come out, in order, however the bytes are cut into reads."""
    head = 0xAA if model == "sds011" else 0x42
    junk = st.binary(max_size=40).map(lambda b: bytes(x for x in b if x != head))
    valid = [_reading(model, level) for level in frames]
    stream = b"".join(garbage.draw(junk) + frame for frame in valid) + garbage.draw(junk)
    events, held = _decode_in_chunks(model, stream, cut)
    assert [e.raw for e in events] == valid
    assert held < FrameDecoder(model).max_frame


@settings(max_examples=400, deadline=None)
@given(model=models, frames=levels, garbage=st.data(), cut=cuts)
def test_any_garbage_gives_what_a_forward_scan_finds_and_only_valid_frames(
    model: Model, frames: list[int], garbage: st.DataObject, cut: list[int]
) -> None:
    """With any garbage (header bytes, half frames, bad checksums among it), the decoder yields
    exactly what the reference scan finds, whatever the cuts: every frame it returns has a valid
    layout and checksum (a "false" frame is only possible when the garbage itself holds one),
    and a real frame is lost only when such a frame made of garbage overlaps it."""
    valid = [_reading(model, level) for level in frames]
    pieces = st.one_of(
        st.binary(max_size=40),
        st.sampled_from(valid).map(lambda f: f[: len(f) // 2]),  # a frame cut short
        st.sampled_from(valid).map(lambda f: f[:-2] + bytes([f[-2] ^ 1, f[-1]])),  # bad checksum
    )
    spans, stream = [], b""
    for frame in valid:
        stream += b"".join(garbage.draw(st.lists(pieces, max_size=3)))
        spans.append((len(stream), frame))
        stream += frame
    events, held = _decode_in_chunks(model, stream, cut)
    reference = _reference(model, stream)
    assert [e.raw for e in events] == [raw for _, raw in reference]
    assert held < FrameDecoder(model).max_frame
    for at, frame in spans:
        found = any(pos == at for pos, _ in reference)
        overlapped = any(pos < at + len(frame) and at < pos + len(raw) for pos, raw in reference)
        assert found or overlapped, f"frame at {at} lost with nothing in its place"
