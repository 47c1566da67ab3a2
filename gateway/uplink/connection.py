"""Connection set-up: one connected aiomqtt client for one server, or one line saying why not.

TCP, TLS (a context per server, made once, off the event loop), CONNECT with the format's will,
CONNACK, all bounded by the connect timeout and abandoned at once when the uplink stops. What
aiomqtt does not offer publicly is reached through :mod:`gateway.uplink.aiomqtt_private` only.
The session protocol (births, the window, acknowledgements) is :mod:`gateway.uplink.mqtt`'s.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt
from aiomqtt import MqttCodeError
from aiomqtt.exceptions import MqttConnectError

from gateway.config import UplinkConfig, parse_server
from gateway.uplink.aiomqtt_private import (
    TLS_CLOSED_BEFORE_CONNACK,
    bound_inbound_packets,
    fail_fast_before_connack,
    paho_client,
    register_writes_safely,
)
from gateway.uplink.wire import Outgoing

# paho's own lines ("failed to receive on socket: ...") go here, below our state-change lines;
# cli.py quiets this name (kept from when the connection lived in mqtt.py).
PAHO_LOGGER = "gateway.uplink.mqtt.paho"
_paho_log = logging.getLogger(PAHO_LOGGER)

# CONNACK codes that mean the credentials were refused: MQTT 3.1.1 (4, 5) and as paho 2 maps
# them to MQTT 5 reason codes (134 bad user name or password, 135 not authorized).
_AUTH_REFUSED = {4, 5, 134, 135}


class ConnectFailed(Exception):
    """This server could not be connected to; ``message`` is the line to log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho leaves a socket whose TLS handshake failed for the garbage collector; close it now,
    so a gateway retrying against a broker with the wrong certificate holds no stray sockets."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class Connector:
    """Makes connected clients for ``uplink.servers`` with one config's settings."""

    def __init__(
        self,
        config: UplinkConfig,
        *,
        client_id: str,
        password: str | None,
        op_timeout_s: float,
        max_inbound_bytes: int,
        on_too_large: Callable[[int], None],
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._password = password
        self._op_timeout = op_timeout_s
        # a packet is its payload, its topic (at most 64 KiB) and a few header bytes
        self._max_packet = max_inbound_bytes + 65_536 + 16
        self._on_too_large = on_too_large
        self._keepalive = max(1, round(config.keepalive))
        self._tls: dict[str, ssl.SSLContext] = {}

    async def connect(
        self, server: str, will: Callable[[], Awaitable[Outgoing]], stopping: asyncio.Event
    ) -> aiomqtt.Client | None:
        """A connected client; None when ``stopping`` came first; raises ConnectFailed.

        ``will`` is awaited once the TLS context is there, just before CONNECT (a format with
        numbered sessions takes its next number then)."""
        try:
            client = await self._make_client(server, will)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"TLS set-up for {server} failed: {exc}") from exc
        connecting = asyncio.ensure_future(client.__aenter__())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait(
                {connecting, stopped},
                timeout=self._op_timeout + 1.0,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for future in (connecting, stopped):
                future.cancel()
            await asyncio.gather(connecting, stopped, return_exceptions=True)
        if connecting.cancelled():
            if stopping.is_set():
                return None
            raise ConnectFailed(f"cannot connect to {server}: no answer")
        failure = connecting.exception()
        if failure is not None:
            has_cert = bool(self._config.tls and self._config.tls.cert_file)
            reason = describe_connect_failure(server, failure, client_cert=has_cert)
            raise ConnectFailed(reason) from failure
        return client

    async def _make_client(
        self, server: str, will: Callable[[], Awaitable[Outgoing]]
    ) -> aiomqtt.Client:
        scheme, host, port = parse_server(server)
        tls_context = None
        if scheme == "mqtts":
            tls_context = self._tls.get(server)
            if tls_context is None:
                tls_context = await asyncio.to_thread(self._tls_context)
                self._tls[server] = tls_context
        last_words = await will()
        client = aiomqtt.Client(
            host,
            port,
            username=self._config.username,
            password=self._password,
            identifier=self._client_id,
            will=aiomqtt.Will(
                last_words.topic, last_words.payload, qos=last_words.qos, retain=last_words.retain
            ),
            keepalive=self._keepalive,
            timeout=self._op_timeout,
            # paho's own window is wider than ours by the birth and shutdown messages.
            max_inflight_messages=self._config.max_inflight + 4,
            tls_context=tls_context,
            logger=_paho_log,
        )
        # aiomqtt warns above this many pending calls; our window bounds them by design.
        client.pending_calls_threshold = 2 * self._config.max_inflight + 8
        paho_client(client).connect_timeout = self._op_timeout
        fail_fast_before_connack(client, tls=tls_context is not None)
        register_writes_safely(client)
        bound_inbound_packets(client, self._max_packet, self._on_too_large)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        tls = self._config.tls
        ca_file = str(tls.ca_file) if tls and tls.ca_file else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        if tls and tls.cert_file and tls.key_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if tls and tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslsocket_class = _ClosingSSLSocket
        return context


def describe_connect_failure(server: str, exc: BaseException, *, client_cert: bool = False) -> str:
    text = str(exc) or type(exc).__name__
    if text == TLS_CLOSED_BEFORE_CONNACK:
        # With TLS 1.3 the broker checks the client's certificate after the handshake, so a
        # missing or refused one shows here only as a closed session (its log says why).
        question = (
            "did it refuse the client certificate (uplink.tls.cert_file)?"
            if client_cert
            else "does it require a client certificate (uplink.tls.cert_file)?"
        )
        return f"TLS failure with {server}: {text}; {question}"
    if isinstance(exc, MqttConnectError):
        rc = exc.rc if isinstance(exc.rc, int) else getattr(exc.rc, "value", None)
        reason = str(exc.rc) if exc.rc is not None and not isinstance(exc.rc, int) else text
        if rc in _AUTH_REFUSED:
            return f"auth refused by {server}: {reason} (check uplink.username and password_file)"
        return f"{server} refused the connection: {reason}"
    if isinstance(exc, ssl.SSLError) or "SSL" in text or "certificate" in text:
        return f"TLS failure with {server}: {text}"
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {server}: no answer"
    return f"cannot connect to {server}: {text}"


def first_reason(group: BaseExceptionGroup[BaseException]) -> str:
    """Why a connection ended: its first error, with the cause paho gave for an MQTT code."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, MqttCodeError) and isinstance(cause, Exception) and str(cause):
        text = f"{text}: {cause}"
    return text
