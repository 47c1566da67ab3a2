"""``audit --keys DIR``: each gateway's seals checked as its messages arrive. Pure: no I/O.

For a gateway with a registered key, the leaf of every item received waits (:class:`Leaves`,
32 bytes a seq) until the seal covering it is checked, exactly as ``verify`` checks one
(:func:`gateway.seals.verify.check_range`, ``signature_ok``, ``chain_breaks``); then its leaves
are let go. Everything is kept in the audit's state file, so a restart loses no figure.

Bounded, and counted where a bound bites (docs/audit.md, "Seals"):

* a seal waits for its items (it may arrive first) until they are all here, at most ``wait_ms``
  (the audit's ``--grace``) and at most :data:`MAX_WAITING_SEALS` seals a gateway; it is then
  checked with what arrived, so an item that never came makes it mismatched;
* at most :data:`MAX_LEAVES` leaves a gateway (a gateway whose seals stopped): past it the
  lowest are let go, and the seal over them is counted not checked, never mismatched;
* an item that arrives after its seal was checked, or from before the audit kept leaves, is
  counted not checked.

Only seals with a good signature are chained (their ``n`` and ``prev`` are the gateway's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.leaves import Leaves
from gateway.audit.ranges import RangeSet
from gateway.keys import PublicKey
from gateway.seals import items
from gateway.seals.seal import signature_ok
from gateway.seals.verify import (
    SINGLE_ITEM_TOPICS,
    Received,
    Report,
    chain_breaks,
    check_range,
    describe,
)

MAX_LEAVES = 1_000_000  # a gateway: 32 MB in memory and in the state file (100 full seals)
MAX_GAPS = 10_000  # declared gaps waiting for their seal, a gateway
MAX_WAITING_SEALS = 100  # a gateway; past it the oldest is checked with what arrived
MAX_LISTED = 100  # seal numbers named in a list (mismatched, missing, bad); the totals count all

FIGURES = (
    "seals_checked", "items_verified", "items_unverifiable", "seals_mismatched",
    "seals_missing", "seals_bad_signature", "seals_not_checked", "items_not_checked",
)  # fmt: skip


class BadSeal(ValueError):
    """A seals message whose numbers are not what the format says."""


@dataclass
class GatewaySeals:
    """What the audit holds and has found about one gateway's seals."""

    id: str
    leaves: Leaves = field(default_factory=Leaves)
    gaps: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # from_seq -> (to, leaf)
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)  # n -> seal
    waiting_since: dict[int, int] = field(default_factory=dict)  # n -> ms
    sealed: RangeSet = field(default_factory=RangeSet)  # seqs of checked seals: let go
    dropped: RangeSet = field(default_factory=RangeSet)  # seqs let go unchecked (the cap)
    horizon: int | None = None  # seals starting below it began before the audit kept leaves
    last: dict[str, Any] | None = None  # the highest good seal: the chain goes on from it
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0))
    mismatched: list[dict[str, int]] = field(default_factory=list)  # the last MAX_LISTED
    missing: list[int] = field(default_factory=list)  # the last MAX_LISTED
    bad: list[int] = field(default_factory=list)  # the last MAX_LISTED

    @property
    def items_unsealed(self) -> int:
        """Received, their seal not checked yet."""
        return self.leaves.count + len(self.gaps)


