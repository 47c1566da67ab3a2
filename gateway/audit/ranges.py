"""A set of integers kept as sorted, disjoint, non-adjacent closed intervals. Pure: no I/O.

Memory is proportional to the number of ranges, not to the number of members: ten million
seqs received in order are one range. The common case (a batch that extends the last range)
is a bisect and two list stores.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class RangeSet:
    """Closed integer intervals ``[lo, hi]``; ``starts`` and ``ends`` are parallel sorted lists."""

    __slots__ = ("_count", "_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        for lo, hi in ranges:
            self.add(lo, hi)

    def add(self, lo: int, hi: int) -> int:
        """Add ``[lo, hi]``; return how many of its members were already present."""
        if hi < lo:
            raise ValueError(f"empty range [{lo}, {hi}]")
        starts, ends = self._starts, self._ends
        # Fast path: past the last range (in-order delivery).
        if not ends or lo > ends[-1] + 1:
            starts.append(lo)
            ends.append(hi)
            self._count += hi - lo + 1
            return 0
        # First range that ends at or after lo - 1 (touching counts, so ranges merge).
        i = bisect_left(ends, lo - 1)
        # One past the last range that starts at or before hi + 1.
        j = bisect_right(starts, hi + 1)
        if i >= j:  # nothing overlaps or touches: insert
            starts.insert(i, lo)
            ends.insert(i, hi)
            self._count += hi - lo + 1
            return 0
        present = 0
        for k in range(i, j):
            present += max(0, min(hi, ends[k]) - max(lo, starts[k]) + 1)
        new_lo = min(lo, starts[i])
        new_hi = max(hi, ends[j - 1])
        removed = sum(ends[k] - starts[k] + 1 for k in range(i, j))
        starts[i:j] = [new_lo]
        ends[i:j] = [new_hi]
        self._count += (new_hi - new_lo + 1) - removed
        return present

    def add_set(self, other: RangeSet) -> int:
        """Union ``other`` into this set; return how many of its members were already present."""
        return sum(self.add(lo, hi) for lo, hi in other)

    def intersection(self, other: RangeSet) -> RangeSet:
        out = RangeSet()
        for lo, hi in other:
            for a, b in self.slice(lo, hi):
                out.add(a, b)
        return out

    def slice(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """The set's members within ``[lo, hi]``, as ranges."""
        starts, ends = self._starts, self._ends
        for k in range(bisect_left(ends, lo), bisect_right(starts, hi)):
            yield max(lo, starts[k]), min(hi, ends[k])

    def missing(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """The ranges within ``[lo, hi]`` that are not in the set."""
        cursor = lo
        for a, b in self.slice(lo, hi):
            if a > cursor:
                yield cursor, a - 1
            cursor = b + 1
        if cursor <= hi:
            yield cursor, hi

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        k = bisect_right(self._starts, value) - 1
        return k >= 0 and self._ends[k] >= value

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        """The number of ranges (not members: see ``count``)."""
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    @property
    def count(self) -> int:
        """The number of members."""
        return self._count

    def to_flat(self) -> list[int]:
        """``[lo1, hi1, lo2, hi2, ...]``, the stored form."""
        return [v for pair in self for v in pair]

    @classmethod
    def from_flat(cls, flat: list[int]) -> RangeSet:
        if len(flat) % 2:
            raise ValueError("a flat range list has an even length")
        return cls(zip(flat[::2], flat[1::2], strict=True))


def runs(values: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Consecutive ascending runs of ``values`` in arrival order, as ``(lo, hi)``.

    A batch of samples in seq order collapses to one run. Anything else (a repeat, a step
    back, a jump) starts a new run, so adding the runs one by one sees every repeat.
    """
    lo = hi = 0
    started = False
    for v in values:
        if started and v == hi + 1:
            hi = v
            continue
        if started:
            yield lo, hi
        lo = hi = v
        started = True
    if started:
        yield lo, hi
