"""Checking seals against what arrived: the figures of ``street-gateway verify``. Pure.

Messages are ``(topic, payload)`` with the payload parsed from JSON (a ``samples.zst`` frame
already inflated by its reader); the gateway is the topic's second-to-last level and the kind its
last (``samples`` or ``samples.zst``, ``alarms``, ``results``, ``gaps``, ``seals``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.keys import PublicKey
from gateway.seals import items, merkle
from gateway.seals.seal import chain_hash, signature_ok

# topics whose payload is one item with its seq -> the item's kind (gateway.seals.items)
SINGLE_ITEM_TOPICS = {"alarms": "alarm", "results": "result"}
KINDS = {"samples", "gaps", "seals", *SINGLE_ITEM_TOPICS}
COMPRESSED = {"samples.zst": "samples"}  # uplink.compression: zstd, read back by its reader


@dataclass
class Received:
    """What arrived from one gateway."""

    leaves: dict[int, set[bytes]] = field(default_factory=lambda: collections.defaultdict(set))
    gaps: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # from_seq -> (to, leaf)
    seals: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: int = 0  # messages that are not what the format says


@dataclass
class Report:
    id: str
    key: str | None
    seals_checked: int = 0
    items_verified: int = 0
    items_unsealed: int = 0
    items_unverifiable: int = 0
    mismatched: list[dict[str, int]] = field(default_factory=list)
    missing_seals: list[int] = field(default_factory=list)
    bad_signatures: list[int] = field(default_factory=list)
    unknown_key: bool = False

    def ok(self) -> bool:
        return not (
            self.mismatched or self.missing_seals or self.bad_signatures or self.unknown_key
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "seals_checked": self.seals_checked,
            "items_verified": self.items_verified,
            "items_unsealed": self.items_unsealed,
            "items_unverifiable": self.items_unverifiable,
            "mismatched": self.mismatched,
            "missing_seals": self.missing_seals,
            "bad_signatures": self.bad_signatures,
            "unknown_key": self.unknown_key,
        }


def collect(messages: Iterable[tuple[str, Any]]) -> dict[str, Received]:
    fleet: dict[str, Received] = collections.defaultdict(Received)
    for topic, payload in messages:
        levels = topic.split("/")
        kind = COMPRESSED.get(levels[-1], levels[-1])
        if len(levels) < 2 or kind not in KINDS:
            continue
        got = fleet[levels[-2]]
        try:
            _take(got, kind, payload)
        except (KeyError, TypeError, ValueError, AttributeError):
            got.refused += 1
    return dict(fleet)


def _take(got: Received, kind: str, payload: Mapping[str, Any]) -> None:
    if kind == "samples":
        for sample in payload["samples"]:
            got.leaves[int(sample["seq"])].add(items.leaf_of("sample", sample))
    elif kind in SINGLE_ITEM_TOPICS:
        got.leaves[int(payload["seq"])].add(items.leaf_of(SINGLE_ITEM_TOPICS[kind], payload))
    elif kind == "gaps":
        got.gaps[int(payload["from_seq"])] = (int(payload["to_seq"]), items.leaf_of("gap", payload))
    else:
        got.seals[int(payload["n"])] = dict(payload)


def check(gateway: str, got: Received, key: PublicKey | None) -> Report:
    report = Report(gateway, key.fingerprint if key else None, unknown_key=key is None)
    covered: set[int] = set()
    previous: dict[str, Any] | None = None
    for n in sorted(got.seals):
        seal = got.seals[n]
        if previous is not None:
            report.missing_seals += chain_breaks(previous, seal)
        previous = seal
        if key is None:
            continue
        report.seals_checked += 1
        if not signature_ok(seal, key):
            report.bad_signatures.append(n)
            continue
        check_range(report, got, seal, covered)
    report.items_unsealed = sum(1 for seq in got.leaves if seq not in covered)
    return report


def chain_breaks(previous: Mapping[str, Any], seal: Mapping[str, Any]) -> list[int]:
    """The seals missing between ``previous`` and the next one received, ``seal``: the ``n``
    skipped, or ``seal``'s own ``n`` when none was skipped but its ``prev`` is not the hash of
    ``previous`` (a seal was replaced)."""
    n = int(seal["n"])
    skipped = list(range(int(previous["n"]) + 1, n))
    if not skipped and seal.get("prev") != chain_hash(previous):
        return [n]
    return skipped


def check_range(report: Report, got: Received, seal: Mapping[str, Any], covered: set[int]) -> None:
    """Check one seal (its signature already checked) against the leaves ``got`` holds for its
    range: ``report`` counts its items as verified, or names it among the mismatched. Every
    seq it covers is added to ``covered``."""
    first, last, want = int(seal["from_seq"]), int(seal["to_seq"]), int(seal["leaves"])
    crash = {int(c): int(d) for c, d in seal.get("unsealed", [])}
    leaves: list[bytes] = []
    found = verified = unverifiable = 0
    conflict = False
    seq = first
    while seq <= last:
        covered.add(seq)
        if seq in got.gaps:
            to, leaf = got.gaps[seq]
            leaves.append(leaf)
            found += 1
            covered.update(range(seq, min(to, last) + 1))
            seq = to + 1
        elif seq in crash:
            to = crash[seq]
            leaves.append(items.crash_leaf(seq, to))
            found += 1
            unverifiable += to - seq + 1
            covered.update(range(seq, min(to, last) + 1))
            seq = to + 1
        else:
            options = got.leaves.get(seq, set())
            found += len(options)
            conflict |= len(options) > 1
            if options:
                leaves.append(next(iter(options)))
                verified += 1
            seq += 1
    if found == want and not conflict and merkle.root(leaves).hex() == seal.get("root"):
        report.items_verified += verified
        report.items_unverifiable += unverifiable
        return
    report.mismatched.append(
        {
            "n": int(seal["n"]),
            "from_seq": first,
            "to_seq": last,
            "leaves": want,
            "leaves_found": found,
        }
    )


def describe(report: Report) -> list[str]:
    """The report in words a city's data officer reads."""
    lines = [f"gateway {report.id}:"]
    if report.unknown_key:
        lines.append("  no registered key for this gateway: nothing from it can be verified")
    else:
        lines.append(
            f"  {report.seals_checked} seals checked; {report.items_verified} items verified "
            "unaltered"
        )
    for m in report.mismatched:
        lines.append(
            f"  seal {m['n']} (seqs {m['from_seq']}-{m['to_seq']}): the items received do not "
            f"match it ({m['leaves_found']} of {m['leaves']} found): an item was altered, "
            "forged, dropped or is missing"
        )
    if report.missing_seals:
        lines.append(f"  seals missing: {', '.join(map(str, report.missing_seals))}")
    if report.bad_signatures:
        lines.append(
            "  seals with a bad signature (not made by this gateway's key): "
            + ", ".join(map(str, report.bad_signatures))
        )
    if report.items_unsealed:
        lines.append(f"  {report.items_unsealed} items received but not yet sealed")
    if report.items_unverifiable:
        lines.append(f"  {report.items_unverifiable} seqs lost to a crash before sealing")
    return lines


