"""The uplink against a real mosquitto: delivery, outages, alarms first, failover, shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy import FaultProxy
from support import Mosquitto, free_port
from uplink_support import (
    GATEWAY,
    PREFIX,
    make_uplink,
    reading,
    running,
    subscribed,
    until,
    uplink_config,
)

from gateway.buffer import Buffer
from gateway.model import AlarmEvent


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[Buffer]:
    async with Buffer(tmp_path / "buffer.db", sync="normal", commit_interval_s=0.05) as buf:
        yield buf


def alarm(state: str = "raised", ts_ms: int = 1_764_169_300_000) -> AlarmEvent:
    return AlarmEvent(
        alarm="aq-1/pm25>50",
        state="raised" if state == "raised" else "cleared",
        value=63.0,
        priority="high",
        ts_ms=ts_ms,
    )


async def test_backlog_and_live_readings_arrive_once_with_birth_first(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    for i in range(1, 301):
        buffer.put(reading(i))
    backlog_end = await buffer.flush()
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            for i in range(301, 401):
                buffer.put(reading(i))
            await sub.wait_for(lambda: len(sub.seq_counts()) == 400)
            await until(lambda: buffer.stats.readings == 0)
    status = sub.of("status")
    assert status[0].data["state"] == "online"
    assert sub.messages[0].topic == f"{PREFIX}/{GATEWAY}/status"
    counts = sub.seq_counts()
    assert set(counts) == set(range(1, 401))
    assert max(counts.values()) == 1
    for message in sub.of("readings"):
        seqs = [r["seq"] for r in message.data["readings"]]
        assert seqs == sorted(seqs)
        assert len(seqs) <= 50
        # historical exactly when stored before the connection came up
        assert message.data.get("historical", False) == (seqs[-1] <= backlog_end)
        assert all((s <= backlog_end) == (seqs[0] <= backlog_end) for s in seqs)
    assert uplink.stats.published_total == 400


async def test_outage_mid_stream_loses_nothing_and_duplicates_only_across_it(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    async with FaultProxy(mosquitto.port) as proxy, subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{proxy.port}"]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            for i in range(1, 2001):
                buffer.put(reading(i))
                if i == 1000:
                    await sub.wait_for(lambda: len(sub.seq_counts()) > 200)
                    await proxy.outage()
                if i % 100 == 0:
                    await buffer.flush()
            await until(lambda: not uplink.stats.connected)
            assert uplink.stats.connected is False
            await proxy.restore()
            await sub.wait_for(lambda: len(sub.seq_counts()) == 2000, within_s=15)
    assert sub.covered() >= set(range(1, 2001))
    # Everything the first connection published reaches the subscriber before the second birth.
    births = [i for i, m in enumerate(sub.messages) if m.data.get("state") == "online"]
    assert len(births) == 2
    cut_at = births[1]
    before, after = sub.seq_counts(0) - sub.seq_counts(cut_at), sub.seq_counts(cut_at)
    assert max(before.values()) == 1
    assert max(after.values()) == 1  # a seq arrives twice only once on each side of the cut
    assert sub.of("status")[-1].data["state"] == "online"
    assert uplink.stats.connects_total == 2


async def test_alarm_raised_during_outage_arrives_before_the_backlog(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    async with FaultProxy(mosquitto.port) as proxy, subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{proxy.port}"]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            await proxy.outage()
            await until(lambda: not uplink.stats.connected)
            for i in range(1, 1001):
                buffer.put(reading(i))
            buffer.put(alarm())
            for i in range(1001, 1501):
                buffer.put(reading(i))
            await buffer.flush()
            outage_end = len(sub.messages)
            await proxy.restore()
            await sub.wait_for(lambda: len(sub.seq_counts()) == 1501)
    after = [m for m in sub.messages[outage_end:] if not m.topic.endswith("/status")]
    assert after[0].topic == f"{PREFIX}/{GATEWAY}/alarms"
    assert after[0].data == {
        "gateway": GATEWAY,
        "seq": 1001,
        "ts": 1_764_169_300_000,
        "alarm": "aq-1/pm25>50",
        "state": "raised",
        "value": 63.0,
        "priority": "high",
    }
    assert all(m.data.get("historical") for m in after[1:])


async def test_failover_first_server_refuses_second_accepts(
    mosquitto: Mosquitto, buffer: Buffer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.uplink")
    dead = f"mqtt://127.0.0.1:{free_port()}"
    for i in range(1, 11):
        buffer.put(reading(i))
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([dead, mosquitto.url]), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: len(sub.seq_counts()) == 10)
            assert uplink.stats.server == mosquitto.url
    messages = [r.getMessage() for r in caplog.records]
    assert f"uplink: cannot connect to {dead}: [Errno 111] Connection refused" in messages
    assert f"uplink: failover to next server {mosquitto.url}" in messages
    assert any(m.startswith(f"uplink: connected to {mosquitto.url}") for m in messages)


async def test_graceful_shutdown_acks_in_flight_and_says_goodbye(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    for i in range(1, 5001):
        buffer.put(reading(i))
    await buffer.flush()
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink) as run:
            await sub.wait_for(lambda: len(sub.seq_counts()) >= 100)
            await uplink.shutdown(timeout_s=2.0)
            assert run.done()
            assert not uplink.stats.connected
        await sub.wait_for(lambda: sub.of("status")[-1].data.get("reason") == "shutdown")
    goodbye = sub.of("status")[-1]
    assert goodbye.data == {"state": "offline", "reason": "shutdown"}
    # Whatever the broker acknowledged left the buffer; nothing else did.
    assert buffer.stats.readings == 5000 - uplink.stats.published_total
    assert len(sub.seq_counts()) == uplink.stats.published_total
    async with subscribed(mosquitto.port, f"{PREFIX}/{GATEWAY}/status") as late:
        await late.wait_for(lambda: bool(late.messages))
    assert late.messages[0].retain
    assert late.messages[0].data["reason"] == "shutdown"


async def test_gaps_are_published_then_acknowledged(mosquitto: Mosquitto, tmp_path: Path) -> None:
    clock = [1_764_169_200_000]
    async with (
        Buffer(
            tmp_path / "gaps.db",
            sync="normal",
            commit_interval_s=0.05,
            max_age_s=3600,
            now_ms=lambda: clock[0],
        ) as buffer,
        subscribed(mosquitto.port) as sub,
    ):
        for i in range(1, 101):
            buffer.put(reading(i))
        await buffer.flush()
        clock[0] += 2 * 3600 * 1000  # the first hundred are now too old and get evicted
        for i in range(101, 151):
            buffer.put(reading(i))
        await buffer.flush()
        await buffer.evict_now()
        assert len(await buffer.pending_gaps()) == 1
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: sub.covered() >= set(range(1, 151)))
            await until(lambda: uplink.stats.gaps_published_total == 1)
        assert await buffer.pending_gaps() == []
    (gap,) = sub.of("gaps")
    assert gap.data == {
        "gateway": GATEWAY, "from_seq": 1, "to_seq": 100, "count": 100, "reason": "max_age",
    }  # fmt: skip
    assert set(sub.seq_counts()) == set(range(101, 151))


async def test_shutdown_on_a_stalled_link_keeps_what_was_not_acknowledged(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    for i in range(1, 3001):
        buffer.put(reading(i))
    await buffer.flush()
    async with FaultProxy(mosquitto.port) as proxy, subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{proxy.port}"]), buffer)
        async with running(uplink) as run:
            await sub.wait_for(lambda: len(sub.seq_counts()) >= 100)
            proxy.pause()  # PUBACKs stop coming: the window stays full
            await uplink.shutdown(timeout_s=1.0)
            assert run.done()
    assert not uplink.stats.connected
    assert 100 <= uplink.stats.published_total < 3000
    assert buffer.stats.readings == 3000 - uplink.stats.published_total


async def test_shutdown_while_no_server_answers_returns_at_once(buffer: Buffer) -> None:
    uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{free_port()}"]), buffer)
    async with running(uplink) as run:
        await until(lambda: uplink.stats.connect_failures_total >= 1)
        await uplink.shutdown(timeout_s=1.0)
        assert run.done()


async def test_qos0_acknowledges_once_written(mosquitto: Mosquitto, buffer: Buffer) -> None:
    for i in range(1, 201):
        buffer.put(reading(i))
    await buffer.flush()
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url], qos=0), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: len(sub.seq_counts()) == 200)
            await until(lambda: buffer.stats.readings == 0)
    assert uplink.stats.published_total == 200
