"""The seq reservation file beside the database, and what is left on disk after a crash.

``buffer.db.seq`` is one line of JSON, replaced atomically (write, fsync, rename, fsync the
directory)::

    {"v": 1, "reserved": 41000, "clean": null, "boot": "<boot id>", "base": 0, "settled": 40321}

- ``reserved``: no seq above it has ever been handed out. The buffer raises it (by whole blocks)
  before it commits a seq above it, so it survives anything that loses the WAL's tail.
- ``clean``: the exact last seq, written only by a clean close; ``null`` while a buffer is open.
- ``boot``: the kernel's boot id when it was written, to tell a process crash (the page cache
  kept every write) from a power cut or reboot (it may not have).
- ``base``: the last seq before the current database file was created, so a corrupt file's seq
  range is ``base + 1 .. reserved``.
- ``settled`` (since v0.3; 0 when absent or with ``sync: normal``): when it was written, every
  seq up to it was committed (fsynced) or acknowledged by the broker: after a power cut the
  ``unclean_shutdown`` gap starts above it, though no commit recorded it in the database.

``buffer.db.exposed`` holds two little-endian u64: the highest seq the uplink was handed *before*
its commit (a live sample is published without waiting for the fsync), and (since v0.3) the
*settled* mark, every seq up to which is committed or acknowledged. They are written in place
and never fsynced: they have to outlive a killed process, which the page cache guarantees, not
a power cut, after which the seq file's figures count instead. So a link that acknowledges every
sample before its commit costs the SD card no database write at all (docs/performance.md).

Blocking file I/O: call it from a worker thread (``asyncio.to_thread``), as :class:`SeqFiles`,
the running buffer's handle on both files, does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from gateway import statefile
from gateway.errors import BufferUnsafeError, BufferWriteError
from gateway.model import GapReason

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_SHM_VERSION = 3007000


@dataclass(frozen=True, slots=True)
class SeqState:
    reserved: int
    clean: int | None
    boot: str | None
    base: int
    settled: int = 0  # every seq up to it was committed (fsynced) or acknowledged


def boot_id() -> str | None:
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def read_state(path: Path) -> SeqState | None:
    """The recorded state, or None when the file is missing or unreadable (logged)."""
    try:
        raw = json.loads(path.read_text())
        clean = raw["clean"]
        boot = raw.get("boot")
        state = SeqState(
            reserved=int(raw["reserved"]),
            clean=None if clean is None else int(clean),
            boot=boot if isinstance(boot, str) else None,
            base=int(raw.get("base", 0)),
            settled=int(raw.get("settled", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("seq reservation file %s unreadable (%s): ignoring it", path, exc)
        return None
    if not 0 <= state.base <= state.reserved or not 0 <= state.settled <= state.reserved:
        log.warning("seq reservation file %s holds impossible values: ignoring it", path)
        return None
    return state


def write_state(path: Path, state: SeqState) -> None:
    """Replace the file atomically and durably; raises OSError."""
    text = json.dumps(
        {
            "v": 1,
            "reserved": state.reserved,
            "clean": state.clean,
            "boot": state.boot,
            "base": state.base,
            "settled": state.settled,
        }
    )
    statefile.replace(path, text.encode() + b"\n")


def wal_intact(db_path: Path) -> bool:
    """After a process crash: does the WAL still hold every frame the last writer committed?

    SQLite keeps the count of valid WAL frames (``mxFrame``) and the WAL's salts in the shared
    memory file ``-shm``, which outlives a killed process (but not a reboot: it is never
    fsynced, so only trust this when the boot id is unchanged). A WAL shorter than ``mxFrame``
    frames, or with other salts, lost its tail after the commits were made visible. No WAL and
    no shm means the last connection closed and checkpointed. Anything else is "not provable".
    """
    wal = db_path.with_name(db_path.name + "-wal")
    shm = db_path.with_name(db_path.name + "-shm")
    try:
        wal_size = wal.stat().st_size if wal.exists() else None
        if not shm.exists():
            return wal_size in (None, 0)
        with shm.open("rb") as f:
            header = f.read(48)
        if wal_size is None:
            return False
        with wal.open("rb") as f:
            wal_header = f.read(_WAL_HEADER)
    except OSError:
        return False
    if len(header) < 48:
        return False
    version, _, _, is_init, _, sz_page, mx_frame = struct.unpack_from("=IIIBBHI", header, 0)
    if version != _SHM_VERSION or not is_init:
        return False
    if mx_frame == 0:
        return True
    if len(wal_header) < _WAL_HEADER:
        return False
    (magic,) = struct.unpack_from(">I", wal_header, 0)
    # the wal-index copies the WAL header's salt bytes verbatim (wal.c)
    if magic not in _WAL_MAGIC or wal_header[16:24] != header[32:40]:
        return False
    page = 65536 if sz_page == 1 else sz_page
    return bool(wal_size >= _WAL_HEADER + mx_frame * (_WAL_FRAME_HEADER + page))


# The settled mark moves by steps (one pwrite per MARK_STEP seqs, not per acknowledgement): a
# crash's gap may start up to MARK_STEP seqs below the truth. The exposure mark stays exact, so
# the seqs nobody saw are used again.
MARK_STEP = 200


class ExposureMark:
    """``<db>.exposed``, kept open: one ``pwrite`` (no fsync) per raise."""

    def __init__(self, path: Path) -> None:
        self._fd = statefile.open_private(path, os.O_RDWR)
        self.seq, self.settled = read_exposed(path)

    def raise_to(self, seq: int) -> None:
        if seq > self.seq:
            self._write(seq, self.settled)

    def settle_to(self, seq: int) -> None:
        if seq >= self.settled + MARK_STEP:
            self._write(self.seq, seq)

    def _write(self, exposed: int, settled: int) -> None:
        os.pwrite(self._fd, struct.pack("<QQ", exposed, settled), 0)
        self.seq, self.settled = exposed, settled

    def close(self) -> None:
        os.close(self._fd)


def read_exposed(path: Path) -> tuple[int, int]:
    """(exposed, settled); 0 for what the file does not hold (an 8-byte file of v0.2)."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0, 0
    exposed = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0
    return exposed, struct.unpack("<Q", data[8:16])[0] if len(data) >= 16 else 0


