"""The leaves an audit holds until a seal covers them: runs of consecutive seqs, 32 bytes a seq.
Pure: no I/O.

A run is what one message brought (a samples message's consecutive seqs); it is stored as one
row of the state file, so a batch's write costs one row per message, not one per item. Memory
and disk are 32 bytes a seq plus a little per run. A seq received again with the same leaf is a
redelivery and is skipped; with a different leaf it is kept beside (``other``): the seal over it
then names it, as ``verify`` does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass, field

LEAF = 32  # bytes: SHA-256
MAX_OTHER = 16  # other leaves kept for one seq: one is enough to fail its seal
MAX_OTHER_SEQS = 10_000  # seqs with other leaves, a gateway


@dataclass
class Leaves:
    runs: dict[int, bytearray] = field(default_factory=dict)  # first seq -> LEAF bytes a seq
    starts: list[int] = field(default_factory=list)  # the runs' first seqs, sorted
    count: int = 0  # seqs held
    other: dict[int, set[bytes]] = field(default_factory=dict)  # a second leaf for a held seq
    touched: set[int] = field(default_factory=set)  # runs (first seqs) to rewrite or delete

    def get(self, seq: int) -> bytes | None:
        i = bisect_right(self.starts, seq) - 1
        if i < 0:
            return None
        first = self.starts[i]
        offset = (seq - first) * LEAF
        run = self.runs[first]
        return bytes(run[offset : offset + LEAF]) if offset < len(run) else None

    def add(self, items: list[tuple[int, bytes]]) -> int:
        """Hold each ``(seq, leaf)``; a run of new consecutive seqs becomes one run. Returns
        how many other leaves for a held seq were past their bound, so not kept."""
        refused = 0
        first = last = 0
        blob = bytearray()
        for seq, leaf in items:
            if blob and first <= seq <= last:  # twice in one message
                offset = (seq - first) * LEAF
                held: bytes | None = bytes(blob[offset : offset + LEAF])
            else:
                held = self.get(seq)
            if held is not None:
                if held != leaf and not self._other(seq, leaf):
                    refused += 1
                continue
            if blob and seq == last + 1:
                blob += leaf
                last = seq
                continue
            if blob:
                self._put(first, blob)
            first = last = seq
            blob = bytearray(leaf)
        if blob:
            self._put(first, blob)
        return refused

    def _other(self, seq: int, leaf: bytes) -> bool:
        others = self.other.get(seq)
        if others is None:
            if len(self.other) >= MAX_OTHER_SEQS:
                return False
            others = self.other[seq] = set()
        if leaf not in others and len(others) >= MAX_OTHER:
            return False
        others.add(leaf)
        return True

    def _put(self, first: int, blob: bytearray) -> None:
        # never overlaps another run: each of its seqs was found not held
        self.runs[first] = blob
        insort(self.starts, first)
        self.count += len(blob) // LEAF
        self.touched.add(first)

    def _overlapping(self, lo: int, hi: int) -> list[int]:
        """The first seqs of the runs that may hold a seq in [lo, hi]."""
        return self.starts[
            max(0, bisect_right(self.starts, lo) - 1) : bisect_right(self.starts, hi)
        ]

    def in_range(self, lo: int, hi: int) -> Iterator[tuple[int, bytes]]:
        """Every held ``(seq, leaf)`` with lo <= seq <= hi, the ``other`` leaves too."""
        for first in self._overlapping(lo, hi):
            run = self.runs[first]
            for seq in range(max(lo, first), min(hi, first + len(run) // LEAF - 1) + 1):
                offset = (seq - first) * LEAF
                yield seq, bytes(run[offset : offset + LEAF])
        for seq in [s for s in self.other if lo <= s <= hi]:
            for leaf in self.other[seq]:
                yield seq, leaf

    def held_in(self, lo: int, hi: int) -> int:
        """How many seqs in [lo, hi] are held."""
        total = 0
        for first in self._overlapping(lo, hi):
            end = first + len(self.runs[first]) // LEAF - 1
            total += max(0, min(hi, end) - max(lo, first) + 1)
        return total

    def release(self, lo: int, hi: int) -> None:
        """Let go of every seq in [lo, hi] (their seal was checked); runs are cut to fit."""
        for first in self._overlapping(lo, hi):
            run = self.runs[first]
            end = first + len(run) // LEAF - 1
            if end < lo:
                continue
            self._drop(first)
            if first < lo:  # the head stays
                self._put(first, run[: (lo - first) * LEAF])
            if end > hi:  # the tail stays
                self._put(hi + 1, run[(hi + 1 - first) * LEAF :])
        for seq in [s for s in self.other if lo <= s <= hi]:
            del self.other[seq]

    def pop_oldest(self) -> tuple[int, int]:
        """Let go of the lowest run; its seqs."""
        first = self.starts[0]
        last = first + len(self.runs[first]) // LEAF - 1
        self.release(first, last)
        return first, last

    def _drop(self, first: int) -> None:
        run = self.runs.pop(first)
        del self.starts[bisect_left(self.starts, first)]
        self.count -= len(run) // LEAF
        self.touched.add(first)

    def load(self, first: int, blob: bytes) -> None:
        """Take back one stored run."""
        if not blob or len(blob) % LEAF or first in self.runs:
            raise ValueError(f"a stored run of leaves at seq {first} is damaged")
        self.runs[first] = bytearray(blob)
        insort(self.starts, first)
        self.count += len(blob) // LEAF
