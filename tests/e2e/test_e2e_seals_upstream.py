"""Seals read upstream from a zstd fleet: ``verify --broker`` and ``verify --in`` (an archive of
the raw frames) verify a real daemon's seals over ``P/G/samples.zst``; ``audit --keys`` checks
them as they arrive, names a forged sample, and loses no figure when it is killed in the middle.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
import zstandard

from e2e.conftest import (
    GATEWAY,
    PREFIX,
    STREET_GATEWAY,
    ModbusSim,
    RunDaemon,
    Upstream,
    modbus_config,
)
from gateway.keys import PublicKey
from gateway.seals.verify import check, collect
from gateway.uplink.compression import ZSTD_MAGIC

DEVICES = [("meter-1", 2, "energy_meter", "100ms"), ("river-1", 3, "water_level", "150ms")]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def _topic(kind: str, payload: bytes) -> str:
    zst = kind == "samples" and payload[:4] == ZSTD_MAGIC
    return f"{PREFIX}/{GATEWAY}/{kind}{'.zst' if zst else ''}"


async def test_verify_and_audit_keys_check_a_zstd_fleet_and_name_a_forged_sample(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream
) -> None:
    port = modbus_sim(DEVICES)
    config = modbus_config(upstream.port, tmp_path, port, DEVICES)
    config["uplink"]["compression"] = "zstd"
    config["security"] = {"seal_interval": "500ms"}
    # the key made before the first run, registered as at commissioning
    early = tmp_path / "commissioning.yaml"
    early.write_text(yaml.safe_dump({**config, "status": {"listen": "127.0.0.1:8470"}}))
    made = await asyncio.to_thread(_run, [STREET_GATEWAY, "identity", "-c", str(early)])
    assert made.returncode == 0, made.stderr
    pem = made.stdout.split("-----END PUBLIC KEY-----")[0] + "-----END PUBLIC KEY-----\n"
    key = PublicKey.from_pem(pem)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{GATEWAY}.pub").write_text(pem)

    broker = f"mqtt://127.0.0.1:{upstream.port}"
    verify = [STREET_GATEWAY, "verify", "--keys", str(keys), "--broker", broker,
              "--prefix", PREFIX, "--json", "--settle", "0.5"]  # fmt: skip
    state = tmp_path / "audit.db"
    audit = [STREET_GATEWAY, "audit", "--broker", broker, "--prefix", PREFIX, "--state",
             str(state), "--keys", str(keys)]  # fmt: skip
    # both open their persistent sessions before the gateway's first message
    first = await asyncio.to_thread(_run, verify)
    assert first.returncode == 0 and json.loads(first.stdout) == {"gateways": []}, first.stderr
    first = await asyncio.to_thread(_run, [*audit, "--once", "--settle", "500ms", "--json"])
    assert first.returncode == 0, first.stderr

    audit_log = tmp_path / "audit.log"
    with audit_log.open("wb") as log:
        command = [*audit, "--refresh", "1h"]
        auditor = await asyncio.to_thread(subprocess.Popen, command, stdout=log, stderr=log)
    try:
        daemon = run_daemon(config)
        await upstream.wait_until(lambda: len(upstream.of("seals")) >= 3, 30, "three seals")
        # verify reads the frames of P/+/samples.zst from its session (the stream goes on:
        # it stops at --timeout)
        live = await asyncio.to_thread(_run, [*verify, "--timeout", "2"])
        assert live.returncode == 0, live.stdout + live.stderr
        (report,) = json.loads(live.stdout)["gateways"]
        assert report["items_verified"] > 20 and report["seals_checked"] >= 3
        assert report["mismatched"] == report["missing_seals"] == report["bad_signatures"] == []
    finally:
        auditor.send_signal(signal.SIGKILL)  # the audit dies in the middle of the stream
        auditor.wait(10)
    assert "Traceback" not in audit_log.read_text()
    # it had checked seals before it was killed: what follows starts from its state file
    with contextlib.closing(sqlite3.connect(state)) as db:
        (doc,) = db.execute("SELECT doc FROM seal_gateway").fetchone()
    assert json.loads(doc)["figures"]["items_verified"] > 0

    # a forged sample, published as the gateway's own, for a seq it is about to send
    real = next(m for m in upstream.of("samples") if m.data["samples"])
    forged_doc = copy.deepcopy(real.data)
    forged_seq = upstream.max_seq() + 30
    sample = forged_doc["samples"][0]
    sample["seq"] = forged_seq
    sample["values"] = dict.fromkeys(sample["values"], 1234.5)
    forged_doc["samples"] = [sample]
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(
        json.dumps(forged_doc).encode()
    )
    async with aiomqtt.Client("127.0.0.1", upstream.port, identifier="forger") as forger:
        await forger.publish(f"{PREFIX}/{GATEWAY}/samples.zst", frame, qos=1)

    def sealed_past(seq: int) -> bool:
        return any(m.data["to_seq"] >= seq for m in upstream.of("seals"))

    await upstream.wait_until(lambda: sealed_past(forged_seq), 30, "the forged seq sealed")
    assert await daemon.terminate() == 0
    await asyncio.sleep(0.5)  # the last messages on their way to the sessions

    # what verify says of the whole stream, the forgery included, from an archive of the raw
    # messages (base64 lines, as an archiver keeps a binary frame)
    archive = tmp_path / "archive.jsonl"
    wanted = ("samples", "alarms", "gaps", "seals")
    lines = [
        {"topic": _topic(m.kind, m.payload), "payload_b64": base64.b64encode(m.payload).decode()}
        for m in upstream.messages
        if m.kind in wanted
    ]
    archive.write_text("".join(json.dumps(line) + "\n" for line in [*lines, {"topic": "x"}]))
    archived = await asyncio.to_thread(
        _run, [STREET_GATEWAY, "verify", "--keys", str(keys), "--in", str(archive), "--json"]
    )
    assert archived.returncode == 1, archived.stdout + archived.stderr  # the forgery
    assert "1 archive lines refused" in archived.stderr
    (whole,) = json.loads(archived.stdout)["gateways"]
    decoded = [(_topic(m.kind, m.payload), m.data) for m in upstream.messages if m.kind in wanted]
    assert whole == check(GATEWAY, collect(decoded)[GATEWAY], key).to_json()
    forged_n = next(
        m.data["n"]
        for m in upstream.of("seals")
        if m.data["from_seq"] <= forged_seq <= m.data["to_seq"]
    )
    assert [m["n"] for m in whole["mismatched"]] == [forged_n]
    assert whole["missing_seals"] == whole["bad_signatures"] == []

    # the audit, restarted after its kill, takes the rest from its session: the same verdicts
    done = await asyncio.to_thread(_run, [*audit, "--once", "--settle", "1s", "--json"])
    assert done.returncode == 1, done.stdout + done.stderr  # a seal does not match
    (gateway,) = json.loads(done.stdout)["gateways"]
    seals: dict[str, Any] = gateway["seals"]
    assert seals["mismatched"] == whole["mismatched"]
    assert seals["items_verified"] == whole["items_verified"]
    assert seals["seals_checked"] == whole["seals_checked"]  # every seal, the forged one too
    assert seals["missing_seals"] == seals["bad_signatures"] == []
    assert seals["seals_not_checked"] == 0 and not seals["unknown_key"]
    text = await asyncio.to_thread(_run, [*audit, "--once", "--settle", "500ms"])
    assert f"seal {forged_n} (seqs" in text.stdout and "items verified unaltered" in text.stdout