@dataclass
class SealBook:
    """Every gateway's :class:`GatewaySeals`; ``keys`` are the registered ones (``--keys``)."""

    keys: dict[str, PublicKey]
    wait_ms: int
    gateways: dict[str, GatewaySeals] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # gateways heard from without a key
    refused: int = 0  # seals or items whose fields are not what the format says
    dirty: set[str] = field(default_factory=set)  # gateways whose record changed (not leaves)
    leaves_dirty: set[str] = field(default_factory=set)  # gateways whose leaves changed

    def book(self, gateway: str, received_before: int) -> GatewaySeals | None:
        """The gateway's record, made at its first message (None without a key);
        ``received_before`` is the highest seq the audit had from it before keeping leaves."""
        if gateway not in self.keys:
            self.unknown.add(gateway)
            return None
        found = self.gateways.get(gateway)
        if found is None:
            found = self.gateways[gateway] = GatewaySeals(gateway)
            if received_before:
                found.horizon = received_before + 1
        return found

    def take(
        self, gateway: str, kind: str, doc: Mapping[str, Any], now_ms: int, received_before: int
    ) -> None:
        """Fold one parsed message (``kind`` samples, alarms, results, gaps or seals) in."""
        book = self.book(gateway, received_before)
        if book is None:
            return
        before = _record_state(book)
        try:
            if kind == "seals":
                self._seal(book, doc, now_ms)
            else:
                _take_items(book, kind, doc)
        except Exception:  # hostile fields (a missing key, an inf seq...): a refusal, counted
            self.refused += 1
        self.settle(book, now_ms)
        self.leaves_dirty.add(gateway)
        if _record_state(book) != before:  # most items messages change only the leaves
            self.dirty.add(gateway)

    def _seal(self, book: GatewaySeals, seal: Mapping[str, Any], now_ms: int) -> None:
        n, first, last = int(seal["n"]), int(seal["from_seq"]), int(seal["to_seq"])
        if n < 1 or first < 1 or last < first or int(seal["leaves"]) < 1:
            raise BadSeal(f"seal {n}: [{first}, {last}]")
        if book.waiting.get(n) == seal:
            return  # a redelivery
        figures = book.figures
        if not signature_ok(seal, self.keys[book.id]):
            if n in book.bad:
                return  # a redelivery, most likely: counted once
            figures["seals_checked"] += 1
            figures["seals_bad_signature"] += 1
            book.bad = [*book.bad, n][-MAX_LISTED:]
            return
        if _covered(book.sealed, first, last):
            return  # checked already: a redelivery
        _chain(book, seal)
        book.waiting[n] = dict(seal)
        book.waiting_since[n] = now_ms
        if len(book.waiting) > MAX_WAITING_SEALS:
            self._check(book, min(book.waiting))

    def settle(self, book: GatewaySeals, now_ms: int) -> None:
        """Check the waiting seals whose items are all here, or that waited long enough."""
        for n in sorted(book.waiting):
            if _complete(book, book.waiting[n]) or now_ms - book.waiting_since[n] >= self.wait_ms:
                self._check(book, n)

    def settle_all(self, now_ms: int) -> None:
        """:meth:`settle` every gateway (a seal's wait ends even when nothing arrives)."""
        for gateway, book in self.gateways.items():
            waiting = len(book.waiting)
            if waiting:
                self.settle(book, now_ms)
                if len(book.waiting) != waiting:
                    self.dirty.add(gateway)
                    self.leaves_dirty.add(gateway)

    def _check(self, book: GatewaySeals, n: int) -> None:
        seal = book.waiting.pop(n)
        del book.waiting_since[n]
        first, last = int(seal["from_seq"]), int(seal["to_seq"])
        figures = book.figures
        if (book.horizon is not None and first < book.horizon) or _any(book.dropped, first, last):
            figures["seals_not_checked"] += 1  # items the audit did not keep: no verdict
        else:
            figures["seals_checked"] += 1
            got = Received()
            for seq, leaf in book.leaves.in_range(first, last):
                got.leaves[seq].add(leaf)
            got.gaps = {a: gap for a, gap in book.gaps.items() if first <= a <= last}
            report = Report(book.id, None)
            check_range(report, got, seal, set())
            figures["items_verified"] += report.items_verified
            figures["items_unverifiable"] += report.items_unverifiable
            if report.mismatched:
                figures["seals_mismatched"] += 1
                book.mismatched = [*book.mismatched, *report.mismatched][-MAX_LISTED:]
        book.sealed.add(first, last)
        book.leaves.release(first, last)
        for a in [a for a in book.gaps if first <= a <= last]:
            del book.gaps[a]


def _record_state(book: GatewaySeals) -> tuple[object, ...]:
    """What the gateway's stored record holds, cheaply compared (its leaves are stored apart)."""
    return (
        *book.figures.values(), len(book.gaps), tuple(book.waiting), book.horizon,
        sum(map(len, book.leaves.other.values())), book.sealed.count, book.dropped.count,
    )  # fmt: skip


def _take_items(book: GatewaySeals, kind: str, doc: Mapping[str, Any]) -> None:
    if kind == "gaps":
        first, last = int(doc["from_seq"]), int(doc["to_seq"])
        if book.horizon is None:
            book.horizon = first
        if _kept(book, first) and first not in book.gaps:
            book.gaps[first] = (last, items.leaf_of("gap", doc))
            if len(book.gaps) > MAX_GAPS:
                lowest = min(book.gaps)
                _drop(book, lowest, book.gaps.pop(lowest)[0])
        return
    if kind == "samples":
        found = [(int(s["seq"]), items.leaf_of("sample", s)) for s in doc["samples"]]
    else:
        found = [(int(doc["seq"]), items.leaf_of(SINGLE_ITEM_TOPICS[kind], doc))]
    if book.horizon is None and found:
        book.horizon = min(seq for seq, _ in found)
    kept = [(seq, leaf) for seq, leaf in found if _kept(book, seq)]
    book.figures["items_not_checked"] += book.leaves.add(kept)
    while book.leaves.count > MAX_LEAVES:
        _drop(book, *book.leaves.pop_oldest())


