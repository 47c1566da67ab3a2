"""A real child process appends to the buffer and is killed with SIGKILL at random moments.

After each kill the buffer is reopened here: every seq the child reported committed is still
stored, unless it was (possibly) acknowledged or is covered by a gap, and new seqs continue
above the highest ever assigned.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import stop_process

from gateway.buffer import Buffer
from gateway.model import Lane, Sample

CHILD = Path(__file__).with_name("buffer_child.py")
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start ``buffer_child.py``; every child is stopped by pid in teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / "child.err").open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=err
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()


@dataclass
class Ledger:
    """What the children said: seqs committed, seqs perhaps acknowledged, the highest seen."""

    committed: set[int] = field(default_factory=set)
    exposed: set[int] = field(default_factory=set)  # handed out, maybe before their commit
    maybe_acked: set[int] = field(default_factory=set)
    gapped: set[int] = field(default_factory=set)
    highest: int = 0

    def read(self, output: bytes) -> None:
        opened = None
        lines = output.split(b"\n")[:-1]  # the last piece is empty or a torn line
        for line in lines:
            word, *args = line.decode().split()
            if word == "open":
                opened = int(args[0])
                assert opened >= self.highest, "a reopened buffer went back in seq"
            elif word == "commit":
                assert opened is not None
                last = int(args[0])
                self.committed.update(range(opened + 1, last + 1))
                self.highest = max(self.highest, last)
                opened = last
            elif word == "acking":
                self.maybe_acked.update(map(int, args))
            elif word == "exposed":
                self.exposed.update(map(int, args))


def run_and_kill(spawn: Spawn, db: Path, sync: str, rng: random.Random) -> bytes:
    proc = spawn(str(db), sync, "50")
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready, "the child did not open its buffer in time"
    first = proc.stdout.readline()
    assert first.startswith(b"open"), first
    select.select([], [], [], rng.uniform(0.0, 0.15))  # let it run a random while
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait(10)
    return first + rest


async def check_after_crash(
    db: Path, ledger: Ledger, reasons: frozenset[str] = frozenset({"unclean_shutdown"})
) -> None:
    async with Buffer(db, seq_reserve_block=50) as buffer:
        stored = {i.seq for lane in Lane for i in await buffer.fetch(lane, limit=10**6)}
        gaps = await buffer.pending_gaps()
        in_gaps = {s for g in gaps for s in range(g.from_seq, g.to_seq + 1)}
        assert {g.reason for g in gaps} <= reasons
        assert not (in_gaps & stored), "a gap covers seqs still stored"
        ledger.gapped |= in_gaps
        missing = ledger.committed - stored - ledger.maybe_acked - ledger.gapped
        assert not missing, f"committed seqs lost: {sorted(missing)[:10]}"
        # (a seq found stored after one crash may be acknowledged and gone by the next)
        ledger.committed |= stored
        undeclared = ledger.exposed - ledger.committed - ledger.maybe_acked - ledger.gapped
        assert not undeclared, f"seqs handed out, lost and not declared: {sorted(undeclared)}"
        assert buffer.last_seq >= ledger.highest
        buffer.put(Sample("parent", 1_764_169_200_000, {"check": 1.0}))
        seq = await buffer.flush()
        assert seq > ledger.highest, "a seq was reused"
        ledger.committed.add(seq)
        ledger.highest = seq
        assert buffer.stats.samples == len(stored) + 1
        for gap in gaps:
            await buffer.ack_gap(gap.gap_id)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path: Path, spawn: Spawn) -> None:
    rng = random.Random(20251126)
    db = tmp_path / "buffer.db"
    ledger = Ledger()
    for round_no in range(20):
        output = run_and_kill(spawn, db, "full" if round_no % 2 else "normal", rng)
        ledger.read(output)
        asyncio.run(check_after_crash(db, ledger))
    assert len(ledger.committed) > 100  # the children really did work
    # same boot, WAL untouched: the wal-index proves where commits stopped, so what is declared
    # lost lies above every committed seq, up to the highest handed out before its commit
    assert not ledger.gapped & ledger.committed
    assert not ledger.gapped or max(ledger.gapped) <= max(ledger.exposed)


def test_truncated_wal_after_a_crash_reuses_no_seq(tmp_path: Path, spawn: Spawn) -> None:
    rng = random.Random(7)
    db = tmp_path / "buffer.db"
    wal = tmp_path / "buffer.db-wal"
    ledger = Ledger()
    for _ in range(3):
        ledger.read(run_and_kill(spawn, db, "normal", rng))
        size = wal.stat().st_size
        assert size > 32 + 2 * (24 + 4096), "expected committed frames in the WAL"
        with wal.open("r+b") as f:  # the storage lost the WAL's tail
            f.truncate(32 + (24 + 4096) + rng.randrange(size // 3))
        # A kill during a checkpoint leaves pages of later commits in the database file; with
        # the WAL's tail gone that file is inconsistent, and moving it aside is the right call.
        asyncio.run(
            check_after_crash(db, ledger, frozenset({"unclean_shutdown", "corrupt_buffer"}))
        )
    assert ledger.gapped, "a WAL that lost its tail must be reported as a gap"
