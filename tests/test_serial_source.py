"""The serial source against a simulated sensor on a real pseudo-terminal (a fresh one per test)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.model import DeviceStats, Sample
from gateway.sources.serial.config import SerialSource
from gateway.sources.serial.sim import SimulatedSerialSensor
from gateway.sources.serial.source import SerialSensorSource

NOISE_REGEX = r"LAeq=(?P<laeq>\S+) LAmax=(?P<lamax>\S+)"
NOISE_POINTS = [{"name": "laeq", "unit": "dBA"}, {"name": "lamax", "unit": "dBA"}]
AIR_POINTS = [{"name": "pm25", "unit": "ug/m3"}, {"name": "temp", "unit": "C"}]


def serial_config(port: str, **overrides: Any) -> SerialSource:
    raw: dict[str, Any] = {
        "name": "noise-1",
        "kind": "serial",
        "port": port,
        "line_end": "\r\n",
        "interval": "1s",
        "timeout": "200ms",
        "retries": 1,
        "backoff_max": "100ms",
        "parse": {"regex": NOISE_REGEX},
        "points": NOISE_POINTS,
    }
    raw.update(overrides)
    return SerialSource.model_validate(raw)


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "ttySENSOR"


@pytest.fixture
def make_sim(link: Path) -> Iterator[Callable[..., SimulatedSerialSensor]]:
    """Start a simulated sensor behind ``link``; stopped after the test."""
    started: list[SimulatedSerialSensor] = []

    def make(**options: Any) -> SimulatedSerialSensor:
        sim = SimulatedSerialSensor(link, seed=1, **options)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@contextlib.asynccontextmanager
async def running(config: SerialSource) -> AsyncIterator[tuple[DeviceStats, list[Sample]]]:
    samples: list[Sample] = []
    source = SerialSensorSource(config, samples.append)
    task = asyncio.create_task(source.run(), name="serial-source")
    try:
        yield source.devices[0], samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_stream_mode_gives_one_sample_per_line(
    make_sim: Callable[..., SimulatedSerialSensor],
) -> None:
    sim = make_sim(mode="stream", period=0.02)
    before = time.time_ns() // 1_000_000
    async with running(serial_config(sim.path)) as (stats, samples):
        await until(lambda: stats.reads_ok >= 5, "five lines")
    assert len(samples) == stats.reads_ok
    assert all(s.device == "noise-1" and set(s.values) == {"laeq", "lamax"} for s in samples)
    assert all(
        35 <= v <= 105 and s.ts_ms >= before and s.clock_synced
        for s in samples
        for v in s.values.values()
    )
    assert stats.state == "ok"
    assert stats.parse_errors <= 1  # the port may open in the middle of a line
    assert stats.last_ok_ts == samples[-1].ts_ms
    assert stats.last_values == samples[-1].values


async def test_each_line_is_one_sample_of_exactly_its_values() -> None:
    """Lines written by hand on a pty: several lines in one chunk are several samples, each
    with the values of its line, in order; a bad line is no sample at all."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        async with running(serial_config(os.ttyname(slave))) as (stats, samples):
            # the port opens in the background: prime it until a first line comes through
            async with asyncio.timeout(5):
                while not samples:
                    os.write(master, b"LAeq=40.0 LAmax=41.0\r\n")
                    await asyncio.sleep(0.05)
            os.write(master, b"LAeq=50.1 LAmax=60.2\r\nLAeq=oops LAmax=1\r\n"
                             b"LAeq=51 LAmax=61.25\r\nLAeq=52.5 LAmax=70\r\n")  # fmt: skip
            await until(lambda: samples[-1].values.get("laeq") == 52.5, "the last line")
        priming = {"laeq": 40.0, "lamax": 41.0}
        new = [s for s in samples if s.values != priming]
        assert [(s.device, s.values) for s in new] == [
            ("noise-1", {"laeq": 50.1, "lamax": 60.2}),
            ("noise-1", {"laeq": 51.0, "lamax": 61.25}),
            ("noise-1", {"laeq": 52.5, "lamax": 70.0}),
        ]
        assert stats.parse_errors == 1
        assert stats.reads_ok == len(samples)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize(
    ("fmt", "parse"),
    [
        ("kv", {"format": "kv"}),
        ("csv", {"format": "csv", "fields": ["pm25", "pm10", "temp"]}),
        ("json", {"format": "json"}),
    ],
)
async def test_poll_mode_gives_one_sample_per_answer(
    make_sim: Callable[..., SimulatedSerialSensor], fmt: str, parse: dict[str, Any]
) -> None:
    sim = make_sim(mode="poll", fmt=fmt)
    config = serial_config(
        sim.path, request="MEAS?\r\n", interval="50ms", parse=parse, points=AIR_POINTS
    )
    async with running(config) as (stats, samples):
        await until(lambda: stats.reads_ok >= 3, "three answers")
    # only the configured points, all of them, in every sample
    assert all(set(s.values) == {"pm25", "temp"} for s in samples)
    assert len(samples) == stats.reads_ok
    assert stats.state == "ok"
    assert stats.reads_failed == 0
    assert stats.requests_total >= stats.reads_ok
    assert sim.requests_seen >= stats.reads_ok


