"""Reading YAML, bounded, so that no file can crash the loader or flood its answer.

:func:`read_file` reads at most 4MiB; :func:`parse_yaml` walks the document's events before
building it (:func:`_vet`): too deep, an alias bomb, an alias inside its own anchor, a value the
constructor cannot build are one line with their place, and keys given twice or escapes that
make no character are problems with their key path. Only then does PyYAML's safe loader build it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.messages import Problem, line
from gateway.errors import ConfigError
from gateway.quoting import quote

MAX_FILE_BYTES = 4 * 1024**2  # the example is 4KiB: a bigger file is not a config
MAX_DEPTH = 64  # the schema nests 6 deep; PyYAML's composer recurses, and fails near 490
MAX_VALUES = 100_000  # values once aliases are expanded: refuses an alias bomb before pydantic
MAX_INCLUDED_FILES = 100


def read_file(path: Path, where: str, name: str = "") -> bytes:
    """The file's bytes. ``where`` starts each problem: the file itself, or the include that
    names it (then ``name`` is the included file's)."""
    subject = f"{name} " if name else ""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{where}file not found{': ' + name if name else ''}"]) from None
    except IsADirectoryError:
        hint = "; name files, or a glob like 'conf.d/*.yaml'" if name else ""
        raise ConfigError([f"{where}{subject}is a directory, not a file{hint}"]) from None
    except OSError as exc:
        raise ConfigError([f"{where}cannot read {subject}({exc.strerror})"]) from None
    except ValueError:  # a NUL byte in the name
        raise ConfigError([f"{where}{quote(str(path))} is not a file name"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"{where}{subject}is larger than 4MiB: not a config file"])
    return data


class _Refused(yaml.MarkedYAMLError):
    """A document we will not build: too deep, too big, or a value that cannot be read."""


def _refused(problem: str, event: Any) -> _Refused:
    return _Refused(problem=problem, problem_mark=event.start_mark)


@dataclass
class _Frame:
    """A collection open in the event stream, while :func:`_vet` walks it."""

    part: str | int  # its place in its parent: a key or an index
    anchor: str | None
    is_mapping: bool
    values: int = 1  # values in it so far, aliases expanded
    depth: int = 1  # levels below it, aliases expanded
    items: int = 0  # events seen: keys and values alternate in a mapping
    key: str = "?"  # in a mapping, the last key seen
    lines: dict[str, int] = field(default_factory=dict)  # mapping keys -> their first line


def _vet(data: bytes) -> list[Problem]:
    """Walk the document's events, which PyYAML produces without recursion, before composing it.

    Raises _Refused for nesting past MAX_DEPTH (the composer recurses: near 490 levels PyYAML's
    crashed with RecursionError), for more than MAX_VALUES values or MAX_DEPTH levels once
    aliases are expanded (an alias bomb: its answer quoted megabytes), and for an alias used
    inside its own anchor. Returns the problems that do not stop the reading: duplicate keys (a
    block pasted twice would have its first copy silently ignored) and escapes that make no
    character (half a surrogate pair, which nothing can print).
    """
    problems: list[Problem] = []
    stack: list[_Frame] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth), expanded

    def place(event: Any, values: int, depth: int, anchor: str | None) -> None:
        """A finished value (scalar, alias or collection) goes into the collection around it."""
        if anchor is not None:
            anchors[anchor] = (values, depth)
        if stack:
            parent = stack[-1]
            parent.values += values
            parent.depth = max(parent.depth, depth + 1)
            parent.items += 1
            if parent.values > MAX_VALUES:
                raise _refused(
                    f"expands to more than {MAX_VALUES:,} values through its aliases", event
                )
            if parent.depth > MAX_DEPTH + 1:
                raise _refused(
                    f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", event
                )

    def child_part() -> str | int:
        if not stack:
            return ""
        parent = stack[-1]
        if parent.is_mapping:
            return parent.key if parent.items % 2 else _KEY
        return parent.items

    events: Iterator[Any] = yaml.parse(data, Loader=_Loader)  # C or Python marks: both fine
    for event in events:
        if isinstance(event, yaml.ScalarEvent):
            path = [f.part for f in stack[1:]]
            parent = stack[-1] if stack else None
            is_key = parent is not None and parent.is_mapping and parent.items % 2 == 0
            if is_key and parent is not None:
                path.append(event.value)
                parent.key = event.value
                _note_duplicate(parent, event, path, problems)
            elif parent is not None:
                path.append(child_part())
            if not event.value.isascii():
                problems += _not_unicode(event.value, path)
            place(event, 1, 1, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if any(frame.anchor == event.anchor for frame in stack):
                raise _refused(f"alias *{quote(event.anchor)} is used inside its own anchor", event)
            values, depth = anchors.get(
                event.anchor or "", (1, 1)
            )  # the composer names an undefined one
            place(event, values, depth, None)
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _refused(f"nested deeper than {MAX_DEPTH} levels", event)
            is_mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Frame(child_part(), event.anchor, is_mapping))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = stack.pop()
            place(event, frame.values, frame.depth, frame.anchor)
    return problems


