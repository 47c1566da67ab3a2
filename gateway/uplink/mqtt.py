"""The MQTT uplink: samples and alarms from the buffer to the broker, at least once.

One connection at a time, to the first of ``uplink.servers`` that accepts (failover in list
order); when every server failed, a capped exponential backoff with full jitter
(:mod:`gateway.backoff`) before the next round. A link that was up and drops starts a
new round from the first server.

What goes on the wire is the business of the one :class:`~gateway.uplink.wire.WireFormat`
the config names (JSON v2, Sparkplug B); this module only moves its messages. On each
connection:

* the format's will is set in CONNECT (a :class:`~gateway.uplink.wire.SessionFormat` first
  takes its durable session number, Sparkplug's bdSeq); its subscriptions are made, then its
  session start (JSON: the retained birth on ``P/G/status`` and ``P/G/meta``; Sparkplug:
  NBIRTH and DBIRTHs) is published before any data; a SessionFormat that is not ready yet
  (Sparkplug waiting for its primary host) holds every data message back until it is;
* the buffer's ``last_seq`` at that moment is the *boundary*: samples at or below it are the
  backlog and go out marked historical;
* a window of ``uplink.max_inflight`` messages is kept in flight; which lane fills a free slot
  is decided by :class:`gateway.uplink.scheduler.LaneScheduler` (alarms, gaps, then live and
  backlog in turn). A live sample goes out as soon as the window is idle, before its commit has
  reached the disk; while messages are in flight, live samples wait to share one;
* a message's seqs are acknowledged to the buffer only after the broker's PUBACK for it (QoS 1;
  with QoS 0 once paho has written it). Nothing else is ever taken out of the buffer, so after
  a reconnect everything unacknowledged is simply fetched and sent again.

Every message from the broker (a format's subscriptions) passes one guard first,
:class:`gateway.uplink.inbound.InboundGuard`; connecting (TCP, TLS, CONNECT) is
:mod:`gateway.uplink.connection`'s job, handing acknowledged seqs to the buffer
:mod:`gateway.uplink.acks`'s.

Memory: at most ``max_inflight`` messages (each up to ``batch.max_samples`` samples) are read
from the buffer at any time, whatever the backlog.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiomqtt import MqttError

from gateway.backoff import Backoff
from gateway.config import UplinkConfig
from gateway.errors import BufferStoreError, UplinkError
from gateway.model import BufferStats, UplinkStats, now_ms
from gateway.uplink.acks import AckQueue, BufferLike
from gateway.uplink.connection import ConnectFailed, Connector, first_reason
from gateway.uplink.inbound import TOO_LARGE, InboundGuard
from gateway.uplink.meter import LinkMeter, publish_size
from gateway.uplink.scheduler import LaneScheduler, Pick, Wait
from gateway.uplink.seals import SealSource, seal_messages
from gateway.uplink.wire import (
    Catalog,
    LargeInbound,
    Outgoing,
    Reconnect,
    SessionFormat,
    TimedFormat,
    WireFormat,
)

log = logging.getLogger(__name__)
# With the window idle, a live sample waits this long for the rest of its bus's poll cycle (the
# devices of a bus answer a few ms apart): one message instead of one per device, at ~19 instead
# of ~26 bytes per point on the benchmark workload (docs/performance.md).
IDLE_LINGER_S = 0.02


@dataclass
class _Session:
    """One connection's state."""

    server: str
    client: aiomqtt.Client
    scheduler: LaneScheduler
    slots: asyncio.Semaphore
    ready: collections.deque[Outgoing] = field(default_factory=collections.deque)
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    gaps_inflight: set[int] = field(default_factory=set)
    seals_inflight: set[int] = field(default_factory=set)
    evicted_seen: int = 0
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # ready got messages
    heard: asyncio.Event = field(default_factory=asyncio.Event)  # an inbound message was handled


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        *,
        gateway_id: str,
        client_id: str,
        buffer: BufferLike,
        password: str | None,
        wire_format: WireFormat,
        session_counter: Callable[[], int] | None = None,
        reconnect_min_s: float = 0.1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._config = config
        self._gateway_id = gateway_id
        self._client_id = client_id
        self._buffer = buffer
        self._password = password
        self._format = wire_format
        # decided once: a runtime Protocol check costs microseconds, and _ready() is per message
        self._session_format = wire_format if isinstance(wire_format, SessionFormat) else None
        self._seals = buffer if isinstance(buffer, SealSource) else None
        self._seals_topic = f"{config.topic_prefix}/{gateway_id}/seals"
        # Blocking, durable (Sparkplug: BdSeqFile.advance): the next session's number.
        self._session_counter = session_counter
        self._client: aiomqtt.Client | None = None  # while connected, for reconfigure()
        self._session: _Session | None = None  # ditto, once the session is up
        self._backoff = Backoff(reconnect_min_s, config.reconnect_max)
        # every message from the broker passes here first (size cap, catch-all, counting)
        larger = wire_format.inbound_caps() if isinstance(wire_format, LargeInbound) else None
        self._inbound = InboundGuard(wire_format.on_message, clock=time.monotonic, larger=larger)
        self._connector = Connector(
            config,
            client_id=client_id,
            password=password,
            op_timeout_s=connect_timeout_s,
            max_inbound_bytes=self._inbound.largest,
            on_too_large=self._too_large,
        )
        self._timed = wire_format if isinstance(wire_format, TimedFormat) else None
        self._waiting = False  # connected, but the format holds births and data back
        # Connect (TCP, TLS, CONNACK), birth and goodbye: a broker silent this long is gone.
        self._op_timeout = connect_timeout_s
        # A PUBACK behind a full window on a slow link may take a while; a dead link is found
        # sooner by the keepalive (no answer to PINGREQ within keepalive closes it).
        self._publish_timeout = max(30.0, 4.0 * config.keepalive)
        self._stats = UplinkStats()
        self._meter = LinkMeter()
        self._stopping = asyncio.Event()
        self._shutdown_deadline = math.inf  # loop time by which shutdown must be done
        self._finished = asyncio.Event()
        self._finished.set()  # set while run() is not running
        self._acks = AckQueue(buffer.ack)
        self._logged_failure: dict[str, str] = {}  # server -> last failure logged for it

    @property
    def stats(self) -> UplinkStats:
        now = time.monotonic()
        stats = self._stats
        stats.bytes_total = self._meter.bytes_total
        stats.bytes_per_hour = self._meter.per_hour(now)
        stats.bytes_per_sample = self._meter.per_sample(now)
        stats.inbound_refused = dict(self._inbound.refused)
        fmt = self._session_format
        stats.waiting_for = fmt.waiting_for() if self._waiting and fmt is not None else None
        return stats

    def _too_large(self, length: int) -> None:
        """paho's reader met a packet over the cap: counted, and the connection ends."""
        self._inbound.refuse(TOO_LARGE, "(not read)", f"a packet of {length} bytes; reconnecting")

    def same_link(
        self, config: UplinkConfig, *, gateway_id: str, client_id: str, password: str | None
    ) -> bool:
        """Would a new uplink with these settings talk to the broker exactly as this one does?"""
        return (config, gateway_id, client_id, password) == (
            self._config, self._gateway_id, self._client_id, self._password
        )  # fmt: skip

    async def reconfigure(self, catalog: Catalog) -> None:
        """After a reload that keeps the link: tell the upstream about the new config (JSON: the
        retained birth with the new digest, and meta when it changed).

        Publishing that beats reconnecting, which would flap the status to offline.
        """
        messages = self._format.catalog_changed(catalog)
        session = self._session
        if session is not None and self._session_format is not None:
            # Behind the data messages already built with the old catalog (Sparkplug: their
            # seqs and aliases come before the new NBIRTH).
            session.ready.extend(messages)
            session.poke.set()
            return
        client = self._client
        if client is None:
            return  # the next connect publishes the session start with the new catalog
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(self._op_timeout):
                for message in messages:
                    await self._send(client, message)

    async def publish_aside(self, message: Outgoing) -> bool:
        """One message beside the window (the retained health): True once acknowledged."""
        if (client := self._client) is None:  # set only while connected
            return False
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._send(client, message)
            return True
        except (MqttError, TimeoutError):
            return False

    def health_changed(self, doc: Mapping[str, Any]) -> None:
        """Sparkplug B sends health as node metrics too, in order with the session's data."""
        messages = self._format.health(doc, emit=self._session is not None)
        if self._session is not None and messages:
            self._session.ready.extend(messages)
            self._session.poke.set()

    async def _send(self, client: aiomqtt.Client, message: Outgoing) -> None:
        """Publish one message outside the window (session start, goodbye) and count it."""
        await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        self._meter.record(
            time.monotonic(), publish_size(message.topic, message.payload, message.qos), 0
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and publish until cancelled or shut down; link errors are retried, not raised."""
        self._finished.clear()
        try:
            while not self._stopping.is_set():
                await self._one_round()
                if not self._stopping.is_set():
                    await self._sleep(self._backoff.next_delay())
        finally:
            self._set_disconnected()
            self._finished.set()

    async def shutdown(self, timeout_s: float = 2.0) -> None:
        """Finish the messages in flight (bounded), say goodbye on the status topic, disconnect.

        The whole sequence keeps within ``timeout_s``: in-flight PUBACKs get most of it, the
        goodbye and the DISCONNECT the last quarter (at most 0.5 s). Returns once :meth:`run`
        has returned, or after ``timeout_s`` (plus a little) if it is stuck.
        """
        self._shutdown_deadline = asyncio.get_running_loop().time() + timeout_s
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s + 0.2):
                await self._finished.wait()

    def _shutdown_left(self, reserve_s: float = 0.0) -> float:
        """Seconds left of the shutdown budget, keeping ``reserve_s`` back."""
        left = self._shutdown_deadline - asyncio.get_running_loop().time() - reserve_s
        return max(0.05, min(left, self._op_timeout))

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    async def _one_round(self) -> None:
        """Try each server in order; stay on the first that accepts until its link drops."""
        servers = self._config.servers
        for index, server in enumerate(servers):
            if self._stopping.is_set():
                return
            try:
                client = await self._connect(server)
            except ConnectFailed as exc:
                self._stats.connect_failures_total += 1
                self._stats.last_error = exc.message
                if self._logged_failure.get(server) == exc.message:
                    log.debug("uplink: %s", exc.message)
                    continue
                # Logged once per change, not once per retry.
                self._logged_failure[server] = exc.message
                log.warning("uplink: %s", exc.message)
                if index + 1 < len(servers):
                    log.warning("uplink: failover to next server %s", servers[index + 1])
                continue
            if client is None:  # shutdown while connecting
                return
            self._logged_failure.pop(server, None)
            self._stats.connects_total += 1
            started = time.monotonic()
            await self._serve(server, client)
            if time.monotonic() - started > self._backoff.cap_s:
                self._backoff.reset()  # a link that held a while starts the backoff afresh
            return

    async def _connect(self, server: str) -> aiomqtt.Client | None:
        """A connected client; None when shutdown came first; raises ConnectFailed."""
        return await self._connector.connect(server, self._next_will, self._stopping)

    async def _next_will(self) -> Outgoing:
        """The will of the next connection; a SessionFormat first takes its session number."""
        if self._session_format is not None:
            if self._session_counter is None:
                raise UplinkError("this wire format needs a session counter")
            try:
                self._session_format.begin(await asyncio.to_thread(self._session_counter))
            except UplinkError as exc:  # the bdSeq file cannot be written: retried
                raise ConnectFailed(str(exc)) from exc
        return self._format.will()

    def _set_disconnected(self) -> None:
        if self._stats.connected:
            self._stats.link_lost_ms = self._stats.link_changed_ms = now_ms()
        self._stats.connected = False

    # -- one connection -------------------------------------------------------------------

    async def _serve(self, server: str, client: aiomqtt.Client) -> None:
        graceful = False
        try:
            async with asyncio.timeout(self._op_timeout):
                # Subscriptions first: Sparkplug answers NCMD (rebirth) from its NBIRTH on.
                for topic in self._format.subscriptions():
                    await client.subscribe(topic, qos=1)
                for message in self._format.session_start():
                    await self._send(client, message)
            if not await self._until_ready(client):
                graceful = True  # shutdown while waiting
                return
            self._client = client
            boundary = self._buffer.last_seq
            self._stats.connected = True
            self._stats.server = server
            self._stats.link_changed_ms = now_ms()
            log.info("uplink: connected to %s (backlog up to seq %d)", server, boundary)
            session = _Session(
                server=server,
                client=client,
                scheduler=LaneScheduler(
                    boundary=boundary,
                    batch_size=self._config.batch.max_samples,
                    max_wait_s=self._config.batch.max_wait,
                    idle_linger_s=IDLE_LINGER_S,
                    alarm_fetch=self._config.max_inflight,
                    now=time.monotonic(),
                ),
                slots=asyncio.Semaphore(self._config.max_inflight),
                evicted_seen=_evicted(self._buffer.stats),
            )
            self._session = session
            graceful = await self._pipeline(session)
        except* (MqttError, TimeoutError, UplinkError, OSError) as group:
            reason = first_reason(group)
            self._stats.last_error = f"lost link to {server}: {reason}"
            log.warning("uplink: lost link to %s (%s)", server, reason)
        except* BufferStoreError as group:
            log.error("uplink: the buffer failed (%s); reconnecting", first_reason(group))  # noqa: TRY400
        finally:
            self._client = None
            self._session = None
            self._set_disconnected()
            await self._acks.flush()
            await self._close(client, goodbye=graceful)

    async def _pipeline(self, session: _Session) -> bool:
        """Publish until the link fails (raises) or shutdown is asked (returns True)."""
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(self._watch(session), name="uplink-watch")
            acker = tg.create_task(self._acks.run(), name="uplink-acker")
            pump = tg.create_task(self._pump(session, tg), name="uplink-pump")
            timer = tg.create_task(self._timer(session), name="uplink-timer")
            await self._stopping.wait()
            # Graceful: no new batches; let what is in flight get its PUBACK, bounded.
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if session.inflight:
                reserve = min(
                    0.5, (self._shutdown_deadline - asyncio.get_running_loop().time()) / 4
                )
                await asyncio.wait(set(session.inflight), timeout=self._shutdown_left(reserve))
            for task in (*session.inflight, watcher, acker, timer):
                task.cancel()
        return True

    async def _close(self, client: aiomqtt.Client, *, goodbye: bool) -> None:
        if goodbye:
            try:
                async with asyncio.timeout(self._shutdown_left()):
                    for message in self._format.goodbye():
                        await self._send(client, message)
            except (MqttError, TimeoutError) as exc:
                log.warning("uplink: could not publish the shutdown status: %s", exc)
        with contextlib.suppress(MqttError, TimeoutError, OSError):
            async with asyncio.timeout(min(1.0, self._shutdown_left()) if goodbye else 1.0):
                await client.__aexit__(None, None, None)
        if goodbye:
            log.info("uplink: disconnected (shutdown)")

    async def _watch(self, session: _Session) -> None:
        """Hands subscribed messages to the format; raises when the connection drops (the
        message iterator ends with an MqttError)."""
        try:
            async for message in session.client.messages:
                try:
                    answer = self._inbound(str(message.topic), bytes(message.payload))
                except Reconnect as request:
                    await self._reconnect(session.client, request)
                session.heard.set()
                if answer:  # e.g. a rebirth: after the messages already built (their seqs)
                    session.ready.extend(answer)
                    session.poke.set()
        except MqttError as exc:
            reason = str(exc.__cause__ or "connection closed")
            if "Unspecified error" in reason:  # paho's word for a reset or closed socket
                reason = "connection lost"
            raise UplinkError(reason) from exc
        raise UplinkError("connection closed")

    async def _timer(self, session: _Session) -> None:
        """Calls a TimedFormat back when it asked to be (Sparkplug: a rebirth held to the end of
        its pacing window); an inbound message may move that time."""
        timed = self._timed
        if timed is None:
            return
        while True:
            due = timed.due()
            session.heard.clear()
            delay = None if due is None else due - time.monotonic()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await session.heard.wait()
                continue
            answer = timed.tick(time.monotonic())
            if answer:
                session.ready.extend(answer)
                session.poke.set()

    def _ready(self) -> bool:
        session_format = self._session_format
        return session_format is None or session_format.ready()

    async def _until_ready(self, client: aiomqtt.Client) -> bool:
        """Answer subscribed messages until the format is ready (Sparkplug: its primary host's
        STATE said online and the births went out); False when shutdown came first."""
        if self._ready():
            return True
        log.info("uplink: connected; waiting for the primary host before births and data")
        messages = client.messages
        stopping = asyncio.ensure_future(self._stopping.wait())
        self._waiting = True
        try:
            while not self._ready():
                arrival = asyncio.ensure_future(anext(messages))
                await asyncio.wait({arrival, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not arrival.done():
                    arrival.cancel()
                    await asyncio.gather(arrival, return_exceptions=True)
                    return False
                message = arrival.result()  # raises MqttError when the link dropped
                try:
                    answer = self._inbound(str(message.topic), bytes(message.payload))
                except Reconnect as request:
                    await self._reconnect(client, request)
                async with asyncio.timeout(self._op_timeout):
                    for out in answer:
                        await self._send(client, out)
        finally:
            self._waiting = False
            stopping.cancel()
        return True

    async def _reconnect(self, client: aiomqtt.Client, request: Reconnect) -> None:
        """The format asked to end this connection (Sparkplug: its primary host went offline):
        publish its last words (NDEATH), then raise so the link is closed and made again."""
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(self._op_timeout):
                for message in request.messages:
                    await self._send(client, message)
        raise UplinkError(f"{request.reason}; reconnecting")

    # -- the window -----------------------------------------------------------------------

    async def _pump(self, session: _Session, tg: asyncio.TaskGroup) -> None:
        while True:
            await session.slots.acquire()
            try:
                message = await self._next_message(session)
            except BaseException:
                session.slots.release()
                raise
            task = tg.create_task(self._publish(session, message))
            session.inflight.add(task)
            task.add_done_callback(session.inflight.discard)

    async def _next_message(self, session: _Session) -> Outgoing:
        sched = session.scheduler
        while True:
            if not self._ready():  # Sparkplug: a Reconnect is under way; nothing more goes
                session.poke.clear()
                await session.poke.wait()
                continue
            if session.ready:
                return session.ready.popleft()
            if self._seals is not None and self._seals.seals.unsent:  # before samples
                session.ready.extend(
                    seal_messages(self._seals_topic, self._seals, session.seals_inflight)
                )
                if session.ready:
                    continue
            now = time.monotonic()
            sched.committed(self._buffer.last_seq, now)
            evicted = _evicted(self._buffer.stats)
            if evicted != session.evicted_seen:
                session.evicted_seen = evicted
                sched.gaps_changed(now)
            pick = sched.next(now, idle=not session.inflight)
            if isinstance(pick, Wait):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, pick.until - now)):
                        await self._wait(session, sched.wake_at_seq())
                continue
            checked_to = self._buffer.last_seq
            if pick is Pick.GAPS:
                gaps = await self._buffer.pending_gaps()
                for gap in gaps:
                    if gap.gap_id not in session.gaps_inflight:
                        session.ready.extend(self._format.gap(gap))
                session.gaps_inflight.update(g.gap_id for g in gaps)
                sched.fetched(pick, last_seq=None, count=len(gaps), checked_to=checked_to, now=now)
                continue
            fetch = sched.fetch_range(pick)
            items = await self._buffer.fetch(
                fetch.lane, after_seq=fetch.after_seq, up_to_seq=fetch.up_to_seq, limit=fetch.limit
            )
            sched.fetched(
                pick,
                last_seq=items[-1].seq if items else None,
                count=len(items),
                checked_to=checked_to,
                now=time.monotonic(),
            )
            if not items:
                continue
            if pick is Pick.ALARMS:
                for item in items:
                    session.ready.extend(self._format.alarm(item))
            else:
                session.ready.extend(self._format.samples(items, historical=pick is Pick.BACKLOG))

    async def _wait(self, session: _Session, seen: int) -> None:
        """Until a seq above ``seen`` is handed out, or ``poke``: the window fell idle (live
        samples waiting to share a message may go now) or a subscription brought messages."""
        if not session.inflight and not self._format.subscriptions():
            await self._buffer.wait_for_seq(seen)
            return
        session.poke.clear()
        waiters = {
            asyncio.ensure_future(self._buffer.wait_for_seq(seen)),
            asyncio.ensure_future(session.poke.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _publish(self, session: _Session, message: Outgoing) -> None:
        topic, body, qos = message.topic, message.payload, message.qos
        try:
            async with asyncio.timeout(self._publish_timeout):
                await session.client.publish(
                    topic, body, qos=qos, retain=message.retain, timeout=math.inf
                )
        except TimeoutError:
            raise UplinkError(f"no PUBACK within {self._publish_timeout:.0f}s") from None
        finally:
            session.slots.release()
            session.inflight.discard(asyncio.current_task())
            session.poke.set()
        stats = self._stats
        stats.messages_total += 1
        stats.published_total += message.samples + message.alarms
        stats.alarms_published_total += message.alarms
        stats.last_publish_ts = int(time.time() * 1000)
        self._meter.record(time.monotonic(), publish_size(topic, body, qos), message.samples)
        if message.seqs:
            self._acks.add(message.seqs)
        for gap_id in message.gap_ids:
            await self._buffer.ack_gap(gap_id)
            session.gaps_inflight.discard(gap_id)
            stats.gaps_published_total += 1
        for n in message.seal_ns:
            assert self._seals is not None
            await self._seals.ack_seal(n)
            session.seals_inflight.discard(n)


def _evicted(stats: BufferStats) -> int:
    return sum(stats.evicted_total.values()) + len(stats.corrupt_files)
