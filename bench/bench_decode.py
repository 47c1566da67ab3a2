"""Decoder CPU per value: one request's block of registers to clean values (``RequestDecoder``).

    .venv/bin/python bench/bench_decode.py

Two profiles (``e2e_cabinet``: 4 uint16, 2 int16 x 0.1, 4 float32; ``street_cabinet``: 5 int16 x
0.1, 4 float32), each decoded from 1,000 different blocks of random values ("changing") and from
one block over and over ("steady": a sensor whose values do not move between polls).
"""

from __future__ import annotations

import random
import timeit

from gateway.codec.registers import RequestDecoder, encode, plan_requests
from gateway.config import ModbusPoint
from gateway.sources.modbus.sim import profile_points


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
            decoder(words)

    loops = max(1, 20_000 // len(data))
    best = min(timeit.repeat(run, number=loops, repeat=7))
    return best / loops / len(data) / values * 1e6


def main() -> None:
    for profile in ("e2e_cabinet", "street_cabinet"):
        decoder, data, values = blocks(profile, 1000)
        changing = per_value_us(decoder, data, values)
        steady = per_value_us(decoder, data[:1], values)
        print(f"{profile}: {changing:.3f} us/value changing, {steady:.3f} us/value steady")


if __name__ == "__main__":
    main()
