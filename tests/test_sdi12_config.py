"""The sdi12 kind's config as `check` reads it: defaults, and one line per mistake with its key
path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.sources.registry import installed
from gateway.sources.sdi12.config import Sdi12Source

HEAD = "gateway: {id: lamppost-1}\nuplink: {servers: ['mqtt://127.0.0.1:1883']}\n"


def load(tmp_path: Path, sources: str) -> Sdi12Source:
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + sources)
    source = load_config(path, installed()).config.sources[0]
    assert isinstance(source, Sdi12Source)
    return source


def problems(tmp_path: Path, sources: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + sources)
    with pytest.raises(ConfigError) as info:
        load_config(path, installed())
    return [line.removeprefix(f"{path}: ") for line in info.value.problems]


def test_a_river_gauge_with_the_defaults(tmp_path: Path) -> None:
    source = load(
        tmp_path,
        "sources:\n"
        "  - name: river-bus\n"
        "    kind: sdi12\n"
        "    port: /dev/ttyUSB0\n"
        "    devices:\n"
        "      - name: river-1\n"
        "        address: 0\n"  # YAML reads an int: still address "0"
        "        points: [{name: level, index: 0, unit: m}, {name: temp, index: 1}]\n"
        "      - {name: rain-1, address: b, interval: 5m, measure: C2, crc: true,\n"
        "         points: [{name: rain, index: 0, unit: mm}]}\n",
    )
    assert (source.baudrate, source.parity, source.bytesize, source.stopbits) == (9600, "N", 8, 1)
    assert source.command_end == "\r\n" and source.timeout == 1.0 and source.retries == 2
    river, rain = source.devices
    assert (river.address, river.measure, river.crc, river.interval) == ("0", "M", False, 60.0)
    assert (rain.address, rain.measure, rain.crc, rain.interval) == ("b", "C2", True, 300.0)
    specs = source.device_specs()
    assert [s.loc for s in specs] == [("devices", 0), ("devices", 1)]
    assert specs[0].summary == "address 0, M" and specs[1].summary == "address b, C2 with CRC"
    level = specs[0].points[0]
    assert (level.name, level.type, level.unit) == ("level", "number", "m")


def test_each_mistake_is_one_line_with_its_key_path(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        "sources:\n"
        "  - name: bus\n"
        "    kind: sdi12\n"
        "    port: /dev/ttyUSB0\n"
        "    devices:\n"
        "      - {name: a, address: 0, points: [{name: x, index: 0}, {name: y, index: 0}]}\n"
        "      - {name: b, address: '0', points: [{name: x, index: 9}]}\n"
        "      - {name: c, address: 1, measure: C,\n"
        "         points: [{name: x, index: 9}, {name: x, index: 1}]}\n"
        "  - {name: bus-2, kind: sdi12, port: /dev/ttyUSB0, devices: [{name: d, address: 2,\n"
        "     points: [{name: x, index: 0}]}]}\n",
    )
    assert lines == [
        "sources[0].devices[0].points[1].index: index 0 is points[0]'s too",
        "sources[0].devices[1].address: address '0' is devices[0]'s too: one sensor per "
        "address on a bus",
        "sources[0].devices[1].points[0].index: M gives at most 9 values (index 0-8); use a C "
        "measurement for more",
        "sources[0].devices[2].points[1].name: point name 'x' is used twice",
        "sources[1].port: /dev/ttyUSB0 is sources[0]'s port too: one sdi12 source per port "
        "(put both sources' devices in one)",
    ]


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("{name: a, address: '*', points: [{name: x, index: 0}]}", "address"),
        ("{name: a, address: 10, points: [{name: x, index: 0}]}", "address"),
        ("{name: a, address: 0, measure: M0, points: [{name: x, index: 0}]}", "measure"),
        ("{name: a, address: 0, measure: R, points: [{name: x, index: 0}]}", "measure"),
        ("{name: a, address: 0, points: []}", "points"),
        ("{name: a, address: 0, points: [{name: x, index: -1}]}", "points[0].index"),
        ("{name: a, address: 0, points: [{name: x, index: 0, scale: 2}]}", "points[0].scale"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, device: str, expected: str) -> None:
    lines = problems(
        tmp_path, f"sources:\n  - {{name: bus, kind: sdi12, port: /dev/x, devices: [{device}]}}\n"
    )
    assert len(lines) == 1 and lines[0].startswith(f"sources[0].devices[0].{expected}: "), lines


def test_the_readme_config_loads(tmp_path: Path) -> None:
    readme = Path(Sdi12Source.__module__.replace(".", "/")).parent  # gateway/sources/sdi12
    text = (Path(__file__).parent.parent / readme / "README.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", text, re.M | re.S)
    source = load(tmp_path, block)
    assert [d.name for d in source.devices] == ["river-1", "rain-1"]
    assert source.devices[1].measure == "C" and source.devices[1].crc
