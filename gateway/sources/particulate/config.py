"""The config of the ``particulate`` kind: an optical dust sensor (SDS011, PMS5003) on a serial
port, its own single device with fixed points, and its duty cycle. Pure."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from gateway.sources.particulate.frames import Model
from gateway.sources.plugin import (
    ConfigModel,
    DeviceSpec,
    Duration,
    PointSpec,
    Problem,
    ReportConfig,
    SourceConfig,
)

UNIT = "ug/m3"
DEFAULT_INTERVAL = 10.0
# Both datasheets: readings are stable about 30 s after the fan starts.
DEFAULT_WARMUP = 30.0


def point_names(model: Model) -> tuple[str, ...]:
    """The points a model gives, in sample order."""
    return ("pm1", "pm25", "pm10") if model == "pms5003" else ("pm25", "pm10")


class DutyConfig(ConfigModel):
    """``duty: {on: 30s, every: 5m}``: every ``every`` the fan and laser wake, warm up for
    ``warmup``, measure for ``on``, and sleep again; the sample is the last reading of ``on``."""

    on: Duration
    every: Duration
    warmup: Duration = DEFAULT_WARMUP


class ParticulateSource(SourceConfig):
    """An optical dust sensor: the source is its own single device, named like the source."""

    kind: Literal["particulate"]
    model: Model
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(ge=1200, le=115200)] = 9600  # both models: 9600 8N1
    interval: Duration | None = None  # default 10s; with duty the sample comes every duty.every
    duty: DutyConfig | None = None
    report: ReportConfig | None = None  # report by exception for its points

    @property
    def sample_interval(self) -> float:
        if self.duty is not None:
            return self.duty.every
        return DEFAULT_INTERVAL if self.interval is None else self.interval

    def device_specs(self) -> list[DeviceSpec]:
        points = tuple(PointSpec(name, unit=UNIT) for name in point_names(self.model))
        if self.duty is None:
            summary = f"continuous, a sample every {_seconds(self.sample_interval)}"
        else:
            duty = self.duty
            summary = (
                f"duty: warm-up {_seconds(duty.warmup)} + {_seconds(duty.on)} on, "
                f"every {_seconds(duty.every)}"
            )
        return [DeviceSpec(self.name, self.sample_interval, points, report=self.report,
                           summary=summary)]  # fmt: skip

    def check(self, loc: tuple[str | int, ...], config: Any) -> list[Problem]:
        problems: list[Problem] = []
        if "\0" in self.port:
            problems.append(((*loc, "port"), "must not contain a NUL character"))
        duty = self.duty
        if duty is None:
            return problems
        dloc = (*loc, "duty")
        if self.interval is not None:
            problems.append(
                ((*loc, "interval"),
                 f"with duty, a sample is taken every duty.every ({_seconds(duty.every)}); "
                 "leave interval out")
            )  # fmt: skip
        if duty.on <= 0:
            problems.append(((*dloc, "on"), "must be longer than 0s"))
        if duty.warmup < 0:
            problems.append(((*dloc, "warmup"), "must not be negative"))
        awake = duty.warmup + duty.on
        if awake >= duty.every:
            problems.append(
                ((*dloc, "every"),
                 f"{_seconds(duty.every)} leaves no time asleep after warmup + on "
                 f"({_seconds(awake)}); leave duty out to run the sensor continuously")
            )  # fmt: skip
        return problems

    def describe(self) -> str:
        return f"{self.model} on {self.port} {self.baudrate} baud"


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"