def _note_duplicate(mapping: _Frame, key: Any, path: list[Any], problems: list[Problem]) -> None:
    if key.value == "<<" and key.style is None:
        return  # a merge key may be given again and override on purpose
    line = key.start_mark.line + 1
    if key.value not in mapping.lines:
        mapping.lines[key.value] = line
        return
    first = mapping.lines[key.value]
    where = f"on line {line}" if first == line else f"on lines {first} and {line}"
    problems.append((tuple(path), f"given twice, {where}; only the last would count"))


def _not_unicode(text: str, path: list[Any]) -> list[Problem]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a "\\ud800" escape makes half a character
        return [(tuple(path), f"holds {ascii(text[exc.start])[1:-1]}, which is not a character")]
    return []


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about 5 times faster


class _SafeValues:
    """Turns a value the constructor cannot build into a YAML error with its line (a 5000-digit
    integer, a 13th month), instead of a ValueError."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]  # a mixin
        except (ValueError, OverflowError) as exc:
            reason = "too many digits" if "digits" in str(exc) else str(exc)
            raise _Refused(
                problem=f"cannot read {quote(node.value)}: {reason}", problem_mark=node.start_mark
            ) from None


_BOOL = "tag:yaml.org,2002:bool"
_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def _yaml12_booleans(resolvers: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """PyYAML's implicit resolvers with YAML 1.2's booleans (``true``, ``false``) instead of
    YAML 1.1's, where ``on``, ``off``, ``yes`` and ``no`` are booleans too: a key ``on:`` (a
    duty cycle's, an alarm action's) is then the word, as editors (YAML 1.2) read it. A boolean
    field still takes ``yes`` or ``on``: pydantic reads those words as booleans."""
    table = {
        first: [(tag, regexp) for tag, regexp in entries if tag != _BOOL]
        for first, entries in resolvers.items()
    }
    for first in "tTfF":
        table[first] = [(_BOOL, _YAML12_BOOL), *table.get(first, [])]
    return table


class _Loader(_SafeValues, _Base):  # type: ignore[misc]  # the base is chosen at import time
    """The safe loader: libyaml's when PyYAML has it, Python's otherwise; YAML 1.2 booleans."""

    yaml_implicit_resolvers = _yaml12_booleans(_Base.yaml_implicit_resolvers)


_KEY = "?"  # the part of a key path that a key itself holds while it is read


def parse_yaml(data: bytes, shown: str) -> Any:
    try:
        problems = _vet(data)
        if problems:
            raise ConfigError([line(shown, loc, message) for loc, message in problems])
        return yaml.load(data, Loader=_Loader)  # a safe loader
    except yaml.reader.ReaderError as exc:
        raise ConfigError([f"{shown}: {_reader_problem(exc, data)}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if isinstance(exc, _Refused):
            raise ConfigError([f"{shown}: {where}{exc.problem}"]) from None
        problem = exc.problem or ""
        if mark and exc.context_mark and "duplicate anchor" in (exc.context or ""):
            problem = f"anchor used twice (lines {exc.context_mark.line + 1} and {mark.line + 1})"
        raise ConfigError([f"{shown}: {where}YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}: YAML syntax error: {exc}"]) from None


def _reader_problem(exc: yaml.reader.ReaderError, data: bytes) -> str:
    """PyYAML's reader errors say "position N" on two lines: one line, with the line number."""
    line = data[: exc.position].count(b"\n") + 1
    if "octet" in exc.reason or "byte" in exc.reason:  # libyaml's words, then Python's
        return f"line {line}: not UTF-8 text (byte 0x{exc.character:02x}); save the file as UTF-8"
    return f"line {line}: character U+{exc.character:04X} is not allowed in YAML"
