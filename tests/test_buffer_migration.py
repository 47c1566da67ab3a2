"""Upgrades keep the backlog: a buffer written by street-gateway 0.1 is migrated in place.

The v0.1 files in ``tests/data/`` were written by the v0.1 code itself (commit 7b0ba17) with
``tests/data/make_v01_buffers.py``, the v0.2 file by the v0.2 code (commit 5a50bbf) with
``tests/data/make_v02_buffer.py``; their docstrings say what each holds and how to make them
again. Every test works on a copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import free_port, stop_process

from gateway.buffer import Buffer, schema
from gateway.errors import BufferNewerError
from gateway.model import AlarmEvent, CommandResult, Lane, Sample

DATA = Path(__file__).with_name("data")
T0 = 1_764_169_200_000
T2 = 1_796_000_000_000  # make_v02_buffer.py's


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target / "buffer.db"


def v01_reading(i: int) -> Sample:
    """What ``make_v01_buffers.readings`` stored as reading ``i``, as the v0.2 sample it is."""
    if i % 4 == 0:
        return Sample("aq-1", T0 + i, {"pm25": round(12.3 + i / 10, 1)})
    if i % 4 == 1:
        return Sample("meter-1", T0 + i, {"energy": 1000 + i})
    if i % 4 == 2:
        return Sample("cab-1", T0 + i, {"door_open": i % 3 == 0}, False)
    return Sample("noise-1", T0 + i, {"laeq": 55.25})


def version_of(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def everything(buffer: Buffer) -> dict[int, Sample | AlarmEvent]:
    return {item.seq: item.item for lane in Lane for item in await buffer.fetch(lane, limit=10**6)}


async def test_a_v01_buffer_is_migrated_in_place_keeping_every_item_and_seq(
    tmp_path: Path,
) -> None:
    path = copy("v01-clean", tmp_path)
    assert version_of(path) == 1
    async with Buffer(path) as buffer:
        items = await everything(buffer)
        # seqs 1..202: readings 0..99, an alarm, readings 100..199, an alarm; 1..50 acknowledged
        expected: dict[int, Sample | AlarmEvent] = {}
        for seq in range(51, 203):
            if seq == 101:
                expected[seq] = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", T0 + 100)
            elif seq == 202:
                expected[seq] = AlarmEvent("aq-1/pm25>50", "cleared", 38.5, "high", T0 + 201)
            else:
                expected[seq] = v01_reading(seq - 1 if seq <= 100 else seq - 2)
        assert items == expected
        assert type(items[53].values["pm25"]) is float  # JSON kept float, int, bool apart
        assert type(items[54].values["energy"]) is int
        assert type(items[55].values["door_open"]) is bool
        assert await buffer.pending_gaps() == []  # v0.1 closed cleanly: nothing unaccounted
        assert (buffer.stats.samples, buffer.stats.alarms) == (152, 2)
        buffer.put(Sample("aq-1", T0 + 1000, {"pm25": 1.5}))
        assert await buffer.flush() == 203  # seqs continue above the old ones
    assert version_of(path) == schema.VERSION


async def test_a_v01_buffer_with_a_torn_wal_is_recovered_then_migrated_with_a_gap(
    tmp_path: Path,
) -> None:
    path = copy("v01-torn", tmp_path)
    state = json.loads(path.with_name("buffer.db.seq").read_text())
    async with Buffer(path) as buffer:
        items = await everything(buffer)
        gaps = await buffer.pending_gaps()
        assert len(items) >= 152  # at least what the v0.1 buffer had committed before the tail
        assert set(range(51, 203)) <= set(items)
        # what SQLite could not prove committed (the torn tail) is declared, not dropped
        assert [(g.reason, g.to_seq) for g in gaps] == [("unclean_shutdown", state["reserved"])]
        declared = set(range(gaps[0].from_seq, gaps[0].to_seq + 1))
        assert not declared & set(items)
        assert max(items) + 1 == gaps[0].from_seq  # everything above the last stored seq
        buffer.put(Sample("aq-1", T0, {"pm25": 2.0}))
        assert await buffer.flush() == state["reserved"] + 1
    assert version_of(path) == schema.VERSION


async def test_a_buffer_from_a_newer_version_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = copy("v01-clean", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    newer = rf"schema v{schema.VERSION + 1}.*up to v{schema.VERSION}"
    with pytest.raises(BufferNewerError, match=newer):
        async with Buffer(path):
            pass
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in path.parent.iterdir() if "corrupt" in p.name) == []


@pytest.mark.slow
def test_run_refuses_a_newer_buffer_with_one_line_and_exit_1(tmp_path: Path) -> None:
    path = copy("v01-clean", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        gateway: {{id: gw}}
        buffer: {{path: {path}}}
        uplink: {{servers: ["mqtt://127.0.0.1:9"]}}
        status: {{listen: "127.0.0.1:{free_port()}"}}
        sources: [{{name: s, kind: modbus-tcp, host: 127.0.0.1, port: 9, devices: [{{name: d,
          unit: 1, interval: 1s,
          points: [{{name: p, table: holding, address: 0, type: uint16}}]}}]}}]
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    refusal = [line for line in result.stderr.splitlines() if "newer street-gateway" in line]
    assert (
        len(refusal) == 1 and "schema v7" in refusal[0] and f"up to v{schema.VERSION}" in refusal[0]
    )


MIGRATE_CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.buffer import Buffer
async def main():
    async with Buffer(Path(sys.argv[1])):
        print("migrated", flush=True)
asyncio.run(main())
"""


