"""The device core every source kind shares, plugins included: health, schedule, counters and
the effective interval of one device, and the loop that polls a source's devices.

* **Health.** ``unknown`` until the first outcome; ``ok`` after a good poll; ``failing`` after a
  failed one; ``down`` after :data:`DOWN_AFTER` in a row. A down device is tried with one
  attempt after a delay from ``backoff.py``'s :class:`~gateway.backoff.Backoff`
  (doubling from twice its interval or timeout, capped at the source's ``backoff_max``), so a
  dead unit costs the others on its bus at most one timeout per period. Every change of state
  is logged once and stamped (``state_since_ms``).
* **Schedule.** Drift-free: each poll is due one interval after the last one was due; a poll
  that comes late skips the ticks it missed (``polls_skipped``) instead of bursting.
* **Effective interval.** The configured one, or an override with its reason
  (:meth:`Device.override_interval`: an alarm's ``while_raised``), applied at once without
  restarting the source; ``/status`` shows both (``interval_s``, ``interval_reason``).

:func:`run_schedule` polls a source's devices one at a time (one transaction on the wire, a
dead device never blocks the others); :class:`PolledSource` is the base a plugin subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal

from gateway.backoff import Backoff
from gateway.config import DeviceSpec, SourceConfig
from gateway.errors import DeviceError, DeviceTimeout
from gateway.model import DeviceState, DeviceStats, Sample, SampleSink, Value, now_ms

log = logging.getLogger(__name__)

DOWN_AFTER = 3  # consecutive failed polls before a device is "down"
_RANK: dict[DeviceState, int] = {"unknown": -1, "ok": 0, "failing": 1, "down": 2}


def _no_jitter() -> float:
    # A device's retry period is what its log line says; a fleet's devices do not synchronise.
    return 1.0


class Device:
    """One device's health, schedule, counters and effective interval; ``stats`` is what
    ``/status`` and metrics read."""

    def __init__(
        self,
        name: str,
        source: str,
        interval_s: float,
        *,
        backoff_max_s: float = 60.0,
        timeout_s: float = 0.0,
        backoff: bool = True,
        label: str | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.stats = DeviceStats(
            name=name, source=source, interval_s=interval_s, state_since_ms=now_ms()
        )
        self.configured_interval_s = interval_s
        self.label = label or name  # how log lines name it, e.g. "aq-1 (unit 1)"
        self.failures = 0  # consecutive failed polls
        self.due = 0.0  # monotonic time of its next poll, kept by run_schedule
        self._override: tuple[float, str] | None = None
        self._timeout_s = timeout_s
        self._backoff_max_s = backoff_max_s
        self._backs_off = backoff
        self._backoff: Backoff | None = None
        self._retry_s = 0.0  # while down: the delay before the next single attempt
        self._resync = False  # back from a retry: the schedule restarts from now
        self._log = logger
        self._wake: Callable[[], None] | None = None

    @classmethod
    def of(cls, spec: DeviceSpec, source: SourceConfig, **kwargs: object) -> Device:
        return cls(
            spec.name,
            source.name,
            spec.interval_s,
            backoff_max_s=source.backoff_max,
            timeout_s=source.timeout,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def name(self) -> str:
        return self.stats.name

    @property
    def state(self) -> DeviceState:
        return self.stats.state

    @property
    def interval_s(self) -> float:
        """The effective interval: an override's, else the configured one."""
        return self._override[0] if self._override else self.configured_interval_s

    @property
    def override(self) -> tuple[float, str] | None:
        """(interval, reason) while an override is in force."""
        return self._override

    def attempts(self, retries: int) -> int:
        """Tries per poll: ``retries + 1``, one while the device is down."""
        return 1 if self.state == "down" else retries + 1

    # -- the effective interval ----------------------------------------------------------------

    def override_interval(self, interval_s: float | None, reason: str | None = None) -> None:
        """Poll every ``interval_s`` (``reason`` says why, in ``/status``) instead of the
        configured interval; ``None`` goes back to it. Takes effect at once: the next poll is
        due one new interval after the last one was (now, if that has passed)."""
        old = self.interval_s
        self._override = None if interval_s is None else (interval_s, reason or "overridden")
        self.stats.interval_s = self.interval_s
        self.stats.interval_reason = None if interval_s is None else (reason or "overridden")
        if self.interval_s != old and not self._retry_s and self.due:
            self.due = max(time.monotonic(), self.due - old + self.interval_s)
            if self._wake is not None:
                self._wake()

    # -- outcomes ------------------------------------------------------------------------------

    def succeeded(self, ts_ms: int | None = None) -> None:
        """A good poll (``ts_ms``: when it was made)."""
        stats = self.stats
        stats.reads_ok += 1
        stats.last_ok_ts = now_ms() if ts_ms is None else ts_ms
        if stats.state in ("failing", "down"):  # a first success is no recovery
            after = f", after {self.failures} failed polls" if self.failures else ""
            self._log.info("%s: answering again (was %s%s)", self.label, stats.state, after)
        self._set_state("ok")
        stats.last_error = None
        self.failures = 0
        self._backoff = None
        self._resync = self._resync or bool(self._retry_s)
        self._retry_s = 0.0

    def failed(self, error: str) -> None:
        """A failed poll: ``failing`` at once, ``down`` after DOWN_AFTER in a row."""
        stats = self.stats
        stats.reads_failed += 1
        stats.last_error = error
        self.failures += 1
        if self.failures >= DOWN_AFTER:
            cap = max(self._backoff_max_s, self.interval_s)
            if self._backs_off:
                if self._backoff is None:
                    base = min(2 * max(self.interval_s, self._timeout_s), cap)
                    self._backoff = Backoff(base, cap, rng=_no_jitter)
                self._retry_s = self._backoff.next_delay()
            if stats.state != "down":
                retry = f"; retrying every {cap:g}s at most" if self._backs_off else ""
                self._log.warning(
                    "%s: down after %d failed polls (%s)%s", self.label, self.failures, error, retry
                )
            self._set_state("down")
        elif stats.state in ("unknown", "ok"):
            self._log.warning("%s: poll failed: %s", self.label, error)
            self._set_state("failing")

    def degrade(self, state: Literal["failing", "down"], error: str) -> None:
        """Move to a worse (or equal) state without a poll: silence in stream mode, a port
        that cannot be opened. A better state comes only from a good poll."""
        stats = self.stats
        if _RANK[state] < _RANK[stats.state]:
            return
        stats.last_error = error
        if state != stats.state:
            self._log.warning("%s: %s: %s", self.label, state, error)
            self._set_state(state)

    def _set_state(self, state: DeviceState) -> None:
        if state != self.stats.state:
            self.stats.state = state
            self.stats.state_since_ms = now_ms()

    # -- the schedule --------------------------------------------------------------------------

    def next_due(self, due: float, now: float) -> float:
        """When the device polls next, after its poll that was due at ``due`` ended at ``now``."""
        if self._retry_s:
            self._resync = True
            return now + self._retry_s  # not aligned: the ticks meanwhile are given up
        interval = self.interval_s
        if self._resync:  # back from down: restart the schedule from now
            self._resync = False
            due = now
        due += interval
        if due <= now:
            missed = int((now - due) // interval) + 1
            self.stats.polls_skipped += missed
            due += missed * interval
        return due


async def run_schedule(
    devices: Sequence[Device],
    poll: Callable[[Device], Awaitable[None]],
    *,
    logger: logging.Logger = log,
) -> None:
    """Poll the device due first, reschedule it, repeat, until cancelled.

    ``poll(device)`` records its outcome (``device.succeeded()`` / ``failed()``); a DeviceError
    it raises is a failed poll, and any other exception is logged with its traceback and
    counted as one too: one device never stops the others. Devices due together go in order.
    :class:`StopPolling` ends the loop.
    """
    if not devices:
        await asyncio.Future()  # nothing to poll: wait for the cancellation
    nap = _Nap()
    start = time.monotonic()
    for device in devices:
        device.due = start
        device._wake = nap.wake
    try:
        while True:
            device = min(devices, key=_due)
            delay = device.due - time.monotonic()
            if delay > 0:
                await nap.sleep(delay)
                continue  # an override may have moved a due time: choose again
            due = device.due
            try:
                await poll(device)
            except StopPolling:
                raise
            except DeviceError as exc:
                device.failed(str(exc))
            except Exception as exc:
                logger.exception("%s: unexpected error while polling", device.label)
                device.failed(f"{type(exc).__name__}: {exc}")
            _raise_if_cancelling()
            device.due = device.next_due(due, time.monotonic())
    finally:
        for device in devices:
            device._wake = None


class _Nap:
    """A sleep that :meth:`wake` ends early: as cheap as ``asyncio.sleep`` (one future, one
    timer), where a timeout around an event would raise and catch a cancellation each time."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = loop.call_later(delay, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self._future = None

    def wake(self) -> None:
        if self._future is not None:
            _resolve(self._future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StopPolling(Exception):
    """Raised by a poll to end :func:`run_schedule` (its connection or port went away and the
    source opens it again); it is not a failed poll."""


def _due(device: Device) -> float:
    return device.due


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a poll swallowed.

    pymodbus awaits each answer with ``asyncio.wait_for``, which on Python 3.11 returns the
    answer and drops the cancellation when both arrive in the same loop turn (fixed in 3.12).
    Under fast polling that race is common, and a lost cancellation left the poll loop running,
    so SIGTERM never finished. The task still counts the request (``cancelling()``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class PolledSource:
    """The base of a polled source kind: subclass it and implement :meth:`poll`.

    It makes one :class:`Device` per ``config.device_specs()`` and polls them on their
    intervals. Each poll gets ``config.timeout`` and ``config.retries + 1`` tries (one while the
    device is down); the values it returns become one Sample, stamped when the poll started.
    :meth:`open` and :meth:`close` bracket the polling (a connection, a port).
    """

    def __init__(self, config: SourceConfig, sink: SampleSink) -> None:
        self.config = config
        self.sink = sink
        self.cores: list[Device] = [Device.of(spec, config) for spec in config.device_specs()]

    @property
    def devices(self) -> list[DeviceStats]:
        return [core.stats for core in self.cores]

    async def open(self) -> None:
        """Called before the first poll."""

    async def close(self) -> None:
        """Called after the last poll, also when cancelled."""

    async def poll(self, device: Device) -> Mapping[str, Value]:
        """One poll of ``device``: its values by point name. Raise a DeviceError (or let the
        timeout expire) when the device gives no usable answer."""
        raise NotImplementedError

    async def run(self) -> None:
        await self.open()
        try:
            await run_schedule(self.cores, self._poll)
        finally:
            await self.close()

    async def _poll(self, device: Device) -> None:
        started = now_ms()
        error: DeviceError = DeviceTimeout("no attempt")
        timeout = self.config.timeout
        for _ in range(device.attempts(self.config.retries)):
            try:
                async with asyncio.timeout(timeout):
                    values = dict(await self.poll(device))
            except TimeoutError:
                error = DeviceTimeout(f"no answer within {timeout:g}s")
                continue
            except DeviceError as exc:
                error = exc
                continue
            if values:
                device.stats.last_values.update(values)
                self.sink(Sample(device.name, started, values))
            device.succeeded(started)
            return
        device.failed(str(error))
