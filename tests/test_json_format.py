"""Payload text: the hand-written reading body is exactly what the JSON encoder writes."""

from __future__ import annotations

import enum
import json
import math

import pytest
from gateway.uplink.payload import reading_body
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.model import Reading


def encoder_body(r: Reading) -> str:
    """The body as json.dumps writes it (SPEC.md's field order; unit and clock only when set)."""
    clock = None if r.clock_synced else "unsynced"
    fields = [("ts", r.ts_ms), ("device", r.device), ("point", r.point), ("value", r.value),
              ("unit", r.unit), ("clock", clock)]  # fmt: skip
    body = {k: v for k, v in fields if v is not None}
    return json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


names = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["aq-1", 'a"b', "back\\slash", "new\nline", "\x00\x1f\x7f", "\u2028\u2029", "µg/m³", "°C"]
)
values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.sampled_from([1e-7, 1e16, 1e22, -0.0, 0.1, 5e-324, 1.7976931348623157e308, 2**53 + 1])
)


readings = st.builds(
    Reading,
    device=names,
    point=names,
    value=values,
    ts_ms=st.integers(0, 2**63 - 1),
    unit=st.none() | names,
    clock_synced=st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(readings)
@example(Reading("d", "p", 1e-7, 1, "µg/m³", clock_synced=False))
def test_reading_body_is_what_the_json_encoder_writes(reading: Reading) -> None:
    body = reading_body(reading)
    assert body == encoder_body(reading)
    decoded = json.loads(body)
    assert decoded["value"] == reading.value and type(decoded["value"]) is type(reading.value)
    assert (decoded["device"], decoded["point"]) == (reading.device, reading.point)
    assert (decoded["ts"], decoded.get("unit")) == (reading.ts_ms, reading.unit)
    assert decoded.get("clock") == (None if reading.clock_synced else "unsynced")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        reading_body(Reading("d", "p", value, 1))


class Level(enum.IntEnum):
    HIGH = 3


def test_unusual_value_types_are_written_as_the_encoder_writes_them() -> None:
    for reading in (Reading("d", "p", Level.HIGH, 1), Reading("d", "p", 1, 2, unit=None)):
        assert reading_body(reading) == encoder_body(reading)
