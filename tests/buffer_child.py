"""A child process for the buffer crash test: append (and ack) in a loop until killed.

Usage: ``python buffer_child.py DB SYNC RESERVE_BLOCK``. Prints, flushed, one line per event:
``open N`` (last_seq after open), ``commit N`` (last_seq after a flush returned),
``exposed a b c`` (handed out before their commit, as to the uplink), ``acking a b c`` (about
to ack these seqs) and ``acked`` (the ack returned).
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from gateway.buffer import Buffer
from gateway.model import AlarmEvent, Lane, Sample


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    path, sync, block = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    assert sync in ("full", "normal")
    async with Buffer(
        path, sync=sync, seq_reserve_block=block, maintenance_interval_s=3600
    ) as buffer:
        say(f"open {buffer.last_seq}")
        n = 0
        while True:
            for _ in range(random.randint(1, 40)):
                n += 1
                buffer.put(Sample("aq-1", 1_764_169_200_000 + n, {"pm25": n * 0.5}))
            if random.random() < 0.2:
                buffer.put(AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", 1_764_169_200_000))
            if random.random() < 0.3:  # the uplink takes live items before their commit
                live = await buffer.fetch(Lane.SAMPLE, after_seq=buffer.last_seq - 50)
                say("exposed " + " ".join(str(item.seq) for item in live))
            say(f"commit {await buffer.flush()}")
            if random.random() < 0.3:
                items = await buffer.fetch(Lane.SAMPLE, limit=random.randint(1, 30))
                seqs = [item.seq for item in items if random.random() < 0.7]
                say("acking " + " ".join(map(str, seqs)))
                await buffer.ack(seqs)
                say("acked")


if __name__ == "__main__":
    asyncio.run(main())
