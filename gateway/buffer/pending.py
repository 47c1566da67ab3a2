"""What the buffer holds in memory until its commit, and the seqs it hands out. No I/O.

At most ``max_items`` are held: while the disk fails and the queue is full, new items are
refused before they get a seq (:meth:`Pending.admit`), and the buffer counts them dropped.

An item put waits in ``unnumbered`` until the reservation reaches far enough to give it a seq
(:meth:`Pending.number`), then in ``queue`` until the commit task takes it as its ``batch``.
``last_seq`` is the highest seq handed out; ``reserved`` how far the fsynced reservation
reaches (no seq above it was ever handed out); :meth:`Pending.next_reservation` says how far to
raise it. ``wait_for_seq`` wakes a waiter once ``last_seq`` passes its mark.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from gateway.buffer.runs import Run, take_runs
from gateway.buffer.tail import Tail
from gateway.model import Item, Lane

Unnumbered = tuple[Lane, int, Item]  # waiting for a seq: lane, ts_ms, item
Queued = tuple[int, Lane, int, Item]  # seq, lane, ts_ms, item: not yet committed

log = logging.getLogger(__name__)

RESERVE_AHEAD_MAX = 1_000_000


class Pending:
    def __init__(self, reserve_block: int, max_items: int) -> None:
        self._max = max_items
        self._refusing = False
        self.unnumbered: deque[Unnumbered] = deque()  # waiting for the reservation to grow
        self.queue: deque[Queued] = deque()
        self.batch: list[Queued] | None = None  # taken from the queue, not yet committed
        self.last_seq = 0  # highest seq handed out
        self.reserved = 0
        self._block = reserve_block
        self._ahead = reserve_block
        self._last_reserve_t = -1e9
        # wait_for_seq's waiters: (after_seq, future), woken only once last_seq passes after_seq
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def held(self) -> int:
        """Items not yet committed."""
        return len(self.unnumbered) + len(self.queue) + len(self.batch or ())

    def admit(self) -> bool:
        """Room for one more item? The first refusal of a run is logged."""
        if self.held() < self._max:
            self._refusing = False
            return True
        if not self._refusing:
            self._refusing = True
            log.error("buffer memory queue full (%d items): dropping samples", self._max)
        return False

    def add(self, lane: Lane, ts_ms: int, item: Item) -> None:
        self.unnumbered.append((lane, ts_ms, item))

    def number(self, tail: Tail) -> bool:
        """Give seqs to waiting items as far as the reservation reaches and add them to
        ``tail``; False when some wait for the reservation to be raised."""
        waiting, queue = self.unnumbered, self.queue
        seq = self.last_seq
        urgent = False
        while waiting and seq < self.reserved:
            lane, ts, item = waiting.popleft()
            seq += 1
            urgent = urgent or lane is Lane.ALARM
            queue.append((seq, lane, ts, item))
            tail.add(lane, seq, ts, item)
        if seq != self.last_seq:
            self.last_seq = seq
            if self._waiters:
                # an alarm (or a result) wakes every waiter: the uplink sends it at once rather
                # than when the batch of samples it waits for is full
                self._wake_waiters(RESERVE_AHEAD_MAX * 2**20 if urgent else seq)
        return not waiting

    def starved(self) -> bool:
        """Items wait for a seq and the reservation is used up."""
        return bool(self.unnumbered) and self.last_seq >= self.reserved

    def next_reservation(self, now: float) -> int | None:
        """How far to raise the reservation, or None while it reaches far enough: by the block,
        doubled (up to 1M) while reservations come less than a second apart, so a burst costs
        a few fsyncs rather than one per commit; a trickle keeps the unclean-stop gap small."""
        need = self.last_seq + len(self.unnumbered)
        if self.reserved - need >= self._block // 2 and not self.unnumbered:
            return None
        if now - self._last_reserve_t < 1.0:
            self._ahead = min(self._ahead * 2, RESERVE_AHEAD_MAX)
        else:
            self._ahead = self._block
        self._last_reserve_t = now
        ahead = max(self._ahead, 2 * len(self.unnumbered))
        return -(-(need + ahead) // self._block) * self._block  # whole blocks, rounded up

    def take_batch(self, max_rows: int) -> list[Queued]:
        """The batch being committed: kept until :meth:`committed`, so a failed commit retries
        the same items."""
        if self.queue and self.batch is None:
            n = min(len(self.queue), max_rows)
            self.batch = [self.queue.popleft() for _ in range(n)]
        return self.batch or []

    def committed(self) -> None:
        self.batch = None

    def settled(self) -> int:
        """Every seq up to it is committed (once the batch is) or was acknowledged."""
        return self.queue[0][0] - 1 if self.queue else self.last_seq

    def settled_now(self) -> int:
        """Every seq up to it is committed or was acknowledged, the batch being committed
        counted as not yet."""
        first = self.batch[0][0] if self.batch else self.queue[0][0] if self.queue else 0
        return first - 1 if first else self.last_seq

    def low(self) -> bool:
        """Time to raise the reservation (:meth:`next_reservation` would)."""
        need = self.last_seq + len(self.unnumbered)
        return self.reserved - need < self._block // 2 or bool(self.unnumbered)

    def take(self, runs: list[Run]) -> list[Queued]:
        """Take the queued items whose seqs are in ``runs`` (acknowledged before their commit)."""
        return take_runs(self.queue, runs)

    def counts(self) -> tuple[int, int]:
        """(items held, of which alarms)."""
        numbered = (*(self.batch or ()), *self.queue)
        lanes = [lane for lane, _, _ in self.unnumbered] + [lane for _, lane, _, _ in numbered]
        return len(lanes), lanes.count(Lane.ALARM)

    def resume_at(self, last_seq: int, reserved: int) -> None:
        """The file was (re)opened: seqs continue above ``last_seq``, and the reservation
        reaches at least ``reserved``."""
        self.last_seq = max(self.last_seq, last_seq)
        self.reserved = max(self.reserved, last_seq, reserved)

    def clear(self) -> None:
        """Forget every item held (a crash's loss)."""
        self.unnumbered.clear()
        self.queue.clear()
        self.batch = None

    async def wait_for_seq(self, after_seq: int) -> int:
        if self.last_seq <= after_seq:
            entry = (after_seq, asyncio.get_running_loop().create_future())
            self._waiters.append(entry)
            try:
                await entry[1]
            finally:
                if entry in self._waiters:  # cancelled before its seq came
                    self._waiters.remove(entry)
        return self.last_seq

    def wake_all(self) -> None:
        """Wake every ``wait_for_seq`` now: what they wait for is not only seqs (a seal to send)."""
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = []

    def _wake_waiters(self, seq: int) -> None:
        still = []
        for after, waiter in self._waiters:
            if after >= seq:
                still.append((after, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = still
