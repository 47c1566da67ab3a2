"""A small HTTP/1.1 server for the status endpoint: h11 for the protocol, asyncio for the I/O.

Why not aiohttp: importing ``aiohttp.web`` costs ~13 MB of the daemon's ~53 MB peak RSS on a
Raspberry Pi-class box (docs/perf/e2e.md), for four GET routes read by a technician's laptop and
a Prometheus scrape. h11 (python-hyper) parses and writes HTTP and does no I/O, ~0.5 MB.

Every peer on the LAN is a possible attacker, and the status server shares the event loop with
the polling, so everything is bounded in size, time and share:

- a request's head is at most :data:`MAX_HEAD` bytes (431 beyond), a body is refused (413);
- one deadline per request head, :data:`HEAD_TIMEOUT_S` from the connection's start or the
  previous answer to the head's last byte (a byte every few seconds does not extend it);
- every answer is written within :data:`WRITE_TIMEOUT_S` (a peer that does not read is dropped);
- at most :data:`MAX_REQUESTS_PER_CONNECTION` requests a connection (the last answer says
  ``Connection: close``), so pipelining is bounded;
- at most :data:`MAX_CONNECTIONS` connections, :data:`MAX_PER_PEER` of them from one address;
  when all are taken, a newcomer from an address with fewer connections than the busiest one
  takes the busiest one's oldest, so neither one host nor a few can hold the slots a
  monitor's ``/health`` needs. A refused connection is held open unread for
  :data:`HEAD_TIMEOUT_S` (at most :data:`MAX_HELD` of them), then closed, so a client that
  reconnects at once does not make the server spin;
- each peer address may send :data:`PEER_RATE` requests a second (bursts of :data:`PEER_BURST`);
  beyond, its next request waits its turn (TCP holds the rest back), and one that would wait
  longer than :data:`MAX_WAIT_S` is answered 429. The loop is yielded every few requests (so
  at most ~1 ms of pipelined answers at a time), so a flood takes a bounded share of the CPU
  and the polling goes on.

Each refusal is counted by reason (:class:`HttpStats`, in ``/metrics``) and logged at most once
a minute a reason. A handler's exception is logged and answered 500; the server keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

import h11

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
MAX_PER_PEER = 8
MAX_REQUESTS_PER_CONNECTION = 100
PEER_RATE = 50.0
PEER_BURST = 100.0
MAX_WAIT_S = 5.0
MAX_HELD = 64
_READ = 8192
_YIELD_EVERY = 8  # requests answered on a connection between two turns of the other tasks
_LOG_EVERY_S = 60.0
REFUSALS = (
    "connections",  # MAX_CONNECTIONS reached
    "peer_connections",  # MAX_PER_PEER reached
    "evicted",  # dropped to make room for a peer with fewer connections
    "head_timeout",
    "write_timeout",
    "head_too_large",
    "bad_request",  # not HTTP, a body, a method other than GET/HEAD
    "rate",  # answered 429
    "host",  # 421: a name the listener does not answer to (gateway.status)
    "token",  # 401: no token or a wrong one (gateway.status)
)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    peer: str = ""  # the client's address


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class HttpStats:
    """The server's figures: open connections, requests answered, refusals by reason."""

    connections: int = 0
    requests_total: int = 0
    refused_total: Counter[str] = field(default_factory=Counter)
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)

    def refuse(self, reason: str, peer: str) -> None:
        """Count a refusal; log the first one, then at most once a minute with the count."""
        self.refused_total[reason] += 1
        now = time.monotonic()
        last, count = self._logged.get(reason, (-_LOG_EVERY_S, 0))
        if now - last >= _LOG_EVERY_S:
            since = self.refused_total[reason] - count
            log.warning("status server refused %s (%s; %d since the last warning)",
                        peer, reason.replace("_", " "), since)  # fmt: skip
            self._logged[reason] = (now, self.refused_total[reason])


