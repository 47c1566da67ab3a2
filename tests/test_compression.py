"""``uplink.compression: zstd``: samples messages as one zstd frame each, read back by the shared
decoder (audit, verify, the demo's upstream view) and by the stock ``zstd`` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from gateway.audit.ledger import RejectedMessage, Seqs, parse_message
from gateway.model import Lane, Sample, StoredItem
from gateway.uplink.compression import (
    ZSTD_MAGIC,
    SamplesCompressor,
    UndecodablePayload,
    decode_samples_payload,
)
from gateway.uplink.json_format import JsonFormat, samples_message
from gateway.uplink.wire import Catalog

TS = 1764169200123
CATALOG = Catalog(gateway_id="gw-1", config_digest="sha256:abc", devices=())


def items(n: int, first: int = 1) -> list[StoredItem]:
    return [
        StoredItem(
            seq,
            Lane.SAMPLE,
            TS + seq,
            Sample(f"dev-{seq % 20:02d}", TS + seq, {"pm25": 12.3 + seq, "door": False, "n": seq}),
        )
        for seq in range(first, first + n)
    ]


def zstd_format() -> JsonFormat:
    return JsonFormat(
        CATALOG, topic_prefix="city", qos=1, version="0.3.0", started_ms=TS,
        compress=SamplesCompressor(),
    )  # fmt: skip


def test_a_compressed_message_is_one_frame_of_the_plain_message_on_its_own_topic() -> None:
    batch = items(20)
    [message] = zstd_format().samples(batch, historical=True)
    assert message.topic == "city/gw-1/samples.zst"
    assert message.payload[:4] == ZSTD_MAGIC
    assert message.seqs == tuple(range(1, 21)) and message.samples == 20
    plain = samples_message("gw-1", batch, historical=True)
    # the frame declares its content size: a consumer bounds its memory before inflating
    assert zstandard.frame_content_size(message.payload) == len(plain)
    assert zstandard.ZstdDecompressor().decompress(message.payload) == plain
    assert decode_samples_payload(message.payload) == json.loads(plain)
    assert len(message.payload) < len(plain) / 3


def test_everything_but_samples_stays_plain_json() -> None:
    fmt = zstd_format()
    outgoing = [*fmt.session_start(), fmt.will(), *fmt.goodbye()]
    assert all(not m.topic.endswith(".zst") for m in outgoing)
    for message in outgoing:
        json.loads(message.payload)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI (apt: zstd) is missing")
def test_the_stock_zstd_cli_decodes_a_message() -> None:
    batch = items(200)
    [message] = zstd_format().samples(batch, historical=False)
    out = subprocess.run(
        ["zstd", "-d", "-c"], input=message.payload, capture_output=True, check=True
    ).stdout
    assert out == samples_message("gw-1", batch, historical=False)


def test_a_plain_payload_is_decoded_too() -> None:
    plain = samples_message("gw-1", items(3), historical=False)
    assert decode_samples_payload(plain)["samples"][2]["seq"] == 3


def frame_without_size(data: bytes) -> bytes:
    writer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    return writer.compress(data) + writer.flush()


BIG = b'{"gateway":"g","samples":[' + b" " * 5000 + b"]}"
HOSTILE = [
    ("over the bound", zstandard.ZstdCompressor().compress(BIG), "over 4096"),
    ("no content size", frame_without_size(b'{"a":1}'), "does not declare its content size"),
    ("trailing bytes", zstandard.ZstdCompressor().compress(b'{"a":1}') + b"xx", "bad zstd frame"),
    ("truncated", zstandard.ZstdCompressor().compress(BIG[:3000])[:-6], "bad zstd frame"),
    ("magic only", ZSTD_MAGIC, "not a zstd frame"),
    ("not json inside", zstandard.ZstdCompressor().compress(b"\xff\xfe"), "not JSON"),
    ("a list inside", zstandard.ZstdCompressor().compress(b"[1]"), "not a JSON object"),
    ("plain over the bound", BIG, "over the 4096-byte bound"),
]


@pytest.mark.parametrize(("payload", "why"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_payload_is_refused_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(UndecodablePayload, match=why):
        decode_samples_payload(payload, max_bytes=4096)


def test_a_frame_that_lies_about_its_size_is_refused() -> None:
    frame = bytearray(zstandard.ZstdCompressor().compress(b'{"gateway":"g","samples":[]}'))
    # single-segment frame: the content size is the byte after the header descriptor
    assert frame[4] & 0x20 and frame[4] >> 6 == 0
    frame[5] -= 1
    with pytest.raises(UndecodablePayload):
        decode_samples_payload(bytes(frame))


def test_the_audit_counts_compressed_samples_and_rejects_bad_frames() -> None:
    [message] = zstd_format().samples(items(5, first=7), historical=False)
    assert parse_message("city", message.topic, message.payload) == Seqs("gw-1", [7, 8, 9, 10, 11])
    with pytest.raises(RejectedMessage, match="zstd"):
        parse_message("city", message.topic, message.payload[:-3])


def test_check_names_the_compressed_topic(tmp_path: Path) -> None:
    config = {
        "gateway": {"id": "gw-1"},
        "uplink": {"servers": ["mqtt://127.0.0.1:1883"], "compression": "zstd"},
        "sources": [{
            "name": "bus", "kind": "modbus-tcp", "host": "127.0.0.1",
            "devices": [{"name": "aq-1", "unit": 1, "interval": "1s",
                         "points": [{"name": "pm25", "table": "input", "address": 0,
                                     "type": "uint16"}]}],
        }],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "samples as zstd frames on .../samples.zst" in done.stdout
