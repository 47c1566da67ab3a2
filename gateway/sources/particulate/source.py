"""An optical dust sensor (SDS011, PMS5003) as a source of samples: see README.md.

Both sensors report on their own about once a second. The port (``port.py``) decodes every
frame and keeps the latest valid reading; this module turns readings into samples on one of
two schedules, through the shared device core (health, counters, ``/status``):

* **continuous** (no ``duty``): the fan runs all the time; every ``interval`` the latest reading
  of that interval becomes one sample. An interval without one is a failed poll (``failing``,
  then ``down`` after three), and the wake-up and active-mode commands are sent again, in case
  the sensor was left asleep or in query mode.
* **duty cycle** (``duty: {on, every, warmup}``): every ``every`` the sensor is woken, readings
  taken during ``warmup`` are ignored, the latest reading of the ``on`` window that follows is
  the cycle's sample, and the sensor is put to sleep. Readings that arrive while it should be
  asleep (a lost sleep command) make the source send it again. While an alarm's
  ``while_raised`` asks for samples more often than a cycle allows, the sensor stays awake and
  gives one sample per that interval; it goes back to its cycle when the alarm clears.

A frame with a bad checksum is counted in ``parse_errors`` and never published; noise between
frames is skipped. Both are logged once when the line turns bad and once when it is clean
again, not per frame. When the port cannot be opened or goes away the device is ``down`` and the
port is reopened with capped exponential backoff (cap ``backoff_max``).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import DeviceError
from gateway.model import DeviceStats, Sample, SampleSink
from gateway.sources.device import Device
from gateway.sources.particulate.config import ParticulateSource
from gateway.sources.particulate.frames import active_mode_command, sleep_command, wake_command
from gateway.sources.particulate.port import SensorPort, open_sensor_port

log = logging.getLogger("gateway.sources.particulate")

BACKOFF_START = 0.5  # first delay before reopening a port, doubled up to backoff_max
CLEAN_AFTER_GOOD_FRAMES = 5  # a noisy line is logged clean again after this many good frames
RESLEEP_EVERY = 5.0  # at most one repeated sleep command per this many seconds


class DustSensorSource:
    """Reads one dust sensor and hands one Sample per interval (or duty cycle) to ``sink``."""

    def __init__(self, config: ParticulateSource, sink: SampleSink) -> None:
        self._config = config
        self._sink = sink
        # its line is its own: a down sensor is still looked at every interval (no backoff)
        self._core = Device(
            config.name,
            config.name,
            config.sample_interval,
            backoff_max_s=config.backoff_max,
            timeout_s=config.timeout,
            backoff=False,
            logger=log,
        )
        self._stats = self._core.stats
        self._sleep = sleep_command(config.model)
        self._wake = wake_command(config.model)
        self._active = active_mode_command(config.model)
        self._awake = False
        self._sleepless = False  # it went on measuring after a sleep command (logged once)
        self._seen_bad = 0  # bad checksums already counted in parse_errors
        self._noisy = False
        self._good_run = 0
        self._frames_seen = 0
        self._skipped_seen = 0

    @property
    def cores(self) -> list[Device]:
        return [self._core]

    @property
    def devices(self) -> list[DeviceStats]:
        return [self._stats]

    async def run(self) -> None:
        """Read until cancelled; device and port errors only change the device's state."""
        config = self._config
        delay = min(BACKOFF_START, config.backoff_max)
        while True:
            try:
                port = await open_sensor_port(
                    config.port,
                    config.model,
                    baudrate=config.baudrate,
                    open_timeout=config.timeout,
                )
            except DeviceError as exc:
                self._core.degrade("down", str(exc))
            else:
                good_before = self._stats.reads_ok
                try:
                    await self._session(port)
                except DeviceError as exc:
                    self._core.degrade("down", f"port lost: {exc}")
                finally:
                    # a duty-cycled sensor is left asleep: its fan does not wear while we are away
                    asleep = self._sleep if config.duty is not None else b""
                    await port.aclose(asleep)
                    self._tally(port)
                if self._stats.reads_ok > good_before:
                    delay = min(BACKOFF_START, config.backoff_max)
            await asyncio.sleep(delay)
            delay = min(delay * 2, config.backoff_max)

    async def _session(self, port: SensorPort) -> None:
        self._awake = False
        self._seen_bad = self._frames_seen = self._skipped_seen = 0  # a new port, a new decoder
        if self._config.duty is None:
            self._send(port, self._wake, self._active)
            self._awake = True
            loop = asyncio.get_running_loop()
            due = loop.time()
            while True:
                interval = self._core.interval_s
                due = self._next_cycle(due, interval, loop.time())
                await self._window(port, interval, due - loop.time())
        else:
            await self._duty_loop(port)

    # -- the two schedules -----------------------------------------------------------------------

    async def _window(self, port: SensorPort, interval: float, seconds: float) -> None:
        """One interval of a running sensor (``seconds`` of it left): its latest reading is
        the sample."""
        mark = port.readings
        await port.wait(seconds)
        if not self._conclude(port, mark, f"no valid frame in {interval:g}s"):
            self._send(port, self._wake, self._active)  # it may have been left asleep

    async def _duty_loop(self, port: SensorPort) -> None:
        duty = self._config.duty
        assert duty is not None
        loop = asyncio.get_running_loop()
        cycle = loop.time()  # the first cycle starts at once
        while True:
            every = self._core.interval_s  # `every`, or an alarm's while_raised interval
            if every <= duty.warmup + duty.on:  # no time to sleep: keep it awake meanwhile
                if not self._awake:
                    self._send(port, self._wake, self._active)
                    self._awake = True
                    await port.wait(duty.warmup)
                await self._window(port, every, every)
                cycle = loop.time()
                continue
            self._send(port, self._wake, self._active)
            self._awake = True
            await port.wait(duty.warmup)
            mark = port.readings
            await port.wait(duty.on)
            self._conclude(port, mark, f"no valid frame in the {duty.on:g}s after warm-up")
            self._send(port, self._sleep)
            self._awake = False
            cycle = self._next_cycle(cycle, every, loop.time())
            await self._asleep_until(port, cycle)

    def _next_cycle(self, cycle: float, every: float, now: float) -> float:
        cycle += every
        if cycle <= now:  # came late (the machine was busy): skip, do not burst
            missed = int((now - cycle) // every) + 1
            self._stats.polls_skipped += missed
            cycle += missed * every
        return cycle

    async def _asleep_until(self, port: SensorPort, until: float) -> None:
        """Wait for the next cycle; a sensor still talking did not get the sleep command."""
        loop = asyncio.get_running_loop()
        mark = port.readings
        while (left := until - loop.time()) > 0:
            if self._core.override is not None and self._core.interval_s < left:
                return  # an alarm wants samples sooner
            await port.wait(min(left, RESLEEP_EVERY))
            if port.readings != mark:
                if not self._sleepless:
                    log.warning("%s: still measuring while it should sleep; sending sleep again",
                                self._config.name)  # fmt: skip
                    self._sleepless = True
                self._send(port, self._sleep)
                mark = port.readings
            elif self._sleepless:
                log.info("%s: asleep as told", self._config.name)
                self._sleepless = False

    def _send(self, port: SensorPort, *commands: bytes) -> None:
        for command in commands:
            port.write(command)
            self._stats.requests_total += 1

    # -- readings and state ----------------------------------------------------------------------

    def _conclude(self, port: SensorPort, mark: int, missing: str) -> bool:
        """The window since reading ``mark`` is over: its latest reading becomes the sample."""
        self._tally(port)
        stamped = port.latest_since(mark)
        if stamped is None:
            self._core.failed(self._with_line_state(port, missing))
            return False
        values = stamped.reading.values()
        self._sink(Sample(self._config.name, stamped.ts_ms, dict(values)))
        self._stats.last_values.update(values)
        self._core.succeeded(stamped.ts_ms)
        return True

    def _tally(self, port: SensorPort) -> None:
        """Count new bad checksums and log the line's state when it changes."""
        decoder = port.decoder
        bad = decoder.bad_checksums - self._seen_bad
        self._seen_bad = decoder.bad_checksums
        self._stats.parse_errors += bad
        frames = decoder.frames - self._frames_seen
        skipped = decoder.skipped_bytes - self._skipped_seen
        self._frames_seen, self._skipped_seen = decoder.frames, decoder.skipped_bytes
        # a frame cut short when the port opened is no noise; a frame's worth of junk is
        if bad or skipped >= decoder.max_frame:
            if not self._noisy:
                log.warning(
                    "%s: bad frames on the line (%d bad checksums, %d bytes skipped so far)",
                    self._config.name, decoder.bad_checksums, decoder.skipped_bytes,
                )  # fmt: skip
            self._noisy = True
            self._good_run = 0
        elif frames and self._noisy:
            self._good_run += frames
            if self._good_run >= CLEAN_AFTER_GOOD_FRAMES:
                log.info("%s: frames check again", self._config.name)
                self._noisy = False

    def _with_line_state(self, port: SensorPort, missing: str) -> str:
        decoder = port.decoder
        if decoder.bad_checksums or decoder.skipped_bytes >= decoder.max_frame:
            return (
                f"{missing} ({decoder.bad_checksums} bad checksums, "
                f"{decoder.skipped_bytes} bytes skipped on this port)"
            )
        return missing
