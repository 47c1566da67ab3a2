"""`street-gateway audit` against a real mosquitto, fed by a publisher replaying uplink payloads.

The audit runs as the command a user types (subprocesses), so exit codes, SIGKILL and SIGTERM
are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import Mosquitto, stop_process

from gateway.model import AlarmEvent, Gap, Lane, Sample, StoredItem
from gateway.uplink.json_format import alarm_message, gap_message, meta_message, samples_message
from gateway.uplink.wire import Catalog, DeviceInfo, PointInfo

P = "city/sensors"
SAMPLE = Sample("aq-1", 1764169200123, {"pm25": 12.3, "temp": 21.5, "door": False})
Message = tuple[str, bytes]


def batch(gateway: str, lo: int, hi: int) -> Message:
    items = [StoredItem(s, Lane.SAMPLE, SAMPLE.ts_ms, SAMPLE) for s in range(lo, hi + 1)]
    return f"{P}/{gateway}/samples", samples_message(gateway, items, historical=False)


ALARM = AlarmEvent("aq-1/pm25>50", "raised", 63.0, "high", 1764169200123)
CATALOG = Catalog("gw-a", "sha256:abc", (DeviceInfo("aq-1", "rs485-1", "modbus-rtu", 10.0,
                  {"pm25": PointInfo("uint16", "ug/m3")}),))  # fmt: skip


def stream(gateway: str, n_messages: int, per_message: int = 10) -> list[Message]:
    return [batch(gateway, i * per_message + 1, (i + 1) * per_message) for i in range(n_messages)]


async def publish(broker: Mosquitto, messages: list[Message]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, timeout=10) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, timeout=10)


def audit_args(broker: Mosquitto, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gateway", "--log-level", "WARNING", "audit",
        "--broker", broker.url, "--prefix", P, "--state", str(state), *extra,
    ]  # fmt: skip


def audit_once(broker: Mosquitto, state: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """``audit --once --json`` with a short settle; the exit code and the document."""
    args = audit_args(broker, state, "--once", "--json", "--settle", "300ms", *extra)
    done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode, json.loads(done.stdout)


def audit_merge(states: list[Path], *extra: str) -> tuple[int, dict[str, Any]]:
    args = [sys.executable, "-m", "gateway", "audit", "--json", *extra, "--merge"]
    done = subprocess.run([*args, *map(str, states)], capture_output=True, timeout=30, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode, json.loads(done.stdout)


def gateway(doc: dict[str, Any], gid: str) -> dict[str, Any]:
    found = [g for g in doc["gateways"] if g["id"] == gid]
    assert found, doc
    return found[0]


def stored_received(state: Path) -> int:
    """What the state file has committed so far, read as another process would."""
    if not state.exists():
        return 0
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT received FROM gateway").fetchall()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    flat = [v for (text,) in rows for v in json.loads(text)]
    return sum(hi - lo + 1 for lo, hi in zip(flat[::2], flat[1::2], strict=True))


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def audit_process(tmp_path: Path) -> Iterator[Any]:
    """Start long-running audits; each is stopped by pid at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(broker: Mosquitto, state: Path, *extra: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{state.name}.{len(procs)}.log"
        args = audit_args(broker, state, *extra)
        args[args.index("WARNING")] = "INFO"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out)
        procs.append(proc)
        wait_until(lambda: "subscribed" in log.read_text())
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


async def test_complete_stream_has_no_holes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    state = tmp_path / "audit.db"
    audit_once(mosquitto, state)  # the persistent session now exists on the broker
    await publish(mosquitto, stream("gw-a", 20) + stream("gw-b", 5, per_message=3))
    await publish(mosquitto, [(f"{P}/gw-a/status", b'{"state":"online"}')])
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    assert code == 0
    a, b = gateway(doc, "gw-a"), gateway(doc, "gw-b")
    assert (a["received"], a["max_seq"], a["holes"], a["duplicates"]) == (200, 200, [], 0)
    assert (b["received"], b["max_seq"], b["holes"]) == (15, 15, [])
    assert (a["online"], b["online"]) == (True, None)
    assert a["last_seen_ts"] > time.time() * 1000 - 60_000


