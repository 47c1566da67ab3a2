"""An alarm's action at the edge: the river rises with the link down, the barrier closes at
once, and after the outage its result arrives before the backlog's samples, with no hole in
the seqs. The daemon runs in process against a real mosquitto (behind a fault proxy) and a
real pymodbus server that records what it is written."""

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
from proxy import FaultProxy
from support import Mosquitto, free_port
from test_commands import daemon
from write_support import RecordingUnit, recording_server

PREFIX, GW = "city", "river-gw"
ALARM = "barrier-1/level>3.2"


def write_config(tmp_path: Path, broker_port: int, modbus_port: int) -> Path:
    config = {
        "gateway": {"id": GW},
        "uplink": {"servers": [f"mqtt://127.0.0.1:{broker_port}"], "topic_prefix": PREFIX,
                   "reconnect_max": "200ms"},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "sources": [{
            "name": "plc", "kind": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
            "timeout": "200ms", "retries": 0,
            "devices": [{"name": "barrier-1", "unit": 3, "interval": "100ms", "points": [
                {"name": "closed", "table": "coil", "address": 0, "type": "bool",
                 "write": {}},
                {"name": "level", "table": "holding", "address": 12, "type": "uint16",
                 "scale": 0.01},
            ]}],
        }],
        "alarms": [{"point": "barrier-1/level", "above": 3.2, "clear_below": 3.0,
                    "priority": "critical", "actions": [
                        {"on": "raised", "write": {"point": "barrier-1/closed", "value": True}},
                        {"on": "cleared", "write": {"point": "barrier-1/closed", "value": False}},
                    ]}],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def upstream(broker: Mosquitto) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """Every message of the gateway, in arrival order: (topic kind, payload)."""
    got: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="upstream") as client:
        await client.subscribe(f"{PREFIX}/{GW}/#", qos=1)

        async def collect() -> None:
            async for m in client.messages:
                got.append((str(m.topic).rsplit("/", 1)[1], json.loads(bytes(m.payload))))  # type: ignore[arg-type]

        task = asyncio.create_task(collect(), name="upstream")
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(condition: Any, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_an_action_closes_the_barrier_with_the_link_down_and_reports_after(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    unit = RecordingUnit(3)
    unit.holding[12] = 250  # 2.5 m
    async with (
        FaultProxy(mosquitto.port) as proxy,
        recording_server([unit], port),
        upstream(mosquitto) as got,
        daemon(write_config(tmp_path, proxy.port, port), monkeypatch) as d,
    ):
        await until(lambda: any(kind == "samples" for kind, _ in got))
        await proxy.outage()
        await until(lambda: not d.uplink_stats().connected)
        unit.holding[12] = 350  # the river floods
        await until(lambda: unit.coils[0])  # closed at the edge, no link
        assert unit.writes == [(5, 0, [1])]
        await asyncio.sleep(0.5)  # a backlog of samples builds up
        backlog = d.backlog()
        assert backlog > 2
        cut_at = len(got)
        await proxy.restore()
        await until(lambda: d.backlog() == 0 and d.uplink_stats().connected)
        await until(lambda: any(kind == "results" for kind, _ in got[cut_at:]))
    after = got[cut_at:]
    kinds = [kind for kind, _ in after if kind in ("alarms", "results", "samples")]
    first_result = kinds.index("results")
    first_historical = next(
        i for i, (kind, doc) in enumerate(
            (k, p) for k, p in after if k in ("alarms", "results", "samples")
        ) if kind == "samples" and doc.get("historical")
    )  # fmt: skip
    assert first_result < first_historical  # the result before the backlog's samples
    result = next(doc for kind, doc in after if kind == "results")
    assert result["by"] == f"alarm:{ALARM}" and result["state"] == "done"
    assert (result["device"], result["point"], result["value"]) == ("barrier-1", "closed", True)
    assert result["read_back"] is True and result["id"].startswith("alarm-")
    alarm = next(doc for kind, doc in after if kind == "alarms")
    assert alarm["state"] == "raised" and alarm["seq"] < result["seq"]
    # no hole: every seq from the first to the last came, in samples, alarms or results
    seqs: set[int] = set()
    for kind, doc in got:
        if kind == "samples":
            seqs.update(s["seq"] for s in doc["samples"])
        elif kind in ("alarms", "results"):
            seqs.add(doc["seq"])
    assert seqs == set(range(min(seqs), max(seqs) + 1))
    assert not any(kind == "gaps" for kind, _ in got)