@dataclass(frozen=True, slots=True)
class Start:
    """Where seqs continue after open, and the ranges to report as gaps."""

    last_seq: int
    gaps: list[tuple[int, int, GapReason]]


def plan_start(
    state: SeqState | None,
    *,
    fresh: bool,
    db_last: int,
    same_boot: bool,
    intact: bool,
    exposed: int = 0,
    settled: int = 0,
) -> Start:
    """Decide the seq to continue from (the reasoning is in ``buffer/core.py``'s docstring).

    ``fresh``: the database file was just created (absent, or moved aside as corrupt);
    ``db_last``: the highest seq the existing database knows (``meta.last_seq``, its rows and
    its gaps); ``same_boot``: the seq file was written in this boot; ``intact``: the WAL holds
    every frame the wal-index says was committed; ``exposed``: the highest seq handed to the
    uplink before its commit (the exposure mark; trusted only with ``same_boot``);
    ``settled``: the exposure file's settled mark (ditto). Every seq up to a settled mark (this
    one, or the seq file's fsynced one) is in the database or was acknowledged: no gap for it.
    """
    if fresh:
        if state is None:
            return Start(0, [])
        lost_to = state.clean if state.clean is not None else state.reserved
        gaps: list[tuple[int, int, GapReason]] = []
        if lost_to > state.base:
            gaps.append((state.base + 1, lost_to, "corrupt_buffer"))
        return Start(lost_to, gaps)
    if state is None or state.clean == db_last or state.reserved <= db_last:
        return Start(db_last, [])
    known = max(db_last, min(state.settled, state.reserved))
    if same_boot and intact:
        # Seqs above what the file holds that nobody ever saw are free again; those handed to
        # the uplink before their commit may have been published: accounted for as a gap.
        known = max(known, min(settled, state.reserved))
        seen = min(exposed, state.reserved)
        if seen > known:
            return Start(seen, [(known + 1, seen, "unclean_shutdown")])
        return Start(known, [])
    if state.reserved <= known:
        return Start(known, [])
    return Start(state.reserved, [(known + 1, state.reserved, "unclean_shutdown")])


class SeqFiles:
    """The seq file and the exposure mark as an open buffer writes them."""

    def __init__(self, db_path: Path) -> None:
        self.seq_path = db_path.with_name(db_path.name + ".seq")
        self.exposed_path = db_path.with_name(db_path.name + ".exposed")
        self.boot = boot_id()
        self.base = 0  # the last seq before the current database file was created
        self._exposure: ExposureMark | None = None
        self._writing: asyncio.Future[None] | None = None  # the seq file's write in its thread

    async def _write(self, state: SeqState) -> None:
        """Write the seq file, one write at a time and in order. A task cancelled while its
        write runs (the commit task, at close) leaves the thread writing: the next write waits
        for it, so two never race on the temporary file nor land out of order."""
        if self._writing is not None and not self._writing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        self._writing = asyncio.ensure_future(asyncio.to_thread(write_state, self.seq_path, state))
        await asyncio.shield(self._writing)

    async def reserve(self, reserved: int, settled: int = 0) -> None:
        """Record (fsynced) that seqs up to ``reserved`` may be handed out, and that every seq up
        to ``settled`` is committed (fsynced) or acknowledged."""
        state = SeqState(reserved, None, self.boot, self.base, settled)
        try:
            await self._write(state)
        except OSError as exc:
            refusal = statefile.symlink_refusal(exc)
            if refusal is not None:
                raise BufferUnsafeError(refusal) from exc
            raise BufferWriteError(f"cannot raise the seq reservation: {exc}") from exc

    async def record_clean(self, reserved: int, last: int) -> None:
        """Record a clean close: the exact last seq."""
        state = SeqState(reserved, last, self.boot, self.base)
        try:
            await self._write(state)
        except OSError as exc:
            log.warning("cannot record the clean shutdown in %s: %s", self.seq_path, exc)

    def expose(self, seq: int) -> None:
        """``seq`` was handed out before its commit: a crash now must not let it be reused."""
        if self._exposure is None:
            return
        try:
            self._exposure.raise_to(seq)
        except OSError as exc:
            log.warning("buffer: cannot write %s: %s", self.exposed_path, exc)

    def settle(self, seq: int) -> None:
        """Every seq up to ``seq`` is committed or acknowledged: a crash now gives them no gap."""
        if self._exposure is None:
            return
        try:
            self._exposure.settle_to(seq)
        except OSError as exc:
            log.warning("buffer: cannot write %s: %s", self.exposed_path, exc)

    def swap_exposure(self, mark: ExposureMark | None) -> None:
        if self._exposure is not None:
            self._exposure.close()
        self._exposure = mark
