"""Capped exponential backoff with full jitter. Pure: the random source is injectable.

The n-th delay is uniform in ``[0, min(cap, base * 2**n))`` ("full jitter"), so a fleet that
lost its broker at the same moment does not come back in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
    ) -> None:
        self.base_s = base_s
        self.cap_s = max(cap_s, base_s)
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 60))

    def next_delay(self) -> float:
        delay = self._rng() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
