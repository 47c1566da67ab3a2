"""A serial ASCII sensor as a source of samples, on pyserial + pyserial-asyncio-fast.

The port only moves bytes; :mod:`gateway.codec.lines` frames and parses them. Two modes:

* **stream** (no ``request``): the sensor talks on its own. ``interval`` only judges staleness:
  no usable line for 2 intervals makes the device ``failing``, for 3 intervals ``down``.
* **poll**: ``request`` is written every ``interval`` on the shared device core's drift-free
  schedule (``sources/device.py``), the answer is read until ``line_end`` or ``timeout``, and
  retried ``retries`` times. Three failed polls in a row make the device ``down``; it is still
  polled every interval, since a serial sensor has its line to itself.

A line that does not parse, is too long or is not UTF-8 is dropped and counted in
``parse_errors``; the first such line after good ones and the recovery are logged, not every
line. When the port fails to open or goes away (a USB adapter unplugged), the device is
``down`` and the port is reopened with capped exponential backoff (cap ``backoff_max``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gateway.backoff import Backoff
from gateway.codec.lines import FrameError, LineFramer, make_parser
from gateway.errors import DeviceError, ParseError
from gateway.model import DeviceStats, Sample, SampleSink
from gateway.sources.device import Device, StopPolling, run_schedule
from gateway.sources.serial.config import SerialSource
from gateway.sources.serialport import open_serial_port, reason

log = logging.getLogger("gateway.sources.serial")

BACKOFF_START = 0.5  # first delay before reopening a port, doubled up to backoff_max
FAILING_AFTER_INTERVALS = 2  # stream mode: no usable line for this many intervals
DOWN_AFTER_INTERVALS = 3
# Bad lines are logged once; their end is logged after this many usable lines in a row, so a
# sensor that garbles every fifth line gives one warning, not two log lines per five.
CLEAN_AFTER_GOOD_LINES = 5
CLOSE_TIMEOUT = 2.0


class PortClosed(DeviceError):
    """The port went away (a USB adapter unplugged): the session ends and it is reopened."""


@dataclass(frozen=True, slots=True)
class Line:
    """One framed line (or the reason it could not be one) and when it arrived (Unix ms)."""

    text: str | FrameError
    ts_ms: int


class _Closed:
    """Queued after the last line when the port closed."""


_CLOSED = _Closed()


class _LineProtocol(asyncio.Protocol):
    def __init__(self, framer: LineFramer) -> None:
        self.framer = framer
        self.queue: asyncio.Queue[Line | _Closed] = asyncio.Queue()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None

    def data_received(self, data: bytes) -> None:
        ts_ms = time.time_ns() // 1_000_000
        for item in self.framer.feed(data):
            self.queue.put_nowait(Line(item, ts_ms))

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self.queue.put_nowait(_CLOSED)
        if not self.closed.done():
            self.closed.set_result(None)


class LinePort:
    """An open serial port that hands back framed lines; :func:`open_line_port` makes one."""

    def __init__(self, name: str, transport: asyncio.Transport, protocol: _LineProtocol) -> None:
        self.name = name
        self._transport = transport
        self._protocol = protocol

    async def get(self) -> Line:
        """The next line; raises DeviceError once the port has closed."""
        item = await self._protocol.queue.get()
        return self._checked(item)

    def discard_pending(self) -> int:
        """Drop lines already received (stale before a request); raises if the port closed."""
        count = 0
        while not self._protocol.queue.empty():
            self._checked(self._protocol.queue.get_nowait())
            count += 1
        self._protocol.framer.reset()
        return count

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    async def aclose(self) -> None:
        """Close the port and wait until the driver let go of it."""
        if not self._transport.is_closing():
            self._transport.abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._protocol.closed)
        except TimeoutError:
            log.warning("%s: the port did not close within %ss", self.name, CLOSE_TIMEOUT)

    def _checked(self, item: Line | _Closed) -> Line:
        if isinstance(item, _Closed):
            self._protocol.queue.put_nowait(item)  # every later get() raises too
            error = self._protocol.error
            raise PortClosed(f"port closed: {reason(error)}" if error else "port closed")
        return item


async def open_line_port(
    port: str,
    *,
    line_end: bytes,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    bytesize: int = 8,
    open_timeout: float = 1.0,
) -> LinePort:
    """Open ``port`` and frame what arrives; raises DeviceError if it cannot be opened."""
    transport, protocol = await open_serial_port(
        port,
        lambda: _LineProtocol(LineFramer(line_end)),
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        open_timeout=open_timeout,
    )
    return LinePort(port, transport, protocol)


class SerialSensorSource:
    """Reads one serial ASCII sensor and hands each line's values to ``sink`` as one Sample."""

    def __init__(self, config: SerialSource, sink: SampleSink) -> None:
        self._config = config
        self._sink = sink
        self._parse = make_parser(config.parse, config.points)
        self._request = config.request.encode() if config.request else None
        # its line is its own: a down sensor is still polled every interval (no backoff)
        self._core = Device(
            config.name,
            config.name,
            config.poll_interval,
            backoff_max_s=config.backoff_max,
            timeout_s=config.timeout,
            backoff=False,
            logger=log,
        )
        self._stats = self._core.stats
        self._last_good = 0.0  # loop time of the last usable line
        self._session_start = 0.0  # loop time the port was opened
        self._dropped = 0  # lines dropped since input was last clean (0: clean)
        self._good_run = 0  # usable lines in a row since the last dropped one
        self._last_bad: str | None = None

    @property
    def cores(self) -> list[Device]:
        return [self._core]

    @property
    def devices(self) -> list[DeviceStats]:
        return [self._stats]

    async def run(self) -> None:
        """Read until cancelled; device and port errors only change the device's state."""
        config = self._config
        start = min(BACKOFF_START, config.backoff_max)
        reopen = Backoff(start, config.backoff_max, rng=lambda: 1.0)
        while True:
            try:
                port = await open_line_port(
                    config.port,
                    line_end=config.line_end.encode(),
                    baudrate=config.baudrate,
                    parity=config.parity,
                    stopbits=config.stopbits,
                    bytesize=config.bytesize,
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
                    await port.aclose()
                if self._stats.reads_ok > good_before:
                    reopen.reset()
            await asyncio.sleep(reopen.next_delay())

    async def _session(self, port: LinePort) -> None:
        self._session_start = asyncio.get_running_loop().time()
        if self._request is None:
            await self._stream(port)
        else:
            await self._poll_loop(port, self._request)

    # -- stream mode ---------------------------------------------------------------------------

    async def _stream(self, port: LinePort) -> None:
        check_every = min(max(self._config.poll_interval / 4, 0.05), 5.0)
        while True:
            try:
                async with asyncio.timeout(check_every):
                    line = await port.get()
            except TimeoutError:
                pass
            else:
                self._handle(line)
            self._judge_silence()

    def _judge_silence(self) -> None:
        interval = self._config.poll_interval
        silent = asyncio.get_running_loop().time() - max(self._last_good, self._session_start)
        if silent < FAILING_AFTER_INTERVALS * interval:
            return
        what = (
            f"no valid line for {silent:.3g}s" if self._last_bad else f"no line for {silent:.3g}s"
        )
        error = f"{what} (last: {self._last_bad})" if self._last_bad else what
        self._core.degrade(
            "down" if silent >= DOWN_AFTER_INTERVALS * interval else "failing", error
        )

    # -- poll mode -----------------------------------------------------------------------------

    async def _poll_loop(self, port: LinePort, request: bytes) -> None:
        """Poll on the core's schedule until the port goes away (then PortClosed ends it)."""
        lost: list[PortClosed] = []

        async def poll(core: Device) -> None:
            try:
                await self._poll(port, request)
            except PortClosed as exc:
                lost.append(exc)
                raise StopPolling from exc

        try:
            await run_schedule([self._core], poll, logger=log)
        except StopPolling:
            raise lost[0] from None

    async def _poll(self, port: LinePort, request: bytes) -> None:
        config = self._config
        error = ""
        for _ in range(config.retries + 1):
            stale = port.discard_pending()
            if stale:
                log.debug("%s: %d unsolicited line(s) dropped", config.name, stale)
            port.write(request)
            self._stats.requests_total += 1
            try:
                async with asyncio.timeout(config.timeout):
                    usable = None
                    while usable is None:
                        usable = self._handle(await port.get())
            except TimeoutError:
                error = f"no answer within {config.timeout:g}s"
                continue
            if usable:
                return
            error = f"bad answer: {self._last_bad}"
        self._core.failed(error)

    # -- lines and state -----------------------------------------------------------------------

    def _handle(self, line: Line) -> bool | None:
        """Parse a line and emit its sample: True used, False dropped, None blank."""
        stats = self._stats
        if isinstance(line.text, FrameError):
            return self._drop(str(line.text))
        if not line.text.strip():
            return None
        try:
            values = self._parse(line.text)
        except ParseError as exc:
            return self._drop(str(exc))
        self._sink(Sample(self._config.name, line.ts_ms, dict(values)))
        stats.last_values.update(values)
        self._last_good = asyncio.get_running_loop().time()
        self._last_bad = None
        if self._dropped:
            self._good_run += 1
            if self._good_run >= CLEAN_AFTER_GOOD_LINES:
                log.info("%s: lines parse again (%d dropped)", self._config.name, self._dropped)
                self._dropped = 0
        self._core.succeeded(line.ts_ms)
        return True

    def _drop(self, reason: str) -> bool:
        self._stats.parse_errors += 1
        if not self._dropped:
            log.warning("%s: dropping lines that do not parse: %s", self._config.name, reason)
        self._dropped += 1
        self._good_run = 0
        self._last_bad = reason
        return False
