"""The audit of a Sparkplug B fleet (``audit --format sparkplug-b``). Pure: no I/O.

A gateway is a Sparkplug edge node (its id in the report is the edge node id). Its seqs come
from three metrics, found by the aliases its births declared:

* ``sgw/seq`` of each DBIRTH (and of the NBIRTH): each DDATA (NDATA) carrying it delivers
  that seq;
* ``sgw/gap`` of the NBIRTH: an NDATA value ``"<from>-<to>:<reason>"`` declares a gap;
* ``alarm/...`` and ``sgw/alarm`` of the NBIRTH: an NDATA with one delivers the alarm whose
  seq is the metric's ``seq`` property.

NBIRTH says online; NDEATH says offline unless its bdSeq is not the session's (a will the
broker delivered after the next NBIRTH). The alias tables are saved with the state, so an audit
restarted in the middle of a session still reads its DDATA. Messages of other verbs (NCMD,
DCMD, DDEATH, STATE) are not about seqs and are skipped, not rejected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from gateway.audit.ledger import Event, Fleet, GapDeclared, RejectedMessage, Seqs, Status
from gateway.uplink.sparkplug import sparkplug_b_pb2 as pb
from gateway.uplink.sparkplug.metrics import (
    ALARM_FALLBACK,
    BDSEQ,
    GAP_METRIC,
    NAMESPACE,
    RESULT_METRIC,
    SEQ_METRIC,
)

TOPIC_FILTER = f"{NAMESPACE}/#"
_GAP_VALUE = re.compile(r"^([0-9]+)-([0-9]+):(.+)$")
_SKIPPED_VERBS = {"NCMD", "DCMD", "DDEATH"}


@dataclass
class _Node:
    """What the births of one edge node's current session declared."""

    aliases: dict[int, str] = field(default_factory=dict)  # alias -> "seq" | "gap" | "alarm"
    bd_seq: int | None = None
    ours: bool | None = None  # a street-gateway (its NBIRTH has sgw/gap); None: no birth seen


def _metric_kind(name: str) -> str | None:
    if name == SEQ_METRIC:
        return "seq"
    if name == GAP_METRIC:
        return "gap"
    if name in (ALARM_FALLBACK, RESULT_METRIC) or name.startswith("alarm/"):
        return "alarm"  # a command's result (since v0.3) is counted like an alarm
    return None


def _decode(payload: bytes | bytearray) -> pb.Payload:
    message = pb.Payload()
    try:
        message.ParseFromString(bytes(payload))
    except Exception as exc:  # protobuf's DecodeError, whose module differs by backend
        raise RejectedMessage(f"not a Sparkplug B payload: {exc}") from None
    return message


def _property_seq(metric: pb.Payload.Metric) -> int:
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key == "seq" and value.WhichOneof("value") == "long_value" and value.long_value >= 1:
            return value.long_value
    raise RejectedMessage("an alarm metric without a positive seq property")


class SparkplugFleet(Fleet):
    """A :class:`Fleet` fed with Sparkplug B messages; ``prefix`` is not used."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__(prefix)
        self.nodes: dict[str, _Node] = {}

    def apply(
        self, topic: str, payload: bytes | bytearray, now_ms: int, *, retained: bool = False
    ) -> bool:
        try:
            events = self.parse(topic, payload)
        except RejectedMessage as exc:
            self.reject(topic, exc)
            return False
        for event in events:
            self.record(event, now_ms, retained=retained)
        return True

    def parse(self, topic: str, payload: bytes | bytearray) -> list[Event]:
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != NAMESPACE or parts[1] == "STATE":
            return []  # STATE (a host's), or not Sparkplug B
        verb, node_id = parts[2], parts[3]
        if verb in _SKIPPED_VERBS:
            return []
        message = _decode(payload)
        node = self.nodes.setdefault(node_id, _Node())
        if verb == "NBIRTH":
            node.aliases.clear()
            node.ours = any(m.name == GAP_METRIC for m in message.metrics)
            for m in message.metrics:
                if m.name == BDSEQ:
                    node.bd_seq = m.long_value
            self._learn(node, message)
            return [Status(node_id, online=True)] if node.ours else []
        if node.ours is False:
            return []  # another vendor's edge node in the same namespace
        if verb == "DBIRTH":
            self._learn(node, message)
            return []
        if verb == "NDEATH":
            if node.ours is None:
                return []
            bd = [m.long_value for m in message.metrics if m.name == BDSEQ]
            if node.bd_seq is not None and bd and bd[0] != node.bd_seq:
                return []  # the will of an earlier session, delivered late
            return [Status(node_id, online=False)]
        if verb not in ("NDATA", "DDATA"):
            raise RejectedMessage(f"{verb} is not a Sparkplug B message type")
        if node.ours is None:
            raise RejectedMessage("data before any birth of this edge node: aliases unknown")
        events = self._data(node_id, node, message)
        if verb == "DDATA" and not events:
            raise RejectedMessage("DDATA without a known sgw/seq: its DBIRTH was not seen")
        return events

    def _learn(self, node: _Node, message: pb.Payload) -> None:
        for m in message.metrics:
            kind = _metric_kind(m.name)
            if kind is not None and m.HasField("alias"):
                node.aliases[m.alias] = kind
        self.meta_dirty = True

    @staticmethod
    def _data(node_id: str, node: _Node, message: pb.Payload) -> list[Event]:
        events: list[Event] = []
        seqs: list[int] = []
        for m in message.metrics:
            kind = node.aliases.get(m.alias) if m.HasField("alias") else _metric_kind(m.name)
            if kind == "seq":
                if m.long_value < 1:
                    raise RejectedMessage(f"sgw/seq is not a positive integer: {m.long_value}")
                seqs.append(m.long_value)
            elif kind == "alarm":
                seqs.append(_property_seq(m))
            elif kind == "gap":
                found = _GAP_VALUE.match(m.string_value)
                lo, hi = (int(found[1]), int(found[2])) if found else (0, -1)
                if found is None or not 1 <= lo <= hi:
                    raise RejectedMessage(f"sgw/gap {m.string_value!r} is not <from>-<to>:<reason>")
                events.append(GapDeclared(node_id, lo, hi, found[3]))
        if seqs:
            events.append(Seqs(node_id, seqs))
        return events

    # -- kept with the state -------------------------------------------------------------

    def extra_meta(self) -> dict[str, str]:
        doc = {
            nid: {
                "bd_seq": n.bd_seq,
                "ours": n.ours,
                "aliases": {str(a): k for a, k in n.aliases.items()},
            }
            for nid, n in self.nodes.items()
        }
        return {"sparkplug_nodes": json.dumps(doc, sort_keys=True)}

    def restore_meta(self, meta: dict[str, str]) -> None:
        doc = json.loads(meta.get("sparkplug_nodes", "{}"))
        self.nodes = {
            nid: _Node({int(a): str(k) for a, k in n["aliases"].items()}, n["bd_seq"], n["ours"])
            for nid, n in doc.items()
        }
