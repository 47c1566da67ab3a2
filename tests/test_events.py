"""The event detector: one event per change of state, from snapshots of the live figures."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.events import (
    DeviceSnapshot,
    EventDetector,
    Snapshot,
    alarm_event,
    reload_refused_event,
    start_event,
)
from gateway.model import AlarmEvent, BufferStats, DeviceStats, StatusEvent, UplinkStats
from gateway.supervisor import TaskHealth

T0 = 1_764_169_200_000
SERVER = "mqtt://broker-a:1883"


def snap(ts: int, **kw: Any) -> Snapshot:
    return Snapshot(ts, **kw)


def dev(state: str, since: int | None, failed: int = 0, name: str = "aq-1") -> DeviceSnapshot:
    return DeviceSnapshot(name, state, since, "timeout" if state != "ok" else None, failed)


def told(detector: EventDetector, *snapshots: Snapshot) -> list[StatusEvent]:
    return [e for s in snapshots for e in detector.observe(s)]


def test_nothing_changes_nothing_is_told_however_often_it_is_looked_at() -> None:
    detector = EventDetector()
    up = snap(T0, connected=True, server=SERVER, link_changed_ms=T0 - 5, devices=(dev("ok", T0),))
    events = told(detector, *[up] * 50)
    assert [e.kind for e in events] == ["link_up"]  # the first connect, once
    assert "outage_s" not in events[0].fields


def test_an_outage_is_told_once_each_way_with_its_exact_length() -> None:
    detector = EventDetector()
    lost, back = T0 + 10_000, T0 + 72_400
    events = told(
        detector,
        snap(T0, connected=True, server=SERVER, link_changed_ms=T0),
        snap(lost + 700, server=SERVER, link_changed_ms=lost, link_lost_ms=lost,
             link_error=f"lost link to {SERVER}: connection lost"),
        snap(lost + 1700, server=SERVER, link_changed_ms=lost, link_lost_ms=lost),
        snap(back + 300, connected=True, server=SERVER, link_changed_ms=back, link_lost_ms=lost),
    )  # fmt: skip
    assert [(e.kind, e.ts_ms) for e in events] == [
        ("link_up", T0), ("link_down", lost), ("link_up", back)
    ]  # fmt: skip
    assert events[1].fields == {"server": SERVER}
    assert events[1].message == f"link to {SERVER} lost: connection lost"
    assert events[2].fields == {"server": SERVER, "outage_s": 62.4}
    assert events[2].message == f"link to {SERVER} up after 1m 2s down"


def test_a_reconnect_between_two_looks_is_still_a_down_and_an_up() -> None:
    detector = EventDetector()
    told(detector, snap(T0, connected=True, server=SERVER, link_changed_ms=T0))
    lost, back = T0 + 5_000, T0 + 5_400
    events = told(
        detector,
        snap(T0 + 6000, connected=True, server=SERVER, link_changed_ms=back, link_lost_ms=lost),
    )
    assert [(e.kind, e.ts_ms) for e in events] == [("link_down", lost), ("link_up", back)]
    assert events[1].fields["outage_s"] == 0.4


def test_device_failing_down_and_back_each_once() -> None:
    detector = EventDetector()
    looks = [
        snap(T0, devices=(dev("unknown", None),)),
        snap(T0 + 1000, devices=(dev("ok", T0 + 100),)),  # a first answer: no news
        snap(T0 + 2000, devices=(dev("failing", T0 + 1500, 1),)),
        snap(T0 + 3000, devices=(dev("failing", T0 + 1500, 2),)),
        snap(T0 + 4000, devices=(dev("down", T0 + 3500, 3),)),
        *[snap(T0 + 5000 + i, devices=(dev("down", T0 + 3500, 4 + i),)) for i in range(20)],
        snap(T0 + 95_000, devices=(dev("ok", T0 + 93_500, 24),)),
    ]
    events = told(detector, *looks)
    assert [(e.kind, e.ts_ms) for e in events] == [
        ("device_failing", T0 + 1500), ("device_down", T0 + 3500), ("device_ok", T0 + 93_500)
    ]  # fmt: skip
    assert all(e.fields["device"] == "aq-1" for e in events)
    assert events[1].message == "aq-1 down: timeout"
    assert events[2].message == "aq-1 ok again after 1m 30s down"
    assert events[2].fields["was"] == "down"


def test_a_device_that_never_answered_since_start_is_news() -> None:
    events = told(EventDetector(), snap(T0, devices=(dev("failing", T0 - 200, 1),)))
    assert [e.kind for e in events] == ["device_failing"]


def test_a_failure_healed_between_two_looks_is_told_as_a_recovery() -> None:
    detector = EventDetector()
    told(detector, snap(T0, devices=(dev("ok", T0 - 50),)))
    events = told(detector, snap(T0 + 1000, devices=(dev("ok", T0 + 900, 1),)))
    assert [e.kind for e in events] == ["device_ok"]


def test_a_reload_that_renews_the_devices_tells_nothing() -> None:
    """After a reload the devices are new objects: unknown, then ok with a new since and
    their counters from zero; possibly ok already at the next look."""
    detector = EventDetector()
    told(detector, snap(T0, devices=(dev("ok", T0 - 50, 7), dev("ok", T0, 0, "b"))))
    events = told(
        detector,
        snap(T0 + 1000, devices=(dev("ok", T0 + 900, 0), dev("unknown", None, 0, "b"))),
        snap(T0 + 2000, devices=(dev("ok", T0 + 900, 0), dev("ok", T0 + 1500, 0, "b"))),
    )
    assert events == []


def test_after_a_restart_a_device_down_before_it_is_told_back() -> None:
    stored = [  # newest first, as the buffer gives them
        StatusEvent(T0 - 5000, "start", "started", {"previous": "crash"}),
        StatusEvent(T0 - 60_000, "device_down", "river-1 down", {"device": "river-1"}),
        StatusEvent(T0 - 90_000, "device_failing", "river-1 failing", {"device": "river-1"}),
        StatusEvent(T0 - 95_000, "device_ok", "aq-1 ok", {"device": "aq-1"}),
        StatusEvent(T0 - 99_000, "device_failing", "aq-1 failing", {"device": "aq-1"}),
    ]
    detector = EventDetector.after(stored)
    events = told(
        detector, snap(T0, devices=(dev("ok", T0 - 100, name="river-1"), dev("ok", T0 - 100)))
    )
    assert [(e.kind, e.fields["device"]) for e in events] == [("device_ok", "river-1")]
    assert events[0].message == "river-1 ok again after 59s down"


def test_buffer_unwritable_and_back() -> None:
    detector = EventDetector()
    events = told(
        detector,
        snap(T0),
        snap(T0 + 1000, writable=False, buffer_error="disk full"),
        snap(T0 + 2000, writable=False, buffer_error="disk full"),
        snap(T0 + 3000),
    )
    assert [(e.kind, e.ts_ms) for e in events] == [
        ("buffer_unwritable", T0 + 1000), ("buffer_writable", T0 + 3000)
    ]  # fmt: skip
    assert "disk full" in events[0].message


def test_gaps_are_told_once_per_look_and_reason_with_their_range() -> None:
    detector = EventDetector()
    chunks = ((1, 100, 100, "max_size"), (101, 200, 95, "max_size"), (7, 9, 3, "unclean_shutdown"))
    events = told(detector, snap(T0, gaps_total=3, recent_gaps=chunks))
    assert [(e.kind, e.fields["gap"]) for e in events] == [
        ("evicted", {"from_seq": 1, "to_seq": 200, "count": 195, "reason": "max_size"}),
        ("evicted", {"from_seq": 7, "to_seq": 9, "count": 3, "reason": "unclean_shutdown"}),
    ]
    assert events[0].message == "gave up 195 items, seq 1..200 (max_size)"
    later = (*chunks, (201, 300, 100, "max_size"))
    events = told(detector, snap(T0 + 1000, gaps_total=4, recent_gaps=later))
    assert [e.fields["gap"]["from_seq"] for e in events] == [201]
    assert told(detector, snap(T0 + 2000, gaps_total=4, recent_gaps=later)) == []


def test_clock_synced_and_task_failures() -> None:
    detector = EventDetector()
    events = told(
        detector,
        snap(T0, clock_synced=False, task_failures=(("uplink", 0, None),)),
        snap(T0 + 1000, clock_synced=True, task_failures=(("uplink", 1, "RuntimeError: boom"),)),
        snap(T0 + 2000, clock_synced=True, task_failures=(("uplink", 1, "RuntimeError: boom"),)),
    )
    by_kind = {e.kind: e for e in events}
    assert len(events) == 2
    assert by_kind.keys() == {"clock_synced", "task_failed"}
    assert by_kind["task_failed"].fields == {"task": "uplink"}
    assert "RuntimeError: boom" in by_kind["task_failed"].message


def test_snapshot_copies_the_live_figures() -> None:
    uplink = UplinkStats(connected=True, server=SERVER, link_changed_ms=T0)
    buffer = BufferStats()
    buffer.recent_gaps.append((1, 2, 2, "max_age"))
    device = DeviceStats("aq-1", "bus", 10.0, state="ok", state_since_ms=T0, reads_failed=2)
    snapshot = Snapshot.of(
        T0, uplink=uplink, buffer=buffer, clock_synced=True, devices=[device],
        tasks=[TaskHealth("uplink", essential=True, failures=1)],
    )  # fmt: skip
    uplink.connected, device.state = False, "down"  # live figures move on; the copy stays
    assert snapshot.connected and snapshot.devices == (DeviceSnapshot("aq-1", "ok", T0, None, 2),)
    assert snapshot.recent_gaps == ((1, 2, 2, "max_age"),)
    assert snapshot.task_failures == (("uplink", 1, None),)


@pytest.mark.parametrize(
    ("previous", "fields", "words"),
    [
        ("crash", {"previous": "crash"}, "after a crash"),
        ("clean", {"previous": "clean"}, "stopped cleanly"),
        (None, {}, "new buffer"),
    ],
)
def test_start_says_how_the_last_run_ended(
    previous: Any, fields: dict[str, str], words: str
) -> None:
    event = start_event(T0, "0.2.0", previous)
    assert (event.kind, event.fields) == ("start", fields)
    assert words in event.message


def test_alarm_and_refused_reload_events() -> None:
    event = alarm_event(AlarmEvent("aq-1/pm25>50", "raised", 63.04, "high", T0))
    assert event.kind == "alarm_raised"
    assert event.fields["alarm"] == "aq-1/pm25>50"
    assert event.message == "alarm aq-1/pm25>50 raised at 63.04 (high)"
    refused = reload_refused_event(T0, ["a: bad", "b: worse"])
    assert refused.message == "reload refused, the running config stays: a: bad (and 1 more)"
