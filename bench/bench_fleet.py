"""The audit with the fleet view on a large fleet: CPU, RSS, and how long the page takes.

    .venv/bin/python bench/bench_fleet.py [--gateways 1000] [--rate 20] [--seconds 40]

Every piece is a process: a private mosquitto on a free loopback port; ``street-gateway audit
--serve`` (the command a user runs, state file with synchronous=FULL); ``python -m
gateway.sim.fleet`` publishing as ``--gateways`` gateways, each its retained birth and health
and then one samples message a second with ``--rate`` samples (QoS 1), 3 % of them offline,
1 % with a hole, 1 % degraded, 2 % with a device down. After a warm-up (first message to the
audit, plus 10 s) the audit's CPU (utime + stime from /proc) and RSS are taken over the rest of
the run, while the page, ``/metrics`` and ``/fleet.json`` are fetched every 2 s (timed from the
request to the last byte, on loopback). VmHWM is the audit's peak RSS over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import running_mosquitto

from gateway.sim.broker import free_port, stop_process, wait_for_port

BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        size = len(answer.read())
    return (time.perf_counter() - start) * 1000, size


def fetch_body(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return bytes(answer.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=20, help="samples per second per gateway")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument(
        "--no-view", action="store_true", help="the audit without --serve, for comparison"
    )
    args = parser.parse_args()
    n = args.gateways
    with tempfile.TemporaryDirectory() as work, running_mosquitto(Path(work)) as broker:
        port = free_port()
        audit = subprocess.Popen(
            [str(BIN / "street-gateway"), "--log-level", "WARNING", "audit", "--broker",
             broker.url, "--state", f"{work}/audit.db", "--refresh", "3600s",
             *([] if args.no_view else ["--serve", f"127.0.0.1:{port}"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if args.no_view:
            time.sleep(2)  # its session is made before the fleet publishes
        else:
            wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        sim = subprocess.Popen(
            [sys.executable, "-m", "gateway.sim.fleet", "--broker", broker.url,
             "--gateways", str(n), "--rate", str(args.rate), "--seconds", str(args.seconds),
             "--offline", str(n * 3 // 100), "--holes", str(n // 100),
             "--degraded", str(n // 100), "--devices-down", str(n * 2 // 100)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        while not args.no_view and not json.loads(fetch_body(f"{base}/fleet.json"))["gateways"]:
            time.sleep(0.1)
        time.sleep(10)
        cpu0, t0 = cpu_s(audit.pid), time.monotonic()
        pages, metrics, jsons, rss = [], [], [], []
        while sim.poll() is None and args.no_view:
            rss.append(status_kib(audit.pid, "VmRSS"))
            time.sleep(2)
        while sim.poll() is None:
            pages.append(fetch(f"{base}/"))
            metrics.append(fetch(f"{base}/metrics"))
            jsons.append(fetch(f"{base}/fleet.json"))
            rss.append(status_kib(audit.pid, "VmRSS"))
            time.sleep(2)
        cpu1, t1 = cpu_s(audit.pid), time.monotonic()
        sim_err = sim.stderr.read() if sim.stderr else ""
        time.sleep(3)  # the last messages reach the audit
        fleet = [] if args.no_view else json.loads(fetch_body(f"{base}/fleet.json"))["gateways"]
        peak = status_kib(audit.pid, "VmHWM")
        stop_process(audit)
    received = sum(g["received"] for g in fleet)
    window = t1 - t0
    cpu = (cpu1 - cpu0) / window
    total_s = time.monotonic() - started
    print(f"fleet: {n} gateways x {args.rate} samples/s, {args.seconds:.0f} s "
          f"({total_s:.0f} s with the warm-up); sim: {sim_err.strip()}")  # fmt: skip
    print(f"audit received {received:,} seqs; {len(fleet)} rows, "
          f"{sum(1 for g in fleet if g['needs'])} needing a person")  # fmt: skip
    print(f"audit CPU over {window:.0f} s: {cpu * 100:.1f} % of one core "
          f"({cpu / (n * args.rate) * 1e6:.1f} us per sample)")  # fmt: skip
    print(f"audit RSS: {statistics.median(rss):.1f} MiB median, {max(rss):.1f} max in the window; "
          f"VmHWM {peak:.1f} MiB")  # fmt: skip
    for name, series in (("page /", pages), ("/metrics", metrics), ("/fleet.json", jsons)):
        if not series:
            continue
        ms = [m for m, _ in series]
        print(f"{name}: {series[-1][1] / 1024:.0f} KiB, {statistics.median(ms):.0f} ms median, "
              f"{max(ms):.0f} ms max over {len(ms)} fetches")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
