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
from status_support import CHROMIUM_FLAGS

from gateway.model import BufferStats, DeviceStats, UplinkStats
from gateway.status import SourceView, StatusServer


class SampleProvider:
    """A lamppost gateway after a day's work: one flaky Modbus meter, one sensor down."""

    def __init__(self) -> None:
        now = int(time.time() * 1000)
        self.uplink = UplinkStats(
            connected=True,
            server="mqtts://broker-a.city.example:8883",
            published_total=1_482_907,
            last_publish_ts=now - 400,
            connects_total=3,
            connect_failures_total=7,
        )
        self.buffer = BufferStats(
            readings=37,
            bytes=14_876_672,
            oldest_ts=now - 1800,
            last_seq=1_482_944,
            evicted_total={"max_age": 1204},
        )

        def dev(name: str, source: str, interval: float, **kw: Any) -> DeviceStats:
            return DeviceStats(name, source, interval, **kw)

        self.views = [
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
        self.started = time.monotonic() - 26 * 3600 - 17 * 60

    def gateway_info(self) -> dict[str, Any]:
        return {
            "id": "lamppost-0421",
            "version": "0.1.0",
            "uptime_s": time.monotonic() - self.started,
            "clock_synced": True,
            "labels": {"site": "grand-place", "district": "centre"},
        }

    def uplink_stats(self) -> UplinkStats:
        return self.uplink

    def buffer_stats(self) -> BufferStats:
        return self.buffer

    def sources(self) -> list[SourceView]:
        return self.views

    def backlog(self) -> int:
        return self.buffer.readings


def serve(provider: SampleProvider, ready: threading.Event, port: list[int]) -> None:
    async def main() -> None:
        async with StatusServer(provider, host="127.0.0.1", port=0, token=None) as server:
            port.append(server.port)
            ready.set()
            await asyncio.sleep(3600)

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/status-page.png"))
    parser.add_argument("--size", default="1280,900", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 1
    ready, port = threading.Event(), []
    threading.Thread(target=serve, args=(SampleProvider(), ready, port), daemon=True).start()
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
