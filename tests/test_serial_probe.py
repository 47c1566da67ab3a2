"""`street-gateway probe serial` and the simulated sensor as a process, on real pseudo-terminals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import stop_process

from gateway.cli import main
from gateway.sources.serial.sim import SimulatedSerialSensor

CONFIG = """\
gateway: {{id: probe-test}}
uplink: {{servers: ["mqtt://127.0.0.1:1883"]}}
sources:
  - name: noise-1
    kind: serial
    port: {port}
    line_end: "\\r\\n"
    parse: {{regex: 'LAeq=(?P<laeq>\\S+) LAmax=(?P<lamax>\\S+)'}}
    points: [{{name: laeq, unit: dBA}}, {{name: lamax, unit: dBA}}]
  - name: air-1
    kind: serial
    port: {port}
    request: "MEAS?\\r\\n"
    line_end: "\\r\\n"
    parse: {{format: csv, fields: [pm25, pm10, temp]}}
    points: [{{name: pm25}}, {{name: temp, unit: C}}]
"""


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "ttySENSOR"


@pytest.fixture
def config_file(tmp_path: Path, link: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(port=link))
    return path


def test_probe_prints_and_parses_stream_lines(
    link: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedSerialSensor(link, period=0.01, garbage_every=3, seed=1):
        code = main(
            ["probe", "serial", "-c", str(config_file), "--source", "noise-1", "--count", "6"]
        )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[-1].startswith("# 6 lines")
    shown = out[1:-1]
    # Each line as received, then what the parser made of it. (The first may be cut in two:
    # the probe can open the port in the middle of a line.)
    pairs = list(zip(shown[0::2], shown[1::2], strict=True))
    good = [result for line, result in pairs if "'LAeq=" in line]
    bad = [result for line, result in pairs if "sensor self-test" in line]
    assert len(good) >= 3
    assert all(result.startswith("    -> laeq=") and " dBA, lamax=" in result for result in good)
    assert 1 <= len(bad) <= 2
    assert all(r.startswith("    -> parse error: does not match the regex") for r in bad)


def test_probe_polls_with_a_request(
    link: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedSerialSensor(link, mode="poll", fmt="csv", seed=1) as sim:
        code = main(
            ["probe", "serial", "-c", str(config_file), "--source", "air-1", "--count", "2",
             "--interval", "0.01"]
        )  # fmt: skip
        assert sim.requests_seen >= 2
    out = capsys.readouterr().out
    assert code == 0
    assert out.count(" C\n") == 2  # pm25=.., temp=.. C
    assert "2 parsed, 0 rejected" in out


def test_probe_without_config_shows_raw_lines(
    link: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedSerialSensor(link, period=0.01, long_every=2, seed=1):
        code = main(["probe", "serial", "--port", str(link), "--line-end", r"\r\n", "--count", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("! line longer than 4096 bytes") == 2
    assert out.count("'LAeq=") == 2


def test_probe_exits_1_when_no_line_arrives(link: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimulatedSerialSensor(link, period=0.01) as sim:
        sim.silent = True
        assert main(["probe", "serial", "--port", str(link), "--seconds", "0.2"]) == 1
    assert "# 0 lines" in capsys.readouterr().out
    assert main(["probe", "serial", "--port", str(link), "--seconds", "0.2"]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_probe_names_an_unknown_source(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "serial", "-c", str(config_file), "--source", "nope"]) == 2
    assert "serial sources: noise-1, air-1" in capsys.readouterr().err


@pytest.fixture
def sim_process(link: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The simulator as a process (as the demo and a technician run it), stopped by pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.sources.serial.sim", "--link", str(link),
         "--period", "0.01", "--mode", "stream"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not link.exists():
            assert proc.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "the simulator did not create its link"
            time.sleep(0.02)
        yield proc
    finally:
        stop_process(proc)
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_simulator_runs_as_a_process_until_sigterm(
    link: Path, sim_process: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["probe", "serial", "--port", str(link), "--line-end", r"\r\n", "--count", "3"])
    assert code == 0
    assert capsys.readouterr().out.count("'LAeq=") == 3
    os.kill(sim_process.pid, signal.SIGTERM)
    assert sim_process.wait(5) == 0
    assert not link.exists()
