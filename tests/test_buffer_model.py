"""The buffer checked against a plain model (hypothesis stateful testing).

Random appends, fetches (the uplink reading items, committed or not), flushes, acks (of fetched
items, committed or not), clock jumps, evictions (size and age), clean reopens, crashes (the
memory queue abandoned) and power cuts (a crash plus a new boot id). After every step the buffer
must agree with the model: no committed item lost, no seq that anybody saw reused, every seq
handed out before its commit and lost in a crash covered by an ``unclean_shutdown`` gap, each
evicted seq in exactly one gap, and the incremental counters equal to what is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support import abandon

from gateway.buffer import Buffer, codec
from gateway.model import AlarmEvent, Gap, Lane, Sample

T0 = 1_764_169_200_000
DAY_MS = 86_400_000
Item = tuple[Lane, Sample | AlarmEvent]
T = TypeVar("T")


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-model-"))
        self.path = self.dir / "buffer.db"
        self.loop = asyncio.new_event_loop()
        self.clock = T0
        self.counter = 0
        self.queued: list[Item] = []  # put, not yet seen numbered
        self.live: dict[int, Item] = {}  # numbered (committed or not), not acked, not evicted
        self.exposed: set[int] = set()  # seqs the uplink was handed (fetched)
        self.acked: set[int] = set()
        # acked, and maybe still in the file: deleted with the next commit (or at a clean
        # close); a crash before that keeps them, and they are to be sent again
        self.ack_pending: dict[int, Item] = {}
        self.gapped: set[int] = set()  # every seq some gap covered
        self.gap_ids: set[int] = set()
        self.pending_gap_ids: set[int] = set()
        self.max_assigned = 0
        self.buffer = self.run(self.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def open(self) -> Buffer:
        buffer = Buffer(
            self.path,
            max_size=128 * 1024,
            max_age_s=10 * 86400,
            sync="normal",
            maintenance_interval_s=3600,
            seq_reserve_block=20,
            evict_chunk_rows=64,
            commit_max_rows=200,
            tail_max_items=50,  # so that the tail overflows and fetches mix memory and file
            now_ms=lambda: self.clock,
        )
        return await buffer.__aenter__()

    def teardown(self) -> None:
        try:
            self.run(self.buffer.__aexit__(None, None, None))
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules -----------------------------------------------------------------------------

    @rule(n=st.integers(1, 300))
    def put_samples(self, n: int) -> None:
        for _ in range(n):
            self.counter += 1
            values = {"pm25": self.counter * 0.5, "n": self.counter, "door": self.counter % 2 == 0}
            sample = Sample("aq-1", self.clock + self.counter, values, self.counter % 3 != 0)
            self.buffer.put(sample)
            self.queued.append((Lane.SAMPLE, sample))

    @rule()
    def put_alarm(self) -> None:
        self.counter += 1
        event = AlarmEvent("aq-1/pm25>50", "raised", float(self.counter), "high", self.clock)
        self.buffer.put(event)
        self.queued.append((Lane.ALARM, event))

    def fetch_all(self) -> dict[int, Item]:
        """Everything the buffer hands the uplink now, committed or not; checked against the
        model (items numbered while the fetch ran may or may not be among them)."""
        self.sync()
        known = self.max_assigned
        fetched = {
            item.seq: (lane, item.item)
            for lane in Lane
            for item in self.run(self.buffer.fetch(lane, limit=10**6))
        }
        self.sync()
        self.exposed |= fetched.keys()
        expected = {seq: item for seq, item in self.live.items() if seq <= known}
        assert {s: i for s, i in fetched.items() if s <= known} == expected
        assert fetched.keys() <= self.live.keys()
        return fetched

    @rule()
    def fetch_before_commit(self) -> None:
        self.fetch_all()

    @rule()
    def public_reads_agree(self) -> None:
        self.run(self.buffer.flush())
        self.fetch_all()
        assert {g.gap_id for g in self.run(self.buffer.pending_gaps())} == self.pending_gap_ids

    @rule()
    def flush(self) -> None:
        self.run(self.buffer.flush())
        self.sync()
        present, _, _ = self.run(self.snapshot())
        assert self.live.keys() <= present.keys(), "flush() left items uncommitted"
        assert not self.queued
        assert not self.ack_pending, "flush() left acknowledged rows in the file"

    @rule()
    def let_the_commit_task_run(self) -> None:
        self.run(asyncio.sleep(0.06))

    # Draws never depend on what the buffer did (commit timing varies from run to run, and
    # hypothesis wants the same draws when it replays): indices are mapped onto what exists.
    @rule(picks=st.lists(st.integers(0, 10**6), max_size=80), unknown=st.booleans())
    def ack(self, picks: list[int], unknown: bool) -> None:
        live = sorted(self.fetch_all())  # the uplink acknowledges what it was handed
        chosen = [live[i % len(live)] for i in picks] if live else []
        extra = [self.max_assigned + 1000] if unknown else []  # a seq it never assigned
        self.run(self.buffer.ack([*chosen, *extra]))
        for seq in chosen:
            item = self.live.pop(seq, None)
            if item is not None:
                self.ack_pending[seq] = item
            self.acked.add(seq)

    @rule(days=st.integers(0, 6))
    def time_passes_and_evict(self, days: int) -> None:
        self.clock += days * DAY_MS + 1
        self.run(self.buffer.evict_now())

    @rule(pick=st.integers(0, 10**6))
    def ack_gap(self, pick: int) -> None:
        pending = sorted(self.pending_gap_ids)
        if pending:
            gap_id = pending[pick % len(pending)]
            self.run(self.buffer.ack_gap(gap_id))
            self.pending_gap_ids.discard(gap_id)

    @rule()
    def reopen(self) -> None:
        self.run(self.buffer.__aexit__(None, None, None))
        self.buffer = self.run(self.open())
        self.sync()
        assert not self.queued  # a clean close commits everything queued
        assert not self.ack_pending, "a clean close left acknowledged rows in the file"

    @rule(power_cut=st.booleans())
    def crash(self, power_cut: bool) -> None:
        self.run(abandon(self.buffer))
        if power_cut:
            seq_file = self.dir / "buffer.db.seq"
            state = json.loads(seq_file.read_text())
            state["boot"] = "a-boot-after-a-power-cut"
            seq_file.write_text(json.dumps(state))
        self.buffer = self.run(self.open())
        present, gaps, last = self.run(self.snapshot())
        for seq in present.keys() & self.ack_pending.keys():  # acked, not yet deleted: revived
            event("a crash kept acknowledged rows")
            self.live[seq] = self.ack_pending.pop(seq)
            self.acked.discard(seq)
        self.queued.clear()  # never numbered: gone, as if never put
        lost = {seq for seq in self.live if seq not in present}
        unclean: set[int] = set()
        for gap in gaps:
            if gap.gap_id not in self.gap_ids and gap.reason == "unclean_shutdown":
                unclean.update(range(gap.from_seq, gap.to_seq + 1))
        exposed_lost = lost & self.exposed
        assert exposed_lost <= unclean, f"handed out, lost, not declared: {exposed_lost - unclean}"
        if lost:
            event("a crash lost uncommitted items")
        if exposed_lost:
            event("a crash lost items handed out before their commit")
        for seq in lost:
            del self.live[seq]
        # seqs above where numbering continues were never seen by anybody: free again
        assert all(seq not in self.exposed for seq in range(last + 1, self.max_assigned + 1))
        self.max_assigned = min(self.max_assigned, last)
        self.sync()

    @rule(n=st.integers(1, 30), power_cut=st.booleans())
    def crash_while_publishing(self, n: int, power_cut: bool) -> None:
        """The uplink was handed live samples before their commit, then the process died."""
        self.put_samples(n)
        self.fetch_all()
        self.crash(power_cut)

    # -- the model check -------------------------------------------------------------------

    async def snapshot(self) -> tuple[dict[int, Item], list[Gap], int]:
        """What the file holds, read in one go while no transaction runs (the buffer's lock;
        with fetch() and pending_gaps() the commit task could run between two calls)."""
        async with self.buffer._lock:
            with contextlib.closing(sqlite3.connect(self.path)) as db:
                present: dict[int, Item] = {
                    seq: (Lane.SAMPLE, codec.sample_from_row(ts, device, values, flags))
                    for seq, ts, device, values, flags in db.execute(
                        "SELECT seq, ts_ms, device, vals, flags FROM samples"
                    )
                }
                present |= {
                    row[0]: (Lane.ALARM, codec.alarm_from_row(*row[1:]))
                    for row in db.execute(
                        "SELECT seq, ts_ms, alarm, state, value, priority FROM alarms"
                    )
                }
                gaps = [
                    Gap(*row)
                    for row in db.execute(
                        "SELECT gap_id, from_seq, to_seq, count, reason FROM gaps"
                        " WHERE acked = 0 ORDER BY gap_id"
                    )
                ]
            return present, gaps, self.buffer.last_seq

    def sync(self) -> None:
        """Learn what was committed, acked away or evicted since the last look, and check it."""
        present, gaps, last = self.run(self.snapshot())
        for seq in self.ack_pending.keys() - present.keys():
            del self.ack_pending[seq]  # deleted at last
        present = {s: item for s, item in present.items() if s not in self.ack_pending}
        new_gaps = [g for g in gaps if g.gap_id not in self.gap_ids]
        assert last >= self.max_assigned
        never_assigned: set[int] = set()
        for gap in new_gaps:
            if gap.reason == "unclean_shutdown":
                seqs = set(range(gap.from_seq, gap.to_seq + 1))
                assert not seqs & set(self.live), "an unclean gap over seqs still held"
                assert gap.count == gap.to_seq - gap.from_seq + 1
                never_assigned |= {s for s in seqs if s > self.max_assigned}
        # seqs numbered since the last look take the queued items in order
        assigned = [s for s in range(self.max_assigned + 1, last + 1) if s not in never_assigned]
        assert len(assigned) <= len(self.queued), "more seqs handed out than items put"
        for seq, item in zip(assigned, self.queued, strict=False):
            assert seq not in self.gapped and seq not in self.acked, f"seq {seq} reused"
            assert seq not in self.exposed, f"seq {seq} was seen before and is reused"
            self.live[seq] = item
        del self.queued[: len(assigned)]
        self.max_assigned = last
        for gap in new_gaps:
            event(f"gap {gap.reason}")
            self.gap_ids.add(gap.gap_id)
            self.pending_gap_ids.add(gap.gap_id)
            seqs = set(range(gap.from_seq, gap.to_seq + 1))
            assert not seqs & self.gapped, f"gap {gap} covers seqs already reported"
            assert not seqs & set(present), f"gap {gap} covers seqs still stored"
            self.gapped |= seqs
            if gap.reason == "unclean_shutdown":
                continue
            evicted = seqs & set(self.live)
            assert seqs <= evicted | self.acked, f"eviction gap {gap} covers unknown seqs"
            assert gap.count == len(evicted)
            for seq in evicted:
                del self.live[seq]
        assert {g.gap_id for g in gaps} == self.pending_gap_ids
        for seq, item in present.items():
            assert self.live.get(seq) == item, f"stored seq {seq} unknown or changed"
        stats = self.buffer.stats
        held = [lane for lane, _ in (*self.live.values(), *self.queued)]
        assert stats.samples == len(held)  # acked rows not yet deleted are not counted
        assert stats.alarms == held.count(Lane.ALARM)
        assert stats.last_seq == last
        assert stats.writable

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.sync()


BufferMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_buffer_model = BufferMachine.TestCase
