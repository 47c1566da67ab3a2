"""``write:``, ``actions`` and ``commands`` in the file: what loads, and every mistake SPEC lists
that ``check`` must catch, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.writes import Rate
from gateway.errors import ConfigError
from gateway.keys import SigningKey
from gateway.sources.registry import installed

TEXT = """
gateway: {id: cabinet-7}
uplink: {servers: ["mqtt://127.0.0.1:1883"]}
commands:
  trusted_keys: [{name: ops-centre, public_key_file: KEYFILE}]
  max_age: 2m
sources:
  - name: plc
    kind: modbus-tcp
    host: 127.0.0.1
    devices:
      - name: barrier-1
        unit: 3
        points:
          - {name: closed, table: coil, address: 0, type: bool, write: {confirm: readback}}
          - {name: speed_limit, table: holding, address: 10, type: uint16,
             write: {min: 20, max: 90, rate: 1/10s}}
          - {name: mode, table: holding, address: 11, type: uint16, write: {values: [1, 2, 3]}}
          - {name: level, table: input, address: 0, type: uint16, scale: 0.01}
alarms:
  - point: barrier-1/level
    above: 3.2
    actions:
      - {on: raised, write: {point: barrier-1/closed, value: true}}
      - {on: cleared, write: {point: barrier-1/closed, value: false}}
"""


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ops-centre.pub"
    path.write_text(SigningKey.generate().public.pem())
    return path


def config_text(key_file: Path) -> str:
    return TEXT.replace("KEYFILE", str(key_file))


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, installed())
    return info.value.problems


def test_the_spec_example_loads(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(key_file))
    config = load_config(path, installed()).config
    assert config.commands is not None
    assert config.commands.max_age == 120.0 and config.commands.require_signature
    points = {p.name: p for _, _, spec in config.specs() for p in spec.points}
    speed = points["speed_limit"].write
    assert speed is not None and speed.rate == Rate(1, 10.0) and speed.confirm == "readback"
    assert points["level"].write is None
    action = config.alarms[0].actions[0]
    assert action.on == "raised" and action.write.value is True  # `on:` is a key, not True


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "type: uint16, scale: 0.01}",
            "type: uint16, scale: 0.01, write: {}}",
            "sources[0].devices[0].points[3].write: a input table is read-only",
        ),
        (
            "write: {min: 20, max: 90",
            "write: {min: 95, max: 90",
            "sources[0].devices[0].points[1].write.min: 95 is above max (90)",
        ),
        (
            "values: [1, 2, 3]",
            "values: [1, 70000]",
            "sources[0].devices[0].points[2].write.values[1]: mode: 70000 is outside",
        ),
        (
            "write: {min: 20, max: 90",
            "write: {values: [10, 50], min: 20, max: 90",
            "sources[0].devices[0].points[1].write.values[0]: 10 is below min (20)",
        ),
        ("rate: 1/10s", "rate: fast", "'fast' is not a rate"),
        (
            "point: barrier-1/closed, value: true",
            "point: barrier-1/gone, value: true",
            "alarms[0].actions[0].write.point: no point 'barrier-1/gone'",
        ),
        (
            "point: barrier-1/closed, value: true",
            "point: barrier-1/level, value: 1",
            "alarms[0].actions[0].write.point: 'barrier-1/level' is not writable",
        ),
        (
            "point: barrier-1/closed, value: true",
            "point: barrier-1/speed_limit, value: 120",
            "alarms[0].actions[0].write.value: 120 is above max (90)",
        ),
        (
            "point: barrier-1/closed, value: true",
            "point: barrier-1/mode, value: 4",
            "alarms[0].actions[0].write.value: 4 is not among its values",
        ),
        (
            "point: barrier-1/closed, value: true",
            "point: barrier-1/closed, value: 1",
            "alarms[0].actions[0].write.value: 1: closed is a bool point",
        ),
        ("{on: raised,", "{on: sometimes,", "alarms[0].actions[0].on"),
        (
            "max_age: 2m",
            "max_age: 2m\n  require_signature: true\n  trusted_keys: []",
            "commands.trusted_keys: name at least one key",
        ),
    ],
)
def test_check_catches_each_mistake(
    tmp_path: Path, key_file: Path, old: str, new: str, expected: str
) -> None:
    text = config_text(key_file)
    if "trusted_keys: []" in new:  # replaces the section's keys wholesale
        text = edited(text, "  trusted_keys: [{name: ops-centre, public_key_file: "
                      f"{key_file}}}]\n", "")  # fmt: skip
    found = problems(tmp_path, edited(text, old, new))
    assert any(expected in line for line in found), found


def test_a_key_file_that_is_not_a_public_key(tmp_path: Path, key_file: Path) -> None:
    key_file.write_text(SigningKey.generate().pem())  # the private key, by mistake
    found = problems(tmp_path, config_text(key_file))
    assert any(
        "commands.trusted_keys[0].public_key_file:" in line and "BEGIN PRIVATE KEY" in line
        for line in found
    ), found


def test_sparkplug_commands_need_unsigned_commands(tmp_path: Path, key_file: Path) -> None:
    text = config_text(key_file).replace(
        'uplink: {servers: ["mqtt://127.0.0.1:1883"]}',
        'uplink: {servers: ["mqtt://127.0.0.1:1883"], format: sparkplug-b,'
        " sparkplug: {group_id: city, commands: true}}",
    )
    found = problems(tmp_path, text)
    assert any("uplink.sparkplug.commands: DCMD carries no signature" in line
               for line in found), found  # fmt: skip
    unsigned = text.replace("  max_age: 2m\n", "  max_age: 2m\n  require_signature: false\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(unsigned)
    assert load_config(path, installed()).config.uplink.sparkplug.commands  # type: ignore[union-attr]
