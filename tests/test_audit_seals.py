"""`audit --keys`: each gateway's seals checked as its messages arrive, as verify checks them,
bounded, and kept in the state file so that a restart loses no figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import seals as seals_module
from gateway.audit.leaves import Leaves
from gateway.audit.ledger import Fleet
from gateway.audit.report import exit_code, fleet_doc, table
from gateway.audit.seals import SealBook, seal_doc
from gateway.audit.store import AuditStore
from gateway.keys import SigningKey
from gateway.model import Lane, Sample, StoredItem
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, SealInput, chain_hash, make_seal
from gateway.seals.verify import check, collect
from gateway.uplink.json_format import samples_message

KEY = SigningKey(bytes(range(32)))
P = "city"
GW = "gw"
WAIT_MS = 60_000
Message = tuple[str, bytes]


def _stream(seals: int = 3, size: int = 10) -> list[Message]:
    """``seals`` samples messages of ``size`` seqs, each followed by the seal over it."""
    out: list[Message] = []
    prev = FIRST_PREV
    for n in range(1, seals + 1):
        first = (n - 1) * size + 1
        stored = [
            StoredItem(s, Lane.SAMPLE, s, Sample("d", s, {"p": s + 0.5}))
            for s in range(first, first + size)
        ]
        out.append((f"{P}/{GW}/samples", samples_message(GW, stored, historical=False)))
        leaves = [items.leaf_of_stored(i) for i in stored]
        seal = make_seal(GW, KEY, SealInput(n, first, first + size - 1, leaves, [], prev, n))
        prev = chain_hash(seal)
        out.append((f"{P}/{GW}/seals", json.dumps(seal).encode()))
    return out


def _fleet() -> Fleet:
    fleet = Fleet(P)
    fleet.seals = SealBook({GW: KEY.public}, wait_ms=WAIT_MS)
    return fleet


def _feed(fleet: Fleet, stream: list[Message], now_ms: int = 1000) -> None:
    for topic, payload in stream:
        assert fleet.apply(topic, payload, now_ms)


def _doc(fleet: Fleet) -> dict[str, Any]:
    assert fleet.seals is not None
    return seal_doc(fleet.seals, GW)


def _verify(stream: list[Message]) -> dict[str, Any]:
    """What `verify` says of the same messages."""
    fleet = collect((t, json.loads(p)) for t, p in stream)
    return check(GW, fleet[GW], KEY.public).to_json()


def _altered(stream: list[Message], index: int, seq: int, value: float) -> list[Message]:
    topic, payload = stream[index]
    doc = json.loads(payload)
    for s in doc["samples"]:
        if s["seq"] == seq:
            s["values"]["p"] = value
    return [*stream[:index], (topic, json.dumps(doc).encode()), *stream[index + 1 :]]


def test_a_clean_stream_verifies_like_verify_and_its_leaves_are_let_go() -> None:
    fleet, stream = _fleet(), _stream()
    _feed(fleet, stream)
    doc = _doc(fleet)
    verified = _verify(stream)
    for key in ("seals_checked", "items_verified", "mismatched", "missing_seals", "bad_signatures"):
        assert doc[key] == verified[key], key
    assert doc["items_verified"] == 30 and doc["items_unsealed"] == 0
    assert fleet.seals is not None and fleet.seals.gateways[GW].leaves.count == 0
    assert exit_code(fleet, 1000, 600) == 0
    assert "3 seals checked; 30 items verified unaltered" in table(fleet, 1000, 600)
    assert fleet_doc(fleet, 1000)["gateways"][0]["seals"]["items_verified"] == 30


def test_a_seal_before_its_items_waits_and_redeliveries_change_nothing() -> None:
    fleet, stream = _fleet(), _stream()
    samples, seal = stream[0], stream[1]
    _feed(fleet, [seal, seal])  # a seal first, twice (QoS 1)
    assert _doc(fleet)["seals_waiting"] == 1 and _doc(fleet)["seals_checked"] == 0
    _feed(fleet, [samples, samples, seal, *stream[2:], *stream])  # all of it again
    doc = _doc(fleet)
    assert (doc["seals_checked"], doc["items_verified"], doc["seals_waiting"]) == (3, 30, 0)
    assert doc["mismatched"] == doc["missing_seals"] == doc["bad_signatures"] == []
    # items that come again after their seal was checked cannot be compared: counted (the
    # second copy of the first message came after its seal completed, then the whole stream)
    assert doc["items_not_checked"] == 40


def test_a_forged_item_an_altered_one_and_a_forged_seal_are_named() -> None:
    stream = _stream()
    forged = [(stream[0][0], stream[0][1]), *_altered(stream, 0, 4, 99.0)[:1], *stream[1:]]
    fleet = _fleet()
    _feed(fleet, forged)  # seq 4 twice: the gateway's and a forgery
    doc = _doc(fleet)
    want = {"n": 1, "from_seq": 1, "to_seq": 10, "leaves": 10, "leaves_found": 11}
    assert doc["mismatched"] == [want] == _verify(forged)["mismatched"]
    assert doc["items_verified"] == 20 and exit_code(fleet, 1000, 600) == 1
    assert "seal 1 (seqs 1-10): the items received do not match it" in table(fleet, 1000, 600)

    altered = _altered(stream, 2, 15, 1.0)  # only the altered one
    fleet = _fleet()
    _feed(fleet, altered)
    assert [m["n"] for m in _doc(fleet)["mismatched"]] == [2]

    seal = json.loads(stream[3][1])
    seal["ts"] += 1  # changed after signing
    fleet = _fleet()
    _feed(fleet, [*stream[:3], (stream[3][0], json.dumps(seal).encode()), *stream[4:]])
    doc = _doc(fleet)
    assert doc["bad_signatures"] == [2] and doc["items_unsealed"] == 10
    # only the gateway's own seals are chained: its seal 2 never came (verify, which chains
    # the forged one too, names seal 3, whose prev does not match the forgery)
    assert doc["missing_seals"] == [2] and doc["seals_bad_signature"] == 1


def test_a_missing_seal_and_an_item_that_never_comes() -> None:
    stream = _stream(4)
    fleet = _fleet()
    _feed(fleet, [*stream[:2], stream[2], *stream[4:]])  # seal 2 lost
    doc = _doc(fleet)
    assert (
        doc["missing_seals"]
        == [2]
        == _verify([*stream[:2], stream[2], *stream[4:]])["missing_seals"]
    )
    assert doc["items_unsealed"] == 10  # seal 2's items wait for it
    # a sample dropped on the way: its seal waits, bounded by --grace, then does not match
    samples = json.loads(stream[2][1])
    samples["samples"] = samples["samples"][1:]
    fleet = _fleet()
    _feed(fleet, [*stream[:2], (stream[2][0], json.dumps(samples).encode()), stream[3]])
    assert _doc(fleet)["seals_waiting"] == 1
    assert fleet.seals is not None
    fleet.seals.settle_all(1000 + WAIT_MS - 1)
    assert _doc(fleet)["seals_waiting"] == 1
    fleet.seals.settle_all(1000 + WAIT_MS)
    assert _doc(fleet)["mismatched"] == [
        {"n": 2, "from_seq": 11, "to_seq": 20, "leaves": 10, "leaves_found": 9}
    ]
    assert _doc(fleet)["items_verified"] == 10


def test_a_gap_holds_one_leaf_and_an_unknown_gateway_keeps_nothing() -> None:
    stored = [StoredItem(s, Lane.SAMPLE, s, Sample("d", s, {"p": 1})) for s in (1, 2, 6)]
    gap = {"gateway": GW, "from_seq": 3, "to_seq": 5, "count": 3, "reason": "evicted_max_age"}
    leaves = [items.leaf_of_stored(stored[0]), items.leaf_of_stored(stored[1])]
    leaves += [items.leaf_of("gap", gap), items.leaf_of_stored(stored[2])]
    seal = make_seal(GW, KEY, SealInput(1, 1, 6, leaves, [], FIRST_PREV, 1))
    stream = [
        (f"{P}/{GW}/samples", samples_message(GW, stored, historical=False)),
        (f"{P}/{GW}/gaps", json.dumps(gap).encode()),
        (f"{P}/{GW}/seals", json.dumps(seal).encode()),
    ]
    fleet = _fleet()
    _feed(fleet, stream)
    assert (_doc(fleet)["items_verified"], _doc(fleet)["mismatched"]) == (3, [])
    stranger = [
        (t.replace(f"/{GW}/", "/other/"), p.replace(b'"gw"', b'"other"')) for t, p in stream
    ]
    _feed(fleet, stranger)
    assert fleet.seals is not None and "other" not in fleet.seals.gateways
    assert seal_doc(fleet.seals, "other")["unknown_key"] is True


def test_past_its_bound_the_audit_lets_leaves_go_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seals_module, "MAX_LEAVES", 15)
    fleet, stream = _fleet(), _stream()
    _feed(fleet, [stream[0], stream[2], stream[1], stream[3]])  # 20 items before any seal
    doc = _doc(fleet)
    assert doc["seals_not_checked"] == 1 and doc["items_not_checked"] == 10
    assert doc["mismatched"] == [] and doc["seals_checked"] == 1 and doc["items_verified"] == 10


def test_the_leaves_are_kept_in_runs_and_cut_where_a_seal_ends() -> None:
    leaves = Leaves()
    leaves.add([(s, bytes([s]) * 32) for s in range(1, 11)])
    leaves.add([(s, bytes([s]) * 32) for s in (11, 12, 12, 20)])
    assert leaves.starts == [1, 11, 20] and leaves.count == 13
    leaves.release(5, 11)
    assert leaves.starts == [1, 12, 20] and leaves.count == 6
    assert leaves.get(4) == bytes([4]) * 32 and leaves.get(5) is None
    assert leaves.held_in(1, 20) == 6


async def test_a_restart_in_the_middle_loses_no_figure(tmp_path: Path) -> None:
    stream = _stream(4)
    whole = _fleet()
    _feed(whole, stream)
    state = tmp_path / "audit.db"
    halves = (stream[:3], stream[3:])  # seal 2 arrives after the restart, its items before
    for half in halves:
        async with AuditStore(state) as store:
            fleet = await store.load(P, seals=SealBook({GW: KEY.public}, wait_ms=WAIT_MS))
            _feed(fleet, half)
            await store.save(fleet)
    async with AuditStore(state) as store:
        fleet = await store.load(P, seals=SealBook({GW: KEY.public}, wait_ms=WAIT_MS))
    assert _doc(fleet) == _doc(whole)
    assert _doc(fleet)["items_verified"] == 40
    assert fleet.seals is not None and fleet.seals.gateways[GW].leaves.count == 0


def test_hostile_seals_and_items_are_refused_and_counted_never_fatal() -> None:
    fleet, stream = _fleet(), _stream(1)
    hostile = [
        (f"{P}/{GW}/seals", b'{"gateway": "gw", "n": 1e999, "from_seq": 1, "to_seq": 2}'),
        (f"{P}/{GW}/seals", b'{"gateway": "gw", "n": 1}'),
        (f"{P}/{GW}/seals", b'{"gateway": "gw", "n": 3, "from_seq": 5, "to_seq": 2, "leaves": 1}'),
        (f"{P}/{GW}/alarms", b'{"gateway": "gw", "seq": 1e999}'),
        (f"{P}/{GW}/samples", b'{"gateway": "gw", "samples": [{"seq": 3, "values": NaN}]}'),
    ]
    for topic, payload in hostile:
        fleet.apply(topic, payload, 1000)
    assert fleet.seals is not None and fleet.seals.refused == 4
    assert fleet.rejected == 1  # the alarm: the ledger's own check comes first
    # a thousand forged copies of one item: one is enough to fail its seal, a few are kept
    doc = json.loads(stream[0][1])
    for value in range(1000):
        doc["samples"][0]["values"]["p"] = value
        fleet.apply(stream[0][0], json.dumps(doc).encode(), 1000)
    _feed(fleet, stream)
    got = _doc(fleet)
    assert [m["n"] for m in got["mismatched"]] == [1] and got["items_not_checked"] > 900
    assert len(fleet.seals.gateways[GW].leaves.other) == 0  # let go with the seal


def test_a_zstd_fleet_is_checked_the_same() -> None:
    import zstandard  # noqa: PLC0415

    compress = zstandard.ZstdCompressor(write_content_size=True).compress
    stream = _stream()
    zstd = [(f"{t}.zst", compress(p)) if t.endswith("/samples") else (t, p) for t, p in stream]
    fleet = _fleet()
    _feed(fleet, zstd)
    assert _doc(fleet)["items_verified"] == 30 and _doc(fleet)["mismatched"] == []


def test_the_fleet_view_shows_the_items_verified_and_puts_broken_seals_on_top() -> None:
    from gateway.audit.fleet_view import families, render_page, row_doc, rows  # noqa: PLC0415
    from gateway.audit.health import HealthBoard  # noqa: PLC0415

    stream = _stream()
    fleet = _fleet()
    _feed(fleet, _altered(stream, 2, 15, 1.0))
    board = HealthBoard(P)
    table = rows(fleet, board, 2000, 600)
    assert table[0].needs == ("seals broken",)
    doc = row_doc(table[0])
    assert doc["seals_verified"] == 20 and doc["seals"]["seals_mismatched"] == 1
    page = render_page(table, 2000, prefix=P, rejected=0)
    assert "20<small>1 seals do not match</small>" in page
    names = {f.name for f in families(fleet, board, table)}
    assert {
        "street_gateway_fleet_seal_items_verified",
        "street_gateway_fleet_seals_broken",
    } <= names
    plain = Fleet(P)
    _feed(plain, [m for m in stream if m[0].endswith("/samples")])
    assert row_doc(rows(plain, board, 2000, 600)[0])["seals_verified"] is None


@pytest.mark.parametrize(
    "extra",
    [
        ["--format", "sparkplug-b"],
        ["--group", "workers"],
        ["--merge", "a.db"],
    ],
)
def test_keys_where_a_seal_cannot_meet_its_items_is_a_usage_error(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main  # noqa: PLC0415

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{GW}.pub").write_text(KEY.public.pem())
    argv = ["audit", "--broker", "mqtt://127.0.0.1:1", "--keys", str(keys), *extra]
    assert main(argv) == 2
    assert "--keys: a seal and all its items must reach one audit" in capsys.readouterr().err
    (keys / f"{GW}.pub").unlink()
    assert main(["audit", "--broker", "mqtt://127.0.0.1:1", "--keys", str(keys)]) == 2
    assert "no <gateway>.pub file there" in capsys.readouterr().err
