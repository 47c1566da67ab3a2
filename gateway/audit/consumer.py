"""The audit's MQTT side: a persistent MQTT 5 session whose messages are acked only once stored.

aiomqtt (through paho) acknowledges a QoS 1 message as soon as it arrives. The audit turns that
off (paho's manual ack) and acks each message only after the batch that contains it is
committed to the state file, so a crash at any point loses nothing: the broker redelivers
whatever was not acked. The price is that a batch committed but not yet acked when the audit
dies is delivered again and counted as duplicates (one batch: what arrived during one commit).

Memory does not depend on the broker: each message is folded into the ledger as paho reads it
(no queue of payloads) and only its 16-bit mid waits for the commit. ``Receive Maximum`` asks
the broker to keep at most that many messages unacked; mosquitto 2.0.11 does not always keep
to it while draining a queued backlog (docs/perf/audit.md), and nothing here relies on it.

The session is MQTT 5 with ``clean_start`` off and a session expiry, so the broker queues the
fleet's messages while no audit runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
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

from gateway.audit.health import HealthBoard
from gateway.audit.ledger import KINDS, SEALS, Fleet
from gateway.audit.store import AuditStore
from gateway.backoff import Backoff
from gateway.config import parse_server
from gateway.errors import UplinkError
from gateway.uplink.aiomqtt_private import paho_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps the audit's session (and queues for it) while no audit runs."""
RECEIVE_MAXIMUM = 200
"""Unacknowledged messages the broker may have in flight to the audit (a request only)."""
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


def topic_filters(prefix: str, group: str | None, *, seals: bool = False) -> list[str]:
    share = f"$share/{group}/" if group else ""
    return [f"{share}{prefix}/+/{kind}" for kind in (*KINDS, SEALS) if seals or kind != SEALS]


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
        topics: list[str] | None = None,
        health: HealthBoard | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.opts = opts
        self.fleet = fleet
        self.store = store
        self.group = group
        # Sparkplug B: its own; `--keys`: P/+/seals too
        self.topics = topics or topic_filters(fleet.prefix, group, seals=fleet.seals is not None)
        self.health = health  # the fleet view's (audit --serve): P/+/health too
        if health is not None:
            self.topics = [*self.topics, health.topic_filter(group)]
        self.clock_ms = clock_ms
        self.messages_total = 0
        """Messages applied and committed."""
        self.batches = 0
        self.max_unacked = 0
        """Most messages received and not yet acked at once: what the broker let fly."""
        self._unacked: list[int] = []  # mids applied to the ledger, not yet in a commit
        self._applied = 0
        self._committing = 0
        self._arrived = asyncio.Event()
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
        backoff = Backoff(0.5, RECONNECT_MAX_S)
        while not stop.is_set():
            try:
                await self._session(stop, settle, on_batch, tick)
                return
            except* aiomqtt.MqttError as group:
                exc = group.exceptions[0]
                if settle is not None:
                    raise UplinkError(f"{self.opts.url}: {exc}") from exc
                log.warning("broker %s: %s; reconnecting", self.opts.url, exc)
            # Applied on the lost connection, never acked: durable now, they come again as
            # duplicates (the ledger cannot take a message back).
            await self._commit(None)
            try:
                async with asyncio.timeout(backoff.next_delay()):
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
        client = _client(self.opts)
        # Manual ack is paho's; aiomqtt does not expose it. It must be on before CONNECT: the
        # broker sends what it queued for the session right after CONNACK. For the same reason
        # the ledger takes paho's messages before CONNECT, in place of aiomqtt's queue.
        paho = paho_client(client)
        paho.manual_ack_set(True)
        paho.on_message = self._on_message
        self._unacked.clear()  # mids of a lost connection mean nothing on a new one
        async with client:
            for topic in self.topics:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await client.subscribe(topic, options=SubscribeOptions(qos=1))
            log.info("subscribed to %s as %s", " ".join(self.topics), self.opts.client_id)
            self._last_arrival = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(self._watch(client), name="audit-mqtt-watch")
                try:
                    await self._drain(
                        paho, watch, stop=stop, settle=settle, on_batch=on_batch, tick=tick
                    )
                finally:
                    watch.cancel()

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError when the connection drops (aiomqtt's queue itself stays empty)."""
        async for _ in client.messages:
            pass

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        """paho's callback, run on the event loop as aiomqtt reads one packet from the socket.

        The message is folded into the ledger at once and only its mid is kept until the batch
        is committed: an unacked message costs a few bytes, not its payload, however many the
        broker sends. Reading and folding alternate, so nothing queues in the process; what the
        audit has not read yet waits in the socket, and TCP slows the broker down.
        """
        now, retained = self.clock_ms(), bool(msg.retain)
        if self.health is None or not self.health.apply(
            msg.topic, msg.payload, now, retained=retained
        ):
            self.fleet.apply(msg.topic, msg.payload, now, retained=retained)
        if msg.qos > 0:  # only after apply: a message that raised is never acked
            self._unacked.append(msg.mid)
        self._applied += 1
        self.max_unacked = max(self.max_unacked, len(self._unacked) + self._committing)
        self._last_arrival = time.monotonic()
        self._arrived.set()

    async def _commit(self, paho: mqtt.Client | None) -> None:
        """Commit everything applied so far, then ack it (unless the connection is gone)."""
        self._arrived.clear()
        # No await between taking the mids and save() taking its rows: they hold the same messages.
        mids, self._unacked = self._unacked, []
        applied, self._applied = self._applied, 0
        self._committing = len(mids)
        if self.fleet.seals is not None:  # `--keys`: a seal that waited long enough is checked
            self.fleet.seals.settle_all(self.clock_ms())
        try:
            await self.store.save(self.fleet)  # durable first ...
        finally:
            self._committing = 0
        if paho is not None:
            for mid in mids:  # ... then the broker may forget them
                paho.ack(mid, 1)
        self.messages_total += applied
        self.batches += bool(applied)

    async def _drain(
        self,
        paho: mqtt.Client,
        watch: asyncio.Task[None],
        *,
        stop: asyncio.Event,
        settle: float | None,
        on_batch: Callable[[], None] | None,
        tick: float,
    ) -> None:
        """Group commit: each commit takes whatever arrived while the previous one ran."""
        while not stop.is_set() and not watch.done():
            try:
                async with asyncio.timeout(tick):
                    await self._arrived.wait()
            except TimeoutError:
                if settle is not None and time.monotonic() - self._last_arrival >= settle:
                    return
                continue
            await self._commit(paho)
            if on_batch is not None:
                on_batch()
        if not watch.done() and self._arrived.is_set():
            await self._commit(paho)  # stopping: leave nothing applied but unacked
