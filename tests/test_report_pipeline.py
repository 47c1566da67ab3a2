"""Report by exception in the pipeline: what reaches the buffer (and so the upstream), while
the alarm rules still see every poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.buffer import Buffer
from gateway.clock import SystemClock
from gateway.config import Config, load_config
from gateway.model import AlarmEvent, Lane, Sample
from gateway.pipeline import Pipeline
from gateway.sources.registry import installed
from gateway.supervisor import Supervisor

T0 = 1_764_169_200_000


def config(
    tmp_path: Path, report: dict[str, Any] | None, alarms: list[dict[str, Any]] | None = None
) -> Config:
    device: dict[str, Any] = {
        "name": "river-1",
        "unit": 1,
        "interval": "1s",
        "points": [
            {"name": "level", "table": "holding", "address": 0, "type": "float32"},
            {"name": "pump_on", "table": "coil", "address": 0, "type": "bool"},
        ],
    }
    if report is not None:
        device["report"] = report
    doc = {
        "gateway": {"id": "gw"},
        "buffer": {"path": str(tmp_path / "unused.db")},
        "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
        "sources": [{"name": "s", "kind": "modbus-tcp", "host": "127.0.0.1", "devices": [device]}],
        "alarms": alarms or [],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path, installed()).config


async def stored(buffer: Buffer, lane: Lane) -> list[Sample | AlarmEvent]:
    await buffer.flush()
    return [item.item for item in await buffer.fetch(lane, limit=10**6)]


@pytest.fixture
def clock() -> list[int]:
    return [T0]


async def feed(pipeline: Pipeline, clock: list[int], polls: list[tuple[float, bool]]) -> None:
    """One poll a second, on the samples' own time (which report by exception judges by)."""
    for level, pump in polls:
        clock[0] += 1000
        pipeline.accept(Sample("river-1", clock[0], {"level": level, "pump_on": pump}))


async def test_deadband_and_any_change_decide_what_is_stored(
    tmp_path: Path, clock: list[int]
) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        pipeline = Pipeline(
            config(tmp_path, {"deadband": 0.5, "max_silence": "1h"}),
            buffer,
            SystemClock(),
            Supervisor(),
        )
        await feed(pipeline, clock, [(2.0, False), (2.2, False), (2.6, False), (2.7, True),
                                     (2.7, True), (1.9, True)])  # fmt: skip
        samples = await stored(buffer, Lane.SAMPLE)
    assert [s.values for s in samples if isinstance(s, Sample)] == [
        {"level": 2.0, "pump_on": False},  # the first poll sends everything
        {"level": 2.6},  # 0.6 from the last sent (2.0): beyond the deadband; 2.2 was not
        {"pump_on": True},  # a bool is sent on any change; level 2.7 is within 0.5 of 2.6
        {"level": 1.9},  # and the poll in between, with nothing new, took no seq at all
    ]
    assert buffer.last_seq == 4


async def test_a_constant_value_is_sent_once_per_max_silence(
    tmp_path: Path, clock: list[int]
) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        pipeline = Pipeline(
            config(tmp_path, {"deadband": 0.5, "max_silence": "5s"}),
            buffer,
            SystemClock(),
            Supervisor(),
        )
        await feed(pipeline, clock, [(3.0, False)] * 12)  # one poll a second, 12 s
        samples = await stored(buffer, Lane.SAMPLE)
    assert len(samples) == 3  # at 1 s (the first), 6 s and 11 s


async def test_a_value_changing_every_poll_is_sent_every_poll_and_alarms_see_all(
    tmp_path: Path, clock: list[int]
) -> None:
    alarm = {"point": "river-1/level", "above": 3.2, "priority": "critical"}
    async with Buffer(tmp_path / "buffer.db") as buffer:
        pipeline = Pipeline(
            config(tmp_path, {"deadband": 0.5}, [alarm]), buffer, SystemClock(), Supervisor()
        )
        await feed(pipeline, clock, [(float(n), False) for n in range(6)])
        await feed(pipeline, clock, [(3.0, False), (3.3, False)])  # 3.3: within the deadband
        samples = await stored(buffer, Lane.SAMPLE)
        alarms = await stored(buffer, Lane.ALARM)
    assert [s.values.get("level") for s in samples if isinstance(s, Sample)][:6] == [
        0.0,
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    ]
    # 4.0 raised the alarm, 3.0 cleared it, and 3.3 (not sent: within 0.5 of 3.0) raised it
    # again: the rule saw the value the filter kept back
    assert [(a.state, a.value) for a in alarms if isinstance(a, AlarmEvent)] == [
        ("raised", 4.0),
        ("cleared", 3.0),
        ("raised", 3.3),
    ]


async def test_without_report_every_value_is_sent_every_poll(
    tmp_path: Path, clock: list[int]
) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        pipeline = Pipeline(config(tmp_path, None), buffer, SystemClock(), Supervisor())
        await feed(pipeline, clock, [(1.0, False)] * 4)
        samples = await stored(buffer, Lane.SAMPLE)
    assert [s.values for s in samples if isinstance(s, Sample)] == [
        {"level": 1.0, "pump_on": False}
    ] * 4
