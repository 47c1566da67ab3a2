"""Topics and JSON payloads exactly as SPEC.md fixes them. Pure: no I/O.

A stored item's ``body`` is its JSON object without ``seq``; the messages splice the seq in
front (``{"seq":n,`` + body[1:]), so a backlog is published without decoding and re-encoding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.model import AlarmEvent, Gap, Reading, StoredItem

_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


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
    """The reading's JSON object without seq; raises ValueError for NaN or infinity."""
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
