"""An HTTP flood on the status endpoint while the daemon polls a device every second: does the
polling keep its pace, is /health still answered, and what does an answer cost?

    .venv/bin/python bench/bench_status_flood.py [--seconds 15] [--quiet 10] [--connections 64]
                                                 [--tree PATH]

Processes, all on 127.0.0.1 with free ports and each stopped by pid:

* mosquitto (tests/support.py), the daemon's broker;
* a Modbus TCP device in this process that answers every read with zeros and notes when each
  request came: the poll interval is the time between two requests (one device, one point,
  ``interval: 1s``);
* the daemon, ``PATH/.venv/bin/street-gateway run`` (``--tree``, default this tree: another
  checkout measures another version under the same load);
* the flood: this script with ``--flood`` in its own process, ``--connections`` keep-alive
  connections from 127.0.0.1 (``--peers N``: spread over 127.0.1.1..N, a flood from many
  hosts) each sending ``GET /health`` 50 at a time (pipelined), reading the answers and
  sending again, reconnecting whenever one is closed;
* a probe in this process: ``GET /health`` every 0.5 s from 127.0.0.2 (another peer, as a
  monitoring system would be) on a fresh connection, its status and time.

Figures: the poll interval's p50/p99/max with no load (``--quiet`` seconds) and under the flood
(``--seconds``); the flood's answers by status and per second; the daemon's CPU seconds (its
scheduler clock); the probe's answers and its slowest.

``--capacity`` measures the serving path's own speed instead: a StatusServer alone in a process
(the tree's ``tests/status_support.healthy_provider()``, on asyncio), its per-peer limits lifted
where it has them, flooded the same way from 8 connections: answers per second and the server's
CPU seconds per 1,000 answers (alternate ``--tree`` between two checkouts to compare them).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_e2e import cpu_clock, percentile, unit_environment
from support import free_port, running_mosquitto, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


# ---------------------------------------------------------------------------------------------
# The flood (its own process)


async def flood(port: int, seconds: float, connections: int, peers: int = 1) -> dict[str, Any]:
    answers: Counter[str] = Counter()
    connects = refused = 0
    deadline = time.monotonic() + seconds

    async def one(source: str) -> None:
        nonlocal connects, refused
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
            except OSError:
                refused += 1
                await asyncio.sleep(0.01)
                continue
            connects += 1
            try:
                while time.monotonic() < deadline:
                    writer.write(REQUEST * 50)
                    got, tail = 0, b""
                    while got < 50:
                        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                            chunk = await reader.read(65536)
                        if not chunk:
                            raise ConnectionResetError
                        data = tail + chunk
                        codes = _STATUS.findall(data)
                        answers.update(code.decode() for code in codes)
                        got += len(codes)
                        tail = data[-16:]
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

    sources = ["127.0.0.1"] if peers == 1 else [f"127.0.1.{k + 1}" for k in range(peers)]
    await asyncio.gather(*(one(sources[k % len(sources)]) for k in range(connections)))
    return {"answers": dict(answers), "connects": connects, "refused_connects": refused}


# ---------------------------------------------------------------------------------------------
# The device, the probe, the daemon


class Device:
    """Modbus TCP: answers every read-holding-registers request with zeros; notes its time."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                request = await reader.readexactly(12)
                self.times.append(time.monotonic())
                count = int.from_bytes(request[10:12], "big")
                pdu = bytes([3, 2 * count]) + bytes(2 * count)
                writer.write(request[:4] + (len(pdu) + 1).to_bytes(2, "big") + request[6:7] + pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def probe(port: int, until: float) -> list[tuple[str, float]]:
    """GET /health every 0.5 s from 127.0.0.2: (status or error, seconds) each."""
    results = []
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=("127.0.0.2", 0)
                )
                writer.write(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                answer = await reader.read()
                writer.close()
            results.append((answer[9:12].decode() or "closed", time.monotonic() - started))
        except (OSError, TimeoutError) as exc:
            results.append((type(exc).__name__, time.monotonic() - started))
        await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    return results


def intervals(times: list[float], start: float, end: float) -> list[float]:
    window = [t for t in times if start <= t <= end]
    return [b - a for a, b in itertools.pairwise(window)]


def spread(values: list[float]) -> str:
    if not values:
        return "no polls"
    return (f"p50 {percentile(values, 0.5):.3f} s, p99 {percentile(values, 0.99):.3f} s, "
            f"max {max(values):.3f} s ({len(values)} intervals)")  # fmt: skip


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    device = Device()
    server = await asyncio.start_server(device.serve, "127.0.0.1", 0)
    device_port = server.sockets[0].getsockname()[1]
    status_port = free_port()
    with running_mosquitto(workdir) as broker:
        config = {
            "gateway": {"id": "flood-bench"},
            "buffer": {"path": str(workdir / "buffer.db")},
            "uplink": {"servers": [f"mqtt://127.0.0.1:{broker.port}"]},
            "status": {"listen": f"127.0.0.1:{status_port}"},
            "sources": [{"name": "bus", "kind": "modbus-tcp", "host": "127.0.0.1",
                         "port": device_port, "devices": [{"name": "meter", "unit": 1,
                         "interval": "1s", "points": [{"name": "v", "table": "holding",
                                                       "address": 0, "type": "uint16"}]}]}],
        }  # fmt: skip
        path = workdir / "gateway.yaml"
        path.write_text(json.dumps(config))
        command = [str(args.tree / ".venv" / "bin" / "street-gateway"), "run", "-c", str(path)]
        env = {**unit_environment(), "PATH": "/usr/bin:/bin"}
        with (workdir / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: ASYNC220 - stopped by pid below
        try:
            wait_for_port(status_port, timeout=30)
            await asyncio.sleep(2)  # the first polls and the link
            quiet_start = time.monotonic()
            await asyncio.sleep(args.quiet)
            flood_start = cpu0 = time.monotonic()
            cpu0 = cpu_clock(daemon.pid)
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--flood", str(status_port), str(args.seconds),
                str(args.connections), str(args.peers), stdout=subprocess.PIPE,
            )  # fmt: skip
            probes = await probe(status_port, flood_start + args.seconds)
            out, _ = await flooder.communicate()
            cpu = cpu_clock(daemon.pid) - cpu0
            flood_end = time.monotonic()
        finally:
            stop_process(daemon)
            server.close()
            for writer in device.writers:
                writer.close()
            await asyncio.sleep(0.2)  # each handler sees its end and returns
            await server.wait_closed()
    flooded = json.loads(out)
    answered = sum(flooded["answers"].values())
    return {
        "quiet": intervals(device.times, quiet_start, flood_start),
        "flood": intervals(device.times, flood_start, flood_end),
        "flooded": flooded,
        "answered": answered,
        "elapsed": flood_end - flood_start,
        "cpu": cpu,
        "probes": probes,
    }


_SERVER = """
import asyncio, sys
sys.path[:0] = [{tree!r}, {tree!r} + "/tests"]
from status_support import healthy_provider
from gateway import httpd
from gateway.status import StatusServer
for name, value in (("PEER_RATE", 1e9), ("PEER_BURST", 1e9), ("MAX_PER_PEER", 64)):
    if hasattr(httpd, name):
        setattr(httpd, name, value)

async def main():
    async with StatusServer(healthy_provider(), host="127.0.0.1", port={port}, token=None):
        print("ready", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def capacity(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVER.format(tree=str(args.tree), port=port),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    await server.stdout.readline()
    try:
        cpu0, started = cpu_clock(server.pid), time.monotonic()
        flooded = await flood(port, args.seconds, 8)
        cpu, elapsed = cpu_clock(server.pid) - cpu0, time.monotonic() - started
    finally:
        server.terminate()
        await server.wait()
    answered = sum(flooded["answers"].values())
    return {"answered": answered, "elapsed": elapsed, "cpu": cpu, "flooded": flooded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--quiet", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--peers", type=int, default=1, help="flood from N addresses 127.0.1.x")
    parser.add_argument("--flood", nargs=4, metavar=("PORT", "SECONDS", "CONNECTIONS", "PEERS"))
    parser.add_argument("--capacity", action="store_true")
    args = parser.parse_args()
    if args.capacity:
        c = asyncio.run(capacity(args))
        print(f"tree {args.tree}: {c['answered'] / c['elapsed']:.0f} answers/s of /health, "
              f"{1000 * c['cpu'] / max(c['answered'], 1):.3f} CPU s per 1,000 "
              f"({c['flooded']['answers']})")  # fmt: skip
        return 0
    if args.flood:
        port, seconds, connections, peers = args.flood
        flooded = flood(int(port), float(seconds), int(connections), int(peers))
        print(json.dumps(asyncio.run(flooded)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    answered, elapsed = r["answered"], r["elapsed"]
    probes = r["probes"]
    print(f"tree {args.tree}: flood of {args.connections} connections from {args.peers} "
          f"address(es) for {args.seconds:.0f} s")  # fmt: skip
    print(f"poll interval, quiet:   {spread(r['quiet'])}")
    print(f"poll interval, flooded: {spread(r['flood'])}")
    print(f"flood answers: {answered} ({answered / elapsed:.0f}/s) by status "
          f"{r['flooded']['answers']}, {r['flooded']['connects']} connections "
          f"(+{r['flooded']['refused_connects']} refused at connect)")  # fmt: skip
    print(f"daemon CPU: {r['cpu']:.2f} s in {elapsed:.1f} s "
          f"({1000 * r['cpu'] / max(answered, 1):.3f} s per 1,000 answers)")  # fmt: skip
    codes = Counter(code for code, _ in probes)
    print(f"/health probe from another peer: {dict(codes)}, slowest "
          f"{max(t for _, t in probes):.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
