"""`verify --broker`: read a fleet's items and seals from a broker until the stream settles.

A persistent session (like `audit`'s), so messages published while verify is away are kept for
it by the broker; each payload is bounded before it is parsed, and a refusal is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.config import parse_server

MAX_PAYLOAD = 1024 * 1024
KINDS = ("samples", "alarms", "results", "gaps", "seals")


@dataclass
class Collected:
    messages: list[tuple[str, Any]] = field(default_factory=list)
    refused: int = 0  # too large, or not JSON


async def collect_from_broker(
    url: str,
    prefix: str,
    *,
    client_id: str,
    settle_s: float,
    timeout_s: float,
    ca_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Collected:
    """Every items and seals message until none came for ``settle_s`` (at most ``timeout_s``)."""
    scheme, host, port = parse_server(url)
    tls = None
    if scheme == "mqtts":
        tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    got = Collected()
    arrived = asyncio.Event()
    async with aiomqtt.Client(
        host, port, identifier=client_id, clean_session=False, tls_context=tls,
        username=username, password=password, timeout=10,
    ) as client:  # fmt: skip
        for kind in KINDS:
            await client.subscribe(f"{prefix}/+/{kind}", qos=1)

        async def read() -> None:
            async for message in client.messages:
                arrived.set()
                payload = message.payload
                if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD:
                    got.refused += 1
                    continue
                try:
                    got.messages.append((message.topic.value, json.loads(payload)))
                except ValueError:
                    got.refused += 1

        reader = asyncio.create_task(read())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    arrived.clear()
                    try:
                        async with asyncio.timeout(settle_s):
                            await arrived.wait()
                    except TimeoutError:
                        break
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return got
