"""Seals in the buffer: the leaves of settled items, and the seals decided from them.

A seal covers seqs ``from_seq..to_seq`` once each of them is published and acknowledged or
declared in a gap (SPEC "Identity and seals"). The buffer knows that without asking the uplink:
the rows left in the file are exactly the items not yet acknowledged. So the leaves of the
acknowledged items are stored in the transaction that settles them: an acknowledged row's leaf
is computed from the row in the commit that deletes it, an item acknowledged before its commit
(never written) gets its leaf in the commit that moves ``meta.last_seq`` past it. A backlog costs
no leaf until it is sent, and a seq at or below ``last_seq`` that is acknowledged always has its
leaf stored: a kill -9 leaves nothing unsealed, since what was published and not committed is
declared an ``unclean_shutdown`` gap at the restart, which represents those seqs in the seal.

A seal is decided in a commit too (:class:`SealWrite`), when ``security.seal_interval`` has
passed or :data:`~gateway.seals.seal.MAX_LEAVES` seqs wait: from the last sealed seq up to the
first seq still held, its leaves in seq order (a gap one leaf at its ``from_seq``, from
``sealed_gaps``, which a trigger fills whatever records the gap), signed, stored in ``seals``, its
leaves deleted. A seq with neither leaf nor gap (what a v0.2 file sent before it had seals) is one
``unsealed: crash`` leaf, listed in the seal's ``unsealed``. A leaf that cannot be computed never
fails the commit: its seq is then sealed that way too, and logged.

What the SD card pays (SPEC "Bytes and the SD card"): with the link up nothing commits between
seals, so the leaves of the items acknowledged since the last seal are held in memory and go
straight into the seal that the next commit decides; only the leaves it does not cover are
stored. A seal sent is marked so in the next commit, not in one of its own (after a crash it is
sent again: the same bytes, which a verifier takes once). The price is coverage after a kill -9:
the items acknowledged and never committed since the last seal (at most ``seal_interval`` of
them) have no leaf left, and the next seal covers them with an ``unsealed: crash`` leaf. Keeping
their leaves on disk would cost a write per commit-less acknowledgement, the very writes the
settled mark saves.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from gateway.buffer import codec
from gateway.errors import BufferUnsafeError
from gateway.keys import SigningKey
from gateway.model import Gap, Item
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, MAX_LEAVES, SealInput, chain_hash, make_seal

log = logging.getLogger(__name__)

HASH = 32
_ROWS = {
    "samples": "SELECT seq, ts_ms, device, vals, flags FROM samples WHERE seq BETWEEN ? AND ?",
    "alarms": "SELECT seq, ts_ms, alarm, state, value, priority FROM alarms"
    " WHERE seq BETWEEN ? AND ?",
}
Held = tuple[int, Item]
LeafRun = tuple[int, int, bytes]  # from_seq, to_seq, their leaf hashes end to end


@dataclass(frozen=True, slots=True)
class Sealer:
    """Who seals and how often (``security``)."""

    gateway: str
    key: SigningKey
    interval_s: float


@dataclass(slots=True)
class SealFigures:
    """What ``/status`` and ``/metrics`` say of the seals."""

    made_total: int = 0
    last_n: int = 0
    last_ts: int | None = None
    unsealed_seqs_total: int = 0  # seqs sealed as ``unsealed`` (crash) ranges
    sealed_to: int = 0


@dataclass(slots=True)
class SealWrite:
    """The seal part of one commit's transaction (run on the connection's thread)."""

    sealer: Sealer | None
    held: list[Held]
    settled: int
    due: bool
    n: int
    sealed_to: int
    prev: str
    now_ms: int
    sent: list[int] = field(default_factory=list)  # seals acknowledged since the last commit
    made: dict[str, Any] | None = None
    unsealed: int = 0
    from_memory: int = 0  # held[:from_memory] came from memory (given back after a failure)

    def __post_init__(self) -> None:
        self.from_memory = len(self.held)

    def before_delete(self, conn: sqlite3.Connection, runs: list[tuple[int, int]]) -> None:
        """The leaves of the acknowledged rows about to be deleted (same transaction)."""
        if self.sealer is None:
            return
        for first, last in runs:
            for seq, *row in conn.execute(_ROWS["samples"], (first, last)):
                self.held.append((seq, codec.sample_from_row(*row)))
            for seq, *row in conn.execute(_ROWS["alarms"], (first, last)):
                self.held.append((seq, codec.alarm_from_row(*row)))

    def __call__(self, conn: sqlite3.Connection) -> None:
        if self.sealer is None:  # seals off: say so, so that seals on again start afresh
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seals_off', 1)")
            return
        if self.sent:
            _mark_sent(conn, self.sent)
        fresh = _leaf_runs(self.held)
        if self.due or self.settled - self.sealed_to >= MAX_LEAVES:
            self.made = self._decide(conn, self.sealer, fresh)
            if self.made is not None:  # what the seal covered needs no row
                fresh = _runs_after(fresh, int(self.made["to_seq"]))
        conn.executemany(
            "INSERT OR REPLACE INTO leaves (from_seq, to_seq, hashes) VALUES (?, ?, ?)", fresh
        )

    def _decide(
        self, conn: sqlite3.Connection, sealer: Sealer, fresh: list[LeafRun]
    ) -> dict[str, Any] | None:
        low = conn.execute(
            "SELECT min(s) FROM (SELECT min(seq) AS s FROM samples WHERE seq > ?1"
            " UNION ALL SELECT min(seq) FROM alarms WHERE seq > ?1)",
            (self.sealed_to,),
        ).fetchone()[0]
        end = self.settled if low is None else min(self.settled, low - 1)
        if end <= self.sealed_to:
            return None
        leaves, unsealed, to_seq = _walk(conn, self.sealed_to, end, fresh)
        if not leaves:
            return None
        seal = make_seal(
            sealer.gateway,
            sealer.key,
            SealInput(self.n, self.sealed_to + 1, to_seq, leaves, unsealed, self.prev, self.now_ms),
        )
        conn.execute(
            "INSERT INTO seals (n, to_seq, body) VALUES (?, ?, ?)",
            (self.n, to_seq, json.dumps(seal, separators=(",", ":"))),
        )
        _drop_leaves(conn, to_seq)
        conn.execute("DELETE FROM sealed_gaps WHERE to_seq <= ?", (to_seq,))
        # where sealing goes on is the last seal's to_seq (one page written: the seal's)
        self.unsealed = sum(d - c + 1 for c, d in unsealed)
        return seal


def _set_sealed_to(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed_to', ?)", (seq,))


def _leaf_runs(held: list[Held]) -> list[LeafRun]:
    """The leaves of ``held`` as runs of consecutive seqs, each run's hashes end to end (the
    rows of ``leaves``)."""
    rows: list[LeafRun] = []
    run: list[bytes] = []
    first = last = 0
    for seq, item in sorted(held, key=lambda h: h[0]):
        if run and seq != last + 1:
            rows.append((first, last, b"".join(run)))
            run = []
        if not run:
            first = seq
        try:
            run.append(items.stored_leaf(seq, item))
        except Exception:  # never fail the commit: the seq is sealed as unsealed
            log.exception("seals: no leaf for seq %d", seq)
            if run:
                rows.append((first, last, b"".join(run)))
            run = []
            continue
        last = seq
    if run:
        rows.append((first, last, b"".join(run)))
    return rows


def _runs_after(runs: list[LeafRun], to_seq: int) -> list[LeafRun]:
    """What of ``runs`` lies past ``to_seq``."""
    return [
        (max(first, to_seq + 1), last, hashes[max(0, to_seq + 1 - first) * HASH :])
        for first, last, hashes in runs
        if last > to_seq
    ]


def _mark_sent(conn: sqlite3.Connection, ns: list[int]) -> None:
    """Mark seals sent; keep only the last seal once sent (its hash chains the next)."""
    conn.executemany("UPDATE seals SET sent = 1 WHERE n = ?", [(n,) for n in ns])
    conn.execute("DELETE FROM seals WHERE sent = 1 AND n < (SELECT max(n) FROM seals)")


def _walk(
    conn: sqlite3.Connection, sealed_to: int, end: int, fresh: list[LeafRun]
) -> tuple[list[bytes], list[tuple[int, int]], int]:
    """The leaves of seqs ``sealed_to + 1`` up to at most ``end`` (at most MAX_LEAVES, never
    splitting a gap), from the stored runs and the ``fresh`` ones of this commit, the crash
    ranges among them, and the last seq covered."""
    gaps = collections.deque(
        conn.execute(
            "SELECT from_seq, to_seq, reason FROM sealed_gaps WHERE to_seq > ? AND from_seq <= ?"
            " ORDER BY from_seq",
            (sealed_to, end),
        ).fetchall()
    )
    stored = conn.execute(
        "SELECT from_seq, to_seq, hashes FROM leaves WHERE to_seq > ? AND from_seq <= ?",
        (sealed_to, end),
    ).fetchall()
    runs: Iterator[LeafRun] = iter(
        sorted(
            [*stored, *(r for r in fresh if r[1] > sealed_to and r[0] <= end)],
            key=lambda r: r[0],
        )
    )
    run = next(runs, None)
    leaves: list[bytes] = []
    unsealed: list[tuple[int, int]] = []
    cur = sealed_to + 1
    while cur <= end and len(leaves) < MAX_LEAVES:
        if gaps and gaps[0][0] <= cur:
            first, to, reason = gaps.popleft()
            if to < cur:
                continue
            if to > end:
                break  # a gap lies wholly inside one seal: the next one takes it
            leaves.append(items.gap_leaf(Gap(0, first, to, to - first + 1, reason)))
            cur = to + 1
            continue
        while run is not None and run[1] < cur:
            run = next(runs, None)
        if run is not None and run[0] <= cur:
            offset = (cur - run[0]) * HASH
            leaves.append(run[2][offset : offset + HASH])
            cur += 1
            continue
        stop = min(end, gaps[0][0] - 1 if gaps else end, run[0] - 1 if run else end)
        leaves.append(items.crash_leaf(cur, stop))
        unsealed.append((cur, stop))
        cur = stop + 1
    return leaves, unsealed, cur - 1


def _drop_leaves(conn: sqlite3.Connection, to_seq: int) -> None:
    """Delete the sealed leaves; a run that goes on past ``to_seq`` keeps its rest."""
    straddling = conn.execute(
        "SELECT from_seq, to_seq, hashes FROM leaves WHERE from_seq <= ?1 AND to_seq > ?1",
        (to_seq,),
    ).fetchall()
    conn.execute("DELETE FROM leaves WHERE from_seq <= ?", (to_seq,))
    conn.executemany(
        "INSERT INTO leaves (from_seq, to_seq, hashes) VALUES (?, ?, ?)",
        [
            (to_seq + 1, last, hashes[(to_seq + 1 - first) * HASH :])
            for first, last, hashes in straddling
        ],
    )


@dataclass
class SealState:
    """The buffer's side: what waits for a commit, and the seals to send."""

    sealer: Sealer | None
    held: dict[int, Item] = field(default_factory=dict)  # acked, not committed
    n: int = 1  # the next seal's
    prev: str = FIRST_PREV
    figures: SealFigures = field(default_factory=SealFigures)
    unsent: list[tuple[int, bytes]] = field(default_factory=list)  # (n, payload), oldest first
    sent_marks: list[int] = field(default_factory=list)  # sent, marked so by the next commit
    last_try_t: float = field(default_factory=time.monotonic)
    marked_off: bool = False  # seals off, and the file says so
    made: Callable[[], None] = lambda: None  # a seal is stored: wake the uplink

    async def load(self, db: aiosqlite.Connection, path: object) -> None:
        """Where sealing goes on; BufferUnsafeError when the last seal's row is damaged.

        With seals off (``seal_interval: 0``) commits do nothing for seals; the file is marked
        so, and when seals are on again they start at the first seq still held, as after an
        upgrade (what was sent meanwhile is not sealed)."""
        if self.sealer is None:
            return  # the first commit marks the file (SealWrite), nothing is read
        meta = await _meta(db)
        if "seals_off" in meta:
            await _seal_from_first_held(db)
            meta = await _meta(db)
        seals = list(
            await db.execute_fetchall("SELECT n, to_seq, body, sent FROM seals ORDER BY n")
        )
        # meta says it after an upgrade or seals off; the last seal, once there is one
        sealed_to = max([int(meta.get("sealed_to", 0)), *(int(row[1]) for row in seals)])
        self.unsent = []
        for n, _, body, sent in seals:
            if not sent:
                self.unsent.append((int(n), str(body).encode()))
        if seals:
            n = int(seals[-1][0])
            try:
                last = json.loads(seals[-1][2])
                if not isinstance(last, dict) or last.get("n") != n:
                    last = {}  # not the seal its row says: no "ts" below
                self.prev = chain_hash(last)
                self.figures.last_n, self.figures.last_ts = n, int(last["ts"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BufferUnsafeError(
                    f"{path}: seal {n} in the buffer is damaged ({exc}); the next seal cannot "
                    "chain to it: refusing to start, the file is untouched"
                ) from None
            self.n = n + 1
        self.figures.sealed_to = sealed_to

    def hold(self, seq: int, item: Item) -> None:
        """An item acknowledged before its commit: its leaf goes with the commit settling it."""
        if self.sealer is not None:
            self.held[seq] = item

    def due_now(self, settled: int) -> bool:
        due = self.due(settled, time.monotonic())
        return due is not None and due <= time.monotonic()

    def due(self, settled: int, now_t: float) -> float | None:
        """When the next seal is due (monotonic), or None while there is nothing to seal."""
        if self.sealer is None or self.sealer.interval_s <= 0:
            return None
        if settled <= self.figures.sealed_to:
            return None
        if len(self.held) >= MAX_LEAVES:  # the leaves waiting in memory: a commit takes them
            return now_t
        if settled - self.figures.sealed_to >= MAX_LEAVES:
            # at once (SPEC); tried at most once a second while a row still held keeps the seal
            # from covering them
            return self.last_try_t + min(1.0, self.sealer.interval_s)
        return self.last_try_t + self.sealer.interval_s

    def take(self, settled: int, now_ms: int) -> SealWrite | None:
        if self.sealer is None:  # nothing, but in the first commit after the open
            if self.marked_off:
                return None
            return SealWrite(None, [], settled, False, self.n, 0, self.prev, now_ms)
        held = [(seq, item) for seq, item in self.held.items() if seq <= settled]
        for seq, _ in held:
            del self.held[seq]
        due_at = self.due(settled, time.monotonic())
        due = due_at is not None and due_at <= time.monotonic()
        if due:
            self.last_try_t = time.monotonic()
        sent, self.sent_marks = self.sent_marks, []
        return SealWrite(
            self.sealer,
            held,
            settled,
            due,
            self.n,
            self.figures.sealed_to,
            self.prev,
            now_ms,
            sent,
        )

    def give_back(self, write: SealWrite | None) -> None:
        if write is None:
            return
        self.sent_marks = [*write.sent, *self.sent_marks]
        for seq, item in write.held[: write.from_memory]:
            if seq not in self.held:
                self.held[seq] = item

    def committed(self, write: SealWrite | None) -> None:
        if write is not None and write.sealer is None:
            self.marked_off = True
        seal = None if write is None else write.made
        if write is None or seal is None:
            return
        self.unsent.append((int(seal["n"]), json.dumps(seal, separators=(",", ":")).encode()))
        self.made()
        self.n, self.prev = int(seal["n"]) + 1, chain_hash(seal)
        figures = self.figures
        figures.made_total += 1
        figures.last_n, figures.last_ts = int(seal["n"]), int(seal["ts"])
        figures.sealed_to = int(seal["to_seq"])
        figures.unsealed_seqs_total += write.unsealed

    def sent(self, n: int) -> None:
        """Seal ``n`` is acknowledged: not sent again, and marked so in the file by the next
        commit (a crash before it sends it again)."""
        self.unsent = [(m, body) for m, body in self.unsent if m != n]
        if self.sealer is not None:
            self.sent_marks.append(n)


async def _meta(db: aiosqlite.Connection) -> dict[str, int]:
    return {str(k): int(v) for k, v in await db.execute_fetchall("SELECT key, value FROM meta")}


async def _seal_from_first_held(db: aiosqlite.Connection) -> None:
    """Seals back on after a time off: start at the first seq still held."""
    (first_held,) = next(iter(await db.execute_fetchall(_FIRST_HELD)))
    (last,) = next(iter(await db.execute_fetchall(_LAST_SEQ)), (0,))
    sealed_to = int(last) if first_held is None else int(first_held) - 1
    await db.execute("BEGIN IMMEDIATE")
    await db.execute("DELETE FROM sealed_gaps WHERE to_seq <= ?", (sealed_to,))
    await db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed_to', ?)", (sealed_to,)
    )
    await db.execute("DELETE FROM meta WHERE key = 'seals_off'")
    await db.execute("COMMIT")


_FIRST_HELD = (
    "SELECT min(s) FROM (SELECT min(seq) AS s FROM samples UNION ALL SELECT min(seq) FROM alarms)"
)
_LAST_SEQ = "SELECT value FROM meta WHERE key = 'last_seq'"


def migrate_v2(conn: sqlite3.Connection) -> None:
    """v0.2 -> v0.3: sealing starts at the first seq still held (the held items get their leaves
    when they are acknowledged; what v0.2 sent before had none kept, and stays unsealed); the
    gaps not yet behind it become sealable."""
    last = conn.execute(_LAST_SEQ).fetchone()
    first_held = conn.execute(_FIRST_HELD).fetchone()[0]
    sealed_to = (int(last[0]) if last else 0) if first_held is None else int(first_held) - 1
    conn.execute(
        "INSERT INTO sealed_gaps (from_seq, to_seq, reason) SELECT from_seq, to_seq, reason"
        " FROM gaps WHERE from_seq > ?",
        (sealed_to,),
    )
    _set_sealed_to(conn, sealed_to)
