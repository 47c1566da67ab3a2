"""Benchmark the durable buffer beside a bare aiosqlite ``executemany`` loop (the SQLite floor).

Measures, for the same rows in the same run:
- append: readings/s from ``put_many()`` (10 at a time, a poll) until durably committed, sync
  full and normal;
- drain: ``fetch(limit=500)`` + ``ack()`` until empty (rows/s);
- RSS with an empty buffer and with 1,000,000 buffered readings (each side in a child process).

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

from gateway.buffer import Buffer
from gateway.model import Lane, Reading
from gateway.uplink.payload import reading_body

T0 = 1_764_169_200_000
BARE_BATCH = 500


def make_reading(n: int) -> Reading:
    return Reading("aq-1", "pm25", round(n * 0.1, 1), T0 + n, unit="ug/m3")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- the buffer ---------------------------------------------------------------------------


async def buffer_append(buffer: Buffer, start: int, count: int, window: int = 20_000) -> None:
    """put_many() ``count`` readings 10 at a time (as a source hands over a poll), keeping at
    most ``window`` uncommitted; then flush."""
    base = buffer.last_seq
    for i in range(0, count, 10):
        buffer.put_many([make_reading(start + n) for n in range(i, min(i + 10, count))])
        if i % 1000 == 990:
            while i + 10 - (buffer.last_seq - base) > window:
                await buffer.wait_for_commit(buffer.last_seq)
            await asyncio.sleep(0)
    await buffer.flush()


async def buffer_drain(buffer: Buffer) -> int:
    drained = 0
    while items := await buffer.fetch(Lane.READING, limit=500):
        await buffer.ack(item.seq for item in items)
        drained += len(items)
    return drained


async def bench_buffer(dir_: Path, rows: int, sync: str) -> dict[str, float]:
    readings = [make_reading(n) for n in range(rows)]
    async with Buffer(dir_ / f"buffer-{sync}.db", sync=sync) as buffer:  # type: ignore[arg-type]
        t = time.perf_counter()
        for i, reading in enumerate(readings):
            buffer.put(reading)
            if i % 1000 == 999:
                while i + 1 - buffer.last_seq > 20_000:
                    await buffer.wait_for_commit(buffer.last_seq)
                await asyncio.sleep(0)
        await buffer.flush()
        append = rows / (time.perf_counter() - t)
        assert buffer.stats.readings == rows and buffer.stats.dropped_total == 0
        t = time.perf_counter()
        drained = await buffer_drain(buffer)
        drain = drained / (time.perf_counter() - t)
        assert drained == rows
    return {"append": append, "drain": drain}


# -- the bare loop ------------------------------------------------------------------------


async def bare_db(path: Path, sync: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={sync.upper()}")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS readings (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,"
        " stored_ms INTEGER NOT NULL, body TEXT NOT NULL)"
    )
    await db.commit()
    return db


async def bare_append(db: aiosqlite.Connection, start: int, count: int) -> None:
    for first in range(start, start + count, BARE_BATCH):
        rows = [
            (n + 1, T0 + n, T0, reading_body(make_reading(n)))
            for n in range(first, min(first + BARE_BATCH, start + count))
        ]
        await db.executemany("INSERT INTO readings VALUES (?,?,?,?)", rows)
        await db.commit()


async def bench_bare(dir_: Path, rows: int, sync: str, *, encode: bool) -> dict[str, float]:
    """The bare loop; ``encode``: JSON-encode each reading inside the timed loop (the same
    work the buffer does), else pre-encoded rows (only what SQLite itself costs)."""
    readings = [make_reading(n) for n in range(rows)]
    pre = [] if encode else [(n + 1, r.ts_ms, T0, reading_body(r)) for n, r in enumerate(readings)]
    db = await bare_db(dir_ / f"bare-{sync}-{encode}.db", sync)
    try:
        t = time.perf_counter()
        for i in range(0, rows, BARE_BATCH):
            if encode:
                batch = [
                    (n + 1, r.ts_ms, T0, reading_body(r))
                    for n, r in enumerate(readings[i : i + BARE_BATCH], i)
                ]
            else:
                batch = pre[i : i + BARE_BATCH]
            await db.executemany("INSERT INTO readings VALUES (?,?,?,?)", batch)
            await db.commit()
        append = rows / (time.perf_counter() - t)
        t = time.perf_counter()
        drained = 0
        while True:
            cursor = await db.execute(
                "SELECT seq, ts_ms, body FROM readings ORDER BY seq LIMIT ?", (BARE_BATCH,)
            )
            got = await cursor.fetchall()
            if not got:
                break
            await db.execute("DELETE FROM readings WHERE seq <= ?", (got[-1][0],))
            await db.commit()
            drained += len(got)
        drain = drained / (time.perf_counter() - t)
    finally:
        await db.close()
    return {"append": append, "drain": drain}


# -- RSS (child processes) ----------------------------------------------------------------


async def rss_child(kind: str, dir_: Path, backlog: int) -> dict[str, int]:
    """RSS with an empty store (after a warm-up that went through the same paths) and with
    ``backlog`` readings stored, for the buffer or the bare loop."""
    if kind == "buffer":
        async with Buffer(dir_ / "rss-buffer.db", sync="normal", max_size=2 * 1024**3) as buffer:
            await buffer_append(buffer, 0, 50_000)
            await buffer_drain(buffer)
            empty = rss_kib()
            await buffer_append(buffer, 50_000, backlog)
            await buffer.fetch(Lane.READING, limit=500)
            assert buffer.stats.readings == backlog
            full = rss_kib()
    else:
        db = await bare_db(dir_ / "rss-bare.db", "normal")
        try:
            await bare_append(db, 0, 50_000)
            await db.execute("DELETE FROM readings")
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
        size = len(reading_body(make_reading(1)))
        print(f"rows: {args.rows:,} readings of ~{size} bytes; dir {tmp}")
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
