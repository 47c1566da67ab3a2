"""A cabinet UPS over SNMP, end to end: net-snmp's snmpd (values the test writes) -> the real
daemon with an ``snmp`` source (v3 authPriv) -> mosquitto -> upstream. The mains fail: the
on-battery alarm is raised upstream, and cleared when they return."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from snmp_support import CONTROLLED, USERS, Snmpd, running_snmpd, secret_file
from support import LOOPBACK

from e2e.conftest import RunDaemon, Upstream, gateway_config

OUTPUT_SOURCE = f"{CONTROLLED}.1.4.1.0"  # upsOutputSource: 3 mains, 5 battery
CHARGE = f"{CONTROLLED}.1.2.4.0"
MISSING = f"{CONTROLLED}.1.7.7.0"
ON_BATTERY = "ups-1/output_source>4"


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    with running_snmpd(tmp_path / "snmpd") as agent:
        agent.set(OUTPUT_SOURCE, "integer", 3)
        agent.set(CHARGE, "gauge", 100)
        yield agent


async def test_a_ups_on_battery_raises_its_alarm_upstream(
    snmpd: Snmpd, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    auth, auth_key, priv, priv_key = USERS["ups-sha"]
    source = {
        "name": "ups-1",
        "kind": "snmp",
        "host": LOOPBACK,
        "port": snmpd.port,
        "version": "3",
        "user": "ups-sha",
        "auth": {"protocol": auth, "key_file": str(secret_file(tmp_path / "auth", auth_key))},
        "priv": {"protocol": priv, "key_file": str(secret_file(tmp_path / "priv", priv_key))},
        "interval": "200ms",
        "timeout": "500ms",
        "points": [
            {"name": "output_source", "oid": OUTPUT_SOURCE, "type": "int"},
            {"name": "charge", "oid": CHARGE, "type": "gauge", "unit": "%"},
            {"name": "gone", "oid": MISSING, "type": "int"},  # left out, counted
        ],
    }
    alarm = {"point": "ups-1/output_source", "above": 4, "clear_below": 4, "priority": "critical"}
    daemon = run_daemon(
        gateway_config(
            broker_port=upstream.port, state_dir=tmp_path, sources=[source], alarms=[alarm]
        )
    )
    await upstream.wait_until(lambda: upstream.samples() and upstream.meta(), 20, "a UPS sample")
    first = upstream.samples()[0]
    assert first["device"] == "ups-1"
    assert first["values"] == {"output_source": 3, "charge": 100}
    meta = upstream.meta()
    assert meta is not None
    assert meta["devices"]["ups-1"]["kind"] == "snmp"
    assert meta["devices"]["ups-1"]["points"]["charge"] == {"type": "gauge", "unit": "%"}
    assert not upstream.of("alarms")

    snmpd.set(OUTPUT_SOURCE, "integer", 5)  # the mains fail
    snmpd.set(CHARGE, "gauge", 88)
    await upstream.wait_until(lambda: upstream.of("alarms"), 10, "the on-battery alarm")
    raised = upstream.of("alarms")[0].data
    assert (raised["alarm"], raised["state"], raised["value"]) == (ON_BATTERY, "raised", 5)

    snmpd.set(OUTPUT_SOURCE, "integer", 3)  # back on mains
    await upstream.wait_until(lambda: len(upstream.of("alarms")) >= 2, 10, "the alarm cleared")
    assert upstream.of("alarms")[1].data["state"] == "cleared"
    status = await daemon.status()
    (device,) = [d for s in status["sources"] for d in s["devices"] if d["name"] == "ups-1"]
    assert device["state"] == "ok" and device["reads_failed"] == 0
    assert device["parse_errors"] >= 1  # the missing OID, never a failed device
    # alarms go first: the samples around the last one follow; then every seq is there
    await upstream.wait_for_seq_above(upstream.max_seq() + 1)
    assert not upstream.holes() and not upstream.duplicates()
