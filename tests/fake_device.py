"""A misbehaving Modbus device for the tests: a real TCP server on a free loopback port whose
answers a test writes by hand (garbage, half frames, bad CRCs: what no pymodbus server sends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]

MBAP_REQUEST = 12  # bytes of a Modbus TCP read request
RTU_REQUEST = 8  # bytes of an RTU read request


@asynccontextmanager
async def fake_device(reply: Reply, request_size: int = MBAP_REQUEST) -> AsyncIterator[int]:
    """Answer each ``request_size``-byte request with ``reply``; yields the port."""
    handlers: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.add(writer)
        try:
            while True:
                await reply(await reader.readexactly(request_size), writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            writers.discard(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in list(writers):  # the handlers then end on their own: no cancellation
            writer.transport.abort()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
