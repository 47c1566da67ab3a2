"""A full disk under a healthy link: nothing fails to write (live samples are acknowledged
before their commit), yet the buffer has no room left for an outage. It says so: ``room_low``
and ``room_bytes`` in its figures, and ``/health``'s problem line. On a real small file system
(a tmpfs mounted for the test: root only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from status_support import FakeProvider
from support import fill, small_filesystem

from gateway.buffer import Buffer
from gateway.model import Lane, Sample
from gateway.status import health

T0 = 1_764_000_000_000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "small-fs", "8m") as where:
        yield where


async def test_room_runs_out_and_comes_back_while_every_write_succeeds(small_fs: Path) -> None:
    async with Buffer(small_fs / "buffer.db", max_size=64 * 1024**2) as buffer:
        provider = FakeProvider(buffer=buffer.stats)

        async def live_sample(n: int) -> None:
            """A sample acknowledged before its commit, as with the broker up; then the commit."""
            buffer.put(Sample("aq-1", T0 + n, {"pm25": float(n)}))
            await buffer.wait_for_seq(n - 1)
            (item,) = await buffer.fetch(Lane.SAMPLE, after_seq=n - 1)
            await buffer.ack([item.seq])
            await buffer.flush()

        await live_sample(1)
        room = buffer.stats.room_bytes
        assert room is not None and 6 * 1024**2 < room < 8 * 1024**2  # 8 MiB less 5 % and the file
        assert health(provider)[0]

        filler = fill(small_fs, leave_fraction=0.03)
        await live_sample(2)
        stats = buffer.stats
        assert (stats.writable, stats.room_low, stats.room_bytes) == (True, True, 0)
        assert stats.fs_free_fraction is not None and 0.02 < stats.fs_free_fraction < 0.04
        healthy, problems = health(provider)
        assert not healthy
        assert problems == [
            f"buffer has no room left to take an outage's samples "
            f"({100 * stats.fs_free_fraction:.1f} % free)"
        ]

        filler.unlink()
        await live_sample(3)
        assert not buffer.stats.room_low
        assert (buffer.stats.room_bytes or 0) > 6 * 1024**2
        assert health(provider) == (True, [])
