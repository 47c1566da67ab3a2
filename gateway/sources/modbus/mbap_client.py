"""A lean Modbus TCP client: one read in flight, our own timeouts, no retries, no reconnect task.

The source polls a Modbus TCP device through this instead of pymodbus's client: on issue 7's
workload (20 reads a second) pymodbus's transaction layer (a lock, a future and ``wait_for`` per
request, the framer and PDU classes, trace hooks) cost ~180-210 us of CPU per read against
~105 us for the same read over a bare asyncio connection (docs/perf/e2e.md), nearly a fifth of
the daemon's CPU. `probe modbus` reads Modbus TCP through it too; RS-485 and the simulators
stay on pymodbus.

An answer whose transaction id is not the one awaited (a late answer to a read that timed out)
is dropped; bytes that do not frame as Modbus TCP close the connection, since nothing after
them can be trusted, and so does a timeout that left half a frame in the buffer (its missing
tail would otherwise be taken from the next answer). The source reconnects with its own backoff.
:class:`TcpClient` is the connection part, shared with ``rtu_tcp_client``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from gateway.codec import mbap
from gateway.sources.modbus.transport import CONNECTION, PROTOCOL, TIMEOUT, ErrorMap

K = TypeVar("K")  # what identifies the awaited answer
T = TypeVar("T")  # the answer
L = TypeVar("L", bound="LinkBase[Any, Any]")


class LinkBase(asyncio.Protocol, Generic[K, T]):
    """One TCP connection: its transport, its receive buffer and the one answer awaited."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._awaited: tuple[K, asyncio.Future[T]] | None = None

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def partial(self) -> bool:
        """Bytes of an answer not yet whole are in the buffer."""
        return bool(self._buffer)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def ask(self, key: K, request: bytes, timeout_s: float) -> T:
        """Send ``request``; the answer ``data_received`` matches to ``key``, or raise
        (TimeoutError after ``timeout_s``). The deadline is a plain timer on the answer, ~5 us
        cheaper than ``asyncio.timeout``, which a busy bus pays 20 times a second."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        self._awaited = (key, answer)
        deadline = loop.call_later(timeout_s, _expire, answer)
        try:
            self._transport.write(request)
            return await answer
        finally:
            deadline.cancel()
            self._awaited = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection gives a stream transport; uvloop's does not subclass
        # asyncio.Transport, so this is a cast, not a check
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ConnectionError(str(exc) if exc else "closed by the device"))

    def _fail(self, exc: Exception) -> None:
        """Drop what was received; the awaited read (if any) raises ``exc``."""
        self._buffer.clear()
        if self._awaited is not None and not self._awaited[1].done():
            self._awaited[1].set_exception(exc)


def _expire(answer: asyncio.Future[Any]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


class TcpClient(Generic[L]):
    """Connects, closes and says whether it is connected; subclasses frame the reads."""

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._link: L | None = None

    def _new_link(self) -> L:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.open

    async def connect(self) -> bool:
        """Open a connection (within ``timeout_s``); False when it cannot be opened."""
        self.close()
        link = self._new_link()
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.get_running_loop().create_connection(
                    lambda: link, self.host, self.port
                )
        except (OSError, TimeoutError):
            link.close()
            return False
        self._link = link
        return link.open

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _open_link(self) -> L:
        link = self._link
        if link is None or not link.open:
            raise ConnectionError("not connected")
        return link


class MbapClient(TcpClient["_Link"]):
    # Everything read() raises but an ExceptionAnswer, mapped (tests/test_transports.py).
    errors: ClassVar[ErrorMap] = {
        TimeoutError: TIMEOUT,
        ConnectionError: CONNECTION,
        OSError: CONNECTION,
        mbap.FramingError: PROTOCOL,
    }

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        super().__init__(host, port, timeout_s=timeout_s)
        self._tid = 0

    def _new_link(self) -> _Link:
        return _Link()

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        """Registers or bits; raises TimeoutError, ConnectionError, mbap.ExceptionAnswer or
        mbap.FramingError."""
        link = self._open_link()
        self._tid = self._tid % 0xFFFF + 1
        request = mbap.read_request(self._tid, unit, table, address, count)
        try:
            frame = await link.ask(self._tid, request, self.timeout_s)
        except TimeoutError:
            if link.partial:  # half a frame: the next answer would be read as its tail
                self.close()
            raise
        return mbap.read_values(frame, unit, table, count)

    async def write(self, function: int, address: int, words: Sequence[int], unit: int) -> None:
        """One write; raises as ``read`` does."""
        link = self._open_link()
        self._tid = self._tid % 0xFFFF + 1
        request = mbap.write_request(self._tid, unit, function, address, words)
        try:
            frame = await link.ask(self._tid, request, self.timeout_s)
        except TimeoutError:
            if link.partial:
                self.close()
            raise
        if frame.unit != unit:
            raise mbap.FramingError(f"answer from unit {frame.unit}, asked unit {unit}")
        mbap.check_write_answer(frame.pdu, function, address, words)


class _Link(LinkBase[int, mbap.Frame]):
    """Hands back the frame with the awaited transaction id; drops the others."""

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while buffer:
            try:
                frame, used = mbap.next_frame(buffer)
            except mbap.FramingError as exc:
                self._fail(exc)
                self.close()
                return
            if frame is None:
                return
            del buffer[:used]
            awaited = self._awaited
            if awaited is not None and frame.tid == awaited[0] and not awaited[1].done():
                awaited[1].set_result(frame)
