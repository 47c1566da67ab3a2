"""``python -m gateway.sim.fleet``: a fleet of simulated gateways on a broker, for the audit's
fleet view (its tests, the screenshot in docs/fleet.md and bench/bench_fleet.py).

Each gateway publishes what a real one does in ``uplink.format: json``: its retained birth on
``P/G/status`` and health on ``P/G/health``, then one samples message a second with ``--rate``
samples (seqs from 1, no gap). Some are made to need a person: ``--offline`` ends with the
will's ``{"state": "offline"}``, ``--holes`` skips seqs 11..30, ``--degraded`` says its buffer
has no room, ``--devices-down`` has ``river-1`` down; ``--remote`` run a remote config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import parse_server

VERSION = "0.3.0"
DEVICES = ("aq-1", "noise-1", "river-1")
HOLE = (11, 30)


@dataclass
class SimGateway:
    id: str
    offline: bool = False
    holes: bool = False
    degraded: bool = False
    device_down: bool = False
    remote: bool = False
    seq: int = 0

    def birth(self) -> bytes:
        digest = hashlib.sha256(f"{self.id}{self.remote}".encode()).hexdigest()[:16]
        doc = {"state": "online", "version": VERSION, "started": 1_764_000_000_000,
               "config_digest": digest}  # fmt: skip
        return json.dumps(doc).encode()

    def health(self, ts_ms: int, index: int) -> bytes:
        problems = []
        if self.degraded:
            problems.append("buffer has no room left to take an outage's samples (3.1 % free)")
        devices = {d: "down" if self.device_down and d == "river-1" else "ok" for d in DEVICES}
        doc = {
            "ts": ts_ms,
            "status": "degraded" if self.degraded else "ok",
            "problems": problems,
            "devices": devices,
            "backlog": 0 if not self.degraded else 18_342,
            "buffer": {"bytes": 4_194_304, "room_bytes": 0 if self.degraded else 251_000_000},
            "link": {"bytes_per_hour": 900_000 + 7_919 * index % 400_000},
            "version": VERSION,
            "config_digest": json.loads(self.birth())["config_digest"],
            "config_source": "remote" if self.remote else "local",
            "uptime_s": 86_400.0 + index,
        }
        return json.dumps(doc).encode()

    def samples(self, count: int, ts_ms: int) -> bytes:
        items = []
        for _ in range(count):
            self.seq += 1
            if self.holes and self.seq == HOLE[0]:
                self.seq = HOLE[1] + 1
            items.append({"seq": self.seq, "ts": ts_ms, "device": "aq-1", "values": {"pm25": 12.3}})
        return json.dumps({"gateway": self.id, "samples": items}).encode()


def fleet(args: argparse.Namespace) -> list[SimGateway]:
    gws = [SimGateway(f"{args.id_prefix}-{i:04d}") for i in range(1, args.gateways + 1)]
    picks = iter(gws[::-1])  # the last ones, so the page's sort shows
    for flag, option in (("offline", "offline"), ("holes", "holes"), ("degraded", "degraded"),
                         ("device_down", "devices_down"), ("remote", "remote")):  # fmt: skip
        for _ in range(getattr(args, option)):
            gw = next(picks, None)
            if gw is not None:
                setattr(gw, flag, True)
    return gws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sim.fleet", description=__doc__)
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", default="street-gateway")
    parser.add_argument("--id-prefix", default="lamppost")
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--rate", type=int, default=20, help="samples per second per gateway")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to publish samples")
    for flag in ("offline", "holes", "degraded", "devices-down", "remote"):
        parser.add_argument(f"--{flag}", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    _, host, port = parse_server(args.broker)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-fleet-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    gws = fleet(args)
    topic = f"{args.prefix}/{{}}/{{}}"
    now = int(time.time() * 1000)
    for index, gw in enumerate(gws):
        client.publish(topic.format(gw.id, "status"), gw.birth(), qos=1, retain=True)
        client.publish(topic.format(gw.id, "health"), gw.health(now, index), qos=1, retain=True)
    start = time.monotonic()
    tick = 0
    last = None
    while time.monotonic() - start < args.seconds:
        now = int(time.time() * 1000)
        for gw in gws:
            last = client.publish(topic.format(gw.id, "samples"), gw.samples(args.rate, now), qos=1)
        tick += 1
        time.sleep(max(0.0, start + tick - time.monotonic()))
    for gw in gws:
        if gw.offline:
            last = client.publish(
                topic.format(gw.id, "status"), b'{"state":"offline"}', qos=1, retain=True
            )
    if last is not None:
        last.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    print(f"published {sum(g.seq for g in gws)} seqs for {len(gws)} gateways", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
