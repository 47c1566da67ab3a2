"""The audit's state file, on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.audit.ledger import Fleet
from gateway.audit.store import AuditStore
from gateway.model import Lane, Sample, StoredItem
from gateway.uplink.json_format import samples_message

P = "city/sensors"
SAMPLE = Sample("aq-1", 1764169200123, {"pm25": 12.3, "temp": 21.5})


def samples(gateway: str, lo: int, hi: int) -> tuple[str, bytes]:
    items = [StoredItem(s, Lane.SAMPLE, SAMPLE.ts_ms, SAMPLE) for s in range(lo, hi + 1)]
    return f"{P}/{gateway}/samples", samples_message(gateway, items, historical=False)


async def test_messages_applied_while_a_save_commits_go_in_the_next_save(tmp_path: Path) -> None:
    # The consumer folds messages in as they arrive, also while a commit is in flight.
    state = tmp_path / "audit.db"
    fleet = Fleet(P)
    async with AuditStore(state) as store:
        assert fleet.apply(*samples("gw-a", 1, 10), now_ms=1)
        saving = asyncio.create_task(store.save(fleet))
        await asyncio.sleep(0)  # the save has taken its rows and awaits SQLite
        fleet.apply(*samples("gw-b", 1, 5), now_ms=2)
        fleet.apply(*samples("gw-a", 11, 20), now_ms=2)
        await saving
        await store.save(fleet)
    async with AuditStore(state, readonly=True) as store:
        stored = await store.load(P)
    assert {gid: led.received.count for gid, led in stored.gateways.items()} == {
        "gw-a": 20,
        "gw-b": 5,
    }
