"""What the file says about writing (since v0.3): a point's ``write:`` limits, an alarm's
``actions``, and the ``commands`` section (who may command the box). Pure.

The kinds put a point's :class:`WriteConfig` in its ``PointSpec`` (only the kinds that can
write accept it); :func:`check_actions` then checks every action against those specs, so the
config never imports a kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal, NamedTuple, Protocol

from pydantic import BeforeValidator, Field, WithJsonSchema

from gateway.config.base import ConfigModel
from gateway.config.messages import Problem, number
from gateway.config.units import Duration, FilePath, Name, parse_duration
from gateway.quoting import quote

WriteValue = bool | int | float | str  # what a command or an action may write
MAX_RATE_COUNT = 10_000


class Rate(NamedTuple):
    """``rate: 1/10s``: at most ``count`` writes in any ``window_s`` seconds."""

    times: int
    window_s: float

    def __str__(self) -> str:
        return f"{self.times}/{number(self.window_s)}s"


_RATE = re.compile(r"^\s*([0-9]{1,6})\s*/\s*(.+)$")


def parse_rate(text: object) -> object:
    """``'1/10s'`` -> Rate(1, 10.0); a Rate (or its tuple) passes as it is."""
    if isinstance(text, tuple):
        return text
    if not isinstance(text, str) or not (match := _RATE.match(text)):
        raise ValueError(f"{quote(text)} is not a rate; write N/<duration>, like '1/10s'")
    count = int(match.group(1))
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ValueError(f"{quote(text)}: N is from 1 to {MAX_RATE_COUNT}")
    window = parse_duration(match.group(2).strip())
    if window <= 0:
        raise ValueError(f"{quote(text)}: the window must be longer than 0s")
    return Rate(count, window)


_RATE_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[0-9]{1,6}\s*/\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$",
    "description": "at most N writes in that window, like '1/10s'",
}
RateLimit = Annotated[Rate, BeforeValidator(parse_rate), WithJsonSchema(_RATE_SCHEMA)]


class WriteConfig(ConfigModel):
    """``write:`` on a point: it may be written, within these limits (engineering units)."""

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    values: Annotated[list[WriteValue], Field(min_length=1, max_length=256)] | None = None
    rate: RateLimit | None = None
    confirm: Literal["readback", "none"] = "readback"


class WriteRequest(ConfigModel):
    """``write: {point: barrier-1/closed, value: true}`` in an action."""

    point: Annotated[str, Field(pattern=r"^[^/]+/[^/]+$")]  # "device/point"
    value: WriteValue


class AlarmAction(ConfigModel):
    """``{on: raised, write: {...}}``: a write made at the edge when the alarm's state changes."""

    on: Literal["raised", "cleared"]
    write: WriteRequest


class TrustedKey(ConfigModel):
    name: Name  # what a command's ``by`` says
    public_key_file: FilePath  # PEM SPKI (``openssl pkey -pubout``)


class CommandsConfig(ConfigModel):
    """``commands:``: the gateway subscribes to ``P/G/commands`` only with this section."""

    trusted_keys: Annotated[list[TrustedKey], Field(max_length=64)] = Field(default_factory=list)
    max_age: Duration = 120.0
    require_signature: bool = True


# ---------------------------------------------------------------------------------------------
# Checks


class _Point(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def write(self) -> WriteConfig | None: ...


def check_write(write: WriteConfig, loc: tuple[str | int, ...]) -> list[Problem]:
    """A point's own ``write:`` keys: min not above max, allowed values within them."""
    problems: list[Problem] = []
    if write.min is not None and write.max is not None and write.min > write.max:
        problems.append(((*loc, "min"), f"{number(write.min)} is above max ({number(write.max)})"))
    for k, value in enumerate(write.values or ()):
        if why := limit_problem(write, value):
            problems.append(((*loc, "values", k), why))
    return problems


def limit_problem(write: WriteConfig, value: WriteValue) -> str | None:
    """Why ``value`` is outside the point's ``min``/``max``, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if write.min is not None and value < write.min:
        return f"{number(float(value))} is below min ({number(write.min)})"
    if write.max is not None and value > write.max:
        return f"{number(float(value))} is above max ({number(write.max)})"
    return None


def check_actions(
    alarms: Iterable[tuple[int, Iterable[AlarmAction]]],
    points: Mapping[str, Mapping[str, _Point]],
) -> list[Problem]:
    """Every action of every alarm names a writable point and a value its limits allow."""
    problems: list[Problem] = []
    for i, actions in alarms:
        for k, action in enumerate(actions):
            loc = ("alarms", i, "actions", k, "write")
            device, _, name = action.write.point.partition("/")
            point = points.get(device, {}).get(name)
            if point is None:
                problems.append(((*loc, "point"), f"no point {quote(action.write.point)}"))
                continue
            if point.write is None:
                problems.append(
                    ((*loc, "point"),
                     f"{quote(action.write.point)} is not writable (it has no write: key)")
                )  # fmt: skip
                continue
            if why := value_problem(point, action.write.value):
                problems.append(((*loc, "value"), why))
    return problems


def value_problem(point: _Point, value: WriteValue) -> str | None:
    """Why ``value`` may not be written to ``point`` by its type and limits (None: it may)."""
    write = point.write
    assert write is not None
    if point.type == "bool" and not isinstance(value, bool):
        return f"{quote(value)}: {point.name} is a bool point; write true or false"
    if point.type == "string" and not isinstance(value, str):
        return f"{quote(value)}: {point.name} is a string point"
    if point.type not in ("bool", "string") and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return f"{quote(value)}: {point.name} is a number point"
    if write.values is not None and not any(_same(value, v) for v in write.values):
        return f"{quote(value)} is not among its values ({', '.join(map(quote, write.values))})"
    return limit_problem(write, value)


def _same(a: WriteValue, b: WriteValue) -> bool:
    """Equal and of the same kind: ``true`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b
