"""The status endpoint on a real aiohttp server on 127.0.0.1, fed by a provider of real stats."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from status_support import LINK_COST, FakeProvider, healthy_provider, now_ms

from gateway.model import DeviceStats, UplinkStats
from gateway.page import render_page, tracks
from gateway.status import SourceView, StatusServer, build_status, health, summary_line

TOKEN = "s3cret-token"


@pytest.fixture
def provider() -> FakeProvider:
    return healthy_provider()


@pytest.fixture
async def base(provider: FakeProvider) -> AsyncIterator[str]:
    async with StatusServer(provider, host="127.0.0.1", port=0, token=None) as server:
        yield f"http://127.0.0.1:{server.port}"


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, dict(r.headers), await r.text()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.json()


# ---------------------------------------------------------------------------------------------
# /status


async def test_status_document_has_every_spec_field(base: str) -> None:
    status, doc = await get_json(f"{base}/status")
    assert status == 200
    assert {"gateway", "uplink", "buffer", "sources"} <= doc.keys()
    assert {"id", "version", "uptime_s", "clock_synced"} <= doc["gateway"].keys()
    assert doc["gateway"]["id"] == "lamppost-0421"
    assert doc["gateway"]["clock_synced"] is True
    assert doc["gateway"]["labels"] == {"site": "grand-place"}
    uplink_fields = {
        "connected", "server", "published_total", "last_publish_ts", "backlog", "bytes_total",
        "bytes_per_hour", "bytes_per_sample",
    }  # fmt: skip
    assert uplink_fields <= doc["uplink"].keys()
    assert doc["uplink"]["connected"] is True
    assert doc["uplink"]["published_total"] == 1234
    assert doc["uplink"]["backlog"] == 12
    assert doc["uplink"]["bytes_total"] == 12_897_485
    assert doc["uplink"]["bytes_per_hour"] == 1_258_291
    assert doc["uplink"]["bytes_per_sample"] == 181.0
    assert {"samples", "bytes", "oldest_ts", "evicted_total"} <= doc["buffer"].keys()
    assert "readings" not in doc["buffer"]  # v0.1's name is gone
    assert doc["buffer"]["samples"] == 12
    assert doc["buffer"]["evicted_total"] == 3
    assert doc["buffer"]["evicted_by_reason"] == {"max_age": 3}
    assert [s["name"] for s in doc["sources"]] == ["rs485-1", "noise-1"]
    assert [s["kind"] for s in doc["sources"]] == ["modbus-rtu", "serial"]
    device = doc["sources"][0]["devices"][0]
    spec_fields = {
        "name", "state", "last_ok_ts", "reads_ok", "reads_failed", "parse_errors", "last_error"
    }  # fmt: skip
    assert spec_fields <= device.keys()
    assert device["name"] == "aq-1"
    assert device["state"] == "ok"
    assert device["reads_ok"] == 360
    assert device["last_values"] == {"pm25": 12.3, "temp": 21.52}
    assert doc["sources"][0]["devices"][1]["state"] == "failing"
    assert doc["health"] == {"status": "ok", "problems": []}


async def test_status_before_anything_was_sent_has_no_bytes_per_sample(
    base: str, provider: FakeProvider
) -> None:
    provider.uplink = UplinkStats()
    _, doc = await get_json(f"{base}/status")
    assert (doc["uplink"]["bytes_total"], doc["uplink"]["bytes_per_hour"]) == (0, 0)
    assert doc["uplink"]["bytes_per_sample"] is None


async def test_status_turns_nan_values_into_null(base: str, provider: FakeProvider) -> None:
    provider.devices()[0].last_values["pm25"] = math.nan
    status, doc = await get_json(f"{base}/status")
    assert status == 200
    assert doc["sources"][0]["devices"][0]["last_values"]["pm25"] is None


# ---------------------------------------------------------------------------------------------
# /health


async def test_health_ok(base: str) -> None:
    assert await get_json(f"{base}/health") == (200, {"status": "ok"})


async def test_health_503_when_the_buffer_cannot_be_written(
    base: str, provider: FakeProvider
) -> None:
    provider.buffer.writable = False
    provider.buffer.last_error = "disk full"
    status, body = await get_json(f"{base}/health")
    assert status == 503
    assert body["status"] == "degraded"
    assert body["problems"] == ["buffer cannot be written: disk full"]


async def test_health_503_when_no_device_read_within_three_intervals(
    base: str, provider: FakeProvider
) -> None:
    for device in provider.devices():
        device.last_ok_ts = now_ms() - int(3.5 * device.interval_s * 1000)
    status, body = await get_json(f"{base}/health")
    assert status == 503
    assert len(body["problems"]) == 1
    assert "no device produced a sample" in body["problems"][0]


async def test_one_dead_device_is_not_a_health_problem(base: str, provider: FakeProvider) -> None:
    aq1, hostile, _ = provider.devices()
    aq1.state, aq1.last_ok_ts = "down", now_ms() - 3_600_000
    hostile.state, hostile.last_ok_ts = "down", None
    status, _ = await get_json(f"{base}/health")
    assert status == 200
    _, doc = await get_json(f"{base}/status")
    assert [d["state"] for d in doc["sources"][0]["devices"]] == ["down", "down"]


def test_health_grants_three_intervals_of_grace_after_start() -> None:
    never = DeviceStats("aq-1", "rs485-1", 10.0)
    provider = FakeProvider(
        uptime_s=25.0, source_views=[SourceView("rs485-1", "modbus-tcp", [never])]
    )
    assert health(provider) == (True, [])
    provider.uptime_s = 31.0
    healthy, problems = health(provider)
    assert not healthy
    assert problems == ["no device produced a sample within 3 of its intervals (1 device)"]


def test_health_lists_both_causes_and_build_status_reports_them() -> None:
    provider = healthy_provider()
    provider.buffer.writable = False
    now = now_ms() + 3_600_000
    doc = build_status(provider, now)
    assert doc["ts"] == now
    assert doc["health"]["status"] == "degraded"
    assert len(doc["health"]["problems"]) == 2


# ---------------------------------------------------------------------------------------------
# /metrics


async def test_metrics_parse_and_carry_the_figures(base: str) -> None:
    status, headers, text = await get(f"{base}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("street_gateway_")
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    aq1 = (("device", "aq-1"), ("source", "rs485-1"))
    assert samples[("street_gateway_device_reads_ok_total", aq1)] == 360
    assert samples[("street_gateway_device_reads_failed_total", aq1)] == 2
    noise = (("device", "noise-1"), ("source", "noise-1"))
    assert samples[("street_gateway_device_parse_errors_total", noise)] == 4
    hostile = '<script>alert("x")</script>'
    state = (("device", hostile), ("source", "rs485-1"), ("state", "failing"))
    assert samples[("street_gateway_device_state", state)] == 1
    assert samples[("street_gateway_buffer_samples", ())] == 12
    assert not any(name == "street_gateway_buffer_readings" for name, _ in samples)
    assert samples[("street_gateway_buffer_bytes", ())] == 3 * 1024 * 1024
    assert samples[("street_gateway_buffer_evicted_total", (("reason", "max_age"),))] == 3
    assert samples[("street_gateway_buffer_evicted_total", (("reason", "max_size"),))] == 0
    assert samples[("street_gateway_buffer_dropped_total", ())] == 0
    assert samples[("street_gateway_uplink_connected", ())] == 1
    assert samples[("street_gateway_uplink_published_total", ())] == 1234
    assert samples[("street_gateway_uplink_bytes_total", ())] == 12_897_485
    assert samples[("street_gateway_uplink_bytes_per_hour", ())] == 1_258_291
    assert samples[("street_gateway_uplink_backlog", ())] == 12
    assert samples[("street_gateway_clock_synced", ())] == 1
    assert samples[("street_gateway_healthy", ())] == 1


async def test_metrics_read_the_provider_at_scrape_time(base: str, provider: FakeProvider) -> None:
    provider.uplink.published_total = 5000
    provider.uplink.connected = False
    _, _, text = await get(f"{base}/metrics")
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["street_gateway_uplink_published_total"] == 5000
    assert values["street_gateway_uplink_connected"] == 0


# ---------------------------------------------------------------------------------------------
# The page


class _PageParser(HTMLParser):
    """Checks nesting and collects device rows, script and text."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.rows: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self.external: list[str] = []
        self.terms: list[tuple[str, str]] = []  # (dt, dd) of the cards, in order

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "device":
            self.rows.append(a["data-device"] or "")
        if tag == "script":
            self.scripts += 1
        self.external += [v for k, v in attrs if k in ("src", "href") and v]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] not in ("script", "style"):
            self.text.append(data)
        if self.stack and self.stack[-1] == "dt":
            self.terms.append((data, ""))
        elif self.stack and self.stack[-1] == "dd" and self.terms:
            self.terms[-1] = (self.terms[-1][0], self.terms[-1][1] + data)


