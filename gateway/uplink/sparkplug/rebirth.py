"""Rebirth pacing: at most one rebirth per window, whatever a host (or anyone who can publish
on NCMD) asks. Pure: the caller passes the monotonic time.

The first request of a burst is answered at once and opens a window; requests inside it are
coalesced into one rebirth at its end (which opens the next window); a window that ends with
nothing pending closes the burst, and :meth:`RebirthPacer.tick` then says how many requests the
burst held and how many rebirths answered them, for one log line. 20,000 requests in a second
cost two rebirths, not 20,000.
"""

from __future__ import annotations

from dataclasses import dataclass

REBIRTH_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class Burst:
    requests: int
    rebirths: int
    seconds: float


class RebirthPacer:
    def __init__(self, window_s: float = REBIRTH_WINDOW_S) -> None:
        self.window_s = window_s
        self._window_end: float | None = None  # None: no burst open
        self._started = 0.0
        self._pending = False
        self._requests = 0
        self._rebirths = 0

    def request(self, now: float) -> bool:
        """A rebirth was asked for: True to do it now, False when it waits for the window."""
        if self._window_end is not None and now >= self._window_end and not self._pending:
            self._window_end = None  # the last window ended quietly without a tick
        self._requests += 1
        if self._window_end is None:
            self._started, self._requests, self._rebirths = now, 1, 1
            self._window_end = now + self.window_s
            return True
        self._pending = True
        return False

    def due(self) -> float | None:
        """When :meth:`tick` has something to do: the end of the open window."""
        return self._window_end

    def tick(self, now: float) -> tuple[bool, Burst | None]:
        """(do a rebirth now, the burst that just ended)."""
        if self._window_end is None or now < self._window_end:
            return False, None
        if self._pending:
            self._pending = False
            self._rebirths += 1
            self._window_end = now + self.window_s
            return True, None
        self._window_end = None
        return False, Burst(self._requests, self._rebirths, now - self._started)

    def forget_pending(self) -> None:
        """A new session's births answer whatever was pending."""
        self._pending = False
