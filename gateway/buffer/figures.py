"""The buffer's live figures (:class:`~gateway.model.BufferStats`), kept incrementally, and the
one log line each change of state gets (a write error, writable again, a gap, an eviction).

The counts follow every item in and out without scanning the file: ``added`` at put,
``removed`` at an acknowledgement or an eviction; the buffer sets them afresh from the file
after a failure (``recount``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from gateway.buffer.eviction import Evicted, Room
from gateway.buffer.pending import Unnumbered
from gateway.buffer.tail import Tail
from gateway.model import AlarmEvent, BufferStats, CommandResult, Lane, Sample

log = logging.getLogger(__name__)


class Figures:
    def __init__(self, path: Path) -> None:
        self.stats = BufferStats()
        self._path = path

    def added(self, item: Sample | AlarmEvent | CommandResult) -> None:
        stats = self.stats
        if stats.samples == 0:
            stats.oldest_ts = item.ts_ms
        stats.samples += 1
        if isinstance(item, AlarmEvent | CommandResult):  # a result rides the alarms' lane
            stats.alarms += 1

    def removed(self, lane: Lane, n: int) -> None:
        self.stats.samples -= n
        if lane is Lane.ALARM:
            self.stats.alarms -= n

    def recount(self, samples: int, alarms: int) -> None:
        """Items held, in the file and in memory, of which alarms."""
        self.stats.samples, self.stats.alarms = samples, alarms

    def oldest_from_memory(self, tail: Tail, unnumbered: Sequence[Unnumbered]) -> bool:
        """Set ``oldest_ts`` from memory when it holds every item; False when it cannot."""
        if self.stats.samples != len(tail) + len(unnumbered):
            return False
        oldest = tail.oldest_ts()
        if oldest is None and unnumbered:
            oldest = unnumbered[0][1]
        self.stats.oldest_ts = oldest
        return True

    def dropped(self, n: int = 1) -> None:
        self.stats.dropped_total += n

    def gap(
        self, first: int, last: int, count: int, reason: str, *, at_start: bool = False
    ) -> None:
        if at_start:
            log.warning("buffer: seqs %d..%d recorded as a %s gap", first, last, reason)
        self.stats.gaps_total += 1
        self.stats.recent_gaps.append((first, last, count, reason))

    def evicted(self, evicted: Evicted) -> None:
        removed, reason = evicted.removed, evicted.reason
        self.removed(Lane.ALARM if evicted.table == "alarms" else Lane.SAMPLE, removed)
        self.stats.evicted_total[reason] = self.stats.evicted_total.get(reason, 0) + removed
        self.gap(evicted.first, evicted.last, removed, reason)
        log.warning(
            "buffer: evicted %d %s (seq %d..%d, %s)",
            removed,
            evicted.table,
            evicted.first,
            evicted.last,
            reason,
        )

    def room(self, room: Room) -> None:
        stats = self.stats
        stats.room_bytes, stats.fs_free_fraction = room.bytes, room.free_fraction
        if room.low != stats.room_low:
            stats.room_low = room.low
            if room.low:
                log.error(
                    "buffer %s: its file system has %.1f %% free: no room left to take an "
                    "outage's samples",
                    self._path,
                    100 * (room.free_fraction or 0.0),
                )
            else:
                log.warning("buffer %s: room on its file system again", self._path)

    def write_failed(self, exc: BaseException) -> None:
        self.stats.write_errors_total += 1
        self.stats.last_error = str(exc)
        if self.stats.writable:
            self.stats.writable = False
            log.error("buffer %s cannot be written: %s", self._path, exc)

    def writable_again(self) -> None:
        if not self.stats.writable:
            self.stats.writable = True
            log.warning("buffer %s writable again", self._path)
