"""ModbusSource against real pymodbus servers: TCP on loopback, RTU over a fresh pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from proxy import FaultProxy
from support import free_port, stop_process

from gateway.model import DeviceStats, Sample, now_ms
from gateway.sources.modbus.config import ModbusRtuSource, ModbusTcpSource
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.sim import SimUnit, profile_points, serve_rtu, serve_tcp
from gateway.sources.modbus.source import DOWN_AFTER, ModbusSource

TIMEOUT = 0.2


@contextlib.contextmanager
def socat_pty_pair() -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals made by socat, stopped by pid on exit."""
    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        paths: list[str] = []
        while len(paths) < 2:
            line = proc.stderr.readline().decode()
            assert line, "socat exited before making the pty pair"
            found = re.search(r"PTY is (\S+)", line)
            if found:
                paths.append(found.group(1))
        yield paths[0], paths[1]
    finally:
        stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    """A fresh pty pair per test: bytes left in a reused pair leak into the next test."""
    with socat_pty_pair() as pair:
        yield pair


def device(name: str, unit: int, profile: str, interval: str = "100ms") -> dict[str, Any]:
    return {"name": name, "unit": unit, "interval": interval, "points": profile_points(profile)}


def tcp_source(port: int, *devices: dict[str, Any], **kw: Any) -> ModbusTcpSource:
    return ModbusTcpSource.model_validate(
        {"name": "tcp", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
         "timeout": f"{TIMEOUT}s", "retries": 0, "backoff_max": "400ms",
         "devices": list(devices), **kw}
    )  # fmt: skip


def rtu_source(tty: str, *devices: dict[str, Any], **kw: Any) -> ModbusRtuSource:
    return ModbusRtuSource.model_validate(
        {"name": "rtu", "kind": "modbus-rtu", "port": tty, "baudrate": 19200,
         "timeout": f"{TIMEOUT}s", "retries": 1, "backoff_max": "400ms",
         "devices": list(devices), **kw}
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(source: ModbusSource) -> AsyncIterator[ModbusSource]:
    task = asyncio.create_task(source.run(), name="source under test")
    try:
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.005)


def by_name(source: ModbusSource) -> dict[str, DeviceStats]:
    return {d.name: d for d in source.devices}


def check_samples(samples: list[Sample], sim: SimUnit, device_name: str) -> None:
    """Every poll of the device gave one sample with all its points, and the last one holds
    what the simulated unit holds, within its resolution, as the point's type says."""
    mine = [s for s in samples if s.device == device_name]
    assert mine, f"no sample of {device_name}"
    expected = sim.values()
    assert all(set(s.values) == set(expected) for s in mine)
    assert all(s.clock_synced and s.ts_ms > 1_600_000_000_000 for s in mine)
    assert [s.ts_ms for s in mine] == sorted(s.ts_ms for s in mine)
    specs = {p.name: p for p, _ in sim.points}
    for name, value in mine[-1].values.items():
        point: ModbusPoint = specs[name]
        if isinstance(expected[name], bool | str):
            assert value == expected[name]
            assert type(value) is type(expected[name])
        elif point.type.startswith("float"):
            # values move while we look: a wave near 0 needs an absolute margin
            assert isinstance(value, float)
            assert value == pytest.approx(expected[name], rel=1e-3, abs=0.05)
        else:  # integers scaled: within a few steps (values move while we look)
            assert isinstance(value, int if point.scale == 1 else float)
            assert value == pytest.approx(expected[name], abs=5 * point.scale + 2)


