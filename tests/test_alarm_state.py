"""Alarm state survives restarts: a restart while raised pages nobody again.

v0.1 kept the state in memory only: after 50 kill -9 restarts with the level above the
threshold during some of them, it published "raised" 43 times for 17 real changes. The state
now lives in the buffer's database, written in the commit of each alarm event.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from support import abandon

from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmRule
from gateway.model import AlarmEvent, Lane, Sample

T0 = 1_764_169_200_000
RULE = AlarmRule(point="river-1/level", above=3.2, clear_below=3.0, priority="critical")


def level(value: float, n: int) -> Sample:
    return Sample("river-1", T0 + n * 1000, {"level": value})


async def run_once(path: Path, values: list[float], first: int, *, crash: bool) -> None:
    """One life of the gateway: start, poll these values, then stop (cleanly, or as kill -9
    would: nothing committed after the last flush, no clean mark)."""
    buffer = await Buffer(path).__aenter__()
    engine = AlarmEngine([RULE], raised=buffer.raised_alarms())
    for n, value in enumerate(values, first):
        sample = level(value, n)
        buffer.put(sample)
        for event in engine.observe(sample):
            buffer.put(event)
    await buffer.flush()
    if crash:
        await abandon(buffer)
    else:
        await buffer.__aexit__(None, None, None)


async def events_stored(path: Path) -> list[AlarmEvent]:
    async with Buffer(path) as buffer:
        items = await buffer.fetch(Lane.ALARM, limit=10**6)
    return [item.item for item in items if isinstance(item.item, AlarmEvent)]


async def test_a_restart_while_raised_publishes_nothing_new(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    await run_once(path, [2.0, 3.5, 3.6], 0, crash=True)  # raised, then killed
    await run_once(path, [3.7, 3.4], 10, crash=True)  # still above: stays raised, silently
    await run_once(path, [3.3], 20, crash=False)
    assert [e.state for e in await events_stored(path)] == ["raised"]


async def test_a_condition_that_cleared_while_down_is_cleared_on_the_first_poll(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    await run_once(path, [3.5], 0, crash=True)
    await run_once(path, [2.1, 2.0], 10, crash=False)  # the river fell while the box was off
    events = await events_stored(path)
    assert [(e.state, e.value, e.ts_ms) for e in events] == [
        ("raised", 3.5, T0),
        ("cleared", 2.1, T0 + 10_000),
    ]


async def test_fifty_crashes_give_exactly_the_real_transitions(tmp_path: Path) -> None:
    rng = random.Random(50)
    path = tmp_path / "buffer.db"
    truth = AlarmEngine([RULE])  # one engine that never restarts: the real changes
    real = 0
    n = 0
    for _ in range(50):
        values = [rng.choice([2.0, 2.9, 3.1, 3.3, 4.0]) for _ in range(rng.randint(1, 6))]
        for k, value in enumerate(values, n):
            real += len(truth.observe(level(value, k)))
        await run_once(path, values, n, crash=True)
        n += len(values)
    events = await events_stored(path)
    assert real >= 10  # the level really did cross the threshold many times
    assert len(events) == real
    states = [e.state for e in events]
    assert all(a != b for a, b in itertools.pairwise(states))  # strictly alternating


async def test_an_alarm_acknowledged_before_its_commit_keeps_its_state(tmp_path: Path) -> None:
    """A live alarm is often published and acknowledged before its commit, so its row is never
    written; its rule's state must reach the disk all the same, or a restart pages again."""
    path = tmp_path / "buffer.db"
    buffer = await Buffer(path, commit_interval_s=3600, ack_linger_s=3600).__aenter__()
    buffer.put(level(2.0, 0))
    await buffer.flush()  # seqs are now reserved: the next items are numbered at put
    buffer.put(AlarmEvent(RULE.name, "raised", 3.5, "critical", T0 + 1000))
    held = await buffer.fetch(Lane.ALARM)
    assert [item.item.state for item in held] == ["raised"]  # type: ignore[union-attr]
    await buffer.ack([item.seq for item in held])  # out of the queue before any commit
    await buffer.flush()
    await abandon(buffer)  # kill -9
    async with Buffer(path) as again:
        assert again.raised_alarms() == {RULE.name}
        assert await again.fetch(Lane.ALARM) == []  # delivered: nothing to send again
