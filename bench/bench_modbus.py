"""Modbus source throughput: requests per poll cycle, polls/s over TCP, CPU per 1,000 points.

    .venv/bin/python bench/bench_modbus.py [--seconds 5] [--devices 10]

The simulated units run in a separate process (``gateway.sources.modbus.sim`` over Modbus TCP on
127.0.0.1), so the CPU figure is the gateway side only: pymodbus client, planner, decoder.
Devices poll with a 1 ms interval, i.e. as fast as the connection allows. Each poll hands the
sink one sample; the CPU figure is per 1,000 point values in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import free_port, stop_process, wait_for_port

from gateway.codec.registers import plan_requests
from gateway.model import Sample
from gateway.sources.modbus.config import ModbusTcpSource
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.sim import profile_points
from gateway.sources.modbus.source import ModbusSource

PROFILE = "street_cabinet"  # 10 points: 5 int16, 4 float32, 1 discrete input


async def measure(port: int, devices: int, seconds: float, per_point: bool) -> dict[str, float]:
    config = ModbusTcpSource.model_validate(
        {"name": "bench", "kind": "modbus-tcp", "host": "127.0.0.1", "port": port,
         "timeout": "1s", "retries": 0,
         "devices": [{"name": f"cab-{i}", "unit": i + 1, "interval": "1ms",
                      "points": profile_points(PROFILE)} for i in range(devices)]}
    )  # fmt: skip
    count = samples = 0

    def sink(sample: Sample) -> None:
        nonlocal count, samples
        samples += 1
        count += len(sample.values)

    source = ModbusSource(config, sink)
    if per_point:  # the naive way, for comparison: one request per point
        for device in source._devices:  # a benchmark may reach in
            device.plan = plan_requests(device.config.points, max_gap=-1)
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.5)  # connect and warm up
    polls0 = sum(d.reads_ok for d in source.devices)
    reqs0 = sum(d.requests_total for d in source.devices)
    points0, samples0, cpu0, wall0 = count, samples, time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    polls = sum(d.reads_ok for d in source.devices) - polls0
    reqs = sum(d.requests_total for d in source.devices) - reqs0
    points, cpu, wall = count - points0, time.process_time() - cpu0, time.perf_counter() - wall0
    sampled = samples - samples0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    failed = sum(d.reads_failed for d in source.devices)
    return {
        "polls_per_s": polls / wall,
        "requests_per_s": reqs / wall,
        "requests_per_poll": reqs / max(polls, 1),
        "samples_per_s": sampled / wall,
        "points_per_s": points / wall,
        "cpu_s_per_1000_points": 1000 * cpu / max(points, 1),
        "failed": failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()

    points = [ModbusPoint.model_validate(p) for p in profile_points(PROFILE)]
    plan = plan_requests(points)
    print(f"{PROFILE}: {len(points)} points -> {len(plan)} requests per poll cycle "
          f"(one per point: {len(points)})")  # fmt: skip
    for request in plan:
        print(f"  {request.table} {request.address}+{request.count}: {len(request.points)} points")

    port = free_port()
    units = [arg for i in range(args.devices) for arg in ("--unit", f"{i + 1}:{PROFILE}")]
    sim = subprocess.Popen(
        [sys.executable, "-c", "import sys; from gateway.sources.modbus.sim import main; "
         "sys.exit(main(sys.argv[1:]))", "--tcp", f"127.0.0.1:{port}", *units],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        for label, per_point in (("planned", False), ("one request per point", True)):
            r = asyncio.run(measure(port, args.devices, args.seconds, per_point))
            print(
                f"{label}: {args.devices} devices on one TCP source, {args.seconds:g}s: "
                f"{r['polls_per_s']:.0f} polls/s, {r['requests_per_s']:.0f} requests/s, "
                f"{r['requests_per_poll']:.2f} requests/poll, {r['samples_per_s']:.0f} "
                f"samples/s ({r['points_per_s']:.0f} points/s), "
                f"{r['cpu_s_per_1000_points']:.4f} CPU s per 1,000 points, "
                f"{r['failed']:.0f} failed polls"
            )
    finally:
        stop_process(sim, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
