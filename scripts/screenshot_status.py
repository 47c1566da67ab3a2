"""Write docs/status-page.png: the status page of a realistic sample gateway, in headless chromium.

    .venv/bin/python scripts/screenshot_status.py [--out docs/status-page.png]

Starts a status server on 127.0.0.1 (a free port) fed with the sample below, lets the page
load and refresh once, and saves a screenshot. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from status_support import CHROMIUM_FLAGS, FakeProvider, a_half_hour_of

from gateway.model import BufferStats, DeviceStats, StatusEvent, UplinkStats
from gateway.status import SourceView, StatusServer

MINUTE = 60_000


def sample_provider() -> FakeProvider:
    """A lamppost gateway after a day's work: one flaky Modbus meter, one sensor down."""
    now = int(time.time() * 1000)
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


def serve(provider: FakeProvider, ready: threading.Event, port: list[int]) -> None:
    async def main() -> None:
        async with StatusServer(provider, host="127.0.0.1", port=0, token=None) as server:
            port.append(server.port)
            ready.set()
            await asyncio.sleep(3600)

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/status-page.png"))
    parser.add_argument("--size", default="1280,2000", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 1
    ready, port = threading.Event(), []
    threading.Thread(target=serve, args=(sample_provider(), ready, port), daemon=True).start()
    if not ready.wait(10):
        print("the status server did not start", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={args.size}",
                "--virtual-time-budget=6000",  # load, then one refresh from /status
                f"--screenshot={args.out.resolve()}",
                f"http://127.0.0.1:{port[0]}/",
            ],
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