@dataclass
class Running:
    """Verify as messages arrive (the demo's upstream): a seal is checked once every seq it
    covers has arrived, then the leaves it covered are let go, so memory holds only what waits
    for a seal. At most MAX_WAITING seals wait; older ones are given up (counted)."""

    MAX_WAITING = 1000

    received: Received = field(default_factory=Received)
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)
    sealed: int = 0  # items (samples, alarms) in the seals checked
    verified: int = 0  # of which verified
    mismatched: int = 0  # seals whose items do not match, or whose signature is bad
    given_up: int = 0

    def take(self, kind: str, payload: Mapping[str, Any]) -> None:
        try:
            _take(self.received, kind, payload)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.received.refused += 1
            return
        if kind == "seals":
            seal = self.received.seals.pop(int(payload["n"]))
            self.waiting[int(seal["n"])] = seal
            while len(self.waiting) > self.MAX_WAITING:
                del self.waiting[min(self.waiting)]
                self.given_up += 1

    def settle(self, key: PublicKey | None) -> None:
        """Check the seals whose items have all arrived (none without a key)."""
        if key is None:
            return
        for n in sorted(self.waiting):
            seal = self.waiting[n]
            if not self._complete(seal):
                continue
            del self.waiting[n]
            first, last = int(seal["from_seq"]), int(seal["to_seq"])
            items_in = sum(1 for seq in range(first, last + 1) if seq in self.received.leaves)
            report = Report("", key.fingerprint)
            if signature_ok(seal, key):
                check_range(report, self.received, seal, set())
            else:
                report.bad_signatures.append(n)
            self.sealed += items_in
            self.verified += report.items_verified
            self.mismatched += bool(report.mismatched or report.bad_signatures)
            for seq in range(first, last + 1):
                self.received.leaves.pop(seq, None)
                self.received.gaps.pop(seq, None)

    def _complete(self, seal: Mapping[str, Any]) -> bool:
        crash = {int(c): int(d) for c, d in seal.get("unsealed", [])}
        seq, last = int(seal["from_seq"]), int(seal["to_seq"])
        while seq <= last:
            if seq in self.received.gaps:
                seq = self.received.gaps[seq][0] + 1
            elif seq in crash:
                seq = crash[seq] + 1
            elif seq in self.received.leaves:
                seq += 1
            else:
                return False
        return True
