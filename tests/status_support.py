"""A status provider built from the real model dataclasses, and a status server in a thread.

The provider is the interface the daemon implements, filled by hand: not a mock of a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.history import History
from gateway.model import BufferStats, DeviceStats, Sample, StatusEvent, UplinkStats, Value, now_ms
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


CHROMIUM = Path("/usr/bin/chromium")


def dump_dom(url: str, profile: Path, virtual_ms: int = 12_000) -> str:
    """The DOM after ``virtual_ms`` of virtual time in headless Chromium (the page refreshes
    every 5 s, so by default at least once)."""
    result = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--virtual-time-budget={virtual_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


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
    stored_events: list[StatusEvent] = field(default_factory=list)  # newest first
    recorded: Counter[str] = field(default_factory=Counter)
    trends: History = field(default_factory=History)

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

    def events(self) -> list[StatusEvent]:
        return self.stored_events

    def event_counts(self) -> Mapping[str, int]:
        return self.recorded

    def history(self, device: str, now_ms: int) -> dict[str, list[list[Value]]]:
        return self.trends.of(device, now_ms)

    def devices(self) -> list[DeviceStats]:
        return [d for s in self.source_views for d in s.devices]


# How the page and ``street-gateway status`` show healthy_provider()'s link figures.
LINK_COST = "12.3 MiB sent · 1.2 MiB/h · 181 B per sample"


# The healthy provider's last day, newest first; one message is hostile markup.
def day_of_events(now: int) -> list[StatusEvent]:
    minute = 60_000
    return [
        StatusEvent(now - 5 * minute, "link_up", "link to mqtt://127.0.0.1:1883 up after 12m down",
                    {"server": "mqtt://127.0.0.1:1883", "outage_s": 720.0}),
        StatusEvent(now - 17 * minute, "link_down", "link to mqtt://127.0.0.1:1883 lost",
                    {"server": "mqtt://127.0.0.1:1883"}),
        StatusEvent(now - 40 * minute, "device_failing", '<script>alert("x")</script> failing: '
                    "timeout after 1s & <retry>", {"device": '<script>alert("x")</script>'}),
        StatusEvent(now - 70 * minute, "alarm_cleared", "alarm aq-1/pm25>50 cleared at 38 (high)",
                    {"alarm": "aq-1/pm25>50", "value": 38.0, "priority": "high"}),
        StatusEvent(now - 95 * minute, "alarm_raised", "alarm aq-1/pm25>50 raised at 63 (high)",
                    {"alarm": "aq-1/pm25>50", "value": 63.0, "priority": "high"}),
        StatusEvent(now - 180 * minute, "start", "started v0.2.0 after a crash (the last run did "
                    "not stop cleanly)", {"previous": "crash"}),
    ]  # fmt: skip


def a_half_hour_of(trends: History, device: str, values: dict[str, Value], now: int) -> None:
    """Feed ``trends`` a poll every 10 s for the last 30 min: floats drifting slowly around
    their value in ``values`` with a little jitter (booleans, integers, strings as they are)."""
    for i in range(180):
        ts = now - (179 - i) * 10_000
        drift = {
            k: round(v * (1 + 0.08 * math.sin(i / 25 + n) + 0.01 * ((i * 7 + n) % 5 - 2)), 2)
            if isinstance(v, float) else v
            for n, (k, v) in enumerate(values.items())
        }  # fmt: skip
        trends.observe(Sample(device, ts, drift))


def healthy_provider() -> FakeProvider:
    """Two sources, three devices, all read a moment ago; one has a hostile name; the link has
    carried 12.3 MiB; a day of events and half an hour of history behind it."""
    now = now_ms()
    provider = _healthy(now)
    provider.stored_events = day_of_events(now)
    for device in provider.devices():
        a_half_hour_of(provider.trends, device.name, device.last_values, now)
    return provider


def _healthy(now: int) -> FakeProvider:
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
