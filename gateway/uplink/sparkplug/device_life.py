"""Which devices need a DDEATH or a DBIRTH (since v0.3). Pure: the states are passed in.

Sparkplug 3.0: an edge node publishes DDEATH when a device goes offline and DBIRTH when it is
back. Our devices' states come from the shared device core: ``down`` (several failed polls in
a row) is the DDEATH; the first good poll after it (``ok``) the DBIRTH. ``failing`` is not
death: one lost answer must not make a host drop the device's metrics. Looked at once a second
(:data:`CHECK_S`), through the format's ``due``/``tick``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

CHECK_S = 1.0

States = Callable[[], Mapping[str, str]]  # device name -> unknown | ok | failing | down


class DeviceLife:
    def __init__(self, states: States | None) -> None:
        self._states = states
        self._dead: set[str] = set()
        self._next = 0.0

    def reborn(self) -> None:
        """A full rebirth sent every DBIRTH: a device still down gets its DDEATH again."""
        self._dead.clear()

    def due(self, now: float) -> float | None:
        return None if self._states is None else max(self._next, now)

    def changes(self, now: float, devices: set[str]) -> tuple[list[str], list[str]]:
        """(devices that died, devices born again) since the last look, in name order."""
        if self._states is None or now < self._next:
            return [], []
        self._next = now + CHECK_S
        states = self._states()
        died = sorted(d for d in devices - self._dead if states.get(d) == "down")
        back = sorted(d for d in self._dead if states.get(d) == "ok")
        self._dead.update(died)
        self._dead.difference_update(back)
        return died, back
