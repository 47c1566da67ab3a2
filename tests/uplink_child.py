"""A gateway in a child process (Buffer + Uplink), for tests that SIGKILL it.

    python tests/uplink_child.py DB SERVER [--produce] [--committed FILE]

With ``--produce`` it stores readings in a loop and, after each commit, writes the last
committed seq to FILE (atomically), so the test knows what must never be lost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from uplink_support import make_uplink, reading, uplink_config

from gateway.buffer import Buffer


async def produce(buffer: Buffer, committed: Path) -> None:
    i = buffer.last_seq
    while True:
        for _ in range(50):
            i += 1
            buffer.put(reading(i))
        last = await buffer.flush()
        tmp = committed.with_suffix(".tmp")
        tmp.write_text(f"{last}\n")
        os.replace(tmp, committed)
        await asyncio.sleep(0.02)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("server")
    parser.add_argument("--produce", action="store_true")
    parser.add_argument("--committed", type=Path, default=Path("committed"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    async with Buffer(args.db, sync="normal", commit_interval_s=0.05) as buffer:
        uplink = make_uplink(uplink_config([args.server]), buffer)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(), name="uplink")
            if args.produce:
                tg.create_task(produce(buffer, args.committed), name="produce")


if __name__ == "__main__":
    asyncio.run(main())
