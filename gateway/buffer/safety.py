"""What the buffer refuses at start: a directory others can write, a symbolic link beside it.

The daemon writes its state files (the seq reservation, the exposure mark, the Sparkplug bdSeq,
their temporary files) beside the database. Whoever can create files in that directory could
plant a symbolic link there and have the daemon overwrite another file (running as root, any
file). So the buffer refuses to start when the directory is writable by group or others without
the sticky bit (with it, nobody can replace another user's file, and the kernel's
``protected_symlinks`` keeps links from being followed), or when an entry named after the
database (``buffer.db*``) is a symbolic link. Each state file is also opened without following
a link (:mod:`gateway.statefile`), for a link planted after the start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.errors import BufferUnsafeError
from gateway.statefile import symlink_line


def check(db_path: Path) -> None:
    """Raise :class:`BufferUnsafeError` with one line when the buffer's place is unsafe. A
    missing or unreadable directory is left to the open, which reports it."""
    folder = db_path.parent
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return
    if not stat.S_ISDIR(mode):
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        who = (
            "group and others"
            if mode & stat.S_IWGRP and mode & stat.S_IWOTH
            else ("its group" if mode & stat.S_IWGRP else "others")
        )
        raise BufferUnsafeError(
            f"buffer directory {folder} is writable by {who} (mode {stat.S_IMODE(mode):04o}): "
            f"anyone who can write there could make the daemon overwrite another file; "
            f"chmod go-w {folder}"
        )
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(db_path.name) and entry.is_symlink():
            raise BufferUnsafeError(symlink_line(entry))
