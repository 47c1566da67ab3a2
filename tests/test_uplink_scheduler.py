"""The pure parts of the uplink: which lane gets the next slot, and the reconnect backoff."""

from __future__ import annotations

import pytest

from gateway.backoff import Backoff
from gateway.model import Lane
from gateway.uplink.scheduler import FetchRange, LaneScheduler, Pick, Wait


def scheduler(boundary: int = 1000, now: float = 0.0) -> LaneScheduler:
    return LaneScheduler(boundary=boundary, batch_size=100, max_wait_s=0.1, alarm_fetch=8, now=now)


def drain_alarms_and_gaps(s: LaneScheduler, now: float = 0.0) -> None:
    assert s.next(now) is Pick.ALARMS
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=s.seen, now=now)
    assert s.next(now) is Pick.GAPS
    s.fetched(Pick.GAPS, last_seq=None, count=0, checked_to=s.seen, now=now)


def test_alarms_then_gaps_then_backlog_on_connect() -> None:
    s = scheduler()
    assert s.next(0) is Pick.ALARMS
    assert s.fetch_range(Pick.ALARMS) == FetchRange(Lane.ALARM, 0, None, 8)
    # a full page of alarms: there may be more, so alarms again
    s.fetched(Pick.ALARMS, last_seq=500, count=8, checked_to=1000, now=0)
    assert s.next(0) is Pick.ALARMS
    assert s.fetch_range(Pick.ALARMS).after_seq == 500
    s.fetched(Pick.ALARMS, last_seq=700, count=3, checked_to=1000, now=0)
    assert s.next(0) is Pick.GAPS
    s.fetched(Pick.GAPS, last_seq=None, count=0, checked_to=1000, now=0)
    assert s.next(0) is Pick.BACKLOG
    assert s.fetch_range(Pick.BACKLOG) == FetchRange(Lane.SAMPLE, 0, 1000, 100)


def test_backlog_drains_until_a_short_page() -> None:
    s = scheduler()
    drain_alarms_and_gaps(s)
    for last in range(100, 1000, 100):
        s.fetched(Pick.BACKLOG, last_seq=last, count=100, checked_to=1000, now=0)
        assert s.next(0) is Pick.BACKLOG
        assert s.fetch_range(Pick.BACKLOG).after_seq == last
    s.fetched(Pick.BACKLOG, last_seq=990, count=90, checked_to=1000, now=0)
    assert s.next(0) == Wait(30.0)  # nothing more: wait for a commit (or the gap check)


def test_a_live_sample_goes_at_once_while_nothing_is_in_flight() -> None:
    s = scheduler(boundary=0)
    drain_alarms_and_gaps(s)
    s.committed(1, now=1.0)
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=1, now=1.0)
    assert s.next(1.0, idle=True) is Pick.LIVE  # no max_wait, no full batch: the window is idle
    assert s.fetch_range(Pick.LIVE) == FetchRange(Lane.SAMPLE, 0, None, 100)
    s.fetched(Pick.LIVE, last_seq=1, count=1, checked_to=1, now=1.0)
    assert s.next(1.0, idle=True) == Wait(30.0)  # and nothing is picked twice


def test_with_an_idle_linger_a_poll_cycle_shares_one_message() -> None:
    s = LaneScheduler(
        boundary=0, batch_size=100, max_wait_s=0.1, idle_linger_s=0.02, alarm_fetch=8, now=0.0
    )
    drain_alarms_and_gaps(s)
    s.committed(1, now=1.0)  # the first device of the bus answered
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=1, now=1.0)
    assert s.next(1.005, idle=True) == Wait(1.02)  # the rest of the cycle is on its way
    s.committed(5, now=1.012)
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=5, now=1.012)
    assert s.next(1.012, idle=True) == Wait(1.02)
    assert s.next(1.02, idle=True) is Pick.LIVE  # 20 ms after the first: all five go together
    s.fetched(Pick.LIVE, last_seq=5, count=5, checked_to=5, now=1.02)
    assert s.next(1.02, idle=True) == Wait(30.0)


def test_while_live_samples_wait_only_a_full_batch_is_worth_a_wake_up() -> None:
    s = scheduler(boundary=0)
    drain_alarms_and_gaps(s)
    assert s.wake_at_seq() == 0  # nothing waits: the next seq put is news
    s.committed(1, now=1.0)
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=1, now=1.0)
    assert isinstance(s.next(1.0, idle=False), Wait)
    assert s.wake_at_seq() == 99  # the 100th sample fills the batch; before it, the deadline
    s.committed(99, now=1.01)
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=99, now=1.01)
    assert isinstance(s.next(1.01, idle=False), Wait)
    s.committed(100, now=1.02)
    assert s.next(1.02, idle=False) is Pick.ALARMS  # a commit may bring an alarm: look first
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=100, now=1.02)
    assert s.next(1.02, idle=False) is Pick.LIVE


def test_live_waits_for_max_wait_or_a_full_batch_while_messages_are_in_flight() -> None:
    s = scheduler(boundary=0)
    drain_alarms_and_gaps(s)
    s.committed(10, now=1.0)
    assert s.next(1.0) is Pick.ALARMS  # a commit may have brought an alarm
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=10, now=1.0)
    assert s.next(1.05, idle=False) == Wait(1.1)
    assert s.next(1.05, idle=True) is Pick.LIVE  # the window fell idle: no need to wait
    assert s.next(1.1) is Pick.LIVE
    assert s.fetch_range(Pick.LIVE) == FetchRange(Lane.SAMPLE, 0, None, 100)
    s.fetched(Pick.LIVE, last_seq=10, count=10, checked_to=10, now=1.1)
    assert s.next(1.2) == Wait(30.0)
    s.committed(150, now=1.3)
    s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=150, now=1.3)
    assert s.next(1.3) is Pick.LIVE  # a full batch does not wait
    assert s.fetch_range(Pick.LIVE).after_seq == 10


def test_live_and_backlog_take_turns_when_both_are_ready() -> None:
    s = scheduler(boundary=10_000)
    drain_alarms_and_gaps(s)
    picks = []
    for step in range(6):
        now = 1.0 + step * 0.01
        s.committed(s.seen + 100, now)  # a full live batch arrives every time
        s.fetched(Pick.ALARMS, last_seq=None, count=0, checked_to=s.seen, now=now)
        pick = s.next(now)
        assert isinstance(pick, Pick)
        picks.append(pick)
        fetch = s.fetch_range(pick)
        s.fetched(pick, last_seq=fetch.after_seq + 100, count=100, checked_to=s.seen, now=now)
    assert picks == [Pick.LIVE, Pick.BACKLOG] * 3


def test_an_eviction_triggers_a_gap_check() -> None:
    s = scheduler(boundary=0)
    drain_alarms_and_gaps(s)
    assert s.next(5.0) == Wait(30.0)
    s.gaps_changed(5.0)
    assert s.next(5.0) is Pick.GAPS


@pytest.mark.parametrize("rolls", [[0.0, 0.0, 0.0], [0.999, 0.999, 0.999, 0.999, 0.999]])
def test_backoff_is_capped_full_jitter(rolls: list[float]) -> None:
    it = iter(rolls)
    backoff = Backoff(0.1, 0.5, rng=lambda: next(it))
    delays = [backoff.next_delay() for _ in rolls]
    ceilings = [min(0.5, 0.1 * 2**n) for n in range(len(rolls))]
    assert delays == pytest.approx([r * c for r, c in zip(rolls, ceilings, strict=True)])
    assert max(delays) < 0.5
    backoff.reset()
    assert backoff.ceiling() == 0.1
