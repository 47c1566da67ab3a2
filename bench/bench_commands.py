"""Write latency of commands and actions (issue 29), on loopback.

The daemon runs in this process (buffer, uplink, sources, commands) against a local mosquitto
and a pymodbus server that records what it is written (tests/write_support.py), its one device
polled every second meanwhile.

- **command**: an operator client publishes a signed write (a holding register, read back) and
  waits for its result, one at a time with a random pause, ``--commands`` times. Two figures:
  ``inside_ms``, from the command's arrival in the gateway (``Commands.receive``) to the
  result's PUBLISH handed to the MQTT client (both instants taken by wrapping those two calls);
  and ``round_trip_ms``, the operator's view, from its publish to the result's arrival (taken
  by a reader task as each message comes, not after the publish's own PUBACK wait).
  ``--nodelay`` sets TCP_NODELAY on every MQTT client's socket (the gateway's and the
  operator's) and gives mosquitto ``set_tcp_nodelay true``: neither paho nor mosquitto's
  default sets it, and Nagle's algorithm then holds a small PUBLISH behind an earlier
  segment's delayed ACK (~40 ms on Linux) at each hop.
- **action**: the river level is raised at a random moment; the time from the poll that read
  the high value (the server's answer to it) to the barrier's write arriving at the server, p50/p99
  over ``--actions`` floods (each one cleared again before the next).

    python bench/bench_commands.py [--commands 200] [--actions 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import aiomqtt  # noqa: E402
import yaml  # noqa: E402
from support import free_port, running_mosquitto  # noqa: E402
from write_support import RecordingUnit, recording_server  # noqa: E402

from gateway.commands.channel import Commands  # noqa: E402
from gateway.commands.message import sign  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.daemon import Daemon  # noqa: E402
from gateway.keys import SigningKey  # noqa: E402
from gateway.sources.registry import installed  # noqa: E402

GW, PREFIX = "bench-gw", "bench"


def config(tmp: Path, broker_port: int, modbus_port: int, key: SigningKey) -> Path:
    (tmp / "ops.pub").write_text(key.public.pem())
    doc: dict[str, Any] = {
        "gateway": {"id": GW},
        "uplink": {"servers": [f"mqtt://127.0.0.1:{broker_port}"], "topic_prefix": PREFIX},
        "buffer": {"path": str(tmp / "buffer.db")},
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "commands": {"trusted_keys": [{"name": "ops", "public_key_file": str(tmp / "ops.pub")}]},
        "sources": [{
            "name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
            "timeout": "500ms", "retries": 0,
            "devices": [{"name": "barrier-1", "unit": 3, "interval": "1s", "points": [
                {"name": "closed", "table": "coil", "address": 0, "type": "bool", "write": {}},
                {"name": "limit", "table": "holding", "address": 10, "type": "uint16",
                 "write": {}},
                {"name": "level", "table": "holding", "address": 12, "type": "uint16",
                 "scale": 0.01},
            ]}],
        }],
        "alarms": [{"point": "barrier-1/level", "above": 3.2, "clear_below": 3.0, "actions": [
            {"on": "raised", "write": {"point": "barrier-1/closed", "value": True}},
            {"on": "cleared", "write": {"point": "barrier-1/closed", "value": False}},
        ]}],
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _instrument() -> list[float]:
    """Wrap ``Commands.receive`` and the MQTT client's publish: the inside latencies (ms)."""
    arrivals: list[float] = []
    inside: list[float] = []
    receive = Commands.receive
    publish = aiomqtt.Client.publish

    def timed_receive(self: Commands, payload: bytes) -> Any:
        arrivals.append(time.perf_counter())
        return receive(self, payload)

    async def timed_publish(self: aiomqtt.Client, topic: str, *args: Any, **kw: Any) -> Any:
        if str(topic).endswith("/results") and arrivals:
            inside.append((time.perf_counter() - arrivals.pop()) * 1000)
        return await publish(self, topic, *args, **kw)

    Commands.receive = timed_receive  # type: ignore[method-assign]
    aiomqtt.Client.publish = timed_publish  # type: ignore[method-assign]
    return inside


