"""The config of the ``serial`` kind: an ASCII sensor on a serial line, its parser and points,
and their cross-field checks. Pure."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from gateway.config import (
    Config,
    ConfigModel,
    DevicePath,
    DeviceSpec,
    Duration,
    LineSettings,
    Name,
    PointOffset,
    PointScale,
    PointSpec,
    Problem,
    ReportConfig,
    SourceConfig,
    duplicates,
    seconds,
)


class ParseConfig(ConfigModel):
    regex: str | None = None
    format: Literal["kv", "csv", "json"] | None = None
    fields: list[str] | None = None  # csv only: the column names, in order

    @property
    def kind(self) -> Literal["regex", "kv", "csv", "json"]:
        return "regex" if self.regex is not None else self.format or "kv"


class SerialPoint(ConfigModel):
    name: Name
    unit: str | None = None
    scale: PointScale = 1.0
    offset: PointOffset = 0.0
    report: ReportConfig | None = None


class SerialSource(SourceConfig, LineSettings):
    """A serial ASCII sensor: the source is its own single device, named like the source."""

    kind: Literal["serial"]
    port: DevicePath
    request: str | None = None  # poll mode when set; stream mode otherwise
    interval: Duration | None = None  # default: 10s in poll mode, 60s (staleness) in stream mode
    line_end: Annotated[str, Field(min_length=1, max_length=4)] = "\n"
    parse: ParseConfig
    points: Annotated[list[SerialPoint], Field(min_length=1)]
    report: ReportConfig | None = None  # the default of its points

    @property
    def poll_interval(self) -> float:
        if self.interval is not None:
            return self.interval
        return 10.0 if self.request is not None else 60.0

    def device_specs(self) -> list[DeviceSpec]:
        points = tuple(PointSpec(p.name, unit=p.unit, report=p.report) for p in self.points)
        mode = f"poll every {seconds(self.poll_interval)}" if self.request else "stream"
        return [
            DeviceSpec(
                self.name,
                self.poll_interval,
                points,
                report=self.report,
                polled=self.request is not None,
                summary=mode,
            )
        ]

    def check(self, loc: tuple[str | int, ...], config: Config) -> list[Problem]:
        return _check_serial(self, loc)

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} baud"


def _check_serial(source: SerialSource, loc: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    parse, ploc = source.parse, (*loc, "parse")
    for k, name in duplicates([p.name for p in source.points]):
        problems.append(((*loc, "points", k, "name"), f"point name {name!r} is used twice"))
    points = [p.name for p in source.points]
    if (parse.regex is None) == (parse.format is None):
        problems.append((ploc, "give exactly one of regex or format (kv, csv, json)"))
        return problems
    if parse.fields is not None and parse.format != "csv":
        problems.append(((*ploc, "fields"), "fields goes only with format: csv"))
    if parse.regex is not None:
        try:
            groups = set(re.compile(parse.regex).groupindex)
        except re.error as exc:
            return [*problems, ((*ploc, "regex"), f"not a valid regular expression: {exc}")]
        missing = [p for p in points if p not in groups]
        if missing:
            problems.append(
                ((*ploc, "regex"),
                 f"no named group for point(s) {', '.join(missing)}; write (?P<name>...) for each")
            )  # fmt: skip
    elif parse.format == "csv":
        if not parse.fields:
            problems.append(
                ((*ploc, "fields"), "format: csv needs fields: the column names in order")
            )
        else:
            missing = [p for p in points if p not in parse.fields]
            if missing:
                problems.append(((*ploc, "fields"), f"no column for point(s) {', '.join(missing)}"))
    if source.request is not None and not source.request:
        problems.append(((*loc, "request"), "must not be empty; leave it out for stream mode"))
    return problems
