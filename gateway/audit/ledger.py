"""What the audit knows about each gateway, and how one MQTT message changes it. Pure: no I/O.

A gateway's record is a handful of range sets (received seqs, seqs received more than once,
declared gaps per reason, everything covered) plus its open holes with the time each was first
seen. Memory is proportional to the number of ranges, never to the number of samples.

Holes are kept as the exact complement of ``covered`` below ``max_seq``: when ``max_seq``
advances, the uncovered part of the new stretch becomes a hole stamped "now"; when a seq or a
gap covers part of a hole, that part is cut out and the rest keeps its first-seen time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.ranges import RangeSet, runs
from gateway.audit.seals import SealBook
from gateway.uplink.compression import UndecodablePayload, read_message

# samples.zst: samples messages as zstd frames (uplink.compression: zstd); results since v0.3
KINDS = ("samples", "samples.zst", "alarms", "gaps", "status", "results")
SEALS = "seals"  # read only by `audit --keys` (gateway.audit.seals)


class RejectedMessage(ValueError):
    """A message the audit cannot use; counted and reported, never fatal."""


@dataclass(frozen=True, slots=True)
class Seqs:
    """Seqs delivered in a samples or alarms message, in arrival order."""

    gateway: str
    seqs: list[int]


@dataclass(frozen=True, slots=True)
class GapDeclared:
    gateway: str
    from_seq: int
    to_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    gateway: str
    online: bool


Event = Seqs | GapDeclared | Status


def _seq(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RejectedMessage(f"{what} is not a positive integer: {value!r}")
    return value


def parse_message(prefix: str, topic: str, payload: bytes | bytearray) -> Event:
    """Turn one message of the fleet's topics into an event; raise RejectedMessage if unusable."""
    gateway, kind, doc = parse_document(prefix, topic, payload)
    return event_of(gateway, kind, doc)


