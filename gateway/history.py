"""The last half hour of every numeric and boolean point, downsampled, in memory. Pure.

A point's history is at most :data:`MAX_ENTRIES` (120) ``[ts, value]`` entries, in time order,
however often the device is polled. Until a point holds 120 entries every poll adds one (the
page opened a minute after start shows that minute's polls, not two dots); only then is it
downsampled, the oldest part first:

Time is cut into fixed buckets (30 min / 60 = 30 s each); a bucket keeps the lowest and the
highest value it saw, each with its time, so a spike between two looks is never smoothed away.
The answer is the buckets' extremes up to some bucket and every poll from there on, the split
put as early as the 120 entries allow (so 60 buckets' extremes, at worst). Each point's buckets
live in one flat ``array('d')`` ring of 60 x 5 doubles (bucket number, time and value of the
minimum, of the maximum): about 2.5 kB a point, allocated once; the last 120 to 240 polls are
kept as they came, a device's times in one ``array('d')`` and each point's values in another
(NaN where a poll lacked the point), about 2 kB more a point (docs/perf/status.md measures it).

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
from bisect import bisect_left
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
    __slots__ = ("kind", "newest", "raw", "ring")

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.newest = -1  # the newest bucket number seen
        self.ring = array("d", [-1.0]) * (_BUCKETS * _FIELDS)
        self.raw = array("d")  # the value of each held poll of the device (see _Polls)

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

    def buckets(self, oldest_bucket: int) -> list[tuple[int, list[tuple[float, float]]]]:
        """Each bucket with a sample since ``oldest_bucket``: its extremes, in time order."""
        ring, out = self.ring, []
        for bucket in range(max(oldest_bucket, self.newest - _BUCKETS + 1), self.newest + 1):
            i = (bucket % _BUCKETS) * _FIELDS
            if ring[i] != bucket:
                continue  # no sample in that bucket
            t_min, v_min, t_max, v_max = ring[i + 1 : i + _FIELDS]
            pairs = [(t_min, v_min), (t_max, v_max)] if v_min != v_max else [(t_min, v_min)]
            pairs.sort()
            out.append((bucket, pairs))
        return out

    def value(self, v: float) -> Value:
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


class _Polls:
    """A device's last polls as they came (between MAX_ENTRIES and twice that many): their
    times here, each point's values in its series' ``raw`` (aligned, NaN where absent)."""

    __slots__ = ("dropped_ts", "ordered", "ts")

    def __init__(self) -> None:
        self.ts = array("d")
        self.dropped_ts = -1.0  # the time of the newest poll no longer held
        self.ordered = True  # no poll came with a time before the one held before it


_NAN = array("d", [math.nan])


class History:
    """Per device and point, the last :data:`SPAN_MS` downsampled to :data:`MAX_ENTRIES`."""

    def __init__(self) -> None:
        self._bucket_ms = SPAN_MS // _BUCKETS
        self._series: dict[str, dict[str, _Series]] = {}
        self._polls: dict[str, _Polls] = {}
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
        """Put a device's pending polls (all of one bucket) into its points' rings, and keep
        them as they came."""
        bucket, polls = self._pending.pop(device)
        points = self._series.setdefault(device, {})
        held = self._held(device, polls[0][0])
        start = len(held.ts)
        times = [float(ts) for ts, _ in polls]
        if held.ordered and ((start and times[0] < held.ts[-1]) or times != sorted(times)):
            held.ordered = False  # a clock set back a little: sorted when asked
        held.ts.extend(times)
        if len(polls) == 1:
            ts, values = polls[0]
            for point, value in values.items():
                if _add(points, point, bucket, ts, value):
                    _raw(points[point], start).append(float(value))
        else:
            for point, column in _columns(polls):
                extremes = _extremes(column)
                if extremes is not None:  # the first lowest and the first highest are kept
                    for i in extremes:
                        _add(points, point, bucket, polls[i][0], column[i])  # type: ignore[arg-type]
                    _raw(points[point], start).extend(column)  # type: ignore[arg-type]
                    continue
                for k, ((ts, _), one) in enumerate(zip(polls, column, strict=True)):
                    if one is not None and _add(points, point, bucket, ts, one):  # mixed, NaN..
                        _raw(points[point], start + k).append(float(one))
        self._trim(held, points)

    def _held(self, device: str, ts: int) -> _Polls:
        """The device's held polls; afresh when the clock went back further than the window."""
        held = self._polls.get(device)
        if held is None or (held.ts and ts <= held.ts[-1] - SPAN_MS):
            held = self._polls[device] = _Polls()
            for series in self._series.get(device, {}).values():
                series.raw = array("d")
        return held

    @staticmethod
    def _trim(held: _Polls, points: dict[str, _Series]) -> None:
        """Pad the points a poll lacked; keep at most 2 x MAX_ENTRIES polls (cut to MAX_ENTRIES,
        so the cut is rare)."""
        n = len(held.ts)
        for series in points.values():
            if len(series.raw) < n:
                series.raw.extend(_NAN * (n - len(series.raw)))
        if n > 2 * MAX_ENTRIES:
            cut = n - MAX_ENTRIES
            held.dropped_ts = max(held.dropped_ts, *held.ts[:cut])
            del held.ts[:cut]
            for series in points.values():
                del series.raw[:cut]

    def of(self, device: str, now_ms: int) -> dict[str, list[list[Value]]]:
        """``{"<point>": [[ts, value], ...]}``, oldest first, for the last :data:`SPAN_MS`."""
        if device in self._pending:
            self._fold(device)
        oldest = (now_ms - SPAN_MS) // self._bucket_ms + 1
        held = self._polls.get(device)
        result = {}
        for point, series in self._series.get(device, {}).items():
            entries = self._entries(series, held, oldest)
            if entries:
                result[point] = entries
        return result

    def _entries(self, series: _Series, held: _Polls | None, oldest: int) -> list[list[Value]]:
        """The earliest split that gives at most MAX_ENTRIES: the buckets' extremes before it,
        every poll from it on (a split inside a bucket: the extremes of that bucket's polls
        before it). A split is only where every poll from there on is held."""
        bucket_ms = self._bucket_ms
        buckets = series.buckets(oldest)
        raw: list[tuple[float, float]] = []
        first = oldest  # the first bucket from which every poll is held
        if held is not None:
            first = max(oldest, int(held.dropped_ts // bucket_ms) + 1)
            since = first * bucket_ms
            polls = zip(held.ts, series.raw, strict=True)
            raw = [(t, v) for t, v in polls if v == v and t >= since]  # noqa: PLR0124 - not NaN
            if not held.ordered:
                raw.sort(key=_time_of)
        times = [t for t, _ in raw]
        # The earliest bucket boundary, then the earliest poll inside the bucket before it.
        kept, summarised = len(buckets), sum(len(pairs) for _, pairs in buckets)
        while kept and buckets[kept - 1][0] >= first:
            bucket, pairs = buckets[kept - 1]
            polls_after = len(times) - bisect_left(times, bucket * bucket_ms)
            if summarised - len(pairs) + polls_after > MAX_ENTRIES:
                break
            kept, summarised = kept - 1, summarised - len(pairs)
        split = buckets[kept][0] if kept < len(buckets) else series.newest + 1
        start = bisect_left(times, split * bucket_ms)
        out = [
            [int(t), series.value(v)] for _, pairs in buckets[: max(kept - 1, 0)] for t, v in pairs
        ]
        if kept and buckets[kept - 1][0] >= first:  # the bucket before the split is held
            last, pairs = buckets[kept - 1]
            partial_from = bisect_left(times, last * bucket_ms)
            start, head = _split_inside(raw, partial_from, start, summarised - len(pairs))
        else:
            head = buckets[kept - 1][1] if kept else []
        out += [[int(t), series.value(v)] for t, v in head]
        out += [[int(t), series.value(v)] for t, v in raw[start:]]
        return out

    def forget(self, devices: set[str]) -> None:
        """Drop the devices not in ``devices`` (after a reload removed them)."""
        for name in set(self._series) - devices:
            del self._series[name]
        for name in set(self._pending) - devices:
            del self._pending[name]
        for name in set(self._polls) - devices:
            del self._polls[name]


def _time_of(pair: tuple[float, float]) -> float:
    return pair[0]


def _split_inside(
    raw: list[tuple[float, float]], lo: int, hi: int, base: int
) -> tuple[int, list[tuple[float, float]]]:
    """The earliest poll ``s`` in ``raw[lo:hi]`` (one bucket) from which ``base`` entries, the
    extremes of ``raw[lo:s]`` and every poll from ``s`` on fit in MAX_ENTRIES; s and those
    extremes (the first lowest and the first highest, as the buckets keep them)."""
    low = high = -1
    for s in range(lo, hi + 1):
        extremes = [] if low < 0 else sorted({low, high})
        if base + len(extremes) + len(raw) - s <= MAX_ENTRIES:
            return s, [raw[i] for i in extremes]
        if s < hi:
            if low < 0 or raw[s][1] < raw[low][1]:
                low = s
            if high < 0 or raw[s][1] > raw[high][1]:
                high = s
    raise AssertionError("the whole bucket summarised always fits")  # pragma: no cover


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


def _raw(series: _Series, start: int) -> array[float]:
    """The series' held values, padded with NaN up to the fold's first poll (a new point)."""
    if len(series.raw) < start:
        series.raw.extend(_NAN * (start - len(series.raw)))
    return series.raw


def _add(points: dict[str, _Series], point: str, bucket: int, ts: int, value: Value) -> bool:
    """One value into its point's ring (the exact classes are looked up first, _kind only for
    anything else); False for a value that is not kept."""
    kind = _EXACT_KINDS.get(value.__class__) or _kind(value)
    if kind is None or (kind == "float" and value - value != 0.0):  # type: ignore[operator]
        return False  # a string; NaN or an infinity
    series = points.get(point)
    if series is None:
        series = points[point] = _Series(kind)
    elif series.kind != kind:
        series.kind = "float" if "float" in (kind, series.kind) else kind
    series.add(bucket, ts, float(value))
    return True
