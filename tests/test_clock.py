"""Clock synchronisation: the override, the kernel call, the timesyncd flag, the cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway import clock


def test_the_kernel_call_answers_on_linux() -> None:
    # Whatever this machine's state, a read-only adjtimex() gives a yes or no, never a crash.
    assert clock.kernel_synced() in (True, False)


@pytest.mark.parametrize(("value", "expected"), [("synced", True), ("unsynced", False)])
def test_the_environment_overrides(value: str, expected: bool) -> None:
    assert clock.probe({clock.ENV_OVERRIDE: value}, kernel=lambda: not expected) is expected


def test_timesyncd_flag_is_the_fallback_when_the_kernel_refuses(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    refused = lambda: None  # noqa: E731 - adjtimex refused, as under ProtectClock=
    assert clock.probe({}, kernel=refused, flag_file=flag) is None
    flag.touch()
    assert clock.probe({}, kernel=refused, flag_file=flag) is True
    assert clock.probe({}, kernel=lambda: False, flag_file=flag) is False  # the kernel wins


def test_cached_rechecked_and_logged_once_when_synced(caplog: pytest.LogCaptureFixture) -> None:
    answers = [False, False, True, True]
    calls: list[int] = []
    now = [0.0]

    def probe() -> bool:
        calls.append(1)
        return answers[len(calls) - 1]

    system = clock.SystemClock(recheck_s=30, probe=probe, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="gateway.clock"):
        assert system.synced is False
        assert system.synced is False
        assert len(calls) == 1  # cached
        now[0] = 30.0
        assert system.synced is False
        now[0] = 60.0
        assert system.synced is True
        now[0] = 90.0
        assert system.synced is True
    assert len(calls) == 4
    synced_lines = [r for r in caplog.records if "is synchronised" in r.getMessage()]
    assert len(synced_lines) == 1


def test_unknown_counts_as_unsynced_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    system = clock.SystemClock(recheck_s=1, probe=lambda: None, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.clock"):
        for step in range(3):
            now[0] = step * 2.0
            assert system.synced is False
    assert sum("cannot tell" in r.getMessage() for r in caplog.records) == 1
