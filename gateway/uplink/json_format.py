"""``uplink.format: json``: topics and payloads of wire format v2 (docs/reference.md). Pure.

``P/G/samples`` carries ``{"gateway": G, "samples": [sample, ...]}`` in seq order, a sample
being ``{"seq", "ts", "device", "values"}`` (plus ``"clock": "unsynced"``); the retained
``P/G/meta`` carries units and types once, so no sample repeats them. Values are written as the
sources made them: a Python float's repr is the shortest text that reads back the same number,
and the decoders already made it the shortest float for its float32 or scale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.model import AlarmEvent, CommandResult, Gap, Sample, StoredItem
from gateway.seals.items import result_object
from gateway.uplink.compression import SAMPLES_SUFFIX
from gateway.uplink.inbound import MAX_COMMAND_BYTES
from gateway.uplink.wire import Catalog, Outgoing

_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
# what that encoder escapes a str with (ensure_ascii=False): quotes, backslash, control chars
_string = json.encoder.encode_basestring

WILL_MESSAGE = b'{"state":"offline"}'
SHUTDOWN_MESSAGE = b'{"state":"offline","reason":"shutdown"}'


@dataclass(frozen=True, slots=True)
class Topics:
    samples: str
    alarms: str
    gaps: str
    status: str
    meta: str
    results: str = ""  # since v0.3: the one result of each command and action
    commands: str = ""  # subscribed only when the config has a commands section

    @classmethod
    def for_gateway(cls, prefix: str, gateway: str) -> Topics:
        base = f"{prefix}/{gateway}"
        return cls(
            f"{base}/samples", f"{base}/alarms", f"{base}/gaps", f"{base}/status", f"{base}/meta",
            f"{base}/results", f"{base}/commands",
        )  # fmt: skip


def sample_json(seq: int, sample: Sample) -> str:
    """``{"seq":n,"ts":...,"device":...,"values":{...}}``; raises ValueError for NaN."""
    text = (
        f'{{"seq":{seq},"ts":{sample.ts_ms},"device":{_string(sample.device)},'
        f'"values":{_compact(sample.values)}'
    )
    return text + (',"clock":"unsynced"}' if not sample.clock_synced else "}")


def samples_message(gateway: str, items: Sequence[StoredItem], *, historical: bool) -> bytes:
    """``{"gateway": G, "samples": [...]}`` in seq order; ``historical`` marks backlog."""
    samples = ",".join(
        sample_json(item.seq, item.item) for item in items if isinstance(item.item, Sample)
    )
    tail = ',"historical":true}' if historical else "}"
    return f'{{"gateway":{_string(gateway)},"samples":[{samples}]{tail}'.encode()


def alarm_message(gateway: str, seq: int, event: AlarmEvent) -> bytes:
    return _compact(
        {
            "gateway": gateway,
            "seq": seq,
            "ts": event.ts_ms,
            "alarm": event.alarm,
            "state": event.state,
            "value": event.value,
            "priority": event.priority,
        }
    ).encode()


def result_message(gateway: str, seq: int, result: CommandResult) -> bytes:
    """A command's or an action's result (SPEC "Commands, writes and actions"): the object its
    seal's leaf is made of (gateway.seals.items), so the two cannot drift apart."""
    return _compact({"gateway": gateway, **result_object(seq, result)}).encode()


def gap_message(gateway: str, gap: Gap) -> bytes:
    return _compact(
        {
            "gateway": gateway,
            "from_seq": gap.from_seq,
            "to_seq": gap.to_seq,
            "count": gap.count,
            "reason": gap.reason,
        }
    ).encode()


def birth_message(
    version: str, started_ms: int, config_digest: str, config_source: str = "local"
) -> bytes:
    return _compact(
        {
            "state": "online",
            "version": version,
            "started": started_ms,
            "config_digest": config_digest,
            "config_source": config_source,
        }
    ).encode()


def meta_message(catalog: Catalog) -> bytes:
    """Units and types of every device's points, and each device's source and interval."""
    devices: dict[str, object] = {}
    for device in catalog.devices:
        interval = device.interval_s
        devices[device.name] = {
            "source": device.source,
            "kind": device.kind,
            "interval_s": int(interval) if float(interval).is_integer() else interval,
            "points": {
                name: {"type": p.type} | ({"unit": p.unit} if p.unit is not None else {})
                for name, p in device.points.items()
            },
        }
    meta: dict[str, object] = {"config_digest": catalog.config_digest, "devices": devices}
    if catalog.identity is not None:  # the key seals are checked with (docs/transparency.md)
        meta["identity"] = dict(catalog.identity)
    return _compact(meta).encode()


