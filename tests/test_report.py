"""Report by exception (gateway/report.py): tables and properties of which values are sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import summarise
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.model import Value
from gateway.report import ReportFilter, ReportRule, rule, rules_for, select
from gateway.sources.modbus.config import ModbusDevice
from gateway.sources.registry import installed


def run(rule_: ReportRule | None, series: list[tuple[float, Value]]) -> list[float]:
    """The times (s) at which the point's value was sent, polling it at the given times."""
    filt = ReportFilter({} if rule_ is None else {"p": rule_})
    return [t for t, value in series if "p" in filt({"p": value}, t)]


def test_a_constant_value_is_sent_once_per_max_silence() -> None:
    polls = [(float(t), 21.5) for t in range(1801)]  # every second for 30 minutes
    sent = run(ReportRule(deadband=0.5, max_silence_s=300), polls)
    assert sent == [0, 300, 600, 900, 1200, 1500, 1800]


def test_a_value_that_changes_every_poll_is_sent_every_poll() -> None:
    polls = [(float(t), 20.0 + t) for t in range(100)]
    assert run(ReportRule(deadband=0.5, max_silence_s=300), polls) == [t for t, _ in polls]


def test_a_change_inside_the_deadband_is_not_sent_and_one_outside_is() -> None:
    values = [20.0, 20.3, 20.5, 19.6, 20.51, 20.2, 21.02, 21.02]
    polls = [(float(t), v) for t, v in enumerate(values)]
    sent = run(ReportRule(deadband=0.5), polls)
    # 20.5 is exactly the deadband away (not "more than"); 20.51 is beyond; the drift to
    # 21.02 is measured from the last value sent (20.51), not from the last poll (20.2)
    assert [values[int(t)] for t in sent] == [20.0, 20.51, 21.02]


def test_a_relative_deadband_follows_the_last_sent_value() -> None:
    values = [100.0, 101.5, 102.1, 103.0, 104.2, 0.0, 0.0, 0.001]
    polls = [(float(t), v) for t, v in enumerate(values)]
    sent = run(ReportRule(fraction=0.02), polls)
    # 2% of 100 is 2: 102.1 goes; then 2% of 102.1 is 2.042: 104.2 goes; from 0, any change
    assert [values[int(t)] for t in sent] == [100.0, 102.1, 104.2, 0.0, 0.001]


@pytest.mark.parametrize(
    "values",
    [
        [True, True, False, False, True],
        [3, 3, 4, 4, 3],  # an int is sent on any change, whatever the deadband
        ["SN-1", "SN-1", "SN-2", "SN-2", "SN-1"],
    ],
)
def test_bool_int_and_string_points_are_sent_on_any_change(values: list[Value]) -> None:
    polls = [(float(t), v) for t, v in enumerate(values)]
    sent = run(ReportRule(deadband=10.0), polls)
    assert sent == [0.0, 2.0, 4.0]


def test_without_report_every_value_is_sent_every_poll() -> None:
    polls = [(float(t), 21.5) for t in range(10)]
    assert run(None, polls) == [t for t, _ in polls]


def test_the_first_poll_always_sends_and_an_unread_point_keeps_its_state() -> None:
    rules = {"a": ReportRule(deadband=1.0), "b": ReportRule(deadband=1.0)}
    send, state = select(rules, {}, {"a": 1.0, "b": 2.0, "c": 3}, 0.0)
    assert send == {"a": 1.0, "b": 2.0, "c": 3}  # c has no rule: always sent
    send, state2 = select(rules, state, {"a": 1.5}, 10.0)  # b not read this poll
    assert send == {}
    assert state2 == state
    send, _ = select(rules, state2, {"a": 2.5, "b": 2.1, "c": 3}, 20.0)
    assert send == {"a": 2.5, "c": 3}
    assert select(rules, state2, {}, 30.0) == ({}, state2)  # a sample left with no values


