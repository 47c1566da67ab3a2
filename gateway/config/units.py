"""The YAML's value types: durations and sizes (strings with a unit in the file, seconds and
bytes in the models), names, file names, and the bounds of a point's scale and offset."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from gateway.quoting import quote

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

_DURATION_UNITS = {
    "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
    "d": Decimal(86400),
}  # fmt: skip
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")
MAX_DURATION = 3650 * 86400  # ten years: anything longer is a typo
MAX_SIZE = 1024**4  # 1024GiB, past any SD card or disk a cabinet holds


def parse_duration(text: object) -> float:
    """``'500ms'`` -> 0.5; a bare number is refused, because its unit would be a guess."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(
            f"{quote(text)} is not a duration; write it with a unit, like '10s' or '500ms'"
        )
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError(f"{quote(text)} is not a duration; use ms, s, m, h or d, like '10s'")
    seconds = _amount(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"{quote(text)} is too long; at most 3650d")
    return float(seconds)


def parse_size(text: object) -> int:
    """``'64MiB'`` -> 67108864."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{quote(text)} is not a size; write it with a unit, like '64MiB'")
    match = _QUANTITY.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{quote(text)} is not a size; use B, KiB, MiB, GiB (or kB, MB, GB)")
    size = _amount(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size > MAX_SIZE:
        raise ValueError(f"{quote(text)} is too large; at most 1024GiB")
    return int(size)


def _amount(digits: str) -> Decimal:
    # Decimal, not float: a 1 and 400 zeros is "too large", not inf and then an OverflowError.
    return Decimal(digits) if len(digits) <= 30 else Decimal("1e30")


# In the JSON Schema (`street-gateway schema`) they are what the YAML holds: strings with a unit.
_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$",
    "description": "a duration with its unit: ms, s, m, h or d, like '500ms' or '10s'",
    "examples": ["500ms", "10s", "5m"],
}
_SIZE_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([bB]|[kKmMgG][iI]?[bB])\s*$",
    "description": "a size with its unit: B, KiB, MiB, GiB (or kB, MB, GB), like '64MiB'",
    "examples": ["64MiB", "1GiB"],
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

# value = raw x scale + offset. With |scale| and |offset| at most 1e9 the value of every integer
# type (uint64's largest raw value is 1.8e19) and of every float32 (3.4e38) stays finite and far
# from a double's limit (1.8e308); a float64 raw value so large that the product overflows is
# refused when it is read, like a NaN. A scale below 1e-9 (or 0) is a typo that flattens every
# reading to the offset, and nothing could write such a point back.
MAX_SCALE = 1e9
MIN_SCALE = 1e-9
MAX_OFFSET = 1e9


def _scale(value: float) -> float:
    if not MIN_SCALE <= abs(value) <= MAX_SCALE:
        raise ValueError(
            f"{quote(value)}: a scale is between 1e-9 and 1e9, or between -1e9 and -1e-9"
        )
    return value


def _offset(value: float) -> float:
    if abs(value) > MAX_OFFSET:
        raise ValueError(f"{quote(value)}: an offset is from -1e9 to 1e9")
    return value


PointScale = Annotated[Finite, AfterValidator(_scale)]
PointOffset = Annotated[Finite, AfterValidator(_offset)]


def _no_nul(text: str) -> str:
    if "\0" in text:  # the OS refuses it: a ValueError at open(), not an OSError
        raise ValueError(f"{quote(text)}: a file name cannot hold a NUL character")
    return text


FilePath = Annotated[Path, BeforeValidator(lambda v: _no_nul(v) if isinstance(v, str) else v)]
DevicePath = Annotated[str, AfterValidator(_no_nul)]