async def test_page_is_valid_html_with_every_device_and_escapes_names(base: str) -> None:
    status, headers, page = await get(f"{base}/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.rows == ["aq-1", '<script>alert("x")</script>', "noise-1"]
    assert parser.scripts == 1  # ours; the hostile name is text, not a tag
    assert parser.external == []  # self-contained
    text = " ".join(parser.text)
    assert "lamppost-0421" in text
    assert "timeout after 1s & <retry>" in text
    assert "12.3" in text
    assert "pm25" in text
    assert "<script>alert" not in page.split("<script>")[0]
    terms = dict(parser.terms[:7])  # the uplink card
    assert terms["published"] == "1,234 samples and alarms"
    assert terms["link cost"] == LINK_COST
    assert ("held", "12 items, 3.0 MiB") in parser.terms


async def test_page_link_cost_before_anything_was_sent(base: str, provider: FakeProvider) -> None:
    provider.uplink = UplinkStats(connected=True, server="mqtt://127.0.0.1:1883")
    _, _, page = await get(f"{base}/")
    parser = _PageParser()
    parser.feed(page)
    assert ("link cost", "0 B sent · 0 B/h · - per sample") in parser.terms


async def test_page_shows_problems_when_degraded(base: str, provider: FakeProvider) -> None:
    provider.buffer.writable = False
    provider.buffer.last_error = "read-only file system"
    _, _, page = await get(f"{base}/")
    assert "degraded" in page
    assert "buffer cannot be written: read-only file system" in page


# ---------------------------------------------------------------------------------------------
# Token


@pytest.fixture
async def guarded(provider: FakeProvider) -> AsyncIterator[str]:
    async with StatusServer(provider, host="127.0.0.1", port=0, token=TOKEN) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("path", ["/status", "/metrics", "/"])
async def test_token_is_required_on_every_path_but_health(guarded: str, path: str) -> None:
    status, headers, _ = await get(f"{guarded}{path}")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, headers, _ = await get(f"{guarded}{path}", Authorization="Bearer wrong")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await get(f"{guarded}{path}", Authorization=f"Bearer {TOKEN}")
    assert status == 200


async def test_health_needs_no_token(guarded: str) -> None:
    status, _, _ = await get(f"{guarded}/health")
    assert status == 200


async def test_query_token_opens_the_page_only(guarded: str) -> None:
    assert (await get(f"{guarded}/?token={TOKEN}"))[0] == 200
    assert (await get(f"{guarded}/?token=wrong"))[0] == 401
    assert (await get(f"{guarded}/status?token={TOKEN}"))[0] == 401
    assert (await get(f"{guarded}/metrics?token={TOKEN}"))[0] == 401


# ---------------------------------------------------------------------------------------------
# Honest health: unknown until the first poll has an outcome; degraded when every device fails


def _one_source(*devices: DeviceStats) -> FakeProvider:
    return FakeProvider(uptime_s=5.0, source_views=[SourceView("bus", "modbus-tcp", [*devices])])


def test_a_device_is_unknown_until_its_first_poll_and_never_called_ok() -> None:
    provider = _one_source(DeviceStats("aq-1", "bus", 10.0), DeviceStats("aq-2", "bus", 10.0))
    doc = build_status(provider)
    assert [d["state"] for d in doc["sources"][0]["devices"]] == ["unknown", "unknown"]
    assert doc["health"] == {"status": "ok", "problems": []}  # nothing is known to be wrong
    assert summary_line(provider).startswith("0 of 2 devices answered yet; uplink down")
    page = render_page(doc)
    assert page.count('<span class="state unknown">unknown</span>') == 2
    assert 'class="state ok"' not in page


def test_every_device_failing_or_down_is_degraded_once_each_has_an_outcome() -> None:
    a = DeviceStats("aq-1", "bus", 60.0, state="failing", last_error="connection refused")
    b = DeviceStats("aq-2", "bus", 60.0)  # unknown: its first poll is still under way
    provider = _one_source(a, b)
    assert health(provider) == (True, [])
    assert summary_line(provider).startswith(
        "2 devices: 0 ok, 1 failing, 0 down, 1 not answered yet; uplink down"
    )
    b.state = "down"
    assert health(provider) == (
        False,
        ["every device is failing or down (0 ok, 1 failing, 1 down)"],
    )
    assert summary_line(provider).startswith("DEGRADED: 2 devices: 0 ok, 1 failing, 1 down;")
    b.state = "ok"
    assert health(provider) == (True, [])
    assert summary_line(provider).startswith("2 devices: 1 ok, 1 failing, 0 down; uplink down")


def test_no_devices_configured_is_said_plainly() -> None:
    provider = FakeProvider(uptime_s=5.0, source_views=[])
    assert summary_line(provider).startswith("no devices configured; uplink down")


async def test_metrics_carry_the_unknown_state(base: str, provider: FakeProvider) -> None:
    provider.devices()[0].state = "unknown"
    _, _, text = await get(f"{base}/metrics")
    states = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "street_gateway_device_state" and s.labels["device"] == "aq-1"
    }
    assert states == {"unknown": 1, "ok": 0, "failing": 0, "down": 0}