async def test_tcp_values_end_to_end_in_the_planned_number_of_requests() -> None:
    port = free_port()
    units = [SimUnit(1, "air_quality"), SimUnit(2, "energy_meter"), SimUnit(3, "traffic_counter")]
    samples: list[Sample] = []
    config = tcp_source(
        port,
        device("aq-1", 1, "air_quality", "300ms"),
        device("meter-1", 2, "energy_meter", "300ms"),
        device("traffic-1", 3, "traffic_counter", "300ms"),
    )
    source = ModbusSource(config, samples.append)
    async with serve_tcp(units, port) as bus, running(source):
        await until(lambda: all(d.reads_ok >= 2 for d in source.devices))
    stats = by_name(source)
    for name, sim in zip(stats, units, strict=True):
        check_samples(samples, sim, name)
        # one sample per poll, however many requests the poll took
        assert sum(s.device == name for s in samples) == stats[name].reads_ok
    # requests per poll cycle equal the plan: 2 for the air sensor (input 0-2, holding 10-13),
    # 2 for the meter (0-13 bridged, 342), 1 for the counter (counts and bits in 0-8)
    assert [s.requests_total / s.reads_ok for s in stats.values()] == [2, 2, 1]
    assert [u.requests for u in units] == [s.requests_total for s in stats.values()]
    assert bus.requests_total == sum(s.requests_total for s in stats.values())
    assert all(s.state == "ok" and s.reads_failed == 0 for s in stats.values())
    assert stats["traffic-1"].last_values["loop_fault"] is False
    assert stats["aq-1"].last_values == next(
        s.values for s in reversed(samples) if s.device == "aq-1"
    )


async def test_rtu_values_end_to_end_on_a_shared_bus(pty_pair: tuple[str, str]) -> None:
    server_tty, client_tty = pty_pair
    units = [SimUnit(1, "water_level"), SimUnit(7, "energy_meter")]
    samples: list[Sample] = []
    config = rtu_source(
        client_tty,
        device("level-1", 1, "water_level", "300ms"),
        device("meter-7", 7, "energy_meter", "300ms"),
    )
    source = ModbusSource(config, samples.append, frame_gap_s=0.002)
    async with serve_rtu(units, server_tty, baudrate=19200), running(source):
        await until(lambda: all(d.reads_ok >= 2 for d in source.devices))
    stats = by_name(source)
    check_samples(samples, units[0], "level-1")
    check_samples(samples, units[1], "meter-7")
    assert [sum(s.device == name for s in samples) for name in stats] == [
        s.reads_ok for s in stats.values()
    ]
    assert stats["level-1"].requests_total == 2 * stats["level-1"].reads_ok  # input, discrete
    assert stats["meter-7"].requests_total == 2 * stats["meter-7"].reads_ok
    assert [u.requests for u in units] == [s.requests_total for s in stats.values()]


async def test_exception_response_then_timeout_then_recovery() -> None:
    port = free_port()
    unit = SimUnit(1, "air_quality")
    source = ModbusSource(tcp_source(port, device("aq-1", 1, "air_quality", "50ms")), [].append)
    stats = source.devices[0]
    async with serve_tcp([unit], port), running(source):
        await until(lambda: stats.reads_ok >= 1)
        unit.answer_exceptions(4)
        await until(lambda: stats.state != "ok")
        assert stats.state == "failing"
        assert stats.last_error is not None and "exception code 4" in stats.last_error
        await until(lambda: stats.state == "down")
        assert stats.reads_failed == DOWN_AFTER
        unit.recover()
        await until(lambda: stats.state == "ok")
        assert stats.last_error is None
        unit.silence()
        await until(lambda: stats.state != "ok")
        assert stats.state == "failing"
        assert stats.last_error is not None and "no answer" in stats.last_error
        await until(lambda: stats.state == "down")
        failed = stats.reads_failed
        unit.recover()
        await until(lambda: stats.state == "ok")
    assert failed == 2 * DOWN_AFTER
    assert stats.reads_ok >= 3


