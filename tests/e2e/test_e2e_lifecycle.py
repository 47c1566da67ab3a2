"""The daemon as systemd sees it: sd_notify over a real socket, SIGTERM under load, restart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import HEAVY, ModbusSim, RunDaemon, Upstream, simulated_bus


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
    statuses = [line for line in got if line.startswith("STATUS=")]
    assert statuses, got
    assert "devices ok" in statuses[-1], statuses
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
