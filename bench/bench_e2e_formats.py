"""The e2e workload through the real daemon, json against sparkplug-b: bytes and CPU per point.

    .venv/bin/python bench/bench_e2e_formats.py [--seconds 30] [--warmup 5] [--rounds 2]

bench_e2e.py's set-up (20 simulated Modbus TCP devices x 10 points of the ``e2e_cabinet``
profile, polled every second, one simulator process, a local mosquitto, the unit's
environment), with ``uplink.format`` switched; rounds alternate json, sparkplug-b, json, ...
Both figures come from the same place for both formats, so they compare like with like:

* bytes per point: the uplink's own meter (``/status`` ``uplink.bytes_total``: whole MQTT
  PUBLISH packets, births, checkpoints and all) over the window, divided by the points of the
  samples acknowledged in it (``published_total`` x 10);
* CPU seconds per 1,000 points: the daemon's scheduler CPU clock over the window, divided by
  the points acknowledged in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_e2e import (
    cpu_clock,
    daemon_command,
    fetch_status,
    start_daemon,
    start_simulators,
    write_config,
)
from support import free_port, running_mosquitto, stop_process, wait_for_port

POINTS = 10  # per e2e_cabinet sample


def configure(path: Path, fmt: str) -> None:
    config = json.loads(path.read_text())
    config["uplink"]["format"] = fmt
    if fmt == "sparkplug-b":
        config["uplink"]["sparkplug"] = {"group_id": "bench"}
    path.write_text(json.dumps(config, indent=1))


async def one_round(fmt: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    with running_mosquitto(workdir) as broker:
        sims = start_simulators(workdir, args.devices, 1)
        status_port = free_port()
        config = write_config(workdir, broker.port, status_port, [p for p, _ in sims], args.devices)
        configure(config, fmt)
        (workdir / "buffer.db.bdseq").unlink(missing_ok=True)
        daemon = start_daemon(daemon_command(config, None), workdir)
        try:
            wait_for_port(status_port, timeout=30)
            await asyncio.sleep(args.warmup)
            s0 = await asyncio.to_thread(fetch_status, status_port)
            c0, t0 = cpu_clock(daemon.pid), time.perf_counter()
            await asyncio.sleep(args.seconds)
            s1 = await asyncio.to_thread(fetch_status, status_port)
            c1, t1 = cpu_clock(daemon.pid), time.perf_counter()
        finally:
            stop_process(daemon, timeout=10)
            for _, sim in sims:
                stop_process(sim)
    samples = s1["uplink"]["published_total"] - s0["uplink"]["published_total"]
    points = samples * POINTS
    sent = s1["uplink"]["bytes_total"] - s0["uplink"]["bytes_total"]
    return {
        "points_per_s": points / (t1 - t0),
        "bytes_per_point": sent / max(points, 1),
        "cpu_per_1000_points": 1000 * (c1 - c0) / max(points, 1),
        "backlog": s1["uplink"]["backlog"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per format, alternated")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"json": [], "sparkplug-b": []}
    for _ in range(args.rounds):
        for fmt, rounds in results.items():
            with tempfile.TemporaryDirectory(prefix=f"bench-{fmt}-") as tmp:
                r = asyncio.run(one_round(fmt, args, Path(tmp)))
            rounds.append(r)
            print(f"{fmt:12s} {r['points_per_s']:7.1f} points/s  "
                  f"{r['bytes_per_point']:6.2f} B/point  {r['cpu_per_1000_points']:.4f} CPU s "
                  f"per 1,000 points  backlog {r['backlog']:.0f}", flush=True)  # fmt: skip
    cpu = {f: statistics.median(r["cpu_per_1000_points"] for r in rs) for f, rs in results.items()}
    size = {f: statistics.median(r["bytes_per_point"] for r in rs) for f, rs in results.items()}
    print(f"median: json {size['json']:.2f} B/point, {cpu['json']:.4f} CPU s; sparkplug-b "
          f"{size['sparkplug-b']:.2f} B/point, {cpu['sparkplug-b']:.4f} CPU s "
          f"({cpu['sparkplug-b'] / cpu['json']:.2f}x json's CPU)")  # fmt: skip


if __name__ == "__main__":
    main()
