"""The durable store-and-forward buffer: samples, alarms, results in, seq-numbered items out.

How it works
------------
``put()`` gives each sample or alarm its seq at once, below the fsynced reservation, and appends
it to a bounded in-memory queue (:mod:`.pending`) and to the *tail*; it never blocks and never
raises. The uplink may publish an item from the tail before its commit. The commit task commits
what is queued (at most ``commit_max_rows``) in one transaction, a short linger after a batch's
first item (a poll's samples share a commit), never later than ``commit_interval_s``, back to
back when commits are slower (group commit). With ``sync="full"`` every commit is fsynced; with
``"normal"`` only checkpoints are. An item acknowledged before its commit leaves the queue and is
never written, and needs no commit of its own: the settled mark (:mod:`.seqfile`) records it.

Samples and alarms live in two tables keyed by seq, in the neutral form of :mod:`.codec` (the
schema and migrations: :mod:`.schema`). A row leaves only through ``ack()`` or eviction
(:mod:`.eviction`). Gaps have their own table; ``ack_gap()`` marks one sent, and maintenance
deletes sent gaps once no row is left below them (until then they fence later evictions). The
counts and the oldest timestamp are kept incrementally: nothing ever scans the backlog.

``fetch`` above each lane's floor (the live stream) answers from the tail (:mod:`.tail`) in
memory; below it (the backlog) from the file, then the tail. ``ack`` takes items out of the tail
and the counts at once; committed rows are deleted in a later commit (a crash before it sends
them again). Seqs are never reused, whatever the stop (:mod:`.opening`). The alarm rules' states
(:mod:`.alarm_state`), the status events (:mod:`.journal`) and the seals (:mod:`.seals`) go in
the same commits. Eviction and the checkpoint are the upkeep's (:mod:`.upkeep`).

Failures
--------
A failed write (disk full, read-only or vanished directory, I/O error) is rolled back and retried
with capped backoff; its items stay queued (and publishable), ``stats.writable`` is False and
``write_errors_total`` / ``last_error`` say why; a full queue drops new items (before their seq),
counted. A file that cannot be opened leaves the buffer degraded, reopened by the commit task;
I/O and corruption errors drop the connection, so the retry re-checks the file. Under 5 % free
space, ``stats.room_low`` (``/health`` degraded) and ``room_bytes`` say so. A directory others
can write, or a symbolic link beside the file, is refused at start (:mod:`.safety`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import aiosqlite

from gateway.backoff import Backoff
from gateway.buffer import codec, opening, reading, safety, seqfile, store
from gateway.buffer.acks import Acks
from gateway.buffer.alarm_state import AlarmStates
from gateway.buffer.commit import CommitTransaction
from gateway.buffer.eviction import Evicted, Evictor
from gateway.buffer.figures import Figures
from gateway.buffer.journal import Journal
from gateway.buffer.pending import Pending, Queued
from gateway.buffer.runs import count, runs_of
from gateway.buffer.seals import Sealer, SealState
from gateway.buffer.tail import Tail
from gateway.buffer.upkeep import Upkeep
from gateway.errors import BufferNewerError, BufferStoreError, BufferUnsafeError, BufferWriteError
from gateway.model import AlarmEvent, BufferStats, Gap, Item, Lane, Sample, StatusEvent, StoredItem
from gateway.model import now_ms as model_now_ms
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1

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
        sealer: Sealer | None = None,
    ) -> None:
        self.path = Path(path)
        self._files = seqfile.SeqFiles(self.path)
        self._sync: Literal["full", "normal"] = sync
        self._linger_s = min(
            commit_interval_s, commit_interval_s / 4 if commit_linger_s is None else commit_linger_s
        )
        self._commit_max_rows = commit_max_rows
        self._now_ms = now_ms
        # WAL kept small beside a small max_size: its allowance counts against max_size.
        self._wal_pages = max(16, min(1000, max_size // store.PAGE_SIZE // 16))
        self._pending = Pending(max(1, seq_reserve_block), memory_queue_max)
        self._first_put_t = 0.0
        self._conn = store.Connection(self.path, self._dropped)
        self._opened = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor = supervisor or Supervisor()
        self._settled = 0  # every seq up to it is committed or was acknowledged (meta.last_seq)
        self._max_stored_ms = 0
        self._figures = Figures(self.path)
        self._alarm_states = AlarmStates()
        self._journal = Journal(now_ms)
        self.previous_run: Literal["clean", "crash"] | None = None  # None: a new buffer
        self._tail = Tail(tail_max_items)
        self._acks = Acks()
        self._first_ack_t = 0.0  # since when acks or events wait for a commit (monotonic)
        self._meta_behind = False  # the last commit only sealed, leaving meta.last_seq behind
        self._closing = False
        self._ack_linger_s = ack_linger_s
        self.seals = SealState(sealer, made=self._pending.wake_all)  # the uplink reads it
        self._upkeep = Upkeep(
            self._conn,
            Evictor(
                self.path,
                max_size=max_size,
                max_age_ms=int(max_age_s * 1000),
                min_free_fraction=min_free_fraction,
                wal_allowance=self._wal_pages * store.PAGE_SIZE,
                chunk_rows=evict_chunk_rows,
                now_ms=now_ms,
                held=lambda: (self.stats.samples, self.stats.alarms),
                before_delete=self._acks_before_evict,
                atomic=store.atomic,
                on_evicted=self._after_evict,
            ),
            self._figures,
            sync=sync,
            last_seq=lambda: self._pending.last_seq,
            every_s=maintenance_interval_s,
            lock=self._lock,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Buffer:
        await asyncio.to_thread(safety.check, self.path)
        async with self._lock:
            try:
                await self._open()
            except (BufferNewerError, BufferUnsafeError):
                await self._conn.close(checkpoint=False)  # refused: no connection left behind
                raise
            except BufferStoreError as exc:
                self._figures.write_failed(exc)
                log.error("buffer %s unusable, will keep retrying: %s", self.path, exc)  # noqa: TRY400
        # the buffer outlives the daemon's pipeline, so it owns its tasks; the supervisor
        # logs, counts and restarts them (their exceptions are never left unread)
        run = self._supervisor.run
        self._tasks = [
            asyncio.create_task(run("buffer-commit", self._commit_loop), name="buffer-commit"),
            asyncio.create_task(
                run("buffer-maintenance", self._upkeep.loop), name="buffer-maintenance"
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
        self._closing = True  # the last commit records exactly how far every seq is settled
        async with self._lock:
            while self._conn.db is not None and self._uncommitted():
                if not await self._commit_step():
                    break
            lost = self._pending.held()
            if lost:
                self._figures.dropped(lost)
                log.error("buffer closed with %d items it could not store", lost)
            await self._close(clean=not lost)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _close(self, *, clean: bool) -> None:
        self._files.swap_exposure(None)
        if await self._conn.close(checkpoint=clean):
            await self._files.record_clean(self._pending.reserved, self._pending.last_seq)

    async def _open(self) -> None:
        """Open or create the file and decide where seqs continue (:mod:`.opening`)."""
        opened = await opening.open_file(
            self.path,
            self._files,
            sync=self._sync,
            wal_pages=self._wal_pages,
            settled=self._settled if self._opened else None,
            corrupt_files=self.stats.corrupt_files,
            now_ms=self._now_ms,
            atomic=store.atomic,
        )
        db, start, state = opened.db, opened.start, opened.state
        self._files.base, self._max_stored_ms = opened.base, opened.max_stored_ms
        self._conn.db = db
        self._files.swap_exposure(opened.exposure)
        self._settled = start.last_seq
        self._pending.resume_at(start.last_seq, state.reserved if state else 0)
        self._tail.reset(self._settled)
        await self._files.reserve(self._pending.reserved)
        for first, to, reason in start.gaps:
            self._figures.gap(first, to, to - first + 1, reason, at_start=True)
        await self._init_stats()
        await self.seals.load(db, self.path)
        if not self._opened:
            await self._alarm_states.load(db)
            await self._journal.load(db)
            if state is not None:
                self.previous_run = "clean" if state.clean is not None else "crash"
        self.stats.last_seq = self._pending.last_seq
        self._opened = True
        self._figures.writable_again()

    async def _init_stats(self) -> None:
        """Count the rows in the file, plus what is held in memory and not in it."""
        samples, alarms = await reading.row_counts(self._conn.require())
        held, held_alarms = self._pending.counts()
        self._figures.recount(samples + alarms + held, alarms + held_alarms)
        self._acks.recounted()
        await self._refresh_oldest()
        self._upkeep.refresh_bytes()

    # -- put and commit --------------------------------------------------------------------

    def put(self, item: Item) -> int | None:
        """Hold an item: numbered, queued for the next commit, and visible to ``fetch`` at once
        (or, when the reservation is used up, as soon as the commit task has raised it); its seq
        if it has one already, else None. Never blocks, never raises."""
        problem = codec.problem(item)
        if problem is not None:  # must not crash a source, nor reach the file
            self._figures.dropped()
            log.warning("buffer: dropped an item that cannot be stored (%s): %r", problem, item)
            return None
        held = self._pending.held()
        if not self._pending.admit():
            self._figures.dropped()
            return None
        if not self._pending.queue and not self._pending.unnumbered:
            self._first_put_t = time.monotonic()
            self._wake.set()  # the commit task times its linger from the first item
        self._figures.added(item)
        if isinstance(item, AlarmEvent):
            self._alarm_states.put(item)
        # an alarm, or a command's result, rides the alarms' lane
        self._pending.add(Lane.SAMPLE if isinstance(item, Sample) else Lane.ALARM, item.ts_ms, item)
        self._number()
        if held + 1 == self._commit_max_rows:
            self._wake.set()  # a full batch does not wait for the linger
        return None if self._pending.unnumbered else self._pending.last_seq

    def _number(self) -> None:
        """Give seqs to waiting items as far as the reservation reaches; make them visible."""
        if not self._pending.number(self._tail) or self._pending.low():
            self._wake.set()  # the commit task raises the reservation
        self.stats.last_seq = self._pending.last_seq

    def record_event(self, event: StatusEvent) -> None:
        """Keep an event for the status page: at once in memory, and on disk with the next
        commit (within ``ack_linger_s`` when no data comes). Never blocks, never raises."""
        if self._commit_due() is None:
            self._first_ack_t = time.monotonic()
        self._journal.record(event)
        self._wake.set()

    def events(self) -> list[StatusEvent]:
        """The last day's events, newest first (at most 500)."""
        return self._journal.recent()

    def raised_alarms(self) -> set[str]:
        """The alarms raised by the last event put (after a restart, committed) for each."""
        return self._alarm_states.raised()

    async def flush(self) -> int:
        """Commit everything held now, acks included (stops at a write error); ``last_seq``."""
        while self._uncommitted():
            async with self._lock:
                if not await self._commit_step():
                    break
        return self._pending.last_seq

    async def ping(self) -> None:
        """The watchdog's proof that commits are not wedged, without forcing one."""
        await self._query(lambda db: db.execute_fetchall("SELECT 1"), "ping failed", None)

    @property
    def last_seq(self) -> int:
        """The highest seq handed out (committed or not)."""
        return self._pending.last_seq

    async def wait_for_seq(self, after_seq: int) -> int:
        """``last_seq`` as soon as it is above ``after_seq`` (woken once, not per seq)."""
        return await self._pending.wait_for_seq(after_seq)

    def _uncommitted(self) -> bool:
        return bool(
            self._pending.held()
            or self._acks.runs
            or self._journal.unwritten
            or self._settled < self._pending.last_seq
            or self.seals.due_now(self._settled)
            or self.seals.sent_marks
            or (self._closing and self._meta_behind)
        )

    def _commit_due(self) -> float | None:
        """When the next commit should start (monotonic), or None when nothing waits for one."""
        if self._pending.held():
            return self._first_put_t + self._linger_s
        if self._acks.runs or self._journal.unwritten or self._alarm_states.unwritten:
            return self._first_ack_t + self._ack_linger_s
        # seqs acknowledged before their commit need none (the settled mark records them); a
        # seal does, and takes their leaves from memory (:mod:`.seals`)
        return self.seals.due(self._pending.settled(), time.monotonic())

    async def _commit_loop(self) -> None:
        retry = Backoff(0.05, 5.0)  # after a failed commit (the items stay queued)
        while True:
            due = self._commit_due()
            ahead = self._pending.low() and not self._pending.starved()
            if due is None and self._conn.db is not None and not ahead:
                await self._wake.wait()
                self._wake.clear()
                continue
            wait = 0.0 if due is None else due - time.monotonic()
            if ahead and self._conn.db is not None:
                async with self._lock:  # raised ahead of need, with no commit of its own
                    ok = await self._commit_step(reserve_only=True)
            elif (
                self._conn.db is not None
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
            else:
                ok = True
                while ok and (self._uncommitted() or self._conn.db is None):
                    async with self._lock:
                        ok = await self._commit_step()
            if ok:
                retry.reset()
                continue
            await asyncio.sleep(retry.next_delay())

    async def _commit_step(self, *, reserve_only: bool = False) -> bool:
        """Open if needed, raise the reservation, commit one batch and the pending
        acknowledgements; False (error recorded) on failure. Holds the lock."""
        try:
            await self._reserve_if_low()
            if reserve_only:
                return True
            if self._conn.db is None:
                await self._open()
            batch = self._pending.take_batch(self._commit_max_rows)
            if self._uncommitted():  # nothing waits for a seq once the reservation is raised
                await store.atomic(lambda: self._commit_batch(batch))
        except BufferNewerError:
            raise
        except BufferStoreError as exc:
            self._figures.write_failed(exc)
            return False
        await self._upkeep.evict_if_near_bound()
        return True

    async def _commit_batch(self, batch: list[Queued]) -> None:
        """One transaction: insert ``batch`` and delete the acknowledged rows."""
        db = self._conn.require()
        # every seq below the first still queued is now committed or was acknowledged
        settled = self._pending.settled()
        resync = not self.stats.writable  # after a failure, count the rows afresh
        # a failed COMMIT may still have landed
        if batch and resync and await reading.committed_last_seq(db) >= batch[-1][0]:
            self._after_commit(settled)
            await self._init_stats()
            return
        stored = max(self._now_ms(), self._max_stored_ms)
        seals = self.seals.take(settled, stored)
        # a commit that only seals (link up) leaves meta.last_seq to the settled marks and the
        # seal's to_seq, as seals off does: the seal's page is all it writes; a close moves it
        seal_only = not (
            batch or self._acks.runs or self._journal.unwritten or self._alarm_states.unwritten
        )
        transaction = CommitTransaction.take(
            batch,
            stored_ms=stored,
            settled=settled,
            alarms_held=self.stats.alarms,
            acks=self._acks,
            alarm_states=self._alarm_states,
            journal=self._journal,
            seals=seals,
            move_meta=self._closing or not seal_only,
        )
        try:
            deleted = await store.on_connection_thread(db, transaction)
        except BaseException as exc:
            transaction.give_back(self._acks, self._alarm_states, self._journal)
            self.seals.give_back(seals)
            if isinstance(exc, sqlite3.Error | OSError):
                await self._conn.drop_if_broken(exc)
                raise store.map_error(exc, "commit failed") from exc
            raise
        self._max_stored_ms = stored
        self._meta_behind = not transaction.meta
        self.seals.committed(seals)
        self._after_commit(settled)
        if transaction.runs:  # count out the deleted rows ``ack()`` did not find in the tail
            for lane in Lane:
                self._figures.removed(lane, max(0, deleted[lane] - transaction.counted[lane]))
        if resync:
            await self._init_stats()
        elif transaction.runs:
            await self._refresh_oldest()

    def _after_commit(self, settled: int) -> None:
        self._pending.committed()
        self._settled = max(self._settled, settled)
        self._files.settle(self._pending.settled_now())
        self._tail.trim(self._settled, self._pending.last_seq)
        self._upkeep.refresh_bytes()
        self._figures.writable_again()

    def _oldest_from_tail(self) -> bool:
        """Set ``oldest_ts`` from the tail when it holds every item; False when it cannot."""
        return self._figures.oldest_from_memory(self._tail, self._pending.unnumbered)

    async def _reserve_if_low(self) -> None:
        """Raise the fsynced reservation before it runs out (:meth:`Pending.next_reservation`)."""
        reserved = self._pending.next_reservation(time.monotonic())
        if reserved is None:
            return
        durable = self._pending.settled_now() if self._sync == "full" else 0
        await self._files.reserve(reserved, durable)
        self._pending.reserved = reserved
        self._number()

    # -- read and acknowledge --------------------------------------------------------------

    async def fetch(
        self, lane: Lane, *, after_seq: int = 0, up_to_seq: int | None = None, limit: int = 500
    ) -> list[StoredItem]:
        """Items of ``lane`` with ``after_seq < seq <= up_to_seq`` not yet acknowledged: live
        ones from the tail in memory, older ones from the file (acked rows deleted first)."""
        up_to = MAX_SEQ if up_to_seq is None else up_to_seq
        if after_seq >= self._tail.floor(lane):
            return self._from_tail(lane, after_seq, up_to, limit)
        items: list[StoredItem] = []
        async with self._lock:
            await self._apply_acks()
            try:
                if self._conn.db is not None:  # unreadable: what memory holds still goes out
                    items = await reading.items(self._conn.db, lane, after_seq, up_to, limit)
            except sqlite3.Error as exc:
                await self._conn.drop_if_broken(exc)
                self._figures.write_failed(store.map_error(exc, "fetch failed"))
        if len(items) < limit:
            after = items[-1].seq if items else after_seq
            items += self._from_tail(lane, max(after, self._tail.floor(lane)), up_to, limit)
        return items[:limit]

    def _from_tail(self, lane: Lane, after_seq: int, up_to: int, limit: int) -> list[StoredItem]:
        items = self._tail.get(lane, after_seq, up_to, limit)
        if items and items[-1].seq > self._settled:
            self._files.expose(items[-1].seq)
        return items

    async def ack(self, seqs: Iterable[int]) -> None:
        """Acknowledge these seqs (published upstream); unknown seqs are ignored. Items in the
        tail leave it and the counts at once (uncommitted ones are never written; their leaves
        go with the next commit); committed rows are deleted by the next commit, or
        ``ack_linger_s`` later; the backlog's now, so the counts stay exact."""
        seqs = list(seqs)
        runs = runs_of(seqs)
        if not runs:
            return
        was_due = self._commit_due() is not None
        found = 0
        unwritten = dict.fromkeys(Lane, 0)
        taken = self._pending.take(runs)
        for item in taken:
            unwritten[item[1]] += 1
            self.seals.hold(item[0], item[3])
            if isinstance(item[3], AlarmEvent):
                self._alarm_states.acked_unwritten(item[0], item[2], item[3])
        for lane, removed in self._tail.take(runs).items():
            if removed:
                found += removed
                self._acks.counted[lane] += removed - unwritten[lane]
                self._figures.removed(lane, removed)
        if not was_due:
            self._first_ack_t = time.monotonic()
        gone = {item[0] for item in taken}  # never written: nothing to delete
        self._acks.add(runs_of(seq for seq in seqs if seq not in gone) if gone else runs)
        self._files.settle(self._pending.settled_now())
        if found < count(runs):
            async with self._lock:
                await self._apply_acks()
        else:
            self._oldest_from_tail()
            self._wake.set()

    async def _apply_acks(self) -> None:
        """Delete the acked rows now, before reading or evicting (a failure is recorded)."""
        if self._acks.runs and self._conn.db is not None:
            try:
                await store.atomic(lambda: self._commit_batch([]))
            except BufferStoreError as exc:
                self._figures.write_failed(exc)

    async def _acks_before_evict(self) -> None:
        """Delete acknowledged rows before evicting (never evicted nor counted so); stop
        eviction if that drops the connection."""
        db = self._conn.db
        await self._apply_acks()
        if self._conn.db is not db:
            raise BufferWriteError("the connection was dropped while evicting")

    async def pending_gaps(self) -> list[Gap]:
        """Gaps recorded and not yet acknowledged, oldest first."""
        return await self._query(reading.unsent_gaps, "reading gaps failed", [])

    async def ack_seal(self, n: int) -> None:
        self.seals.sent(n)  # marked in the file by the next commit, not one of its own

    async def ack_gap(self, gap_id: int) -> None:
        await self._query(lambda db: reading.mark_gap_sent(db, gap_id), "ack_gap failed", None)

    async def _query(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], what: str, unreadable: T
    ) -> T:
        """``work`` on the file under the lock; ``unreadable`` when it is not open or fails."""
        async with self._lock:
            if self._conn.db is None:
                return unreadable
            try:
                return await work(self._conn.db)
            except sqlite3.Error as exc:
                self._figures.write_failed(store.map_error(exc, what))
                return unreadable

    # -- eviction and maintenance (:mod:`.upkeep`) ------------------------------------------

    async def evict_now(self) -> None:
        """Run eviction (age, size, free space) now."""
        async with self._lock:
            await self._upkeep.evict()

    async def _after_evict(self, evicted: Evicted) -> None:
        self._tail.reset(self._settled)  # what it held of the evicted range is gone
        self._figures.evicted(evicted)
        await self._refresh_oldest()

    # -- stats and errors ------------------------------------------------------------------

    @property
    def stats(self) -> BufferStats:
        return self._figures.stats

    async def _refresh_oldest(self) -> None:
        if self._oldest_from_tail():
            return
        oldest = await reading.oldest_ts(self._conn.require())
        self.stats.oldest_ts = self._tail.oldest_ts() if oldest is None else oldest

    def _dropped(self) -> None:
        """The connection was dropped: what the tail held of the file is to be read from it
        again, and the commit task reopens it without waiting for a put."""
        self._tail.reset(self._settled)
        self._wake.set()
