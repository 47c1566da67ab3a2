"""systemd's notify protocol (sd_notify) and a watchdog that pings only while the pipeline moves.

No dependency: a notification is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (a path, or an abstract name written ``@name``). Everything here is a
silent no-op when the variable is unset, so the daemon runs the same outside systemd.

:class:`Watchdog` sends ``WATCHDOG=1`` every half ``WatchdogSec`` only while every registered
:class:`Heartbeat` keeps moving: each pipeline stage calls ``beat()`` once per turn of its loop
(idle wake-ups included). When one stops for longer than its allowance, the pings stop, and
systemd kills and restarts the service. A wedged event loop stops them too, since the pinger is
itself a task on that loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 0.25  # a full queue must not stall the event loop for long
DEFAULT_PERIOD_S = 5.0


def _address(environ: Mapping[str, str]) -> str | bytes | None:
    name = environ.get("NOTIFY_SOCKET", "")
    if not name:
        return None
    if name.startswith("@"):  # abstract namespace: a leading NUL byte instead of the '@'
        return b"\0" + name[1:].encode()
    return name


def notify(**fields: object) -> bool:
    """Send ``KEY=value`` lines to systemd; True when a datagram was sent.

    ``notify(READY=1, STATUS="polling 4 devices")``. Newlines in values become spaces, since a
    newline separates fields. Errors are logged at debug level and swallowed: the daemon must
    not fail because its supervisor went away.
    """
    address = _address(os.environ)
    if address is None or not fields:
        return False
    message = "\n".join(
        f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()
    )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", address, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """``READY=1``: the buffer is open and the sources are started."""
    if status is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status)


def status(text: str) -> bool:
    """``STATUS=``: the one-line summary `systemctl status` shows."""
    return notify(STATUS=text)


def stopping(status: str | None = None) -> bool:
    """``STOPPING=1``: shutdown has begun."""
    if status is None:
        return notify(STOPPING=1)
    return notify(STOPPING=1, STATUS=status)


def watchdog() -> bool:
    """One ``WATCHDOG=1`` keep-alive ping."""
    return notify(WATCHDOG=1)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """``WatchdogSec`` in seconds as systemd passed it (``$WATCHDOG_USEC``), or None.

    None also when ``$WATCHDOG_PID`` names another process (the variable was inherited).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


@dataclass(eq=False)
class Heartbeat:
    """One stage's liveness counter; the stage calls :meth:`beat` once per turn of its loop."""

    name: str
    allowance_s: float
    count: int = 0
    # Kept by the Watchdog: the count it last saw, and when (monotonic) it last saw it change.
    _seen: int = -1
    _changed_at: float = 0.0

    def beat(self) -> None:
        self.count += 1


class Watchdog:
    """Pings systemd's watchdog while every registered heartbeat moves within its allowance.

    ``interval_s`` is the watchdog timeout (default: :func:`watchdog_interval`); pings go every
    half of it. ``send`` is the ping (default :func:`watchdog`). Call :meth:`tick` from a loop
    on the event loop (the daemon's ``_watch`` does), or run :meth:`run` as a task; it returns
    at once when systemd set no watchdog.
    """

    def __init__(
        self,
        interval_s: float | None = None,
        *,
        send: Callable[[], object] = watchdog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = watchdog_interval() if interval_s is None else interval_s
        self._send = send
        self._clock = clock
        self._beats: dict[str, Heartbeat] = {}
        self._stalled: list[str] = []

    @property
    def period_s(self) -> float:
        """How often to :meth:`tick`: half the watchdog timeout, or 5 s without a watchdog."""
        return self.interval_s / 2 if self.interval_s else DEFAULT_PERIOD_S

    def register(self, name: str, allowance_s: float) -> Heartbeat:
        """A heartbeat that must move at least once every ``allowance_s`` seconds."""
        beat = Heartbeat(name, allowance_s, _changed_at=self._clock())
        self._beats[name] = beat
        return beat

    @property
    def stalled(self) -> list[str]:
        """The heartbeats found stalled at the last check (sorted names)."""
        return list(self._stalled)

    def check(self) -> list[str]:
        """Names of the heartbeats that have not moved within their allowance (sorted)."""
        now = self._clock()
        stalled = []
        for beat in self._beats.values():
            if beat.count != beat._seen:
                beat._seen, beat._changed_at = beat.count, now
            elif now - beat._changed_at > beat.allowance_s:
                stalled.append(beat.name)
        stalled.sort()
        if stalled != self._stalled:
            if stalled:
                log.error(
                    "pipeline stalled (%s); withholding watchdog pings so systemd restarts us",
                    ", ".join(stalled),
                )
            else:
                log.warning("pipeline moving again; watchdog pings resume")
            self._stalled = stalled
        return stalled

    def tick(self) -> bool:
        """Check the heartbeats and ping when none is stalled; True when a ping was sent.

        Call it from a task on the event loop (as :meth:`run` does): a blocked loop then stops
        the pings by itself. Without a watchdog it only checks (and logs stalls).
        """
        if self.check() or not self.interval_s:
            return False
        self._send()
        return True

    async def run(self) -> None:
        """Tick every half interval until cancelled; return at once without a watchdog."""
        if not self.interval_s:
            return
        while True:
            self.tick()
            await asyncio.sleep(self.period_s)
