"""The uplink against a real mosquitto: delivery, outages, alarms first, failover, shutdown."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy import FaultProxy
from support import Mosquitto, free_port
from uplink_support import (
    CATALOG,
    GATEWAY,
    PREFIX,
    T0,
    Subscriber,
    make_uplink,
    put_samples,
    running,
    sample,
    stored,
    subscribed,
    until,
    uplink_config,
)

from gateway.buffer import Buffer
from gateway.model import AlarmEvent
from gateway.uplink.wire import DeviceInfo, PointInfo


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


async def live_until_drained(sub: Subscriber, buffer: Buffer, first: int, last: int) -> None:
    """Live samples ``first..last`` after a backlog ``1..first-1``: until every seq arrived and
    the buffer is empty (all acknowledged)."""
    put_samples(buffer, first, last)
    await sub.wait_for(lambda: len(sub.seq_counts()) == last)
    await until(lambda: buffer.stats.samples == 0)


async def test_backlog_and_live_samples_arrive_once_after_birth_and_meta(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    backlog_end = await stored(buffer, 1, 300)
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            await live_until_drained(sub, buffer, 301, 400)
    status = sub.of("status")
    assert status[0].data["state"] == "online"
    assert [m.topic for m in sub.messages[:2]] == [
        f"{PREFIX}/{GATEWAY}/status",
        f"{PREFIX}/{GATEWAY}/meta",
    ]
    counts = sub.seq_counts()
    assert set(counts) == set(range(1, 401))
    assert max(counts.values()) == 1
    for message in sub.of("samples"):
        seqs = [s["seq"] for s in message.data["samples"]]
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
                buffer.put(sample(i))
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
            put_samples(buffer, 1, 1000)
            buffer.put(alarm())
            await stored(buffer, 1001, 1500)
            outage_end = len(sub.messages)
            await proxy.restore()
            await sub.wait_for(lambda: len(sub.seq_counts()) == 1501)
    after = [m for m in sub.messages[outage_end:] if not m.topic.endswith(("/status", "/meta"))]
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
    put_samples(buffer, 1, 10)
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
    await stored(buffer, 1, 5000)
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
    assert buffer.stats.samples == 5000 - uplink.stats.published_total
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
        await stored(buffer, 1, 100)
        clock[0] += 2 * 3600 * 1000  # the first hundred are now too old and get evicted
        await stored(buffer, 101, 150)
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
    await stored(buffer, 1, 3000)
    async with FaultProxy(mosquitto.port) as proxy, subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{proxy.port}"]), buffer)
        async with running(uplink) as run:
            await sub.wait_for(lambda: len(sub.seq_counts()) >= 100)
            proxy.pause()  # PUBACKs stop coming: the window stays full
            await uplink.shutdown(timeout_s=1.0)
            assert run.done()
    assert not uplink.stats.connected
    assert 100 <= uplink.stats.published_total < 3000
    assert buffer.stats.samples == 3000 - uplink.stats.published_total


async def test_shutdown_while_no_server_answers_returns_at_once(buffer: Buffer) -> None:
    uplink = make_uplink(uplink_config([f"mqtt://127.0.0.1:{free_port()}"]), buffer)
    async with running(uplink) as run:
        await until(lambda: uplink.stats.connect_failures_total >= 1)
        await uplink.shutdown(timeout_s=1.0)
        assert run.done()


async def test_qos0_acknowledges_once_written(mosquitto: Mosquitto, buffer: Buffer) -> None:
    await stored(buffer, 1, 200)
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url], qos=0), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: len(sub.seq_counts()) == 200)
            await until(lambda: buffer.stats.samples == 0)
    assert uplink.stats.published_total == 200


AQ_META = {
    "source": "rs485-1",
    "kind": "modbus-rtu",
    "interval_s": 10,
    "points": {
        "pm25": {"type": "uint16", "unit": "ug/m3"},
        "temp": {"type": "float32", "unit": "degC"},
    },
}


async def test_retained_meta_describes_the_points_before_any_sample(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    await stored(buffer, 1, 3)  # a backlog: it must not overtake the meta either
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            buffer.put(sample(4))
            await sub.wait_for(lambda: len(sub.seq_counts()) == 4)
    kinds = sub.kinds()
    assert kinds[:2] == ["status", "meta"]
    assert set(kinds[2:]) == {"samples"}
    assert sub.of("meta")[0].data == {"config_digest": "abc", "devices": {"aq-1": AQ_META}}
    # Samples carry values only: units and types are in meta, once.
    assert sub.samples()[0] == {
        "seq": 1, "ts": T0 + 1, "device": "aq-1", "values": {"pm25": 1, "temp": 21.5},
    }  # fmt: skip
    async with subscribed(mosquitto.port, f"{PREFIX}/{GATEWAY}/meta") as late:
        await late.wait_for(lambda: bool(late.messages))
    assert late.messages[0].retain
    assert late.messages[0].data["devices"] == {"aq-1": AQ_META}


async def test_reconfigure_republishes_meta_only_when_the_catalog_changed(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    river = DeviceInfo("river-1", "rs485-1", "modbus-rtu", 0.5, {"level": PointInfo("int16", "cm")})
    changed = dataclasses.replace(CATALOG, config_digest="def", devices=(*CATALOG.devices, river))
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: len(sub.of("meta")) == 1)
            await uplink.reconfigure(changed)
            await sub.wait_for(lambda: len(sub.of("meta")) == 2)
            await uplink.reconfigure(changed)  # a reload that changed nothing the upstream sees
            await sub.wait_for(lambda: len(sub.of("status")) == 3)
            buffer.put(sample(1))  # published after the last reconfigure: a fence
            await sub.wait_for(lambda: len(sub.seq_counts()) == 1)
            assert uplink.stats.connects_total == 1  # no reconnect, so no offline flap
    births = [m.data for m in sub.of("status")]
    assert [b["config_digest"] for b in births] == ["abc", "def", "def"]
    assert {b["state"] for b in births} == {"online"}
    assert len(sub.of("meta")) == 2
    meta = sub.of("meta")[1].data
    assert meta["config_digest"] == "def"
    assert meta["devices"]["river-1"] == {
        "source": "rs485-1",
        "kind": "modbus-rtu",
        "interval_s": 0.5,
        "points": {"level": {"type": "int16", "unit": "cm"}},
    }
    kinds = sub.kinds()
    assert kinds == ["status", "meta", "status", "meta", "status", "samples"]


async def test_bytes_total_is_what_the_broker_received(
    mosquitto: Mosquitto, buffer: Buffer
) -> None:
    await stored(buffer, 1, 200)
    async with subscribed(mosquitto.port) as sub:
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await until(lambda: uplink.stats.connected)
            await live_until_drained(sub, buffer, 201, 230)
            await uplink.shutdown(timeout_s=2.0)
        await sub.wait_for(lambda: sub.of("status")[-1].data.get("reason") == "shutdown")
    assert max(sub.seq_counts().values()) == 1  # nothing was sent twice
    # birth, meta, samples and the goodbye: every PUBLISH packet, whole
    received = sum(m.size for m in sub.messages)
    assert len(sub.messages) > 5
    stats = uplink.stats
    assert stats.bytes_total == received
    assert stats.bytes_per_sample == round(received / 230, 1)  # all within the last minute


async def test_a_live_sample_goes_out_before_its_commit_and_once_acked_is_never_written(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    path = tmp_path / "lazy.db"

    def rows_on_disk(seq: int | None = None) -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            where, args = ("WHERE seq = ?", (seq,)) if seq else ("", ())
            (n,) = db.execute(f"SELECT COUNT(*) FROM samples {where}", args).fetchone()
        db.close()
        return int(n)

    # Commits linger 30 s: anything the subscriber gets sooner came from memory.
    async with (
        Buffer(path, sync="normal", commit_interval_s=30.0, commit_linger_s=30.0) as buffer,
        subscribed(mosquitto.port) as sub,
    ):
        buffer.put(sample(1))  # the first seq of a new file waits for its reservation...
        await buffer.flush()  # ...so commit it now; the reservation covers the next ones
        uplink = make_uplink(uplink_config([mosquitto.url]), buffer)
        async with running(uplink):
            await sub.wait_for(lambda: len(sub.seq_counts()) == 1)
            buffer.put(sample(2))
            await sub.wait_for(lambda: len(sub.seq_counts()) == 2)
            assert rows_on_disk(2) == 0  # delivered, not committed
            await until(lambda: buffer.stats.samples == 0)  # PUBACKed and acknowledged
            await buffer.flush()
            assert rows_on_disk() == 0
            assert buffer.last_seq == 2
    assert sub.samples()[1] == {
        "seq": 2, "ts": T0 + 2, "device": "aq-1", "values": {"pm25": 2, "temp": 21.5},
    }  # fmt: skip
    assert "historical" not in sub.of("samples")[-1].data  # live
    assert rows_on_disk() == 0  # the clean close wrote nothing of it either
