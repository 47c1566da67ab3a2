"""Sensors -> daemon -> mosquitto -> upstream, as a user runs it: values, status pages, alarms,
an unsynchronised clock."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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
from gateway.sim.modbus import profile_points

MODBUS_DEVICES = [
    ("aq-1", 1, "air_quality", "200ms"),
    ("meter-1", 2, "energy_meter", "300ms"),
    ("river-1", 3, "water_level", "500ms"),
]
NOISE = "noise-1"


def _points_by_device(upstream: Upstream) -> dict[str, dict[str, list[dict[str, Any]]]]:
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in upstream.readings():
        found[r["device"]][r["point"]].append(r)
    return found


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


async def test_readings_arrive_with_values_and_units_and_status_shows_every_device(
    modbus_sim: ModbusSim,
    serial_sim: SerialSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    port = modbus_sim(MODBUS_DEVICES)
    tty = serial_sim(NOISE, 0.2)
    sources = [
        modbus_tcp_source("cabinet-bus", port, MODBUS_DEVICES),
        noise_source(NOISE, tty, interval="1s"),
    ]
    daemon = run_daemon(
        gateway_config(broker_port=upstream.port, state_dir=tmp_path, sources=sources)
    )
    expected = {
        name: {p["name"]: p for p in profile_points(profile)}
        for name, _, profile, _ in MODBUS_DEVICES
    }
    expected[NOISE] = {"laeq": {"unit": "dBA"}, "lamax": {"unit": "dBA"}}

    def every_point_seen() -> bool:
        found = _points_by_device(upstream)
        return all(set(points) <= set(found[dev]) for dev, points in expected.items())

    await upstream.wait_until(every_point_seen, 15, "a reading of every point of every device")

    # Values and units, as configured and as the simulated sensors produce them.
    elapsed = time.monotonic() - started + 1.0
    found = _points_by_device(upstream)
    for device, profile in ((d, p) for d, _, p, _ in MODBUS_DEVICES):
        for name, spec in expected[device].items():
            for r in found[device][name]:
                assert r.get("unit") == spec.get("unit"), r
                assert "clock" not in r, r
                if spec["type"] == "bool":
                    assert isinstance(r["value"], bool), r
                    continue
                low, high = value_range(profile, name, elapsed)
                slack = spec.get("scale", 1.0) if spec["type"] != "float32" else 1e-3
                assert low - slack <= r["value"] <= high + slack, (r, low, high)
    by_ts: dict[int, dict[str, float]] = defaultdict(dict)
    for point in ("laeq", "lamax"):
        for r in found[NOISE][point]:
            assert r["unit"] == "dBA", r
            by_ts[r["ts"]][point] = r["value"]
    for line in by_ts.values():  # one line of the meter: LAmax is LAeq + 2..9 dB
        assert 35.0 <= line["laeq"] <= 95.0, line
        assert 2.0 - 0.11 <= line["lamax"] - line["laeq"] <= 9.0 + 0.11, line
    readings = upstream.readings()
    assert all(r["seq"] > 0 for r in readings)
    for message in upstream.of("readings"):  # in seq order within a message
        seqs = [r["seq"] for r in message.data["readings"]]
        assert seqs == sorted(seqs)
        assert message.data["gateway"] == "lamppost-e2e"
    assert upstream.last_status() is not None
    assert upstream.last_status()["state"] == "online"  # type: ignore[index]

    # /status: every device, each ok.
    status = await daemon.status()
    assert status["gateway"]["id"] == "lamppost-e2e"
    assert status["gateway"]["clock_synced"] is True
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


async def test_an_alarm_is_published_with_its_name_and_a_seq_from_the_reading_sequence(
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

    # The reading that raised it was published too, with the same time and value.
    def trigger() -> list[dict[str, Any]]:
        return [r for r in upstream.readings() if r["point"] == "pm25" and r["ts"] == alarm["ts"]]

    await upstream.wait_until(trigger, 5, "the pm25 reading that raised the alarm")
    assert trigger()[0]["value"] == alarm["value"]
    # The alarm's seq is one of the gateway's sequence, distinct from every reading's.
    await upstream.wait_for_seq_above(alarm["seq"] + 10)
    reading_seqs = {r["seq"] for r in upstream.readings()}
    assert alarm["seq"] not in reading_seqs
    assert len(upstream.of("alarms")) == 1  # raised once, the condition still holds
    assert not upstream.holes()
    assert not upstream.of("gaps")


async def test_readings_taken_before_clock_sync_are_flagged_and_status_says_so(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    devices = [("meter-1", 2, "energy_meter", "200ms")]
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, devices)
    daemon = run_daemon(config, env={"STREET_GATEWAY_CLOCK": "unsynced"})
    await upstream.wait_until(lambda: len(upstream.readings()) >= 8, 10, "readings")
    assert {r.get("clock") for r in upstream.readings()} == {"unsynced"}
    status = await daemon.status()
    assert status["gateway"]["clock_synced"] is False
