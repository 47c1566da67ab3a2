"""``while_raised``: a raised alarm polls its devices faster, and they go back when it clears.

Through the daemon's Pipeline (alarms, the buffer, the shared device core) against a real
pymodbus server: the river level is pushed over the alarm's threshold and back, and the rate
is read off the samples' own timestamps. A new Pipeline on the same buffer while raised (a
restart or a reload) resumes the override.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import statistics
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml
from support import free_port

from gateway.buffer import Buffer
from gateway.cli import summarise
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.model import Sample
from gateway.pipeline import Pipeline
from gateway.sources.modbus.sim import SimUnit, profile_points, serve_tcp
from gateway.sources.registry import installed
from gateway.supervisor import Supervisor

NORMAL, FAST = 0.5, 0.05
ALARM = "river-1/level>3.2"


def write_config(tmp_path: Path, port: int, **alarm: object) -> Path:
    config = {
        "gateway": {"id": "river-gw"},
        "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "sources": [
            {"name": "bus", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
             "timeout": "300ms", "retries": 0,
             "devices": [{"name": "river-1", "unit": 1, "interval": f"{NORMAL}s",
                          "points": profile_points("water_level")}]},
        ],
        "alarms": [{"point": "river-1/level", "above": 3.2, "clear_below": 3.0,
                    "while_raised": {"interval": {"river-1": f"{FAST * 1000:g}ms"}}, **alarm}],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Recorded(Pipeline):
    """The daemon's pipeline, keeping each sample's timestamp as it passes."""

    def __init__(self, *args: object) -> None:
        self.stamps: list[int] = []
        super().__init__(*args)  # type: ignore[arg-type]

    def accept(self, sample: Sample) -> None:
        self.stamps.append(sample.ts_ms)
        super().accept(sample)


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    task = asyncio.create_task(pipeline.run_sources())
    try:
        yield pipeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], object], within_s: float = 15.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.01)


def gaps_s(stamps: list[int]) -> list[float]:
    return [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]


def set_level(unit: SimUnit, metres: float) -> None:
    unit.poke("input", 0, [round(metres * 1000)])  # uint16 with scale 0.001


async def test_the_rate_goes_up_while_raised_and_back_down_when_cleared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.pipeline")
    port = free_port()
    unit = SimUnit(1, "water_level")
    set_level(unit, 1.0)
    loaded = load_config(write_config(tmp_path, port), installed())
    async with serve_tcp([unit], port), Buffer(tmp_path / "buffer.db") as buffer:
        pipeline = Recorded(loaded.config, buffer, SystemClock(), Supervisor(), loaded.kinds)
        core = pipeline.cores["river-1"]
        async with running(pipeline):
            await until(lambda: len(pipeline.stamps) >= 4)
            calm = list(pipeline.stamps)
            assert (core.stats.interval_s, core.stats.interval_reason) == (NORMAL, None)

            set_level(unit, 4.0)  # the river floods
            await until(lambda: core.stats.interval_reason is not None)
            raised_at = len(pipeline.stamps)
            assert core.stats.interval_s == FAST
            assert core.stats.interval_reason == f"while alarm {ALARM} is raised"
            assert buffer.raised_alarms() == {ALARM}
            await until(lambda: len(pipeline.stamps) >= raised_at + 20)
            flood = pipeline.stamps[raised_at:]

            set_level(unit, 1.0)  # and goes down again
            await until(lambda: core.stats.interval_reason is None)
            cleared_at = len(pipeline.stamps)
            await until(lambda: len(pipeline.stamps) >= cleared_at + 4)
            after = pipeline.stamps[cleared_at:]
    # the drift-free schedule never polls early: every calm gap is at least the interval
    assert min(gaps_s(calm)) >= NORMAL * 0.9
    assert min(gaps_s(after)) >= NORMAL * 0.9
    # while raised, polls come at the fast interval: many times the calm rate
    assert statistics.median(gaps_s(flood)) < NORMAL / 3
    assert core.stats.interval_s == NORMAL
    # logged once each way
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.pipeline"]
    faster = [m for m in messages if m.startswith(f"river-1: polled every {FAST:g}s while")]
    back = [m for m in messages if m.startswith(f"river-1: polled every {NORMAL:g}s again")]
    assert len(faster) == 1 and len(back) == 1, messages


async def test_a_restart_while_raised_resumes_the_faster_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.pipeline")
    port = free_port()
    unit = SimUnit(1, "water_level")
    set_level(unit, 4.0)
    loaded = load_config(write_config(tmp_path, port), installed())
    async with serve_tcp([unit], port):
        async with Buffer(tmp_path / "buffer.db") as buffer:
            first = Recorded(loaded.config, buffer, SystemClock(), Supervisor(), loaded.kinds)
            async with running(first):
                await until(lambda: first.cores["river-1"].stats.interval_s == FAST)
        # a restart: a new buffer on the same file, a new pipeline
        async with Buffer(tmp_path / "buffer.db") as buffer:
            assert buffer.raised_alarms() == {ALARM}
            second = Recorded(loaded.config, buffer, SystemClock(), Supervisor(), loaded.kinds)
            core = second.cores["river-1"]
            assert core.stats.interval_s == FAST  # before its first poll
            async with running(second):
                await until(lambda: len(second.stamps) >= 10)
            assert statistics.median(gaps_s(second.stamps)) < NORMAL / 3
            assert buffer.raised_alarms() == {ALARM}  # not raised again
    assert any("resumed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("interval", "device", "message"),
    [
        ("5ms", "river-1", "5ms is too short; at least 10ms"),
        ("1s", "rivr-1", "no device named 'rivr-1' (did you mean 'river-1'?)"),
    ],
)
def test_check_refuses_unknown_devices_and_too_short_intervals(
    tmp_path: Path, interval: str, device: str, message: str
) -> None:
    path = write_config(tmp_path, 502, while_raised={"interval": {device: interval}})
    with pytest.raises(ConfigError) as caught:
        load_config(path, installed())
    assert caught.value.problems == [f"{path}: alarms[0].while_raised.interval.{device}: {message}"]


def test_check_summary_names_the_while_raised_links(tmp_path: Path) -> None:
    loaded = load_config(write_config(tmp_path, 502), installed())
    lines = summarise(loaded).splitlines()
    assert f"while {ALARM} is raised: river-1 every 50ms" in lines
    assert "    device river-1 unit 1: 3 points every 500ms" in lines
