"""A flaky link, a crash during an outage, a buffer that overflows: nothing is lost silently.

The daemon talks to mosquitto through a FaultProxy (``link``) that the test cuts; the upstream
subscriber is connected to mosquitto directly, so it sees exactly what crossed the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from pathlib import Path

from proxy import FaultProxy

from e2e.conftest import (
    HEAVY,
    Device,
    ModbusSim,
    RunDaemon,
    Upstream,
    simulated_bus,
    subscribed,
)

TWO_DEVICES: list[Device] = [
    ("aq-1", 1, "air_quality", "100ms"),
    ("meter-1", 2, "energy_meter", "100ms"),
]
OUTAGE_S = 2.5
INFLIGHT = 16  # uplink.max_inflight default
BATCH = 200  # the e2e configs' batch.max_samples


async def test_broker_outage_loses_nothing_and_duplicates_only_what_was_in_flight(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    link: FaultProxy,
    tmp_path: Path,
) -> None:
    daemon = run_daemon(simulated_bus(modbus_sim, link.port, tmp_path, TWO_DEVICES))
    await upstream.wait_for_seq_above(20)  # 20 samples a second

    await link.outage()
    await asyncio.sleep(OUTAGE_S)
    buffered = (await daemon.status())["buffer"]["last_seq"]
    assert buffered > upstream.max_seq()  # polling went on: the outage's samples are stored
    await link.restore()
    restored_at = time.monotonic()

    await upstream.wait_until(lambda: upstream.max_seq() >= buffered + 20, 10, "the backlog")
    await upstream.wait_until(lambda: not upstream.holes(), 10, "every seq delivered")
    assert not upstream.of("gaps")
    assert not upstream.reused_seqs()
    after = [m for m in upstream.of("samples") if m.at > restored_at]
    assert any(m.data.get("historical") is True for m in after), "backlog not marked historical"
    # At least once: a seq arrives twice only when its PUBACK was lost in the cut, so the
    # second copy is the resend after the link came back, and there are at most a window's worth.
    first_seen: dict[int, float] = {}
    copies: dict[int, list[float]] = {}
    for message in upstream.of("samples"):
        for s in message.data["samples"]:
            first_seen.setdefault(s["seq"], message.at)
            copies.setdefault(s["seq"], []).append(message.at)
    duplicates = upstream.duplicates()
    print(f"{len(duplicates)} duplicated seqs of {len(first_seen)} after a {OUTAGE_S} s outage")
    assert len(duplicates) <= INFLIGHT * BATCH
    for seq in duplicates:
        arrivals = copies[seq]
        assert len(arrivals) == 2, (seq, arrivals)
        assert arrivals[0] < restored_at < arrivals[1], (seq, arrivals, restored_at)


async def _retained_status(port: int) -> dict[str, object]:
    """What a subscriber that connects now is told about the gateway (the retained status)."""
    async with subscribed(port) as fresh:
        await fresh.wait_until(lambda: fresh.of("status"), 5, "the retained status")
        message = fresh.of("status")[0]
        assert message.retain
        return message.data


def _committed_seqs(db: Path, into: Path) -> set[int]:
    """The seqs a killed daemon's buffer file holds: what was committed and not yet
    acknowledged (read from a copy, so the next daemon finds the file as the kill left it)."""
    into.mkdir()
    for part in db.parent.glob(db.name + "*"):
        shutil.copy(part, into / part.name)
    with contextlib.closing(sqlite3.connect(into / db.name)) as conn:
        rows = conn.execute("SELECT seq FROM samples UNION SELECT seq FROM alarms").fetchall()
    return {seq for (seq,) in rows}


async def test_kill_9_during_an_outage_loses_nothing_committed_and_the_will_says_offline(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    link: FaultProxy,
    tmp_path: Path,
) -> None:
    config = simulated_bus(modbus_sim, link.port, tmp_path, TWO_DEVICES, sync="full")
    daemon = run_daemon(config)
    await upstream.wait_until(lambda: upstream.state() == "online", 10, "the birth message")
    await upstream.wait_for_seq_above(20)

    await link.outage()
    await daemon.wait_status(
        lambda s: s.get("buffer", {}).get("last_seq", 0) > upstream.max_seq() + 20,
        10,
        "samples stored during the outage",
    )
    daemon.kill()
    delivered_before = upstream.max_seq()
    committed = _committed_seqs(tmp_path / "buffer.db", tmp_path / "after-kill")
    assert max(committed, default=0) > delivered_before  # the outage's samples are on disk
    assert await _retained_status(upstream.port) == {"state": "offline"}  # the will

    run_daemon(config)  # the same buffer; the link is still down
    await asyncio.sleep(0.5)
    await link.restore()
    await upstream.wait_until(lambda: upstream.state() == "online", 10, "the birth message")
    assert (await _retained_status(upstream.port))["state"] == "online"
    await upstream.wait_until(
        lambda: upstream.max_seq() > max(committed) and not upstream.holes(),
        15,
        "every seq delivered",
    )
    # Every seq committed before the kill was published, none merely written off as a gap.
    received = set(upstream.seq_counts())
    every = set(range(1, max(committed) + 1))
    assert every <= received, sorted(every - received)[:20]
    assert not upstream.reused_seqs()


async def test_disk_size_eviction_during_a_long_outage_is_declared_as_a_max_size_gap(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    link: FaultProxy,
    tmp_path: Path,
) -> None:
    config = simulated_bus(modbus_sim, link.port, tmp_path, HEAVY, max_size="256KiB")
    daemon = run_daemon(config)
    await upstream.wait_for_seq_above(200)

    await link.outage()
    await daemon.wait_status(
        lambda s: s.get("buffer", {}).get("evicted_by_reason", {}).get("max_size", 0) > 0,
        20,
        "an eviction by max_size",
    )
    await link.restore()

    def max_size_gaps() -> list[dict[str, object]]:
        return [m.data for m in upstream.of("gaps") if m.data["reason"] == "max_size"]

    await upstream.wait_until(max_size_gaps, 10, "a gap with reason max_size")
    gap = max_size_gaps()[0]
    assert gap["gateway"] == "lamppost-e2e"
    assert 0 < gap["count"] <= gap["to_seq"] - gap["from_seq"] + 1  # type: ignore[operator]
    await upstream.wait_until(
        lambda: upstream.max_seq() > gap["to_seq"] + 100 and not upstream.holes(),  # type: ignore[operator]
        15,
        "every seq delivered or declared",
    )
    assert not upstream.reused_seqs()
