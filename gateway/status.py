"""The HTTP status endpoint: ``/health``, ``/status``, ``/metrics`` and a page at ``/``.

Everything is computed at request time from a :class:`StatusProvider` (the daemon implements
it) that hands out the components' live figures, so this module knows no other component.
:func:`build_status` and :func:`health` are pure; :class:`StatusServer` serves them on aiohttp.

Access: when a token is configured, every path but ``/health`` wants
``Authorization: Bearer <token>`` (compared in constant time); a missing or wrong one gets 401.
A browser cannot add that header to a plain navigation, so the page ``/`` (and only it) also
accepts ``?token=<token>``; its script reads the token back from its own address and sends it
as a header when it refreshes from ``/status``. The page is served with ``Referrer-Policy:
no-referrer`` and no access log is written, so the token does not leak from there; an SSH tunnel
to a loopback-only listener (the default) avoids tokens in addresses altogether.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.model import (
    BufferStats,
    DeviceStats,
    UplinkStats,
    Value,
    format_bytes,
    format_link_cost,
    format_value,
)
from gateway.model import now_ms as wall_clock_ms
from gateway.supervisor import TaskHealth

log = logging.getLogger(__name__)

STALE_INTERVALS = 3  # a device is silent after this many of its intervals without a sample
PAGE_REFRESH_MS = 5000
DEVICE_STATES = ("unknown", "ok", "failing", "down")


@dataclass(frozen=True, slots=True)
class SourceView:
    """One configured source and its devices' live figures."""

    name: str
    kind: str
    devices: list[DeviceStats]


class StatusProvider(Protocol):
    """What the status endpoint reads; the daemon implements it. Every call is cheap and sync."""

    def gateway_info(self) -> dict[str, Any]:
        """``{"id", "version", "uptime_s", "clock_synced"}`` and optionally ``"labels"``."""
        ...

    def uplink_stats(self) -> UplinkStats: ...

    def buffer_stats(self) -> BufferStats: ...

    def tasks(self) -> list[TaskHealth]:
        """The supervised background tasks."""
        ...

    def sources(self) -> list[SourceView]: ...

    def backlog(self) -> int:
        """Samples and alarms held and not yet acknowledged by the broker."""
        ...


# ---------------------------------------------------------------------------------------------
# Pure: the documents


def health(provider: StatusProvider, now_ms: int | None = None) -> tuple[bool, list[str]]:
    """(healthy, problems): degraded when the buffer cannot be written; when a core task failed
    and waits for its restart; when every device has had a poll outcome and every one is failing
    or down; or when no device at all produced a sample within 3 of its intervals (counted from
    start while none has yet).

    One dead device among live ones is not a health problem; it shows in ``/status``. A gateway
    with no devices configured has nothing to judge and is healthy on that count.
    """
    now = wall_clock_ms() if now_ms is None else now_ms
    problems = []
    buffer = provider.buffer_stats()
    if not buffer.writable:
        why = f": {buffer.last_error}" if buffer.last_error else ""
        problems.append(f"buffer cannot be written{why}")
    for task in provider.tasks():
        if task.core and not task.running:
            problems.append(f"task {task.name} failed and is restarting: {task.last_error}")
    devices = [d for s in provider.sources() for d in s.devices]
    started_ms = now - int(float(provider.gateway_info().get("uptime_s", 0)) * 1000)
    if devices and all(d.state in ("failing", "down") for d in devices):
        problems.append(f"every device is failing or down ({_count_states(devices)})")
    elif devices and not any(_fresh(d, now, started_ms) for d in devices):
        problems.append(
            f"no device produced a sample within {STALE_INTERVALS} of its intervals "
            f"({_plural(len(devices), 'device')})"
        )
    return not problems, problems


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _count_states(devices: Sequence[DeviceStats]) -> str:
    """``3 ok, 1 failing, 0 down`` (and ``, 2 not answered yet`` while some are unknown)."""
    counts = dict.fromkeys(DEVICE_STATES, 0)
    for d in devices:
        counts[d.state] += 1
    text = f"{counts['ok']} ok, {counts['failing']} failing, {counts['down']} down"
    if counts["unknown"]:
        text += f", {counts['unknown']} not answered yet"
    return text


