"""Helpers shared by the tests: free loopback ports, a real mosquitto process and a subscriber
to it, process cleanup, a task for the length of a block, a buffer stopped as by a crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from gateway.buffer import Buffer

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


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


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed; the README test command installs it")
    return found


@dataclass
class Mosquitto:
    """A real mosquitto broker on 127.0.0.1, started and stopped by pid."""

    workdir: Path
    port: int = 0
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            f"{self.extra_config}\n"
        )
        with (self.workdir / f"mosquitto-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def running_mosquitto(workdir: Path, extra_config: str = "") -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir, extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def in_background(coro: Coroutine[Any, Any, T], name: str) -> AsyncIterator[asyncio.Task[T]]:
    """``coro`` in a task (yielded) for the block's duration, cancelled and awaited on exit."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def subscription(
    port: int, topic: str, take: Callable[[aiomqtt.Message], None], *, identifier: str, name: str
) -> AsyncIterator[None]:
    """Subscribed (QoS 1) to ``topic`` on 127.0.0.1:``port`` for the block's duration; every
    message is handed to ``take`` by a task called ``name``."""
    async with aiomqtt.Client(LOOPBACK, port, identifier=identifier) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                take(message)

        async with in_background(collect(), name):
            yield


async def until_set(
    event: asyncio.Event, predicate: Callable[[], object], within_s: float, recheck_s: float
) -> None:
    """Wait until ``predicate()`` holds, re-checked whenever ``event`` is set (a message came)
    and every ``recheck_s``; raises TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not predicate():
            event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(recheck_s):
                    await event.wait()


async def abandon(buffer: Buffer) -> None:
    """Stop ``buffer`` as kill -9 would: what memory held is lost, the connection is closed
    without a checkpoint and no clean shutdown is recorded in the seq file."""
    await buffer._stop_tasks()
    async with buffer._lock:
        buffer._pending.clear()
        buffer._ack_runs = []
        await buffer._close(clean=False)
