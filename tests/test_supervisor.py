"""No background task dies silently: failures are logged, counted, restarted, and visible."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
from status_support import FakeProvider

from gateway.buffer import Buffer, store
from gateway.buffer.eviction import Evictor
from gateway.model import Sample
from gateway.status import StatusCollector, build_status, generate_latest, health
from gateway.supervisor import Supervisor, TaskHealth

T0 = 1_764_169_200_000


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(restart_min_s=0.01, restart_max_s=0.05)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervisor.run("flaky", flaky))
    async with asyncio.timeout(10):
        while runs < 3:
            await asyncio.sleep(0.01)
    health_now = supervisor.tasks["flaky"]
    assert (health_now.failures, health_now.running) == (2, True)
    assert health_now.last_error == "RuntimeError: boom 2"
    failures = [r for r in caplog.records if "task flaky failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)  # with the traceback
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_core_task_waiting_to_restart_degrades_health_and_shows_in_status() -> None:
    down = TaskHealth("buffer-maintenance", essential=True, running=False, failures=4,
                      last_error="ValueError: Connection closed")  # fmt: skip
    provider = FakeProvider(task_health=[down, TaskHealth("uplink", essential=True)])
    healthy, problems = health(provider)
    assert not healthy
    assert problems == [
        "task buffer-maintenance failed and is restarting: ValueError: Connection closed"
    ]
    tasks = build_status(provider)["tasks"]
    assert [(t["name"], t["running"], t["failures"]) for t in tasks] == [
        ("buffer-maintenance", False, 4),
        ("uplink", True, 0),
    ]
    text = generate_latest(StatusCollector(provider).collect()).decode()
    assert 'street_gateway_task_failures_total{task="buffer-maintenance"} 4.0' in text
    assert 'street_gateway_task_running{task="buffer-maintenance"} 0.0' in text


async def test_an_io_error_while_evicting_with_acks_pending_does_not_kill_maintenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction of issue 16: SQLITE_IOERR from the ack delete that eviction runs
    first dropped the connection, eviction went on with the closed one, aiosqlite raised
    ValueError("Connection closed"), and the maintenance task ended with no log line."""
    supervisor = Supervisor(restart_min_s=0.01, restart_max_s=0.05)
    path = tmp_path / "buffer.db"
    clock = [T0]
    async with Buffer(path, ack_linger_s=3600, maintenance_interval_s=0.05, max_age_s=86400,
                      now_ms=lambda: clock[0], supervisor=supervisor) as buffer:  # fmt: skip
        for n in range(20):
            buffer.put(Sample("aq-1", T0 + n, {"pm25": n * 0.5}))
        await buffer.flush()
        await asyncio.sleep(0.1)  # the commit task is idle again
        await buffer.ack([1, 2, 3])  # pending: deleted with the next transaction
        real_transaction = store.on_connection_thread
        real_run = Evictor.run
        evicting = False
        failed = 0
        evictions = 0

        async def io_error_while_evicting(db, fn, *args):  # type: ignore[no-untyped-def]
            nonlocal failed
            if evicting and not failed:
                failed += 1
                error = sqlite3.OperationalError("disk I/O error")
                error.sqlite_errorcode = sqlite3.SQLITE_IOERR  # type: ignore[attr-defined]
                raise error
            return await real_transaction(db, fn, *args)

        async def run(self: Evictor, *args: object) -> None:
            nonlocal evicting, evictions
            evicting, evictions = True, evictions + 1
            try:
                await real_run(self, *args)  # type: ignore[arg-type]
            finally:
                evicting = False

        monkeypatch.setattr(store, "on_connection_thread", io_error_while_evicting)
        monkeypatch.setattr(Evictor, "run", run)
        clock[0] += 2 * 86_400_000  # every row is now past max_age: eviction deletes
        await buffer.evict_now()
        assert failed == 1
        assert not buffer.stats.writable  # recorded, not raised
        async with asyncio.timeout(10):
            while evictions < 3 or not buffer.stats.writable:  # maintenance goes on
                await asyncio.sleep(0.02)
            while buffer.stats.evicted_total.get("max_age", 0) < 17:
                await asyncio.sleep(0.02)
        assert buffer.stats.evicted_total == {"max_age": 17}  # the unacknowledged ones
    assert all(t.failures == 0 for t in supervisor.tasks.values())
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and "task " in r.getMessage()
    ]
