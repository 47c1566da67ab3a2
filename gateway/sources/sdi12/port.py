"""The SDI-12 interface's serial port: it writes commands and hands back answer lines (bytes,
framed by :class:`~gateway.sources.sdi12.protocol.Lines`). It only moves bytes."""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import DeviceError
from gateway.sources.sdi12.protocol import Lines
from gateway.sources.serialport import open_serial_port, reason

log = logging.getLogger("gateway.sources.sdi12")

CLOSE_TIMEOUT = 2.0
MAX_QUEUED = 64  # lines nobody asked for are dropped beyond this (a babbling adapter)


class PortClosed(DeviceError):
    """The port went away (a USB adapter unplugged): the session ends and it is reopened."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.lines = Lines()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: closed
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None
        self.overflowed = 0

    def data_received(self, data: bytes) -> None:
        for line in self.lines.feed(data):
            if self.queue.qsize() >= MAX_QUEUED:
                self.overflowed += 1
                continue
            self.queue.put_nowait(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self.queue.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(None)


class Sdi12Port:
    """An open port to an SDI-12 interface; :func:`open_port` makes one."""

    def __init__(self, name: str, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self.name = name
        self._transport = transport
        self._protocol = protocol

    def write(self, text: str) -> None:
        self._transport.write(text.encode("ascii"))

    async def get(self) -> bytes:
        """The next answer line (without LF); raises PortClosed once the port has closed."""
        line = await self._protocol.queue.get()
        if line is None:
            self._protocol.queue.put_nowait(None)  # every later get() raises too
            error = self._protocol.error
            raise PortClosed(f"port closed: {reason(error)}" if error else "port closed")
        return line

    def drain(self) -> list[bytes]:
        """Lines already received that nobody asked for, and an unfinished one (a truncated
        answer) last; the framer starts afresh."""
        lines: list[bytes] = []
        queue = self._protocol.queue
        while not queue.empty():
            line = queue.get_nowait()
            if line is None:
                queue.put_nowait(None)
                break
            lines.append(line)
        return lines + self.take_unfinished()

    def take_unfinished(self) -> list[bytes]:
        """The unfinished line, if any (a truncated answer, when nothing more came)."""
        framer = self._protocol.lines
        rest = framer.pending()
        framer.reset()
        return [rest] if rest.strip(b"\r") else []

    async def aclose(self) -> None:
        """Close the port and wait until the driver let go of it."""
        if not self._transport.is_closing():
            self._transport.abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._protocol.closed)
        except TimeoutError:
            log.warning("%s: the port did not close within %ss", self.name, CLOSE_TIMEOUT)


async def open_port(
    port: str,
    *,
    baudrate: int,
    parity: str,
    stopbits: int,
    bytesize: int,
    open_timeout: float,
) -> Sdi12Port:
    """Open ``port`` (in a thread: a USB driver may hang); raises DeviceError if it cannot."""
    transport, protocol = await open_serial_port(
        port,
        _Protocol,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        open_timeout=open_timeout,
    )
    return Sdi12Port(port, transport, protocol)
