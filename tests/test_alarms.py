"""Alarm rules as tables: a series of (ts_s, value) readings in, the events they cause out."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.alarms import AlarmEngine
from gateway.config import AlarmRule
from gateway.model import Reading, Value


def reading(value: Value, ts_s: float = 0.0, device: str = "aq-1", point: str = "pm25") -> Reading:
    return Reading(device=device, point=point, value=value, ts_ms=int(ts_s * 1000))


def run(rule: dict[str, Any], series: list[tuple[float, Value]]) -> list[tuple[float, str]]:
    """(ts_s, state) of every event the series causes."""
    engine = AlarmEngine([AlarmRule.model_validate({"point": "aq-1/pm25", **rule})])
    events = []
    for ts_s, value in series:
        for event in engine.observe(reading(value, ts_s)):
            events.append((event.ts_ms / 1000, event.state))
    return events


@pytest.mark.parametrize(
    ("rule", "series", "expected"),
    [
        # above: strictly greater raises; not above any more clears
        ({"above": 50}, [(0, 40), (1, 50), (2, 51), (3, 60), (4, 50)],
         [(2, "raised"), (4, "cleared")]),
        # below: strictly less raises
        ({"below": 5}, [(0, 6), (1, 5), (2, 4.9), (3, 5)], [(2, "raised"), (3, "cleared")]),
        # hysteresis: stays raised until below clear_below
        ({"above": 50, "clear_below": 40}, [(0, 55), (1, 45), (2, 40), (3, 39.9), (4, 45)],
         [(0, "raised"), (3, "cleared")]),
        ({"below": 5, "clear_above": 8}, [(0, 4), (1, 6), (2, 8), (3, 8.1)],
         [(0, "raised"), (3, "cleared")]),
        # hold: the condition must last 10 s by the readings' timestamps
        ({"above": 50, "hold": "10s"}, [(0, 60), (5, 60), (9.999, 60), (10, 60), (11, 60)],
         [(10, "raised")]),
        # hold: a good value in between starts the hold again
        ({"above": 50, "hold": "10s"}, [(0, 60), (5, 40), (6, 60), (15, 60), (16, 60)],
         [(16, "raised")]),
        # hold: a clock stepping back restarts the hold rather than raising early
        ({"above": 50, "hold": "10s"}, [(100, 60), (50, 60), (59, 60), (60, 60)],
         [(60, "raised")]),
        # clearing is immediate even with hold
        ({"above": 50, "hold": "1s"}, [(0, 60), (1, 60), (2, 10)], [(1, "raised"), (2, "cleared")]),
        # booleans count as 0 and 1
        ({"above": 0}, [(0, False), (1, True), (2, True), (3, False)],
         [(1, "raised"), (3, "cleared")]),
        # NaN is no evidence either way
        ({"above": 50}, [(0, 60), (1, float("nan")), (2, 60)], [(0, "raised")]),
    ],
)  # fmt: skip
def test_rule_table(
    rule: dict[str, Any], series: list[tuple[float, Value]], expected: list[tuple[float, str]]
) -> None:
    assert run(rule, series) == expected


@pytest.mark.parametrize(
    ("rule", "name"),
    [
        ({"above": 50}, "aq-1/pm25>50"),
        ({"above": 50.5}, "aq-1/pm25>50.5"),
        ({"below": -3}, "aq-1/pm25<-3"),
        ({"below": 0.25, "clear_above": 1}, "aq-1/pm25<0.25"),
    ],
)
def test_event_names_and_priority(rule: dict[str, Any], name: str) -> None:
    engine = AlarmEngine([AlarmRule.model_validate({"point": "aq-1/pm25", **rule})])
    bad = 1000.0 if "above" in rule else -1000.0
    (event,) = engine.observe(reading(bad))
    assert (event.alarm, event.state, event.value, event.priority) == (name, "raised", bad, "high")
    assert engine.active() == [name]


def test_rules_only_see_their_point_and_carry_their_priority() -> None:
    engine = AlarmEngine(
        [
            AlarmRule(point="aq-1/pm25", above=50, priority="low"),
            AlarmRule(point="aq-1/pm25", above=80, priority="critical"),
            AlarmRule(point="noise-1/laeq", above=85),
        ]
    )
    assert engine.observe(reading(99, device="aq-1", point="pm10")) == []
    assert engine.observe(reading(99, device="aq-2", point="pm25")) == []
    events = engine.observe(reading(99))
    assert [(e.alarm, e.priority) for e in events] == [
        ("aq-1/pm25>50", "low"),
        ("aq-1/pm25>80", "critical"),
    ]
    (cleared,) = engine.observe(reading(60, ts_s=1))
    assert (cleared.alarm, cleared.state, cleared.value) == ("aq-1/pm25>80", "cleared", 60)
    assert engine.active() == ["aq-1/pm25>50"]
    assert engine.observe(reading(86, device="noise-1", point="laeq"))[0].alarm == (
        "noise-1/laeq>85"
    )
    assert engine.active() == ["aq-1/pm25>50", "noise-1/laeq>85"]


def test_a_poll_of_readings_raises_what_its_rules_say_in_order() -> None:
    engine = AlarmEngine(
        [
            AlarmRule(point="aq-1/pm25", above=50),
            AlarmRule(point="aq-1/no2", above=200),
            AlarmRule(point="noise-1/laeq", above=85),
        ]
    )
    poll = [
        reading(70, device="aq-1", point="pm10"),  # no rule
        reading(99, device="aq-1", point="no2"),  # under
        reading(250, device="aq-1", point="no2"),
        reading(60, device="aq-1", point="pm25"),
        reading(90, device="aq-2", point="pm25"),  # another device
    ]
    events = engine.observe_all(poll)
    assert [(e.alarm, e.state, e.value) for e in events] == [
        ("aq-1/no2>200", "raised", 250),
        ("aq-1/pm25>50", "raised", 60),
    ]
    assert engine.observe_all([reading(10, ts_s=1)])[0].state == "cleared"
