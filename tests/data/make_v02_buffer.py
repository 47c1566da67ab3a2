"""Writes the v0.2 buffer file in this folder with the v0.2 code; run once, kept for the record.

    git worktree add /tmp/v02 5a50bbf     # the last commit before schema v3 (issue 29)
    PYTHONPATH=/tmp/v02 .venv/bin/python tests/data/make_v02_buffer.py tests/data

``v02-clean/``: 100 samples (two devices, ints, floats, a bool, a string, some unsynced) and
two alarms (raised, then cleared), seqs 1..102, of which 1..20 acknowledged; closed cleanly.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from gateway.buffer import Buffer  # the v0.2 Buffer, from PYTHONPATH
from gateway.model import AlarmEvent, Sample

T0 = 1_796_000_000_000


def sample(i: int) -> Sample:
    if i % 2:
        return Sample("river-1", T0 + i, {"level": round(1.0 + i / 100, 2), "ok": True}, i % 5 != 0)
    return Sample("sign-1", T0 + i, {"limit": 50 + i, "text": f"S{i}"})


async def write(folder: Path) -> None:
    async with Buffer(folder / "buffer.db", sync="full") as buffer:
        for i in range(1, 51):
            buffer.put(sample(i))
        buffer.put(AlarmEvent("river-1/level>1.4", "raised", 1.45, "critical", T0 + 51))
        for i in range(52, 102):
            buffer.put(sample(i))
        buffer.put(AlarmEvent("river-1/level>1.4", "cleared", 1.35, "critical", T0 + 102))
        await buffer.flush()
        await buffer.ack(range(1, 21))
        await buffer.flush()


if __name__ == "__main__":
    target = Path(sys.argv[1]) / "v02-clean"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    asyncio.run(write(target))