class Peers:
    """Pure: connections and a token bucket per peer address."""

    def __init__(self) -> None:
        self.connections: Counter[str] = Counter()
        self._buckets: dict[str, tuple[float, float]] = {}  # tokens, at (monotonic s)

    def admit(self, peer: str) -> tuple[str | None, str | None]:
        """(None: the connection is counted, or the reason it is refused; a peer to drop a
        connection of to make room). When every slot is taken, a peer with fewer connections
        than the one with the most gets in at that one's expense (its count is moved at once):
        many hosts at once cannot keep out a monitor that holds none."""
        if self.connections[peer] >= MAX_PER_PEER:
            return "peer_connections", None
        victim = None
        if sum(self.connections.values()) >= MAX_CONNECTIONS:
            victim, most = self.connections.most_common(1)[0]
            if most < self.connections[peer] + 2:
                return "connections", None
            self.release(victim)
        self.connections[peer] += 1
        return None, victim

    def release(self, peer: str) -> None:
        self.connections[peer] -= 1
        if self.connections[peer] <= 0:
            del self.connections[peer]

    def wait(self, peer: str, now: float) -> float:
        """Seconds the peer's next request waits for its turn (0: at once); the turn is taken."""
        tokens, at = self._buckets.get(peer, (PEER_BURST, now))
        tokens = min(PEER_BURST, tokens + (now - at) * PEER_RATE) - 1
        if len(self._buckets) > 4 * MAX_CONNECTIONS:
            self._forget_idle()
        self._buckets[peer] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / PEER_RATE

    def give_back(self, peer: str) -> None:
        """A turn taken by a request that was then refused."""
        tokens, at = self._buckets[peer]
        self._buckets[peer] = (tokens + 1, at)

    def _forget_idle(self) -> None:
        """Buckets of peers without a connection (one that comes back starts full again)."""
        for peer in [p for p in self._buckets if p not in self.connections]:
            del self._buckets[peer]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (0: any free port, see :attr:`port`)."""

    def __init__(
        self, handler: Handler, *, host: str, port: int, stats: HttpStats | None = None
    ) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self._peers = Peers()
        self._writers: dict[str, list[asyncio.StreamWriter]] = {}  # per peer, oldest first
        self._evicted: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()  # refused, kept open a while (_hold)
        self._closed = asyncio.Event()
        self.stats = stats if stats is not None else HttpStats()
        self.port = port

    async def __aenter__(self) -> HttpServer:
        self._server = await asyncio.start_server(self._accept, self._host, self._requested_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._closed.set()  # the held refused connections are let go
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
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else "local"
        refused, victim = ("closing", None) if self._closing else self._peers.admit(peer)
        if refused is not None:
            if refused != "closing":
                self.stats.refuse(refused, peer)
                await self._hold(writer)
            writer.transport.abort()  # nothing read, nothing to say
            return
        if victim is not None:  # its oldest connection makes room (already uncounted)
            dropped = self._writers[victim].pop(0)
            self._evicted.add(dropped)
            dropped.transport.abort()
            self.stats.refuse("evicted", victim)
        self._connections.add(task)
        self._writers.setdefault(peer, []).append(writer)
        self.stats.connections += 1
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, h11.ProtocolError) as exc:
            log.debug("status connection from %s closed: %s", peer, exc)
        finally:
            self._connections.discard(task)
            self.stats.connections -= 1
            await self._release(writer, peer)

    async def _hold(self, writer: asyncio.StreamWriter) -> None:
        """Keep a refused connection open, unread, for HEAD_TIMEOUT_S (at most MAX_HELD at
        once): a client that reconnects at once when closed would make the server accept and
        close thousands a second (~30 % of a core); held, it waits instead."""
        if len(self._held) >= MAX_HELD:
            return
        self._held.add(writer)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                await self._closed.wait()
        except TimeoutError:
            pass
        finally:
            self._held.discard(writer)

    async def _release(self, writer: asyncio.StreamWriter, peer: str) -> None:
        """Close and uncount; the slot is held until the last answer is out (bounded)."""
        if not self._closing and writer not in self._evicted:
            await _close(writer)
        writer.transport.abort()  # no-op once closed
        if writer in self._evicted:  # its count was given to a newcomer when it was dropped
            self._evicted.discard(writer)
            return
        self._writers[peer].remove(writer)
        if not self._writers[peer]:
            del self._writers[peer]
        self._peers.release(peer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        loop = asyncio.get_running_loop()
        for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                event = await _next_request(conn, reader, loop.time() + HEAD_TIMEOUT_S)
            except TimeoutError:
                self.stats.refuse("head_timeout", peer)
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                self.stats.refuse("head_too_large" if status == 431 else "bad_request", peer)
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, peer, Response(status, b"bad request\n"))
                return
            if event is None:  # closed by the peer between two requests
                return
            response = await self._answer(event, peer)
            last = served == MAX_REQUESTS_PER_CONNECTION
            head_only = event.method == b"HEAD"
            if not await self._send(conn, writer, peer, response, head_only=head_only, last=last):
                return
            if conn.our_state is not h11.DONE:
                return  # MUST_CLOSE: a refusal, HTTP/1.0, Connection: close
            if not isinstance(conn.next_event(), h11.EndOfMessage):
                return  # a body follows (refused)
            conn.start_next_cycle()
            if served % _YIELD_EVERY == 0:  # pipelined requests are answered without a wait:
                await asyncio.sleep(0)  # let the polling run between them

    async def _answer(self, event: h11.Request, peer: str) -> Response:
        """The handler's answer, after the peer's turn has come (429 when it is too far off)."""
        wait = self._peers.wait(peer, time.monotonic())
        if wait > MAX_WAIT_S:
            self._peers.give_back(peer)
            self.stats.refuse("rate", peer)
            return Response(429, b"too many requests\n", headers=(("Retry-After", "1"),))
        if wait:
            await asyncio.sleep(wait)
        self.stats.requests_total += 1
        response = await self._respond(event, peer)
        if response.status in (405, 413):
            self.stats.refuse("bad_request", peer)
        return response

    async def _respond(self, event: h11.Request, peer: str) -> Response:
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
            peer=peer,
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
        peer: str,
        response: Response,
        *,
        head_only: bool = False,
        last: bool = False,
    ) -> bool:
        """Write the answer within WRITE_TIMEOUT_S; False when the peer did not take it."""
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        if response.status >= 400 or last:  # after a refusal, start afresh on a new connection
            headers.append(("Connection", "close"))
        out = conn.send(h11.Response(status_code=response.status, headers=headers))
        if not head_only:
            out += conn.send(h11.Data(data=response.body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        if not writer.transport.get_write_buffer_size():
            return True  # all in the kernel's hands already: nothing to wait for
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except TimeoutError:
            self.stats.refuse("write_timeout", peer)
            return False
        return True


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close once the answers written are sent, within WRITE_TIMEOUT_S (else drop them)."""
    writer.close()
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader, deadline: float
) -> h11.Request | None:
    """The next request's head, or None when the peer closed; TimeoutError when it is not
    complete by ``deadline`` (loop time: one for the whole head, however the bytes come).
    The head is refused (431) as soon as more than MAX_HEAD bytes are buffered (h11 alone would
    let a read's worth more in, up to ~24.5 kB, as it checks the size only after a read)."""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None  # ConnectionClosed; PAUSED cannot happen between two cycles
        buffered = len(conn.trailing_data[0])
        if buffered >= MAX_HEAD:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        async with asyncio.timeout_at(deadline):  # only around reads: a pipelined head is free
            data = await reader.read(min(_READ, MAX_HEAD - buffered))
        conn.receive_data(data)
