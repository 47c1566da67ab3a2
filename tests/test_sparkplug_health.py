"""With Sparkplug B, the health figures are node metrics ``sgw/health/...`` too: declared in
NBIRTH (with the last values), sent by alias in NDATA in the session's seq order."""

from __future__ import annotations

import json
from typing import Any

from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.sparkplug.metrics import HEALTH_METRICS
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo

DOC: dict[str, Any] = {
    "ts": 1_764_169_200_123, "status": "degraded", "problems": ["every device is failing or down"],
    "devices": {"aq-1": "down"}, "backlog": 42, "buffer": {"bytes": 4096, "room_bytes": None},
    "link": {"bytes_per_hour": 1234}, "version": "0.3.0", "config_digest": "d1",
    "config_source": "remote", "uptime_s": 12.5,
}  # fmt: skip


def node() -> SparkplugFormat:
    catalog = Catalog(
        gateway_id="lamppost-0421",
        config_digest="d1",
        devices=(DeviceInfo("aq-1", "bus", "modbus-tcp", 10.0, {"pm25": PointInfo("uint16")}),),
    )
    fmt = SparkplugFormat(catalog, group_id="city", edge_node_id="lamppost-0421",
                          topic_prefix="city", current_values=dict,
                          clock_ms=lambda: 1000)  # fmt: skip
    fmt.begin(1)
    return fmt


def decode(payload: bytes) -> pb.Payload:
    message = pb.Payload()
    message.ParseFromString(payload)
    return message


def value(m: Any) -> Any:
    if m.is_null:
        return None
    return getattr(m, m.WhichOneof("value"))


def test_nbirth_declares_them_and_ndata_carries_the_health_by_alias() -> None:
    fmt = node()
    births = fmt.session_start()
    nbirth = decode(births[0].payload)
    declared = {m.name: m for m in nbirth.metrics if m.name.startswith("sgw/health/")}
    assert set(declared) == set(HEALTH_METRICS)
    assert all(m.is_null for m in declared.values())  # no health yet
    aliases = {m.alias: m.name for m in declared.values()}
    used = [m.alias for m in nbirth.metrics if m.HasField("alias")]
    assert len(set(used)) == len(used)  # unique across the node

    (ndata,) = fmt.health(DOC)
    assert ndata.topic == "spBv1.0/city/NDATA/lamppost-0421" and ndata.qos == 0
    data = decode(ndata.payload)
    assert data.seq == len(births)  # after NBIRTH and the DBIRTH
    got = {aliases[m.alias]: value(m) for m in data.metrics}
    assert all(not m.name for m in data.metrics)  # aliases only, as the standard has it
    assert got == {
        "sgw/health/status": "degraded",
        "sgw/health/problems": '["every device is failing or down"]',
        "sgw/health/devices": '{"aq-1":"down"}',
        "sgw/health/backlog": 42,
        "sgw/health/buffer_bytes": 4096,
        "sgw/health/room_bytes": None,
        "sgw/health/link_bytes_per_hour": 1234,
        "sgw/health/version": "0.3.0",
        "sgw/health/config_digest": "d1",
        "sgw/health/config_source": "remote",
        "sgw/health/uptime_s": 12.5,
    }
    assert json.loads(got["sgw/health/devices"]) == DOC["devices"]


def test_without_a_session_nothing_is_sent_and_the_next_birth_carries_the_values() -> None:
    fmt = node()
    assert fmt.health(DOC) == []  # not born yet: no seq is spent
    fmt.session_start()
    assert fmt.health({**DOC, "status": "ok"}, emit=False) == []
    nbirth = decode(fmt.session_start()[0].payload)
    status = next(m for m in nbirth.metrics if m.name == "sgw/health/status")
    assert value(status) == "ok"
