"""Open, check, create and move aside the buffer's SQLite file. No policy: :mod:`.core` decides.

The file is ours when it starts with the SQLite header, carries our ``application_id`` and
``user_version``, holds our tables and passes ``PRAGMA quick_check``. A file that fails any of
that raises :class:`BufferCorruptError`; a file that cannot be opened or written at all (missing
or read-only directory, disk full, I/O error) raises :class:`BufferWriteError`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from gateway.errors import BufferCorruptError, BufferWriteError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x53475742  # "SGWB"
SCHEMA_VERSION = 1
PAGE_SIZE = 4096
SQLITE_HEADER = b"SQLite format 3\x00"
TABLES = {"readings", "alarms", "gaps", "meta"}
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# After these the connection is not worth keeping: reopen (and re-check) the file.
BROKEN_CODES = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, *_CORRUPT_CODES}

_SCHEMA = [
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
    "CREATE TABLE readings (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE alarms (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE gaps (gap_id INTEGER PRIMARY KEY AUTOINCREMENT, from_seq INTEGER NOT NULL,"
    " to_seq INTEGER NOT NULL, count INTEGER NOT NULL, reason TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
]


T = TypeVar("T")


async def on_connection_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: object) -> T:
    """``fn(connection, *args)`` run on the connection's own thread: one round trip.

    aiosqlite sends each statement to its thread on its own, and every trip wakes two threads
    (~50-100 us of CPU on a small VM); a transaction of five statements run as one function
    costs one trip instead of five. aiosqlite has no public call for this: ``_execute`` is what
    its own methods use (pinned to aiosqlite 0.22.x in pyproject.toml; every commit of every
    buffer test goes through here).
    """
    result: T = await db._execute(fn, db._conn)  # type: ignore[no-untyped-call]
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
        mode = await scalar(db, "PRAGMA journal_mode = WAL")
        if mode != "wal":
            raise BufferWriteError(f"{path}: cannot switch to WAL mode (got {mode})")
        await db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            await db.execute(statement)
        await db.execute("COMMIT")
        return True
    version = await scalar(db, "PRAGMA user_version")
    if app_id != APPLICATION_ID or version != SCHEMA_VERSION or not tables >= TABLES:
        raise BufferCorruptError(
            f"{path} is not a street-gateway buffer (application_id {app_id:#x},"
            f" user_version {version}, tables {sorted(tables)})"
        )
    check = [row[0] for row in await db.execute_fetchall("PRAGMA quick_check")]
    if check != ["ok"]:
        raise BufferCorruptError(f"{path} failed quick_check: {'; '.join(check[:3])}")
    mode = await scalar(db, "PRAGMA journal_mode = WAL")
    if mode != "wal":
        raise BufferWriteError(f"{path}: cannot switch to WAL mode (got {mode})")
    return False


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
