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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from status_support import CHROMIUM_FLAGS, FakeProvider, sample_provider

from gateway.status import StatusServer


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
