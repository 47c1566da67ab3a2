"""Open, check, create and move aside the buffer's SQLite file. No policy: :mod:`.core` decides.

The file is ours when it starts with the SQLite header, carries our ``application_id``, holds
our tables and passes ``PRAGMA quick_check``; a file of an older ``user_version`` is migrated
in place (:mod:`.schema`). A file that is not ours or fails the check raises
:class:`BufferCorruptError`; one written by a newer street-gateway raises
:class:`BufferNewerError` and is left untouched; a file that cannot be opened or written at all
(missing or read-only directory, disk full, I/O error) raises :class:`BufferWriteError`.

:class:`Connection` holds the one open connection, dropped after an error that says it is broken;
:func:`atomic` runs a transaction to its end even when its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from gateway.buffer import schema
from gateway.errors import BufferCorruptError, BufferNewerError, BufferWriteError

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
SQLITE_HEADER = b"SQLite format 3\x00"
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# After these the connection is not worth keeping: reopen (and re-check) the file.
BROKEN_CODES = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, *_CORRUPT_CODES}


T = TypeVar("T")


async def on_connection_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: object) -> T:
    """``fn(connection, *args)`` run on the connection's own thread: one round trip.

    aiosqlite sends each statement to its thread on its own, and every trip wakes two threads
    (~50-100 us of CPU on a small VM); a transaction of five statements run as one function
    costs one trip instead of five. aiosqlite has no public call for this: ``_execute`` is what
    its own methods use (pinned to aiosqlite 0.22.x in pyproject.toml; every commit of every
    buffer test goes through here).
    """
    result: T = await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
    return result


async def scalar(db: aiosqlite.Connection, sql: str, params: tuple[object, ...] = ()) -> Any:
    """The first column of the first row (None when there is no row)."""
    rows = list(await db.execute_fetchall(sql, params))
    return rows[0][0] if rows else None


def sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def error_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def map_error(exc: sqlite3.Error | OSError, what: str) -> BufferWriteError | BufferCorruptError:
    if isinstance(exc, sqlite3.Error) and error_code(exc) in _CORRUPT_CODES:
        return BufferCorruptError(f"{what}: {exc}")
    return BufferWriteError(f"{what}: {exc}")


def _check_header(path: Path) -> bool:
    """False when the file exists, is not empty and is not an SQLite database."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        return False
    except OSError as exc:
        raise BufferWriteError(f"cannot read {path}: {exc}") from exc
    return head in (b"", SQLITE_HEADER)


async def open_db(
    path: Path, sync: Literal["full", "normal"], wal_limit_pages: int
) -> tuple[aiosqlite.Connection, bool]:
    """Open (creating when absent or empty) and check the file; return it and "was created"."""
    if not _check_header(path):
        raise BufferCorruptError(f"{path} is not an SQLite database")
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise map_error(exc, f"cannot open {path}") from exc
    try:
        fresh = await _check_or_create(db, path)
        await db.execute_fetchall(f"PRAGMA synchronous = {sync.upper()}")
        await db.execute_fetchall(f"PRAGMA wal_autocheckpoint = {wal_limit_pages}")
        await db.execute_fetchall(f"PRAGMA journal_size_limit = {wal_limit_pages * PAGE_SIZE}")
    except BaseException as exc:
        await db.close()
        if isinstance(exc, sqlite3.Error):
            raise map_error(exc, f"cannot use {path}") from exc
        raise
    return db, fresh


