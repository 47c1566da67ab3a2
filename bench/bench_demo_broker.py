"""The demo's broker choice: mosquitto (when installed) against the embedded amqtt broker.

Start-up time, and QoS 1 messages/s from one publisher (16 in flight, like the uplink's window)
to one subscriber, with ~1 KiB payloads like a samples message of five ten-point polls.

    .venv/bin/python bench/bench_demo_broker.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt

from gateway.demo import local_broker


async def measure(embedded: bool, messages: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        async with local_broker(Path(workdir), embedded=embedded) as (port, _):
            ready_s = time.perf_counter() - started
            payload = b"x" * 1024
            async with (
                aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as sub,
                aiomqtt.Client(
                    "127.0.0.1", port, identifier="bench-pub", max_inflight_messages=16
                ) as pub,
            ):
                await sub.subscribe("bench/#", qos=1)
                window = asyncio.Semaphore(16)

                async def publish_one() -> None:
                    async with window:
                        await pub.publish("bench/x", payload, qos=1)

                t0 = time.perf_counter()
                async with asyncio.TaskGroup() as group:
                    group.create_task(_publish_all(publish_one, messages))
                    received = 0
                    async with asyncio.timeout(120):
                        async for _ in sub.messages:
                            received += 1
                            if received == messages:
                                break
                rate = messages / (time.perf_counter() - t0)
    return ready_s, rate


async def _publish_all(publish_one: Callable[[], Awaitable[None]], messages: int) -> None:
    async with asyncio.TaskGroup() as group:
        for _ in range(messages):
            group.create_task(publish_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # aiomqtt's logger: "pending calls"
    print("| broker | start-up | QoS 1 messages/s (1 KiB) |")
    print("| --- | --- | --- |")
    for embedded, name in ((False, "mosquitto 2.0.11"), (True, "amqtt 0.12 (embedded)")):
        ready_s, rate = asyncio.run(measure(embedded, args.messages))
        print(f"| {name} | {ready_s * 1000:.0f} ms | {rate:,.0f} |")


if __name__ == "__main__":
    main()
