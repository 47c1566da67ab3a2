"""`street-gateway run`: the reference's exit codes for a bad config and a taken status port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml
from support import LOOPBACK, free_port


def config(tmp_path: Path, status_port: int, **changes: object) -> Path:
    data = {
        "gateway": {"id": "run-test"},
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "uplink": {"servers": [f"mqtt://{LOOPBACK}:{free_port()}"]},
        "status": {"listen": f"{LOOPBACK}:{status_port}"},
        "sources": [
            {"name": "m", "kind": "modbus-tcp", "host": LOOPBACK, "port": free_port(),
             "devices": [{"name": "d", "unit": 1, "interval": "1s", "points": [
                 {"name": "p", "table": "holding", "address": 0, "type": "uint16"}]}]}
        ],
        **changes,
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_with_a_bad_config_exits_2_with_the_problem(tmp_path: Path) -> None:
    result = run(config(tmp_path, free_port(), alarms=[{"point": "d/q", "above": 1}]))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{tmp_path / 'gateway.yaml'}: alarms[0].point: device 'd' has no point 'q'; it has p"
    )


def test_run_with_the_status_port_taken_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(config(tmp_path, port))
    assert result.returncode == 1
    assert f"cannot run: status.listen {LOOPBACK}:{port}" in result.stderr
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
