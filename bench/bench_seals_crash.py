"""What a kill -9 leaves unsealed: the daemon killed N times while it publishes, then verified.

    .venv/bin/python bench/bench_seals_crash.py [--kills 50] [--devices 20]

The workload of bench_e2e.py (20 Modbus TCP devices polled every second, a local mosquitto), with
``security.seal_interval: 500ms``. The daemon is started and killed with SIGKILL after a random
0.5-2 s, ``--kills`` times, then run once more for 5 s and stopped with SIGTERM. A subscriber
archives every samples, alarms, gaps and seals message throughout; the archive is then verified
with the gateway's public key (gateway.seals.verify, as ``street-gateway verify`` does).

Figures: seqs received, seqs covered by ``unclean_shutdown`` gaps (published or not before a
kill; the gap represents them in the seal) and how many of those had arrived (their values are
then covered by the gap's leaf, not their own), seqs sealed as ``unsealed`` (crash)
ranges, items verified, seals with mismatched items, seals missing, bad signatures, and items
received after the last seal (waiting for the next one when the run ended).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import GATEWAY, PREFIX, daemon_command, start_daemon, start_simulators, write_config
from support import free_port, running_mosquitto, stop_process

from gateway.identity import read_identity
from gateway.seals.verify import check, collect


async def archive(port: int, into: list[tuple[str, Any]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-seals-archive") as client:
        client.pending_calls_threshold = 10_000
        await client.subscribe(f"{PREFIX}/{GATEWAY}/#", qos=1)
        ready.set()
        async for message in client.messages:
            kind = message.topic.value.rpartition("/")[2]
            if kind in ("samples", "alarms", "gaps", "seals"):
                assert isinstance(message.payload, bytes)
                into.append((message.topic.value, json.loads(message.payload)))


async def run(kills: int, devices: int, workdir: Path) -> dict[str, Any]:
    messages: list[tuple[str, Any]] = []
    with running_mosquitto(workdir) as broker:
        sims = start_simulators(workdir, devices, 1)
        try:
            config = write_config(workdir, broker.port, free_port(), [sims[0][0]], devices)
            data = json.loads(config.read_text())
            data["security"] = {"seal_interval": "500ms"}
            config.write_text(json.dumps(data))
            ready = asyncio.Event()
            listener = asyncio.create_task(archive(broker.port, messages, ready))
            await asyncio.wait_for(ready.wait(), 10)
            for _ in range(kills):
                daemon = start_daemon(daemon_command(config, None), workdir)
                await asyncio.sleep(random.uniform(0.5, 2.0))
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
            daemon = start_daemon(daemon_command(config, None), workdir)
            await asyncio.sleep(5)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
            await asyncio.sleep(1)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        finally:
            for _, sim in sims:
                stop_process(sim)
    key = read_identity(workdir / "identity.key").public
    report = check(GATEWAY, collect(messages)[GATEWAY], key)
    gaps = [p for t, p in messages if t.endswith("/gaps")]
    seals = [p for t, p in messages if t.endswith("/seals")]
    seqs = {s["seq"] for t, p in messages if t.endswith("/samples") for s in p["samples"]}
    return {
        "kills": kills,
        "seqs_received": len(seqs),
        "highest_seq": max(seqs),
        "unclean_gap_seqs": sum(
            g["to_seq"] - g["from_seq"] + 1 for g in gaps if g["reason"] == "unclean_shutdown"
        ),
        "received_in_unclean_gaps": len(
            {
                q
                for g in gaps
                if g["reason"] == "unclean_shutdown"
                for q in range(g["from_seq"], g["to_seq"] + 1)
            }
            & seqs
        ),
        "seals": len(distinct := {s["n"]: s for s in seals}),
        "seal_messages": len(seals),  # a seal whose sent mark a kill took is sent again
        "unsealed_crash_seqs": sum(b - a + 1 for s in distinct.values() for a, b in s["unsealed"]),
        **report.to_json(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-seals-crash-") as tmp:
        result = asyncio.run(run(args.kills, args.devices, Path(tmp)))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
