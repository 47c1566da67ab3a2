"""Benchmark the durable buffer beside a bare aiosqlite ``executemany`` loop (the SQLite floor).

Measures, for the same rows in the same run (a row is one sample: one poll of a ten-point
device, as the ``e2e_cabinet`` profile gives):
- append: samples/s from ``put()`` until durably committed (``flush()`` every 10,000, so the
  memory queue never overflows), sync full and normal;
- drain: ``fetch(limit=500)`` + ``ack()`` until empty (rows/s);
- RSS with an empty buffer and with 1,000,000 buffered samples (each side in a child process).

Run: ``.venv/bin/python bench/bench_buffer.py`` (about a minute; ``--rows N`` for append/drain).
Targets: append and drain >= 50 % of the bare loop; RSS(1M) - RSS(0) < 5 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

from gateway.buffer import Buffer, codec
from gateway.model import Lane, Sample

T0 = 1_764_169_200_000
BARE_BATCH = 500
POINTS = 10
WINDOW = 10_000  # samples put between flushes: half the default memory queue


def make_sample(n: int) -> Sample:
    """Poll ``n`` of a ten-point cabinet: four temperatures (0.1), four energies, two flags."""
    values: dict[str, float | int | bool] = {
        f"t{i}": round(20 + i + (n % 50) * 0.1, 1) for i in range(4)
    }
    values.update({f"e{i}": 1234.5 + n * 0.25 + i for i in range(4)})
    values.update({"door_open": n % 7 == 0, "alarm": n % 11 == 0})
    return Sample("cab-01", T0 + n, values)


def sample_body(sample: Sample) -> str:
    """The ``vals`` column the buffer writes for it."""
    return codec.sample_row(0, T0, sample)[4]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- the buffer ---------------------------------------------------------------------------


async def buffer_append(buffer: Buffer, start: int, count: int) -> None:
    """put() ``count`` samples (one per poll, as a source hands them over), flushing every
    ``WINDOW``; then flush."""
    for i in range(count):
        buffer.put(make_sample(start + i))
        if i % 1000 == 999:
            if i % WINDOW == WINDOW - 1:
                await buffer.flush()
            await asyncio.sleep(0)
    await buffer.flush()


async def buffer_drain(buffer: Buffer) -> int:
    drained = 0
    while items := await buffer.fetch(Lane.SAMPLE, limit=500):
        await buffer.ack(item.seq for item in items)
        drained += len(items)
    return drained


async def bench_buffer(dir_: Path, rows: int, sync: str) -> dict[str, float]:
    samples = [make_sample(n) for n in range(rows)]
    async with Buffer(dir_ / f"buffer-{sync}.db", sync=sync) as buffer:  # type: ignore[arg-type]
        t = time.perf_counter()
        for i, sample in enumerate(samples):
            buffer.put(sample)
            if i % 1000 == 999:
                if i % WINDOW == WINDOW - 1:
                    await buffer.flush()
                await asyncio.sleep(0)
        await buffer.flush()
        append = rows / (time.perf_counter() - t)
        assert buffer.stats.samples == rows and buffer.stats.dropped_total == 0
        t = time.perf_counter()
        drained = await buffer_drain(buffer)
        drain = drained / (time.perf_counter() - t)
        assert drained == rows
    return {"append": append, "drain": drain}


# -- the bare loop ------------------------------------------------------------------------

INSERT = "INSERT INTO samples VALUES (?,?,?,?,?,?)"


async def bare_db(path: Path, sync: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={sync.upper()}")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS samples (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
        " stored_ms INTEGER NOT NULL, device TEXT NOT NULL, vals TEXT NOT NULL,"
        " flags INTEGER NOT NULL)"
    )
    await db.commit()
    return db


async def bare_append(db: aiosqlite.Connection, start: int, count: int) -> None:
    for first in range(start, start + count, BARE_BATCH):
        rows = [
            codec.sample_row(n + 1, T0, make_sample(n))
            for n in range(first, min(first + BARE_BATCH, start + count))
        ]
        await db.executemany(INSERT, rows)
        await db.commit()


async def bench_bare(dir_: Path, rows: int, sync: str, *, encode: bool) -> dict[str, float]:
    """The bare loop; ``encode``: JSON-encode each sample inside the timed loop (the same
    work the buffer does), else pre-encoded rows (only what SQLite itself costs)."""
    samples = [make_sample(n) for n in range(rows)]
    pre = [] if encode else [codec.sample_row(n + 1, T0, s) for n, s in enumerate(samples)]
    db = await bare_db(dir_ / f"bare-{sync}-{encode}.db", sync)
    try:
        t = time.perf_counter()
        for i in range(0, rows, BARE_BATCH):
            if encode:
                batch = [
                    codec.sample_row(n + 1, T0, s)
                    for n, s in enumerate(samples[i : i + BARE_BATCH], i)
                ]
            else:
                batch = pre[i : i + BARE_BATCH]
            await db.executemany(INSERT, batch)
            await db.commit()
        append = rows / (time.perf_counter() - t)
        t = time.perf_counter()
        drained = 0
        while True:
            cursor = await db.execute(
                "SELECT seq, ts_ms, device, vals, flags FROM samples ORDER BY seq LIMIT ?",
                (BARE_BATCH,),
            )
            got = await cursor.fetchall()
            if not got:
                break
            for row in got:  # decode, as the buffer does for what it hands the uplink
                codec.sample_from_row(*row[1:])
            await db.execute("DELETE FROM samples WHERE seq <= ?", (got[-1][0],))
            await db.commit()
            drained += len(got)
        drain = drained / (time.perf_counter() - t)
    finally:
        await db.close()
    return {"append": append, "drain": drain}


# -- RSS (child processes) ----------------------------------------------------------------


async def rss_child(kind: str, dir_: Path, backlog: int) -> dict[str, int]:
    """RSS with an empty store (after a warm-up that went through the same paths) and with
    ``backlog`` samples stored, for the buffer or the bare loop."""
    if kind == "buffer":
        async with Buffer(dir_ / "rss-buffer.db", sync="normal", max_size=2 * 1024**3) as buffer:
            await buffer_append(buffer, 0, 50_000)
            await buffer_drain(buffer)
            empty = rss_kib()
            await buffer_append(buffer, 50_000, backlog)
            await buffer.fetch(Lane.SAMPLE, limit=500)
            assert buffer.stats.samples == backlog
            full = rss_kib()
    else:
        db = await bare_db(dir_ / "rss-bare.db", "normal")
        try:
            await bare_append(db, 0, 50_000)
            await db.execute("DELETE FROM samples")
            await db.commit()
            empty = rss_kib()
            await bare_append(db, 50_000, backlog)
            full = rss_kib()
        finally:
            await db.close()
    return {"empty_kib": empty, "full_kib": full}


def run_rss(kind: str, dir_: Path, backlog: int) -> dict[str, int]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            kind,
            "--dir",
            str(dir_),
            "--backlog",
            str(backlog),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


# -- main ---------------------------------------------------------------------------------


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.0f} %"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-buffer-", dir=args.tmp) as tmp:
        dir_ = Path(tmp)
        size = len(sample_body(make_sample(1)))
        print(
            f"rows: {args.rows:,} samples of {POINTS} points (~{size} bytes of values); dir {tmp}"
        )
        print(f"{'':24}{'buffer':>12}{'bare+encode':>14}{'ratio':>7}{'bare rows':>13}{'ratio':>7}")
        for sync in ("full", "normal"):
            ours = await bench_buffer(dir_, args.rows, sync)
            same = await bench_bare(dir_, args.rows, sync, encode=True)
            raw = await bench_bare(dir_, args.rows, sync, encode=False)
            for what in ("append", "drain"):
                print(
                    f"{what + ' (sync ' + sync + ')':24}{ours[what]:>10,.0f}/s"
                    f"{same[what]:>12,.0f}/s{pct(ours[what], same[what]):>7}"
                    f"{raw[what]:>11,.0f}/s{pct(ours[what], raw[what]):>7}"
                )
        for kind in ("buffer", "bare"):
            rss = run_rss(kind, dir_, args.backlog)
            grow = (rss["full_kib"] - rss["empty_kib"]) / 1024
            print(
                f"RSS {kind:7} empty {rss['empty_kib'] / 1024:6.1f} MiB,"
                f" {args.backlog:,} stored {rss['full_kib'] / 1024:6.1f} MiB: +{grow:.1f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--tmp", default=None, help="where the database files go")
    parser.add_argument("--rss-child", choices=["buffer", "bare"])
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(asyncio.run(rss_child(args.rss_child, args.dir, args.backlog))))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