class CommandSink(Protocol):
    """Where the commands topic's messages go (``gateway.commands.channel.Commands``): the
    results to publish again at once (a redelivered command's first result)."""

    def receive(self, payload: bytes) -> list[tuple[int, CommandResult]]: ...


class JsonFormat:
    """Wire format v2 in JSON, one message per batch of samples (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        topic_prefix: str,
        qos: int,
        version: str,
        started_ms: int,
        commands: CommandSink | None = None,
        compress: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._commands = commands  # subscribed to P/G/commands only with a commands section
        self._gateway = catalog.gateway_id
        self.topics = Topics.for_gateway(topic_prefix, catalog.gateway_id)
        # uplink.compression (gateway/uplink/compression.py): samples as zstd frames on their
        # own topic, so a consumer that reads only JSON never receives bytes it cannot parse
        self._compress = compress
        self._samples_topic = self.topics.samples + (SAMPLES_SUFFIX if compress else "")
        self._qos = qos
        self._version = version
        self._started_ms = started_ms
        self._catalog = catalog

    def will(self) -> Outgoing:
        return Outgoing(self.topics.status, WILL_MESSAGE, 1, retain=True)

    def session_start(self) -> list[Outgoing]:
        catalog = self._catalog
        birth = birth_message(
            self._version, self._started_ms, catalog.config_digest, catalog.config_source
        )
        return [
            Outgoing(self.topics.status, birth, 1, retain=True),
            Outgoing(self.topics.meta, meta_message(catalog), 1, retain=True),
        ]

    def samples(self, items: Sequence[StoredItem], *, historical: bool) -> list[Outgoing]:
        payload = samples_message(self._gateway, items, historical=historical)
        if self._compress is not None:
            payload = self._compress(payload)
        seqs = tuple(item.seq for item in items)
        return [Outgoing(self._samples_topic, payload, self._qos, seqs=seqs, samples=len(seqs))]

    def alarm(self, item: StoredItem) -> list[Outgoing]:
        if isinstance(item.item, CommandResult):  # results ride the alarms' lane
            payload = result_message(self._gateway, item.seq, item.item)
            return [Outgoing(self.topics.results, payload, 1, seqs=(item.seq,), alarms=1)]
        assert isinstance(item.item, AlarmEvent)
        payload = alarm_message(self._gateway, item.seq, item.item)
        return [Outgoing(self.topics.alarms, payload, 1, seqs=(item.seq,), alarms=1)]

    def gap(self, gap: Gap) -> list[Outgoing]:
        payload = gap_message(self._gateway, gap)
        return [Outgoing(self.topics.gaps, payload, 1, gap_ids=(gap.gap_id,))]

    def goodbye(self) -> list[Outgoing]:
        return [Outgoing(self.topics.status, SHUTDOWN_MESSAGE, 1, retain=True)]

    def subscriptions(self) -> list[str]:
        return [self.topics.commands] if self._commands is not None else []

    def inbound_caps(self) -> Mapping[str, int]:
        """A config command may carry a 1 MiB config text (SPEC "Remote configuration")."""
        return {self.topics.commands: MAX_COMMAND_BYTES} if self._commands is not None else {}

    def on_message(self, topic: str, payload: bytes) -> list[Outgoing]:
        if self._commands is None or topic != self.topics.commands:
            return []
        return [  # a redelivered command's first result, again (its seq was acknowledged)
            Outgoing(self.topics.results, result_message(self._gateway, seq, result), 1)
            for seq, result in self._commands.receive(payload)
        ]

    def health(self, doc: Mapping[str, Any], *, emit: bool = True) -> list[Outgoing]:
        return []  # P/G/health is the uplink's own message, the same in every format

    def catalog_changed(self, catalog: Catalog) -> list[Outgoing]:
        """The birth names the new config digest; meta goes again only when it changed."""
        changed = meta_message(catalog) != meta_message(self._catalog)
        self._catalog = catalog
        start = self.session_start()
        return start if changed else start[:1]
