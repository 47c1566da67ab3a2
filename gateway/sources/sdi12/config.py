"""The config of the ``sdi12`` kind: an SDI-12 interface on a serial port and the sensors on its
bus, with their cross-field checks. Pure."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from gateway.sources.plugin import (
    ConfigModel,
    DeviceSpec,
    Duration,
    Name,
    PointSpec,
    Problem,
    ReportConfig,
    SourceConfig,
)
from gateway.sources.sdi12.protocol import ADDRESSES, MAX_VALUES, MEASURES

Measure = Literal[
    "M", "C", "M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9",
    "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9",
]  # fmt: skip
assert set(Measure.__args__) == set(MEASURES)  # type: ignore[attr-defined]


def _address(value: object) -> object:
    # YAML reads `address: 3` as an int: an SDI-12 address 0-9 is still one character
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return str(value)
    return value


Address = Annotated[
    str,
    BeforeValidator(_address),
    Field(pattern=rf"^[{ADDRESSES}]$", min_length=1),
    # what an editor should accept is what the loader accepts: `address: 3` as well as "a"
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": f"^[{ADDRESSES}]$"},
                {"type": "integer", "minimum": 0, "maximum": 9},
            ]
        }
    ),
]


class Sdi12Point(ConfigModel):
    name: Name
    # the position in the measurement's values, aD0!'s first, then aD1!'s, ... (0-based)
    index: Annotated[int, Field(ge=0, le=98)]
    unit: str | None = None
    report: ReportConfig | None = None


class Sdi12Device(ConfigModel):
    name: Name
    address: Address
    interval: Duration = 60.0
    measure: Measure = "M"
    crc: bool = False  # aMC!/aCC!: every D answer carries a CRC, checked
    points: Annotated[list[Sdi12Point], Field(min_length=1)]
    report: ReportConfig | None = None  # the default of its points


class Sdi12Source(SourceConfig):
    """An SDI-12 interface (USB or RS-232 adapter) and the sensors on its bus.

    The line settings are the adapter's host side: most USB adapters take 9600 8N1 and drive
    the bus at SDI-12's own 1200 baud 7E1 themselves. ``command_end`` is appended to every
    command for adapters that read the host's commands as lines.
    """

    kind: Literal["sdi12"]
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    command_end: Annotated[str, Field(max_length=4)] = "\r\n"
    devices: Annotated[list[Sdi12Device], Field(min_length=1)]

    def device_specs(self) -> list[DeviceSpec]:
        return [
            DeviceSpec(
                device.name,
                device.interval,
                tuple(PointSpec(p.name, unit=p.unit, report=p.report) for p in device.points),
                loc=("devices", j),
                report=device.report,
                summary=f"address {device.address}, {device.measure}"
                + (" with CRC" if device.crc else ""),
            )
            for j, device in enumerate(self.devices)
        ]

    def check(self, loc: tuple[str | int, ...], config: Any) -> list[Problem]:
        problems: list[Problem] = []
        seen: dict[str, int] = {}
        for j, device in enumerate(self.devices):
            dloc = (*loc, "devices", j)
            if device.address in seen:
                problems.append(
                    ((*dloc, "address"),
                     f"address {device.address!r} is devices[{seen[device.address]}]'s too: "
                     "one sensor per address on a bus")
                )  # fmt: skip
            seen.setdefault(device.address, j)
            problems += _check_points(device, dloc)
        for k, other in enumerate(getattr(config, "sources", [])):
            if other is self:
                break
            if isinstance(other, Sdi12Source) and other.port == self.port:
                problems.append(
                    ((*loc, "port"),
                     f"{self.port} is sources[{k}]'s port too: one sdi12 source per port "
                     "(put both sources' devices in one)")
                )  # fmt: skip
        return problems

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} baud"


def _check_points(device: Sdi12Device, dloc: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    indexes: dict[int, int] = {}
    limit = MAX_VALUES[device.measure[0]]
    for k, point in enumerate(device.points):
        ploc = (*dloc, "points", k)
        if point.name in names:
            problems.append(((*ploc, "name"), f"point name {point.name!r} is used twice"))
        names.setdefault(point.name, k)
        if point.index in indexes:
            problems.append(
                ((*ploc, "index"), f"index {point.index} is points[{indexes[point.index]}]'s too")
            )
        indexes.setdefault(point.index, k)
        if point.index >= limit:
            problems.append(
                ((*ploc, "index"),
                 f"{device.measure} gives at most {limit} values (index 0-{limit - 1}); "
                 "use a C measurement for more")
            )  # fmt: skip
    return problems
