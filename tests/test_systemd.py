"""sd_notify over a real AF_UNIX datagram socket, the watchdog, and the unit file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import systemd

UNIT = Path(__file__).parent.parent / "systemd" / "street-gateway.service"


class NotifySocket:
    """What systemd listens on: a datagram socket; collects the messages it receives."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name

    def receive(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                messages.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            return messages


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        abstract = f"street-gateway-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + abstract.encode())
        name = "@" + abstract
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    with sock:
        yield NotifySocket(sock, name)


def test_ready_status_watchdog_stopping_arrive(notify_socket: NotifySocket) -> None:
    assert systemd.ready()
    assert notify_socket.receive() == {"READY": "1"}
    assert systemd.status("4/4 devices ok, uplink up")
    assert notify_socket.receive() == {"STATUS": "4/4 devices ok, uplink up"}
    assert systemd.watchdog()
    assert notify_socket.receive() == {"WATCHDOG": "1"}
    assert systemd.stopping()
    assert notify_socket.receive() == {"STOPPING": "1"}


def test_several_fields_go_in_one_datagram_and_newlines_cannot_split_them(
    notify_socket: NotifySocket,
) -> None:
    assert systemd.notify(READY=1, STATUS="line one\nline two")
    assert notify_socket.receive() == {"READY": "1", "STATUS": "line one line two"}


def test_without_notify_socket_everything_is_a_silent_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.ready()
    assert not systemd.status("x")
    assert not systemd.watchdog()
    assert not systemd.stopping()


def test_a_vanished_socket_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not systemd.ready()


def test_watchdog_interval_from_the_environment() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({}) is None


async def test_watchdog_pings_while_stages_beat_and_stops_when_one_stalls(
    notify_socket: NotifySocket,
) -> None:
    dog = systemd.Watchdog(interval_s=0.08)  # a ping every 40 ms: fewer than the 10
    # datagrams a unix socket queues by default between two drains
    polls = dog.register("sources", allowance_s=0.2)
    uplink = dog.register("uplink", allowance_s=0.2)
    stop_polling = asyncio.Event()

    async def stage(beat: systemd.Heartbeat, until: asyncio.Event | None) -> None:
        while until is None or not until.is_set():
            beat.beat()
            await asyncio.sleep(0.01)

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(dog.run(), name="watchdog"),
            group.create_task(stage(polls, stop_polling), name="sources"),
            group.create_task(stage(uplink, None), name="uplink"),
        ]
        await asyncio.sleep(0.25)
        alive = notify_socket.pending()
        stop_polling.set()  # the poll loop wedges: its heartbeat stops moving
        async with asyncio.timeout(5):
            while not dog.stalled:
                await asyncio.sleep(0.01)
        stalled = dog.stalled
        notify_socket.pending()
        await asyncio.sleep(0.3)  # several ping periods: none may come
        wedged = notify_socket.pending()
        polls.beat()  # it recovers
        await asyncio.sleep(0.2)
        recovered = notify_socket.pending()
        for task in tasks:
            task.cancel()

    assert alive and all(m == {"WATCHDOG": "1"} for m in alive)
    assert stalled == ["sources"]
    assert wedged == []
    assert recovered and all(m == {"WATCHDOG": "1"} for m in recovered)


def test_watchdog_tick_on_a_manual_clock() -> None:
    now = [0.0]
    sent: list[int] = []
    dog = systemd.Watchdog(interval_s=10, send=lambda: sent.append(1), clock=lambda: now[0])
    beat = dog.register("buffer", allowance_s=5)
    assert dog.period_s == 5
    assert dog.tick()
    now[0] = 6.0
    assert not dog.tick()  # no beat for 6 s > 5 s
    beat.beat()
    assert dog.tick()
    assert len(sent) == 2


async def test_watchdog_run_returns_at_once_without_a_watchdog() -> None:
    dog = systemd.Watchdog(interval_s=0)
    await asyncio.wait_for(dog.run(), 1)
    assert dog.period_s == systemd.DEFAULT_PERIOD_S


# ---------------------------------------------------------------------------------------------
# The unit file

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a file that exists here: verify checks that the
    executable exists, and /opt/street-gateway is not installed on a test machine."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/street-gateway/bin/street-gateway run " in text
    copy = tmp_path / "street-gateway.service"
    copy.write_text(text.replace("=/opt/street-gateway/bin/street-gateway ", "=/bin/true "))
    return copy


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_testable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_unit_sandboxing_scores_2_or_better(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_testable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, match.group(0)  # systemd/README.md says 1.5


def test_unit_declares_what_the_spec_asks() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=street-gateway",
        "SupplementaryGroups=dialout",
        "StateDirectory=street-gateway",
        "ConfigurationDirectory=street-gateway",
        "ExecReload=/opt/street-gateway/bin/street-gateway check"
        " -c /etc/street-gateway/gateway.yaml",
        """ExecReload=/bin/sh -c 'kill -HUP "$MAINPID"'""",
    ]:
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
