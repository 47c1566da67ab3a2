"""Parse and authenticate a command (SPEC "Commands, writes and actions"). Pure: the clock,
the trusted keys and the answered ids are passed in.

A command is a JSON object ``{"id", "ts", "op": "write", "device", "point", "value", "by",
"sig"}``, or ``{"id", "ts", "op": "config", "yaml", "by", "sig"}`` (the fleet's remote config:
``yaml`` is the whole config text, checked later by ``gateway.fleet``). ``sig`` is standard
base64 (with padding) of the Ed25519 signature over the RFC 8785 (JCS) bytes of the object
without ``sig``. Every stage returns a refusal with its reason word,
in the order of the pipeline: parse (``bad_request``), authenticate (``unknown_key``,
``bad_signature``), then time (``clock_unsynced``, ``expired``, ``future``) and replay
(``replayed``). A message that is not even an object with a readable id gets a result whose
``id`` is null.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import rfc8785

from gateway.commands.outcome import Outcome
from gateway.keys import SIGNATURE_BYTES, PublicKey
from gateway.model import Value

ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a device or point name
FUTURE_MS = 30_000  # a ts more than this ahead is refused (clocks drift; a minute is a lie)
OPS = ("write", "config")
# what each op carries besides id, ts, op, by and sig
OP_KEYS = {"write": ("device", "point", "value"), "config": ("yaml",)}
MAX_DEPTH = 8  # nesting a command needs: 1; a deep one is a parser attack


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command: what its result repeats, and the bytes its signature covers."""

    id: str | None
    ts_ms: int | None
    op: str | None
    device: str | None
    point: str | None
    value: Value | None
    by: str | None
    digest: str  # sha256 of the message's bytes: a redelivery has the same
    yaml: bytes | None = None  # a config command's text, UTF-8


class Refusal(Exception):
    """A command refused before it touches a device."""

    def __init__(self, command: Command, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.command = command
        self.outcome = outcome


def parse(payload: bytes) -> tuple[Command, dict[str, object]]:
    """The command and its JSON object; Refusal ``bad_request`` when it is not one."""
    digest = hashlib.sha256(payload).hexdigest()
    empty = Command(None, None, None, None, None, None, None, digest)
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise Refusal(
            empty, Outcome.refused("bad_request", f"not JSON: {str(exc)[:120]}")
        ) from None
    if not isinstance(doc, dict):
        raise Refusal(empty, Outcome.refused("bad_request", "not a JSON object"))
    raw_id = doc.get("id")
    command = Command(
        raw_id if isinstance(raw_id, str) and ID_PATTERN.match(raw_id) else None,
        _int(doc.get("ts")),
        _text(doc.get("op")),
        _text(doc.get("device")),
        _text(doc.get("point")),
        _value(doc.get("value")),
        _text(doc.get("by")),
        digest,
        _yaml(doc.get("yaml")),
    )
    problem = _problem(doc, command)
    if problem:
        raise Refusal(command, Outcome.refused("bad_request", problem))
    return command, doc


def _problem(doc: dict[str, object], command: Command) -> str | None:
    if command.id is None:
        return "id: 1 to 64 of A-Z a-z 0-9 . _ -"
    if command.ts_ms is None:
        return "ts: milliseconds since 1970, an integer"
    if command.op not in OPS:
        return f"op: one of {', '.join(OPS)}"
    if not isinstance(doc.get("by"), str):
        return "by: the name of a trusted key"
    extra = set(doc) - {"id", "ts", "op", "by", "sig", *OP_KEYS[command.op]}
    if extra:
        return f"unknown keys for {command.op}: {', '.join(sorted(extra))[:120]}"
    if command.op == "config":
        return None if command.yaml is not None else "yaml: the whole config text, a string"
    for key in ("device", "point"):
        name = doc.get(key)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            return f"{key}: a device or point name (letters, digits, _ . -), not {name!r}"[:200]
    if "value" not in doc or command.value is None:
        return "value: true, false, a number or a string"
    return None


def authenticate(
    command: Command, doc: dict[str, object], keys: Mapping[str, PublicKey], required: bool
) -> None:
    """The signature is a trusted key's over the JCS bytes of ``doc`` without ``sig``; raises
    Refusal. Without ``required`` (``require_signature: false``) nothing is checked."""
    if not required:
        return
    key = keys.get(command.by or "")
    if key is None:
        raise Refusal(command, Outcome.refused("unknown_key", f"no trusted key {command.by!r}"))
    sig = doc.get("sig")
    try:
        signature = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    try:
        signed = signed_bytes(doc)
    except rfc8785.CanonicalizationError as exc:  # an int past 2**53: JCS has no bytes for it
        raise Refusal(command, Outcome.refused("bad_request", str(exc)[:120])) from None
    if len(signature) != SIGNATURE_BYTES or not key.verifies(signed, signature):
        raise Refusal(
            command, Outcome.refused("bad_signature", f"not {command.by}'s signature of it")
        )


def signed_bytes(doc: Mapping[str, object]) -> bytes:
    """The RFC 8785 bytes of the command without ``sig``: what is signed."""
    return rfc8785.dumps({k: v for k, v in doc.items() if k != "sig"})  # type: ignore[misc]


def sign(doc: Mapping[str, object], sign_bytes: object) -> dict[str, object]:
    """``doc`` with its ``sig`` (``sign_bytes``: a SigningKey's ``sign``), for the sender."""
    signature = sign_bytes(signed_bytes(doc))  # type: ignore[operator]
    return {**doc, "sig": base64.b64encode(signature).decode("ascii")}


def check_time(command: Command, now_ms: int, max_age_s: float, clock_synced: bool) -> None:
    """Age and future by the command's own ts; raises Refusal."""
    if not clock_synced:
        raise Refusal(
            command,
            Outcome.refused("clock_unsynced", "the clock is not synchronised: age unknown"),
        )
    ts = command.ts_ms or 0
    if ts > now_ms + FUTURE_MS:
        raise Refusal(
            command, Outcome.refused("future", f"ts is {(ts - now_ms) / 1000:.0f}s ahead")
        )
    if ts < now_ms - max_age_s * 1000:
        raise Refusal(
            command,
            Outcome.refused(
                "expired", f"ts is {(now_ms - ts) / 1000:.0f}s old (max {max_age_s:g}s)"
            ),
        )


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value


def _text(value: object) -> str | None:
    return value[:64] if isinstance(value, str) else None


def _yaml(value: object) -> bytes | None:
    """The text's UTF-8 bytes (its size is the fleet's to judge; the inbound guard bounds it),
    or None when it is not a string or holds a lone surrogate (JSON's ``\\ud800``)."""
    if not isinstance(value, str):
        return None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _value(value: object) -> Value | None:
    if isinstance(value, float) and not math.isfinite(value):  # json.loads reads NaN
        return None
    if isinstance(value, bool | int | float):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
            return None
        return value
    if isinstance(value, str) and len(value) <= 256:
        return value
    return None