# ---------------------------------------------------------------------------------------------
# What happened: events and history (v0.2)


async def test_status_has_the_days_events_newest_first_and_each_points_history(
    base: str, provider: FakeProvider
) -> None:
    late = provider.stored_events[0]._replace(ts_ms=now_ms() - 30 * 60_000, kind="link_down")
    provider.stored_events.insert(0, late)  # recorded a moment late: shown in its place
    _, doc = await get_json(f"{base}/status")
    events = doc["events"]
    assert [e["ts"] for e in events] == sorted((e["ts"] for e in events), reverse=True)
    link_up = events[0]
    assert link_up == {
        "ts": link_up["ts"], "kind": "link_up",
        "message": "link to mqtt://127.0.0.1:1883 up after 12m down",
        "server": "mqtt://127.0.0.1:1883", "outage_s": 720.0,
    }  # fmt: skip
    assert events[-1]["kind"] == "start" and events[-1]["previous"] == "crash"
    history = doc["sources"][0]["devices"][0]["history"]
    assert set(history) == {"pm25", "temp"}
    for entries in history.values():
        assert 0 < len(entries) <= 120
        assert all(doc["ts"] - 30 * 60_000 < ts <= doc["ts"] for ts, _ in entries)


async def test_metrics_count_events_by_kind(base: str, provider: FakeProvider) -> None:
    provider.recorded.update(["link_down", "link_down", "start"])
    _, _, text = await get(f"{base}/metrics")
    counts = {
        s.labels["kind"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "street_gateway_events_total"
    }
    assert counts["link_down"] == 2
    assert counts["start"] == 1
    assert counts["task_failed"] == 0  # every kind is there from the start


async def test_the_page_body_alone_is_the_same_template(base: str) -> None:
    _, _, page = await get(f"{base}/")
    status, headers, body = await get(f"{base}/?body=1")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert body.startswith('<main id="app">') and body.endswith("</main>")
    assert "<script" not in body and "<style" not in body
    start = page.index('<main id="app">')
    # The same markup but for what moved on between the two requests (ages, the clock).
    assert page[start : start + 200].split("<h1>")[1][:40] == body.split("<h1>")[1][:40]
    assert page.count("<svg") == body.count("<svg")


async def test_the_page_draws_a_sparkline_per_numeric_value_and_the_timeline(
    base: str, provider: FakeProvider
) -> None:
    _, _, page = await get(f"{base}/")
    numeric = sum(
        1
        for d in provider.devices()
        for v in d.last_values.values()
        if isinstance(v, int | float) and not isinstance(v, bool)
    )
    assert page.count('<svg class="spark"') == numeric == 4
    assert "<title>pm25: min " in page and "over the last 29m" in page
    parser = _PageParser()
    parser.feed(page)
    text = " ".join(parser.text)
    for event in provider.stored_events:
        assert event.message in text
    assert 'class="bar bad"' in page  # the link outage
    assert "1 outage, 12m in all" in text
    assert 'class="mark crash"' in page
    assert "1 start, 1 after a CRASH" in text
    assert 'class="bar alarm"' in page


def test_tracks_draw_outages_alarms_and_devices_until_now_when_still_open() -> None:
    now = now_ms()
    minute = 60_000
    events = [  # newest first
        {"ts": now - 1 * minute, "kind": "device_down", "message": "", "device": "river-1"},
        {"ts": now - 2 * minute, "kind": "alarm_raised", "message": "", "alarm": "a>1"},
        {"ts": now - 3 * minute, "kind": "link_down", "message": "", "server": "s"},
        {"ts": now - 25 * 3600_000, "kind": "link_down", "message": "", "server": "s"},
    ]
    link, restarts, alarms, river = tracks(events, now)
    assert [(s.start, s.end) for s in link.spans] == [(now - 3 * minute, now)]
    assert link.summary.startswith("1 outage, 3m in all")
    assert restarts.spans == []
    assert [(s.start, s.end) for s in alarms.spans] == [(now - 2 * minute, now)]
    assert "raised now: a>1" in alarms.summary
    assert (river.name, river.summary) == ("river-1", "down once; down now")


# ---------------------------------------------------------------------------------------------
# DNS rebinding: a tokenless listener answers only to its own names


async def _get_with_host(port: int, host: bytes | None, token: str | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /health HTTP/1.0\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    writer.write(head + b"\r\n")
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"127.0.0.1:8470", b"200"),
        (b"127.0.0.1", b"200"),
        (b"localhost:9000", b"200"),  # an SSH tunnel to another local port
        (b"LOCALHOST", b"200"),
        (b"[::1]:8470", b"200"),
        (None, b"200"),  # HTTP/1.0 without a Host: no browser sends that
        (b"attacker.example:8470", b"421"),
        (b"127.0.0.1.attacker.example", b"421"),
        (b"localhost.", b"421"),
    ],
)
async def test_a_tokenless_listener_refuses_other_host_names(
    host: bytes | None, status: bytes
) -> None:
    server = StatusServer(healthy_provider(), host="127.0.0.1", port=0, token=None)
    async with server:
        answer = await _get_with_host(server.port, host)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert server.http.refused_total["host"] == (status == b"421")


async def test_with_a_token_any_host_name_is_answered() -> None:
    """Behind a token the page cannot be read by a rebound name anyway: the token is the check
    (a LAN listener is reached under names and addresses the gateway cannot know)."""
    async with StatusServer(
        healthy_provider(), host="127.0.0.1", port=0, token="a-token-0123456789"
    ) as server:
        assert (await _get_with_host(server.port, b"gw.city.example")).startswith(b"HTTP/1.1 200")
