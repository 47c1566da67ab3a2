"""What a hostile or broken upstream can send the gateway, end to end: `street-gateway run` with
Sparkplug B against mosquitto, the messages published by the test as any MQTT client could.

Each case was reproduced against v0.3's main before the inbound guard: a retained STATE bomb
killed the uplink at every connect; a STATE stamped ten years ahead wedged the node until a
restart; one 32 MiB NCMD took the RSS from 51 to 188 MB; 20,000 rebirth requests made 40,000
births and 20,000 log lines.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import pytest
from sparkplug_support import Decoder
from support import LOOPBACK, Mosquitto

from e2e.conftest import START_TIMEOUT_S, Daemon, ModbusSim, RunDaemon
from e2e.test_e2e_sparkplug import (
    DEVICES,
    GROUP,
    NODE,
    STATE_TOPIC,
    decoder,  # noqa: F401 - the module's fixture
    publish,
    sparkplug_config,
    sparkplug_upstream,
    state,
)

NCMD = f"spBv1.0/{GROUP}/NCMD/{NODE}"
TEN_YEARS_MS = 10 * 365 * 86_400_000
BOMB = b"[" * 5000  # 5 kB: json.loads raises RecursionError, not ValueError


class NodeConfig(Protocol):
    def __call__(self, *, primary: bool = False) -> dict[str, Any]: ...


@pytest.fixture
def node(mosquitto: Mosquitto, modbus_sim: ModbusSim, tmp_path: Path) -> NodeConfig:
    """The Sparkplug node's config (``primary``: with a primary host) over simulated devices."""
    sim_port = modbus_sim(DEVICES)

    def config(*, primary: bool = False) -> dict[str, Any]:
        return sparkplug_config(mosquitto.port, tmp_path, sim_port, primary=primary)

    return config


def now_ms() -> int:
    return int(time.time() * 1000)


def refused(status: dict[str, object]) -> dict[str, int]:
    uplink = status["uplink"]
    assert isinstance(uplink, dict)
    result: dict[str, int] = uplink["inbound_refused"]
    return result


def peak_rss_kib(daemon: Daemon) -> int:
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_a_retained_state_bomb_is_refused_and_the_node_keeps_publishing(
    mosquitto: Mosquitto,
    run_daemon: RunDaemon,
    node: NodeConfig,
    decoder: Decoder,  # noqa: F811
) -> None:
    config = node(primary=True)
    async with sparkplug_upstream(mosquitto.port, decoder) as up:
        daemon = run_daemon(config)
        await publish(mosquitto.port, STATE_TOPIC, state(True, now_ms()), retain=True)
        await up.wait_until(lambda: len(up.seqs()) >= 5, "data once the host is online")
        await publish(mosquitto.port, STATE_TOPIC, BOMB, retain=True)
        status = await daemon.wait_status(refused, 10, "the bomb refused")
        assert refused(status) == {"failed": 1}
        top = max(up.seqs())
        await up.wait_until(lambda: max(up.seqs()) > top + 10, "data after the bomb")
        assert up.holes() == [] and up.host().births == 1  # the same session, never broken
        uplink_task = [t for t in (await daemon.status())["tasks"] if t["name"] == "uplink"]
        assert [t["failures"] for t in uplink_task] == [0]
        _, _, metrics = await daemon.get("/metrics")
        assert 'street_gateway_uplink_inbound_refused_total{reason="failed"} 1.0' in metrics
        assert await daemon.terminate() == 0

        # A restart meets the retained bomb first: it waits for its primary host, says so, and
        # goes on as soon as the host says online again.
        daemon = run_daemon(config)
        status = await daemon.wait_status(
            lambda s: s["uplink"]["waiting_for"], START_TIMEOUT_S, "waiting for the host"
        )
        assert status["uplink"]["waiting_for"] == "primary host scada-1"
        assert refused(status) == {"failed": 1}
        code, _, body = await daemon.get("/health")
        assert code == 200  # the gateway works and buffers; the operator sees why nothing goes
        assert json.loads(body)["problems"][0].startswith("waiting for primary host scada-1")
        _, _, metrics = await daemon.get("/metrics")
        assert "\nstreet_gateway_uplink_waiting 1.0\n" in metrics
        births = up.host().births
        await publish(mosquitto.port, STATE_TOPIC, state(True, now_ms()), retain=True)
        await up.wait_until(lambda: up.host().births > births, "births after the genuine STATE")
        status = await daemon.wait_status(lambda s: s["uplink"]["connected"], 10, "connected")
        assert status["uplink"]["waiting_for"] is None and status["health"]["problems"] == []
        assert await daemon.terminate() == 0
    log = daemon.log()
    assert log.count("refused (failed): RecursionError") == 1


