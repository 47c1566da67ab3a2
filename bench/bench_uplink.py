"""Drain a backlog from the durable buffer into a local mosquitto, and time it.

    .venv/bin/python bench/bench_uplink.py [--samples 100000] [--delay-ms 50]

Fills a Buffer with N samples (polls of a ten-point device, as bench_buffer.py makes them: N
samples are 10 N point values) and one alarm after them (so the alarm is stored *behind* the
backlog), then, for each scenario, starts an Uplink on a copy of that buffer and measures:

* samples/s: N / (time the subscriber counted the last sample - time run() started);
* alarm latency: time from run() start to the alarm's arrival at the subscriber;
* bytes per sample: the MQTT PUBLISH packets the subscriber received (``publish_size``) over N.

Scenarios: ``direct`` (uplink -> mosquitto) and ``proxy`` (through tests/proxy.py adding
``--delay-ms`` each way, i.e. twice that round trip). The subscriber (QoS 1) runs in its own
process and counts samples without decoding them; the proxy runs in its own process too.
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
from bench_buffer import T0, make_sample  # noqa: E402
from support import Mosquitto, running_mosquitto, stop_process  # noqa: E402

from gateway.buffer import Buffer  # noqa: E402
from gateway.config import UplinkConfig  # noqa: E402
from gateway.model import AlarmEvent  # noqa: E402
from gateway.uplink.json_format import JsonFormat  # noqa: E402
from gateway.uplink.meter import publish_size  # noqa: E402
from gateway.uplink.mqtt import Uplink  # noqa: E402
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo  # noqa: E402

GATEWAY = "bench-gw"
PREFIX = "bench"


async def fill(path: Path, n: int) -> int:
    async with Buffer(path, sync="normal", memory_queue_max=200_000) as buffer:
        for start in range(0, n, 50_000):
            for i in range(start, min(n, start + 50_000)):
                buffer.put(make_sample(i))
            await buffer.flush()
        buffer.put(AlarmEvent("cab-01/t0>50", "raised", 63.0, "high", T0 + n))
        return await buffer.flush()


def catalog() -> Catalog:
    sample = make_sample(0)
    points = {
        name: PointInfo("bool" if isinstance(v, bool) else "float32", None)
        for name, v in sample.values.items()
    }
    device = DeviceInfo(sample.device, "cabinet-bus", "modbus-tcp", 1, points)
    return Catalog(GATEWAY, "-", (device,), ("cab-01/t0>50",))


async def subscriber_main(port: int, expect: int) -> None:
    """Runs in a child process: prints `ready`, `alarm T`, `done T N BYTES` (T: monotonic)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as client:
        client.pending_calls_threshold = 1000
        await client.subscribe(f"{PREFIX}/{GATEWAY}/+", qos=1)
        print("ready", flush=True)
        count = size = 0
        async for message in client.messages:
            body = message.payload
            assert isinstance(body, bytes)
            topic = message.topic.value
            size += publish_size(topic, body, message.qos)
            if topic.endswith("/alarms"):
                print(f"alarm {time.monotonic()}", flush=True)
            elif topic.endswith("/samples"):
                count += body.count(b'"seq":')
                if count >= expect:
                    print(f"done {time.monotonic()} {count} {size}", flush=True)
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
                "batch": {"max_samples": args.batch},
                "max_inflight": args.inflight,
            }
        )
        async with Buffer(db, sync="normal") as buffer:
            wire_format = JsonFormat(
                catalog(), topic_prefix=PREFIX, qos=config.qos, version="bench", started_ms=0
            )
            uplink = Uplink(
                config, gateway_id=GATEWAY, client_id=GATEWAY, buffer=buffer, password=None,
                wire_format=wire_format,
            )  # fmt: skip
            profiler = cProfile.Profile() if args.profile else None
            t0 = time.monotonic()
            if profiler:
                profiler.enable()
            run = asyncio.create_task(uplink.run())
            alarm_at = done_at = 0.0
            received_bytes = 0
            try:
                async with asyncio.timeout(args.limit_s):
                    while not done_at:
                        word, *rest = (await sub.stdout.readline()).split()
                        if word == b"alarm":
                            alarm_at = float(rest[0])
                        elif word == b"done":
                            done_at = float(rest[0])
                            received_bytes = int(rest[2])
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
            "samples": n,
            "points": n * len(make_sample(0).values),
            "seconds": round(elapsed, 2),
            "samples_per_s": round(n / elapsed),
            "alarm_latency_ms": round((alarm_at - t0) * 1000, 1),
            "messages": uplink.stats.messages_total,
            "bytes_per_sample": round(received_bytes / n, 1),
            "uplink_bytes_total": uplink.stats.bytes_total,
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
        last = await fill(source, args.samples)
        print(f"filled {last} items in {time.monotonic() - t:.1f}s", file=sys.stderr)
        with running_mosquitto(folder) as broker:
            for name in args.scenarios:
                db = folder / f"{name}.db"
                for suffix in ("", ".seq"):
                    shutil.copy(f"{source}{suffix}", f"{db}{suffix}")
                result = await scenario(name, db, args.samples, broker, args)
                print(json.dumps(result))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--batch", type=int, default=100, help="uplink.batch.max_samples")
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
