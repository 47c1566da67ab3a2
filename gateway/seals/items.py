"""Items and their leaves: the canonical bytes of each kind of item, as SPEC defines them. Pure.

An item's canonical bytes are the RFC 8785 (JCS) serialization of its object as ``format: json``
publishes it, without the keys that say nothing about the item itself (:data:`LEFT_OUT`): a
sample as in ``samples[]``; an alarm or a gap as its payload, without ``gateway`` (and a gap
without ``count``, which its seqs already say). A range lost to a crash before its leaves were
stored is one leaf ``{"from_seq", "to_seq", "unsealed": "crash"}``. A new kind of item is one
entry in :data:`LEFT_OUT` (and a builder here when the gateway makes it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import rfc8785

from gateway.model import AlarmEvent, CommandResult, Gap, Item, Sample, StoredItem
from gateway.seals.merkle import leaf_hash

MAX_EXACT = 2**53 - 1

# kind -> the payload keys that are not part of the item (the same for the gateway and verify)
LEFT_OUT: dict[str, tuple[str, ...]] = {
    "sample": (),
    "alarm": ("gateway",),
    "result": ("gateway",),
    "gap": ("gateway", "count"),
    "crash": (),
}


def item_object(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The item object of a received ``kind`` payload (a sample: one entry of ``samples[]``)."""
    left_out = LEFT_OUT[kind]
    return {key: value for key, value in payload.items() if key not in left_out}


_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _plain(value: Any) -> Any:
    """``value`` with its floats as RFC 8785 writes them, or raise _Slow where Python's JSON
    would not write the same text (the fast path's limits: see :func:`canonical`)."""
    if type(value) is float:
        if value.is_integer() and abs(value) < 1e16:
            return int(value)  # RFC 8785: 3.0 is 3, -0.0 is 0
        if 1e-4 <= abs(value) < 1e16:  # where repr's shortest digits need no exponent
            return value
        raise _Slow
    if type(value) is int and abs(value) > MAX_EXACT:
        raise _Slow
    if type(value) is dict:
        if not all(type(k) is str and k.isascii() for k in value):
            raise _Slow  # RFC 8785 sorts keys by UTF-16 code units
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


class _Slow(Exception):
    """The object is outside the fast path: ``rfc8785`` canonicalizes it."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes.

    The fast path (a sample costs 31 µs through ``rfc8785``, 9 through this, on the benchmark
    machine; every sample is hashed) is Python's sorted compact JSON, which writes the same bytes
    as RFC 8785 for objects with ASCII keys, integers within ±(2^53 - 1), and floats that are
    integral or between 1e-4 and 1e16 (where ``repr`` and ECMAScript write the same digits
    without an exponent); strings are escaped alike (``"``, ``\\``, the control characters,
    lower-case hex). Anything else goes through ``rfc8785``; a property test checks that both
    paths agree (tests/test_seals_pure.py)."""
    try:
        return _json(_plain(dict(obj))).encode("utf-8")
    except (_Slow, UnicodeEncodeError):
        pass
    return _canonical_slow(obj)


def _canonical_slow(obj: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes by ``rfc8785``. An integer beyond ±(2^53 - 1) (an SNMP Counter64), which
    RFC 8785's numbers (IEEE 754 doubles) cannot hold exactly, is written as its exact decimal
    digits, as the published JSON has it (docs/transparency.md)."""
    try:
        return rfc8785.dumps(dict(obj))
    except rfc8785.IntegerDomainError:
        pass
    marker = f"\ue000{secrets.token_hex(8)}:"
    big: list[int] = []

    def mark(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: mark(v) for key, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT:
            big.append(value)
            return f"{marker}{value}"
        return value

    text = rfc8785.dumps(mark(dict(obj)))
    for value in big:
        text = text.replace(f'"{marker}{value}"'.encode(), str(value).encode(), 1)
    return text


def leaf_of(kind: str, payload: Mapping[str, Any]) -> bytes:
    return leaf_hash(canonical(item_object(kind, payload)))


def sample_object(seq: int, sample: Sample) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "seq": seq,
        "ts": sample.ts_ms,
        "device": sample.device,
        "values": sample.values,
    }
    if not sample.clock_synced:
        obj["clock"] = "unsynced"
    return obj


def alarm_object(seq: int, event: AlarmEvent) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": event.ts_ms,
        "alarm": event.alarm,
        "state": event.state,
        "value": event.value,
        "priority": event.priority,
    }


def result_object(seq: int, result: CommandResult) -> dict[str, Any]:
    """A command's or an action's result as ``P/G/results`` carries it (without ``gateway``);
    a config command's has ``problems`` (its check lines) instead of device, point and value."""
    what: dict[str, Any] = (
        {"problems": list(result.problems)}
        if result.problems is not None
        else {"device": result.device, "point": result.point, "value": result.value}
    )
    return {
        "seq": seq,
        "ts": result.ts_ms,
        "id": result.id,
        "by": result.by,
        "op": result.op,
        **what,
        "state": result.state,
        "reason": result.reason,
        "read_back": result.read_back,
        "detail": result.detail,
    }


def gap_object(gap: Gap) -> dict[str, Any]:
    return {"from_seq": gap.from_seq, "to_seq": gap.to_seq, "reason": gap.reason}


def crash_object(from_seq: int, to_seq: int) -> dict[str, Any]:
    return {"from_seq": from_seq, "to_seq": to_seq, "unsealed": "crash"}


# the buffer's item types -> their JSON object (a new kind of item: one entry here, one in
# LEFT_OUT, one in gateway.seals.verify.SINGLE_ITEM_TOPICS)
OBJECTS: dict[type, Callable[[int, Any], dict[str, Any]]] = {
    Sample: sample_object,
    AlarmEvent: alarm_object,
    CommandResult: result_object,
}


def stored_leaf(seq: int, item: Item) -> bytes:
    """The leaf of an item the buffer holds."""
    return leaf_hash(canonical(OBJECTS[type(item)](seq, item)))


def gap_leaf(gap: Gap) -> bytes:
    return leaf_hash(canonical(gap_object(gap)))


def crash_leaf(from_seq: int, to_seq: int) -> bytes:
    return leaf_hash(canonical(crash_object(from_seq, to_seq)))


def leaf_of_stored(item: StoredItem) -> bytes:
    return stored_leaf(item.seq, item.item)
