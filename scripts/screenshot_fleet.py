"""Write docs/fleet-view.png: the audit's fleet view of 20 simulated gateways, in headless chromium.

    .venv/bin/python scripts/screenshot_fleet.py [--out docs/fleet-view.png]

Everything real but the gateways: a mosquitto on a free loopback port, ``street-gateway audit
--serve`` as a process, and ``python -m gateway.sim.fleet`` publishing as 20 gateways (3
offline, 1 with a hole, 1 degraded, 2 with a device down, 4 on a remote config). Needs Debian's
``chromium`` and ``mosquitto``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from status_support import CHROMIUM_FLAGS

from gateway.sim.broker import (
    find_mosquitto,
    free_port,
    start_mosquitto,
    stop_process,
    wait_for_port,
)

BIN = Path(sys.executable).parent
SIM = ["--gateways", "20", "--offline", "3", "--holes", "1", "--degraded", "1",
       "--devices-down", "2", "--remote", "4", "--seconds", "3"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/fleet-view.png"))
    parser.add_argument("--size", default="1600,1340", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    mosquitto = find_mosquitto()
    if chromium is None or mosquitto is None:
        print(
            "needs chromium and mosquitto: apt-get install -y chromium mosquitto", file=sys.stderr
        )
        return 1
    with tempfile.TemporaryDirectory() as work:
        broker_port, view_port = free_port(), free_port()
        broker = start_mosquitto(mosquitto, Path(work), broker_port)
        url = f"mqtt://127.0.0.1:{broker_port}"
        audit = subprocess.Popen(
            [str(BIN / "street-gateway"), "audit", "--broker", url, "--state", f"{work}/audit.db",
             "--grace", "1s", "--serve", f"127.0.0.1:{view_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(view_port)
            subprocess.run([sys.executable, "-m", "gateway.sim.fleet", "--broker", url, *SIM],
                           check=True, timeout=60)  # fmt: skip
            time.sleep(2)  # the last messages reach the audit; the hole passes its 1 s grace
            with urllib.request.urlopen(f"http://127.0.0.1:{view_port}/fleet.json") as answer:
                assert b"lamppost-0020" in answer.read()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [chromium, *CHROMIUM_FLAGS, "--hide-scrollbars", f"--user-data-dir={work}/profile",
                 f"--window-size={args.size}", f"--screenshot={args.out.resolve()}",
                 f"http://127.0.0.1:{view_port}/"],
                check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            stop_process(audit)
            stop_process(broker)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
