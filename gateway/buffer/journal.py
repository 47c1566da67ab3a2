"""The status-event journal: the status page's list of what happened, kept across restarts.

An event is held in memory at once (the last day's, at most :data:`EVENTS_MAX`, newest last)
and written to the ``events`` table inside the buffer's next commit (:meth:`Journal.take` gives
that commit its part; :meth:`Journal.put_back` returns it after a failed one). Each write also
deletes what is older than a day or beyond the newest :data:`EVENTS_MAX`, so the table stays
bounded. At the first open the last day's events are read back.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from gateway.buffer import codec
from gateway.model import StatusEvent

EVENTS_MAX = 500
EVENTS_SPAN_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class JournalWrite:
    """The events one commit writes; run inside its transaction on the connection's thread."""

    events: list[StatusEvent]
    since_ms: int  # older events are deleted (the newest EVENTS_MAX are kept)

    def __call__(self, conn: sqlite3.Connection) -> None:
        if not self.events:
            return
        conn.executemany(
            "INSERT INTO events (ts_ms, kind, message, fields) VALUES (?,?,?,?)",
            [codec.event_row(event) for event in self.events],
        )
        conn.execute(
            "DELETE FROM events WHERE ts_ms < ? OR event_id <= (SELECT max(event_id)"
            " FROM events) - ?",
            (self.since_ms, EVENTS_MAX),
        )


class Journal:
    """The last day's status events, in memory and on their way to the file."""

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._events: deque[StatusEvent] = deque(maxlen=EVENTS_MAX)  # newest last
        self._unwritten: list[StatusEvent] = []

    def record(self, event: StatusEvent) -> None:
        self._events.append(event)
        self._unwritten.append(event)

    def recent(self) -> list[StatusEvent]:
        """The last day's events, newest first (at most EVENTS_MAX)."""
        since = self._now_ms() - EVENTS_SPAN_MS
        return [e for e in reversed(self._events) if e.ts_ms >= since]

    @property
    def unwritten(self) -> bool:
        return bool(self._unwritten)

    def take(self) -> JournalWrite:
        """The events not yet written, for the next commit."""
        events, self._unwritten = self._unwritten, []
        return JournalWrite(events, self._now_ms() - EVENTS_SPAN_MS)

    def put_back(self, write: JournalWrite) -> None:
        """The commit failed: its events go with the next one, ahead of those recorded since."""
        self._unwritten[:0] = write.events

    async def load(self, db: aiosqlite.Connection) -> None:
        """Read back the last day's events (at the first open)."""
        rows = await db.execute_fetchall(
            "SELECT ts_ms, kind, message, fields FROM events WHERE ts_ms >= ?"
            " ORDER BY event_id DESC LIMIT ?",
            (self._now_ms() - EVENTS_SPAN_MS, EVENTS_MAX),
        )
        loaded = [codec.event_from_row(*row) for row in rows]
        self._events.extendleft(loaded)  # newest first in the rows: oldest ends up first
