"""The audit's pure core: range sets, the per-gateway ledger, message parsing, merging workers."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.ledger import (
    Fleet,
    GapDeclared,
    GatewayLedger,
    Hole,
    Seqs,
    merge_fleets,
    parse_message,
)
from gateway.audit.ranges import RangeSet
from gateway.audit.report import exit_code, fleet_doc
from gateway.model import AlarmEvent, CommandResult, Gap, Lane, Sample, StoredItem
from gateway.uplink.json_format import (
    alarm_message,
    gap_message,
    result_message,
    samples_message,
)

P = "city/sensors"


def members(rs: RangeSet) -> set[int]:
    return {v for lo, hi in rs for v in range(lo, hi + 1)}


def assert_canonical(rs: RangeSet) -> None:
    pairs = list(rs)
    assert all(lo <= hi for lo, hi in pairs)
    assert all(a_hi + 1 < b_lo for (_, a_hi), (b_lo, _) in itertools.pairwise(pairs))
    assert rs.count == len(members(rs))


def samples(gateway: str, seqs: list[int], *, historical: bool = False) -> bytes:
    """A samples message as the uplink writes it, one sample of a poll per seq."""
    items = [StoredItem(s, Lane.SAMPLE, 0, Sample("d", 0, {"p": 1, "q": "ok"})) for s in seqs]
    return samples_message(gateway, items, historical=historical)


@given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 20)), max_size=40))
def test_rangeset_equals_the_set_it_stands_for(adds: list[tuple[int, int]]) -> None:
    rs, model = RangeSet(), set()
    for lo, width in adds:
        hi = lo + width
        present = rs.add(lo, hi)
        span = set(range(lo, hi + 1))
        assert present == len(span & model)
        model |= span
        assert_canonical(rs)
    assert members(rs) == model
    assert all((v in rs) == (v in model) for v in range(330))
    assert members(RangeSet(rs.missing(1, 330))) == set(range(1, 331)) - model
    assert RangeSet.from_flat(rs.to_flat()) == rs


@settings(max_examples=200)
@given(
    st.integers(1, 400),
    st.lists(st.integers(1, 400), max_size=60),
    st.sets(st.integers(1, 400), max_size=30),
    st.integers(1, 50),
    st.randoms(use_true_random=False),
)
def test_ledger_for_random_interleavings_and_duplications(
    n: int, repeats: list[int], dropped: set[int], batch: int, rnd: random.Random
) -> None:
    """Seqs 1..n minus dropped, some repeated, shuffled and cut into messages of any size."""
    sent = [s for s in range(1, n + 1) if s not in dropped] + [r for r in repeats if r <= n]
    rnd.shuffle(sent)
    fleet = Fleet(P)
    for i in range(0, len(sent), batch):
        assert fleet.apply(f"{P}/g/samples", samples("g", sent[i : i + batch]), now_ms=i)
    if not sent:
        return
    led = fleet.gateways["g"]
    distinct = set(sent)
    assert members(led.received) == distinct
    assert led.received.count == len(distinct)
    assert members(led.duplicated) == {s for s in distinct if sent.count(s) > 1}
    assert led.max_seq == max(distinct)
    holes = {s for h in led.holes for s in range(h.from_seq, h.to_seq + 1)}
    assert holes == set(range(1, led.max_seq + 1)) - distinct
    for a, b in itertools.pairwise(led.holes):
        assert a.to_seq + 1 < b.from_seq
    assert_canonical(led.received)
    assert_canonical(led.duplicated)


def test_a_gap_is_a_declared_range_not_a_hole() -> None:
    fleet = Fleet(P)
    fleet.apply(f"{P}/g/samples", samples("g", list(range(1, 11))), now_ms=0)
    fleet.apply(f"{P}/g/gaps", gap_message("g", Gap(1, 11, 20, 10, "max_size")), now_ms=0)
    fleet.apply(f"{P}/g/gaps", gap_message("g", Gap(2, 21, 25, 5, "max_size")), now_ms=0)
    fleet.apply(f"{P}/g/gaps", gap_message("g", Gap(3, 26, 26, 1, "weird")), now_ms=0)
    event = AlarmEvent("d/p>1", "raised", 2.0, "high", 0)
    fleet.apply(f"{P}/g/alarms", alarm_message("g", 27, event), 0)
    doc = fleet_doc(fleet, 0)["gateways"][0]
    assert doc["gaps"] == [
        {"from_seq": 11, "to_seq": 25, "reason": "max_size"},
        {"from_seq": 26, "to_seq": 26, "reason": "weird"},
    ]
    assert doc["holes"] == []
    assert (doc["received"], doc["max_seq"]) == (11, 27)


def test_hole_keeps_first_seen_time_while_it_shrinks() -> None:
    led = GatewayLedger("g")
    led.receive([1, 2], now_ms=0)
    led.receive([10], now_ms=1_000)  # 3..9 missing since t=1s
    led.receive([5], now_ms=2_000)  # split, both halves keep t=1s
    led.receive([20], now_ms=3_000)  # 11..19 missing since t=3s
    assert led.holes == [Hole(3, 4, 1_000), Hole(6, 9, 1_000), Hole(11, 19, 3_000)]
    led.declare_gap(3, 12, "max_age", now_ms=4_000)
    assert led.holes == [Hole(13, 19, 3_000)]
    fleet = Fleet(P, gateways={"g": led})
    assert fleet_doc(fleet, 63_000)["gateways"][0]["holes"] == [
        {"from_seq": 13, "to_seq": 19, "open_s": 60}
    ]
    assert exit_code(fleet, 63_000, grace_s=59) == 1
    assert exit_code(fleet, 63_000, grace_s=60) == 0  # open longer than the grace, not as long


def test_status_sets_online_and_retained_status_is_not_a_sighting() -> None:
    fleet = Fleet(P)
    fleet.apply(f"{P}/g/status", b'{"state":"online","version":"1"}', 5, retained=True)
    assert (fleet.gateways["g"].online, fleet.gateways["g"].last_seen_ts) == (True, None)
    fleet.apply(f"{P}/g/status", b'{"state":"offline"}', 7)
    assert (fleet.gateways["g"].online, fleet.gateways["g"].last_seen_ts) == (False, 7)
    doc = fleet_doc(fleet, 7)["gateways"][0]
    assert (doc["max_seq"], doc["received"], doc["holes"]) == (None, 0, [])


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (f"{P}/g/samples", b"not json"),
        (f"{P}/g/samples", b"\xff\xfe"),
        (f"{P}/g/samples", b"[1, 2]"),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": []}'),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": [{"seq": 0}]}'),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": [{"seq": true}]}'),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": [{"seq": 1.5}]}'),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": [{"ts": 1}]}'),
        (f"{P}/g/samples", b'{"gateway": "g", "samples": [7]}'),
        (f"{P}/g/samples", b'{"gateway": "other", "samples": [{"seq": 1}]}'),
        # a v0.1 message: neither its topic nor its key is v0.2's
        (f"{P}/g/readings", b'{"gateway": "g", "readings": [{"seq": 1}]}'),
        (f"{P}/g/samples", b'{"gateway": "g", "readings": [{"seq": 1}]}'),
        (f"{P}/g/alarms", b'{"gateway": "g"}'),
        (f"{P}/g/gaps", b'{"gateway": "g", "from_seq": 5, "to_seq": 4, "reason": "x"}'),
        (f"{P}/g/gaps", b'{"gateway": "g", "from_seq": 4, "to_seq": 5}'),
        (f"{P}/g/status", b'{"state": "sleepy"}'),
        (f"{P}/g/samples", b"[" * 100_000),  # nested past the recursion limit
        (f"{P}/g/other", b"{}"),
        (f"{P}/g/meta", b'{"config_digest": "x", "devices": {}}'),  # not a delivery
        ("elsewhere/g/samples", b"{}"),
    ],
)
def test_unusable_messages_are_counted_not_fatal(topic: str, payload: bytes) -> None:
    fleet = Fleet(P)
    assert not fleet.apply(topic, payload, 0)
    assert (fleet.rejected, fleet.gateways) == (1, {})
    assert fleet.last_rejected is not None
    assert fleet.last_rejected.startswith(topic)


def test_parse_accepts_the_uplink_payloads() -> None:
    assert parse_message(P, f"{P}/g/samples", samples("g", [7, 8])) == Seqs("g", [7, 8])
    backlog = samples("g", [3, 4, 5], historical=True)
    assert parse_message(P, f"{P}/g/samples", backlog) == Seqs("g", [3, 4, 5])
    unsynced = StoredItem(9, Lane.SAMPLE, 0, Sample("d", 0, {"p": 1.5}, clock_synced=False))
    message = samples_message("g", [unsynced], historical=False)
    assert parse_message(P, f"{P}/g/samples", message) == Seqs("g", [9])
    event = AlarmEvent("d/p>1", "cleared", 0.5, "low", 0)
    assert parse_message(P, f"{P}/g/alarms", alarm_message("g", 10, event)) == Seqs("g", [10])
    gap = gap_message("g", Gap(1, 11, 12, 2, "unclean_shutdown"))
    assert parse_message(P, f"{P}/g/gaps", gap) == GapDeclared("g", 11, 12, "unclean_shutdown")
    result = CommandResult("c-1", "ops", "write", "d", "p", 1, "done", None, 1, "", 0)
    # since v0.3 a command's result has its seq too, counted like an alarm's
    assert parse_message(P, f"{P}/g/results", result_message("g", 13, result)) == Seqs("g", [13])


def test_merging_workers_that_each_saw_part_of_a_stream() -> None:
    a, b = Fleet(P), Fleet(P)
    a.apply(f"{P}/g/samples", samples("g", [1, 2, 3]), 1_000)
    b.apply(f"{P}/g/samples", samples("g", [4, 5]), 2_000)
    a.apply(f"{P}/g/samples", samples("g", [9, 10]), 3_000)  # a sees 4..8 missing from t=3s
    b.apply(f"{P}/g/samples", samples("g", [5, 6]), 4_000)  # a redelivery to another worker
    b.apply(f"{P}/g/status", b'{"state":"online"}', 5_000)
    a.apply(f"{P}/g/status", b'{"state":"offline"}', 4_500)
    merged = merge_fleets([a, b], now_ms=10_000).gateways["g"]
    assert list(merged.received) == [(1, 6), (9, 10)]
    assert list(merged.duplicated) == [(5, 5)]
    assert merged.holes == [Hole(7, 8, 3_000)]
    assert (merged.online, merged.last_seen_ts, merged.max_seq) == (True, 5_000, 10)
    assert json.loads(json.dumps(fleet_doc(merge_fleets([a, b], 10_000), 10_000)))
