"""The audit's SQLite state file: one row per gateway, rewritten when the gateway changed.

A row holds the gateway's range sets as JSON lists of ``[lo, hi, lo, hi, ...]``, so a write
costs the number of ranges, not of samples. Writes are batched: the consumer applies every
message it has, then ``save`` commits the changed rows in one transaction (WAL,
``synchronous=FULL``: a committed batch survives a power cut), and only then are the messages
acknowledged to the broker.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import aiosqlite

from gateway.audit import seal_rows
from gateway.audit.ledger import Fleet, GatewayLedger, Hole
from gateway.audit.ranges import RangeSet
from gateway.audit.seals import SealBook
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway (
    id TEXT PRIMARY KEY,
    received TEXT NOT NULL,
    duplicated TEXT NOT NULL,
    gaps TEXT NOT NULL,
    covered TEXT NOT NULL,
    holes TEXT NOT NULL,
    max_seq INTEGER NOT NULL,
    online INTEGER,
    status_ts INTEGER,
    last_seen_ts INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_UPSERT = "INSERT OR REPLACE INTO gateway VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class AuditStateError(GatewayError):
    """The audit's state file cannot be opened, read or written."""


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/street-gateway/audit.db``, else ``~/.local/state/street-gateway/...``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "street-gateway" / "audit.db"


def ledger_row(led: GatewayLedger) -> tuple[object, ...]:
    return (
        led.id,
        json.dumps(led.received.to_flat()),
        json.dumps(led.duplicated.to_flat()),
        json.dumps({reason: r.to_flat() for reason, r in sorted(led.gaps.items())}),
        json.dumps(led.covered.to_flat()),
        json.dumps([[h.from_seq, h.to_seq, h.first_seen_ms] for h in led.holes]),
        led.max_seq,
        None if led.online is None else int(led.online),
        led.status_ts,
        led.last_seen_ts,
    )


def ledger_from_row(row: sqlite3.Row | tuple[object, ...]) -> GatewayLedger:
    gid, received, duplicated, gaps, covered, holes, max_seq, online, status_ts, seen = row
    return GatewayLedger(
        id=str(gid),
        received=RangeSet.from_flat(json.loads(str(received))),
        duplicated=RangeSet.from_flat(json.loads(str(duplicated))),
        gaps={k: RangeSet.from_flat(v) for k, v in json.loads(str(gaps)).items()},
        covered=RangeSet.from_flat(json.loads(str(covered))),
        holes=[Hole(a, b, t) for a, b, t in json.loads(str(holes))],
        max_seq=int(str(max_seq)),
        online=None if online is None else bool(online),
        status_ts=None if status_ts is None else int(str(status_ts)),
        last_seen_ts=None if seen is None else int(str(seen)),
    )


class AuditStore:
    """``async with AuditStore(path) as store``: ``load()`` once, then ``save(fleet)`` per batch."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> AuditStore:
        try:
            if self.readonly:
                self._db = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = await aiosqlite.connect(self.path)
                await self._db.execute("PRAGMA journal_mode=WAL")
                await self._db.execute("PRAGMA synchronous=FULL")
                # Nothing here needs scrubbing (seqs, and hashes of published items), and zeroing
                # every freed page made `--keys` write 1.6 times the bytes (docs/audit.md)
                await self._db.execute("PRAGMA secure_delete=OFF")
                await self._db.executescript(SCHEMA + seal_rows.SCHEMA)
                await self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            await self._close()
            raise AuditStateError(f"{self.path}: cannot open the audit state: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise AuditStateError("the audit state is not open")
        return self._db

    async def load(
        self, prefix: str, factory: Callable[[str], Fleet] = Fleet, seals: SealBook | None = None
    ) -> Fleet:
        """The fleet as last saved; with ``seals`` (``--keys``), the seals' record too."""
        fleet = factory(prefix)
        fleet.seals = seals
        try:
            async with self.db.execute("SELECT * FROM gateway") as cursor:
                async for row in cursor:
                    led = ledger_from_row(tuple(row))
                    fleet.gateways[led.id] = led
            async with self.db.execute("SELECT key, value FROM meta") as cursor:
                meta = {str(k): str(v) async for k, v in cursor}
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise AuditStateError(f"{self.path}: unreadable audit state: {exc}") from exc
        stored_prefix = meta.get("prefix")
        if stored_prefix is not None and stored_prefix != prefix and fleet.gateways:
            log.warning("%s holds prefix %r, not %r", self.path, stored_prefix, prefix)
        fleet.prefix = stored_prefix if self.readonly and stored_prefix else prefix
        fleet.rejected = int(meta.get("rejected", "0"))
        fleet.last_rejected = meta.get("last_rejected")
        fleet.restore_meta(meta)
        if fleet.seals is not None:
            await self._load_seals(fleet, meta)
        return fleet

    async def _load_seals(self, fleet: Fleet, meta: dict[str, str]) -> None:
        """``audit --keys``: the seals' figures and the leaves waiting for their seal."""
        seals = fleet.seals
        assert seals is not None
        try:
            async with self.db.execute("SELECT id, doc FROM seal_gateway") as cursor:
                async for gid, doc in cursor:
                    seals.gateways[str(gid)] = seal_rows.gateway_from_doc(str(gid), str(doc))
            async with self.db.execute("SELECT gateway, first_seq, leaves FROM seal_leaves") as cur:
                async for gid, first, blob in cur:
                    seals.gateways[str(gid)].leaves.load(int(first), bytes(blob))
            seal_rows.restore_meta(seals, meta)
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise AuditStateError(
                f"{self.path}: unreadable seals in the audit state: {exc}"
            ) from exc

    async def save(self, fleet: Fleet) -> None:
        """Commit every gateway changed since the last save, in one transaction.

        The rows are taken before the first await: what the ledger takes in while the commit
        runs (the consumer folds messages in as they arrive) stays dirty for the next save.
        """
        seals = fleet.seals
        if (
            not fleet.dirty
            and not fleet.meta_dirty
            and not (seals and seals.dirty | seals.leaves_dirty)
        ):
            return
        dirty, fleet.dirty = fleet.dirty, set()
        fleet.meta_dirty = False
        rows = [ledger_row(fleet.gateways[gid]) for gid in sorted(dirty)]
        meta = [("prefix", fleet.prefix), ("rejected", str(fleet.rejected))]
        if fleet.last_rejected is not None:
            meta.append(("last_rejected", fleet.last_rejected))
        meta += fleet.extra_meta().items()
        books, runs, deleted = seal_rows.take_rows(seals) if seals else ([], [], [])
        if seals:
            meta += seal_rows.meta(seals)
        try:
            await self.db.executemany(_UPSERT, rows)
            await self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            await self.db.executemany(seal_rows.UPSERT_GATEWAY, books)
            await self.db.executemany(seal_rows.DELETE_RUN, deleted)
            await self.db.executemany(seal_rows.UPSERT_RUN, runs)
            await self.db.commit()
        except sqlite3.Error as exc:
            fleet.dirty |= dirty
            fleet.meta_dirty = True
            if seals:
                seal_rows.give_back(seals, books, runs, deleted)
            raise AuditStateError(f"{self.path}: cannot write the audit state: {exc}") from exc
