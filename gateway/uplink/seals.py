"""Seals on the wire: ``P/G/seals``, QoS 1, the stored JSON as it is, in every wire format."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.uplink.wire import Outgoing


class SealsWaiting(Protocol):
    unsent: list[tuple[int, bytes]]  # a seal stored wakes the uplink's wait_for_seq


@runtime_checkable
class SealSource(Protocol):
    """What the uplink needs of a buffer that seals (:class:`gateway.buffer.Buffer`)."""

    seals: SealsWaiting

    async def ack_seal(self, n: int) -> None: ...


def seal_messages(topic: str, source: SealSource, inflight: set[int]) -> list[Outgoing]:
    """The stored seals not yet in flight, oldest first; each acknowledged by its ``n``."""
    out = [
        Outgoing(topic, body, 1, seal_ns=(n,))
        for n, body in source.seals.unsent
        if n not in inflight
    ]
    inflight.update(n for n, _ in source.seals.unsent)
    return out
