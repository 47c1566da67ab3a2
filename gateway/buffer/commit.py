"""One commit's transaction, run whole on the connection's thread (``store.on_connection_thread``).

Insert the new rows, delete the acknowledged runs, write the alarm rules' states and the
status events, move ``meta`` on; rolled back on any error. The buffer decides what goes in.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

from gateway.buffer import codec
from gateway.buffer.alarm_state import AlarmStateWrite
from gateway.buffer.journal import JournalWrite
from gateway.buffer.runs import Run
from gateway.model import Lane

TABLE = {Lane.ALARM: "alarms", Lane.SAMPLE: "samples"}


@dataclass(frozen=True, slots=True)
class CommitTransaction:
    """Returns the rows deleted per lane."""

    samples: list[codec.SampleRow]
    alarms: list[codec.AlarmRow]
    runs: list[Run]
    delete_alarms: bool  # False when no alarm row can be among the acknowledged
    meta: list[tuple[int, str]]  # (value, key)
    alarm_states: AlarmStateWrite  # each rule's state goes with its event: restored together
    journal: JournalWrite

    def __call__(self, conn: sqlite3.Connection) -> dict[Lane, int]:
        deleted = dict.fromkeys(Lane, 0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if self.samples:
                conn.executemany(
                    "INSERT INTO samples (seq, ts_ms, stored_ms, device, vals, flags)"
                    " VALUES (?,?,?,?,?,?)",
                    self.samples,
                )
            if self.alarms:
                conn.executemany(
                    "INSERT INTO alarms (seq, ts_ms, stored_ms, alarm, state, value, priority)"
                    " VALUES (?,?,?,?,?,?,?)",
                    self.alarms,
                )
            if self.runs:
                for lane in (Lane.SAMPLE, Lane.ALARM) if self.delete_alarms else (Lane.SAMPLE,):
                    cursor = conn.executemany(
                        f"DELETE FROM {TABLE[lane]} WHERE seq BETWEEN ? AND ?", self.runs
                    )
                    deleted[lane] = cursor.rowcount
            self.alarm_states(conn)
            if self.meta:
                conn.executemany("UPDATE meta SET value = ? WHERE key = ?", self.meta)
            self.journal(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return deleted
