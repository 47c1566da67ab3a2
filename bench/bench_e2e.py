"""End to end, as deployed: simulated Modbus TCP devices -> `street-gateway run` -> mosquitto.

    .venv/bin/python bench/bench_e2e.py [--seconds 60] [--warmup 5] [--devices 20]
                                        [--connections 1] [--cprofile FILE]

Issue 7's workload: 20 Modbus TCP devices x 10 points (4 uint16, 2 int16, 4 float32 in holding
registers 0..13, the simulator's ``e2e_cabinet`` profile), each polled every second, into a
local mosquitto, with the default ``uplink.batch`` settings. Processes, all on 127.0.0.1 with
free ports and each stopped by pid:

* mosquitto (tests/support.py);
* the simulated devices: ``python -m gateway.sim modbus``; by default one process serving the
  20 unit ids on one port, like a Modbus TCP gateway in a cabinet (one connection, one source);
  ``--connections N`` spreads them over N simulator processes, N ports and N sources;
* the daemon: ``street-gateway run -c CONFIG`` (or under ``python -m cProfile`` with
  ``--cprofile FILE``; the daemon writes the profile when SIGTERM ends it). Its package is
  byte-compiled first (``gateway/**/__pycache__``, git-ignored), as ``pip install`` leaves it in
  the unit's venv: an editable install under ``PYTHONDONTWRITEBYTECODE`` would otherwise compile
  every module from source at each start, ~1-1.5 MB more peak RSS than the deployed daemon.
  Its environment adds the ``Environment=`` lines of ``systemd/street-gateway.service``;
* the subscriber: an aiomqtt client in this process, QoS 1, on ``P/G/readings``.

Figures, over the ``--seconds`` window that follows ``--warmup``:

* CPU seconds of the daemon per 1,000 readings delivered: the process's CPU clock (all threads,
  read with ``clock_gettime`` on its ``CPUCLOCK_SCHED`` clock id, to the nanosecond) at the
  window's ends, divided by the readings the subscriber received in it. utime/stime from
  /proc/<pid>/stat are printed beside it, but they are sampled at the 100 Hz tick: a daemon that
  runs in short bursts is charged whole ticks at random, so ~35 ticks in a 30 s window scatter by
  +-sqrt(35), about 17 %, which the scheduler's own clock does not;
* peak RSS: VmHWM from /proc/<pid>/status just before SIGTERM (so it includes start-up);
* Modbus requests per poll cycle: the simulator's request counters (printed when it stops, after
  the daemon stopped) over the polls delivered (distinct device+ts among received readings);
* latency p50/p99/max: subscriber receive time minus the reading's ``ts`` (same clock);
* delivery: distinct seqs received, duplicates, and seqs missing below the highest.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import free_port, running_mosquitto, stop_process, wait_for_port

from gateway.sim.modbus import profile_points

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_DIR = ROOT / "gateway"
UNIT = ROOT / "systemd" / "street-gateway.service"
PROFILE = "e2e_cabinet"
GATEWAY = "bench-e2e"
PREFIX = "bench"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
Popen = subprocess.Popen[bytes]

# Issue 7: our targets, and ThingsBoard IoT Gateway 3.8.5 measured on the same workload.
TARGETS = {"cpu": 0.05, "rss_mb": 55.0, "requests_per_cycle": 20, "p99_ms": 250.0}
THINGSBOARD = {"cpu": 0.50, "rss_mb": 65.0, "requests_per_cycle": 200, "p99_ms": 255.0}


@dataclass
class Subscriber:
    """Counts what reaches the broker's far side, and how late."""

    received: int = 0
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    polls: set[tuple[str, int]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    measuring: bool = False
    first: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, payload: bytes) -> None:
        now_ms = time.time() * 1000
        message = json.loads(payload)
        for reading in message["readings"]:
            seq = reading["seq"]
            if seq in self.seqs:
                self.duplicates += 1
                continue
            self.seqs.add(seq)
            self.received += 1
            self.polls.add((reading["device"], reading["ts"]))
            if self.measuring:
                self.latencies_ms.append(now_ms - reading["ts"])
        self.first.set()

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-e2e-sub") as client:
            await client.subscribe(f"{PREFIX}/{GATEWAY}/readings", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.on_message(message.payload)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / CLOCK_TICK, int(fields[12]) / CLOCK_TICK  # utime, stime


def cpu_clock(pid: int) -> float:
    """The process's CPU time in seconds, all threads, as the scheduler counts it (ns)."""
    return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)


