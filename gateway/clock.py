"""Is the system clock synchronised? A box without a real-time clock boots in the past.

Samples taken before the first NTP sync are flagged ``"clock": "unsynced"``
(docs/reference.md), and status reports the state. The answer comes from, in order:

1. ``$STREET_GATEWAY_CLOCK=synced|unsynced`` — an override for tests and the demo;
2. the kernel: ``adjtimex()`` in read-only mode (``modes = 0``), synchronised unless the
   ``STA_UNSYNC`` status bit is set — what ``timedatectl``'s "System clock synchronized" shows;
3. ``/run/systemd/timesync/synchronized``, which systemd-timesyncd creates once it has synced
   (used when the kernel call is refused, e.g. by the unit's ``ProtectClock=``/system-call filter).

When no source can tell, the clock counts as unsynchronised (samples get flagged, never
silently trusted) and that is logged once. :class:`SystemClock` caches the answer and asks
again every ``recheck_s`` seconds; it logs once when the clock becomes synchronised.
``SystemClock().synced`` is the whole interface the daemon needs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_OVERRIDE = "STREET_GATEWAY_CLOCK"
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
STA_UNSYNC = 0x0040
TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
DEFAULT_RECHECK_S = 30.0


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """glibc's ``struct timex`` (``<sys/timex.h>``), with the trailing padding it declares."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 16),  # glibc declares 11; spare room costs nothing
    )


@functools.cache
def _adjtimex() -> Callable[[Any], int] | None:
    """libc's ``adjtimex``, looked up once: ``find_library`` runs ``ldconfig -p`` in a child
    process, which the daemon would otherwise fork from its event loop at every recheck."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = (ctypes.POINTER(_Timex),)
    adjtimex.restype = ctypes.c_int
    return adjtimex


def kernel_synced() -> bool | None:
    """The kernel's view through read-only ``adjtimex``; None when the call is unavailable."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    timex = _Timex()  # zeroed: modes = 0 reads without changing anything
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        log.debug("adjtimex failed: %s", os.strerror(ctypes.get_errno()))
        return None
    return state != TIME_ERROR and not timex.status & STA_UNSYNC


def probe(
    environ: Mapping[str, str] | None = None,
    *,
    kernel: Callable[[], bool | None] = kernel_synced,
    flag_file: Path = TIMESYNCD_FLAG,
) -> bool | None:
    """One uncached answer: True/False, or None when nothing can tell."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_OVERRIDE, "").strip().lower()
    if override in ("synced", "unsynced"):
        return override == "synced"
    answer = kernel()
    if answer is not None:
        return answer
    if flag_file.exists():
        return True
    return None


class SystemClock:
    """A cached "is the clock synchronised?", asked again every ``recheck_s`` seconds."""

    def __init__(
        self,
        recheck_s: float = DEFAULT_RECHECK_S,
        *,
        probe: Callable[[], bool | None] = probe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recheck_s = recheck_s
        self._probe = probe
        self._clock = clock
        self._synced: bool | None = None
        self._checked_at = 0.0
        self._unknown_logged = False

    @property
    def synced(self) -> bool:
        """True once the clock is synchronised; cheap to read for every sample."""
        now = self._clock()
        if self._synced is None or now - self._checked_at >= self.recheck_s:
            self._update(now)
        return bool(self._synced)

    def _update(self, now: float) -> None:
        answer = self._probe()
        self._checked_at = now
        if answer is None and not self._unknown_logged:
            self._unknown_logged = True
            log.warning(
                "cannot tell whether the system clock is synchronised; samples are flagged "
                "unsynced (set %s=synced to override)",
                ENV_OVERRIDE,
            )
        synced = bool(answer)
        if synced and not self._synced:
            log.info("system clock is synchronised")
        elif not synced and self._synced is None:
            log.info("system clock is not synchronised yet; samples are flagged until it is")
        elif not synced and self._synced:
            log.warning("system clock lost synchronisation; samples are flagged again")
        self._synced = synced
