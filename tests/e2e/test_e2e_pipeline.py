"""Sensors -> daemon -> mosquitto -> upstream, as a user runs it: values, status pages, alarms,
an unsynchronised clock."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.conftest import (
    ModbusSim,
    RunDaemon,
    SerialSim,
    Upstream,
    gateway_config,
    modbus_tcp_source,
    noise_source,
    simulated_bus,
    value_range,
)
from gateway.sources.modbus.sim import profile_points

MODBUS_DEVICES = [
    ("aq-1", 1, "air_quality", "200ms"),
    ("meter-1", 2, "energy_meter", "300ms"),
    ("river-1", 3, "water_level", "500ms"),
]
NOISE = "noise-1"


def _points_by_device(upstream: Upstream) -> dict[str, dict[str, list[Any]]]:
    """device -> point -> every value received for it."""
    found: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for s in upstream.samples():
        for point, value in s["values"].items():
            found[s["device"]][point].append(value)
    return found


def _written_values(upstream: Upstream) -> dict[str, dict[str, list[Decimal]]]:
    """device -> point -> every non-bool number exactly as its JSON text was written."""
    found: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    for message in upstream.of("samples"):
        data = json.loads(message.payload, parse_float=Decimal, parse_int=Decimal)
        for s in data["samples"]:
            for point, value in s["values"].items():
                if isinstance(value, Decimal):
                    found[s["device"]][point].append(value)
    return found


def _significant_digits(value: Decimal) -> int:
    return len(value.normalize().as_tuple().digits)


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class _Page(HTMLParser):
    """Collects the text of a page and checks that every opened element is closed in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


# On both event loops the daemon runs on (gateway/eventloop.py): uvloop where it is installed,
# asyncio's own where it is not; this test drives Modbus TCP, a pty, MQTT and HTTP through each.
@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
async def test_samples_arrive_with_clean_values_meta_has_units_and_status_shows_every_device(
    modbus_sim: ModbusSim,
    serial_sim: SerialSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    tmp_path: Path,
    *,
    loop_name: str,
) -> None:
    if loop_name == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop has no wheel for this machine")
    started = time.monotonic()
    port = modbus_sim(MODBUS_DEVICES)
    tty = serial_sim(NOISE, 0.2)
    sources = [
        modbus_tcp_source("cabinet-bus", port, MODBUS_DEVICES),
        noise_source(NOISE, tty, interval="1s"),
    ]
    daemon = run_daemon(
        gateway_config(broker_port=upstream.port, state_dir=tmp_path, sources=sources),
        env={"STREET_GATEWAY_EVENT_LOOP": loop_name},
    )
    expected = {
        name: {p["name"]: p for p in profile_points(profile)}
        for name, _, profile, _ in MODBUS_DEVICES
    }
    expected[NOISE] = {"laeq": {"unit": "dBA"}, "lamax": {"unit": "dBA"}}

    def every_point_seen() -> bool:
        found = _points_by_device(upstream)
        return all(set(points) <= set(found[dev]) for dev, points in expected.items())

    await upstream.wait_until(every_point_seen, 15, "a sample of every point of every device")

    # Values, as the simulated sensors produce them: one sample per poll, every point in it.
    elapsed = time.monotonic() - started + 1.0
    found = _points_by_device(upstream)
    for device, profile in ((d, p) for d, _, p, _ in MODBUS_DEVICES):
        for name, spec in expected[device].items():
            for value in found[device][name]:
                if spec["type"] == "bool":
                    assert isinstance(value, bool), (device, name, value)
                    continue
                low, high = value_range(profile, name, elapsed)
                slack = spec.get("scale", 1.0) if spec["type"] != "float32" else 1e-3
                assert low - slack <= value <= high + slack, (device, name, value, low, high)
    samples = upstream.samples()
    for s in samples:
        assert "clock" not in s, s
        assert set(s["values"]) == set(expected[s["device"]]), s  # a whole poll or line
    # Clean values on the wire: a float32 as the shortest text that reads back as the same
    # float32 (no binary noise such as 21.299999237060547), a scaled value with only the
    # decimals its scale has (pm25 at 0.1: one decimal).
    written = _written_values(upstream)
    for device, points in expected.items():
        for name, spec in points.items():
            if spec.get("type") != "bool":
                assert written[device][name], f"no value of {device}/{name} checked"
            for value in written[device][name]:
                if spec.get("type") == "float32":
                    assert _significant_digits(value) <= 9, (device, name, value)
                elif "scale" in spec:
                    allowed = max(0, round(-math.log10(spec["scale"])))
                    assert _decimals(value) <= allowed, (device, name, value, spec["scale"])
    for s in (s for s in samples if s["device"] == NOISE):  # one line: LAmax is LAeq + 2..9 dB
        line = s["values"]
        assert 35.0 <= line["laeq"] <= 95.0, line
        assert 2.0 - 0.11 <= line["lamax"] - line["laeq"] <= 9.0 + 0.11, line
    assert all(s["seq"] > 0 for s in samples)
    for message in upstream.of("samples"):  # in seq order within a message
        seqs = [s["seq"] for s in message.data["samples"]]
        assert seqs == sorted(seqs)
        assert message.data["gateway"] == "lamppost-e2e"

    # Units and types once, in the retained meta, before the first sample.
    kinds = [m.kind for m in upstream.messages]
    assert "meta" in kinds
    assert kinds.index("meta") < kinds.index("samples")
    meta = upstream.meta()
    assert meta is not None
    assert set(meta["devices"]) == set(expected)
    for device, points in expected.items():
        described = meta["devices"][device]["points"]
        assert set(described) == set(points), device
        for name, spec in points.items():
            assert described[name].get("unit") == spec.get("unit"), (device, name)
            if "type" in spec:
                assert described[name]["type"] == spec["type"], (device, name)
    assert meta["devices"]["aq-1"]["source"] == "cabinet-bus"
    assert meta["devices"]["aq-1"]["kind"] == "modbus-tcp"
    assert meta["devices"][NOISE]["points"]["laeq"] == {"type": "number", "unit": "dBA"}
    assert meta["config_digest"] == upstream.last_status()["config_digest"]  # type: ignore[index]
    assert upstream.last_status() is not None
    assert upstream.last_status()["state"] == "online"  # type: ignore[index]

    # /status: every device, each ok.
    status = await daemon.status()
    assert status["gateway"]["id"] == "lamppost-e2e"
    assert status["gateway"]["clock_synced"] is True
    assert status["gateway"]["event_loop"].split()[0] == loop_name
    assert f"event loop {loop_name}" in daemon.log()
    assert status["uplink"]["connected"] is True
    states = {d["name"]: d["state"] for s in status["sources"] for d in s["devices"]}
    assert states == dict.fromkeys(expected, "ok")

    # /metrics: Prometheus text that its own parser reads.
    code, content_type, text = await daemon.get("/metrics")
    assert code == 200
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families, text
    samples = [s for f in families.values() for s in f.samples]
    assert {s.labels.get("device") for s in samples if "device" in s.labels} >= set(expected)

    # /: an HTML page, well formed, naming every device.
    code, content_type, html = await daemon.get("/")
    assert code == 200
    assert content_type.startswith("text/html")
    page = _Page()
    page.feed(html)
    page.close()
    assert not page.errors, page.errors
    assert not page.open, f"unclosed elements: {page.open}"
    assert {"html", "body", "table"} <= page.tags
    text = " ".join(page.text)
    for name in expected:
        assert name in text

    code, _, body = await daemon.get("/health")
    assert code == 200
    assert json.loads(body)["status"] == "ok"


