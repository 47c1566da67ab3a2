"""`street-gateway audit --format sparkplug-b`: completeness from a Sparkplug B stream.

The stream is the Sparkplug format's own messages (births, DDATA with sgw/seq, NDATA gaps and
alarms), published with aiomqtt to a real mosquitto, with a real hole in it; the audit runs as
the command a user types, continuously, and `--once` reports from its state file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import Mosquitto, stop_process
from test_sparkplug_format import CURRENT, GROUP, NODE, catalog, sample

from gateway.audit.sparkplug import SparkplugFleet
from gateway.model import AlarmEvent, Gap, Lane, StoredItem
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.wire import Outgoing


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def edge_node(bd_seq: int = 3) -> SparkplugFormat:
    fmt = SparkplugFormat(
        catalog(),
        group_id=GROUP,
        edge_node_id=NODE,
        topic_prefix="city/sensors",
        current_values=lambda: CURRENT,
    )
    fmt.begin(bd_seq)
    return fmt


def holed_stream(fmt: SparkplugFormat) -> list[Outgoing]:
    """Births; samples 1..10 and 13..20 (11 and 12 never sent); gap 21-25; alarm 26."""
    out = fmt.session_start()
    out += fmt.samples([sample(s, pm25=s) for s in range(1, 11)], historical=False)
    out += fmt.samples([sample(s, "noise-1", laeq=50.0) for s in range(13, 21)], historical=True)
    out += fmt.gap(Gap(1, 21, 25, 5, "max_age"))
    event = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", 5000)
    out += fmt.alarm(StoredItem(26, Lane.ALARM, 5000, event))
    return [m for m in out if m.topic.startswith("spBv1.0/")]


def apply_all(fleet: SparkplugFleet, messages: list[Outgoing], now: int = 1000) -> None:
    for m in messages:
        assert fleet.apply(m.topic, m.payload, now), fleet.last_rejected


def test_seqs_gaps_alarms_and_the_hole_from_the_formats_messages() -> None:
    fleet = SparkplugFleet()
    fmt = edge_node()
    apply_all(fleet, holed_stream(fmt))
    led = fleet.gateways[NODE]
    assert led.online is True
    assert list(led.received) == [(1, 10), (13, 20), (26, 26)]
    assert [(h.from_seq, h.to_seq) for h in led.holes] == [(11, 12)]
    assert list(led.gaps["max_age"]) == [(21, 25)]
    assert led.max_seq == 26 and fleet.rejected == 0


def test_aliases_survive_an_audit_restart_and_stale_wills_are_ignored() -> None:
    fleet = SparkplugFleet()
    fmt = edge_node(bd_seq=3)
    apply_all(fleet, holed_stream(fmt))
    restarted = SparkplugFleet()
    restarted.restore_meta(fleet.extra_meta())
    restarted.gateways = fleet.gateways
    (ddata,) = [m for m in fmt.samples([sample(27, pm25=1)], historical=False) if m.qos == 0]
    assert restarted.apply(ddata.topic, ddata.payload, 2000), restarted.last_rejected
    assert restarted.gateways[NODE].max_seq == 27
    # A new session (bdSeq 4) is born; the old session's will arrives after it: still online.
    fmt.begin(4)
    old_will = edge_node(bd_seq=3).will()
    apply_all(restarted, fmt.session_start())
    assert restarted.apply(old_will.topic, old_will.payload, 3000)
    assert restarted.gateways[NODE].online is True
    will = fmt.will()
    assert restarted.apply(will.topic, will.payload, 4000)
    assert restarted.gateways[NODE].online is False


def test_data_before_a_birth_is_rejected_and_other_vendors_nodes_are_skipped() -> None:
    fmt = edge_node()
    fmt.session_start()
    (ddata,) = [m for m in fmt.samples([sample(1, pm25=1)], historical=False) if m.qos == 0]
    fleet = SparkplugFleet()
    assert not fleet.apply(ddata.topic, ddata.payload, 1)
    assert fleet.last_rejected is not None and "before any birth" in fleet.last_rejected
    assert not fleet.apply(f"spBv1.0/{GROUP}/DDATA/{NODE}/aq-1", b"\xff\xfe", 1)
    # A birth without sgw/gap is not a street-gateway: its data do not make a gateway.
    foreign = edge_node()
    foreign_birth = foreign.session_start()[0]
    payload = pb.Payload.FromString(foreign_birth.payload)
    kept = [m for m in payload.metrics if m.name != "sgw/gap"]
    del payload.metrics[:]
    payload.metrics.extend(kept)
    topic = foreign_birth.topic.replace(NODE, "plc-7")
    assert fleet.apply(topic, payload.SerializeToString(), 1)
    assert fleet.apply("spBv1.0/STATE/scada-1", b'{"online": true, "timestamp": 1}', 1)
    assert "plc-7" not in fleet.gateways


def audit(broker: Mosquitto, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gateway", "--log-level", "WARNING", "audit", "--format",
        "sparkplug-b", "--broker", broker.url, "--state", str(state), *extra,
    ]  # fmt: skip


def once(broker: Mosquitto, state: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    args = audit(broker, state, "--once", "--json", *extra)
    done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode, json.loads(done.stdout), done.stderr.decode()


@pytest.fixture
def running_audit(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`audit --format sparkplug-b` as a service, on ``tmp_path/audit.db``; stopped by pid."""
    log = tmp_path / "audit.log"
    args = audit(mosquitto, tmp_path / "audit.db")
    args[args.index("WARNING")] = "INFO"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_until(lambda: "subscribed to spBv1.0/#" in log.read_text())
        yield proc
    finally:
        stop_process(proc)


