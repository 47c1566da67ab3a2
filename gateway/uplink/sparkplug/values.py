"""A value on a Sparkplug metric, so that a host rebuilds the JSON value exactly. Pure.

SPEC "Identity and seals": a host rebuilds each sample's ``values`` from the DDATA metrics
(docs/transparency.md) and checks them against the seal, which covers the value as
``format: json`` publishes it. Where the metric's datatype holds that value exactly (the same
JSON number, boolean or text once a host reads it back) the metric carries it and nothing else.
Otherwise the metric carries the nearest value its datatype holds (the float32 nearest a double,
the double nearest a 64-bit integer; ``is_null`` when it holds none: text in a number, an
integer beyond the datatype's range, a fraction in an integer) and the String property
``json`` holds the value's JSON text; a host takes that text over the metric's value.
"""

from __future__ import annotations

import json
import math
import struct

from gateway.codec.numbers import shortest_float32
from gateway.model import Value
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb

JSON_PROPERTY = "json"  # the exact JSON text of a value its datatype cannot carry

INT32_MASK = 0xFFFF_FFFF
INT64_MASK = 0xFFFF_FFFF_FFFF_FFFF
# integer datatype -> (lowest, highest, the mask its value field takes): signed types travel in
# the schema's unsigned fields as two's complement (as Eclipse Tahu writes them)
INT_RANGES: dict[int, tuple[int, int, int]] = {
    pb.Int8: (-(2**7), 2**7 - 1, INT32_MASK),
    pb.Int16: (-(2**15), 2**15 - 1, INT32_MASK),
    pb.Int32: (-(2**31), 2**31 - 1, INT32_MASK),
    pb.Int64: (-(2**63), 2**63 - 1, INT64_MASK),
    pb.UInt8: (0, 2**8 - 1, INT32_MASK),
    pb.UInt16: (0, 2**16 - 1, INT32_MASK),
    pb.UInt32: (0, 2**32 - 1, INT32_MASK),
    pb.UInt64: (0, 2**64 - 1, INT64_MASK),
}
EMPTY_RANGE = (1, 0, 0)  # a datatype that holds no integer as such (Float, Double, String...)
MAX_DOUBLE_INT = 2**53 - 1  # every integer up to this is a double (and RFC 8785 writes it so)
MAX_FLOAT32_INT = 2**24  # every integer up to this is a float32 that reads back as its digits

_F32 = struct.Struct("<f")
# a value's JSON text exactly as format: json writes it (gateway/uplink/json_format.py)
json_text = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def fit(kind: tuple[int, str], value: Value) -> Value | None:
    """The value nearest ``value`` that the metric's ``(datatype, field)`` holds, or None."""
    datatype, field = kind
    if field == "string_value":
        return value if isinstance(value, str) else str(value)
    if isinstance(value, str):
        return None
    if field == "boolean_value":
        return bool(value)
    if field == "float_value":
        try:
            nearest: float = _F32.unpack(_F32.pack(value))[0]
            return nearest
        except OverflowError:  # beyond the largest float32
            return None
    if field == "double_value":
        try:
            return float(value)
        except OverflowError:  # an integer beyond the largest double
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    low, high, mask = INT_RANGES.get(datatype, EMPTY_RANGE)
    return value & mask if low <= value <= high else None


def exact(datatype: int, value: Value) -> bool:
    """Does a host that reads the metric's value as its datatype means it get ``value`` back,
    as the same JSON value (RFC 8785 bytes)? Floats as docs/transparency.md reads them: a Float
    as the decimal with the fewest digits that reads back as the same float32."""
    if datatype == pb.String:
        return type(value) is str
    if datatype == pb.Boolean:
        return type(value) is bool
    if type(value) is float:
        if datatype == pb.Float:
            return _float32_exact(value)
        return datatype == pb.Double
    if type(value) is not int:  # text or a boolean in a number
        return False
    if datatype == pb.Double:
        return -MAX_DOUBLE_INT <= value <= MAX_DOUBLE_INT
    if datatype == pb.Float:
        return -MAX_FLOAT32_INT <= value <= MAX_FLOAT32_INT
    low, high, _ = INT_RANGES.get(datatype, EMPTY_RANGE)
    return low <= value <= high


def _float32_exact(value: float) -> bool:
    if not math.isfinite(value):
        return True  # never in a sample (the buffer refuses it); a Float carries it as it is
    try:
        as_float32: float = _F32.unpack(_F32.pack(value))[0]
    except OverflowError:
        return False
    return shortest_float32(as_float32) == value


def carry(metric: pb.Payload.Metric, kind: tuple[int, str], value: Value | None) -> str | None:
    """Put ``value`` on the metric so that a host rebuilds it exactly. None when the metric's
    own value says it; else how the metric carries it (``"null"`` or ``"rounded"``), its
    exact JSON text being in the property ``json``. None itself is ``is_null``, nothing more."""
    if value is None:
        metric.is_null = True
        return None
    fitted = fit(kind, value)
    if fitted is None:
        metric.is_null = True
    else:
        setattr(metric, kind[1], fitted)
    if exact(kind[0], value):
        return None
    add_property(metric, JSON_PROPERTY, pb.String, "string_value", json_text(value))
    return "null" if fitted is None else "rounded"


def set_value(metric: pb.Payload.Metric, kind: tuple[int, str], value: Value | None) -> bool:
    """Put ``value`` in the metric's field; False (and is_null) when it does not fit. For the
    node's own metrics, whose values always fit (a sample's go through :func:`carry`)."""
    fitted = None if value is None else fit(kind, value)
    if fitted is None:
        metric.is_null = True
        return value is None
    setattr(metric, kind[1], fitted)
    return True


def add_property(metric: pb.Payload.Metric, key: str, kind: int, field: str, value: object) -> None:
    metric.properties.keys.append(key)
    pv = metric.properties.values.add()
    pv.type = kind
    setattr(pv, field, value)
