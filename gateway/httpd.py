"""A small HTTP/1.1 server for the status endpoint: h11 for the protocol, asyncio for the I/O.

Why not aiohttp: importing ``aiohttp.web`` costs ~13 MB of the daemon's ~53 MB peak RSS on a
Raspberry Pi-class box (docs/perf/e2e.md), for four GET routes read by a technician's laptop and
a Prometheus scrape. h11 (python-hyper) parses and writes HTTP and does no I/O, ~0.5 MB.

Bounded everywhere: a request's head is at most :data:`MAX_HEAD` bytes, a body is refused,
a connection is closed after :data:`IDLE_TIMEOUT_S` without a complete request, and at most
:data:`MAX_CONNECTIONS` connections are served at once (more are closed at accept). A handler's
exception is logged and answered 500; the server keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

import h11

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
IDLE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
_READ = 8192


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (0: any free port, see :attr:`port`)."""

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self.port = port

    async def __aenter__(self) -> HttpServer:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._requested_port, limit=MAX_HEAD
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)  # a connection accepted just now starts, and sees the closing
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or len(self._connections) >= MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError) as exc:
            log.debug("status connection closed: %s", exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    await self._send(conn, writer, Response(status, b"bad request\n"), False)
                return
            if event is h11.NEED_DATA:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    data = await reader.read(_READ)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                response = await self._respond(event)
                await self._send(conn, writer, response, event.method == b"HEAD")
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if conn.our_state is h11.MUST_CLOSE:
                return
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()

    async def _respond(self, event: h11.Request) -> Response:
        if any(name == b"content-length" and value != b"0" for name, value in event.headers) or any(
            name == b"transfer-encoding" for name, _ in event.headers
        ):
            return Response(413, b"no request body is accepted\n")
        if event.method not in (b"GET", b"HEAD"):
            return Response(405, b"only GET\n", headers=(("Allow", "GET, HEAD"),))
        target = urlsplit(event.target.decode("latin-1"))
        request = Request(
            method=event.method.decode(),
            path=target.path,
            query=dict(parse_qsl(target.query)),
            headers={
                name.decode().lower(): value.decode("latin-1") for name, value in event.headers
            },
        )
        try:
            return await self._handler(request)
        except Exception:
            log.exception("status request %s %s failed", request.method, request.path)
            return Response(500, b"internal error\n")

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: Response,
        head_only: bool,
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        if response.status >= 400:  # after a refusal, start afresh on a new connection
            headers.append(("Connection", "close"))
        out = conn.send(h11.Response(status_code=response.status, headers=headers))
        if not head_only:
            out += conn.send(h11.Data(data=response.body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        await writer.drain()