def summary_line(provider: StatusProvider) -> str:
    """The one line systemd shows as STATUS=: health, devices by state, uplink, backlog.

    Before any device has had a poll outcome: ``0 of 4 devices answered yet``; never "ok" for a
    device that has not answered.
    """
    devices = [d for s in provider.sources() for d in s.devices]
    if not devices:
        part = "no devices configured"
    elif all(d.state == "unknown" for d in devices):
        part = f"0 of {_plural(len(devices), 'device')} answered yet"
    else:
        part = f"{_plural(len(devices), 'device')}: {_count_states(devices)}"
    uplink = provider.uplink_stats()
    link = f"up ({uplink.server})" if uplink.connected else "down"
    healthy, _ = health(provider)
    return (
        f"{'' if healthy else 'DEGRADED: '}{part}; uplink {link}, "
        f"backlog {provider.backlog()}, published {uplink.published_total}"
    )


def _fresh(device: DeviceStats, now_ms: int, started_ms: int) -> bool:
    since = device.last_ok_ts if device.last_ok_ts is not None else started_ms
    return now_ms - since <= STALE_INTERVALS * device.interval_s * 1000


def build_status(provider: StatusProvider, now_ms: int | None = None) -> dict[str, Any]:
    """The ``/status`` document (docs/reference.md's fields, plus a few more an operator wants)."""
    now = wall_clock_ms() if now_ms is None else now_ms
    info = provider.gateway_info()
    uplink = provider.uplink_stats()
    buffer = provider.buffer_stats()
    healthy, problems = health(provider, now)
    return {
        "ts": now,
        "health": {"status": "ok" if healthy else "degraded", "problems": problems},
        "gateway": {
            "id": info["id"],
            "version": info["version"],
            "uptime_s": round(float(info["uptime_s"]), 1),
            "clock_synced": bool(info["clock_synced"]),
            "labels": dict(info.get("labels") or {}),
        },
        "uplink": {
            "connected": uplink.connected,
            "server": uplink.server,
            "published_total": uplink.published_total,
            "last_publish_ts": uplink.last_publish_ts,
            "backlog": provider.backlog(),
            "bytes_total": uplink.bytes_total,
            "bytes_per_hour": uplink.bytes_per_hour,
            "bytes_per_sample": uplink.bytes_per_sample,
            "alarms_published_total": uplink.alarms_published_total,
            "gaps_published_total": uplink.gaps_published_total,
            "connects_total": uplink.connects_total,
            "connect_failures_total": uplink.connect_failures_total,
            "last_error": uplink.last_error,
        },
        "buffer": {
            "samples": buffer.samples,
            "bytes": buffer.bytes,
            "oldest_ts": buffer.oldest_ts,
            "evicted_total": sum(buffer.evicted_total.values()),
            "evicted_by_reason": dict(buffer.evicted_total),
            "alarms": buffer.alarms,
            "last_seq": buffer.last_seq,
            "dropped_total": buffer.dropped_total,
            "write_errors_total": buffer.write_errors_total,
            "writable": buffer.writable,
            "last_error": buffer.last_error,
            "corrupt_files": list(buffer.corrupt_files),
        },
        "tasks": [
            {
                "name": t.name,
                "running": t.running,
                "failures": t.failures,
                "last_error": t.last_error,
                "last_failure_ts": t.last_failure_ts,
            }
            for t in provider.tasks()
        ],
        "sources": [
            {
                "name": source.name,
                "kind": source.kind,
                "devices": [_device(d) for d in source.devices],
            }
            for source in provider.sources()
        ],
    }


def _device(d: DeviceStats) -> dict[str, Any]:
    return {
        "name": d.name,
        "state": d.state,
        "last_ok_ts": d.last_ok_ts,
        "reads_ok": d.reads_ok,
        "reads_failed": d.reads_failed,
        "parse_errors": d.parse_errors,
        "last_error": d.last_error,
        "interval_s": d.interval_s,
        "interval_reason": d.interval_reason,
        "read_mode": d.read_mode,
        "last_values": {k: _json_value(v) for k, v in d.last_values.items()},
    }


