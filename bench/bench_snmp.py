"""What an snmp source costs: the RSS it adds to a daemon process (pysnmp, pyasn1 and the
cipher library, imported only when an snmp source is made), and the time of a poll, against a
real net-snmp snmpd on loopback (v2c and v3 authPriv).

    .venv/bin/python bench/bench_snmp.py [--polls 200] [--points 5]

Each version runs in its own process, so the import is measured from a cold start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(version: str, port: int, tmp: Path, polls: int, points: int) -> str:
    from snmp_support import COMMUNITY, USERS, secret_file  # noqa: PLC0415

    from gateway.model import Sample  # noqa: PLC0415
    from gateway.sources.snmp.config import SnmpSource  # noqa: PLC0415

    before = rss_mib()
    from gateway.sources.snmp.source import SnmpPollSource  # noqa: PLC0415

    imported = rss_mib()
    oids = [f"1.3.6.1.2.1.1.{i}.0" for i in (1, 2, 3, 4, 5, 6, 7)][:points]
    raw: dict[str, Any] = {
        "name": "ups-1", "kind": "snmp", "host": "127.0.0.1", "port": port, "interval": "10ms",
        "points": [{"name": f"p{i}", "oid": oid, "type": "string"} for i, oid in enumerate(oids)],
    }  # fmt: skip
    if version == "2c":
        raw["community_file"] = str(secret_file(tmp / "community", COMMUNITY))
    else:
        auth, auth_key, priv, priv_key = USERS["ups-sha"]
        raw.update(
            version="3",
            user="ups-sha",
            auth={"protocol": auth, "key_file": str(secret_file(tmp / "auth", auth_key))},
            priv={"protocol": priv, "key_file": str(secret_file(tmp / "priv", priv_key))},
        )
    samples: list[Sample] = []
    first, done = asyncio.Event(), asyncio.Event()

    def take(sample: Sample) -> None:
        samples.append(sample)
        first.set()
        if len(samples) > polls:
            done.set()

    source = SnmpPollSource(SnmpSource.model_validate(raw), take)
    task = asyncio.create_task(source.run())
    await first.wait()
    start, cpu = time.perf_counter(), time.process_time()
    await done.wait()
    wall = (time.perf_counter() - start) / polls * 1000
    cpu_ms = (time.process_time() - cpu) / polls * 1000
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gc.collect()
    return (
        f"v{version}: base {before:.1f} MiB; import +{imported - before:.1f} MiB; after "
        f"{polls} polls +{rss_mib() - before:.1f} MiB; a poll of {points} points "
        f"{wall:.1f} ms wall (interval 10 ms), {cpu_ms:.2f} ms CPU in the gateway"
    )


def child(version: str, polls: int, points: int) -> None:
    from snmp_support import running_snmpd  # noqa: PLC0415

    import gateway.daemon  # noqa: F401, PLC0415 - the process an snmp source runs in

    with tempfile.TemporaryDirectory() as tmp, running_snmpd(Path(tmp) / "snmpd") as agent:
        print(asyncio.run(measure(version, agent.port, Path(tmp), polls, points)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--child", choices=["2c", "3"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.polls, args.points)
        return
    for version in ("2c", "3"):
        cmd = [sys.executable, __file__, "--child", version, "--polls", str(args.polls),
               "--points", str(args.points)]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=300)


if __name__ == "__main__":
    main()
