"""Health upstream: the retained ``P/G/health`` a fleet view reads (SPEC "Fleet operations").

A real daemon polls two simulated Modbus devices, one behind a FaultProxy, and publishes to
mosquitto. The health periods are shortened for the test with the test-only environment
variables (docs/reference.md): at most one message per 2 s, one every 4 s regardless.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from proxy import FaultProxy
from sparkplug_support import Decoder, compile_descriptor_set
from support import Mosquitto, fill, subscription

from e2e.conftest import (
    GATEWAY,
    PREFIX,
    Device,
    ModbusSim,
    RunDaemon,
    Upstream,
    gateway_config,
    modbus_tcp_source,
    simulated_bus,
)
from e2e.test_e2e_sparkplug import DEVICES as SPARKPLUG_DEVICES
from e2e.test_e2e_sparkplug import sparkplug_config, sparkplug_upstream

AQ: Device = ("aq-1", 1, "air_quality", "200ms")
RIVER: Device = ("river-1", 2, "water_level", "200ms")
FAST = {"STREET_GATEWAY_HEALTH_MIN_GAP": "2s", "STREET_GATEWAY_HEALTH_PERIOD": "4s"}
HEALTH_KEYS = {
    "ts", "status", "problems", "devices", "backlog", "buffer", "link", "version",
    "config_digest", "config_source", "uptime_s",
}  # fmt: skip


def healths(upstream: Upstream) -> list[dict[str, Any]]:
    return [m.data for m in upstream.of("health") if not m.retain]


def seen(upstream: Upstream, **devices: str) -> bool:
    return any(h["devices"] == devices for h in healths(upstream))


def assert_spaced(upstream: Upstream, min_gap_ms: int) -> None:
    stamps = [h["ts"] for h in healths(upstream)]
    assert stamps == sorted(stamps)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= min_gap_ms for gap in gaps), gaps


async def test_health_follows_a_device_down_and_back_and_repeats_itself(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    aq_port, river_port = modbus_sim([AQ]), modbus_sim([RIVER])
    async with FaultProxy(river_port) as river_link:
        config = gateway_config(
            broker_port=upstream.port,
            state_dir=tmp_path,
            sources=[
                modbus_tcp_source("cabinet-bus", aq_port, [AQ]),
                modbus_tcp_source("river-bus", river_link.port, [RIVER]),
            ],
        )
        daemon = run_daemon(config, env=FAST)
        await upstream.wait_until(lambda: seen(upstream, **{"aq-1": "ok", "river-1": "ok"}),
                                  20, "health with both devices ok")  # fmt: skip
        both_ok = {"aq-1": "ok", "river-1": "ok"}
        first = next(h for h in healths(upstream) if h["devices"] == both_ok)
        assert set(first) == HEALTH_KEYS
        assert first["status"] == "ok" and first["problems"] == []
        assert first["config_source"] == "local"
        status = await daemon.status()
        assert first["version"] == status["gateway"]["version"]
        assert first["buffer"]["room_bytes"] > 0 and first["buffer"]["bytes"] > 0
        birth = upstream.last_status()
        assert birth is not None and first["config_digest"] == birth["config_digest"]

        await river_link.outage()
        await upstream.wait_until(lambda: seen(upstream, **{"aq-1": "ok", "river-1": "down"}),
                                  20, "health with river-1 down")  # fmt: skip
        down = next(h for h in healths(upstream) if h["devices"].get("river-1") == "down")
        assert down["status"] == "ok"  # one dead device among live ones is not degraded health
        await river_link.restore()
        back_from = len(healths(upstream))
        await upstream.wait_until(
            lambda: any(h["devices"]["river-1"] == "ok" for h in healths(upstream)[back_from:]),
            20,
            "health with river-1 back",
        )
        # Nothing changes now: the periodic message still comes, twice.
        quiet_from = len(healths(upstream))
        await upstream.wait_until(lambda: len(healths(upstream)) >= quiet_from + 2, 15,
                                  "two periodic health messages")  # fmt: skip
        assert_spaced(upstream, 2000)

        # Retained: a fleet view that subscribes now gets the last one at once.
        got: list[dict[str, Any]] = []
        topic = f"{PREFIX}/{GATEWAY}/health"
        async with subscription(upstream.port, topic, lambda m: got.append(
            {"retain": m.retain, **json.loads(bytes(m.payload))}  # type: ignore[arg-type]
        ), identifier="health-late", name="late"):  # fmt: skip
            await upstream.wait_until(lambda: bool(got), 5, "the retained health")
        assert got[0]["retain"] is True and set(got[0]) == HEALTH_KEYS | {"retain"}
        assert await daemon.terminate() == 0


async def test_health_rate_is_bounded_while_a_device_flaps(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    """A device whose link flaps every half second changes state far more often than the gap
    allows; the messages stay at least the gap apart and the last one tells the final state."""
    river_port = modbus_sim([RIVER])
    async with FaultProxy(river_port) as river_link:
        config = gateway_config(
            broker_port=upstream.port,
            state_dir=tmp_path,
            sources=[modbus_tcp_source("river-bus", river_link.port, [RIVER])],
        )
        env = {"STREET_GATEWAY_HEALTH_MIN_GAP": "3s", "STREET_GATEWAY_HEALTH_PERIOD": "1h"}
        daemon = run_daemon(config, env=env)
        await upstream.wait_until(lambda: seen(upstream, **{"river-1": "ok"}), 20, "health ok")
        for _ in range(8):
            await river_link.outage()
            await daemon.wait_status(
                lambda s: s["sources"][0]["devices"][0]["state"] != "ok", 10, "river-1 failing"
            )
            await river_link.restore()
            await daemon.wait_status(
                lambda s: s["sources"][0]["devices"][0]["state"] == "ok", 10, "river-1 ok"
            )
        await upstream.wait_until(lambda: healths(upstream)[-1]["devices"]["river-1"] == "ok",
                                  10, "the final state")  # fmt: skip
        assert_spaced(upstream, 3000)
        assert await daemon.terminate() == 0


async def test_health_says_degraded_when_the_buffer_loses_its_room(
    small_fs: Path,
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    mosquitto: Mosquitto,
    upstream: Upstream,
) -> None:
    daemon = run_daemon(simulated_bus(modbus_sim, mosquitto.port, small_fs, [AQ]), env=FAST)
    await upstream.wait_until(lambda: seen(upstream, **{"aq-1": "ok"}), 20, "health ok")
    filler = fill(small_fs, leave_fraction=0.03)
    await upstream.wait_until(
        lambda: healths(upstream)[-1]["status"] == "degraded", 20, "health degraded"
    )
    degraded = healths(upstream)[-1]
    assert degraded["buffer"]["room_bytes"] == 0
    (problem,) = degraded["problems"]
    assert problem.startswith("buffer has no room left to take an outage's samples (")
    filler.unlink()
    await upstream.wait_until(lambda: healths(upstream)[-1]["status"] == "ok", 20, "health ok")
    assert healths(upstream)[-1]["buffer"]["room_bytes"] > 6 * 1024**2
    assert_spaced(upstream, 2000)
    assert await daemon.terminate() == 0


@pytest.fixture(scope="module")
def sp_decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


async def test_with_sparkplug_the_health_figures_are_node_metrics_too(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    mosquitto: Mosquitto,
    sp_decoder: Decoder,
    tmp_path: Path,
) -> None:
    sim_port = modbus_sim(SPARKPLUG_DEVICES)
    async with sparkplug_upstream(mosquitto.port, sp_decoder) as up:
        daemon = run_daemon(sparkplug_config(mosquitto.port, tmp_path, sim_port), env=FAST)

        def all_ok() -> dict[str, Any] | None:
            for _, named, _ in up.host().data:  # the host checks seq order and aliases
                devices = named.get("sgw/health/devices")
                if devices and set(json.loads(devices).values()) == {"ok"}:
                    return named
            return None

        await up.wait_until(lambda: all_ok() is not None, "an NDATA with every device ok")
        named = all_ok()
        assert named is not None
        assert named["sgw/health/status"] == "ok"
        assert set(json.loads(named["sgw/health/devices"])) == {d[0] for d in SPARKPLUG_DEVICES}
        assert named["sgw/health/config_source"] == "local"
        assert named["sgw/health/version"] == (await daemon.status())["gateway"]["version"]
        assert await daemon.terminate() == 0
