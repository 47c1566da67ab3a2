"""Sparkplug B metrics: the names, datatypes and aliases of the node's and the devices' metrics
(how a value is set on one: :mod:`.values`). Pure; the edge node (:mod:`.format`) builds
messages from them."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.model import Value
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.values import EMPTY_RANGE, INT_RANGES, set_value
from gateway.uplink.wire import Catalog

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
GAP_METRIC = "sgw/gap"
SEQ_METRIC = "sgw/seq"
ALARM_FALLBACK = "sgw/alarm"  # an alarm whose rule left the config (stored before a reload)
RESULT_METRIC = "sgw/result"  # since v0.3: a command's or an action's result, its JSON
# SPEC v0.3: with a synchronised clock, a STATE stamped further ahead than this is ignored (a
# host with a wild clock would otherwise hide every genuine STATE until the gateway restarts).
STATE_AHEAD_MS = 60_000

# Point type (PointInfo.type) -> (Sparkplug datatype, Payload.Metric value field).
DATATYPES: dict[str, tuple[int, str]] = {
    "bool": (pb.Boolean, "boolean_value"),
    "int16": (pb.Int16, "int_value"),
    "uint16": (pb.UInt16, "int_value"),
    "int32": (pb.Int32, "int_value"),
    "uint32": (pb.UInt32, "int_value"),
    "int64": (pb.Int64, "long_value"),
    "uint64": (pb.UInt64, "long_value"),
    "float32": (pb.Float, "float_value"),
    "float64": (pb.Double, "double_value"),
    "string": (pb.String, "string_value"),
    "number": (pb.Double, "double_value"),
}
DOUBLE = (pb.Double, "double_value")
FLOAT = (pb.Float, "float_value")
LONG = (pb.Int64, "long_value")
ULONG = (pb.UInt64, "long_value")
BOOL = (pb.Boolean, "boolean_value")
STRING = (pb.String, "string_value")
ALARM_NAME = re.compile(r"^([^/]+)/([^/<>]+)([<>])")
# SPEC "Fleet operations": P/G/health's figures as node metrics (docs/sparkplug.md); the
# problems and the devices' states are the health document's JSON, as sgw/gap is text.
HEALTH_METRICS: dict[str, tuple[int, str]] = {
    "sgw/health/status": STRING,
    "sgw/health/problems": STRING,
    "sgw/health/devices": STRING,
    "sgw/health/backlog": ULONG,
    "sgw/health/buffer_bytes": ULONG,
    "sgw/health/room_bytes": ULONG,
    "sgw/health/link_bytes_per_hour": ULONG,
    "sgw/health/version": STRING,
    "sgw/health/config_digest": STRING,
    "sgw/health/config_source": STRING,
    "sgw/health/uptime_s": DOUBLE,
}
# SPEC "Identity and seals": the key the seals are signed with, in NBIRTH (a Sparkplug host
# never sees the json format's meta), one String metric per field of meta's "identity".
IDENTITY_FIELDS = ("alg", "public_key", "fingerprint")
IDENTITY_METRICS = {f"sgw/identity/{key}": key for key in IDENTITY_FIELDS}


def health_values(doc: Mapping[str, Any]) -> dict[str, Value | None]:
    """The node metrics' values from a ``P/G/health`` document."""
    buffer, link = doc.get("buffer") or {}, doc.get("link") or {}
    compact = functools.partial(json.dumps, separators=(",", ":"))
    return {
        "sgw/health/status": doc.get("status"),
        "sgw/health/problems": compact(doc.get("problems") or []),
        "sgw/health/devices": compact(doc.get("devices") or {}),
        "sgw/health/backlog": doc.get("backlog"),
        "sgw/health/buffer_bytes": buffer.get("bytes"),
        "sgw/health/room_bytes": buffer.get("room_bytes"),
        "sgw/health/link_bytes_per_hour": link.get("bytes_per_hour"),
        "sgw/health/version": doc.get("version"),
        "sgw/health/config_digest": doc.get("config_digest"),
        "sgw/health/config_source": doc.get("config_source"),
        "sgw/health/uptime_s": doc.get("uptime_s"),
    }


def datatype_for(point_type: str, *, scaled: bool = False) -> tuple[int, str]:
    """A point's Sparkplug datatype and value field. A scaled integer is not an integer: a
    16-bit one is a Float (its value, rounded to the scale's decimals, has at most 7
    significant digits, which a float32 keeps), a wider one a Double."""
    found = DATATYPES.get(point_type, DOUBLE)
    if scaled and found[1] in ("int_value", "long_value"):
        return FLOAT if point_type in ("int16", "uint16") else DOUBLE
    return found


def alarm_metric(rule_name: str) -> str | None:
    """``aq-1/pm25>50`` -> ``alarm/aq-1/pm25/above``; None for a name of another shape."""
    m = ALARM_NAME.match(rule_name)
    if m is None:
        return None
    return f"alarm/{m[1]}/{m[2]}/{'above' if m[3] == '>' else 'below'}"


def birth_metric(  # noqa: PLR0917 - a birth metric's fields, in order
    payload: pb.Payload,
    name: str,
    alias: int | None,
    kind: tuple[int, str],
    value: Value | None,
    now: int,
    put: Callable[[pb.Payload.Metric, tuple[int, str], Value | None], object] = set_value,
) -> None:
    """A birth's metric: name, alias, timestamp, datatype and value (set by ``put``)."""
    m = payload.metrics.add()
    m.name = name
    if alias is not None:
        m.alias = alias
    m.timestamp = now
    m.datatype = kind[0]
    put(m, kind, value)


@dataclass(frozen=True, slots=True)
class PointMetric:
    alias: int
    datatype: int
    field: str
    writable: bool = False  # DBIRTH marks it (since v0.3)
    # the integers the datatype holds as they are, and its field's mask (a sample's fast path)
    low: int = EMPTY_RANGE[0]
    high: int = EMPTY_RANGE[1]
    mask: int = EMPTY_RANGE[2]

    @property
    def kind(self) -> tuple[int, str]:
        return self.datatype, self.field


@dataclass(frozen=True, slots=True)
class DeviceMetrics:
    name: str
    seq_alias: int
    points: dict[str, PointMetric]


class Aliases:
    """Every metric's alias for one catalog, numbered in catalog order."""

    def __init__(self, catalog: Catalog) -> None:
        n = 0

        def take() -> int:
            nonlocal n
            n += 1
            return n - 1

        self.bdseq = take()
        self.gap = take()
        self.node_seq = take()
        self.alarm_fallback = take()
        self.alarms: dict[str, tuple[str, int]] = {}  # rule name -> (metric name, alias)
        for rule in catalog.alarms:
            metric = alarm_metric(rule)
            if metric is not None and rule not in self.alarms:
                self.alarms[rule] = (metric, take())
        self.devices: dict[str, DeviceMetrics] = {}
        for dev in catalog.devices:
            seq_alias = take()
            points = {}
            for name, info in dev.points.items():
                datatype, field = datatype_for(info.type, scaled=info.scaled)
                low, high, mask = INT_RANGES.get(datatype, EMPTY_RANGE)
                points[name] = PointMetric(take(), datatype, field, info.writable, low, high, mask)
            self.devices[dev.name] = DeviceMetrics(dev.name, seq_alias, points)
        self.result = take()  # after the v0.2 aliases, which keep their numbers
        self.health = {name: take() for name in HEALTH_METRICS}  # then the v0.3 health's
        # then the identity's (since v0.3), when the gateway has one
        self.identity = {name: take() for name in IDENTITY_METRICS} if catalog.identity else {}
