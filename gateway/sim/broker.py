"""A local mosquitto on a free loopback port, for the demo, the tests and the benchmarks.

Finding the binary (Debian puts it in /usr/sbin, not on every user's PATH), a free port, its
config, starting it and waiting until it listens, stopping it by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    """Return once something accepts connections on ``host:port``; TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    return found or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def start_mosquitto(
    binary: str, workdir: Path, port: int, *, extra_config: str = "", own_session: bool = False
) -> subprocess.Popen[bytes]:
    """mosquitto listening on 127.0.0.1:``port``, anonymous, without persistence, its config
    and log in ``workdir``; returns once it listens. ``own_session``: a Ctrl-C meant for the
    caller's terminal does not reach it (the demo drains its backlog after one)."""
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 1000000\n"
        "max_inflight_messages 0\n"
        f"{extra_config}\n"
    )
    with (workdir / f"mosquitto-{port}.log").open("ab") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )
    try:
        wait_for_port(port)
    except TimeoutError:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM by pid, then SIGKILL if it lingers; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
