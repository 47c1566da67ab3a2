"""A Modbus point (``points:`` of a device, and the lists of top-level ``templates``) and the
checks of a device's points: names used once, keys that fit the type, registers that do not
overlap. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Protocol

from pydantic import Field

from gateway.codec.writes import Refused, encode_exact
from gateway.config import (
    ConfigModel,
    Name,
    PointOffset,
    PointScale,
    PointSpec,
    Problem,
    ReportConfig,
    key_path,
)
from gateway.config.writes import WriteConfig, check_write

MAX_STRING_REGISTERS = 125  # a string is read in one request: at most 125 registers


class ModbusPoint(ConfigModel):
    name: Name
    table: Literal["coil", "discrete", "input", "holding"]
    address: Annotated[int, Field(ge=0, le=65535)]
    type: Literal[
        "bool",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "float32",
        "int64",
        "uint64",
        "float64",
        "string",
    ]
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    # AB / BA: a string's two bytes per register, high byte first or swapped
    byte_order: Literal["ABCD", "DCBA", "BADC", "CDAB", "AB", "BA"] = "ABCD"
    length: Annotated[int, Field(ge=1, le=MAX_STRING_REGISTERS)] | None = None  # string only
    scale: PointScale = 1.0
    offset: PointOffset = 0.0
    unit: str | None = None
    report: ReportConfig | None = None
    write: WriteConfig | None = None  # writable (coil and holding tables; since v0.3)

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("coil", "discrete")

    @property
    def width(self) -> int:
        """Registers (or bits, on coil/discrete tables) the point occupies."""
        if self.type == "string" and not self.is_bit_table:
            return self.length or 1
        if self.is_bit_table or self.type in ("bool", "int16", "uint16"):
            return 1
        return 4 if self.type.endswith("64") else 2

    @property
    def exact(self) -> bool:
        """A bool, a string and an unscaled integer are sent on any change (no deadband)."""
        return self.type in ("bool", "string") or (
            not self.type.startswith("float") and self.scale == 1 and self.offset == 0
        )

    def spec(self) -> PointSpec:
        scaled = self.scale != 1 or self.offset != 0
        return PointSpec(
            self.name, self.type, self.unit, scaled, self.report, self.exact, self.write
        )


class _Templated(Protocol):
    @property
    def template(self) -> str | None: ...


class PointPlaces:
    """Where a device's k-th point (template points first) is written, for messages: in the
    template (``templates.sdm120[k]``) or among the device's own ``points``."""

    def __init__(
        self,
        loc: tuple[str | int, ...],
        device: _Templated | None,
        templates: Mapping[str, Sequence[ModbusPoint]],
    ) -> None:
        self.loc = loc
        self.template = device.template if device is not None else None
        known = self.template is not None and self.template in templates
        self.shared = len(templates[self.template]) if known and self.template else 0
        self.key = "points" if device is not None else None

    def __call__(self, k: int) -> tuple[str | int, ...]:
        if k < self.shared:
            return ("templates", str(self.template), k)
        return (*self.loc, self.key, k - self.shared) if self.key else (*self.loc, k)

    def label(self, k: int) -> str:
        if k < self.shared:
            return f"template {self.template!r}"
        if self.key is None:  # a template on its own
            return key_path((*self.loc, k))
        return f"{self.key}[{k - self.shared}]"

    def in_template(self, *indices: int) -> bool:
        """All these points come from the template: its own check reports their problems."""
        return all(k < self.shared for k in indices)


def check_points(points: Sequence[ModbusPoint], where: PointPlaces) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for k, point in enumerate(points):
        if point.name in first and not where.in_template(first[point.name], k):
            also = (
                f" (also in {where.label(first[point.name])})"
                if where.in_template(first[point.name])
                else ""
            )
            problems.append(((*where(k), "name"), f"point name {point.name!r} is used twice{also}"))
        first.setdefault(point.name, k)
    whole: dict[tuple[str, int], int] = {}  # (table, address) -> index of a non-bit point
    bits: dict[tuple[str, int], dict[int, int]] = {}  # (table, address) -> {bit: point index}
    for k, point in enumerate(points):
        ploc = where(k)
        own = not where.in_template(k)
        if point.is_bit_table and point.type != "bool":
            if own:
                problems.append(
                    ((*ploc, "type"),
                     f"a {point.table} table holds bits; type must be bool, not {point.type}")
                )  # fmt: skip
            continue
        if point.bit is not None and (point.type != "bool" or point.is_bit_table):
            if own:
                problems.append(
                    ((*ploc, "bit"), "bit is only for a bool point on an input or holding register")
                )
            continue
        if problem := _check_point_type(point):
            if own:
                problems.append(((*ploc, problem[0]), problem[1]))
            continue
        if point.write is not None and own:
            problems += _check_writable(point, (*ploc, "write"))
        if point.address + point.width > 65536:
            if own:
                problems.append(
                    ((*ploc, "address"),
                     f"{point.type} at {point.address} needs {point.width} registers, past 65535")
                )  # fmt: skip
            continue
        for address in range(point.address, point.address + point.width):
            key = (point.table, address)
            shared = bits.get(key, {})
            if point.bit is None:
                clash = whole.get(key, next(iter(shared.values()), None))
            else:
                clash = whole.get(key, shared.get(point.bit))
            if clash is not None:
                if not where.in_template(clash, k):
                    problems.append(
                        ((*ploc, "address"),
                         f"{point.name!r} overlaps {points[clash].name!r} ({where.label(clash)}) "
                         f"at {point.table} address {address}")
                    )  # fmt: skip
                break
            if point.bit is None:
                whole[key] = k
            else:
                bits.setdefault(key, {})[point.bit] = k
    return problems


def _check_point_type(point: ModbusPoint) -> tuple[str, str] | None:
    """The (key, message) of what is wrong with a point's type-specific keys, if anything."""
    given = point.model_fields_set
    if point.type == "string":
        if point.length is None:
            return "length", "type string needs length: its number of registers (2 characters each)"
        if "byte_order" in given and point.byte_order not in ("AB", "BA"):
            return "byte_order", (
                f"{point.byte_order!r}: a string takes AB (high byte first, the default) or BA"
            )
        if "scale" in given or "offset" in given:
            return (
                "scale" if "scale" in given else "offset",
                "a string point takes no scale or offset",
            )
        return None
    if point.length is not None:
        return "length", f"length goes only with type: string, not {point.type}"
    if point.byte_order in ("AB", "BA"):
        return (
            "byte_order",
            f"{point.byte_order} is for a string; {point.type} takes ABCD, DCBA, BADC or CDAB",
        )
    return None


def _check_writable(point: ModbusPoint, loc: tuple[str | int, ...]) -> list[Problem]:
    """``write:`` only where Modbus can write (coils, holding registers), within limits that
    make sense, and allowed values the point can hold exactly."""
    assert point.write is not None
    if point.table not in ("coil", "holding"):
        return [
            (loc, f"a {point.table} table is read-only; only coil and holding points can write")
        ]
    problems = check_write(point.write, loc)
    for k, value in enumerate(point.write.values or ()):
        try:
            encode_exact(point, value)
        except Refused as exc:
            problems.append(((*loc, "values", k), exc.detail))
    return problems
