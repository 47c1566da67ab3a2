"""Threshold alarms: samples in, raised/cleared events out. Pure: no I/O, no clock.

A rule watches one point (``device/point``) and is either ``above`` or ``below`` a threshold:

* ``above: 50`` raises when a value is greater than 50; it clears when a value is below
  ``clear_below`` (hysteresis) or, without it, when a value is no longer above 50.
* ``below: 5`` raises when a value is less than 5; it clears when a value is above
  ``clear_above`` or, without it, when a value is no longer below 5.
* ``hold: 60s``: the raise condition must hold, sample after sample, for that long before the
  alarm is raised. Time is judged on the samples' own timestamps, so a slow poll or a busy
  event loop does not change the outcome. Clearing is immediate (hysteresis covers flapping).

Booleans count as 0 and 1, so ``{point: cab/door_open, above: 0}`` alarms on an open door.
NaN says nothing about a condition and is ignored, and so does a string value.

``while_raised: {interval: {device: 1s}}`` on a rule asks for those devices to be polled at that
interval while it is raised: :meth:`AlarmEngine.overrides` says which, the daemon applies them.

A rule's raised/cleared state is kept in the buffer's database with its event (``alarm_state``),
and a new engine starts from it: a restart or a reload while an alarm is raised pages nobody
again, and an alarm whose condition cleared while the gateway was down is cleared on its first
value.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from gateway.config import AlarmRule
from gateway.model import AlarmEvent, AlarmState, Sample


@dataclass(slots=True)
class _RuleState:
    rule: AlarmRule
    name: str
    raised: bool = False
    pending_since_ms: int | None = None  # when the raise condition started to hold

    def is_bad(self, value: float) -> bool:
        rule = self.rule
        if rule.above is not None:
            return value > rule.above
        return rule.below is not None and value < rule.below

    def is_clear(self, value: float) -> bool:
        rule = self.rule
        if rule.above is not None:
            return value < rule.clear_below if rule.clear_below is not None else value <= rule.above
        if rule.below is not None:
            return value > rule.clear_above if rule.clear_above is not None else value >= rule.below
        return True

    def observe(self, value: float, ts_ms: int) -> AlarmEvent | None:
        if self.raised:
            if self.is_clear(value):
                self.raised = False
                self.pending_since_ms = None
                return self._event("cleared", value, ts_ms)
            return None
        if not self.is_bad(value):
            self.pending_since_ms = None
            return None
        if self.pending_since_ms is None or ts_ms < self.pending_since_ms:
            # First bad value, or the clock stepped back: the hold starts again from here.
            self.pending_since_ms = ts_ms
        if ts_ms - self.pending_since_ms >= self.rule.hold * 1000:
            self.raised = True
            return self._event("raised", value, ts_ms)
        return None

    def _event(self, state: AlarmState, value: float, ts_ms: int) -> AlarmEvent:
        return AlarmEvent(
            alarm=self.name,
            state=state,
            value=value,
            priority=self.rule.priority,
            ts_ms=ts_ms,
        )


class AlarmEngine:
    """Evaluates every rule of a sample's points; keeps only per-rule state."""

    def __init__(self, rules: Sequence[AlarmRule], raised: Collection[str] = ()) -> None:
        """``raised``: the alarms already raised (kept in the buffer across restarts and
        reloads), so they are not raised again; one whose condition cleared meanwhile is
        cleared on its first value."""
        self._states: list[_RuleState] = [
            _RuleState(rule, rule.name, raised=rule.name in raised) for rule in rules
        ]
        # device -> point -> its rules; a rule's point is "device/point"
        self._by_device: dict[str, dict[str, list[_RuleState]]] = {}
        for state in self._states:
            device, _, point = state.rule.point.partition("/")
            self._by_device.setdefault(device, {}).setdefault(point, []).append(state)

    def observe(self, sample: Sample) -> list[AlarmEvent]:
        """The events this sample causes, in order: usually none, one when a rule changes
        state. A device without rules costs one lookup."""
        points = self._by_device.get(sample.device)
        if points is None:
            return []
        events: list[AlarmEvent] = []
        for point, value in sample.values.items():
            states = points.get(point)
            if not states or isinstance(value, str):
                continue
            number = float(value)
            if math.isnan(number):
                continue
            for state in states:
                event = state.observe(number, sample.ts_ms)
                if event is not None:
                    events.append(event)
        return events

    def overrides(self) -> dict[str, tuple[float, str]]:
        """Device -> (interval, alarm name) that the raised alarms' ``while_raised`` ask for;
        when several name one device, the shortest interval wins."""
        wanted: dict[str, tuple[float, str]] = {}
        for state in self._states:
            if not state.raised or state.rule.while_raised is None:
                continue
            for device, interval in state.rule.while_raised.interval.items():
                if device not in wanted or interval < wanted[device][0]:
                    wanted[device] = (interval, state.name)
        return wanted
