"""One commit's transaction, run whole on the connection's thread (``store.on_connection_thread``).

Insert the new rows, delete the acknowledged runs, write the alarm rules' states and the
status events, move ``meta`` on; rolled back on any error. The buffer decides what goes in.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

from gateway.buffer import codec
from gateway.buffer.acks import Acks
from gateway.buffer.alarm_state import AlarmStates, AlarmStateWrite
from gateway.buffer.journal import Journal, JournalWrite
from gateway.buffer.pending import Queued
from gateway.buffer.runs import Run
from gateway.buffer.seals import SealWrite
from gateway.model import AlarmEvent, CommandResult, Lane, Sample

TABLE = {Lane.ALARM: "alarms", Lane.SAMPLE: "samples"}


@dataclass(frozen=True, slots=True)
class CommitTransaction:
    """Returns the rows deleted per lane."""

    samples: list[codec.SampleRow]
    alarms: list[codec.AlarmRow]
    runs: list[Run]
    counted: dict[Lane, int]  # of the acknowledged, those already out of the counts
    delete_alarms: bool  # False when no alarm row can be among the acknowledged
    meta: list[tuple[int, str]]  # (value, key)
    alarm_states: AlarmStateWrite  # each rule's state goes with its event: restored together
    journal: JournalWrite
    seals: SealWrite | None = None  # the settled items' leaves, and a seal when one is due

    @classmethod
    def take(
        cls,
        batch: list[Queued],
        *,
        stored_ms: int,
        settled: int,
        alarms_held: int,
        acks: Acks,
        alarm_states: AlarmStates,
        journal: Journal,
        seals: SealWrite | None = None,
        move_meta: bool = True,
    ) -> CommitTransaction:
        """One commit of ``batch``, with what waits for a commit taken from ``acks``,
        ``alarm_states`` and ``journal`` (:meth:`give_back` returns it after a failure);
        ``move_meta=False`` leaves ``meta`` as it is (see ``Buffer._commit_batch``)."""
        samples, alarms = rows(batch, stored_ms)  # first: it is the part that could raise
        runs, counted = acks.take()
        return cls(
            samples,
            alarms,
            runs,
            counted,
            delete_alarms=bool(alarms_held or counted[Lane.ALARM]),
            meta=[(settled, "last_seq"), (stored_ms, "max_stored_ms")] if move_meta else [],
            alarm_states=alarm_states.take(
                (seq, ts, item) for seq, _, ts, item in batch if isinstance(item, AlarmEvent)
            ),
            journal=journal.take(),
            seals=seals,
        )

    def give_back(self, acks: Acks, alarm_states: AlarmStates, journal: Journal) -> None:
        acks.put_back(self.runs, self.counted)
        alarm_states.put_back(self.alarm_states)
        journal.put_back(self.journal)

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
                    "INSERT INTO alarms"
                    " (seq, ts_ms, stored_ms, alarm, state, value, priority, body)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    self.alarms,
                )
            if self.runs and self.seals is not None:
                self.seals.before_delete(conn, self.runs)
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
            if self.seals is not None:
                self.seals(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return deleted


def rows(batch: list[Queued], stored_ms: int) -> tuple[list[codec.SampleRow], list[codec.AlarmRow]]:
    """The rows of ``batch`` to insert: samples, alarms."""
    samples = [
        codec.sample_row(seq, stored_ms, item)
        for seq, _, _, item in batch
        if isinstance(item, Sample)
    ]
    alarms = [
        codec.alarm_row(seq, stored_ms, item)
        for seq, _, _, item in batch
        if isinstance(item, AlarmEvent | CommandResult)
    ]
    return samples, alarms
