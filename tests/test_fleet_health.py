"""The health message's schedule and document (pure); the daemon's part is in
tests/e2e/test_e2e_fleet_health.py."""

from __future__ import annotations

import json

from gateway.fleet.health import HealthFigures, HealthSchedule, health_document, health_payload


def figures(healthy: bool = True, **devices: str) -> HealthFigures:
    return HealthFigures(
        ts_ms=1_764_169_200_123,
        healthy=healthy,
        problems=[] if healthy else ["every device is failing or down (0 ok, 0 failing, 1 down)"],
        devices=devices or {"aq-1": "ok"},
        backlog=3,
        buffer_bytes=40960,
        room_bytes=None,
        bytes_per_hour=1234,
        version="0.3.0",
        config_digest="0123456789abcdef",
        config_source="local",
        uptime_s=12.345,
    )


def test_the_document_has_the_spec_keys_and_values() -> None:
    doc = json.loads(health_payload(health_document(figures(False, **{"aq-1": "down"}))))
    assert doc == {
        "ts": 1_764_169_200_123,
        "status": "degraded",
        "problems": ["every device is failing or down (0 ok, 0 failing, 1 down)"],
        "devices": {"aq-1": "down"},
        "backlog": 3,
        "buffer": {"bytes": 40960, "room_bytes": None},
        "link": {"bytes_per_hour": 1234},
        "version": "0.3.0",
        "config_digest": "0123456789abcdef",
        "config_source": "local",
        "uptime_s": 12.3,
    }


def test_at_most_one_per_ten_seconds_every_change_eventually_and_every_five_minutes() -> None:
    schedule = HealthSchedule()
    ok, down = figures().key, figures(False, **{"aq-1": "down"}).key
    assert schedule.due(ok, 0.0)
    schedule.published(ok, 0.0)
    assert not schedule.due(ok, 5.0)
    assert not schedule.due(down, 9.9)  # a change inside the gap waits ...
    assert schedule.due(down, 10.0)  # ... and goes once it has passed
    schedule.published(down, 10.0)
    assert not schedule.due(down, 100.0)  # nothing new
    assert not schedule.due(down, 309.9)
    assert schedule.due(down, 310.0)  # the periodic one


def test_a_change_undone_inside_the_gap_is_not_news() -> None:
    schedule = HealthSchedule()
    ok, down = figures().key, figures(False, **{"aq-1": "down"}).key
    schedule.published(ok, 0.0)
    assert not schedule.due(down, 3.0)
    assert not schedule.due(ok, 12.0)


def test_a_new_connection_publishes_as_soon_as_the_gap_allows() -> None:
    schedule = HealthSchedule()
    ok = figures().key
    schedule.published(ok, 0.0)
    schedule.new_connection()
    assert not schedule.due(ok, 4.0)
    assert schedule.due(ok, 10.0)


def test_the_periods_shortened_for_tests_by_environment() -> None:
    env = {"STREET_GATEWAY_HEALTH_MIN_GAP": "1s", "STREET_GATEWAY_HEALTH_PERIOD": "3s"}
    schedule = HealthSchedule.from_env(env)
    assert (schedule.min_gap_s, schedule.period_s) == (1.0, 3.0)
    assert (HealthSchedule.from_env({}).min_gap_s, HealthSchedule.from_env({}).period_s) == (
        10.0,
        300.0,
    )