async def test_illegal_data_address_replans_the_device_and_remembers_it() -> None:
    port = free_port()
    # strict: only the meter's own registers exist, so reading 0-13 in one go is refused
    unit = SimUnit(2, "energy_meter", strict=True)
    samples: list[Sample] = []
    source = ModbusSource(tcp_source(port, device("meter", 2, "energy_meter", "300ms")),
                          samples.append)  # fmt: skip
    stats = source.devices[0]
    async with serve_tcp([unit], port), running(source):
        await until(lambda: stats.reads_ok >= 3)
    # first poll: input 0+14 refused; halves: 0+2, then 6+8 refused and halved (6+2, 12+2);
    # then 342. Later polls: the 4 reads that worked
    assert stats.requests_total == 6 + 4 * (stats.reads_ok - 1)
    assert stats.read_mode is not None and "exception 2 (illegal data address)" in stats.read_mode
    assert stats.state == "ok" and stats.reads_failed == 0
    assert set(stats.last_values) == {"voltage", "current", "power", "energy"}
    # the first poll, read in pieces, is still one sample with every point
    check_samples(samples, unit, "meter")
    assert len(samples) == stats.reads_ok


async def test_dead_unit_on_a_shared_rtu_bus_costs_one_timeout_per_backoff_period(
    pty_pair: tuple[str, str],
) -> None:
    server_tty, client_tty = pty_pair
    units = [SimUnit(1, "air_quality"), SimUnit(2, "water_level")]
    units[1].silence()
    order: list[int] = []
    config = rtu_source(
        client_tty,
        device("aq-1", 1, "air_quality", "50ms"),
        device("dead-2", 2, "water_level", "50ms"),
    )
    source = ModbusSource(config, [].append, frame_gap_s=0.002)
    stats = by_name(source)
    async with serve_rtu(units, server_tty, baudrate=19200) as bus, running(source):
        bus.on_request = order.append
        await until(lambda: stats["dead-2"].state == "down")
        down_at = len(order)
        await until(lambda: order[down_at:].count(2) >= 4)
    healthy, dead = stats["aq-1"], stats["dead-2"]
    assert healthy.state == "ok" and healthy.reads_failed == 0
    # failing: retries + 1 = 2 attempts per poll for the first DOWN_AFTER polls ...
    assert order[:down_at].count(2) == 2 * DOWN_AFTER
    # ... then one attempt per backoff period (0.1s, 0.2s, 0.4s cap), during which the healthy
    # unit keeps its 50 ms schedule: several of its polls (2 requests each) between dead tries
    tail = order[down_at:]
    tries = [i for i, u in enumerate(tail) if u == 2]
    between = [tail[a + 1 : b].count(1) for a, b in itertools.pairwise(tries)]
    assert all(n >= 4 for n in between), between
    assert dead.requests_total == order.count(2)
    assert dead.state == "down"


async def test_lost_tcp_server_is_reconnected() -> None:
    port = free_port()
    unit = SimUnit(1, "water_level")
    source = ModbusSource(tcp_source(port, device("level", 1, "water_level", "50ms")), [].append)
    stats = source.devices[0]
    async with running(source):
        await until(lambda: stats.state == "down")  # nothing listens yet
        assert stats.last_error is not None and "connect" in stats.last_error
        async with serve_tcp([unit], port):
            await until(lambda: stats.state == "ok")
            ok = stats.reads_ok
        await until(lambda: stats.state != "ok")
        async with serve_tcp([unit], port):
            await until(lambda: stats.state == "ok" and stats.reads_ok > ok)


async def test_a_sample_is_stamped_when_its_poll_started() -> None:
    """A poll's values share one ts, taken before its first request: with 30 ms each way
    between the gateway and the unit, the poll's second request reaches the unit well after
    the first, and the sample still carries the time before the first."""
    port = free_port()
    unit = SimUnit(1, "air_quality")  # 2 requests per poll: input 0-2, holding 10-13
    requests_ms: list[int] = []  # when the unit received each request, wall clock
    seen: list[tuple[Sample, list[int]]] = []  # each sample, and the requests before it
    async with serve_tcp([unit], port) as bus, FaultProxy(port, delay_s=0.03) as proxy:
        bus.on_request = lambda _unit: requests_ms.append(now_ms())
        source = ModbusSource(
            tcp_source(proxy.port, device("aq-1", 1, "air_quality", "100ms")),
            lambda sample: seen.append((sample, list(requests_ms))),
        )
        async with running(source):
            await until(lambda: len(seen) >= 3)
    for n, (sample, before) in enumerate(seen):
        assert len(before) == 2 * (n + 1)  # this poll's two requests, and those of earlier polls
        first, second = before[-2], before[-1]
        assert sample.ts_ms <= first < second
        if n:
            assert sample.ts_ms >= before[-3]  # after the previous poll's last request
        assert set(sample.values) == set(unit.values())


