"""The durable store-and-forward buffer: readings and alarms in, seq-numbered items out.

How it works
------------
``put()`` encodes the item (``uplink.payload``) and appends it to a bounded in-memory queue; it
never blocks and never raises. The commit task takes what is queued (at most
``commit_max_rows``) and commits it in one SQLite transaction, assigning the seqs; it waits a
short linger after the first item of a batch so that one poll's readings share a commit, but
never holds an item longer than ``commit_interval_s``, and when commits are slower than the
linger they follow one another without pause (group commit). With ``sync="full"`` every commit
is fsynced (``synchronous=FULL`` in WAL mode); with ``"normal"`` only checkpoints are.

Readings and alarms live in two tables keyed by seq, so a lane is read in seq order from its
primary key. A row leaves only through ``ack()`` or eviction. Gaps live in their own table;
``ack_gap()`` marks one sent, and maintenance deletes sent gaps once no row is left below them
(until then they fence later eviction ranges, see below). The count, alarm count and oldest
timestamp are kept incrementally (one ``COUNT`` at open), so nothing ever scans or loads the
backlog.

The tail: live items are read from memory
-----------------------------------------
Each commit also appends its items to a per-lane *tail* in memory (the last
``tail_max_items`` seqs; older ones fall off). Every committed, unacknowledged, unevicted item
above the lane's *floor* is in it, so ``fetch`` above the floor (the uplink's live stream, and
its check for new alarms after each commit) answers from memory; below it (the backlog) from
the file. ``ack`` takes items out of the tail and the counts at once; their rows are deleted in
the next commit's transaction (or ``ack_linger_s`` later when none comes). So a live stream
costs one transaction and one fsync per commit: no read-back of what was just written, and no
delete transaction with an fsync of its own (each statement is a round trip to SQLite's thread,
~50-100 us of CPU with the wake-ups on both sides). Acks of rows that are only in the file are
deleted at once, so the counts stay exact; before the file is read or evicted from, pending
deletes are applied. A crash before the delete leaves acknowledged rows, which are sent again
(delivery is at least once). Opening, eviction and a dropped connection reset the tail: the
floor goes up to ``last_seq``.

Seqs: never reused
------------------
A seq is assigned when its row commits; ``meta.last_seq`` is updated in the same transaction,
so the database always knows the last seq *it* holds (``D``). Because a power cut can lose the
WAL's tail (``sync="normal"``, or storage that lies about fsync) while those commits may already
have been published, ``D`` alone is not enough. So before committing a seq above the
*reservation* ``R``, the buffer raises ``R`` in the fsynced file ``<db>.seq`` (by
``seq_reserve_block`` or more at a time): no seq above ``R`` was ever handed out. A clean close
writes the exact last seq there too. At open:

1. clean close recorded and it equals ``D``: continue at ``D + 1``, no gap;
2. otherwise (unclean stop) the seqs ``D+1 .. R`` may or may not have been committed and
   published. They are provably unassigned only when the stop was a *process* crash in the same
   boot (boot id unchanged: the page cache kept every write) *and* the WAL still holds every
   frame the wal-index (``-shm``) says was committed (``seqfile.wal_intact``). Then continue at
   ``D + 1`` with no gap: those seqs never reached anybody.
3. else (reboot or power cut, or a WAL shorter than committed, or no proof either way):
   continue at ``R + 1`` and record ``D+1 .. R`` as a gap with reason ``unclean_shutdown``, so
   the upstream sees them accounted for, and no seq is used twice. A gap is needed here rather
   than a silent skip because every seq must be either published or covered by a gap. Even
   with ``sync="full"`` a reboot takes this path: we do not bet on the SD card honouring fsync;
   the price is one gap of at most a reservation block per power cut.

A corrupt or foreign file is moved aside (``<db>.corrupt-<UTC time>``, with its -wal/-shm) and a
fresh one started above ``R``; the lost range ``base+1 .. R`` (``base``: the last seq before
that file was created, kept in ``<db>.seq``; or ``.. clean`` when a clean close recorded it) is
recorded as a ``corrupt_buffer`` gap. A missing database next to a seq file counts the same way.

Eviction
--------
Every ``maintenance_interval_s`` (and after a commit that takes the files near ``max_size``):

- ``max_age``: rows whose *stored* time is older than ``max_age_s``, oldest first, readings
  then alarms. The stored time is ``max(now, the latest stored time)``, so it never goes back
  when the clock is set after boot; rows stored while the clock read before 2020 have no
  trustworthy age and are only evicted by size (they stay at the head of the queue).
- size: ``(page_count - freelist_count) * page_size`` plus a fixed WAL allowance (the
  ``journal_size_limit``) is what the data needs. Above 90 % of the limit, the oldest readings
  (alarms only when no reading is left) are deleted in chunks down to 80 %. The limit is
  ``max_size``, or the current file size when the file system has less than
  ``min_free_fraction`` free (the file then stops growing: freed pages are reused).
  ``incremental_vacuum`` gives pages back when the file is larger than the limit.

Each chunk's delete and its gap row commit in one transaction, so a range is reported exactly
once. A chunk's range stops below the other lane's next row and below the next gap, so every seq
in a gap's ``from_seq .. to_seq`` was either evicted by it or already acknowledged (``count`` is
the number of rows it removed), and no seq is in two gaps.

Failures
--------
A write that fails (disk full, read-only or vanished directory, I/O error) is rolled back and
retried with capped exponential backoff; its items stay queued, ``stats.writable`` is False and
``write_errors_total`` / ``last_error`` say why; while the queue is full new items are dropped
and counted. A database that cannot be opened at all leaves the buffer entered but degraded:
``fetch`` returns nothing, and the commit task keeps trying to open it. I/O and corruption
errors drop the connection, so the retry re-opens and re-checks the file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiosqlite

from gateway.buffer import seqfile, store
from gateway.errors import BufferCorruptError, BufferStoreError, BufferWriteError
from gateway.model import AlarmEvent, BufferStats, Gap, GapReason, Lane, Reading, StoredItem
from gateway.model import now_ms as model_now_ms
from gateway.uplink.payload import alarm_body, reading_body

log = logging.getLogger(__name__)

PLAUSIBLE_MS = 1_577_836_800_000  # 2020-01-01: a stored time before it is a clock never set
MAX_SEQ = 2**63 - 1
_TABLE = {Lane.ALARM: "alarms", Lane.READING: "readings"}
_EVICT_TRIGGER = 0.9
_EVICT_TARGET = 0.8
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 5.0
_RESERVE_AHEAD_MAX = 1_000_000

QueuedItem = tuple[Lane, int, str]  # lane, ts_ms, body
T = TypeVar("T")


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged ``(first, last)`` runs of the given seqs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``runs`` sorted, with overlapping or adjacent ones merged."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


TailItem = tuple[int, int, str]  # seq, ts_ms, body: a StoredItem is built when it is fetched


def _seq_of(item: TailItem) -> int:
    return item[0]


def _remove_runs(tail: deque[TailItem], runs: list[tuple[int, int]]) -> int:
    """Remove the items whose seq is in ``runs`` (sorted) from ``tail``; how many."""
    if not tail or runs[-1][1] < tail[0][0] or runs[0][0] > tail[-1][0]:
        return 0
    before = len(tail)
    first, last = runs[0]
    if len(runs) == 1 and first <= tail[0][0]:  # the usual case: the oldest items, in order
        while tail and tail[0][0] <= last:
            tail.popleft()
        return before - len(tail)
    kept = [item for item in tail if not any(a <= item[0] <= b for a, b in runs)]
    tail.clear()
    tail.extend(kept)
    return before - len(tail)


Row = tuple[int, int, int, str]  # seq, ts_ms, stored_ms, body


def _rows(batch: list[QueuedItem], first: int, stored: int, lane: Lane) -> list[Row]:
    return [
        (seq, ts, stored, body) for seq, (kind, ts, body) in enumerate(batch, first) if kind is lane
    ]


@dataclass(frozen=True, slots=True)
class _CommitTransaction:
    """One commit, run whole on the connection's thread (``store.on_connection_thread``):
    insert the new rows, delete the acknowledged ``runs``, move ``meta`` on; rolled back on
    any error. Returns the rows deleted per lane."""

    readings: list[Row]
    alarms: list[Row]
    runs: list[tuple[int, int]]
    delete_alarms: bool  # False when no alarm row can be among the acknowledged
    meta: list[tuple[int, str]]

    def __call__(self, conn: sqlite3.Connection) -> dict[Lane, int]:
        deleted = dict.fromkeys(Lane, 0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for lane, rows in ((Lane.READING, self.readings), (Lane.ALARM, self.alarms)):
                if rows:
                    conn.executemany(
                        f"INSERT INTO {_TABLE[lane]} (seq, ts_ms, stored_ms, body)"
                        " VALUES (?,?,?,?)",
                        rows,
                    )
            if self.runs:
                for lane in (Lane.READING, Lane.ALARM) if self.delete_alarms else (Lane.READING,):
                    cursor = conn.executemany(
                        f"DELETE FROM {_TABLE[lane]} WHERE seq BETWEEN ? AND ?", self.runs
                    )
                    deleted[lane] = cursor.rowcount
            if self.meta:
                conn.executemany("UPDATE meta SET value = ? WHERE key = ?", self.meta)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return deleted


class Buffer:
    """SQLite store-and-forward buffer; an async context manager (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        max_size: int = 256 * 1024**2,
        max_age_s: float = 30 * 86400,
        sync: Literal["full", "normal"] = "full",
        commit_interval_s: float = 0.2,
        commit_max_rows: int = 5000,
        memory_queue_max: int = 100_000,
        maintenance_interval_s: float = 5.0,
        min_free_fraction: float = 0.05,
        seq_reserve_block: int = 1000,
        now_ms: Callable[[], int] = model_now_ms,
        commit_linger_s: float | None = None,
        evict_chunk_rows: int = 10_000,
        ack_linger_s: float = 1.0,
        tail_max_items: int = 2000,
    ) -> None:
        self.path = Path(path)
        self.seq_path = self.path.with_name(self.path.name + ".seq")
        self._max_size = max_size
        self._max_age_ms = int(max_age_s * 1000)
        self._sync: Literal["full", "normal"] = sync
        self._commit_interval_s = commit_interval_s
        self._linger_s = min(
            commit_interval_s, commit_interval_s / 4 if commit_linger_s is None else commit_linger_s
        )
        self._commit_max_rows = commit_max_rows
        self._queue_max = memory_queue_max
        self._maintenance_interval_s = maintenance_interval_s
        self._min_free_fraction = min_free_fraction
        self._reserve_block = max(1, seq_reserve_block)
        self._now_ms = now_ms
        self._evict_chunk = max(1, evict_chunk_rows)
        # WAL kept small beside a small max_size: its allowance counts against max_size.
        self._wal_pages = max(16, min(1000, max_size // store.PAGE_SIZE // 16))
        self._wal_allowance = self._wal_pages * store.PAGE_SIZE

        self._queue: deque[QueuedItem] = deque()
        self._batch: list[QueuedItem] | None = None  # taken from the queue, not yet committed
        self._first_put_t = 0.0
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._committed_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_seq = 0
        self._reserved = 0
        self._reserve_ahead = self._reserve_block
        self._last_reserve_t = -1e9
        self._base = 0
        self._boot = seqfile.boot_id()
        self._max_stored_ms = 0
        self._stats = BufferStats()
        self._dropping = False
        # The tail: every committed, unacknowledged, unevicted item of a lane with a seq above
        # ``_tail_floor[lane]`` is in ``_tail[lane]`` (in seq order), so the uplink reads live
        # items from memory instead of reading back what was just written.
        self._tail: dict[Lane, deque[TailItem]] = {lane: deque() for lane in Lane}
        self._tail_floor: dict[Lane, int] = dict.fromkeys(Lane, 0)
        # Acknowledged seqs not yet deleted: they go in the next commit's transaction (or after
        # ``ack_linger_s`` without one), not in a transaction and an fsync of their own.
        self._ack_runs: list[tuple[int, int]] = []
        self._ack_counted = dict.fromkeys(Lane, 0)  # of those, already out of stats
        self._first_ack_t = 0.0
        self._ack_linger_s = ack_linger_s
        self._tail_max = max(1, tail_max_items)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Buffer:
        async with self._lock:
            try:
                await self._open()
            except BufferStoreError as exc:
                self._record_error(exc)
                log.error("buffer %s unusable, will keep retrying: %s", self.path, exc)  # noqa: TRY400
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="buffer-commit"),
            asyncio.create_task(self._maintenance_loop(), name="buffer-maintenance"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_tasks()
        async with self._lock:
            while self._db is not None and (self._queue or self._batch or self._ack_runs):
                if not await self._commit_step():
                    break
            lost = len(self._queue) + len(self._batch or ())
            if lost:
                self._stats.dropped_total += lost
                log.error("buffer closed with %d items it could not store", lost)
            await self._close(clean=True)

    async def abandon(self) -> None:
        """Stop as a crash would: drop the memory queue, no clean-shutdown mark (for tests)."""
        await self._stop_tasks()
        async with self._lock:
            self._queue.clear()
            self._batch = None
            self._ack_runs = []
            await self._close(clean=False)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _close(self, *, clean: bool) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if clean:
                await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            clean = False
            log.warning("buffer checkpoint at close failed: %s", exc)
        finally:
            await db.close()
        if clean:
            state = seqfile.SeqState(self._reserved, self._last_seq, self._boot, self._base)
            try:
                await asyncio.to_thread(seqfile.write_state, self.seq_path, state)
            except OSError as exc:
                log.warning("cannot record the clean shutdown in %s: %s", self.seq_path, exc)

    # -- open ------------------------------------------------------------------------------

    async def _open(self) -> None:
        """Open or create the file and decide where seqs continue (module docstring)."""
        state = await asyncio.to_thread(seqfile.read_state, self.seq_path)
        intact = await asyncio.to_thread(seqfile.wal_intact, self.path)
        try:
            db, fresh = await store.open_db(self.path, self._sync, self._wal_pages)
        except BufferCorruptError as exc:
            db, fresh = await self._start_afresh(exc)
        try:
            if fresh:
                db_last, self._base, self._max_stored_ms = 0, 0, 0
                if state is not None and not self._stats.corrupt_files:
                    log.error("buffer %s is missing beside its seq file", self.path)
            else:
                db_last, self._base, self._max_stored_ms = await self._read_meta(db)
                if state is None:
                    log.warning("seq file %s missing: continuing from the database", self.seq_path)
            same_boot = state is not None and state.boot is not None and state.boot == self._boot
            start = seqfile.plan_start(
                state, fresh=fresh, db_last=db_last, same_boot=same_boot, intact=intact
            )
            if fresh:
                self._base = start.last_seq
            await self._atomic(
                lambda: self._write_open_state(db, start.last_seq, start.gaps, fresh)
            )
        except sqlite3.Error as exc:
            await db.close()
            raise store.map_error(exc, f"cannot initialise {self.path}") from exc
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._last_seq = start.last_seq
        self._reset_tail()
        self._reserved = max(start.last_seq, state.reserved if state else 0)
        await asyncio.to_thread(
            seqfile.write_state,
            self.seq_path,
            seqfile.SeqState(self._reserved, None, self._boot, self._base),
        )
        for first, to, reason in start.gaps:
            log.warning("buffer: seqs %d..%d recorded as a %s gap", first, to, reason)
        await self._init_stats()
        self._stats.last_seq = self._last_seq
        self._set_writable()

    async def _start_afresh(self, exc: BufferCorruptError) -> tuple[aiosqlite.Connection, bool]:
        try:
            moved = await asyncio.to_thread(store.move_aside, self.path)
        except OSError as move_exc:
            raise BufferWriteError(f"cannot move {self.path} aside: {move_exc}") from exc
        self._stats.corrupt_files.append(str(moved))
        log.error("buffer %s is corrupt (%s): moved aside to %s", self.path, exc, moved)
        db, fresh = await store.open_db(self.path, self._sync, self._wal_pages)
        if not fresh:
            await db.close()
            raise BufferWriteError(f"{self.path} reappeared while starting afresh") from exc
        return db, fresh

    async def _read_meta(self, db: aiosqlite.Connection) -> tuple[int, int, int]:
        meta: dict[str, int] = {}
        for key, value in await db.execute_fetchall("SELECT key, value FROM meta"):
            meta[key] = value
        found = await db.execute_fetchall(
            "SELECT (SELECT max(seq) FROM readings), (SELECT max(seq) FROM alarms),"
            " (SELECT max(to_seq) FROM gaps)"
        )
        highest = max([meta.get("last_seq", 0), *(v for v in next(iter(found)) if v)])
        return int(highest), int(meta.get("base", 0)), int(meta.get("max_stored_ms", 0))

    async def _write_open_state(
        self,
        db: aiosqlite.Connection,
        last: int,
        gaps: list[tuple[int, int, GapReason]],
        fresh: bool,
    ) -> None:
        now = self._now_ms()
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("last_seq", last)] + ([("base", last), ("max_stored_ms", 0)] if fresh else []),
            )
            await db.executemany(
                "INSERT INTO gaps (from_seq, to_seq, count, reason, created_ms) VALUES (?,?,?,?,?)",
                [(a, b, b - a + 1, reason, now) for a, b, reason in gaps],
            )
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise

    async def _init_stats(self) -> None:
        db = self._require_db()
        rows = await db.execute_fetchall(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alarms)"
        )
        readings, alarms = next(iter(rows))
        self._stats.readings = int(readings) + int(alarms)
        self._stats.alarms = int(alarms)
        self._ack_counted = dict.fromkeys(Lane, 0)  # the count includes them again
        await self._refresh_oldest()
        self._refresh_bytes()

    # -- put and commit --------------------------------------------------------------------

    def put(self, item: Reading | AlarmEvent) -> None:
        """Queue an item for the next commit; never blocks, never raises."""
        self.put_many((item,))

    def put_many(self, items: Iterable[Reading | AlarmEvent]) -> None:
        """Queue items (a poll's readings) for the next commit; never blocks, never raises."""
        queued: list[QueuedItem] = []
        for item in items:
            try:
                if isinstance(item, AlarmEvent):
                    queued.append((Lane.ALARM, item.ts_ms, alarm_body(item)))
                else:
                    queued.append((Lane.READING, item.ts_ms, reading_body(item)))
            except Exception as exc:  # unencodable (NaN, wrong type): must not crash a source
                self._stats.dropped_total += 1
                log.warning("buffer: dropped an item that cannot be encoded (%s): %r", exc, item)
        queue = self._queue
        before = len(queue)
        room = self._queue_max - before
        if len(queued) > room:
            self._stats.dropped_total += len(queued) - room
            del queued[room:]
            if not self._dropping:
                self._dropping = True
                log.error("buffer memory queue full (%d items): dropping readings", self._queue_max)
        if not queued:
            return
        if not before:
            self._first_put_t = time.monotonic()
            self._wake.set()  # the commit task times its linger from the first item
        queue.extend(queued)
        if before < self._commit_max_rows <= len(queue):
            self._wake.set()  # a full batch does not wait for the linger

    async def flush(self) -> int:
        """Commit everything queued now, acknowledgements included (stops at a write error);
        return ``last_seq``."""
        while self._queue or self._batch or self._ack_runs:
            async with self._lock:
                if not await self._commit_step():
                    break
        return self._last_seq

    @property
    def last_seq(self) -> int:
        return self._last_seq

    async def wait_for_commit(self, after_seq: int) -> int:
        """Return ``last_seq`` as soon as it is above ``after_seq``."""
        while self._last_seq <= after_seq:
            await self._committed_event.wait()
        return self._last_seq

    def _commit_due(self) -> float | None:
        """When the next commit should start (monotonic), or None when nothing waits for one."""
        if self._queue or self._batch:
            return self._first_put_t + self._linger_s
        if self._ack_runs:
            return self._first_ack_t + self._ack_linger_s
        return None

    async def _commit_loop(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            due = self._commit_due()
            if due is None and self._db is not None:
                await self._wake.wait()
                self._wake.clear()
                continue
            wait = 0.0 if due is None else due - time.monotonic()
            if self._db is not None and wait > 0 and len(self._queue) < self._commit_max_rows:
                # sleep out the linger; a first put or a full queue (``_wake``) ends it early
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            ok = True
            while ok and (self._queue or self._batch or self._ack_runs or self._db is None):
                async with self._lock:
                    ok = await self._commit_step()
            if ok:
                backoff = _BACKOFF_MIN_S
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _commit_step(self) -> bool:
        """Open if needed, commit one batch and the pending acknowledgements; False (error
        recorded) on failure. Holds the lock."""
        try:
            if self._db is None:
                await self._open()
            if self._queue and self._batch is None:
                n = min(len(self._queue), self._commit_max_rows)
                self._batch = [self._queue.popleft() for _ in range(n)]
            if self._batch or self._ack_runs:
                batch = self._batch or []
                await self._atomic(lambda: self._commit_batch(batch))
        except BufferStoreError as exc:
            self._record_error(exc)
            return False
        if self._dropping and len(self._queue) < self._queue_max:
            self._dropping = False
        if self._stats.bytes > self._max_size * _EVICT_TRIGGER:
            await self._evict_logged()
        return True

    async def _commit_batch(self, batch: list[QueuedItem]) -> None:
        """One transaction: insert ``batch`` (seqs assigned) and delete the acknowledged rows."""
        db = self._require_db()
        first = self._last_seq + 1
        last = first + len(batch) - 1
        resync = not self._stats.writable  # after a failure, count the rows afresh
        if batch and resync:  # a failed COMMIT may still have landed
            rows = await db.execute_fetchall("SELECT value FROM meta WHERE key = 'last_seq'")
            if next(iter(rows))[0] >= last:
                self._after_commit(batch, last)
                await self._init_stats()
                return
        runs, self._ack_runs = self._ack_runs, []
        counted, self._ack_counted = self._ack_counted, dict.fromkeys(Lane, 0)
        try:
            if last > self._reserved:
                await self._reserve(last, len(batch))
            stored = max(self._now_ms(), self._max_stored_ms)
            readings = _rows(batch, first, stored, Lane.READING)
            alarms = _rows(batch, first, stored, Lane.ALARM) if len(readings) < len(batch) else []
            transaction = _CommitTransaction(
                readings,
                alarms,
                runs,
                delete_alarms=bool(self._stats.alarms or counted[Lane.ALARM]),
                meta=[(last, "last_seq"), (stored, "max_stored_ms")] if batch else [],
            )
            deleted = await store.on_connection_thread(db, transaction)
        except BaseException as exc:
            self._ack_runs = _merge_runs(runs + self._ack_runs)  # deleted by a later commit
            for lane in Lane:
                self._ack_counted[lane] += counted[lane]
            if isinstance(exc, sqlite3.Error | OSError):
                await self._maybe_drop_connection(exc)
                raise store.map_error(exc, "commit failed") from exc
            raise
        if batch:
            self._max_stored_ms = stored
            self._after_commit(batch, last)
        if runs:
            self._after_delete(deleted, counted)
        if resync:
            await self._init_stats()
        elif runs:
            await self._refresh_oldest()

    def _after_delete(self, deleted: dict[Lane, int], counted: dict[Lane, int]) -> None:
        """The acknowledged rows are gone: count out those ``ack()`` did not find in the tail."""
        for lane in Lane:
            uncounted = max(0, deleted[lane] - counted[lane])
            self._stats.readings -= uncounted
            if lane is Lane.ALARM:
                self._stats.alarms -= uncounted

    def _after_commit(self, batch: list[QueuedItem], last: int) -> None:
        self._batch = None
        tails = self._tail
        # the tail keeps the last ``tail_max`` seqs: what a big batch holds below them is not
        # even added, and both lanes' floors rise to ``cut``
        cut = last - self._tail_max
        skip = max(0, len(batch) - self._tail_max)
        first = last - len(batch) + 1
        for seq, (lane, ts, body) in enumerate(itertools.islice(batch, skip, None), first + skip):
            tails[lane].append((seq, ts, body))
        for lane, tail in tails.items():
            while tail and tail[0][0] <= cut:
                tail.popleft()
            self._tail_floor[lane] = max(self._tail_floor[lane], cut)
        n_alarms = sum(1 for item in batch if item[0] is Lane.ALARM)
        if self._stats.readings == 0:
            self._stats.oldest_ts = batch[0][1]
        self._stats.readings += len(batch)
        self._stats.alarms += n_alarms
        self._stats.last_seq = self._last_seq = last
        self._refresh_bytes()
        self._set_writable()
        self._committed_event.set()
        self._committed_event = asyncio.Event()

    def _reset_tail(self) -> None:
        """Forget the tail: every item up to ``last_seq`` is to be read from the file."""
        for lane in Lane:
            self._tail[lane].clear()
            self._tail_floor[lane] = self._last_seq

    def _oldest_from_tail(self) -> bool:
        """Set ``oldest_ts`` from the tail when it holds every row; False when it cannot."""
        tails = [tail for tail in self._tail.values() if tail]
        if self._stats.readings != sum(len(tail) for tail in tails):
            return False
        heads = [tail[0] for tail in tails]
        self._stats.oldest_ts = min(heads)[1] if heads else None  # the lowest seq's ts
        return True

    async def _reserve(self, last: int, batch_len: int) -> None:
        """Raise the fsynced reservation above ``last``: by ``seq_reserve_block``, doubled
        (up to 1M) while reservations come less than a second apart, so a burst costs a few
        fsyncs rather than one per commit; a trickle keeps the unclean-stop gap small."""
        now = time.monotonic()
        if now - self._last_reserve_t < 1.0:
            self._reserve_ahead = min(self._reserve_ahead * 2, _RESERVE_AHEAD_MAX)
        else:
            self._reserve_ahead = self._reserve_block
        self._last_reserve_t = now
        ahead = max(self._reserve_ahead, 2 * batch_len)
        reserved = (last + ahead) // self._reserve_block * self._reserve_block
        state = seqfile.SeqState(reserved, None, self._boot, self._base)
        await asyncio.to_thread(seqfile.write_state, self.seq_path, state)
        self._reserved = reserved

    # -- read and acknowledge --------------------------------------------------------------

    async def fetch(
        self, lane: Lane, *, after_seq: int = 0, up_to_seq: int | None = None, limit: int = 500
    ) -> list[StoredItem]:
        """Committed, unacknowledged items of ``lane`` with ``after_seq < seq <= up_to_seq``.

        Live items come from the tail in memory; older ones from the file, once the
        acknowledged rows are deleted from it.
        """
        up_to = MAX_SEQ if up_to_seq is None else up_to_seq
        if after_seq >= self._tail_floor[lane] and self._db is not None:
            tail = self._tail[lane]
            start = bisect.bisect_right(tail, after_seq, key=_seq_of)
            items = []
            for seq, ts, body in itertools.islice(tail, start, start + limit):
                if seq > up_to:
                    break
                items.append(StoredItem(seq, lane, ts, body))
            return items
        sql = (
            f"SELECT seq, ts_ms, body FROM {_TABLE[lane]}"
            " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        )
        async with self._lock:
            await self._apply_acks()
            if self._db is None:
                return []
            try:
                rows = await self._db.execute_fetchall(sql, (after_seq, up_to, limit))
            except sqlite3.Error as exc:
                await self._maybe_drop_connection(exc)
                self._record_error(store.map_error(exc, "fetch failed"))
                return []
        return [StoredItem(seq, lane, ts, body) for seq, ts, body in rows]

    async def ack(self, seqs: Iterable[int]) -> None:
        """Acknowledge these seqs (published upstream); unknown seqs are ignored.

        Items still in the tail (live ones) leave it and the counts at once, and their rows are
        deleted in the next commit's transaction, or ``ack_linger_s`` later when no commit
        comes first: a live stream costs no transaction and no fsync of its own for its acks.
        Other seqs (the backlog) are deleted now, so the counts stay exact. A failed delete is
        retried with the next commit; rows left by a crash in between are sent again after the
        restart (delivery is at least once).
        """
        runs = _runs(seqs)
        if not runs:
            return
        found = 0
        for lane, tail in self._tail.items():
            removed = _remove_runs(tail, runs)
            if removed:
                found += removed
                self._ack_counted[lane] += removed
                self._stats.readings -= removed
                if lane is Lane.ALARM:
                    self._stats.alarms -= removed
        if not self._ack_runs:
            self._first_ack_t = time.monotonic()
        self._ack_runs = _merge_runs(self._ack_runs + runs)
        if found < sum(last - first + 1 for first, last in runs):
            async with self._lock:
                await self._apply_acks()
        else:
            self._oldest_from_tail()
            self._wake.set()

    async def _apply_acks(self) -> None:
        """Delete the acknowledged rows now, before reading or evicting from the file. Holds
        the lock. A failure is recorded; the rows are then deleted by a later commit."""
        if self._ack_runs and self._db is not None:
            try:
                await self._atomic(lambda: self._commit_batch([]))
            except BufferStoreError as exc:
                self._record_error(exc)

    async def pending_gaps(self) -> list[Gap]:
        """Gaps recorded and not yet acknowledged, oldest first."""
        async with self._lock:
            if self._db is None:
                return []
            try:
                rows = await self._db.execute_fetchall(
                    "SELECT gap_id, from_seq, to_seq, count, reason FROM gaps"
                    " WHERE acked = 0 ORDER BY gap_id"
                )
            except sqlite3.Error as exc:
                self._record_error(store.map_error(exc, "reading gaps failed"))
                return []
        return [Gap(gid, a, b, n, reason) for gid, a, b, n, reason in rows]

    async def ack_gap(self, gap_id: int) -> None:
        async with self._lock:
            if self._db is None:
                return
            try:
                await self._db.execute("UPDATE gaps SET acked = 1 WHERE gap_id = ?", (gap_id,))
            except sqlite3.Error as exc:
                self._record_error(store.map_error(exc, "ack_gap failed"))

    # -- eviction and maintenance ----------------------------------------------------------

    async def evict_now(self) -> None:
        """Run eviction (age, size, free space) now."""
        async with self._lock:
            await self._evict_logged()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_interval_s)
            async with self._lock:
                if self._db is None:
                    continue
                await self._evict_logged()
                try:
                    await self._require_db().execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                except (sqlite3.Error, BufferStoreError) as exc:
                    log.warning("buffer checkpoint failed: %s", exc)
                self._refresh_bytes()

    async def _evict_logged(self) -> None:
        if self._db is None:
            return
        try:
            await self._evict()
        except (sqlite3.Error, OSError) as exc:
            await self._maybe_drop_connection(exc)
            self._record_error(store.map_error(exc, "eviction failed"))
        self._refresh_bytes()

    async def _evict(self) -> None:
        db = self._require_db()
        now = self._now_ms()
        if self._max_age_ms > 0 and now >= PLAUSIBLE_MS:
            cutoff = now - self._max_age_ms
            for table in ("readings", "alarms"):
                while await self._evict_old_chunk(db, table, cutoff):
                    pass
        await db.execute(  # sent gaps no later eviction range can reach any more
            "DELETE FROM gaps WHERE acked = 1 AND to_seq < coalesce((SELECT min(s)"
            " FROM (SELECT min(seq) AS s FROM readings UNION ALL SELECT min(seq) FROM alarms)), ?)",
            (self._last_seq + 1,),
        )
        limit = self._size_limit()
        page = int(await store.scalar(db, "PRAGMA page_size"))
        if await self._used_bytes(db, page) > limit * _EVICT_TRIGGER:
            target = limit * _EVICT_TARGET
            while (used := await self._used_bytes(db, page)) > target:
                rows = self._stats.readings
                if rows == 0:
                    break
                live = max(used - self._wal_allowance, 1)
                n = min(self._evict_chunk, math.ceil((used - target) * rows / live))
                table = "readings" if rows > self._stats.alarms else "alarms"
                if not await self._evict_head(db, table, n, "max_size"):
                    break
        file_pages = int(await store.scalar(db, "PRAGMA page_count"))
        excess = file_pages - (limit - self._wal_allowance) // page
        if excess > 0:
            await db.execute_fetchall(f"PRAGMA incremental_vacuum({excess})")
        if sum(self._file_bytes()) > limit:  # the WAL grew past its allowance: give it back
            await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    def _size_limit(self) -> int:
        limit = self._max_size
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return limit
        if fs.f_blocks and fs.f_bavail / fs.f_blocks < self._min_free_fraction:
            limit = min(limit, self._file_bytes()[0] + self._wal_allowance)
        return limit

    async def _used_bytes(self, db: aiosqlite.Connection, page: int) -> int:
        rows = await db.execute_fetchall(
            "SELECT (SELECT page_count FROM pragma_page_count()),"
            " (SELECT freelist_count FROM pragma_freelist_count())"
        )
        pages, free = next(iter(rows))
        return int(pages - free) * page + self._wal_allowance

    async def _evict_old_chunk(self, db: aiosqlite.Connection, table: str, cutoff: int) -> bool:
        head = await db.execute_fetchall(f"SELECT stored_ms FROM {table} ORDER BY seq LIMIT 1")
        stored = next(iter(head), (None,))[0]
        if stored is None or not PLAUSIBLE_MS <= stored < cutoff:
            return False
        rows = await db.execute_fetchall(
            f"SELECT stored_ms FROM {table} ORDER BY seq LIMIT ?", (self._evict_chunk,)
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
        await self._apply_acks()  # acknowledged rows are not evicted, nor counted as such
        rows = await db.execute_fetchall(
            f"SELECT min(seq), max(seq) FROM (SELECT seq FROM {table} ORDER BY seq LIMIT ?)", (n,)
        )
        first, last = next(iter(rows))
        if first is None:
            return 0
        other = "alarms" if table == "readings" else "readings"
        fence = await store.scalar(
            db,
            f"SELECT min(s) FROM (SELECT min(seq) AS s FROM {other} WHERE seq > ?1"
            " UNION ALL SELECT min(from_seq) FROM gaps WHERE from_seq > ?1)",
            (first,),
        )
        if fence is not None and fence <= last:
            last = fence - 1
        return await self._atomic(lambda: self._evict_range(db, table, first, last, reason))

    async def _evict_range(
        self, db: aiosqlite.Connection, table: str, first: int, last: int, reason: GapReason
    ) -> int:
        await db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await db.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,))
            removed = cursor.rowcount
            await db.execute(
                "INSERT INTO gaps (from_seq, to_seq, count, reason, created_ms) VALUES (?,?,?,?,?)",
                (first, last, removed, reason, self._now_ms()),
            )
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise
        self._stats.readings -= removed
        if table == "alarms":
            self._stats.alarms -= removed
        self._reset_tail()  # what it held of the evicted range is gone
        self._stats.evicted_total[reason] = self._stats.evicted_total.get(reason, 0) + removed
        log.warning("buffer: evicted %d %s (seq %d..%d, %s)", removed, table, first, last, reason)
        await self._refresh_oldest()
        return int(removed)

    # -- stats and errors ------------------------------------------------------------------

    @property
    def stats(self) -> BufferStats:
        return self._stats

    def _file_bytes(self) -> tuple[int, int]:
        sizes = []
        for p in (self.path, *store.sidecars(self.path)[:1]):
            try:
                sizes.append(p.stat().st_size)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def _refresh_bytes(self) -> None:
        self._stats.bytes = sum(self._file_bytes())

    async def _refresh_oldest(self) -> None:
        if self._oldest_from_tail():
            return
        rows = await self._require_db().execute_fetchall(
            "SELECT (SELECT seq FROM readings ORDER BY seq LIMIT 1),"
            " (SELECT ts_ms FROM readings ORDER BY seq LIMIT 1),"
            " (SELECT seq FROM alarms ORDER BY seq LIMIT 1),"
            " (SELECT ts_ms FROM alarms ORDER BY seq LIMIT 1)"
        )
        r_seq, r_ts, a_seq, a_ts = next(iter(rows))
        if r_seq is None or (a_seq is not None and a_seq < r_seq):
            self._stats.oldest_ts = a_ts
        else:
            self._stats.oldest_ts = r_ts

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise BufferWriteError(f"buffer {self.path} is not open")
        return self._db

    async def _rollback(self, db: aiosqlite.Connection) -> None:
        """Roll back unconditionally: a BEGIN may still be queued in aiosqlite's thread."""
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("rollback: %s", exc)

    async def _atomic(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``work`` (a transaction and the bookkeeping after it) to its end, even when the
        caller is cancelled: a transaction cut in half would stay open on the one connection
        and swallow the next. The caller holds the lock, so nothing interleaves meanwhile."""
        task = asyncio.ensure_future(work())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise

    async def _maybe_drop_connection(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) or (
            isinstance(exc, sqlite3.Error) and store.error_code(exc) in store.BROKEN_CODES
        ):
            db, self._db = self._db, None
            self._reset_tail()
            if db is not None:
                try:
                    await db.close()
                except sqlite3.Error as close_exc:
                    log.debug("closing a broken connection failed: %s", close_exc)

    def _record_error(self, exc: BaseException) -> None:
        self._stats.write_errors_total += 1
        self._stats.last_error = str(exc)
        if self._stats.writable:
            self._stats.writable = False
            log.error("buffer %s cannot be written: %s", self.path, exc)

    def _set_writable(self) -> None:
        if not self._stats.writable:
            self._stats.writable = True
            log.warning("buffer %s writable again", self.path)