def _kept(book: GatewaySeals, seq: int) -> bool:
    """Whether the item with ``seq`` is held for its seal (else counted not checked)."""
    if seq in book.sealed or seq in book.dropped or (book.horizon and seq < book.horizon):
        book.figures["items_not_checked"] += 1
        return False
    return True


def _drop(book: GatewaySeals, first: int, last: int) -> None:
    book.dropped.add(first, last)
    book.figures["items_not_checked"] += last - first + 1


def _chain(book: GatewaySeals, seal: Mapping[str, Any]) -> None:
    n = int(seal["n"])
    if book.last is None or n > int(book.last["n"]):
        if book.last is not None:
            breaks = chain_breaks(book.last, seal)
            book.figures["seals_missing"] += len(breaks)
            book.missing = [*book.missing, *breaks][-MAX_LISTED:]
        book.last = dict(seal)
    elif n in book.missing:  # late after all
        book.missing.remove(n)
        book.figures["seals_missing"] -= 1


def _covered(ranges: RangeSet, first: int, last: int) -> bool:
    return next(ranges.missing(first, last), None) is None


def _any(ranges: RangeSet, first: int, last: int) -> bool:
    return next(ranges.slice(first, last), None) is not None


def _complete(book: GatewaySeals, seal: Mapping[str, Any]) -> bool:
    """Whether every seq the seal covers is here (held, in a gap, lost to a crash or let go)."""
    first, last = int(seal["from_seq"]), int(seal["to_seq"])
    here = RangeSet()
    for a, (b, _) in book.gaps.items():
        if first <= a <= last:
            here.add(a, min(b, last))
    for c, d in seal.get("unsealed", []):
        if first <= int(c) <= int(d) <= last:
            here.add(int(c), int(d))
    for a, b in book.dropped.slice(first, last):
        here.add(a, b)
    if book.horizon is not None and first < book.horizon:
        return True
    return all(book.leaves.held_in(a, b) == b - a + 1 for a, b in here.missing(first, last))


def report_of(seals: SealBook, gateway: str) -> Report:
    """The gateway's figures in ``verify``'s shape (the lists hold at most MAX_LISTED)."""
    key = seals.keys.get(gateway)
    book = seals.gateways.get(gateway)
    report = Report(gateway, key.fingerprint if key else None, unknown_key=key is None)
    if book is not None:
        figures = book.figures
        report.seals_checked = figures["seals_checked"]
        report.items_verified = figures["items_verified"]
        report.items_unsealed = book.items_unsealed
        report.items_unverifiable = figures["items_unverifiable"]
        report.mismatched = list(book.mismatched)
        report.missing_seals = list(book.missing)
        report.bad_signatures = list(book.bad)
    return report


def seal_doc(seals: SealBook, gateway: str) -> dict[str, Any]:
    """``verify --json``'s object for the gateway, plus what only a running audit has: the
    totals behind the lists, the seals waiting for their items, what it could not check."""
    book = seals.gateways.get(gateway) or GatewaySeals(gateway)
    doc = report_of(seals, gateway).to_json()
    del doc["id"]
    figures = book.figures
    doc.update(
        seals_mismatched=figures["seals_mismatched"],
        seals_missing=figures["seals_missing"],
        seals_bad_signature=figures["seals_bad_signature"],
        seals_waiting=len(book.waiting),
        seals_not_checked=figures["seals_not_checked"],
        items_not_checked=figures["items_not_checked"],
    )
    return doc


def broken(seals: SealBook, gateway: str) -> bool:
    """A seal of the gateway does not match, is missing or is not its key's."""
    book = seals.gateways.get(gateway)
    if book is None:
        return False
    f = book.figures
    return bool(f["seals_mismatched"] or f["seals_missing"] or f["seals_bad_signature"])


def describe_audit(seals: SealBook, gateway: str) -> list[str]:
    """``verify``'s words for the gateway, plus the audit's own figures."""
    lines = describe(report_of(seals, gateway))
    book = seals.gateways.get(gateway)
    if book is None:
        return lines
    f = book.figures
    for total, listed, what in (
        (f["seals_mismatched"], len(book.mismatched), "seals that do not match"),
        (f["seals_missing"], len(book.missing), "seals missing"),
        (f["seals_bad_signature"], len(book.bad), "seals with a bad signature"),
    ):
        if total > listed:
            lines.append(f"  {total} {what} in all (the {listed} listed above are the latest)")
    if book.waiting:
        lines.append(f"  {len(book.waiting)} seals waiting for their items")
    if f["seals_not_checked"] or f["items_not_checked"]:
        lines.append(
            f"  {f['seals_not_checked']} seals and {f['items_not_checked']} items not checked: "
            "they came before the audit kept this gateway's items, after their seal, or past "
            "its bound (docs/audit.md)"
        )
    return lines
