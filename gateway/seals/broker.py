"""`verify --broker`: read a fleet's items and seals from a broker until the stream settles.

A persistent session (like `audit`'s), so messages published while verify is away are kept for
it by the broker; each payload is bounded before it is parsed (by the caller's ``parse``, which
reads a zstd fleet's ``P/G/samples.zst`` frames), and a refusal is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.config import parse_server

MAX_PAYLOAD = 1024 * 1024
KINDS = ("samples", "samples.zst", "alarms", "results", "gaps", "seals")


@dataclass
class Collected:
    messages: list[tuple[str, Any]] = field(default_factory=list)
    refused: int = 0  # too large, or ``parse`` refused it (not JSON, an undecodable frame)


async def collect_from_broker(
    url: str,
    prefix: str,
    *,
    client_id: str,
    settle_s: float,
    timeout_s: float,
    parse: Callable[[str, bytes], Any] = lambda _topic, payload: json.loads(payload),
    ca_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Collected:
    """Every items and seals message until none came for ``settle_s`` (at most ``timeout_s``),
    each read by ``parse(topic, payload)``, which raises ValueError for what it refuses."""
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
                topic = message.topic.value
                try:
                    got.messages.append((topic, parse(topic, payload)))
                except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
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
