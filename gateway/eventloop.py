"""Which event loop the daemon runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv under the asyncio API) is a dependency on Linux x86_64 and aarch64, where PyPI
has wheels for it; it cuts the daemon's CPU per point by 12-16 % on the e2e benchmark
(docs/perf/e2e.md), mostly in the loop's own turn and the transports' reads and writes. Nothing
in the daemon depends on it: a box without it (a 32-bit ARM board) runs on asyncio's loop,
and ``STREET_GATEWAY_EVENT_LOOP=asyncio`` chooses that one anywhere (to rule uvloop out when
chasing a bug). The choice is logged at start and shown in ``/status`` (``gateway.event_loop``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata

from gateway.errors import GatewayError

try:
    import uvloop
except ImportError:  # no wheel for this machine (see pyproject.toml)
    uvloop = None  # type: ignore[assignment]

ENV = "STREET_GATEWAY_EVENT_LOOP"


@dataclass(frozen=True, slots=True)
class LoopChoice:
    factory: Callable[[], asyncio.AbstractEventLoop]
    why: str | None = None  # why not uvloop, when it is not


def choose(environ: Mapping[str, str] = os.environ) -> LoopChoice:
    """uvloop when it can be imported, unless ``STREET_GATEWAY_EVENT_LOOP`` says otherwise;
    raises GatewayError for a value it does not know, or for uvloop asked for and missing."""
    wanted = environ.get(ENV, "").strip().lower()
    if wanted == "asyncio":
        return LoopChoice(asyncio.new_event_loop, f"{ENV}=asyncio")
    if wanted not in ("", "uvloop"):
        raise GatewayError(f"{ENV}={wanted!r}: expected uvloop or asyncio")
    if uvloop is None:
        if wanted:
            raise GatewayError(f"{ENV}=uvloop, but uvloop is not installed")
        return LoopChoice(asyncio.new_event_loop, "uvloop is not installed")
    return LoopChoice(uvloop.new_event_loop)


def name_of(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop 0.23.0"`` or ``"asyncio"``: what ``/status`` and the start line show."""
    if type(loop).__module__.startswith("uvloop"):
        return f"uvloop {metadata.version('uvloop')}"
    return "asyncio"
