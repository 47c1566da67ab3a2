"""Topics and JSON payloads exactly as docs/reference.md fixes them. Pure: no I/O.

A stored item's ``body`` is its JSON object without ``seq``; the messages splice the seq in
front (``{"seq":n,`` + body[1:]), so a backlog is published without decoding and re-encoding.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.model import AlarmEvent, Gap, Reading, StoredItem

_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
# what that encoder escapes a str with (ensure_ascii=False): quotes, backslash, control chars
_string = json.encoder.encode_basestring
_FINITE_MAX = sys.float_info.max
_FINITE_MIN = -_FINITE_MAX


@dataclass(frozen=True, slots=True)
class Topics:
    readings: str
    alarms: str
    gaps: str
    status: str

    @classmethod
    def for_gateway(cls, prefix: str, gateway: str) -> Topics:
        base = f"{prefix}/{gateway}"
        return cls(f"{base}/readings", f"{base}/alarms", f"{base}/gaps", f"{base}/status")


def reading_body(reading: Reading) -> str:
    """The reading's JSON object without seq; raises ValueError for NaN or infinity.

    Written out by hand for the usual field types (the text is what :func:`json.dumps` with
    compact separators gives: the same string escaping and number reprs); anything else,
    including non-finite floats, goes through the JSON encoder.
    """
    value, ts, device, point, unit = (
        reading.value, reading.ts_ms, reading.device, reading.point, reading.unit
    )  # fmt: skip
    kind = value.__class__
    if kind is float and _FINITE_MIN <= value <= _FINITE_MAX:  # False for NaN
        number = float.__repr__(value)
    elif kind is int:
        number = int.__repr__(value)
    elif kind is bool:
        number = "true" if value else "false"
    else:
        return _reading_body_encoded(reading)
    if ts.__class__ is not int or device.__class__ is not str or point.__class__ is not str:
        return _reading_body_encoded(reading)
    text = f'{{"ts":{ts},"device":{_string(device)},"point":{_string(point)},"value":{number}'
    if unit is not None:
        if unit.__class__ is not str:
            return _reading_body_encoded(reading)
        text += f',"unit":{_string(unit)}'
    if not reading.clock_synced:
        text += ',"clock":"unsynced"'
    return text + "}"


def _reading_body_encoded(reading: Reading) -> str:
    body: dict[str, object] = {
        "ts": reading.ts_ms,
        "device": reading.device,
        "point": reading.point,
        "value": reading.value,
    }
    if reading.unit is not None:
        body["unit"] = reading.unit
    if not reading.clock_synced:
        body["clock"] = "unsynced"
    return _compact(body)


def alarm_body(event: AlarmEvent) -> str:
    return _compact(
        {
            "ts": event.ts_ms,
            "alarm": event.alarm,
            "state": event.state,
            "value": event.value,
            "priority": event.priority,
        }
    )


def with_seq(seq: int, body: str) -> str:
    return f'{{"seq":{seq},{body[1:]}'


def readings_message(gateway: str, items: Sequence[StoredItem], *, historical: bool) -> bytes:
    """``{"gateway": G, "readings": [...]}`` in seq order; ``historical`` marks backlog."""
    readings = ",".join(with_seq(item.seq, item.body) for item in items)
    tail = ',"historical":true}' if historical else "}"
    return f'{{"gateway":{_compact(gateway)},"readings":[{readings}]{tail}'.encode()


def alarm_message(gateway: str, item: StoredItem) -> bytes:
    """``{"gateway": G, "seq": n, "ts": ..., "alarm": ..., "state": ..., ...}``."""
    return f'{{"gateway":{_compact(gateway)},{with_seq(item.seq, item.body)[1:]}'.encode()


def gap_message(gateway: str, gap: Gap) -> bytes:
    return _compact(
        {
            "gateway": gateway,
            "from_seq": gap.from_seq,
            "to_seq": gap.to_seq,
            "count": gap.count,
            "reason": gap.reason,
        }
    ).encode()


def birth_message(version: str, started_ms: int, config_digest: str) -> bytes:
    return _compact(
        {
            "state": "online",
            "version": version,
            "started": started_ms,
            "config_digest": config_digest,
        }
    ).encode()


WILL_MESSAGE = b'{"state":"offline"}'
SHUTDOWN_MESSAGE = b'{"state":"offline","reason":"shutdown"}'
