"""Small state files beside the buffer (the seq reservation, the exposure mark, the Sparkplug
bdSeq): created without following a symbolic link and readable by the owner only.

A symbolic link planted where one of these files goes (``buffer.db.seq.tmp`` pointing at
another file, say) must not make the daemon write through it: every open here has
``O_NOFOLLOW``, so it fails with ``ELOOP`` instead, and :func:`symlink_refusal` turns that into
one line for the operator. New files are made 0600 whatever the umask (outside systemd, which
sets ``UMask=0077``, a shell's 022 would leave them readable by every user), and a file found
with wider permissions is narrowed when it is opened.

Blocking I/O: call it from a worker thread where the caller runs on the event loop.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

MODE = 0o600
_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with ``O_CREAT``, no symbolic link followed, mode 0600; an fd."""
    fd = os.open(path, flags | os.O_CREAT | _FLAGS, MODE)
    try:
        os.fchmod(fd, MODE)  # an older file (or one the umask widened) is narrowed too
    except OSError:
        os.close(fd)
        raise
    return fd


def replace(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably: write ``<path>.tmp`` (0600, never
    through a symbolic link), fsync, rename over, fsync the folder. Raises OSError."""
    tmp = path.with_name(path.name + ".tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def symlink_line(path: Path | str) -> str:
    """The operator's line for a symbolic link where a state file goes."""
    return (
        f"{path} is a symbolic link: refusing to write through it (remove it; nothing but "
        "street-gateway should create files in the buffer's directory)"
    )


def symlink_refusal(exc: OSError) -> str | None:
    """:func:`symlink_line` when ``exc`` is an open refused because the path is a symbolic
    link; None for any other error."""
    if exc.errno != errno.ELOOP:
        return None
    return symlink_line(exc.filename or "a state file")
