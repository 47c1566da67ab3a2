"""docs/transparency.md's stock-tools check runs as written, on its own test vectors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import rfc8785

from gateway.keys import SigningKey
from gateway.model import Gap, Sample
from gateway.seals import items
from gateway.seals.seal import FIRST_PREV, SealInput, chain_hash, make_seal, signed_bytes

DOC = Path(__file__).resolve().parent.parent / "docs" / "transparency.md"


def _check_block() -> str:
    found = re.search(r"<!-- check -->\n```sh\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None
    return found.group(1)


def _vector_files(folder: Path, *, tamper: bool = False) -> None:
    key = SigningKey(bytes(range(32)))
    sample = Sample("meter-1", 1760000000000, {"power_w": 1234.5, "ok": True, "n": 7})
    gap = Gap(0, 43, 45, 3, "evicted_max_age")
    leaves = [items.stored_leaf(42, sample), items.gap_leaf(gap)]
    seal = make_seal(
        "lamppost-17", key, SealInput(1, 42, 45, leaves, [], FIRST_PREV, 1760000000500)
    )
    doc = DOC.read_text()
    # the doc's vectors are what the code makes
    assert seal["sig"] in doc and signed_bytes(seal).decode() in doc and chain_hash(seal) in doc
    assert leaves[0].hex() in doc and leaves[1].hex() in doc
    assert key.pem() in doc and key.public.pem() in doc
    lines = [
        items.canonical(items.sample_object(42, sample)),
        items.canonical(items.gap_object(gap)),
    ]
    if tamper:
        lines[0] = lines[0].replace(b"1234.5", b"1234.6")
    (folder / "seal.json").write_bytes(rfc8785.dumps(seal))
    (folder / "lamppost-17.pub").write_text(key.public.pem())
    (folder / "items.txt").write_bytes(b"\n".join(lines) + b"\n")


def _run(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-e", "-c", _check_block()], cwd=folder, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_stock_tools_check_verifies_the_published_vector(tmp_path: Path) -> None:
    _vector_files(tmp_path)
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "root ok" in done.stdout and "Signature Verified Successfully" in done.stdout


def test_the_stock_tools_check_catches_an_altered_item_and_a_changed_seal(tmp_path: Path) -> None:
    _vector_files(tmp_path, tamper=True)
    assert "ROOT MISMATCH" in _run(tmp_path).stdout
    _vector_files(tmp_path)
    seal = (tmp_path / "seal.json").read_bytes()
    (tmp_path / "seal.json").write_bytes(seal.replace(b'"ts":1760000000500', b'"ts":1760000000501'))
    done = _run(tmp_path)
    assert done.returncode != 0 and "Signature Verified Successfully" not in done.stdout
