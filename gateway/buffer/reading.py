"""The buffer's queries on its file: stored items, gaps, counts and the oldest row.

Each is one statement on the open connection; the buffer holds its lock around them and maps
their errors. Marking a gap sent is the one write here (it needs no commit of its own).
"""

from __future__ import annotations

import aiosqlite

from gateway.buffer import codec
from gateway.model import Gap, Lane, StoredItem

_ITEMS = {
    Lane.SAMPLE: "SELECT seq, ts_ms, device, vals, flags FROM samples"
    " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
    Lane.ALARM: "SELECT seq, ts_ms, alarm, state, value, priority, body FROM alarms"
    " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
}


async def items(
    db: aiosqlite.Connection, lane: Lane, after_seq: int, up_to: int, limit: int
) -> list[StoredItem]:
    """The stored items of ``lane`` with ``after_seq < seq <= up_to``, in seq order."""
    rows = await db.execute_fetchall(_ITEMS[lane], (after_seq, up_to, limit))
    decode = codec.sample_from_row if lane is Lane.SAMPLE else codec.alarm_from_row
    return [StoredItem(row[0], lane, row[1], decode(*row[1:])) for row in rows]


async def unsent_gaps(db: aiosqlite.Connection) -> list[Gap]:
    """Gaps recorded and not yet acknowledged, oldest first."""
    rows = await db.execute_fetchall(
        "SELECT gap_id, from_seq, to_seq, count, reason FROM gaps WHERE acked = 0 ORDER BY gap_id"
    )
    return [Gap(gid, a, b, n, reason) for gid, a, b, n, reason in rows]


async def mark_gap_sent(db: aiosqlite.Connection, gap_id: int) -> None:
    await db.execute("UPDATE gaps SET acked = 1 WHERE gap_id = ?", (gap_id,))


async def row_counts(db: aiosqlite.Connection) -> tuple[int, int]:
    """(samples, alarms) stored."""
    rows = await db.execute_fetchall(
        "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM alarms)"
    )
    samples, alarms = next(iter(rows))
    return int(samples), int(alarms)


async def oldest_ts(db: aiosqlite.Connection) -> int | None:
    """The timestamp of the stored item with the lowest seq; None when none is stored."""
    rows = await db.execute_fetchall(
        "SELECT (SELECT seq FROM samples ORDER BY seq LIMIT 1),"
        " (SELECT ts_ms FROM samples ORDER BY seq LIMIT 1),"
        " (SELECT seq FROM alarms ORDER BY seq LIMIT 1),"
        " (SELECT ts_ms FROM alarms ORDER BY seq LIMIT 1)"
    )
    s_seq, s_ts, a_seq, a_ts = next(iter(rows))
    if s_seq is None and a_seq is None:
        return None
    if s_seq is None or (a_seq is not None and a_seq < s_seq):
        return int(a_ts)
    return int(s_ts)


async def committed_last_seq(db: aiosqlite.Connection) -> int:
    """``meta.last_seq`` as the file has it."""
    rows = await db.execute_fetchall("SELECT value FROM meta WHERE key = 'last_seq'")
    return int(next(iter(rows))[0])
