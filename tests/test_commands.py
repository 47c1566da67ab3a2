"""The command channel end to end, in process: the daemon (buffer, uplink, sources, commands)
against a real mosquitto and a real pymodbus server that records what it is written. Signed
commands are published as an operator's tool would; results are read from ``P/G/results``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from support import Mosquitto, free_port
from write_support import RecordingUnit, recording_server

from gateway.commands.message import sign
from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.keys import SigningKey
from gateway.sources.registry import installed
from gateway.uplink.inbound import MAX_COMMAND_BYTES

PREFIX = "city"
GW = "cabinet-7"
COMMANDS = f"{PREFIX}/{GW}/commands"
RESULTS = f"{PREFIX}/{GW}/results"
OPERATOR = SigningKey.generate()
_ids = itertools.count(1)


def write_config(tmp_path: Path, broker: Mosquitto, modbus_port: int, **extra: Any) -> Path:
    key = tmp_path / "ops-centre.pub"
    key.write_text(OPERATOR.public.pem())
    config = {
        "gateway": {"id": GW},
        "uplink": {"servers": [broker.url], "topic_prefix": PREFIX, "reconnect_max": "200ms"},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "commands": {"trusted_keys": [{"name": "ops-centre", "public_key_file": str(key)}]},
        "sources": [{
            "name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
            "timeout": "200ms", "retries": 0,
            "devices": [{"name": "barrier-1", "unit": 3, "interval": "1s", "points": [
                {"name": "closed", "table": "coil", "address": 0, "type": "bool",
                 "write": {"confirm": "readback"}},
                {"name": "speed_limit", "table": "holding", "address": 10, "type": "uint16",
                 "write": {"min": 20, "max": 90, "rate": "2/1m"}},
                {"name": "mode", "table": "holding", "address": 11, "type": "uint16",
                 "write": {"values": [1, 2, 3]}},
                {"name": "level", "table": "holding", "address": 12, "type": "uint16",
                 "scale": 0.01},
            ]}],
        }],
        **extra,
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(point: str, value: object, **over: Any) -> dict[str, Any]:
    doc = {"id": f"c-{next(_ids)}", "ts": int(time.time() * 1000), "op": "write",
           "device": "barrier-1", "point": point, "value": value, "by": "ops-centre",
           **over}  # fmt: skip
    return sign(doc, OPERATOR.sign)


@contextlib.asynccontextmanager
async def daemon(config: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("STREET_GATEWAY_CLOCK", "synced")
    d = Daemon(load_config(config, installed()))
    task = asyncio.create_task(d.run(handle_signals=False), name="daemon under test")
    try:
        yield d
    finally:
        d.request_stop()
        async with asyncio.timeout(10):
            await task


class Operator:
    """An operator's MQTT client: publishes commands, collects results."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.results: list[dict[str, Any]] = []

    async def collect(self) -> None:
        async for message in self.client.messages:
            self.results.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    async def send(self, payload: bytes | dict[str, Any]) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(COMMANDS, data, qos=1)

    async def result_for(self, cid: str | None, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while len(found := [r for r in self.results if r["id"] == cid]) < count:
                await asyncio.sleep(0.01)
        return found


@contextlib.asynccontextmanager
async def operator(broker: Mosquitto) -> AsyncIterator[Operator]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ops-centre") as client:
        await client.subscribe(RESULTS, qos=1)
        op = Operator(client)
        task = asyncio.create_task(op.collect(), name="operator")
        try:
            yield op
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def fetch(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(get)


async def until_up(d: Daemon) -> None:
    async with asyncio.timeout(10):
        while not (d.uplink_stats().connected and d.sources()[0].devices[0].state == "ok"):
            await asyncio.sleep(0.02)


async def test_a_signed_write_is_done_once_and_a_redelivery_gets_the_same_result(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    async with recording_server([unit], port), daemon(config, monkeypatch) as d:
        await until_up(d)
        async with operator(mosquitto) as op:
            await asyncio.sleep(0.2)  # the daemon's subscription is made before it is "up"
            close = command("closed", True)
            await op.send(close)
            (first,) = await op.result_for(close["id"])
            assert first["state"] == "done" and first["reason"] is None
            assert first["read_back"] is True and first["by"] == "ops-centre"
            assert first["gateway"] == GW and isinstance(first["seq"], int)
            assert unit.coils[0] is True and unit.writes == [(5, 0, [1])]
            await op.send(close)  # the same bytes again, as a QoS 1 redelivery
            again = await op.result_for(close["id"], 2)
            assert again[1]["seq"] == first["seq"] and again[1] == first
            assert unit.writes == [(5, 0, [1])]  # written once
            other = {**close, "value": False}  # the same id, other bytes: a replay
            await op.send(other)
            replayed = (await op.result_for(close["id"], 3))[2]
            assert (replayed["state"], replayed["reason"]) == ("refused", "replayed")
            assert replayed["seq"] > first["seq"]
            # the record: /status, /metrics and the page
            base = f"http://{d.loaded.config.status.listen}"
            status = json.loads(await fetch(f"{base}/status"))
            assert status["commands"]["results_total"] == {"done": 1, "refused": 1, "failed": 0}
            closed = next(p for p in status["commands"]["writable"] if p["point"] == "closed")
            assert closed["last_write"]["state"] == "done"  # a replay's refusal is no write
            assert status["events"][0]["kind"] == "command"
            metrics = await fetch(f"{base}/metrics")
            assert 'street_gateway_command_results_total{state="done"} 1.0' in metrics
            assert 'street_gateway_events_total{kind="command"} 2.0' in metrics
            page = await fetch(f"{base}/")
            assert "Writable points" in page and "barrier-1/closed" in page
            assert "2 writes, 1 done" in page  # the timeline's track of writes
    assert unit.writes == [(5, 0, [1])]
    timeline = [e.fields for e in d.events() if e.kind == "command"]  # newest first
    assert [(f["id"], f["state"], f["reason"]) for f in timeline] == [
        (close["id"], "refused", "replayed"),
        (close["id"], "done", None),
    ]


async def test_each_refusal_has_its_reason_and_writes_nothing(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    now = int(time.time() * 1000)
    stranger = SigningKey.generate()
    forged = command("speed_limit", 50)
    forged["value"] = 60  # the signature covers other bytes
    cases: list[tuple[dict[str, Any], str]] = [
        (forged, "bad_signature"),
        (sign({**command("speed_limit", 50), "by": "stranger"}, stranger.sign), "unknown_key"),
        (command("speed_limit", 50, ts=now - 10 * 60_000), "expired"),
        (command("speed_limit", 50, ts=now + 60_000), "future"),
        (command("level", 1), "not_writable"),
        (command("speed_limit", 95), "out_of_range"),
        (command("mode", 4), "not_allowed"),
        (command("speed_limit", "fast"), "bad_request"),  # a value of the wrong JSON type
        (command("+", 1), "bad_request"),  # a point name with a wildcard
        (command("closed", 1), "bad_request"),
    ]
    async with recording_server([unit], port), daemon(config, monkeypatch) as d:
        await until_up(d)
        async with operator(mosquitto) as op:
            await asyncio.sleep(0.2)
            for doc, _ in cases:
                await op.send(doc)
            for doc, reason in cases:
                (result,) = await op.result_for(doc["id"])
                assert (result["state"], result["reason"]) == ("refused", reason), doc
                assert result["detail"]
            # garbage, JSON of the wrong shape and a 1 MiB payload: never a crash
            await op.send(b"\xff\xfe not json")
            await op.send(b"[1, 2, 3]")
            await op.send(b"[" * 50_000)  # nested past any parser's recursion
            nulls = await op.result_for(None, 3)
            assert {r["reason"] for r in nulls} == {"bad_request"}
            # the rate: two writes a minute on speed_limit, the third refused
            results = []
            for value in (30, 40, 50):
                doc = command("speed_limit", value)
                await op.send(doc)
                results.append((await op.result_for(doc["id"]))[0])
            assert [r["state"] for r in results] == ["done", "done", "refused"]
            assert results[2]["reason"] == "rate_limited"
            # a message over the commands topic's cap (room for a 1 MiB config): too_large
            await op.send(b"x" * (MAX_COMMAND_BYTES + 1))
            async with asyncio.timeout(5):
                while not d.uplink_stats().inbound_refused.get("too_large"):
                    await asyncio.sleep(0.02)
            await until_up(d)
    assert unit.writes == [(6, 10, [30]), (6, 10, [40])]  # only the two allowed writes


async def test_a_replayed_command_is_refused_after_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    doc = command("mode", 2)
    async with recording_server([unit], port):
        async with daemon(config, monkeypatch) as d, operator(mosquitto) as op:
            await until_up(d)
            await asyncio.sleep(0.2)
            await op.send(doc)
            (first,) = await op.result_for(doc["id"])
            assert first["state"] == "done"
        async with daemon(config, monkeypatch) as d, operator(mosquitto) as op:
            await until_up(d)
            await asyncio.sleep(0.2)
            await op.send(doc)  # the same bytes: its first result, from the buffer's file
            (again,) = await op.result_for(doc["id"])
            assert again == first
            await op.send({**doc, "value": 3})  # a replay with other bytes
            replayed = (await op.result_for(doc["id"], 2))[1]
            assert replayed["reason"] == "replayed"
    assert unit.writes == [(6, 11, [2])]


async def street_gateway(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_sender_signs_publishes_waits_and_exits_by_the_result(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    key = tmp_path / "ops-centre.key"
    key.write_text(OPERATOR.pem())
    common = ["command", "--broker", mosquitto.url, "--prefix", PREFIX, "--key", str(key),
              "--by", "ops-centre"]  # fmt: skip
    async with recording_server([unit], port), daemon(config, monkeypatch) as d:
        await until_up(d)
        await asyncio.sleep(0.2)
        code, out, _ = await street_gateway(
            *common, "--gateway", GW, "write", "barrier-1/speed_limit", "42"
        )
        result = json.loads(out)
        assert code == 0 and result["state"] == "done" and result["read_back"] == 42
        code, out, _ = await street_gateway(
            *common, "--gateway", GW, "write", "barrier-1/speed_limit", "99"
        )
        assert code == 1 and json.loads(out)["reason"] == "out_of_range"
        code, _, err = await street_gateway(
            *common, "--gateway", "nobody", "--timeout", "1s", "write", "barrier-1/closed", "true"
        )
        assert code == 3 and "no result" in err
        code, _, err = await street_gateway(
            *common[:6], str(tmp_path / "ops-centre.pub"), *common[7:], "--gateway", GW,
            "write", "barrier-1/closed", "true",
        )  # fmt: skip
        assert code == 2 and "PRIVATE KEY" in err  # a public key given as the private one
    assert unit.writes == [(6, 10, [42])]


async def test_a_flood_of_garbage_gets_bounded_results_and_the_rest_is_counted(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    async with recording_server([unit], port), daemon(config, monkeypatch) as d:
        await until_up(d)
        async with operator(mosquitto) as op:
            await asyncio.sleep(0.2)
            for _ in range(100):
                await op.send(b"not a command")
            async with asyncio.timeout(10):
                while d.uplink_stats().inbound_refused.get("unanswered", 0) < 40:
                    await asyncio.sleep(0.02)
            nulls = await op.result_for(None, 60)
            assert len(nulls) == 60  # at most 60 a minute: the buffer is not flooded
            assert d.uplink_stats().inbound_refused["unanswered"] == 40
            good = command("mode", 1)  # an authenticated command still gets through
            await op.send(good)
            (result,) = await op.result_for(good["id"])
            assert result["state"] == "done"


async def test_a_reload_that_adds_the_commands_section_subscribes(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    config = write_config(tmp_path, mosquitto, port)
    with_commands = config.read_text()
    doc = yaml.safe_load(with_commands)
    del doc["commands"]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    async with recording_server([unit], port), daemon(config, monkeypatch) as d:
        await until_up(d)
        async with operator(mosquitto) as op:
            await asyncio.sleep(0.2)
            ignored = command("mode", 1)
            await op.send(ignored)  # no commands section: not even subscribed
            await asyncio.sleep(0.5)
            assert op.results == []
            config.write_text(with_commands)
            d.request_reload()
            async with asyncio.timeout(10):
                while not d.loaded.config.commands:
                    await asyncio.sleep(0.02)
            await until_up(d)
            await asyncio.sleep(0.3)
            heard = command("mode", 2)
            await op.send(heard)
            (result,) = await op.result_for(heard["id"])
            assert result["state"] == "done"
    assert unit.writes == [(6, 11, [2])]
