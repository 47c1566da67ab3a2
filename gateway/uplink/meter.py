"""What the link costs: bytes sent upstream, in total and at the current rate. Pure.

A technician choosing an LTE plan reads the rate per hour and the bytes per sample; both come
from the last minute's messages, so they follow the current traffic rather than the day's
average. Bytes are whole MQTT PUBLISH packets (:func:`publish_size`): what the broker receives.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


def publish_size(topic: str, payload: bytes, qos: int) -> int:
    """The size of an MQTT 3.1.1 PUBLISH packet: fixed header, topic, packet id, payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


class LinkMeter:
    """Bytes and samples per second-slot over the last :data:`WINDOW_S` seconds."""

    def __init__(self) -> None:
        self.bytes_total = 0
        self._slots: deque[list[float]] = deque()  # [second, bytes, samples]

    def record(self, now: float, size: int, samples: int) -> None:
        self.bytes_total += size
        second = float(int(now))
        slots = self._slots
        if slots and slots[-1][0] == second:
            slots[-1][1] += size
            slots[-1][2] += samples
        else:
            slots.append([second, float(size), float(samples)])
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._slots and self._slots[0][0] <= now - WINDOW_S:
            self._slots.popleft()

    def per_hour(self, now: float) -> int:
        """Bytes per hour at the rate of the last minute (0 before anything was sent)."""
        self._trim(now)
        if not self._slots:
            return 0
        span = max(1.0, min(WINDOW_S, now - self._slots[0][0]))
        return round(sum(slot[1] for slot in self._slots) * 3600 / span)

    def per_sample(self, now: float) -> float | None:
        """Bytes per sample over the last minute, messages without samples included."""
        self._trim(now)
        samples = sum(slot[2] for slot in self._slots)
        if not samples:
            return None
        return round(sum(slot[1] for slot in self._slots) / samples, 1)
