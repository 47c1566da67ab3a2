"""An open serial port of a dust sensor: bytes in go through the pure :class:`FrameDecoder`, the
latest reading is kept with its arrival time, and commands go out. No policy here: the source
decides what a window of readings means."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import DeviceError
from gateway.sources.particulate.frames import Event, FrameDecoder, Model, Reading
from gateway.sources.serialport import open_serial_port, reason

Listener = Callable[[Event, int], None]  # (a decoded frame, its arrival in Unix ms)

CLOSE_TIMEOUT = 2.0


class PortClosed(DeviceError):
    """The port went away (a USB adapter unplugged): the session ends and it is reopened."""


@dataclass(frozen=True, slots=True)
class Stamped:
    """A valid reading, its number on this port (1, 2, ...) and when it arrived (Unix ms)."""

    reading: Reading
    number: int
    ts_ms: int


class _FrameProtocol(asyncio.Protocol):
    def __init__(self, decoder: FrameDecoder, listener: Listener | None) -> None:
        self.decoder = decoder
        self.listener = listener
        self.latest: Stamped | None = None
        self.readings = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None

    def data_received(self, data: bytes) -> None:
        ts_ms = time.time_ns() // 1_000_000
        for event in self.decoder.feed(data):
            if self.listener is not None:
                self.listener(event, ts_ms)
            if isinstance(event, Reading):  # replies to commands carry no measurement
                self.readings += 1
                self.latest = Stamped(event, self.readings, ts_ms)

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        if not self.closed.done():
            self.closed.set_result(None)


class SensorPort:
    """An open port; :func:`open_sensor_port` makes one."""

    def __init__(self, name: str, transport: asyncio.Transport, protocol: _FrameProtocol) -> None:
        self.name = name
        self._transport = transport
        self._protocol = protocol

    @property
    def decoder(self) -> FrameDecoder:
        return self._protocol.decoder

    @property
    def readings(self) -> int:
        """Valid readings received on this port so far."""
        return self._protocol.readings

    def latest_since(self, number: int) -> Stamped | None:
        """The latest reading received after reading ``number``, or None."""
        latest = self._protocol.latest
        return latest if latest is not None and latest.number > number else None

    def write(self, data: bytes) -> None:
        self._check_open()
        self._transport.write(data)

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``; raises PortClosed at once if the port goes away meanwhile."""
        self._check_open()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await asyncio.shield(self._protocol.closed)
        self._check_open()

    async def aclose(self, last_words: bytes = b"") -> None:
        """Send ``last_words`` (a sleep command) if the port is still open, close it, and wait
        until the driver let go of it."""
        transport = self._transport
        if not transport.is_closing():
            if last_words:
                transport.write(last_words)
                transport.close()  # flushes what was written first
            else:
                transport.abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._protocol.closed)
        except TimeoutError:
            transport.abort()

    def _check_open(self) -> None:
        if self._protocol.closed.done():
            error = self._protocol.error
            raise PortClosed(f"port closed: {reason(error)}" if error else "port closed")


async def open_sensor_port(
    port: str,
    model: Model,
    *,
    baudrate: int = 9600,
    open_timeout: float = 1.0,
    listener: Listener | None = None,
) -> SensorPort:
    """Open ``port`` (8N1, as both models speak) and decode what arrives (``listener`` sees
    every frame as it comes); raises DeviceError when it cannot be opened."""
    transport, protocol = await open_serial_port(
        port,
        lambda: _FrameProtocol(FrameDecoder(model), listener),
        baudrate=baudrate,
        open_timeout=open_timeout,
    )
    return SensorPort(port, transport, protocol)
