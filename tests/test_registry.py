"""The registry of source kinds: built-ins through entry points, broken plugins as one line, and
the shared device core's health bookkeeping."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from gateway.config import Config, Problem, Section, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.sources.device import DOWN_AFTER, Device
from gateway.sources.registry import GROUP, Registry, SourceKind, installed, load
from gateway.sources.serial.config import SerialSource

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


# ---------------------------------------------------------------------------------------------
# Sections a kind adds at the top of the file (the Modbus kinds: templates)


def _profiles_check(config: Config) -> list[Problem]:
    return [
        (("profiles", name), f"{len(entry)} fields; a profile has at most 2")
        for name, entry in config.section("profiles").items()
        if len(entry) > 2
    ]


PROFILES = Section(
    "profiles",
    Annotated[list[str], Field(min_length=1)],
    "profile names to field lists",
    check=_profiles_check,
    warnings=lambda config: [f"profiles: {len(config.section('profiles'))} defined"],
)


def _with_profiles() -> Registry:
    serial = installed().kind("serial")
    return Registry.of([SourceKind("serial", serial.config, serial.make, sections=(PROFILES,))])


def test_a_kind_adds_a_section_checked_and_merged_from_includes_like_templates(
    tmp_path: Path,
) -> None:
    kinds = _with_profiles()
    path = tmp_path / "gateway.yaml"
    serial = "kind: serial, port: /dev/x, parse: {format: kv}, points: [{name: a}]"
    path.write_text(
        CONFIG.replace("kind: wmbus, port: /dev/ttyUSB0", serial)
        + "profiles: {short: [a]}\ninclude: [more.yaml]\n"
    )
    more = tmp_path / "more.yaml"
    more.write_text("profiles: {long: [a, b, c], short: [b], bad: []}\ntemplates: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, kinds)
    assert caught.value.problems == [
        f"{more}: templates: an included file may only hold sources, alarms and profiles",
        f"{more}: profiles.short: already defined in {path}",
    ]
    more.write_text("profiles: {long: [a, b, c], bad: []}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, kinds)
    assert caught.value.problems == [f"{more}: profiles.bad: needs at least 1 item(s)"]
    more.write_text("profiles: {long: [a, b, c]}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, kinds)
    assert caught.value.problems == [f"{more}: profiles.long: 3 fields; a profile has at most 2"]
    more.write_text("profiles: {two: [a, b]}\n")
    loaded = load_config(path, kinds)
    assert dict(loaded.config.section("profiles")) == {"short": ["a"], "two": ["a", "b"]}
    assert loaded.warnings == [f"{path}: profiles: 2 defined"]
    assert loaded.config.section("templates") == {}  # no kind here adds it


class _TakesUplink(SerialSource):
    kind: Literal["takes-uplink"]  # type: ignore[assignment]


class _TakesTemplates(SerialSource):
    kind: Literal["takes-templates"]  # type: ignore[assignment]


def _make_nothing(config: object, sink: object) -> object:
    raise NotImplementedError


# entry points name these below, as test_registry:TAKES_UPLINK (tests/ is on the path)
TAKES_UPLINK = SourceKind(
    "takes-uplink",
    _TakesUplink,
    _make_nothing,
    sections=(Section("uplink", str, "names"),),  # type: ignore[arg-type]
)
TAKES_TEMPLATES = SourceKind(
    "takes-templates",
    _TakesTemplates,
    _make_nothing,
    sections=(Section("templates", str, "x"),),  # type: ignore[arg-type]
)


def test_a_section_the_config_or_another_kind_has_refuses_the_plugin() -> None:
    kinds = _with(
        metadata.EntryPoint("takes-uplink", "test_registry:TAKES_UPLINK", GROUP),
        metadata.EntryPoint("takes-templates", "test_registry:TAKES_TEMPLATES", GROUP),
    )
    assert kinds.problems == (  # type: ignore[attr-defined]
        "source plugin 'takes-templates' (test_registry:TAKES_TEMPLATES, from an unknown "
        "distribution) adds a section 'templates', which kind 'modbus-rtu' adds already",
        "source plugin 'takes-uplink' (test_registry:TAKES_UPLINK, from an unknown distribution) "
        "adds a section 'uplink', which the config has already",
    )
    assert set(kinds.kinds) == set(installed().kinds)  # type: ignore[attr-defined]
    assert [s.key for s in kinds.sections] == ["templates"]  # type: ignore[attr-defined]
