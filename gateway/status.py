"""The HTTP status endpoint: ``/health``, ``/status``, ``/metrics`` and a page at ``/``.

Everything is computed at request time from a :class:`StatusProvider` (the daemon implements
it) that hands out the components' live figures, so this module knows no other component.
:func:`build_status` and :func:`health` are pure; :class:`StatusServer` serves them over
:mod:`gateway.httpd` (h11).

Access (:mod:`gateway.status_access`): when a token is configured, every path but ``/health``
wants ``Authorization: Bearer <token>``; a reload may change it (:meth:`StatusServer.use_token`).
Without one, only the gateway's own Host names are answered (DNS rebinding). A browser cannot
add that header to a plain navigation, so the page ``/`` (and only it) also accepts
``?token=<token>``; its script reads the token back from its own address and sends it
as a header when it refreshes (``/?body=1``: the same template's ``<main>``, see
:mod:`gateway.page`). The page is served with ``Referrer-Policy:
no-referrer`` and no access log is written, so the token does not leak from there; an SSH tunnel
to a loopback-only listener (the default) avoids tokens in addresses altogether.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from gateway.events import EVENT_KINDS
from gateway.httpd import REFUSALS, Handler, HttpServer, HttpStats, Request, Response
from gateway.model import BufferStats, DeviceStats, StatusEvent, UplinkStats, Value, format_count
from gateway.model import now_ms as wall_clock_ms
from gateway.page import CSP, render_body, render_page
from gateway.prometheus import CONTENT_TYPE_LATEST, MetricFamily, counter, gauge, generate_latest
from gateway.status_access import Access, guarded, json_response
from gateway.supervisor import TaskHealth

log = logging.getLogger(__name__)

STALE_INTERVALS = 3  # a device is silent after this many of its intervals without a sample
DEVICE_STATES = ("unknown", "ok", "failing", "down")


@dataclass(frozen=True, slots=True)
class SourceView:
    """One configured source and its devices' live figures."""

    name: str
    kind: str
    devices: list[DeviceStats]
    # the link's own error counters, when its transport keeps some (RTU over TCP: crc_errors,
    # garbage), shown per source as they are not any one device's
    link: Mapping[str, int] = field(default_factory=dict)


def link_counters(source: object) -> Mapping[str, int]:
    """A running source's link counters (``link_counters`` when it has them, else none)."""
    counters = getattr(source, "link_counters", None)
    return dict(counters) if isinstance(counters, Mapping) else {}


class StatusProvider(Protocol):
    """What the status endpoint reads; the daemon implements it. Every call is cheap and sync."""

    def gateway_info(self) -> dict[str, Any]:
        """``{"id", "version", "uptime_s", "clock_synced"}`` and optionally ``"labels"`` and
        ``"event_loop"``."""
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

    def events(self) -> list[StatusEvent]:
        """The last day's events, newest first."""
        ...

    def event_counts(self) -> Mapping[str, int]:
        """Events recorded by this run, by kind (the ``/metrics`` counter)."""
        ...

    def history(self, device: str, now_ms: int) -> dict[str, list[list[Value]]]:
        """The device's last 30 min per numeric and boolean point: ``[[ts, value], ...]``."""
        ...

    def commands(self) -> dict[str, Any]:
        """*(v0.3)* ``{"results_total": {state: n}, "writable": [{"device", "point",
        "last_write"}]}`` (``gateway.commands.channel.Commands.record``)."""
        ...


# ---------------------------------------------------------------------------------------------
# Pure: the documents


def health(provider: StatusProvider, now_ms: int | None = None) -> tuple[bool, list[str]]:
    """(healthy, problems): degraded when the buffer cannot be written; when an essential task
    failed and waits for its restart; when every device has had a poll outcome and every one is
    failing or down; or when no device at all produced a sample within 3 of its intervals
    (counted from start while none has yet).

    One dead device among live ones is not a health problem; it shows in ``/status``. A gateway
    with no devices configured has nothing to judge and is healthy on that count.
    """
    now = wall_clock_ms() if now_ms is None else now_ms
    problems = []
    buffer = provider.buffer_stats()
    if not buffer.writable:
        why = f": {buffer.last_error}" if buffer.last_error else ""
        problems.append(f"buffer cannot be written{why}")
    if buffer.room_low:  # the file stops growing: an outage's samples would be evicted
        free = 100 * (buffer.fs_free_fraction or 0)
        problems.append(f"buffer has no room left to take an outage's samples ({free:.1f} % free)")
    for task in provider.tasks():
        if task.essential and not task.running:
            problems.append(f"task {task.name} failed and is restarting: {task.last_error}")
    devices = [d for s in provider.sources() for d in s.devices]
    started_ms = now - int(float(provider.gateway_info().get("uptime_s", 0)) * 1000)
    if devices and all(d.state in ("failing", "down") for d in devices):
        problems.append(f"every device is failing or down ({_count_states(devices)})")
    elif devices and not any(_fresh(d, now, started_ms) for d in devices):
        problems.append(
            f"no device produced a sample within {STALE_INTERVALS} of its intervals "
            f"({format_count(len(devices), 'device')})"
        )
    return not problems, problems


