"""The last half hour of every numeric and boolean point, downsampled, in memory. Pure.

Time is cut into fixed buckets (30 min / 60 = 30 s each); a bucket keeps the lowest and the
highest value it saw, each with its time, so a spike between two looks is never smoothed away.
A point's history is therefore at most 60 buckets x 2 = 120 ``[ts, value]`` entries, in time
order, however often the device is polled. Each point's buckets live in one flat
``array('d')`` ring of 60 x 5 doubles (bucket number, time and value of the minimum, of the
maximum): about 2.5 kB a point, allocated once (docs/perf/status.md measures it).

Strings are not kept; NaN and infinities are skipped (nothing to draw, not JSON). A clock set
back by more than the window (an NTP correction after boot) starts the point afresh.

Every poll of every device passes through here, so :meth:`History.observe` only files the
poll's values away; a device's polls of one bucket (at most :data:`PENDING_MAX`) are folded into
its rings together, when the next bucket starts or the page asks (:meth:`History.of`). Folding
a point's values is then a few C-level passes (``min``, ``max``, ``index``) instead of a Python
comparison per value: 12-14.5 us a 10-point poll before, 4.8-4.9 after (bench/bench_status.py).
The result is the same as taking the values one by one. The filed polls' values stay alive until
the fold (the buffer's tail usually holds them anyway): at most ~14 kB a 10-point device.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Literal

from gateway.model import Sample, Value

SPAN_MS = 30 * 60 * 1000
MAX_ENTRIES = 120
_BUCKETS = MAX_ENTRIES // 2  # each bucket gives its minimum and its maximum
_FIELDS = 5  # bucket number, min ts, min value, max ts, max value
PENDING_MAX = 16  # a device's polls filed away before they are folded
Kind = Literal["bool", "int", "float"]


class _Series:
    __slots__ = ("kind", "newest", "ring")

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.newest = -1  # the newest bucket number seen
        self.ring = array("d", [-1.0]) * (_BUCKETS * _FIELDS)

    def add(self, bucket: int, ts: int, value: float) -> None:
        if bucket > self.newest:
            self.newest = bucket
        elif bucket <= self.newest - _BUCKETS:  # the clock went back further than the window
            self.ring = array("d", [-1.0]) * (_BUCKETS * _FIELDS)
            self.newest = bucket
        ring, i = self.ring, (bucket % _BUCKETS) * _FIELDS
        if ring[i] != bucket:
            ring[i : i + _FIELDS] = array("d", (bucket, ts, value, ts, value))
        elif value < ring[i + 2]:
            ring[i + 1], ring[i + 2] = ts, value
        elif value > ring[i + 4]:
            ring[i + 3], ring[i + 4] = ts, value

    def entries(self, oldest_bucket: int) -> list[list[Value]]:
        ring, out = self.ring, []
        for bucket in range(max(oldest_bucket, self.newest - _BUCKETS + 1), self.newest + 1):
            i = (bucket % _BUCKETS) * _FIELDS
            if ring[i] != bucket:
                continue  # no sample in that bucket
            t_min, v_min, t_max, v_max = ring[i + 1 : i + _FIELDS]
            pairs = [(t_min, v_min), (t_max, v_max)] if v_min != v_max else [(t_min, v_min)]
            pairs.sort()
            out += [[int(t), self._value(v)] for t, v in pairs]
        return out

    def _value(self, v: float) -> Value:
        if self.kind == "bool":
            return v != 0
        return int(v) if self.kind == "int" else v


def _kind(value: Value) -> Kind | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float) and math.isfinite(value):
        return "float"
    return None  # a string, NaN or an infinity


_EXACT_KINDS: dict[type, Kind] = {bool: "bool", int: "int", float: "float"}


class History:
    """Per device and point, the last :data:`SPAN_MS` downsampled to :data:`MAX_ENTRIES`."""

    def __init__(self) -> None:
        self._bucket_ms = SPAN_MS // _BUCKETS
        self._series: dict[str, dict[str, _Series]] = {}
        # per device: the bucket of its polls not yet folded, and their (ts, values)
        self._pending: dict[str, tuple[int, list[tuple[int, Mapping[str, Value]]]]] = {}

    def observe(self, sample: Sample) -> None:
        """Take every numeric and boolean value of one poll."""
        ts = sample.ts_ms
        bucket = ts // self._bucket_ms
        pending = self._pending.get(sample.device)
        if pending is None or pending[0] != bucket or len(pending[1]) >= PENDING_MAX:
            if pending is not None:
                self._fold(sample.device)
            pending = self._pending[sample.device] = (bucket, [])
        pending[1].append((ts, sample.values))

    def _fold(self, device: str) -> None:
        """Put a device's pending polls (all of one bucket) into its points' rings."""
        bucket, polls = self._pending.pop(device)
        points = self._series.setdefault(device, {})
        if len(polls) == 1:
            ts, values = polls[0]
            for point, value in values.items():
                _add(points, point, bucket, ts, value)
            return
        for point, column in _columns(polls):
            extremes = _extremes(column)
            if extremes is not None:  # the first lowest and the first highest are what is kept
                for i in extremes:
                    _add(points, point, bucket, polls[i][0], column[i])  # type: ignore[arg-type]
                continue
            for (ts, _), one in zip(polls, column, strict=True):  # mixed, a string, a NaN...
                if one is not None:
                    _add(points, point, bucket, ts, one)

    def of(self, device: str, now_ms: int) -> dict[str, list[list[Value]]]:
        """``{"<point>": [[ts, value], ...]}``, oldest first, for the last :data:`SPAN_MS`."""
        if device in self._pending:
            self._fold(device)
        oldest = (now_ms - SPAN_MS) // self._bucket_ms + 1
        result = {}
        for point, series in self._series.get(device, {}).items():
            entries = series.entries(oldest)
            if entries:
                result[point] = entries
        return result

    def forget(self, devices: set[str]) -> None:
        """Drop the devices not in ``devices`` (after a reload removed them)."""
        for name in set(self._series) - devices:
            del self._series[name]
        for name in set(self._pending) - devices:
            del self._pending[name]


def _columns(
    polls: list[tuple[int, Mapping[str, Value]]],
) -> Iterable[tuple[str, Sequence[Value | None]]]:
    """Each point with its value in every poll (None where a poll lacks it): one transpose
    when every poll has the same points in the same order, as a device's polls do."""
    names = list(polls[0][1])
    if all(list(values) == names for _, values in polls):
        return zip(names, zip(*(values.values() for _, values in polls), strict=True), strict=True)
    every = dict.fromkeys(chain.from_iterable(values for _, values in polls))
    return ((name, [values.get(name) for _, values in polls]) for name in every)


def _extremes(column: Sequence[Value | None]) -> tuple[int, int] | None:
    """The positions of the first lowest and the first highest value, when every value is of
    one numeric class and finite (a NaN or an infinity would make the sum one); else None."""
    classes = set(map(type, column))
    if len(classes) != 1:
        return None
    kind = _EXACT_KINDS.get(classes.pop())
    if kind is None or (kind == "float" and not math.isfinite(sum(column))):  # type: ignore[arg-type]
        return None
    numbers: Sequence[float] = column  # type: ignore[assignment]
    return numbers.index(min(numbers)), numbers.index(max(numbers))


def _add(points: dict[str, _Series], point: str, bucket: int, ts: int, value: Value) -> None:
    """One value into its point's ring (the exact classes are looked up first, _kind only for
    anything else)."""
    kind = _EXACT_KINDS.get(value.__class__) or _kind(value)
    if kind is None or (kind == "float" and value - value != 0.0):  # type: ignore[operator]
        return  # a string; NaN or an infinity
    series = points.get(point)
    if series is None:
        series = points[point] = _Series(kind)
    elif series.kind != kind:
        series.kind = "float" if "float" in (kind, series.kind) else kind
    series.add(bucket, ts, float(value))
