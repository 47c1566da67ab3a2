"""A status provider built from the real model dataclasses, and a status server in a thread.

The provider is the interface the daemon implements, filled by hand: not a mock of a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.model import BufferStats, DeviceStats, UplinkStats, now_ms
from gateway.status import SourceView, StatusServer
from gateway.supervisor import TaskHealth

LOOPBACK = "127.0.0.1"
# Headless chromium on a machine with a closed network: without the background-networking
# flags it keeps trying Google's hosts. Used by the page test and scripts/screenshot_status.py.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class FakeProvider:
    uptime_s: float = 3600.0
    clock_synced: bool = True
    labels: dict[str, str] = field(default_factory=lambda: {"site": "grand-place"})
    uplink: UplinkStats = field(default_factory=UplinkStats)
    buffer: BufferStats = field(default_factory=BufferStats)
    source_views: list[SourceView] = field(default_factory=list)
    pending: int = 0
    task_health: list[TaskHealth] = field(default_factory=list)

    def gateway_info(self) -> dict[str, Any]:
        return {
            "id": "lamppost-0421",
            "version": "0.2.0",
            "uptime_s": self.uptime_s,
            "clock_synced": self.clock_synced,
            "labels": self.labels,
        }

    def uplink_stats(self) -> UplinkStats:
        return self.uplink

    def buffer_stats(self) -> BufferStats:
        return self.buffer

    def sources(self) -> list[SourceView]:
        return self.source_views

    def backlog(self) -> int:
        return self.pending

    def tasks(self) -> list[TaskHealth]:
        return self.task_health

    def devices(self) -> list[DeviceStats]:
        return [d for s in self.source_views for d in s.devices]


# How the page and ``street-gateway status`` show healthy_provider()'s link figures.
LINK_COST = "12.3 MiB sent · 1.2 MiB/h · 181 B per sample"


def healthy_provider() -> FakeProvider:
    """Two sources, three devices, all read a moment ago; one has a hostile name; the link has
    carried 12.3 MiB."""
    now = now_ms()
    return FakeProvider(
        uplink=UplinkStats(
            connected=True,
            server="mqtt://127.0.0.1:1883",
            published_total=1234,
            last_publish_ts=now - 1500,
            bytes_total=12_897_485,  # 12.3 MiB
            bytes_per_hour=1_258_291,  # 1.2 MiB
            bytes_per_sample=181.0,
            connects_total=1,
        ),
        buffer=BufferStats(
            samples=12,
            bytes=3 * 1024 * 1024,
            oldest_ts=now - 4000,
            evicted_total={"max_age": 3},
            last_seq=1246,
        ),
        pending=12,
        source_views=[
            SourceView(
                "rs485-1",
                "modbus-rtu",
                [
                    DeviceStats(
                        "aq-1", "rs485-1", 10.0, state="ok", last_ok_ts=now - 2000, reads_ok=360,
                        reads_failed=2, last_values={"pm25": 12.3, "temp": 21.52},
                    ),
                    DeviceStats(
                        '<script>alert("x")</script>', "rs485-1", 10.0, state="failing",
                        last_ok_ts=now - 25_000, reads_ok=350, reads_failed=12,
                        last_error="timeout after 1s & <retry>",
                    ),
                ],
            ),
            SourceView(
                "noise-1",
                "serial",
                [
                    DeviceStats(
                        "noise-1", "noise-1", 5.0, state="ok", last_ok_ts=now - 1000, reads_ok=720,
                        parse_errors=4, last_values={"laeq": 61.2, "lamax": 74.9},
                    )
                ],
            ),
        ],
    )  # fmt: skip


@contextlib.contextmanager
def serve_in_thread(provider: Any, token: str | None = None) -> Iterator[int]:
    """Run a StatusServer on 127.0.0.1 (free port) in its own thread and loop; yield the port."""
    started = threading.Event()
    port: list[int] = []
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with StatusServer(provider, host=LOOPBACK, port=0, token=token) as server:
                port.append(server.port)
                started.set()
                await stop.wait()
        except BaseException as exc:
            errors.append(exc)
            started.set()
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        if not started.wait(10):
            raise TimeoutError("the status server did not start within 10 s")
        if errors:
            raise errors[0]
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
