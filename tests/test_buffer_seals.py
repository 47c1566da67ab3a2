"""Seals in the buffer: decided from settled seqs, chained across restarts, a migrated file."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.buffer.seals import Sealer
from gateway.errors import BufferUnsafeError
from gateway.keys import SigningKey
from gateway.model import Lane, Sample
from gateway.seals import items, merkle
from gateway.seals.seal import FIRST_PREV, chain_hash, signature_ok

KEY = SigningKey(bytes(range(32)))
SEALER = Sealer("gw", KEY, 0.01)
DATA = Path(__file__).parent / "data"


async def _settle(buffer: Buffer) -> list[dict[str, object]]:
    """Ack everything held, then commit until a seal is due and made."""
    await buffer.flush()
    while items_ := await buffer.fetch(Lane.SAMPLE, limit=10_000):
        await buffer.ack([i.seq for i in items_])
    await buffer.flush()
    await asyncio.sleep(0.02)
    for _ in range(50):  # the commit task seals once the interval has passed
        if buffer.seals.figures.sealed_to >= buffer.last_seq:
            break
        await asyncio.sleep(0.02)
    return [json.loads(body) for _, body in buffer.seals.unsent]


async def test_seals_cover_every_acked_seq_and_chain_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    samples = [Sample("d", 1000 + i, {"p": i + 0.5}) for i in range(30)]
    async with Buffer(path, sealer=SEALER) as buffer:
        for sample in samples[:20]:
            buffer.put(sample)
        (first,) = await _settle(buffer)
    assert (first["n"], first["from_seq"], first["to_seq"], first["leaves"]) == (1, 1, 20, 20)
    assert first["prev"] == FIRST_PREV and signature_ok(first, KEY.public)
    leaves = [items.stored_leaf(i + 1, s) for i, s in enumerate(samples[:20])]
    assert first["root"] == merkle.root(leaves).hex()
    async with Buffer(path, sealer=SEALER) as buffer:
        assert [json.loads(b)["n"] for _, b in buffer.seals.unsent] == [1]  # not sent: kept
        await buffer.ack_seal(1)
        for sample in samples[20:]:
            buffer.put(sample)
        (second,) = await _settle(buffer)
    assert (second["n"], second["from_seq"], second["to_seq"]) == (2, 21, 30)
    assert second["prev"] == chain_hash(first)


async def test_a_v01_file_migrated_seals_its_backlog(tmp_path: Path) -> None:
    shutil.copytree(DATA / "v01-clean", tmp_path / "v01")
    path = tmp_path / "v01" / "buffer.db"
    async with Buffer(path, sealer=SEALER) as buffer:
        held = await buffer.fetch(Lane.SAMPLE, limit=10_000)
        held_alarms = await buffer.fetch(Lane.ALARM, limit=10_000)
        await buffer.ack([i.seq for i in held_alarms])
        seals = await _settle(buffer)
    assert seals
    expected = {i.seq: items.leaf_of_stored(i) for i in [*held, *held_alarms]}
    first = min(expected)
    assert seals[0]["from_seq"] == first and seals[0]["unsealed"] == []
    covered = [s for seal in seals for s in range(seal["from_seq"], seal["to_seq"] + 1)]
    assert covered == list(range(first, max(expected) + 1))
    leaves = [expected[s] for s in range(seals[0]["from_seq"], seals[0]["to_seq"] + 1)]
    assert seals[0]["root"] == merkle.root(leaves).hex()


def _connection_threads(ended_within: float = 0.0) -> set[int | None]:
    """The connections' worker threads alive (a closed connection's thread ends just after
    ``close()`` returns: it is given ``ended_within`` seconds; an open one never ends)."""
    threads = [t for t in threading.enumerate() if "_connection_worker" in t.name]
    for thread in threads:
        thread.join(ended_within)
    return {t.ident for t in threads if t.is_alive()}


async def test_a_damaged_seal_row_is_refused_at_start_and_the_file_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, sealer=SEALER) as buffer:
        buffer.put(Sample("d", 1, {"p": 1}))
        assert await _settle(buffer)
    with sqlite3.connect(path) as db:
        db.execute('UPDATE seals SET body = \'{"n": 1, "ts"\'')
    before = path.read_bytes()
    workers = _connection_threads()
    with pytest.raises(BufferUnsafeError, match=r"seal 1 in the buffer is damaged"):
        async with Buffer(path, sealer=SEALER):
            pass
    assert path.read_bytes() == before
    # the refused connection is closed: its thread would keep the daemon from exiting 1
    assert _connection_threads(ended_within=5.0) <= workers


async def test_a_backlog_costs_no_leaves_until_it_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, sealer=SEALER) as buffer:
        for i in range(50):
            buffer.put(Sample("d", i, {"p": i}))
        await buffer.flush()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM leaves").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM samples").fetchone()[0] == 50
        (seal,) = await _settle(buffer)
        assert (seal["from_seq"], seal["to_seq"], seal["leaves"]) == (1, 50, 50)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM leaves").fetchone()[0] == 0


async def test_evicted_seqs_are_sealed_as_their_gap(tmp_path: Path) -> None:
    now = [1_760_000_000_000]
    path = tmp_path / "buffer.db"
    async with Buffer(path, sealer=SEALER, max_age_s=2 * 86400, now_ms=lambda: now[0]) as buffer:
        for i in range(10):
            buffer.put(Sample("d", now[0] - 1000 + i, {"p": i}))
        await buffer.flush()
        now[0] += 2 * 86_400_000 + 1  # the ten are now too old
        buffer.put(Sample("d", now[0], {"p": 99}))
        await buffer.flush()
        await buffer.evict_now()
        (gap,) = await buffer.pending_gaps()
        assert (gap.from_seq, gap.to_seq) == (1, 10)
        seals = await _settle(buffer)
    # the gap is one leaf at seq 1 (sealed as soon as declared, with or without seq 11)
    expected = [
        (1, 10, items.gap_leaf(gap)),
        (11, 11, items.stored_leaf(11, Sample("d", now[0], {"p": 99}))),
    ]
    covered = [q for x in seals for q in range(x["from_seq"], x["to_seq"] + 1)]
    assert covered == list(range(1, 12))
    for x in seals:
        mine = [leaf for a, b, leaf in expected if x["from_seq"] <= a and b <= x["to_seq"]]
        assert x["leaves"] == len(mine) and x["root"] == merkle.root(mine).hex()


async def test_seals_off_then_on_start_at_the_first_held_seq_and_n_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    async with Buffer(path, sealer=SEALER) as buffer:
        buffer.put(Sample("d", 1, {"p": 1}))
        (first,) = await _settle(buffer)
        await buffer.ack_seal(1)
    async with Buffer(path) as buffer:  # seal_interval: 0
        for i in range(5):
            buffer.put(Sample("d", 2 + i, {"p": i}))
        await buffer.flush()
        sent = await buffer.fetch(Lane.SAMPLE, limit=3)
        await buffer.ack([i.seq for i in sent])  # seqs 2-4 go out unsealed; 5-6 stay held
        await buffer.flush()
        assert not buffer.seals.unsent
    async with Buffer(path, sealer=SEALER) as buffer:
        (seal,) = await _settle(buffer)
    assert (seal["n"], seal["from_seq"], seal["to_seq"], seal["leaves"]) == (2, 5, 6, 2)
    assert seal["prev"] == chain_hash(first) and seal["unsealed"] == []


async def test_a_seal_made_while_the_stream_is_idle_wakes_the_uplink_waiting_for_a_seq(
    tmp_path: Path,
) -> None:
    async with Buffer(tmp_path / "buffer.db", sealer=SEALER) as buffer:
        buffer.put(Sample("d", 1, {"p": 1}))
        await buffer.flush()
        await buffer.ack([i.seq for i in await buffer.fetch(Lane.SAMPLE)])
        waiter = asyncio.create_task(buffer.wait_for_seq(buffer.last_seq))  # no seq will come
        await asyncio.sleep(0)
        assert not waiter.done()
        assert await _settle(buffer)
        assert await asyncio.wait_for(waiter, 5) == 1


async def test_leaves_waiting_in_memory_are_bounded_by_a_seal_however_long_the_interval(
    tmp_path: Path,
) -> None:
    from gateway.seals.seal import MAX_LEAVES  # noqa: PLC0415

    hourly = Sealer("gw", KEY, 3600.0)
    most = 0
    path = tmp_path / "buffer.db"
    async with Buffer(
        path, commit_interval_s=60.0, seq_reserve_block=50_000, sealer=hourly
    ) as buffer:
        for round_ in range(MAX_LEAVES // 500 + 4):  # acknowledged before their commit
            for n in range(500):
                buffer.put(Sample("d", n, {"p": n}))
            await buffer.wait_for_seq(round_ * 500 + 499)  # numbered
            got = await buffer.fetch(Lane.SAMPLE, after_seq=round_ * 500, limit=10_000)
            await buffer.ack([i.seq for i in got])
            most = max(most, len(buffer.seals.held))
            await asyncio.sleep(0.01)  # the next poll cycle
        for _ in range(500):  # the commit task's turn (a loaded machine is slow to give it)
            if buffer.seals.figures.made_total:
                break
            await asyncio.sleep(0.02)
        assert buffer.seals.figures.made_total == 1  # long before the hour
        assert json.loads(buffer.seals.unsent[0][1])["leaves"] == MAX_LEAVES
    assert most <= MAX_LEAVES
