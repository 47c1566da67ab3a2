"""The real daemon reads simulated dust sensors (``python -m gateway.sim particulate`` on ptys)
and a real mosquitto receives their samples, meta and alarms; a duty-cycled sensor is woken and
put back to sleep, and left asleep when the daemon stops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import stop_process

from e2e.conftest import START_TIMEOUT_S, RunDaemon, Upstream, gateway_config

DustSim = Callable[..., tuple[Path, Path]]


@pytest.fixture
def dust_sim(tmp_path: Path) -> Iterator[DustSim]:
    """``start(name, model, *options) -> (tty link, log file)``: a simulated sensor process."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, model: str, *options: str) -> tuple[Path, Path]:
        link, log_path = tmp_path / f"tty-{name}", tmp_path / f"sim-{name}.log"
        args = [sys.executable, "-m", "gateway.sim", "particulate", "--model", model]
        args += ["--link", str(link), "--seed", "3", *options]
        with log_path.open("ab") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not link.exists():
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise TimeoutError(f"the dust simulator did not create {link}")
            time.sleep(0.02)
        return link, log_path

    yield start
    for proc in procs:
        stop_process(proc)


async def test_dust_sensors_reach_the_broker(
    dust_sim: DustSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    pms, _ = dust_sim("pms", "pms5003", "--period", "0.1", "--asleep", "--bad-checksum-every", "4")
    sds, sds_log = dust_sim("sds", "sds011", "--period", "0.1", "--settle", "0.2")
    sources = [
        {"name": "dust-pms", "kind": "particulate", "model": "pms5003", "port": str(pms),
         "interval": "300ms"},
        {"name": "dust-sds", "kind": "particulate", "model": "sds011", "port": str(sds),
         "duty": {"on": "300ms", "every": "1s", "warmup": "300ms"}},
    ]  # fmt: skip
    alarm = {"point": "dust-pms/pm25", "above": 0, "priority": "high"}
    config = gateway_config(
        broker_port=upstream.port, state_dir=tmp_path, sources=sources, alarms=[alarm]
    )
    daemon = run_daemon(config)
    await upstream.wait_until(
        lambda: (
            {s["device"] for s in upstream.samples()} == {"dust-pms", "dust-sds"}
            and len([s for s in upstream.samples() if s["device"] == "dust-sds"]) >= 3
            and upstream.of("alarms")
        ),
        20,
        "samples of both sensors and an alarm",
    )
    samples = upstream.samples()
    assert all(set(s["values"]) == {"pm1", "pm25", "pm10"}
               for s in samples if s["device"] == "dust-pms")  # fmt: skip
    sds_values = [s["values"] for s in samples if s["device"] == "dust-sds"]
    assert all(set(v) == {"pm25", "pm10"} and v["pm25"] != 999 for v in sds_values)
    assert upstream.of("alarms")[0].data["alarm"] == "dust-pms/pm25>0"
    meta = upstream.meta()
    assert meta is not None
    assert meta["devices"]["dust-sds"] == {
        "source": "dust-sds",
        "kind": "particulate",
        "interval_s": 1,
        "points": {"pm25": {"type": "number", "unit": "ug/m3"},
                   "pm10": {"type": "number", "unit": "ug/m3"}},
    }  # fmt: skip
    status = await daemon.wait_status(
        lambda s: any(d["parse_errors"] > 0 for src in s.get("sources", [])
                      for d in src["devices"] if d["name"] == "dust-pms"),
        10,
        "the PMS5003's bad checksums counted",
    )  # fmt: skip
    states = {d["name"]: d["state"] for src in status["sources"] for d in src["devices"]}
    assert states == {"dust-pms": "ok", "dust-sds": "ok"}
    assert await daemon.terminate() == 0
    # the duty-cycled sensor was woken and put to sleep each cycle, and is left asleep
    deadline = time.monotonic() + 5
    while told(sds_log)[-1:] != ["sleep"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the sim prints what it was told every 0.2 s
    commands = told(sds_log)
    assert commands[:6] == ["wake", "active", "sleep", "wake", "active", "sleep"]
    assert commands[-1] == "sleep"


def told(sim_log: Path) -> list[str]:
    """The commands a simulator process received, in order."""
    lines = sim_log.read_text().splitlines()
    return [line.split(": ", 1)[1] for line in lines if line.startswith("command: ")]
