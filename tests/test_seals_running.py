"""The running check the demo's upstream uses: seals checked as their items arrive, an altered
item named, memory let go once a seal is checked."""

from __future__ import annotations

import json

from gateway.keys import SigningKey
from gateway.model import Lane, Sample, StoredItem
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, SealInput, chain_hash, make_seal
from gateway.seals.verify import Running
from gateway.uplink.json_format import samples_message

KEY = SigningKey(bytes(range(32)))


def _stream() -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    prev = FIRST_PREV
    for n, first in enumerate((1, 11), start=1):
        stored = [
            StoredItem(s, Lane.SAMPLE, s, Sample("d", s, {"p": s + 0.5}))
            for s in range(first, first + 10)
        ]
        out.append(("samples", json.loads(samples_message("gw", stored, historical=False))))
        leaves = [items.leaf_of_stored(i) for i in stored]
        seal = make_seal("gw", KEY, SealInput(n, first, first + 9, leaves, [], prev, 1))
        prev = chain_hash(seal)
        out.append(("seals", seal))
    return out


def test_each_seal_is_checked_once_its_items_arrived_and_its_leaves_let_go() -> None:
    running = Running()
    stream = _stream()
    running.take(*stream[1])  # the seal before its items: it waits
    running.settle(KEY.public)
    assert running.sealed == 0 and len(running.waiting) == 1
    running.take(*stream[0])
    running.settle(KEY.public)
    assert (running.verified, running.sealed, running.mismatched) == (10, 10, 0)
    assert not running.received.leaves and not running.waiting
    for kind, payload in stream[2:]:
        running.take(kind, payload)
    running.settle(KEY.public)
    assert (running.verified, running.sealed, running.mismatched) == (20, 20, 0)


def test_an_altered_value_and_a_foreign_key_are_mismatches() -> None:
    stream = _stream()
    stream[0][1]["samples"][3]["values"]["p"] = 99.0  # type: ignore[index]
    running = Running()
    for kind, payload in stream:
        running.take(kind, payload)
    running.settle(KEY.public)
    assert (running.verified, running.sealed, running.mismatched) == (10, 20, 1)
    other = Running()
    for kind, payload in _stream():
        other.take(kind, payload)
    other.settle(SigningKey(bytes(32)).public)
    assert (other.verified, other.mismatched) == (0, 2)
