"""The durable store-and-forward buffer: samples and alarms in, seq-numbered items out.

How it works
------------
``put()`` gives each sample or alarm its seq at once, from the fsynced reservation (below), and
appends it to a bounded in-memory queue and to the *tail*; it never blocks and never raises. The
uplink may publish an item from the tail before it is committed, so a live sample does not wait
for the fsync. The commit task takes what is queued (at most ``commit_max_rows``) and commits it
in one SQLite transaction; it waits a short linger after the first item of a batch so that a
poll's samples share a commit, but never holds an item longer than ``commit_interval_s``, and
when commits are slower than the linger they follow one another without pause (group commit).
With ``sync="full"`` every commit is fsynced (``synchronous=FULL`` in WAL mode); with
``"normal"`` only checkpoints are. An item acknowledged before its commit is taken out of the
queue and never written (fewer writes to the SD card).

Samples and alarms live in two tables keyed by seq, in the neutral form of
:mod:`gateway.buffer.codec`; the schema and its migrations are :mod:`gateway.buffer.schema`.
A row leaves only through ``ack()`` or eviction (:mod:`gateway.buffer.eviction`). Gaps live in
their own table; ``ack_gap()`` marks one sent, and maintenance deletes sent gaps once no row is
left below them (until then they fence later eviction ranges). The counts and the oldest
timestamp are kept incrementally (one ``COUNT`` at open), so nothing ever scans the backlog.

The tail (:mod:`gateway.buffer.tail`)
-------------------------------------
``fetch`` above each lane's floor (the uplink's live stream) answers from the tail in memory;
below it (the backlog) from the file, followed by the tail. ``ack`` takes items out of the tail
and the counts at once; committed rows are deleted in the next commit's transaction (or
``ack_linger_s`` later when none comes). A crash before the delete leaves acknowledged rows,
which are sent again (delivery is at least once).

Seqs: never reused
------------------
Each seq is handed out below an fsynced reservation (``<db>.seq``), and what the uplink saw
before its commit is kept in the exposure mark (``<db>.exposed``): where seqs continue after a
clean or unclean stop, and how a corrupt file is moved aside, is :mod:`gateway.buffer.opening`.
The alarm rules' states (:mod:`gateway.buffer.alarm_state`) and the status events
(:mod:`gateway.buffer.journal`) are written in the same commits as the samples.

Failures
--------
A write that fails (disk full, read-only or vanished directory, I/O error) is rolled back and
retried with capped exponential backoff; its items stay queued (and can still be published),
``stats.writable`` is False and ``write_errors_total`` / ``last_error`` say why; while the queue
is full new items are dropped (before they get a seq) and counted. A database that cannot be
opened at all leaves the buffer entered but degraded: the backlog cannot be read, and the commit
task keeps trying to open it. I/O and corruption errors drop the connection, so the retry
re-opens and re-checks the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import aiosqlite

from gateway.buffer import codec, opening, reading, seqfile, store
from gateway.buffer.alarm_state import AlarmStates
from gateway.buffer.commit import CommitTransaction
from gateway.buffer.eviction import EVICT_TRIGGER, Evicted, Evictor
from gateway.buffer.journal import Journal
from gateway.buffer.pending import Pending, Queued
from gateway.buffer.runs import Run, count, merge_runs, runs_of
from gateway.buffer.tail import Tail
from gateway.errors import (
    BufferNewerError,
    BufferStoreError,
    BufferWriteError,
)
from gateway.model import (
    AlarmEvent,
    BufferStats,
    Gap,
    Lane,
    Sample,
    StatusEvent,
    StoredItem,
)
from gateway.model import now_ms as model_now_ms
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 5.0

T = TypeVar("T")


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
        memory_queue_max: int = 20_000,
        maintenance_interval_s: float = 5.0,
        min_free_fraction: float = 0.05,
        seq_reserve_block: int = 1000,
        now_ms: Callable[[], int] = model_now_ms,
        commit_linger_s: float | None = None,
        evict_chunk_rows: int = 10_000,
        ack_linger_s: float = 1.0,
        tail_max_items: int = 2000,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.path = Path(path)
        self.seq_path = self.path.with_name(self.path.name + ".seq")
        self.exposed_path = self.path.with_name(self.path.name + ".exposed")
        self._paths = opening.FilePaths(self.path, self.seq_path, self.exposed_path)
        self._sync: Literal["full", "normal"] = sync
        self._commit_interval_s = commit_interval_s
        self._linger_s = min(
            commit_interval_s, commit_interval_s / 4 if commit_linger_s is None else commit_linger_s
        )
        self._commit_max_rows = commit_max_rows
        self._queue_max = memory_queue_max
        self._maintenance_interval_s = maintenance_interval_s
        self._now_ms = now_ms
        # WAL kept small beside a small max_size: its allowance counts against max_size.
        self._wal_pages = max(16, min(1000, max_size // store.PAGE_SIZE // 16))
        self._evictor = Evictor(
            self.path,
            max_size=max_size,
            max_age_ms=int(max_age_s * 1000),
            min_free_fraction=min_free_fraction,
            wal_allowance=self._wal_pages * store.PAGE_SIZE,
            chunk_rows=evict_chunk_rows,
            now_ms=now_ms,
            held=lambda: (self._stats.samples, self._stats.alarms),
            before_delete=self._acks_before_evict,
            atomic=store.atomic,
            on_evicted=self._after_evict,
        )

        self._pending = Pending(max(1, seq_reserve_block))
        self._first_put_t = 0.0
        self._db: aiosqlite.Connection | None = None
        self._opened = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor = supervisor or Supervisor()
        self._settled = 0  # every seq up to it is committed or was acknowledged (meta.last_seq)
        self._base = 0
        self._boot = seqfile.boot_id()
        self._exposure: seqfile.ExposureMark | None = None
        self._max_stored_ms = 0
        self._stats = BufferStats()
        self._alarm_states = AlarmStates()
        self._journal = Journal(now_ms)
        self.previous_run: Literal["clean", "crash"] | None = None  # None: a new buffer
        self._dropping = False
        self._tail = Tail(tail_max_items)
        # Acknowledged seqs whose rows may be in the file: deleted in the next commit's
        # transaction (or after ``ack_linger_s`` without one), not in one and an fsync of their
        # own. ``_ack_counted``: of those, already taken out of the counts.
        self._ack_runs: list[Run] = []
        self._ack_counted = dict.fromkeys(Lane, 0)
        self._first_ack_t = 0.0
        self._ack_linger_s = ack_linger_s

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Buffer:
        async with self._lock:
            try:
                await self._open()
            except BufferNewerError:
                raise
            except BufferStoreError as exc:
                self._record_error(exc)
                log.error("buffer %s unusable, will keep retrying: %s", self.path, exc)  # noqa: TRY400
        # the buffer outlives the daemon's pipeline, so it owns its tasks; the supervisor
        # logs, counts and restarts them (their exceptions are never left unread)
        run = self._supervisor.run
        self._tasks = [
            asyncio.create_task(run("buffer-commit", self._commit_loop), name="buffer-commit"),
            asyncio.create_task(
                run("buffer-maintenance", self._maintenance_loop), name="buffer-maintenance"
            ),
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
            while self._db is not None and self._uncommitted():
                if not await self._commit_step():
                    break
            lost = self._pending.held()
            if lost:
                self._stats.dropped_total += lost
                log.error("buffer closed with %d items it could not store", lost)
            await self._close(clean=not lost)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _close(self, *, clean: bool) -> None:
        db, self._db = self._db, None
        self._swap_exposure(None)
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
            state = seqfile.SeqState(
                self._pending.reserved, self._pending.last_seq, self._boot, self._base
            )
            try:
                await asyncio.to_thread(seqfile.write_state, self.seq_path, state)
            except OSError as exc:
                log.warning("cannot record the clean shutdown in %s: %s", self.seq_path, exc)

    # -- open ------------------------------------------------------------------------------

    async def _open(self) -> None:
        """Open or create the file and decide where seqs continue (:mod:`.opening`)."""
        opened = await opening.open_file(
            self._paths,
            sync=self._sync,
            wal_pages=self._wal_pages,
            boot=self._boot,
            settled=self._settled if self._opened else None,
            corrupt_files=self._stats.corrupt_files,
            now_ms=self._now_ms,
            atomic=store.atomic,
        )
        db, start, state = opened.db, opened.start, opened.state
        self._base, self._max_stored_ms = opened.base, opened.max_stored_ms
        self._db = db
        self._swap_exposure(opened.exposure)
        self._settled = start.last_seq
        self._pending.last_seq = max(self._pending.last_seq, start.last_seq)
        self._reset_tail()
        self._pending.reserved = max(
            self._pending.reserved, start.last_seq, state.reserved if state else 0
        )
        await asyncio.to_thread(
            seqfile.write_state,
            self.seq_path,
            seqfile.SeqState(self._pending.reserved, None, self._boot, self._base),
        )
        for first, to, reason in start.gaps:
            self._count_gap(first, to, to - first + 1, reason, at_start=True)
        await self._init_stats()
        if not self._opened:
            await self._alarm_states.load(db)
            await self._journal.load(db)
            if state is not None:
                self.previous_run = "clean" if state.clean is not None else "crash"
        self._stats.last_seq = self._pending.last_seq
        self._opened = True
        self._set_writable()

    def _swap_exposure(self, mark: seqfile.ExposureMark | None) -> None:
        if self._exposure is not None:
            self._exposure.close()
        self._exposure = mark

    async def _init_stats(self) -> None:
        """Count the rows in the file, plus what is held in memory and not in it."""
        samples, alarms = await reading.row_counts(self._require_db())
        memory = self._pending.items()
        memory_alarms = sum(1 for lane, _, _ in memory if lane is Lane.ALARM)
        self._stats.samples = samples + alarms + len(memory)
        self._stats.alarms = alarms + memory_alarms
        self._ack_counted = dict.fromkeys(Lane, 0)  # the count includes them again
        await self._refresh_oldest()
        self._refresh_bytes()

    # -- put and commit --------------------------------------------------------------------

    def put(self, item: Sample | AlarmEvent) -> None:
        """Hold an item: numbered, queued for the next commit, and visible to ``fetch`` at once
        (or, when the reservation is used up, as soon as the commit task has raised it). Never
        blocks, never raises."""
        problem = codec.problem(item)
        if problem is not None:  # must not crash a source, nor reach the file
            self._stats.dropped_total += 1
            log.warning("buffer: dropped an item that cannot be stored (%s): %r", problem, item)
            return
        held = self._pending.held()
        if held >= self._queue_max:
            self._stats.dropped_total += 1
            if not self._dropping:
                self._dropping = True
                log.error("buffer memory queue full (%d items): dropping samples", self._queue_max)
            return
        if not self._pending.queue and not self._pending.unnumbered:
            self._first_put_t = time.monotonic()
            self._wake.set()  # the commit task times its linger from the first item
        stats = self._stats
        if stats.samples == 0:
            stats.oldest_ts = item.ts_ms
        stats.samples += 1
        if isinstance(item, AlarmEvent):
            self._alarm_states.put(item)
            stats.alarms += 1
            self._pending.add(Lane.ALARM, item.ts_ms, item)
        else:
            self._pending.add(Lane.SAMPLE, item.ts_ms, item)
        self._number()
        if held + 1 == self._commit_max_rows:
            self._wake.set()  # a full batch does not wait for the linger

    def _number(self) -> None:
        """Give seqs to waiting items as far as the reservation reaches; make them visible."""
        if not self._pending.number(self._tail):
            self._wake.set()  # the commit task raises the reservation
        self._stats.last_seq = self._pending.last_seq

    def record_event(self, event: StatusEvent) -> None:
        """Keep an event for the status page: at once in memory, and on disk with the next
        commit (within ``ack_linger_s`` when no data comes). Never blocks, never raises."""
        if not self._uncommitted():
            self._first_ack_t = time.monotonic()
        self._journal.record(event)
        self._wake.set()

    def events(self) -> list[StatusEvent]:
        """The last day's events, newest first (at most 500)."""
        return self._journal.recent()

    def raised_alarms(self) -> set[str]:
        """The alarms raised by the last event put (or, after a restart, committed) for each:
        the state a new :class:`~gateway.alarms.AlarmEngine` starts from."""
        return self._alarm_states.raised()

    async def flush(self) -> int:
        """Commit everything held now, acknowledgements included (stops at a write error);
        return ``last_seq``."""
        while self._uncommitted():
            async with self._lock:
                if not await self._commit_step():
                    break
        return self._pending.last_seq

    @property
    def last_seq(self) -> int:
        """The highest seq handed out (committed or not)."""
        return self._pending.last_seq

    async def wait_for_seq(self, after_seq: int) -> int:
        """Return ``last_seq`` as soon as it is above ``after_seq``. The waiter is woken once,
        when that happens, not by every seq handed out before (the uplink waits for a batch)."""
        return await self._pending.wait_for_seq(after_seq)

    def _uncommitted(self) -> bool:
        return bool(
            self._pending.held()
            or self._ack_runs
            or self._journal.unwritten
            or self._settled < self._pending.last_seq
        )

    def _commit_due(self) -> float | None:
        """When the next commit should start (monotonic), or None when nothing waits for one."""
        if self._pending.held():
            return self._first_put_t + self._linger_s
        if self._ack_runs or self._journal.unwritten or self._settled < self._pending.last_seq:
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
            if (
                self._db is not None
                and wait > 0
                and len(self._pending.queue) < self._commit_max_rows
                and not self._pending.starved()
            ):
                # sleep out the linger; a first put or a full queue (``_wake``) ends it early
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            ok = True
            while ok and (self._uncommitted() or self._db is None):
                async with self._lock:
                    ok = await self._commit_step()
            if ok:
                backoff = _BACKOFF_MIN_S
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _commit_step(self) -> bool:
        """Open if needed, raise the reservation, commit one batch and the pending
        acknowledgements; False (error recorded) on failure. Holds the lock."""
        try:
            await self._reserve_if_low()
            if self._db is None:
                await self._open()
            batch = self._pending.take_batch(self._commit_max_rows)
            if (
                batch
                or self._ack_runs
                or self._journal.unwritten
                or (self._settled < self._pending.last_seq)
            ):
                await store.atomic(lambda: self._commit_batch(batch))
        except BufferNewerError:
            raise
        except BufferStoreError as exc:
            self._record_error(exc)
            return False
        if self._dropping and len(self._pending.queue) < self._queue_max:
            self._dropping = False
        if self._stats.bytes > self._evictor.max_size * EVICT_TRIGGER:
            await self._evict_logged()
        return True

    async def _commit_batch(self, batch: list[Queued]) -> None:
        """One transaction: insert ``batch`` and delete the acknowledged rows."""
        db = self._require_db()
        # every seq below the first still queued is now committed or was acknowledged
        settled = self._pending.settled()
        resync = not self._stats.writable  # after a failure, count the rows afresh
        # a failed COMMIT may still have landed
        if batch and resync and await reading.committed_last_seq(db) >= batch[-1][0]:
            self._after_commit(settled)
            await self._init_stats()
            return
        runs, self._ack_runs = self._ack_runs, []
        counted, self._ack_counted = self._ack_counted, dict.fromkeys(Lane, 0)
        journal = self._journal.take()
        alarm_states = self._alarm_states.take(
            (seq, ts, item) for seq, _, ts, item in batch if isinstance(item, AlarmEvent)
        )
        try:
            stored = max(self._now_ms(), self._max_stored_ms)
            samples = [
                codec.sample_row(seq, stored, item)
                for seq, _, _, item in batch
                if isinstance(item, Sample)
            ]
            alarms = [
                codec.alarm_row(seq, stored, item)
                for seq, lane, _, item in batch
                if isinstance(item, AlarmEvent)
            ]
            transaction = CommitTransaction(
                samples,
                alarms,
                runs,
                delete_alarms=bool(self._stats.alarms or counted[Lane.ALARM]),
                meta=[(settled, "last_seq"), (stored, "max_stored_ms")],
                alarm_states=alarm_states,
                journal=journal,
            )
            deleted = await store.on_connection_thread(db, transaction)
        except BaseException as exc:
            self._ack_runs = merge_runs(runs + self._ack_runs)  # deleted by a later commit
            self._journal.put_back(journal)
            self._alarm_states.put_back(alarm_states)
            for lane in Lane:
                self._ack_counted[lane] += counted[lane]
            if isinstance(exc, sqlite3.Error | OSError):
                await self._maybe_drop_connection(exc)
                raise store.map_error(exc, "commit failed") from exc
            raise
        self._max_stored_ms = stored
        self._after_commit(settled)
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
            self._stats.samples -= uncounted
            if lane is Lane.ALARM:
                self._stats.alarms -= uncounted

    def _after_commit(self, settled: int) -> None:
        self._pending.committed()
        self._settled = max(self._settled, settled)
        self._tail.trim(self._settled, self._pending.last_seq)
        self._refresh_bytes()
        self._set_writable()

    def _reset_tail(self) -> None:
        """Forget the committed part of the tail: it is to be read from the file."""
        self._tail.reset(self._settled)

    def _oldest_from_tail(self) -> bool:
        """Set ``oldest_ts`` from the tail when it holds every item; False when it cannot."""
        unnumbered = self._pending.unnumbered
        if self._stats.samples != len(self._tail) + len(unnumbered):
            return False
        oldest = self._tail.oldest_ts()
        if oldest is None and unnumbered:
            oldest = unnumbered[0][1]
        self._stats.oldest_ts = oldest
        return True

    async def _reserve_if_low(self) -> None:
        """Raise the fsynced reservation before it runs out (:meth:`Pending.next_reservation`)."""
        reserved = self._pending.next_reservation(time.monotonic())
        if reserved is None:
            return
        state = seqfile.SeqState(reserved, None, self._boot, self._base)
        try:
            await asyncio.to_thread(seqfile.write_state, self.seq_path, state)
        except OSError as exc:
            raise BufferWriteError(f"cannot raise the seq reservation: {exc}") from exc
        self._pending.reserved = reserved
        self._number()

    # -- read and acknowledge --------------------------------------------------------------

    async def fetch(
        self, lane: Lane, *, after_seq: int = 0, up_to_seq: int | None = None, limit: int = 500
    ) -> list[StoredItem]:
        """Items of ``lane`` with ``after_seq < seq <= up_to_seq`` not yet acknowledged.

        Live items (committed or not) come from the tail in memory; older ones from the file,
        once the acknowledged rows are deleted from it, followed by the tail.
        """
        up_to = MAX_SEQ if up_to_seq is None else up_to_seq
        if after_seq >= self._tail.floor(lane):
            return self._from_tail(lane, after_seq, up_to, limit)
        items: list[StoredItem] = []
        async with self._lock:
            await self._apply_acks()
            try:
                if self._db is not None:  # unreadable: what memory holds still goes out
                    items = await reading.items(self._db, lane, after_seq, up_to, limit)
            except sqlite3.Error as exc:
                await self._maybe_drop_connection(exc)
                self._record_error(store.map_error(exc, "fetch failed"))
        if len(items) < limit:
            after = items[-1].seq if items else after_seq
            items += self._from_tail(lane, max(after, self._tail.floor(lane)), up_to, limit)
        return items[:limit]

    def _from_tail(self, lane: Lane, after_seq: int, up_to: int, limit: int) -> list[StoredItem]:
        items = self._tail.get(lane, after_seq, up_to, limit)
        if items and items[-1].seq > self._settled and self._exposure is not None:
            try:  # handed out before its commit: a crash now must not let its seq be reused
                self._exposure.raise_to(items[-1].seq)
            except OSError as exc:
                log.warning("buffer: cannot write %s: %s", self.exposed_path, exc)
        return items

    async def ack(self, seqs: Iterable[int]) -> None:
        """Acknowledge these seqs (published upstream); unknown seqs are ignored.

        Items still in the tail leave it and the counts at once; those not yet committed leave
        the queue too and are never written. Rows already committed are deleted in the next
        commit's transaction, or ``ack_linger_s`` later when no commit comes first: a live
        stream costs no transaction and no fsync of its own for its acks. Other seqs (the
        backlog) are deleted now, so the counts stay exact. A failed delete is retried with the
        next commit; rows left by a crash in between are sent again after the restart.
        """
        runs = runs_of(seqs)
        if not runs:
            return
        found = 0
        unwritten = dict.fromkeys(Lane, 0)
        for item in self._pending.take(runs):
            unwritten[item[1]] += 1
            if isinstance(item[3], AlarmEvent):
                self._alarm_states.acked_unwritten(item[0], item[2], item[3])
        for lane, removed in self._tail.take(runs).items():
            if removed:
                found += removed
                self._ack_counted[lane] += removed - unwritten[lane]
                self._stats.samples -= removed
                if lane is Lane.ALARM:
                    self._stats.alarms -= removed
        if not self._ack_runs:
            self._first_ack_t = time.monotonic()
        self._ack_runs = merge_runs(self._ack_runs + runs)
        if found < count(runs):
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
                await store.atomic(lambda: self._commit_batch([]))
            except BufferStoreError as exc:
                self._record_error(exc)

    async def _acks_before_evict(self) -> None:
        """Acknowledged rows are not evicted, nor counted as such: delete them first. When that
        drops the connection, eviction must stop rather than go on with the closed one."""
        db = self._db
        await self._apply_acks()
        if self._db is not db:
            raise BufferWriteError("the connection was dropped while evicting")

    async def pending_gaps(self) -> list[Gap]:
        """Gaps recorded and not yet acknowledged, oldest first."""
        async with self._lock:
            if self._db is None:
                return []
            try:
                return await reading.unsent_gaps(self._db)
            except sqlite3.Error as exc:
                self._record_error(store.map_error(exc, "reading gaps failed"))
                return []

    async def ack_gap(self, gap_id: int) -> None:
        async with self._lock:
            if self._db is None:
                return
            try:
                await reading.mark_gap_sent(self._db, gap_id)
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
            await self._evictor.run(self._db, self._pending.last_seq)
        except (sqlite3.Error, OSError) as exc:
            await self._maybe_drop_connection(exc)
            self._record_error(store.map_error(exc, "eviction failed"))
        except BufferStoreError as exc:  # the connection was dropped under it: reopened later
            self._record_error(exc)
        self._refresh_bytes()

    async def _after_evict(self, evicted: Evicted) -> None:
        removed, reason = evicted.removed, evicted.reason
        self._stats.samples -= removed
        if evicted.table == "alarms":
            self._stats.alarms -= removed
        self._reset_tail()  # what it held of the evicted range is gone
        self._stats.evicted_total[reason] = self._stats.evicted_total.get(reason, 0) + removed
        self._count_gap(evicted.first, evicted.last, removed, reason)
        log.warning(
            "buffer: evicted %d %s (seq %d..%d, %s)",
            removed,
            evicted.table,
            evicted.first,
            evicted.last,
            reason,
        )
        await self._refresh_oldest()

    # -- stats and errors ------------------------------------------------------------------

    def _count_gap(
        self, first: int, last: int, count: int, reason: str, *, at_start: bool = False
    ) -> None:
        if at_start:
            log.warning("buffer: seqs %d..%d recorded as a %s gap", first, last, reason)
        self._stats.gaps_total += 1
        self._stats.recent_gaps.append((first, last, count, reason))

    @property
    def stats(self) -> BufferStats:
        return self._stats

    def _refresh_bytes(self) -> None:
        self._stats.bytes = sum(self._evictor.file_bytes())

    async def _refresh_oldest(self) -> None:
        if self._oldest_from_tail():
            return
        oldest = await reading.oldest_ts(self._require_db())
        self._stats.oldest_ts = self._tail.oldest_ts() if oldest is None else oldest

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise BufferWriteError(f"buffer {self.path} is not open")
        return self._db

    async def _maybe_drop_connection(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) or (
            isinstance(exc, sqlite3.Error) and store.error_code(exc) in store.BROKEN_CODES
        ):
            db, self._db = self._db, None
            self._reset_tail()
            self._wake.set()  # the commit task reopens it, without waiting for a put
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
