"""Writes through the Modbus source against a real pymodbus server that keeps and records what
it is written: every type and byte order written and read back, a bit changed without touching
its neighbours while the device is polled, and each failure a device can give (timeout,
exception 2, a write ignored so the read-back differs). A refused write sends nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pymodbus.framer import FramerType
from support import free_port
from write_support import RecordingUnit, recording_server

from gateway.codec.registers import decode
from gateway.model import Sample
from gateway.sources.modbus.config import ModbusTcpSource
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.sim import SimUnit, profile_points, serve_tcp
from gateway.sources.modbus.source import ModbusSource

W: dict[str, Any] = {"write": {}}
POINTS: list[dict[str, Any]] = [
    {"name": "closed", "table": "coil", "address": 0, "type": "bool", **W},
    {"name": "u16", "table": "holding", "address": 0, "type": "uint16", **W},
    {"name": "i16s", "table": "holding", "address": 1, "type": "int16", "scale": 0.1, **W},
    {"name": "i32_abcd", "table": "holding", "address": 2, "type": "int32", **W},
    {"name": "i32_cdab", "table": "holding", "address": 4, "type": "int32",
     "byte_order": "CDAB", **W},
    {"name": "u32_badc", "table": "holding", "address": 6, "type": "uint32",
     "byte_order": "BADC", "scale": 0.01, **W},
    {"name": "f32_dcba", "table": "holding", "address": 8, "type": "float32",
     "byte_order": "DCBA", **W},
    {"name": "f64", "table": "holding", "address": 10, "type": "float64", **W},
    {"name": "i64_cdab", "table": "holding", "address": 14, "type": "int64",
     "byte_order": "CDAB", **W},
    {"name": "temp", "table": "holding", "address": 18, "type": "uint16", "scale": 0.5,
     "offset": -40, **W},
    {"name": "sign", "table": "holding", "address": 19, "type": "string", "length": 4, **W},
    # three bit points sharing register 30; only "lamp" is writable
    {"name": "door", "table": "holding", "address": 30, "type": "bool", "bit": 0},
    {"name": "lamp", "table": "holding", "address": 30, "type": "bool", "bit": 5, **W},
    {"name": "fan", "table": "holding", "address": 30, "type": "bool", "bit": 15},
    {"name": "ro", "table": "holding", "address": 31, "type": "uint16"},
    {"name": "unconfirmed", "table": "holding", "address": 32, "type": "uint16",
     "write": {"confirm": "none"}},
]  # fmt: skip
VALUES: dict[str, Any] = {
    "closed": True, "u16": 65535, "i16s": -12.3, "i32_abcd": -123456789,
    "i32_cdab": 0x01020304, "u32_badc": 1234567.89, "f32_dcba": 12.3, "f64": -0.1,
    "i64_cdab": -(2**62) + 7, "temp": -20.5, "sign": "SLOW",
}  # fmt: skip


def source(port: int, interval: str = "1s", framing: str = "mbap") -> ModbusTcpSource:
    return ModbusTcpSource.model_validate(
        {"name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
         "timeout": "200ms", "retries": 0, "backoff_max": "400ms", "framing": framing,
         "devices": [{"name": "barrier-1", "unit": 3, "interval": interval, "points": POINTS}]}
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(config: ModbusTcpSource, samples: list[Sample]) -> AsyncIterator[ModbusSource]:
    src = ModbusSource(config, samples.append)
    task = asyncio.create_task(src.run(), name="source under test")
    try:
        async with asyncio.timeout(5):
            while len(samples) < 1:  # the first poll is done: the link is up
                await asyncio.sleep(0.005)
        yield src
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def point(name: str) -> ModbusPoint:
    return ModbusPoint.model_validate(next(p for p in POINTS if p["name"] == name))


async def test_every_type_and_byte_order_is_written_and_read_back() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port), samples) as src:
        for name, value in VALUES.items():
            outcome = await src.write("barrier-1", name, value)
            assert (outcome.state, outcome.reason, outcome.read_back) == ("done", None, value)
        # on the wire: the device's own registers decode to the very values written
        for name, value in VALUES.items():
            p = point(name)
            if p.table == "coil":
                assert unit.coils[p.address] is value
            else:
                assert decode(p, unit.holding[p.address : p.address + p.width]) == value
        functions = {f for f, _, _ in unit.writes}
        assert functions == {5, 6, 16}  # a coil, single registers, several registers
        assert (6, 0, [65535]) in unit.writes
        assert (16, 4, [0x0304, 0x0102]) in unit.writes  # CDAB: the low word first
        assert (6, 18, [39]) in unit.writes  # (-20.5 + 40) / 0.5


async def test_a_bit_changes_without_touching_its_neighbours_while_polled() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    unit.holding[30] = 0b1000_0000_0000_0001  # door (bit 0) and fan (bit 15) are on
    samples: list[Sample] = []
    async with (
        recording_server([unit], port),
        running(source(port, interval="20ms"), samples) as src,
    ):
        for on in (True, False, True):
            outcome = await src.write("barrier-1", "lamp", on)
            assert outcome.state == "done" and outcome.read_back is on
            expected = 0b1000_0000_0000_0001 | (on << 5)
            assert unit.holding[30] == expected
            assert unit.writes[-1] == (6, 30, [expected])  # one register, read-modify-written
        polled = len(samples)
        await asyncio.sleep(0.1)
        assert len(samples) > polled  # polling went on between the writes
    last = samples[-1].values
    assert (last["door"], last["lamp"], last["fan"]) == (True, True, True)


async def test_refused_writes_send_nothing() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port), samples) as src:
        cases = [
            ("ro", 1, "not_writable"),
            ("door", True, "not_writable"),
            ("nope", 1, "not_writable"),
            ("u16", 70000, "out_of_range"),
            ("i16s", 1.25, "out_of_range"),  # not a step of 0.1: never rounded
            ("closed", 1, "bad_request"),
            ("sign", "TOO LONG!", "out_of_range"),
        ]
        for name, value, reason in cases:
            outcome = await src.write("barrier-1", name, value)
            assert (outcome.state, outcome.reason) == ("refused", reason), name
            assert outcome.detail
        assert (await src.write("gone", "u16", 1)).reason == "not_writable"
    assert unit.writes == []


async def test_a_device_that_does_not_answer_the_write_is_a_timeout_sent_once() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port), samples) as src:
        unit.mode = "silent"
        outcome = await src.write("barrier-1", "u16", 7)
    assert (outcome.state, outcome.reason) == ("failed", "timeout")
    assert unit.writes == [(6, 0, [])]  # sent once, never retried


async def test_an_exception_answer_is_its_code() -> None:
    port = free_port()
    unit = RecordingUnit(3, mode="exception", exception_code=2)
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port), samples) as src:
        outcome = await src.write("barrier-1", "closed", True)
    assert (outcome.state, outcome.reason) == ("failed", "exception_2")
    assert len(unit.writes) == 1 and unit.coils[0] is False


async def test_a_write_the_device_ignores_is_a_readback_mismatch() -> None:
    port = free_port()
    unit = RecordingUnit(3, mode="ignore")
    unit.holding[0] = 5
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port), samples) as src:
        outcome = await src.write("barrier-1", "u16", 9)
        unconfirmed = await src.write("barrier-1", "unconfirmed", 9)
    assert (outcome.state, outcome.reason, outcome.read_back) == ("failed", "readback_mismatch", 5)
    assert "read back 5" in outcome.detail
    # confirm: none trusts the device's answer and reads nothing back
    assert (unconfirmed.state, unconfirmed.read_back) == ("done", None)


async def test_a_down_device_is_not_written() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    samples: list[Sample] = []
    async with recording_server([unit], port), running(source(port, "20ms"), samples) as src:
        unit.mode = "silent"
        async with asyncio.timeout(5):
            while src.devices[0].state != "down":
                await asyncio.sleep(0.01)
        outcome = await src.write("barrier-1", "u16", 7)
    assert (outcome.state, outcome.reason) == ("failed", "device_down")
    assert all(f != 6 for f, _, _ in unit.writes)


async def test_rtu_frames_over_tcp_write_too() -> None:
    port = free_port()
    unit = RecordingUnit(3)
    unit.holding[30] = 1
    samples: list[Sample] = []
    async with (
        recording_server([unit], port, FramerType.RTU),
        running(source(port, framing="rtu"), samples) as src,
    ):
        for name in ("closed", "lamp", "i32_cdab", "u16"):
            outcome = await src.write("barrier-1", name, VALUES.get(name, True))
            assert (outcome.state, outcome.reason) == ("done", None), outcome
    assert unit.coils[0] is True and unit.holding[30] == 1 | 1 << 5
    assert {f for f, _, _ in unit.writes} == {5, 6, 16}


async def test_the_simulated_barrier_keeps_what_is_written() -> None:
    port = free_port()
    config = ModbusTcpSource.model_validate(
        {"name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
         "timeout": "200ms", "retries": 0,
         "devices": [{"name": "barrier-1", "unit": 5, "interval": "50ms",
                      "points": profile_points("barrier")}]}
    )  # fmt: skip
    samples: list[Sample] = []
    async with serve_tcp([SimUnit(5, "barrier")], port), running(config, samples) as src:
        assert samples[0].values == {"closed": False, "speed_limit": 50}
        assert (await src.write("barrier-1", "closed", True)).read_back is True
        assert (await src.write("barrier-1", "speed_limit", 30)).read_back == 30
        seen = len(samples)
        async with asyncio.timeout(5):
            while len(samples) < seen + 2:
                await asyncio.sleep(0.01)
    assert samples[-1].values == {"closed": True, "speed_limit": 30}  # polls see the writes
