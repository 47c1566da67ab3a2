"""Report by exception: which of a poll's values to send. Pure: state and time are passed in.

docs/reference.md (``report``): with ``report: {deadband: 0.5, max_silence: 5m}`` on a point
(or on its device, as the default of its points) a value is sent when

- no value of the point was sent yet (the first poll after a start always sends),
- it is a float and differs from the value *last sent* by more than ``deadband`` (absolute, or
  ``"2%"``: relative to the last sent value), so a slow drift is sent once it adds up,
- it is a bool, int or string and differs at all from the value last sent, or
- ``max_silence`` has passed since the point was last sent (default 1h once ``report`` is set).

A point without ``report`` is sent every poll. Alarms and ``/status`` see every poll, filtered or
not: this decides only what goes into the stored sample. :func:`select` is the pure decision;
:class:`ReportFilter` keeps the last-sent state of one device for the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import DeviceSpec, ReportConfig
from gateway.model import Value

DEFAULT_MAX_SILENCE_S = 3600.0


@dataclass(frozen=True, slots=True)
class ReportRule:
    """When a point's value is sent: beyond ``deadband`` (absolute) or ``fraction`` (relative
    to the last sent value) for floats, on any change for the rest, and after ``max_silence_s``.
    """

    deadband: float = 0.0
    fraction: float | None = None  # "2%" -> 0.02; replaces deadband when set
    max_silence_s: float = DEFAULT_MAX_SILENCE_S

    def sends(self, last: Value, last_s: float, value: Value, now_s: float) -> bool:
        """Whether ``value`` is sent, the point's value last sent being ``last`` at ``last_s``."""
        if now_s - last_s >= self.max_silence_s:
            return True
        if type(value) is not float or type(last) is not float:
            return value != last or type(value) is not type(last)  # bool, int, str: any change
        band = self.deadband if self.fraction is None else self.fraction * abs(last)
        return abs(value - last) > band


Sent = dict[str, tuple[Value, float]]  # point -> (value last sent, when it was sent, seconds)


def select(
    rules: Mapping[str, ReportRule],
    last_sent: Mapping[str, tuple[Value, float]],
    values: Mapping[str, Value],
    now_s: float,
) -> tuple[dict[str, Value], Sent]:
    """The values of this poll to send, and the last-sent state after sending them.

    A point with no rule is always sent; a point missing from ``values`` (not read this poll)
    keeps its state.
    """
    send: dict[str, Value] = {}
    state: Sent = dict(last_sent)
    for point, value in values.items():
        rule = rules.get(point)
        previous = last_sent.get(point)
        if rule is None or previous is None or rule.sends(previous[0], previous[1], value, now_s):
            send[point] = value
            state[point] = (value, now_s)
    return send, state


class ReportFilter:
    """One device's report-by-exception state: ``filter(values, now_s)`` -> the values to send.

    A device with no ``report`` anywhere passes every value through at no cost.
    """

    def __init__(self, rules: Mapping[str, ReportRule]) -> None:
        self.rules = dict(rules)
        self._sent: Sent = {}

    def __call__(self, values: Mapping[str, Value], now_s: float) -> dict[str, Value]:
        if not self.rules:
            return dict(values)
        send, self._sent = select(self.rules, self._sent, values, now_s)
        return send


def rule(point: ReportConfig | None, device: ReportConfig | None) -> ReportRule | None:
    """A point's rule from its own ``report`` keys, else its device's, else the defaults;
    None when neither has ``report`` (every value every poll)."""
    if point is None and device is None:
        return None

    def pick(key: str) -> ReportConfig:
        """The config whose ``key`` counts: the point's if it gives it, else the device's."""
        for given in (point, device):
            if given is not None and key in given.model_fields_set:
                return given
        return _DEFAULTS

    band = pick("deadband")
    return ReportRule(
        deadband=band.absolute,
        fraction=band.fraction,
        max_silence_s=pick("max_silence").max_silence,
    )


_DEFAULTS = ReportConfig()


def rules_for(device: DeviceSpec) -> dict[str, ReportRule]:
    """Point name -> rule, for the points of a device that report by exception."""
    rules = {}
    for point in device.points:
        found = rule(point.report, device.report)
        if found is not None:
            rules[point.name] = found
    return rules
