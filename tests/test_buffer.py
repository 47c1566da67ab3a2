"""The durable buffer against real SQLite files: API, restarts, corruption, failures, eviction."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support import abandon

from gateway.buffer import Buffer, codec
from gateway.buffer.seqfile import SeqState, plan_start
from gateway.model import AlarmEvent, Gap, Lane, Sample

T0 = 1_764_169_200_000
DAY_MS = 86_400_000


def reading(n: int, ts: int = T0) -> Sample:
    return Sample("aq-1", ts + n, {"pm25": n * 0.5, "n": n})


ALARM = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", T0)


async def all_items(buffer: Buffer, lane: Lane) -> list[int]:
    return [item.seq for item in await buffer.fetch(lane, limit=10**7)]


def covered(gaps: list[Gap]) -> set[int]:
    return {seq for gap in gaps for seq in range(gap.from_seq, gap.to_seq + 1)}


async def test_round_trip_lanes_seq_and_ack(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path) as buffer:
        for n in range(5):
            buffer.put(reading(n))
        buffer.put(ALARM)
        assert await buffer.flush() == 6
        readings = await buffer.fetch(Lane.SAMPLE)
        alarms = await buffer.fetch(Lane.ALARM)
        assert [r.seq for r in readings] == [1, 2, 3, 4, 5]
        assert [r.item for r in readings] == [reading(n) for n in range(5)]
        assert [(a.seq, a.item) for a in alarms] == [(6, ALARM)]
        assert [r.seq for r in await buffer.fetch(Lane.SAMPLE, after_seq=2, up_to_seq=4)] == [3, 4]
        assert [r.seq for r in await buffer.fetch(Lane.SAMPLE, limit=2)] == [1, 2]
        await buffer.ack([1, 2, 6, 999])
        assert await all_items(buffer, Lane.SAMPLE) == [3, 4, 5]
        assert await all_items(buffer, Lane.ALARM) == []
        assert (buffer.stats.samples, buffer.stats.alarms) == (3, 0)
        assert buffer.stats.oldest_ts == reading(2).ts_ms
    async with Buffer(path) as buffer:
        assert buffer.last_seq == 6
        assert (buffer.stats.samples, buffer.stats.oldest_ts) == (3, reading(2).ts_ms)
        buffer.put(reading(9))
        assert await buffer.flush() == 7
        assert await buffer.pending_gaps() == []


async def test_live_reading_is_committed_without_flush(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        buffer.put(reading(1))
        async with asyncio.timeout(5):
            assert await buffer.wait_for_seq(0) == 1
        assert await all_items(buffer, Lane.SAMPLE) == [1]


async def test_a_seq_waiter_wakes_once_its_seq_is_passed_and_a_cancelled_one_is_forgotten(
    tmp_path: Path,
) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        waiter = asyncio.ensure_future(buffer.wait_for_seq(3))
        abandoned = asyncio.ensure_future(buffer.wait_for_seq(2))
        await asyncio.sleep(0)
        abandoned.cancel()
        for n in range(3):
            buffer.put(reading(n))
            await asyncio.sleep(0)
            assert not waiter.done()  # seqs 1..3 are not above 3
        buffer.put(reading(3))
        async with asyncio.timeout(5):
            assert await waiter == 4
        assert abandoned.cancelled()
        assert buffer._pending._waiters == []  # nothing left behind to wake (or to leak)


async def test_unencodable_reading_is_dropped_and_counted(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "buffer.db") as buffer:
        buffer.put(Sample("aq-1", T0, {"pm25": float("nan")}))
        buffer.put(reading(1))
        assert await buffer.flush() == 1
        assert buffer.stats.dropped_total == 1


_ANY_VALUE = st.one_of(
    st.floats(),  # NaN and infinities included
    st.sampled_from([1.7e308, 2**1100, -(2**64)]),  # a sum that overflows, an int beyond floats
    st.integers(),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
    st.binary(max_size=2),
)


@given(st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 3)), _ANY_VALUE, max_size=6))
@example({"level": 1, "pm25": math.nan})
@example({"level": -math.inf, "door": True})
@example({"a": 1.7e308, "b": 1.7e308})  # finite, though their sum is not
@example({"count": 2**1100, "pm25": 1.5})
@example({"door": True, 3: 1.5})
def test_a_sample_is_refused_exactly_when_one_of_its_values_cannot_be_stored(
    values: dict[str, object],
) -> None:
    storable = all(
        isinstance(name, str)
        and (type(v) in (bool, int, str) or (type(v) is float and math.isfinite(v)))  # type: ignore[arg-type]
        for name, v in values.items()
    )
    assert (codec.problem(Sample("aq-1", T0, values)) is None) == storable  # type: ignore[arg-type]


async def test_crash_in_the_same_boot_with_intact_wal_needs_no_gap(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, seq_reserve_block=100) as buffer:
        for n in range(10):
            buffer.put(reading(n))
        await buffer.flush()
        buffer.put(reading(99))  # queued, never committed: lost like in a crash
        await abandon(buffer)
    async with Buffer(path, seq_reserve_block=100) as buffer:
        assert buffer.last_seq == 10
        assert await buffer.pending_gaps() == []
        buffer.put(reading(11))
        assert await buffer.flush() == 11


@pytest.mark.parametrize("sync", ["full", "normal"])
async def test_unclean_stop_across_a_reboot_skips_the_reservation_as_a_gap(
    tmp_path: Path, sync: str
) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, seq_reserve_block=100, sync=sync) as buffer:  # type: ignore[arg-type]
        for n in range(10):
            buffer.put(reading(n))
        await buffer.flush()
        await abandon(buffer)
    state = json.loads((tmp_path / "buffer.db.seq").read_text())
    assert state["clean"] is None
    reserved = state["reserved"]
    assert reserved >= 10
    state["boot"] = "another-boot"  # as if the box lost power and rebooted
    (tmp_path / "buffer.db.seq").write_text(json.dumps(state))
    async with Buffer(path, seq_reserve_block=100) as buffer:
        assert buffer.last_seq == reserved
        gaps = await buffer.pending_gaps()
        assert [(g.from_seq, g.to_seq, g.count, g.reason) for g in gaps] == [
            (11, reserved, reserved - 10, "unclean_shutdown")
        ]
        buffer.put(reading(1))
        assert await buffer.flush() == reserved + 1
        await buffer.ack_gap(gaps[0].gap_id)
        assert await buffer.pending_gaps() == []
    async with Buffer(path) as buffer:  # the previous close was clean: no new gap
        assert await buffer.pending_gaps() == []
        assert buffer.last_seq == reserved + 1


def test_start_plan_table() -> None:
    dirty = SeqState(reserved=200, clean=None, boot="b", base=0)
    assert plan_start(None, fresh=True, db_last=0, same_boot=True, intact=True).last_seq == 0
    clean = SeqState(reserved=200, clean=150, boot="b", base=0)
    assert plan_start(clean, fresh=False, db_last=150, same_boot=False, intact=False).gaps == []
    plan = plan_start(dirty, fresh=False, db_last=150, same_boot=True, intact=True)
    assert (plan.last_seq, plan.gaps) == (150, [])
    for same_boot, intact in [(True, False), (False, True), (False, False)]:
        plan = plan_start(dirty, fresh=False, db_last=150, same_boot=same_boot, intact=intact)
        assert (plan.last_seq, plan.gaps) == (200, [(151, 200, "unclean_shutdown")])
    plan = plan_start(
        SeqState(200, None, "b", 120), fresh=True, db_last=0, same_boot=True, intact=True
    )
    assert (plan.last_seq, plan.gaps) == (200, [(121, 200, "corrupt_buffer")])
    plan = plan_start(
        SeqState(200, 150, "b", 120), fresh=True, db_last=0, same_boot=True, intact=True
    )
    assert (plan.last_seq, plan.gaps) == (150, [(121, 150, "corrupt_buffer")])


def corrupt_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.iterdir() if ".corrupt-" in p.name)


async def test_garbage_file_is_moved_aside_and_a_fresh_buffer_starts(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(b"this is not a database\n" * 100)
    async with Buffer(path) as buffer:
        assert [Path(p).name for p in buffer.stats.corrupt_files] == [
            p.name for p in corrupt_files(tmp_path)
        ]
        assert buffer.stats.writable
        assert await buffer.pending_gaps() == []  # no seq file: the lost range is unknown
        buffer.put(reading(1))
        assert await buffer.flush() == 1


async def test_damaged_buffer_is_moved_aside_with_a_corrupt_buffer_gap(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, seq_reserve_block=100) as buffer:
        for n in range(3000):
            buffer.put(reading(n))
        assert await buffer.flush() == 3000
    with path.open("r+b") as f:  # smash pages in the middle of the table
        f.seek(8 * 4096)
        f.write(os.urandom(6 * 4096))
    async with Buffer(path, seq_reserve_block=100) as buffer:
        assert len(buffer.stats.corrupt_files) == 1
        moved = Path(buffer.stats.corrupt_files[0])
        assert moved in corrupt_files(tmp_path)
        assert moved.name.startswith("buffer.db.corrupt-")
        gaps = await buffer.pending_gaps()
        assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(1, 3000, "corrupt_buffer")]
        buffer.put(reading(1))
        assert await buffer.flush() == 3001  # never reuses a seq of the lost file


async def test_foreign_sqlite_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE readings (x)")
        other.commit()
    async with Buffer(path) as buffer:
        assert len(buffer.stats.corrupt_files) == 1
        buffer.put(reading(1))
        assert await buffer.flush() == 1
    with contextlib.closing(sqlite3.connect(corrupt_files(tmp_path)[0])) as moved:
        assert moved.execute("SELECT name FROM sqlite_schema").fetchall() == [("readings",)]


async def test_unopenable_path_degrades_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a regular file where the state directory should be")
    async with Buffer(blocker / "buffer.db", memory_queue_max=5) as buffer:
        assert not buffer.stats.writable
        assert buffer.stats.write_errors_total >= 1
        assert buffer.stats.last_error
        for n in range(7):
            buffer.put(reading(n))
        assert await buffer.flush() == 0
        assert buffer.stats.dropped_total == 2
        assert await buffer.fetch(Lane.SAMPLE) == []
        blocker.unlink()  # the directory appears (e.g. the disk got mounted)
        blocker.mkdir()
        async with asyncio.timeout(10):
            assert await buffer.wait_for_seq(0) == 5  # numbered first, then committed
            while not buffer.stats.writable:
                await asyncio.sleep(0.01)
        assert await all_items(buffer, Lane.SAMPLE) == [1, 2, 3, 4, 5]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a file system that really fills up (skipped where mount is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_holds_samples_in_memory_and_recovers(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "buffer.db"
    async with Buffer(path, memory_queue_max=400, min_free_fraction=0.0) as buffer:
        buffer.put(reading(0))
        assert await buffer.flush() == 1
        filler = tiny_tmpfs / "filler"
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"x" * 4096)
        for n in range(1, 501):  # within the seq reservation: SQLite itself hits the full disk
            buffer.put(reading(n))
        await buffer.flush()
        assert not buffer.stats.writable
        assert buffer.stats.write_errors_total >= 1
        assert "full" in (buffer.stats.last_error or "")
        assert buffer.stats.dropped_total == 100
        # numbered and held in memory: the uplink can still publish them while the disk is full
        assert buffer.last_seq == 401
        assert await all_items(buffer, Lane.SAMPLE) == list(range(1, 402))
        filler.unlink()
        async with asyncio.timeout(10):
            while not buffer.stats.writable:
                await asyncio.sleep(0.01)
        assert await buffer.flush() == 401
    with sqlite3.connect(path) as db:  # every one of them reached the file
        assert [s for (s,) in db.execute("SELECT seq FROM samples")] == list(range(1, 402))


async def test_max_size_evicts_oldest_readings_alarms_last_with_gaps(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    max_size = 512 * 1024
    async with Buffer(path, max_size=max_size, evict_chunk_rows=500) as buffer:
        buffer.put(ALARM)
        for n in range(20_000):
            buffer.put(reading(n))
            if n % 1000 == 0:
                await buffer.flush()
        last = await buffer.flush()
        await buffer.evict_now()
        stats = buffer.stats
        assert stats.bytes <= max_size
        readings = await all_items(buffer, Lane.SAMPLE)
        assert await all_items(buffer, Lane.ALARM) == [1]
        gaps = await buffer.pending_gaps()
        assert {g.reason for g in gaps} == {"max_size"}
        evicted = covered(gaps)
        assert sum(g.count for g in gaps) == len(evicted) == stats.evicted_total["max_size"]
        assert evicted.isdisjoint(readings)
        assert evicted | set(readings) | {1} == set(range(1, last + 1))
        assert min(readings) > max(evicted)  # the oldest went first
        assert stats.samples == len(readings) + 1


async def test_max_age_evicts_by_stored_time(tmp_path: Path) -> None:
    clock = [T0]
    async with Buffer(tmp_path / "buffer.db", max_age_s=2 * 86400, now_ms=lambda: clock[0]) as b:
        for n in range(10):
            b.put(reading(n))
        b.put(ALARM)
        await b.flush()
        clock[0] += DAY_MS
        for n in range(5):
            b.put(reading(n))
        await b.flush()
        clock[0] += DAY_MS + 1
        await b.evict_now()
        assert await all_items(b, Lane.SAMPLE) == [12, 13, 14, 15, 16]
        assert await all_items(b, Lane.ALARM) == []
        gaps = await b.pending_gaps()
        assert [(g.from_seq, g.to_seq, g.count, g.reason) for g in gaps] == [
            (1, 10, 10, "max_age"),
            (11, 11, 1, "max_age"),
        ]
        assert b.stats.evicted_total == {"max_age": 11}


def rows_in_file(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [seq for (seq,) in db.execute("SELECT seq FROM samples ORDER BY seq")]


async def test_acked_live_rows_leave_the_counts_at_once_and_the_file_with_the_next_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, ack_linger_s=3600) as buffer:
        for n in range(1, 4):
            buffer.put(reading(n))
        await buffer.flush()
        await buffer.ack([1, 2])
        assert (buffer.stats.samples, buffer.stats.oldest_ts) == (1, reading(3).ts_ms)
        assert [i.seq for i in await buffer.fetch(Lane.SAMPLE)] == [3]
        assert rows_in_file(path) == [1, 2, 3]  # no transaction of their own
        buffer.put(reading(4))
        await buffer.flush()
        assert rows_in_file(path) == [3, 4]  # deleted in the commit of seq 4
        await buffer.ack([3])
    assert rows_in_file(path) == [4]  # and at a clean close


async def test_acked_rows_are_deleted_after_the_linger_without_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, ack_linger_s=0.05) as buffer:
        buffer.put(reading(1))
        buffer.put(reading(2))
        await buffer.flush()
        await buffer.ack([1])
        async with asyncio.timeout(5):
            while rows_in_file(path) != [2]:
                await asyncio.sleep(0.02)
        assert buffer.stats.samples == 1


async def test_acked_backlog_rows_are_deleted_at_once_and_counted_exactly(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path) as buffer:
        for n in range(1, 6):
            buffer.put(reading(n))
    async with Buffer(path, ack_linger_s=3600) as buffer:  # reopened: all five are backlog
        assert [i.seq for i in await buffer.fetch(Lane.SAMPLE, limit=2)] == [1, 2]
        await buffer.ack([1, 2, 99])
        assert rows_in_file(path) == [3, 4, 5]
        assert (buffer.stats.samples, buffer.stats.oldest_ts) == (3, reading(3).ts_ms)


async def test_a_crash_before_the_delete_sends_acked_rows_again(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    buffer = await Buffer(path, ack_linger_s=3600).__aenter__()
    buffer.put(reading(1))
    buffer.put(reading(2))
    await buffer.flush()
    await buffer.ack([1])
    await abandon(buffer)
    async with Buffer(path) as buffer:
        assert [i.seq for i in await buffer.fetch(Lane.SAMPLE)] == [1, 2]  # at least once
        assert buffer.stats.samples == 2


async def test_live_fetch_past_the_tail_reads_the_file(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "buffer.db", tail_max_items=3) as buffer:
        for n in range(1, 9):
            buffer.put(reading(n))
        await buffer.flush()
        await buffer.ack([2, 7])
        assert await all_items(buffer, Lane.SAMPLE) == [1, 3, 4, 5, 6, 8]
        seqs = [i.seq for i in await buffer.fetch(Lane.SAMPLE, after_seq=5, limit=10)]
        assert seqs == [6, 8]
        assert [i.seq for i in await buffer.fetch(Lane.SAMPLE, after_seq=3, up_to_seq=6)] == [
            4,
            5,
            6,
        ]
