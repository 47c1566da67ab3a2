"""Writes the v0.1 buffer files in this folder with the v0.1 code; run once, kept for the record.

    git worktree add /tmp/v01 7b0ba17     # street-gateway 0.1's last commit
    PYTHONPATH=/tmp/v01 .venv/bin/python tests/data/make_v01_buffers.py tests/data

``v01-clean/``: 200 readings (float, int, bool, with and without unit, some unsynced) and two
alarms, seqs 1..202, of which 1..50 acknowledged; closed cleanly.
``v01-torn/``: the same 202 items, then 100 more committed in small batches and the process
"killed" (no checkpoint, no clean mark), and the WAL cut in the middle of its last frame.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.buffer import Buffer  # the v0.1 Buffer, from PYTHONPATH
from gateway.model import AlarmEvent, Lane, Reading

T0 = 1_764_169_200_000


def readings(first: int, n: int) -> list[Reading]:
    out = []
    for i in range(first, first + n):
        if i % 4 == 0:
            out.append(Reading("aq-1", "pm25", round(12.3 + i / 10, 1), T0 + i, "ug/m3"))
        elif i % 4 == 1:
            out.append(Reading("meter-1", "energy", 1000 + i, T0 + i))
        elif i % 4 == 2:
            out.append(Reading("cab-1", "door_open", i % 3 == 0, T0 + i, None, False))
        else:
            out.append(Reading("noise-1", "laeq", 55.25, T0 + i, "dBA"))
    return out


async def fill(path: Path) -> Buffer:
    buffer = Buffer(path, seq_reserve_block=100)
    await buffer.__aenter__()
    buffer.put_many(readings(0, 100))
    buffer.put(AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", T0 + 100))
    buffer.put_many(readings(100, 100))
    buffer.put(AlarmEvent("aq-1/pm25>50", "cleared", 38.5, "high", T0 + 201))
    await buffer.flush()
    await buffer.ack(range(1, 51))
    await buffer.flush()
    return buffer


async def crash_after_filling(path: Path) -> None:
    """Fill, commit 100 more in small batches, then die like kill -9: no close, no checkpoint."""
    torn = await fill(path)
    for k in range(10):
        torn.put_many(readings(1000 + 10 * k, 10))
        await torn.flush()
    os._exit(0)


async def main(out: Path) -> None:
    for name in ("v01-clean", "v01-torn"):
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    clean = await fill(out / "v01-clean" / "buffer.db")
    await clean.__aexit__(None, None, None)

    torn_path = out / "v01-torn" / "buffer.db"
    # a one-off generator: blocking on the child is what it should do
    subprocess.run([sys.executable, __file__, str(torn_path), "--crash"], check=True)  # noqa: ASYNC221
    wal = torn_path.with_name("buffer.db-wal")
    size = wal.stat().st_size
    with wal.open("r+b") as f:
        f.truncate(size - 2000)  # the last frame is cut in half
    fetched = await _peek(out / "v01-clean" / "buffer.db")
    print("clean:", len(fetched), "items; torn WAL", size, "->", size - 2000, "bytes")


async def _peek(path: Path) -> list:
    async with Buffer(path) as buffer:
        items = await buffer.fetch(Lane.READING, limit=10**6)
        items += await buffer.fetch(Lane.ALARM, limit=10**6)
        return items


if __name__ == "__main__":
    if sys.argv[2:] == ["--crash"]:
        asyncio.run(crash_after_filling(Path(sys.argv[1])))
    else:
        asyncio.run(main(Path(sys.argv[1])))
