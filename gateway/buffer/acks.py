"""Acknowledged seqs whose rows may still be in the file. No I/O.

They are deleted in the next commit's transaction (or ``ack_linger_s`` later when none comes),
not in one and an fsync of their own. ``counted``: of those, per lane, the ones already taken
out of the counts (found in the tail), so the delete does not count them out twice.
"""

from __future__ import annotations

from gateway.buffer.runs import Run, merge_runs
from gateway.model import Lane


class Acks:
    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.counted = dict.fromkeys(Lane, 0)

    def add(self, runs: list[Run]) -> None:
        self.runs = merge_runs(self.runs + runs)

    def take(self) -> tuple[list[Run], dict[Lane, int]]:
        """Everything to delete now, and how much of it was counted out already."""
        taken = self.runs, self.counted
        self.runs, self.counted = [], dict.fromkeys(Lane, 0)
        return taken

    def put_back(self, runs: list[Run], counted: dict[Lane, int]) -> None:
        """The delete failed: a later commit deletes them."""
        self.runs = merge_runs(runs + self.runs)
        for lane in Lane:
            self.counted[lane] += counted[lane]

    def recounted(self) -> None:
        """The counts were set afresh from the file, which still holds these rows."""
        self.counted = dict.fromkeys(Lane, 0)
