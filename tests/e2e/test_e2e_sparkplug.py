"""`uplink.format: sparkplug-b` end to end: simulated Modbus devices -> `street-gateway run`
-> mosquitto -> a Sparkplug host in the test, which decodes with the standard's schema compiled
at test time (tests/sparkplug_support.py), never with the gateway's own module.

Births, bdSeq across kill -9 (the will) and a restart, rebirth, a primary host going offline
and online (historical replay in order, nothing missing), a clean shutdown's NDEATH, and a
broker cut between the data and the checkpoint's PUBACK (a resend, never a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from proxy import FaultProxy
from sparkplug_support import Decoder, Host, compile_descriptor_set
from support import LOOPBACK, Mosquitto, subscription, until_set

from e2e.conftest import START_TIMEOUT_S, ModbusSim, RunDaemon, modbus_tcp_source

GROUP, NODE, HOST_ID = "city-sensors", "lamppost-sp", "scada-1"
DEVICES = [("cab-1", 1, "e2e_cabinet", "100ms"), ("aq-2", 2, "air_quality", "200ms")]
STATE_TOPIC = f"spBv1.0/STATE/{HOST_ID}"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder(compile_descriptor_set(tmp_path_factory.mktemp("proto")))


def sparkplug_config(
    broker_port: int, state_dir: Path, sim_port: int, *, primary: bool = False
) -> dict[str, Any]:
    sparkplug: dict[str, Any] = {"group_id": GROUP, "edge_node_id": NODE}
    if primary:
        sparkplug["primary_host_id"] = HOST_ID
    return {
        "gateway": {"id": "lamppost-0421"},
        "buffer": {"path": str(state_dir / "buffer.db"), "sync": "normal"},
        "uplink": {
            "servers": [f"mqtt://{LOOPBACK}:{broker_port}"],
            "topic_prefix": "e2e",
            "keepalive": "2s",
            "reconnect_max": "500ms",
            "batch": {"max_samples": 20, "max_wait": "50ms"},
            "format": "sparkplug-b",
            "sparkplug": sparkplug,
        },
        "status": {"listen": f"{LOOPBACK}:0"},
        "sources": [modbus_tcp_source("cabinet-bus", sim_port, DEVICES)],
    }


@dataclass
class SparkplugUpstream:
    """Every message under ``spBv1.0/#`` (and the checkpoints), in arrival order."""

    decoder: Decoder
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        self.messages.append((str(message.topic), message.payload))
        self._arrived.set()

    def host(self) -> Host:
        """A host that read everything so far (its asserts check the standard's rules)."""
        host = Host(self.decoder, GROUP, NODE)
        for topic, payload in self.messages:
            if topic.startswith(f"spBv1.0/{GROUP}/"):
                host.feed(topic, payload)
        return host

    def verbs(self) -> list[str]:
        return [t.split("/")[2] for t, _ in self.messages if t.startswith(f"spBv1.0/{GROUP}/")]

    def seqs(self, host: Host | None = None) -> list[int]:
        """sgw/seq of every DDATA, in arrival order."""
        host = host or self.host()
        return [named["sgw/seq"] for _, named, _ in host.data if "sgw/seq" in named]

    def gap_seqs(self) -> set[int]:
        """Seqs declared lost on `sgw/gap` (e.g. a kill -9's `unclean_shutdown`)."""
        declared: set[int] = set()
        for _, named, _ in self.host().data:
            if named.get("sgw/gap"):
                first, last = named["sgw/gap"].split(":")[0].split("-")
                declared.update(range(int(first), int(last) + 1))
        return declared

    def holes(self) -> list[int]:
        """Seqs neither received nor declared lost: what an audit would call missing."""
        got = set(self.seqs()) | self.gap_seqs()
        return [s for s in range(1, max(got, default=0) + 1) if s not in got]

    async def next_birth(self) -> None:
        births = self.host().births
        await self.wait_until(lambda: self.host().births > births, "the next NBIRTH")

    async def wait_until(
        self, predicate: Callable[[], object], what: str, within_s: float = 20.0
    ) -> None:
        try:
            await until_set(self._arrived, predicate, within_s, 0.2)
        except TimeoutError:
            raise AssertionError(f"never saw {what}; verbs {self.verbs()[-20:]}") from None


@contextlib.asynccontextmanager
async def sparkplug_upstream(port: int, decoder: Decoder) -> AsyncIterator[SparkplugUpstream]:
    up = SparkplugUpstream(decoder)
    async with subscription(
        port, "spBv1.0/#", up.take, identifier=f"sp-host-{time.monotonic_ns()}", name="sp-host"
    ):
        yield up


