"""`street-gateway demo`: a new user's first minute. It must run, show deliveries, and exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.demo import demo_config
from gateway.sim.upstream import Upstream
from gateway.sources.registry import installed

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_configs_demo_yaml_is_what_the_demo_runs() -> None:
    shipped = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    generated = demo_config(
        modbus_port=5020,
        noise_tty="/tmp/street-gateway-demo/noise-tty",
        broker_port=1883,
        status_port=8470,
        state_dir=Path("/tmp/street-gateway-demo"),
    )
    assert shipped == generated
    load_config(CONFIGS / "demo.yaml", installed())


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_with_outages_delivers_everything_and_exits_0_on_ctrl_c(broker: str) -> None:
    extra = ["--embedded-broker"] if broker == "embedded" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--outage", "2s", "--status-port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Long enough for one outage (2 s up, 2 s cut) and the reconnect after it.
        time.sleep(7)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "status page: http://127.0.0.1:" in output
    assert ("embedded amqtt broker" in output) == (broker == "embedded")
    assert "cutting the uplink" in output
    final = re.search(r"demo stopped: delivered ([0-9,]+) of ([0-9,]+)", output)
    assert final, output
    delivered, stored = (int(g.replace(",", "")) for g in final.groups())
    assert stored > 0
    assert delivered == stored, output
    # the upstream checked the gateway's seals as they came: every sealed item verified
    sealed = re.findall(r"sealed and verified: ([0-9,]+) of ([0-9,]+)", output)
    assert sealed, output
    verified, total = (int(g.replace(",", "")) for g in sealed[-1])
    assert verified == total > 0, output
    assert "do NOT match" not in output
    assert "Traceback" not in output


def test_upstream_counts_each_seq_once_whether_received_or_declared_lost() -> None:
    upstream = Upstream()
    prefix = "street-gateway/demo-lamppost"
    samples = {"samples": [{"seq": 1}, {"seq": 2}]}
    upstream.take(f"{prefix}/samples", json.dumps(samples).encode())
    upstream.take(f"{prefix}/samples", json.dumps(samples).encode())  # sent again after a crash
    alarm = {"seq": 3, "alarm": "noise-1/laeq>68", "state": "raised", "value": 70.5}
    upstream.take(f"{prefix}/alarms", json.dumps(alarm).encode())
    gap = {"from_seq": 4, "to_seq": 6, "count": 3, "reason": "max_age"}
    upstream.take(f"{prefix}/gaps", json.dumps(gap).encode())
    upstream.take(f"{prefix}/status", b'{"state": "online"}')
    assert upstream.delivered() == 6
    assert list(upstream.alarms) == ["noise-1/laeq>68 raised (70.5)"]
