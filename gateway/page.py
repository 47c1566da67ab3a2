"""The status page ``/``: one server-side template for the whole body. Pure.

:func:`render_body` turns a ``/status`` document into the page's ``<main id="app">``: the
header, problems, a timeline of the last 24 h (link outages as bars with their length,
restarts with a crash marked, alarms, devices going down and coming back), the uplink and
buffer cards, the devices with a sparkline beside each numeric value, and the events.
:func:`render_page` wraps it in the document. The page's small script only fetches
``/?body=1`` (the same template, served by :mod:`gateway.status`) every few seconds and swaps
the new ``<main>`` in, so the markup exists once, here, and every string in it is escaped here.

Phone in the sun: dark text on white (contrast 7:1 or more), 16 px type, nothing under 14 px;
no external asset (fonts, scripts, images): everything is inline, under a strict CSP.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.model import (
    format_ago,
    format_bytes,
    format_duration,
    format_link_cost,
    format_value,
)

PAGE_REFRESH_MS = 5000
DAY_MS = 86_400_000
EVENTS_SHOWN = 12  # the rest of the day's events fold under a <details>
_W = 1000  # the timeline's viewBox width (stretched to the page's width)
_SPARK_W, _SPARK_H = 120, 28

_BAD_KINDS = frozenset({
    "link_down", "device_failing", "device_down", "alarm_raised", "buffer_unwritable",
    "evicted", "task_failed", "reload_refused",
})  # fmt: skip
_GOOD_KINDS = frozenset({"link_up", "device_ok", "alarm_cleared", "buffer_writable"})

_CSS = """
:root{--bg:#eef1f4;--card:#fff;--ink:#0b1220;--mute:#374151;--line:#9aa4b2;
--ok:#166534;--warn:#92400e;--bad:#991b1b;--info:#1e3a8a}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:16px 16px 28px}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;margin-bottom:14px}
h1{font-size:28px;margin:0}
h2{font-size:15px;text-transform:uppercase;letter-spacing:.05em;color:var(--mute);margin:0 0 8px}
.meta{color:var(--mute)}
.badge{display:inline-block;padding:3px 12px;border-radius:999px;color:#fff;font-weight:700;
font-size:15px;text-transform:uppercase;letter-spacing:.04em}
.badge.ok,.state.ok{background:var(--ok)}.badge.degraded,.state.down{background:var(--bad)}
.state.failing{background:var(--warn)}.state.unknown{background:var(--mute)}
.problems{background:#fff;border:3px solid var(--bad);color:var(--bad);border-radius:10px;
padding:10px 16px;margin-bottom:14px;font-weight:600}
.problems ul{margin:4px 0 0;padding-left:20px}
.stale{background:#fff;border:3px solid var(--warn);color:var(--warn);border-radius:10px;
padding:8px 16px;margin-bottom:14px;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px;
margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px;
margin-bottom:14px}
.cards .card{margin-bottom:0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:var(--mute)}dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%;margin-right:7px}
.dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}
.wide{overflow-x:auto}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:14px;text-transform:uppercase;letter-spacing:.04em;
color:var(--mute);font-weight:700;padding:6px;border-bottom:2px solid var(--line);
white-space:nowrap}
td{padding:8px 6px;border-bottom:1px solid var(--line);vertical-align:top}
td.num,th.num{text-align:right}th.num{white-space:normal}
td.dev{font-weight:700;white-space:nowrap}td.src,td.ago,td.when{white-space:nowrap}
td small{display:block;color:var(--mute);font-size:14px}
.state{display:inline-block;min-width:70px;text-align:center;padding:2px 10px;
border-radius:6px;color:#fff;font-weight:700;font-size:15px}
.vals span.v{display:inline-flex;align-items:center;gap:6px;margin:0 14px 4px 0;
white-space:nowrap}
.vals b{font-weight:700}.vals i{font-style:normal;color:var(--mute)}
td.err{color:var(--bad);min-width:150px;max-width:280px;overflow-wrap:anywhere}
svg.spark{display:block;flex:none}
svg.spark polyline{fill:none;stroke:var(--info);stroke-width:2}
svg.spark circle{fill:var(--info)}
.lane{display:flex;flex-wrap:wrap;align-items:center;gap:2px 12px;margin:6px 0}
.lane .name{flex:0 0 140px;font-weight:700;overflow-wrap:anywhere}
.lane svg{flex:1 1 400px;height:22px;min-width:240px;background:#f3f4f6;
border:1px solid var(--line)}
.lane .sum{flex:1 1 100%;color:var(--mute);padding-left:152px}
.axis{display:flex;justify-content:space-between;margin-left:152px;color:var(--mute)}
rect.bar.bad{fill:var(--bad)}rect.bar.warn{fill:#b45309}rect.bar.alarm{fill:#c2410c}
rect.mark{fill:var(--info)}rect.mark.crash{fill:var(--bad)}rect.mark.stop{fill:var(--mute)}
line.tick{stroke:var(--line);stroke-width:1}
td.kind{white-space:nowrap;font-weight:700}
tr.bad td.kind{color:var(--bad)}tr.good td.kind{color:var(--ok)}
details summary{cursor:pointer;font-weight:700;margin-top:8px}
footer{color:var(--mute);margin-top:12px}
body.is-stale main{opacity:.75}
@media (max-width:600px){.lane .name{flex-basis:100%}.lane .sum,.axis{padding-left:0;margin-left:0}
h1{font-size:24px}}
"""

# Fetches the server-rendered body (the same template) and swaps it in: no markup here.
_JS = """
(function(){
"use strict";
var token=new URLSearchParams(location.search).get("token");
var every=Number(document.body.dataset.refreshMs)||5000,refreshes=0;
function refresh(){
fetch("?body=1",{headers:token?{"Authorization":"Bearer "+token}:{},cache:"no-store"})
.then(function(r){if(!r.ok)throw new Error("HTTP "+r.status);return r.text();})
.then(function(text){
var fresh=new DOMParser().parseFromString(text,"text/html").getElementById("app");
if(!fresh)throw new Error("not a status page");
document.getElementById("app").replaceWith(document.adoptNode(fresh));
document.body.classList.remove("is-stale");
refreshes++;document.body.dataset.refreshes=String(refreshes);
}).catch(function(e){document.body.classList.add("is-stale");
var s=document.getElementById("stale");if(!s){s=document.createElement("div");s.className="stale";
s.id="stale";document.getElementById("app").prepend(s);}
s.textContent="Not updated: "+e.message+" (retrying every "+every/1000+" s)";
}).finally(function(){setTimeout(refresh,every);});}
setTimeout(refresh,every);
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ago(ts: int | None, now: int) -> str:
    return "never" if ts is None else f"{format_duration((now - ts) / 1000)} ago"


def _clock(ts: int, now: int) -> str:
    """``14:05`` today, ``yesterday 23:10`` before (the timeline spans a day)."""
    t, n = time.localtime(ts / 1000), time.localtime(now / 1000)
    hm = time.strftime("%H:%M", t)
    return hm if (t.tm_yday, t.tm_year) == (n.tm_yday, n.tm_year) else f"yesterday {hm}"


def _dl(rows: Iterable[tuple[str, str] | tuple[str, str, str]]) -> str:
    parts = ["<dl>"]
    for row in rows:
        dot = f'<span class="dot {row[2]}"></span>' if len(row) == 3 else ""
        parts.append(f"<dt>{_e(row[0])}</dt><dd>{dot}{_e(row[1])}</dd>")
    parts.append("</dl>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# The timeline: spans and marks on tracks (one per subject), from the events


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    cls: str
    title: str


@dataclass(slots=True)
class Track:
    name: str
    spans: list[Span]
    summary: str


def tracks(events: list[dict[str, Any]], now: int) -> list[Track]:
    """The timeline's tracks for the last day (``events`` newest first, as in ``/status``)."""
    since = now - DAY_MS
    chronological = sorted((e for e in events if e["ts"] >= since), key=lambda e: e["ts"])
    return [
        _link_track(chronological, now, since),
        _restart_track(chronological),
        _alarm_track(chronological, now, since),
        *_command_track(chronological),
        *_device_tracks(chronological, now, since),
    ]


def _span(start: int, end: int, cls: str, what: str, now: int) -> Span:
    ongoing = " (ongoing)" if end >= now else ""
    title = (
        f"{what} {_clock(start, now)} to {_clock(end, now) if not ongoing else 'now'}, "
        f"{format_duration((end - start) / 1000)}{ongoing}"
    )
    return Span(start, end, cls, title)


def _link_track(events: list[dict[str, Any]], now: int, since: int) -> Track:
    spans, down_at = [], None
    for e in events:
        if e["kind"] == "link_down":
            down_at = e["ts"]
        elif e["kind"] == "link_up" and (down_at is not None or "outage_s" in e):
            start = down_at if down_at is not None else e["ts"] - int(e["outage_s"] * 1000)
            spans.append(_span(max(start, since), e["ts"], "bad", "link down", now))
            down_at = None
    if down_at is not None:
        spans.append(_span(down_at, now, "bad", "link down", now))
    if not spans:
        return Track("link", [], "no outage")

    def length(s: Span) -> str:
        return format_duration((s.end - s.start) / 1000)

    total = format_duration(sum(s.end - s.start for s in spans) / 1000)
    longest = length(max(spans, key=lambda s: s.end - s.start))
    recent = ", ".join(f"{_clock(s.start, now)} for {length(s)}" for s in spans[-6:])
    summary = (
        f"{len(spans)} outage{'s' if len(spans) != 1 else ''}, {total} in all, longest "
        f"{longest}: {'... ' if len(spans) > 6 else ''}{recent}"
    )
    return Track("link", spans, summary)


def _restart_track(events: list[dict[str, Any]]) -> Track:
    marks, crashes, starts = [], 0, 0
    for e in events:
        if e["kind"] == "start":
            starts += 1
            crash = e.get("previous") == "crash"
            crashes += crash
            cls = "mark crash" if crash else "mark"
            marks.append(Span(e["ts"], e["ts"], cls, e["message"]))
        elif e["kind"] == "stop":
            marks.append(Span(e["ts"], e["ts"], "mark stop", e["message"]))
    summary = f"{starts} start{'s' if starts != 1 else ''}"
    if crashes:
        summary += f", {crashes} after a CRASH"
    return Track("restarts", marks, summary)


def _alarm_track(events: list[dict[str, Any]], now: int, since: int) -> Track:
    raised: dict[str, int] = {}
    spans = []
    for e in events:
        if e["kind"] == "alarm_raised":
            raised.setdefault(e["alarm"], e["ts"])
        elif e["kind"] == "alarm_cleared":
            start = raised.pop(e["alarm"], since)
            spans.append(_span(start, e["ts"], "alarm", e["alarm"], now))
    spans += [_span(t, now, "alarm", alarm, now) for alarm, t in raised.items()]
    summary = f"{len(spans)} alarm{'s' if len(spans) != 1 else ''}"
    if raised:
        summary += f", raised now: {', '.join(sorted(raised))}"
    return Track("alarms", sorted(spans, key=lambda s: s.start), summary)


def _command_track(events: list[dict[str, Any]]) -> Iterator[Track]:
    """*(v0.3)* A mark for each write's result (a command's or an action's), when there are."""
    marks = [
        Span(e["ts"], e["ts"], "mark" if e.get("state") == "done" else "mark crash", e["message"])
        for e in events
        if e["kind"] == "command"
    ]
    if marks:
        done = sum(e.get("state") == "done" for e in events if e["kind"] == "command")
        yield Track(
            "writes", marks, f"{len(marks)} write{'s' if len(marks) != 1 else ''}, {done} done"
        )


def _device_tracks(events: list[dict[str, Any]], now: int, since: int) -> Iterator[Track]:
    """One track per device that was failing or down today: bars until it came back."""
    bad: dict[str, tuple[int, str]] = {}
    spans: dict[str, list[Span]] = {}
    for e in events:
        device = e.get("device")
        if not isinstance(device, str) or not e["kind"].startswith("device_"):
            continue
        state = e["kind"].removeprefix("device_")
        if device in bad:
            start, was = bad.pop(device)
            cls = "bad" if was == "down" else "warn"
            spans.setdefault(device, []).append(_span(start, e["ts"], cls, f"{device} {was}", now))
        if state != "ok":
            bad[device] = (e["ts"], state)
        spans.setdefault(device, [])
    for device, (start, was) in bad.items():
        cls = "bad" if was == "down" else "warn"
        spans[device].append(_span(start, now, cls, f"{device} {was}", now))
    for device, device_spans in spans.items():
        if not device_spans:
            continue  # only came back (from before the day): nothing to draw
        downs = sum(1 for s in device_spans if s.cls == "bad")
        counts = [(downs, "down"), (len(device_spans) - downs, "failing")]
        summary = ", ".join(f"{what} {_times(n)}" for n, what in counts if n)
        if device in bad:
            summary += f"; {bad[device][1]} now"
        yield Track(device, [s for s in device_spans if s.end >= since], summary)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _timeline(doc: dict[str, Any]) -> Iterator[str]:
    now = doc["ts"]
    since = now - DAY_MS
    scale = _W / DAY_MS
    yield '<section class="card" id="timeline"><h2>Last 24 hours</h2>'
    for track in tracks(doc.get("events", []), now):
        ticks = "".join(
            f'<line class="tick" x1="{x}" y1="0" x2="{x}" y2="22"></line>'
            for x in range(0, _W + 1, _W // 4)
        )
        shapes = []
        for s in track.spans:
            x = max(0.0, (s.start - since) * scale)
            width = max(4.0, (min(s.end, now) - max(s.start, since)) * scale)
            if s.cls.startswith("mark"):
                x, width = min(x, _W - 4.0), 4.0
            kind = "mark" if s.cls.startswith("mark") else "bar"
            classes = s.cls if kind == "mark" else f"bar {s.cls}"
            shapes.append(
                f'<rect class="{classes}" x="{x:.1f}" y="2" width="{width:.1f}" height="18">'
                f"<title>{_e(s.title)}</title></rect>"
            )
        yield (
            f'<div class="lane" data-lane="{_e(track.name)}">'
            f'<span class="name">{_e(track.name)}</span>'
            f'<svg viewBox="0 0 {_W} 22" preserveAspectRatio="none" role="img" '
            f'aria-label="{_e(track.name)}: {_e(track.summary)}">{ticks}{"".join(shapes)}</svg>'
            f'<span class="sum">{_e(track.summary)}</span></div>'
        )
    yield '<div class="axis"><span>24h ago</span><span>18h</span><span>12h</span><span>6h</span>'
    yield "<span>now</span></div></section>"


# ---------------------------------------------------------------------------------------------
# Sparklines and the event list


def sparkline(point: str, history: list[list[Any]], now: int) -> str:
    """An inline SVG of a point's history; its <title> gives the minimum, maximum and span."""
    values = [float(v) for _, v in history]
    times = [int(t) for t, _ in history]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    t0, t1 = times[0], max(times[-1], times[0] + 1)
    pad = 3

    def xy(t: int, v: float) -> str:
        x = pad + (t - t0) / (t1 - t0) * (_SPARK_W - 2 * pad)
        y = _SPARK_H / 2 if hi == lo else pad + (hi - v) / (hi - lo) * (_SPARK_H - 2 * pad)
        return f"{x:.0f},{y:.0f}"

    points = " ".join(xy(t, v) for t, v in zip(times, values, strict=True))
    last_x, last_y = xy(times[-1], values[-1]).split(",")
    span = format_duration((now - t0) / 1000)
    title = f"{point}: min {format_value(lo)}, max {format_value(hi)} over the last {span}"
    return (
        f'<svg class="spark" width="{_SPARK_W}" height="{_SPARK_H}" '
        f'viewBox="0 0 {_SPARK_W} {_SPARK_H}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
        f'<polyline points="{points}"></polyline>'
        f'<circle cx="{last_x}" cy="{last_y}" r="2.5"></circle></svg>'
    )


def _event_rows(events: list[dict[str, Any]], now: int) -> Iterator[str]:
    for e in events:
        tone = "bad" if e["kind"] in _BAD_KINDS or e.get("previous") == "crash" else ""
        tone = tone or ("good" if e["kind"] in _GOOD_KINDS else "")
        yield (
            f'<tr class="event {tone}" data-kind="{_e(e["kind"])}">'
            f'<td class="when">{_e(_clock(e["ts"], now))}</td>'
            f'<td class="kind">{_e(e["kind"].replace("_", " "))}</td>'
            f'<td class="msg">{_e(e["message"])}</td></tr>'
        )


def _events(doc: dict[str, Any]) -> Iterator[str]:
    events, now = doc.get("events", []), doc["ts"]
    yield '<section class="card wide" id="events"><h2>Events</h2>'
    if not events:
        yield "<p>Nothing has happened in the last 24 hours.</p></section>"
        return
    head = "<table><thead><tr><th>When</th><th>What</th><th>Details</th></tr></thead><tbody>"
    yield head + "".join(_event_rows(events[:EVENTS_SHOWN], now)) + "</tbody></table>"
    if len(events) > EVENTS_SHOWN:
        yield f"<details><summary>{len(events) - EVENTS_SHOWN} earlier events</summary>"
        yield "<table><tbody>" + "".join(_event_rows(events[EVENTS_SHOWN:], now))
        yield "</tbody></table></details>"
    yield "</section>"


def _writable(doc: dict[str, Any]) -> Iterator[str]:
    """*(v0.3)* Each writable point with its last write: who, what, and how it ended."""
    points, now = doc.get("commands", {}).get("writable", []), doc["ts"]
    if not points:
        return
    yield '<section class="card wide" id="writable"><h2>Writable points</h2><table><thead><tr>'
    yield "<th>Point</th><th>Last write</th><th>By</th><th>Value</th><th>Result</th></tr></thead>"
    yield "<tbody>"
    for p in points:
        last = p.get("last_write")
        where = _e(f"{p['device']}/{p['point']}")
        if last is None:
            yield f'<tr><td>{where}</td><td colspan="4">never written since start</td></tr>'
            continue
        tone = {"done": "good", "failed": "bad"}.get(last["state"], "")
        result = last["state"] + (f" ({last['reason']})" if last["reason"] else "")
        yield (
            f'<tr class="{tone}"><td>{where}</td><td>{_e(_ago(last["ts"], now))}</td>'
            f"<td>{_e(last['by'])}</td><td>{_e(json.dumps(last['value']))}</td>"
            f"<td>{_e(result)}</td></tr>"
        )
    yield "</tbody></table></section>"


# ---------------------------------------------------------------------------------------------
# The body


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _device_row(source: dict[str, Any], d: dict[str, Any], now: int) -> str:
    history = d.get("history") or {}
    values = "".join(
        f'<span class="v"><i>{_e(k)}</i><b>{_e(format_value(v))}</b>'
        f"{sparkline(k, history.get(k) or [[now, v]], now) if _numeric(v) else ''}</span>"
        for k, v in d["last_values"].items()
    )
    since_ts = d.get("state_since_ts")
    since = ""
    if since_ts is not None:
        since = f"<small>for {_e(format_duration((now - since_ts) / 1000))}</small>"
    return (
        f'<tr class="device" data-device="{_e(d["name"])}">'
        f'<td class="dev">{_e(d["name"])}</td>'
        f'<td class="src">{_e(source["name"])}<small>{_e(source["kind"])}</small></td>'
        f'<td><span class="state {_e(d["state"])}">{_e(d["state"])}</span>{since}</td>'
        f'<td class="ago">{_e(_ago(d["last_ok_ts"], now))}</td>'
        f'<td class="vals">{values}</td>'
        f'<td class="num">{d["reads_ok"]:,}</td>'
        f'<td class="num">{d["reads_failed"]:,}</td>'
        f'<td class="num">{d["parse_errors"]:,}</td>'
        f'<td class="err">{_e(d["last_error"] or "")}</td></tr>'
    )


def _seal_line(seals: dict[str, Any], now: int) -> str:
    if not seals["made_total"] and not seals["last_n"]:
        return "no seal yet"
    line = f"seal {seals['last_n']:,} {format_ago(seals['last_ts'], now)}"
    unsealed = seals["unsealed_seqs_total"]
    return line + (f", {unsealed:,} seqs unsealed after crashes" if unsealed else "")


def _body_parts(doc: dict[str, Any]) -> Iterator[str]:
    g, u, b, h, now = doc["gateway"], doc["uplink"], doc["buffer"], doc["health"], doc["ts"]
    ok = h["status"] == "ok"
    labels = ", ".join(f"{k}={v}" for k, v in g["labels"].items())
    meta = (
        f"v{g['version']} · up {format_duration(g['uptime_s'])} · clock "
        f"{'synced' if g['clock_synced'] else 'NOT synced'}{' · ' + labels if labels else ''}"
    )
    if seals := doc.get("seals"):  # docs/transparency.md
        meta += f" · {_seal_line(seals, now)}"
    yield (
        f'<header class="top"><h1>{_e(g["id"])}</h1>'
        f'<span class="badge {"ok" if ok else "degraded"}">{"healthy" if ok else "degraded"}</span>'
        f'<span class="meta">{_e(meta)}</span></header>'
    )
    if not ok:
        items = "".join(f"<li>{_e(p)}</li>" for p in h["problems"])
        yield f'<section class="problems"><strong>Problems</strong><ul>{items}</ul></section>'
    yield from _timeline(doc)
    evicted = ", ".join(f"{k} {v:,}" for k, v in b["evicted_by_reason"].items())
    yield '<section class="cards"><div class="card"><h2>Uplink</h2>'
    yield _dl([
        ("link", "connected" if u["connected"] else "disconnected",
         "ok" if u["connected"] else "bad"),
        ("server", u["server"] or "-"),
        ("published", f"{u['published_total']:,} samples and alarms"),
        ("last publish", _ago(u["last_publish_ts"], now)),
        ("backlog", f"{u['backlog']:,}"),
        ("link cost", format_link_cost(u)),
        ("last error", u["last_error"] or "-"),
    ])  # fmt: skip
    yield '</div><div class="card"><h2>Buffer</h2>'
    yield _dl([
        ("writable", "yes" if b["writable"] else "NO", "ok" if b["writable"] else "bad"),
        ("held", f"{b['samples']:,} items, {format_bytes(b['bytes'])}"),
        ("oldest", _ago(b["oldest_ts"], now)),
        ("evicted", f"{b['evicted_total']:,}" + (f" ({evicted})" if evicted else "")),
        ("dropped", f"{b['dropped_total']:,}"),
        ("last error", b["last_error"] or "-"),
    ])  # fmt: skip
    yield '</div></section><section class="card wide"><h2>Devices</h2>'
    yield '<table id="devices"><thead><tr>'
    for title, cls in [("Device", ""), ("Source", ""), ("State", ""), ("Last ok", ""),
                       ("Last values, last 30 min", ""), ("OK", "num"), ("Failed", "num"),
                       ("Parse err.", "num"), ("Last error", "")]:  # fmt: skip
        yield f'<th class="{cls}">{title}</th>' if cls else f"<th>{title}</th>"
    yield "</tr></thead><tbody>"
    for s in doc["sources"]:
        for d in s["devices"]:
            yield _device_row(s, d, now)
    yield "</tbody></table></section>"
    yield from _writable(doc)
    yield from _events(doc)
    updated = time.strftime("%H:%M:%S", time.localtime(now / 1000))
    yield f"<footer>updated {updated} · refreshes every {PAGE_REFRESH_MS // 1000} s</footer>"


def render_body(doc: dict[str, Any]) -> str:
    """The page's ``<main id="app">`` for a ``/status`` document: the one template."""
    return f'<main id="app">{"".join(_body_parts(doc))}</main>'


def render_page(doc: dict[str, Any]) -> str:
    """The whole page: inline CSS and script, no external assets."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(doc['gateway']['id'])} · street-gateway</title><style>{_CSS}</style>"
        f'</head><body data-refresh-ms="{PAGE_REFRESH_MS}" data-refreshes="0">'
        f"{render_body(doc)}<script>{_JS}</script></body></html>\n"
    )
