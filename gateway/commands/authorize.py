"""Authorize a write: the point is writable, the value allowed and in range, the rate kept.
Pure: each check returns an :class:`Outcome` refusal (a reason word and a line for a person),
or None; only :class:`RateLimiter` keeps state (the times of recent writes, bounded).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from gateway.commands.outcome import Outcome
from gateway.config import PointSpec
from gateway.config.writes import Rate, limit_problem
from gateway.quoting import quote

Points = Mapping[str, Mapping[str, PointSpec]]  # device -> point name -> spec


def authorize(points: Points, device: str, point: str, value: object) -> Outcome | None:
    """The refusal of writing ``value`` to ``device/point`` by the config alone, or None."""
    spec = points.get(device, {}).get(point)
    if spec is None or spec.write is None:
        return Outcome.refused("not_writable", f"{device}/{point} is not a writable point")
    write = spec.write
    number = isinstance(value, int | float) and not isinstance(value, bool)
    wanted = {"bool": isinstance(value, bool), "string": isinstance(value, str)}
    if not wanted.get(spec.type, number):
        kind = {"bool": "true or false", "string": "a string"}.get(spec.type, "a number")
        return Outcome.refused("bad_request", f"{device}/{point} takes {kind}, not {quote(value)}")
    if write.values is not None and not any(
        isinstance(v, bool) == isinstance(value, bool) and v == value for v in write.values
    ):
        allowed = ", ".join(map(quote, write.values))
        return Outcome.refused("not_allowed", f"{quote(value)} is not one of {allowed}")
    if isinstance(value, int | float) and (why := limit_problem(write, value)):
        return Outcome.refused("out_of_range", f"{device}/{point}: {why}")
    return None


MAX_REMEMBERED = 10_000  # write times kept per point at most (a rate's N is at most 10,000)


class RateLimiter:
    """At most ``rate.times`` writes per point in any ``rate.window_s`` seconds."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def check(
        self, key: str, rate: Rate | None, now: float, *, exempt: bool = False
    ) -> Outcome | None:
        """The refusal when ``key`` has used its rate, else None (and the write is counted).
        An ``exempt`` write (an alarm's action) is counted but never refused."""
        if rate is None:
            return None
        times = self._times.setdefault(key, deque(maxlen=MAX_REMEMBERED))
        while times and times[0] <= now - rate.window_s:
            times.popleft()
        if len(times) >= rate.times and not exempt:
            wait = times[0] + rate.window_s - now
            return Outcome.refused(
                "rate_limited",
                f"{key}: at most {rate.times} in {rate.window_s:g}s; the next in {wait:.1f}s",
            )
        times.append(now)
        return None
