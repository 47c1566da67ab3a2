"""The tail: the items of each lane the uplink reads from memory, not from the file. Pure.

Every item with a seq, not acknowledged nor evicted, whose seq lies above its lane's *floor* is
in the lane's tail, in seq order: every uncommitted item always is, and of the committed ones
the last ``max_items``. Below the floor, items are read from the file.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque

from gateway.buffer.runs import Run, seq_of, take_runs
from gateway.model import Item, Lane, StoredItem

TailItem = tuple[int, int, Item]  # seq, ts_ms, item


class Tail:
    def __init__(self, max_items: int) -> None:
        self._lanes: dict[Lane, deque[TailItem]] = {lane: deque() for lane in Lane}
        self._floor: dict[Lane, int] = dict.fromkeys(Lane, 0)
        self._max = max(1, max_items)

    def floor(self, lane: Lane) -> int:
        return self._floor[lane]

    def add(self, lane: Lane, seq: int, ts_ms: int, item: Item) -> None:
        self._lanes[lane].append((seq, ts_ms, item))

    def get(self, lane: Lane, after_seq: int, up_to: int, limit: int) -> list[StoredItem]:
        """Items of ``lane`` with ``after_seq < seq <= up_to``, at most ``limit``."""
        tail = self._lanes[lane]
        start = bisect.bisect_right(tail, after_seq, key=seq_of)
        items = []
        for seq, ts, item in itertools.islice(tail, start, start + limit):
            if seq > up_to:
                break
            items.append(StoredItem(seq, lane, ts, item))
        return items

    def take(self, runs: list[Run]) -> dict[Lane, int]:
        """Take the items whose seq is in ``runs`` (acknowledged) out; how many per lane."""
        return {lane: len(take_runs(tail, runs)) for lane, tail in self._lanes.items()}

    def trim(self, settled: int, last_seq: int) -> None:
        """After a commit: keep every uncommitted item (above ``settled``) and of the
        committed the last ``max_items`` seqs; the floors rise to what was dropped."""
        self._cut(min(settled, last_seq - self._max), rise_only=True)

    def reset(self, settled: int) -> None:
        """Forget the committed part (``seq <= settled``): it is to be read from the file."""
        self._cut(settled, rise_only=False)

    def _cut(self, cut: int, *, rise_only: bool) -> None:
        for lane, tail in self._lanes.items():
            while tail and tail[0][0] <= cut:
                tail.popleft()
            self._floor[lane] = max(self._floor[lane], cut) if rise_only else cut

    def __len__(self) -> int:
        return sum(len(tail) for tail in self._lanes.values())

    def oldest_ts(self) -> int | None:
        """The ``ts_ms`` of the lowest seq held, or None when empty."""
        heads = [tail[0] for tail in self._lanes.values() if tail]
        return min(heads)[1] if heads else None
