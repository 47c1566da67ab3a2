"""The pseudo-terminal a simulated serial sensor talks through (the serial, sdi12 and
particulate kinds' simulators): a raw pair, and a symlink a config can name."""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path


def open_pty(link: Path | None) -> tuple[int, int, str]:
    """A raw pty pair (no echo, no CR/LF translation), its master non-blocking: (master,
    slave, the slave's name). ``link``, if given, then points at the slave; it is replaced in
    one step, so a reader never finds it missing or pointing at an old pty."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    slave_name = os.ttyname(slave)
    if link is not None:
        temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(slave_name)
        temporary.replace(link)
    return master, slave, slave_name
