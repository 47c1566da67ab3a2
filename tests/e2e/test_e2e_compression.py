"""``uplink.compression: zstd`` as deployed: across an outage and a kill -9, a consumer that
decodes the frames (the ``zstandard`` library, and the stock ``zstd -d``) gets every sample, in
exactly the JSON documents ``P/G/samples`` carries."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from proxy import FaultProxy

from e2e.conftest import Device, ModbusSim, RunDaemon, Upstream, simulated_bus
from gateway.uplink.compression import ZSTD_MAGIC

DEVICES: list[Device] = [
    ("aq-1", 1, "air_quality", "100ms"),
    ("meter-1", 2, "energy_meter", "100ms"),
]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI (apt: zstd) is missing")
async def test_zstd_samples_survive_an_outage_and_a_kill_9_and_decode_with_the_stock_cli(
    modbus_sim: ModbusSim,
    run_daemon: RunDaemon,
    upstream: Upstream,
    link: FaultProxy,
    tmp_path: Path,
) -> None:
    config = simulated_bus(modbus_sim, link.port, tmp_path, DEVICES, sync="full")
    config["uplink"]["compression"] = "zstd"
    daemon = run_daemon(config)
    await upstream.wait_for_seq_above(20)
    await link.outage()
    await daemon.wait_status(
        lambda s: s.get("buffer", {}).get("last_seq", 0) > upstream.max_seq() + 20,
        10,
        "samples stored during the outage",
    )
    daemon.kill()
    run_daemon(config)  # the same buffer, the link still down
    await asyncio.sleep(0.5)
    await link.restore()
    stored = upstream.max_seq()
    await upstream.wait_until(
        lambda: upstream.max_seq() > stored + 20 and not upstream.holes(), 15, "every seq"
    )
    assert not upstream.reused_seqs()
    frames = [m.payload for m in upstream.of("samples")]
    assert frames and all(frame[:4] == ZSTD_MAGIC for frame in frames)
    assert any(m.data.get("historical") for m in upstream.of("samples"))  # the backlog too
    # the library and the CLI give the same JSON documents, one per frame
    documents = [zstandard.ZstdDecompressor().decompress(frame) for frame in frames]
    assert [json.loads(d) for d in documents] == [m.data for m in upstream.of("samples")]
    cli = await asyncio.to_thread(
        subprocess.run, ["zstd", "-d", "-c"], input=b"".join(frames), capture_output=True,
        check=True,
    )  # fmt: skip
    assert cli.stdout == b"".join(documents)
    # everything else stays plain JSON
    assert all(m.payload[:1] == b"{" for m in upstream.messages if m.kind != "samples")