def once_refused(broker: Mosquitto, state: Path) -> str:
    done = subprocess.run(audit(broker, state, "--once"), capture_output=True, check=False)
    assert done.returncode == 2
    return done.stderr.decode()


async def test_a_running_audit_reports_the_real_hole_and_once_reads_its_state(
    mosquitto: Mosquitto, tmp_path: Path, running_audit: subprocess.Popen[bytes]
) -> None:
    state = tmp_path / "audit.db"
    assert "runs as a service" in once_refused(mosquitto, tmp_path / "elsewhere.db")
    fmt = edge_node()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=10) as client:
        for m in holed_stream(fmt):
            await client.publish(m.topic, m.payload, qos=m.qos)

    def reported() -> dict[str, Any]:
        return once(mosquitto, state)[1]

    wait_until(lambda: any(g["max_seq"] == 26 for g in reported()["gateways"]))
    code, doc, stderr = once(mosquitto, state, "--grace", "0s")
    (gw,) = doc["gateways"]
    assert gw["id"] == NODE and gw["online"] is True
    assert gw["received"] == 19 and gw["duplicates"] == 0
    assert gw["gaps"] == [{"from_seq": 21, "to_seq": 25, "reason": "max_age"}]
    assert [(h["from_seq"], h["to_seq"]) for h in gw["holes"]] == [(11, 12)]
    assert code == 1  # a hole older than the grace period
    assert f"from {state}, written" in stderr  # a person sees how fresh the report is
    assert once(mosquitto, state)[0] == 0  # within the default 10 min grace

    will = fmt.goodbye()[0]  # a clean shutdown's NDEATH
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=10) as client:
        await client.publish(will.topic, will.payload, qos=1)
    wait_until(lambda: reported()["gateways"][0]["online"] is False)
    running_audit.send_signal(signal.SIGTERM)
    assert running_audit.wait(timeout=10) == 0


def test_group_is_refused_with_sparkplug(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "gateway", "audit", "--format", "sparkplug-b", "--broker",
            "mqtt://127.0.0.1:1", "--group", "g", "--state", str(tmp_path / "a.db")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    assert done.returncode == 2 and b"--group" in done.stderr


@pytest.mark.parametrize("verb", ["NCMD", "DCMD", "DDEATH"])
def test_commands_and_device_deaths_are_skipped(verb: str) -> None:
    fleet = SparkplugFleet()
    assert fleet.apply(f"spBv1.0/{GROUP}/{verb}/{NODE}/aq-1", b"\x00garbage", 1)
    assert fleet.rejected == 0 and not fleet.gateways