async def test_a_poll_where_one_table_fails_gives_the_points_that_were_read() -> None:
    port = free_port()
    # the water level unit has input registers and discrete inputs but no holding register
    pump_hours = {"name": "pump_hours", "table": "holding", "address": 0, "type": "uint16"}
    points = [*profile_points("water_level"), pump_hours]
    config = tcp_source(port, {"name": "level", "unit": 1, "interval": "50ms", "points": points})
    samples: list[Sample] = []
    source = ModbusSource(config, samples.append)
    stats = source.devices[0]
    async with serve_tcp([SimUnit(1, "water_level")], port), running(source):
        await until(lambda: len(samples) >= 2)
    assert all(set(s.values) == {"level", "battery", "float_switch"} for s in samples)
    # the poll still failed: the device says so, and why
    assert stats.reads_ok == 0 and stats.reads_failed >= 2
    assert stats.state in ("failing", "down")
    assert stats.last_error is not None and "reading holding 0+1" in stats.last_error
    assert set(stats.last_values) == {"level", "battery", "float_switch"}


async def test_a_device_is_unknown_until_its_first_poll_and_a_first_outcome_is_no_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    config = tcp_source(
        port,
        device("aq-1", 1, "air_quality", "50ms"),
        device("ghost-9", 9, "air_quality", "50ms"),  # the server has no unit 9
    )
    source = ModbusSource(config, [].append)
    stats = by_name(source)
    assert [s.state for s in stats.values()] == ["unknown", "unknown"]
    caplog.set_level(logging.INFO, logger="gateway.sources.modbus")
    async with serve_tcp([SimUnit(1, "air_quality")], port), running(source):
        await until(lambda: stats["aq-1"].reads_ok >= 2 and stats["ghost-9"].reads_failed >= 1)
    assert stats["aq-1"].state == "ok"
    assert stats["ghost-9"].state in ("failing", "down")
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.sources.modbus"]
    assert not [m for m in messages if "answering again" in m], messages
    assert any(m.startswith("ghost-9 (unit 9): poll failed") for m in messages), messages


async def test_ascii_registers_are_read_as_text_and_bad_bytes_are_parse_errors() -> None:
    port = free_port()
    unit = SimUnit(4, "nameplate_meter")
    samples: list[Sample] = []
    source = ModbusSource(tcp_source(port, device("meter", 4, "nameplate_meter")), samples.append)
    stats = source.devices[0]
    async with serve_tcp([unit], port), running(source):
        await until(lambda: stats.reads_ok >= 2)
        check_samples(samples, unit, "meter")
        assert stats.last_values["serial"] == "SN-20261201"
        assert stats.last_values["model"] == "SDM120"  # byte_order: BA
        assert stats.parse_errors == 0
        unit.poke("holding", 1, [0xC3A9])  # UTF-8 "é" in the serial number: not ASCII
        ok = stats.reads_ok
        await until(lambda: stats.reads_ok >= ok + 3)
    assert stats.parse_errors >= 2
    assert stats.state == "ok"  # the other points of the same request still arrive
    assert {"model", "firmware"} <= set(samples[-1].values)


