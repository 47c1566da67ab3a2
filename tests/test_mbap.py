"""Modbus TCP framing (codec/mbap.py) and our client (sources/mbap_client.py) on real sockets.

The client is also what every Modbus TCP test of the source runs against a pymodbus server
(tests/test_modbus_source.py); these cover what a real server does not send: garbage, late
answers to a read that timed out, answers from the wrong unit, a peer that hangs up.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from fake_device import fake_device as device

from gateway.codec import mbap
from gateway.sources.modbus.mbap_client import MbapClient


def answer(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def test_read_request_is_the_standard_mbap_frame() -> None:
    # holding registers 0..13 of unit 17, transaction 1 (the Modbus TCP spec's layout)
    assert mbap.read_request(1, 17, "holding", 0, 14).hex() == "00010000000611030000000e"
    assert mbap.read_request(0xFFFF, 1, "coil", 19, 37)[7:].hex() == "0100130025"


def test_frames_are_cut_from_a_stream_in_pieces() -> None:
    stream = answer(5, 1, bytes([3, 4, 0, 1, 0, 2])) + answer(6, 1, bytes([0x83, 2]))
    assert mbap.next_frame(stream[:6]) == (None, 0)
    frame, used = mbap.next_frame(stream)
    assert frame == mbap.Frame(5, 1, bytes([3, 4, 0, 1, 0, 2]))
    assert mbap.read_values(frame, 1, "holding", 2) == [1, 2]
    second, _ = mbap.next_frame(stream[used:])
    assert second is not None
    with pytest.raises(mbap.ExceptionAnswer) as caught:
        mbap.read_values(second, 1, "holding", 2)
    assert caught.value.code == 2


def test_bits_are_read_lsb_first() -> None:
    frame = mbap.Frame(1, 1, bytes([2, 2, 0b1100_1101, 0b0000_0001]))
    assert mbap.read_values(frame, 1, "discrete", 9) == [
        True, False, True, True, False, False, True, True, True,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (struct.pack(">HHHB", 1, 1, 5, 1), "protocol id 1"),
        (struct.pack(">HHHB", 1, 0, 0, 1), "length 0"),
        (struct.pack(">HHHB", 1, 0, 300, 1), "length over 254"),
        (b"garbage on the wire\r\n", "text"),
    ],
)
def test_garbage_is_a_framing_error(data: bytes, why: str) -> None:
    with pytest.raises(mbap.FramingError):
        mbap.next_frame(data)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (mbap.Frame(1, 2, bytes([3, 4, 0, 1, 0, 2])), "another unit"),
        (mbap.Frame(1, 1, bytes([4, 4, 0, 1, 0, 2])), "another function"),
        (mbap.Frame(1, 1, bytes([3, 2, 0, 1])), "too few registers"),
        (mbap.Frame(1, 1, bytes([3, 6, 0, 1, 0, 2])), "byte count and data disagree"),
    ],
)
def test_an_answer_to_something_else_is_a_framing_error(frame: mbap.Frame, why: str) -> None:
    with pytest.raises(mbap.FramingError):
        mbap.read_values(frame, 1, "holding", 2)


async def registers(request: bytes, writer: asyncio.StreamWriter) -> None:
    tid, _, _, unit, _, address, count = struct.unpack(">HHHBBHH", request)
    data = b"".join(struct.pack(">H", address + i) for i in range(count))
    writer.write(answer(tid, unit, bytes([3, len(data)]) + data))


async def test_reads_registers_and_reconnects_after_the_peer_hangs_up() -> None:
    async def hang_up_on_the_second(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request[1] == 2:  # transaction 2
            writer.close()
            return
        await registers(request, writer)

    async with device(hang_up_on_the_second) as port:
        client = MbapClient("127.0.0.1", port, timeout_s=1.0)
        assert await client.connect()
        assert await client.read("holding", 10, 3, unit=1) == [10, 11, 12]
        with pytest.raises(ConnectionError):
            await client.read("holding", 10, 3, unit=1)
        assert not client.connected
        assert await client.connect()
        assert await client.read("holding", 0, 2, unit=1) == [0, 1]
        client.close()


async def test_a_late_answer_is_dropped_and_the_next_read_gets_its_own() -> None:
    async def slow_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request[1] == 1:
            await asyncio.sleep(0.3)  # after the client gave up on it
        await registers(request, writer)

    async with device(slow_first) as port:
        client = MbapClient("127.0.0.1", port, timeout_s=0.1)
        assert await client.connect()
        with pytest.raises(TimeoutError):
            await client.read("holding", 100, 1, unit=1)
        await asyncio.sleep(0.4)  # the late answer (register 100) arrives now
        client.timeout_s = 5.0  # the next answer comes at once; a slow machine must not matter
        assert await client.read("holding", 7, 1, unit=1) == [7]
        client.close()


async def test_garbage_on_the_wire_fails_the_read_and_drops_the_link() -> None:
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\xff" * 20)

    async with device(garbage) as port:
        client = MbapClient("127.0.0.1", port, timeout_s=1.0)
        assert await client.connect()
        with pytest.raises(mbap.FramingError):
            await client.read("holding", 0, 1, unit=1)
        await asyncio.sleep(0.05)
        assert not client.connected


async def test_nothing_listening_is_no_connection() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = MbapClient("127.0.0.1", port, timeout_s=1.0)
    assert not await client.connect()
    with pytest.raises(ConnectionError):
        await client.read("holding", 0, 1, unit=1)
