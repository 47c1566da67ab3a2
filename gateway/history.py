"""The last half hour of every numeric and boolean point, downsampled, in memory. Pure.

Time is cut into fixed buckets (30 min / 60 = 30 s each); a bucket keeps the lowest and the
highest value it saw, each with its time, so a spike between two looks is never smoothed away.
A point's history is therefore at most 60 buckets x 2 = 120 ``[ts, value]`` entries, in time
order, however often the device is polled. Each point's buckets live in one flat
``array('d')`` ring of 60 x 5 doubles (bucket number, time and value of the minimum, of the
maximum): about 2.5 kB a point, allocated once (docs/perf/status.md measures it).

Strings are not kept; NaN and infinities are skipped (nothing to draw, not JSON). A clock set
back by more than the window (an NTP correction after boot) starts the point afresh.
"""

from __future__ import annotations

import math
from array import array
from typing import Literal

from gateway.model import Sample, Value

SPAN_MS = 30 * 60 * 1000
MAX_ENTRIES = 120
_BUCKETS = MAX_ENTRIES // 2  # each bucket gives its minimum and its maximum
_FIELDS = 5  # bucket number, min ts, min value, max ts, max value
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

    def observe(self, sample: Sample) -> None:
        """Take every numeric and boolean value of one poll (for every poll of every device:
        the exact classes are looked up first, _kind only for anything else)."""
        points = self._series.setdefault(sample.device, {})
        ts = sample.ts_ms
        bucket = ts // self._bucket_ms
        for point, value in sample.values.items():
            kind = _EXACT_KINDS.get(value.__class__) or _kind(value)
            if kind is None or (kind == "float" and value - value != 0.0):  # type: ignore[operator]
                continue  # a string; NaN or an infinity
            series = points.get(point)
            if series is None:
                series = points[point] = _Series(kind)
            elif series.kind != kind:
                series.kind = "float" if "float" in (kind, series.kind) else kind
            series.add(bucket, ts, float(value))

    def of(self, device: str, now_ms: int) -> dict[str, list[list[Value]]]:
        """``{"<point>": [[ts, value], ...]}``, oldest first, for the last :data:`SPAN_MS`."""
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
