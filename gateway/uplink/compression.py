"""``uplink.compression: zstd``: samples messages as zstd frames, and reading them back. Pure.

With zstd a samples message (``P/G/samples.zst`` instead of ``P/G/samples``) is one zstd frame
of exactly the JSON document ``P/G/samples`` would carry: no dictionary, the content size in
the frame header, so any consumer (``zstd -d``, any zstd library) decodes it alone and can
refuse an oversized one before it decompresses anything. Gaps, alarms, meta, status and every
other topic stay plain JSON (docs/reference.md, "Compressed samples").

:func:`decode_samples_payload` is the one reader the upstream tools share (``audit``,
``verify``, the demo's upstream view): bounded in size before any byte is inflated, and it
raises :class:`UndecodablePayload` for anything else, never another exception.
"""

from __future__ import annotations

import json
from typing import Any

SAMPLES_SUFFIX = ".zst"  # P/G/samples -> P/G/samples.zst
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 §3.1.1, little-endian 0xFD2FB528
LEVEL = 3  # zstd's default; levels 1-6 measured within 0.1 byte a point (docs/performance.md)
# The largest samples JSON a consumer inflates by default: 10,000 samples (batch.max_samples'
# ceiling) of a few hundred bytes each fit well below it.
MAX_DECODED_BYTES = 64 * 1024**2


class UndecodablePayload(ValueError):
    """A samples payload that is not one bounded zstd frame of a JSON object."""


class SamplesCompressor:
    """One zstd frame per samples message. Imports ``zstandard`` only when made."""

    def __init__(self, level: int = LEVEL) -> None:
        import zstandard  # noqa: PLC0415  (only a gateway with compression pays for it)

        # compress(), not compressobj(): only a one-shot frame records its content size
        self._compress = zstandard.ZstdCompressor(level=level, write_content_size=True).compress

    def __call__(self, document: bytes) -> bytes:
        frame: bytes = self._compress(document)
        return frame


def read_message(kind: str, payload: bytes) -> tuple[str, Any]:
    """A fleet message's kind and JSON as a consumer reads it: ``samples`` or ``samples.zst``
    (plain JSON or one zstd frame) through :func:`decode_samples_payload`, as ``samples``; any
    other kind as JSON. Raises :class:`UndecodablePayload`, or ValueError or RecursionError
    (absurdly nested JSON) for another kind's payload that is not JSON."""
    if kind in ("samples", "samples" + SAMPLES_SUFFIX):
        return "samples", decode_samples_payload(payload)
    return kind, json.loads(payload)


def decode_samples_payload(payload: bytes, max_bytes: int = MAX_DECODED_BYTES) -> dict[str, Any]:
    """The JSON object of a samples message, plain or one zstd frame (told apart by the zstd
    magic number: a JSON text never starts with byte 0x28). A frame must declare its content
    size, at most ``max_bytes``, and hold nothing after it; raises :class:`UndecodablePayload`.
    """
    if payload[:4] == ZSTD_MAGIC:
        payload = _inflate(payload, max_bytes)
    elif len(payload) > max_bytes:
        raise UndecodablePayload(f"{len(payload)} bytes, over the {max_bytes}-byte bound")
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise UndecodablePayload(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UndecodablePayload("the payload is not a JSON object")
    return document


def _inflate(frame: bytes, max_bytes: int) -> bytes:
    import zstandard  # noqa: PLC0415  (a plain-JSON fleet never loads it)

    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise UndecodablePayload(f"not a zstd frame: {exc}") from None
    if size < 0:
        raise UndecodablePayload("the zstd frame does not declare its content size")
    if size > max_bytes:
        raise UndecodablePayload(f"the zstd frame declares {size} bytes, over {max_bytes}")
    # The window bounds the decoder's memory; a frame of ``size`` bytes never needs more.
    decompressor = zstandard.ZstdDecompressor(max_window_size=max(1 << 10, _pow2_at_least(size)))
    try:
        data: bytes = decompressor.decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise UndecodablePayload(f"bad zstd frame: {exc}") from None
    if len(data) != size:
        raise UndecodablePayload(f"the zstd frame held {len(data)} bytes, not {size}")
    return data


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