def notices(provider: StatusProvider) -> list[str]:
    """Problems an operator must see that leave health ``ok`` (200): the gateway works and keeps
    every sample; what it waits for is upstream (docs/reference.md, "/health")."""
    waiting = provider.uplink_stats().waiting_for
    if waiting is None:
        return []
    return [f"waiting for {waiting}: no births and no data upstream, samples are buffered"]


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
        part = f"0 of {format_count(len(devices), 'device')} answered yet"
    else:
        part = f"{format_count(len(devices), 'device')}: {_count_states(devices)}"
    uplink = provider.uplink_stats()
    link = f"up ({uplink.server})" if uplink.connected else "down"
    if uplink.waiting_for:
        link = f"connected, waiting for {uplink.waiting_for}"
    healthy, _ = health(provider)
    return (
        f"{'' if healthy else 'DEGRADED: '}{part}; uplink {link}, "
        f"backlog {provider.backlog()}, published {uplink.published_total}"
    )


def _fresh(device: DeviceStats, now_ms: int, started_ms: int) -> bool:
    since = device.last_ok_ts if device.last_ok_ts is not None else started_ms
    return now_ms - since <= STALE_INTERVALS * device.interval_s * 1000


def build_status(
    provider: StatusProvider, now_ms: int | None = None, *, http: HttpStats | None = None
) -> dict[str, Any]:
    """The ``/status`` document (docs/reference.md's fields, plus a few more an operator wants);
    with ``http``, the status server's own figures too."""
    now = wall_clock_ms() if now_ms is None else now_ms
    info = provider.gateway_info()
    uplink = provider.uplink_stats()
    buffer = provider.buffer_stats()
    healthy, problems = health(provider, now)
    return {
        "ts": now,
        "health": {
            "status": "ok" if healthy else "degraded",
            "problems": problems + notices(provider),
        },
        "gateway": {
            "id": info["id"],
            "version": info["version"],
            "uptime_s": round(float(info["uptime_s"]), 1),
            "clock_synced": bool(info["clock_synced"]),
            "labels": dict(info.get("labels") or {}),
            "event_loop": info.get("event_loop"),
            "config_source": info.get("config_source", "local"),
        },
        **{key: info[key] for key in ("identity", "seals") if key in info},
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
            "waiting_for": uplink.waiting_for,
            "inbound_refused": dict(uplink.inbound_refused),
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
            "room_bytes": buffer.room_bytes,
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
                "devices": [_device(d, provider.history(d.name, now)) for d in source.devices],
                **({"link": dict(source.link)} if source.link else {}),
            }
            for source in provider.sources()
        ],
        "events": [_event(e) for e in sorted(provider.events(), key=_newest_first)],
        "commands": provider.commands(),
        **({"status_server": _http(http)} if http is not None else {}),
    }


def _http(http: HttpStats) -> dict[str, Any]:
    return {
        "connections": http.connections,
        "requests_total": http.requests_total,
        "refused_by_reason": {reason: http.refused_total[reason] for reason in REFUSALS},
    }


def _newest_first(event: StatusEvent) -> int:
    return -event.ts_ms  # events told a moment late (about 1 s) go in their place


def _event(e: StatusEvent) -> dict[str, Any]:
    fields = {k: v for k, v in e.fields.items() if k not in ("ts", "kind", "message")}
    return {"ts": e.ts_ms, "kind": e.kind, "message": e.message, **fields}


def _device(d: DeviceStats, history: dict[str, list[list[Value]]]) -> dict[str, Any]:
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
        "state_since_ts": d.state_since_ms,
        "history": history,
    }