def _no_delay_clients() -> None:
    enter = aiomqtt.Client.__aenter__

    async def entered(self: aiomqtt.Client) -> aiomqtt.Client:
        client = await enter(self)
        sock = self._client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    aiomqtt.Client.__aenter__ = entered  # type: ignore[method-assign]


async def bench(n_commands: int, n_actions: int, *, nodelay: bool) -> dict[str, Any]:
    key = SigningKey.generate()
    unit = RecordingUnit(3)
    unit.holding[12] = 250
    writes: list[float] = []  # of each coil write
    original = unit.writes

    class Timed(list[tuple[int, int, list[int]]]):
        def append(self, item: tuple[int, int, list[int]]) -> None:
            if item[0] == 5:
                writes.append(time.monotonic())
            super().append(item)

    unit.writes = Timed(original)
    inside = _instrument()
    if nodelay:
        _no_delay_clients()
    port = free_port()
    extra = "set_tcp_nodelay true\n" if nodelay else ""
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_mosquitto(Path(tmp), extra_config=extra) as broker,
    ):
        daemon = Daemon(load_config(config(Path(tmp), broker.port, port, key), installed()))
        async with recording_server([unit], port):
            task = asyncio.create_task(daemon.run(handle_signals=False))
            try:
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    await client.subscribe(f"{PREFIX}/{GW}/results", qos=1)
                    await asyncio.sleep(2.0)  # connected, subscribed, polling
                    rtts = await commands(client, key, n_commands)
                    actions = await floods(unit, writes, n_actions)
            finally:
                daemon.request_stop()
                await task
    return {
        "nodelay": nodelay,
        "command_inside_ms": {"n": len(inside), "p50": pct(inside, 0.5),
                              "p99": pct(inside, 0.99), "max": max(inside)},
        "command_round_trip_ms": {"n": len(rtts), "p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99),
                                  "mean": statistics.fmean(rtts)},
        "action_ms": {"n": len(actions), "p50": pct(actions, 0.5), "p99": pct(actions, 0.99),
                      "max": max(actions)},
    }  # fmt: skip


async def commands(client: aiomqtt.Client, key: SigningKey, n: int) -> list[float]:
    out: list[float] = []
    arrived: dict[str, float] = {}
    got = asyncio.Event()

    async def read() -> None:
        async for message in client.messages:
            result = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            assert result["state"] == "done", result
            arrived[result["id"]] = time.perf_counter()
            got.set()

    reader = asyncio.create_task(read())
    try:
        for i in range(n):
            doc = {"id": f"b-{i}", "ts": int(time.time() * 1000), "op": "write",
                   "device": "barrier-1", "point": "limit", "value": i % 1000,
                   "by": "ops"}  # fmt: skip
            payload = json.dumps(sign(doc, key.sign)).encode()
            started = time.perf_counter()
            await client.publish(f"{PREFIX}/{GW}/commands", payload, qos=1)
            while doc["id"] not in arrived:
                got.clear()
                await got.wait()
            out.append((arrived[doc["id"]] - started) * 1000)
            await asyncio.sleep(random.uniform(0.0, 0.05))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return out


async def floods(unit: RecordingUnit, writes: list[float], n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        await asyncio.sleep(random.uniform(0.1, 1.0))  # a random phase against the 1 s poll
        before = len(writes)
        unit.holding[12] = 350
        flooded = time.monotonic()
        async with asyncio.timeout(5):
            while len(writes) == before:  # noqa: ASYNC110 - a counter the server's hook bumps
                await asyncio.sleep(0.001)
        # the poll that crossed: the first register read served after the level rose
        crossed = next(t for t, function in unit.read_log if function == 3 and t >= flooded)
        out.append((writes[before] - crossed) * 1000)
        unit.holding[12] = 250
        async with asyncio.timeout(5):
            while len(writes) == before + 1:  # noqa: ASYNC110 - cleared: the barrier opens
                await asyncio.sleep(0.001)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--actions", type=int, default=30)
    parser.add_argument("--nodelay", action="store_true", help="TCP_NODELAY everywhere")
    args = parser.parse_args()
    os.environ.setdefault("STREET_GATEWAY_CLOCK", "synced")  # commands' age needs a clock
    print(
        json.dumps(asyncio.run(bench(args.commands, args.actions, nodelay=args.nodelay)), indent=2)
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
