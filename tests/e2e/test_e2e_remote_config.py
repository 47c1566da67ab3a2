"""Remote configuration in a real daemon, driven by the signed ``config`` command as an operator
sends it (``street-gateway command ... config FILE``, the result on ``P/G/results``): a valid
config applied, confirmed and kept across a restart; an invalid one refused with its check
lines; one changing ``commands`` refused ``local_only``; one over 1 MiB refused; one pointing
the uplink at a dead broker rolled back by the gateway itself, its result arriving once the box
is back online. The local drop file (``<state dir>/remote.request.yaml``) still works too.
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
    GATEWAY,
    PREFIX,
    STREET_GATEWAY,
    Daemon,
    Device,
    ModbusSim,
    RunDaemon,
    Upstream,
    simulated_bus,
    with_status_port,
)
from gateway.commands.message import sign
from gateway.commands.sender import exchange
from gateway.keys import SigningKey

AQ: Device = ("aq-1", 1, "air_quality", "200ms")
FAST = {"STREET_GATEWAY_HEALTH_MIN_GAP": "1s", "STREET_GATEWAY_HEALTH_PERIOD": "5s"}
OPERATOR = SigningKey.generate()


def with_commands(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """``config`` taking signed commands from the operator (keys written in ``tmp_path``)."""
    (tmp_path / "ops-centre.pub").write_text(OPERATOR.public.pem())
    (tmp_path / "ops-centre.key").write_text(OPERATOR.pem())
    trusted = [{"name": "ops-centre", "public_key_file": str(tmp_path / "ops-centre.pub")}]
    return {**config, "commands": {"trusted_keys": trusted}}


async def command(
    broker: int, tmp_path: Path, text: str, *options: str
) -> tuple[int, dict[str, Any] | None, str]:
    """``street-gateway command ... config FILE``: exit code, result, stderr."""
    path = tmp_path / "rollout.yaml"
    path.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        STREET_GATEWAY, "command", "--broker", f"mqtt://{LOOPBACK}:{broker}", "--prefix", PREFIX,
        "--key", str(tmp_path / "ops-centre.key"), "--by", "ops-centre", "--gateway", GATEWAY,
        "--timeout", "30s", *options, "config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


async def drop(daemon: Daemon, state: Path, text: str, within_s: float = 30) -> dict[str, Any]:
    """Drop ``text`` for the daemon (the local way in) and wait for its result."""
    result = state / "remote.result.json"
    result.unlink(missing_ok=True)
    tmp = state / "request.tmp"
    tmp.write_text(text)
    tmp.rename(state / "remote.request.yaml")
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


async def test_valid_invalid_local_only_and_too_large_configs_by_signed_command(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    config = with_commands(simulated_bus(modbus_sim, upstream.port, tmp_path, [AQ]), tmp_path)
    daemon = run_daemon(config, env=FAST)
    installed = daemon.config_path.read_bytes()
    await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "the link up")
    first_birth = upstream.last_status()
    assert first_birth is not None and first_birth["config_source"] == "local"

    # invalid: the check's own lines in the result, printed one a line; nothing changes
    broken = {**config, "sources": [{**config["sources"][0]}]}
    broken["sources"][0]["devices"] = [{**config["sources"][0]["devices"][0], "unit": 999}]
    code, refused, err = await command(upstream.port, tmp_path, dump(daemon, broken))
    assert refused is not None and code == 1, err
    assert (refused["op"], refused["state"], refused["reason"]) == (
        "config", "refused", "invalid_config",
    )  # fmt: skip
    assert refused["problems"] and all(p.startswith("remote.yaml: ") for p in refused["problems"])
    assert "sources[0].devices[0].unit" in refused["problems"][0]
    assert f"  {refused['problems'][0]}" in err.splitlines()
    assert "device" not in refused and "value" not in refused  # problems instead
    assert not (tmp_path / "remote.yaml").exists()

    # local only: commands stay as the installed file says
    local_keys = {**config, "commands": {**config["commands"], "max_age": "1m"}}
    code, local, _ = await command(upstream.port, tmp_path, dump(daemon, local_keys))
    assert local is not None and code == 1
    assert (local["state"], local["reason"]) == ("refused", "local_only")
    assert "commands" in local["detail"] and not (tmp_path / "remote.yaml").exists()

    # over 1 MiB: the sender will not send it; signed and sent anyway, the gateway refuses it
    huge = dump(daemon, config) + "#" * (1024 * 1024) + "\n"
    code, _, err = await command(upstream.port, tmp_path, huge)
    assert code == 2 and "1 MiB" in err
    doc = {"id": "huge-1", "ts": int(time.time() * 1000), "op": "config", "yaml": huge,
           "by": "ops-centre"}  # fmt: skip
    topics, signed = (
        (f"{PREFIX}/{GATEWAY}/commands", f"{PREFIX}/{GATEWAY}/results"),
        sign(doc, OPERATOR.sign),
    )
    big = await exchange(LOOPBACK, upstream.port, tls=None, topics=topics, command=signed,
                         timeout_s=30)  # fmt: skip
    assert big is not None and (big["state"], big["reason"]) == ("refused", "invalid_config")
    assert "over the 1 MiB" in big["problems"][0]
    # the same bytes again (a QoS 1 redelivery): the first result again, same seq
    again = await exchange(LOOPBACK, upstream.port, tls=None, topics=topics, command=signed,
                           timeout_s=30)  # fmt: skip
    assert again == big

    # valid: applied, confirmed, said everywhere, kept across a restart
    relabelled = {**config, "gateway": {**config["gateway"], "labels": {"site": "remote"}}}
    code, done, err = await command(upstream.port, tmp_path, dump(daemon, relabelled))
    assert done is not None and code == 0, err
    assert (done["state"], done["problems"]) == ("done", [])
    status = await daemon.status()
    assert status["gateway"]["config_source"] == "remote"
    assert status["gateway"]["labels"] == {"site": "remote"}
    assert [e["id"] for e in events(status, "config_applied")] == [done["id"]]
    await upstream.wait_until(
        lambda: any(m.data["config_source"] == "remote" for m in upstream.of("health")),
        10,
        "health saying remote",
    )
    birth = upstream.last_status()  # the birth names the new digest and says remote
    assert birth is not None and birth["config_source"] == "remote"
    assert birth["config_digest"] != first_birth["config_digest"]
    assert daemon.config_path.read_bytes() == installed  # the installed file is never touched

    # the local drop file is still a way in (a box without a commands section has no other)
    local_drop = await drop(daemon, tmp_path, dump(daemon, broken))
    assert (local_drop["state"], local_drop["reason"]) == ("refused", "invalid_config")
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
    config = with_commands(simulated_bus(modbus_sim, upstream.port, tmp_path, [AQ]), tmp_path)
    daemon = run_daemon(config, env=FAST)
    await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "the link up")
    dead = {
        **config,
        "uplink": {**config["uplink"], "servers": [f"mqtt://{LOOPBACK}:{free_port()}"]},
        "fleet": {"confirm_within": "3s"},
    }
    started = time.monotonic()
    # the result waits in the buffer while the box is cut off, and goes once it is back
    code, result, err = await command(upstream.port, tmp_path, dump(daemon, dead))
    assert result is not None and code == 1, err
    assert (result["state"], result["reason"]) == ("failed", "rolled_back"), result
    assert "did not connect" in result["detail"]
    assert time.monotonic() - started < 25  # a hang guard; the 3 s are the config's
    status = await daemon.wait_status(lambda s: s["uplink"]["connected"], 15, "back online")
    assert status["gateway"]["config_source"] == "local"
    assert [e["id"] for e in events(status, "config_rolled_back")] == [result["id"]]
    assert not (tmp_path / "remote.yaml").exists()
    seq = status["buffer"]["last_seq"]
    await upstream.wait_for_seq_above(seq, within_s=10)  # samples flow again
    assert await daemon.terminate() == 0
