"""SDI-12: the pure protocol's cost per answer, and what a measurement costs on a bus with
SDI-12's own timing (the simulated adapter at 1200 baud): wall time per poll, M against C, and
the gateway's CPU per poll.

Run: .venv/bin/python bench/bench_sdi12.py   (about 20 s, no network)
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import tempfile
import time
from pathlib import Path

from gateway.model import Sample
from gateway.sources.sdi12 import protocol
from gateway.sources.sdi12.config import Sdi12Source
from gateway.sources.sdi12.sim import RiverGauge, SimulatedSdi12Bus
from gateway.sources.sdi12.source import Sdi12SensorSource

POINTS = [{"name": "level", "index": 0}, {"name": "temp", "index": 1}, {"name": "v", "index": 2}]


def bench_pure(n: int = 100_000) -> None:
    answer = "0+3.14+2.718+1.414Ipz"
    start = time.perf_counter()
    for _ in range(n):
        protocol.parse_data(answer, "0", crc=True, measure="M")
    per = (time.perf_counter() - start) / n * 1e6
    print(f"pure: a 3-value D answer with its CRC checked and parsed: {per:.1f} us")
    start = time.perf_counter()
    for _ in range(n):
        protocol.parse_announced("00013", "0", "M")
    per = (time.perf_counter() - start) / n * 1e6
    print(f"pure: an atttn answer parsed: {per:.2f} us")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


async def bench_bus(measure: str, sensors: int, seconds: float = 8.0) -> None:
    """``sensors`` gauges on one bus at 1200-baud timing, each announcing 1 s and ready in
    0.5 s, polled every second: polls per second the bus carries, and CPU per poll."""
    link = Path(tempfile.mkdtemp()) / "tty"
    gauges = [RiverGauge(str(k), announce_s=1, ready_s=0.5) for k in range(sensors)]
    samples: list[Sample] = []
    with SimulatedSdi12Bus(gauges, link):
        config = Sdi12Source.model_validate(
            {"name": "bus", "kind": "sdi12", "port": str(link), "devices": [
                {"name": f"g{k}", "address": str(k), "interval": "1s", "measure": measure,
                 "points": POINTS} for k in range(sensors)]}
        )  # fmt: skip
        source = Sdi12SensorSource(config, samples.append)
        task = asyncio.create_task(source.run())
        await asyncio.sleep(2.0)
        before, cpu, start = len(samples), _cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        polls, elapsed, used = len(samples) - before, time.perf_counter() - start, _cpu() - cpu
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failed = sum(core.stats.reads_failed for core in source.cores)
    print(
        f"{sensors} gauge(s), measure {measure}, every 1 s: {polls / elapsed:.2f} polls/s "
        f"(of {sensors}/s wanted), {failed} failed, {used / max(polls, 1) * 1e3:.2f} ms CPU a poll "
        "(event loop thread)"
    )


async def main() -> None:
    bench_pure()
    await bench_bus("M", 1)
    await bench_bus("M", 3)
    await bench_bus("C", 3)


if __name__ == "__main__":
    asyncio.run(main())
