"""The buffer's upkeep: eviction (age, size, free space) every maintenance interval and when a
commit finds the file near its bound, and the WAL checkpoint with ``sync: normal``.

A failure is recorded in the buffer's figures and logged, never raised: an I/O or corruption
error drops the connection, and the commit task reopens it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Literal

from gateway.buffer import store
from gateway.buffer.eviction import EVICT_TRIGGER, Evictor
from gateway.buffer.figures import Figures
from gateway.errors import BufferStoreError

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self,
        conn: store.Connection,
        evictor: Evictor,
        figures: Figures,
        *,
        sync: Literal["full", "normal"],
        last_seq: Callable[[], int],
        every_s: float,
        lock: asyncio.Lock,  # the buffer's: upkeep runs between its commits
    ) -> None:
        self._conn = conn
        self._evictor = evictor
        self._figures = figures
        self._sync = sync
        self._last_seq = last_seq
        self._every_s = every_s
        self._lock = lock

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            async with self._lock:
                if self._conn.db is None:
                    continue
                await self.evict()
                # With ``sync: normal`` only a checkpoint is fsynced: it bounds what a power cut
                # takes. With ``full`` every commit is, and SQLite checkpoints when the WAL
                # reaches its limit: a page rewritten by many commits (``meta``, the last seal)
                # then reaches the file once, not every few seconds.
                if self._sync == "normal":
                    try:
                        await self._conn.require().execute_fetchall(
                            "PRAGMA wal_checkpoint(PASSIVE)"
                        )
                    except (sqlite3.Error, BufferStoreError) as exc:
                        log.warning("buffer checkpoint failed: %s", exc)
                self.refresh_bytes()

    async def evict(self) -> None:
        """Evict what the bounds ask for now (the caller holds the buffer's lock)."""
        if self._conn.db is None:
            return
        try:
            await self._evictor.run(self._conn.db, self._last_seq())
        except (sqlite3.Error, OSError) as exc:
            await self._conn.drop_if_broken(exc)
            self._figures.write_failed(store.map_error(exc, "eviction failed"))
        except BufferStoreError as exc:  # the connection was dropped under it: reopened later
            self._figures.write_failed(exc)
        self.refresh_bytes()

    async def evict_if_near_bound(self) -> None:
        """After a commit: evict at once when the file nears ``max_size``."""
        if self._figures.stats.bytes > self._evictor.max_size * EVICT_TRIGGER:
            await self.evict()

    def refresh_bytes(self) -> None:
        """The file's size (database and WAL) and the room left on its filesystem."""
        stats = self._figures.stats
        stats.bytes = sum(self._evictor.file_bytes())
        self._figures.room(self._evictor.room(stats.bytes))
