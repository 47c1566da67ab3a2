"""Seals over Sparkplug B: a host that decodes with the standard's schema (compiled at test time,
tests/sparkplug_support.py) rebuilds each item's JSON object from the metrics as
docs/transparency.md says, and the gateway's seals verify over those objects: also for values
whose Sparkplug datatype cannot hold them (they travel with their JSON text), and with the key
to check them read from NBIRTH."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sparkplug_support import Decoder, compile_descriptor_set, rebuild_items
from support import subscription

from e2e.conftest import ModbusSim, RunDaemon
from e2e.test_e2e_sparkplug import GROUP, NODE, sparkplug_config, sparkplug_upstream
from gateway.identity import read_identity
from gateway.seals.verify import check, collect

DEVICES = [("cab-1", 1, "e2e_cabinet", "100ms"), ("aq-2", 2, "air_quality", "200ms")]
GATEWAY = "lamppost-0421"
# Points whose values no Sparkplug datatype of theirs holds, read from a third unit of the same
# profile: u3 (300 and up) offset by 0.00001 is a Float (a scaled 16-bit register) that no
# float32 holds; f0's two words as a uint64 (about 4.9e18) times 3 stay an integer, a Double
# past 2**53.
ODD_UNIT = ("odd-1", 3, "e2e_cabinet", "100ms")
ODD_POINTS = [
    {"name": "fine", "table": "holding", "address": 3, "type": "uint16", "offset": 0.00001},
    {"name": "big", "table": "holding", "address": 6, "type": "uint64", "scale": 3},
]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


async def test_a_sparkplug_host_rebuilds_every_item_and_the_seals_verify(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, mosquitto: Any, decoder: Decoder
) -> None:
    port = modbus_sim([*DEVICES, ODD_UNIT])
    config = sparkplug_config(mosquitto.port, tmp_path, port)
    name, unit, _, interval = ODD_UNIT
    config["sources"][0]["devices"].append(
        {"name": name, "unit": unit, "interval": interval, "points": ODD_POINTS}
    )
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
    items = rebuild_items(host, f"e2e/{GATEWAY}")
    # the values that do not fit: a Sparkplug consumer sees the nearest its datatype holds,
    # the sample's JSON (the seal's item) the exact value
    samples = [s for t, p in items if t.endswith("/samples") for s in p["samples"]]
    exact = [s["values"] for s in samples if s["device"] == name]
    seen = [named for device, named, _ in host.data if device == name]
    assert len(exact) == len(seen) > 5
    for json_value, consumer in zip(exact, seen, strict=True):
        assert json_value["fine"] != consumer["fine"] == pytest.approx(json_value["fine"])
        assert isinstance(json_value["big"], int) and json_value["big"] > 2**53
    assert any(j["big"] != c["big"] for j, c in zip(exact, seen, strict=True))
    assert any(t.endswith("/alarms") for t, _ in items)
    assert all(
        s["clock"] == "unsynced" for t, p in items if t.endswith("/samples") for s in p["samples"]
    )
    key = read_identity(tmp_path / "identity.key").public
    identity = {
        n: host.values[None, f"sgw/identity/{n}"] for n in ("alg", "public_key", "fingerprint")
    }
    assert identity == {"alg": "Ed25519", "public_key": key.base64, "fingerprint": key.fingerprint}
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
