"""Sparkplug B 3.0 edge node: samples, alarms and gaps as Sparkplug messages. Pure: no I/O.

One :class:`SparkplugFormat` per uplink, one Sparkplug *session* per MQTT connection:

* :meth:`begin` takes the connection's ``bdSeq`` (persisted by :mod:`.bdseq` before CONNECT);
  :meth:`will` is the NDEATH carrying it.
* births (NBIRTH with seq 0, then one DBIRTH per device) come from :meth:`session_start`, or,
  with a primary host, from :meth:`on_message` once the host's STATE says online;
* every DDATA, NDATA and DBIRTH takes the next message ``seq`` (0..255, wrapping) at the moment
  the format builds it, so the uplink must publish messages in the order they were returned;
* data go at QoS 0 (the standard); each call's data are followed by one QoS 1 *checkpoint*
  outside the Sparkplug namespace that carries their seqs (see :mod:`gateway.uplink.wire`).

Aliases are numbered in catalog order (node metrics, then each device's ``sgw/seq`` and
points), so they are unique across the node and the same for the same catalog.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway.codec.numbers import shortest_float32
from gateway.model import AlarmEvent, CommandResult, Gap, Sample, StoredItem, Value, now_ms
from gateway.uplink.json_format import result_message
from gateway.uplink.sparkplug import dcmd
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.device_life import DeviceLife, States
from gateway.uplink.sparkplug.metrics import (
    ALARM_FALLBACK,
    BDSEQ,
    BOOL,
    GAP_METRIC,
    HEALTH_METRICS,
    IDENTITY_METRICS,
    LONG,
    NAMESPACE,
    REBIRTH,
    RESULT_METRIC,
    SEQ_METRIC,
    STATE_AHEAD_MS,
    STRING,
    ULONG,
    Aliases,
    DeviceMetrics,
    PointMetric,
    birth_metric,
    health_values,
)
from gateway.uplink.sparkplug.rebirth import RebirthPacer
from gateway.uplink.sparkplug.values import (
    JSON_PROPERTY,
    add_property,
    carry,
    json_text,
    set_value,
)
from gateway.uplink.wire import Catalog, CurrentValues, Outgoing, Reconnect, Refused

log = logging.getLogger(__name__)


class WriteSink(Protocol):
    """Where DCMD writes go (``gateway.commands.channel.Commands``)."""

    def write_request(self, device: str, point: str, value: Value, by: str) -> None: ...


class SparkplugFormat:
    """The ``sparkplug-b`` :class:`gateway.uplink.wire.WireFormat`, with the extensions that
    format defines there: :meth:`begin`, :meth:`ready` and :class:`Reconnect`."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        group_id: str,
        edge_node_id: str,
        topic_prefix: str,
        current_values: CurrentValues,
        primary_host_id: str | None = None,
        checkpoint_qos: int = 1,
        clock_ms: Callable[[], int] = now_ms,
        clock_synced: Callable[[], bool] = lambda: False,
        monotonic: Callable[[], float] = time.monotonic,
        rebirths: RebirthPacer | None = None,
        commands: WriteSink | None = None,
        device_states: States | None = None,
    ) -> None:
        self._life = DeviceLife(device_states)  # DDEATH on down, DBIRTH when back (v0.3)
        self._commands = commands  # DCMD writes, with uplink.sparkplug.commands (since v0.3)
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.primary_host_id = primary_host_id
        self._current = current_values
        self._clock = clock_ms
        self._clock_synced = clock_synced
        self._monotonic = monotonic
        self._rebirths = rebirths or RebirthPacer()
        self._checkpoint_qos = checkpoint_qos
        node = f"{NAMESPACE}/{group_id}"
        self.topic_nbirth = f"{node}/NBIRTH/{edge_node_id}"
        self.topic_ndeath = f"{node}/NDEATH/{edge_node_id}"
        self.topic_ndata = f"{node}/NDATA/{edge_node_id}"
        self.topic_ncmd = f"{node}/NCMD/{edge_node_id}"
        self.topic_dcmd = f"{node}/DCMD/{edge_node_id}/"  # + the device
        self.topic_state = f"{NAMESPACE}/STATE/{primary_host_id}" if primary_host_id else None
        self._topic_prefix = topic_prefix
        self._aliases = Aliases(catalog)
        self._identity = catalog.identity  # NBIRTH's sgw/identity/... (seals, since v0.3)
        self.topic_checkpoint = f"{topic_prefix}/{catalog.gateway_id}/checkpoint"
        self.bd_seq = 0
        self._seq = 0  # the next message's seq
        self._born = False
        self._host_online = False
        self._host_ts: int | None = None  # the last STATE timestamp accepted in this session
        self._last_seq: dict[str, int] = {}  # device -> last sgw/seq sent, for its DBIRTH
        self._alarm_state: dict[str, str] = {}  # rule name -> raised/cleared, for NBIRTH
        self._warned: set[str] = set()
        self._health: dict[str, Value | None] = {}  # the last health's values, for NBIRTH

    # -- the session ---------------------------------------------------------------------

    def begin(self, bd_seq: int, /) -> None:
        """A new connection with this bdSeq (0..255); call before :meth:`will`."""
        if not 0 <= bd_seq <= 255:
            raise ValueError(f"bdSeq {bd_seq} is not in 0..255")
        self.bd_seq = bd_seq
        self._born = False
        # the retained STATE comes again on the new connection, and counts whatever its time
        self._host_online = False
        self._host_ts = None
        self._rebirths.forget_pending()  # this session's births answer it

    def ready(self) -> bool:
        """May data flow now? Only after this session's births went out."""
        return self._born

    def waiting_for(self) -> str | None:
        if self.primary_host_id is None or self._born:
            return None
        return f"primary host {self.primary_host_id}"

    def due(self) -> float | None:
        """The end of the rebirth window, while a burst of requests is open; and, while born,
        the next look at the devices' states."""
        life = self._life.due(self._monotonic()) if self._born else None
        return min((d for d in (self._rebirths.due(), life) if d is not None), default=None)

    def tick(self, now: float) -> list[Outgoing]:
        """The rebirth held back to the end of its window, if one was asked for meanwhile; a
        DDEATH for each device gone down, a DBIRTH for each one back."""
        out: list[Outgoing] = []
        if self._born:
            died, back = self._life.changes(now, set(self._aliases.devices))
            out += [self._ddeath(name) for name in died]
            out += [self._dbirth(self._aliases.devices[name], self._clock()) for name in back]
        return out + self._rebirth_tick(now)

    def _rebirth_tick(self, now: float) -> list[Outgoing]:
        rebirth, burst = self._rebirths.tick(now)
        if burst is not None and burst.requests > 1:
            log.info(
                "rebirth: %d requests in %.0f s answered with %d rebirths",
                burst.requests, burst.seconds, burst.rebirths,
            )  # fmt: skip
        return self._births() if rebirth and self._born else []

    def will(self) -> Outgoing:
        return Outgoing(self.topic_ndeath, self._death(), qos=1)

    def session_start(self) -> list[Outgoing]:
        if self.primary_host_id is not None and not self._host_online:
            return []  # births wait for the primary host (on_message)
        return self._births()

    def goodbye(self) -> list[Outgoing]:
        self._born = False
        return [Outgoing(self.topic_ndeath, self._death(), qos=1)]

    def subscriptions(self) -> list[str]:
        topics = [self.topic_ncmd]
        if self._commands is not None:
            topics.append(self.topic_dcmd + "+")
        if self.topic_state is not None:
            topics.append(self.topic_state)
        return topics

    def on_message(self, topic: str, payload: bytes) -> list[Outgoing]:
        if topic == self.topic_ncmd:
            return self._command(payload)
        if topic == self.topic_state:
            return self._state(payload)
        if self._commands is not None and topic.startswith(self.topic_dcmd):
            self._device_command(topic[len(self.topic_dcmd) :], payload)
        return []

    def _device_command(self, device: str, data: bytes) -> None:
        """Each metric of a DCMD becomes a write, through the same checks as a command; its
        result comes as ``sgw/result``, the new value in the read-back's DDATA."""
        assert self._commands is not None
        dev = self._aliases.devices.get(device)
        if dev is None:
            raise Refused("unknown_device", f"DCMD for {device!r}, not a device of this node")
        names = {p.alias: name for name, p in dev.points.items()}
        for name, value in dcmd.writes(data, names, frozenset(dev.points)):
            self._commands.write_request(device, name, value, "sparkplug")

    def catalog_changed(self, catalog: Catalog) -> list[Outgoing]:
        self._aliases = Aliases(catalog)
        self._identity = catalog.identity
        self.topic_checkpoint = f"{self._topic_prefix}/{catalog.gateway_id}/checkpoint"
        return self._births() if self._born else []

    # -- data ----------------------------------------------------------------------------

    def samples(self, items: Sequence[StoredItem], *, historical: bool) -> list[Outgoing]:
        out: list[Outgoing] = []
        devices = self._aliases.devices
        for seq, _lane, _ts, item in items:
            if not isinstance(item, Sample):
                continue
            dev = devices.get(item.device)
            payload = pb.Payload()
            ts = item.ts_ms
            synced = item.clock_synced
            if dev is None:  # stored before a reload removed its device: keep the seq, and the
                # sample as the seal has it (properties device and values, docs/transparency.md)
                self._warn(item.device, "is not in the config: its sample goes as sgw/seq")
                self._seq_metric(
                    payload, self._aliases.node_seq, seq, ts, historical, synced=synced
                )
                add_property(payload.metrics[0], "device", pb.String, "string_value", item.device)
                self._orphans(payload, item.values)
                out.append(self._data(self.topic_ndata, payload))
                continue
            self._seq_metric(payload, dev.seq_alias, seq, ts, historical, synced=synced)
            points = dev.points
            add = payload.metrics.add
            orphans: dict[str, Value] = {}
            for name, value in item.values.items():
                point = points.get(name)
                if point is None:  # stored before a reload removed its point
                    self._warn(f"{item.device}/{name}", "is not in the config: its value goes "
                               "in the sgw/seq property values")  # fmt: skip
                    orphans[name] = value
                    continue
                m = add()
                m.alias = point.alias
                m.timestamp = ts
                if historical:
                    m.is_historical = True
                # The common cases first (a backlog drain encodes millions): a float in a
                # Double; a float in a Float that reads back as itself (as decoders make
                # them); an int in an integer datatype that holds it.
                if type(value) is float and point.datatype == pb.Double:
                    m.double_value = value
                elif type(value) is float and point.datatype == pb.Float:
                    m.float_value = value
                    if shortest_float32(m.float_value) != value:
                        m.ClearField("float_value")
                        self._not_exact(m, point, value, f"{item.device}/{name}")
                elif type(value) is int and point.low <= value <= point.high:
                    setattr(m, point.field, value & point.mask)
                else:
                    self._not_exact(m, point, value, f"{item.device}/{name}")
            if orphans:
                self._orphans(payload, orphans)
            self._last_seq[item.device] = seq
            out.append(self._data(f"{NAMESPACE}/{self.group_id}/DDATA/{self.edge_node_id}/"
                                  f"{item.device}", payload))  # fmt: skip
        seqs = tuple(i.seq for i in items)
        if seqs:
            out.append(self._checkpoint(max(seqs), seqs=seqs, samples=len(seqs)))
        return out

    def alarm(self, item: StoredItem) -> list[Outgoing]:
        event = item.item
        if isinstance(event, CommandResult):
            return self._result(item.seq, event)
        if not isinstance(event, AlarmEvent):
            return []
        payload = pb.Payload()
        m = payload.metrics.add()
        found = self._aliases.alarms.get(event.alarm)
        if found is None:
            m.alias = self._aliases.alarm_fallback
            m.string_value = f"{event.alarm} {event.state}"
        else:
            m.alias = found[1]
            m.string_value = event.state
            self._alarm_state[event.alarm] = event.state
        m.timestamp = event.ts_ms
        for key, kind, field, value in (
            ("seq", pb.UInt64, "long_value", item.seq),
            ("value", pb.Double, "double_value", event.value),
            ("priority", pb.String, "string_value", event.priority),
            ("alarm", pb.String, "string_value", event.alarm),  # its name, exactly (seals)
        ):
            add_property(m, key, kind, field, value)
        return [
            self._data(self.topic_ndata, payload),
            self._checkpoint(item.seq, seqs=(item.seq,), alarms=1),
        ]

    def _result(self, seq: int, result: CommandResult) -> list[Outgoing]:
        """The node metric ``sgw/result``: the result's JSON, with its seq as a property."""
        payload = pb.Payload()
        m = payload.metrics.add()
        m.alias = self._aliases.result
        m.timestamp = result.ts_ms
        m.string_value = result_message(self.edge_node_id, seq, result).decode()
        m.properties.keys.append("seq")
        pv = m.properties.values.add()
        pv.type = pb.UInt64
        pv.long_value = seq
        return [
            self._data(self.topic_ndata, payload),
            self._checkpoint(seq, seqs=(seq,), alarms=1),
        ]

    def gap(self, gap: Gap) -> list[Outgoing]:
        payload = pb.Payload()
        m = payload.metrics.add()
        m.alias = self._aliases.gap
        m.timestamp = self._clock()
        m.string_value = f"{gap.from_seq}-{gap.to_seq}:{gap.reason}"
        return [
            self._data(self.topic_ndata, payload),
            self._checkpoint(gap.to_seq, gap_ids=(gap.gap_id,)),
        ]

    def health(self, doc: Mapping[str, Any], *, emit: bool = True) -> list[Outgoing]:
        """An NDATA with the ``sgw/health/...`` node metrics (by alias), once born and when
        ``emit`` (the uplink has a session to publish it in, in order); the values are kept
        for the next NBIRTH either way."""
        self._health = health_values(doc)
        if not (emit and self._born):
            return []
        payload = pb.Payload()
        now = self._clock()
        for name, alias in self._aliases.health.items():
            m = payload.metrics.add()
            m.alias = alias
            m.timestamp = now
            set_value(m, HEALTH_METRICS[name], self._health.get(name))
        return [self._data(self.topic_ndata, payload)]

    # -- building blocks -----------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        return seq

    def _data(self, topic: str, payload: pb.Payload) -> Outgoing:
        payload.timestamp = self._clock()
        payload.seq = self._next_seq()
        return Outgoing(topic, payload.SerializeToString(), qos=0)

    def _checkpoint(
        self,
        high: int,
        *,
        seqs: tuple[int, ...] = (),
        samples: int = 0,
        alarms: int = 0,
        gap_ids: tuple[int, ...] = (),
    ) -> Outgoing:
        return Outgoing(
            self.topic_checkpoint,
            str(high).encode(),
            qos=self._checkpoint_qos,
            seqs=seqs,
            samples=samples,
            alarms=alarms,
            gap_ids=gap_ids,
        )

    @staticmethod
    def _orphans(payload: pb.Payload, values: Mapping[str, Value]) -> None:
        """Values without a metric (their point or device left the config), as JSON in the
        ``sgw/seq`` metric's property ``values``, so a host still rebuilds the sample (seals)."""
        add_property(payload.metrics[0], "values", pb.String, "string_value", json_text(values))

    @staticmethod
    def _seq_metric(
        payload: pb.Payload, alias: int, seq: int, ts: int, historical: bool, *, synced: bool
    ) -> None:
        m = payload.metrics.add()
        m.alias = alias
        m.timestamp = ts
        m.long_value = seq
        if historical:
            m.is_historical = True
        if not synced:  # the sample's "clock": "unsynced", so a host rebuilds it exactly (seals)
            add_property(m, "clock", pb.String, "string_value", "unsynced")

    def _death(self) -> bytes:
        payload = pb.Payload()
        payload.timestamp = self._clock()
        m = payload.metrics.add()
        m.name = BDSEQ
        m.timestamp = payload.timestamp
        m.datatype = pb.Int64
        m.long_value = self.bd_seq
        return payload.SerializeToString()

    def _births(self) -> list[Outgoing]:
        """NBIRTH (seq 0, this session's bdSeq) and every DBIRTH; data may flow after them."""
        now = self._clock()
        aliases = self._aliases
        self._seq = 0
        node = pb.Payload()

        def metric(
            p: pb.Payload, n: str, a: int | None, k: tuple[int, str], v: Value | None
        ) -> None:
            birth_metric(p, n, a, k, v, now)

        metric(node, BDSEQ, aliases.bdseq, LONG, self.bd_seq)
        metric(node, REBIRTH, None, BOOL, False)  # no alias: the standard says so
        metric(node, GAP_METRIC, aliases.gap, STRING, None)
        metric(node, SEQ_METRIC, aliases.node_seq, ULONG, None)
        metric(node, ALARM_FALLBACK, aliases.alarm_fallback, STRING, None)
        metric(node, RESULT_METRIC, aliases.result, STRING, None)
        for rule, (name, alias) in aliases.alarms.items():
            metric(node, name, alias, STRING, self._alarm_state.get(rule))
        for name, alias in aliases.health.items():
            metric(node, name, alias, HEALTH_METRICS[name], self._health.get(name))
        for name, alias in aliases.identity.items():  # the key seals are checked with
            assert self._identity is not None  # Aliases gave them aliases
            metric(node, name, alias, STRING, self._identity.get(IDENTITY_METRICS[name]))
        out = [self._birth(self.topic_nbirth, node, now)]
        out += [self._dbirth(dev, now) for dev in aliases.devices.values()]
        self._born = True
        self._life.reborn()
        return out

    def _dbirth(self, dev: DeviceMetrics, now: int) -> Outgoing:
        payload = pb.Payload()
        birth_metric(payload, SEQ_METRIC, dev.seq_alias, ULONG, self._last_seq.get(dev.name), now)
        values = self._current().get(dev.name, {})
        for name, point in dev.points.items():
            birth_metric(payload, name, point.alias, point.kind, values.get(name), now, carry)
            if point.writable:  # since v0.3: a host may write it with DCMD
                props = payload.metrics[-1].properties
                props.keys.append("writable")
                props.values.add(type=pb.Boolean, boolean_value=True)
        topic = f"{NAMESPACE}/{self.group_id}/DBIRTH/{self.edge_node_id}/{dev.name}"
        return self._birth(topic, payload, now)

    def _ddeath(self, device: str) -> Outgoing:
        """The device is down (since v0.3): DDEATH, with the node's next seq, no metrics."""
        payload = pb.Payload()
        payload.timestamp = self._clock()
        payload.seq = self._next_seq()
        topic = f"{NAMESPACE}/{self.group_id}/DDEATH/{self.edge_node_id}/{device}"
        return Outgoing(topic, payload.SerializeToString(), qos=0)

    def _birth(self, topic: str, payload: pb.Payload, now: int) -> Outgoing:
        payload.timestamp = now
        payload.seq = self._next_seq()
        return Outgoing(topic, payload.SerializeToString(), qos=0)

    def _command(self, data: bytes) -> list[Outgoing]:
        payload = pb.Payload()
        try:
            payload.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError
            raise Refused("malformed", f"not a Sparkplug B payload ({len(data)} bytes)") from exc
        for m in payload.metrics:
            if m.name == REBIRTH and m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                if not self._born:
                    return []  # births follow anyway once the session may start
                if not self._rebirths.request(self._monotonic()):
                    return []  # coalesced: done at the end of the window (tick)
                log.info("rebirth requested: NBIRTH (bdSeq %d) and every DBIRTH again", self.bd_seq)
                return self._births()
        return []

    def _state(self, data: bytes) -> list[Outgoing]:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        online = doc.get("online") if isinstance(doc, dict) else None
        ts = doc.get("timestamp") if isinstance(doc, dict) else None
        if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
            raise Refused("malformed", "not a Sparkplug 3.0 STATE payload")
        now = self._clock()
        if ts > now + STATE_AHEAD_MS and self._clock_synced():
            raise Refused(
                "from_the_future", f"STATE stamped {(ts - now) / 1000:.0f} s ahead of our clock"
            )
        if self._host_ts is not None and ts < self._host_ts:
            return []  # about an older session of the host
        self._host_ts = ts
        if online:
            self._host_online = True
            if self._born:
                return []
            log.info("primary host %s is online: births", self.primary_host_id)
            return self._births()
        self._host_online = False
        if not self._born:
            return []
        self._born = False
        log.warning("primary host %s went offline: NDEATH and reconnect", self.primary_host_id)
        raise Reconnect(
            f"primary host {self.primary_host_id} is offline",
            [Outgoing(self.topic_ndeath, self._death(), qos=1)],
        )

    def _not_exact(self, m: pb.Payload.Metric, point: PointMetric, value: Value, key: str) -> None:
        """The general case: :func:`.values.carry`, and a line in the log the first time."""
        how = carry(m, point.kind, value)
        if how is not None:
            self._warn(
                key,
                f"value {value!r} does not fit its datatype: sent {how}, its JSON text in the "
                f"property {JSON_PROPERTY!r}",
            )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("sparkplug: %s %s", key, message)