async def test_bad_lines_are_counted_and_logged_once(
    make_sim: Callable[..., SimulatedSerialSensor], caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(period=0.01, garbage_every=3, long_every=5, bad_utf8_every=7)
    caplog.set_level(logging.INFO, logger="gateway.sources.serial")
    async with running(serial_config(sim.path)) as (stats, samples):
        await until(lambda: stats.parse_errors >= 6 and stats.reads_ok >= 10, "good and bad")
    assert stats.state == "ok"
    # nothing of a bad line got through
    assert len(samples) == stats.reads_ok
    assert all(
        set(s.values) == {"laeq", "lamax"} and all(35 <= v <= 105 for v in s.values.values())
        for s in samples
    )
    dropping = [r for r in caplog.records if "dropping lines" in r.getMessage()]
    assert len(dropping) == 1


async def test_poll_mode_retries_then_recovers_from_a_silent_sensor(
    make_sim: Callable[..., SimulatedSerialSensor],
) -> None:
    sim = make_sim(mode="poll", fmt="kv")
    config = serial_config(
        sim.path,
        request="MEAS?\r\n",
        interval="50ms",
        timeout="50ms",
        parse={"format": "kv"},
        points=AIR_POINTS,
    )
    async with running(config) as (stats, _):
        await until(lambda: stats.reads_ok >= 1, "a first answer")
        sim.silent = True
        await until(lambda: stats.state == "down", "down after failed polls")
        assert stats.reads_failed >= 3
        assert stats.last_error == "no answer within 0.05s"
        assert stats.requests_total >= stats.reads_ok + 2 * stats.reads_failed  # retried once
        sim.silent = False
        await until(lambda: stats.state == "ok", "recovery")


async def test_stream_silence_makes_the_device_failing_then_down(
    make_sim: Callable[..., SimulatedSerialSensor], caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(period=0.01)
    caplog.set_level(logging.INFO, logger="gateway.sources.serial")
    async with running(serial_config(sim.path, interval="200ms")) as (stats, _):
        await until(lambda: stats.reads_ok >= 1, "a first line")
        sim.silent = True
        await until(lambda: stats.state == "down", "down after silence")
        assert stats.last_error is not None
        assert stats.last_error.startswith("no line for")
        sim.silent = False
        await until(lambda: stats.state == "ok", "recovery")
    messages = [r.getMessage() for r in caplog.records]
    changes = [m.split(":")[1].strip() for m in messages if "parse" not in m]
    assert changes == ["failing", "down", "answering again (was down)"]


async def test_a_vanished_port_is_reopened(make_sim: Callable[..., SimulatedSerialSensor]) -> None:
    sim = make_sim(period=0.01)
    async with running(serial_config(sim.path)) as (stats, samples):
        await until(lambda: stats.reads_ok >= 3, "lines before the unplug")
        sim.unplug()
        await until(lambda: stats.state == "down", "down after the unplug")
        await asyncio.sleep(0.3)  # several reopen attempts fail meanwhile
        assert stats.last_error is not None
        assert "No such file or directory" in stats.last_error
        count = len(samples)
        sim.plug()  # a new pty behind the same path
        await until(lambda: len(samples) > count + 4, "lines after the replug")
        assert stats.state == "ok"


async def test_a_port_missing_at_start_is_opened_when_it_appears(
    link: Path, make_sim: Callable[..., SimulatedSerialSensor]
) -> None:
    async with running(serial_config(str(link))) as (stats, _):
        await until(lambda: stats.state == "down", "down without a port")
        assert stats.last_error == f"cannot open {link}: No such file or directory"
        make_sim(period=0.01)
        await until(lambda: stats.reads_ok >= 3 and stats.state == "ok", "lines once plugged")


async def test_the_port_is_closed_when_the_source_stops(
    make_sim: Callable[..., SimulatedSerialSensor],
) -> None:
    sim = make_sim(period=0.01)
    async with running(serial_config(sim.path)) as (stats, _):
        await until(lambda: stats.reads_ok >= 1, "a line")
        assert _open_fds_to(sim.slave_name) == 2  # the sensor's own slave fd and ours
    assert _open_fds_to(sim.slave_name) == 1


def _open_fds_to(device: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == device
    return count