def big_v01_file(tmp_path: Path, rows: int) -> Path:
    """The v0.1 clean file with ``rows`` more v0.1 reading rows, so a migration takes a while."""
    path = copy("v01-clean", tmp_path)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO readings (seq, ts_ms, stored_ms, body) VALUES (?, ?, ?, ?)",
            (
                (seq, T0, T0, f'{{"ts":{T0},"device":"d","point":"p","value":{seq}.5}}')
                for seq in range(1000, 1000 + rows)
            ),
        )
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (999 + rows,))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.3, 0.6])
def test_kill_9_during_the_migration_leaves_the_old_file_or_the_migrated_one(
    tmp_path: Path, delay_s: float
) -> None:
    rows = 200_000
    path = big_v01_file(tmp_path, rows)
    child = subprocess.Popen(
        [sys.executable, "-c", MIGRATE_CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        for line in child.stderr:  # the migration has begun
            if "migrating schema v1 -> v" in line:
                break
        subprocess.run(["sleep", str(delay_s)], check=True)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        stop_process(child)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    with sqlite3.connect(path) as db:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        table = "readings" if version == 1 else "samples"
        count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert version in (1, schema.VERSION)
    assert count == 150 + rows  # all or nothing: the old file whole, or all of it migrated

    async def reopen() -> dict[int, Sample | AlarmEvent]:
        async with Buffer(path) as buffer:
            return await everything(buffer)

    items = asyncio.run(reopen())
    assert len(items) == 152 + rows
    assert items[1000 + rows - 1] == Sample("d", T0, {"p": 999 + rows + 0.5})
    assert version_of(path) == schema.VERSION


async def test_a_v02_buffer_is_migrated_to_v3_keeping_every_item_and_room_for_results(
    tmp_path: Path,
) -> None:
    """tests/data/make_v02_buffer.py wrote it with the v0.2 code (commit 5a50bbf)."""
    path = copy("v02-clean", tmp_path)
    assert version_of(path) == 2
    async with Buffer(path) as buffer:
        items = await everything(buffer)
        assert sorted(items) == list(range(21, 103))  # 1..20 were acknowledged
        assert items[51] == AlarmEvent("river-1/level>1.4", "raised", 1.45, "critical", T2 + 51)
        assert items[22] == Sample("sign-1", T2 + 22, {"limit": 72, "text": "S22"})
        assert items[25] == Sample("river-1", T2 + 25, {"level": 1.25, "ok": True}, False)
        result = CommandResult(
            "c-1", "ops", "write", "sign-1", "limit", 30, "done", None, 30, "", T2 + 200
        )  # fmt: skip
        assert buffer.put(result) == 103  # seqs go on; a result now has its place
        await buffer.flush()
    assert version_of(path) == schema.VERSION
    async with Buffer(path) as buffer:
        assert (await everything(buffer))[103] == result