def test_a_value_that_changes_type_is_sent() -> None:
    assert run(ReportRule(deadband=5.0), [(0.0, 1.0), (1.0, 1), (2.0, 1)]) == [0.0, 1.0]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1000, 1000, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 50),
    st.integers(1, 30),
)
def test_the_receiver_is_never_further_than_the_deadband_or_the_silence(
    values: list[float], deadband: float, silence: int
) -> None:
    """What upstream last received is within the deadband of the truth, and never older than
    max_silence; and every value sent was needed."""
    filt = ReportFilter({"p": ReportRule(deadband=deadband, max_silence_s=float(silence))})
    received: tuple[float, float] | None = None
    for t, value in enumerate(values):
        out = filt({"p": value}, float(t))
        if "p" in out:
            if received is not None:
                assert abs(value - received[0]) > deadband or t - received[1] >= silence
            received = (value, float(t))
        assert received is not None
        assert abs(value - received[0]) <= deadband
        assert t - received[1] < silence


# ---------------------------------------------------------------------------------------------
# the config keys


def device(report: dict[str, Any] | None = None, **point_report: Any) -> ModbusDevice:
    points: list[dict[str, Any]] = [
        {"name": "t", "table": "input", "address": 0, "type": "int16", "scale": 0.1},
        {"name": "door", "table": "discrete", "address": 0, "type": "bool"},
    ]
    if point_report:
        points[0]["report"] = point_report
    data: dict[str, Any] = {"name": "d", "unit": 1, "points": points}
    if report is not None:
        data["report"] = report
    return ModbusDevice.model_validate(data)


def test_rules_from_the_device_default_and_the_point() -> None:
    assert rules_for(device()) == {}
    both = rules_for(device({"deadband": 0.5, "max_silence": "5m"}))
    assert both == {"t": ReportRule(0.5, None, 300.0), "door": ReportRule(0.5, None, 300.0)}
    # the point's own keys win, the device's fill in the rest
    mixed = rules_for(device({"max_silence": "10m"}, deadband="2%"))
    assert mixed["t"] == ReportRule(0.0, 0.02, 600.0)
    assert mixed["door"] == ReportRule(0.0, None, 600.0)
    assert rule(None, None) is None


def write(tmp_path: Path, report: Any, where: str = "device") -> Path:
    point: dict[str, Any] = {"name": "door", "table": "discrete", "address": 0, "type": "bool"}
    dev: dict[str, Any] = {"name": "d", "unit": 1, "points": [point]}
    (point if where == "point" else dev)["report"] = report
    source = {"name": "s", "kind": "modbus-tcp", "host": "h", "devices": [dev]}
    data = {"gateway": {"id": "g"}, "uplink": {"servers": ["mqtt://127.0.0.1"]},
            "sources": [source]}  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("report", "where", "key", "fragment"),
    [
        ({"deadband": -1}, "device", "sources[0].devices[0].report.deadband", "0 or more"),
        ({"deadband": "2"}, "device", "sources[0].devices[0].report.deadband", "'2%'"),
        ({"deadband": "150%"}, "device", "sources[0].devices[0].report.deadband", "100%"),
        ({"max_silence": "0s"}, "device", "sources[0].devices[0].report.max_silence",
         "more than 0s"),
        ({"max_silence": 5}, "point", "sources[0].devices[0].points[0].report.max_silence",
         "with a unit"),
        ({"deadbnd": 1}, "device", "sources[0].devices[0].report.deadbnd", "unknown key"),
    ],
)  # fmt: skip
def test_bad_report_keys_name_their_key_path(
    tmp_path: Path, report: Any, where: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, report, where)
    with pytest.raises(ConfigError) as caught:
        load_config(path, installed())
    problems = caught.value.problems
    assert any(p.startswith(f"{path}: {key}: ") and fragment in p for p in problems), problems


def test_a_deadband_on_a_bool_point_is_a_warning(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, {"deadband": 1}, "point"), installed())
    assert loaded.warnings == [
        f"{tmp_path / 'gateway.yaml'}: sources[0].devices[0].points[0].report.deadband: "
        "does not apply to a bool point, which is sent on any change"
    ]


def test_check_summary_shows_report_settings(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, {"max_silence": "5m"}), installed())
    assert ", report by exception for 1 of 1 points" in summarise(loaded)
