"""Helpers shared by the tests: free loopback ports, a real mosquitto process and a subscriber
to it, process cleanup, a task for the length of a block, a buffer stopped as by a crash, a
small file system to fill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest

from gateway.buffer import Buffer
from gateway.sim.broker import (
    LOOPBACK,
    find_mosquitto,
    free_port,
    start_mosquitto,
    stop_process,
    wait_for_port,
)

__all__ = ["LOOPBACK", "free_port", "stop_process", "wait_for_port"]  # used by tests and bench

T = TypeVar("T")


def mosquitto_binary() -> str:
    found = find_mosquitto()
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
        self.proc = start_mosquitto(
            mosquitto_binary(), self.workdir, self.port, extra_config=self.extra_config
        )

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
        buffer._acks.take()
        await buffer._close(clean=False)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (created, mode 0700) for the block's duration;
    the test is skipped when this user may not mount one (it needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(folder: Path, leave_fraction: float) -> Path:
    """Fill ``folder``'s file system with one file until ``leave_fraction`` of it is free."""
    fs = os.statvfs(folder)
    size = (fs.f_bavail - int(fs.f_blocks * leave_fraction)) * fs.f_frsize
    filler = folder / "filler"
    with filler.open("wb") as f:
        f.write(b"\x00" * size)  # tmpfs holds zero pages too
    return filler
