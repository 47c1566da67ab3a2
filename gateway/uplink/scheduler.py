"""Which lane feeds the next free slot of the publish window. Pure: no I/O, time is passed in.

One :class:`LaneScheduler` lives for one connection. At connect the uplink notes the buffer's
``last_seq`` as the *boundary*: samples at or below it are the backlog (published with
``"historical": true``), samples above it are live. The order of preference for a free slot:

1. **alarms**, whenever a commit may have brought one (so they are drained first on connect);
2. **gaps**, at connect, when the buffer evicted something, and every ``gaps_every_s``;
3. **live samples**, at once while nothing is in flight (the window is idle) once the first of
   them waited ``idle_linger_s`` (a few ms: the samples of one poll cycle of a bus come a few ms
   apart and then share one message), else once a batch is full or its oldest sample waited
   ``max_wait_s``;
4. **backlog**, otherwise, so it drains at link speed.

Live and backlog alternate when both are ready, so a backlog delays live samples by at most
about one batch, and a busy live stream cannot starve the backlog either. (The live message
takes the next free slot; on a link limited by bandwidth rather than latency the messages
already in flight are still ahead of it on the wire, so ``max_inflight`` also bounds that wait.)

The uplink asks :meth:`next`, fetches what it says (:meth:`fetch_range`), and reports back with
:meth:`fetched`; it reports new commits with :meth:`committed`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model import Lane


class Pick(enum.Enum):
    ALARMS = "alarms"
    GAPS = "gaps"
    LIVE = "live"
    BACKLOG = "backlog"


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send: wait for the next commit, or until ``until`` (monotonic) at the latest."""

    until: float


@dataclass(frozen=True, slots=True)
class FetchRange:
    lane: Lane
    after_seq: int
    up_to_seq: int | None
    limit: int


class LaneScheduler:
    def __init__(
        self,
        *,
        boundary: int,
        batch_size: int,
        max_wait_s: float,
        idle_linger_s: float = 0.0,
        alarm_fetch: int,
        now: float,
        gaps_every_s: float = 30.0,
    ) -> None:
        self.boundary = boundary
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.idle_linger_s = min(idle_linger_s, max_wait_s)
        self.alarm_fetch = alarm_fetch
        self.gaps_every_s = gaps_every_s
        self.seen = boundary  # highest seq known to be committed
        self.alarm_after = 0
        self.alarms_checked_to = -1  # every alarm up to this seq was fetched; -1: look now
        self.backlog_after = 0
        self.backlog_done = boundary == 0
        self.live_after = boundary
        self.live_checked_to = boundary
        self.live_since: float | None = None  # when unfetched live samples were first seen
        self.gaps_due_at = now
        self._last_sample_pick: Pick | None = None

    # -- events ---------------------------------------------------------------------------

    def committed(self, last_seq: int, now: float) -> None:
        """The buffer's last committed seq is now ``last_seq``."""
        if last_seq <= self.seen:
            return
        self.seen = last_seq
        if self.live_since is None and last_seq > self.live_checked_to:
            self.live_since = now

    def gaps_changed(self, now: float) -> None:
        """The buffer recorded a new gap (an eviction): look at once."""
        self.gaps_due_at = min(self.gaps_due_at, now)

    # -- decisions ------------------------------------------------------------------------

    def next(self, now: float, *, idle: bool = False) -> Pick | Wait:
        """What fills the next free slot; ``idle``: no message is in flight."""
        if self.alarms_checked_to < self.seen:
            return Pick.ALARMS
        if now >= self.gaps_due_at:
            return Pick.GAPS
        live = self._live_ready(now, idle)
        if live and (self.backlog_done or self._last_sample_pick is not Pick.LIVE):
            return Pick.LIVE
        if not self.backlog_done:
            return Pick.BACKLOG
        until = self.gaps_due_at
        if self.live_since is not None:
            wait = self.idle_linger_s if idle else self.max_wait_s
            until = min(until, self.live_since + wait)
        return Wait(until)

    def wake_at_seq(self) -> int:
        """While waiting: the seq above which a new commit changes the decision. With live
        samples already waiting out ``idle_linger_s`` or ``max_wait_s``, only a full batch
        does (the wait's deadline covers the rest): one wake-up per message, not one per
        sample put meanwhile."""
        if self.live_since is None:
            return self.seen
        return max(self.seen, self.live_after + self.batch_size - 1)

    def _live_ready(self, now: float, idle: bool) -> bool:
        if self.live_since is None:
            return False
        waited = now - self.live_since
        return (
            (idle and waited >= self.idle_linger_s)
            or self.seen - self.live_after >= self.batch_size
            or waited >= self.max_wait_s
        )

    def fetch_range(self, pick: Pick) -> FetchRange:
        if pick is Pick.ALARMS:
            return FetchRange(Lane.ALARM, self.alarm_after, None, self.alarm_fetch)
        if pick is Pick.LIVE:
            return FetchRange(Lane.SAMPLE, self.live_after, None, self.batch_size)
        if pick is Pick.BACKLOG:
            return FetchRange(Lane.SAMPLE, self.backlog_after, self.boundary, self.batch_size)
        raise ValueError(f"{pick} is not fetched by seq range")

    def fetched(
        self, pick: Pick, *, last_seq: int | None, count: int, checked_to: int, now: float
    ) -> None:
        """A fetch for ``pick`` returned ``count`` items, the last with seq ``last_seq``.

        ``checked_to`` is the buffer's ``last_seq`` read just before the fetch: a short answer
        means every item of that lane up to it has now been seen.
        """
        if pick is Pick.GAPS:
            self.gaps_due_at = now + self.gaps_every_s
            return
        short = count < self.fetch_range(pick).limit
        if pick is Pick.ALARMS:
            if last_seq is not None:
                self.alarm_after = last_seq
            if short:  # every alarm up to checked_to was seen: the next fetch starts above it
                self.alarms_checked_to = self.alarm_after = max(checked_to, self.alarm_after)
            return
        self._last_sample_pick = pick
        if pick is Pick.BACKLOG:
            if last_seq is not None:
                self.backlog_after = last_seq
            self.backlog_done = self.backlog_done or short
            return
        if last_seq is not None:
            self.live_after = last_seq
        if short:
            self.live_checked_to = self.live_after = max(checked_to, self.live_after)
            self.live_since = now if self.seen > self.live_checked_to else None
