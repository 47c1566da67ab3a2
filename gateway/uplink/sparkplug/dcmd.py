"""A DCMD's writes (since v0.3): the metrics a host application sends to a device, as
(point name, value) pairs. Pure.

Sparkplug 3.0 ("Commands"): a DCMD names a metric of the device's DBIRTH, by name or by alias,
with a value of its datatype. Signed integer types travel as their two's complement in the
unsigned ``int_value``/``long_value`` fields; they are read back as signed here. A metric
that names nothing of the device, or has no value, is left out (the caller counts it).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.model import Value
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.wire import Refused

_SIGNED32 = frozenset({pb.Int8, pb.Int16, pb.Int32})  # sent sign-extended to 32 bits


def writes(data: bytes, names: Mapping[int, str], known: frozenset[str]) -> list[tuple[str, Value]]:
    """The (point, value) pairs of a DCMD payload; ``names`` maps the device's aliases to its
    point names. Raises Refused (``malformed``) for bytes that are not a Sparkplug payload."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, whose module differs by backend
        raise Refused("malformed", f"not a Sparkplug B payload ({len(data)} bytes)") from exc
    out: list[tuple[str, Value]] = []
    for m in payload.metrics:
        name = m.name if m.name else names.get(m.alias) if m.HasField("alias") else None
        value = _value(m)
        if name in known and value is not None:
            out.append((name, value))
    return out


def _value(m: pb.Payload.Metric) -> Value | None:
    field = m.WhichOneof("value")
    if field is None or m.is_null:
        return None
    raw = getattr(m, field)
    if field == "int_value" and m.datatype in _SIGNED32:
        return int(raw - (1 << 32)) if raw >= 1 << 31 else int(raw)
    if field == "long_value" and m.datatype == pb.Int64 and raw >= 1 << 63:
        return int(raw - (1 << 64))
    if field in ("boolean_value", "string_value", "float_value", "double_value"):
        return raw  # type: ignore[no-any-return]
    if field in ("int_value", "long_value"):
        return int(raw)
    return None
