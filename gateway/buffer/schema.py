"""The buffer file's schema, its version and the migrations between versions.

The version is SQLite's ``PRAGMA user_version``; ``application_id`` says the file is ours. Each
migration is one function ``vN -> vN+1``, run on the connection's thread inside the one
transaction that also sets the new ``user_version``: a kill -9 in the middle leaves the old
file as it was (SQLite rolls the transaction back at the next open), so the next start simply
migrates again. Every stored item keeps its seq; nothing is re-sequenced.

History:

- v1 (street-gateway 0.1): ``readings`` and ``alarms``, each row's final JSON in ``body``.
- v2 (0.2): ``samples`` in a neutral form (:mod:`gateway.buffer.codec`); ``alarms`` as
  columns; ``alarm_state``, each rule's last committed state; ``events``, the last day's. A
  v0.1 reading becomes a one-value sample with the reading's seq.
- v3 (0.3): command results share the alarms' table and lane (``state`` 'result', the
  result's JSON in the new ``body`` column); ``command_ids``, the commands already answered
  (replays are refused across restarts, a redelivery gets its first result again); seals
  (:mod:`gateway.buffer.seals`): ``leaves``, the leaf hashes of settled items not yet sealed
  (runs of 32-byte hashes); ``sealed_gaps``, each gap as it is recorded (a trigger), kept until
  sealed; ``seals``, the seals not yet sent and the last one (its hash is the next one's
  ``prev``). A v0.2 file's held items get their leaves; what was sent before is not sealed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

APPLICATION_ID = 0x53475742  # "SGWB"
VERSION = 3
TABLES = {
    "samples",
    "alarms",
    "gaps",
    "meta",
    "alarm_state",
    "events",
    "command_ids",
    "leaves",
    "sealed_gaps",
    "seals",
}

_GAPS = (
    "CREATE TABLE gaps (gap_id INTEGER PRIMARY KEY AUTOINCREMENT, from_seq INTEGER NOT NULL,"
    " to_seq INTEGER NOT NULL, count INTEGER NOT NULL, reason TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0)"
)
_META = "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID"
# Each alarm rule's last committed state (raised or cleared), written in the commit of its event,
# so a restart while raised publishes nothing new (alarms.AlarmEngine starts from it).
_ALARM_STATE = (
    "CREATE TABLE alarm_state (alarm TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL) WITHOUT ROWID"
)
_SAMPLES = (
    "CREATE TABLE samples (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL, device TEXT NOT NULL, vals TEXT NOT NULL,"
    " flags INTEGER NOT NULL DEFAULT 0)"
)
_ALARMS = (
    "CREATE TABLE alarms (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL, alarm TEXT NOT NULL, state TEXT NOT NULL,"
    " value REAL NOT NULL, priority TEXT NOT NULL)"
)
_RESULT_BODY = "ALTER TABLE alarms ADD COLUMN body TEXT"  # a result's JSON (NULL for an alarm)
# The commands answered (at most a day's): id, sha256 of its bytes, its result's seq and JSON.
_COMMAND_IDS = (
    "CREATE TABLE command_ids (id TEXT PRIMARY KEY, digest TEXT NOT NULL, ts_ms INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, result TEXT NOT NULL) WITHOUT ROWID"
)

# What happened (the status page's timeline): the last day, at most EVENTS_MAX rows, written in
# the commits of the data (buffer/core.py), so it costs no fsync of its own.
_EVENTS = (
    "CREATE TABLE events (event_id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL,"
    " kind TEXT NOT NULL, message TEXT NOT NULL, fields TEXT NOT NULL)"
)

_LEAVES = (
    "CREATE TABLE leaves (from_seq INTEGER PRIMARY KEY, to_seq INTEGER NOT NULL,"
    " hashes BLOB NOT NULL)"
)
_SEALED_GAPS = (
    "CREATE TABLE sealed_gaps (from_seq INTEGER PRIMARY KEY, to_seq INTEGER NOT NULL,"
    " reason TEXT NOT NULL)"
)
# a gap is recorded in several places (eviction, corruption, a crash at start): the trigger
# keeps its leaf's contents in the same transaction, whatever records it
_GAP_TRIGGER = (
    "CREATE TRIGGER gap_to_seal AFTER INSERT ON gaps BEGIN"
    " INSERT OR REPLACE INTO sealed_gaps (from_seq, to_seq, reason)"
    " VALUES (NEW.from_seq, NEW.to_seq, NEW.reason); END"
)
_SEALS = (
    "CREATE TABLE seals (n INTEGER PRIMARY KEY, to_seq INTEGER NOT NULL, body TEXT NOT NULL,"
    " sent INTEGER NOT NULL DEFAULT 0)"
)

CREATE = [
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {VERSION}",
    _SAMPLES,
    _ALARMS,
    _RESULT_BODY,
    _GAPS,
    _META,
    _ALARM_STATE,
    _EVENTS,
    _COMMAND_IDS,
    _LEAVES,
    _SEALED_GAPS,
    _GAP_TRIGGER,
    _SEALS,
]


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Readings become one-value samples; alarm bodies become columns. Seqs are kept."""
    conn.execute(_SAMPLES)
    conn.execute(
        "INSERT INTO samples (seq, ts_ms, stored_ms, device, vals, flags)"
        " SELECT seq, ts_ms, stored_ms, body ->> '$.device',"
        " json_object(body ->> '$.point', json(body -> '$.value')),"
        " coalesce(body ->> '$.clock' = 'unsynced', 0) FROM readings"
    )
    conn.execute("DROP TABLE readings")
    conn.execute(_ALARMS.replace("TABLE alarms", "TABLE alarms_v2"))
    conn.execute(
        "INSERT INTO alarms_v2 (seq, ts_ms, stored_ms, alarm, state, value, priority)"
        " SELECT seq, ts_ms, stored_ms, body ->> '$.alarm', body ->> '$.state',"
        " body ->> '$.value', body ->> '$.priority' FROM alarms"
    )
    conn.execute("DROP TABLE alarms")
    conn.execute("ALTER TABLE alarms_v2 RENAME TO alarms")
    conn.execute(_ALARM_STATE)  # v0.1 kept alarm state in memory only: nothing to carry over
    conn.execute(_EVENTS)


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Room for command results and the ids of answered commands; the seal tables, the held
    items' leaves (sealing starts at the first held seq). Nothing moves."""
    from gateway.buffer.seals import migrate_v2  # noqa: PLC0415 - the leaves' code, only here

    conn.execute(_RESULT_BODY)
    for statement in (_COMMAND_IDS, _LEAVES, _SEALED_GAPS, _GAP_TRIGGER, _SEALS):
        conn.execute(statement)
    migrate_v2(conn)


# MIGRATIONS[n] turns a version-n file into version n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a version-``version`` file to :data:`VERSION` in one transaction (on the
    connection's thread); rolled back whole on any error."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for step in range(version, VERSION):
            MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
