"""Problems and how they are written: ``FILE: key.path[0].x: what is wrong``, one line each.

A check says what is wrong as a :data:`Problem` (a key path from the top of the file and a
message); :func:`line` writes it for a person, :func:`bounded` keeps the answer short and
printable whatever the file held, and :func:`pydantic_problems` turns pydantic's errors into
the same lines.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from gateway.quoting import cut, quote

Problem = tuple[tuple[str | int, ...], str]  # (key path from the top of the file, message)
Locate = Callable[[Sequence[str | int]], tuple[str, Sequence[str | int]]]  # -> (file, key path)

MAX_PROBLEMS = 50  # a file with more is fixed from the top
MAX_LINE = 500


def line(file: str, loc: Sequence[Any], message: str) -> str:
    return f"{file}: {key_path(loc)}: {message}" if loc else f"{file}: {message}"


def key_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{cut(part)}" if out else cut(part))
    return out


def seconds(value: float) -> str:
    """``2.5`` -> ``2.5s``, ``0.01`` -> ``10ms``: a duration as the YAML writes it."""
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"


def number(value: float) -> str:
    """``50.0`` -> ``50``, ``0.5`` -> ``0.5``."""
    return str(int(value)) if value.is_integer() else repr(value)


def bounded(problems: list[str], main: str) -> list[str]:
    """At most MAX_PROBLEMS lines, each one printable line of at most MAX_LINE characters."""
    lines = [_printable(problem) for problem in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{_printable(main)}: and {len(problems) - MAX_PROBLEMS} more problems")
    return lines


def _printable(text: str) -> str:
    # A key or a path may hold a newline or a lone surrogate: one line that stderr can encode.
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return cut(text, MAX_LINE)


def pydantic_problems(
    exc: ValidationError, locate: Locate, kinds: Collection[str], unknown: Callable[[str], str]
) -> list[str]:
    """One line per distinct error. ``kinds``: the installed source kinds' names, ``unknown``:
    the message for a ``kind:`` none of them has."""
    lines: list[str] = []
    for error in exc.errors():
        # A discriminated union puts the tag in the path: sources[1].modbus-rtu.devices -> drop it.
        raw = [p for i, p in enumerate(error["loc"]) if not (i == 2 and p in kinds)]
        file, loc = locate(raw)
        text = line(file, loc, _message(error, kinds, unknown))
        if text not in lines:
            lines.append(text)
    return lines


def _message(
    error: Mapping[str, Any], kinds: Collection[str], unknown: Callable[[str], str]
) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{quote(value)} is not one of {expected}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return unknown(str(ctx.get("tag")))
    if kind == "union_tag_not_found":
        return f"required key 'kind' is missing (installed kinds: {', '.join(kinds)})"
    if kind == "string_pattern_mismatch":
        return f"{quote(value)} does not match {ctx.get('pattern')}"
    if kind == "less_than_equal":
        return f"{quote(value)} is more than the maximum, {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"{quote(value)} is less than the minimum, {ctx.get('ge')}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "finite_number":
        return f"{quote(value)} is not a finite number"
    return f"{error['msg'][0].lower()}{error['msg'][1:]} (got {quote(value)})"
