"""What the audit keeps of each gateway's retained ``P/G/health`` (docs/reference.md, "Health
upstream"), for the fleet view. Pure: no I/O.

Only the last message of each gateway is kept, in memory: it is retained, so the broker hands
every gateway's last one to the audit again whenever it subscribes (each start). Every field is
checked and bounded before it is kept; a message that does not fit is counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MAX_PAYLOAD = 64 * 1024
MAX_DEVICES = 4096
MAX_TEXT = 80  # version, digest: longer is cut
MAX_PROBLEMS = 8


class BadHealth(ValueError):
    """A health message the fleet view cannot use."""


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    ts: int | None  # the gateway's own clock
    received_ms: int  # the audit's clock, at arrival
    retained: bool  # replayed by the broker at subscribe time, not a sighting
    healthy: bool
    problems: tuple[str, ...]
    devices_down: tuple[str, ...]
    devices: int
    backlog: int | None
    room_bytes: int | None
    bytes_per_hour: int | None
    version: str | None
    config_digest: str | None
    config_source: str | None
    uptime_s: float | None


def _int(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _text(value: object) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def parse_health(payload: bytes | bytearray, received_ms: int, *, retained: bool) -> GatewayHealth:
    """The fleet view's record of one health payload; raises BadHealth."""
    if len(payload) > MAX_PAYLOAD:
        raise BadHealth(f"{len(payload)} bytes, over {MAX_PAYLOAD}")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise BadHealth(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("status") not in ("ok", "degraded"):
        raise BadHealth("not a health document (status is not ok or degraded)")
    devices = doc.get("devices")
    if not isinstance(devices, dict) or len(devices) > MAX_DEVICES:
        raise BadHealth("devices is not an object of at most 4096 devices")
    problems = doc.get("problems")
    problems = problems if isinstance(problems, list) else []
    buffer, link = doc.get("buffer"), doc.get("link")
    uptime = doc.get("uptime_s")
    source = doc.get("config_source")
    return GatewayHealth(
        ts=_int(doc.get("ts")),
        received_ms=received_ms,
        retained=retained,
        healthy=doc["status"] == "ok",
        problems=tuple(str(p)[:200] for p in problems[:MAX_PROBLEMS]),
        devices_down=tuple(sorted(str(n)[:64] for n, s in devices.items() if s == "down")),
        devices=len(devices),
        backlog=_int(doc.get("backlog")),
        room_bytes=_int(buffer.get("room_bytes")) if isinstance(buffer, dict) else None,
        bytes_per_hour=_int(link.get("bytes_per_hour")) if isinstance(link, dict) else None,
        version=_text(doc.get("version")),
        config_digest=_text(doc.get("config_digest")),
        config_source=source if source in ("local", "remote") else None,
        uptime_s=float(uptime) if isinstance(uptime, int | float) else None,
    )


@dataclass
class HealthBoard:
    """The last health of every gateway under ``prefix``."""

    prefix: str
    gateways: dict[str, GatewayHealth] = field(default_factory=dict)
    rejected: int = 0
    last_rejected: str | None = None

    def topic_filter(self, group: str | None = None) -> str:
        share = f"$share/{group}/" if group else ""
        return f"{share}{self.prefix}/+/health"

    def apply(
        self, topic: str, payload: bytes | bytearray, now_ms: int, *, retained: bool = False
    ) -> bool:
        """True when ``topic`` is a health topic (used or counted as rejected), False for any
        other topic (not ours: the ledger's)."""
        head, sep, rest = topic.partition(self.prefix + "/")
        gateway, _, kind = rest.partition("/")
        if head or not sep or kind != "health" or not gateway:
            return False
        try:
            self.gateways[gateway] = parse_health(payload, now_ms, retained=retained)
        except BadHealth as exc:
            self.rejected += 1
            self.last_rejected = f"{topic}: {exc}"
        return True