def parse_document(
    prefix: str, topic: str, payload: bytes | bytearray, kinds: tuple[str, ...] = KINDS
) -> tuple[str, str, dict[str, Any]]:
    """``(gateway, kind, the payload's JSON object)`` of one message (``samples.zst`` read as
    ``samples``); raise RejectedMessage if it is not one."""
    head, sep, rest = topic.partition(prefix + "/") if prefix else ("", "/", topic)
    if head or not sep:
        raise RejectedMessage(f"topic {topic!r} is not under {prefix!r}")
    gateway, _, kind = rest.partition("/")
    if not gateway or kind not in kinds:
        raise RejectedMessage(f"topic {topic!r} is not P/G/{{{','.join(kinds)}}}")
    try:
        kind, doc = read_message(kind, bytes(payload))
    except UndecodablePayload as exc:
        raise RejectedMessage(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise RejectedMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RejectedMessage("the payload is not a JSON object")
    if kind != "status" and doc.get("gateway") != gateway:
        raise RejectedMessage(f"payload gateway {doc.get('gateway')!r} differs from the topic's")
    return gateway, kind, doc


def event_of(gateway: str, kind: str, doc: dict[str, Any]) -> Event:
    """The event one message's document means to the completeness ledger."""
    if kind == "status":
        state = doc.get("state")
        if state not in ("online", "offline"):
            raise RejectedMessage(f"status state is {state!r}, not online or offline")
        return Status(gateway, state == "online")
    if kind in ("alarms", "results"):  # a command's result is counted like an alarm
        return Seqs(gateway, [_seq(doc.get("seq"), "seq")])
    if kind == "gaps":
        lo, hi = _seq(doc.get("from_seq"), "from_seq"), _seq(doc.get("to_seq"), "to_seq")
        reason = doc.get("reason")
        if hi < lo or not isinstance(reason, str) or not reason:
            raise RejectedMessage(f"gap [{lo}, {hi}] reason {reason!r} is not a valid gap")
        return GapDeclared(gateway, lo, hi, reason)
    samples = doc.get("samples")
    if not isinstance(samples, list) or not samples:
        raise RejectedMessage("samples is not a non-empty list")
    try:  # the hot path: one comprehension, then one check over all seqs
        seqs = [item["seq"] for item in samples]
    except (TypeError, KeyError, IndexError):
        raise RejectedMessage("a sample is not a JSON object with a seq") from None
    if not all(type(s) is int for s in seqs) or min(seqs) < 1:
        bad = next(s for s in seqs if type(s) is not int or s < 1)
        raise RejectedMessage(f"sample seq is not a positive integer: {bad!r}")
    return Seqs(gateway, seqs)


@dataclass(frozen=True, slots=True)
class Hole:
    from_seq: int
    to_seq: int
    first_seen_ms: int


@dataclass
class GatewayLedger:
    """Everything the audit keeps about one gateway."""

    id: str
    received: RangeSet = field(default_factory=RangeSet)
    duplicated: RangeSet = field(default_factory=RangeSet)
    gaps: dict[str, RangeSet] = field(default_factory=dict)
    covered: RangeSet = field(default_factory=RangeSet)
    holes: list[Hole] = field(default_factory=list)
    max_seq: int = 0
    online: bool | None = None
    status_ts: int | None = None
    last_seen_ts: int | None = None

    def receive(self, seqs: list[int], now_ms: int) -> None:
        for lo, hi in runs(seqs):
            for a, b in list(self.received.slice(lo, hi)):
                self.duplicated.add(a, b)
            self.received.add(lo, hi)
            self._cover(lo, hi, now_ms)

    def declare_gap(self, lo: int, hi: int, reason: str, now_ms: int) -> None:
        self.gaps.setdefault(reason, RangeSet()).add(lo, hi)
        self._cover(lo, hi, now_ms)

    def _cover(self, lo: int, hi: int, now_ms: int) -> None:
        self.covered.add(lo, hi)
        self._fill_holes(lo, hi)
        if hi > self.max_seq:
            start = self.max_seq + 1
            self.max_seq = hi
            self.holes.extend(Hole(a, b, now_ms) for a, b in self.covered.missing(start, hi))

    def _fill_holes(self, lo: int, hi: int) -> None:
        holes = self.holes
        i = bisect_left(holes, lo, key=lambda h: h.to_seq)
        j = i
        kept: list[Hole] = []
        while j < len(holes) and holes[j].from_seq <= hi:
            h = holes[j]
            if h.from_seq < lo:
                kept.append(Hole(h.from_seq, lo - 1, h.first_seen_ms))
            if h.to_seq > hi:
                kept.append(Hole(hi + 1, h.to_seq, h.first_seen_ms))
            j += 1
        if j > i:
            holes[i:j] = kept

    @property
    def duplicates(self) -> int:
        return self.duplicated.count


@dataclass
class Fleet:
    """All gateways one audit (or a merge of several) knows, plus what it could not use."""

    prefix: str
    gateways: dict[str, GatewayLedger] = field(default_factory=dict)
    rejected: int = 0
    last_rejected: str | None = None
    dirty: set[str] = field(default_factory=set)
    meta_dirty: bool = False
    seals: SealBook | None = None  # `audit --keys`: the seals checked as they arrive

    def ledger(self, gateway: str) -> GatewayLedger:
        found = self.gateways.get(gateway)
        if found is None:
            found = self.gateways[gateway] = GatewayLedger(gateway)
        return found

    def apply(
        self, topic: str, payload: bytes | bytearray, now_ms: int, *, retained: bool = False
    ) -> bool:
        """Record one message; False (counted, remembered) when it could not be used."""
        kinds = (*KINDS, SEALS) if self.seals is not None else KINDS
        try:
            gateway, kind, doc = parse_document(self.prefix, topic, payload, kinds)
            event = None if kind == SEALS else event_of(gateway, kind, doc)
        except RejectedMessage as exc:
            self.reject(topic, exc)
            return False
        if self.seals is not None and kind != "status":
            before = self.gateways[gateway].max_seq if gateway in self.gateways else 0
            self.seals.take(gateway, kind, doc, now_ms, before)
        if event is not None:
            self.record(event, now_ms, retained=retained)
        elif not retained:  # a seal: a sighting too
            self.ledger(gateway).last_seen_ts = now_ms
            self.dirty.add(gateway)
        return True

    def reject(self, topic: str, exc: RejectedMessage) -> None:
        self.rejected += 1
        self.last_rejected = f"{topic}: {exc}"
        self.meta_dirty = True

    def record(self, event: Event, now_ms: int, *, retained: bool = False) -> None:
        """Fold one parsed event into its gateway's ledger."""
        led = self.ledger(event.gateway)
        if isinstance(event, Seqs):
            led.receive(event.seqs, now_ms)
        elif isinstance(event, GapDeclared):
            led.declare_gap(event.from_seq, event.to_seq, event.reason, now_ms)
        else:
            led.online = event.online
            led.status_ts = now_ms
        if not retained:  # a retained status replayed at subscribe time is not a sighting
            led.last_seen_ts = now_ms
        self.dirty.add(event.gateway)

    def extra_meta(self) -> dict[str, str]:
        """What a wire format's fleet keeps beside the ledgers (saved in the state's meta)."""
        return {}

    def restore_meta(self, meta: dict[str, str]) -> None:
        """Take back what :meth:`extra_meta` saved."""


def merge_ledgers(parts: list[GatewayLedger], now_ms: int) -> GatewayLedger:
    """One gateway as several shared-subscription workers saw it, each a part of its stream.

    A seq two workers both received counts as a duplicate; a hole is a seq no worker received
    nor saw declared, dated from the earliest time any worker saw it missing.
    """
    out = GatewayLedger(parts[0].id)
    for part in parts:
        out.duplicated.add_set(part.duplicated)
        out.duplicated.add_set(out.received.intersection(part.received))
        out.received.add_set(part.received)
        for reason, ranges in part.gaps.items():
            out.gaps.setdefault(reason, RangeSet()).add_set(ranges)
        out.covered.add_set(part.covered)
        out.max_seq = max(out.max_seq, part.max_seq)
        if part.status_ts is not None and (out.status_ts or -1) < part.status_ts:
            out.online, out.status_ts = part.online, part.status_ts
        if part.online is not None and out.online is None:
            out.online = part.online
        if part.last_seen_ts is not None:
            out.last_seen_ts = max(out.last_seen_ts or 0, part.last_seen_ts)
    seen = sorted((h for part in parts for h in part.holes), key=lambda h: h.from_seq)
    for lo, hi in out.covered.missing(1, out.max_seq) if out.max_seq else ():
        stamps = [h.first_seen_ms for h in seen if h.from_seq <= hi and h.to_seq >= lo]
        out.holes.append(Hole(lo, hi, min(stamps, default=now_ms)))
    return out


def merge_fleets(fleets: list[Fleet], now_ms: int) -> Fleet:
    out = Fleet(fleets[0].prefix)
    ids = sorted({gid for fleet in fleets for gid in fleet.gateways})
    for gid in ids:
        parts = [fleet.gateways[gid] for fleet in fleets if gid in fleet.gateways]
        out.gateways[gid] = merge_ledgers(parts, now_ms)
    out.rejected = sum(f.rejected for f in fleets)
    out.last_rejected = next((f.last_rejected for f in fleets if f.last_rejected), None)
    return out
