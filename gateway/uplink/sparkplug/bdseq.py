"""The Sparkplug ``bdSeq`` kept on disk, so a restart (even after kill -9) never reuses one.

Blocking I/O on purpose (a rename and two fsyncs): the uplink calls :meth:`BdSeqFile.advance`
through ``asyncio.to_thread`` once per connect, before CONNECT, so the value in the will is
durable before any broker can hold it. The file is one decimal line, replaced atomically
(write a temporary file, fsync, rename over, fsync the folder): after a crash it holds the old
value or the new one, never a torn one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway import statefile
from gateway.errors import UplinkError

log = logging.getLogger(__name__)


class BdSeqError(UplinkError):
    """The bdSeq file cannot be written (the uplink cannot connect without a fresh bdSeq)."""


def bdseq_path(buffer_path: Path) -> Path:
    """Beside the buffer: ``buffer.db`` -> ``buffer.db.bdseq``."""
    return buffer_path.with_name(buffer_path.name + ".bdseq")


class BdSeqFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int | None:
        """The last bdSeq used, or None when there is none (absent or unreadable file)."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read the last bdSeq (%s); starting again at 0", self.path, exc)
            return None
        try:
            value = int(text.strip())
        except ValueError:
            value = -1
        if not 0 <= value <= 255:
            log.warning("%s: %r is not a bdSeq; starting again at 0", self.path, text[:20])
            return None
        return value

    def advance(self) -> int:
        """The next bdSeq (the last + 1, 255 wraps to 0; 0 the first time), written durably."""
        last = self.read()
        value = 0 if last is None else (last + 1) % 256
        self.write(value)
        return value

    def write(self, value: int) -> None:
        """Replace the file durably (0600, never written through a symbolic link)."""
        try:
            statefile.replace(self.path, f"{value}\n".encode("ascii"))
        except OSError as exc:
            raise BdSeqError(f"{self.path}: cannot store the Sparkplug bdSeq: {exc}") from exc
