"""The task that publishes ``P/G/health`` when :class:`~gateway.fleet.health.HealthSchedule`
says so. It holds no figures of its own: the daemon hands it a function that reads them, and
the uplink's :meth:`~gateway.uplink.mqtt.Uplink.publish_aside`.

While the link is down nothing is published (a retained message is only worth its last
value): the first connection afterwards publishes at once, as the gap allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.fleet.health import HealthFigures, HealthSchedule, health_document, health_payload
from gateway.uplink.wire import Outgoing

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the figures are looked at: a change goes out within this


def health_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/health"


class HealthReporter:
    """Publishes health on change (bounded in rate) and periodically; counts what it sent."""

    def __init__(
        self,
        figures: Callable[[], HealthFigures],
        publish: Callable[[Outgoing], Awaitable[bool]],
        connected: Callable[[], bool],
        topic: Callable[[], str],
        *,
        schedule: HealthSchedule | None = None,
        after: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._figures = figures
        self._publish = publish
        self._connected = connected
        self._topic = topic
        self.schedule = schedule or HealthSchedule.from_env()
        self._after = after  # each published document (Sparkplug: its node metrics too)
        self.published_total = 0
        self.last_published_ms: int | None = None
        self._published = asyncio.Event()  # set by each publish (remote config waits on it)

    async def run(self) -> None:
        was_connected = False
        while True:
            connected = self._connected()
            if connected and not was_connected:
                self.schedule.new_connection()
            was_connected = connected
            if connected:
                await self.tick(time.monotonic())
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> bool:
        """Publish if due; True when a message was acknowledged."""
        figures = self._figures()
        if not self.schedule.due(figures.key, now):
            return False
        doc = health_document(figures)
        message = Outgoing(self._topic(), health_payload(doc), 1, retain=True)
        if not await self._publish(message):
            return False  # the link went down meanwhile: the next connection publishes
        self.schedule.published(figures.key, now)
        self.published_total += 1
        self.last_published_ms = figures.ts_ms
        self._published.set()
        if self._after is not None:
            self._after(doc)
        log.debug("health published: %s", "ok" if figures.healthy else "degraded")
        return True

    async def wait_published(self) -> None:
        """Until the next health message after this call is acknowledged."""
        self._published.clear()
        await self._published.wait()
