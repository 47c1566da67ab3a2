"""The audit's MQTT side: a persistent MQTT 5 session whose messages are acked only once stored.

aiomqtt (through paho) acknowledges a QoS 1 message as soon as it arrives. The audit turns that
off (paho's manual ack) and acks each message only after the batch that contains it is
committed to the state file, so a crash at any point loses nothing: the broker redelivers
whatever was not acked. The price is that a batch committed but not yet acked when the audit
dies is delivered again and counted as duplicates (at most ``RECEIVE_MAXIMUM`` messages).

The session is MQTT 5 with ``clean_start`` off and a session expiry, so the broker queues the
fleet's messages while no audit runs. ``Receive Maximum`` bounds the messages in flight to the
audit, and with them its memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.audit.ledger import KINDS, Fleet
from gateway.audit.store import AuditStore
from gateway.config import parse_server
from gateway.errors import UplinkError

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps the audit's session (and queues for it) while no audit runs."""
RECEIVE_MAXIMUM = 200
"""Unacknowledged messages the broker may have in flight to the audit; one batch at most."""
CALL_TIMEOUT_S = 10.0
RECONNECT_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    keepalive_s: int = 30


def client_id_for(state_path: Path) -> str:
    """A stable client id per state file, so a restart resumes the same broker session."""
    digest = hashlib.sha256(str(state_path.resolve()).encode()).hexdigest()[:16]
    return f"street-gateway-audit-{digest}"


def topic_filters(prefix: str, group: str | None) -> list[str]:
    share = f"$share/{group}/" if group else ""
    return [f"{share}{prefix}/+/{kind}" for kind in KINDS]


def _client(opts: BrokerOptions) -> aiomqtt.Client:
    scheme, host, port = parse_server(opts.url)
    tls: ssl.SSLContext | None = None
    if scheme == "mqtts":
        tls = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return aiomqtt.Client(
        host,
        port,
        identifier=opts.client_id,
        username=opts.username,
        password=opts.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
        keepalive=opts.keepalive_s,
        tls_context=tls,
        timeout=CALL_TIMEOUT_S,
    )


class Consumer:
    """Feeds one fleet ledger from the broker; ``run`` returns when ``stop`` is set or, with
    ``settle``, once no message has arrived for that long."""

    def __init__(
        self,
        opts: BrokerOptions,
        fleet: Fleet,
        store: AuditStore,
        *,
        group: str | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.opts = opts
        self.fleet = fleet
        self.store = store
        self.group = group
        self.clock_ms = clock_ms
        self.subscribed = asyncio.Event()
        self.messages_total = 0
        self.readings_batches = 0
        self._last_arrival = 0.0

    async def run(
        self,
        stop: asyncio.Event,
        *,
        settle: float | None = None,
        on_batch: Callable[[], None] | None = None,
        tick: float = 0.2,
    ) -> None:
        """Consume until stopped; reconnect with capped, jittered backoff unless ``settle``
        is set, in which case a broker failure raises UplinkError."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._session(stop, settle, on_batch, tick)
                return
            except* aiomqtt.MqttError as group:
                exc = group.exceptions[0]
                if settle is not None:
                    raise UplinkError(f"{self.opts.url}: {exc}") from exc
                log.warning("broker %s: %s; reconnecting", self.opts.url, exc)
            delay = random.uniform(0, backoff)  # jitter, not cryptography
            backoff = min(backoff * 2, RECONNECT_MAX_S)
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass

    async def _session(
        self,
        stop: asyncio.Event,
        settle: float | None,
        on_batch: Callable[[], None] | None,
        tick: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        client = _client(self.opts)
        inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        # Manual ack is paho's; aiomqtt does not expose it. It must be on before CONNECT: the
        # broker sends what it queued for the session right after CONNACK.
        paho = client._client
        paho.manual_ack_set(True)
        async with client:
            for topic in topic_filters(self.fleet.prefix, self.group):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await client.subscribe(topic, options=SubscribeOptions(qos=1))
            log.info("subscribed to %s as %s", self.fleet.prefix, self.opts.client_id)
            self._last_arrival = loop.time()
            self.subscribed.set()
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(client, inbox), name="audit-mqtt-reader")
                try:
                    await self._drain(
                        paho, inbox, reader, stop=stop, settle=settle, on_batch=on_batch, tick=tick
                    )
                finally:
                    reader.cancel()

    @staticmethod
    async def _read(client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
        async for message in client.messages:
            inbox.put_nowait(message)

    async def _drain(
        self,
        paho: mqtt.Client,
        inbox: asyncio.Queue[aiomqtt.Message],
        reader: asyncio.Task[None],
        *,
        stop: asyncio.Event,
        settle: float | None,
        on_batch: Callable[[], None] | None,
        tick: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set() and not reader.done():
            try:
                async with asyncio.timeout(tick):
                    first = await inbox.get()
            except TimeoutError:
                if settle is not None and loop.time() - self._last_arrival >= settle:
                    return
                continue
            batch = [first]
            while len(batch) < RECEIVE_MAXIMUM and not inbox.empty():
                batch.append(inbox.get_nowait())
            self._last_arrival = loop.time()
            now = self.clock_ms()
            for message in batch:
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload).encode()
                self.fleet.apply(message.topic.value, raw, now, retained=message.retain)
            await self.store.save(self.fleet)  # durable first ...
            for message in batch:  # ... then the broker may forget them
                if message.qos > 0:
                    paho.ack(message.mid, message.qos)
            self.messages_total += len(batch)
            if on_batch is not None:
                on_batch()
