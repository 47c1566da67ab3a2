"""What an agent's answer means for one point: an SNMP value (pysnmp's pyasn1 objects) in, the
point's value out, or a :class:`~gateway.errors.ParseError` saying why not. Pure.

The value's SNMP type is told by its class name, so this module imports nothing of pysnmp:
``Integer``/``Integer32``, ``Unsigned32``/``Gauge32``, ``Counter32``, ``Counter64``,
``TimeTicks``, ``OctetString``, ``IpAddress``, ``ObjectIdentifier``, ``Opaque``, ``Bits``, and
the three exceptions of RFC 3416 (``NoSuchObject``, ``NoSuchInstance``, ``EndOfMibView``).
"""

from __future__ import annotations

import math
from typing import Any

from gateway.errors import ParseError
from gateway.model import Value

MAX_STRING = 1024  # characters: an OctetString may hold 64KiB, a sample should not

INTEGERS = frozenset(
    {"Integer", "Integer32", "Unsigned32", "Gauge32", "Counter32", "Counter64", "TimeTicks"}
)
EXCEPTIONS = {
    "NoSuchObject": "no such object on the agent",
    "NoSuchInstance": "no such instance on the agent",
    "EndOfMibView": "end of the agent's MIB view",
    "Null": "a null value",
}


def snmp_type(value: Any) -> str:
    """The SNMP type's name of an answer's value, as pysnmp names its class."""
    return type(value).__name__


def convert(point_type: str, scale: float | None, value: Any) -> Value:
    """The value of a point of ``point_type`` (int, gauge, counter, string) for an answer."""
    kind = snmp_type(value)
    if kind in EXCEPTIONS:
        raise ParseError(EXCEPTIONS[kind])
    if point_type == "string":
        return _text(kind, value)
    if kind in INTEGERS:
        number: int | float = int(value)
    elif point_type != "counter" and kind == "OctetString":
        number = _number_in_text(bytes(value))  # agents that write numbers as DisplayString
    else:
        raise ParseError(f"{_a(kind)}, not a number")
    if scale is None or scale == 1:
        return number
    return number * scale


def _number_in_text(raw: bytes) -> int | float:
    text = raw.strip(b"\0 \t\r\n")
    if len(text) > 32:
        raise ParseError("an OctetString, not a number")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise ParseError(f"an OctetString, not a number: {_shown(text)}") from None
    if not math.isfinite(number):
        raise ParseError(f"an OctetString, not a finite number: {_shown(text)}")
    return number


def _text(kind: str, value: Any) -> str:
    if kind in INTEGERS:
        return str(int(value))
    if kind == "IpAddress":
        return ".".join(str(b) for b in bytes(value))
    if kind in ("ObjectIdentifier", "ObjectName"):
        return ".".join(str(arc) for arc in value)
    if kind not in ("OctetString", "Opaque", "Bits"):
        raise ParseError(f"{_a(kind)}, not a string")
    raw = bytes(value)
    if len(raw) > MAX_STRING:
        raise ParseError(f"a string of {len(raw)} bytes, over the {MAX_STRING} a sample takes")
    try:
        text = raw.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    else:
        if text.isprintable():
            return text
    # binary (a MAC address, a bit string): shown as hex, like net-snmp's "Hex-STRING"
    return ":".join(f"{b:02x}" for b in raw)


def _a(kind: str) -> str:
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind}"


def _shown(raw: bytes) -> str:
    return repr(raw.decode("utf-8", "replace"))
