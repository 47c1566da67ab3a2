"""Dust sensor frames: the pure decoder's rate on clean frames and on noise, in reads of the
size a serial transport hands over.

Run: .venv/bin/python bench/bench_particulate.py   (about 3 s, no network)

A sensor sends about one frame a second (10 or 32 bytes); these figures say what a line full of
garbage costs the gateway, not what the sensors need.
"""

from __future__ import annotations

import random
import time

from gateway.sources.particulate.frames import FrameDecoder, Model, pms_reading, sds_reading

READ = 1024  # bytes per read, as the transport hands them over


def rate(model: Model, stream: bytes) -> tuple[float, int, float]:
    """(frames/s, frames, MB/s) decoding ``stream`` in reads of READ bytes."""
    decoder = FrameDecoder(model)
    start = time.perf_counter()
    frames = 0
    for offset in range(0, len(stream), READ):
        frames += len(decoder.feed(stream[offset : offset + READ]))
    elapsed = time.perf_counter() - start
    return frames / elapsed, frames, len(stream) / elapsed / 1e6


def main() -> None:
    clean: dict[Model, bytes] = {
        "sds011": sds_reading(12.3, 20.1) * 100_000,
        "pms5003": pms_reading(8, 12, 18) * 50_000,
    }
    noise = random.Random(1).randbytes(4_000_000)
    for model, stream in clean.items():
        per_s, frames, mb = rate(model, stream)
        print(f"{model}: clean frames {per_s:,.0f} frames/s ({frames:,} frames, {mb:.1f} MB/s)")
        per_s, frames, mb = rate(model, noise)
        print(f"{model}: random noise {mb:.1f} MB/s ({frames} valid-checksum frames in 4 MB)")


if __name__ == "__main__":
    main()