async def test_an_alarm_is_published_with_its_name_and_a_seq_from_the_sample_sequence(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    devices = [("aq-1", 1, "air_quality", "200ms")]
    config = simulated_bus(
        modbus_sim,
        upstream.port,
        tmp_path,
        devices,
        alarms=[{"point": "aq-1/pm25", "above": -1000, "priority": "critical"}],
    )
    run_daemon(config)
    await upstream.wait_until(lambda: upstream.of("alarms"), 10, "an alarm message")
    alarm = upstream.of("alarms")[0].data
    assert alarm["gateway"] == "lamppost-e2e"
    assert alarm["alarm"] == "aq-1/pm25>-1000"
    assert alarm["state"] == "raised"
    assert alarm["priority"] == "critical"

    # The sample that raised it was published too, with the same time and value.
    def trigger() -> list[dict[str, Any]]:
        return [s for s in upstream.samples() if s["device"] == "aq-1" and s["ts"] == alarm["ts"]]

    await upstream.wait_until(trigger, 5, "the aq-1 sample that raised the alarm")
    assert trigger()[0]["values"]["pm25"] == alarm["value"]
    # The alarm's seq is one of the gateway's sequence, distinct from every sample's.
    await upstream.wait_for_seq_above(alarm["seq"] + 5)
    sample_seqs = {s["seq"] for s in upstream.samples()}
    assert alarm["seq"] not in sample_seqs
    assert len(upstream.of("alarms")) == 1  # raised once, the condition still holds
    assert not upstream.holes()
    assert not upstream.of("gaps")


async def test_samples_taken_before_clock_sync_are_flagged_and_status_says_so(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    devices = [("meter-1", 2, "energy_meter", "200ms")]
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, devices)
    daemon = run_daemon(config, env={"STREET_GATEWAY_CLOCK": "unsynced"})
    await upstream.wait_until(lambda: len(upstream.samples()) >= 3, 10, "samples")
    assert {s.get("clock") for s in upstream.samples()} == {"unsynced"}
    status = await daemon.status()
    assert status["gateway"]["clock_synced"] is False
