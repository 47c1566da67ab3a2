"""The buffer's neutral row form of samples, alarms and command results. Pure.

Not a wire format: no seq framing, no gateway id, no topic; every uplink format encodes the
decoded :class:`~gateway.model.Sample` at publish time, so changing ``uplink.format`` needs no
migration. A sample's values are one JSON object keyed by point *name* (not by position): a
reload or an upgrade that reorders or renames points can never give a stored value to the wrong
point, and ``sqlite3 buffer.db 'SELECT * FROM samples'`` is readable in the field. JSON keeps
ints, floats (exactly, by repr), booleans and strings apart; it was measured against pickle and
marshal (docs/performance.md): pickle is ~10x faster to encode but loading one from disk can run
code and ties the file to Python, marshal's format may change with the Python version.
"""

from __future__ import annotations

import json
import math

from gateway.model import AlarmEvent, CommandResult, Sample, StatusEvent, Value

FLAG_CLOCK_UNSYNCED = 1

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_decode = json.loads
_VALUE_TYPES = (bool, int, float, str)
_NUMBERS = frozenset((bool, int, float))
_NAMES = frozenset((str,))

SampleRow = tuple[int, int, int, str, str, int]  # seq, ts_ms, stored_ms, device, values, flags
# seq, ts, stored, alarm, state, value, prio, body (a result's JSON, else None)
AlarmRow = tuple[int, int, int, str, str, float, str, str | None]
RESULT = "result"  # the state column of a result's row in the alarms table
CommandIdRow = tuple[str, str, int, int, str]  # id, digest, ts_ms, seq, result JSON


def problem(item: Sample | AlarmEvent | CommandResult) -> str | None:
    """Why ``item`` cannot be stored (a NaN, a value of a foreign type), or None."""
    if isinstance(item, CommandResult):
        try:
            result_body(item)
        except (TypeError, ValueError) as exc:
            return f"result: {exc}"
        return None
    if isinstance(item, AlarmEvent):
        return None if math.isfinite(item.value) else f"alarm value {item.value}"
    if not isinstance(item.device, str) or not isinstance(item.ts_ms, int):
        return "device or ts of the wrong type"
    values = item.values
    # Every sample passes here: numbers only under str names, with a finite sum, is the usual
    # case, told in a few C-level passes (a NaN or an infinity makes the sum one)
    if _NUMBERS.issuperset(map(type, values.values())) and _NAMES.issuperset(map(type, values)):
        try:
            if math.isfinite(sum(values.values())):  # type: ignore[arg-type]
                return None
        except OverflowError:  # an int too large for a float: the loop below decides
            pass
    for name, value in values.items():
        kind = value.__class__
        if not isinstance(name, str):
            return f"point name {name!r} is not a string"
        if kind is float:
            if not -math.inf < value < math.inf:  # type: ignore[operator]
                return f"{name} is {value}"
        elif kind not in _VALUE_TYPES:
            return f"{name!r} has a value of type {kind.__name__}"
    return None


EventRow = tuple[int, str, str, str]  # ts_ms, kind, message, fields (JSON)


def event_row(event: StatusEvent) -> EventRow:
    return (event.ts_ms, event.kind, event.message, _encode(event.fields))


def event_from_row(ts_ms: int, kind: str, message: str, fields: str) -> StatusEvent:
    return StatusEvent(ts_ms, kind, message, _decode(fields))


def sample_row(seq: int, stored_ms: int, sample: Sample) -> SampleRow:
    flags = 0 if sample.clock_synced else FLAG_CLOCK_UNSYNCED
    return (seq, sample.ts_ms, stored_ms, sample.device, _encode(sample.values), flags)


def alarm_row(seq: int, stored_ms: int, event: AlarmEvent | CommandResult) -> AlarmRow:
    if isinstance(event, CommandResult):
        return (seq, event.ts_ms, stored_ms, "", RESULT, 0.0, "", result_body(event))
    return (
        seq, event.ts_ms, stored_ms, event.alarm, event.state, event.value, event.priority, None
    )  # fmt: skip


_RESULT_FIELDS = ("id", "by", "op", "device", "point", "value", "state", "reason", "read_back",
                  "detail", "digest", "problems")  # fmt: skip


def result_body(result: CommandResult) -> str:
    return _encode({name: getattr(result, name) for name in _RESULT_FIELDS})


def command_id_row(seq: int, result: CommandResult) -> CommandIdRow | None:
    """The row that remembers an answered command (None for an action, or no id)."""
    if result.id is None or result.digest is None or result.op is None:
        return None
    return (result.id, result.digest, result.ts_ms, seq, result_body(result))


def result_from_body(ts_ms: int, body: str) -> CommandResult:
    fields = _decode(body)
    problems = fields.get("problems")
    fields["problems"] = tuple(problems) if isinstance(problems, list) else None
    return CommandResult(**{name: fields.get(name) for name in _RESULT_FIELDS}, ts_ms=ts_ms)


def sample_from_row(ts_ms: int, device: str, values: str, flags: int) -> Sample:
    decoded: dict[str, Value] = _decode(values)
    return Sample(device, ts_ms, decoded, not flags & FLAG_CLOCK_UNSYNCED)


def alarm_from_row(  # noqa: PLR0917 - a row's columns, in order
    ts_ms: int, alarm: str, state: str, value: float, priority: str, body: str | None = None
) -> AlarmEvent | CommandResult:
    if state == RESULT and body is not None:
        return result_from_body(ts_ms, body)
    return AlarmEvent(alarm, state, float(value), priority, ts_ms)  # type: ignore[arg-type]
