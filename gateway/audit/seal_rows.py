"""How ``audit --keys`` keeps its seals in the state file: rows in, rows out. Pure: no I/O.

Two tables beside ``gateway``: ``seal_gateway`` (one JSON row a gateway: figures, waiting
seals, gaps, the chain's last seal, the seqs already checked or let go) and ``seal_leaves``
(one row a run of leaves, as one message brought them: ``gateway, first_seq, leaves`` with 32
bytes a seq). A batch rewrites the JSON row of each gateway it changed and writes only the runs
it added or cut, so its cost follows what arrived, not what is held.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.audit.ranges import RangeSet
from gateway.audit.seals import FIGURES, GatewaySeals, SealBook

SCHEMA = """
CREATE TABLE IF NOT EXISTS seal_gateway (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seal_leaves (
    gateway TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    leaves BLOB NOT NULL,
    PRIMARY KEY (gateway, first_seq)
);
"""
UPSERT_GATEWAY = "INSERT OR REPLACE INTO seal_gateway VALUES (?, ?)"
UPSERT_RUN = "INSERT OR REPLACE INTO seal_leaves VALUES (?, ?, ?)"
DELETE_RUN = "DELETE FROM seal_leaves WHERE gateway = ? AND first_seq = ?"


def gateway_doc(book: GatewaySeals) -> str:
    return json.dumps(
        {
            "gaps": [[a, b, leaf.hex()] for a, (b, leaf) in sorted(book.gaps.items())],
            "other": [
                [seq, sorted(x.hex() for x in leaves)] for seq, leaves in book.leaves.other.items()
            ],
            "waiting": [[book.waiting_since[n], seal] for n, seal in sorted(book.waiting.items())],
            "sealed": book.sealed.to_flat(),
            "dropped": book.dropped.to_flat(),
            "horizon": book.horizon,
            "last": book.last,
            "figures": book.figures,
            "mismatched": book.mismatched,
            "missing": book.missing,
            "bad": book.bad,
        },
        separators=(",", ":"),
    )


def gateway_from_doc(gid: str, text: str) -> GatewaySeals:
    doc: dict[str, Any] = json.loads(text)
    book = GatewaySeals(
        gid,
        gaps={int(a): (int(b), bytes.fromhex(leaf)) for a, b, leaf in doc["gaps"]},
        waiting={int(seal["n"]): seal for _, seal in doc["waiting"]},
        waiting_since={int(seal["n"]): int(since) for since, seal in doc["waiting"]},
        sealed=RangeSet.from_flat(doc["sealed"]),
        dropped=RangeSet.from_flat(doc["dropped"]),
        horizon=doc["horizon"],
        last=doc["last"],
        figures={name: int(doc["figures"].get(name, 0)) for name in FIGURES},
        mismatched=doc["mismatched"],
        missing=doc["missing"],
        bad=doc["bad"],
    )
    book.leaves.other = {int(seq): {bytes.fromhex(x) for x in xs} for seq, xs in doc["other"]}
    return book


def take_rows(
    seals: SealBook,
) -> tuple[list[tuple[str, str]], list[tuple[str, int, bytes]], list[tuple[str, int]]]:
    """The rows a save writes: changed gateways, runs written, runs deleted; the book is then
    clean (:func:`give_back` undoes that when the write fails)."""
    gateways = [(gid, gateway_doc(seals.gateways[gid])) for gid in sorted(seals.dirty)]
    runs, deleted = [], []
    for gid in sorted(seals.leaves_dirty):
        leaves = seals.gateways[gid].leaves
        for first in sorted(leaves.touched):
            run = leaves.runs.get(first)
            if run is None:
                deleted.append((gid, first))
            else:
                runs.append((gid, first, bytes(run)))
        leaves.touched.clear()
    seals.dirty.clear()
    seals.leaves_dirty.clear()
    return gateways, runs, deleted


def give_back(
    seals: SealBook,
    gateways: list[tuple[str, str]],
    runs: list[tuple[str, int, bytes]],
    deleted: list[tuple[str, int]],
) -> None:
    seals.dirty.update(gid for gid, _ in gateways)
    for gid, first in [(gid, first) for gid, first, _ in runs] + deleted:
        seals.leaves_dirty.add(gid)
        seals.gateways[gid].leaves.touched.add(first)


def meta(seals: SealBook) -> list[tuple[str, str]]:
    return [
        ("seals_unknown", json.dumps(sorted(seals.unknown))),
        ("seals_refused", str(seals.refused)),
    ]


def restore_meta(seals: SealBook, stored: dict[str, str]) -> None:
    seals.unknown = set(json.loads(stored.get("seals_unknown", "[]")))
    seals.refused = int(stored.get("seals_refused", "0"))