def _json_value(value: Value) -> Value | None:
    """NaN and infinities (a float register can hold them) are not JSON: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Prometheus (written by gateway.prometheus)


_PREFIX = "street_gateway_"


def _gauge(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    return gauge(_PREFIX + name, doc, value, labels)


def _counter(
    name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()
) -> MetricFamily:
    return counter(_PREFIX + name, doc, value, labels)


def _uplink_families(uplink: UplinkStats, backlog: int) -> Iterator[MetricFamily]:
    gauge, counter = _gauge, _counter
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
    yield gauge("uplink_waiting", "1 while connected but holding births and data back "
                "(Sparkplug: waiting for the primary host)",
                uplink.waiting_for is not None)  # fmt: skip
    refused = counter(
        "uplink_inbound_refused",
        "Messages from the broker refused unread or unacted on, by reason",
        labels=["reason"],
    )
    for reason, count in sorted(uplink.inbound_refused.items()):
        refused.add_metric([reason], count)
    yield refused


def _seal_families(seals: Mapping[str, Any] | None) -> Iterator[MetricFamily]:
    if seals:  # docs/transparency.md
        yield _counter("seals_made", "Seals made and stored", seals["made_total"])
        yield _gauge("seal_last_n", "n of the last seal made (0: none yet)", seals["last_n"])
        yield _gauge("seal_last_timestamp_seconds", "Unix time of the last seal (0: none yet)",
                     (seals["last_ts"] or 0) / 1000)  # fmt: skip
        yield _counter("seal_unsealed_seqs", "Seqs sealed as unsealed (crash) ranges",
                       seals["unsealed_seqs_total"])  # fmt: skip


def _task_families(tasks: list[TaskHealth]) -> Iterator[MetricFamily]:
    failures = _counter(
            "task_failures", "Unexpected failures of a background task",
        labels=["task"],
    )  # fmt: skip
    running = _gauge(
            "task_running", "1 while the task runs, 0 while it waits to restart",
        labels=["task"],
    )  # fmt: skip
    for task in tasks:
        failures.add_metric([task.name], task.failures)
        running.add_metric([task.name], task.running)
    yield from (failures, running)


class StatusCollector:
    """Reads the provider at scrape time, once per scrape."""

    def __init__(self, provider: StatusProvider, http: HttpStats | None = None) -> None:
        self._provider = provider
        self._http = http

    def collect(self) -> Iterable[MetricFamily]:
        p = self._provider
        info = p.gateway_info()
        uplink, buffer = p.uplink_stats(), p.buffer_stats()
        healthy, _ = health(p)
        gauge, counter = _gauge, _counter

        build = _gauge("build_info", "Gateway id and version", labels=["gateway", "version"])
        build.add_metric([str(info["id"]), str(info["version"])], 1)
        yield build
        yield gauge("uptime_seconds", "Seconds since the daemon started", float(info["uptime_s"]))
        yield gauge("clock_synced", "1 when the system clock is synchronised", info["clock_synced"])
        yield gauge("healthy", "1 when /health answers 200", healthy)
        yield from (*_task_families(p.tasks()), *_seal_families(info.get("seals")))

        labels = ["source", "device"]
        reads_ok = _counter("device_reads_ok", "Successful polls or lines", labels=labels)
        reads_failed = _counter("device_reads_failed", "Failed polls", labels=labels)
        parse_errors = _counter(
            "device_parse_errors",
            "Lines or answers that did not parse",
            labels=labels,
        )
        last_ok = _gauge(
            "device_last_ok_timestamp_seconds",
            "Unix time of the device's last good poll",
            labels=labels,
        )
        state = _gauge(
            "device_state",
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
        link = _counter(
            "source_link_errors",
            "Link errors of a source's transport, by kind (RTU over TCP: crc_errors, garbage)",
            labels=["source", "kind"],
        )
        for source in p.sources():
            for kind, value in sorted(source.link.items()):
                link.add_metric([source.name, kind], value)
        yield link

        yield gauge("buffer_samples", "Samples and alarms held, not yet acknowledged",
                    buffer.samples)  # fmt: skip
        yield gauge("buffer_alarms", "Alarms held, not yet acknowledged", buffer.alarms)
        yield gauge("buffer_bytes", "Buffer database and WAL size on disk", buffer.bytes)
        if buffer.oldest_ts is not None:
            yield gauge("buffer_oldest_timestamp_seconds", "Unix time of the oldest held item",
                        buffer.oldest_ts / 1000)  # fmt: skip
        yield gauge("buffer_last_seq", "Highest seq handed out", buffer.last_seq)
        evicted = _counter("buffer_evicted", "Items given up, by gap reason", labels=["reason"])
        for reason in sorted({"max_size", "max_age", *buffer.evicted_total}):
            evicted.add_metric([reason], buffer.evicted_total.get(reason, 0))
        yield evicted
        yield counter("buffer_dropped", "Samples refused: memory queue full while the disk "
                      "failed, or not storable", buffer.dropped_total)  # fmt: skip
        yield counter("buffer_write_errors", "Failed buffer writes", buffer.write_errors_total)
        yield gauge("buffer_writable", "1 when the buffer accepts writes", buffer.writable)
        if buffer.room_bytes is not None:
            yield gauge("buffer_room_bytes", "Bytes left for the buffer to grow", buffer.room_bytes)

        yield from _uplink_families(uplink, p.backlog())
        yield from _record_families(p)
        if self._http is not None:
            yield from _http_families(self._http)


def _record_families(p: StatusProvider) -> Iterator[MetricFamily]:
    """The timeline's events by kind, and (since v0.3) the results of writes by state."""
    events = _counter("events", "Status events recorded since start, by kind", labels=["kind"])
    counts = p.event_counts()
    for kind in sorted({*EVENT_KINDS, *counts}):
        events.add_metric([kind], counts.get(kind, 0))
    yield events
    results = _counter("command_results", "Results of commands and actions since start, "
                       "by state", labels=["state"])  # fmt: skip
    for state, count in p.commands().get("results_total", {}).items():
        results.add_metric([state], count)
    yield results


