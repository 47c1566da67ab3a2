"""What the status page's history and timeline cost: memory of 200 points' history, time per
sample, and building /status and the page with a full day of events.

    .venv/bin/python bench/bench_status.py [--devices 20] [--points 10]

The workload is issue 7's: 20 devices x 10 points polled every second, for the whole
30-minute window (so every point's ring is full), then 500 events (the store's bound).
Memory is measured with tracemalloc (Python allocations only, which is what the history is).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from status_support import FakeProvider

from gateway.history import SPAN_MS, History
from gateway.model import DeviceStats, Sample, StatusEvent
from gateway.page import render_page
from gateway.status import SourceView, build_status

T0 = 1_764_169_200_000


def samples(devices: int, points: int, seconds: int) -> list[Sample]:
    return [
        Sample(
            f"cab-{d}", T0 + s * 1000, {f"p{p}": 20.0 + math.sin(s / 60 + p) for p in range(points)}
        )
        for s in range(seconds)
        for d in range(devices)
    ]


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--points", type=int, default=10)
    args = parser.parse_args()
    n_points = args.devices * args.points
    seconds = SPAN_MS // 1000
    feed = samples(args.devices, args.points, seconds)

    timed = History()  # timed without tracemalloc, which slows every allocation
    started = time.perf_counter()
    for sample in feed:
        timed.observe(sample)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    history = History()
    before = tracemalloc.get_traced_memory()[0]
    for sample in feed:
        history.observe(sample)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    now = T0 + seconds * 1000
    entries = sum(len(e) for d in range(args.devices) for e in history.of(f"cab-{d}", now).values())
    of_s = min(_timed(lambda: [history.of(f"cab-{d}", now) for d in range(args.devices)])
               for _ in range(30))  # fmt: skip
    print(f"history of {n_points} points, {seconds} s at 1 poll/s: {held / 1024:.0f} KiB held "
          f"({held / n_points:.0f} B a point), {entries} entries "
          f"({entries / n_points:.0f} a point)")  # fmt: skip
    print(f"observe: {elapsed / len(feed) * 1e6:.1f} us a sample of {args.points} points "
          f"({elapsed / (len(feed) * args.points) * 1e6:.2f} us a value)")  # fmt: skip
    print(f"history of every point, as /status asks it: {of_s * 1000:.1f} ms (best of 30)")

    devices = [
        DeviceStats(f"cab-{d}", "bus", 1.0, state="ok", last_ok_ts=now,
                    last_values=dict(feed[-args.devices + d].values))
        for d in range(args.devices)
    ]  # fmt: skip
    provider = FakeProvider(source_views=[SourceView("bus", "modbus-tcp", devices)], trends=history)
    provider.stored_events = [
        StatusEvent(now - i * 170_000, "link_down" if i % 2 else "link_up", f"event {i}",
                    {"server": "mqtt://broker:1883"})
        for i in range(500)
    ]  # fmt: skip
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        doc = build_status(provider, now)
    status_s = (time.perf_counter() - started) / runs
    started = time.perf_counter()
    for _ in range(runs):
        page = render_page(doc)
    page_s = (time.perf_counter() - started) / runs
    print(f"/status with {n_points} points' history and 500 events: {status_s * 1000:.1f} ms")
    print(f"page: {page_s * 1000:.1f} ms to render, {len(page.encode()) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
