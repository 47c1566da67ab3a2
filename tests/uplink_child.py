"""A gateway in a child process (Buffer + Uplink), for tests that SIGKILL it.

    python tests/uplink_child.py DB SERVER [--produce] [--committed FILE] [--live]

With ``--produce`` it stores samples in a loop and, after each commit, writes the last
committed seq to FILE (atomically), so the test knows what must never be lost. With ``--live``
it stores one sample every 10 ms and leaves committing to the buffer (commits linger 0.25 s),
so most of the time the uplink has published samples that are not on disk yet. Each sample
carries this process's pid: a seq given to two samples across a restart shows up upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from uplink_support import make_uplink, uplink_config

from gateway.buffer import Buffer
from gateway.model import Sample, now_ms


def sample(i: int) -> Sample:
    return Sample("aq-1", now_ms(), {"pm25": i, "pid": os.getpid()})


async def produce(buffer: Buffer, committed: Path) -> None:
    i = buffer.last_seq
    while True:
        for _ in range(50):
            i += 1
            buffer.put(sample(i))
        last = await buffer.flush()
        tmp = committed.with_suffix(".tmp")
        tmp.write_text(f"{last}\n")
        os.replace(tmp, committed)
        await asyncio.sleep(0.02)


async def produce_live(buffer: Buffer) -> None:
    i = 0
    while True:
        i += 1
        buffer.put(sample(i))
        await asyncio.sleep(0.01)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("server")
    parser.add_argument("--produce", action="store_true")
    parser.add_argument("--committed", type=Path, default=Path("committed"))
    parser.add_argument("--live", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    interval = 1.0 if args.live else 0.05
    async with Buffer(args.db, sync="normal", commit_interval_s=interval) as buffer:
        uplink = make_uplink(uplink_config([args.server]), buffer)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(), name="uplink")
            if args.produce:
                tg.create_task(produce(buffer, args.committed), name="produce")
            if args.live:
                tg.create_task(produce_live(buffer), name="produce-live")


if __name__ == "__main__":
    asyncio.run(main())
