"""A small fault-injecting TCP proxy on 127.0.0.1, for the uplink tests and benchmark.

    async with FaultProxy(target_port) as proxy:   # listens on proxy.port
        proxy.pause() / proxy.resume()     # hold every byte in both directions (a radio fade)
        proxy.cut()                        # drop every open connection (RST)
        await proxy.refuse()               # stop listening: new connections are refused
        await proxy.accept()               # listen again on the same port
        await proxy.outage() / restore()   # cut + refuse, then accept
        proxy.delay_s = 0.05               # added latency, each way, order kept

Run as a script (``python tests/proxy.py --target-port P [--delay-ms 50]``) it prints its port
on stdout and forwards until SIGTERM, so a benchmark can keep it off its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import socket
import struct
import sys
import time
from types import TracebackType

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024


class FaultProxy:
    def __init__(self, target_port: int, *, port: int = 0, delay_s: float = 0.0) -> None:
        self.target_port = target_port
        self.port = port
        self.delay_s = delay_s
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultProxy:
        await self.accept()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults ---------------------------------------------------------------------------

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Reset every open connection, as a dropped link does."""
        for writer in list(self._writers):
            _abort(writer)
        for task in list(self._tasks):
            task.cancel()

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def accept(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, LOOPBACK, self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def outage(self) -> None:
        await self.refuse()
        self.cut()
        await self._settle()

    async def restore(self) -> None:
        self.resume()
        await self.accept()

    async def close(self) -> None:
        await self.refuse()
        self.cut()
        await self._settle()

    async def _settle(self) -> None:
        tasks = [*self._tasks, *self._handlers]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- forwarding -----------------------------------------------------------------------

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(client_r, client_w)
        finally:
            self._handlers.discard(handler)

    async def _forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            _abort(client_w)
            return
        self._writers |= {client_w, server_w}
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._pump(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            # When one direction ends, the connection is over: close both sides.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        arrived = asyncio.Event()
        ended = False

        async def read() -> None:
            nonlocal ended
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    ended = True
                    arrived.set()
                    return
                queue.append((time.monotonic() + self.delay_s, data))
                arrived.set()

        reading = asyncio.create_task(read())
        try:
            while True:
                if not queue:
                    if ended:
                        return
                    arrived.clear()
                    await arrived.wait()
                    continue
                due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                queue.popleft()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close with RST, as a link that drops does, not a polite FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _serve(target_port: int, port: int, delay_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with FaultProxy(target_port, port=port, delay_s=delay_s) as proxy:
        sys.stdout.write(f"{proxy.port}\n")
        sys.stdout.flush()
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added latency, each way")
    args = parser.parse_args()
    asyncio.run(_serve(args.target_port, args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
