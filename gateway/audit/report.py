"""The audit's answers: the JSON document of docs/reference.md, a table for a person, an exit code.

Pure: functions of a fleet ledger and the current time.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.audit.ledger import Fleet, GatewayLedger
from gateway.audit.seals import broken, describe_audit, seal_doc
from gateway.model import format_ago, format_duration

EXIT_COMPLETE = 0
EXIT_HOLES = 1
MAX_HOLES_SHOWN = 5


def open_s(first_seen_ms: int, now_ms: int) -> int:
    return max(0, (now_ms - first_seen_ms) // 1000)


def gateway_doc(led: GatewayLedger, now_ms: int) -> dict[str, Any]:
    gaps = sorted((lo, hi, reason) for reason, ranges in led.gaps.items() for lo, hi in ranges)
    return {
        "id": led.id,
        "online": led.online,
        "last_seen_ts": led.last_seen_ts,
        "received": led.received.count,
        "duplicates": led.duplicates,
        "max_seq": led.max_seq or None,
        "gaps": [{"from_seq": lo, "to_seq": hi, "reason": reason} for lo, hi, reason in gaps],
        "holes": [
            {"from_seq": h.from_seq, "to_seq": h.to_seq, "open_s": open_s(h.first_seen_ms, now_ms)}
            for h in led.holes
        ],
    }


def fleet_doc(fleet: Fleet, now_ms: int) -> dict[str, Any]:
    """``{"gateways": [...]}`` as docs/reference.md has it, plus the count of unusable messages."""
    gateways = [gateway_doc(fleet.gateways[g], now_ms) for g in sorted(fleet.gateways)]
    if fleet.seals is None:
        return {"gateways": gateways, "rejected_messages": fleet.rejected}
    for doc in gateways:  # `audit --keys`: verify's figures, per gateway
        doc["seals"] = seal_doc(fleet.seals, doc["id"])
    return {
        "gateways": gateways,
        "rejected_messages": fleet.rejected,
        "seals_refused": fleet.seals.refused,
    }


def to_json(fleet: Fleet, now_ms: int) -> str:
    return json.dumps(fleet_doc(fleet, now_ms), indent=2)


def overdue_holes(fleet: Fleet, now_ms: int, grace_s: float) -> int:
    return sum(
        1
        for led in fleet.gateways.values()
        for h in led.holes
        if (now_ms - h.first_seen_ms) / 1000 > grace_s
    )


def broken_seals(fleet: Fleet) -> int:
    """Gateways with a seal that does not match, is missing or has a bad signature."""
    seals = fleet.seals
    return 0 if seals is None else sum(1 for g in fleet.gateways if broken(seals, g))


def exit_code(fleet: Fleet, now_ms: int, grace_s: float) -> int:
    """0 when no hole has been open longer than the grace period (and, with ``--keys``, every
    seal checked matches), 1 otherwise."""
    bad = overdue_holes(fleet, now_ms, grace_s) or broken_seals(fleet)
    return EXIT_HOLES if bad else EXIT_COMPLETE


def summary_line(fleet: Fleet, now_ms: int, grace_s: float) -> str:
    leds = fleet.gateways.values()
    online = sum(1 for led in leds if led.online)
    with_holes = sum(1 for led in leds if led.holes)
    received = sum(led.received.count for led in leds)
    line = (
        f"{len(fleet.gateways)} gateways, {online} online, {received} seqs received, "
        f"{with_holes} with open holes, {overdue_holes(fleet, now_ms, grace_s)} holes past "
        f"grace {format_duration(grace_s)}, {fleet.rejected} messages rejected"
    )
    if fleet.seals is not None:
        verified = sum(b.figures["items_verified"] for b in fleet.seals.gateways.values())
        line += f", {verified} items verified by their seals, {broken_seals(fleet)} gateways "
        line += "with broken seals"
    return line


def table(fleet: Fleet, now_ms: int, grace_s: float) -> str:
    """A fixed-width table, one gateway a line, then the open holes worth a look."""
    header = ("GATEWAY", "ONLINE", "LAST SEEN", "RECEIVED", "DUPS", "MAX SEQ", "GAPS", "HOLES")
    rows: list[tuple[str, ...]] = [header]
    details: list[str] = []
    for gid in sorted(fleet.gateways):
        led = fleet.gateways[gid]
        gapped = sum(r.count for r in led.gaps.values())
        missing = sum(h.to_seq - h.from_seq + 1 for h in led.holes)
        online = {None: "?", True: "yes", False: "no"}[led.online]
        rows.append(
            (
                gid,
                online,
                format_ago(led.last_seen_ts, now_ms),
                str(led.received.count),
                str(led.duplicates),
                str(led.max_seq or "-"),
                f"{gapped} ({', '.join(sorted(led.gaps))})" if led.gaps else "0",
                f"{missing} in {len(led.holes)}" if led.holes else "0",
            )
        )
        for h in led.holes[:MAX_HOLES_SHOWN]:
            age = (now_ms - h.first_seen_ms) / 1000
            mark = " PAST GRACE" if age > grace_s else ""
            details.append(
                f"  {gid}: seq {h.from_seq}..{h.to_seq} open {format_duration(age)}{mark}"
            )
        if len(led.holes) > MAX_HOLES_SHOWN:
            details.append(f"  {gid}: ... {len(led.holes) - MAX_HOLES_SHOWN} more holes")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if details:
        lines += ["", "open holes:", *details]
    if fleet.seals is not None:
        lines += ["", "seals:"]
        for gid in sorted(fleet.gateways):
            lines += describe_audit(fleet.seals, gid)
        if fleet.seals.refused:
            lines.append(
                f"{fleet.seals.refused} seals or items refused: their fields are not what the "
                "format says"
            )
    if fleet.last_rejected:
        lines += ["", f"last rejected message: {fleet.last_rejected}"]
    lines += ["", summary_line(fleet, now_ms, grace_s)]
    return "\n".join(lines)
