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

    def commands(self) -> dict[str, Any]:
        return {"results_total": {}, "writable": []}

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


MINUTE = 60_000


def sample_provider() -> FakeProvider:
    """A lamppost gateway after a day's work: one flaky Modbus meter, one sensor down (the
    screenshot in docs/ and the layout test show it)."""
    now = now_ms()
    provider = FakeProvider(
        uptime_s=9 * 3600 + 17 * 60,
        labels={"site": "grand-place", "district": "centre"},
        uplink=UplinkStats(
            connected=True,
            server="mqtts://broker-a.city.example:8883",
            published_total=1_482_907,
            last_publish_ts=now - 400,
            connects_total=3,
            connect_failures_total=7,
            bytes_total=96_337_100,
            bytes_per_hour=1_310_720,
            bytes_per_sample=142.0,
        ),
        pending=37,
    )
    provider.buffer = BufferStats(
        samples=37,
        bytes=14_876_672,
        oldest_ts=now - 1800,
        last_seq=1_482_944,
        evicted_total={"max_age": 1204},
    )

    def dev(name: str, source: str, interval: float, **kw: Any) -> DeviceStats:
        kw.setdefault("state", "ok")
        since = {"ok": 9 * 60, "failing": 0.8, "down": 90}[kw["state"]]
        return DeviceStats(name, source, interval, state_since_ms=now - int(since * MINUTE), **kw)

    provider.source_views = [
        SourceView("rs485-1", "modbus-rtu", [
            dev("aq-1", "rs485-1", 10, last_ok_ts=now - 3200, reads_ok=8_612, reads_failed=3,
                last_values={"pm25": 12.4, "pm10": 19.8, "no2": 31.0, "temp": 21.56}),
            dev("aq-2", "rs485-1", 10, last_ok_ts=now - 6100, reads_ok=8_598, reads_failed=19,
                last_values={"pm25": 14.1, "pm10": 22.3, "no2": 28.5, "temp": 21.9}),
            dev("energy-meter", "rs485-1", 30, state="failing", last_ok_ts=now - 47_000,
                reads_ok=2_866, reads_failed=41, last_error="no answer within 1s (unit 7)",
                last_values={"power_kw": 1.284, "energy_kwh": 53_118.2}),
            dev("water-level", "rs485-1", 60, state="down", last_ok_ts=now - 5_410_000,
                reads_ok=1_344, reads_failed=312,
                last_error="CRC error in response from unit 9",
                last_values={"level_cm": 87.5}),
        ]),
        SourceView("cabinet-plc", "modbus-tcp", [
            dev("cabinet", "cabinet-plc", 5, last_ok_ts=now - 900, reads_ok=17_280,
                last_values={"door_open": False, "temp_c": 29.4, "fan": True}),
        ]),
        SourceView("noise-1", "serial", [
            dev("noise-1", "noise-1", 5, last_ok_ts=now - 1100, reads_ok=17_265,
                parse_errors=6, last_values={"laeq": 61.2, "lamax": 74.9}),
        ]),
        SourceView("traffic-1", "serial", [
            dev("traffic-1", "traffic-1", 60, last_ok_ts=now - 22_000, reads_ok=1_438,
                last_values={"cars": 412, "bikes": 96, "pedestrians": 1_207}),
        ]),
    ]  # fmt: skip
    for view in provider.source_views:
        for device in view.devices:
            if device.state == "ok":
                a_half_hour_of(provider.trends, device.name, device.last_values, now)
    provider.stored_events = story(now)
    provider.recorded.update(e.kind for e in provider.stored_events)
    return provider


def story(now: int) -> list[StatusEvent]:
    """The last day of a lamppost, newest first: a night outage, a power cut, an alarm, a
    flaky meter and a water-level sensor that died."""
    server = "mqtts://broker-a.city.example:8883"

    def ev(minutes_ago: float, kind: str, message: str, **fields: Any) -> StatusEvent:
        return StatusEvent(now - int(minutes_ago * MINUTE), kind, message, fields)

    return [
        ev(0.8, "device_failing", "energy-meter failing: no answer within 1s (unit 7)",
           device="energy-meter"),
        ev(42, "link_up", f"link to {server} up after 3m 10s down", server=server, outage_s=190.0),
        ev(45.2, "link_down", f"link to {server} lost: connection lost", server=server),
        ev(90, "device_down", "water-level down: CRC error in response from unit 9",
           device="water-level"),
        ev(92, "device_failing", "water-level failing: CRC error in response from unit 9",
           device="water-level"),
        ev(185, "alarm_cleared", "alarm aq-2/pm25>35 cleared at 31.2 (high)",
           alarm="aq-2/pm25>35", value=31.2, priority="high"),
        ev(238, "alarm_raised", "alarm aq-2/pm25>35 raised at 41.7 (high)",
           alarm="aq-2/pm25>35", value=41.7, priority="high"),
        ev(300, "reload", "reloaded /etc/street-gateway/gateway.yaml: 4 sources, 7 devices, "
           "2 alarms"),
        ev(557, "start", "started v0.2.0 after a crash (the last run did not stop cleanly)",
           previous="crash"),
        ev(560, "link_up", f"link to {server} up after 47m down", server=server, outage_s=2820.0),
        ev(607, "link_down", f"link to {server} lost: no PINGRESP within keepalive", server=server),
        ev(1320, "device_ok", "energy-meter ok again after 4m failing", device="energy-meter",
           was="failing"),
        ev(1324, "device_failing", "energy-meter failing: no answer within 1s (unit 7)",
           device="energy-meter"),
    ]  # fmt: skip


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


def measure_in_chromium(url: str, profile: Path, width: int, expression: str) -> Any:
    """Open ``url`` in headless Chromium with a viewport ``width`` px wide, wait until it has
    loaded, and evaluate ``expression`` in it (over the DevTools protocol): its value."""
    proc = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars",
         f"--window-size={width},1000", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("DevTools listening on "):
                browser = line.split()[-1]
                break
        else:
            raise AssertionError("chromium did not open its DevTools port")
        return asyncio.run(_evaluate(browser, url, width, expression))
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


async def _evaluate(browser: str, url: str, width: int, expression: str) -> Any:
    import aiohttp  # noqa: PLC0415 - only the layout tests need it

    base = "http://" + browser.split("/")[2]
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        async with session.get(f"{base}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"]) as ws:
            ids = iter(range(1, 1000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                number = next(ids)
                await ws.send_json({"id": number, "method": method, "params": params})
                async for message in ws:
                    answer: dict[str, Any] = message.json()
                    if answer.get("id") == number:
                        return answer.get("result", {})
                raise AssertionError("the DevTools connection closed")

            await call("Emulation.setDeviceMetricsOverride", width=width, height=1000,
                       deviceScaleFactor=1, mobile=False)  # fmt: skip
            await call("Page.navigate", url=url)
            while True:
                ready = await call("Runtime.evaluate", expression="document.readyState",
                                   returnByValue=True)  # fmt: skip
                if ready["result"].get("value") == "complete":
                    break
                await asyncio.sleep(0.1)
            result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            return result["result"].get("value")