def _json_value(value: Value) -> Value | None:
    """NaN and infinities (a float register can hold them) are not JSON: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Prometheus: the text exposition written here, byte for byte as prometheus_client's
# generate_latest() writes these families (tests/test_status_metrics_format.py compares them).
# Importing prometheus_client costs ~1 MB of the daemon's peak RSS (its HTTP and WSGI servers,
# push gateway and default collectors come with it) for the ~40 lines below (docs/perf/e2e.md).

CONTENT_TYPE_LATEST = "text/plain; version=1.0.0; charset=utf-8"


@dataclass(slots=True)
class MetricFamily:
    """One metric: its HELP, TYPE and samples. A counter's ``name`` is without ``_total``."""

    name: str
    kind: Literal["counter", "gauge"]
    documentation: str
    labels: Sequence[str] = ()
    samples: list[tuple[Sequence[str], float]] = field(default_factory=list)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.samples.append((values, value))

    @classmethod
    def of(
        cls,
        kind: Literal["counter", "gauge"],
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] = (),
    ) -> MetricFamily:
        """A family with labels (samples added later), or one unlabelled sample of ``value``."""
        family = cls(name, kind, documentation, labels)
        if value is not None:
            family.add_metric((), value)
        return family


def gauge_family(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    return MetricFamily.of("gauge", name, doc, value, labels)


def counter_family(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    return MetricFamily.of("counter", name, doc, value, labels)


def generate_latest(families: Iterable[MetricFamily]) -> bytes:
    """The Prometheus text format: HELP, TYPE, then one line per sample, labels sorted by name."""
    out = []
    for family in families:
        name = f"{family.name}_total" if family.kind == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.kind}\n")
        for values, value in family.samples:
            pairs = sorted(zip(family.labels, values, strict=True))
            labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in pairs)
            out.append(f"{name}{{{labels}}} " if labels else f"{name} ")
            out.append(f"{_go_float(value)}\n")
    return "".join(out).encode("utf-8")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go_float(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it: 1.0, 3.145728e+06, NaN, +Inf."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _uplink_families(uplink: UplinkStats, backlog: int) -> Iterator[MetricFamily]:
    def gauge(name: str, doc: str, value: float) -> MetricFamily:
        return gauge_family(f"street_gateway_{name}", doc, value=value)

    def counter(name: str, doc: str, value: float) -> MetricFamily:
        return counter_family(f"street_gateway_{name}", doc, value=value)

    yield gauge("uplink_connected", "1 while connected to a broker", uplink.connected)
    yield counter("uplink_published", "Samples and alarms acknowledged by the broker",
                  uplink.published_total)  # fmt: skip
    yield counter("uplink_bytes", "Bytes of MQTT PUBLISH packets sent upstream",
                  uplink.bytes_total)  # fmt: skip
    yield gauge("uplink_bytes_per_hour", "Bytes per hour upstream at the last minute's rate",
                uplink.bytes_per_hour)  # fmt: skip
    yield counter("uplink_alarms_published", "Alarms acknowledged by the broker",
                  uplink.alarms_published_total)  # fmt: skip
    yield counter("uplink_gaps_published", "Gap messages acknowledged by the broker",
                  uplink.gaps_published_total)  # fmt: skip
    yield counter("uplink_messages", "MQTT messages published", uplink.messages_total)
    yield counter("uplink_connects", "Successful connections", uplink.connects_total)
    yield counter("uplink_connect_failures", "Failed connection attempts",
                  uplink.connect_failures_total)  # fmt: skip
    if uplink.last_publish_ts is not None:
        yield gauge("uplink_last_publish_timestamp_seconds", "Unix time of the last publish",
                    uplink.last_publish_ts / 1000)  # fmt: skip
    yield gauge("uplink_backlog", "Samples and alarms not yet acknowledged by the broker",
                backlog)  # fmt: skip


def _task_families(tasks: list[TaskHealth]) -> Iterator[MetricFamily]:
    failures = counter_family(
        "street_gateway_task_failures", "Unexpected failures of a background task",
        labels=["task"],
    )  # fmt: skip
    running = gauge_family(
        "street_gateway_task_running", "1 while the task runs, 0 while it waits to restart",
        labels=["task"],
    )  # fmt: skip
    for task in tasks:
        failures.add_metric([task.name], task.failures)
        running.add_metric([task.name], task.running)
    yield from (failures, running)


class StatusCollector:
    """Reads the provider at scrape time, once per scrape."""

    def __init__(self, provider: StatusProvider) -> None:
        self._provider = provider

    def collect(self) -> Iterable[MetricFamily]:
        p = self._provider
        info = p.gateway_info()
        uplink, buffer = p.uplink_stats(), p.buffer_stats()
        healthy, _ = health(p)

        def gauge(name: str, doc: str, value: float) -> MetricFamily:
            return gauge_family(f"street_gateway_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> MetricFamily:
            return counter_family(f"street_gateway_{name}", doc, value=value)

        build = gauge_family(
            "street_gateway_build_info", "Gateway id and version", labels=["gateway", "version"]
        )
        build.add_metric([str(info["id"]), str(info["version"])], 1)
        yield build
        yield gauge("uptime_seconds", "Seconds since the daemon started", float(info["uptime_s"]))
        yield gauge("clock_synced", "1 when the system clock is synchronised", info["clock_synced"])
        yield gauge("healthy", "1 when /health answers 200", healthy)
        yield from _task_families(p.tasks())

        labels = ["source", "device"]
        reads_ok = counter_family(
            "street_gateway_device_reads_ok", "Successful polls or lines", labels=labels
        )
        reads_failed = counter_family(
            "street_gateway_device_reads_failed", "Failed polls", labels=labels
        )
        parse_errors = counter_family(
            "street_gateway_device_parse_errors",
            "Lines or answers that did not parse",
            labels=labels,
        )
        last_ok = gauge_family(
            "street_gateway_device_last_ok_timestamp_seconds",
            "Unix time of the device's last good poll",
            labels=labels,
        )
        state = gauge_family(
            "street_gateway_device_state",
            "1 for the device's current state",
            labels=[*labels, "state"],
        )
        for source in p.sources():
            for d in source.devices:
                key = [source.name, d.name]
                reads_ok.add_metric(key, d.reads_ok)
                reads_failed.add_metric(key, d.reads_failed)
                parse_errors.add_metric(key, d.parse_errors)
                if d.last_ok_ts is not None:
                    last_ok.add_metric(key, d.last_ok_ts / 1000)
                for name in DEVICE_STATES:
                    state.add_metric([*key, name], float(d.state == name))
        yield from (reads_ok, reads_failed, parse_errors, last_ok, state)

        yield gauge("buffer_samples", "Samples and alarms held, not yet acknowledged",
                    buffer.samples)  # fmt: skip
        yield gauge("buffer_alarms", "Alarms held, not yet acknowledged", buffer.alarms)
        yield gauge("buffer_bytes", "Buffer database and WAL size on disk", buffer.bytes)
        if buffer.oldest_ts is not None:
            yield gauge("buffer_oldest_timestamp_seconds", "Unix time of the oldest held item",
                        buffer.oldest_ts / 1000)  # fmt: skip
        yield gauge("buffer_last_seq", "Highest seq handed out", buffer.last_seq)
        evicted = counter_family(
            "street_gateway_buffer_evicted", "Items given up, by gap reason", labels=["reason"]
        )
        for reason in sorted({"max_size", "max_age", *buffer.evicted_total}):
            evicted.add_metric([reason], buffer.evicted_total.get(reason, 0))
        yield evicted
        yield counter("buffer_dropped", "Samples refused: memory queue full while the disk "
                      "failed, or not storable", buffer.dropped_total)  # fmt: skip
        yield counter("buffer_write_errors", "Failed buffer writes", buffer.write_errors_total)
        yield gauge("buffer_writable", "1 when the buffer accepts writes", buffer.writable)

        yield from _uplink_families(uplink, p.backlog())


# ---------------------------------------------------------------------------------------------
# The page: rendered here on first load (readable without JS), then refreshed by its script.

_CSS = """
:root{--bg:#f4f6f8;--card:#fff;--ink:#1c2430;--mute:#667085;--line:#e3e7ec;
--ok:#16a34a;--warn:#d97706;--bad:#dc2626}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 28px}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:10px 16px;margin-bottom:14px}
h1{font-size:26px;margin:0;letter-spacing:-.01em}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--mute);margin:0 0 8px}
.meta{color:var(--mute)}
.badge{display:inline-block;padding:3px 12px;border-radius:999px;color:#fff;font-weight:600;
font-size:13px;text-transform:uppercase;letter-spacing:.05em}
.badge.ok,.state.ok{background:var(--ok)}.badge.degraded,.state.down{background:var(--bad)}
.state.failing{background:var(--warn)}.state.unknown{background:var(--mute)}
.problems{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;border-radius:10px;
padding:10px 16px;margin-bottom:14px}
.problems ul{margin:4px 0 0;padding-left:20px}
.stale{background:#fffbeb;border:1px solid #fde68a;color:#92400e;border-radius:10px;
padding:8px 16px;margin-bottom:14px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px;
margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 18px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:var(--mute)}dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:7px;
vertical-align:0}
.dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.05em;
color:var(--mute);font-weight:600;padding:6px 10px;border-bottom:2px solid var(--line);
white-space:nowrap}
td{padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:top}
tr.device:last-child td{border-bottom:0}
td.num,th.num{text-align:right}
td.dev{font-weight:600;white-space:nowrap}td.src{white-space:nowrap}
td.src small{display:block;color:var(--mute);font-size:12px}
td.ago{white-space:nowrap}
.state{display:inline-block;min-width:64px;text-align:center;padding:2px 10px;
border-radius:6px;color:#fff;font-weight:600;font-size:13px}
.vals span{display:inline-block;margin-right:12px;white-space:nowrap}
.vals b{font-weight:600}.vals i{font-style:normal;color:var(--mute);margin-right:3px}
td.err{color:#b42318;font-size:13px;max-width:260px;overflow-wrap:break-word}
.card.wide{overflow-x:auto}
.bad-text{color:var(--bad);font-weight:600}
footer{color:var(--mute);font-size:13px;margin-top:12px}
body.is-stale main{opacity:.72}
"""

# The script renders the same markup as _render_body from a /status document, with DOM nodes
# and textContent only (never innerHTML), so every string is escaped by construction.
_JS = """
(function(){
"use strict";
var token=new URLSearchParams(location.search).get("token");
var every=Number(document.body.dataset.refreshMs)||5000;
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function add(p){for(var i=1;i<arguments.length;i++){if(arguments[i])p.appendChild(arguments[i]);}
return p;}
function ago(ts,now){if(ts===null||ts===undefined)return "never";var s=Math.max(0,(now-ts)/1000);
return dur(s)+" ago";}
function dur(s){s=Math.floor(s);if(s<60)return s+" s";if(s<3600)return Math.floor(s/60)+" min";
if(s<86400)return Math.floor(s/3600)+" h "+Math.floor(s%3600/60)+" min";
return Math.floor(s/86400)+" d "+Math.floor(s%86400/3600)+" h";}
function bytes(n){var u=["B","KiB","MiB","GiB"],i=0;while(n>=1024&&i<3){n/=1024;i++;}
return (i?n.toFixed(1):n)+" "+u[i];}
function num(v){if(v===null)return "NaN";if(typeof v==="boolean")return v?"true":"false";
return String(Math.round(v*1000)/1000);}
function hms(t){return [t.getHours(),t.getMinutes(),t.getSeconds()].map(function(n){
return (n<10?"0":"")+n;}).join(":");}
function count(n){return Number(n).toLocaleString("en-US");}
function cost(u){return bytes(u.bytes_total)+" sent · "+bytes(u.bytes_per_hour)+"/h · "+
(u.bytes_per_sample===null?"-":u.bytes_per_sample+" B")+" per sample";}
function dl(rows){var d=el("dl");rows.forEach(function(r){add(d,el("dt",null,r[0]));
var dd=el("dd");if(r[2])add(dd,el("span","dot "+r[2]));
dd.appendChild(document.createTextNode(r[1]));d.appendChild(dd);});return d;}
function render(doc){
var g=doc.gateway,u=doc.uplink,b=doc.buffer,now=doc.ts,h=doc.health,ok=h.status==="ok";
var m=el("main");m.id="app";
var head=add(el("header","top"),el("h1",null,g.id),
el("span","badge "+(ok?"ok":"degraded"),ok?"healthy":"degraded"));
var labels=Object.keys(g.labels||{}).map(function(k){return k+"="+g.labels[k];}).join(", ");
add(head,el("span","meta","v"+g.version+" · up "+dur(g.uptime_s)+" · clock "+
(g.clock_synced?"synced":"NOT synced")+(labels?" · "+labels:"")));
add(m,head);
if(!ok){var pr=add(el("section","problems"),el("strong",null,"Problems"));var ul=el("ul");
h.problems.forEach(function(p){add(ul,el("li",null,p));});add(m,add(pr,ul));}
var cards=el("section","cards");
add(cards,add(el("div","card"),el("h2",null,"Uplink"),dl([
["link",u.connected?"connected":"disconnected",u.connected?"ok":"bad"],
["server",u.server||"-"],["published",count(u.published_total)+" samples and alarms"],
["last publish",ago(u.last_publish_ts,now)],["backlog",count(u.backlog)],
["link cost",cost(u)],
["last error",u.last_error||"-"]])));
var ev=Object.keys(b.evicted_by_reason||{}).map(function(k){
return k+" "+count(b.evicted_by_reason[k]);}).join(", ");
add(cards,add(el("div","card"),el("h2",null,"Buffer"),dl([
["writable",b.writable?"yes":"NO",b.writable?"ok":"bad"],
["held",count(b.samples)+" items, "+bytes(b.bytes)],["oldest",ago(b.oldest_ts,now)],
["evicted",count(b.evicted_total)+(ev?" ("+ev+")":"")],["dropped",count(b.dropped_total)],
["last error",b.last_error||"-"]])));
add(m,cards);
var t=el("table");t.id="devices";var hr=el("tr");
[["Device"],["Source"],["State"],["Last ok"],["Last values"],["OK","num"],["Failed","num"],
["Parse err.","num"],["Last error"]].forEach(function(c){add(hr,el("th",c[1],c[0]));});
add(t,add(el("thead"),hr));var tb=el("tbody");
doc.sources.forEach(function(s){s.devices.forEach(function(d){
var tr=el("tr","device");tr.dataset.device=d.name;var vals=el("td","vals");
Object.keys(d.last_values).forEach(function(k){add(vals,add(el("span"),el("i",null,k),
el("b",null,num(d.last_values[k]))));});
add(tr,el("td","dev",d.name),add(el("td","src",s.name),el("small",null,s.kind)),
add(el("td"),el("span","state "+d.state,d.state)),el("td","ago",ago(d.last_ok_ts,now)),vals,
el("td","num",count(d.reads_ok)),el("td","num",count(d.reads_failed)),
el("td","num",count(d.parse_errors)),el("td","err",d.last_error||""));add(tb,tr);});});
add(t,tb);add(m,add(el("section","card wide"),el("h2",null,"Devices"),t));
add(m,add(el("footer"),document.createTextNode("updated "+hms(new Date(now))+
" · refreshes every "+every/1000+" s")));
return m;}
var refreshes=0;
function refresh(){
var headers=token?{"Authorization":"Bearer "+token}:{};
fetch("status",{headers:headers,cache:"no-store"}).then(function(r){
if(!r.ok)throw new Error("HTTP "+r.status);return r.json();}).then(function(doc){
document.getElementById("app").replaceWith(render(doc));document.body.classList.remove("is-stale");
refreshes++;document.body.dataset.refreshes=String(refreshes);
}).catch(function(e){document.body.classList.add("is-stale");
var s=document.getElementById("stale");if(!s){s=el("div","stale");s.id="stale";
document.getElementById("app").prepend(s);}
s.textContent="Not updated: "+e.message+" (retrying every "+every/1000+" s)";
}).finally(function(){setTimeout(refresh,every);});}
setTimeout(refresh,every);
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_CSP = (
    f"default-src 'none'; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _dur(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _ago(ts: int | None, now: int) -> str:
    return "never" if ts is None else f"{_dur((now - ts) / 1000)} ago"


def _dl(rows: Iterable[tuple[str, str] | tuple[str, str, str]]) -> str:
    parts = ["<dl>"]
    for row in rows:
        dot = f'<span class="dot {row[2]}"></span>' if len(row) == 3 else ""
        parts.append(f"<dt>{_e(row[0])}</dt><dd>{dot}{_e(row[1])}</dd>")
    parts.append("</dl>")
    return "".join(parts)


def _render_body(doc: dict[str, Any]) -> Iterator[str]:
    g, u, b, h, now = doc["gateway"], doc["uplink"], doc["buffer"], doc["health"], doc["ts"]
    ok = h["status"] == "ok"
    labels = ", ".join(f"{k}={v}" for k, v in g["labels"].items())
    meta = (
        f"v{g['version']} · up {_dur(g['uptime_s'])} · clock "
        f"{'synced' if g['clock_synced'] else 'NOT synced'}{' · ' + labels if labels else ''}"
    )
    yield (
        f'<header class="top"><h1>{_e(g["id"])}</h1>'
        f'<span class="badge {"ok" if ok else "degraded"}">{"healthy" if ok else "degraded"}</span>'
        f'<span class="meta">{_e(meta)}</span></header>'
    )
    if not ok:
        items = "".join(f"<li>{_e(p)}</li>" for p in h["problems"])
        yield f'<section class="problems"><strong>Problems</strong><ul>{items}</ul></section>'
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
                       ("Last values", ""), ("OK", "num"), ("Failed", "num"),
                       ("Parse err.", "num"), ("Last error", "")]:  # fmt: skip
        yield f'<th class="{cls}">{title}</th>' if cls else f"<th>{title}</th>"
    yield "</tr></thead><tbody>"
    for s in doc["sources"]:
        for d in s["devices"]:
            values = "".join(
                f"<span><i>{_e(k)}</i><b>{_e(format_value(v))}</b></span>"
                for k, v in d["last_values"].items()
            )
            yield (
                f'<tr class="device" data-device="{_e(d["name"])}">'
                f'<td class="dev">{_e(d["name"])}</td>'
                f'<td class="src">{_e(s["name"])}<small>{_e(s["kind"])}</small></td>'
                f'<td><span class="state {_e(d["state"])}">{_e(d["state"])}</span></td>'
                f'<td class="ago">{_e(_ago(d["last_ok_ts"], now))}</td>'
                f'<td class="vals">{values}</td>'
                f'<td class="num">{d["reads_ok"]:,}</td>'
                f'<td class="num">{d["reads_failed"]:,}</td>'
                f'<td class="num">{d["parse_errors"]:,}</td>'
                f'<td class="err">{_e(d["last_error"] or "")}</td></tr>'
            )
    updated = time.strftime("%H:%M:%S", time.localtime(now / 1000))
    yield (
        f"</tbody></table></section><footer>updated {updated} · refreshes every "
        f"{PAGE_REFRESH_MS // 1000} s</footer>"
    )


def render_page(doc: dict[str, Any]) -> str:
    """The whole page for a /status document: inline CSS and script, no external assets."""
    body = "".join(_render_body(doc))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(doc['gateway']['id'])} · street-gateway</title><style>{_CSS}</style>"
        f'</head><body data-refresh-ms="{PAGE_REFRESH_MS}" data-refreshes="0">'
        f'<main id="app">{body}</main><script>{_JS}</script></body></html>\n'
    )


# ---------------------------------------------------------------------------------------------
# The server

_OPEN_PATHS = frozenset({"/health"})
_QUERY_TOKEN_PATHS = frozenset({"/"})


def _token_middleware(token: str | None) -> Middleware:
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in _OPEN_PATHS:
            return await handler(request)
        given = ""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif request.path in _QUERY_TOKEN_PATHS:
            given = request.query.get("token", "")
        if given and hmac.compare_digest(given.encode(), expected):
            return await handler(request)
        return web.json_response(
            {"error": "a bearer token is required" if not given else "wrong token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="street-gateway"'},
        )

    return check


@web.middleware
async def _no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def make_app(provider: StatusProvider, *, token: str | None = None) -> web.Application:
    """The aiohttp application; :class:`StatusServer` runs it."""

    async def get_health(request: web.Request) -> web.Response:
        healthy, problems = health(provider)
        if healthy:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "degraded", "problems": problems}, status=503)

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(
            build_status(provider), dumps=lambda d: json.dumps(d, allow_nan=False)
        )

    async def get_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(StatusCollector(provider).collect()))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def get_page(request: web.Request) -> web.Response:
        return web.Response(
            text=render_page(build_status(provider)),
            content_type="text/html",
            headers={"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"},
        )

    app = web.Application(middlewares=[_no_store, _token_middleware(token)])
    app.router.add_get("/health", get_health)
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/", get_page)
    return app


class StatusServer:
    """Serves the status endpoint while the ``async with`` block runs."""

    def __init__(
        self, provider: StatusProvider, *, host: str, port: int, token: str | None
    ) -> None:
        self._app = make_app(provider, token=token)
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (a free one when constructed with port 0)."""
        if self._port is None:
            raise RuntimeError("the status server is not running")
        return self._port

    async def __aenter__(self) -> StatusServer:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("status endpoint on http://%s:%d/", self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None
