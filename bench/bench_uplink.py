"""Drain a backlog from the durable buffer into a local mosquitto, and time it.

    .venv/bin/python bench/bench_uplink.py [--readings 1000000] [--delay-ms 50]

Fills a Buffer with N readings and one alarm after them (so the alarm is stored *behind* the
backlog), then, for each scenario, starts an Uplink on a copy of that buffer and measures:

* readings/s: N / (time the subscriber counted the last reading - time run() started);
* alarm latency: time from run() start to the alarm's arrival at the subscriber.

Scenarios: ``direct`` (uplink -> mosquitto) and ``proxy`` (through tests/proxy.py adding
``--delay-ms`` each way, i.e. twice that round trip). The subscriber (QoS 1) runs in its own
process and counts readings without decoding them; the proxy runs in its own process too.
Loopback only; every process is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import aiomqtt  # noqa: E402
from support import Mosquitto, running_mosquitto, stop_process  # noqa: E402

from gateway.buffer import Buffer  # noqa: E402
from gateway.config import UplinkConfig  # noqa: E402
from gateway.model import AlarmEvent, Reading  # noqa: E402
from gateway.uplink.mqtt import Uplink  # noqa: E402

GATEWAY = "bench-gw"
PREFIX = "bench"


async def fill(path: Path, n: int) -> int:
    async with Buffer(path, sync="normal", memory_queue_max=200_000) as buffer:
        base = 1_764_169_200_000
        for start in range(0, n, 50_000):
            for i in range(start, min(n, start + 50_000)):
                buffer.put(
                    Reading(
                        device="aq-1", point="pm25", value=i * 0.1, ts_ms=base + i, unit="ug/m3"
                    )
                )
            await buffer.flush()
        buffer.put(AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", base + n))
        return await buffer.flush()


async def subscriber_main(port: int, expect: int) -> None:
    """Runs in a child process: prints `ready`, `alarm T`, `done T N` (T: time.monotonic())."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as client:
        client.pending_calls_threshold = 1000
        await client.subscribe(f"{PREFIX}/{GATEWAY}/+", qos=1)
        print("ready", flush=True)
        count = 0
        async for message in client.messages:
            body = message.payload
            assert isinstance(body, bytes)
            if message.topic.value.endswith("/alarms"):
                print(f"alarm {time.monotonic()}", flush=True)
            elif message.topic.value.endswith("/readings"):
                count += body.count(b'"seq":')
                if count >= expect:
                    print(f"done {time.monotonic()} {count}", flush=True)
                    return


def start_proxy(target_port: int, delay_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    """tests/proxy.py in its own process, so it does not share the uplink's event loop."""
    proxy = subprocess.Popen(
        [sys.executable, str(HERE.parent / "tests" / "proxy.py"),
         "--target-port", str(target_port), "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proxy.stdout is not None
    return proxy, int(proxy.stdout.readline())


async def scenario(
    name: str, db: Path, n: int, broker: Mosquitto, args: argparse.Namespace
) -> dict[str, float | str]:
    proxy: subprocess.Popen[bytes] | None = None
    port = broker.port
    sub = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--subscriber", str(broker.port), str(n),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        if name == "proxy":
            proxy, port = start_proxy(broker.port, args.delay_ms)
        assert sub.stdout is not None
        assert (await sub.stdout.readline()).strip() == b"ready"
        config = UplinkConfig.model_validate(
            {
                "servers": [f"mqtt://127.0.0.1:{port}"],
                "topic_prefix": PREFIX,
                "batch": {"max_readings": args.batch},
                "max_inflight": args.inflight,
            }
        )
        async with Buffer(db, sync="normal") as buffer:
            uplink = Uplink(
                config, gateway_id=GATEWAY, client_id=GATEWAY, buffer=buffer, password=None,
                version="bench", config_digest="-", started_ms=0,
            )  # fmt: skip
            profiler = cProfile.Profile() if args.profile else None
            t0 = time.monotonic()
            if profiler:
                profiler.enable()
            run = asyncio.create_task(uplink.run())
            alarm_at = done_at = 0.0
            try:
                async with asyncio.timeout(args.limit_s):
                    while not done_at:
                        word, *rest = (await sub.stdout.readline()).split()
                        if word == b"alarm":
                            alarm_at = float(rest[0])
                        elif word == b"done":
                            done_at = float(rest[0])
            finally:
                if profiler:
                    profiler.disable()
                await uplink.shutdown(timeout_s=2.0)
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        elapsed = done_at - t0
        return {
            "scenario": name if name == "direct" else f"proxy +{args.delay_ms:g} ms each way",
            "readings": n,
            "seconds": round(elapsed, 2),
            "readings_per_s": round(n / elapsed),
            "alarm_latency_ms": round((alarm_at - t0) * 1000, 1),
            "messages": uplink.stats.messages_total,
        }
    finally:
        if proxy is not None:
            stop_process(proxy)
        with contextlib.suppress(ProcessLookupError):
            sub.kill()
        await sub.wait()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp:
        folder = Path(tmp)
        source = folder / "filled.db"
        t = time.monotonic()
        last = await fill(source, args.readings)
        print(f"filled {last} items in {time.monotonic() - t:.1f}s", file=sys.stderr)
        with running_mosquitto(folder) as broker:
            for name in args.scenarios:
                db = folder / f"{name}.db"
                for suffix in ("", ".seq"):
                    shutil.copy(f"{source}{suffix}", f"{db}{suffix}")
                result = await scenario(name, db, args.readings, broker, args)
                print(json.dumps(result))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--batch", type=int, default=500, help="uplink.batch.max_readings")
    parser.add_argument("--inflight", type=int, default=16, help="uplink.max_inflight")
    parser.add_argument("--scenarios", nargs="+", default=["direct", "proxy"])
    parser.add_argument("--limit-s", type=float, default=120.0, help="give up a scenario after")
    parser.add_argument("--profile", action="store_true", help="cProfile the uplink side")
    parser.add_argument("--subscriber", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscriber_main(*args.subscriber))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
