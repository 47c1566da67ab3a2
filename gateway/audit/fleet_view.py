"""The fleet view of ``audit --serve``: one row per gateway, the ones that need a person first;
the page and the Prometheus families. Pure: functions of the ledger, the health board and now.

A gateway needs a person when it is offline, has a hole open past the grace period, has a seal
that does not match, is missing or is not its key's (``audit --keys``), says its health is
degraded, has a device down, or has said nothing for longer than two health periods while
online (its health messages stopped: a wedged box keeps its MQTT session alive).
"""

from __future__ import annotations

import hashlib
import html
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.audit.health import GatewayHealth, HealthBoard
from gateway.audit.ledger import Fleet, GatewayLedger
from gateway.audit.seals import seal_doc
from gateway.model import format_ago, format_bytes, format_duration
from gateway.prometheus import MetricFamily, counter, gauge

SEAL_PROBLEMS = ("seals_mismatched", "seals_missing", "seals_bad_signature")
HEALTH_SILENT_S = 600.0  # two health periods (5 min each) without one
# What needs a person, most urgent first: the page sorts on this order.
NEEDS = (
    "offline", "holes past grace", "seals broken", "degraded", "devices down", "health silent",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    online: bool | None
    last_seen_ts: int | None
    received: int
    holes: int  # seqs missing
    oldest_hole_s: int | None
    health: GatewayHealth | None
    needs: tuple[str, ...]
    seals: dict[str, Any] | None = None  # `audit --keys`: gateway.audit.seals.seal_doc

    @property
    def sort_key(self) -> tuple[int, int, str]:
        first = NEEDS.index(self.needs[0]) if self.needs else len(NEEDS)
        return (0 if self.needs else 1, first, self.id)


def _row(
    gid: str,
    led: GatewayLedger | None,
    hb: GatewayHealth | None,
    now: int,
    grace_s: float,
    *,
    seals: dict[str, Any] | None = None,
) -> Row:
    holes = led.holes if led else []
    oldest = min((h.first_seen_ms for h in holes), default=None)
    oldest_s = None if oldest is None else max(0, (now - oldest) // 1000)
    seen = [t for t in (led.last_seen_ts if led else None,) if t is not None]
    if hb is not None and not hb.retained:
        seen.append(hb.received_ms)
    last_seen = max(seen, default=None)
    online = led.online if led else None
    needs = []
    if online is False:
        needs.append("offline")
    if oldest_s is not None and oldest_s > grace_s:
        needs.append("holes past grace")
    if seals and (
        seals["seals_mismatched"] or seals["seals_missing"] or seals["seals_bad_signature"]
    ):
        needs.append("seals broken")
    if hb is not None and not hb.healthy:
        needs.append("degraded")
    if hb is not None and hb.devices_down:
        needs.append("devices down")
    # a gateway that never sent health (before v0.3) is not silent, only older
    if online and hb is not None and (now - hb.received_ms) / 1000 > HEALTH_SILENT_S:
        needs.append("health silent")
    return Row(
        id=gid,
        online=online,
        last_seen_ts=last_seen,
        received=led.received.count if led else 0,
        holes=sum(h.to_seq - h.from_seq + 1 for h in holes),
        oldest_hole_s=oldest_s,
        health=hb,
        needs=tuple(needs),
        seals=seals,
    )


def rows(fleet: Fleet, board: HealthBoard, now_ms: int, grace_s: float) -> list[Row]:
    """Every gateway either side knows, the ones that need a person first."""
    ids = set(fleet.gateways) | set(board.gateways)
    out = [
        _row(
            g,
            fleet.gateways.get(g),
            board.gateways.get(g),
            now_ms,
            grace_s,
            seals=None if fleet.seals is None else seal_doc(fleet.seals, g),
        )
        for g in ids
    ]
    out.sort(key=lambda r: r.sort_key)
    return out


# ---------------------------------------------------------------------------------------------
# /metrics


def families(fleet: Fleet, board: HealthBoard, table: list[Row]) -> Iterator[MetricFamily]:
    """``street_gateway_fleet_...{gateway="..."}``: one series per gateway per figure."""
    g = ("gateway",)
    online = gauge(
        "street_gateway_fleet_online", "1 online, 0 offline (absent: never said)", labels=g
    )
    seen = gauge(
        "street_gateway_fleet_last_seen_timestamp_seconds", "Arrival of its last message", labels=g
    )
    received = counter("street_gateway_fleet_received", "Distinct seqs received", labels=g)
    holes = gauge(
        "street_gateway_fleet_hole_seqs", "Seqs missing (neither received nor in a gap)", labels=g
    )
    oldest = gauge(
        "street_gateway_fleet_oldest_hole_seconds", "Age of its oldest open hole", labels=g
    )
    healthy = gauge(
        "street_gateway_fleet_healthy", "1 ok, 0 degraded, from its last health", labels=g
    )
    down = gauge(
        "street_gateway_fleet_devices_down", "Devices down, from its last health", labels=g
    )
    backlog = gauge("street_gateway_fleet_backlog", "Items waiting in its buffer", labels=g)
    room = gauge(
        "street_gateway_fleet_buffer_room_bytes", "Bytes its buffer may still grow by", labels=g
    )
    cost = gauge(
        "street_gateway_fleet_link_bytes_per_hour", "What its link costs, bytes/h", labels=g
    )
    health_at = gauge(
        "street_gateway_fleet_health_timestamp_seconds", "Arrival of its last health", labels=g
    )
    needs = gauge(
        "street_gateway_fleet_needs_attention", "1 when the fleet view puts it on top", labels=g
    )
    verified = counter(
        "street_gateway_fleet_seal_items_verified", "Items verified by their seals (--keys)",
        labels=g,
    )  # fmt: skip
    broken = counter(
        "street_gateway_fleet_seals_broken",
        "Seals that do not match, are missing or have a bad signature (--keys)",
        labels=g,
    )
    info = gauge(
        "street_gateway_fleet_info", "Version and config of its last health",
        labels=("gateway", "version", "config_digest", "config_source"),
    )  # fmt: skip
    for row in table:
        gid = (row.id,)
        if row.online is not None:
            online.add_metric(gid, 1.0 if row.online else 0.0)
        if row.last_seen_ts is not None:
            seen.add_metric(gid, row.last_seen_ts / 1000)
        received.add_metric(gid, row.received)
        holes.add_metric(gid, row.holes)
        oldest.add_metric(gid, row.oldest_hole_s or 0)
        needs.add_metric(gid, 1.0 if row.needs else 0.0)
        if row.seals is not None and not row.seals["unknown_key"]:
            verified.add_metric(gid, row.seals["items_verified"])
            broken.add_metric(gid, sum(row.seals[k] for k in SEAL_PROBLEMS))
        h = row.health
        if h is None:
            continue
        healthy.add_metric(gid, 1.0 if h.healthy else 0.0)
        down.add_metric(gid, len(h.devices_down))
        health_at.add_metric(gid, h.received_ms / 1000)
        for family, value in ((backlog, h.backlog), (room, h.room_bytes), (cost, h.bytes_per_hour)):
            if value is not None:
                family.add_metric(gid, value)
        info.add_metric((row.id, h.version or "", h.config_digest or "", h.config_source or ""), 1)
    yield gauge("street_gateway_fleet_gateways", "Gateways the audit knows", len(table))
    yield gauge(
        "street_gateway_fleet_gateways_needing_attention",
        "Gateways the fleet view puts on top",
        sum(1 for r in table if r.needs),
    )
    yield counter("street_gateway_fleet_rejected_messages", "Messages the audit could not use",
                  fleet.rejected + board.rejected)  # fmt: skip
    yield from (online, seen, received, holes, oldest, healthy, down, backlog, room, cost)
    yield from (health_at, needs, info, verified, broken)


# ---------------------------------------------------------------------------------------------
# The page

REFRESH_S = 10
_NONE = "&ndash;"

_CSS = """
:root{--bg:#eef1f4;--ink:#0b1220;--mute:#374151;--line:#9aa4b2;--ok:#166534;--bad:#991b1b;
--warn:#92400e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{padding:14px 16px 24px}
h1{font-size:26px;margin:0 0 4px}
p.sum{margin:0 0 12px;color:var(--mute)}
p.sum b{color:var(--ink)}
.wrap{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:10px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute);
padding:8px 6px;border-bottom:2px solid var(--line);white-space:nowrap;position:sticky;top:0;
background:#fff}
td{padding:6px;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
td.num{text-align:right}
td.id{font-weight:700}
tr.needs td.id{border-left:6px solid var(--bad)}
tr.fine td.id{border-left:6px solid var(--ok)}
td.needs{color:var(--bad);font-weight:700;white-space:normal;min-width:130px}
.pill{display:inline-block;padding:1px 9px;border-radius:6px;color:#fff;font-weight:700}
.pill.ok{background:var(--ok)}.pill.bad{background:var(--bad)}.pill.unknown{background:var(--mute)}
td small{display:block;color:var(--mute);font-size:13px;white-space:normal;max-width:260px}
footer{color:var(--mute);margin-top:10px}
"""
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COLUMNS = (
    "Gateway", "Needs a person", "Online", "Last seen", "Received", "Holes", "Seals verified",
    "Health", "Devices down", "Backlog", "Version", "Config", "Link cost",
)  # fmt: skip


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pill(ok: bool | None, yes: str, no: str) -> str:
    kind, text = {True: ("ok", yes), False: ("bad", no), None: ("unknown", "?")}[ok]
    return f'<span class="pill {kind}">{text}</span>'


def _tr(row: Row, now_ms: int) -> str:
    h = row.health
    holes = (
        "0"
        if not row.holes
        else f"{row.holes}<small>oldest {format_duration(row.oldest_hole_s or 0)}</small>"
    )
    if h is None:
        health = down = backlog = version = config = cost = _NONE
    else:
        problems = "".join(f"<small>{_e(p)}</small>" for p in h.problems[:2])
        health = _pill(h.healthy, "ok", "degraded") + problems
        down = str(len(h.devices_down)) + (
            f"<small>{_e(', '.join(h.devices_down[:5]))}</small>" if h.devices_down else ""
        )
        backlog = _NONE if h.backlog is None else f"{h.backlog:,}"
        version = _e(h.version or "?")
        config = f"{_e(h.config_digest or '?')}<small>{_e(h.config_source or '?')}</small>"
        cost = _NONE if h.bytes_per_hour is None else f"{format_bytes(h.bytes_per_hour)}/h"
    cells = [
        f'<td class="id">{_e(row.id)}</td>',
        f'<td class="needs">{_e(", ".join(row.needs))}</td>',
        f"<td>{_pill(row.online, 'online', 'offline')}</td>",
        f"<td>{_e(format_ago(row.last_seen_ts, now_ms))}</td>",
        f'<td class="num">{row.received:,}</td>',
        f'<td class="num">{holes}</td>',
        f'<td class="num">{_seals_cell(row.seals)}</td>',
        f"<td>{health}</td>",
        f'<td class="num">{down}</td>',
        f'<td class="num">{backlog}</td>',
        f"<td>{version}</td>",
        f"<td>{config}</td>",
        f'<td class="num">{cost}</td>',
    ]
    kind = "needs" if row.needs else "fine"
    return f'<tr class="gw {kind}" data-gateway="{_e(row.id)}">{"".join(cells)}</tr>'


def _seals_cell(seals: dict[str, Any] | None) -> str:
    """Items verified by their seals, and what is wrong with them; blank without ``--keys``."""
    if seals is None:
        return ""
    if seals["unknown_key"]:
        return "<small>no key registered</small>"
    problems = [
        f"{seals[key]} {what}"
        for key, what in (
            ("seals_mismatched", "seals do not match"),
            ("seals_missing", "seals missing"),
            ("seals_bad_signature", "bad signatures"),
        )
        if seals[key]
    ]
    waiting = f"{seals['items_unsealed']:,} awaiting a seal"
    notes = "".join(f"<small>{_e(p)}</small>" for p in [*problems, waiting])
    return f"{seals['items_verified']:,}{notes}"


def render_page(table: list[Row], now_ms: int, *, prefix: str, rejected: int) -> str:
    needing = sum(1 for r in table if r.needs)
    offline = sum(1 for r in table if r.online is False)
    summary = (
        f"<b>{len(table)}</b> gateways · <b>{needing}</b> need a person · {offline} offline · "
        f"topics {_e(prefix)}/… · {rejected} messages rejected"
    )
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join(_tr(r, now_ms) for r in table)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Fleet · street-gateway audit</title><style>{_CSS}</style></head>"
        f'<body><main><h1>Fleet</h1><p class="sum">{summary}</p>'
        f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        f"</table></div><footer>street-gateway audit · refreshed every {REFRESH_S} s · "
        "JSON at /fleet.json, Prometheus at /metrics</footer></main></body></html>"
    )


def row_doc(row: Row) -> dict[str, object]:
    h = row.health
    return {
        "id": row.id,
        "needs": list(row.needs),
        "online": row.online,
        "last_seen_ts": row.last_seen_ts,
        "received": row.received,
        "hole_seqs": row.holes,
        "oldest_hole_s": row.oldest_hole_s,
        "seals_verified": None if row.seals is None else row.seals["items_verified"],
        "seals": row.seals,
        "health": None if h is None else ("ok" if h.healthy else "degraded"),
        "problems": [] if h is None else list(h.problems),
        "devices_down": [] if h is None else list(h.devices_down),
        "backlog": None if h is None else h.backlog,
        "version": None if h is None else h.version,
        "config_digest": None if h is None else h.config_digest,
        "config_source": None if h is None else h.config_source,
        "link_bytes_per_hour": None if h is None else h.bytes_per_hour,
    }
