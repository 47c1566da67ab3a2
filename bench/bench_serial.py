"""Serial lines: pure framer + parser rate, and lines/s through a pty into SerialSensorSource.

Run: .venv/bin/python bench/bench_serial.py   (about 5 s, no network)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from gateway.codec.lines import LineFramer, make_parser
from gateway.model import Sample
from gateway.sources.serial.config import ParseConfig, SerialPoint, SerialSource
from gateway.sources.serial.sim import SimulatedSerialSensor
from gateway.sources.serial.source import SerialSensorSource

REGEX = r"LAeq=(?P<laeq>\S+) LAmax=(?P<lamax>\S+)"
POINTS = [SerialPoint(name="laeq", unit="dBA"), SerialPoint(name="lamax", unit="dBA")]


def bench_pure(lines: int = 200_000) -> None:
    data = b"LAeq=54.2 LAmax=61.0\r\n" * lines
    for name, parse, payload in [
        ("regex", ParseConfig(regex=REGEX), data),
        (
            "kv",
            ParseConfig(format="kv"),
            data.replace(b"LAeq", b"laeq").replace(b"LAmax", b"lamax"),
        ),
    ]:
        framer, parser = LineFramer(b"\r\n"), make_parser(parse, POINTS)
        start = time.perf_counter()
        for offset in range(0, len(payload), 1024):  # reads of 1024 bytes, as the transport does
            for line in framer.feed(payload[offset : offset + 1024]):
                assert isinstance(line, str)
                parser(line)
        elapsed = time.perf_counter() - start
        print(f"pure framer+{name} parser: {lines / elapsed:,.0f} lines/s")


async def bench_pty(seconds: float = 3.0) -> None:
    link = Path(tempfile.mkdtemp()) / "tty"
    samples: list[Sample] = []
    with SimulatedSerialSensor(link, period=0.00002, seed=1) as sim:
        config = SerialSource.model_validate(
            {"name": "noise-1", "kind": "serial", "port": str(link), "line_end": "\r\n",
             "parse": {"regex": REGEX}, "points": [{"name": "laeq"}, {"name": "lamax"}]}
        )  # fmt: skip
        source = SerialSensorSource(config, samples.append)
        task = asyncio.create_task(source.run())
        await asyncio.sleep(0.3)
        stats = source.devices[0]
        start_ok, start = stats.reads_ok, time.perf_counter()
        await asyncio.sleep(seconds)
        good = stats.reads_ok - start_ok
        elapsed = time.perf_counter() - start
        points = sum(len(s.values) for s in samples) / max(len(samples), 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        print(
            f"pty -> SerialSensorSource: {good / elapsed:,.0f} lines/s "
            f"(one sample of {points:g} points each: {points * good / elapsed:,.0f} points/s), "
            f"parse_errors={stats.parse_errors}, "
            f"sim lines sent={sim.lines_sent}, bytes dropped by the sim={sim.bytes_dropped}"
        )


if __name__ == "__main__":
    bench_pure()
    asyncio.run(bench_pty())
