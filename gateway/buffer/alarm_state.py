"""Each alarm rule's last state (raised or cleared): where a new alarm engine starts from.

The state changes in memory when an alarm event is put, and goes to the ``alarm_state`` table
in the commit that writes the event (so a rule's state and its event are restored together).
An alarm acknowledged before its commit is never written to the ``alarms`` table, but its rule's
state still goes to disk with the next commit. At the first open the states are read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import aiosqlite

from gateway.model import AlarmEvent

AlarmTransition = tuple[int, str, str, int]  # seq, alarm, state, ts_ms


@dataclass(frozen=True, slots=True)
class AlarmStateWrite:
    """The states one commit writes; run inside its transaction on the connection's thread."""

    acked: list[AlarmTransition]  # acknowledged before their commit (given back on failure)
    rows: list[tuple[str, str, int]]  # (alarm, state, ts_ms) in seq order: the last one wins

    def __call__(self, conn: sqlite3.Connection) -> None:
        if self.rows:
            conn.executemany(
                "INSERT OR REPLACE INTO alarm_state (alarm, state, ts_ms) VALUES (?,?,?)",
                self.rows,
            )


class AlarmStates:
    """The alarm rules' states, in memory and on their way to the file."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}  # alarm name -> "raised" | "cleared"
        self._acked: list[AlarmTransition] = []

    def put(self, event: AlarmEvent) -> None:
        self._states[event.alarm] = event.state

    def acked_unwritten(self, seq: int, ts_ms: int, event: AlarmEvent) -> None:
        """An alarm was acknowledged before its commit: its state still goes to disk."""
        self._acked.append((seq, event.alarm, event.state, ts_ms))

    @property
    def unwritten(self) -> bool:
        """States of acknowledged alarms wait for a commit."""
        return bool(self._acked)

    def raised(self) -> set[str]:
        return {alarm for alarm, state in self._states.items() if state == "raised"}

    def take(self, committed: Iterable[tuple[int, int, AlarmEvent]]) -> AlarmStateWrite:
        """The states of one commit: its alarms ``(seq, ts_ms, event)`` and those acknowledged
        before their commit, in seq order."""
        acked, self._acked = self._acked, []
        events = [(seq, e.alarm, e.state, ts) for seq, ts, e in committed]
        rows = [(alarm, state, ts) for _, alarm, state, ts in sorted([*acked, *events])]
        return AlarmStateWrite(acked, rows)

    def put_back(self, write: AlarmStateWrite) -> None:
        """The commit failed: its acknowledged alarms' states go with the next one."""
        self._acked[:0] = write.acked

    async def load(self, db: aiosqlite.Connection) -> None:
        """Read back the committed states (at the first open)."""
        rows = await db.execute_fetchall("SELECT alarm, state FROM alarm_state")
        self._states = {str(alarm): str(state) for alarm, state in rows}
