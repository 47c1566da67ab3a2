"""What the uplink asks of the buffer (:class:`BufferLike`), and acknowledgements to it: the
seqs of messages the broker acknowledged, handed to ``Buffer.ack`` many at a time when the link
is fast. A delete is never cut off halfway inside its SQLite transaction, and seqs whose ack
failed stay in the buffer (sent again after the next reconnect: at least once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from gateway.errors import BufferStoreError
from gateway.model import BufferStats, Gap, Lane, StoredItem

log = logging.getLogger(__name__)


class BufferLike(Protocol):
    """What the uplink needs of :class:`gateway.buffer.Buffer`."""

    @property
    def last_seq(self) -> int: ...

    @property
    def stats(self) -> BufferStats: ...

    async def wait_for_seq(self, after_seq: int) -> int: ...

    async def fetch(
        self, lane: Lane, *, after_seq: int = 0, up_to_seq: int | None = None, limit: int = 500
    ) -> list[StoredItem]: ...

    async def ack(self, seqs: list[int]) -> None: ...

    async def pending_gaps(self) -> list[Gap]: ...

    async def ack_gap(self, gap_id: int) -> None: ...


class AckQueue:
    def __init__(self, ack: Callable[[list[int]], Awaitable[None]]) -> None:
        self._ack = ack
        self._seqs: list[int] = []
        self._due = asyncio.Event()

    def add(self, seqs: Iterable[int]) -> None:
        self._seqs.extend(seqs)
        self._due.set()

    async def run(self) -> None:
        """Hand seqs to the buffer as they come, until cancelled."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._seqs:
            seqs, self._seqs = self._seqs, []
            acking = asyncio.ensure_future(self._ack(sorted(seqs)))
            try:
                await asyncio.shield(acking)
            except asyncio.CancelledError:
                # Never cut a delete off halfway inside its SQLite transaction: let it finish.
                await asyncio.wait([acking])
                raise
            except BufferStoreError as exc:
                # They stay in the buffer and go out again after the next reconnect.
                log.warning("uplink: could not acknowledge %d items: %s", len(seqs), exc)
                return
