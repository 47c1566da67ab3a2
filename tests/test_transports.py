"""The Modbus transports: one error table each (checked complete), RTU frames over TCP against a
pymodbus RTU server behind a TCP<->pty bridge (socat) and against a device that garbles its
answers, and a correct unit behind a half-answering one on the same connection."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymodbus.exceptions
import pytest
from fake_device import RTU_REQUEST, fake_device
from support import free_port, stop_process
from test_modbus_source import by_name, check_samples, device, running, tcp_source, until

from gateway.codec import mbap, rtu
from gateway.errors import DeviceError, DeviceProtocolError, DeviceTimeout
from gateway.model import Sample
from gateway.sources.modbus.mbap_client import MbapClient
from gateway.sources.modbus.rtu_tcp_client import RtuTcpClient
from gateway.sources.modbus.serial_rtu_client import SerialRtuClient
from gateway.sources.modbus.sim import SimUnit, serve_rtu
from gateway.sources.modbus.source import ModbusSource
from gateway.sources.modbus.transport import ErrorMap, lookup, map_errors

# ---------------------------------------------------------------------------------------------
# One error table per transport, complete


def _exceptions_of(module: Any) -> set[type[BaseException]]:
    """Every exception class a module defines (ExceptionAnswer is an answer, not an error)."""
    return {
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == module.__name__
        and obj is not mbap.ExceptionAnswer
    }  # fmt: skip


OWN = {TimeoutError, ConnectionError, OSError}  # what asyncio's sockets and timeouts raise

TRANSPORTS: list[tuple[str, ErrorMap, set[type[BaseException]]]] = [
    ("mbap", MbapClient.errors, OWN | _exceptions_of(mbap)),
    ("rtu over tcp", RtuTcpClient.errors, OWN | _exceptions_of(mbap) | _exceptions_of(rtu)),
    ("rs-485 (pymodbus)", SerialRtuClient.errors,
     OWN | _exceptions_of(mbap) | _exceptions_of(pymodbus.exceptions)),
]  # fmt: skip


@pytest.mark.parametrize(("errors", "raised"), [t[1:] for t in TRANSPORTS],
                         ids=[t[0] for t in TRANSPORTS])  # fmt: skip
def test_every_exception_a_transport_can_raise_is_in_its_table(
    errors: ErrorMap, raised: set[type[BaseException]]
) -> None:
    assert len(raised) > len(OWN)
    missing = sorted(k.__name__ for k in raised if k not in errors)
    assert not missing, f"not in the error table: {missing}"
    assert all(issubclass(target, DeviceError) for target, _ in errors.values())


def test_the_most_specific_class_in_the_table_wins() -> None:
    errors = RtuTcpClient.errors
    assert lookup(errors, TimeoutError) == errors[TimeoutError]  # not OSError's entry
    assert lookup(errors, ConnectionResetError) == errors[ConnectionError]
    assert lookup(SerialRtuClient.errors, pymodbus.exceptions.ModbusIOException)[0] is (
        DeviceTimeout
    )
    assert lookup(errors, ValueError) is None


def test_map_errors_raises_our_errors_from_the_original() -> None:
    with (
        pytest.raises(DeviceTimeout, match=r"no answer within 0.2s") as caught,
        map_errors(MbapClient.errors, 0.2),
    ):
        raise TimeoutError
    assert isinstance(caught.value.__cause__, TimeoutError)
    errors = RtuTcpClient.errors
    with pytest.raises(DeviceProtocolError, match="CRC error"), map_errors(errors, 1.0):
        raise rtu.CrcError("CRC error in a 9-byte answer from unit 1")
    # an answer, for the source to judge
    with pytest.raises(mbap.ExceptionAnswer), map_errors(errors, 1.0):
        raise mbap.ExceptionAnswer(3)
    # a bug is not a device problem: it passes unchanged
    with pytest.raises(KeyError), map_errors(errors, 1.0):
        raise KeyError("x")


# ---------------------------------------------------------------------------------------------
# RTU over TCP against a device that answers by hand


def rtu_answer(unit: int, words: list[int]) -> bytes:
    return rtu.with_crc(bytes([unit, 3, 2 * len(words)]) + struct.pack(f">{len(words)}H", *words))


async def rtu_registers(request: bytes, writer: asyncio.StreamWriter) -> None:
    """A correct RTU device: holding register n holds n."""
    assert rtu.crc16(request[:6]) == int.from_bytes(request[6:], "little")
    unit, _, address, count = struct.unpack(">BBHH", request[:6])
    writer.write(rtu_answer(unit, [address + i for i in range(count)]))


async def test_rtu_over_tcp_reads_and_recovers_from_crc_errors_and_garbage() -> None:
    answers = iter(["good", "bad crc", "good", "garbage", "good", "extra", "good"])

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        kind = next(answers)
        if kind == "good":
            await rtu_registers(request, writer)
        elif kind == "bad crc":
            frame = bytearray(rtu_answer(1, [7, 8]))
            frame[4] ^= 0x01
            writer.write(bytes(frame))
        elif kind == "garbage":
            writer.write(b"\x00\xff\x13\x37\x00")
        else:  # the answer and then some
            writer.write(rtu_answer(1, [0, 1]) + b"\x01\x03")

    async with fake_device(reply, RTU_REQUEST) as port:
        client = RtuTcpClient("127.0.0.1", port, timeout_s=2.0)
        outcomes: list[Any] = []
        for _ in range(7):
            if not client.connected:
                assert await client.connect()
            try:
                outcomes.append(await client.read("holding", 0, 2, unit=1))
            except mbap.FramingError as exc:
                outcomes.append(type(exc).__name__)
                assert not client.connected  # re-synchronised on a fresh connection
        client.close()
    assert outcomes == [[0, 1], "CrcError", [0, 1], "FramingError", [0, 1], "FramingError",
                        [0, 1]]  # fmt: skip
    assert (client.crc_errors, client.garbage) == (1, 2)


async def test_rtu_over_tcp_exception_answer_keeps_the_link() -> None:
    async def refuse(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(rtu.with_crc(bytes([request[0], 0x83, 3])))

    async with fake_device(refuse, RTU_REQUEST) as port:
        client = RtuTcpClient("127.0.0.1", port, timeout_s=2.0)
        assert await client.connect()
        for _ in range(2):
            with pytest.raises(mbap.ExceptionAnswer) as caught:
                await client.read("holding", 0, 60, unit=9)
            assert caught.value.code == 3
            assert client.connected
        client.close()


# ---------------------------------------------------------------------------------------------
# A correct unit behind a half-answering one, on the same connection


def half_answering(framing: str) -> Callable[[bytes, asyncio.StreamWriter], Any]:
    """Unit 1 sends the first bytes of its answer and never the rest; unit 2 answers well."""

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        if framing == "rtu":
            if request[0] == 1:
                writer.write(rtu_answer(1, [5])[:3])
            else:
                await rtu_registers(request, writer)
            return
        tid, _, _, unit, _, address, count = struct.unpack(">HHHBBHH", request)
        pdu = bytes([3, 2 * count]) + b"".join(struct.pack(">H", address + i) for i in range(count))
        frame = struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu
        writer.write(frame[:9] if unit == 1 else frame)

    return reply


@pytest.mark.parametrize("framing", ["mbap", "rtu"])
async def test_a_correct_unit_behind_a_half_answering_one_never_fails(framing: str) -> None:
    point = {"name": "r", "table": "holding", "address": 4, "type": "uint16"}
    devices = [{"name": f"unit-{u}", "unit": u, "interval": "30ms", "points": [point]}
               for u in (1, 2)]  # fmt: skip
    request = RTU_REQUEST if framing == "rtu" else 12
    async with fake_device(half_answering(framing), request) as port:
        samples: list[Sample] = []
        source = ModbusSource(tcp_source(port, *devices, framing=framing), samples.append)
        stats = by_name(source)
        async with running(source):
            await until(lambda: stats["unit-1"].reads_failed >= 4 and stats["unit-2"].reads_ok >= 6)
    assert stats["unit-2"].reads_failed == 0
    assert stats["unit-2"].last_values == {"r": 4}
    assert stats["unit-1"].reads_ok == 0
    assert stats["unit-1"].last_error is not None and "no answer" in stats["unit-1"].last_error


# ---------------------------------------------------------------------------------------------
# RTU over TCP against a real pymodbus RTU server behind socat (TCP <-> pty)


@contextlib.contextmanager
def tcp_pty_bridge(folder: Path) -> Iterator[tuple[int, str]]:
    """socat listening on a loopback port, relaying to a pty: a serial-to-Ethernet converter.

    The pty comes first so it exists (for the RTU server to open) before a client connects;
    socat serves one connection, then exits. Stopped by pid.
    """
    port, tty = free_port(), str(folder / "ttyBridge")
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={tty}",
         f"tcp-listen:{port},bind=127.0.0.1,reuseaddr"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(500):
            if Path(tty).exists():
                break
            assert proc.poll() is None, "socat exited"
            subprocess.run(["sleep", "0.01"], check=True)
        yield port, tty
    finally:
        stop_process(proc)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[int, str]]:
    with tcp_pty_bridge(tmp_path) as pair:
        yield pair


async def test_rtu_framing_over_tcp_end_to_end_through_a_converter(
    bridge: tuple[int, str],
) -> None:
    port, tty = bridge
    units = [SimUnit(1, "air_quality"), SimUnit(2, "nameplate_meter"), SimUnit(3, "water_level")]
    samples: list[Sample] = []
    config = tcp_source(
        port,
        device("aq", 1, "air_quality", "200ms"),
        device("meter", 2, "nameplate_meter", "200ms"),
        device("level", 3, "water_level", "200ms"),
        framing="rtu",
        timeout="1s",
    )
    source = ModbusSource(config, samples.append)
    stats = by_name(source)
    async with serve_rtu(units, tty, baudrate=19200) as bus:
        async with running(source):
            await until(lambda: all(d.reads_ok >= 2 for d in source.devices), within_s=20)
            units[0].answer_exceptions(4)  # an exception answer is an answer: the link stays
            failed = stats["aq"].reads_failed
            await until(lambda: stats["aq"].reads_failed >= failed + 2, within_s=20)
            assert stats["aq"].last_error is not None
            assert "exception code 4" in stats["aq"].last_error
            units[0].recover()
            ok = stats["aq"].reads_ok
            await until(lambda: stats["aq"].reads_ok >= ok + 2, within_s=20)
        # Every request the source counted reached the bus: one sent as the source was stopped
        # is still on its way through the converter (socat) and is given time to arrive.
        sent = sum(d.requests_total for d in source.devices)
        with contextlib.suppress(TimeoutError):
            await until(lambda: bus.requests_total >= sent, within_s=5)
    for unit, name in zip(units, ("aq", "meter", "level"), strict=True):
        check_samples(samples, unit, name)
    assert stats["meter"].last_values["model"] == "SDM120"
    assert bus.requests_total == sent
    assert all(d.reads_failed == 0 for d in (stats["meter"], stats["level"]))
