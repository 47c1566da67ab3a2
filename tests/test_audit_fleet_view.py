"""The fleet view's pure parts: the health board, the rows' order, the page and the metrics.
The view as a process, with a real broker, Chromium, promtool and Prometheus, is in
tests/e2e/test_e2e_fleet_view.py."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.fleet_view import HEALTH_SILENT_S, families, render_page, rows
from gateway.audit.health import MAX_PAYLOAD, HealthBoard
from gateway.audit.ledger import Fleet
from gateway.prometheus import generate_latest

NOW = 1_764_169_200_000


def health(status: str = "ok", **devices: str) -> bytes:
    doc = {"ts": NOW, "status": status, "problems": [] if status == "ok" else ["buffer full"],
           "devices": devices or {"aq-1": "ok"}, "backlog": 7,
           "buffer": {"bytes": 1, "room_bytes": 2},
           "link": {"bytes_per_hour": 3}, "version": "0.3.0", "config_digest": "abc",
           "config_source": "remote", "uptime_s": 5.0}  # fmt: skip
    return json.dumps(doc).encode()


def test_the_board_takes_health_topics_and_leaves_the_others_to_the_ledger() -> None:
    board = HealthBoard("city")
    assert board.apply("city/gw-1/health", health(), NOW)
    assert not board.apply("city/gw-1/samples", b"{}", NOW)
    assert not board.apply("other/gw-1/health", health(), NOW)
    got = board.gateways["gw-1"]
    assert (got.healthy, got.backlog, got.config_source, got.room_bytes) == (True, 7, "remote", 2)


def test_hostile_health_is_counted_never_kept_nor_fatal() -> None:
    board = HealthBoard("city")
    for payload in (b"not json", b"[]", b'{"status": "fine"}', b"[" * 100_000,
                    b'{"status": "ok", "devices": 3}', b" " * (MAX_PAYLOAD + 1)):  # fmt: skip
        assert board.apply("city/gw-1/health", payload, NOW)
    assert board.rejected == 6 and not board.gateways
    odd = json.loads(health())
    odd.update(backlog=-1, version="v" * 500, config_source="elsewhere", uptime_s="long")
    board.apply("city/gw-2/health", json.dumps(odd).encode(), NOW)
    got = board.gateways["gw-2"]
    assert (got.backlog, len(got.version or ""), got.config_source, got.uptime_s) == (
        None, 80, None, None,
    )  # fmt: skip


def fleet_of_five() -> tuple[Fleet, HealthBoard]:
    fleet, board = Fleet("city"), HealthBoard("city")
    for gid in ("a-fine", "b-down", "c-degraded", "d-offline", "e-holes"):
        fleet.apply(f"city/{gid}/status", b'{"state": "online"}', NOW - 60_000)
        board.apply(f"city/{gid}/health", health(), NOW - 1000)
    board.apply("city/b-down/health", health(**{"aq-1": "down"}), NOW - 1000)
    board.apply("city/c-degraded/health", health("degraded"), NOW - 1000)
    fleet.apply("city/d-offline/status", b'{"state": "offline"}', NOW - 5000)
    fleet.apply("city/e-holes/samples", b'{"gateway": "e-holes", "samples": [{"seq": 9}]}',
                NOW - 700_000)  # fmt: skip
    return fleet, board


def test_the_ones_that_need_a_person_come_first_most_urgent_first() -> None:
    fleet, board = fleet_of_five()
    table = rows(fleet, board, NOW, grace_s=600)
    assert [(r.id, r.needs) for r in table] == [
        ("d-offline", ("offline",)),
        ("e-holes", ("holes past grace",)),
        ("c-degraded", ("degraded",)),
        ("b-down", ("devices down",)),
        ("a-fine", ()),
    ]
    assert table[1].holes == 8 and table[1].oldest_hole_s == 700


def test_a_gateway_whose_health_stopped_while_online_needs_a_person() -> None:
    fleet, board = fleet_of_five()
    later = NOW + int(HEALTH_SILENT_S * 1000) + 1000
    silent = {r.id: r.needs for r in rows(fleet, board, later, grace_s=600)}
    assert silent["a-fine"] == ("health silent",)
    assert silent["d-offline"] == ("offline",)  # offline says it already


def test_the_page_escapes_what_gateways_send() -> None:
    fleet, board = Fleet("city"), HealthBoard("city")
    evil = "<script>x</script>"
    doc = json.loads(health(**{evil: "down"}))
    doc["version"] = evil
    board.apply("city/gw/health", json.dumps(doc).encode(), NOW)
    page = render_page(rows(fleet, board, NOW, 600), NOW, prefix="city", rejected=0)
    assert "<script" not in page and page.count("&lt;script&gt;") == 2


def test_metrics_one_series_per_gateway_as_prometheus_reads_them() -> None:
    fleet, board = fleet_of_five()
    table = rows(fleet, board, NOW, grace_s=600)
    text = generate_latest(families(fleet, board, table)).decode()
    got = {
        (s.name, s.labels.get("gateway")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("street_gateway_fleet_online", "d-offline")] == 0
    assert got[("street_gateway_fleet_hole_seqs", "e-holes")] == 8
    assert got[("street_gateway_fleet_healthy", "c-degraded")] == 0
    assert got[("street_gateway_fleet_devices_down", "b-down")] == 1
    assert got[("street_gateway_fleet_needs_attention", "a-fine")] == 0
    assert got[("street_gateway_fleet_gateways_needing_attention", None)] == 4
    assert got[("street_gateway_fleet_backlog", "a-fine")] == 7