async def test_dropped_message_is_a_hole_with_its_exact_range(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "audit.db"
    audit_once(mosquitto, state)
    messages = stream("gw-a", 10)
    del messages[4]  # seqs 41..50 never published
    await publish(mosquitto, messages)
    code, doc = audit_once(mosquitto, state)  # default grace: the hole is young
    assert code == 0
    assert [(h["from_seq"], h["to_seq"]) for h in gateway(doc, "gw-a")["holes"]] == [(41, 50)]
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    assert code == 1
    # The gateway drains it late: the hole closes.
    await publish(mosquitto, [batch("gw-a", 41, 50)])
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    assert (code, gateway(doc, "gw-a")["holes"], gateway(doc, "gw-a")["received"]) == (0, [], 100)


async def test_gaps_are_declared_duplicates_counted_garbage_rejected(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "audit.db"
    audit_once(mosquitto, state)
    messages = [
        batch("gw-a", 1, 10),
        (f"{P}/gw-a/gaps", gap_message("gw-a", Gap(1, 11, 30, 20, "max_size"))),
        batch("gw-a", 31, 40),
        batch("gw-a", 31, 40),  # redelivered (at least once)
        batch("gw-a", 38, 45),
        (f"{P}/gw-a/alarms", alarm_message("gw-a", 46, ALARM)),  # the same seq sequence
        (f"{P}/gw-a/samples", b"\x00 not json"),
        # neither v0.1's readings nor meta are deliveries: not seen, not rejected
        (f"{P}/gw-a/readings", b'{"gateway":"gw-a","readings":[{"seq":99}]}'),
        (f"{P}/gw-a/meta", meta_message(CATALOG)),
    ]
    await publish(mosquitto, messages)
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    a = gateway(doc, "gw-a")
    assert code == 0
    assert a["gaps"] == [{"from_seq": 11, "to_seq": 30, "reason": "max_size"}]
    assert (a["holes"], a["received"], a["duplicates"], a["max_seq"]) == ([], 26, 10, 46)
    assert doc["rejected_messages"] == 1


async def test_killed_audit_restarts_and_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, audit_process: Any
) -> None:
    state = tmp_path / "audit.db"
    proc = audit_process(mosquitto, state)
    first, second = stream("gw-a", 300, per_message=50)[:200], stream("gw-a", 300, 50)[200:]
    await publish(mosquitto, first)
    wait_until(lambda: stored_received(state) > 0)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: whatever was in flight is not acked
    proc.wait(5)
    killed_at = stored_received(state)
    await publish(mosquitto, second)  # while no audit runs
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    a = gateway(doc, "gw-a")
    assert (code, a["received"], a["max_seq"], a["holes"]) == (0, 15_000, 15_000, [])
    print(f"killed with {killed_at} samples stored")


async def test_sigterm_mid_stream_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, audit_process: Any
) -> None:
    # Messages are folded in as they arrive; a stop commits and acks what was taken. (Closing a
    # socket with unread data makes a TCP reset, which can cost the broker the last PUBACKs:
    # those messages come again as duplicates, so duplicates are not asserted here.)
    state = tmp_path / "audit.db"
    proc = audit_process(mosquitto, state)
    await publish(mosquitto, stream("gw-a", 200, per_message=50))
    wait_until(lambda: stored_received(state) > 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    code, doc = audit_once(mosquitto, state, "--grace", "0s")
    a = gateway(doc, "gw-a")
    assert (code, a["received"], a["max_seq"], a["holes"]) == (0, 10_000, 10_000, [])


async def test_sigterm_exits_zero(mosquitto: Mosquitto, tmp_path: Path, audit_process: Any) -> None:
    proc = audit_process(mosquitto, tmp_path / "audit.db")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


async def test_two_workers_share_a_fleet_and_merge(
    mosquitto: Mosquitto, tmp_path: Path, audit_process: Any
) -> None:
    states = [tmp_path / "w1.db", tmp_path / "w2.db"]
    workers = [audit_process(mosquitto, s, "--group", "audit") for s in states]
    await publish(mosquitto, stream("gw-a", 40) + stream("gw-b", 40))
    wait_until(lambda: sum(stored_received(s) for s in states) >= 800)
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    # Each worker owns what it received: under round-robin both got part of each gateway.
    assert all(0 < stored_received(s) < 800 for s in states)
    code, doc = audit_merge(states, "--grace", "0s")
    assert code == 0
    for gid in ("gw-a", "gw-b"):
        g = gateway(doc, gid)
        assert (g["received"], g["max_seq"], g["holes"], g["duplicates"]) == (400, 400, [], 0)