def _http_families(http: HttpStats) -> Iterator[MetricFamily]:
    yield _gauge("status_connections", "Open connections to the status endpoint",
                 http.connections)  # fmt: skip
    yield _counter("status_requests", "Requests answered by the status endpoint",
                   http.requests_total)  # fmt: skip
    refused = _counter(
        "status_refused", "Connections and requests the status endpoint refused, by reason",
        labels=["reason"],
    )  # fmt: skip
    for reason in REFUSALS:
        refused.add_metric([reason], http.refused_total[reason])
    yield refused


# ---------------------------------------------------------------------------------------------
# The server


def make_handler(
    provider: StatusProvider, access: Access, http: HttpStats | None = None
) -> Handler:
    """The status endpoint's routes, for :class:`gateway.httpd.HttpServer`; ``access`` is read
    at each request (a reload may change its token)."""

    def get_health(request: Request) -> Response:
        healthy, problems = health(provider)
        if healthy:
            waiting = notices(provider)
            body = {"status": "ok", "problems": waiting} if waiting else {"status": "ok"}
            return json_response(body)
        return json_response({"status": "degraded", "problems": problems}, 503)

    def get_status(request: Request) -> Response:
        return json_response(build_status(provider, http=http))

    def get_metrics(request: Request) -> Response:
        return Response(
            200, generate_latest(StatusCollector(provider, http).collect()), CONTENT_TYPE_LATEST
        )

    def get_page(request: Request) -> Response:
        """The page; ``?body=1``: only its ``<main>``, which the page's script swaps in."""
        doc = build_status(provider, http=http)
        html = render_body(doc) if request.query.get("body") == "1" else render_page(doc)
        return Response(
            200,
            html.encode(),
            "text/html; charset=utf-8",
            (("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer")),
        )

    routes = {"/health": get_health, "/status": get_status, "/metrics": get_metrics, "/": get_page}

    return guarded(routes, access, http)


class StatusServer:
    """Serves the status endpoint while the ``async with`` block runs."""

    def __init__(
        self, provider: StatusProvider, *, host: str, port: int, token: str | None
    ) -> None:
        self._access = Access.of(token, host)
        self.http = HttpStats()
        handler = make_handler(provider, self._access, self.http)
        self._server = HttpServer(handler, host=host, port=port, stats=self.http)
        self._host = host
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (a free one when constructed with port 0)."""
        if self._port is None:
            raise RuntimeError("the status server is not running")
        return self._port

    def use_token(self, token: str | None) -> None:
        """Ask for ``token`` from now on (a reload re-read the token file); None: none."""
        if Access.of(token, self._host).token != self._access.token:
            log.info("status endpoint: the token %s", "changed" if token else "is no longer asked")
        self._access.token = token.encode() if token else None

    async def __aenter__(self) -> StatusServer:
        await self._server.__aenter__()
        self._port = self._server.port
        log.info("status endpoint on http://%s:%d/", self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._port is not None:
            await self._server.__aexit__(exc_type, exc, tb)
            self._port = None
