"""Fixtures every test may use: a real mosquitto, and a guard against leaked tasks; the
``e2e`` and ``system`` markers given by path (``scripts/test.sh --fast`` leaves them out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import Mosquitto, running_mosquitto

TESTS = Path(__file__).resolve().parent
BY_PATH = {TESTS / "e2e": pytest.mark.e2e, TESTS / "system": pytest.mark.system}
# Outside those folders, the tests that start the daemon, an audit or a child they kill -9 as a
# process are ``slow`` too: by module (None: all its tests) or by test. (The buffer's and the
# demo's own tests carry the mark in their files.)
SLOW: dict[str, set[str] | None] = {
    "test_audit_mqtt.py": None,
    "test_audit_sparkplug.py": {
        "test_a_running_audit_reports_the_real_hole_and_once_reads_its_state"
    },
    "test_config_fuzz.py": {"test_check_and_run_exit_2_with_one_line_per_problem"},
    "test_run_command.py": None,
    "test_remote_crash.py": None,
    "test_sparkplug_bdseq.py": {"test_kill_9_mid_write_leaves_the_last_durable_value_or_the_next"},
    "test_uplink_crash.py": None,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e ``e2e``, under tests/system ``system``, and the SLOW."""
    for item in items:
        for folder, mark in BY_PATH.items():
            if item.path.is_relative_to(folder):
                item.add_marker(mark)
        if item.path.parent == TESTS and item.path.name in SLOW:
            names = SLOW[item.path.name]
            if names is None or getattr(item, "originalname", item.name) in names:
                item.add_marker(pytest.mark.slow)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, stopped by pid after the test."""
    with running_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked tasks: {[t.get_name() for t in leaked]}"
