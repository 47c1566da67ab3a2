"""The status page's timeline is kept in the buffer's database: it survives crashes, costs no
fsync of its own, and stays bounded (the last day, at most 500)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import abandon

from gateway.buffer import Buffer
from gateway.model import Sample, StatusEvent

T0 = 1_764_169_200_000
DAY_MS = 86_400_000


def event(n: int, ts: int = T0, kind: str = "link_down") -> StatusEvent:
    return StatusEvent(ts + n, kind, f"event {n}", {"server": "mqtt://a", "n": n})


async def test_events_survive_a_crash_and_tell_how_the_last_run_ended(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    clock = [T0]
    buffer = await Buffer(path, now_ms=lambda: clock[0]).__aenter__()
    assert buffer.previous_run is None  # a new buffer
    buffer.record_event(event(1))
    buffer.put(Sample("aq-1", T0, {"pm25": 1.0}))
    buffer.record_event(event(2))
    assert buffer.events() == [event(2), event(1)]  # at once, newest first
    await buffer.flush()
    await abandon(buffer)  # kill -9: what the last commit held is kept
    async with Buffer(path, now_ms=lambda: clock[0]) as again:
        assert again.previous_run == "crash"
        assert again.events() == [event(2), event(1)]
        again.record_event(event(3, kind="stop"))
    async with Buffer(path, now_ms=lambda: clock[0]) as third:
        assert third.previous_run == "clean"
        assert [e.message for e in third.events()] == ["event 3", "event 2", "event 1"]


async def test_events_go_to_disk_with_the_data_commits(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, ack_linger_s=3600, commit_interval_s=3600, now_ms=lambda: T0) as buffer:
        buffer.record_event(event(1))
        buffer.put(Sample("aq-1", T0, {"pm25": 1.0}))
        with sqlite3.connect(path) as db:  # neither is written yet: one commit will take both
            assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
        await buffer.flush()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
            assert db.execute("SELECT count(*) FROM samples").fetchone() == (1,)


async def test_events_are_bounded_to_a_day_and_500(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    clock = [T0]
    async with Buffer(path, now_ms=lambda: clock[0]) as buffer:
        for n in range(700):
            buffer.record_event(event(n))
        await buffer.flush()
        assert len(buffer.events()) == 500
        assert buffer.events()[-1] == event(200)
        clock[0] += DAY_MS + 250
        assert [e.message for e in buffer.events()][-1] == "event 250"  # older than a day: gone
        buffer.record_event(event(1000, ts=clock[0]))
        await buffer.flush()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT min(ts_ms), count(*) FROM events").fetchone() == (T0 + 250, 451)
