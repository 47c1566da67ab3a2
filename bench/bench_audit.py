"""How fast one audit ingests a fleet from mosquitto, and how much memory 10M samples cost.

    .venv/bin/python bench/bench_audit.py [--messages 2100] [--samples 10000000] [--backlog 6000]

A message is what a gateway publishes on ``P/G/samples`` with the default batch: 100 samples
(``uplink.batch.max_samples``), each a poll of a ten-point device (bench_buffer.make_sample).

1. Broker path: a private mosquitto on a free loopback port; the audit's persistent session is
   created, then 300 gateways' messages of 100 samples are published while the audit is away
   (queued by the broker), then one in-process audit consumer (the code `audit` runs: MQTT 5,
   manual ack after each committed batch, SQLite state with synchronous=FULL) drains them.
   Timed from the first to the last batch committed.
2. Memory: 10M samples from 300 gateways fed straight into the ledger (the same `Fleet.apply`
   the consumer calls, JSON parsing included) with a state-file save every 200 messages, one
   dropped message in 1000 and one duplicated in 500; RSS sampled every million samples.
3. Backlog: the command a user runs. `audit --once` registers its persistent session, then
   `--backlog` messages of 100 samples from 300 gateways are queued by the broker while no
   audit runs, then `street-gateway audit --once --json` drains them as a subprocess. Its peak
   RSS (VmHWM from /proc/<pid>/status, sampled every 10 ms while it runs),
   its RSS over time, its drain rate (wall time minus that of the empty first run) and the
   report's totals (every sample received, no hole) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_buffer import make_sample
from support import Mosquitto, running_mosquitto

from gateway.audit.consumer import RECEIVE_MAXIMUM, BrokerOptions, Consumer
from gateway.audit.ledger import Fleet
from gateway.audit.store import AuditStore
from gateway.model import Lane, StoredItem
from gateway.uplink.json_format import samples_message

PREFIX = "bench"
GATEWAYS = 300
PER_MESSAGE = 100


def message(gid: str, lo: int) -> bytes:
    items = [
        StoredItem(s, Lane.SAMPLE, 0, make_sample(s)._replace(device="cab-01"))
        for s in range(lo, lo + PER_MESSAGE)
    ]
    return samples_message(gid, items, historical=False)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


async def queue_backlog(broker: Mosquitto, n_messages: int) -> None:
    """Publish ``n_messages`` of 100 samples round-robin over 300 gateways, QoS 1."""
    per_gateway = -(-n_messages // GATEWAYS)
    payloads = [
        (f"{PREFIX}/gw-{g:03d}/samples", message(f"gw-{g:03d}", 1 + k * PER_MESSAGE))
        for k in range(per_gateway)
        for g in range(GATEWAYS)
    ][:n_messages]
    size = sum(len(p) for _, p in payloads) / len(payloads)
    t0 = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=100) as pub:
        pub.pending_calls_threshold = 1000
        for i in range(0, len(payloads), 50):
            chunk = payloads[i : i + 50]
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))
    print(
        f"published {len(payloads)} messages ({size / 1024:.0f} KiB each) "
        f"in {time.perf_counter() - t0:.1f}s while the audit was away"
    )


async def broker_path(n_messages: int, workdir: Path) -> None:
    with running_mosquitto(workdir) as broker:
        state = workdir / "audit.db"
        opts = BrokerOptions(url=broker.url, client_id="bench-audit")
        async with AuditStore(state) as store:
            fleet = Fleet(PREFIX)
            consumer = Consumer(opts, fleet, store)
            await consumer.run(asyncio.Event(), settle=0.2)  # creates the session
            await queue_backlog(broker, n_messages)
            marks: list[tuple[float, int]] = []  # (time, messages committed) per batch
            await consumer.run(
                asyncio.Event(),
                settle=1.0,
                on_batch=lambda: marks.append((time.perf_counter(), consumer.messages_total)),
            )
            (t_first, n_first), (t_last, n_last) = marks[0], marks[-1]
            n = n_last - n_first  # the first batch's messages start the clock
            took = t_last - t_first
            samples = sum(led.received.count for led in fleet.gateways.values())
            print(
                f"audit ingested {consumer.messages_total} messages / {samples} samples in "
                f"{consumer.batches} batches; at most {consumer.max_unacked} unacked at once "
                f"(Receive Maximum {RECEIVE_MAXIMUM} asked); "
                f"{n / took:,.0f} messages/s, {n * PER_MESSAGE / took:,.0f} samples/s"
            )


async def memory(total: int, workdir: Path) -> None:
    fleet = Fleet(PREFIX)
    # 100 seqs of JSON per message, built once per gateway and re-stamped: the parse is real.
    template = message("gw-000", 1).decode()
    async with AuditStore(workdir / "memory.db") as store:
        print(f"RSS before: {rss_mib():.1f} MiB")
        fed = n_msg = 0
        next_mark = 1_000_000
        t0 = time.perf_counter()
        seq = dict.fromkeys(range(GATEWAYS), 1)
        while fed < total:
            for g in range(GATEWAYS):
                gid = f"gw-{g:03d}"
                lo = seq[g]
                seq[g] += PER_MESSAGE
                n_msg += 1
                if n_msg % 1000 == 0:
                    continue  # dropped: a hole
                payload = _restamp(template, gid, lo)
                fleet.apply(f"{PREFIX}/{gid}/samples", payload, now_ms=n_msg)
                if n_msg % 500 == 0:
                    fleet.apply(f"{PREFIX}/{gid}/samples", payload, now_ms=n_msg)
                if n_msg % 200 == 0:
                    await store.save(fleet)
                fed += PER_MESSAGE
                if fed >= next_mark:
                    ranges = sum(len(led.received) for led in fleet.gateways.values())
                    holes = sum(len(led.holes) for led in fleet.gateways.values())
                    print(
                        f"{fed / 1e6:5.1f}M samples: RSS {rss_mib():.1f} MiB, "
                        f"{ranges} received ranges, {holes} holes, "
                        f"{fed / (time.perf_counter() - t0):,.0f} samples/s"
                    )
                    next_mark += 1_000_000
        await store.save(fleet)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"done: {fed:,} samples, {n_msg:,} messages; RSS {rss_mib():.1f} MiB, peak {peak:.1f} MiB"
    )


def _status_kib(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = [line.split() for line in f if line.startswith(("VmHWM", "VmRSS"))]
    except OSError:
        return {}
    return {k.rstrip(":"): int(v) for k, v, *_ in lines}


def _audit_once(broker: Mosquitto, state: Path, out: Path) -> tuple[float, float, list[float]]:
    """Run ``audit --once --json`` to its end: wall seconds, peak RSS MiB, RSS MiB per 0.5 s."""
    args = [
        sys.executable, "-m", "gateway", "--log-level", "WARNING", "audit", "--broker",
        broker.url, "--prefix", PREFIX, "--state", str(state), "--once", "--json",
        "--settle", "1s",
    ]  # fmt: skip
    t0 = time.perf_counter()
    with out.open("wb") as stdout:
        proc = subprocess.Popen(args, stdout=stdout)
    hwm_kib, timeline, next_sample = 0, [], t0
    # VmHWM is the exec'd image's own high-water mark (wait4's ru_maxrss is not: a vforked
    # child inherits the parent's); sampled every 10 ms, it misses only growth in the last 10 ms.
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.perf_counter()
        if now - t0 > 300:
            proc.kill()
        vm = _status_kib(proc.pid)
        hwm_kib = max(hwm_kib, vm.get("VmHWM", 0))
        if now >= next_sample and vm.get("VmRSS", 0) > 1024:  # exec done
            timeline.append(vm["VmRSS"] / 1024)
            next_sample += 0.5
        time.sleep(0.01)
    took = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"audit --once exited {proc.returncode}")
    return took, hwm_kib / 1024, timeline


def backlog(n_messages: int, workdir: Path) -> None:
    with running_mosquitto(workdir) as broker:
        state, out = workdir / "backlog.db", workdir / "report.json"
        empty_s, empty_peak, _ = _audit_once(broker, state, out)  # registers the session
        print(f"audit --once with nothing queued: {empty_s:.2f}s, peak RSS {empty_peak:.1f} MiB")
        asyncio.run(queue_backlog(broker, n_messages))
        took, peak, timeline = _audit_once(broker, state, out)
    doc = json.loads(out.read_text())
    received = sum(g["received"] for g in doc["gateways"])
    holes = sum(len(g["holes"]) for g in doc["gateways"])
    drain = took - empty_s
    print(
        f"audit --once drained {n_messages} messages / {received:,} samples "
        f"({holes} holes) in {took:.2f}s: peak RSS (VmHWM) {peak:.1f} MiB; "
        f"~{n_messages / drain:,.0f} messages/s, ~{received / drain:,.0f} samples/s "
        f"(wall time beyond the empty run's {empty_s:.2f}s)"
    )
    print("RSS every 0.5 s (MiB): " + " ".join(f"{v:.0f}" for v in timeline))


def _restamp(template: str, gid: str, lo: int) -> bytes:
    # Replace the seq numbers 1..100 and the gateway id of the template.
    parts = template.split('{"seq":')
    head = parts[0].replace('"gw-000"', f'"{gid}"')
    return (
        head + "".join(f'{{"seq":{lo + i}' + p[p.index(",") :] for i, p in enumerate(parts[1:]))
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2100)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--backlog", type=int, default=6000, help="messages queued (phase 3)")
    parser.add_argument("--phase", choices=["all", "broker", "memory", "backlog"], default="all")
    args = parser.parse_args()
    if args.phase == "all":  # each phase in a fresh interpreter, so RSS is the audit's own
        for phase in ("broker", "memory", "backlog"):
            extra = ["--messages", str(args.messages), "--samples", str(args.samples)]
            extra += ["--backlog", str(args.backlog)]
            subprocess.run([sys.executable, __file__, "--phase", phase, *extra], check=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.phase == "broker":
            asyncio.run(broker_path(args.messages, Path(tmp)))
        elif args.phase == "backlog":
            backlog(args.backlog, Path(tmp))
        else:
            asyncio.run(memory(args.samples, Path(tmp)))


if __name__ == "__main__":
    main()
