"""Eviction: what the buffer gives up when it is over ``max_age`` or ``max_size``.

- ``max_age``: rows whose *stored* time is older than ``max_age_s``, oldest first, samples then
  alarms. The stored time is ``max(now, the latest stored time)``, so it never goes back when
  the clock is set after boot; rows stored while the clock read before 2020 have no trustworthy
  age and are only evicted by size (they stay at the head of the queue).
- size: ``(page_count - freelist_count) * page_size`` plus a fixed WAL allowance (the
  ``journal_size_limit``) is what the data needs. Above 90 % of the limit, the oldest samples
  (alarms only when no sample is left) are deleted in chunks down to 80 %. The limit is
  ``max_size``, or the current file size when the file system has less than
  ``min_free_fraction`` free (the file then stops growing: freed pages are reused).
  ``incremental_vacuum`` gives pages back when the file is larger than the limit.

Each chunk's delete and its gap row commit in one transaction, so a range is reported exactly
once. A chunk's range stops below the other lane's next row and below the next gap, so every seq
in a gap's ``from_seq .. to_seq`` was either evicted by it or already acknowledged (``count`` is
the number of rows it removed), and no seq is in two gaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.buffer import store
from gateway.model import GapReason

PLAUSIBLE_MS = 1_577_836_800_000  # 2020-01-01: a stored time before it is a clock never set
EVICT_TRIGGER = 0.9
_EVICT_TARGET = 0.8
TABLES = ("samples", "alarms")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Evicted:
    table: str
    first: int
    last: int
    removed: int
    reason: GapReason


@dataclass(frozen=True, slots=True)
class Room:
    """What is left for the buffer to grow into."""

    bytes: int  # below max_size and above the free space the file system keeps
    free_fraction: float | None  # of the file system; None when it cannot be read
    low: bool  # the file system is under ``min_free_fraction`` free: the buffer stops growing


class Evictor:
    """Runs the eviction queries on the buffer's connection; the buffer holds its lock meanwhile
    and applies each :class:`Evicted` range to its counts (``on_evicted``)."""

    def __init__(
        self,
        path: Path,
        *,
        max_size: int,
        max_age_ms: int,
        min_free_fraction: float,
        wal_allowance: int,
        chunk_rows: int,
        now_ms: Callable[[], int],
        held: Callable[[], tuple[int, int]],  # (rows held, of which alarms)
        before_delete: Callable[[], Awaitable[None]],  # apply pending acknowledgements
        atomic: Callable[[Callable[[], Coroutine[Any, Any, Evicted]]], Awaitable[Evicted]],
        on_evicted: Callable[[Evicted], Awaitable[None]],
    ) -> None:
        self.path = path
        self.max_size = max_size
        self._max_age_ms = max_age_ms
        self._min_free = min_free_fraction
        self.wal_allowance = wal_allowance
        self._chunk = max(1, chunk_rows)
        self._now_ms = now_ms
        self._held = held
        self._before_delete = before_delete
        self._atomic = atomic
        self._on_evicted = on_evicted

    async def run(self, db: aiosqlite.Connection, last_seq: int) -> None:
        now = self._now_ms()
        if self._max_age_ms > 0 and now >= PLAUSIBLE_MS:
            cutoff = now - self._max_age_ms
            for table in TABLES:
                while await self._evict_old_chunk(db, table, cutoff):
                    pass
        await db.execute(  # sent gaps no later eviction range can reach any more
            "DELETE FROM gaps WHERE acked = 1 AND to_seq < coalesce((SELECT min(s)"
            " FROM (SELECT min(seq) AS s FROM samples UNION ALL SELECT min(seq) FROM alarms)), ?)",
            (last_seq + 1,),
        )
        limit = self.size_limit()
        page = int(await store.scalar(db, "PRAGMA page_size"))
        if await self._used_bytes(db, page) > limit * EVICT_TRIGGER:
            target = limit * _EVICT_TARGET
            while (used := await self._used_bytes(db, page)) > target:
                rows, alarms = self._held()
                if rows == 0:
                    break
                live = max(used - self.wal_allowance, 1)
                n = min(self._chunk, math.ceil((used - target) * rows / live))
                table = "samples" if rows > alarms else "alarms"
                if not await self._evict_head(db, table, n, "max_size"):
                    break
        file_pages = int(await store.scalar(db, "PRAGMA page_count"))
        excess = file_pages - (limit - self.wal_allowance) // page
        if excess > 0:
            await db.execute_fetchall(f"PRAGMA incremental_vacuum({excess})")
        if sum(self.file_bytes()) > limit:  # the WAL grew past its allowance: give it back
            await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    def file_bytes(self) -> tuple[int, int]:
        """The database file's and its WAL's sizes."""
        sizes = []
        for p in (self.path, *store.sidecars(self.path)[:1]):
            try:
                sizes.append(p.stat().st_size)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def size_limit(self) -> int:
        limit = self.max_size
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return limit
        if fs.f_blocks and fs.f_bavail / fs.f_blocks < self._min_free:
            limit = min(limit, self.file_bytes()[0] + self.wal_allowance)
        return limit

    def room(self, used: int) -> Room:
        """The room left when the buffer's files take ``used`` bytes."""
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return Room(max(0, self.max_size - used), None, low=False)
        if not fs.f_blocks:
            return Room(max(0, self.max_size - used), None, low=False)
        fraction = fs.f_bavail / fs.f_blocks
        above_floor = (fs.f_bavail - fs.f_blocks * self._min_free) * fs.f_frsize
        return Room(
            max(0, min(self.max_size - used, int(above_floor))), fraction, fraction < self._min_free
        )

    async def _used_bytes(self, db: aiosqlite.Connection, page: int) -> int:
        rows = await db.execute_fetchall(
            "SELECT (SELECT page_count FROM pragma_page_count()),"
            " (SELECT freelist_count FROM pragma_freelist_count())"
        )
        pages, free = next(iter(rows))
        return int(pages - free) * page + self.wal_allowance

    async def _evict_old_chunk(self, db: aiosqlite.Connection, table: str, cutoff: int) -> bool:
        head = await db.execute_fetchall(f"SELECT stored_ms FROM {table} ORDER BY seq LIMIT 1")
        stored = next(iter(head), (None,))[0]
        if stored is None or not PLAUSIBLE_MS <= stored < cutoff:
            return False
        rows = await db.execute_fetchall(
            f"SELECT stored_ms FROM {table} ORDER BY seq LIMIT ?", (self._chunk,)
        )
        n = 0
        for (stored,) in rows:
            if not PLAUSIBLE_MS <= stored < cutoff:
                break
            n += 1
        return n > 0 and await self._evict_head(db, table, n, "max_age") > 0

    async def _evict_head(
        self, db: aiosqlite.Connection, table: str, n: int, reason: GapReason
    ) -> int:
        """Delete up to ``n`` lowest-seq rows of ``table``, recorded as one gap; return how many.

        The range stops below the other lane's next row and below the next gap (acknowledged
        gaps are kept, marked, until no row is left below them), so each seq in a gap's range
        was evicted by it or acknowledged: never still to be published, never in two gaps.
        """
        await self._before_delete()  # acknowledged rows are not evicted, nor counted as such
        rows = await db.execute_fetchall(
            f"SELECT min(seq), max(seq) FROM (SELECT seq FROM {table} ORDER BY seq LIMIT ?)", (n,)
        )
        first, last = next(iter(rows))
        if first is None:
            return 0
        other = "alarms" if table == "samples" else "samples"
        fence = await store.scalar(
            db,
            f"SELECT min(s) FROM (SELECT min(seq) AS s FROM {other} WHERE seq > ?1"
            " UNION ALL SELECT min(from_seq) FROM gaps WHERE from_seq > ?1)",
            (first,),
        )
        if fence is not None and fence <= last:
            last = fence - 1
        evicted = await self._atomic(lambda: self._evict_range(db, table, first, last, reason))
        await self._on_evicted(evicted)
        return evicted.removed

    async def _evict_range(
        self, db: aiosqlite.Connection, table: str, first: int, last: int, reason: GapReason
    ) -> Evicted:
        await db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await db.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,))
            removed = int(cursor.rowcount)
            await db.execute(
                "INSERT INTO gaps (from_seq, to_seq, count, reason, created_ms) VALUES (?,?,?,?,?)",
                (first, last, removed, reason, self._now_ms()),
            )
            await db.execute("COMMIT")
        except BaseException:
            await store.rollback(db)
            raise
        return Evicted(table, first, last, removed, reason)
