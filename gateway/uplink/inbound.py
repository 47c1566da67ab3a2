"""The one guard every message from the broker passes (STATE, NCMD, any subscription of any
format). Pure apart from logging: the clock is passed in.

A message is refused, counted by reason and never acted on when it is larger than the cap
(checked before anything parses it), when the format refuses it (:class:`Refused`: malformed,
a STATE from the future), or when handling it raised anything at all (a JSON bomb's
RecursionError, a protobuf error): no inbound byte can end the uplink's task. Refusals are
logged once per burst: the first one with its detail, then one line with the count when a
refusal comes after :data:`BURST_S` of quiet or the burst has lasted that long.

One topic may have a larger cap (:data:`MAX_COMMAND_BYTES` on ``P/G/commands``, when a
``commands`` section is configured: a config command carries a config text of up to 1 MiB);
every other topic keeps :data:`MAX_INBOUND_BYTES`.

Messages over the cap that the client would have to buffer whole are refused earlier, in the
socket reader (:func:`gateway.uplink.aiomqtt_private.bound_inbound_packets`), and counted here
through :meth:`InboundGuard.refuse`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping

from gateway.uplink.wire import Outgoing, Reconnect, Refused

log = logging.getLogger(__name__)

# A STATE is ~50 bytes, a rebirth NCMD ~30; a write command a few hundred. 64 KiB is far above
# any message the gateway acts on and far below what hurts a 1 GB board.
MAX_INBOUND_BYTES = 64 * 1024
# A config command: its yaml (at most 1 MiB, SPEC) as a JSON string, which may double it (every
# quote, backslash or newline escaped), and the command's other keys
MAX_COMMAND_BYTES = 2 * 1024 * 1024 + 64 * 1024
BURST_S = 60.0  # a refusal after this much quiet starts a new burst (and a new log line)

TOO_LARGE = "too_large"
FAILED = "failed"  # handling raised: a bug of ours or a payload built to break the parser


class InboundGuard:
    def __init__(
        self,
        handle: Callable[[str, bytes], list[Outgoing]],
        *,
        clock: Callable[[], float],
        max_bytes: int = MAX_INBOUND_BYTES,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self._handle = handle
        self._clock = clock
        self.max_bytes = max_bytes
        self._larger = dict(larger or {})  # topic -> its own cap
        self.largest = max([max_bytes, *self._larger.values()])  # the socket reader's bound
        self.refused: Counter[str] = Counter()  # reason -> count, for /status and /metrics
        self._burst_start: float | None = None
        self._last_refusal = 0.0
        self._unlogged = 0  # refusals of this burst not logged yet

    def __call__(self, topic: str, payload: bytes | bytearray) -> list[Outgoing]:
        """What the format answers to this message; [] when it is refused. Only the format's
        :class:`Reconnect` (a request, not a failure) goes through."""
        cap = self._larger.get(topic, self.max_bytes)
        if len(payload) > cap:
            self.refuse(TOO_LARGE, topic, f"{len(payload)} bytes, over {cap}")
            return []
        try:
            return self._handle(topic, bytes(payload))
        except Reconnect:
            raise
        except Refused as exc:
            self.refuse(exc.reason, topic, exc.detail)
        except Exception as exc:  # every failure is a refusal: counted and logged, never raised
            self.refuse(FAILED, topic, f"{type(exc).__name__}: {str(exc)[:200]}")
        return []

    def refuse(self, reason: str, topic: str, detail: str) -> None:
        """Count a refusal; log it if it opens a burst, or the burst's count once per BURST_S."""
        now = self._clock()
        self.refused[reason] += 1
        quiet = now - self._last_refusal >= BURST_S
        self._last_refusal = now
        if self._burst_start is None or quiet:
            if self._unlogged:
                log.warning("uplink: %d more inbound messages refused", self._unlogged)
            self._burst_start, self._unlogged = now, 0
            log.warning("uplink: inbound message on %s refused (%s): %s", topic, reason, detail)
            return
        self._unlogged += 1
        if now - self._burst_start >= BURST_S:
            log.warning(
                "uplink: %d more inbound messages refused in %.0f s (last on %s: %s, %s)",
                self._unlogged, now - self._burst_start, topic, reason, detail,
            )  # fmt: skip
            self._burst_start, self._unlogged = now, 0
