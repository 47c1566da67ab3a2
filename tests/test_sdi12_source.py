"""The sdi12 source against simulated SDI-12 sensors behind a simulated adapter on a real
pseudo-terminal (a fresh one per test). The simulator keeps the standard's rules: a command on
the bus before an M measurement is ready aborts it, a C measurement is aborted only by a
command to its own sensor; answers take the time their characters take (shortened here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gateway.model import Sample
from gateway.sources.device import Device
from gateway.sources.sdi12.config import Sdi12Source
from gateway.sources.sdi12.sim import RiverGauge, SimSensor, SimulatedSdi12Bus
from gateway.sources.sdi12.source import Sdi12SensorSource

FAST = 0.0005  # seconds a character on the simulated bus (1200 baud is 0.0083)
GAUGE_POINTS = [
    {"name": "level", "index": 0, "unit": "m"},
    {"name": "temp", "index": 1, "unit": "C"},
    {"name": "battery", "index": 2, "unit": "V"},
]


def device(name: str, address: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "address": address,
        "interval": "300ms",
        "points": [{"name": "value", "index": 0}],
    }
    raw.update(overrides)
    return raw


def bus_config(port: str, devices: list[dict[str, Any]], **overrides: Any) -> Sdi12Source:
    raw: dict[str, Any] = {
        "name": "river-bus",
        "kind": "sdi12",
        "port": port,
        "timeout": "200ms",
        "retries": 1,
        "backoff_max": "500ms",
        "devices": devices,
    }
    raw.update(overrides)
    return Sdi12Source.model_validate(raw)


@pytest.fixture
def make_bus() -> Iterator[Callable[..., SimulatedSdi12Bus]]:
    started: list[SimulatedSdi12Bus] = []

    def make(sensors: list[SimSensor], **options: Any) -> SimulatedSdi12Bus:
        bus = SimulatedSdi12Bus(sensors, char_time=FAST, **options)
        bus.start()
        started.append(bus)
        return bus

    yield make
    for bus in started:
        bus.stop()


@contextlib.asynccontextmanager
async def running(config: Sdi12Source) -> AsyncIterator[tuple[dict[str, Device], list[Sample]]]:
    samples: list[Sample] = []
    source = Sdi12SensorSource(config, samples.append)
    task = asyncio.create_task(source.run(), name="sdi12-source")
    try:
        yield {core.name: core for core in source.cores}, samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_three_values_over_d0_and_d1_are_one_sample(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    gauge = RiverGauge("0", level=2.5, announce_s=1, ready_s=0.05, per_answer=2)
    bus = make_bus([gauge])
    config = bus_config(bus.path, [device("river-1", "0", points=GAUGE_POINTS)])
    async with running(config) as (cores, samples):
        await until(lambda: cores["river-1"].stats.reads_ok >= 2, "two measurements")
    first = samples[0]
    assert first.device == "river-1" and set(first.values) == {"level", "temp", "battery"}
    assert first.values["level"] == pytest.approx(2.5, abs=0.005)
    assert first.values["temp"] == pytest.approx(11.5, abs=0.2)
    assert first.values["battery"] == 12.6
    # the standard's sequence: the measurement, then D0 (two values) and D1 (the third)
    assert bus.commands[:3] == ["0M!", "0D0!", "0D1!"]
    assert "0D2!" not in bus.commands
    # the service request came before ttt (1 s): the values were read without waiting it out
    assert gauge.aborted == 0
    stats = cores["river-1"].stats
    assert (stats.state, stats.reads_failed, stats.parse_errors) == ("ok", 0, 0)
    assert stats.requests_total == 3 * stats.reads_ok
    assert stats.last_values == samples[-1].values


async def test_a_crc_measurement_checks_every_answer(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    soil = SimSensor("a", [(23.25, 2), (-0.5, 1), (41, 0)], announce_s=0, per_answer=1)
    bus = make_bus([soil], echo=True)  # this adapter echoes each command: no answer of its own
    points = [
        {"name": "moisture", "index": 0},
        {"name": "temp", "index": 1},
        {"name": "ec", "index": 2},
    ]
    config = bus_config(bus.path, [device("soil-1", "a", crc=True, points=points)])
    async with running(config) as (cores, samples):
        await until(lambda: len(samples) >= 2, "two measurements")
    assert samples[0].values == {"moisture": 23.25, "temp": -0.5, "ec": 41.0}
    assert bus.commands[:4] == ["aMC!", "aD0!", "aD1!", "aD2!"]  # ttt 000: no wait
    stats = cores["soil-1"].stats
    assert (stats.state, stats.parse_errors, stats.reads_failed) == ("ok", 0, 0)


async def test_concurrent_measurements_share_the_bus_while_they_run(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    a = SimSensor("1", [(1.5, 1)], announce_s=1)
    b = SimSensor("2", [(2.5, 1)], announce_s=1)
    m = RiverGauge("3", announce_s=1, ready_s=0.1)
    bus = make_bus([a, b, m])
    config = bus_config(
        bus.path,
        [
            device("rain-1", "1", measure="C", interval="5s"),
            device("rain-2", "2", measure="C", interval="5s"),
            device("river-1", "3", interval="5s", points=GAUGE_POINTS),
        ],
    )
    async with running(config) as (cores, samples):
        await until(lambda: len(samples) >= 3, "one measurement of each")
    # both C measurements and the M run during the first C's second: one aC! after the
    # other, the M (which holds the bus until its values are read) in between, then the Ds
    assert bus.commands[:2] == ["1C!", "2C!"]
    assert bus.commands.index("3D1!") < bus.commands.index("1D0!")
    assert {s.device: s.values for s in samples} == {
        "rain-1": {"value": 1.5},
        "rain-2": {"value": 2.5},
        "river-1": samples[[s.device for s in samples].index("river-1")].values,
    }
    assert (a.aborted, b.aborted, m.aborted) == (0, 0, 0)
    assert all(core.stats.parse_errors == 0 for core in cores.values())


async def test_faulty_sensors_are_counted_each_on_its_own_and_never_block_the_good_one(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    sensors = [
        RiverGauge("0", announce_s=1, ready_s=0.02),
        SimSensor("1", announce_s=0, late_by=0.45),  # every answer after the 200 ms timeout
        SimSensor("2", announce_s=0, bad_crc=True),
        SimSensor("3", announce_s=0, answer_as="7"),  # answers with an address nobody has
        SimSensor("4", announce_s=0, truncate=True),  # D answers cut short, no line end
        SimSensor("5", silent=True),
    ]
    bus = make_bus(sensors)
    config = bus_config(
        bus.path,
        [
            device("river-1", "0", points=GAUGE_POINTS),
            device("late", "1"),
            device("bad-crc", "2", crc=True),
            device("foreign", "3"),
            device("truncated", "4"),
            device("silent", "5"),
        ],
    )
    async with running(config) as (cores, samples):
        await until(
            lambda: (
                all(c.stats.reads_failed >= 3 for n, c in cores.items() if n != "river-1")
                and cores["late"].stats.parse_errors >= 1
            ),
            "three failed polls of each faulty sensor",
            within=20,
        )
        good = cores["river-1"].stats
        before = good.reads_ok
        await until(lambda: good.reads_ok >= before + 3, "the good gauge still measuring")
    assert (good.state, good.reads_failed, good.parse_errors) == ("ok", 0, 0)
    assert {s.device for s in samples} == {"river-1"}
    stats = {name: core.stats for name, core in cores.items()}
    for name in ("late", "bad-crc", "foreign", "truncated", "silent"):
        assert stats[name].state in ("failing", "down"), name
        assert stats[name].reads_ok == 0, name
    # each counted on its own, with a reason a person can act on
    assert stats["late"].parse_errors >= 1  # its late answers came during others' commands
    assert "no answer to 1M! within 0.2s" in (stats["late"].last_error or "")
    assert stats["bad-crc"].parse_errors >= 2  # D0 and its retry
    assert "2D0!: bad_crc" in (stats["bad-crc"].last_error or "")
    assert stats["foreign"].parse_errors >= 2
    assert "wrong_address" in (stats["foreign"].last_error or "")
    assert "from no known address" in (stats["foreign"].last_error or "")
    assert stats["truncated"].parse_errors >= 1
    assert "no answer to 4D0! within 0.2s (truncated" in (stats["truncated"].last_error or "")
    assert stats["silent"].parse_errors == 0
    assert stats["silent"].last_error == "no answer to 5M! within 0.2s"


async def test_a_sensor_that_announces_fewer_values_than_the_points_need(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    bus = make_bus([SimSensor("0", [(1.0, 1)], announce_s=0)])
    points = [{"name": "a", "index": 0}, {"name": "b", "index": 3}]
    config = bus_config(bus.path, [device("d", "0", points=points)])
    async with running(config) as (cores, samples):
        await until(lambda: cores["d"].stats.reads_failed >= 1, "a failed poll")
    assert samples == []
    assert cores["d"].stats.last_error == "the sensor gave 1 values; no value for b (index 3)"


async def test_a_port_that_cannot_be_opened_makes_every_device_down(tmp_path: Any) -> None:
    config = bus_config(str(tmp_path / "ttyNONE"), [device("a", "0"), device("b", "1")])
    async with running(config) as (cores, _):
        await until(lambda: all(c.state == "down" for c in cores.values()), "all down")
    assert all("cannot open" in (c.stats.last_error or "") for c in cores.values())


def test_the_simulator_aborts_an_m_measurement_that_another_command_interrupts(
    make_bus: Callable[..., SimulatedSdi12Bus],
) -> None:
    """The rule the tests above rely on (their ``aborted == 0``): any command on the bus before
    an M measurement is ready aborts it, no service request comes, and aD0! gives no values."""
    gauge = RiverGauge("0", announce_s=1, ready_s=0.3)
    other = SimSensor("1", announce_s=0)
    bus = make_bus([gauge, other])
    fd = os.open(bus.slave_name, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        os.write(fd, b"0M!\r\n")
        time.sleep(0.05)
        os.write(fd, b"1!\r\n")  # before the gauge is ready
        time.sleep(0.5)
        os.write(fd, b"0D0!\r\n")
        time.sleep(0.1)
        answers = os.read(fd, 4096)
    finally:
        os.close(fd)
    assert answers == b"00013\r\n1\r\n0\r\n"  # atttn, the other's a, then an empty aD0!
    assert gauge.aborted == 1


async def test_an_adapter_unplugged_and_back_makes_the_devices_down_then_ok(
    tmp_path: Any,
) -> None:
    link = tmp_path / "ttyUSB-sdi12"
    first = SimulatedSdi12Bus([RiverGauge("0", announce_s=0)], link, char_time=FAST)
    first.start()
    config = bus_config(str(link), [device("river-1", "0", points=GAUGE_POINTS)])
    second: SimulatedSdi12Bus | None = None
    try:
        async with running(config) as (cores, samples):
            core = cores["river-1"]
            await until(lambda: core.stats.reads_ok >= 1, "a first measurement")
            first.stop()  # the USB adapter goes away
            await until(lambda: core.state == "down", "down")
            assert "port lost" in (core.stats.last_error or "") or "cannot open" in (
                core.stats.last_error or ""
            )
            second = SimulatedSdi12Bus([RiverGauge("0", announce_s=0)], link, char_time=FAST)
            second.start()  # and comes back, on a new pty behind the same path
            before = len(samples)
            await until(lambda: len(samples) > before and core.state == "ok", "back")
    finally:
        first.stop()
        if second is not None:
            second.stop()
