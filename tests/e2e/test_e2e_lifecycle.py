"""The daemon as systemd sees it: sd_notify over a real socket, SIGTERM under load, restart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import LOOPBACK, free_port

from e2e.conftest import (
    HEAVY,
    STREET_GATEWAY,
    ModbusSim,
    RunDaemon,
    Upstream,
    modbus_config,
    simulated_bus,
)


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET (a short path: 108 bytes max)."""
    with tempfile.TemporaryDirectory(prefix="sg-") as folder:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(Path(folder) / "notify"))
        sock.setblocking(False)
        with contextlib.closing(sock):
            yield sock


async def _receive_until(sock: socket.socket, got: list[str], field: str, within_s: float) -> None:
    """Append each datagram's ``KEY=value`` lines to ``got`` until ``field`` is among them."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        while field not in got:
            got.extend((await loop.sock_recv(sock, 4096)).decode().splitlines())


async def _receive_containing(
    sock: socket.socket, got: list[str], start: str, within_s: float
) -> None:
    """Append lines to ``got`` until one starts with ``start``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        while not any(line.startswith(start) for line in got):
            got.extend((await loop.sock_recv(sock, 4096)).decode().splitlines())


async def test_sd_notify_ready_status_watchdog_and_stopping(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    tmp_path: Path,
    notify_socket: socket.socket,
) -> None:
    devices = [("aq-1", 1, "air_quality", "200ms")]
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, devices)
    # WATCHDOG_PID stays unset: a pid that is not the daemon's would turn the watchdog off.
    daemon = run_daemon(
        config,
        env={"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "2000000"},
    )
    got: list[str] = []
    await _receive_until(notify_socket, got, "READY=1", 10)
    await _receive_until(notify_socket, got, "WATCHDOG=1", 10)  # every 1 s: half WatchdogSec
    # READY comes before the first poll has an outcome: the status line says so, not "ok"
    at_ready = got[got.index("READY=1") + 1]
    assert at_ready.startswith("STATUS=0 of 1 device answered yet; uplink "), got
    await _receive_containing(notify_socket, got, "STATUS=1 device: 1 ok, 0 failing, 0 down;", 10)
    assert got.count("WATCHDOG=1") >= 1

    assert await daemon.terminate() == 0
    await _receive_until(notify_socket, got, "STOPPING=1", 5)
    assert got.index("READY=1") < got.index("STOPPING=1")


async def test_sigterm_under_heavy_polling_exits_0_and_a_restart_continues_the_seqs(
    modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path
) -> None:
    config = simulated_bus(modbus_sim, upstream.port, tmp_path, HEAVY, sync="full")
    daemon = run_daemon(config)
    started = time.monotonic()
    await upstream.wait_for_seq_above(200, within_s=20)  # ~2 s of polling
    rate = upstream.max_seq() / (time.monotonic() - started)

    sent = time.monotonic()
    code = await daemon.terminate()
    elapsed = time.monotonic() - sent
    print(f"SIGTERM -> exit {code} in {elapsed:.2f} s while polling ~{rate:.0f} samples/s")
    assert code == 0, daemon.log()
    await upstream.wait_until(
        lambda: upstream.last_status() == {"state": "offline", "reason": "shutdown"},
        5,
        "the clean-shutdown status",
    )
    first_max = upstream.max_seq()

    run_daemon(config)  # the same config file, so the same buffer
    await upstream.wait_until(lambda: upstream.state() == "online", 10, "the birth message")
    await upstream.wait_for_seq_above(first_max + 100, within_s=20)
    await upstream.wait_until(lambda: not upstream.holes(), 10, "every seq delivered")
    assert not upstream.holes()
    assert not upstream.of("gaps"), [m.data for m in upstream.of("gaps")]  # a clean stop
    assert not upstream.reused_seqs()
    assert upstream.max_seq() > first_max


async def test_every_device_failing_is_degraded_in_health_status_and_the_status_line(
    run_daemon: RunDaemon, upstream: Upstream, tmp_path: Path, notify_socket: socket.socket
) -> None:
    # Nothing listens on the bus's port, and the devices poll every 60 s: the "no reading within
    # 3 intervals" rule alone would call this gateway healthy for three minutes.
    devices = [("aq-1", 1, "air_quality", "60s"), ("level-1", 2, "water_level", "60s")]
    config = modbus_config(upstream.port, tmp_path, free_port(), devices)
    daemon = run_daemon(config, env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    got: list[str] = []
    await _receive_until(notify_socket, got, "READY=1", 10)
    assert got[got.index("READY=1") + 1].startswith("STATUS=0 of 2 devices answered yet;"), got

    status = await daemon.wait_status(
        lambda s: s["health"]["status"] == "degraded", 10, "health degraded"
    )
    assert [d["state"] for s in status["sources"] for d in s["devices"]] == ["failing"] * 2
    assert status["health"]["problems"] == [
        "every device is failing or down (0 ok, 2 failing, 0 down)"
    ]
    code, _, body = await daemon.get("/health")
    assert code == 503, body
    assert "every device is failing or down" in body

    cli = await asyncio.to_thread(
        subprocess.run,
        [STREET_GATEWAY, "status", "--url", f"http://{LOOPBACK}:{daemon.status_port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "health   DEGRADED" in cli.stdout
    assert "every device is failing or down" in cli.stdout
    # STATUS= goes out with every watchdog check (10 s without a watchdog)
    await _receive_containing(notify_socket, got, "STATUS=DEGRADED: 2 devices: 0 ok, 2 failing", 15)
