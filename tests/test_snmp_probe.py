"""`street-gateway probe snmp` against a real snmpd (v2c and v3), a silent port and the
simulator run as a process (`python -m gateway.sim snmp`), as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from snmp_support import (
    COMMUNITY,
    CONTROLLED,
    USERS,
    Snmpd,
    free_udp_port,
    running_snmpd,
    secret_file,
)
from support import LOOPBACK, stop_process

from gateway.cli import main
from gateway.sources.snmp.sim import OIDS, UpsModel

SYSTEM = "1.3.6.1.2.1.1"


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    with running_snmpd(tmp_path / "snmpd") as agent:
        yield agent


def test_a_v2c_walk_prints_oids_types_and_values(
    tmp_path: Path, snmpd: Snmpd, capsys: pytest.CaptureFixture[str]
) -> None:
    community = secret_file(tmp_path / "community", COMMUNITY)
    code = main(["probe", "snmp", "--host", LOOPBACK, "--port", str(snmpd.port),
                 "--community-file", str(community), "--walk", f".{SYSTEM}"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1.3.6.1.2.1.1.1.0 = OctetString: 'Linux" in out  # sysDescr
    assert "1.3.6.1.2.1.1.3.0 = TimeTicks: " in out  # sysUpTime
    assert all(line.startswith(SYSTEM) for line in out.splitlines())  # the subtree only


def test_a_v3_walk_uses_the_key_files(
    tmp_path: Path, snmpd: Snmpd, capsys: pytest.CaptureFixture[str]
) -> None:
    auth, auth_key, priv, priv_key = USERS["ups-sha512"]
    code = main([
        "probe", "snmp", "--host", LOOPBACK, "--port", str(snmpd.port), "--user", "ups-sha512",
        "--auth-protocol", auth, "--auth-key-file", str(secret_file(tmp_path / "a", auth_key)),
        "--priv-protocol", priv, "--priv-key-file", str(secret_file(tmp_path / "p", priv_key)),
        "--walk", f"{SYSTEM}.5",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("1.3.6.1.2.1.1.5.0 = OctetString: "), out  # sysName


def test_the_source_of_a_config_gives_host_and_credentials(
    tmp_path: Path, snmpd: Snmpd, capsys: pytest.CaptureFixture[str]
) -> None:
    community = secret_file(tmp_path / "community", COMMUNITY)
    config = tmp_path / "gateway.yaml"
    source = {"name": "ups-1", "kind": "snmp", "host": LOOPBACK, "port": snmpd.port,
              "community_file": str(community),
              "points": [{"name": "up", "oid": f"{SYSTEM}.3.0", "type": "gauge"}]}  # fmt: skip
    config.write_text(yaml.safe_dump({
        "gateway": {"id": "cabinet-7"}, "uplink": {"servers": ["mqtt://127.0.0.1:1883"]},
        "sources": [source],
    }))  # fmt: skip
    code = main(["probe", "snmp", "-c", str(config), "--source", "ups-1", "--walk", SYSTEM])
    assert code == 0 and "1.3.6.1.2.1.1.3.0 = TimeTicks" in capsys.readouterr().out
    code = main(["probe", "snmp", "-c", str(config), "--source", "nope"])
    assert code == 2 and "snmp sources: ups-1" in capsys.readouterr().err


def test_no_answer_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        port = silent.getsockname()[1]
        code = main(["probe", "snmp", "--host", LOOPBACK, "--port", str(port), "--timeout", "0.3"])
    assert code == 1
    assert f"{LOOPBACK}:{port}: no answer" in capsys.readouterr().err


def test_usage_mistakes_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "snmp", "--host", LOOPBACK, "--walk", "system"]) == 2
    assert main(["probe", "snmp", "--host", LOOPBACK, "--user", "u"]) == 2
    assert main(["probe", "snmp"]) == 2
    assert "--user needs --auth-key-file" in capsys.readouterr().err


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_udp_port()
    log = tmp_path / "sim.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.sim", "snmp", "--port", str(port),
             "--outage-every", "0", "--user", "ups"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while "a UPS on udp" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc, port
    finally:
        stop_process(proc)


def test_the_simulator_serves_a_ups_until_sigterm(
    tmp_path: Path,
    sim: tuple[subprocess.Popen[bytes], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc, port = sim
    code = main(["probe", "snmp", "--host", LOOPBACK, "--port", str(port), "--walk", CONTROLLED])
    out = capsys.readouterr().out
    assert code == 0
    assert "1.3.6.1.2.1.33.1.4.1.0 = Integer: 3" in out  # on mains: --outage-every 0
    assert "1.3.6.1.2.1.33.1.2.4.0 = Integer: 100" in out
    code = main([
        "probe", "snmp", "--host", LOOPBACK, "--port", str(port), "--user", "ups",
        "--auth-key-file", str(secret_file(tmp_path / "a", "authpass1")),
        "--priv-key-file", str(secret_file(tmp_path / "p", "privpass1")), "--walk", SYSTEM,
    ])  # fmt: skip
    assert code == 0 and "simulated UPS" in capsys.readouterr().out
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(5) == 0


def test_the_simulated_ups_loses_its_mains_at_the_end_of_each_period() -> None:
    ups = UpsModel(outage_every=60, outage_for=20, started=100)

    def read(at: float, name: str) -> int:
        return int(ups.values(100 + at)[OIDS[name]])

    assert [read(t, "output_source") for t in (0, 39.9, 40, 59.9, 60, 100)] == [3, 3, 5, 5, 3, 5]
    assert [read(t, "seconds_on_battery") for t in (39, 45, 59)] == [0, 5, 19]
    assert read(39, "input_voltage") == 231 and read(45, "input_voltage") == 0
    assert read(39, "charge") == 100 > read(59, "charge")
    never = UpsModel(outage_every=0, outage_for=20, started=0)
    assert int(never.values(1e6)[OIDS["output_source"]]) == 3
