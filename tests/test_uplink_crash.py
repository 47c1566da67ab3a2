"""The gateway process SIGKILLed (during an outage, or connected) and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy import FaultProxy
from support import Mosquitto, stop_process
from uplink_support import GATEWAY, PREFIX, subscribed, until

CHILD = Path(__file__).with_name("uplink_child.py")
Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Start]:
    """Starts ``uplink_child.py``; every child is stopped by pid at teardown."""
    children: list[subprocess.Popen[bytes]] = []

    def start(server: str, *, produce: bool = False, live: bool = False) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(CHILD), str(tmp_path / "buffer.db"), server]
        if produce:
            args += ["--produce", "--committed", str(tmp_path / "committed")]
        if live:
            args.append("--live")
        with (tmp_path / "child.log").open("ab") as log:
            child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        children.append(child)
        return child

    yield start
    for child in children:
        stop_process(child)


def kill(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)


async def test_sigkill_during_outage_loses_nothing_committed(
    mosquitto: Mosquitto, gateway_process: Start, tmp_path: Path
) -> None:
    committed = tmp_path / "committed"

    def last_committed() -> int:
        return int(committed.read_text()) if committed.exists() else 0

    async with FaultProxy(mosquitto.port) as proxy, subscribed(mosquitto.port) as sub:
        first = gateway_process(f"mqtt://127.0.0.1:{proxy.port}", produce=True)
        await sub.wait_for(lambda: len(sub.seq_counts()) >= 500, within_s=15)
        await proxy.outage()
        before = last_committed()
        await until(lambda: last_committed() >= before + 1000)  # buffered during the outage
        kill(first)
        must_have = last_committed()
        gateway_process(f"mqtt://127.0.0.1:{proxy.port}")
        await proxy.restore()
        await sub.wait_for(lambda: sub.covered() >= set(range(1, must_have + 1)), within_s=15)
    assert must_have > before


async def test_sigkill_while_publishing_live_gives_no_seq_to_two_samples(
    mosquitto: Mosquitto, gateway_process: Start
) -> None:
    """Live samples go out before their commit: killed then, the restarted gateway must not
    hand their seqs to new samples (the lost ones are declared in a gap instead)."""
    async with subscribed(mosquitto.port) as sub:
        first = gateway_process(mosquitto.url, live=True)
        await sub.wait_for(lambda: len(sub.seq_counts()) >= 150, within_s=15)
        kill(first)
        first_max = max(sub.seq_counts())
        gateway_process(mosquitto.url, live=True)
        await sub.wait_for(lambda: max(sub.seq_counts()) > first_max + 100, within_s=15)
        top = max(sub.seq_counts())
        await sub.wait_for(lambda: sub.covered() >= set(range(1, top + 1)), within_s=15)
    contents: dict[int, set[tuple[int, int]]] = {}
    for s in sub.samples():
        contents.setdefault(s["seq"], set()).add((s["ts"], s["values"]["pid"]))
    assert {m.data["reason"] for m in sub.of("gaps")} <= {"unclean_shutdown"}
    reused = {seq: c for seq, c in contents.items() if len(c) > 1}
    assert not reused, sorted(reused.items())[:5]
    assert len({pid for c in contents.values() for _, pid in c}) == 2  # both runs delivered
    # The second run's meta came before its samples, as on every connect.
    births = [i for i, m in enumerate(sub.messages) if m.data.get("state") == "online"]
    assert len(births) == 2
    assert sub.messages[births[1] + 1].topic == f"{PREFIX}/{GATEWAY}/meta"


async def test_will_after_kill_and_birth_after_restart(
    mosquitto: Mosquitto, gateway_process: Start
) -> None:
    status = f"{PREFIX}/{GATEWAY}/status"
    first = gateway_process(mosquitto.url)
    async with subscribed(mosquitto.port, status) as sub:
        await sub.wait_for(lambda: any(m.data["state"] == "online" for m in sub.messages))
        kill(first)
        await sub.wait_for(lambda: sub.messages[-1].data == {"state": "offline"})
    async with subscribed(mosquitto.port, status) as late:  # what a newcomer sees: retained
        await late.wait_for(lambda: bool(late.messages))
        assert (late.messages[0].data, late.messages[0].retain) == ({"state": "offline"}, True)
        gateway_process(mosquitto.url)
        await late.wait_for(lambda: late.messages[-1].data["state"] == "online")
    async with subscribed(mosquitto.port, status) as later:
        await later.wait_for(lambda: bool(later.messages))
        assert later.messages[0].retain
        assert later.messages[0].data["state"] == "online"
        assert later.messages[0].data["version"] == "0.1.0-test"