async def test_a_meter_that_refuses_long_reads_with_exception_3_is_read_in_pieces() -> None:
    port = free_port()
    # street_cabinet: holding 0..27 in one planned read (5 int16, 4 float32); refused over 8
    unit = SimUnit(1, "street_cabinet", max_registers=8)
    samples: list[Sample] = []
    source = ModbusSource(tcp_source(port, device("cab", 1, "street_cabinet")), samples.append)
    stats = source.devices[0]
    async with serve_tcp([unit], port), running(source):
        await until(lambda: stats.reads_ok >= 1)
        refused_in_first_poll = unit.refused
        await until(lambda: stats.reads_ok >= 4)
        check_samples(samples, unit, "cab")
    assert stats.state == "ok" and stats.reads_failed == 0
    # 0+28 refused, halved to 0+7 (ok) and 8+20 (refused), 8+14 refused, then 8+1, 20+2, 22+6
    assert refused_in_first_poll == 3
    assert unit.refused == 3  # the pieces are remembered: no refusal after the first poll
    holding = [r for r in unit.reads if r[0] == "holding"]
    assert holding[-4:] == [("holding", 0, 7), ("holding", 8, 1), ("holding", 20, 2),
                            ("holding", 22, 6)]  # fmt: skip
    assert stats.read_mode is not None
    assert stats.read_mode == (
        "in pieces (5 requests a poll): it answered exception 3 (illegal data value) "
        "to a read of holding 8+14"
    )


async def test_read_limits_from_the_source_and_the_device_shape_every_request() -> None:
    port = free_port()
    units = [SimUnit(1, "street_cabinet"), SimUnit(2, "street_cabinet"),
             SimUnit(3, "traffic_counter")]  # fmt: skip
    config = tcp_source(
        port,
        device("cab-1", 1, "street_cabinet"),  # the source's default: max_registers 10
        {**device("cab-2", 2, "street_cabinet"), "max_gap": 0, "max_registers": 125},
        {**device("traffic", 3, "traffic_counter"), "one_request_per_point": True},
        max_registers=10,
    )
    samples: list[Sample] = []
    source = ModbusSource(config, samples.append)
    stats = by_name(source)
    async with serve_tcp(units, port), running(source):
        await until(lambda: all(d.reads_ok >= 2 for d in source.devices))
    for unit in units:
        check_samples(samples, unit, {1: "cab-1", 2: "cab-2", 3: "traffic"}[unit.unit])
    assert all(u.refused == 0 for u in units)
    reads = [set(u.reads) for u in units]
    # cab-1: int16 at 0,2,4,6,8 (0+9), float32 at 20..27 (20+8), all within 10 registers
    assert reads[0] == {("holding", 0, 9), ("holding", 20, 8), ("discrete", 0, 1)}
    # cab-2: no unused register bridged: every int16 alone, the floats are contiguous
    assert reads[1] == {("holding", a, 1) for a in (0, 2, 4, 6, 8)} | {
        ("holding", 20, 8), ("discrete", 0, 1)}  # fmt: skip
    # traffic: one read per point; the two bit points share their register's read
    assert reads[2] == {("holding", 0, 2), ("holding", 2, 2), ("holding", 4, 2), ("holding", 8, 1)}
    assert stats["traffic"].read_mode == "one request per point (one_request_per_point: true)"
    assert stats["cab-1"].read_mode is None


async def test_pause_keeps_a_quiet_spell_between_requests_on_the_connection() -> None:
    port = free_port()
    unit = SimUnit(1, "air_quality")  # two requests a poll: input 0+3, holding 10+4
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()
    config = tcp_source(port, {**device("aq", 1, "air_quality", "10ms"), "pause": "30ms"})
    source = ModbusSource(config, [].append)
    async with serve_tcp([unit], port) as bus, running(source):
        bus.on_request = lambda _unit: arrivals.append(loop.time())
        await until(lambda: len(arrivals) >= 8)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # a lower bound the sleep guarantees (arrival of the next request is after the pause that
    # followed the end of the previous transaction), not a timing threshold
    assert min(gaps) >= 0.03
