"""SIGHUP reloads the config: a new device starts reporting; a broken file changes nothing."""

from __future__ import annotations

import signal
from pathlib import Path

from e2e.conftest import Device, ModbusSim, RunDaemon, Upstream, modbus_config

AQ: Device = ("aq-1", 1, "air_quality", "200ms")
METER: Device = ("meter-1", 2, "energy_meter", "200ms")


def _devices_after(upstream: Upstream, seq: int) -> set[str]:
    return {s["device"] for s in upstream.samples() if s["seq"] > seq}


async def test_sighup_adds_a_device_and_a_broken_config_keeps_the_old_one_running(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    port = modbus_sim([AQ, METER])  # the meter is wired but not configured yet
    daemon = run_daemon(modbus_config(upstream.port, tmp_path, port, [AQ]))
    await upstream.wait_for_seq_above(5)
    assert _devices_after(upstream, 0) == {"aq-1"}
    first_birth = upstream.last_status()
    assert first_birth is not None

    daemon.write_config(modbus_config(upstream.port, tmp_path, port, [AQ, METER]))
    daemon.signal(signal.SIGHUP)
    await upstream.wait_until(
        lambda: "meter-1" in _devices_after(upstream, 0), 10, "samples of the added device"
    )
    states = {
        d["name"]: d["state"] for s in (await daemon.status())["sources"] for d in s["devices"]
    }
    assert set(states) == {"aq-1", "meter-1"}
    # The link stayed up: no offline flap, and the retained birth names the new config.
    statuses = [m.data for m in upstream.of("status")]
    assert all(status["state"] == "online" for status in statuses), statuses
    await upstream.wait_until(
        lambda: upstream.last_status() != first_birth, 5, "a birth with the new config digest"
    )
    new_birth = upstream.last_status()
    assert new_birth is not None
    assert new_birth["config_digest"] != first_birth["config_digest"]
    assert new_birth["started"] == first_birth["started"]
    # The upstream learns the new device's points from the retained meta, re-published.
    await upstream.wait_until(
        lambda: set((upstream.meta() or {}).get("devices", {})) == {"aq-1", "meter-1"},
        5,
        "a meta naming the added device",
    )
    meta = upstream.meta()
    assert meta is not None
    assert meta["config_digest"] == new_birth["config_digest"]
    assert meta["devices"]["meter-1"]["points"]["voltage"] == {"type": "float32", "unit": "V"}
    metas = len(upstream.of("meta"))

    daemon.write_config("gateway: {id: lamppost-e2e\nsources: [\n")  # a half-saved edit
    daemon.signal(signal.SIGHUP)
    await upstream.wait_until(lambda: "reload refused" in daemon.log(), 5, "the refusal logged")
    refused_at = upstream.max_seq()
    await upstream.wait_until(
        lambda: _devices_after(upstream, refused_at) == {"aq-1", "meter-1"},
        10,
        "both devices still delivering after the refused reload",
    )
    assert daemon.proc.poll() is None
    assert str(daemon.config_path) in daemon.log()  # the problem names the file
    assert "YAML syntax error" in daemon.log()
    assert len(upstream.of("meta")) == metas  # the refused reload told the upstream nothing
    assert not upstream.holes()
    assert not upstream.reused_seqs()
