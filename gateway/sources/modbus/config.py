"""The config of the Modbus kinds (``modbus-rtu``, ``modbus-tcp``): sources, devices, read
limits, the top-level ``templates`` they add (:data:`TEMPLATES`), and their cross-field checks.
Pure. The point model and its checks are in ``points.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from gateway.codec.registers import ReadLimits
from gateway.config import (
    Config,
    ConfigModel,
    DevicePath,
    DeviceSpec,
    Duration,
    LineSettings,
    Name,
    PointSpec,
    Problem,
    ReportConfig,
    Section,
    SourceConfig,
)
from gateway.sources.modbus.points import ModbusPoint, PointPlaces, check_points

__all__ = [
    "MAX_PAUSE",
    "TEMPLATES",
    "ModbusDevice",
    "ModbusRtuSource",
    "ModbusSourceConfig",
    "ModbusTcpSource",
    "ReadLimits",
    "read_limits",
    "templates",
]

MAX_PAUSE = 10.0  # seconds between two requests; more would starve the other devices


class _ReadLimitKeys(ConfigModel):
    """How a device wants to be read, on a device or (as its devices' default) on a source.

    None means "not given here": the device's value wins over its source's, and the source's
    over :class:`ReadLimits`' defaults (see :func:`read_limits`).
    """

    max_registers: Annotated[int, Field(ge=1, le=125)] | None = None
    max_bits: Annotated[int, Field(ge=1, le=2000)] | None = None
    max_gap: Annotated[int, Field(ge=0, le=124)] | None = None  # 0: bridge no unused register
    pause: Duration | None = None  # between two requests on the same connection or bus
    one_request_per_point: bool | None = None


def read_limits(source: _ReadLimitKeys, device: _ReadLimitKeys) -> ReadLimits:
    """The device's own keys, else its source's, else the defaults."""
    given: dict[str, Any] = {}
    for key in ReadLimits.__dataclass_fields__:
        value = getattr(device, key)
        value = getattr(source, key) if value is None else value
        if value is not None:
            given[key] = value
    return ReadLimits(**given)


class ModbusDevice(_ReadLimitKeys):
    name: Name
    unit: Annotated[int, Field(ge=0, le=247)]
    interval: Duration = 10.0
    # a top-level template's points come first, then the device's own (load_config joins them)
    template: Name | None = None
    points: list[ModbusPoint] = Field(default_factory=list)
    report: ReportConfig | None = None  # the default of its points


class _ModbusSource(SourceConfig, _ReadLimitKeys):
    """What both Modbus kinds share: devices, read limits, templates, checks."""

    devices: Annotated[list[ModbusDevice], Field(min_length=1)]

    def limits(self, device: ModbusDevice) -> ReadLimits:
        return read_limits(self, device)

    def device_specs(self) -> list[DeviceSpec]:
        return [
            DeviceSpec(
                name=d.name,
                interval_s=d.interval,
                points=tuple(p.spec() for p in d.points),
                loc=("devices", j),
                report=d.report,
                template=d.template,
                summary=f"unit {d.unit}",
            )
            for j, d in enumerate(self.devices)
        ]

    def prepared(self, config: Config) -> SourceConfig:
        """Every device that names a known template gets its points first, then its own."""
        known = templates(config)
        if not known:
            return self
        devices = [
            d.model_copy(update={"points": [*known[d.template], *d.points]})
            if d.template is not None and d.template in known
            else d
            for d in self.devices
        ]
        return self.model_copy(update={"devices": devices})

    def check(self, loc: tuple[str | int, ...], config: Config) -> list[Problem]:
        problems: list[Problem] = []
        if self.pause is not None and self.pause > MAX_PAUSE:
            problems.append(((*loc, "pause"), f"must be at most {MAX_PAUSE:g}s"))
        known = templates(config)
        for j, device in enumerate(self.devices):
            dloc = (*loc, "devices", j)
            where = PointPlaces(dloc, device, known)
            problems += _check_template(device, dloc, known)
            problems += check_points(device.points, where)
            problems += _check_limits(self.limits(device), device, where)
        return problems


class ModbusRtuSource(_ModbusSource, LineSettings):
    kind: Literal["modbus-rtu"]
    port: DevicePath

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} baud"


class ModbusTcpSource(_ModbusSource):
    kind: Literal["modbus-tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    # rtu: RTU frames (CRC, no MBAP header) over the socket, for serial-to-Ethernet converters
    framing: Literal["mbap", "rtu"] = "mbap"

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


ModbusSourceConfig = ModbusRtuSource | ModbusTcpSource


def _check_template(
    device: ModbusDevice, loc: tuple[str | int, ...], templates: Mapping[str, object]
) -> list[Problem]:
    if device.template is not None and device.template not in templates:
        close = difflib.get_close_matches(device.template, list(templates), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = f"; templates: {', '.join(sorted(templates))}" if templates else ""
        return [((*loc, "template"), f"no template named {device.template!r}{hint}{known}")]
    if not device.points:
        return [((*loc, "points"), "needs at least 1 item: give points, a template, or both")]
    return []


def _check_limits(limits: ReadLimits, device: ModbusDevice, where: PointPlaces) -> list[Problem]:
    """Every point must fit in one request the device accepts; a pause must stay short."""
    problems: list[Problem] = []
    if device.pause is not None and device.pause > MAX_PAUSE:
        problems.append(((*where.loc, "pause"), f"must be at most {MAX_PAUSE:g}s"))
    for k, point in enumerate(device.points):
        if not point.is_bit_table and point.width > limits.max_registers:
            key = "length" if point.type == "string" else "type"
            problems.append(
                ((*where(k), key),
                 f"{point.type} needs {point.width} registers in one request, more than "
                 f"max_registers ({limits.max_registers}) allows")
            )  # fmt: skip
    return problems


# ---------------------------------------------------------------------------------------------
# `templates:` at the top of the file: reusable point lists a device names with `template:`
# (since v0.2), in the main file or an included one.


def templates(config: Config) -> Mapping[str, Sequence[ModbusPoint]]:
    """The config's templates by name (empty when it has none)."""
    return config.section(TEMPLATES.key)


def _check_templates(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    for name, points in templates(config).items():
        problems += check_points(points, PointPlaces(("templates", name), None, {}))
    return problems


def _unused_templates(config: Config) -> list[str]:
    used = {spec.template for _, _, spec in config.specs()}
    return [
        f"templates.{name}: no device uses it" for name in templates(config) if name not in used
    ]


def _template_points(points: Any) -> Sequence[PointSpec]:
    return [point.spec() for point in points]


TEMPLATES = Section(
    key="templates",
    entry=Annotated[list[ModbusPoint], Field(min_length=1)],
    what="template names to point lists",
    check=_check_templates,
    warnings=_unused_templates,
    points=_template_points,
)
