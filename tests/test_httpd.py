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
    body = f"{request.method} {request.path} {sorted(request.query.items())}".encode()
    return Response(200, body, headers=(("X-Seen-Host", request.headers.get("host", "")),))


async def exchange(port: int, raw: bytes, *, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
        (b"\x16\x03\x01 garbage, as a TLS client would send\r\n\r\n", b"400"),
    ],
    ids=["a body", "a method", "a huge head", "garbage"],
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


async def test_an_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpd, "IDLE_TIMEOUT_S", 0.2)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        answer = await exchange(server.port, b"GET / HTTP/1.1\r\nHo")  # never finished
    assert answer == b""


async def test_connections_beyond_the_bound_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(httpd, "MAX_CONNECTIONS", 2)
    async with HttpServer(echo, host="127.0.0.1", port=0) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        try:
            extra = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        except ConnectionResetError:  # closed with the request unread
            extra = b""
        assert extra == b""
        for _, writer in held:
            writer.close()
