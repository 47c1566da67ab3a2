"""The files that hold secrets (the MQTT password, the status token, the TLS key): read in the
loader, never at import time; checked to be regular files that only their owner can read, and a
status token checked to be long enough to mean something."""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.config.messages import Problem
from gateway.errors import ConfigError

MAX_SECRET_BYTES = 64 * 1024
# An empty token would turn the status endpoint's authentication off, and a short one can be
# guessed: 16 bytes is 128 bits when random (`openssl rand -hex 32` writes 64 characters).
MIN_TOKEN_BYTES = 16


def read_secret(path: Path) -> str:
    """A secret file's content with surrounding whitespace stripped."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigError([f"{path}: a secret file holds one line, not over 64KiB"])
        return data.decode("utf-8").strip()
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        raise ConfigError([f"{path}: cannot read secret: {exc}"]) from None


def check_secret_file(path: Path | None, loc: tuple[str | int, ...]) -> list[Problem]:
    """The file exists, is a regular file, and neither its group nor others may read it."""
    if path is None:
        return []
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return [(loc, f"file not found: {path}")]
    except OSError as exc:
        return [(loc, f"cannot read {path}: {exc.strerror}")]
    if not stat.S_ISREG(mode):
        return [(loc, f"{path} is not a regular file")]
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            (
                loc,
                f"{path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it",
            )
        ]
    return []


def check_token(path: Path, loc: tuple[str | int, ...]) -> list[Problem]:
    """A token file that :func:`check_secret_file` passed holds at least MIN_TOKEN_BYTES."""
    try:
        token = read_secret(path)
    except ConfigError:
        return []  # the loader reports it when it reads the token
    size = len(token.encode())
    if size >= MIN_TOKEN_BYTES:
        return []
    held = "no token, only whitespace" if size == 0 else f"a token of {size} bytes"
    return [
        (
            loc,
            f"{path} holds {held}; a token has at least {MIN_TOKEN_BYTES} bytes "
            "(make one with: openssl rand -hex 32)",
        )
    ]
