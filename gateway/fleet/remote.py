"""Remote configuration on disk: checking a config text as ``check`` does, and the files that
keep the box on one valid config whatever instant the power is cut (docs/fleet.md).

In the state directory (the installed config's buffer folder):

* ``remote.yaml``: the remote config in use; absent while the installed file is.
* ``remote.yaml.new``: a text being checked; never used, removed at start.
* ``remote.yaml.prev``: the remote config in use before the one on trial (absent when that was
  the installed file).
* ``remote.pending``: a config is on trial and not yet confirmed; it names what came before.

Applying is :meth:`RemoteFiles.stage` (write and fsync ``.new``), then :meth:`begin` (keep the
old ``remote.yaml`` as ``.prev``, write the marker, rename ``.new`` over ``remote.yaml``), then
:meth:`commit` (remove the marker, then ``.prev``) or :meth:`rollback` (put ``.prev`` back or
remove ``remote.yaml``, then remove the marker). Every step is a rename or an unlink followed
by an fsync of the folder, so after a power cut each file is whole or absent. At start,
:meth:`recover` rolls back a trial the marker says was under way: a config that did not prove
itself before the cut is not kept, and the one before it is in use.

The installed file is never written. Blocking I/O: call from a worker thread on the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway import statefile
from gateway.config import LoadedConfig, load_config
from gateway.config.kinds import Kinds
from gateway.config.reader import parse_yaml
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

MAX_YAML = 1024 * 1024  # SPEC: a config command's yaml is at most 1 MiB
LOCAL_ONLY = ("commands", "security")  # stay as the installed file says
ConfigSource = Literal["local", "remote"]


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """What became of a remote config: the command result's state, reason, problems, detail."""

    state: Literal["done", "refused", "failed"]
    reason: str | None = None  # invalid_config | local_only | rolled_back
    problems: list[str] = field(default_factory=list)
    detail: str = ""

    def doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def state_dir_of(installed: LoadedConfig) -> Path:
    """Where ``remote.yaml`` lives: the installed config's buffer folder (the state dir)."""
    assert installed.config.buffer.path is not None  # load_config resolves it
    return installed.config.buffer.path.parent


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class RemoteFiles:
    """The remote config's files and their crash-safe steps. ``on_step`` is called after each
    durable step with its name (the kill -9 tests stop the process there)."""

    def __init__(self, folder: Path, on_step: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self.remote = folder / "remote.yaml"
        self.new = folder / "remote.yaml.new"
        self.prev = folder / "remote.yaml.prev"
        self.pending = folder / "remote.pending"
        self._on_step = on_step or (lambda _step: None)

    def stage(self, text: bytes) -> None:
        statefile.replace(self.new, text)
        self._on_step("staged")

    def begin(self, trial: str) -> None:
        """Put the staged config in use, keeping what it replaces; ``trial`` names it (the
        command id) in the marker."""
        had_remote = self.remote.exists()
        if had_remote:
            statefile.replace(self.prev, self.remote.read_bytes())
            self._on_step("prev_saved")
        marker = {"trial": trial, "previous": "remote" if had_remote else "local"}
        statefile.replace(self.pending, json.dumps(marker).encode())
        self._on_step("marked")
        os.replace(self.new, self.remote)
        _fsync_dir(self.folder)
        self._on_step("replaced")

    def commit(self) -> None:
        """The trial proved itself: it stays, also for the next start."""
        _unlink(self.pending)
        _fsync_dir(self.folder)
        self._on_step("committed")
        _unlink(self.prev)
        self._on_step("cleaned")

    def on_trial(self) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.pending.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:  # cut while it was written: statefile.replace makes that impossible
            marker = {}
        return marker if isinstance(marker, dict) else {}

    def rollback(self) -> bool:
        """Back to what came before the trial (True), or nothing to do (False). Each step may
        be cut and taken again."""
        marker = self.on_trial()
        if marker is None:
            return False
        if marker.get("previous") == "remote":
            if self.prev.exists():  # absent: restored already by a rollback that was cut
                os.replace(self.prev, self.remote)
        else:
            _unlink(self.remote)
        _fsync_dir(self.folder)
        self._on_step("restored")
        _unlink(self.pending)
        _fsync_dir(self.folder)
        self._on_step("unmarked")
        return True

    def recover(self) -> str | None:
        """At start: drop a text left half-checked; roll back a trial the power cut left
        unconfirmed (its id, for the event), else None."""
        _unlink(self.new)
        marker = self.on_trial()
        if marker is None:
            return None
        self.rollback()
        return str(marker.get("trial") or "?")


# ---------------------------------------------------------------------------------------------
# Checking a text


def _raw_sections(data: bytes, shown: str) -> dict[str, Any]:
    raw = parse_yaml(data, shown)
    return raw if isinstance(raw, dict) else {}


def _rename(problems: list[str], old: Path, new: Path) -> list[str]:
    return [p.replace(str(old), new.name) for p in problems]


def check_remote(
    text: bytes, installed: LoadedConfig, files: RemoteFiles, kinds: Kinds
) -> LoadedConfig | RemoteResult:
    """The staged, checked config (path ``remote.yaml``), or the refusal. Writes ``.new``;
    a refusal removes it again."""
    if len(text) > MAX_YAML:
        too_big = f"remote.yaml: {len(text)} bytes, over the 1 MiB a config may be"
        return RemoteResult("refused", "invalid_config", [too_big])
    try:
        remote_raw = _raw_sections(text, "remote.yaml")
        local_raw = _raw_sections(installed.path.read_bytes(), str(installed.path))
    except ConfigError as exc:
        return RemoteResult("refused", "invalid_config", exc.problems[:50])
    except OSError as exc:
        return RemoteResult("failed", None, [], f"cannot read the installed config: {exc}")
    changed = [key for key in LOCAL_ONLY if remote_raw.get(key) != local_raw.get(key)]
    if changed:
        return RemoteResult("refused", "local_only", [],
                            f"{' and '.join(changed)} stay as the installed file says")  # fmt: skip
    try:
        files.stage(text)
        loaded = load_config(files.new, kinds)
    except ConfigError as exc:
        _unlink(files.new)
        return RemoteResult(
            "refused", "invalid_config", _rename(exc.problems, files.new, files.remote)
        )
    except OSError as exc:
        _unlink(files.new)
        return RemoteResult("failed", None, [], f"cannot write {files.new}: {exc}")
    if loaded.config.buffer.path != installed.config.buffer.path:
        _unlink(files.new)
        why = "buffer.path stays as the installed file says (the backlog is there)"
        return RemoteResult("refused", "local_only", [], why)
    return dataclasses.replace(loaded, path=files.remote)


def choose(
    installed: LoadedConfig, files: RemoteFiles, kinds: Kinds
) -> tuple[LoadedConfig, ConfigSource]:
    """The config to run: a valid ``remote.yaml`` that keeps the installed file's local-only
    sections wins; otherwise the installed file (a remote one that no longer fits is logged)."""
    if not files.remote.exists():
        return installed, "local"
    try:
        text = files.remote.read_bytes()
    except OSError as exc:
        log.error(  # noqa: TRY400 - a known cause needs no traceback
            "remote config %s cannot be read (%s): running the installed file", files.remote, exc
        )
        return installed, "local"
    local_raw = _raw_sections(installed.path.read_bytes(), str(installed.path))
    try:
        remote_raw = _raw_sections(text, str(files.remote))
        loaded = load_config(files.remote, kinds)
    except ConfigError as exc:
        log.error("remote config %s is not valid now, running the installed file:\n  %s",  # noqa: TRY400
                  files.remote, "\n  ".join(exc.problems))  # fmt: skip
        return installed, "local"
    if any(remote_raw.get(k) != local_raw.get(k) for k in LOCAL_ONLY) or (
        loaded.config.buffer.path != installed.config.buffer.path
    ):
        log.error("remote config %s differs from the installed file in what stays local: "
                  "running the installed file", files.remote)  # fmt: skip
        return installed, "local"
    return loaded, "remote"


def at_start(
    installed: LoadedConfig, kinds: Kinds
) -> tuple[LoadedConfig, ConfigSource, str | None]:
    """The config ``run`` starts with, and the id of a trial a power cut interrupted (rolled
    back now) or None."""
    files = RemoteFiles(state_dir_of(installed))
    interrupted = None
    with contextlib.suppress(FileNotFoundError):  # no state dir yet: nothing remote
        interrupted = files.recover()
    loaded, source = choose(installed, files, kinds)
    return loaded, source, interrupted
