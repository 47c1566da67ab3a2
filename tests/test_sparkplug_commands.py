"""Sparkplug B commands (since v0.3): with ``uplink.sparkplug.commands: true`` a DCMD from a
host application writes a writable point through the same checks as a command. The host here
is the independent decoder (tests/sparkplug_support.py, compiled from the standard's proto):
it reads ``writable`` in the DBIRTH, sends the DCMD, and sees the new value in DDATA and the
result as ``sgw/result``. The daemon runs in process against mosquitto and a recording
pymodbus server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from sparkplug_support import BOOLEAN, UINT32, Decoder, Host, compile_descriptor_set
from support import Mosquitto, free_port
from test_commands import daemon
from write_support import RecordingUnit, recording_server

GROUP, NODE = "city", "cabinet-9"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


def write_config(tmp_path: Path, broker: Mosquitto, modbus_port: int, interval: str = "5s") -> Path:
    config = {
        "gateway": {"id": NODE},
        "uplink": {"servers": [broker.url], "format": "sparkplug-b",
                   "sparkplug": {"group_id": GROUP, "commands": True}},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "commands": {"require_signature": False},
        "sources": [{
            "name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
            "timeout": "200ms", "retries": 0, "backoff_max": "300ms",
            "devices": [{"name": "barrier-1", "unit": 3, "interval": interval, "points": [
                {"name": "closed", "table": "coil", "address": 0, "type": "bool", "write": {}},
                {"name": "speed_limit", "table": "holding", "address": 10, "type": "uint16",
                 "write": {"max": 90}},
                {"name": "level", "table": "holding", "address": 12, "type": "uint16"},
            ]}],
        }],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def host_app(
    broker: Mosquitto, decoder: Decoder
) -> AsyncIterator[tuple[aiomqtt.Client, Host, list[tuple[str, dict[str, Any]]]]]:
    host = Host(decoder, GROUP, NODE)
    seen: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="host-app") as client:
        await client.subscribe(f"spBv1.0/{GROUP}/#", qos=1)

        async def collect() -> None:
            async for m in client.messages:
                seen.append((str(m.topic), host.feed(str(m.topic), bytes(m.payload))))  # type: ignore[arg-type]

        task = asyncio.create_task(collect(), name="host")
        try:
            yield client, host, seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def dcmd(decoder: Decoder, metrics: list[tuple[str | int, int, str, Any]]) -> bytes:
    """A DCMD: each metric by name (str) or alias (int), with its datatype and value field."""
    payload = decoder.payload_class()
    payload.timestamp = 1
    for key, datatype, field, value in metrics:
        m = payload.metrics.add()
        if isinstance(key, str):
            m.name = key
        else:
            m.alias = key
        m.datatype = datatype
        setattr(m, field, value)
    return bytes(payload.SerializeToString())


async def until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_dcmd_writes_the_coil_and_ddata_shows_the_new_value(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, decoder: Decoder
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    topic = f"spBv1.0/{GROUP}/DCMD/{NODE}/barrier-1"
    async with (
        recording_server([unit], port),
        host_app(mosquitto, decoder) as (client, host, seen),
        daemon(config, monkeypatch),
    ):
        await until(lambda: any("/DBIRTH/" in t for t, _ in seen))
        birth = next(doc for t, doc in seen if "/DBIRTH/" in t)
        writable = {m["name"]: m["properties"].get("writable") for m in birth["metrics"]}
        assert writable["closed"] == (BOOLEAN, True)
        assert writable["speed_limit"] == (BOOLEAN, True)
        assert writable["level"] is None  # read-only: no property
        await asyncio.sleep(0.3)  # the node's DCMD subscription came before its births
        await client.publish(topic, dcmd(decoder, [("closed", BOOLEAN, "boolean_value", True)]))
        await until(lambda: host.values.get(("barrier-1", "closed")) is True)
        assert unit.writes == [(5, 0, [1])]
        await until(lambda: any(
            json.loads(v)["state"] == "done" for d, named, _ in host.data if d is None
            for k, v in named.items() if k == "sgw/result"
        ))  # fmt: skip
        # by alias, past its limit: refused, nothing written, and the result says why
        alias = next(a for a, (d, n, _) in host.aliases.items() if n == "speed_limit")
        await client.publish(topic, dcmd(decoder, [(alias, UINT32, "int_value", 95)]))
        await until(lambda: any(
            json.loads(v)["reason"] == "out_of_range" for d, named, _ in host.data if d is None
            for k, v in named.items() if k == "sgw/result"
        ))  # fmt: skip
        results = [
            json.loads(v) for d, named, _ in host.data if d is None
            for k, v in named.items() if k == "sgw/result"
        ]  # fmt: skip
        assert [(r["by"], r["point"], r["state"]) for r in results] == [
            ("sparkplug", "closed", "done"),
            ("sparkplug", "speed_limit", "refused"),
        ]
        assert host.seq_breaks == 0
    assert unit.writes == [(5, 0, [1])]


async def test_a_device_off_the_bus_gets_ddeath_then_dbirth_when_it_returns(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, decoder: Decoder
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port, interval="100ms")
    async with (
        recording_server([unit], port),
        host_app(mosquitto, decoder) as (_, host, seen),
        daemon(config, monkeypatch),
    ):
        await until(lambda: any("/DBIRTH/" in t for t, _ in seen))
        unit.mode = "silent"  # pulled off the bus
        await until(lambda: host.device_deaths == ["barrier-1"])
        births = sum("/DBIRTH/" in t for t, _ in seen)
        unit.mode = "ok"
        await until(lambda: sum("/DBIRTH/" in t for t, _ in seen) == births + 1)
        await until(lambda: any(d == "barrier-1" for d, _, _ in host.data[-3:]))
        assert host.seq_breaks == 0
    kinds = [t.split("/")[2] for t, _ in seen if t.endswith("/barrier-1")]
    assert kinds.index("DDEATH") < len(kinds) - 1 - kinds[::-1].index("DBIRTH")
