"""A full disk with the broker up: the daemon keeps delivering, nothing fails to write, and
``/health`` says 503 with the problem line until the room is back.

The buffer lives on a real small file system (an 8 MiB tmpfs mounted for the test: root only),
the daemon polls a simulated Modbus device and publishes to mosquitto. The test fills the file
system to 3 % free, then frees it.
"""

from __future__ import annotations

import json
from pathlib import Path

from support import Mosquitto, fill

from e2e.conftest import Device, ModbusSim, RunDaemon, Upstream, simulated_bus

AQ: Device = ("aq-1", 1, "air_quality", "100ms")


async def test_a_full_disk_degrades_health_with_the_link_up_and_recovers(
    small_fs: Path,
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    mosquitto: Mosquitto,
    upstream: Upstream,
) -> None:
    daemon = run_daemon(simulated_bus(modbus_sim, mosquitto.port, small_fs, [AQ]))
    roomy = await daemon.wait_status(
        lambda s: s.get("health", {}).get("status") == "ok" and s["buffer"]["room_bytes"],
        within_s=15,
        what="a healthy gateway with room",
    )
    assert roomy["buffer"]["room_bytes"] > 6 * 1024**2

    filler = fill(small_fs, leave_fraction=0.03)
    full = await daemon.wait_status(
        lambda s: s["health"]["status"] == "degraded", within_s=15, what="health degraded"
    )
    assert full["buffer"]["room_bytes"] == 0
    assert full["buffer"]["writable"] is True  # nothing failed: the room is what is missing
    code, _, body = await daemon.get("/health")
    assert code == 503
    (problem,) = json.loads(body)["problems"]
    assert problem.startswith("buffer has no room left to take an outage's samples (")
    _, _, metrics = await daemon.get("/metrics")
    gauge = "street_gateway_buffer_room_bytes "
    room = [line.removeprefix(gauge) for line in metrics.splitlines() if line.startswith(gauge)]
    assert [float(value) for value in room] == [0]
    # samples still go upstream meanwhile
    await upstream.wait_for_seq_above(upstream.max_seq(), within_s=10)

    filler.unlink()
    await daemon.wait_status(
        lambda s: s["health"]["status"] == "ok" and s["buffer"]["room_bytes"] > 6 * 1024**2,
        within_s=15,
        what="health ok again with room",
    )
    code, _, _ = await daemon.get("/health")
    assert code == 200
    assert await daemon.terminate() == 0