async def test_a_state_from_the_future_is_ignored_and_a_genuine_one_counts(
    mosquitto: Mosquitto,
    run_daemon: RunDaemon,
    node: NodeConfig,
    decoder: Decoder,  # noqa: F811
) -> None:
    config = node(primary=True)
    async with sparkplug_upstream(mosquitto.port, decoder) as up:
        daemon = run_daemon(config)  # the clock is synchronised (STREET_GATEWAY_CLOCK=synced)
        await daemon.wait_status(lambda s: s["uplink"]["waiting_for"], 10, "waiting")
        await publish(mosquitto.port, STATE_TOPIC, state(True, now_ms() + TEN_YEARS_MS))
        status = await daemon.wait_status(refused, 10, "the STATE refused")
        assert refused(status) == {"from_the_future": 1}
        assert status["uplink"]["waiting_for"] == "primary host scada-1" and up.verbs() == []
        # The genuine host: online now, then offline, then online: each one is heard.
        await publish(mosquitto.port, STATE_TOPIC, state(True, now_ms()), retain=True)
        await up.wait_until(lambda: len(up.seqs()) >= 5, "data once the host is online")
        await publish(mosquitto.port, STATE_TOPIC, state(False, now_ms()), retain=True)
        await up.wait_until(lambda: up.host().deaths == [0], "NDEATH for the offline host")
        await publish(mosquitto.port, STATE_TOPIC, state(True, now_ms()), retain=True)
        await up.wait_until(lambda: up.host().births == 2, "births once the host is back")
        assert await daemon.terminate() == 0
    assert "STATE stamped" in daemon.log() and "ahead of our clock" in daemon.log()


async def test_a_rebirth_flood_is_answered_with_a_few_births(
    mosquitto: Mosquitto,
    run_daemon: RunDaemon,
    node: NodeConfig,
    decoder: Decoder,  # noqa: F811
) -> None:
    requests = 2000
    config = node()
    async with sparkplug_upstream(mosquitto.port, decoder) as up:
        daemon = run_daemon(config)
        await up.wait_until(lambda: len(up.seqs()) >= 5, "data after the births")
        rebirth = decoder.encode_rebirth()
        started = time.monotonic()
        async with aiomqtt.Client(LOOPBACK, mosquitto.port, timeout=10) as client:
            for _ in range(requests):
                await client.publish(NCMD, rebirth, qos=1)
        flood_s = time.monotonic() - started
        # The session's NBIRTH, one rebirth now, one per 5 s window the flood lasted and one at
        # the end of the last (one more in case the gateway read the flood later than it went).
        most = 1 + 1 + math.ceil(flood_s / 5) + 1 + 1
        await up.wait_until(lambda: up.verbs().count("NBIRTH") >= 3, "the paced rebirth")
        await asyncio.sleep(6)  # the window after the last rebirth ends quietly
        assert 3 <= up.verbs().count("NBIRTH") <= most
        top = max(up.seqs())
        await up.wait_until(lambda: max(up.seqs()) > top + 10, "data after the flood")
        host = up.host()
        assert host.seq_breaks == 0 and up.holes() == []
        assert await daemon.terminate() == 0
    log = daemon.log()
    assert log.count("rebirth requested") == 1
    assert f"rebirth: {requests} requests in" in log


async def test_an_oversized_command_is_refused_before_it_is_read(
    mosquitto: Mosquitto, run_daemon: RunDaemon, node: NodeConfig
) -> None:
    size = 32 * 1024 * 1024
    config = node()
    daemon = run_daemon(config)
    status = await daemon.wait_status(lambda s: s["uplink"]["published_total"] > 5, 20, "data")
    before = peak_rss_kib(daemon)
    await publish(mosquitto.port, NCMD, bytes(size))
    status = await daemon.wait_status(refused, 20, "the command refused")
    assert refused(status) == {"too_large": 1}
    published = status["uplink"]["published_total"]
    await daemon.wait_status(
        lambda s: s["uplink"]["published_total"] > published + 10, 20, "data after it"
    )
    # Never buffered whole: the peak grew by far less than the command's size.
    assert (peak_rss_kib(daemon) - before) * 1024 < size / 4
    assert await daemon.terminate() == 0
