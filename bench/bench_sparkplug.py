"""Sparkplug B against JSON v2, at the wire-format level: bytes per point and CPU per point.

    .venv/bin/python bench/bench_sparkplug.py [--samples 20000] [--rounds 5]

The e2e workload's samples (issue 7: 20 devices x 10 points, 4 uint16 counters, 2 scaled int16,
4 float32, the simulator's ``e2e_cabinet`` profile, one sample per device per second) encoded
by ``SparkplugFormat.samples`` in batches of 100 (``uplink.batch.max_samples``), against the
SPEC's JSON v2 ``samples`` message of the same batch (``json.dumps``, compact, as the json
format writes it). Bytes are what the broker receives per message: the MQTT PUBLISH fixed
header, topic and packet id (QoS 1 JSON) and the payload; the checkpoint (QoS 1) counts for the
Sparkplug batch. CPU is the process's CPU time for encoding only (no network, no buffer): the
daemon's whole CPU comes from bench_e2e.py once the uplink publishes through WireFormat.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

from gateway.model import Lane, Sample, StoredItem
from gateway.uplink.sparkplug.format import SparkplugFormat
from gateway.uplink.wire import Catalog, DeviceInfo, Outgoing, PointInfo

DEVICES = 20
BATCH = 100
GATEWAY = "bench-e2e"
PREFIX = "bench"
TS0 = 1_764_169_200_000


def points() -> dict[str, PointInfo]:
    out = {f"u{i}": PointInfo("uint16", "count") for i in range(4)}
    out |= {f"s{i}": PointInfo("int16", "C", scaled=True) for i in range(2)}
    out |= {f"f{i}": PointInfo("float32", "V") for i in range(4)}
    return out


def catalog() -> Catalog:
    devs = tuple(
        DeviceInfo(f"cab-{d:02d}", "tcp-1", "modbus-tcp", 1.0, points()) for d in range(DEVICES)
    )
    return Catalog(GATEWAY, "digest", devs)


def values(t: int) -> dict[str, float | int]:
    """The e2e_cabinet profile's shapes: counters, a scaled temperature, float32 voltages."""
    out: dict[str, float | int] = {
        f"u{i}": (100 * i + int((0.5 + i) * t)) % 65536 for i in range(4)
    }
    for i in range(2):
        out[f"s{i}"] = round(5.0 * i - 2.0 + 8.0 * math.sin(2 * math.pi * t / 60.0), 1)
    for i in range(4):
        v = 230.0 + i + 3.0 * math.sin(2 * math.pi * t / (30.0 + 10 * i))
        out[f"f{i}"] = float(f"{v:.7g}")  # the shortest float32-like text
    return out


def stored(n: int) -> list[StoredItem]:
    items = []
    for seq in range(1, n + 1):
        t = (seq - 1) // DEVICES
        device = f"cab-{(seq - 1) % DEVICES:02d}"
        ts = TS0 + 1000 * t
        items.append(StoredItem(seq, Lane.SAMPLE, ts, Sample(device, ts, values(t))))
    return items


def publish_bytes(msg_topic: str, payload: bytes, qos: int) -> int:
    """MQTT 3.1.1 PUBLISH on the wire: fixed header (1 + remaining length), topic, id, payload."""
    remaining = 2 + len(msg_topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


def json_batch(items: list[StoredItem]) -> Outgoing:
    samples = []
    for item in items:
        sample = item.item
        assert isinstance(sample, Sample)
        samples.append({"seq": item.seq, "ts": sample.ts_ms, "device": sample.device,
                        "values": sample.values})  # fmt: skip
    doc = {"gateway": GATEWAY, "samples": samples}
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return Outgoing(f"{PREFIX}/{GATEWAY}/samples", payload, qos=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    items = stored(args.samples)
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    n_points = sum(len(i.item.values) for i in items if isinstance(i.item, Sample))
    fmt = SparkplugFormat(catalog(), group_id="city-sensors", edge_node_id=GATEWAY,
                          topic_prefix=PREFIX, current_values=dict)  # fmt: skip
    fmt.begin(0)
    fmt.session_start()

    def sparkplug() -> list[Outgoing]:
        return [m for b in batches for m in fmt.samples(b, historical=False)]

    def as_json() -> list[Outgoing]:
        return [json_batch(b) for b in batches]

    for name, encode in (("sparkplug-b", sparkplug), ("json", as_json)):
        cpu = []
        for _ in range(args.rounds):
            start = time.process_time()
            out = encode()
            cpu.append(time.process_time() - start)
        payload = sum(len(m.payload) for m in out)
        wire = sum(publish_bytes(m.topic, m.payload, m.qos) for m in out)
        print(
            f"{name:12s} {len(out):6d} messages  payload {payload / n_points:5.2f} B/point  "
            f"on the wire {wire / n_points:5.2f} B/point  "
            f"encode {statistics.median(cpu) / n_points * 1e9:6.0f} ns/point (median of "
            f"{args.rounds})"
        )


if __name__ == "__main__":
    main()
