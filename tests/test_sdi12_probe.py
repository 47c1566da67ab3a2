"""`street-gateway probe sdi12` against simulated sensors behind a simulated adapter on a pty:
it finds the addresses that answer a!, shows their aI!, and with --measure the values by
index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.sources.sdi12.sim import RiverGauge, SimSensor, SimulatedSdi12Bus

STREET_GATEWAY = str(Path(sys.executable).parent / "street-gateway")


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREET_GATEWAY, "probe", "sdi12", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_scan_finds_each_sensor_and_its_identification() -> None:
    gauge = RiverGauge("0", announce_s=1, ready_s=0.05)
    soil = SimSensor(
        "c", [(23.5, 1), (-2, 0)], announce_s=0, identification="ACMESOILSOIL10002SN77"
    )
    with SimulatedSdi12Bus([gauge, soil], char_time=0.0005, echo=True) as bus:
        result = probe("--port", bus.path, "--addresses", "0123abcXYZ", "--timeout", "0.2",
                       "--measure", "M")  # fmt: skip
        scanned = [c for c in bus.commands if c.endswith("!") and len(c) == 2]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        "0: SDI-12 1.4, STREETGW RIVER1 v001, SIM0001",
        "   0M! -> 3 values in 1s: [0] 1.2, [1] 11.5, [2] 12.6",
        "c: SDI-12 1.4, ACMESOIL SOIL10 v002, SN77",
        "   cM! -> 2 values in 0s: [0] 23.5, [1] -2",
        "# 2 sensor(s) answered",
    ]
    # one a! per address, never the wildcard ?!, which every sensor would answer at once
    assert scanned == [f"{a}!" for a in "0123abcXYZ"]


def test_bad_addresses_exit_2_and_nobody_answering_exits_1() -> None:
    with SimulatedSdi12Bus([SimSensor("5", silent=True)], char_time=0.0005) as bus:
        result = probe("--port", bus.path, "--addresses", "0-5", "--timeout", "0.1")
    assert result.returncode == 2 and "addresses are 0-9, a-z, A-Z" in result.stderr
    with SimulatedSdi12Bus([SimSensor("5", silent=True)], char_time=0.0005) as bus:
        result = probe("--port", bus.path, "--addresses", "45", "--timeout", "0.1")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "# 0 sensor(s) answered"
