"""Fewer writes while the link is up: what the broker acknowledged before its commit is never
written, needs no commit of its own, and a crash or power cut still costs at worst a declared gap
(the settled mark in the exposure file and the seq file)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.buffer import Buffer
from gateway.buffer.seals import Sealer
from gateway.buffer.seqfile import MARK_STEP, SeqState, plan_start, read_exposed, read_state
from gateway.buffer.store import PAGE_SIZE
from gateway.keys import SigningKey
from gateway.model import AlarmEvent, Lane, Sample

T0 = 1764169200000


def test_the_settled_mark_of_the_same_boot_leaves_acknowledged_seqs_out_of_the_gap() -> None:
    dirty = SeqState(reserved=2000, clean=None, boot="b", base=0)
    before = plan_start(dirty, fresh=False, db_last=150, same_boot=True, intact=True, exposed=900)
    assert before.last_seq == 900 and before.gaps == [(151, 900, "unclean_shutdown")]
    plan = plan_start(
        dirty, fresh=False, db_last=150, same_boot=True, intact=True, exposed=900, settled=880
    )
    assert plan.last_seq == 900 and plan.gaps == [(881, 900, "unclean_shutdown")]
    settled_all = plan_start(
        dirty, fresh=False, db_last=150, same_boot=True, intact=True, exposed=900, settled=900
    )
    assert settled_all.last_seq == 900 and settled_all.gaps == []


def test_after_a_power_cut_only_the_seq_files_fsynced_settled_mark_counts() -> None:
    dirty = SeqState(reserved=2000, clean=None, boot="old", base=0, settled=1200)
    plan = plan_start(
        dirty, fresh=False, db_last=150, same_boot=False, intact=False, exposed=1900, settled=1900
    )
    # the page cache's mark did not survive the cut; the fsynced one did
    assert plan.last_seq == 2000 and plan.gaps == [(1201, 2000, "unclean_shutdown")]


async def test_samples_acknowledged_in_time_write_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, commit_interval_s=0.4, ack_linger_s=0.05, now_ms=lambda: T0) as buf:
        buf.put(Sample("dev-0", T0, {"v": 0}))  # the first reservation, committed
        await buf.flush()
        await buf.ack([1])
        await buf.flush()
        wal = path.with_name("buffer.db-wal")
        size, mtime = wal.stat().st_size, wal.stat().st_mtime_ns
        for round_ in range(5):
            for n in range(10):
                buf.put(Sample(f"dev-{n}", T0 + round_, {"v": n}))
            await buf.wait_for_seq(round_ * 10 + 10)  # numbered (the first wait for a reservation)
            items = await buf.fetch(Lane.SAMPLE, after_seq=round_ * 10 + 1)
            assert len(items) == 10
            await buf.ack([item.seq for item in items])
            await asyncio.sleep(0.15)  # well past ack_linger_s: no commit came
        assert (wal.stat().st_size, wal.stat().st_mtime_ns) == (size, mtime)
        assert buf.stats.samples == 0
        exposed, settled = read_exposed(path.with_name("buffer.db.exposed"))
        # the settled mark moves by steps of MARK_STEP; the exposure mark is exact
        assert buf.last_seq - MARK_STEP < settled <= buf.last_seq == 51
        assert exposed == 51
    state = read_state(path.with_name("buffer.db.seq"))
    assert state is not None and state.clean == 51


async def test_a_sample_not_acknowledged_is_committed_and_the_seq_file_says_settled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, commit_interval_s=0.05, seq_reserve_block=10) as buf:
        for n in range(25):  # raises the reservation (blocks of 10) twice or more
            buf.put(Sample("dev", T0 + n, {"v": n}))
        await buf.flush()
        assert buf.stats.samples == 25
        first = read_state(path.with_name("buffer.db.seq"))
        assert first is not None
        n = 25
        while (state := read_state(path.with_name("buffer.db.seq"))) == first and n < 2000:
            buf.put(Sample("dev", T0 + n, {"v": n}))
            await buf.flush()
            n += 1
        assert state is not None and state.clean is None and state.reserved > first.reserved
        # with sync full, the mark written at a reservation: everything committed before it
        assert 25 <= state.settled < n <= state.reserved


async def test_an_alarm_wakes_a_waiter_that_waits_for_a_full_batch(tmp_path: Path) -> None:
    """The uplink waiting for a batch of samples to fill sends an alarm at once."""
    async with Buffer(tmp_path / "buffer.db", sync="normal") as buf:
        buf.put(Sample("dev", T0, {"v": 1}))
        first = await buf.wait_for_seq(0)
        waiter = asyncio.ensure_future(buf.wait_for_seq(first + 99))  # a batch of 100
        buf.put(Sample("dev", T0 + 1, {"v": 2}))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # a sample alone does not wake it
        buf.put(AlarmEvent("dev/v>1", "raised", 2.0, "high", T0 + 2))
        async with asyncio.timeout(5):  # a hang guard: without the alarm it never returns
            assert await waiter == first + 2


def _wal_frames(path: Path) -> int:
    """Page frames written to the WAL since its last reset (SQLite's WAL format: a 32-byte
    header, then a 24-byte header and a page per frame)."""
    wal = path.with_name(path.name + "-wal")
    return (wal.stat().st_size - 32) // (PAGE_SIZE + 24) if wal.stat().st_size else 0


async def test_with_the_link_up_a_seal_is_one_small_commit_and_stores_no_leaf(
    tmp_path: Path,
) -> None:
    # Seals on (the default): the leaves of what the broker acknowledged before its commit go
    # straight into the seal, and the seal sent is marked by the next seal's commit.
    path = tmp_path / "buffer.db"
    sealer = Sealer("gw", SigningKey(bytes(range(32))), 0.3)
    async with Buffer(path, ack_linger_s=0.05, now_ms=lambda: T0, sealer=sealer) as buf:
        buf.put(Sample("dev-0", T0, {"v": 0}))  # the first reservation, committed
        await buf.flush()
        await buf.ack([1])
        await buf.flush()
        while not buf.seals.figures.made_total:  # the first seal, whose leaf was stored
            await asyncio.sleep(0.05)
        frames, seals = _wal_frames(path), buf.seals.figures.made_total
        for round_ in range(12):
            for n in range(10):
                buf.put(Sample(f"dev-{n}", T0 + round_, {"v": n}))
            await buf.wait_for_seq(round_ * 10 + 10)  # numbered
            items = await buf.fetch(Lane.SAMPLE, after_seq=round_ * 10 + 1)
            await buf.ack([item.seq for item in items])
            for n, _ in list(buf.seals.unsent):  # the uplink sent it and the broker acked it
                await buf.ack_seal(n)
            await asyncio.sleep(0.1)
        made = buf.seals.figures.made_total - seals
        written = _wal_frames(path) - frames
        with sqlite3.connect(path) as db:
            leaf_rows = db.execute("SELECT count(*) FROM leaves").fetchone()[0]
    assert made >= 3 and buf.seals.figures.sealed_to > 100
    # each seal: the seals table's page, in one commit (before: meta's, the leaves' pages, the
    # seal's, then a commit of its own marking it sent, and a checkpoint every 5 s)
    assert written <= made
    assert leaf_rows == 0
    with sqlite3.connect(path) as db:  # the clean stop's commit marked the acknowledged sent
        unsent = db.execute("SELECT n FROM seals WHERE sent = 0").fetchall()
    assert [n for (n,) in unsent] == [n for n, _ in buf.seals.unsent]

    async with Buffer(path, sealer=sealer) as again:  # the clean stop recorded where seqs end
        assert again.previous_run == "clean" and again.stats.gaps_total == 0
        assert again.last_seq == 121 and again.seals.figures.sealed_to > 100
