"""Seals end to end: a real daemon and mosquitto; the archive verifies, every tampering is named,
and an independent check (rfc8785, hashlib, the openssl CLI) agrees with the gateway's seals."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import rfc8785

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

DEVICES = [("meter-1", 2, "energy_meter", "100ms"), ("river-1", 3, "water_level", "150ms")]
Archive = list[tuple[str, dict[str, Any]]]


def _archive(upstream: Upstream) -> Archive:
    return [
        (f"{PREFIX}/{GATEWAY}/{m.kind}", copy.deepcopy(m.data))
        for m in upstream.messages
        if m.kind in ("samples", "alarms", "gaps", "seals")
    ]


def _report(archive: Archive, key: PublicKey) -> dict[str, Any]:
    return check(GATEWAY, collect(archive)[GATEWAY], key).to_json()


def _sealed_samples(archive: Archive) -> list[tuple[int, dict[str, Any]]]:
    seals = [p for t, p in archive if t.endswith("/seals")]
    top = max(s["to_seq"] for s in seals)
    return [
        (i, s)
        for i, (t, p) in enumerate(archive)
        if t.endswith("/samples")
        for s in p["samples"]
        if s["seq"] <= top
    ]


async def test_a_real_run_verifies_and_each_tampering_is_reported(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream
) -> None:
    port = modbus_sim(DEVICES)
    config = modbus_config(upstream.port, tmp_path, port, DEVICES)
    config["security"] = {"seal_interval": "500ms"}
    keys = tmp_path / "keys"
    keys.mkdir()
    verify_broker = [STREET_GATEWAY, "verify", "--keys", str(keys), "--broker",
                     f"mqtt://127.0.0.1:{upstream.port}", "--prefix", PREFIX, "--json"]  # fmt: skip
    # a first look opens verify's persistent session: the broker keeps the run's messages for it
    first = await asyncio.to_thread(_run, [*verify_broker, "--settle", "0.5"])
    assert first.returncode == 0 and json.loads(first.stdout) == {"gateways": []}, first.stderr
    daemon = run_daemon(config)
    await upstream.wait_until(lambda: len(upstream.of("seals")) >= 4, 30, "four seals")
    status = await daemon.status()
    _, _, metrics = await daemon.get("/metrics")
    _, _, page = await daemon.get("/")
    assert await daemon.terminate() == 0
    identity = await asyncio.to_thread(
        _run,
        [STREET_GATEWAY, "identity", "-c", str(daemon.config_path)],
    )
    assert identity.returncode == 0, identity.stderr
    status_key = identity.stdout
    pem, fingerprint = status_key.rsplit("-----END PUBLIC KEY-----\n", 1)
    key = PublicKey.from_pem(pem + "-----END PUBLIC KEY-----\n")
    assert fingerprint.strip() == key.fingerprint
    # the same key in meta and /status, never the private one; the seals' figures beside it
    meta = upstream.meta()
    assert meta is not None
    identity = {"alg": "Ed25519", "public_key": key.base64, "fingerprint": key.fingerprint}
    assert meta["identity"] == status["identity"] == identity
    assert status["seals"]["made_total"] >= 4 and status["seals"]["unsealed_seqs_total"] == 0
    assert "street_gateway_seals_made_total" in metrics
    assert f"seal {status['seals']['last_n']:,}" in page
    private = (tmp_path / "identity.key").read_text()
    body = private.splitlines()[1]
    assert body not in json.dumps(status) + metrics + page + json.dumps(meta)
    (keys / f"{GATEWAY}.pub").write_text(key.pem())

    archive = _archive(upstream)
    seals = [p for t, p in archive if t.endswith("/seals")]
    assert [s["n"] for s in seals] == list(range(1, len(seals) + 1))
    archive_file = tmp_path / "archive.jsonl"
    archive_file.write_text(
        "".join(json.dumps({"topic": t, "payload": p}) + "\n" for t, p in archive)
    )
    done = await asyncio.to_thread(
        _run,
        [STREET_GATEWAY, "verify", "--keys", str(keys), "--in", str(archive_file), "--json"],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (clean,) = json.loads(done.stdout)["gateways"]
    sealed = _sealed_samples(archive)
    assert clean["items_verified"] == len(sealed) > 20
    assert clean["mismatched"] == clean["missing_seals"] == clean["bad_signatures"] == []
    assert not clean["unknown_key"]
    # the same from the broker, read by verify's persistent session after the run
    again = await asyncio.to_thread(_run, [*verify_broker, "--settle", "1"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["gateways"] == [clean]

    def tampered(change: Any) -> dict[str, Any]:
        forged = copy.deepcopy(archive)
        change(forged)
        return _report(forged, key)

    def seal_of(seq: int) -> int:
        return next(s["n"] for s in seals if s["from_seq"] <= seq <= s["to_seq"])

    index, victim = sealed[5]
    seq = victim["seq"]

    def alter(forged: Archive) -> None:
        for s in forged[index][1]["samples"]:
            if s["seq"] == seq:
                point = next(iter(s["values"]))
                s["values"][point] = 12345.5

    def drop(forged: Archive) -> None:
        forged[index][1]["samples"] = [s for s in forged[index][1]["samples"] if s["seq"] != seq]

    def insert(forged: Archive) -> None:
        forged[index][1]["samples"].append(dict(victim, values={"x": 1}))

    def swap(forged: Archive) -> None:
        samples = [s for _, p in forged if "samples" in p for s in p["samples"]]
        a, b = samples[3], samples[4]
        a["values"], b["values"] = b["values"], a["values"]

    for name, change, n in [
        ("altered", alter, seal_of(seq)),
        ("dropped", drop, seal_of(seq)),
        ("inserted", insert, seal_of(seq)),
    ]:
        report = tampered(change)
        assert [m["n"] for m in report["mismatched"]] == [n], name
        assert report["missing_seals"] == report["bad_signatures"] == [], name
    report = tampered(swap)
    assert report["mismatched"] and report["missing_seals"] == report["bad_signatures"] == []

    dropped_n = seals[1]["n"]
    report = tampered(
        lambda f: f.remove(next(x for x in f if x[0].endswith("/seals") and x[1]["n"] == dropped_n))
    )
    assert report["missing_seals"] == [dropped_n] and report["mismatched"] == []
    assert report["items_unsealed"] > 0

    # a forged gap hides a sample: the seal over it no longer matches
    def forge_gap(forged: Archive) -> None:
        drop(forged)
        gap = {
            "gateway": GATEWAY,
            "from_seq": seq,
            "to_seq": seq,
            "count": 1,
            "reason": "evicted_max_age",
        }
        forged.append((f"{PREFIX}/{GATEWAY}/gaps", gap))

    report = tampered(forge_gap)
    assert [m["n"] for m in report["mismatched"]] == [seal_of(seq)]

    # a changed seal fails its signature
    report = tampered(lambda f: next(x for x in f if x[0].endswith("/seals"))[1].update(ts=1))
    assert report["bad_signatures"] == [1]

    # the independent check: leaves with rfc8785 + hashlib, the signature with openssl
    seal = seals[0]
    items = {s["seq"]: s for _, s in sealed}
    leaves = [hashlib.sha256(b"\x00" + rfc8785.dumps(items[q])).digest()
              for q in range(seal["from_seq"], seal["to_seq"] + 1)]  # fmt: skip
    assert _mth(leaves).hex() == seal["root"]
    message = tmp_path / "signed"
    message.write_bytes(rfc8785.dumps({k: v for k, v in seal.items() if k != "sig"}))
    signature = tmp_path / "sig"
    signature.write_bytes(base64.b64decode(seal["sig"]))
    ok = await asyncio.to_thread(
        _run,
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(keys / f"{GATEWAY}.pub"),
         "-rawin", "-in", str(message), "-sigfile", str(signature)],
    )  # fmt: skip
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stderr
    message.write_bytes(message.read_bytes().replace(b'"n":1', b'"n":2'))
    bad = await asyncio.to_thread(
        _run,
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(keys / f"{GATEWAY}.pub"),
         "-rawin", "-in", str(message), "-sigfile", str(signature)],
    )  # fmt: skip
    assert bad.returncode != 0


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


async def test_seals_across_a_broker_outage_with_a_backlog_verify_whole(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream, link: Any
) -> None:
    """The backlog of an outage is sealed once sent: every item verifies, no seal is missing."""
    port = modbus_sim(DEVICES)
    config = modbus_config(link.port, tmp_path, port, DEVICES)
    config["security"] = {"seal_interval": "500ms"}
    daemon = run_daemon(config)
    await upstream.wait_until(lambda: len(upstream.of("seals")) >= 1, 30, "a first seal")
    await link.outage()
    await asyncio.sleep(2.5)
    buffered = (await daemon.status())["buffer"]["last_seq"]
    await link.restore()

    def sealed_to() -> int:
        return max((m.data["to_seq"] for m in upstream.of("seals")), default=0)

    await upstream.wait_until(lambda: sealed_to() > buffered, 30, "the backlog sealed")
    assert await daemon.terminate() == 0
    key = PublicKey.from_pem(
        (
            await asyncio.to_thread(
                _run, [STREET_GATEWAY, "identity", "-c", str(daemon.config_path)]
            )
        ).stdout.split("-----END PUBLIC KEY-----")[0]
        + "-----END PUBLIC KEY-----\n"
    )
    archive = _archive(upstream)
    report = _report(archive, key)
    assert report["mismatched"] == report["missing_seals"] == report["bad_signatures"] == []
    assert any(m.data.get("historical") for m in upstream.of("samples"))  # a backlog was sent
    assert report["items_verified"] == len({s["seq"] for _, s in _sealed_samples(archive)})
    assert report["items_verified"] >= buffered  # every seq up to the backlog's end


async def test_kill_9_while_publishing_leaves_nothing_unsealed_and_the_chain_whole(
    tmp_path: Path, modbus_sim: ModbusSim, run_daemon: RunDaemon, upstream: Upstream
) -> None:
    """Three kill -9 while samples go out: after the restarts every seq is verified or covered
    by an unclean_shutdown gap, no seq is sealed as unsealed, and n and prev run on unbroken."""
    port = modbus_sim(DEVICES)
    config = modbus_config(upstream.port, tmp_path, port, DEVICES)
    config["security"] = {"seal_interval": "300ms"}
    for _ in range(3):
        daemon = run_daemon(config)
        seen = upstream.max_seq()
        await upstream.wait_for_seq_above(seen + 15, 30)
        daemon.kill()
    daemon = run_daemon(config)
    top = upstream.max_seq()

    def sealed_to() -> int:
        return max((m.data["to_seq"] for m in upstream.of("seals")), default=0)

    await upstream.wait_until(lambda: sealed_to() > top, 30, "everything before sealed")
    assert await daemon.terminate() == 0
    key = PublicKey.from_pem(
        (
            await asyncio.to_thread(
                _run, [STREET_GATEWAY, "identity", "-c", str(daemon.config_path)]
            )
        ).stdout.split("-----END PUBLIC KEY-----")[0]
        + "-----END PUBLIC KEY-----\n"
    )
    archive = _archive(upstream)
    report = _report(archive, key)
    assert report["mismatched"] == report["missing_seals"] == report["bad_signatures"] == []
    seals = {p["n"]: p for t, p in archive if t.endswith("/seals")}
    assert sorted(seals) == list(range(1, len(seals) + 1))
    assert all(s["unsealed"] == [] for s in seals.values())
    assert report["items_unverifiable"] == 0
    unclean = {
        q for m in upstream.of("gaps") if m.data["reason"] == "unclean_shutdown"
        for q in range(m.data["from_seq"], m.data["to_seq"] + 1)
    }  # fmt: skip
    sealed = {s["seq"] for _, s in _sealed_samples(archive)}
    assert report["items_verified"] == len(sealed - unclean)
    covered = set(range(1, sealed_to() + 1))
    assert covered <= sealed | unclean  # every seq sealed as an item or within a crash's gap
