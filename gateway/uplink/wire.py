"""The wire-format seam: how samples, alarms and gaps become MQTT messages. Pure: no I/O.

The buffer stores samples in a neutral form; at publish time the uplink hands them to the one
:class:`WireFormat` the config names (``uplink.format``) and publishes what it returns, in
order, on one connection. A message's ``seqs`` leave the buffer when *that* message is
acknowledged (PUBACK for QoS 1): so a format whose data must go at QoS 0 (Sparkplug B) returns
its data messages with no seqs and then one QoS 1 *checkpoint* that carries them. A broker
reads one connection's packets in order, so the checkpoint's PUBACK proves that every earlier
message reached it.

The uplink calls, per connection: :meth:`WireFormat.will` (for CONNECT), then publishes
:meth:`WireFormat.session_start` before any data, then data messages, and on a clean shutdown
:meth:`WireFormat.goodbye` before DISCONNECT.

Messages must be published in the order the format returned them, across calls (Sparkplug
numbers each message as it builds it). A format may add the :class:`SessionFormat` extension
(Sparkplug B: ``bdSeq``, primary host) and raise :class:`Reconnect` from ``on_message``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.model import Gap, StoredItem, Value


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT message, and what its acknowledgement settles."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    seqs: tuple[int, ...] = ()  # acknowledged to the buffer once this message is
    samples: int = 0  # counted into published_total when acknowledged
    alarms: int = 0
    gap_ids: tuple[int, ...] = ()  # gaps marked sent once this message is acknowledged
    seal_ns: tuple[int, ...] = ()  # seals marked sent once this message is acknowledged


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the upstream needs to know of a point once (``meta``, DBIRTH), not in every sample.

    ``type``: the Modbus type, ``string``, or ``number`` for a serial point."""

    type: str
    unit: str | None = None
    scaled: bool = False  # scale or offset set: an integer type's values are not integers
    writable: bool = False  # since v0.3: the point has write: (DBIRTH marks it)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    name: str
    source: str
    kind: str
    interval_s: float
    points: dict[str, PointInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every device of the running config, in config order, and the alarm rules' names."""

    gateway_id: str
    config_digest: str
    devices: tuple[DeviceInfo, ...]
    alarms: tuple[str, ...] = ()  # AlarmRule.name, e.g. "aq-1/pm25>50"
    config_source: str = "local"  # "remote": <state dir>/remote.yaml (docs/fleet.md)
    identity: Mapping[str, str] | None = None  # {"alg", "public_key", "fingerprint"} (seals)


class CurrentValues(Protocol):
    """The last value of each point of each device (for births that carry current values)."""

    def __call__(self) -> dict[str, dict[str, Value]]: ...


class WireFormat(Protocol):
    """One uplink format (``json``, ``sparkplug-b``). Holds its own per-session state."""

    def will(self) -> Outgoing:
        """The MQTT will for the next connection (called once per connect, before CONNECT)."""
        ...

    def session_start(self) -> list[Outgoing]:
        """Published first on every connection, before any data (birth, meta, ...)."""
        ...

    def samples(self, items: Sequence[StoredItem], *, historical: bool) -> list[Outgoing]:
        """Messages for these samples (seq order); ``historical``: stored before this session."""
        ...

    def alarm(self, item: StoredItem) -> list[Outgoing]: ...

    def gap(self, gap: Gap) -> list[Outgoing]: ...

    def goodbye(self) -> list[Outgoing]:
        """On a clean shutdown, before DISCONNECT."""
        ...

    def subscriptions(self) -> list[str]:
        """Topics to subscribe to on each connection (none for json)."""
        ...

    def on_message(self, topic: str, payload: bytes) -> list[Outgoing]:
        """A message arrived on a subscription; what to publish in answer."""
        ...

    def catalog_changed(self, catalog: Catalog) -> list[Outgoing]:
        """A reload changed the config; what to publish now, on a live connection."""
        ...

    def health(self, doc: Mapping[str, Any], *, emit: bool = True) -> list[Outgoing]:
        """The box's health (``P/G/health``'s document) in the format's own namespace too
        (Sparkplug B: node metrics ``sgw/health/...`` in NDATA; json: nothing more). ``emit``:
        a session is up to publish it in, in order; else only keep the values."""
        ...


# ---------------------------------------------------------------------------------------------
# Extensions a format may have (Sparkplug B's; the json format has none).


@runtime_checkable
class SessionFormat(Protocol):
    """A format whose connections are numbered and which may hold data back.

    Per connect the uplink takes the next number from durable storage (for Sparkplug,
    ``uplink.sparkplug.bdseq.BdSeqFile.advance`` through ``asyncio.to_thread``: persisted
    before it is used, so a kill -9 never reuses one) and calls :meth:`begin` before
    :meth:`WireFormat.will`. It subscribes to :meth:`WireFormat.subscriptions` before it
    publishes :meth:`WireFormat.session_start`, and publishes no data (samples, alarms, gaps)
    while :meth:`ready` is False; births may then come from :meth:`WireFormat.on_message`
    (the primary host's STATE said online), and the data follow them.
    """

    def begin(self, number: int, /) -> None: ...

    def ready(self) -> bool: ...

    def waiting_for(self) -> str | None:
        """What holds births and data back, for ``/status`` and ``/health`` (Sparkplug: ``primary
        host <id>`` until its STATE says online); None when nothing does."""
        ...


class Reconnect(Exception):  # a request to the uplink, not an error
    """Raised by :meth:`WireFormat.on_message`: publish ``messages`` (waiting for the QoS 1
    ones' acknowledgement, bounded in time), disconnect, and connect again after the usual
    backoff. Nothing is lost: unacknowledged items stay in the buffer."""

    def __init__(self, reason: str, messages: list[Outgoing]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.messages = messages


class Refused(Exception):  # an inbound message not acted on, not an error of ours
    """Raised by :meth:`WireFormat.on_message` for a message it will not act on: ``reason`` is
    one word counted in ``/status`` and ``/metrics`` (``malformed``, ``from_the_future``),
    ``detail`` what the log line says."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@runtime_checkable
class LargeInbound(Protocol):
    """A format that takes messages over the inbound guard's 64 KiB on some topics (json with a
    ``commands`` section: a config command carries a whole config text)."""

    def inbound_caps(self) -> Mapping[str, int]:
        """Topic -> the most bytes a message on it may have."""
        ...


@runtime_checkable
class TimedFormat(Protocol):
    """A format that wants to be called back at a time of its choosing (Sparkplug: a rebirth
    held back to the end of its pacing window). Times are ``time.monotonic()`` seconds."""

    def due(self) -> float | None:
        """When :meth:`tick` should be called next; None: not until the next inbound message."""
        ...

    def tick(self, now: float) -> list[Outgoing]:
        """What to publish now (after the messages already built)."""
        ...
