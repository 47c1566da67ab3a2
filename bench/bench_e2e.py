"""End to end, as deployed: simulated Modbus TCP devices -> `street-gateway run` -> mosquitto.

    .venv/bin/python bench/bench_e2e.py [--seconds 60] [--warmup 5] [--devices 20]
                                        [--connections 1] [--outage SECONDS] [--cprofile FILE]

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
  Its environment adds the ``Environment=`` lines of ``systemd/street-gateway.service``. It
  runs on the event loop it runs on when deployed (uvloop where installed, gateway/eventloop.py;
  the report's first line names it): ``STREET_GATEWAY_EVENT_LOOP=asyncio`` in this command's
  environment measures it on asyncio's own loop;
* the subscriber: an aiomqtt client in this process, QoS 1, on ``P/G/#`` (samples, meta,
  status: everything the link carries);
* with ``--outage S``: a FaultProxy (tests/proxy.py) between the daemon and mosquitto, in this
  process; the subscriber still talks to mosquitto directly.

A sample is one poll of one device (ten point values here). Figures, over the ``--seconds``
window that follows ``--warmup``:

* CPU seconds of the daemon per 1,000 point values delivered: the process's CPU clock (all
  threads, read with ``clock_gettime`` on its ``CPUCLOCK_SCHED`` clock id, to the nanosecond) at
  the window's ends, divided by the point values in the samples the subscriber received in it
  (each seq counted once). utime/stime from /proc/<pid>/stat are printed beside it, but they are
  sampled at the 100 Hz tick: a daemon that runs in short bursts is charged whole ticks at
  random, so ~35 ticks in a 30 s window scatter by +-sqrt(35), about 17 %, which the
  scheduler's own clock does not;
* bytes per point: every MQTT PUBLISH packet that reached the subscriber in the window, whole
  (topic, payload and header, ``gateway.uplink.meter.publish_size``), over the point values
  received in it: what an LTE plan pays per value. Per sample and per hour beside it;
* peak RSS: VmHWM from /proc/<pid>/status just before SIGTERM (so it includes start-up);
* Modbus requests per poll cycle: the simulator's request counters (printed when it stops, after
  the daemon stopped) over the polls delivered (distinct samples received);
* latency p50/p99/max: subscriber receive time minus the sample's ``ts`` (same clock), of
  the samples received in the window that were not sent as backlog (``historical``);
* delivery: distinct seqs received, duplicates, and seqs missing below the highest.

``--outage S`` cuts the daemon's link (connections reset, new ones refused) for S seconds in the
middle of the window (which grows by S): the daemon's RSS is sampled every 0.1 s during the cut
(its peak reported), and the backlog's drain is timed from the restore until the subscriber
holds every seq the buffer had handed out at that moment.
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
from proxy import FaultProxy
from support import free_port, running_mosquitto, stop_process, wait_for_port

import gateway
from gateway.sources.modbus.sim import profile_points
from gateway.uplink.meter import publish_size

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_DIR = Path(gateway.__file__).parent  # the tree measured (PYTHONPATH may name another)
UNIT = ROOT / "systemd" / "street-gateway.service"
PROFILE = "e2e_cabinet"
GATEWAY = "bench-e2e"
PREFIX = "bench"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
Popen = subprocess.Popen[bytes]

# Issue 7: our targets, and ThingsBoard IoT Gateway 3.8.5 measured on the same workload (its
# "readings" were point values: the CPU figures are per 1,000 point values).
TARGETS = {"cpu": 0.05, "rss_mb": 55.0, "requests_per_cycle": 20, "p99_ms": 250.0}
THINGSBOARD = {"cpu": 0.50, "rss_mb": 65.0, "requests_per_cycle": 200, "p99_ms": 255.0}


@dataclass
class Subscriber:
    """Counts what reaches the broker's far side, how late, and how many bytes it took."""

    received: int = 0  # distinct samples
    points: int = 0  # point values in them
    bytes: int = 0  # PUBLISH packets, whole, of every message (duplicates, meta, status too)
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    polls: set[tuple[str, int]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    alarm_latencies_ms: list[float] = field(default_factory=list)  # poll that crossed -> here
    meta: dict[str, Any] | None = None
    metas: int = 0
    contiguous: int = 0  # every seq up to it was received
    measuring: bool = False
    first: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a samples message

    def on_message(self, topic: str, payload: bytes, qos: int) -> None:
        now_ms = time.time() * 1000
        self.bytes += publish_size(topic, payload, qos)
        kind = topic.rpartition("/")[2]
        if kind == "meta":
            self.meta = json.loads(payload)
            self.metas += 1
        if kind == "alarms" and self.measuring:
            self.alarm_latencies_ms.append(now_ms - json.loads(payload)["ts"])
        if kind not in ("samples", "samples.zst"):
            return
        message = json.loads(zstd_inflate(payload) if kind == "samples.zst" else payload)
        live = not message.get("historical", False)
        for sample in message["samples"]:
            seq = sample["seq"]
            if seq in self.seqs:
                self.duplicates += 1
                continue
            self.seqs.add(seq)
            self.received += 1
            self.points += len(sample["values"])
            self.polls.add((sample["device"], sample["ts"]))
            if self.measuring and live:
                self.latencies_ms.append(now_ms - sample["ts"])
        while self.contiguous + 1 in self.seqs:
            self.contiguous += 1
        self.first.set()
        self.arrived.set()

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-e2e-sub") as client:
            client.pending_calls_threshold = 1000
            await client.subscribe(f"{PREFIX}/{GATEWAY}/#", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.on_message(message.topic.value, message.payload, int(message.qos))


def zstd_inflate(frame: bytes) -> bytes:
    """A consumer's decoding of ``P/G/samples.zst`` (docs/reference.md), with the library only,
    so this bench also measures a tree from before uplink.compression."""
    import zstandard  # noqa: PLC0415

    size = zstandard.frame_content_size(frame)
    assert 0 <= size <= 2**26, size
    data: bytes = zstandard.ZstdDecompressor().decompress(frame)
    return data


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


def write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (``/proc/<pid>/io``): counted when it
    dirties a page of a file (a page cache write that will reach the disk), whatever the call."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise KeyError("write_bytes")


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
    workdir: Path,
    mqtt_port: int,
    status_port: int,
    sim_ports: list[int],
    devices: int,
    *,
    report: str | None = None,
    seal_interval: str | None = None,
    compression: str | None = None,
    alarms: bool = False,
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
        if report is not None:  # report by exception on every device
            for device in sources[-1]["devices"]:
                band = report if report.endswith("%") else float(report)
                device["report"] = {"deadband": band, "max_silence": "5m"}
    config = {
        "gateway": {"id": GATEWAY},
        "buffer": {"path": str(workdir / "buffer.db")},
        "uplink": {"servers": [f"mqtt://127.0.0.1:{mqtt_port}"], "topic_prefix": PREFIX},
        "status": {"listen": f"127.0.0.1:{status_port}"},
        "sources": sources,
    }  # default batch, buffer sync, qos: what we claim
    if seal_interval is not None:  # "0" measures the daemon without seals
        config["security"] = {"seal_interval": seal_interval}
    if compression is not None:
        config["uplink"]["compression"] = compression
    if alarms:  # f0 swings around 230 V (period ~24 s): each device raises and clears in turn
        config["alarms"] = [
            {"point": f"{d['name']}/f0", "above": 230.5, "clear_below": 229.5}
            for source in sources for d in source["devices"]
        ]  # fmt: skip
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


@dataclass
class Outage:
    """What the daemon did while its link was cut."""

    peak_rss_kb: int = 0
    buffered: int = 0  # the buffer's last_seq at the restore
    drain_s: float = 0.0  # from the restore until the subscriber held every seq to ``buffered``
    written: int = 0  # write_bytes during the cut
    stored: int = 0  # seqs handed out during the cut


async def cut_link(
    proxy: FaultProxy, daemon: Popen, sub: Subscriber, status_port: int, seconds: float
) -> Outage:
    result = Outage()
    await proxy.outage()
    written0 = write_bytes(daemon.pid)
    seq0 = int((await asyncio.to_thread(fetch_status, status_port))["buffer"]["last_seq"])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result.peak_rss_kb = max(result.peak_rss_kb, proc_status_kb(daemon.pid, "VmRSS"))
        await asyncio.sleep(0.1)
    status = await asyncio.to_thread(fetch_status, status_port)
    result.buffered = int(status["buffer"]["last_seq"])
    result.written = write_bytes(daemon.pid) - written0
    result.stored = result.buffered - seq0
    await proxy.restore()
    restored = time.monotonic()
    async with asyncio.timeout(max(60.0, 4 * seconds)):
        while sub.contiguous < result.buffered:
            sub.arrived.clear()
            await sub.arrived.wait()
    result.drain_s = time.monotonic() - restored
    return result


async def measure(
    args: argparse.Namespace,
    daemon: Popen,
    sub: Subscriber,
    status_port: int,
    proxy: FaultProxy | None,
) -> dict[str, Any]:
    """The window's figures (with the outage in its middle, when asked)."""
    cpu0, clock0, wake0 = cpu_seconds(daemon.pid), cpu_clock(daemon.pid), wakeups(daemon.pid)
    written0 = write_bytes(daemon.pid)
    count0, points0, bytes0, t0 = sub.received, sub.points, sub.bytes, time.perf_counter()
    sub.measuring = True
    outage = None
    if proxy is not None:
        await asyncio.sleep(args.seconds / 2)
        outage = await cut_link(proxy, daemon, sub, status_port, args.outage)
        left = args.seconds + args.outage - (time.perf_counter() - t0)
        await asyncio.sleep(max(0.0, left))
    else:
        await asyncio.sleep(args.seconds)
    sub.measuring = False
    cpu1, clock1, wake1 = cpu_seconds(daemon.pid), cpu_clock(daemon.pid), wakeups(daemon.pid)
    written = write_bytes(daemon.pid) - written0
    count1, points1, bytes1, t1 = sub.received, sub.points, sub.bytes, time.perf_counter()
    points = points1 - points0
    window = t1 - t0
    figures = {
        "window_s": window,
        "delivered": count1 - count0,
        "points": points,
        "points_per_s": points / window,
        "user_s": cpu1[0] - cpu0[0],
        "system_s": cpu1[1] - cpu0[1],
        "cpu_s": clock1 - clock0,
        "cpu": 1000 * (clock1 - clock0) / max(points, 1),
        "wakeups_per_s": (wake1 - wake0) / window,
        "bytes": bytes1 - bytes0,
        "bytes_per_point": (bytes1 - bytes0) / max(points, 1),
        "bytes_per_sample": (bytes1 - bytes0) / max(count1 - count0, 1),
        "bytes_per_hour": (bytes1 - bytes0) * 3600 / window,
        "written": written,
        "written_per_point": written / max(points, 1),
    }
    if outage is not None:
        figures |= {
            "outage_rss_mb": outage.peak_rss_kb / 1024,
            "outage_buffered": outage.buffered,
            "outage_drain_s": outage.drain_s,
            "outage_written": outage.written,
            # the outage's samples hold as many points each as the window's average
            "outage_written_per_point": outage.written
            / max(1.0, outage.stored * points / max(count1 - count0, 1)),
            # the link-up part of the window alone
            "up_written_per_point": (written - outage.written)
            / max(1.0, points - outage.stored * points / max(count1 - count0, 1)),
        }
    return figures


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with running_mosquitto(workdir) as broker:
        sims = start_simulators(workdir, args.devices, args.connections)
        daemon: Popen | None = None
        sub = Subscriber()
        ready = asyncio.Event()
        try:
            async with contextlib.AsyncExitStack() as stack:
                proxy = None
                mqtt_port = broker.port
                if args.outage:
                    proxy = await stack.enter_async_context(FaultProxy(broker.port))
                    mqtt_port = proxy.port
                status_port = free_port()
                config = write_config(
                    workdir, mqtt_port, status_port, [p for p, _ in sims], args.devices,
                    report=args.report, seal_interval=args.seal_interval,
                    compression=args.compression, alarms=args.alarms,
                )  # fmt: skip
                async with asyncio.TaskGroup() as group:
                    listener = group.create_task(sub.run(broker.port, ready), name="subscriber")
                    await asyncio.wait_for(ready.wait(), 10)
                    daemon = start_daemon(daemon_command(config, args.cprofile), workdir)
                    await asyncio.wait_for(sub.first.wait(), 30)  # main() prints the daemon's log
                    await asyncio.sleep(args.warmup)
                    figures = await measure(args, daemon, sub, status_port, proxy)
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
    max_seq = max(sub.seqs, default=0)
    meta_devices = (sub.meta or {}).get("devices", {})
    units = sum(1 for d in meta_devices.values() for p in d["points"].values() if p.get("unit"))
    return figures | {
        "rss_mb": hwm_kb / 1024,
        "rss_now_mb": rss_kb / 1024,
        "requests": requests,
        "polls": polls,
        "requests_per_poll": requests / max(polls, 1),
        "requests_per_cycle": args.devices * requests / max(polls, 1),
        "p50_ms": percentile(sub.latencies_ms, 0.50),
        "p99_ms": percentile(sub.latencies_ms, 0.99),
        "max_ms": max(sub.latencies_ms),
        "alarms": len(sub.alarm_latencies_ms),
        "alarm_p50_ms": percentile(sub.alarm_latencies_ms or [0.0], 0.50),
        "alarm_p99_ms": percentile(sub.alarm_latencies_ms or [0.0], 0.99),
        "alarm_max_ms": max(sub.alarm_latencies_ms or [0.0]),
        "received": sub.received,
        "received_points": sub.points,
        "duplicates": sub.duplicates,
        "missing": max_seq - len(sub.seqs),
        "reads_failed": sum(d["reads_failed"] for d in devices),
        "exit_code": exit_code,
        "metas": sub.metas,
        "meta_devices": len(meta_devices),
        "meta_units": units,
        "uplink_bytes_total": status["uplink"]["bytes_total"],
        "uplink_bytes_per_sample": status["uplink"]["bytes_per_sample"] or 0.0,
        "event_loop": status["gateway"].get("event_loop") or "asyncio",
    }


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    rows = [
        ("CPU s per 1,000 points", f"{r['cpu']:.4f}", "<= 0.05", f"{THINGSBOARD['cpu']:.2f}",
         r["cpu"] <= TARGETS["cpu"]),
        ("peak RSS (VmHWM), MB", f"{r['rss_mb']:.1f}", "< 55", f"{THINGSBOARD['rss_mb']:.0f}",
         r["rss_mb"] < TARGETS["rss_mb"]),
        ("Modbus requests per poll cycle", f"{r['requests_per_cycle']:.1f}", "20",
         f"{THINGSBOARD['requests_per_cycle']}",
         r["requests_per_cycle"] <= TARGETS["requests_per_cycle"] + 0.5),
        ("latency p50, ms", f"{r['p50_ms']:.0f}", "", "", True),
        ("latency p99, ms", f"{r['p99_ms']:.0f}", "< 250", f"{THINGSBOARD['p99_ms']:.0f}",
         r["p99_ms"] < TARGETS["p99_ms"]),
        ("bytes per point (MQTT, whole packets)", f"{r['bytes_per_point']:.1f}", "", "", True),
        ("bytes written to storage per point", f"{r['written_per_point']:.1f}", "", "", True),
    ]  # fmt: skip
    outage = f", {args.outage:g}s outage in its middle" if args.outage else ""
    print(
        f"{args.devices} Modbus TCP devices x 10 points every 1s over {args.connections} "
        f"connection(s); window {r['window_s']:.1f}s after {args.warmup:g}s warm-up{outage}; "
        f"daemon on {r['event_loop']}"
    )
    print("| figure | street-gateway | target | ThingsBoard IoT Gateway 3.8.5 | met |")
    print("| --- | --- | --- | --- | --- |")
    for name, ours, target, theirs, met in rows:
        print(f"| {name} | {ours} | {target} | {theirs} | {'yes' if met else 'NO'} |")
    print(
        f"delivered in window: {r['delivered']:.0f} samples, {r['points']:.0f} points "
        f"({r['points_per_s']:.1f}/s), daemon CPU {r['cpu_s']:.3f}s (ticks: {r['user_s']:.2f}s "
        f"user + {r['system_s']:.2f}s system), "
        f"{r['wakeups_per_s']:.0f} context switches/s; latency max {r['max_ms']:.0f} ms; "
        f"RSS at end {r['rss_now_mb']:.1f} MB"
    )
    print(
        f"link in window: {r['bytes']:.0f} bytes, {r['bytes_per_sample']:.1f} per sample, "
        f"{r['bytes_per_hour'] / 2**20:.2f} MiB/h; the daemon's own count: "
        f"{r['uplink_bytes_total']:.0f} bytes in all, {r['uplink_bytes_per_sample']:.1f} per "
        f"sample over its last minute; written to storage (/proc/<pid>/io write_bytes) "
        f"{r['written']:.0f} bytes"
    )
    if args.alarms:
        print(
            f"alarms in window: {r['alarms']:.0f}, latency from the poll that crossed the "
            f"threshold to the subscriber p50/p99/max {r['alarm_p50_ms']:.1f}/"
            f"{r['alarm_p99_ms']:.1f}/{r['alarm_max_ms']:.1f} ms"
        )
    if args.outage:
        print(
            f"outage {args.outage:g}s: peak RSS during it {r['outage_rss_mb']:.1f} MB; "
            f"backlog up to seq {r['outage_buffered']:.0f} drained {r['outage_drain_s']:.2f}s "
            f"after the restore; written to storage during it {r['outage_written']:.0f} bytes, "
            f"{r['outage_written_per_point']:.1f} per point stored; outside it "
            f"{r['up_written_per_point']:.1f} per point delivered"
        )
    print(
        f"whole run: {r['received']:.0f} distinct seqs received ({r['received_points']:.0f} "
        f"points), {r['duplicates']:.0f} duplicates, {r['missing']:.0f} missing below the "
        f"highest; {r['polls']:.0f} polls, {r['requests']:.0f} Modbus requests "
        f"({r['requests_per_poll']:.2f} per device poll), {r['reads_failed']:.0f} failed polls; "
        f"meta received {r['metas']:.0f}x ({r['meta_devices']:.0f} devices, "
        f"{r['meta_units']:.0f} points with a unit); daemon exit code {r['exit_code']:.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="after the first delivery")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument(
        "--report", metavar="DEADBAND", help="report by exception on every device (e.g. 1%%)"
    )
    parser.add_argument("--connections", type=int, default=1, help="simulator processes/ports")
    parser.add_argument(
        "--seal-interval", default=None, help="security.seal_interval ('0': no seals)"
    )
    parser.add_argument(
        "--outage", type=float, default=0.0, metavar="SECONDS",
        help="cut the broker link this long in the middle of the window",
    )  # fmt: skip
    parser.add_argument("--cprofile", metavar="FILE", help="run the daemon under cProfile")
    parser.add_argument(
        "--compression", choices=["none", "zstd"], help="uplink.compression (default: unset)"
    )
    parser.add_argument(
        "--alarms", action="store_true", help="an alarm on each device's f0 (alarm latency)"
    )
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
