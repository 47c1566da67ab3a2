"""What ``audit --keys`` costs the audit: CPU per message, bytes written to the state file, RSS.

    .venv/bin/python bench/bench_audit_seals.py [--gateways 100] [--rounds 50]

Each round, every gateway publishes one message of 100 samples (a ten-point cabinet,
bench_buffer.make_sample, as bench_audit.py); every 10th round it also publishes the seal over
its last 1,000 items (a seal_interval of 10 s at 100 samples/s), made and signed as the gateway
makes it. The messages are fed to the audit's ``Fleet.apply`` (JSON parsing included) and the
state file is saved every 20 messages (a batch), first without ``--keys`` and then with it on
a fresh state file. Message building and signing are done before the clock starts.
Printed: CPU seconds per 1,000 messages (time.process_time, so SQLite's worker thread counts),
bytes the process wrote (/proc/self/io write_bytes, WAL and checkpoints included) per message,
the state file's size and the leaves held at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_buffer import make_sample

from gateway.audit.seals import SealBook
from gateway.audit.store import AuditStore
from gateway.keys import SigningKey
from gateway.model import Lane, StoredItem
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, SealInput, chain_hash, make_seal
from gateway.uplink.json_format import samples_message

PREFIX = "bench"
PER_MESSAGE = 100
SEAL_EVERY = 10  # messages
BATCH = 20  # messages a save


def written_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes"))


def build(gateways: int, rounds: int) -> list[list[tuple[str, bytes]]]:
    """Per round, the messages of every gateway (a seal after every SEAL_EVERY-th)."""
    key = SigningKey(bytes(range(32)))
    prev = dict.fromkeys(range(gateways), FIRST_PREV)
    leaves: dict[int, list[bytes]] = {g: [] for g in range(gateways)}
    out = []
    for r in range(rounds):
        messages = []
        for g in range(gateways):
            gid, lo = f"gw-{g:03d}", 1 + r * PER_MESSAGE
            stored = [
                StoredItem(s, Lane.SAMPLE, 0, make_sample(s)._replace(device="cab-01"))
                for s in range(lo, lo + PER_MESSAGE)
            ]
            messages.append(
                (f"{PREFIX}/{gid}/samples", samples_message(gid, stored, historical=False))
            )
            leaves[g] += [items.leaf_of_stored(i) for i in stored]
            if (r + 1) % SEAL_EVERY == 0:
                n, first = (r + 1) // SEAL_EVERY, lo + PER_MESSAGE - len(leaves[g])
                what = SealInput(n, first, lo + PER_MESSAGE - 1, leaves[g], [], prev[g], 0)
                seal = make_seal(gid, key, what)
                prev[g], leaves[g] = chain_hash(seal), []
                messages.append((f"{PREFIX}/{gid}/seals", json.dumps(seal).encode()))
        out.append(messages)
    return out


async def run(rounds: list[list[tuple[str, bytes]]], state: Path, keys: bool) -> None:
    seals = SealBook(
        {f"gw-{g:03d}": SigningKey(bytes(range(32))).public for g in range(999)}, 600_000
    )
    async with AuditStore(state) as store:
        fleet = await store.load(PREFIX, seals=seals if keys else None)
        n = 0
        w0, c0 = written_bytes(), time.process_time()
        for messages in rounds:
            for topic, payload in messages:
                if topic.endswith("/seals") and not keys:
                    continue
                fleet.apply(topic, payload, now_ms=n)
                n += 1
                if n % BATCH == 0:
                    await store.save(fleet)
        await store.save(fleet)
        cpu, wrote = time.process_time() - c0, written_bytes() - w0
    size = sum(p.stat().st_size for p in state.parent.glob(state.name + "*"))
    label = "--keys" if keys else "plain "
    line = (
        f"{label}: {n:,} messages, {cpu / n * 1000:.2f} CPU s per 1,000 messages, "
        f"{wrote / n / 1024:.1f} KiB written per message, state {size / 2**20:.1f} MiB"
    )
    if keys:
        held = sum(b.leaves.count for b in seals.gateways.values())
        verified = sum(b.figures["items_verified"] for b in seals.gateways.values())
        broken = sum(b.figures["seals_mismatched"] for b in seals.gateways.values())
        line += f"; {verified:,} items verified, {broken} seals mismatched, {held:,} leaves held"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rounds = build(args.gateways, args.rounds)
    print(f"built {sum(map(len, rounds)):,} messages in {time.perf_counter() - t0:.0f}s")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(rounds, Path(tmp) / "plain.db", keys=False))
        asyncio.run(run(rounds, Path(tmp) / "keys.db", keys=True))


if __name__ == "__main__":
    main()
