"""Seq runs: sorted, merged ``(first, last)`` ranges, and taking them out of seq-ordered deques.
Pure."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from typing import Any

Run = tuple[int, int]


def runs_of(seqs: Iterable[int]) -> list[Run]:
    """Sorted, merged ``(first, last)`` runs of the given seqs."""
    runs: list[Run] = []
    for seq in sorted(set(seqs)):
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def merge_runs(runs: list[Run]) -> list[Run]:
    """``runs`` sorted, with overlapping or adjacent ones merged."""
    merged: list[Run] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def count(runs: list[Run]) -> int:
    return sum(last - first + 1 for first, last in runs)


def take_runs(items: deque[Any], runs: list[Run]) -> list[Any]:
    """Remove the items whose seq (``item[0]``) is in ``runs`` (sorted) from ``items`` (in seq
    order); return the removed ones, in seq order. Each run is found by bisection and cut out
    by rotating the deque (C), so an ack costs O(runs x log n), not a scan of every item held:
    the tail can hold thousands while acks come out of order."""
    if not items or not runs or runs[-1][1] < items[0][0] or runs[0][0] > items[-1][0]:
        return []
    first, last = runs[0]
    if len(runs) == 1 and first <= items[0][0]:  # the usual case: the oldest items, in order
        oldest = []
        while items and items[0][0] <= last:
            oldest.append(items.popleft())
        return oldest
    taken: list[Any] = []
    for first, last in runs:
        lo = bisect.bisect_left(items, first, key=seq_of)
        hi = bisect.bisect_right(items, last, lo=lo, key=seq_of)
        if lo == hi:
            continue
        items.rotate(-lo)
        taken.extend(items.popleft() for _ in range(hi - lo))
        items.rotate(lo)
    return taken


def seq_of(item: Any) -> int:
    """The seq of a held item (``(seq, ...)``): the key the deques are ordered by."""
    return int(item[0])