def wakeups(pid: int) -> int:
    """Context switches of all the process's threads: how often it went to sleep and woke."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError), (task / "status").open() as f:
            for line in f:
                if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                    total += int(line.split()[1])
    return total


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_config(
    workdir: Path, mqtt_port: int, status_port: int, sim_ports: list[int], devices: int
) -> Path:
    per_port = -(-devices // len(sim_ports))
    sources = []
    for k, port in enumerate(sim_ports):
        units = range(k * per_port + 1, min(devices, (k + 1) * per_port) + 1)
        sources.append({
            "name": f"cabinet-{k}", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
            "devices": [{"name": f"dev-{u:02d}", "unit": u, "interval": "1s",
                         "points": profile_points(PROFILE)} for u in units],
        })  # fmt: skip
    config = {
        "gateway": {"id": GATEWAY},
        "buffer": {"path": str(workdir / "buffer.db")},
        "uplink": {"servers": [f"mqtt://127.0.0.1:{mqtt_port}"], "topic_prefix": PREFIX},
        "status": {"listen": f"127.0.0.1:{status_port}"},
        "sources": sources,
    }  # default batch, buffer sync, qos: what we claim
    path = workdir / "gateway.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def start_simulators(workdir: Path, devices: int, connections: int) -> list[tuple[int, Popen]]:
    per_port = -(-devices // connections)
    sims = []
    for k in range(connections):
        port = free_port()
        units = range(k * per_port + 1, min(devices, (k + 1) * per_port) + 1)
        args = [a for u in units for a in ("--unit", f"{u}:{PROFILE}")]
        with (workdir / f"sim-{k}.out").open("wb") as out:
            sims.append((port, subprocess.Popen(
                [sys.executable, "-m", "gateway.sim", "modbus", "--tcp", f"127.0.0.1:{port}",
                 *args], stdout=out, stderr=subprocess.STDOUT,
            )))  # fmt: skip
    for port, _ in sims:
        wait_for_port(port)
    return sims


def daemon_command(config: Path, cprofile: str | None) -> list[str]:
    if cprofile:
        return [sys.executable, "-m", "cProfile", "-o", cprofile, "-m", "gateway", "run",
                "-c", str(config)]  # fmt: skip
    return [str(Path(sys.executable).parent / "street-gateway"), "run", "-c", str(config)]


def unit_environment() -> dict[str, str]:
    """The systemd unit's ``Environment=`` settings: the daemon runs here as it runs there."""
    env = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def start_daemon(command: list[str], workdir: Path) -> Popen:
    # The deployed venv holds .pyc files (pip compiles on install; the unit's /opt is read-only).
    compileall.compile_dir(GATEWAY_DIR, quiet=1)
    env = {**os.environ, **unit_environment()}
    with (workdir / "daemon.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def fetch_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        status: dict[str, Any] = json.load(response)
    return status


def sim_requests(workdir: Path, connections: int) -> int:
    total = 0
    for k in range(connections):
        for line in (workdir / f"sim-{k}.out").read_text().splitlines():
            if line.startswith("requests "):
                total += sum(int(pair.partition(":")[2]) for pair in line.split()[1:])
    return total


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    with running_mosquitto(workdir) as broker:
        sims = start_simulators(workdir, args.devices, args.connections)
        daemon: Popen | None = None
        sub = Subscriber()
        ready = asyncio.Event()
        try:
            status_port = free_port()
            config = write_config(
                workdir, broker.port, status_port, [p for p, _ in sims], args.devices
            )
            async with asyncio.TaskGroup() as group:
                listener = group.create_task(sub.run(broker.port, ready), name="subscriber")
                await asyncio.wait_for(ready.wait(), 10)
                daemon = start_daemon(daemon_command(config, args.cprofile), workdir)
                await asyncio.wait_for(sub.first.wait(), 30)  # main() prints the daemon's log
                await asyncio.sleep(args.warmup)
                cpu0, clock0, wake0 = (
                    cpu_seconds(daemon.pid),
                    cpu_clock(daemon.pid),
                    wakeups(daemon.pid),
                )
                count0, t0 = sub.received, time.perf_counter()
                sub.measuring = True
                await asyncio.sleep(args.seconds)
                sub.measuring = False
                cpu1, clock1, wake1 = (
                    cpu_seconds(daemon.pid),
                    cpu_clock(daemon.pid),
                    wakeups(daemon.pid),
                )
                count1, t1 = sub.received, time.perf_counter()
                hwm_kb = proc_status_kb(daemon.pid, "VmHWM")
                rss_kb = proc_status_kb(daemon.pid, "VmRSS")
                status = await asyncio.to_thread(fetch_status, status_port)
                stop_process(daemon, timeout=10)
                exit_code = daemon.returncode
                await asyncio.sleep(1.0)  # what the shutdown flushed reaches the subscriber
                listener.cancel()
        finally:
            if daemon is not None:
                stop_process(daemon)
            for _, sim in sims:
                stop_process(sim)
    devices = [d for s in status["sources"] for d in s["devices"]]
    polls = len(sub.polls)
    requests = sim_requests(workdir, args.connections)
    delivered = count1 - count0
    max_seq = max(sub.seqs, default=0)
    return {
        "window_s": t1 - t0,
        "delivered": delivered,
        "readings_per_s": delivered / (t1 - t0),
        "user_s": cpu1[0] - cpu0[0],
        "system_s": cpu1[1] - cpu0[1],
        "cpu_s": clock1 - clock0,
        "cpu": 1000 * (clock1 - clock0) / max(delivered, 1),
        "wakeups_per_s": (wake1 - wake0) / (t1 - t0),
        "rss_mb": hwm_kb / 1024,
        "rss_now_mb": rss_kb / 1024,
        "requests": requests,
        "polls": polls,
        "requests_per_poll": requests / max(polls, 1),
        "requests_per_cycle": args.devices * requests / max(polls, 1),
        "p50_ms": percentile(sub.latencies_ms, 0.50),
        "p99_ms": percentile(sub.latencies_ms, 0.99),
        "max_ms": max(sub.latencies_ms),
        "received": sub.received,
        "duplicates": sub.duplicates,
        "missing": max_seq - len(sub.seqs),
        "reads_failed": sum(d["reads_failed"] for d in devices),
        "exit_code": exit_code,
    }


def report(args: argparse.Namespace, r: dict[str, float]) -> None:
    rows = [
        ("CPU s per 1,000 readings", f"{r['cpu']:.4f}", "<= 0.05", f"{THINGSBOARD['cpu']:.2f}",
         r["cpu"] <= TARGETS["cpu"]),
        ("peak RSS (VmHWM), MB", f"{r['rss_mb']:.1f}", "< 55", f"{THINGSBOARD['rss_mb']:.0f}",
         r["rss_mb"] < TARGETS["rss_mb"]),
        ("Modbus requests per poll cycle", f"{r['requests_per_cycle']:.1f}", "20",
         f"{THINGSBOARD['requests_per_cycle']}",
         r["requests_per_cycle"] <= TARGETS["requests_per_cycle"] + 0.5),
        ("latency p50, ms", f"{r['p50_ms']:.0f}", "", "", True),
        ("latency p99, ms", f"{r['p99_ms']:.0f}", "< 250", f"{THINGSBOARD['p99_ms']:.0f}",
         r["p99_ms"] < TARGETS["p99_ms"]),
    ]  # fmt: skip
    print(
        f"{args.devices} Modbus TCP devices x 10 points every 1s over {args.connections} "
        f"connection(s); window {r['window_s']:.1f}s after {args.warmup:g}s warm-up"
    )
    print("| figure | street-gateway | target | ThingsBoard IoT Gateway 3.8.5 | met |")
    print("| --- | --- | --- | --- | --- |")
    for name, ours, target, theirs, met in rows:
        print(f"| {name} | {ours} | {target} | {theirs} | {'yes' if met else 'NO'} |")
    print(
        f"delivered in window: {r['delivered']:.0f} readings ({r['readings_per_s']:.1f}/s), "
        f"daemon CPU {r['cpu_s']:.3f}s (ticks: {r['user_s']:.2f}s user + {r['system_s']:.2f}s "
        "system), "
        f"{r['wakeups_per_s']:.0f} context switches/s; latency max {r['max_ms']:.0f} ms; "
        f"RSS at end {r['rss_now_mb']:.1f} MB"
    )
    print(
        f"whole run: {r['received']:.0f} distinct seqs received, {r['duplicates']:.0f} "
        f"duplicates, {r['missing']:.0f} missing below the highest; {r['polls']:.0f} polls, "
        f"{r['requests']:.0f} Modbus requests ({r['requests_per_poll']:.2f} per device poll), "
        f"{r['reads_failed']:.0f} failed polls; daemon exit code {r['exit_code']:.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="after the first delivery")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--connections", type=int, default=1, help="simulator processes/ports")
    parser.add_argument("--cprofile", metavar="FILE", help="run the daemon under cProfile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        try:
            result = asyncio.run(run(args, workdir))
        except BaseException:
            with contextlib.suppress(OSError):
                print((workdir / "daemon.log").read_text()[-3000:], file=sys.stderr)
            raise
    report(args, result)
    if args.cprofile:
        print(f"profile written to {args.cprofile} (python -m pstats {args.cprofile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
