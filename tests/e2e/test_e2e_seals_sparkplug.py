"""Seals over Sparkplug B: a host that decodes with the standard's schema (compiled at test time,
tests/sparkplug_support.py) rebuilds each item's JSON object from the metrics as
docs/transparency.md says, and the gateway's seals verify over those objects."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sparkplug_support import FLOAT, Decoder, Host, compile_descriptor_set
from support import subscription

from e2e.conftest import ModbusSim, RunDaemon
from e2e.test_e2e_sparkplug import GROUP, NODE, sparkplug_config, sparkplug_upstream
from gateway.identity import read_identity
from gateway.seals.verify import check, collect

DEVICES = [("cab-1", 1, "e2e_cabinet", "100ms"), ("aq-2", 2, "air_quality", "200ms")]
GATEWAY = "lamppost-0421"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


def shortest_float32(x: float) -> float:
    """The decimal with the fewest digits that reads back as the same float32 (as the doc says)."""
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == x:
            return candidate
    return x


def rebuilt(host: Host) -> list[tuple[str, dict[str, Any]]]:
    """Each item's JSON object (the ``format: json`` payload), from the host's view."""
    datatypes = {(dev, name): dt for dev, name, dt in host.aliases.values()}
    out: list[tuple[str, dict[str, Any]]] = []
    for device, named, doc in host.data:
        if device is not None:  # DDATA: a sample; its sgw/seq metric comes first
            seq_metric = doc["metrics"][0]
            sample: dict[str, Any] = {
                "seq": named["sgw/seq"],
                "ts": seq_metric["timestamp"],
                "device": device,
                "values": {
                    name: shortest_float32(value) if datatypes[device, name] == FLOAT else value
                    for name, value in named.items()
                    if name != "sgw/seq"
                },
            }
            if "clock" in seq_metric["properties"]:
                sample["clock"] = seq_metric["properties"]["clock"][1]
            out.append((f"e2e/{GATEWAY}/samples", {"samples": [sample]}))
        elif "sgw/gap" in named:
            span, reason = named["sgw/gap"].split(":")
            first, last = span.split("-")
            gap = {"from_seq": int(first), "to_seq": int(last), "reason": reason}
            out.append((f"e2e/{GATEWAY}/gaps", gap))
        else:
            for m in doc["metrics"]:
                props = {k: v for k, (_, v) in m["properties"].items()}
                if "alarm" in props:
                    alarm = {"seq": props["seq"], "ts": m["timestamp"], "alarm": props["alarm"],
                             "state": m["raw"], "value": props["value"],
                             "priority": props["priority"]}  # fmt: skip
                    out.append((f"e2e/{GATEWAY}/alarms", alarm))
    return out


async def test_a_sparkplug_host_rebuilds_every_item_and_the_seals_verify(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, mosquitto: Any, decoder: Decoder
) -> None:
    port = modbus_sim(DEVICES)
    config = sparkplug_config(mosquitto.port, tmp_path, port)
    config["security"] = {"seal_interval": "500ms"}
    config["alarms"] = [{"point": "aq-2/no2", "above": -1000, "priority": "high"}]
    seals: list[tuple[str, Any]] = []

    def take(message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        seals.append((str(message.topic), json.loads(message.payload)))

    async with (
        sparkplug_upstream(mosquitto.port, decoder) as up,
        subscription(
            mosquitto.port,
            f"e2e/{GATEWAY}/seals",
            take,
            identifier=f"seals-{time.monotonic_ns()}",
            name="seals",
        ),  # fmt: skip
    ):
        daemon = run_daemon(config, env={"STREET_GATEWAY_CLOCK": "unsynced"})
        await up.wait_until(lambda: len(seals) >= 4, "four seals")
        assert await daemon.terminate() == 0
        host = up.host()
    items = rebuilt(host)
    assert any(t.endswith("/alarms") for t, _ in items)
    assert all(
        s["clock"] == "unsynced" for t, p in items if t.endswith("/samples") for s in p["samples"]
    )
    key = read_identity(tmp_path / "identity.key").public
    report = check(GATEWAY, collect([*items, *seals])[GATEWAY], key)
    assert report.mismatched == report.missing_seals == report.bad_signatures == []
    top = max(s["to_seq"] for _, s in seals)
    sealed = {
        q
        for t, p in items
        if t.endswith(("/samples",))
        for s in p["samples"]
        if (q := s["seq"]) <= top
    }
    sealed |= {p["seq"] for t, p in items if t.endswith("/alarms") and p["seq"] <= top}
    assert report.items_verified == len(sealed) > 20
    assert GROUP and NODE  # the host read this group's node
