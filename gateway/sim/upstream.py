"""What the city's platform sees: a subscriber that counts what reached the broker.

The demo shows "delivered N of M" from it: the distinct seqs received in samples and alarms
(and, since v0.3, results) messages or declared lost in gaps messages, the last few alarms and
results, and when samples arrived (for a messages/s figure). JSON wire format only, its samples
plain or compressed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass, field

import aiomqtt

from gateway.seals.verify import Running
from gateway.sim.broker import LOOPBACK
from gateway.uplink.compression import read_message


@dataclass
class Upstream:
    """Counts what reached the broker: distinct seqs (samples, alarms, results, gaps), recent
    alarms and results."""

    seqs: set[int] = field(default_factory=set)
    alarms: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=3))
    results: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=3))
    # when samples messages arrived, for the messages/s figure (a bounded window)
    received_times: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )
    seals: Running = field(default_factory=Running)  # "sealed and verified: N of N"

    def take(self, topic: str, payload: bytes) -> None:
        kind, message = read_message(topic.rsplit("/", 1)[-1], payload)
        if kind == "samples":
            self.seqs.update(sample["seq"] for sample in message["samples"])
            self.received_times.append(time.monotonic())
        elif kind == "alarms":
            self.seqs.add(message["seq"])
            self.alarms.append(f"{message['alarm']} {message['state']} ({message['value']:g})")
        elif kind == "results":  # since v0.3: a command's or an action's result
            self.seqs.add(message["seq"])
            reason = f" ({message['reason']})" if message.get("reason") else ""
            self.results.append(
                f"{message['by']}: {message['device']}/{message['point']}="
                f"{json.dumps(message['value'])} {message['state']}{reason}"
            )
        elif kind == "gaps":
            self.seqs.update(range(message["from_seq"], message["to_seq"] + 1))
        if kind in ("samples", "alarms", "results", "gaps", "seals"):
            self.seals.take(kind, message)

    def delivered(self) -> int:
        return len(self.seqs)

    def rate(self, window_s: float = 5.0) -> float:
        """Samples messages per second over the last ``window_s``."""
        now = time.monotonic()
        return sum(1 for t in self.received_times if now - t < window_s) / window_s


async def subscribe(port: int, topic: str, upstream: Upstream, identifier: str) -> None:
    """Feed ``upstream`` with every message on ``topic`` (QoS 1) from 127.0.0.1:``port``,
    reconnecting after a lost connection, until cancelled."""
    while True:
        try:
            async with aiomqtt.Client(LOOPBACK, port, identifier=identifier) as client:
                await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    upstream.take(str(message.topic), bytes(message.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)
