"""`verify --in`: the archive's two line forms, a zstd frame in base64, and refusals counted."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import zstandard

from gateway.seals.command import MAX_LINE, Archive
from gateway.seals.verify import collect

SAMPLES = {"gateway": "gw", "samples": [{"seq": 1, "ts": 5, "device": "d", "values": {"p": 1}}]}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_both_forms_give_the_same_items_and_every_bad_line_is_counted(tmp_path: Path) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(json.dumps(SAMPLES).encode())
    no_size = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    streamed = no_size.compress(json.dumps(SAMPLES).encode()) + no_size.flush()
    lines = [
        {"topic": "c/gw/samples", "payload": SAMPLES},
        {"topic": "c/gw/samples.zst", "payload_b64": _b64(frame)},
        {"topic": "c/gw/samples", "payload_b64": _b64(json.dumps(SAMPLES).encode())},
        {"topic": "c/gw/samples.zst", "payload_b64": _b64(streamed)},  # no content size
        {"topic": "c/gw/samples.zst", "payload_b64": "not base64!"},
        {"topic": "c/gw/samples.zst", "payload_b64": _b64(frame[:-4])},
        {"payload": SAMPLES},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    text += json.dumps({"topic": "c/gw/samples", "payload": "x" * MAX_LINE}) + "\n\n"
    path = tmp_path / "archive.jsonl"
    path.write_text(text + "not json\n")
    archive = Archive([path])
    messages = list(archive)
    assert [payload for _, payload in messages] == [SAMPLES] * 3
    assert archive.refused == 6
    got = collect(messages)["gw"]
    assert set(got.leaves) == {1} and len(got.leaves[1]) == 1 and got.refused == 0
