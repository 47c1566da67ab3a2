"""Decoder CPU: one request's block of registers to clean values (``RequestDecoder``), per value
and for the Modbus source's whole decode of a poll.

    .venv/bin/python bench/bench_decode.py

Per value: two profiles (``e2e_cabinet``: 4 uint16, 2 int16 x 0.1, 4 float32; ``street_cabinet``:
5 int16 x 0.1, 4 float32), each decoded from 1,000 different blocks of random values
("changing") and from one block over and over ("steady": a sensor whose values do not move
between polls).

Per poll: ``ModbusSource._decode`` (the decoder and the source's bookkeeping) for 20
``e2e_cabinet`` devices of one request each, as the daemon polls them in bench/bench_e2e.py, on
the blocks the simulator serves over 50 polls a second apart ("changing") and on the first
poll's blocks over and over ("steady").
"""

from __future__ import annotations

import random
import timeit

from gateway.codec.registers import ReadRequest, RequestDecoder, encode, plan_requests
from gateway.model import Value
from gateway.sources.modbus.config import ModbusTcpSource
from gateway.sources.modbus.points import ModbusPoint
from gateway.sources.modbus.sim import SimUnit, profile_points
from gateway.sources.modbus.source import ModbusSource, _Device

DEVICES, POLLS = 20, 50


def blocks(profile: str, n: int) -> tuple[RequestDecoder, list[list[int]], int]:
    points = [ModbusPoint.model_validate(p) for p in profile_points(profile)]
    request = next(r for r in plan_requests(points) if r.table == "holding")
    rng = random.Random(7)
    out = []
    for _ in range(n):
        words = [0] * request.count
        for p in (points[i] for i in request.points):
            if p.type.startswith("float"):
                value: float = rng.uniform(-50.0, 250.0)
            elif p.scale != 1.0:
                value = rng.randint(-300, 300) * p.scale
            else:
                value = rng.randint(0, 60000)
            lo = p.address - request.address
            words[lo : lo + p.width] = encode(p, value)
        out.append(words)
    return RequestDecoder(request, points), out, len(request.points)


def per_value_us(decoder: RequestDecoder, data: list[list[int]], values: int) -> float:
    def run() -> None:
        for words in data:
            decoder.decode_into(words, {})

    loops = max(1, 20_000 // len(data))
    best = min(timeit.repeat(run, number=loops, repeat=7))
    return best / loops / len(data) / values * 1e6


Poll = tuple[_Device, ReadRequest, list[int]]  # (a source's device, its request, the block)


def polls() -> tuple[ModbusSource, list[Poll]]:
    """A source of DEVICES e2e_cabinet devices and POLLS rounds of their simulated blocks."""
    config = ModbusTcpSource.model_validate(
        {"name": "tcp", "kind": "modbus-tcp", "host": "127.0.0.1", "port": 1502,
         "devices": [{"name": f"cab-{k:02d}", "unit": k + 1, "interval": "1s",
                      "points": profile_points("e2e_cabinet")} for k in range(DEVICES)]}
    )  # fmt: skip
    source = ModbusSource(config, lambda sample: None)
    units = [SimUnit(k + 1, "e2e_cabinet") for k in range(DEVICES)]
    out: list[Poll] = []
    for t in range(POLLS):
        for k, (device, unit) in enumerate(zip(source._devices, units, strict=True)):
            (request,) = device.plan  # a benchmark may reach in
            values = unit.values(unit.started + t + 0.37 * k)  # devices out of phase
            words = [0] * request.count
            for p in device.config.points:
                lo = p.address - request.address
                words[lo : lo + p.width] = encode(p, values[p.name])
            out.append((device, request, words))
    return source, out


def per_poll_us(source: ModbusSource, data: list[Poll]) -> float:
    decode = source._decode

    def run() -> None:
        for device, request, words in data:
            values: dict[str, Value] = {}
            decode(device, request, words, values)

    loops = max(1, 5_000 // len(data))
    best = min(timeit.repeat(run, number=loops, repeat=7))
    return best / loops / len(data) * 1e6


def main() -> None:
    for profile in ("e2e_cabinet", "street_cabinet"):
        decoder, data, values = blocks(profile, 1000)
        changing = per_value_us(decoder, data, values)
        steady = per_value_us(decoder, data[:1], values)
        print(f"{profile}: {changing:.3f} us/value changing, {steady:.3f} us/value steady")
    source, rounds = polls()
    changing = per_poll_us(source, rounds)
    steady = per_poll_us(source, rounds[:DEVICES])
    print(
        f"source decode, {DEVICES} x e2e_cabinet: {changing:.2f} us/poll changing, "
        f"{steady:.2f} us/poll steady"
    )


if __name__ == "__main__":
    main()