async def _check_or_create(db: aiosqlite.Connection, path: Path) -> bool:
    tables = {row[0] for row in await db.execute_fetchall("SELECT name FROM sqlite_schema")}
    app_id = await scalar(db, "PRAGMA application_id")
    if not tables and app_id == 0:
        await db.execute_fetchall(f"PRAGMA page_size = {PAGE_SIZE}")
        await db.execute_fetchall("PRAGMA auto_vacuum = INCREMENTAL")
        await _wal_mode(db, path)
        await db.execute("BEGIN IMMEDIATE")
        for statement in schema.CREATE:
            await db.execute(statement)
        await db.execute("COMMIT")
        return True
    version = await scalar(db, "PRAGMA user_version")
    if app_id != schema.APPLICATION_ID or version < 1:
        raise BufferCorruptError(
            f"{path} is not a street-gateway buffer (application_id {app_id:#x},"
            f" user_version {version}, tables {sorted(tables)})"
        )
    if version > schema.VERSION:
        raise BufferNewerError(
            f"{path} was written by a newer street-gateway (buffer schema v{version}; this"
            f" version reads up to v{schema.VERSION}): refusing to start, the file is untouched"
        )
    check = [row[0] for row in await db.execute_fetchall("PRAGMA quick_check")]
    if check != ["ok"]:
        raise BufferCorruptError(f"{path} failed quick_check: {'; '.join(check[:3])}")
    await _wal_mode(db, path)
    if version < schema.VERSION:
        rows = await scalar(db, "SELECT count(*) FROM readings") if version == 1 else None
        log.warning("buffer %s: migrating schema v%d -> v%d", path, version, schema.VERSION)
        await on_connection_thread(db, schema.migrate, version)
        log.warning(
            "buffer %s: migrated to v%d%s",
            path,
            schema.VERSION,
            f" ({rows} readings became samples, seqs kept)" if rows is not None else "",
        )
    tables = {row[0] for row in await db.execute_fetchall("SELECT name FROM sqlite_schema")}
    if not tables >= schema.TABLES:
        raise BufferCorruptError(f"{path} lacks tables {sorted(schema.TABLES - tables)}")
    return False


async def _wal_mode(db: aiosqlite.Connection, path: Path) -> None:
    mode = await scalar(db, "PRAGMA journal_mode = WAL")
    if mode != "wal":
        raise BufferWriteError(f"{path}: cannot switch to WAL mode (got {mode})")


def move_aside(path: Path) -> Path:
    """Rename the file and its -wal/-shm to ``<name>.corrupt-<UTC timestamp>``; return it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for side, suffix in zip(sidecars(path), ("-wal", "-shm"), strict=True):
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


async def rollback(db: aiosqlite.Connection) -> None:
    """Roll back unconditionally: a BEGIN may still be queued in aiosqlite's thread."""
    try:
        await db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.debug("rollback: %s", exc)


async def atomic(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` (a transaction and the bookkeeping after it) to its end, even when the
    caller is cancelled: a transaction cut in half would stay open on the one connection and
    swallow the next. The caller holds the buffer's lock, so nothing interleaves meanwhile."""
    task = asyncio.ensure_future(work())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


class Connection:
    """The buffer's one connection to its file, or none: before the first open, and after an
    error that says the connection is broken (``drop_if_broken``; the commit task opens it
    again, and the reopen checks the file)."""

    def __init__(self, path: Path, on_drop: Callable[[], None]) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self._on_drop = on_drop

    def require(self) -> aiosqlite.Connection:
        if self.db is None:
            raise BufferWriteError(f"buffer {self.path} is not open")
        return self.db

    async def drop_if_broken(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) or (
            isinstance(exc, sqlite3.Error) and error_code(exc) in BROKEN_CODES
        ):
            db, self.db = self.db, None
            self._on_drop()
            if db is not None:
                try:
                    await db.close()
                except sqlite3.Error as close_exc:
                    log.debug("closing a broken connection failed: %s", close_exc)

    async def close(self, *, checkpoint: bool) -> bool:
        """Close it; with ``checkpoint``, fold the WAL into the file first. True when the
        checkpoint was done."""
        db, self.db = self.db, None
        if db is None:
            return False
        try:
            if checkpoint:
                await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            checkpoint = False
            log.warning("buffer checkpoint at close failed: %s", exc)
        finally:
            await db.close()
        return checkpoint
