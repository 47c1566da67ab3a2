"""How fast `street-gateway verify` checks: seals and items per second, in this process.

    .venv/bin/python bench/bench_verify.py [--seals 200] [--per-seal 500]

Builds an archive as the gateway publishes it: samples of 10 values (4 uint16, 2 scaled int16,
4 float32, like bench_e2e's ``e2e_cabinet``) in messages of 100, and a seal over every
``--per-seal`` of them, signed with a test key; then times ``collect`` (parse, canonicalize and
hash each item) and ``check`` (signatures, chain, Merkle roots) over it, as ``verify`` runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gateway.keys import SigningKey
from gateway.model import Sample
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, SealInput, chain_hash, make_seal
from gateway.seals.verify import check, collect
from gateway.uplink.json_format import samples_message

GATEWAY = "bench-verify"


def archive(seals: int, per_seal: int) -> list[tuple[str, Any]]:
    key = SigningKey(bytes(range(32)))
    out: list[tuple[str, Any]] = []
    prev = FIRST_PREV
    seq = 0
    for n in range(1, seals + 1):
        leaves = []
        batch = []
        for _ in range(per_seal):
            seq += 1
            values: dict[str, Any] = {f"u{i}": (seq * 7 + i) % 65536 for i in range(4)}
            values |= {f"s{i}": round((seq % 400) * 0.1 - 5, 1) for i in range(2)}
            values |= {f"f{i}": 230.0 + (seq % 97) / 8 for i in range(4)}
            sample = Sample(f"dev-{seq % 20:02d}", 1_760_000_000_000 + seq, values)
            leaves.append(items.stored_leaf(seq, sample))
            batch.append((seq, sample))
        for i in range(0, len(batch), 100):
            stored = [_stored(s, x) for s, x in batch[i : i + 100]]
            message = samples_message(GATEWAY, stored, historical=False)
            out.append((f"bench/{GATEWAY}/samples", json.loads(message)))
        seal = make_seal(
            GATEWAY, key, SealInput(n, seq - per_seal + 1, seq, leaves, [], prev, 1_760_000_000_000)
        )
        prev = chain_hash(seal)
        out.append((f"bench/{GATEWAY}/seals", seal))
    return out


def _stored(seq: int, sample: Sample) -> Any:
    from gateway.model import Lane, StoredItem  # noqa: PLC0415

    return StoredItem(seq, Lane.SAMPLE, sample.ts_ms, sample)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seals", type=int, default=200)
    parser.add_argument("--per-seal", type=int, default=500)
    args = parser.parse_args()
    messages = archive(args.seals, args.per_seal)
    key = SigningKey(bytes(range(32))).public
    t0 = time.process_time()
    fleet = collect(messages)
    t1 = time.process_time()
    report = check(GATEWAY, fleet[GATEWAY], key)
    t2 = time.process_time()
    assert report.ok() and report.items_verified == args.seals * args.per_seal, report
    total = t2 - t0
    print(
        f"{args.seals} seals of {args.per_seal} samples (10 values each): collect {t1 - t0:.2f} s,"
        f" check {t2 - t1:.2f} s of CPU; {args.seals / total:,.0f} seals/s, "
        f"{report.items_verified / total:,.0f} items/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
