"""Seq-run arithmetic (gateway/buffer/runs.py) against the plain definition."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from gateway.buffer.runs import runs_of, take_runs

seq_sets = st.sets(st.integers(min_value=1, max_value=300), max_size=120)


@given(held=seq_sets, acked=seq_sets)
def test_take_runs_takes_exactly_the_acked_items_and_keeps_the_rest_in_order(
    held: set[int], acked: set[int]
) -> None:
    items = deque((seq, f"item {seq}") for seq in sorted(held))
    taken = take_runs(items, runs_of(acked))
    assert [seq for seq, _ in taken] == sorted(held & acked)
    assert [seq for seq, _ in items] == sorted(held - acked)
