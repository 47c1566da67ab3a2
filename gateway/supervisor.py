"""Supervised background work: a task that fails unexpectedly is logged, counted and restarted.

Erlang/OTP's one_for_one supervisor in miniature. Every long-running task of the daemon (the
buffer's commit and maintenance loops, each source, the uplink, the watchdog) runs through
:meth:`Supervisor.run`: an exception other than a cancellation is logged with its traceback,
counted per task (``/status`` ``tasks``, ``/metrics``), and the task is started again after a
capped, jittered backoff. While an *essential* task (all but the event journal's) is down,
``/health`` is degraded and the systemd watchdog is not fed, so a task that keeps failing ends
in a restart of the whole service instead of a daemon that looks healthy while it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.backoff import Backoff
from gateway.model import now_ms

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0


@dataclass(slots=True)
class TaskHealth:
    """One supervised task's figures."""

    name: str
    essential: bool  # while it is down, /health is degraded and the watchdog starves
    running: bool = True
    failures: int = 0
    last_error: str | None = None
    last_failure_ts: int | None = None


class Supervisor:
    def __init__(
        self, *, restart_min_s: float = RESTART_MIN_S, restart_max_s: float = RESTART_MAX_S
    ) -> None:
        self._restart_min_s = restart_min_s
        self._restart_max_s = restart_max_s
        self.tasks: dict[str, TaskHealth] = {}

    async def run(
        self, name: str, work: Callable[[], Awaitable[None]], *, essential: bool = True
    ) -> None:
        """Run ``work()`` until it returns or is cancelled; after an unexpected error, log it,
        count it and run it again (a run that lasted longer than the backoff cap starts the
        backoff afresh)."""
        health = self.tasks.setdefault(name, TaskHealth(name, essential))
        backoff = Backoff(self._restart_min_s, self._restart_max_s)
        while True:
            health.running = True
            started = time.monotonic()
            try:
                await work()
                return
            except Exception as exc:
                health.running = False
                health.failures += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                health.last_failure_ts = now_ms()
                if time.monotonic() - started > self._restart_max_s:
                    backoff.reset()
                delay = backoff.next_delay()
                log.exception(
                    "task %s failed (%d so far); restarting it in %.1fs",
                    name,
                    health.failures,
                    delay,
                )
            await asyncio.sleep(delay)

    def down(self) -> list[TaskHealth]:
        """Essential tasks that failed and wait for their restart."""
        return [t for t in self.tasks.values() if t.essential and not t.running]
