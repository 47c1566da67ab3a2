"""Applying a remote config in the running daemon: check, trial, proof, keep or roll back.

:meth:`RemoteConfigurator.apply` is the one entry point; the signed ``config`` command
(``P/G/commands``, SPEC "Commands", through ``gateway.commands.channel``) calls it with the
command's ``yaml`` and id, and :func:`watch_drop_file` does for a local file (docs/fleet.md,
"Trying a remote config on one box": a box without a ``commands`` section takes no command, and
none can give it one, since ``commands`` is local only). The daemon hands in what it owns as
functions: the installed config, how to switch configs (a reload), how to prove the link
(connected with the new config and a health message acknowledged), and where events go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway import statefile
from gateway.config import LoadedConfig
from gateway.config.kinds import Kinds
from gateway.fleet.remote import (
    MAX_YAML,
    ConfigSource,
    RemoteFiles,
    RemoteResult,
    check_remote,
    state_dir_of,
)
from gateway.model import StatusEvent, format_duration, now_ms

log = logging.getLogger(__name__)

DROP_FILE = "remote.request.yaml"
RESULT_FILE = "remote.result.json"
DROP_POLL_S = 1.0


def applied_event(trial: str, digest: str) -> StatusEvent:
    message = f"remote config {trial} applied and confirmed (digest {digest})"
    return StatusEvent(now_ms(), "config_applied", message, {"id": trial, "config_digest": digest})


def rolled_back_event(trial: str, why: str) -> StatusEvent:
    message = f"remote config {trial} rolled back: {why}"
    return StatusEvent(now_ms(), "config_rolled_back", message, {"id": trial, "detail": why})


class RemoteConfigurator:
    """One remote config at a time, from check to kept or rolled back."""

    def __init__(
        self,
        *,
        installed: Callable[[], LoadedConfig],
        kinds: Kinds,
        current: Callable[[], tuple[LoadedConfig, ConfigSource]],
        use: Callable[[LoadedConfig, ConfigSource], Awaitable[None]],
        proven: Callable[[float], Awaitable[str | None]],
        record: Callable[[StatusEvent], None],
    ) -> None:
        self._installed = installed
        self._kinds = kinds
        self._current = current
        self._use = use
        self._proven = proven
        self._record = record
        self._lock = asyncio.Lock()

    async def apply(self, text: bytes, trial: str) -> RemoteResult:
        async with self._lock:
            result = await self._apply(text, trial)
        log.log(logging.INFO if result.state == "done" else logging.WARNING,
                "remote config %s: %s%s%s", trial, result.state,
                f" ({result.reason})" if result.reason else "",
                f": {result.detail}" if result.detail else "")  # fmt: skip
        return result

    async def _apply(self, text: bytes, trial: str) -> RemoteResult:
        installed = self._installed()
        files = RemoteFiles(state_dir_of(installed))
        checked = await asyncio.to_thread(check_remote, text, installed, files, self._kinds)
        if isinstance(checked, RemoteResult):
            return checked
        before = self._current()
        try:
            await asyncio.to_thread(files.begin, trial)
        except OSError as exc:
            return RemoteResult("failed", None, [], f"cannot write {files.remote}: {exc}")
        await self._use(checked, "remote")
        within = checked.config.fleet.confirm_within
        why = await self._proven(within)
        if why is None:
            await asyncio.to_thread(files.commit)
            self._record(applied_event(trial, checked.digest))
            return RemoteResult("done", None, [], f"confirmed within {format_duration(within)}")
        await asyncio.to_thread(files.rollback)
        await self._use(*before)
        self._record(rolled_back_event(trial, why))
        return RemoteResult("failed", "rolled_back", [], why)


def _read_drop(path: Path) -> bytes | None:
    """The dropped text (at most MAX_YAML + 1 bytes read), or None; never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            text = f.read(MAX_YAML + 1)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return text


async def watch_drop_file(folder: Path, configurator: RemoteConfigurator) -> None:
    """Apply ``<state dir>/remote.request.yaml`` when one appears (removed once read) and write
    the result to ``remote.result.json``: the local way in, beside the signed command. Only the
    gateway's user can write in its state directory."""
    drop, out = folder / DROP_FILE, folder / RESULT_FILE
    while True:
        await asyncio.sleep(DROP_POLL_S)
        try:
            text = await asyncio.to_thread(_read_drop, drop)
        except OSError as exc:
            log.warning("remote config: cannot read %s: %s", drop, exc)
            continue
        if text is None:
            continue
        trial = f"local-{now_ms()}"
        result = await configurator.apply(text, trial)
        doc = {"id": trial, **result.doc()}
        await asyncio.to_thread(statefile.replace, out, json.dumps(doc).encode() + b"\n")
