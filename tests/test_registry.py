"""The registry of source kinds: built-ins through entry points, broken plugins as one line, and
the shared device core's health bookkeeping."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError
from gateway.sources.device import DOWN_AFTER, Device
from gateway.sources.registry import GROUP, Registry, SourceKind, installed, load

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
gateway: {id: lamppost-1}
uplink: {servers: ['mqtt://127.0.0.1:1883']}
sources:
  - {name: gauge, kind: wmbus, port: /dev/ttyUSB0}
"""


def test_the_built_in_kinds_come_in_through_the_entry_points_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(declared[GROUP]) == {
        "modbus-rtu",
        "modbus-tcp",
        "particulate",
        "sdi12",
        "serial",
        "snmp",
    }
    kinds = installed()
    assert set(declared[GROUP]) <= set(kinds.kinds)
    assert all(kinds.kind(name).origin.startswith("street-gateway ") for name in declared[GROUP])


def _with(*extra: metadata.EntryPoint) -> object:
    ours = [ep for ep in metadata.entry_points(group=GROUP) if ep.name in installed().kinds]
    return load([*ours, *extra])


def test_a_plugin_that_cannot_be_imported_is_one_line_and_its_kind_is_refused_with_it(
    tmp_path: Path,
) -> None:
    broken = metadata.EntryPoint("wmbus", "sgw_no_such_module_here:KIND", GROUP)
    kinds = _with(broken)
    assert kinds.problems == (  # type: ignore[attr-defined]
        "source plugin 'wmbus' (sgw_no_such_module_here:KIND, from an unknown distribution) "
        "cannot be loaded: ModuleNotFoundError: No module named 'sgw_no_such_module_here'",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path, kinds=kinds)  # type: ignore[arg-type]
    assert caught.value.problems == [
        f"{path}: sources[0]: kind 'wmbus' comes from an unknown distribution, which cannot be "
        "loaded: ModuleNotFoundError: No module named 'sgw_no_such_module_here'"
    ]


def test_an_unused_broken_plugin_is_a_warning_and_the_rest_still_loads(tmp_path: Path) -> None:
    wrong = metadata.EntryPoint("mbus", "gateway.config:Config", GROUP)  # not a SourceKind
    kinds = _with(wrong)
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("kind: wmbus, port: /dev/ttyUSB0", "kind: serial, port: /dev/x, "
                                   "parse: {format: kv}, points: [{name: a}]"))  # fmt: skip
    loaded = load_config(path, kinds=kinds)  # type: ignore[arg-type]
    assert any("'mbus'" in w and "is not a SourceKind but" in w for w in loaded.warnings)


def test_the_core_stamps_every_change_of_state_and_backs_off_a_down_device() -> None:
    device = Device("aq-1", "bus", 1.0, backoff_max_s=8.0, timeout_s=0.5)
    assert device.state == "unknown" and device.stats.state_since_ms > 0
    changes = []
    for _ in range(DOWN_AFTER + 2):
        before = (device.state, device.stats.state_since_ms)
        device.failed("no answer")
        if device.state != before[0]:
            changes.append(device.state)
            assert device.stats.state_since_ms >= before[1]
    assert changes == ["failing", "down"]
    assert device.attempts(retries=2) == 1  # one try while down
    # the retries after going down: doubling from twice the interval, capped at backoff_max
    assert device.next_due(0.0, 100.0) == 108.0
    device.succeeded()
    assert device.state == "ok" and device.attempts(retries=2) == 3
    # back from down, the schedule restarts from now
    assert device.next_due(0.0, 200.0) == 201.0


def test_an_override_changes_the_effective_interval_and_says_why() -> None:
    device = Device("river-1", "bus", 60.0)
    device.override_interval(1.0, "while alarm river-1/level>3.2 is raised")
    assert device.stats.interval_s == 1.0
    assert device.stats.interval_reason == "while alarm river-1/level>3.2 is raised"
    assert device.next_due(10.0, 10.2) == 11.0
    device.override_interval(None)
    assert (device.stats.interval_s, device.stats.interval_reason) == (60.0, None)


def test_a_plugin_that_cannot_make_its_source_is_one_clear_error(tmp_path: Path) -> None:
    serial = installed().kind("serial")

    def refuse(config: object, sink: object) -> object:
        raise OSError("the vendor library is missing")

    kinds = Registry.of([SourceKind("serial", serial.config, refuse, origin="sgw-x 1.0")])  # type: ignore[arg-type]
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("kind: wmbus, port: /dev/ttyUSB0", "kind: serial, port: /dev/x, "
                                   "parse: {format: kv}, points: [{name: a}]"))  # fmt: skip
    config = load_config(path, kinds=kinds).config
    with pytest.raises(GatewayError) as caught:
        kinds.make(config.sources[0], [].append)
    assert str(caught.value) == (
        "source 'gauge': kind 'serial' (from sgw-x 1.0) cannot make its source: "
        "OSError: the vendor library is missing"
    )
