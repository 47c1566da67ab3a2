"""Each point's last half hour for the sparklines: bounded, downsampled, extremes kept."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.history import MAX_ENTRIES, SPAN_MS, History
from gateway.model import Sample, Value, format_duration

T0 = 1_764_169_200_000
BUCKET_MS = SPAN_MS // (MAX_ENTRIES // 2)


def test_an_hour_of_fast_polls_keeps_at_most_120_entries_of_the_last_30_min() -> None:
    history = History()
    for i in range(36_000):  # every 100 ms for an hour
        history.observe(Sample("aq-1", T0 + i * 100, {"pm25": math.sin(i / 50), "n": i}))
    now = T0 + 36_000 * 100
    kept = history.of("aq-1", now)
    assert set(kept) == {"pm25", "n"}
    for entries in kept.values():
        assert len(entries) <= MAX_ENTRIES
        times = [ts for ts, _ in entries]
        assert times == sorted(times)
        assert times[0] > now - SPAN_MS
    counter = kept["n"]
    assert all(isinstance(v, int) for _, v in counter)
    assert counter[-1][1] == 35_999  # the newest maximum is there


def test_a_spike_between_two_looks_is_never_smoothed_away() -> None:
    history = History()
    for i in range(300):  # every second, 5 minutes
        value = 1000.0 if i == 137 else (-50.0 if i == 201 else 20.0)
        history.observe(Sample("river-1", T0 + i * 1000, {"level": value}))
    entries = history.of("river-1", T0 + 300_000)["level"]
    assert [T0 + 137_000, 1000.0] in entries
    assert [T0 + 201_000, -50.0] in entries
    assert len(entries) == MAX_ENTRIES  # 300 polls: the oldest summarised, the newest as they came


def test_booleans_stay_booleans_and_strings_nan_and_silence_are_left_out() -> None:
    history = History()
    for i in range(10):
        values = {"door": i % 2 == 0, "serial": "SN-1", "temp": math.nan if i == 3 else 21.5}
        history.observe(Sample("cab", T0 + i * 1000, values))
    kept = history.of("cab", T0 + 10_000)
    assert set(kept) == {"door", "temp"}
    assert {v for _, v in kept["door"]} == {True, False}
    assert all(v == 21.5 for _, v in kept["temp"])
    assert history.of("cab", T0 + SPAN_MS + 20_000) == {}  # silent for half an hour: nothing
    assert history.of("nobody", T0) == {}


def test_a_clock_set_back_further_than_the_window_starts_afresh() -> None:
    history = History()
    history.observe(Sample("aq-1", T0, {"pm25": 1.0}))
    history.observe(Sample("aq-1", T0 - 3_600_000, {"pm25": 2.0}))
    assert history.of("aq-1", T0 - 3_600_000) == {"pm25": [[T0 - 3_600_000, 2.0]]}


def test_forget_drops_devices_a_reload_removed() -> None:
    history = History()
    history.observe(Sample("a", T0, {"x": 1}))
    history.observe(Sample("b", T0, {"x": 1}))
    history.forget({"b"})
    assert history.of("a", T0) == {}
    assert history.of("b", T0) == {"x": [[T0, 1]]}


def test_a_minute_after_start_every_poll_of_that_minute_is_there() -> None:
    """SPEC v0.3: until a point holds 120 entries, every poll adds one."""
    history = History()
    for i in range(60):
        history.observe(Sample("aq-1", T0 + i * 1000, {"pm25": 10.0 + i % 7}))
    entries = history.of("aq-1", T0 + 60_000)["pm25"]
    assert entries == [[T0 + i * 1000, 10.0 + i % 7] for i in range(60)]


def test_past_120_polls_the_oldest_part_is_summarised_and_120_entries_stay() -> None:
    history = History()
    for i in range(1800):  # every second for the whole window
        history.observe(Sample("aq-1", T0 + i * 1000, {"pm25": float(i % 13)}))
    now = T0 + 1800 * 1000
    entries = history.of("aq-1", now)["pm25"]
    assert len(entries) == MAX_ENTRIES
    assert entries[-1] == [now - 1000, float(1799 % 13)]  # the newest polls as they came
    assert entries[-2] == [now - 2000, float(1798 % 13)]
    times = [t for t, _ in entries]
    assert times == sorted(times)
    assert times[0] < now - SPAN_MS + 2 * BUCKET_MS  # and the whole window, summarised


def _window(seen: list[tuple[int, float]], now: int) -> list[tuple[int, float]]:
    return [(t, v) for t, v in seen if t // BUCKET_MS > (now - SPAN_MS) // BUCKET_MS]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5_000), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=400,
    )
)
@example([(0, 0.0)] * 121)  # one poll more than fits, all in one bucket
def test_every_poll_until_120_then_extremes_before_a_split_and_every_poll_after(
    steps: list[tuple[int, float]],
) -> None:
    """A model check against every sample kept in a plain list: at most 120 entries; all the
    window's polls while they fit; else each bucket before some split gives exactly its
    minimum and maximum, and from the split on every poll is there as it came."""
    history, seen, ts = History(), [], T0
    for gap, value in steps:
        ts += gap * 10
        history.observe(Sample("d", ts, {"p": value}))
        seen.append((ts, value))
    entries = [(int(t), float(v)) for t, v in history.of("d", ts)["p"]]  # type: ignore[arg-type]
    window = _window(seen, ts)
    assert len(entries) <= MAX_ENTRIES
    if len(window) <= MAX_ENTRIES:
        assert entries == window
        return
    assert any(_split_at(entries, window, k) for k in range(len(entries) + 1)), entries


def _split_at(entries: list[tuple[int, float]], window: list[tuple[int, float]], k: int) -> bool:
    """Whether entries[k:] are the window's last polls as they came and entries[:k] the
    extremes, bucket by bucket, of the polls before them."""
    tail = len(entries) - k
    if entries[k:] != window[len(window) - tail :]:
        return False
    by_bucket: dict[int, list[float]] = {}
    for t, v in window[: len(window) - tail]:
        by_bucket.setdefault(t // BUCKET_MS, []).append(v)
    kept: dict[int, list[float]] = {}
    for t, v in entries[:k]:
        kept.setdefault(t // BUCKET_MS, []).append(v)
    return kept.keys() == by_bucket.keys() and all(
        sorted(kept[b]) == sorted({min(vs), max(vs)}) for b, vs in by_bucket.items()
    )


# One class per point mostly (the folded path), with ties; sometimes a NaN, a string, a gap
_FEW_FLOATS = st.sampled_from([-1.5, 0.0, 2.25, 1e6])
_POINT_VALUES = {
    "f": st.one_of(_FEW_FLOATS, st.floats(-1e6, 1e6)),
    "i": st.integers(-3, 3),
    "b": st.booleans(),
    "nan": st.one_of(_FEW_FLOATS, st.sampled_from([math.nan, -math.inf])),
    "odd": st.one_of(
        _FEW_FLOATS, st.integers(-3, 3), st.sampled_from([math.nan, math.inf, 1e308, "x", True])
    ),
}
_POLL = st.fixed_dictionaries({}, optional=_POINT_VALUES)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        # tens of ms to the next poll: buckets of one poll, of a few, of more than PENDING_MAX
        st.tuples(st.one_of(st.integers(0, 50), st.integers(0, 8_000)), _POLL),
        min_size=1,
        max_size=200,
    ),
    st.booleans(),
)
@example([(0, {"nan": math.nan}), (1, {"nan": 2.25}), (1, {"nan": 1.5})], False)  # NaN first
@example([(0, {"f": 1e308}), (1, {"f": 1e308}), (1, {"f": -1.5})], False)  # the sum overflows
def test_polls_folded_together_give_what_they_give_one_by_one(
    polls: list[tuple[int, dict[str, Value]]], clock_back: bool
) -> None:
    """Folding a bucket's polls at once (C-level min and max) is only a faster way: looking
    after every poll (so each is folded alone, value by value) keeps exactly the same."""
    together, one_by_one, ts = History(), History(), T0
    for k, (gap, values) in enumerate(polls):
        ts += gap * 10
        if clock_back and k == len(polls) // 2:
            ts -= 2 * SPAN_MS  # an NTP correction further back than the window
        sample = Sample("d", ts, values)
        together.observe(sample)
        one_by_one.observe(sample)
        one_by_one.of("d", ts)
    assert together.of("d", ts) == one_by_one.of("d", ts)


def test_one_duration_style() -> None:
    cases = {
        0: "0s", 0.4: "<1s", 45: "45s", 60: "1m", 65: "1m 5s", 3600: "1h", 3660: "1h 1m",
        3605: "1h", 5400: "1h 30m", 86_400: "1d", 90_000: "1d 1h", 200_000: "2d 7h",
    }  # fmt: skip
    assert {s: format_duration(s) for s in cases} == cases
