"""`uplink.format: sparkplug-b` and `uplink.sparkplug` in the config: defaults, checks, warnings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_config import BASE, CONFIGS, problems_for, run_cli, write

from gateway.config import load_config
from gateway.sources.registry import installed
from gateway.uplink.sparkplug.setup import sparkplug_format
from gateway.uplink.wire import Catalog


def sparkplug(**section: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["uplink"]["format"] = "sparkplug-b"
    if section:
        data["uplink"]["sparkplug"] = section
    return data


def test_defaults_json_and_edge_node_from_gateway_id(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE), installed()).config.uplink.format == "json"
    loaded = load_config(write(tmp_path, sparkplug(group_id="city-sensors")), installed())
    uplink = loaded.config.uplink
    assert uplink.format == "sparkplug-b" and uplink.sparkplug is not None
    assert (uplink.sparkplug.group_id, uplink.sparkplug.edge_node_id) == ("city-sensors", None)
    assert uplink.sparkplug.primary_host_id is None
    assert not loaded.warnings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            sparkplug(),
            "uplink.sparkplug: uplink.format is sparkplug-b, so uplink.sparkplug.group_id",
        ),
        (
            sparkplug(group_id="a/b"),
            "uplink.sparkplug.group_id: 'a/b': must be non-empty, without + / #",
        ),
        (sparkplug(group_id=""), "uplink.sparkplug.group_id: '': must be non-empty"),
        (sparkplug(group_id="g", edge_node_id="n+1"), "uplink.sparkplug.edge_node_id: 'n+1'"),
        (sparkplug(group_id="g", primary_host_id="#"), "uplink.sparkplug.primary_host_id: '#'"),
        (sparkplug(group_id="g", host="x"), "uplink.sparkplug.host"),
    ],
)
def test_bad_sparkplug_settings_name_the_key(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    problems = problems_for(tmp_path, data)
    assert any(expected in p for p in problems), problems


def test_two_alarms_on_one_point_and_direction_would_share_a_metric(tmp_path: Path) -> None:
    data = sparkplug(group_id="g")
    data["alarms"].append({"point": "aq-1/pm25", "above": 80})
    (problem,) = problems_for(tmp_path, data)
    assert "alarms[1]: with sparkplug-b, one alarm per point and direction" in problem
    data["uplink"]["format"] = "json"
    del data["uplink"]["sparkplug"]
    load_config(write(tmp_path, data), installed())  # the JSON format names alarms by rule: fine


def test_qos_zero_with_sparkplug_warns_that_nothing_is_acknowledged(tmp_path: Path) -> None:
    data = sparkplug(group_id="g")
    data["uplink"]["qos"] = 0
    warnings = load_config(write(tmp_path, data), installed()).warnings
    assert any("sparkplug-b" in w and "best-effort" in w for w in warnings), warnings


def test_a_sparkplug_section_with_the_json_format_is_pointed_out(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["uplink"]["sparkplug"] = {"group_id": "g"}
    warnings = load_config(write(tmp_path, data), installed()).warnings
    assert any("not used" in w for w in warnings), warnings


def test_the_format_is_made_from_the_config(tmp_path: Path) -> None:
    data = sparkplug(group_id="city-sensors", primary_host_id="scada-1")
    data["uplink"]["topic_prefix"] = "city/sensors"
    config = load_config(write(tmp_path, data), installed()).config
    fmt = sparkplug_format(config, Catalog("lamppost-0421", "d", ()), dict, bool)
    assert fmt.topic_ncmd == "spBv1.0/city-sensors/NCMD/lamppost-0421"  # edge node: gateway.id
    assert fmt.subscriptions()[1] == "spBv1.0/STATE/scada-1"
    assert fmt.topic_checkpoint == "city/sensors/lamppost-0421/checkpoint"


def test_check_names_the_sparkplug_namespace_of_the_example() -> None:
    done = run_cli("check", "-c", str(CONFIGS / "sparkplug.yaml"))
    assert done.returncode == 0, done.stderr
    assert "Sparkplug B spBv1.0/water/+/river-gauge-12/..., checkpoints qos 1" in done.stdout
    assert "primary host scada-1" in done.stdout
