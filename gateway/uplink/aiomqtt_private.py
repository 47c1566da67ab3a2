"""The only place that reaches into aiomqtt's private attributes (docs/architecture.md,
"Private APIs we reach into"). aiomqtt 2.5 has no public way to set paho's TCP connect timeout,
to learn of a disconnect before CONNACK, to fail the connection when registering paho's writer
fails, or to acknowledge messages by hand (paho's manual ack, which the audit needs to ack a
batch only once it is committed). aiomqtt is pinned to 2.5.x in pyproject.toml, and
tests/test_private_apis.py fails if these attributes change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt import MqttError

CLOSED_BEFORE_CONNACK = "the connection closed before CONNACK"
TLS_CLOSED_BEFORE_CONNACK = "the broker closed the TLS session before CONNACK"


def paho_client(client: aiomqtt.Client) -> mqtt.Client:
    """The paho client aiomqtt drives: for ``connect_timeout``, ``on_disconnect``,
    ``on_socket_register_write``, ``loop_write``, ``manual_ack_set``, ``ack`` and
    ``on_message``, which are public on paho's side."""
    paho: mqtt.Client = client._client
    return paho


def connack_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future aiomqtt's ``__aenter__`` awaits until CONNACK (to fail it early)."""
    connected: asyncio.Future[None] = client._connected
    return connected


def disconnected_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future aiomqtt fails when the connection breaks (its reader and writer set it)."""
    disconnected: asyncio.Future[None] = client._disconnected
    return disconnected


def client_loop(client: aiomqtt.Client) -> asyncio.AbstractEventLoop:
    """The event loop aiomqtt registers paho's socket with."""
    loop: asyncio.AbstractEventLoop = client._loop
    return loop


def fail_fast_before_connack(client: aiomqtt.Client, *, tls: bool) -> None:
    """A connection closed before CONNACK (a TLS-only port, a broker at its connection limit, a
    broker that wants a client certificate) fails the connect at once; aiomqtt alone would wait
    for its timeout (aiomqtt 2.5 ignores a disconnect before CONNACK)."""
    paho = paho_client(client)
    inner = paho.on_disconnect
    message = TLS_CLOSED_BEFORE_CONNACK if tls else CLOSED_BEFORE_CONNACK

    def on_disconnect(*args: Any) -> None:
        if inner is not None:
            inner(*args)
        connected = connack_future(client)
        if not connected.done():
            connected.set_exception(MqttError(message))

    paho.on_disconnect = on_disconnect


def register_writes_safely(client: aiomqtt.Client) -> None:
    """aiomqtt registers paho's writer with ``call_soon_threadsafe``; when the connection is
    reset in between, uvloop raises from ``add_writer`` on the closed socket (asyncio's loop
    does not), the error only reaches the loop's log, and the broken link went unnoticed until
    the keepalive ran out. Here that failure is the disconnect it is."""
    paho = paho_client(client)
    loop = client_loop(client)

    def on_register_write(_client: Any, _userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                paho.loop_write()
            except Exception as exc:  # a broken pipe: the connection is gone
                _fail(exc)

        def register() -> None:
            try:
                loop.add_writer(sock.fileno(), write)
            except (RuntimeError, OSError, ValueError) as exc:  # closed meanwhile
                _fail(exc)

        loop.call_soon_threadsafe(register)

    def _fail(exc: Exception) -> None:
        disconnected = disconnected_future(client)
        if not disconnected.done():
            disconnected.set_exception(MqttError(f"connection lost: {exc}"))

    paho.on_socket_register_write = on_register_write


def bound_inbound_packets(
    client: aiomqtt.Client, max_bytes: int, on_refused: Callable[[int], None]
) -> None:
    """End the connection when the broker starts a packet longer than ``max_bytes``, before a
    byte of its body is read. paho 2.2's ``_packet_read`` decodes the fixed header's remaining
    length, then reads that many bytes (up to 256 MiB) into memory before anyone sees them; MQTT
    3.1.1 gives a client no way to skip a packet, so the only bound is to close. ``on_refused``
    hears the length; the uplink counts it and reconnects."""
    paho = paho_client(client)
    recv = paho._sock_recv

    def bounded_recv(bufsize: int) -> bytes:
        state = paho._in_packet  # a new dict per packet: read it each time
        length = state["remaining_length"]
        if state["have_remaining"] and length > max_bytes and state["to_process"] == length:
            on_refused(length)
            raise OSError(f"an inbound packet of {length} bytes is over the {max_bytes} limit")
        data: bytes = recv(bufsize)
        return data

    paho._sock_recv = bounded_recv  # type: ignore[method-assign]
