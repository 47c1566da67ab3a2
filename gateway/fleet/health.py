"""The retained ``P/G/health`` message: what it says and when it goes. Pure: no I/O.

The document carries the figures ``/health`` and ``/status`` show (docs/reference.md,
"Health upstream"). It is published on every change of the health status or of a device's
state, at most once per ``min_gap_s`` (10 s), and every ``period_s`` (5 min) whatever happens,
so a fleet view can tell a box that went quiet from one with nothing new to say. A change that
comes inside the gap is not lost: it goes once the gap has passed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.config import parse_duration

MIN_GAP_S = 10.0
PERIOD_S = 300.0
# For tests only (docs/reference.md): shorter periods, e.g. "1s" and "3s".
MIN_GAP_ENV = "STREET_GATEWAY_HEALTH_MIN_GAP"
PERIOD_ENV = "STREET_GATEWAY_HEALTH_PERIOD"

ConfigSource = str  # "local" | "remote"


@dataclass(frozen=True, slots=True)
class HealthFigures:
    """The live figures one health message is made of."""

    ts_ms: int
    healthy: bool
    problems: Sequence[str]
    devices: Mapping[str, str]  # device name -> unknown | ok | failing | down
    backlog: int
    buffer_bytes: int
    room_bytes: int | None
    bytes_per_hour: int
    version: str
    config_digest: str
    config_source: ConfigSource
    uptime_s: float

    @property
    def key(self) -> tuple[object, ...]:
        """What a change of is worth a message: the status and every device's state."""
        return (self.healthy, tuple(sorted(self.devices.items())))


def health_document(f: HealthFigures) -> dict[str, object]:
    """The payload of ``P/G/health`` (SPEC "Fleet operations", key for key)."""
    return {
        "ts": f.ts_ms,
        "status": "ok" if f.healthy else "degraded",
        "problems": list(f.problems),
        "devices": dict(f.devices),
        "backlog": f.backlog,
        "buffer": {"bytes": f.buffer_bytes, "room_bytes": f.room_bytes},
        "link": {"bytes_per_hour": f.bytes_per_hour},
        "version": f.version,
        "config_digest": f.config_digest,
        "config_source": f.config_source,
        "uptime_s": round(f.uptime_s, 1),
    }


def health_payload(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


@dataclass(slots=True)
class HealthSchedule:
    """When the next health message is due. Times are monotonic seconds.

    Due at once on a new connection (the retained one may be an outage old), on a change of
    :attr:`HealthFigures.key`, and ``period_s`` after the last one; never sooner than
    ``min_gap_s`` after the last one (a flapping device cannot flood the link).
    """

    min_gap_s: float = MIN_GAP_S
    period_s: float = PERIOD_S
    _last_at: float | None = None
    _last_key: tuple[object, ...] | None = None

    def due(self, key: tuple[object, ...], now: float) -> bool:
        last = self._last_at
        if last is None:
            return True
        if now - last < self.min_gap_s:
            return False
        return key != self._last_key or now - last >= self.period_s

    def published(self, key: tuple[object, ...], now: float) -> None:
        self._last_at = now
        self._last_key = key

    def new_connection(self) -> None:
        """The link came up: the next message goes as soon as the gap allows."""
        self._last_key = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> HealthSchedule:
        """The periods, shortened by the test-only environment variables when they are set."""
        gap = environ.get(MIN_GAP_ENV)
        period = environ.get(PERIOD_ENV)
        return cls(
            min_gap_s=parse_duration(gap) if gap else MIN_GAP_S,
            period_s=parse_duration(period) if period else PERIOD_S,
        )
