"""An SDI-12 river gauge end to end: the simulator as its own process on a pty (with SDI-12's
1200 baud timing), the real daemon, a real mosquitto. The river rises: the level arrives
upstream, and so does the alarm."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import stop_process

from e2e.conftest import START_TIMEOUT_S, RunDaemon, Upstream, gateway_config


@pytest.fixture
def gauge(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(tty, level file): ``python -m gateway.sim sdi12`` serving a river gauge at address 0."""
    link, level = tmp_path / "tty-gauge", tmp_path / "level"
    level.write_text("1.25\n")
    args = [sys.executable, "-m", "gateway.sim", "sdi12", "--link", str(link)]
    args += ["--level-file", str(level), "--announce", "1", "--ready", "0.2", "--echo"]
    with (tmp_path / "sim-sdi12.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not link.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError(f"the SDI-12 simulator did not create {link}")
            time.sleep(0.02)
        yield link, level
    finally:
        stop_process(proc)


async def test_a_rising_river_arrives_upstream_with_its_alarm(
    gauge: tuple[Path, Path], run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    tty, level = gauge
    source = {
        "name": "river-bus",
        "kind": "sdi12",
        "port": str(tty),
        "devices": [
            {
                "name": "river-1",
                "address": 0,
                "interval": "1s",
                "points": [
                    {"name": "level", "index": 0, "unit": "m"},
                    {"name": "water_temp", "index": 1, "unit": "C"},
                ],
            }
        ],
    }
    alarm = {"point": "river-1/level", "above": 3.2, "priority": "critical"}
    config = gateway_config(
        broker_port=upstream.port, state_dir=tmp_path, sources=[source], alarms=[alarm]
    )
    daemon = run_daemon(config)

    def levels() -> list[float]:
        return [s["values"]["level"] for s in upstream.samples() if s["device"] == "river-1"]

    await upstream.wait_until(lambda: len(levels()) >= 2, 20, "two levels")
    assert all(1.24 <= v <= 1.26 for v in levels())
    level.write_text("3.5\n")  # the river rises
    await upstream.wait_until(
        lambda: upstream.of("alarms") and any(v > 3.4 for v in levels()), 20, "the flood alarm"
    )
    raised = upstream.of("alarms")[0].data
    assert raised["alarm"] == "river-1/level>3.2" and raised["state"] == "raised"
    assert 3.49 <= raised["value"] <= 3.51 and raised["priority"] == "critical"
    meta = upstream.meta()
    assert meta is not None
    assert meta["devices"]["river-1"] == {
        "source": "river-bus",
        "kind": "sdi12",
        "interval_s": 1,
        "points": {
            "level": {"type": "number", "unit": "m"},
            "water_temp": {"type": "number", "unit": "C"},
        },
    }
    status = await daemon.status()
    (bus,) = status["sources"]
    (device,) = bus["devices"]
    assert bus["kind"] == "sdi12" and device["name"] == "river-1"
    assert device["state"] == "ok" and device["reads_failed"] == 0
    assert device["parse_errors"] == 0  # the adapter's echoes are not refused answers
    assert await daemon.terminate() == 0
