"""Remote configuration in a real daemon, driven through the local drop file
(``<state dir>/remote.request.yaml`` -> ``remote.result.json``), the same entry point the signed
``config`` command calls: a valid config applied, confirmed and kept across a restart; an
invalid one refused with its check lines; one changing ``commands`` refused ``local_only``;
one pointing the uplink at a dead broker rolled back by the gateway itself, back online.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from support import LOOPBACK, free_port, stop_process, wait_for_port

from e2e.conftest import (
    STREET_GATEWAY,
    Daemon,
    Device,
    ModbusSim,
    RunDaemon,
    Upstream,
    simulated_bus,
    with_status_port,
)

AQ: Device = ("aq-1", 1, "air_quality", "200ms")
FAST = {"STREET_GATEWAY_HEALTH_MIN_GAP": "1s", "STREET_GATEWAY_HEALTH_PERIOD": "5s"}


async def send(daemon: Daemon, state: Path, text: str, within_s: float = 30) -> dict[str, Any]:
    """Drop ``text`` for the daemon and wait for its result."""
    result = state / "remote.result.json"
    result.unlink(missing_ok=True)
    request = state / "remote.request.yaml"
    tmp = state / "request.tmp"
    tmp.write_text(text)
    tmp.rename(request)
    deadline = time.monotonic() + within_s
    while not result.exists():
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        await asyncio.sleep(0.1)
    doc: dict[str, Any] = json.loads(result.read_text())
    return doc


def dump(daemon: Daemon, config: dict[str, Any]) -> str:
    return yaml.safe_dump(with_status_port(config, daemon.status_port), sort_keys=False)


def events(status: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in status["events"] if e["kind"] == kind]


async def test_valid_invalid_and_local_only_configs(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, [AQ])
    daemon = run_daemon(config, env=FAST)
    installed = daemon.config_path.read_bytes()
    await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "the link up")
    first_birth = upstream.last_status()
    assert first_birth is not None and first_birth["config_source"] == "local"

    # invalid: the check's own lines, nothing changes
    broken = {**config, "sources": [{**config["sources"][0]}]}
    broken["sources"][0]["devices"] = [{**config["sources"][0]["devices"][0], "unit": 999}]
    refused = await send(daemon, tmp_path, dump(daemon, broken))
    assert (refused["state"], refused["reason"]) == ("refused", "invalid_config")
    assert refused["problems"] and all(p.startswith("remote.yaml: ") for p in refused["problems"])
    assert "sources[0].devices[0].unit" in refused["problems"][0]
    assert not (tmp_path / "remote.yaml").exists()

    # local only: commands stay as the installed file says
    local = await send(daemon, tmp_path, dump(daemon, {**config, "commands": {"max_age": "1m"}}))
    assert (local["state"], local["reason"]) == ("refused", "local_only")
    assert "commands" in local["detail"] and not (tmp_path / "remote.yaml").exists()

    # valid: applied, confirmed, said everywhere, kept across a restart
    relabelled = {**config, "gateway": {**config["gateway"], "labels": {"site": "remote"}}}
    done = await send(daemon, tmp_path, dump(daemon, relabelled))
    assert done["state"] == "done", done
    status = await daemon.status()
    assert status["gateway"]["config_source"] == "remote"
    assert status["gateway"]["labels"] == {"site": "remote"}
    assert events(status, "config_applied")
    await upstream.wait_until(
        lambda: any(m.data["config_source"] == "remote" for m in upstream.of("health")),
        10,
        "health saying remote",
    )
    birth = upstream.last_status()  # the birth names the new digest and says remote
    assert birth is not None and birth["config_source"] == "remote"
    assert birth["config_digest"] != first_birth["config_digest"]
    assert daemon.config_path.read_bytes() == installed  # the installed file is never touched
    assert await daemon.terminate() == 0

    # the same installed file and state dir: remote.yaml (and its status.listen) wins
    again = restart(daemon, tmp_path)
    try:
        status = await again.wait_status(lambda s: s["uplink"]["connected"], 15, "the link up")
        assert status["gateway"]["config_source"] == "remote"
        assert status["gateway"]["labels"] == {"site": "remote"}
        assert await again.terminate() == 0
    finally:
        stop_process(again.proc)


def restart(daemon: Daemon, tmp_path: Path) -> Daemon:
    env = {**os.environ, "STREET_GATEWAY_CLOCK": "synced", **FAST}
    log_path = tmp_path / "daemon-restarted.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([STREET_GATEWAY, "run", "-c", str(daemon.config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    again = Daemon(proc, daemon.config_path, daemon.status_port, log_path)
    wait_for_port(daemon.status_port, timeout=15)
    return again


async def test_a_config_that_strands_the_box_is_rolled_back_by_itself(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, [AQ])
    daemon = run_daemon(config, env=FAST)
    await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "the link up")
    dead = {
        **config,
        "uplink": {**config["uplink"], "servers": [f"mqtt://{LOOPBACK}:{free_port()}"]},
        "fleet": {"confirm_within": "3s"},
    }
    started = time.monotonic()
    result = await send(daemon, tmp_path, dump(daemon, dead))
    assert (result["state"], result["reason"]) == ("failed", "rolled_back"), result
    assert "did not connect" in result["detail"]
    assert time.monotonic() - started < 20  # a hang guard; the 3 s are the config's
    births_before = len([m for m in upstream.of("status") if m.data["state"] == "online"])
    status = await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "back online")
    assert status["gateway"]["config_source"] == "local"
    assert events(status, "config_rolled_back")
    assert not (tmp_path / "remote.yaml").exists()
    await upstream.wait_until(
        lambda: (
            len([m for m in upstream.of("status") if m.data["state"] == "online"]) >= births_before
        ),
        10,
        "a birth after the rollback",
    )
    seq = status["buffer"]["last_seq"]
    await upstream.wait_for_seq_above(seq, within_s=10)  # samples flow again
    assert await daemon.terminate() == 0