async def publish(port: int, topic: str, payload: bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client(LOOPBACK, port, timeout=10) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


def historical_seqs(host: Host, session: int) -> list[int]:
    """sgw/seq of the DDATA flagged is_historical in that session, in arrival order."""
    starts = [*host.session_starts, len(host.data)]
    return [
        named["sgw/seq"]
        for _, named, doc in host.data[starts[session] : starts[session + 1]]
        if "sgw/seq" in named and doc["metrics"][0]["is_historical"]
    ]


def state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


async def test_births_bdseq_across_kill_9_rebirth_and_clean_shutdown(
    mosquitto: Mosquitto,
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    tmp_path: Path,
    decoder: Decoder,
) -> None:
    config = sparkplug_config(mosquitto.port, tmp_path, modbus_sim(DEVICES))
    async with sparkplug_upstream(mosquitto.port, decoder) as up:
        daemon = run_daemon(config)
        await up.wait_until(lambda: up.verbs().count("DDATA") >= 10, "data after the births")
        host = up.host()
        assert up.verbs()[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
        first_bd = host.bd_seq
        assert first_bd == 0  # a fresh buffer folder: the first connect
        assert (tmp_path / "buffer.db.bdseq").read_text() == "0\n"
        assert host.values["cab-1", "u0"] is not None and ("aq-2", "pm25") in host.values

        # kill -9: the broker publishes the will, NDEATH with that bdSeq.
        daemon.kill()
        await up.wait_until(lambda: up.host().deaths, "the will", within_s=START_TIMEOUT_S)
        assert up.host().deaths == [first_bd]
        # Restart: the next bdSeq, births again, and nothing that was stored is missing.
        seen = len(up.messages)
        daemon = run_daemon(config)
        await up.wait_until(lambda: "NBIRTH" in up.verbs()[seen:], "a second NBIRTH")
        await up.wait_until(lambda: up.host().births == 2 and len(up.seqs()) > 20, "data again")
        host = up.host()
        assert host.bd_seq == first_bd + 1 and host.seq_breaks == 0

        # A host asks for a rebirth: NBIRTH with the same bdSeq and every DBIRTH again.
        await publish(mosquitto.port, f"spBv1.0/{GROUP}/NCMD/{NODE}", decoder.encode_rebirth())
        await up.wait_until(lambda: up.host().births == 3, "the rebirth")
        host = up.host()
        assert host.bd_seq == first_bd + 1 and host.seq_breaks == 0

        # SIGTERM: the gateway publishes NDEATH itself (this session's bdSeq) and exits 0.
        assert await daemon.terminate() == 0
        await up.wait_until(lambda: len(up.host().deaths) == 2, "the shutdown's NDEATH")
        assert up.host().deaths == [first_bd, first_bd + 1]
        assert up.holes() == []


async def test_primary_host_offline_then_online_replays_history_in_order(
    mosquitto: Mosquitto,
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    tmp_path: Path,
    decoder: Decoder,
) -> None:
    config = sparkplug_config(mosquitto.port, tmp_path, modbus_sim(DEVICES), primary=True)
    async with sparkplug_upstream(mosquitto.port, decoder) as up:
        daemon = run_daemon(config)
        await daemon.wait_status(lambda s: s["buffer"]["samples"] >= 10, 20, "samples stored")
        assert up.verbs() == []  # no birth, no data while the primary host has said nothing
        await publish(mosquitto.port, STATE_TOPIC, state(True, 1000), retain=True)
        await up.wait_until(lambda: len(up.seqs()) >= 10, "data once the host is online")
        host = up.host()
        assert host.bd_seq == 0 and host.seq_breaks == 0
        # What was stored while the gateway waited for the host went out historical.
        assert set(range(1, 11)) <= set(historical_seqs(host, session=0))

        # The host goes offline: NDEATH, disconnect, store; reconnect with the next bdSeq.
        await publish(mosquitto.port, STATE_TOPIC, state(False, 2000), retain=True)
        await up.wait_until(lambda: up.host().deaths == [0], "NDEATH for the offline host")
        offline_at = len(up.messages)
        before = max(up.seqs())
        await daemon.wait_status(
            lambda s: s["uplink"]["backlog"] >= 20, 20, "samples stored while the host is away"
        )
        assert "DDATA" not in up.verbs()[offline_at:]
        await publish(mosquitto.port, STATE_TOPIC, state(True, 3000), retain=True)
        await up.wait_until(lambda: up.host().births == 2, "births once the host is back")
        await up.wait_until(lambda: max(up.seqs()) > before + 30, "the stored samples and more")
        host = up.host()
        assert host.bd_seq == 1 and host.seq_breaks == 0
        assert up.holes() == [], "nothing stored while the host was away is missing"
        # The second session: what was stored meanwhile goes out historical, in seq order
        # (the first sample the host missed among them).
        historical = historical_seqs(host, session=1)
        assert historical == sorted(historical)
        assert before + 1 in historical
        assert await daemon.terminate() == 0


async def test_a_cut_before_the_checkpoints_puback_means_resend_never_loss(
    mosquitto: Mosquitto,
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    tmp_path: Path,
    decoder: Decoder,
) -> None:
    async with (
        FaultProxy(mosquitto.port) as link,
        sparkplug_upstream(mosquitto.port, decoder) as up,
    ):
        config = sparkplug_config(link.port, tmp_path, modbus_sim(DEVICES))
        daemon = run_daemon(config)
        await up.wait_until(lambda: len(up.seqs()) >= 10, "data")
        for _ in range(3):
            # Hold every byte (data on its way, PUBACKs on theirs), then drop the connection:
            # what was held never arrives and no checkpoint of it is acknowledged.
            link.pause()
            await asyncio.sleep(0.3)
            link.cut()
            link.resume()
            await up.next_birth()
        top = max(up.seqs())
        await up.wait_until(lambda: max(up.seqs()) > top + 10, "data after the last cut")
        assert await daemon.terminate() == 0
        assert up.holes() == [], "a seq the gateway stored never reached the host"
        assert up.host().seq_breaks == 0
