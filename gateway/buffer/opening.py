"""Opening the buffer's file and deciding where seqs continue after the last run.

Seqs: never reused
------------------
``meta.last_seq`` (``D``) is the highest seq below which every item is committed or was
acknowledged, updated in each commit of data; between them (a link that acknowledges every
sample before its commit writes no data) the *settled* mark in ``<db>.exposed`` (page cache) and
in ``<db>.seq`` (fsynced at each reservation, with ``sync: full``) says the same, so ``D`` below
is the highest of the three that can be trusted (``seqfile.plan_start``). Before handing out a
seq above the *reservation* ``R`` the buffer raises ``R`` in the fsynced file ``<db>.seq``
(ahead, by ``seq_reserve_block`` or more): no seq above ``R`` was ever handed out. When it runs
out, new items wait (without a seq) for the commit task to raise it. When the uplink is handed
an uncommitted item, the seq goes into the exposure mark ``<db>.exposed`` (page cache only). A
clean close writes the exact last seq to the seq file. At open:

1. clean close recorded and it equals ``D``: continue at ``D + 1``, no gap;
2. otherwise (unclean stop), in the same boot with a WAL that holds every frame the wal-index
   (``-shm``) says was committed (``seqfile.wal_intact``): the seqs above the exposure mark were
   never seen by anybody and are free again; ``D+1 .. mark`` may have been published and not
   stored, so they become a gap with reason ``unclean_shutdown`` (at worst the upstream has them
   twice: once received, once declared);
3. else (reboot or power cut, or a WAL shorter than committed, or no proof either way):
   continue at ``R + 1`` and record ``D+1 .. R`` as an ``unclean_shutdown`` gap, so the upstream
   sees them accounted for, and no seq is used twice. Even with ``sync="full"`` a reboot takes
   this path: we do not bet on the SD card honouring fsync.

A corrupt or foreign file is moved aside (``<db>.corrupt-<UTC time>``, with its -wal/-shm) and a
fresh one started above ``R``; the lost range ``base+1 .. R`` (``base``: the last seq before
that file was created, kept in ``<db>.seq``; or ``.. clean`` when a clean close recorded it) is
recorded as a ``corrupt_buffer`` gap. A missing database next to a seq file counts the same way.
A file written by a newer street-gateway is refused (:class:`BufferNewerError`) and left alone.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from gateway.buffer import seqfile, store
from gateway.errors import BufferCorruptError, BufferWriteError
from gateway.model import GapReason

log = logging.getLogger(__name__)

Atomic = Callable[[Callable[[], Coroutine[Any, Any, None]]], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Opened:
    """An open file, the gaps recorded in it, and where seqs continue."""

    db: aiosqlite.Connection
    start: seqfile.Start
    state: seqfile.SeqState | None  # the seq file as it was found
    fresh: bool
    base: int  # the last seq before this file was created
    max_stored_ms: int
    exposure: seqfile.ExposureMark


async def open_file(
    path: Path,
    files: seqfile.SeqFiles,
    *,
    sync: Literal["full", "normal"],
    wal_pages: int,
    settled: int | None,
    corrupt_files: list[str],
    now_ms: Callable[[], int],
    atomic: Atomic,
) -> Opened:
    """Open or create the file (moving a corrupt one aside, recorded in ``corrupt_files``) and
    record where seqs continue. ``settled``: when this process opened it before (a dropped
    connection), everything up to it is known to be committed or acknowledged."""
    state = await asyncio.to_thread(seqfile.read_state, files.seq_path)
    intact = await asyncio.to_thread(seqfile.wal_intact, path)
    exposed, exposed_settled = await asyncio.to_thread(seqfile.read_exposed, files.exposed_path)
    try:
        db, fresh = await store.open_db(path, sync, wal_pages)
    except BufferCorruptError as exc:
        db, fresh = await _start_afresh(path, exc, sync, wal_pages, corrupt_files)
    try:
        if fresh:
            db_last, base, max_stored_ms = 0, 0, 0
            if state is not None and not corrupt_files:
                log.error("buffer %s is missing beside its seq file", path)
        else:
            db_last, base, max_stored_ms = await _read_meta(db)
            if state is None:
                log.warning("seq file %s missing: continuing from the database", files.seq_path)
        if settled is not None and not fresh:
            start = seqfile.Start(max(db_last, settled), [])
        else:
            start = seqfile.plan_start(
                state,
                fresh=fresh,
                db_last=db_last,
                same_boot=state is not None and state.boot == files.boot is not None,
                intact=intact,
                exposed=exposed,
                settled=exposed_settled,
            )
        if fresh:
            base = start.last_seq
        now = now_ms()
        await atomic(lambda: _write_open_state(db, start, fresh, now))
        exposure = await asyncio.to_thread(seqfile.ExposureMark, files.exposed_path)
    except sqlite3.Error as exc:
        await db.close()
        raise store.map_error(exc, f"cannot initialise {path}") from exc
    except OSError as exc:
        await db.close()
        raise BufferWriteError(f"cannot initialise {path}: {exc}") from exc
    except BaseException:
        await db.close()
        raise
    return Opened(db, start, state, fresh, base, max_stored_ms, exposure)


async def _start_afresh(
    path: Path,
    exc: BufferCorruptError,
    sync: Literal["full", "normal"],
    wal_pages: int,
    corrupt_files: list[str],
) -> tuple[aiosqlite.Connection, bool]:
    try:
        moved = await asyncio.to_thread(store.move_aside, path)
    except OSError as move_exc:
        raise BufferWriteError(f"cannot move {path} aside: {move_exc}") from exc
    corrupt_files.append(str(moved))
    log.error("buffer %s is corrupt (%s): moved aside to %s", path, exc, moved)
    db, fresh = await store.open_db(path, sync, wal_pages)
    if not fresh:
        await db.close()
        raise BufferWriteError(f"{path} reappeared while starting afresh") from exc
    return db, fresh


async def _read_meta(db: aiosqlite.Connection) -> tuple[int, int, int]:
    """(the highest seq the file knows, base, max_stored_ms)."""
    meta: dict[str, int] = {}
    for key, value in await db.execute_fetchall("SELECT key, value FROM meta"):
        meta[key] = value
    found = await db.execute_fetchall(
        "SELECT (SELECT max(seq) FROM samples), (SELECT max(seq) FROM alarms),"
        " (SELECT max(to_seq) FROM gaps), (SELECT max(to_seq) FROM seals)"
    )  # a sealed seq is settled: a seal's commit need not move meta.last_seq
    highest = max([meta.get("last_seq", 0), *(v for v in next(iter(found)) if v)])
    return int(highest), int(meta.get("base", 0)), int(meta.get("max_stored_ms", 0))


async def _write_open_state(
    db: aiosqlite.Connection, start: seqfile.Start, fresh: bool, now: int
) -> None:
    last = start.last_seq
    gaps: list[tuple[int, int, GapReason]] = start.gaps
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
        await store.rollback(db)
        raise
