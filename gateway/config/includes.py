"""``include:``: the files and globs whose ``sources`` and ``alarms`` (and the entries of the
sections the kinds add, like ``templates``) join the main file's, remembering where each came
from so that a problem names the file and the index the person wrote."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.kinds import Section
from gateway.config.messages import key_path
from gateway.config.reader import parse_yaml, read_file
from gateway.errors import ConfigError
from gateway.quoting import quote

MAX_INCLUDED_FILES = 100
LISTS = ("sources", "alarms")  # what an included file adds to the main file's lists


@dataclass
class Origin:
    """Where each merged list item and section entry came from, so problems name the right file
    and index."""

    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    entries: dict[tuple[str, str], str] = field(default_factory=dict)  # (section, name) -> file

    def locate(self, main: str, loc: Sequence[str | int]) -> tuple[str, Sequence[str | int]]:
        if len(loc) >= 2 and (str(loc[0]), str(loc[1])) in self.entries:
            return self.entries[str(loc[0]), str(loc[1])], loc
        if len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in self.files:
            items = self.files[str(loc[0])]
            if loc[1] < len(items):
                file, index = items[loc[1]]
                return file, (loc[0], index, *loc[2:])
        return main, loc


def merge_includes(
    raw: dict[str, Any], path: Path, digest: Any, sections: Sequence[Section]
) -> tuple[dict[str, Any], Origin]:
    """Append the ``sources`` and ``alarms`` of every included file, and add the entries of its
    ``sections``, remembering their origin. ``digest`` takes every file's bytes."""
    main = str(path)
    origin = Origin()
    merged = dict(raw)
    for section in sections:
        if isinstance(raw.get(section.key), dict):
            for name in map(str, raw[section.key]):
                origin.entries[section.key, name] = main
    for key in LISTS:
        items = raw.get(key)
        if isinstance(items, list):
            origin.files[key] = [(main, i) for i in range(len(items))]
    includes = raw.get("include") or []
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError([f"{main}: include: must be a list of file names or globs"])
    problems: list[str] = []
    read = 0
    for index, pattern in enumerate(includes):
        where = f"{main}: include[{index}]: "
        full = str(path.parent / pattern)
        try:
            matches = sorted(glob.glob(full))
        except ValueError:  # a NUL byte
            problems.append(f"{where}{quote(pattern)} is not a file name or glob")
            continue
        if not matches and not glob.has_magic(pattern):
            problems.append(f"{where}file not found: {full}")
        for match in matches:
            read += 1
            if read > MAX_INCLUDED_FILES:
                raise ConfigError([*problems, f"{where}more than {MAX_INCLUDED_FILES} files"])
            problems += _include(Path(match), where, merged, origin, digest, sections=sections)
    if problems:
        raise ConfigError(problems)
    return merged, origin


def _include(
    path: Path,
    where: str,
    merged: dict[str, Any],
    origin: Origin,
    digest: Any,
    *,
    sections: Sequence[Section],
) -> list[str]:
    """Read one included file into ``merged``; its problems, if any."""
    shown = str(path)
    try:
        data = read_file(path, where, shown)
        digest.update(hashlib.sha256(data).digest())
        part = parse_yaml(data, shown)
    except ConfigError as exc:
        return exc.problems
    if part is None:
        return []
    if not isinstance(part, dict):
        return [f"{shown}: an included file must be a mapping of sources/alarms"]
    allowed = [*LISTS, *(section.key for section in sections)]
    problems = [
        f"{shown}: {key_path([key])}: an included file may only hold {_listed(allowed)}"
        for key in sorted(set(part) - set(allowed), key=str)
    ]
    for section in sections:
        problems += _merge_section(section, part, merged, origin, shown)
    for key in LISTS:
        items = part.get(key) or []
        if not isinstance(items, list):
            problems.append(f"{shown}: {key}: must be a list")
            continue
        existing = merged.get(key) or []
        merged[key] = [*existing, *items] if isinstance(existing, list) else existing
        origin.files.setdefault(key, []).extend((shown, i) for i in range(len(items)))
    return problems


def _listed(names: Sequence[str]) -> str:
    """``sources, alarms and templates``."""
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _merge_section(
    section: Section, part: dict[str, Any], merged: dict[str, Any], origin: Origin, shown: str
) -> list[str]:
    """Add an included file's entries of ``section`` to ``merged``; a name defined twice is a
    problem."""
    key = section.key
    entries = part.get(key)
    if entries is None:
        return []
    if not isinstance(entries, dict):
        return [f"{shown}: {key}: must be a mapping of {section.what}"]
    into = merged.get(key)
    into = {} if into is None else into
    if not isinstance(into, dict):
        return []  # the main file's own mistake, reported by validation
    into = merged[key] = dict(into)
    problems = []
    for name, entry in entries.items():
        if name in into:
            first = origin.entries.get((key, str(name)), "the main file")
            problems.append(f"{shown}: {key}.{name}: already defined in {first}")
            continue
        into[name] = entry
        origin.entries[key, str(name)] = shown
    return problems
