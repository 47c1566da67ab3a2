"""The status endpoint's HTTP server (h11 on asyncio) against real sockets: answers, limits,
bad input, and a handler that fails."""

from __future__ import annotations

import asyncio

import pytest

from gateway import httpd
from gateway.httpd import HttpServer, Request, Response


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a bug in a handler")
    if request.path == "/big":
        return Response(200, b"x" * 4_000_000)
    body = f"{request.method} {request.path} {sorted(request.query.items())}".encode()
    return Response(200, body, headers=(("X-Seen-Host", request.headers.get("host", "")),))


async def exchange(
    port: int, raw: bytes, *, read_until_close: bool = True, source: str = "127.0.0.1"
) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(raw)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            return await reader.read() if read_until_close else await reader.read(65536)
    finally:
        writer.close()


async def test_get_head_query_and_keep_alive() -> None:
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        two = (
            b"GET /status?x=1&y=two HTTP/1.1\r\nHost: gw\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        answer = await exchange(server.port, two)
    first, _, second = answer.partition(
        b"HTTP/1.1 200 ",
    )[2].partition(b"HTTP/1.1 200 ")
    assert b"GET /status [('x', '1'), ('y', 'two')]" in first
    assert b"x-seen-host: gw" in first.lower()
    assert b"content-length: 0" not in second.lower()  # HEAD: the length of the GET, no body
    assert second.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc", b"413"),
        (b"DELETE / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\nHost: gw\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: gw\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"\x16\x03\x01 garbage, as a TLS client would send\r\n\r\n", b"400"),
    ],
    ids=["a body", "a method", "a huge head", "a head of 20 kB", "garbage"],
)
async def test_bad_requests_get_a_clear_status_and_the_server_goes_on(
    raw: bytes, status: bytes
) -> None:
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await exchange(server.port, raw)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
        ok = await exchange(
            server.port, b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200")


async def test_a_failing_handler_is_a_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await exchange(
            server.port, b"GET /boom HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
    assert answer.startswith(b"HTTP/1.1 500")
    assert any("GET /boom failed" in r.getMessage() and r.exc_info for r in caplog.records)


CLOSE = b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


def head_of(size: int) -> bytes:
    """A request head of exactly ``size`` bytes, blank line included."""
    start = b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("size", "status"), [(httpd.MAX_HEAD, b"200"), (httpd.MAX_HEAD + 1, b"431")]
)
async def test_the_head_limit_is_max_head_to_the_byte(size: int, status: bytes) -> None:
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await exchange(server.port, head_of(size))
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


async def dribble(port: int, source: str, every_s: float, count: int) -> bytes:
    """Send a head a byte at a time; what the server answered before it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        for byte in (b"GET /ok HTTP/1.1\r\nX-Slow: " + b"a" * count)[:count]:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)
        return b"unfinished head still open"
    except ConnectionError:
        try:
            return await reader.read()
        except ConnectionError:  # reset: the server closed with the bytes unread
            return b""
    finally:
        writer.close()


async def test_a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slowloris: each byte comes well within any per-read timeout, yet the head has one
    deadline, so the connection is closed long before the 200 bytes are sent."""
    monkeypatch.setattr(httpd, "HEAD_TIMEOUT_S", 0.5)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await dribble(server.port, "127.0.0.1", 0.05, 200)
        assert server.stats.refused_total["head_timeout"] == 1
    assert answer == b""


async def test_health_answers_while_one_peer_holds_every_connection_it_can() -> None:
    """40 slowloris connections from 127.0.0.2 (the default head deadline, 10 s, is not
    reached): the peer gets MAX_PER_PEER, the rest are refused at accept, and a request from
    another address is answered at once."""
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        attack = [
            asyncio.create_task(dribble(server.port, "127.0.0.2", 0.5, 40)) for _ in range(40)
        ]
        await asyncio.sleep(0.5)
        assert server.stats.connections == httpd.MAX_PER_PEER
        answer = await exchange(server.port, CLOSE)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        assert server.stats.refused_total["peer_connections"] == 40 - httpd.MAX_PER_PEER
        for task in attack:
            task.cancel()
        await asyncio.gather(*attack, return_exceptions=True)


async def test_health_answers_while_many_peers_hold_every_connection() -> None:
    """40 slowloris connections from 8 addresses fill the 32 slots: a newcomer from an address
    with none takes the busiest address's oldest connection, and is answered."""
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        attack = [
            asyncio.create_task(dribble(server.port, f"127.0.1.{k % 8 + 1}", 0.5, 40))
            for k in range(40)
        ]
        await asyncio.sleep(0.5)
        assert server.stats.connections == httpd.MAX_CONNECTIONS
        answer = await exchange(server.port, CLOSE)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        assert server.stats.refused_total["evicted"] >= 1
        for task in attack:
            task.cancel()
        await asyncio.gather(*attack, return_exceptions=True)


async def test_a_peer_that_does_not_read_its_answers_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(httpd, "WRITE_TIMEOUT_S", 0.5)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n" * 10)  # 40 MB of answers, unread
        await writer.drain()
        async with asyncio.timeout(10):
            while server.stats.connections:
                await asyncio.sleep(0.05)
        assert server.stats.refused_total["write_timeout"] == 1
        assert (await exchange(server.port, CLOSE)).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_pipelined_requests_are_capped_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(httpd, "MAX_REQUESTS_PER_CONNECTION", 3)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await exchange(server.port, b"GET /ok HTTP/1.1\r\nHost: gw\r\n\r\n" * 5)
    answers = answer.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 3
    assert b"connection: close" in answers[-1].lower()
    assert b"connection: close" not in answers[0].lower()


async def test_a_peer_beyond_its_rate_waits_its_turn_then_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four requests at once from one peer that may send one a second: the first is answered,
    the second after its turn (1 s), the two that would wait longer than MAX_WAIT_S get 429;
    another peer is not held up by it."""
    monkeypatch.setattr(httpd, "PEER_RATE", 1.0)
    monkeypatch.setattr(httpd, "PEER_BURST", 1.0)
    monkeypatch.setattr(httpd, "MAX_WAIT_S", 1.5)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answers = await asyncio.gather(
            *(exchange(server.port, CLOSE, source="127.0.0.2") for _ in range(4)),
            exchange(server.port, CLOSE),
        )
        assert server.stats.refused_total["rate"] == 2
    assert sorted(a[:12] for a in answers) == [b"HTTP/1.1 200"] * 3 + [b"HTTP/1.1 429"] * 2


def test_a_peer_s_turns_come_at_its_rate_after_its_burst() -> None:
    peers = httpd.Peers()
    assert [peers.wait("a", 0.0) for _ in range(int(httpd.PEER_BURST))] == [0.0] * 100
    assert peers.wait("a", 0.0) == pytest.approx(1 / httpd.PEER_RATE)
    assert peers.wait("b", 0.0) == 0.0  # another address has its own
    assert peers.wait("a", 1.0) == 0.0  # a second later: 50 turns back, two taken
    peers.give_back("a")
    assert peers.wait("a", 1.0) == 0.0


def test_a_full_server_admits_a_lighter_peer_at_the_busiest_one_s_expense(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(httpd, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(httpd, "MAX_PER_PEER", 3)
    peers = httpd.Peers()
    assert [peers.admit("a") for _ in range(4)] == [(None, None)] * 3 + [("peer_connections", None)]
    assert peers.admit("b") == (None, None)  # four: full
    assert peers.admit("c") == (None, "a")  # a held 3, c none
    assert peers.connections == {"a": 2, "b": 1, "c": 1}
    assert peers.admit("b") == ("connections", None)  # a has 2, b 1: no better off
    peers.release("c")
    assert peers.admit("b") == (None, None)


async def test_connections_beyond_the_bound_are_held_unanswered_then_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused connection is kept open unread for the head deadline (a client reconnecting at
    once would otherwise spin), then closed without an answer."""
    monkeypatch.setattr(httpd, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(httpd, "HEAD_TIMEOUT_S", 0.5)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        try:
            extra = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        except ConnectionResetError:  # closed with the request unread
            extra = b""
        assert extra == b""
        assert server.stats.refused_total["connections"] == 1
        for _, writer in held:
            writer.close()
