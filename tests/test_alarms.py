"""Alarm rules as tables: a series of (ts_s, value) samples in, the events they cause out."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.alarms import AlarmEngine
from gateway.config import AlarmRule
from gateway.model import Sample, Value


def sample(value: Value, ts_s: float = 0.0, device: str = "aq-1", point: str = "pm25") -> Sample:
    """A poll of ``device`` that read one point."""
    return Sample(device, int(ts_s * 1000), {point: value})


def raised_now(engine: AlarmEngine) -> list[str]:
    """The alarms the engine holds raised, in rule order (what a restart would carry over)."""
    return [state.name for state in engine._states if state.raised]


def run(rule: dict[str, Any], series: list[tuple[float, Value]]) -> list[tuple[float, str]]:
    """(ts_s, state) of every event the series causes."""
    engine = AlarmEngine([AlarmRule.model_validate({"point": "aq-1/pm25", **rule})])
    events = []
    for ts_s, value in series:
        for event in engine.observe(sample(value, ts_s)):
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
        # hold: the condition must last 10 s by the samples' timestamps
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
    (event,) = engine.observe(sample(bad))
    assert (event.alarm, event.state, event.value, event.priority) == (name, "raised", bad, "high")
    assert raised_now(engine) == [name]


def test_rules_only_see_their_point_and_carry_their_priority() -> None:
    engine = AlarmEngine(
        [
            AlarmRule(point="aq-1/pm25", above=50, priority="low"),
            AlarmRule(point="aq-1/pm25", above=80, priority="critical"),
            AlarmRule(point="noise-1/laeq", above=85),
        ]
    )
    assert engine.observe(sample(99, device="aq-1", point="pm10")) == []
    assert engine.observe(sample(99, device="aq-2", point="pm25")) == []
    events = engine.observe(sample(99))
    assert [(e.alarm, e.priority) for e in events] == [
        ("aq-1/pm25>50", "low"),
        ("aq-1/pm25>80", "critical"),
    ]
    (cleared,) = engine.observe(sample(60, ts_s=1))
    assert (cleared.alarm, cleared.state, cleared.value) == ("aq-1/pm25>80", "cleared", 60)
    assert raised_now(engine) == ["aq-1/pm25>50"]
    assert engine.observe(sample(86, device="noise-1", point="laeq"))[0].alarm == (
        "noise-1/laeq>85"
    )
    assert raised_now(engine) == ["aq-1/pm25>50", "noise-1/laeq>85"]


def test_a_poll_raises_what_the_rules_of_each_of_its_points_say_in_order() -> None:
    engine = AlarmEngine(
        [
            AlarmRule(point="aq-1/pm25", above=50),
            AlarmRule(point="aq-1/no2", above=200),
            AlarmRule(point="aq-1/o3", below=10),
            AlarmRule(point="noise-1/laeq", above=85),
        ]
    )
    poll = Sample(
        "aq-1",
        0,
        {"pm10": 70, "no2": 250, "o3": 50, "pm25": 60},  # pm10 has no rule, o3 is fine
    )
    events = engine.observe(poll)
    assert [(e.alarm, e.state, e.value, e.ts_ms) for e in events] == [
        ("aq-1/no2>200", "raised", 250, 0),
        ("aq-1/pm25>50", "raised", 60, 0),
    ]
    # the same values from another device concern none of these rules
    assert engine.observe(Sample("aq-2", 500, {"pm25": 90, "no2": 900})) == []
    # the next poll clears one and raises another, all in one sample
    events = engine.observe(Sample("aq-1", 1000, {"no2": 100, "o3": 5, "pm25": 61}))
    assert [(e.alarm, e.state, e.value, e.ts_ms) for e in events] == [
        ("aq-1/no2>200", "cleared", 100, 1000),
        ("aq-1/o3<10", "raised", 5, 1000),
    ]
    assert raised_now(engine) == ["aq-1/pm25>50", "aq-1/o3<10"]


def test_a_sample_with_only_some_points_leaves_the_other_rules_as_they_are() -> None:
    """With report by exception a sample holds only the points that changed."""
    engine = AlarmEngine(
        [AlarmRule.model_validate({"point": "aq-1/pm25", "above": 50, "hold": "10s"})]
    )
    assert engine.observe(Sample("aq-1", 0, {"pm25": 60})) == []
    assert engine.observe(Sample("aq-1", 5000, {"no2": 1})) == []  # pm25 unchanged, not sent
    (event,) = engine.observe(Sample("aq-1", 10_000, {"pm25": 60}))
    assert (event.state, event.ts_ms) == ("raised", 10_000)


def test_a_string_value_says_nothing_about_a_rule() -> None:
    engine = AlarmEngine(
        [AlarmRule(point="cab/status", above=0), AlarmRule(point="cab/t", above=30)]
    )
    # a string where a number was expected is ignored, and does not hide the other points
    (event,) = engine.observe(Sample("cab", 0, {"status": "door open", "t": 31.5}))
    assert (event.alarm, event.state) == ("cab/t>30", "raised")
    assert engine.observe(Sample("cab", 1000, {"status": "1"})) == []
    assert engine.observe(Sample("cab", 2000, {"status": 1}))[0].alarm == "cab/status>0"
    # nor does a string clear a raised alarm
    assert engine.observe(Sample("cab", 3000, {"status": "", "t": "n/a"})) == []
    assert raised_now(engine) == ["cab/status>0", "cab/t>30"]
